//! Month/year statistics of one partition, and the rules for what counts.
//!
//! The exactly-once rule on the consumer side lives here and in `checkpoint`:
//! - a record counts only if its date is after the `end` of its (month, year), so a
//!   report that reaches the topic twice is counted once;
//! - a record that is not a well-formed `Report` keyed by its month is skipped, never fatal.

use std::collections::BTreeMap;

use prost::Message;
use time::{Date, Month};

use crate::report::{Report, month_name, parse_date, parse_month};

/// Count, sum and first/last date of one month of one year.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthStats {
    pub count: u64,
    pub sum: f64,
    pub start: Date,
    pub end: Date,
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
    /// Its date is not after the last date counted for its (month, year).
    Duplicate,
    /// Not a usable report; the reason says why.
    Malformed(String),
}

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

    /// Counts a reading unless its (month, year) has already counted this date or a later one.
    pub fn add(&mut self, reading: &DayReading) -> Outcome {
        let years = self.months.entry(reading.date.month()).or_default();
        match years.get_mut(&reading.date.year()) {
            Some(stats) if reading.date <= stats.end => Outcome::Duplicate,
            Some(stats) => {
                stats.count += 1;
                stats.sum += reading.degrees;
                stats.end = reading.date;
                Outcome::Counted
            }
            None => {
                years.insert(
                    reading.date.year(),
                    MonthStats {
                        count: 1,
                        sum: reading.degrees,
                        start: reading.date,
                        end: reading.date,
                    },
                );
                Outcome::Counted
            }
        }
    }

    /// Adds another partition's statistics into these (for the plot and the dashboard).
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
                    })
                    .or_insert_with(|| stats.clone());
            }
        }
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
    fn a_date_not_after_the_end_is_a_duplicate() {
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
    }
}
