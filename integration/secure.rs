//! A secured cluster, as managed Kafka services run them (issue 16): Apache Kafka's
//! kafka-secure layout (`make up BROKER=kafka-secure`): one node whose only client listener is
//! SASL_SSL with SCRAM-SHA-512, a certificate for IP:127.0.0.1 signed by a CA of its own, the
//! users admin (super user), producer and consumer, and the StandardAuthorizer with
//! least-privilege ACLs. Programs get a user's properties file with `--command-config`.
//!
//! Apache Kafka only, whatever WEATHER_TEST_BROKER says: Tansu 0.6.0 has neither SASL_SSL
//! listeners nor ACLs, so there is nothing secured to test against on it.
//!
//! What a user meets on such a cluster is checked as they would meet it: the whole pipeline
//! with the files; each way a connection can be refused (wrong password, unknown user,
//! untrusted certificate, host-name mismatch, plaintext on the TLS port) and each permission
//! missing gives one line on stderr naming what to fix, a non-zero exit within a bounded time,
//! and an untouched state folder; and no password shows in anything a program prints.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::broker::{free_port_pair, password_in};
use support::exactly_once::{assert_counted_exactly_once, assert_topic_holds_each_day_once};
use support::topic::consecutive;
use support::{
    Broker, GUARD, Logged, folder_bytes, free_port, http_get, kill, only_error_line, run_ok,
    wait_for,
};
use time::macros::date;
use weather_stream::checkpoint::{Checkpoint, PartitionFile};
use weather_stream::report::month_name;

const TOPIC: &str = "temperatures";
const ACL_COMMAND: &str = "org.apache.kafka.tools.AclCommand";
const CONFIG_COMMAND: &str = "kafka.admin.ConfigCommand";
const TOPIC_COMMAND: &str = "org.apache.kafka.tools.TopicCommand";
const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
/// How long a program may take to give up on a refused connection or permission: it must
/// say so and exit, never retry forever (a guard, not a speed target).
const BOUND: Duration = Duration::from_secs(60);
const OPENSSL_HINT: &str =
    "openssl is needed to make a second CA (Debian: apt-get install openssl)";

/// What must never appear in anything a program prints: every user's password, and the
/// JAAS line that carries one.
struct Secrets(Vec<String>);

impl Secrets {
    fn of(broker: &Broker) -> Secrets {
        let mut secrets: Vec<String> = ["admin", "producer", "consumer"]
            .iter()
            .map(|user| broker.password(user))
            .collect();
        secrets.push("ScramLoginModule required".to_string());
        Secrets(secrets)
    }

    fn also(&mut self, secret: &str) {
        self.0.push(secret.to_string());
    }

    /// Panics if `text` (named `what`) holds a secret; never prints the secret itself.
    fn assert_absent(&self, what: &str, text: &str) {
        for (i, secret) in self.0.iter().enumerate() {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows secret #{i} (a password or the JAAS line); its output, secrets masked:\n{}",
                self.mask(text)
            );
        }
    }

    fn mask(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<SECRET>"))
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command with its output to files (no pipe to fill), killing it and failing the
/// test if it has not exited within `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > limit {
            kill(&mut child);
            panic!(
                "{command:?} was still running after {} s: it must give up with one line, not retry forever\nstderr so far:\n{}",
                limit.as_secs(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

/// A command that must be refused: what it is, and what its one line must say. Each entry of
/// `says` is a list of alternatives, one of which must be in the line (case-insensitive).
struct Refused<'a> {
    what: String,
    command: Command,
    says: Vec<Vec<&'a str>>,
    /// A state folder it was given, which it must leave as it was.
    state: Option<PathBuf>,
}

impl<'a> Refused<'a> {
    fn new(what: impl Into<String>, command: Command, says: &[&[&'a str]]) -> Self {
        Refused {
            what: what.into(),
            command,
            says: says
                .iter()
                .map(|alternatives| alternatives.to_vec())
                .collect(),
            state: None,
        }
    }

    fn with_state(mut self, state: &Path) -> Self {
        self.state = Some(state.to_path_buf());
        self
    }

    /// Runs it, and returns what is wrong with how it failed (nothing: it failed right).
    fn check(mut self, secrets: &Secrets) -> Vec<String> {
        let before = self.state.as_deref().map(folder_bytes);
        let started = Instant::now();
        let output = run_bounded(&mut self.command, BOUND);
        let took = started.elapsed();
        let (out, err) = (stdout(&output), stderr(&output));
        secrets.assert_absent(&self.what, &format!("{out}{err}"));
        let mut problems = Vec::new();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        if output.status.success() {
            problems.push(format!("{}: exited 0", self.what));
        }
        if lines.len() != 1 {
            problems.push(format!(
                "{}: {} lines on stderr, not one",
                self.what,
                lines.len()
            ));
        }
        // The last line is the error when there are several: its words are checked all the same.
        let line = lines.last().copied().unwrap_or_default().to_lowercase();
        for alternatives in &self.says {
            if !alternatives
                .iter()
                .any(|a| line.contains(&a.to_lowercase()))
            {
                problems.push(format!(
                    "{}: the line does not say {}",
                    self.what,
                    alternatives.join(" or ")
                ));
            }
        }
        if let (Some(dir), Some(before)) = (&self.state, before)
            && folder_bytes(dir) != before
        {
            problems.push(format!("{}: the state folder changed", self.what));
        }
        if !problems.is_empty() {
            problems.push(format!(
                "  ({} after {:.1} s, {}; stderr:\n{}  stdout:\n{})",
                self.what,
                took.as_secs_f64(),
                output.status,
                secrets.mask(&err),
                secrets.mask(&out)
            ));
        } else {
            println!("{}: {} ({:.1} s)", self.what, lines[0], took.as_secs_f64());
        }
        problems
    }
}

/// Every case's problems together, so one run shows every case that fails.
fn assert_all_refused_right(cases: Vec<Refused>, secrets: &Secrets) {
    let problems: Vec<String> = cases.into_iter().flat_map(|c| c.check(secrets)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A state folder with a file for each partition, at offset 0: a program refused by the
/// broker must leave it byte for byte as it was.
fn seeded_state(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    for partition in 0..4 {
        PartitionFile::new(&state, partition)
            .save(&Checkpoint::empty(partition, 0))
            .expect("seed a partition file");
    }
    state
}

/// `user`'s properties file with its user name and password replaced, written to `dir`.
fn properties_as(broker: &Broker, dir: &Path, file: &str, user: &str, password: &str) -> PathBuf {
    let text = std::fs::read_to_string(broker.properties("producer")).unwrap();
    let text = text.replace(
        &format!(
            "username=\"producer\" password=\"{}\"",
            broker.password("producer")
        ),
        &format!("username=\"{user}\" password=\"{password}\""),
    );
    assert!(text.contains(&format!("username=\"{user}\"")), "{text}");
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A new password of the script's shape, a different one each call, drawn from the test
/// seed (`support::seed`) so that the run is the same each time.
fn random_password() -> String {
    use std::sync::{LazyLock, Mutex};
    static RNG: LazyLock<Mutex<fastrand::Rng>> =
        LazyLock::new(|| Mutex::new(fastrand::Rng::with_seed(support::seed())));
    let mut rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    (0..24).map(|_| rng.alphanumeric()).collect()
}

/// One of Kafka's tools as User:admin.
fn as_admin(broker: &Broker, class: &str) -> Command {
    let mut command = broker.kafka_tool(class);
    command
        .args(["--bootstrap-server", &broker.address(), "--command-config"])
        .arg(broker.properties("admin"));
    command
}

/// A SCRAM-SHA-512 user made by the admin, with `operations` on topic temperatures and
/// nothing else; returns its properties file.
fn extra_user(
    broker: &Broker,
    dir: &Path,
    user: &str,
    operations: &[&str],
    secrets: &mut Secrets,
) -> PathBuf {
    let password = random_password();
    secrets.also(&password);
    run_ok(as_admin(broker, CONFIG_COMMAND).args([
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        user,
        "--add-config",
        &format!("SCRAM-SHA-512=[password={password}]"),
    ]));
    let mut acl = as_admin(broker, ACL_COMMAND);
    acl.args(["--add", "--allow-principal", &format!("User:{user}")]);
    for operation in operations {
        acl.args(["--operation", operation]);
    }
    run_ok(acl.args(["--topic", TOPIC]));
    properties_as(broker, dir, &format!("{user}.properties"), user, &password)
}

#[test]
fn kafka_secure_starts_once_with_its_files_and_kafkas_own_tools_find_least_privilege() {
    let mut broker = Broker::kafka_secure();
    let secrets = Secrets::of(&broker);
    let dir = broker.secure_dir();

    // A second `up` finds every ACL in place, adds none, and names the files in one line.
    let again = broker.start_missing();
    secrets.assert_absent("make up again", &again);
    assert_eq!(again.lines().count(), 1, "{again}");
    assert!(again.contains("already running"), "{again}");
    assert!(again.contains("none added"), "{again}");
    for file in [
        "producer.properties",
        "consumer.properties",
        "admin.properties",
        "ca.pem",
    ] {
        assert!(
            again.contains(&format!("{}/{file}", dir.display())),
            "{again}"
        );
    }

    // Secrets are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }
    for user in ["admin", "producer", "consumer"] {
        let text = std::fs::read_to_string(broker.properties(user)).unwrap();
        for line in [
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            "ssl.truststore.type=PEM",
            &format!("ssl.truststore.location={}", broker.ca().display()),
            &format!("username=\"{user}\""),
        ] {
            assert!(text.contains(line), "{user}.properties lacks {line}");
        }
    }
    // The broker's certificate is for IP:127.0.0.1 and nothing else.
    let certificate = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(dir.join("broker.pem")),
    );
    let names = stdout(&certificate);
    assert!(names.contains("IP Address:127.0.0.1"), "{names}");
    assert!(!names.contains("DNS:"), "{names}");

    // The ACLs are the contract's, nothing on the cluster: the idempotent producer needs no
    // IDEMPOTENT_WRITE on Kafka 4.1 (WRITE on a topic is enough, KIP-679).
    let acls = stdout(&run_ok(as_admin(&broker, ACL_COMMAND).arg("--list")));
    let mut granted: Vec<String> = Vec::new();
    let mut resource = String::new();
    for line in acls.lines() {
        if let Some(rest) = line.split("resourceType=").nth(1) {
            let kind = rest.split(',').next().unwrap();
            let name = rest
                .split("name=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            resource = format!("{kind} {name}");
        } else if let Some(rest) = line.split("principal=").nth(1) {
            let principal = rest.split(',').next().unwrap();
            let operation = rest
                .split("operation=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            granted.push(format!("{principal} {operation} {resource}"));
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "User:consumer CREATE TOPIC temperatures.stats",
            "User:consumer DESCRIBE TOPIC temperatures",
            "User:consumer DESCRIBE TOPIC temperatures.stats",
            "User:consumer DESCRIBE_CONFIGS TOPIC temperatures",
            "User:consumer READ GROUP debug",
            "User:consumer READ GROUP stats",
            "User:consumer READ TOPIC temperatures",
            "User:consumer READ TOPIC temperatures.stats",
            "User:consumer WRITE TOPIC temperatures.stats",
            "User:producer CREATE TOPIC temperatures",
            "User:producer DESCRIBE TOPIC temperatures",
            "User:producer DESCRIBE_CONFIGS TOPIC temperatures",
            "User:producer READ TOPIC temperatures",
            "User:producer WRITE TOPIC temperatures",
        ],
        "{acls}"
    );

    // Kafka's own tools with the files: the producer's user makes the topic and writes,
    // with the Java producer's idempotence explicitly on.
    let tool_as = |class: &str, config_flag: &str, user: &str| {
        let mut command = broker.kafka_tool(class);
        command
            .args(["--bootstrap-server", &broker.address(), config_flag])
            .arg(broker.properties(user));
        command
    };
    run_ok(
        tool_as(TOPIC_COMMAND, "--command-config", "producer").args([
            "--create",
            "--topic",
            TOPIC,
            "--partitions",
            "4",
            "--replication-factor",
            "1",
        ]),
    );
    let produce_as = |user: &str| {
        let mut command = tool_as(CONSOLE_PRODUCER, "--producer.config", user);
        command.args(["--topic", TOPIC, "--property", "parse.key=true"]);
        command.args(["--property", "key.separator=:"]);
        command.args(["--producer-property", "enable.idempotence=true"]);
        command.args(["--producer-property", "acks=all"]);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"January:one\nFebruary:two\nMarch:three\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let written = produce_as("producer");
    assert!(
        written.status.success() && !stderr(&written).contains("Exception"),
        "the producer's user cannot write: {}",
        secrets.mask(&stderr(&written))
    );
    // The consumer's user cannot: with no WRITE anywhere, even its producer id is refused.
    let refused = produce_as("consumer");
    assert!(
        stderr(&refused).contains("AuthorizationException"),
        "the consumer's user could write: {}",
        secrets.mask(&stderr(&refused))
    );

    // The consumer's user reads, in group debug; the producer's may read its topic (its resume
    // needs that) but not in a group.
    let consume_as = |user: &str, extra: &[&str]| {
        let mut command = tool_as(CONSOLE_CONSUMER, "--consumer.config", user);
        command.args([
            "--topic",
            TOPIC,
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
        ]);
        command.args(["--property", "print.key=true"]);
        run_bounded(command.args(extra), GUARD)
    };
    let read = consume_as("consumer", &["--group", "debug", "--from-beginning"]);
    let mut keys: Vec<String> = stdout(&read).lines().map(|l| l.to_string()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["February\ttwo", "January\tone", "March\tthree"],
        "{}",
        secrets.mask(&stderr(&read))
    );
    let in_group = consume_as("producer", &["--group", "debug", "--from-beginning"]);
    assert!(stdout(&in_group).is_empty(), "{}", stdout(&in_group));
    assert!(
        stderr(&in_group).contains("GroupAuthorizationException"),
        "{}",
        secrets.mask(&stderr(&in_group))
    );
    // And the consumer's attempt wrote nothing: the admin still reads three records.
    let all = run_bounded(
        tool_as(CONSOLE_CONSUMER, "--consumer.config", "admin").args([
            "--topic",
            TOPIC,
            "--from-beginning",
            "--timeout-ms",
            "30000",
        ]),
        GUARD,
    );
    assert_eq!(stdout(&all).lines().count(), 3, "{}", stdout(&all));

    // Kafka keeps the passwords out of its own log.
    secrets.assert_absent("the broker's log", &broker.log());
}

#[test]
fn the_whole_pipeline_runs_over_sasl_ssl_with_scram_sha_512() {
    const DAYS: usize = 400;
    let broker = Broker::kafka_secure();
    let secrets = Secrets::of(&broker);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");

    let produced = broker.produce(DAYS as u64);
    secrets.assert_absent(
        "weather produce",
        &format!("{}{}", stdout(&produced), stderr(&produced)),
    );
    // Read back with the admin's credentials: each day once, where murmur2 puts it, with the
    // generator's value.
    assert_topic_holds_each_day_once(&broker, date!(2000 - 01 - 01), DAYS);

    let consumed = broker.catch_up("0,1,2,3", &state);
    secrets.assert_absent(
        "weather consume",
        &format!("{}{}", stdout(&consumed), stderr(&consumed)),
    );
    // Counted exactly once (and `weather verify`, as the consumer, agrees).
    let verified = assert_counted_exactly_once(&broker, &state, date!(2000 - 01 - 01), DAYS);
    secrets.assert_absent(
        "weather verify",
        &format!("{}{}", stdout(&verified), stderr(&verified)),
    );

    // A member of group debug prints every record.
    let mut debug = Logged::spawn(
        broker
            .weather_as("consumer")
            .args(["debug", "--from-beginning"]),
        work.path().join("debug.log"),
    );
    let json_lines = |log: &str| log.lines().filter(|l| l.starts_with('{')).count();
    wait_for("weather debug to print every day", GUARD, || {
        assert!(
            debug.is_running(),
            "weather debug ended: {}",
            secrets.mask(&debug.printed())
        );
        json_lines(&debug.printed()) >= DAYS
    });
    debug.interrupt();
    debug.wait_ok("weather debug to stop on Ctrl-C");
    let printed = debug.printed();
    secrets.assert_absent("weather debug", &printed);
    let mut dates: Vec<String> = printed
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).expect(l);
            value["date"].as_str().expect(l).to_string()
        })
        .collect();
    dates.sort();
    let expected: Vec<String> = consecutive(date!(2000 - 01 - 01), DAYS)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(dates, expected, "weather debug printed each day once");

    // A member of group stats keeps its partitions' state in the changelog
    // (temperatures.stats), which the consumer's user may create, write and read; any
    // machine then checks the merged state with `verify --from-kafka`, as the consumer.
    let mut member = Logged::spawn(
        broker
            .weather_as("consumer")
            .args(["consume", "--group", "stats", "--state-dir"])
            .arg(work.path().join("member")),
        work.path().join("member.log"),
    );
    let mut verified = String::new();
    wait_for("verify --from-kafka to count every day", GUARD, || {
        assert!(
            member.is_running(),
            "the stats member ended: {}",
            secrets.mask(&member.printed())
        );
        let output = broker
            .weather_as("consumer")
            .args(["verify", "--from-kafka"])
            .output()
            .unwrap();
        verified = format!("{}{}", stdout(&output), stderr(&output));
        let reports: usize = stdout(&output)
            .lines()
            .filter_map(|l| {
                l.split(": ok, ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        output.status.success() && reports == DAYS
    });
    secrets.assert_absent("weather verify --from-kafka", &verified);
    member.interrupt();
    member.wait_ok("the stats member to stop on Ctrl-C");
    secrets.assert_absent("weather consume --group stats", &member.printed());

    // The dashboard serves the counts of the files.
    let port = free_port();
    let mut serve = Logged::spawn(
        broker
            .weather_as("consumer")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
            ])
            .arg(&state),
        work.path().join("serve.log"),
    );
    let mut answer = String::new();
    wait_for("the dashboard to answer", GUARD, || {
        assert!(
            serve.is_running(),
            "weather serve ended: {}",
            secrets.mask(&serve.printed())
        );
        match http_get(port, "/api/stats") {
            Ok(a) if a.starts_with("HTTP/1.1 200") => {
                answer = a;
                true
            }
            _ => false,
        }
    });
    let body = &answer[answer.find("\r\n\r\n").expect("a body") + 4..];
    let stats: serde_json::Value = serde_json::from_str(body).expect(body);
    assert_eq!(
        stats["partitions"],
        serde_json::json!([0, 1, 2, 3]),
        "{body}"
    );
    let mut counts: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for day in consecutive(date!(2000 - 01 - 01), DAYS) {
        *counts
            .entry((month_name(day.month()).to_string(), day.year()))
            .or_default() += 1;
    }
    for ((month, year), count) in &counts {
        assert_eq!(
            stats["months"][month][year.to_string()]["count"],
            serde_json::json!(count),
            "{month} {year}: {body}"
        );
    }
    serve.interrupt();
    serve.wait_ok("weather serve to stop on Ctrl-C");
    secrets.assert_absent("weather serve", &serve.printed());
    secrets.assert_absent("the broker's log", &broker.log());
}

#[test]
fn a_refused_connection_is_one_line_and_leaves_the_state_alone() {
    let broker = Broker::kafka_secure();
    let mut secrets = Secrets::of(&broker);
    let work = tempfile::tempdir().unwrap();
    let state = seeded_state(work.path());
    let port = broker.port();
    let address = broker.address();

    // A wrong password for a real user, and a user the broker does not know.
    let wrong = random_password();
    secrets.also(&wrong);
    let wrong_password =
        properties_as(&broker, work.path(), "wrong.properties", "producer", &wrong);
    let stranger = random_password();
    secrets.also(&stranger);
    let unknown_user = properties_as(
        &broker,
        work.path(),
        "unknown.properties",
        "intruder",
        &stranger,
    );

    // A CA of our own, which did not sign the broker's certificate.
    let other_ca = work.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=not the broker's CA",
            "-keyout",
        ])
        .arg(work.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): {OPENSSL_HINT}"));
    assert!(made.status.success(), "{}: {OPENSSL_HINT}", stderr(&made));
    let untrusted = work.path().join("untrusted.properties");
    std::fs::write(
        &untrusted,
        std::fs::read_to_string(broker.properties("consumer"))
            .unwrap()
            .replace(
                &broker.ca().display().to_string(),
                &other_ca.display().to_string(),
            ),
    )
    .unwrap();

    let consume = |config: Option<&Path>, bootstrap: &str| {
        let mut command = match config {
            Some(file) => broker.weather_with(file),
            None => broker.weather(),
        };
        command
            .env("KAFKA_BROKERS", bootstrap)
            .args(["consume", "0,1,2,3", "--until-caught-up", "--state-dir"])
            .arg(&state);
        command
    };
    let other = |config: Option<&Path>, bootstrap: &str, args: &[&str]| {
        let mut command = match config {
            Some(file) => broker.weather_with(file),
            None => broker.weather(),
        };
        command.env("KAFKA_BROKERS", bootstrap).args(args);
        command
    };
    let produce = ["produce", "--count", "1", "--delay-ms", "0"];
    let debug = ["debug", "--from-beginning"];
    let localhost = format!("localhost:{port}");
    let consumer = broker.properties("consumer");
    let producer = broker.properties("producer");

    let wrong_says: &[&[&str]] = &[&["authentication failed"], &["producer"]];
    let unknown_says: &[&[&str]] = &[&["authentication failed"], &["intruder"]];
    let untrusted_says: &[&[&str]] = &[
        &["certificate"],
        &["not trusted", "unknown issuer"],
        &[&address],
    ];
    let mismatch_says: &[&[&str]] = &[&["certificate"], &["localhost"]];
    let plaintext_says: &[&[&str]] = &[&["TLS", "SSL"], &["security.protocol"]];
    let cases = vec![
        Refused::new(
            "consume with a wrong password",
            consume(Some(&wrong_password), &address),
            wrong_says,
        )
        .with_state(&state),
        Refused::new(
            "produce with a wrong password",
            other(Some(&wrong_password), &address, &produce),
            wrong_says,
        ),
        Refused::new(
            "consume as an unknown user",
            consume(Some(&unknown_user), &address),
            unknown_says,
        )
        .with_state(&state),
        Refused::new(
            "debug as an unknown user",
            other(Some(&unknown_user), &address, &debug),
            unknown_says,
        ),
        Refused::new(
            "consume trusting another CA",
            consume(Some(&untrusted), &address),
            untrusted_says,
        )
        .with_state(&state),
        Refused::new(
            "produce trusting another CA",
            other(Some(&untrusted), &address, &produce),
            untrusted_says,
        ),
        Refused::new(
            "consume via localhost",
            consume(Some(&consumer), &localhost),
            mismatch_says,
        )
        .with_state(&state),
        Refused::new(
            "produce via localhost",
            other(Some(&producer), &localhost, &produce),
            mismatch_says,
        ),
        Refused::new(
            "consume in plaintext",
            consume(None, &address),
            plaintext_says,
        )
        .with_state(&state),
        Refused::new(
            "debug in plaintext",
            other(None, &address, &debug),
            plaintext_says,
        ),
    ];
    assert_all_refused_right(cases, &secrets);
    secrets.assert_absent("the broker's log", &broker.log());
}

#[test]
fn each_user_does_only_what_its_acls_allow_and_is_told_what_it_lacks() {
    let broker = Broker::kafka_secure();
    let mut secrets = Secrets::of(&broker);
    let work = tempfile::tempdir().unwrap();
    let state = seeded_state(work.path());
    // A reader with READ on the topic but nothing on group debug, and a writer with WRITE
    // (and DESCRIBE, so it sees that the topic is missing) but no CREATE.
    let reader = extra_user(
        &broker,
        work.path(),
        "reader",
        &["Read", "Describe"],
        &mut secrets,
    );
    let writer = extra_user(
        &broker,
        work.path(),
        "writer",
        &["Write", "Describe"],
        &mut secrets,
    );
    let produce = ["produce", "--count", "1", "--delay-ms", "0"];

    // Before the topic exists: making it needs CREATE.
    assert_all_refused_right(
        vec![Refused::new(
            "produce as a user without CREATE, the topic missing",
            {
                let mut command = broker.weather_with(&writer);
                command.args(produce);
                command
            },
            &[
                &["User:writer"],
                &["CREATE"],
                &["topic temperatures", "cluster"],
            ],
        )],
        &secrets,
    );

    broker.produce(40);
    let mut consume_as_writer = broker.weather_with(&writer);
    consume_as_writer
        .args(["consume", "0,1,2,3", "--until-caught-up", "--state-dir"])
        .arg(&state);
    // The writer resuming the topic: the producer reads its last days, which needs READ.
    let mut resume_as_writer = broker.weather_with(&writer);
    resume_as_writer.args(produce);
    // The producer's user may read its topic (to resume) but is in no group.
    let mut debug_as_producer = broker.weather_as("producer");
    debug_as_producer.args(["debug", "--from-beginning"]);
    let mut produce_as_consumer = broker.weather_as("consumer");
    produce_as_consumer.args(produce);
    let mut debug_as_reader = broker.weather_with(&reader);
    debug_as_reader.args(["debug", "--from-beginning"]);
    assert_all_refused_right(
        vec![
            Refused::new(
                "consume as a user without READ on the topic",
                consume_as_writer,
                &[&["User:writer"], &["READ"], &["topic temperatures"]],
            )
            .with_state(&state),
            Refused::new(
                "resume as a user without READ on the topic",
                resume_as_writer,
                &[
                    &["User:writer"],
                    &["READ"],
                    &["topic temperatures"],
                    &["resume"],
                ],
            ),
            Refused::new(
                "debug as the producer's user, which has no group",
                debug_as_producer,
                &[&["User:producer"], &["READ"], &["group debug"]],
            ),
            Refused::new(
                "produce as the consumer's user",
                produce_as_consumer,
                &[&["User:consumer"], &["WRITE"], &["topic temperatures"]],
            ),
            Refused::new(
                "debug as a user without READ on group debug",
                debug_as_reader,
                &[&["User:reader"], &["READ"], &["group debug"]],
            ),
        ],
        &secrets,
    );

    // Nothing was written by the refused producer: the topic holds the 40 days alone.
    assert_topic_holds_each_day_once(&broker, date!(2000 - 01 - 01), 40);
    secrets.assert_absent("the broker's log", &broker.log());
}

#[test]
fn environment_variables_configure_a_program_and_override_its_file() {
    let broker = Broker::kafka_secure();
    let mut secrets = Secrets::of(&broker);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");

    // No file: the producer's credentials and the CA from the environment alone.
    let produced = run_ok(
        broker
            .weather()
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
            .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
            .env("KAFKA_SASL_USERNAME", "producer")
            .env("KAFKA_SASL_PASSWORD", broker.password("producer"))
            .env("KAFKA_SSL_CA_LOCATION", broker.ca())
            .args(["produce", "--count", "30", "--delay-ms", "0"]),
    );
    secrets.assert_absent(
        "weather produce",
        &format!("{}{}", stdout(&produced), stderr(&produced)),
    );
    assert_topic_holds_each_day_once(&broker, date!(2000 - 01 - 01), 30);

    // The environment wins over the file: the consumer's file with a wrong password in
    // KAFKA_SASL_PASSWORD is refused, and leaves the state alone.
    let wrong = random_password();
    secrets.also(&wrong);
    let mut overridden = broker.weather_as("consumer");
    overridden
        .env("KAFKA_SASL_PASSWORD", &wrong)
        .args(["consume", "0,1,2,3", "--until-caught-up", "--state-dir"])
        .arg(seeded_state(work.path()));
    assert_all_refused_right(
        vec![
            Refused::new(
                "consume with the password overridden by the environment",
                overridden,
                &[&["authentication failed"], &["consumer"]],
            )
            .with_state(&work.path().join("state")),
        ],
        &secrets,
    );
    std::fs::remove_dir_all(&state).unwrap();
    let consumed = broker.catch_up("0,1,2,3", &state);
    secrets.assert_absent(
        "weather consume",
        &format!("{}{}", stdout(&consumed), stderr(&consumed)),
    );
    assert_counted_exactly_once(&broker, &state, date!(2000 - 01 - 01), 30);
}

#[test]
fn no_help_text_shows_a_password_from_the_environment_or_the_file() {
    let work = tempfile::tempdir().unwrap();
    let password = random_password();
    let secrets = Secrets(vec![
        password.clone(),
        "ScramLoginModule required".to_string(),
    ]);
    let config = work.path().join("client.properties");
    std::fs::write(
        &config,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"producer\" password=\"{password}\";\n"
        ),
    )
    .unwrap();
    let weather = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weather"));
        command
            .env("KAFKA_SASL_USERNAME", "producer")
            .env("KAFKA_SASL_PASSWORD", &password)
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
            .env_remove("RUST_LOG");
        command
    };
    let help = run_ok(weather().arg("--help"));
    let text = stdout(&help);
    secrets.assert_absent("weather --help", &format!("{text}{}", stderr(&help)));
    assert!(text.contains("--command-config"), "{text}");
    // Every subcommand the help lists, so a new one is covered too.
    let subcommands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(subcommands.len() >= 6, "{subcommands:?}");
    for subcommand in &subcommands {
        for with_file in [false, true] {
            let mut command = weather();
            if with_file {
                command.arg("--command-config").arg(&config);
            }
            let output = run_ok(command.args([subcommand, "--help"]));
            secrets.assert_absent(
                &format!("weather {subcommand} --help"),
                &format!("{}{}", stdout(&output), stderr(&output)),
            );
        }
    }
}

/// Stops what the demo started, even when an assertion fails first.
struct Down<'a>(u16, &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
            .args(["down", "kafka-secure"])
            .env("KAFKA_PORT", self.0.to_string())
            .env("KAFKA_DIR", self.1)
            .output();
    }
}

#[test]
fn make_demo_runs_on_kafka_secure_with_each_users_file_and_again_the_next_day() {
    let broker_dir = tempfile::tempdir().unwrap();
    let demo_dir = tempfile::tempdir().unwrap();
    let (port, dashboard) = (free_port_pair(), free_port());
    let _down = Down(port, broker_dir.path());
    let demo = |log: &str| {
        Logged::spawn(
            Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
                .env("BROKER", "kafka-secure")
                .env("KAFKA_PORT", port.to_string())
                .env("KAFKA_DIR", broker_dir.path())
                .env("DEMO_DIR", demo_dir.path())
                .env("DASHBOARD", format!("127.0.0.1:{dashboard}"))
                .env("WEATHER", env!("CARGO_BIN_EXE_weather"))
                .env_remove("KAFKA_BROKERS")
                .env_remove("COMMAND_CONFIG")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null()),
            demo_dir.path().join(log),
        )
    };
    let state = demo_dir.path().join("state");
    let counted = || {
        weather_stream::checkpoint::load_all(&state)
            .map(|files| files.iter().map(|c| c.stats.days()).sum::<u64>())
            .unwrap_or(0)
    };
    // Runs the demo until its consumers have counted `days`, then stops it with Ctrl-C.
    let run_until = |log: &str, days: u64| {
        let mut running = demo(log);
        // The first run starts the broker too: formatting, TLS and fourteen ACLs, each a JVM of
        // Kafka's AclCommand, which take a minute and more on two loaded cores.
        let limit = 2 * GUARD;
        let started = Instant::now();
        while counted() < days {
            assert!(
                running.is_running(),
                "the demo ended by itself: {}",
                running.printed()
            );
            assert!(
                started.elapsed() < limit,
                "the demo's consumers counted {} of {days} days in {} s: {}",
                counted(),
                limit.as_secs(),
                running.printed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stats = http_get(dashboard, "/api/stats").expect("the dashboard answers");
        assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
        running.interrupt();
        running.wait_ok("the demo to stop on Ctrl-C");
        running.printed()
    };
    let first = run_until("demo.log", 20);

    // The producer wrote as User:producer and the consumers read as User:consumer: the
    // script's files were the only credentials, and none of their secrets was printed.
    let secure = broker_dir.path().join("secure");
    let mut secrets = Secrets(vec!["ScramLoginModule required".to_string()]);
    for user in ["admin", "producer", "consumer"] {
        secrets.also(&password_in(&secure.join(format!("{user}.properties"))));
    }
    secrets.assert_absent("make demo", &first);
    assert!(first.contains("demo stopped"), "{first}");
    assert!(first.contains("added 14 of 14 ACLs"), "{first}");

    // The next day the demo goes on where it stopped, as it does on any other broker: the
    // producer resumes the topic with its own file, the consumers their files.
    let before = counted();
    let second = run_until("demo-again.log", before + 20);
    secrets.assert_absent("make demo again", &second);
    assert!(second.contains("none added"), "{second}");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_weather"))
            .arg("--command-config")
            .arg(secure.join("consumer.properties"))
            .env("KAFKA_BROKERS", format!("127.0.0.1:{port}"))
            .args(["verify", "--state-dir"])
            .arg(&state),
    );
}

/// `make TARGET BROKER=kafka-secure` with the broker's data in `dir` and its port `port`.
fn make(target: &str, port: u16, dir: &Path, extra: &[&str]) -> Output {
    Command::new("make")
        .args([
            "-s",
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            target,
            "BROKER=kafka-secure",
        ])
        .args(extra)
        .env("KAFKA_PORT", port.to_string())
        .env("KAFKA_DIR", dir)
        .env_remove("KAFKA_BROKERS")
        .env_remove("COMMAND_CONFIG")
        .output()
        .expect("run make")
}

#[test]
fn make_up_status_and_down_with_broker_kafka_secure_and_each_target_gets_its_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let _down = Down(port, dir.path());
    let up = make("up", port, dir.path(), &[]);
    let said = format!("{}{}", stdout(&up), stderr(&up));
    assert!(up.status.success(), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    let secure = dir.path().join("secure");
    for words in [
        format!("KAFKA_BROKERS=127.0.0.1:{port} over SASL_SSL"),
        format!("{}/producer.properties", secure.display()),
        format!("{}/consumer.properties", secure.display()),
        format!("{}/admin.properties", secure.display()),
        format!("CA {}/ca.pem", secure.display()),
        "added 14 of 14 ACLs".to_string(),
    ] {
        assert!(said.contains(&words), "{words} not in: {said}");
    }
    let status = make("status", port, dir.path(), &[]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains(&format!("running on 127.0.0.1:{port}")),
        "{}",
        stdout(&status)
    );

    // Each program's target passes the file of the user it needs, or COMMAND_CONFIG's.
    let dry = |target: &str, extra: &[&str]| {
        let output = make(target, port, dir.path(), &[&["-n"][..], extra].concat());
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
            .lines()
            .find(|l| l.contains("weather"))
            .unwrap_or_else(|| panic!("no weather command in make -n {target}"))
            .to_string()
    };
    let producer = format!(
        "--command-config {}/producer.properties produce",
        secure.display()
    );
    assert!(
        dry("produce", &[]).contains(&producer),
        "{}",
        dry("produce", &[])
    );
    for target in ["debug", "consume", "verify", "plot", "serve"] {
        let line = dry(target, &[]);
        let consumer = format!(
            "--command-config {}/consumer.properties {target}",
            secure.display()
        );
        assert!(line.contains(&consumer), "make {target}: {line}");
        let line = dry(target, &["COMMAND_CONFIG=/elsewhere/client.properties"]);
        assert!(
            line.contains(&format!(
                "--command-config /elsewhere/client.properties {target}"
            )),
            "make {target} COMMAND_CONFIG=...: {line}"
        );
    }

    let down = make("down", port, dir.path(), &[]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(stdout(&down).contains("stopped"), "{}", stdout(&down));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after make down"
    );
}

#[test]
fn a_formatted_node_whose_users_files_are_gone_is_refused_in_one_line() {
    // The SCRAM users live in the formatted data; new files would hold passwords the broker
    // never heard of, so the script refuses rather than start a broker nobody can log in to.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node-1/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("meta.properties"), "node.id=1\n").unwrap();
    let port = free_port_pair();
    let line = only_error_line(
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
            .args(["up", "kafka-secure"])
            .env("KAFKA_PORT", port.to_string())
            .env("KAFKA_DIR", dir.path())
            .stdin(Stdio::null()),
    );
    assert!(line.contains("passwords are lost"), "{line}");
    assert!(
        line.contains(&format!("remove {}", dir.path().display())),
        "{line}"
    );
    assert!(
        !dir.path().join("secure").exists(),
        "files were made anyway"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a broker started anyway"
    );
}
