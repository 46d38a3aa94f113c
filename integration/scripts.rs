//! The make targets' machinery: scripts/broker.sh and scripts/demo.sh against the real
//! Tansu binary.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use support::{GUARD, Logged, free_port, run_ok, wait_for};
use time::Month;
use weather_stream::checkpoint;
use weather_stream::report::month_name;
use weather_stream::stats::PartitionStats;

fn broker_script(port: u16, dir: &std::path::Path, action: &str) -> std::process::Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker.sh"))
        .arg(action)
        .env("KAFKA_PORT", port.to_string())
        .env("BROKER_DIR", dir)
        .output()
        .expect("run scripts/broker.sh")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stops the script's broker even when an assertion fails first.
struct Down<'a>(u16, &'a std::path::Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        broker_script(self.0, self.1, "down");
    }
}

#[test]
fn up_starts_a_loopback_broker_says_where_and_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _down = Down(port, dir.path());

    let up = broker_script(port, dir.path(), "up");
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains(&format!("broker up at 127.0.0.1:{port}")),
        "{}",
        text(&up)
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        dir.path().join("tansu.db").exists(),
        "SQLite database not in the data folder"
    );

    let again = broker_script(port, dir.path(), "up");
    assert!(again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let down = broker_script(port, dir.path(), "down");
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("broker stopped"));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after down"
    );
    assert!(text(&broker_script(port, dir.path(), "down")).contains("no broker running"));
}

#[test]
fn up_on_a_taken_port_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let _down = Down(port, dir.path());
    let up = broker_script(port, dir.path(), "up");
    assert!(!up.status.success());
    let stderr = String::from_utf8_lossy(&up.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("port {port}")) && errors[0].contains("KAFKA_PORT"),
        "{stderr}"
    );
}

/// The answer to `GET path` from a server on 127.0.0.1:`port`, status line and all.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `scripts/demo.sh` with its broker in `broker_dir`, its state and chart in `demo_dir`.
fn demo(broker_port: u16, broker_dir: &Path, demo_dir: &Path, dashboard: &str) -> Logged {
    Logged::spawn(
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .env("KAFKA_PORT", broker_port.to_string())
            .env("BROKER_DIR", broker_dir)
            .env("DEMO_DIR", demo_dir)
            .env("DASHBOARD", dashboard)
            .env("WEATHER", env!("CARGO_BIN_EXE_weather"))
            .env_remove("KAFKA_BROKERS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null()),
        demo_dir.join("demo.log"),
    )
}

/// A chart's bars: month → the average it shows, as the SVG prints it.
fn bars(svg: &str) -> BTreeMap<String, String> {
    let attribute = |rect: &str, name: &str| {
        let value = rect
            .split(&format!("{name}=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("a bar without {name}: {rect}"));
        value[..value.find('"').unwrap()].to_string()
    };
    svg.split("<rect")
        .map(|r| &r[..r.find('>').unwrap_or(r.len())])
        .filter(|r| r.contains("class=\"bar\""))
        .map(|r| (attribute(r, "data-month"), attribute(r, "data-avg")))
        .collect()
}

#[test]
fn demo_runs_the_pipeline_on_a_new_broker_and_stops_cleanly_on_ctrl_c() {
    let broker_dir = tempfile::tempdir().unwrap();
    let demo_dir = tempfile::tempdir().unwrap();
    let (port, dashboard) = (free_port(), free_port());
    let _down = Down(port, broker_dir.path());
    let mut demo = demo(
        port,
        broker_dir.path(),
        demo_dir.path(),
        &format!("127.0.0.1:{dashboard}"),
    );

    // On a broker with no topic yet, both consumers start and the chart gets drawn.
    let chart = demo_dir.path().join("month.svg");
    wait_for("month.svg from the demo", GUARD, || {
        assert!(
            demo.is_running(),
            "the demo ended by itself: {}",
            demo.printed()
        );
        chart.exists()
    });
    let stats = http_get(dashboard, "/api/stats").expect("the dashboard answers");
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    // A day more after the chart was drawn, so a chart not drawn again on the way out is stale.
    let state = demo_dir.path().join("state");
    let counted = || {
        checkpoint::load_all(&state)
            .unwrap()
            .iter()
            .map(|c| c.stats.days())
            .sum::<u64>()
    };
    let drawn = counted();
    wait_for("a day counted after the chart", GUARD, || counted() > drawn);

    // Exit 0 means every program stopped cleanly on Ctrl-C: the demo reads their statuses.
    demo.interrupt();
    demo.wait_ok("the demo to stop on Ctrl-C");
    let said = demo.printed();
    assert!(said.contains("demo stopped"), "{said}");
    assert!(!said.contains("error"), "{said}");
    assert!(
        http_get(dashboard, "/").is_err(),
        "the dashboard still listens after Ctrl-C"
    );
    // What the consumers left agrees with the topic.
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_weather"))
            .env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
            .args(["verify", "--state-dir"])
            .arg(&state),
    );
    // The chart, drawn once more on the way out, has a bar for each of January to March
    // that the latest year has, at the average of the consumers' files.
    let mut merged = PartitionStats::default();
    for file in checkpoint::load_all(&state).unwrap() {
        merged.merge(&file.stats);
    }
    let year = merged.latest_year().expect("days counted");
    let expected: BTreeMap<String, String> = [Month::January, Month::February, Month::March]
        .into_iter()
        .filter_map(|m| {
            let stats = merged.get(m, year)?;
            Some((month_name(m).to_string(), format!("{:.2}", stats.avg())))
        })
        .collect();
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(!expected.is_empty(), "no January to March days in {year}");
    assert_eq!(bars(&svg), expected, "{svg}");
    assert!(svg.contains(&format!("Average maximum temperature, {year}")));
}

#[test]
fn demo_fails_naming_a_program_that_fails() {
    let broker_dir = tempfile::tempdir().unwrap();
    let demo_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _down = Down(port, broker_dir.path());
    // The dashboard's address is taken, so `weather serve` fails as soon as it starts.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dashboard = taken.local_addr().unwrap().to_string();
    let mut demo = demo(port, broker_dir.path(), demo_dir.path(), &dashboard);
    let mut status = None;
    wait_for("the demo to stop by itself", GUARD, || {
        status = demo.try_wait();
        status.is_some()
    });
    let said = demo.printed();
    assert!(!status.unwrap().success(), "the demo succeeded: {said}");
    assert!(said.contains("error: cannot listen on"), "{said}");
    // The demo names the program that failed, and only it: the others stopped cleanly.
    let named: Vec<&str> = said
        .lines()
        .filter(|l| l.contains(" ended by itself") || l.contains(" exited with status "))
        .collect();
    assert!(
        named.contains(&"error: weather serve exited with status 1"),
        "{said}"
    );
    assert!(
        named.iter().all(|l| l.starts_with("error: weather serve ")),
        "{said}"
    );
    assert!(said.contains("demo failed"), "{said}");
}
