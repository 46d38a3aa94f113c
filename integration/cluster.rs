//! Apache Kafka with three nodes on loopback (replication factor 3, min.insync.replicas 2,
//! unclean leader election off): what replication promises, checked by killing nodes under
//! load. These need a replicated cluster, which Tansu is not, so they run on Apache Kafka
//! only, whatever WEATHER_TEST_BROKER says.
//!
//! Each test reads the topic back itself (not through our consumer's files) and insists on
//! every day exactly once; `weather verify` then checks the consumers' files against it.

mod support;

use std::path::Path;
use std::time::Duration;

use support::topic::{Growth, all_dates, consecutive};
use support::{Broker, GUARD, Logged, run_ok, runtime, wait_for};
use time::macros::date;
use weather_stream::checkpoint;

const TOPIC: &str = "temperatures";

/// The node that leads `partition` now.
fn leader_of(broker: &Broker, partition: i32) -> i32 {
    let info = runtime()
        .block_on(broker.cluster().describe(TOPIC))
        .expect("describe the topic")
        .expect("the topic exists");
    info.partitions[&partition]
        .leader
        .expect("the partition has a leader")
}

/// `TopicCommand --describe`, Kafka's own view of the topic.
fn kafka_describe(broker: &Broker) -> String {
    let output = run_ok(
        broker
            .kafka_tool("org.apache.kafka.tools.TopicCommand")
            .args([
                "--bootstrap-server",
                &broker.address(),
                "--describe",
                "--topic",
                TOPIC,
            ]),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How many records the topic holds now, by its end offsets (cheap enough to poll while a
/// producer writes flat out).
fn days_in_topic(broker: &Broker) -> i64 {
    Growth::new(&broker.cluster()).records()
}

/// The topic holds the `days` days from 2000-01-01, each once, read from the topic itself.
fn assert_topic_exactly(broker: &Broker, days: usize) {
    let dates = all_dates(&broker.cluster());
    assert_eq!(dates.len(), days, "reports in the topic");
    assert_eq!(
        dates,
        consecutive(date!(2000 - 01 - 01), days),
        "every day once"
    );
}

/// Waits until the consumers' files reach the topic's end, then checks them with verify.
fn assert_files_caught_up_and_verified(broker: &Broker, dir: &Path, days: usize) {
    wait_for("the consumers to count every day", GUARD, || {
        checkpoint::load_all(dir)
            .is_ok_and(|files| files.iter().map(|c| c.stats.days()).sum::<u64>() == days as u64)
    });
    broker.verify(dir);
}

#[test]
fn a_topic_made_with_replication_factor_3_has_three_copies_and_needs_two_in_sync() {
    let broker = Broker::kafka_cluster();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "0", "--replication-factor", "3"]),
    );
    let described = kafka_describe(&broker);
    assert!(
        described.contains("PartitionCount: 4") && described.contains("ReplicationFactor: 3"),
        "{described}"
    );
    assert!(
        described.contains("min.insync.replicas=2"),
        "the topic's own config: {described}"
    );
    // Every partition on all three nodes, all in sync.
    let partitions: Vec<&str> = described
        .lines()
        .filter(|l| l.contains("Partition: "))
        .collect();
    assert_eq!(partitions.len(), 4, "{described}");
    for line in partitions {
        let isr = line.split("Isr: ").nth(1).unwrap_or_default();
        assert_eq!(
            isr.split_whitespace()
                .next()
                .unwrap_or_default()
                .split(',')
                .count(),
            3,
            "{line}"
        );
    }
}

#[test]
fn a_leader_killed_under_full_load_costs_nothing_and_its_node_comes_back_with_make_up() {
    let mut broker = Broker::kafka_cluster();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "0", "--replication-factor", "3"]),
    );
    // Flat out, this many days take seconds even on a fast machine (about 300,000 a second
    // here), far longer than the kill below takes to land; the test checks that it did.
    const DAYS: usize = 600_000;
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", &DAYS.to_string(), "--delay-ms", "0"]),
        logs.path().join("producer.log"),
    );
    let consumers: Vec<Logged> = ["0,2", "1,3"]
        .iter()
        .map(|partitions| {
            Logged::spawn(
                broker
                    .weather()
                    .args(["consume", partitions, "--state-dir"])
                    .arg(state.path()),
                logs.path().join(format!("consume-{partitions}.log")),
            )
        })
        .collect();
    // Killed mid-stream: after the first thousands of days, long before the last.
    let growth = Growth::new(&broker.cluster());
    wait_for("the producer to be under way", GUARD, || {
        growth.records() >= 2_000
    });
    let victim = leader_of(&broker, 2);
    broker.kill_node(victim);
    assert!(producer.is_running(), "the kill came too late to matter");

    producer.wait_ok("the producer to finish through the failover");
    let said = producer.printed();
    assert!(
        said.contains("partition 2: new leader"),
        "the producer names partition 2's new leader:\n{said}"
    );
    let warnings = said.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(
        (1..=3).contains(&warnings),
        "a line when it starts, one per other cause, no more:\n{said}"
    );
    assert!(said.contains("writing again"), "{said}");
    assert_topic_exactly(&broker, DAYS);

    // The consumers carried on to the end while the node was away.
    assert_files_caught_up_and_verified(&broker, state.path(), DAYS);

    // `make up` brings back just the dead node, with its data; it catches up.
    let said = broker.start_missing();
    assert!(
        said.contains(&format!("started node(s) {victim} of 3")),
        "{said}"
    );
    assert!((1..=3).all(|id| broker.node_running(id)));
    wait_for("the node back in every in-sync set", GUARD, || {
        let described = kafka_describe(&broker);
        described
            .lines()
            .filter(|l| l.contains("Partition: "))
            .all(|l| {
                l.split("Isr: ")
                    .nth(1)
                    .is_some_and(|isr| isr.contains(&victim.to_string()))
            })
    });
    let mut consumers = consumers;
    for consumer in &mut consumers {
        consumer.interrupt();
        consumer.wait_ok("a consumer to stop on Ctrl-C");
        let said = consumer.printed();
        let lost = said.matches("retrying with backoff").count();
        let back = said.matches("answers again").count();
        assert!(
            lost <= 2 && back <= 1 && (lost == 0) == (back == 0),
            "one line when reading stops (one per cause), one when it resumes:\n{said}"
        );
    }
    assert_topic_exactly(&broker, DAYS);
}

#[test]
fn with_two_of_three_nodes_down_the_producer_waits_and_resumes_when_one_returns() {
    let mut broker = Broker::kafka_cluster();
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "0", "--replication-factor", "3"]),
    );
    const DAYS: usize = 1_500;
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", &DAYS.to_string(), "--delay-ms", "5"]),
        logs.path().join("producer.log"),
    );
    wait_for("the producer to be under way", GUARD, || {
        days_in_topic(&broker) >= 100
    });
    // Two of three down: the controller quorum goes with them, so the survivor can neither
    // elect leaders nor shrink its in-sync replicas. acks=all writes cannot complete; the
    // producer must wait, not drop or double anything.
    broker.kill_node(2);
    broker.kill_node(3);
    wait_for("the producer to say it cannot write", GUARD, || {
        producer.printed().contains("retrying with backoff")
    });
    assert!(producer.is_running());
    let before = producer.printed();
    broker.start_node(2);

    producer.wait_ok("the producer to finish once a node is back");
    let said = producer.printed();
    assert!(said.contains("writing again"), "{said}");
    assert!(
        said.lines().filter(|l| l.contains(" WARN ")).count() <= 3,
        "{said}"
    );
    assert!(
        !said.contains("ERROR") && !before.contains("error:"),
        "{said}"
    );
    assert_topic_exactly(&broker, DAYS);
}

#[test]
fn too_few_in_sync_replicas_is_said_in_one_line_and_waited_out() {
    let mut broker = Broker::kafka_cluster();
    let logs = tempfile::tempdir().unwrap();
    // A topic that needs all three copies for every write, made with Kafka's own tool; our
    // producer takes it as it is. One node down then leaves two in sync: NOT_ENOUGH_REPLICAS,
    // while the controller quorum (two of three) still stands.
    run_ok(
        broker
            .kafka_tool("org.apache.kafka.tools.TopicCommand")
            .args([
                "--bootstrap-server",
                &broker.address(),
                "--create",
                "--topic",
                TOPIC,
                "--partitions",
                "4",
                "--replication-factor",
                "3",
                "--config",
                "min.insync.replicas=3",
            ]),
    );
    const DAYS: usize = 1_500;
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", &DAYS.to_string(), "--delay-ms", "5"]),
        logs.path().join("producer.log"),
    );
    wait_for("the producer to be under way", GUARD, || {
        days_in_topic(&broker) >= 100
    });
    broker.kill_node(3);
    wait_for("the producer to name NOT_ENOUGH_REPLICAS", GUARD, || {
        producer
            .printed()
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("NotEnoughReplicas"))
    });
    assert!(producer.is_running(), "{}", producer.printed());
    // Long enough to see it keeps waiting rather than giving up or skipping ahead.
    std::thread::sleep(Duration::from_secs(2));
    assert!(producer.is_running(), "{}", producer.printed());
    broker.start_node(3);

    producer.wait_ok("the producer to finish once the node is back in sync");
    let said = producer.printed();
    let not_enough = said
        .lines()
        .filter(|l| l.contains("NotEnoughReplicas"))
        .count();
    assert_eq!(not_enough, 1, "told once, not per retry:\n{said}");
    assert!(said.contains("writing again"), "{said}");
    assert_topic_exactly(&broker, DAYS);
}
