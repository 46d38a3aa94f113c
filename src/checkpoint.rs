//! Partition files: `partition-N.json` in the state folder, the consumer's only memory.
//!
//! Statistics and the offset they were read up to live in one file, replaced atomically
//! (write `.tmp`, fsync, rename over the old file, fsync the folder), so they always change
//! together: a crash at any instant leaves either the old file or the new one, whole.
//! A file that cannot be read as a partition file is reported and never overwritten.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::report::{format_date, month_name, parse_date, parse_month};
use crate::stats::{MonthStats, PartitionStats};

/// What one partition file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub partition: i32,
    /// The next offset to read: every record before it is in `stats`.
    pub offset: i64,
    pub stats: PartitionStats,
}

impl Checkpoint {
    /// A partition read from nothing: statistics are empty and reading starts at `offset`.
    pub fn empty(partition: i32, offset: i64) -> Self {
        Self {
            partition,
            offset,
            stats: PartitionStats::default(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain numbers and strings into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Parses a partition file's text, checking everything a reader relies on.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawCheckpoint = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if raw.partition < 0 {
            return Err(format!("partition {} is negative", raw.partition));
        }
        if raw.offset < 0 {
            return Err(format!("offset {} is negative", raw.offset));
        }
        let mut stats = PartitionStats::default();
        for (name, years) in raw.months {
            let month = parse_month(&name).ok_or_else(|| format!("{name:?} is not a month"))?;
            for (year_text, m) in years {
                let year: i32 = year_text
                    .parse()
                    .map_err(|_| format!("{name} {year_text:?} is not a year"))?;
                let bad = |what: &str| format!("{name} {year}: {what}");
                let start = parse_date(&m.start).map_err(|_| bad("start is not a date"))?;
                let end = parse_date(&m.end).map_err(|_| bad("end is not a date"))?;
                let in_month = |d: time::Date| d.month() == month && d.year() == year;
                if m.count == 0 || !m.sum.is_finite() || start > end {
                    return Err(bad("count, sum or dates are out of range"));
                }
                if !in_month(start) || !in_month(end) {
                    return Err(bad("start or end lies outside that month"));
                }
                stats.months.entry(month).or_default().insert(
                    year,
                    MonthStats {
                        count: m.count,
                        sum: m.sum,
                        start,
                        end,
                    },
                );
            }
        }
        Ok(Self {
            partition: raw.partition,
            offset: raw.offset,
            stats,
        })
    }
}

/// The file's shape as written: fixed fields first, then one key per month.
#[derive(Deserialize)]
struct RawCheckpoint {
    partition: i32,
    offset: i64,
    #[serde(flatten)]
    months: BTreeMap<String, BTreeMap<String, RawMonth>>,
}

#[derive(Deserialize)]
struct RawMonth {
    count: u64,
    sum: f64,
    start: String,
    end: String,
}

impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("partition", &self.partition)?;
        map.serialize_entry("offset", &self.offset)?;
        for (month, years) in month_entries(&self.stats) {
            map.serialize_entry(month, &years)?;
        }
        map.end()
    }
}

/// Statistics alone, in the partition file's month → year shape (the dashboard's `/api/stats`).
pub struct StatsJson<'a>(pub &'a PartitionStats);

impl Serialize for StatsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(month_entries(self.0))
    }
}

/// Months in calendar order, years as strings: the order a person reads them in.
fn month_entries(
    stats: &PartitionStats,
) -> impl Iterator<Item = (&'static str, BTreeMap<String, YearJson>)> + '_ {
    stats.months.iter().map(|(month, years)| {
        let years = years
            .iter()
            .map(|(year, m)| (year.to_string(), YearJson::from(m)))
            .collect();
        (month_name(*month), years)
    })
}

#[derive(Serialize)]
struct YearJson {
    count: u64,
    sum: f64,
    avg: f64,
    start: String,
    end: String,
}

impl From<&MonthStats> for YearJson {
    fn from(m: &MonthStats) -> Self {
        Self {
            count: m.count,
            sum: m.sum,
            avg: m.avg(),
            start: format_date(m.start),
            end: format_date(m.end),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid partition file ({reason}); it was left as it is: move it aside, or run with --reset-state to count partition {partition} again from the start"
    )]
    Corrupt {
        path: PathBuf,
        partition: i32,
        reason: String,
    },
    #[error("cannot write {path}: {source}; check that the state folder exists and is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One partition's file in the state folder.
#[derive(Debug, Clone)]
pub struct PartitionFile {
    dir: PathBuf,
    partition: i32,
}

impl PartitionFile {
    pub fn new(dir: impl Into<PathBuf>, partition: i32) -> Self {
        Self {
            dir: dir.into(),
            partition,
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("partition-{}.json", self.partition))
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir
            .join(format!("partition-{}.json.tmp", self.partition))
    }

    /// The saved checkpoint, `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(self.corrupt("not UTF-8 text".into()));
            }
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let checkpoint = Checkpoint::from_json(&text).map_err(|reason| self.corrupt(reason))?;
        if checkpoint.partition != self.partition {
            return Err(self.corrupt(format!("it says partition {}", checkpoint.partition)));
        }
        Ok(Some(checkpoint))
    }

    fn corrupt(&self, reason: String) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path(),
            partition: self.partition,
            reason,
        }
    }

    /// Replaces the file atomically and durably; on error the old file is untouched.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let tmp = self.tmp_path();
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Write { path, source }
        };
        let mut file = File::create(&tmp).map_err(write_err(&tmp))?;
        file.write_all(checkpoint.to_json().as_bytes())
            .map_err(write_err(&tmp))?;
        file.sync_all().map_err(write_err(&tmp))?;
        drop(file);
        hold_if_a_test_asks(&tmp);
        fs::rename(&tmp, self.path()).map_err(write_err(&self.path()))?;
        // The rename is durable only once the folder's entry is on disk.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err(&self.dir))
    }

    /// The temporary file of a save that was interrupted before its rename, if one is there.
    pub fn leftover_tmp(&self) -> Option<PathBuf> {
        let tmp = self.tmp_path();
        tmp.exists().then_some(tmp)
    }

    /// Removes that file. Removing, unlike truncating, cannot harm a save in progress
    /// elsewhere: its rename would fail and nothing would be replaced.
    pub fn remove_leftover_tmp(&self) -> Result<(), CheckpointError> {
        match fs::remove_file(self.tmp_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Write {
                path: self.tmp_path(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Moves the file aside to `partition-N.json.bak` (for `--reset-state`); returns where.
    pub fn set_aside(&self) -> Result<Option<PathBuf>, CheckpointError> {
        let path = self.path();
        let backup = self
            .dir
            .join(format!("partition-{}.json.bak", self.partition));
        match fs::rename(&path, &backup) {
            Ok(()) => Ok(Some(backup)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Write { path, source }),
        }
    }
}

/// For the fault tests only: `WEATHER_TEST_HOLD_SAVE=N` holds this process's Nth save
/// between its fsynced `.tmp` and the rename until the process is killed, so a test's SIGKILL
/// lands inside a save every time instead of when a microsecond window allows. Without the
/// variable (as everywhere outside the tests) a save never waits.
fn hold_if_a_test_asks(tmp: &Path) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static HOLD_AT: OnceLock<Option<u64>> = OnceLock::new();
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let hold_at = HOLD_AT.get_or_init(|| {
        std::env::var("WEATHER_TEST_HOLD_SAVE")
            .ok()
            .and_then(|n| n.parse().ok())
    });
    if hold_at.is_some_and(|at| SAVES.fetch_add(1, Ordering::Relaxed) + 1 == at) {
        tracing::warn!(
            "{}: save held before its rename (WEATHER_TEST_HOLD_SAVE, for tests only)",
            tmp.display()
        );
        loop {
            std::thread::park();
        }
    }
}

/// Every `partition-N.json` in `dir`, by partition number.
/// Fails as a save would if `dir` does not let partition files be replaced, by creating and
/// removing a file of this process's own; no partition file, nor a `.tmp` that another
/// process may be saving through, is touched.
pub fn check_writable(dir: &Path) -> Result<(), CheckpointError> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| CheckpointError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

pub fn partition_files(dir: &Path) -> Result<Vec<PartitionFile>, CheckpointError> {
    let read_err = |source| CheckpointError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let name = entry.map_err(read_err)?.file_name();
        let partition = name
            .to_str()
            .and_then(|n| n.strip_prefix("partition-"))
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i32>().ok());
        if let Some(partition) = partition.filter(|p| *p >= 0) {
            files.push(PartitionFile::new(dir, partition));
        }
    }
    files.sort_by_key(|f| f.partition);
    Ok(files)
}

/// Loads and merges every partition file in `dir`, failing on the first one that is unreadable.
pub fn load_all(dir: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    partition_files(dir)?
        .iter()
        .filter_map(|file| file.load().transpose())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DayReading;
    use time::macros::date;

    fn sample() -> Checkpoint {
        let mut stats = PartitionStats::default();
        for (date, degrees) in [
            (date!(2000 - 03 - 01), 44.1234),
            (date!(2000 - 03 - 02), 45.0),
            (date!(2000 - 08 - 02), 80.5),
            (date!(2001 - 03 - 01), 0.1 + 0.2),
        ] {
            stats.add(&DayReading { date, degrees });
        }
        Checkpoint {
            partition: 0,
            offset: 5060,
            stats,
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(json["partition"], 0);
        assert_eq!(json["offset"], 5060);
        let march = &json["March"]["2000"];
        assert_eq!(march["count"], 2);
        assert_eq!(march["sum"], 89.1234);
        assert_eq!(march["avg"], 44.5617);
        assert_eq!(march["start"], "2000-03-01");
        assert_eq!(march["end"], "2000-03-02");
        // Months come in calendar order in the text.
        let text = sample().to_json();
        assert!(text.find("\"March\"").unwrap() < text.find("\"August\"").unwrap());
    }

    #[test]
    fn save_then_load_gives_back_the_same_bits() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        assert_eq!(file.load().unwrap(), None);
        file.save(&sample()).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded, sample());
        // Sums must survive exactly, or a resumed count drifts from an uninterrupted one.
        let sum = |c: &Checkpoint| c.stats.get(time::Month::March, 2001).unwrap().sum.to_bits();
        assert_eq!(sum(&loaded), sum(&sample()));
        assert!(!dir.path().join("partition-0.json.tmp").exists());
    }

    #[test]
    fn corrupt_files_are_reported_and_left_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        let good = sample().to_json();
        let bad_inputs: Vec<Vec<u8>> = vec![
            good.as_bytes()[..good.len() / 2].to_vec(),
            b"not json at all".to_vec(),
            b"[1, 2, 3]".to_vec(),
            br#"{"partition": 0}"#.to_vec(),
            br#"{"partition": 0, "offset": -1}"#.to_vec(),
            br#"{"partition": 1, "offset": 10}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "Marchy": {}}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 1}}}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 1, "sum": 1.0, "start": "2000-04-01", "end": "2000-04-01"}}}"#.to_vec(),
            vec![0xff, 0xfe, 0x00],
        ];
        for bytes in bad_inputs {
            fs::write(file.path(), &bytes).unwrap();
            let err = file.load().unwrap_err();
            let line = err.to_string();
            assert!(matches!(err, CheckpointError::Corrupt { .. }), "{line}");
            assert!(
                line.contains("partition-0.json") && line.contains("--reset-state"),
                "{line}"
            );
            assert!(!line.contains('\n'));
            assert_eq!(fs::read(file.path()).unwrap(), bytes);
        }
    }

    #[test]
    fn a_failed_save_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let before = fs::read(file.path()).unwrap();
        // A folder where the temporary file should go makes the write fail.
        fs::create_dir(dir.path().join("partition-0.json.tmp")).unwrap();
        let mut changed = sample();
        changed.offset += 1;
        assert!(matches!(
            file.save(&changed),
            Err(CheckpointError::Write { .. })
        ));
        assert_eq!(fs::read(file.path()).unwrap(), before);
    }

    #[test]
    fn a_leftover_tmp_file_does_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        fs::write(dir.path().join("partition-0.json.tmp"), "{half").unwrap();
        assert_eq!(file.load().unwrap().unwrap(), sample());
        file.save(&sample()).unwrap();
        assert!(!dir.path().join("partition-0.json.tmp").exists());
    }

    #[test]
    fn set_aside_keeps_the_old_file_as_bak() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        assert_eq!(file.set_aside().unwrap(), None);
        fs::write(file.path(), "garbage").unwrap();
        let backup = file.set_aside().unwrap().unwrap();
        assert_eq!(fs::read_to_string(backup).unwrap(), "garbage");
        assert_eq!(file.load().unwrap(), None);
    }

    #[test]
    fn partition_files_finds_only_partition_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "partition-2.json",
            "partition-0.json",
            "partition-1.json.tmp",
            "partition-x.json",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), "{}").unwrap();
        }
        let found: Vec<i32> = partition_files(dir.path())
            .unwrap()
            .iter()
            .map(|f| f.partition)
            .collect();
        assert_eq!(found, vec![0, 2]);
    }
}
