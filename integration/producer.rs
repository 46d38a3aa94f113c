//! The idempotent producer under faults, checked against the topic itself.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use support::exactly_once::assert_topic_holds_each_day_once;
use support::proxy::FaultProxy;
use support::topic::{Growth, all_dates, consecutive, ends};
use support::{Broker, GUARD, KillOnDrop, Kind, Logged, free_port, kill, run_ok, wait_for};

use time::macros::date;

#[test]
fn cut_connections_and_lost_answers_leave_every_day_exactly_once() {
    let (broker_port, proxy_port) = (free_port(), free_port());
    let broker = Broker::start_advertising(Kind::from_env(), broker_port, proxy_port);
    let proxy = FaultProxy::start(proxy_port, broker_port, 0.08, 30, support::seed());

    let days = 1500;
    let output = run_ok(
        broker
            .weather()
            .env("KAFKA_BROKERS", proxy.address())
            .args([
                "produce",
                "--reset",
                "--count",
                &days.to_string(),
                "--delay-ms",
                "1",
            ]),
    );
    let (before, after) = proxy.counts();
    println!("cut before the broker: {before}, after the write: {after}");
    // Many faults of both kinds in one run, or the test proves little.
    assert!(
        before >= 5 && after >= 5,
        "too few faults: {before} + {after}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retrying"), "{stderr}");
    assert_topic_holds_each_day_once(&broker, date!(2000 - 01 - 01), days);
}

#[test]
fn a_producer_killed_at_random_moments_resumes_without_gaps_or_doubles() {
    let broker = Broker::start();
    let mut rng = fastrand::Rng::with_seed(support::seed());
    broker.produce(1);
    let growth = Growth::new(&broker.cluster());
    let written = || growth.records();
    for round in 0..8 {
        // Flat out (many batches in flight when it dies) and paced, in turn; each is killed
        // once it has added a random number of days, so every kill hits a producer at work,
        // however slowly the machine starts it.
        let delay = if round % 2 == 0 { "0" } else { "1" };
        let (before, grow) = (written(), rng.i64(1..=400));
        let mut producer = KillOnDrop::spawn(
            broker
                .weather()
                .args(["produce", "--count", "1000000", "--delay-ms", delay])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for(&format!("round {round}: {grow} more days"), GUARD, || {
            written() >= before + grow
        });
        kill(&mut producer);
        println!(
            "round {round}: killed after {} days",
            growth.settled() - before
        );
    }
    resume_and_assert_exactly_once(&broker);
}

/// Partitions stop at different dates when a producer dies or is stopped: each keeps its own
/// batches in flight. A restart fills each from its own last day, so after enough days every
/// date up to the furthest one is there once.
fn resume_and_assert_exactly_once(broker: &Broker) {
    let cluster = broker.cluster();
    let held: BTreeSet<_> = all_dates(&cluster).into_iter().collect();
    let furthest = *held.last().expect("the killed producers wrote days");
    let lagging = consecutive(date!(2000 - 01 - 01), 1_000_000)
        .into_iter()
        .take_while(|d| *d <= furthest)
        .filter(|d| !held.contains(d))
        .count();
    println!("furthest day {furthest}, {lagging} days behind it to fill");
    let count = lagging + 100;
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", &count.to_string(), "--delay-ms", "0"]),
    );
    let days = held.len() + count;
    assert_topic_holds_each_day_once(broker, date!(2000 - 01 - 01), days);
}

#[test]
fn progress_is_a_live_line_on_a_terminal_and_log_lines_otherwise() {
    let broker = Broker::start();
    // `script` runs the producer on a pseudo-terminal; its stderr is then a terminal.
    let command = format!(
        "{} produce --reset --count 40 --delay-ms 50",
        env!("CARGO_BIN_EXE_weather")
    );
    let output = run_ok(
        std::process::Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("KAFKA_BROKERS", broker.address())
            .env_remove("RUST_LOG"),
    );
    let terminal = String::from_utf8_lossy(&output.stdout);
    let redraws = terminal.matches("\r\x1b[2Ksent ").count();
    assert!(redraws >= 3, "no live status line: {terminal:?}");
    assert!(terminal.contains("days/s"), "{terminal:?}");

    // Into a pipe: no control characters, only whole log lines.
    let output = run_ok(
        broker
            .weather()
            .args(["produce", "--count", "40", "--delay-ms", "0"]),
    );
    let piped = String::from_utf8_lossy(&output.stderr);
    assert!(
        !piped.contains('\x1b') && !piped.contains('\r'),
        "{piped:?}"
    );
    assert!(piped.contains("sent 40 days"), "{piped}");
}

#[test]
fn ctrl_c_while_the_broker_is_away_stops_soon_says_what_is_unconfirmed_and_loses_nothing() {
    let mut broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--reset", "--delay-ms", "2"]),
        logs.path().join("producer.log"),
    );
    let cluster = broker.cluster();
    // Polled by end offsets, which wait for the producer to make the topic.
    wait_for("days in the topic", GUARD, || {
        ends(&cluster).values().sum::<i64>() >= 200
    });
    drop(cluster);
    broker.stop();
    // Past the first retry, while days still queue up behind the failed batches.
    wait_for("the producer to notice", GUARD, || {
        producer.printed().contains("retrying")
    });
    std::thread::sleep(Duration::from_millis(500));
    producer.interrupt();
    producer.wait_ok("the producer to stop on Ctrl-C");
    // Without its own stop, the producer would go on retrying and end in an error instead.
    let stderr = producer.printed();
    let line = stderr
        .lines()
        .find(|l| l.contains("not confirmed by the broker"))
        .unwrap_or_else(|| panic!("no line on unconfirmed days: {stderr}"));
    assert!(line.contains("run again"), "{line}");
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("error:"),
        "{stderr}"
    );

    broker.restart();
    resume_and_assert_exactly_once(&broker);
}
