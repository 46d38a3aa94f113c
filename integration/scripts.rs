//! The make targets' machinery: scripts/broker.sh against the real Tansu binary.

mod support;

use std::net::{TcpListener, TcpStream};
use std::process::Command;

use support::free_port;

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
