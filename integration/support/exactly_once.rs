//! The proof a run must pass, checked against the topic and the generator, never against the
//! programs' own counters: the producer's side (each day in the topic once, where murmur2
//! puts it, with the generator's value) and the consumer's (each day counted once, bit for bit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use time::{Date, Month};
use weather_stream::checkpoint;
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::month_name;
use weather_stream::weather::Weather;

use super::Broker;
use super::topic::{PartitionDays, consecutive, topic_records};

/// The topic holds each of `days` consecutive days from `first` exactly once, on its month's
/// partition, with the generator's value, and nothing else. Returns the topic as it read it.
pub fn assert_topic_holds_each_day_once(
    broker: &Broker,
    first: Date,
    days: usize,
) -> BTreeMap<i32, PartitionDays> {
    let topic = broker.topic();
    let mut dates: Vec<Date> = topic
        .values()
        .flat_map(|p| p.days.iter().map(|d| d.date))
        .collect();
    dates.sort();
    let twice: Vec<Date> = dates
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
    let held: BTreeSet<Date> = dates.iter().copied().collect();
    let expected = consecutive(first, days);
    let missing: Vec<&Date> = expected.iter().filter(|d| !held.contains(d)).collect();
    assert!(
        missing.is_empty(),
        "{} days missing, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    if dates != expected {
        let extra: Vec<&Date> = dates.iter().filter(|d| !expected.contains(d)).collect();
        panic!(
            "the topic holds {} days, {} expected; besides those: {:?}",
            dates.len(),
            expected.len(),
            &extra[..extra.len().min(5)]
        );
    }
    let weather = Weather::new(1);
    let partitions = topic.len() as i32;
    for (&partition, readings) in &topic {
        for reading in &readings.days {
            let key = month_name(reading.date.month());
            assert_eq!(
                partition_for(key.as_bytes(), partitions),
                partition,
                "{reading:?}"
            );
            assert_eq!(
                reading.degrees.to_bits(),
                weather.degrees(reading.date).to_bits(),
                "{reading:?}"
            );
        }
    }
    topic
}

/// [`assert_counted_exactly_once_with`] for a topic that holds only the days, each once.
pub fn assert_counted_exactly_once(
    broker: &Broker,
    state: &Path,
    first: Date,
    days: usize,
) -> Output {
    assert_counted_exactly_once_with(broker, state, first, days, &[], 0)
}

/// The proof every surviving consumer run must pass:
/// - the topic holds `days` consecutive days from `first`, each exactly once (but for the
///   days a test wrote again on purpose, `replayed`), and `not_reports` records that are not
///   reports;
/// - `weather verify` passes on the state folder;
/// - every (partition, month, year) in the files has the generator's count and, bit for bit,
///   its sum over those days, nothing else is in the files, and each file's offset is its
///   partition's end.
///
/// Returns the output of `weather verify`.
pub fn assert_counted_exactly_once_with(
    broker: &Broker,
    state: &Path,
    first: Date,
    days: usize,
    replayed: &[Date],
    not_reports: usize,
) -> Output {
    let topic = topic_records(&broker.cluster());
    let junk: usize = topic.values().map(|p| p.not_reports.len()).sum();
    assert_eq!(
        junk, not_reports,
        "records in the topic that are not reports"
    );
    let mut in_topic: Vec<Date> = topic
        .values()
        .flat_map(|p| p.days.iter().map(|d| d.date))
        .collect();
    in_topic.sort();
    let expected_dates = consecutive(first, days);
    let unique: BTreeSet<Date> = in_topic.iter().copied().collect();
    let missing: Vec<&Date> = expected_dates
        .iter()
        .filter(|d| !unique.contains(d))
        .collect();
    assert!(
        missing.is_empty() && unique.len() == days,
        "the topic lacks {} of {days} days from {first} (first missing: {:?}) or holds others",
        missing.len(),
        missing.first()
    );
    // Doubles in the topic are the producer's fault; the consumer side is checked first,
    // so a failure says which side broke.
    let mut doubled: Vec<Date> = in_topic
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    for replay in replayed {
        let at = doubled.iter().position(|d| d == replay);
        assert!(
            at.is_some(),
            "the replayed day {replay} is not in the topic twice"
        );
        doubled.remove(at.unwrap_or_default());
    }

    let verify = broker.verify(state);
    let stdout = String::from_utf8_lossy(&verify.stdout);

    let files = checkpoint::load_all(state).expect("partition files load");
    checkpoints_exact_in(&topic, &files, first, days);
    let with_days = files.len();
    assert_eq!(stdout.matches(": ok,").count(), with_days, "{stdout}");
    assert!(
        doubled.is_empty(),
        "the consumer counted each day once, but the topic holds {} day(s) twice: {doubled:?}",
        doubled.len()
    );
    verify
}

/// Checkpoints (from files, or from the changelog) hold exactly the generator's statistics of
/// the `days` days from `first`: every (partition, month, year) its count and, bit for bit,
/// its sum, nothing else, one checkpoint for every partition with days, each at its
/// partition's end.
pub fn assert_checkpoints_exact(
    broker: &Broker,
    checkpoints: &[checkpoint::Checkpoint],
    first: Date,
    days: usize,
) {
    checkpoints_exact_in(&topic_records(&broker.cluster()), checkpoints, first, days);
}

/// [`assert_checkpoints_exact`] against `topic` as already read (by [`topic_records`] or
/// [`assert_topic_holds_each_day_once`]).
pub fn checkpoints_exact_in(
    topic: &BTreeMap<i32, PartitionDays>,
    checkpoints: &[checkpoint::Checkpoint],
    first: Date,
    days: usize,
) {
    let partitions = topic.len() as i32;
    let weather = Weather::new(1);
    let mut expected: BTreeMap<(i32, Month, i32), (u64, f64)> = BTreeMap::new();
    for date in consecutive(first, days) {
        let partition = partition_for(month_name(date.month()).as_bytes(), partitions);
        let entry = expected
            .entry((partition, date.month(), date.year()))
            .or_default();
        entry.0 += 1;
        entry.1 += weather.degrees(date);
    }
    let mut found: BTreeMap<(i32, Month, i32), (u64, f64)> = BTreeMap::new();
    for c in checkpoints {
        assert_eq!(
            c.offset, topic[&c.partition].end,
            "partition {}",
            c.partition
        );
        for (month, years) in &c.stats.months {
            for (year, m) in years {
                found.insert((c.partition, *month, *year), (m.count, m.sum));
            }
        }
    }
    let with_days: BTreeSet<i32> = expected.keys().map(|k| k.0).collect();
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| c.partition)
            .collect::<BTreeSet<_>>(),
        with_days,
        "a checkpoint for every partition with days"
    );
    assert_eq!(found.len(), expected.len(), "months in the checkpoints");
    for (key, (count, sum)) in &expected {
        let (got_count, got_sum) = found[key];
        assert_eq!(got_count, *count, "count of {key:?}");
        assert_eq!(got_sum.to_bits(), sum.to_bits(), "sum of {key:?}");
    }
    let total: u64 = found.values().map(|v| v.0).sum();
    assert_eq!(total, days as u64);
}
