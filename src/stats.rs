//! Month/year statistics of one partition, and the rules for what counts.
//!
//! The exactly-once rule on the consumer side lives here and in `checkpoint`:
//! - a record counts only if its date is not yet among the days counted for its (month, year),
//!   whatever order the dates arrive in: a report that reaches the topic twice is counted
//!   once, and a day that arrives late is still counted (`Days`, kept in the file too);
//! - a record that is not a well-formed `Report` keyed by its month, with a temperature a
//!   day can have, is skipped, never fatal.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use prost::Message;
use time::{Date, Month};

use crate::report::{Report, month_name, parse_date, parse_month};

/// Count, sum, first/last date and the days counted of one month of one year.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthStats {
    pub count: u64,
    pub sum: f64,
    /// The earliest and latest dates counted, whatever order they came in.
    pub start: Date,
    pub end: Date,
    pub days: Days,
}

/// The days of one month that have been counted: bit `d - 1` stands for day `d`.
///
/// This is what the dedup rule looks at, so that a day counts once whatever order the
/// reports arrive in: a late day is counted, a repeated one is not. A month has at most 31
/// days, so one `u32` holds the set; the partition file writes it as the integer `days`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Days(u32);

impl Days {
    pub fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    /// Every day from `first` to `last`, both included (none when `first > last`).
    pub fn span(first: u8, last: u8) -> Self {
        (first..=last).fold(Self::default(), |mut days, day| {
            days.insert(day);
            days
        })
    }

    pub fn contains(self, day: u8) -> bool {
        (1..=31).contains(&day) && self.0 & (1 << (day - 1)) != 0
    }

    /// Adds `day` (1 to 31; others are ignored).
    pub fn insert(&mut self, day: u8) {
        if (1..=31).contains(&day) {
            self.0 |= 1 << (day - 1);
        }
    }

    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn first(self) -> Option<u8> {
        (!self.is_empty()).then(|| self.0.trailing_zeros() as u8 + 1)
    }

    pub fn last(self) -> Option<u8> {
        (!self.is_empty()).then(|| 32 - self.0.leading_zeros() as u8)
    }

    pub fn union(self, other: Days) -> Self {
        Self(self.0 | other.0)
    }

    pub fn intersection(self, other: Days) -> Self {
        Self(self.0 & other.0)
    }
}

/// Runs of days, as a person writes them: `1-5, 7, 9-31`.
impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs = Vec::new();
        let mut day = 1;
        while day <= 32 {
            if !self.contains(day) {
                day += 1;
                continue;
            }
            let first = day;
            while self.contains(day + 1) {
                day += 1;
            }
            runs.push(if first == day {
                first.to_string()
            } else {
                format!("{first}-{day}")
            });
            day += 1;
        }
        if runs.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&runs.join(", "))
        }
    }
}

impl MonthStats {
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Statistics of one partition: month → year → `MonthStats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionStats {
    pub months: BTreeMap<Month, BTreeMap<i32, MonthStats>>,
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Counted,
    /// Its date has already been counted for its (month, year).
    Duplicate,
    /// Not a usable report; the reason says why.
    Malformed(String),
}

/// The temperatures a report may carry, in °F. The extremes measured on Earth are about
/// -129 °F (Vostok, 1983) and 134 °F (Death Valley, 1913), so a value beyond ±200 comes from a
/// broken producer, not from the weather. The bound also keeps every sum finite: a (month,
/// year) adds at most 31 of them, where two finite values near `f64::MAX` would sum to
/// infinity, which JSON cannot write and a partition file therefore cannot hold.
pub const PLAUSIBLE_DEGREES: RangeInclusive<f64> = -200.0..=200.0;

/// A record's key and value, checked: the key names the month of the report's date.
#[derive(Debug, Clone, PartialEq)]
pub struct DayReading {
    pub date: Date,
    pub degrees: f64,
}

impl DayReading {
    /// Decodes a record, or says in a few words why it is not a report.
    pub fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, String> {
        let key = key.ok_or("record has no key")?;
        let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
        let month = parse_month(key).ok_or_else(|| format!("key {key:?} is not a month name"))?;
        let value = value.ok_or("record has no value")?;
        let report = Report::decode(value).map_err(|e| format!("value is not a Report: {e}"))?;
        let date = parse_date(&report.date)
            .map_err(|_| format!("date {:?} is not YYYY-MM-DD", report.date))?;
        if date.month() != month {
            return Err(format!("key {key:?} does not match date {}", report.date));
        }
        if !report.degrees.is_finite() {
            return Err(format!("degrees {} is not a number", report.degrees));
        }
        if !PLAUSIBLE_DEGREES.contains(&report.degrees) {
            return Err(format!(
                "degrees {} is not a temperature a day can have (outside {} to {} °F)",
                report.degrees,
                PLAUSIBLE_DEGREES.start(),
                PLAUSIBLE_DEGREES.end()
            ));
        }
        Ok(Self {
            date,
            degrees: report.degrees,
        })
    }
}

impl PartitionStats {
    /// Applies one record: the only way statistics change.
    pub fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Outcome {
        match DayReading::from_record(key, value) {
            Ok(reading) => self.add(&reading),
            Err(reason) => Outcome::Malformed(reason),
        }
    }

    /// Counts a reading unless its (month, year) has already counted this date, in any order.
    pub fn add(&mut self, reading: &DayReading) -> Outcome {
        let date = reading.date;
        let years = self.months.entry(date.month()).or_default();
        match years.get_mut(&date.year()) {
            Some(stats) if stats.days.contains(date.day()) => Outcome::Duplicate,
            Some(stats) => {
                stats.count += 1;
                stats.sum += reading.degrees;
                stats.start = stats.start.min(date);
                stats.end = stats.end.max(date);
                stats.days.insert(date.day());
                Outcome::Counted
            }
            None => {
                years.insert(
                    date.year(),
                    MonthStats {
                        count: 1,
                        sum: reading.degrees,
                        start: date,
                        end: date,
                        days: Days::span(date.day(), date.day()),
                    },
                );
                Outcome::Counted
            }
        }
    }

    /// Adds another partition's statistics into these (for the plot and the dashboard). A
    /// month's days may be split over two partitions (the topic got more partitions in the
    /// middle of it): their counts and sums add up to the month's. A day counted in both is
    /// counted twice here, since no partition's dedup sees the other's days: see `shared_days`.
    pub fn merge(&mut self, other: &PartitionStats) {
        for (month, years) in &other.months {
            let mine = self.months.entry(*month).or_default();
            for (year, stats) in years {
                mine.entry(*year)
                    .and_modify(|m| {
                        m.count += stats.count;
                        m.sum += stats.sum;
                        m.start = m.start.min(stats.start);
                        m.end = m.end.max(stats.end);
                        m.days = m.days.union(stats.days);
                    })
                    .or_insert_with(|| stats.clone());
            }
        }
    }

    /// Days counted both here and in `other`, by (month, year). Our producer writes each day
    /// to one partition once, so a day in two partitions' statistics is a day the topic holds
    /// twice, and that merged statistics count twice.
    pub fn shared_days(&self, other: &PartitionStats) -> Vec<(Month, i32, Days)> {
        let mut shared = Vec::new();
        for (month, years) in &self.months {
            for (year, mine) in years {
                if let Some(theirs) = other.get(*month, *year) {
                    let both = mine.days.intersection(theirs.days);
                    if !both.is_empty() {
                        shared.push((*month, *year, both));
                    }
                }
            }
        }
        shared
    }

    /// The latest year that has any data.
    pub fn latest_year(&self) -> Option<i32> {
        self.months
            .values()
            .filter_map(|years| years.keys().next_back().copied())
            .max()
    }

    /// Every year that has any data, oldest first.
    pub fn years(&self) -> std::collections::BTreeSet<i32> {
        self.months
            .values()
            .flat_map(|years| years.keys().copied())
            .collect()
    }

    /// Days counted, in all months and years.
    pub fn days(&self) -> u64 {
        self.months
            .values()
            .flat_map(|years| years.values())
            .map(|m| m.count)
            .sum()
    }

    /// The latest date counted, in any month.
    pub fn last_date(&self) -> Option<Date> {
        self.months
            .values()
            .flat_map(|years| years.values())
            .map(|m| m.end)
            .max()
    }

    pub fn get(&self, month: Month, year: i32) -> Option<&MonthStats> {
        self.months.get(&month)?.get(&year)
    }

    /// Every (month, year) where the two differ, described for a person.
    pub fn differences(&self, expected: &PartitionStats) -> Vec<String> {
        let mut keys: Vec<(Month, i32)> = Vec::new();
        for stats in [self, expected] {
            for (month, years) in &stats.months {
                keys.extend(years.keys().map(|year| (*month, *year)));
            }
        }
        keys.sort_by_key(|(month, year)| (*year, *month as u8));
        keys.dedup();
        keys.into_iter()
            .filter_map(|(month, year)| {
                let name = month_name(month);
                match (self.get(month, year), expected.get(month, year)) {
                    (Some(a), Some(b)) if a == b => None,
                    (Some(a), Some(b)) if (a.count, a.sum, a.start, a.end) == (b.count, b.sum, b.start, b.end) => Some(format!(
                        "{name} {year}: file has days {}, topic gives days {}",
                        a.days, b.days
                    )),
                    (Some(a), Some(b)) => Some(format!(
                        "{name} {year}: file has count {} sum {} ({} to {}), topic gives count {} sum {} ({} to {})",
                        a.count, a.sum, a.start, a.end, b.count, b.sum, b.start, b.end
                    )),
                    (Some(a), None) => Some(format!(
                        "{name} {year}: file has count {} but the topic has no such days",
                        a.count
                    )),
                    (None, Some(b)) => Some(format!(
                        "{name} {year}: missing from the file, the topic has count {}",
                        b.count
                    )),
                    (None, None) => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn record(key: &str, date: &str, degrees: f64) -> (Vec<u8>, Vec<u8>) {
        let value = Report {
            date: date.into(),
            degrees,
        }
        .encode_to_vec();
        (key.as_bytes().to_vec(), value)
    }

    fn apply(stats: &mut PartitionStats, key: &str, date: &str, degrees: f64) -> Outcome {
        let (k, v) = record(key, date, degrees);
        stats.apply(Some(&k), Some(&v))
    }

    #[test]
    fn counts_sums_and_bounds_per_month_and_year() {
        let mut stats = PartitionStats::default();
        assert_eq!(
            apply(&mut stats, "March", "2000-03-01", 40.0),
            Outcome::Counted
        );
        assert_eq!(
            apply(&mut stats, "March", "2000-03-02", 50.0),
            Outcome::Counted
        );
        assert_eq!(
            apply(&mut stats, "March", "2001-03-01", 10.0),
            Outcome::Counted
        );
        let m = stats.get(Month::March, 2000).unwrap();
        assert_eq!((m.count, m.sum, m.avg()), (2, 90.0, 45.0));
        assert_eq!(
            (m.start, m.end),
            (date!(2000 - 03 - 01), date!(2000 - 03 - 02))
        );
        assert_eq!(stats.get(Month::March, 2001).unwrap().count, 1);
        assert_eq!(stats.latest_year(), Some(2001));
    }

    #[test]
    fn a_date_already_counted_is_a_duplicate() {
        let mut stats = PartitionStats::default();
        apply(&mut stats, "March", "2000-03-01", 40.0);
        apply(&mut stats, "March", "2000-03-02", 41.0);
        let before = stats.clone();
        assert_eq!(
            apply(&mut stats, "March", "2000-03-02", 41.0),
            Outcome::Duplicate
        );
        assert_eq!(
            apply(&mut stats, "March", "2000-03-01", 99.0),
            Outcome::Duplicate
        );
        assert_eq!(stats, before);
        // Another year of the same month is its own sequence.
        assert_eq!(
            apply(&mut stats, "March", "1999-03-05", 1.0),
            Outcome::Counted
        );
    }

    #[test]
    fn late_days_are_counted_once_in_any_order() {
        let mut stats = PartitionStats::default();
        // The month's last day first: every earlier day is still to come, not a duplicate.
        assert_eq!(
            apply(&mut stats, "March", "2000-03-31", 31.0),
            Outcome::Counted
        );
        let mut days: Vec<u8> = (1..=30).collect();
        fastrand::Rng::with_seed(13).shuffle(&mut days);
        let mut sum = 31.0;
        for &day in &days {
            let date = format!("2000-03-{day:02}");
            assert_eq!(
                apply(&mut stats, "March", &date, f64::from(day)),
                Outcome::Counted,
                "{date}"
            );
            sum += f64::from(day);
        }
        for &day in &days[..5] {
            let date = format!("2000-03-{day:02}");
            assert_eq!(apply(&mut stats, "March", &date, 99.0), Outcome::Duplicate);
        }
        let m = stats.get(Month::March, 2000).unwrap();
        assert_eq!((m.count, m.sum.to_bits()), (31, sum.to_bits()));
        assert_eq!(
            (m.start, m.end),
            (date!(2000 - 03 - 01), date!(2000 - 03 - 31))
        );
        assert_eq!(m.days, Days::span(1, 31));
        assert_eq!(m.days.bits(), 0x7fff_ffff);
    }

    #[test]
    fn days_are_a_set_of_the_month_s_days() {
        let mut days = Days::default();
        assert!(days.is_empty());
        assert_eq!((days.first(), days.last()), (None, None));
        assert_eq!(days.to_string(), "none");
        for day in [9, 1, 2, 3, 5, 31, 10, 11] {
            days.insert(day);
        }
        days.insert(0);
        days.insert(32);
        assert_eq!(days.len(), 8);
        assert_eq!((days.first(), days.last()), (Some(1), Some(31)));
        assert!(days.contains(5) && !days.contains(4) && !days.contains(0));
        assert!(!days.contains(32));
        assert_eq!(days.to_string(), "1-3, 5, 9-11, 31");
        assert_eq!(Days::span(3, 5).bits(), 0b11100);
        assert_eq!(Days::span(5, 3), Days::default());
        assert_eq!(
            Days::span(1, 2).union(Days::span(4, 4)),
            Days::from_bits(0b1011)
        );
    }

    #[test]
    fn temperatures_no_day_can_have_are_malformed() {
        let mut stats = PartitionStats::default();
        // Two finite values whose sum is not: either would break the file on its own.
        for degrees in [f64::MAX, f64::MAX, 1e308, 200.0001, -200.5, f64::MIN] {
            let outcome = apply(&mut stats, "March", "2000-03-01", degrees);
            assert!(
                matches!(&outcome, Outcome::Malformed(reason) if reason.contains("outside -200 to 200")),
                "{degrees}: {outcome:?}"
            );
        }
        assert_eq!(stats, PartitionStats::default());
        // The bounds themselves are temperatures.
        assert_eq!(
            apply(&mut stats, "March", "2000-03-01", 200.0),
            Outcome::Counted
        );
        assert_eq!(
            apply(&mut stats, "March", "2000-03-02", -200.0),
            Outcome::Counted
        );
        assert_eq!(stats.get(Month::March, 2000).unwrap().sum, 0.0);
    }

    #[test]
    fn records_that_are_not_reports_are_malformed_and_change_nothing() {
        let mut stats = PartitionStats::default();
        let (k, v) = record("March", "2000-03-01", 40.0);
        type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let cases: Vec<KeyValue> = vec![
            (None, Some(&v)),
            (Some(b"Marzo"), Some(&v)),
            (Some(&k), None),
            (Some(&k), Some(b"\xff\xff\xff")),
            (Some(b"April"), Some(&v)),
            (Some(&[0xc3, 0x28]), Some(&v)),
        ];
        for (key, value) in cases {
            assert!(matches!(stats.apply(key, value), Outcome::Malformed(_)));
        }
        assert_eq!(
            apply(&mut stats, "March", "2000-3-1", 1.0),
            Outcome::Malformed("date \"2000-3-1\" is not YYYY-MM-DD".into())
        );
        assert!(matches!(
            apply(&mut stats, "March", "2000-03-02", f64::NAN),
            Outcome::Malformed(_)
        ));
        assert_eq!(stats, PartitionStats::default());
    }

    #[test]
    fn merge_adds_counts_and_widens_bounds() {
        let mut a = PartitionStats::default();
        let mut b = PartitionStats::default();
        apply(&mut a, "March", "2000-03-01", 40.0);
        apply(&mut b, "March", "2000-03-05", 20.0);
        apply(&mut b, "August", "2000-08-05", 80.0);
        a.merge(&b);
        let m = a.get(Month::March, 2000).unwrap();
        assert_eq!((m.count, m.sum), (2, 60.0));
        assert_eq!(
            (m.start, m.end),
            (date!(2000 - 03 - 01), date!(2000 - 03 - 05))
        );
        assert_eq!(a.get(Month::August, 2000).unwrap().count, 1);
        assert_eq!(m.days.to_string(), "1, 5");
    }

    #[test]
    fn a_month_split_over_two_partitions_merges_into_the_whole_month() {
        // The topic went from 4 partitions to 6 on January 16th: January's days until then
        // are on one partition, the rest on another.
        let (mut before, mut after) = (PartitionStats::default(), PartitionStats::default());
        let mut sum = 0.0;
        for day in 1..=31 {
            let degrees = 20.0 + f64::from(day) / 7.0;
            let part = if day <= 15 { &mut before } else { &mut after };
            apply(part, "January", &format!("2003-01-{day:02}"), degrees);
            sum += degrees;
        }
        assert!(before.shared_days(&after).is_empty());
        let mut merged = PartitionStats::default();
        merged.merge(&before);
        merged.merge(&after);
        let m = merged.get(Month::January, 2003).unwrap();
        assert_eq!(m.count, 31);
        assert_eq!(m.days, Days::span(1, 31));
        assert_eq!(
            (m.start, m.end),
            (date!(2003 - 01 - 01), date!(2003 - 01 - 31))
        );
        assert!((m.sum - sum).abs() < 1e-9 && (m.avg() - sum / 31.0).abs() < 1e-9);

        // A day written to both: each partition counts it once, the merge twice. Only the
        // two side by side can tell.
        apply(&mut after, "January", "2003-01-15", 99.0);
        let shared = before.shared_days(&after);
        assert_eq!(shared, [(Month::January, 2003, Days::span(15, 15))]);
        let mut doubled = PartitionStats::default();
        doubled.merge(&before);
        doubled.merge(&after);
        assert_eq!(doubled.get(Month::January, 2003).unwrap().count, 32);
    }

    #[test]
    fn differences_name_each_month_that_disagrees() {
        let mut a = PartitionStats::default();
        let mut b = PartitionStats::default();
        apply(&mut a, "March", "2000-03-01", 40.0);
        apply(&mut b, "March", "2000-03-01", 40.0);
        assert!(a.differences(&b).is_empty());
        apply(&mut b, "March", "2000-03-02", 40.0);
        apply(&mut a, "August", "2000-08-02", 40.0);
        let diffs = a.differences(&b);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].starts_with("March 2000: file has count 1"));
        assert!(diffs[1].starts_with("August 2000: file has count 1 but"));

        // Same numbers, other days: said in days.
        let mut c = PartitionStats::default();
        let mut d = PartitionStats::default();
        apply(&mut c, "March", "2000-03-01", 40.0);
        apply(&mut c, "March", "2000-03-03", 40.0);
        apply(&mut d, "March", "2000-03-01", 40.0);
        apply(&mut d, "March", "2000-03-03", 40.0);
        d.months
            .get_mut(&Month::March)
            .unwrap()
            .get_mut(&2000)
            .unwrap()
            .days = Days::span(1, 3);
        assert_eq!(
            c.differences(&d),
            vec!["March 2000: file has days 1, 3, topic gives days 1-3"]
        );
    }
}
