//! Test support: a real broker per test on free loopback ports (`broker`), the `weather`
//! binary run against it, and the checks a skeptic makes of what it wrote (`topic`).

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub mod broker;
pub mod exactly_once;
pub mod proxy;
pub mod raw;
pub mod topic;

#[allow(unused_imports)]
pub use broker::{Broker, Kind};
#[allow(unused_imports)]
pub use raw::ProduceRaw;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    broker::free_ports(1)[0]
}

/// The seed `make test` runs every randomised test from, so that it draws nothing at random.
pub const FIXED_SEED: u64 = 20_261_207;

/// The seed of a randomised test: `FIXED_SEED`, `FAULTS_SEED=N` to replay a run, or
/// `FAULTS_SEED=random` to explore (printed either way, so any failure can be replayed).
pub fn seed() -> u64 {
    let seed = match std::env::var("FAULTS_SEED") {
        Err(_) => FIXED_SEED,
        Ok(s) if s == "random" => fastrand::u64(..),
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("FAULTS_SEED={s}: give a whole number, or `random`")),
    };
    println!("seed {seed} (replay with FAULTS_SEED={seed})");
    seed
}

/// Set on a `weather consume` to hold its Nth save between the written `.tmp` and the
/// rename until it is killed (`checkpoint`'s test-only hook); it logs `HELD` when it holds.
pub const HOLD_SAVE: &str = "WEATHER_TEST_HOLD_SAVE";
pub const HELD: &str = "save held before its rename";

impl Broker {
    /// `weather produce --count DAYS --delay-ms 0`, run to completion (on a secure broker,
    /// as the producer's user).
    pub fn produce(&self, days: u64) -> Output {
        run_ok(self.weather_as("producer").args([
            "produce",
            "--count",
            &days.to_string(),
            "--delay-ms",
            "0",
        ]))
    }

    /// `weather consume PARTITIONS --until-caught-up --state-dir DIR`, run to completion (on a
    /// secure broker, as the consumer's user).
    pub fn catch_up(&self, partitions: &str, state_dir: &Path) -> Output {
        run_ok(
            self.weather_as("consumer")
                .args(["consume", partitions, "--until-caught-up", "--state-dir"])
                .arg(state_dir),
        )
    }

    /// `weather verify --state-dir DIR`, insisting that every file matches the topic (on a
    /// secure broker, as the consumer's user).
    pub fn verify(&self, state_dir: &Path) -> Output {
        run_ok(
            self.weather_as("consumer")
                .arg("verify")
                .arg("--state-dir")
                .arg(state_dir),
        )
    }

    /// Every report in the topic, read straight from the broker.
    pub fn topic(&self) -> std::collections::BTreeMap<i32, topic::PartitionDays> {
        topic::topic_days(&self.cluster())
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `work` on a fresh library connection to `broker`, in one runtime.
pub fn with_cluster<T>(
    broker: &Broker,
    work: impl AsyncFnOnce(&weather_stream::kafka::Cluster) -> T,
) -> T {
    runtime().block_on(async {
        let cluster = broker.connect().await;
        work(&cluster).await
    })
}

/// One HTTP/1.1 GET of `path` on 127.0.0.1:`port`: the whole answer, status line first.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
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
    child: KillOnDrop,
    log: PathBuf,
}

impl Logged {
    /// Starts `command` with its stdout and stderr both going to `log`.
    pub fn spawn(command: &mut Command, log: PathBuf) -> Logged {
        let file = File::create(&log).expect("log file");
        let child = KillOnDrop::spawn(
            command
                .stdout(file.try_clone().expect("log file"))
                .stderr(file),
        );
        Logged { child, log }
    }

    /// Everything it printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, once it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
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

    /// SIGKILLs it and reaps it: no chance to finish a save or say anything.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&mut self) {
        self.signal("INT");
    }

    /// Sends a signal by name: `STOP` freezes it (a long GC pause, a swapped-out machine)
    /// until `CONT`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
        if name == "STOP" {
            // kill returns once the signal is sent, not once it has taken hold: a thread in
            // the middle of a system call (a save's rename) finishes it first. A test that
            // reads the frozen program's files next must not see that write land after.
            let pid = self.child.id();
            wait_for("the program to be stopped", GUARD, || {
                all_threads_stopped(pid)
            });
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Whether every thread of `pid` is stopped (state `T`, or `t` under a tracer).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        })
    })
}

/// A child killed when dropped, so a test that fails halfway leaves nothing running.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn spawn(command: &mut Command) -> KillOnDrop {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        KillOnDrop(Some(child))
    }

    /// The child itself, for a test that waits for it to end.
    pub fn into_child(mut self) -> Child {
        self.0.take().expect("a child until dropped")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child until dropped")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child until dropped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill(child);
        }
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

/// The partitions a group member reads in its latest generation, from its log, once it really
/// reads them: the "reading partition 0 at 12, 2 at 7" line comes after the start offsets are
/// known, so a record produced after it is seen ("assigned partitions" comes before it).
/// `None` before the first such line.
pub fn reading_partitions(log: &str) -> Option<std::collections::BTreeSet<i32>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" reading partition "))?;
    let list = line.rsplit_once(" reading partition ")?.1;
    if list == "none" {
        return Some(Default::default());
    }
    Some(
        list.split(", ")
            .filter_map(|p| p.split(" at ").next()?.parse().ok())
            .collect(),
    )
}

/// The partitions a group member was given in its latest generation, from its "assigned
/// partitions [0, 2]" line: given, which is before it may read them (it waits for their
/// previous owner to let go first). `None` before the first such line.
pub fn given_partitions(log: &str) -> Option<std::collections::BTreeSet<i32>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("assigned partitions ["))?;
    let list = line.rsplit_once('[')?.1.trim_end_matches(']');
    Some(
        list.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
    )
}

/// Runs a command that must fail before doing anything, and returns its only stderr line,
/// which must start with `error: `.
pub fn only_error_line(command: &mut Command) -> String {
    let output = command.output().expect("run weather");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "{command:?} should fail:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}
