//! Kafka's own Java client and tools as the reference peers: they read what we write where
//! the Java producer would have put it, see our group members and their commits, and share a
//! consumer group with us. The Java client and Apache Kafka are the reference pair, so these
//! run on Apache Kafka only, whatever WEATHER_TEST_BROKER says: on Tansu the same tools would
//! test Tansu's compatibility, not ours.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use support::{Broker, GUARD, Kind, Logged, reading_partitions, run_ok, wait_for};
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::parse_month;

const TOPIC: &str = "temperatures";
const STRING_KEYS: &str = "org.apache.kafka.common.serialization.StringDeserializer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const GROUP_COMMAND: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";

/// ConsoleConsumer printing "Partition:N\tOffset:O\tKEY" for each record, values left out
/// (they are protobuf).
fn console_consumer(broker: &Broker) -> Command {
    let mut command = broker.kafka_tool(CONSOLE_CONSUMER);
    command.args(["--bootstrap-server", &broker.address(), "--topic", TOPIC]);
    command.args(["--key-deserializer", STRING_KEYS]);
    for property in [
        "print.key=true",
        "print.partition=true",
        "print.offset=true",
        "print.value=false",
    ] {
        command.args(["--property", property]);
    }
    command
}

/// One ConsoleConsumer line: (partition, offset, key).
fn parse_console(line: &str) -> Option<(i32, i64, String)> {
    let mut fields = line.split('\t');
    let partition = fields.next()?.strip_prefix("Partition:")?.parse().ok()?;
    let offset = fields.next()?.strip_prefix("Offset:")?.parse().ok()?;
    Some((partition, offset, fields.next()?.to_string()))
}

#[test]
fn kafkas_console_consumer_finds_each_month_on_the_partition_murmur2_names() {
    let broker = Broker::start_kind(Kind::Kafka);
    broker.produce(400);
    let output = run_ok(console_consumer(&broker).args([
        "--from-beginning",
        "--max-messages",
        "400",
        "--timeout-ms",
        "60000",
    ]));
    let lines: Vec<(i32, i64, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_console)
        .collect();
    assert_eq!(lines.len(), 400, "every record read by the Java consumer");
    let mut months = BTreeSet::new();
    for (partition, _, key) in &lines {
        assert_eq!(
            *partition,
            partition_for(key.as_bytes(), 4),
            "{key} is where murmur2 (the Java client's partitioner) puts it"
        );
        months.insert(key.clone());
    }
    // 400 days from 2000-01-01 reach into February 2001: every month is there.
    assert_eq!(months.len(), 12, "{months:?}");
    assert!(
        months.iter().all(|m| parse_month(m).is_some()),
        "{months:?}"
    );
}

/// A running program whose stdout lines are collected as they come.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Lines {
    /// Starts `command` with its stdout collected (its stderr is the caller's to set).
    fn start(command: &mut Command) -> Lines {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("start");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Lines {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, as a service manager stops a program, and waits for it to end.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (partition, date) of every `weather debug` line.
fn debug_days(lines: &[String]) -> Vec<(i32, String)> {
    lines
        .iter()
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).expect(l);
            (
                value["partition"].as_i64().unwrap() as i32,
                value["date"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The rows of `ConsumerGroupCommand --describe`: partition → (current offset, client id).
fn describe_group(broker: &Broker, group: &str) -> BTreeMap<i32, (String, String)> {
    let output = broker
        .kafka_tool(GROUP_COMMAND)
        .args(["--bootstrap-server", &broker.address(), "--describe"])
        .args(["--group", group])
        .output()
        .expect("run ConsumerGroupCommand");
    let text = String::from_utf8_lossy(&output.stdout);
    let header: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("GROUP"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(partition), Some(current), Some(client)) = (
        column("PARTITION"),
        column("CURRENT-OFFSET"),
        column("CLIENT-ID"),
    ) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter(|l| l.starts_with(group))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            Some((
                cells.get(partition)?.parse().ok()?,
                (
                    cells.get(current)?.to_string(),
                    cells.get(client)?.to_string(),
                ),
            ))
        })
        .collect()
}

#[test]
fn kafkas_group_tool_lists_our_debug_member_and_its_committed_offsets() {
    let broker = Broker::start_kind(Kind::Kafka);
    broker.produce(10);
    let logs = tempfile::tempdir().unwrap();
    let member = Logged::spawn(
        broker.weather().args(["debug", "--from-beginning"]),
        logs.path().join("debug.log"),
    );
    // Ten days from 2000-01-01 all land on January's partition.
    let january = partition_for(b"January", 4);
    wait_for("the member to print and commit the ten days", GUARD, || {
        let rows = describe_group(&broker, "debug");
        rows.len() == 4
            && rows.values().all(|(_, client)| client == "weather-stream")
            && rows[&january].0 == "10"
            && member.printed().matches("\"date\"").count() == 10
    });
    let rows = describe_group(&broker, "debug");
    for (partition, (offset, _)) in &rows {
        if *partition != january {
            assert!(
                offset == "0" || offset == "-",
                "partition {partition} holds nothing: {rows:?}"
            );
        }
    }
}

#[test]
fn a_java_consumer_and_a_weather_debug_member_share_a_group_and_survive_either_leaving() {
    let broker = Broker::start_kind(Kind::Kafka);
    let group = "shared";
    broker.produce(1);
    let logs = tempfile::tempdir().unwrap();
    let ours_log = logs.path().join("ours.log");
    // Both start where the group has nothing committed: at the end, so only new days print.
    let mut ours = Lines::start(
        broker
            .weather()
            .args(["debug", "--group", group, "--session-timeout-ms", "6000"])
            .stderr(std::fs::File::create(&ours_log).unwrap()),
    );
    let log = || std::fs::read_to_string(&ours_log).unwrap_or_default();
    wait_for("our member to read all four partitions", GUARD, || {
        reading_partitions(&log()).is_some_and(|p| p.len() == 4)
    });
    let mut java = Lines::start(
        console_consumer(&broker)
            .args(["--group", group])
            .stderr(Stdio::null()),
    );
    // Split, and each member's position fixed and committed (the Java consumer finds its
    // position at its first poll): only then do new days go to a member that reads them.
    wait_for(
        "the two members to split the partitions and commit",
        GUARD,
        || {
            let rows = describe_group(&broker, group);
            let clients: BTreeSet<&String> = rows.values().map(|(_, c)| c).collect();
            reading_partitions(&log()).is_some_and(|p| !p.is_empty() && p.len() < 4)
                && rows.len() == 4
                && clients.len() == 2
                && rows.values().all(|(offset, _)| offset != "-")
        },
    );
    let ours_share = reading_partitions(&log()).unwrap();
    let theirs: BTreeSet<i32> = (0..4).filter(|p| !ours_share.contains(p)).collect();

    broker.produce(365);
    wait_for("all 365 new days printed between the two", GUARD, || {
        debug_days(&ours.lines()).len() + java.lines().len() >= 365
    });
    let ours_days = debug_days(&ours.lines());
    let java_lines: Vec<(i32, i64, String)> = java
        .lines()
        .iter()
        .filter_map(|l| parse_console(l))
        .collect();
    assert_eq!(
        ours_days.len() + java_lines.len(),
        365,
        "each day printed by exactly one member"
    );
    assert!(ours_days.iter().all(|(p, _)| ours_share.contains(p)));
    assert!(java_lines.iter().all(|(p, _, _)| theirs.contains(p)));
    assert!(!java_lines.is_empty() && !ours_days.is_empty());

    // The Java member leaves: ours takes all four and prints what comes next.
    java.terminate();
    wait_for("our member to read all four again", GUARD, || {
        reading_partitions(&log()).is_some_and(|p| p.len() == 4)
    });
    let before = ours.lines().len();
    broker.produce(31);
    wait_for("our member to print the next 31 days", GUARD, || {
        ours.lines().len() >= before + 31
    });

    // A Java member comes back, then ours leaves: the Java member takes all four.
    let java = Lines::start(
        console_consumer(&broker)
            .args(["--group", group])
            .stderr(Stdio::null()),
    );
    wait_for(
        "the two members to split the partitions again",
        GUARD,
        || reading_partitions(&log()).is_some_and(|p| !p.is_empty() && p.len() < 4),
    );
    ours.terminate();
    assert!(log().contains("left"), "{}", log());
    wait_for(
        "the Java member to hold and commit all four partitions",
        GUARD,
        || {
            let rows = describe_group(&broker, group);
            rows.len() == 4
                && rows
                    .values()
                    .all(|(offset, client)| client != "weather-stream" && offset != "-")
        },
    );
    let before = java.lines().len();
    broker.produce(30);
    wait_for("the Java member to print the next 30 days", GUARD, || {
        java.lines().len() >= before + 30
    });
}
