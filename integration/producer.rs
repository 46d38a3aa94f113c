//! The idempotent producer under faults, checked against the topic itself.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use support::proxy::FaultProxy;
use support::topic::{all_dates, consecutive, topic_days};
use support::{
    Broker, GUARD, KillOnDrop, Kind, Logged, free_port, kill, run_ok, runtime, wait_for,
};

use time::macros::date;
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::month_name;
use weather_stream::weather::Weather;

/// The topic holds each of `days` days from 2000-01-01 once, on its month's partition,
/// with the generator's value.
fn assert_exactly_once(broker: &Broker, days: usize) {
    let days_by_partition = topic_days(&broker.cluster());
    let mut dates: Vec<_> = days_by_partition
        .values()
        .flat_map(|p| &p.days)
        .map(|d| d.date)
        .collect();
    dates.sort();
    let twice: Vec<_> = dates
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(
        twice.is_empty(),
        "{} days twice, the first {:?}",
        twice.len(),
        twice.first()
    );
    let held: BTreeSet<_> = dates.iter().copied().collect();
    let expected = consecutive(date!(2000 - 01 - 01), days);
    let missing: Vec<_> = expected.iter().filter(|d| !held.contains(d)).collect();
    assert!(
        missing.is_empty(),
        "{} days missing, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(dates, expected);
    let weather = Weather::new(1);
    for (&partition, readings) in &days_by_partition {
        for reading in &readings.days {
            let key = month_name(reading.date.month());
            assert_eq!(partition_for(key.as_bytes(), 4), partition, "{reading:?}");
            assert_eq!(reading.degrees, weather.degrees(reading.date));
        }
    }
}

#[test]
fn cut_connections_and_lost_answers_leave_every_day_exactly_once() {
    let (broker_port, proxy_port) = (free_port(), free_port());
    let broker = Broker::start_advertising(Kind::from_env(), broker_port, proxy_port);
    let seed = fastrand::u64(..);
    println!("fault seed {seed}");
    let proxy = FaultProxy::start(proxy_port, broker_port, 0.08, 30, seed);

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
    assert_exactly_once(&broker, days);
}

#[test]
fn a_producer_killed_at_random_moments_resumes_without_gaps_or_doubles() {
    let broker = Broker::start();
    let seed = fastrand::u64(..);
    println!("kill seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    run_ok(
        broker
            .weather()
            .args(["produce", "--reset", "--count", "1", "--delay-ms", "0"]),
    );
    for round in 0..8 {
        // Flat out (many batches in flight when it dies) and paced, in turn.
        let delay = if round % 2 == 0 { "0" } else { "1" };
        let mut producer = KillOnDrop::spawn(
            broker
                .weather()
                .args(["produce", "--count", "1000000", "--delay-ms", delay])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        std::thread::sleep(Duration::from_millis(rng.u64(100..700)));
        kill(&mut producer);
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
    assert_exactly_once(broker, days);
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
    wait_for("the producer to create the topic", GUARD, || {
        runtime()
            .block_on(cluster.partition_count("temperatures"))
            .is_ok_and(|count| count.is_some())
    });
    wait_for("days in the topic", GUARD, || {
        all_dates(&cluster).len() >= 200
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
