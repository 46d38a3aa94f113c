//! Test support: a real Tansu broker per test on a free loopback port, and the `weather`
//! binary run against it.

#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod proxy;
pub mod topic;
use weather_stream::kafka::Cluster;
use weather_stream::shutdown::Shutdown;

const INSTALL_HINT: &str = "install it with `cargo install tansu --version 0.6.0 --locked --features libsql,dynostore` \
     (`make test` does this for you), or point TANSU at the binary";

/// The tansu binary: $TANSU, else on PATH, else in cargo's bin folder.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("the Tansu broker binary was not found: {INSTALL_HINT}"))
}

/// A Tansu broker with SQLite storage in a temporary folder, stopped on drop.
pub struct Broker {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    /// The port the broker tells clients to use: its own, or a proxy's in front of it.
    advertised: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// A broker on `port` that sends clients to `advertised` (a proxy) for every request
    /// after the first.
    pub fn start_advertising(port: u16, advertised: u16) -> Broker {
        let dir = tempfile::tempdir().expect("temporary folder for the broker");
        let mut broker = Broker {
            child: None,
            dir,
            port,
            advertised,
        };
        broker.launch();
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("broker log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        // Tansu 0.6.0 mangles absolute SQLite paths, so it runs from its data folder.
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://./tansu.db"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tansu exited at start ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "tansu did not listen within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// A library connection, for reading the topic the way a checker would.
    pub fn cluster(&self) -> Cluster {
        let (_trigger, shutdown) = Shutdown::new();
        runtime()
            .block_on(Cluster::connect(
                &self.address(),
                Duration::from_secs(30),
                &shutdown,
            ))
            .expect("connect to the test broker")
    }

    /// `weather` with this broker as its bootstrap server.
    pub fn weather(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weather"));
        command
            .env("KAFKA_BROKERS", self.address())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs a command to completion and insists that it succeeded.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("run weather");
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// How long a test waits for something that should take seconds (a guard, not a target).
pub const GUARD: Duration = Duration::from_secs(120);

/// A child whose output goes to a file, so a long run never blocks on a full pipe; killed
/// when dropped, so a failing test leaves nothing running.
pub struct Logged {
    child: Child,
    log: PathBuf,
}

impl Logged {
    /// Starts `command` with its stdout and stderr both going to `log`.
    pub fn spawn(command: &mut Command, log: PathBuf) -> Logged {
        let file = File::create(&log).expect("log file");
        let child = command
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Logged { child, log }
    }

    /// Everything it printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the program to exit by itself, and insists that it succeeded.
    pub fn wait_ok(&mut self, what: &str) {
        let mut status = None;
        wait_for(what, GUARD, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        let status = status.expect("exited");
        assert!(status.success(), "{what}: {status}\n{}", self.printed());
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Kills a running child with SIGKILL and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until `done` holds, failing the test after `limit` (a guard, not a speed target).
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file in `dir`, name → bytes, for comparing whole state folders. A file that goes
/// between listing and reading (a save's `.tmp`, renamed meanwhile) is not in the folder.
pub fn folder_bytes(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("state folder")
        .map(|e| e.expect("entry"))
        .filter_map(|e| match std::fs::read(e.path()) {
            Ok(bytes) => Some((e.file_name().to_string_lossy().to_string(), bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => panic!("{}: {error}", e.path().display()),
        })
        .collect()
}
