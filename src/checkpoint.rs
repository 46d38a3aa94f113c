//! Partition files: `partition-N.json` in the state folder, the consumer's only memory.
//!
//! Statistics and the offset they were read up to live in one file, replaced atomically
//! (write a temporary file, fsync, rename over the old file, fsync the folder), so they always
//! change together: a crash at any instant leaves either the old file or the new one, whole.
//! Every save writes a temporary file of its own (`partition-N.<pid>-<n>.json.tmp`, created
//! exclusively), so two writers can never mix their bytes in one; and a consumer writes only
//! the files it owns (`OwnedFile`, which holds the partition's `lock`), so there is one writer.
//! A file that cannot be read as a partition file is reported and never overwritten, and a
//! checkpoint that would not load again is never written.
//!
//! Beside each file, `partition-N.topic.json` says which topic it counts (`TopicIdentity`:
//! the name, and the topic id that tells a recreated topic from the old one), so that a
//! consumer never adds one topic's records to another's statistics. It is a file of its own
//! so that `partition-N.json` keeps the seed's format, which the seed's own tools read and
//! which takes every top-level key but `partition` and `offset` for a month. It is written
//! once, before the first save it is needed for, and changes only with `--reset-state`; a
//! partition file without one (written before it existed) loads with `topic` left `None`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use time::{Date, Month};

use crate::kafka::metadata::TopicInfo;
use crate::lock::PartitionLock;
use crate::report::{format_date, month_name, parse_date, parse_month};
use crate::stats::{Days, MonthStats, PartitionStats};

/// The format of the topic file (`partition-N.topic.json`) this version writes and reads.
pub const FORMAT: u32 = 2;

/// How far a save goes to make the file survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and the folder: the file is the truth (`weather consume 0 2`), so an
    /// acknowledged save must survive anything the disk survives.
    Synced,
    /// Rename only: the file is a cache of a state Kafka already holds (`weather consume
    /// --group`, see `changelog`). A crash of the process still leaves the old file or the new
    /// one, whole (the page cache outlives the process); a power cut may leave an older file,
    /// which is an older correct state, or a torn one, which the group member sets aside and
    /// restores from the changelog instead.
    Cached,
}

/// What one partition file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub partition: i32,
    /// The next offset to read: every record before it is in `stats`.
    pub offset: i64,
    /// The topic the statistics were counted from, kept beside the partition file in
    /// `partition-N.topic.json`; `None` for a file written before there was one. A consumer
    /// takes such a file as its own topic's, and its next save writes the topic file.
    pub topic: Option<TopicIdentity>,
    pub stats: PartitionStats,
}

/// Which topic a partition file counts. Offsets mean something only within one topic: a
/// topic of another name, or one deleted and recreated under the same name, has other
/// records at the same offsets, so a file resumed on it would mix two topics in one count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicIdentity {
    pub name: String,
    pub instance: TopicInstance,
}

/// Which topic of that name: what changes when a topic is deleted and created again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicInstance {
    /// Kafka's topic id (Metadata v10 and later), as Kafka prints it: a new one for every
    /// topic created, whatever its name.
    Id(String),
    /// The partition count, where the broker gives no topic id (an all-zero id: Tansu 0.6.0 can
    /// answer so). It is the best mark there is then, and a weak one: a topic recreated with
    /// as many partitions looks the same (only an offset beyond the new end gives it away),
    /// and a topic given more partitions looks like another topic, and is refused.
    Partitions(i32),
}

impl TopicIdentity {
    /// The topic `name` as the cluster describes it now.
    pub fn of(name: &str, info: &TopicInfo) -> Self {
        let instance = match info.id_text() {
            Some(id) => TopicInstance::Id(id),
            None => TopicInstance::Partitions(info.partitions.len() as i32),
        };
        Self {
            name: name.into(),
            instance,
        }
    }
}

/// The topic file's shape: `{"format": 2, "topic": "temperatures", "topic_id": "..."}`, or
/// `"topic_partitions": 4` where the broker gives no topic id.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    format: u32,
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_partitions: Option<i32>,
}

impl TopicIdentity {
    /// The topic file's text for this topic.
    pub fn to_json(&self) -> String {
        let (topic_id, topic_partitions) = match &self.instance {
            TopicInstance::Id(id) => (Some(id.clone()), None),
            TopicInstance::Partitions(n) => (None, Some(*n)),
        };
        let file = TopicFile {
            format: FORMAT,
            topic: self.name.clone(),
            topic_id,
            topic_partitions,
        };
        // Plain strings and numbers into a String cannot fail.
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// Parses a topic file's text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: TopicFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.format != FORMAT {
            return Err(format!(
                "format {} is not one this version reads (format {FORMAT})",
                file.format
            ));
        }
        let instance = match (file.topic_id, file.topic_partitions) {
            (Some(id), None) if !id.is_empty() => TopicInstance::Id(id),
            (None, Some(n)) if n > 0 => TopicInstance::Partitions(n),
            _ => return Err("it needs either a topic_id or a topic_partitions above 0".into()),
        };
        if file.topic.is_empty() {
            return Err("the topic name is empty".into());
        }
        Ok(Self {
            name: file.topic,
            instance,
        })
    }
}

/// `topic "temperatures" (id lTxKwaGdT9uSU5X5v1bp_w)`, as the error lines name it.
impl std::fmt::Display for TopicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instance {
            TopicInstance::Id(id) => write!(f, "topic {:?} (id {id})", self.name),
            TopicInstance::Partitions(n) => {
                write!(f, "topic {:?} ({n} partitions, no topic id)", self.name)
            }
        }
    }
}

impl Checkpoint {
    /// A partition read from nothing: statistics are empty and reading starts at `offset`.
    pub fn empty(partition: i32, offset: i64) -> Self {
        Self {
            partition,
            offset,
            topic: None,
            stats: PartitionStats::default(),
        }
    }

    /// The same checkpoint, counting `topic`.
    pub fn of_topic(self, topic: TopicIdentity) -> Self {
        Self {
            topic: Some(topic),
            ..self
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain numbers and strings into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Parses a partition file's text, checking everything a reader relies on.
    pub fn from_json(text: &str) -> Result<Self, Unusable> {
        let raw: RawCheckpoint =
            serde_json::from_str(text).map_err(|e| Unusable::Invalid(e.to_string()))?;
        let invalid = |reason: String| Err(Unusable::Invalid(reason));
        let mut stats = PartitionStats::default();
        let mut days_unknown = None;
        for (name, years) in raw.months {
            let Some(month) = parse_month(&name) else {
                return invalid(format!("{name:?} is not a month"));
            };
            for (year_text, m) in years {
                let Ok(year) = year_text.parse::<i32>() else {
                    return invalid(format!("{name} {year_text:?} is not a year"));
                };
                let bad = |what: &str| Unusable::Invalid(format!("{name} {year}: {what}"));
                let start = parse_date(&m.start).map_err(|_| bad("start is not a date"))?;
                let end = parse_date(&m.end).map_err(|_| bad("end is not a date"))?;
                // Files from before `days` was written: that version counted only dates after
                // `end`, so a month with as many days as its span counted exactly those.
                let span = Days::span(start.day(), end.day());
                let days = match m.days {
                    Some(bits) => Days::from_bits(bits),
                    None if start <= end && u64::from(span.len()) == m.count => span,
                    None => {
                        days_unknown.get_or_insert(Unusable::DaysUnknown {
                            month,
                            year,
                            count: m.count,
                            start,
                            end,
                        });
                        span
                    }
                };
                let stats_of_month = MonthStats {
                    count: m.count,
                    sum: m.sum,
                    start,
                    end,
                    days,
                };
                stats
                    .months
                    .entry(month)
                    .or_default()
                    .insert(year, stats_of_month);
            }
        }
        let checkpoint = Self {
            partition: raw.partition,
            offset: raw.offset,
            topic: None,
            stats,
        };
        checkpoint.check().map_err(Unusable::Invalid)?;
        match days_unknown {
            Some(unknown) => Err(unknown),
            None => Ok(checkpoint),
        }
    }

    /// The rules every partition file meets. Loading checks them, and so does every save
    /// before it writes anything, so a file that is written always loads again: a sum that
    /// overflowed to infinity, which JSON writes as `null`, is refused rather than saved.
    pub fn check(&self) -> Result<(), String> {
        if self.partition < 0 {
            return Err(format!("partition {} is negative", self.partition));
        }
        if self.offset < 0 {
            return Err(format!("offset {} is negative", self.offset));
        }
        if let Some(topic) = &self.topic {
            let named = match &topic.instance {
                TopicInstance::Id(id) => !id.is_empty(),
                TopicInstance::Partitions(count) => *count > self.partition,
            };
            if topic.name.is_empty() || !named {
                return Err(format!("{topic} is not a topic this partition can be of"));
            }
        }
        for (&month, years) in &self.stats.months {
            for (&year, m) in years {
                let bad = |what: &str| Err(format!("{} {year}: {what}", month_name(month)));
                let in_month = |d: Date| d.month() == month && d.year() == year;
                if m.count == 0 || !m.sum.is_finite() || m.start > m.end {
                    return bad("count, sum or dates are out of range");
                }
                if !in_month(m.start) || !in_month(m.end) {
                    return bad("start or end lies outside that month");
                }
                if m.days.bits() >> month.length(year) != 0 {
                    return bad("days lists a day the month does not have");
                }
                if m.days.first() != Some(m.start.day()) || m.days.last() != Some(m.end.day()) {
                    return bad("start and end are not the first and last of days");
                }
            }
        }
        Ok(())
    }
}

/// Why a partition file's text cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unusable {
    /// Not a partition file; the reason says what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A file from before `days` was recorded, with days missing between `start` and `end`:
    /// which ones were counted is lost, so a late day could not be told from a repeated one.
    #[error(
        "{} {year} counts {count} days from {start} to {end} without saying which (the file predates the days field)",
        month_name(*.month)
    )]
    DaysUnknown {
        month: Month,
        year: i32,
        count: u64,
        start: Date,
        end: Date,
    },
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
    /// Absent in files written before it was added.
    days: Option<u32>,
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

/// One year of a month as the file writes it: the seed's five keys, then `days`, which
/// readers that predate it ignore.
#[derive(Serialize)]
struct YearJson {
    count: u64,
    sum: f64,
    avg: f64,
    start: String,
    end: String,
    /// The days counted, bit `d - 1` for day `d` (see `stats::Days`).
    days: u32,
}

impl From<&MonthStats> for YearJson {
    fn from(m: &MonthStats) -> Self {
        Self {
            count: m.count,
            sum: m.sum,
            avg: m.avg(),
            start: format_date(m.start),
            end: format_date(m.end),
            days: m.days.bits(),
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
    #[error(
        "{path} was written by an older version and cannot be resumed: {reason}; it was left as it is: run with --reset-state to count partition {partition} again from the start"
    )]
    DaysUnknown {
        path: PathBuf,
        partition: i32,
        reason: Unusable,
    },
    #[error("cannot write {path}: {source}; check that the state folder exists and is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "partition {partition}: refused to save offset {offset} to {path}, as the file would not load again ({reason}); it keeps its last good state. The same records would lead here again: please report this as a bug"
    )]
    Unloadable {
        path: PathBuf,
        partition: i32,
        offset: i64,
        reason: String,
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

    /// The file that says which topic `path` counts.
    pub fn topic_path(&self) -> PathBuf {
        self.dir
            .join(format!("partition-{}.topic.json", self.partition))
    }

    /// The topic the topic file names, `None` when there is none.
    fn load_topic(&self) -> Result<Option<TopicIdentity>, CheckpointError> {
        let path = self.topic_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::new(),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        TopicIdentity::from_json(&text)
            .map(Some)
            .map_err(|reason| CheckpointError::Corrupt {
                path,
                partition: self.partition,
                reason,
            })
    }

    /// Creates a temporary file that no other save uses: named with this process's id and a
    /// count of its saves, and created exclusively, since two processes on two machines
    /// sharing the folder can still draw the same name (then the next name is tried).
    fn create_tmp(&self, kind: &str) -> Result<(PathBuf, File), CheckpointError> {
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let mut tries = 0;
        loop {
            let n = SAVES.fetch_add(1, Ordering::Relaxed);
            let tmp = self.dir.join(format!(
                "partition-{}.{kind}{}-{n}.json.tmp",
                self.partition,
                std::process::id()
            ));
            match File::options().write(true).create_new(true).open(&tmp) {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => {
                    tries += 1;
                }
                Err(source) => return Err(CheckpointError::Write { path: tmp, source }),
            }
        }
    }

    /// Whether `name` is a temporary file of this partition's saves: ours, or
    /// `partition-N.json.tmp` from versions that used one name for every save.
    fn is_tmp_name(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(&format!("partition-{}.", self.partition))
            .and_then(|rest| rest.strip_suffix("json.tmp"))
        else {
            return false;
        };
        // The topic file's saves: `partition-N.topic.<pid>-<n>.json.tmp`.
        let rest = rest.strip_prefix("topic.").unwrap_or(rest);
        rest.is_empty()
            || rest.strip_suffix('.').is_some_and(|id| {
                id.split_once('-').is_some_and(|(pid, n)| {
                    [pid, n]
                        .iter()
                        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                })
            })
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
        let checkpoint = Checkpoint::from_json(&text).map_err(|problem| match problem {
            Unusable::Invalid(reason) => self.corrupt(reason),
            reason @ Unusable::DaysUnknown { .. } => CheckpointError::DaysUnknown {
                path: self.path(),
                partition: self.partition,
                reason,
            },
        })?;
        if checkpoint.partition != self.partition {
            return Err(self.corrupt(format!("it says partition {}", checkpoint.partition)));
        }
        let topic = self.load_topic()?;
        Ok(Some(Checkpoint {
            topic,
            ..checkpoint
        }))
    }

    fn corrupt(&self, reason: String) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path(),
            partition: self.partition,
            reason,
        }
    }

    /// Replaces the file atomically and durably; on error the old file is untouched.
    ///
    /// A checkpoint that would not load again is refused before anything is written: the next
    /// start would stop on it, and `--reset-state` would replay the same records into it.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        self.save_with(checkpoint, Durability::Synced)
    }

    /// `save`, with fsyncs or without (`Durability`).
    pub fn save_with(
        &self,
        checkpoint: &Checkpoint,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        // Checked rather than read back: parsing a file of many years costs twice writing it.
        if let Err(reason) = checkpoint.check() {
            return Err(CheckpointError::Unloadable {
                path: self.path(),
                partition: self.partition,
                offset: checkpoint.offset,
                reason,
            });
        }
        // The topic first: a file on disk never counts a topic its topic file does not name.
        // It is written once, and again only when a file is taken over from an older version
        // (which wrote none) or counted afresh after --reset-state.
        if let Some(topic) = &checkpoint.topic
            && self.load_topic().ok().flatten().as_ref() != Some(topic)
        {
            self.replace(
                &self.topic_path(),
                "topic.",
                &topic.to_json(),
                false,
                durability,
            )?;
        }
        self.replace(&self.path(), "", &checkpoint.to_json(), true, durability)
    }

    /// Replaces `path` with `text`: a temporary file of this save's own, fsync (`Synced`),
    /// rename over `path`, fsync the folder (`Synced`). On error `path` is untouched.
    fn replace(
        &self,
        path: &Path,
        kind: &str,
        text: &str,
        may_hold: bool,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let (tmp, file) = self.create_tmp(kind)?;
        if let Err(e) = write_file(file, &tmp, text.as_bytes(), durability) {
            // We created it, so it is ours alone to remove.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if may_hold {
            hold_if_a_test_asks(&tmp);
        }
        if let Err(source) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(CheckpointError::Write {
                path: path.to_path_buf(),
                source,
            });
        }
        if durability == Durability::Cached {
            return Ok(());
        }
        // The rename is durable only once the folder's entry is on disk.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| CheckpointError::Write {
                path: self.dir.clone(),
                source,
            })
    }

    /// Temporary files of this partition's saves in the folder, by name: saves that were
    /// interrupted before their rename, or saves still under way elsewhere.
    pub fn tmp_files(&self) -> Result<Vec<PathBuf>, CheckpointError> {
        let read_err = |source| CheckpointError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_err)? {
            let name = entry.map_err(read_err)?.file_name();
            if name.to_str().is_some_and(|name| self.is_tmp_name(name)) {
                found.push(self.dir.join(name));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Moves the file aside to `partition-N.json.bak` (for `--reset-state`); returns where.
    pub fn set_aside(&self) -> Result<Option<PathBuf>, CheckpointError> {
        // Its topic file goes with it, so the file counted afresh gets one of its own.
        let topic = self.topic_path();
        match fs::rename(&topic, topic.with_extension("json.bak")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::Write {
                    path: topic,
                    source,
                });
            }
        }
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

/// Writes `bytes` to `file` (at `path`), and fsyncs it if `Synced`.
fn write_file(
    mut file: File,
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), CheckpointError> {
    let write_err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    file.write_all(bytes).map_err(write_err)?;
    match durability {
        Durability::Synced => file.sync_all().map_err(write_err),
        Durability::Cached => Ok(()),
    }
}

/// A partition file this process owns: it holds the partition's lock for as long as any
/// clone of it lives, so a save still running on a blocking thread keeps the lock too, and
/// the next owner starts only after the last save is on disk.
#[derive(Debug, Clone)]
pub struct OwnedFile {
    file: PartitionFile,
    _lock: Arc<PartitionLock>,
}

impl OwnedFile {
    pub fn new(lock: PartitionLock) -> Self {
        Self {
            file: PartitionFile::new(lock.dir(), lock.partition()),
            _lock: Arc::new(lock),
        }
    }

    /// Removes the temporary files of earlier saves, returning their names. Only the owner
    /// may: every save of a consumer happens under the partition's lock, so while we hold
    /// it, any temporary file of this partition belongs to a save that died before its
    /// rename. (A file removed under a save still running elsewhere, from a version without
    /// the lock, only makes that save's rename fail: nothing is replaced by a half file.)
    pub fn remove_leftover_tmps(&self) -> Result<Vec<PathBuf>, CheckpointError> {
        let leftovers = self.file.tmp_files()?;
        for tmp in &leftovers {
            match fs::remove_file(tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CheckpointError::Write {
                        path: tmp.clone(),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(leftovers)
    }
}

impl std::ops::Deref for OwnedFile {
    type Target = PartitionFile;

    fn deref(&self) -> &PartitionFile {
        &self.file
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
            topic: Some(TopicIdentity {
                name: "temperatures".into(),
                instance: TopicInstance::Id("lTxKwaGdT9uSU5X5v1bp_w".into()),
            }),
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
        assert_eq!(march["days"], 0b11);
        // The seed's keys, unchanged and in their order, then the one added since.
        let text = sample().to_json();
        let at: Vec<usize> = ["count", "sum", "avg", "start", "end", "days"]
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.is_sorted(), "{text}");
        assert_eq!(march.as_object().unwrap().len(), 6);
        // Months come in calendar order in the text.
        let text = sample().to_json();
        assert!(text.find("\"March\"").unwrap() < text.find("\"August\"").unwrap());
        // The seed's top level exactly: its two fixed keys, then months only (the seed's
        // reader takes every other top-level key for a month). The topic is in its own file.
        let keys = ["partition", "offset", "March", "August"];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\n  \"{k}\":")).unwrap())
            .collect();
        assert!(at.is_sorted(), "{text}");
        assert_eq!(json.as_object().unwrap().len(), keys.len());
    }

    /// The seed's reader, as `weather plot` had it: `partition`, `offset`, and every other
    /// top-level key a month of years of count, sum, start and end (other fields ignored).
    #[derive(Deserialize)]
    struct SeedFile {
        #[allow(dead_code)]
        partition: i32,
        #[allow(dead_code)]
        offset: i64,
        #[serde(flatten)]
        months: BTreeMap<String, BTreeMap<String, SeedMonth>>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct SeedMonth {
        count: u64,
        sum: f64,
        start: String,
        end: String,
    }

    #[test]
    fn the_seeds_reader_still_reads_what_a_save_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let text = fs::read_to_string(file.path()).unwrap();
        let seed: SeedFile = serde_json::from_str(&text).unwrap();
        for name in seed.months.keys() {
            assert!(parse_month(name).is_some(), "{name} is not a month: {text}");
        }
        assert_eq!(seed.months["March"]["2001"].count, 1);
    }

    #[test]
    fn the_topic_file_names_the_topic_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(file.topic_path()).unwrap()).unwrap();
        assert_eq!(json["format"], FORMAT);
        assert_eq!(json["topic"], "temperatures");
        assert_eq!(json["topic_id"], "lTxKwaGdT9uSU5X5v1bp_w");
        assert_eq!(file.load().unwrap().unwrap(), sample());
        // Without an id from the broker, the partition count stands in for it.
        let counted = TopicIdentity {
            name: "other".into(),
            instance: TopicInstance::Partitions(4),
        };
        let text = counted.to_json();
        assert!(text.contains("\"topic_partitions\": 4") && !text.contains("topic_id"));
        assert_eq!(TopicIdentity::from_json(&text).unwrap(), counted);
        assert_eq!(
            counted.to_string(),
            "topic \"other\" (4 partitions, no topic id)"
        );
        for bad in [
            r#"{"format": 3, "topic": "t", "topic_id": "x"}"#,
            r#"{"format": 2, "topic": "t"}"#,
            r#"{"format": 2, "topic": "", "topic_id": "x"}"#,
            r#"{"format": 2, "topic": "t", "topic_id": "x", "topic_partitions": 4}"#,
            r#"{"format": 2, "topic": "t", "topic_partitions": 0}"#,
            r#"{"format": 2, "topic": "t", "topic_id": "x", "zone": 1}"#,
            "not json",
        ] {
            assert!(TopicIdentity::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_broken_topic_file_is_refused_in_one_line_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        fs::write(file.topic_path(), "{half").unwrap();
        let err = file.load().unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{line}");
        assert!(
            line.contains("partition-0.topic.json") && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(fs::read(file.topic_path()).unwrap(), b"{half");
        // --reset-state sets both aside.
        file.set_aside().unwrap();
        assert!(!file.topic_path().exists() && !file.path().exists());
        assert!(dir.path().join("partition-0.topic.json.bak").exists());
    }

    #[test]
    fn a_file_of_the_first_format_loads_without_a_topic_and_is_saved_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        let mut old = sample();
        old.topic = None;
        let text = old.to_json();
        fs::write(file.path(), &text).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded, old);
        file.save(&loaded.of_topic(sample().topic.unwrap()))
            .unwrap();
        assert_eq!(file.load().unwrap().unwrap(), sample());
        // The partition file itself is as it was: the topic went to its own file.
        assert_eq!(fs::read_to_string(file.path()).unwrap(), text);
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
        assert_eq!(file.tmp_files().unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn whatever_passes_the_check_reads_back_bit_for_bit() {
        // What lets `save` check the rules instead of parsing what it wrote.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut c = Checkpoint::empty(rng.i32(0..12), rng.i64(0..i64::MAX));
            if rng.bool() {
                let instance = match rng.bool() {
                    true => TopicInstance::Id("AAAAAAAAAAAAAAAAAAAAAQ".into()),
                    false => TopicInstance::Partitions(rng.i32(c.partition + 1..100)),
                };
                let name = "t".repeat(rng.usize(1..9));
                c = c.of_topic(TopicIdentity { name, instance });
            }
            for _ in 0..rng.usize(0..60) {
                let date = date!(1900 - 01 - 01) + time::Duration::days(rng.i64(0..60_000));
                let degrees = match rng.u8(0..4) {
                    0 => -0.0,
                    1 => f64::from_bits(1),
                    _ => (rng.f64() - 0.5) * 400.0,
                };
                c.stats.add(&DayReading { date, degrees });
            }
            assert_eq!(c.check(), Ok(()));
            let back = Checkpoint::from_json(&c.to_json()).unwrap();
            assert_eq!(
                Checkpoint {
                    topic: c.topic.clone(),
                    ..back.clone()
                },
                c
            );
            if let Some(topic) = &c.topic {
                assert_eq!(
                    TopicIdentity::from_json(&topic.to_json()).as_ref(),
                    Ok(topic)
                );
            }
            for (a, b) in back.stats.months.values().zip(c.stats.months.values()) {
                for (x, y) in a.values().zip(b.values()) {
                    assert_eq!(x.sum.to_bits(), y.sum.to_bits());
                }
            }
        }
    }

    #[test]
    fn two_processes_saving_one_partition_never_mix_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|writer| {
                    let file = file.clone();
                    scope.spawn(move || {
                        for round in 0..150 {
                            let mut c = sample();
                            c.offset = 1000 * writer + round;
                            // Files of different lengths, so a mix of two would show.
                            for day in 1..=(round % 28 + 1) as u8 {
                                let date = time::Date::from_calendar_date(
                                    2000 + writer as i32,
                                    time::Month::May,
                                    day,
                                )
                                .unwrap();
                                c.stats.add(&DayReading {
                                    date,
                                    degrees: 70.25,
                                });
                            }
                            file.save(&c).unwrap();
                        }
                    })
                })
                .collect();
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    file.load().unwrap().unwrap();
                }
            });
            for writer in writers {
                writer.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!([149, 1149].contains(&file.load().unwrap().unwrap().offset));
        assert_eq!(file.tmp_files().unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_checkpoint_that_would_not_load_again_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let before = fs::read(file.path()).unwrap();
        // Two finite values whose sum is not, as `stats` would refuse them from a record.
        let mut c = sample();
        for day in [10, 11] {
            let date = time::Date::from_calendar_date(2000, time::Month::March, day).unwrap();
            c.stats.add(&DayReading {
                date,
                degrees: f64::MAX,
            });
        }
        c.offset += 2;
        let err = file.save(&c).unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, CheckpointError::Unloadable { .. }), "{line}");
        assert!(
            line.contains("partition-0.json") && line.contains("offset 5062"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        assert_eq!(fs::read(file.path()).unwrap(), before);
        assert_eq!(file.tmp_files().unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_file_from_before_days_were_recorded_loads_when_it_has_no_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        let old = |count: u64, end: &str| {
            format!(
                r#"{{"partition": 0, "offset": 40, "March": {{"2000": {{"count": {count}, "sum": 1.5, "avg": 0.1, "start": "2000-03-02", "end": "{end}"}}}}}}"#
            )
        };
        fs::write(file.path(), old(30, "2000-03-31")).unwrap();
        let loaded = file.load().unwrap().unwrap();
        let march = loaded.stats.get(time::Month::March, 2000).unwrap();
        assert_eq!(march.days, Days::span(2, 31));
        assert_eq!(march.count, 30);

        // Days missing between start and end: which ones is lost, so it is refused.
        let gaps = old(20, "2000-03-31");
        fs::write(file.path(), &gaps).unwrap();
        let err = file.load().unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, CheckpointError::DaysUnknown { .. }), "{line}");
        assert!(
            line.contains("partition-0.json")
                && line.contains("March 2000 counts 20 days from 2000-03-02 to 2000-03-31")
                && line.contains("--reset-state")
                && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(fs::read_to_string(file.path()).unwrap(), gaps);
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
            // A 29th of February in a year without one.
            br#"{"partition": 0, "offset": 10, "February": {"2001": {"count": 1, "sum": 1.0, "start": "2001-02-28", "end": "2001-02-28", "days": 402653184}}}"#.to_vec(),
            // Days that do not agree with start and end.
            br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 1, "sum": 1.0, "start": "2000-03-01", "end": "2000-03-01", "days": 2}}}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 1, "sum": 1.0, "start": "2000-03-01", "end": "2000-03-01", "days": -1}}}"#.to_vec(),
            vec![0xff, 0xfe, 0x00],
            // A format this version does not know, with a key it would take for a month.
            br#"{"partition": 0, "offset": 10, "format": 3, "topic": "t", "zone": {}}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": "2", "topic": "t", "topic_id": "x"}"#.to_vec(),
            // Topic keys that do not go together.
            br#"{"partition": 0, "offset": 10, "topic": "t", "topic_id": "x"}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic_id": "x"}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic": "t", "topic_id": "x", "topic_partitions": 4}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic": "", "topic_id": "x"}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic": "t", "topic_id": ""}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic": "t", "topic_partitions": 0}"#.to_vec(),
            br#"{"partition": 0, "offset": 10, "format": 2, "topic": 7, "topic_id": "x"}"#.to_vec(),
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
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should go makes the rename fail (root writes through mode
        // bits, so permissions cannot make a save fail in every test environment).
        fs::create_dir_all(dir.path().join("partition-0.json/inside")).unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        assert!(matches!(
            file.save(&sample()),
            Err(CheckpointError::Write { .. })
        ));
        assert!(dir.path().join("partition-0.json/inside").is_dir());
        assert_eq!(file.tmp_files().unwrap(), Vec::<PathBuf>::new());
        // A folder that is gone.
        let gone = PartitionFile::new(dir.path().join("gone"), 0);
        assert!(matches!(
            gone.save(&sample()),
            Err(CheckpointError::Write { .. })
        ));
    }

    #[test]
    fn leftover_tmp_files_are_found_by_name_and_removed_only_by_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = PartitionFile::new(dir.path(), 0);
        file.save(&sample()).unwrap();
        let leftovers = ["partition-0.json.tmp", "partition-0.4242-7.json.tmp"];
        let others = [
            "partition-10.json.tmp",
            "partition-1.4242-7.json.tmp",
            "partition-0.json.bak",
            "partition-0.x-1.json.tmp",
            "partition-0.4242.json.tmp",
            "partition-0.lock",
        ];
        for name in leftovers.iter().chain(&others) {
            fs::write(dir.path().join(name), "{half").unwrap();
        }
        assert_eq!(file.load().unwrap().unwrap(), sample());
        // A save leaves them: only the partition's owner knows they are not being written.
        file.save(&sample()).unwrap();
        let expected: Vec<PathBuf> = leftovers.iter().map(|n| dir.path().join(n)).collect();
        let mut found = file.tmp_files().unwrap();
        found.sort();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(found, sorted);

        let owned = OwnedFile::new(PartitionLock::acquire(dir.path(), 0, "test").unwrap());
        let mut removed = owned.remove_leftover_tmps().unwrap();
        removed.sort();
        assert_eq!(removed, sorted);
        for name in others {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        assert_eq!(owned.load().unwrap().unwrap(), sample());
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
