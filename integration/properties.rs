//! Bad input beyond the cases written by hand: property tests of the two parsers that read
//! what others wrote, the record decoder (`DayReading::from_record`, every record on the
//! topic) and the partition-file parser (`Checkpoint::from_json`, `PartitionFile::load`).
//! Arbitrary bytes never panic either, a decoded record keeps the rules the statistics rely
//! on, and every file the consumer writes loads back to the same state, bit for bit.
//! No broker: `make test` runs these with the unit tests, in a few seconds.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestCaseError};
use time::{Date, Month};
use weather_stream::checkpoint::{Checkpoint, CheckpointError, PartitionFile};
use weather_stream::report::{MONTHS, Report, format_date, month_name};
use weather_stream::stats::{DayReading, PLAUSIBLE_DEGREES, PartitionStats};

fn encode(report: &Report) -> Vec<u8> {
    prost::Message::encode_to_vec(report)
}

/// Any date a `Report` can carry: four-digit years.
fn date() -> impl Strategy<Value = Date> {
    let first = Date::from_calendar_date(0, Month::January, 1).unwrap();
    let last = Date::from_calendar_date(9999, Month::December, 31).unwrap();
    (first.to_julian_day()..=last.to_julian_day())
        .prop_map(|day| Date::from_julian_day(day).unwrap())
}

/// Dates packed into a few months of a few years, so that days repeat and months fill up.
fn nearby_date() -> impl Strategy<Value = Date> {
    (1999..=2001i32, 0..3usize, 1..=31u8).prop_map(|(year, month, day)| {
        let month = [Month::January, Month::February, Month::December][month];
        let day = day.min(time::util::days_in_month(month, year));
        Date::from_calendar_date(year, month, day).unwrap()
    })
}

/// Temperatures, subnormals and signed zeros included, up to a million degrees: far beyond
/// the -200..=200 °F the decoder takes, so refused readings are exercised too (beyond them
/// two readings could sum to infinity, which JSON cannot hold).
fn degrees() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        prop::num::f64::POSITIVE
            | prop::num::f64::NEGATIVE
            | prop::num::f64::SUBNORMAL
            | prop::num::f64::ZERO,
    ]
    .prop_filter("within a million degrees", |d| d.abs() < 1e6)
}

/// A record as the consumer may meet it: a well-formed report under its month's key, one
/// under another key, or bytes from anywhere.
fn record() -> impl Strategy<Value = (Option<Vec<u8>>, Option<Vec<u8>>)> {
    prop_oneof![
        4 => (nearby_date(), degrees()).prop_map(|(date, degrees)| {
            let report = Report { date: format_date(date), degrees };
            (Some(month_name(date.month()).as_bytes().to_vec()), Some(encode(&report)))
        }),
        1 => (nearby_date(), degrees(), 0..12usize).prop_map(|(date, degrees, month)| {
            let report = Report { date: format_date(date), degrees };
            (Some(month_name(MONTHS[month]).as_bytes().to_vec()), Some(encode(&report)))
        }),
        1 => (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        ),
    ]
}

/// A checkpoint the consumer could have written: any partition and offset, with the
/// statistics of any sequence of records.
fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (
        0..=i32::MAX,
        0..=i64::MAX,
        proptest::collection::vec(record(), 0..80),
    )
        .prop_map(|(partition, offset, records)| {
            let mut stats = PartitionStats::default();
            for (key, value) in &records {
                stats.apply(key.as_deref(), value.as_deref());
            }
            Checkpoint {
                partition,
                offset,
                topic: None,
                stats,
            }
        })
}

/// A change a disk, an editor or a half-finished copy could make to a file's bytes.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Damage::Remove),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match damage {
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Damage::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Damage::Remove(i) => {
            let i = i.index(bytes.len());
            bytes.remove(i);
        }
    }
}

/// What the statistics rely on from every decoded record.
fn assert_usable(key: Option<&[u8]>, reading: &DayReading) {
    assert_eq!(key, Some(month_name(reading.date.month()).as_bytes()));
    assert!(reading.degrees.is_finite());
}

/// Sums compared bit for bit: equal values are not enough for a resumed run to end where an
/// uninterrupted one does.
fn sum_bits(c: &Checkpoint) -> Vec<u64> {
    c.stats
        .months
        .values()
        .flat_map(|years| years.values().map(|m| m.sum.to_bits()))
        .collect()
}

/// The environment variable `name` as a whole number, `None` when it is not set.
fn whole_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a whole number")),
    )
}

/// Where every failure proptest ever found is kept, and replayed before the seeded cases.
const REGRESSIONS: &str = "proptest-regressions/properties.txt";

/// The seed `make test` runs from: the same cases on every machine and every run.
const FIXED_SEED: u64 = 20_261_207;

/// `cases` cases a property, drawn from a fixed seed so that `make test` draws nothing at
/// random. `PROPTEST_RNG_SEED` replays another seed, and `PROPERTIES_SCALE` multiplies the
/// cases: `make test-props` sets both to explore (a random seed, 20 times the cases).
fn cases(cases: u32) -> Config {
    let seed = whole_number("PROPTEST_RNG_SEED").unwrap_or(FIXED_SEED);
    let scale = whole_number("PROPERTIES_SCALE").unwrap_or(1);
    println!(
        "property seed {seed}, {cases} x {scale} cases (replay with PROPTEST_RNG_SEED={seed})"
    );
    Config {
        cases: cases * scale,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_records_are_decoded_or_refused_never_a_panic(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
    ) {
        if let Ok(reading) = DayReading::from_record(key.as_deref(), value.as_deref()) {
            assert_usable(key.as_deref(), &reading);
        }
    }

    #[test]
    fn damaged_reports_are_decoded_or_refused_never_a_panic(
        date in date(),
        degrees in any::<f64>(),
        damage in proptest::collection::vec(damage(), 1..4),
    ) {
        let key = month_name(date.month()).as_bytes();
        let mut value = encode(&Report { date: format_date(date), degrees });
        for d in &damage {
            apply(&mut value, d);
        }
        if let Ok(reading) = DayReading::from_record(Some(key), Some(&value)) {
            assert_usable(Some(key), &reading);
        }
    }

    #[test]
    fn every_report_decodes_to_its_own_date_and_degrees(date in date(), degrees in any::<f64>()) {
        let key = month_name(date.month()).as_bytes();
        let value = encode(&Report { date: format_date(date), degrees });
        match DayReading::from_record(Some(key), Some(&value)) {
            Ok(reading) => {
                prop_assert!(PLAUSIBLE_DEGREES.contains(&degrees), "{} was taken", degrees);
                prop_assert_eq!(reading.date, date);
                // Bit for bit, but for the sign of zero: proto3 (prost) does not send a
                // field equal to its default, and -0.0 == 0.0.
                prop_assert!(
                    reading.degrees.to_bits() == degrees.to_bits()
                        || (degrees == 0.0 && reading.degrees == 0.0),
                    "{} read back as {}", degrees, reading.degrees
                );
            }
            Err(reason) => prop_assert!(!PLAUSIBLE_DEGREES.contains(&degrees), "{}", reason),
        }
    }

    #[test]
    fn a_report_under_another_months_key_is_refused(date in date(), month in 0..12usize) {
        prop_assume!(MONTHS[month] != date.month());
        let value = encode(&Report { date: format_date(date), degrees: 50.0 });
        let key = month_name(MONTHS[month]).as_bytes();
        prop_assert!(DayReading::from_record(Some(key), Some(&value)).is_err());
    }

    #[test]
    fn arbitrary_text_is_parsed_or_refused_never_a_panic(text in any::<String>()) {
        let _ = Checkpoint::from_json(&text);
    }

    #[test]
    fn json_shaped_text_is_parsed_or_refused_never_a_panic(
        text in r#"\{"partition": ?-?[0-9]{1,3}, "offset": ?-?[0-9]{1,20}(, "[A-Za-z]{3,9}": \{("[0-9-]{1,6}": \{"count": ?[0-9-]{1,3}, "sum": ?-?[0-9.e+-]{1,12}, "start": "[0-9-]{6,12}", "end": "[0-9-]{6,12}"\})?\})?\}"#
    ) {
        let _ = Checkpoint::from_json(&text);
    }
}

proptest! {
    // Each case writes and fsyncs a file.
    #![proptest_config(cases(64))]

    #[test]
    fn every_file_the_consumer_writes_loads_back_the_same(checkpoint in checkpoint()) {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), checkpoint.partition);
        file.save(&checkpoint).unwrap();
        let loaded = file.load().unwrap().expect("the file just saved");
        prop_assert_eq!(&loaded, &checkpoint);
        prop_assert_eq!(sum_bits(&loaded), sum_bits(&checkpoint));
    }

    #[test]
    fn a_damaged_file_is_refused_or_loads_and_is_never_changed(
        checkpoint in checkpoint(),
        damage in proptest::collection::vec(damage(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), checkpoint.partition);
        let mut bytes = checkpoint.to_json().into_bytes();
        for d in &damage {
            apply(&mut bytes, d);
        }
        std::fs::write(file.path(), &bytes).unwrap();
        loads_or_is_refused_unchanged(&file, &bytes)?;
    }
}

/// The oracle for a damaged file: it loads, and then saves and loads back as itself; or it is
/// refused, whatever the reason, by an error that names the way out and leaves the file byte
/// for byte as it was. Never a panic, never a changed file. (A damaged `days` key makes a file
/// read as one from before that field: refused as such, not as corrupt. Found by this test on
/// a fresh clone; kept in `proptest-regressions/` and as
/// `a_file_whose_days_key_is_damaged_is_refused_as_an_older_one`.)
fn loads_or_is_refused_unchanged(file: &PartitionFile, bytes: &[u8]) -> Result<(), TestCaseError> {
    let loaded = file.load();
    prop_assert_eq!(
        std::fs::read(file.path()).unwrap(),
        bytes,
        "loading changed the file"
    );
    match loaded {
        Ok(Some(loaded)) => {
            // Damage that still parses (a digit changed) must give a file that saves and
            // loads back as itself.
            file.save(&loaded).unwrap();
            prop_assert_eq!(file.load().unwrap(), Some(loaded));
        }
        Ok(None) => prop_assert!(false, "the file is there"),
        Err(refusal) => {
            let line = refusal.to_string();
            prop_assert!(
                line.contains("--reset-state") && line.contains("left as it is"),
                "a refusal that names no way out: {}",
                line
            );
        }
    }
    Ok(())
}

#[test]
fn a_file_whose_days_key_is_damaged_is_refused_as_an_older_one() {
    // Two days of February 2000 with a gap between them; one changed byte in "days" hides
    // which days they were.
    let text = r#"{"partition": 3, "offset": 7, "February": {"2000": {"count": 2, "sum": 61.5, "avg": 30.75, "start": "2000-02-01", "end": "2000-02-25", "dJys": 16777217}}}"#;
    let dir = tempfile::tempdir().unwrap();
    let file = PartitionFile::new(dir.path(), 3);
    std::fs::write(file.path(), text).unwrap();
    let refusal = file.load().expect_err("days unknown");
    assert!(
        matches!(refusal, CheckpointError::DaysUnknown { .. }),
        "{refusal}"
    );
    loads_or_is_refused_unchanged(&file, text.as_bytes()).unwrap();
}
