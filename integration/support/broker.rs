//! Real brokers for the tests, on free loopback ports with temporary data, stopped on drop:
//! Tansu 0.6.0, or Apache Kafka itself (one node, or three for the cluster tests).
//!
//! `WEATHER_TEST_BROKER` picks the broker of `Broker::start`: `tansu` (the default) or `kafka`.
//! `make test` runs the suites once with each. Kafka nodes are started by `scripts/kafka.sh`,
//! the same script as `make up BROKER=kafka`, so the tests run the configuration users get.
//! `Broker::kafka_secure` is `make up BROKER=kafka-secure`: one node behind SASL_SSL with
//! SCRAM users and ACLs, whose client files (`secure/*.properties`, `ca.pem`) it exposes.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use weather_stream::kafka::Cluster;
use weather_stream::kafka::security::Security;
use weather_stream::shutdown::Shutdown;

use super::runtime;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const TANSU_HINT: &str = "install it with `cargo install tansu --version 0.6.0 --locked --features libsql,dynostore` \
     (`make test` does this for you), or point TANSU at the binary";
const KAFKA_HINT: &str = "assemble Apache Kafka's jars with `scripts/kafka.sh install` \
     (`make test` does this for you; it needs Java 17 and Maven)";

/// Which broker the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tansu,
    Kafka,
}

impl Kind {
    /// The broker named by `WEATHER_TEST_BROKER` (default: Tansu).
    pub fn from_env() -> Kind {
        match std::env::var("WEATHER_TEST_BROKER").as_deref() {
            Err(_) | Ok("" | "tansu") => Kind::Tansu,
            Ok("kafka") => Kind::Kafka,
            Ok(other) => panic!("WEATHER_TEST_BROKER={other:?}: use tansu or kafka"),
        }
    }
}

/// A broker (one node or several) with its data in a temporary folder, stopped on drop.
pub struct Broker {
    pub kind: Kind,
    nodes: Vec<Node>,
    dir: TempDir,
    /// The kafka-secure layout: SASL_SSL only, clients need a user's properties file.
    secure: bool,
}

struct Node {
    port: u16,
    /// Kafka's controller listener.
    controller: u16,
    /// The port the broker tells clients to use: its own, or a proxy's in front of it.
    advertised: u16,
    /// Tansu runs as our child; Kafka nodes are run by scripts/kafka.sh, with a pid file.
    tansu: Option<Child>,
}

impl Broker {
    /// The broker `WEATHER_TEST_BROKER` names, one node.
    pub fn start() -> Broker {
        Self::start_kind(Kind::from_env())
    }

    pub fn start_kind(kind: Kind) -> Broker {
        let port = free_ports(1)[0];
        Self::start_advertising(kind, port, port)
    }

    /// One node on `port` that sends clients to `advertised` (a proxy) for every request
    /// after the first.
    pub fn start_advertising(kind: Kind, port: u16, advertised: u16) -> Broker {
        let controller = free_ports(1)[0];
        Self::launch(
            kind,
            vec![Node {
                port,
                controller,
                advertised,
                tansu: None,
            }],
        )
    }

    /// Three Apache Kafka nodes, replication factor 3 and min.insync.replicas 2 by default.
    pub fn kafka_cluster() -> Broker {
        let ports = free_ports(6);
        let nodes = (0..3)
            .map(|i| Node {
                port: ports[2 * i],
                controller: ports[2 * i + 1],
                advertised: ports[2 * i],
                tansu: None,
            })
            .collect();
        Self::launch(Kind::Kafka, nodes)
    }

    /// One Apache Kafka node as `make up BROKER=kafka-secure` starts it: a SASL_SSL listener
    /// (SCRAM-SHA-512) with a certificate for IP:127.0.0.1 signed by its own CA, the users
    /// admin (super user), producer and consumer, and least-privilege ACLs.
    pub fn kafka_secure() -> Broker {
        let ports = free_ports(2);
        let nodes = vec![Node {
            port: ports[0],
            controller: ports[1],
            advertised: ports[0],
            tansu: None,
        }];
        Self::launch_as(Kind::Kafka, nodes, true)
    }

    fn launch(kind: Kind, nodes: Vec<Node>) -> Broker {
        Self::launch_as(kind, nodes, false)
    }

    fn launch_as(kind: Kind, nodes: Vec<Node>, secure: bool) -> Broker {
        let dir = tempfile::tempdir().expect("temporary folder for the broker");
        let mut broker = Broker {
            kind,
            nodes,
            dir,
            secure,
        };
        broker.start_missing();
        broker
    }

    /// The folder scripts/kafka.sh keeps a secure broker's CA and users' files in.
    pub fn secure_dir(&self) -> PathBuf {
        assert!(self.secure, "only Broker::kafka_secure has client files");
        self.dir.path().join("secure")
    }

    /// The properties file of `user` (admin, producer or consumer): `--command-config` for
    /// Kafka's tools and for `weather` alike.
    pub fn properties(&self, user: &str) -> PathBuf {
        self.secure_dir().join(format!("{user}.properties"))
    }

    /// The CA that signed the broker's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.secure_dir().join("ca.pem")
    }

    /// The password in `user`'s properties file.
    pub fn password(&self, user: &str) -> String {
        password_in(&self.properties(user))
    }

    /// `weather` as `user` of a secure broker (its properties file as `--command-config`);
    /// on any other broker, plain [`Broker::weather`].
    pub fn weather_as(&self, user: &str) -> Command {
        if self.secure {
            self.weather_with(&self.properties(user))
        } else {
            self.weather()
        }
    }

    /// `weather --command-config FILE`.
    pub fn weather_with(&self, config: &Path) -> Command {
        let mut command = self.weather();
        command.arg("--command-config").arg(config);
        command
    }

    /// The bootstrap list: every node, comma-separated.
    pub fn address(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first node's port.
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `id`'s address (Kafka node ids are 1, 2, 3).
    pub fn node_address(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.nodes[(id - 1) as usize].port)
    }

    /// Starts every node that is not running (all of them, the first time), and waits until
    /// each answers; returns what the start said. For Kafka this is `make up`: a killed node
    /// comes back with its data.
    pub fn start_missing(&mut self) -> String {
        match self.kind {
            Kind::Tansu => {
                if self.nodes[0].tansu.is_none() {
                    self.launch_tansu();
                }
                String::new()
            }
            Kind::Kafka => self.kafka_script(&["up"]),
        }
    }

    /// Starts node `id` alone, if it is not running (Kafka: `scripts/kafka.sh up MODE ID`).
    pub fn start_node(&mut self, id: i32) -> String {
        match self.kind {
            Kind::Tansu => self.start_missing(),
            Kind::Kafka => self.kafka_script(&["up", &id.to_string()]),
        }
    }

    /// Stops every node, keeping the data (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        for id in 1..=self.nodes.len() as i32 {
            self.kill_node(id);
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_missing();
    }

    /// SIGKILLs node `id` and waits until it is gone.
    pub fn kill_node(&mut self, id: i32) {
        match self.kind {
            Kind::Tansu => {
                if let Some(mut child) = self.nodes[(id - 1) as usize].tansu.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Kind::Kafka => {
                let Some(pid) = self.kafka_pid(id) else {
                    return;
                };
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                // A JVM's main thread turns zombie at once, while its listeners stay open
                // until the last thread has exited: gone means both.
                let node = &self.nodes[(id - 1) as usize];
                let started = Instant::now();
                while (process_alive(pid) || answers(node.port) || answers(node.controller))
                    && started.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Whether node `id` is running.
    pub fn node_running(&self, id: i32) -> bool {
        match self.kind {
            Kind::Tansu => self.nodes[(id - 1) as usize].tansu.is_some(),
            Kind::Kafka => self.kafka_pid(id).is_some_and(process_alive),
        }
    }

    /// Everything the broker logged (every node's log, for Kafka).
    pub fn log(&self) -> String {
        match self.kind {
            Kind::Tansu => read(&self.dir.path().join("tansu.log")),
            Kind::Kafka => (1..=self.nodes.len())
                .map(|id| {
                    let logs = self.dir.path().join(format!("node-{id}/logs"));
                    format!(
                        "== node {id}\n{}{}",
                        read(&logs.join("stdout.log")),
                        read(&logs.join("server.log"))
                    )
                })
                .collect(),
        }
    }

    /// A library connection, for reading the topic the way a checker would: on a secure
    /// broker as User:admin (from its file alone, whatever KAFKA_* says), who may read all.
    pub fn cluster(&self) -> Cluster {
        runtime().block_on(self.connect())
    }

    /// [`Broker::cluster`] in a runtime the caller already has.
    pub async fn connect(&self) -> Cluster {
        let (_trigger, shutdown) = Shutdown::new();
        let security = if self.secure {
            let admin = self.properties("admin");
            Arc::new(
                Security::load(Some(&admin), &|_| None)
                    .unwrap_or_else(|e| panic!("{}: {e}", admin.display())),
            )
        } else {
            Security::plaintext()
        };
        Cluster::connect_with(
            &self.address(),
            security,
            Duration::from_secs(30),
            &shutdown,
        )
        .await
        .expect("connect to the test broker")
    }

    /// `weather` with this broker as its bootstrap servers.
    pub fn weather(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weather"));
        command
            .env("KAFKA_BROKERS", self.address())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// One of Apache Kafka's own tools (`org.apache.kafka.tools.TopicCommand`, ...) with the
    /// jars `scripts/kafka.sh` assembled.
    pub fn kafka_tool(&self, class: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(Path::new(ROOT).join("scripts/kafka.sh"))
            .args(["tool", class])
            .stdin(Stdio::null());
        command
    }

    fn launch_tansu(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let node = &mut self.nodes[0];
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("broker log file");
        let url = format!("tcp://127.0.0.1:{}", node.port);
        let advertised = format!("tcp://127.0.0.1:{}", node.advertised);
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
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({e}): {TANSU_HINT}"));
        node.tansu = Some(child);
        let port = node.port;
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.nodes[0]
                .tansu
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

    fn mode(&self) -> &'static str {
        if self.secure {
            "kafka-secure"
        } else if self.nodes.len() == 1 {
            "kafka"
        } else {
            "kafka-cluster"
        }
    }

    fn kafka_script(&self, args: &[&str]) -> String {
        let ports = |f: fn(&Node) -> u16| {
            self.nodes
                .iter()
                .map(|n| f(n).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let lib = Path::new(ROOT).join(format!(".kafka/{}/lib/.complete", kafka_version()));
        assert!(
            std::env::var_os("KAFKA_LIB").is_some() || lib.exists(),
            "Apache Kafka's jars were not found ({}): {KAFKA_HINT}",
            lib.display()
        );
        let output = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/kafka.sh"))
            .arg(args[0])
            .arg(self.mode())
            .args(&args[1..])
            .env("KAFKA_DIR", self.dir.path())
            .env("KAFKA_PORTS", ports(|n| n.port))
            .env("KAFKA_CONTROLLER_PORTS", ports(|n| n.controller))
            .env("KAFKA_ADVERTISED_PORTS", ports(|n| n.advertised))
            // Small heaps: the suite runs up to two tests (and one cluster) at once.
            .env("KAFKA_HEAP", "-Xms64m -Xmx384m")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/kafka.sh ({e}): {KAFKA_HINT}"));
        assert!(
            output.status.success(),
            "scripts/kafka.sh {} {} failed: {}{}\n{}",
            args.join(" "),
            self.mode(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn kafka_pid(&self, id: i32) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}/pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Kafka version scripts/kafka.sh assembles (from its pom).
pub fn kafka_version() -> String {
    let pom = read(&Path::new(ROOT).join("scripts/kafka/pom.xml"));
    pom.split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("scripts/kafka/pom.xml names <kafka.version>")
        .to_string()
}

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
        .unwrap_or_else(|| panic!("the Tansu broker binary was not found: {TANSU_HINT}"))
}

/// `n` ports free on 127.0.0.1, never handed out twice by this test process.
///
/// They come from below the kernel's ephemeral range (32768 and up), so no client socket is
/// given one, and from a counter, so a broker stopped on purpose cannot have its port taken
/// by the next test's broker while the first test's programs still dial it. Test binaries
/// run one at a time; each starts at a place of its own in the range, picked from its process
/// id (no random draw: the port a test gets never decides what it sees).
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    const HIGH: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        LOW + std::process::id().wrapping_mul(2_654_435_761) % ((HIGH - LOW) / 2),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let candidate = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(candidate < HIGH, "ran out of test ports below {HIGH}");
        let port = candidate as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The password in a client properties file (`password="..."`).
pub fn password_in(file: &Path) -> String {
    read(file)
        .split("password=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no password in {}", file.display()))
        .to_string()
}

/// A port whose next port is free too (Kafka's controller listens there).
pub fn free_port_pair() -> u16 {
    loop {
        let ports = free_ports(2);
        if ports[1] == ports[0] + 1 {
            return ports[0];
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
