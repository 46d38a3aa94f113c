//! The make targets' machinery: scripts/broker.sh and scripts/demo.sh against the real
//! Tansu binary.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use support::{GUARD, Logged, free_port, run_ok, wait_for};

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

#[test]
fn demo_runs_the_pipeline_on_a_new_broker_and_stops_cleanly_on_ctrl_c() {
    let broker_dir = tempfile::tempdir().unwrap();
    let demo_dir = tempfile::tempdir().unwrap();
    let (port, dashboard) = (free_port(), free_port());
    let _down = Down(port, broker_dir.path());
    let mut demo = Logged::spawn(
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .env("KAFKA_PORT", port.to_string())
            .env("BROKER_DIR", broker_dir.path())
            .env("DEMO_DIR", demo_dir.path())
            .env("DASHBOARD", format!("127.0.0.1:{dashboard}"))
            .env("WEATHER", env!("CARGO_BIN_EXE_weather"))
            .env_remove("KAFKA_BROKERS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null()),
        demo_dir.path().join("demo.log"),
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
            .arg(demo_dir.path().join("state")),
    );
}
