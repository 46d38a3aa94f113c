//! The make targets' machinery against the broker under test (WEATHER_TEST_BROKER): make up
//! and down through scripts/broker.sh or scripts/kafka.sh, and make demo on that broker.

mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use support::broker::free_port_pair;
use support::{GUARD, Kind, Logged, free_port, http_get, run_ok, wait_for};
use time::Month;
use weather_stream::checkpoint;
use weather_stream::report::month_name;
use weather_stream::stats::PartitionStats;

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `make TARGET` for the broker under test (BROKER=embedded or kafka), its data in `dir` and
/// its first port `port` (Kafka's controller on the next).
fn make(target: &str, port: u16, dir: &std::path::Path) -> std::process::Output {
    let broker = match Kind::from_env() {
        Kind::Tansu => "embedded",
        Kind::Kafka => "kafka",
    };
    Command::new("make")
        .args(["-s", "-C", env!("CARGO_MANIFEST_DIR"), target])
        .arg(format!("BROKER={broker}"))
        .env("KAFKA_PORT", port.to_string())
        .env("BROKER_DIR", dir)
        .env("KAFKA_DIR", dir)
        .env_remove("KAFKA_BROKERS")
        .output()
        .expect("run make")
}

/// Stops what `make up` started even when an assertion fails first.
struct MakeDown<'a>(u16, &'a std::path::Path);

impl Drop for MakeDown<'_> {
    fn drop(&mut self) {
        make("down", self.0, self.1);
    }
}

#[test]
fn make_up_starts_a_loopback_broker_says_where_and_make_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let _down = MakeDown(port, dir.path());

    let up = make("up", port, dir.path());
    assert!(up.status.success(), "{}", text(&up));
    let said = text(&up);
    let (where_, data) = match Kind::from_env() {
        Kind::Tansu => (format!("broker up at 127.0.0.1:{port}"), "tansu.db"),
        Kind::Kafka => (
            format!("KAFKA_BROKERS=127.0.0.1:{port}"),
            "node-1/data/meta.properties",
        ),
    };
    assert!(said.contains(&where_), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert!(
        dir.path().join(data).exists(),
        "no {data} in the data folder"
    );

    // It is a broker: the pipeline runs on it.
    let weather = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weather"));
        command.env("KAFKA_BROKERS", format!("127.0.0.1:{port}"));
        command
    };
    run_ok(weather().args(["produce", "--count", "3", "--delay-ms", "0"]));

    let again = make("up", port, dir.path());
    assert!(again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let down = make("down", port, dir.path());
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("stopped"), "{}", text(&down));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after down"
    );
    assert!(text(&make("down", port, dir.path())).contains("no "));

    // The data outlives the broker: up again, and the three days are still there.
    let up = make("up", port, dir.path());
    assert!(up.status.success(), "{}", text(&up));
    let resumed = run_ok(weather().args(["produce", "--count", "0"]));
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("already holds days up to 2000-01-03"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

#[test]
fn make_up_on_a_taken_port_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let _down = MakeDown(port, dir.path());
    let up = make("up", port, dir.path());
    assert!(!up.status.success());
    let stderr = String::from_utf8_lossy(&up.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("port {port}")) && errors[0].contains("KAFKA_PORT"),
        "{stderr}"
    );
}

/// Runs `scripts/kafka.sh ARGS` with extra environment.
fn kafka_script(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut command = Command::new("bash");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run scripts/kafka.sh")
}

/// Apache Kafka's jars come from Maven Central (Tansu's install is `cargo install`, run by
/// make test before any test, and eight minutes long: not repeated here).
#[test]
fn kafka_jars_are_assembled_once_and_a_missing_java_or_maven_is_one_line() {
    // `make test` assembled them already: the second run says so and downloads nothing.
    let again = kafka_script(&["install"], &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(text(&again).lines().count(), 1, "{}", text(&again));
    assert!(
        text(&again).contains("already assembled"),
        "{}",
        text(&again)
    );

    let empty = tempfile::tempdir().unwrap();
    let lib = empty.path().join("lib");
    let old_java = tempfile::tempdir().unwrap();
    let java = old_java.path().join("bin/java");
    std::fs::create_dir_all(java.parent().unwrap()).unwrap();
    std::fs::write(
        &java,
        "#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&java)
        .status()
        .unwrap();
    let nowhere = std::ffi::OsStr::new("/nonexistent/java-home");
    let no_maven = std::ffi::OsStr::new("/nonexistent/mvn");
    let cases: [(&[(&str, &std::ffi::OsStr)], &str); 3] = [
        (&[("JAVA_HOME", nowhere)], "has no bin/java"),
        (
            &[("JAVA_HOME", old_java.path().as_os_str())],
            "is Java 11.0.2; Apache Kafka",
        ),
        (
            &[("KAFKA_LIB", lib.as_os_str()), ("MAVEN", no_maven)],
            "not found: assembling Apache Kafka's jars needs Maven",
        ),
    ];
    for (env, expected) in cases {
        let out = kafka_script(&["install"], env);
        assert!(!out.status.success(), "{expected}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{expected}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{expected}: {stderr}"
        );
        assert!(!lib.exists(), "nothing assembled: {expected}");
    }
}

/// `scripts/demo.sh` on the broker under test (`BROKER=embedded` or `kafka`), its broker's
/// data in `broker_dir`, its state and chart in `demo_dir`.
fn demo(broker_port: u16, broker_dir: &Path, demo_dir: &Path, dashboard: &str) -> Logged {
    let broker = match Kind::from_env() {
        Kind::Tansu => "embedded",
        Kind::Kafka => "kafka",
    };
    Logged::spawn(
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .env("BROKER", broker)
            .env("KAFKA_PORT", broker_port.to_string())
            .env("BROKER_DIR", broker_dir)
            .env("KAFKA_DIR", broker_dir)
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
    let (port, dashboard) = (free_port_pair(), free_port());
    let _down = MakeDown(port, broker_dir.path());
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
    let port = free_port_pair();
    let _down = MakeDown(port, broker_dir.path());
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
