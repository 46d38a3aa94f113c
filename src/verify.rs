//! `weather verify`: recomputes each partition file's statistics from the topic itself,
//! reading from the partition's first record up to the file's offset, and compares.
//! `weather verify --from-kafka` does the same for the newest snapshot of each partition in
//! the changelog (`changelog`), the merged state of a group's members wherever they run.
//!
//! It uses the same `stats` rules as the consumer but none of its state, so a file that
//! counted a day twice, missed one, or moved its offset without its statistics shows up. A
//! file that counts another topic (another name, or this name before it was recreated) is a
//! problem of its own: its offsets mean nothing in this topic, so it is not compared.

use std::path::Path;

use crate::changelog::{self, ChangelogError};
use crate::checkpoint::{Checkpoint, CheckpointError, TopicIdentity, partition_files};
use crate::kafka::security::Operation;
use crate::kafka::{Cluster, KafkaError, Partition};
use crate::report::month_name;
use crate::stats::PartitionStats;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("no partition files in {0}; run `weather consume` first")]
    NoFiles(String),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error("no snapshot of topic {topic:?} in {changelog}; run `weather consume --group` first")]
    NoSnapshots { topic: String, changelog: String },
}

/// The verdict on one partition file.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub partition: i32,
    pub offset: i64,
    pub reports: u64,
    /// Empty when the file matches the topic.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn matches(&self) -> bool {
        self.problems.is_empty()
    }
}

pub async fn run(
    cluster: &Cluster,
    topic: &str,
    state_dir: &Path,
) -> Result<Vec<Verdict>, VerifyError> {
    let files = partition_files(state_dir).map_err(|e| match e {
        CheckpointError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            VerifyError::NoFiles(state_dir.display().to_string())
        }
        other => other.into(),
    })?;
    if files.is_empty() {
        return Err(VerifyError::NoFiles(state_dir.display().to_string()));
    }
    let loaded = files
        .iter()
        .filter_map(|file| match file.load() {
            Ok(c) => c.map(Ok),
            Err(e) => Some(Err((file.partition(), e.to_string()))),
        })
        .collect();
    check(cluster, topic, loaded).await
}

/// `weather verify --from-kafka`: the newest snapshot of every partition in the changelog.
pub async fn run_from_kafka(cluster: &Cluster, topic: &str) -> Result<Vec<Verdict>, VerifyError> {
    let (_, snapshots) = changelog::read_all(cluster, topic).await?;
    if snapshots.is_empty() {
        return Err(VerifyError::NoSnapshots {
            topic: topic.into(),
            changelog: changelog::topic_for(topic),
        });
    }
    check(cluster, topic, snapshots.into_iter().map(Ok).collect()).await
}

/// Checkpoints, or why one could not be read (partition, reason), against the topic.
type Loaded = Vec<Result<Checkpoint, (i32, String)>>;

async fn check(
    cluster: &Cluster,
    topic: &str,
    loaded: Loaded,
) -> Result<Vec<Verdict>, VerifyError> {
    let info = cluster.require_allowed(topic, Operation::Read).await?;
    let count = info.partitions.len() as i32;
    let identity = TopicIdentity::of(topic, &info);
    let mut verdicts = Vec::new();
    // The statistics of the files compared, to look for a day counted in two of them.
    let mut compared: Vec<(usize, i32, PartitionStats)> = Vec::new();
    for checkpoint in loaded {
        let checkpoint = match checkpoint {
            Ok(c) => c,
            Err((partition, problem)) => {
                verdicts.push(Verdict {
                    partition,
                    offset: 0,
                    reports: 0,
                    problems: vec![problem],
                });
                continue;
            }
        };
        let mut verdict = Verdict {
            partition: checkpoint.partition,
            offset: checkpoint.offset,
            reports: 0,
            problems: Vec::new(),
        };
        // A file without a topic file does not say; it is compared, as it always was.
        if let Some(counted) = checkpoint.topic.as_ref().filter(|t| **t != identity) {
            verdict.problems.push(format!(
                "the file counts {counted}, not {identity}, so it was not compared"
            ));
            verdicts.push(verdict);
            continue;
        }
        if checkpoint.partition >= count {
            verdict.problems.push(format!(
                "topic {topic:?} has no partition {} (it has {count})",
                checkpoint.partition
            ));
            verdicts.push(verdict);
            continue;
        }
        let partition = cluster.partition(topic, checkpoint.partition).await?;
        let (earliest, end) = partition.offsets().await?;
        if checkpoint.offset > end {
            verdict.problems.push(format!(
                "offset {} lies beyond the partition's end {end}: the topic was recreated",
                checkpoint.offset
            ));
        } else if earliest > 0 {
            verdict.problems.push(format!(
                "records before offset {earliest} were deleted by the broker, so the file cannot be checked"
            ));
        } else {
            let recomputed = recompute(&partition, checkpoint.offset).await?;
            verdict.reports = recomputed.days();
            verdict.problems = checkpoint.stats.differences(&recomputed);
            compared.push((verdicts.len(), checkpoint.partition, checkpoint.stats));
        }
        verdicts.push(verdict);
    }
    // Each file may match its partition and the topic still hold a day twice, in two
    // partitions (written again after the topic got more partitions): merged, it counts twice.
    for (i, (_, first, earlier)) in compared.iter().enumerate() {
        for (at, _, later) in &compared[i + 1..] {
            for (month, year, days) in earlier.shared_days(later) {
                verdicts[*at].problems.push(format!(
                    "{} {year}: days {days} are counted in partition {first} too, so the topic holds them twice and merged statistics count them twice",
                    month_name(month)
                ));
            }
        }
    }
    Ok(verdicts)
}

/// The statistics of every record before `until`, computed from scratch.
async fn recompute(partition: &Partition, until: i64) -> Result<PartitionStats, KafkaError> {
    let mut stats = PartitionStats::default();
    partition
        .scan(0, until, |record| {
            stats.apply(record.key.as_deref(), record.value.as_deref());
        })
        .await?;
    Ok(stats)
}
