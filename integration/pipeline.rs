//! The seed pipeline against a real broker: produce, consume, verify, plot, restart.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::record::Record;
use support::ProduceRaw;
use support::exactly_once::assert_counted_exactly_once;
use support::topic::{all_dates, consecutive, ends};
use support::{Broker, GUARD, HELD, HOLD_SAVE, Logged, folder_bytes, run_ok, runtime, wait_for};
use time::macros::date;
use time::{Date, Month};
use weather_stream::checkpoint::{self, Checkpoint, PartitionFile};
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::month_name;
use weather_stream::weather::Weather;

fn merged_checkpoints(dir: &Path) -> Vec<Checkpoint> {
    checkpoint::load_all(dir).expect("partition files load")
}

#[test]
fn ten_years_flow_through_to_verified_statistics_and_a_plot() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "3650", "--delay-ms", "0", "--reset"]),
    );
    broker.catch_up("0,1,2,3", Path::new(state_dir));

    // Every (month, year) holds exactly its calendar days, on the partition murmur2 picks,
    // with the sum of the generator's own values in date order.
    let weather = Weather::new(1);
    let mut expected: BTreeMap<(i32, Month, i32), (u64, f64)> = BTreeMap::new();
    for date in consecutive(date!(2000 - 01 - 01), 3650) {
        let partition = partition_for(month_name(date.month()).as_bytes(), 4);
        let entry = expected
            .entry((partition, date.month(), date.year()))
            .or_default();
        entry.0 += 1;
        entry.1 += weather.degrees(date);
    }
    let checkpoints = merged_checkpoints(state.path());
    assert_eq!(checkpoints.len(), 4);
    let mut seen = 0;
    for c in &checkpoints {
        for (month, years) in &c.stats.months {
            for (year, m) in years {
                let (count, sum) = expected[&(c.partition, *month, *year)];
                assert_eq!(m.count, count, "{month} {year}");
                assert_eq!(m.sum.to_bits(), sum.to_bits(), "{month} {year}");
                if (*year, *month) != (2009, Month::December) {
                    assert_eq!(
                        m.count as u8,
                        time::util::days_in_month(*month, *year),
                        "{month} {year}"
                    );
                }
                seen += 1;
            }
        }
    }
    assert_eq!(seen, expected.len());
    assert_eq!(checkpoints.iter().map(|c| c.offset).sum::<i64>(), 3650);

    let verify = run_ok(broker.weather().args(["verify", "--state-dir", state_dir]));
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(stdout.matches(": ok,").count(), 4, "{stdout}");

    let svg_path = state.path().join("month.svg");
    run_ok(broker.weather().args([
        "plot",
        "--state-dir",
        state_dir,
        "--out",
        svg_path.to_str().unwrap(),
    ]));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("Average maximum temperature, 2009"));
    assert_eq!(svg.matches("class=\"bar\"").count(), 3);
    let merged_jan: f64 = {
        let c = checkpoints.iter().find(|c| c.partition == 2).unwrap();
        c.stats.get(Month::January, 2009).unwrap().avg()
    };
    assert!(
        svg.contains(&format!("{merged_jan:.1}°F")),
        "January 2009 label missing"
    );
}

#[test]
fn a_consumer_killed_mid_catch_up_ends_identical_to_one_uninterrupted_run() {
    let broker = Broker::start();
    let interrupted = tempfile::tempdir().unwrap();
    let straight = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    broker.produce(1000);
    broker.catch_up("0,1,2,3", interrupted.path());

    // Three rounds: more days arrive, one a batch, and a consumer reading a few at a time
    // (so a catch-up is many saves) is killed inside its Nth save.
    for round in 0..3 {
        run_ok(
            broker
                .weather()
                .args(["produce", "--count", "900", "--delay-ms", "1"]),
        );
        let before = offsets(interrupted.path());
        let ends = ends(&broker.cluster());
        let hold_at = round + 2;
        let mut consumer = Logged::spawn(
            broker
                .weather()
                .args(["consume", "0,1,2,3", "--fetch-bytes", "300", "--state-dir"])
                .arg(interrupted.path())
                .env(HOLD_SAVE, hold_at.to_string()),
            logs.path().join(format!("consumer-{round}.log")),
        );
        wait_for(
            &format!("round {round}: save {hold_at} held"),
            GUARD,
            || consumer.printed().contains(HELD) || offsets(interrupted.path()) == ends,
        );
        consumer.kill();
        // Files moved on, but not all to their ends: killed in the middle of it. (The held
        // save stops one partition; the others may reach their ends before the kill.)
        let after = offsets(interrupted.path());
        println!(
            "round {round}: offsets {before:?} before, {after:?} after the kill, ends {ends:?}"
        );
        assert!(
            after != before && ends.iter().any(|(p, end)| after[p] < *end),
            "round {round}: the kill did not land mid-catch-up: offsets {before:?} before, {after:?} after, ends {ends:?}"
        );
    }
    broker.catch_up("0,1,2,3", interrupted.path());
    broker.catch_up("0,1,2,3", straight.path());

    let a = folder_bytes(interrupted.path());
    let b = folder_bytes(straight.path());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs after interruptions");
    }
    assert_counted_exactly_once(&broker, interrupted.path(), date!(2000 - 01 - 01), 3700);
}

/// Each partition file's offset.
fn offsets(dir: &Path) -> BTreeMap<i32, i64> {
    merged_checkpoints(dir)
        .iter()
        .map(|c| (c.partition, c.offset))
        .collect()
}

#[test]
fn the_producer_resumes_after_the_last_day_and_fills_a_hole_left_by_a_crash() {
    let broker = Broker::start();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    broker.produce(50);
    let cluster = broker.cluster();
    assert_eq!(all_dates(&cluster), consecutive(date!(2000 - 01 - 01), 150));

    // A crash mid-round on a fresh topic: January and February 1..28 are in, then the
    // round's batch for partition 1 (February 29) was lost while partition 0's (March 1..10) landed.
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "59", "--delay-ms", "0", "--reset"]),
    );
    let weather = Weather::new(1);
    runtime().block_on(async {
        let partition = cluster.partition("temperatures", 0).await.unwrap();
        let march: Vec<Record> = consecutive(date!(2000 - 03 - 01), 10)
            .into_iter()
            .map(|d| Record {
                key: Some(b"March".to_vec()),
                value: Some(prost::Message::encode_to_vec(&weather.report(d))),
                headers: BTreeMap::new(),
                timestamp: Utc.timestamp_millis_opt(0).unwrap(),
            })
            .collect();
        partition.produce(march).await.unwrap();
    });
    let mut dates = all_dates(&cluster);
    assert!(!dates.contains(&date!(2000 - 02 - 29)));
    broker.produce(30);
    dates = all_dates(&cluster);
    // February 29 was filled in, March went on from the 11th, nothing twice.
    assert_eq!(dates, consecutive(date!(2000 - 01 - 01), 59 + 1 + 10 + 29));
    let unique: BTreeSet<Date> = dates.iter().copied().collect();
    assert_eq!(unique.len(), dates.len());

    // A topic that began at a later --start resumes without inventing the days before it,
    // even though some partitions hold nothing yet.
    run_ok(broker.weather().args([
        "produce",
        "--count",
        "20",
        "--delay-ms",
        "0",
        "--reset",
        "--start",
        "2000-03-01",
    ]));
    broker.produce(20);
    assert_eq!(all_dates(&cluster), consecutive(date!(2000 - 03 - 01), 40));
}

#[test]
fn verify_finds_a_file_that_disagrees_with_the_topic() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "90", "--delay-ms", "0", "--reset"]),
    );
    broker.catch_up("0,1,2,3", Path::new(state_dir));
    // Count one January day twice, as a consumer without the exactly-once rules might.
    let file = PartitionFile::new(state.path(), 2);
    let mut c = file.load().unwrap().unwrap();
    let jan = c
        .stats
        .months
        .get_mut(&Month::January)
        .unwrap()
        .get_mut(&2000)
        .unwrap();
    jan.count += 1;
    jan.sum += 30.0;
    file.save(&c).unwrap();
    let output = broker
        .weather()
        .args(["verify", "--state-dir", state_dir])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("partition 2: 1 problem(s)")
            && stdout.contains("January 2000: file has count 32"),
        "{stdout}"
    );
    // 90 days reach partitions 2 (January), 1 (February) and 0 (March) only.
    assert_eq!(stdout.matches(": ok,").count(), 2, "{stdout}");
}

#[test]
fn a_paced_producer_and_a_running_consumer_stop_cleanly_on_ctrl_c() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // The paced path, one day per round with a pause between, until Ctrl-C.
    let mut producer = Logged::spawn(
        broker.weather().args([
            "produce",
            "--delay-ms",
            "20",
            "--reset",
            "--start",
            "2000-03-01",
        ]),
        logs.path().join("producer.log"),
    );
    let cluster = broker.cluster();
    wait_for("ten days in the topic", GUARD, || {
        ends(&cluster).values().sum::<i64>() >= 10
    });
    producer.interrupt();
    producer.wait_ok("the producer to stop on Ctrl-C");
    // Every day handed out before the stop was acknowledged: the topic holds the days from
    // the start, each once, and the last line counts them.
    let dates = all_dates(&cluster);
    assert_eq!(dates, consecutive(date!(2000 - 03 - 01), dates.len()));
    let said = producer.printed();
    let last = dates.last().expect("days in the topic");
    assert!(
        said.contains(&format!("sent {} days, up to {last}", dates.len())),
        "{said}"
    );
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");

    let mut consumer = Logged::spawn(
        broker
            .weather()
            .args(["consume", "0,1,2,3", "--state-dir"])
            .arg(state.path()),
        logs.path().join("consumer.log"),
    );
    let ends = ends(&cluster);
    let with_days: BTreeMap<i32, i64> = ends.clone().into_iter().filter(|e| e.1 > 0).collect();
    wait_for("the consumer to reach the end", GUARD, || {
        offsets(state.path()) == with_days
    });
    consumer.interrupt();
    consumer.wait_ok("the consumer to stop on Ctrl-C");
    let said = consumer.printed();
    for (partition, end) in ends {
        assert!(
            said.contains(&format!(
                "partition {partition}: stopped at offset {end} ({end} counted"
            )),
            "{said}"
        );
    }
}
