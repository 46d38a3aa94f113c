//! `weather consume 0 2`: the stats consumer, with partitions assigned by hand.
//!
//! Per partition: take its lock, load its file and seek to the file's offset (no file: the
//! earliest offset), then for each fetched batch update the statistics in memory and replace
//! the file. Statistics and offset are saved together, so every report counts exactly once
//! across any crash (see `checkpoint` for the write, `stats` for the dedup rule and `lock` for
//! why a file has one writer).
//!
//! A file counts one topic (`checkpoint::TopicIdentity`): a file of another is refused at
//! start, and a topic deleted and recreated under a running consumer stops it before a record
//! of the new topic is counted. Fetches go by topic id where the broker can, so the broker
//! refuses a recreated topic's reads; where they go by name (Tansu 0.6.0), the topic's id is
//! asked for after each fetch and before its records are counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::changelog::{self, Changelog, ChangelogError};
use crate::checkpoint::{self, Checkpoint, CheckpointError, Durability, OwnedFile, TopicIdentity};
use crate::kafka::backoff::Backoff;
use crate::kafka::group::{self, GroupError, GroupOptions};
use crate::kafka::metadata::TopicInfo;
use crate::kafka::outage::OutageWatch;
use crate::kafka::security::Operation;
use crate::kafka::{Cluster, KafkaError, Partition, is_offset_out_of_range};
use crate::lock::{LockError, PartitionLock};
use crate::shutdown::Shutdown;
use crate::stats::Outcome;

/// Default upper bound on one fetch's size; a batch is also one checkpoint write. Larger fetches
/// catch up a little faster on Tansu but cost resident memory (four partitions at once):
/// 192 KiB keeps `weather consume 0 1 2 3` near 12 MB (`make bench`).
pub const FETCH_BYTES: i32 = 192 << 10;
/// Warnings about skipped records per partition before they are only counted.
const SKIP_WARNINGS: u64 = 10;
/// Consecutive failed fetches tolerated by `--until-caught-up` before it gives up.
const CATCH_UP_RETRIES: u32 = 10;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long a group member waits for a partition's previous owner to let go of its lock. A
/// live member lets go within a heartbeat interval and its last save; one that holds on for
/// a minute is stalled, or is not in the group at all (a `weather consume 0 2` on the folder).
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub topic: String,
    pub partitions: Vec<i32>,
    pub state_dir: PathBuf,
    pub until_caught_up: bool,
    pub reset_state: bool,
    /// How long a fetch waits at the end of the partition for new records; `None`: the
    /// broker's right default (`Flavor::default_fetch_wait`).
    pub fetch_wait: Option<Duration>,
    /// Upper bound on one fetch, in bytes (the broker still returns at least one batch).
    pub fetch_bytes: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error("partition {partition} does not exist: topic {topic:?} has partitions 0 to {}", .count - 1)]
    NoSuchPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error(
        "{path}: offset {offset} lies beyond the end of partition {partition} (offset {end}), so the topic was recreated since the file was written; the file was left as it is: move it aside, or run with --reset-state to count the partition again"
    )]
    BeyondEnd {
        path: PathBuf,
        partition: i32,
        offset: i64,
        end: i64,
    },
    #[error(
        "{path} counts {file}, not {topic}; it was left as it is: use another --state-dir for {:?}, or run with --reset-state to count partition {partition} of it from the start (the old file is kept as .bak)",
        .topic.name
    )]
    OtherTopic {
        path: PathBuf,
        partition: i32,
        // Boxed, as every error of a program's edge is as large as its largest.
        file: Box<TopicIdentity>,
        topic: Box<TopicIdentity>,
    },
    #[error(
        "{was} was replaced by {now} while partition {partition} was read (deleted and created again); {path} was left as it is at offset {offset}, with nothing of the new topic: run with --reset-state to count the new one from the start, or use another --state-dir"
    )]
    TopicReplaced {
        path: PathBuf,
        partition: i32,
        offset: i64,
        was: Box<TopicIdentity>,
        now: Box<TopicIdentity>,
    },
    #[error("cannot create state folder {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "partition {partition}: gave up at offset {offset} after {CATCH_UP_RETRIES} failed fetches: {source}"
    )]
    GaveUp {
        partition: i32,
        offset: i64,
        source: KafkaError,
    },
}

/// What one partition's run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionSummary {
    pub partition: i32,
    pub offset: i64,
    pub counted: u64,
    pub duplicates: u64,
    pub skipped: u64,
}

pub async fn run(
    cluster: &Cluster,
    options: &ConsumeOptions,
    shutdown: &Shutdown,
) -> Result<Vec<PartitionSummary>, ConsumeError> {
    let count = prepare(cluster, options).await?.partitions.len() as i32;
    if let Some(&partition) = options.partitions.iter().find(|p| **p >= count) {
        return Err(ConsumeError::NoSuchPartition {
            topic: options.topic.clone(),
            partition,
            count,
        });
    }
    let listed: Vec<String> = options.partitions.iter().map(i32::to_string).collect();
    let owner = format!("weather consume {}", listed.join(" "));
    let claim = Claim::Now { owner: &owner };
    let assigned = open_partitions(
        cluster,
        options,
        &options.partitions,
        options.reset_state,
        claim,
        None,
    )
    .await?;
    let watch = OutageWatch::new("reading");
    let runs = assigned.into_iter().map(|(partition, file, start)| {
        let target = options.until_caught_up.then_some(start.end);
        let fetching = Fetching::new(cluster, options, target, &watch);
        consume_partition(partition, Store::file(file), start, fetching, shutdown)
    });
    futures::future::try_join_all(runs).await
}

/// `weather consume --group`: the same per-partition loop on the partitions the group assigns,
/// with the changelog (`changelog`) as the truth: every batch's checkpoint is acknowledged
/// there before the local file, now a cache, is replaced, and a partition received is
/// restored from the newer of its changelog snapshot and its local file. Its loop has saved
/// its last batch before the partition is given up, so state is exact across rebalances,
/// whichever machine each member runs on.
pub async fn run_group(
    cluster: &Cluster,
    options: &ConsumeOptions,
    group: &GroupOptions,
    shutdown: &Shutdown,
) -> Result<(), ConsumeError> {
    let info = prepare(cluster, options).await?;
    let changelog = Changelog::open(cluster, &options.topic, &info).await?;
    let changelog = &changelog;
    let watch = OutageWatch::new("reading");
    let owner = format!("weather consume --group {}", group.group);
    group::run(cluster, group, shutdown, async |generation| {
        let claim = Claim::Waiting {
            owner: &owner,
            stop: &generation.stop,
        };
        let assigned = open_partitions(
            cluster,
            options,
            &generation.partitions,
            false,
            claim,
            Some(changelog),
        )
        .await?;
        let starts: Vec<String> = assigned
            .iter()
            .map(|(p, _, start)| format!("{} at {}", p.id(), start.checkpoint.offset))
            .collect();
        // Tests wait for this line: from here on, a new record is counted.
        info!(
            "group {}: generation {} reading partition {}",
            group.group,
            generation.id,
            if starts.is_empty() {
                "none".to_string()
            } else {
                starts.join(", ")
            }
        );
        let runs = assigned.into_iter().map(|(partition, file, start)| {
            let fetching = Fetching::new(cluster, options, None, &watch);
            let store = Store {
                file,
                changelog: Some(changelog),
            };
            consume_partition(partition, store, start, fetching, &generation.stop)
        });
        futures::future::try_join_all(runs).await.map(drop)
    })
    .await
}

/// Checks the topic exists and makes the state folder, or checks it lets files be replaced
/// (a save that cannot happen would otherwise surface only after the first fetch); returns
/// what the cluster says of the topic.
async fn prepare(cluster: &Cluster, options: &ConsumeOptions) -> Result<TopicInfo, ConsumeError> {
    // READ first: without it nothing below could be used, and no file is touched.
    let info = cluster
        .require_allowed(&options.topic, Operation::Read)
        .await?;
    std::fs::create_dir_all(&options.state_dir).map_err(|source| ConsumeError::StateDir {
        path: options.state_dir.clone(),
        source,
    })?;
    checkpoint::check_writable(&options.state_dir)?;
    Ok(info)
}

/// How a consumer takes its partitions' locks.
enum Claim<'a> {
    /// A partition list: the lock now, or an error naming its holder.
    Now { owner: &'a str },
    /// A group's assignment: the previous owner may still be finishing its last save, so
    /// wait for it (up to `TAKEOVER_WAIT`), unless the partitions are taken away meanwhile.
    Waiting { owner: &'a str, stop: &'a Shutdown },
}

impl Claim<'_> {
    /// The partition's lock, or `None` if the generation ended while waiting for it.
    async fn take(&self, dir: &Path, partition: i32) -> Result<Option<PartitionLock>, LockError> {
        match self {
            Claim::Now { owner } => PartitionLock::acquire(dir, partition, owner).map(Some),
            Claim::Waiting { owner, stop } => {
                PartitionLock::acquire_waiting(dir, partition, owner, TAKEOVER_WAIT, stop).await
            }
        }
    }
}

/// The partitions ready to read: handle, file, and where each starts and ends now. Every
/// partition is locked and checked before anything is read or said, so a partition someone
/// else holds, a bad file or an unwritable folder stops the run with its one line and nothing
/// else. A group member whose generation ends while it waits for a lock gets no partitions.
async fn open_partitions(
    cluster: &Cluster,
    options: &ConsumeOptions,
    ids: &[i32],
    reset: bool,
    claim: Claim<'_>,
    changelog: Option<&Changelog>,
) -> Result<Vec<(Partition, OwnedFile, Start)>, ConsumeError> {
    // Locks first: a file is loaded only once nobody else can write it.
    let mut owned = Vec::new();
    for &id in ids {
        match claim.take(&options.state_dir, id).await? {
            Some(lock) => owned.push(OwnedFile::new(lock)),
            None => return Ok(Vec::new()),
        }
    }
    // Described once for all: the topic every file must count, and the id every read names.
    let info = cluster.require_described(&options.topic).await?;
    let topic = TopicIdentity::of(&options.topic, &info);
    // All partitions at once: a restore is a few round trips to the changelog's leaders.
    let topic = &topic;
    let opening = owned.into_iter().map(|file| async move {
        let partition = cluster
            .partition(&options.topic, file.partition())
            .await?
            .of_topic_id(info.id);
        let restored = match changelog {
            Some(changelog) => {
                Some(Restoring::read(cluster, changelog.topic(), topic, file.partition()).await?)
            }
            None => None,
        };
        let start = starting_point(&partition, &file, reset, topic, restored).await?;
        Ok::<_, ConsumeError>((partition, file, start))
    });
    // Every one to its end, so that of several bad files the lowest partition's is the one
    // said, whichever answer came first.
    let opened = futures::future::join_all(opening)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut leftovers = Vec::new();
    for (_, file, _) in &opened {
        for tmp in file.remove_leftover_tmps()? {
            leftovers.push(format!(
                "partition {}: {} is left over from an interrupted save; removed, the file itself is intact",
                file.partition(),
                tmp.display()
            ));
        }
    }
    if reset {
        for (_, file, _) in &opened {
            if let Some(backup) = file.set_aside()? {
                info!(
                    "partition {}: --reset-state, old file kept as {}",
                    file.partition(),
                    backup.display()
                );
            }
        }
    }
    for note in leftovers
        .iter()
        .chain(opened.iter().flat_map(|(_, _, start)| &start.notes))
    {
        info!("{note}");
    }
    Ok(opened)
}

/// Where a partition starts, where it ends now, and what to tell the user about it.
struct Start {
    checkpoint: Checkpoint,
    /// The topic the checkpoint counts (and `checkpoint.topic`).
    topic: TopicIdentity,
    end: i64,
    notes: Vec<String>,
}

/// A partition's newest snapshot in the changelog, as read on assignment.
struct Restoring {
    changelog: String,
    restored: changelog::Restored,
}

impl Restoring {
    async fn read(
        cluster: &Cluster,
        changelog: &str,
        topic: &TopicIdentity,
        partition: i32,
    ) -> Result<Self, KafkaError> {
        Ok(Self {
            changelog: changelog.into(),
            restored: changelog::newest(cluster, topic, partition).await?,
        })
    }
}

/// Where a partition starts: the newer of its file and its changelog snapshot (a group
/// member), or its file (a partition list), or the earliest offset. Fails, saying nothing
/// else, on a file that cannot be used (another topic's among them) or a folder where it
/// cannot be replaced.
async fn starting_point(
    partition: &Partition,
    file: &OwnedFile,
    reset: bool,
    topic: &TopicIdentity,
    restoring: Option<Restoring>,
) -> Result<Start, ConsumeError> {
    let id = partition.id();
    let mut notes = Vec::new();
    // With --reset-state the file is set aside, once every partition has passed its checks.
    let loaded = if reset {
        None
    } else {
        match file.load() {
            Ok(loaded) => loaded,
            // A cache of what the changelog holds, saved without fsync: a power cut may have
            // torn it. It is set aside, never overwritten, and the changelog's snapshot is used.
            Err(CheckpointError::Corrupt { reason, .. }) if restoring.is_some() => {
                let aside = file.set_aside()?;
                notes.push(format!(
                    "partition {id}: {} is not a valid partition file ({reason}); set aside as {}, restoring from the changelog",
                    file.path().display(),
                    aside.map_or_else(|| "nothing".into(), |p| p.display().to_string())
                ));
                None
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Which topic first: a recreated topic's offsets may well lie beyond the file's, but the
    // topic is what the user has to decide about.
    let mut adopted = false;
    let loaded = match loaded {
        Some(c) => match &c.topic {
            Some(counted) if counted != topic => {
                return Err(ConsumeError::OtherTopic {
                    path: file.path(),
                    partition: id,
                    file: Box::new(counted.clone()),
                    topic: Box::new(topic.clone()),
                });
            }
            Some(_) => Some(c),
            // A file without a topic file (an earlier version's): nothing says it is not this
            // topic's. Taking it as this topic's is what every earlier version did with it.
            None => {
                adopted = true;
                Some(c.of_topic(topic.clone()))
            }
        },
        None => None,
    };
    let (earliest, end) = partition.offsets().await?;
    let mut from_changelog = None;
    if let Some(Restoring {
        changelog,
        restored,
    }) = restoring
    {
        if restored.other_topic > 0 {
            notes.push(format!(
                "partition {id}: {} snapshot(s) in {changelog} count another topic than {topic} (this name before it was recreated): not restored",
                restored.other_topic
            ));
        }
        match restored.checkpoint {
            // Where the broker gives no topic id, a recreated topic with as many partitions
            // looks the same: an offset beyond the end is what tells.
            Some(c) if c.offset > end => notes.push(format!(
                "partition {id}: the snapshot in {changelog} at offset {} lies beyond the partition's end {end}, so it counts this name's topic before it was recreated: not restored",
                c.offset
            )),
            Some(c) => from_changelog = Some((c, changelog)),
            None => {}
        }
    }
    // The higher offset wins: both are correct states, the higher one saves reading.
    let local_offset = loaded.as_ref().map(|c| c.offset);
    let (loaded, restored_from) = match (loaded, from_changelog) {
        (Some(local), Some((c, changelog))) if c.offset > local.offset => {
            (Some(c), Some(changelog))
        }
        (None, Some((c, changelog))) => (Some(c), Some(changelog)),
        (local, _) => (local, None),
    };
    let checkpoint = match loaded {
        None => {
            notes.push(format!(
                "partition {id}: no state file, starting at the earliest offset {earliest}"
            ));
            Checkpoint::empty(id, earliest).of_topic(topic.clone())
        }
        Some(c) if c.offset > end => {
            return Err(ConsumeError::BeyondEnd {
                path: file.path(),
                partition: id,
                offset: c.offset,
                end,
            });
        }
        Some(mut c) if c.offset < earliest => {
            notes.push(format!(
                "partition {id}: records {}..{earliest} were deleted by the broker before they were read; continuing at {earliest}",
                c.offset
            ));
            c.offset = earliest;
            c
        }
        Some(c) => {
            let from = match &restored_from {
                Some(changelog) => format!(
                    "the changelog {changelog} (local file: {})",
                    local_offset.map_or_else(|| "none".into(), |o| format!("offset {o}"))
                ),
                None => file.path().display().to_string(),
            };
            let adoption = if adopted && restored_from.is_none() {
                format!(
                    ", which does not say which topic it counts (an earlier version wrote it): taken as {topic}'s, as its next save will say"
                )
            } else {
                String::new()
            };
            // Tests read "resuming at offset N from".
            notes.push(format!(
                "partition {id}: resuming at offset {} from {from}{adoption}",
                c.offset
            ));
            c
        }
    };
    Ok(Start {
        checkpoint,
        topic: topic.clone(),
        end,
        notes,
    })
}

/// How one partition fetches: batch size and wait, where to stop, whom to tell about outages,
/// and where to look the topic up again.
struct Fetching<'a> {
    bytes: i32,
    wait: Duration,
    target: Option<i64>,
    watch: &'a OutageWatch,
    cluster: &'a Cluster,
}

impl<'a> Fetching<'a> {
    fn new(
        cluster: &'a Cluster,
        options: &ConsumeOptions,
        target: Option<i64>,
        watch: &'a OutageWatch,
    ) -> Self {
        Self {
            bytes: options.fetch_bytes,
            wait: options
                .fetch_wait
                .unwrap_or_else(|| cluster.flavor().default_fetch_wait()),
            target,
            watch,
            cluster,
        }
    }
}

/// The topic of a partition's name as the cluster has it now, against the one its file counts.
enum TopicNow {
    Same,
    /// None of that name: deleted, and maybe about to be created again.
    Gone,
    /// Another topic of the same name.
    Replaced(TopicIdentity),
}

impl Fetching<'_> {
    async fn topic_now(&self, counted: &TopicIdentity) -> Result<TopicNow, KafkaError> {
        Ok(match self.cluster.describe(&counted.name).await? {
            None => TopicNow::Gone,
            Some(info) => {
                let now = TopicIdentity::of(&counted.name, &info);
                if now == *counted {
                    TopicNow::Same
                } else {
                    TopicNow::Replaced(now)
                }
            }
        })
    }
}

/// Where a partition's checkpoints go: its file, and for a group member the changelog first.
struct Store<'a> {
    file: OwnedFile,
    changelog: Option<&'a Changelog>,
}

impl Store<'_> {
    fn file(file: OwnedFile) -> Self {
        Self {
            file,
            changelog: None,
        }
    }
}

async fn consume_partition(
    partition: Partition,
    store: Store<'_>,
    start: Start,
    fetching: Fetching<'_>,
    shutdown: &Shutdown,
) -> Result<PartitionSummary, ConsumeError> {
    let Start {
        mut checkpoint,
        topic: counted,
        ..
    } = start;
    let id = partition.id();
    let mut summary = PartitionSummary {
        partition: id,
        offset: checkpoint.offset,
        ..Default::default()
    };
    let target = fetching.target;
    let mut backoff = Backoff::default();
    let mut failures = 0;
    let mut last_progress = Instant::now();
    let file = &store.file;
    let replaced = |now: TopicIdentity, offset: i64| ConsumeError::TopicReplaced {
        path: file.path(),
        partition: id,
        offset,
        was: Box::new(counted.clone()),
        now: Box::new(now),
    };
    let no_topic = || KafkaError::NoTopic {
        topic: counted.name.clone(),
        brokers: fetching.cluster.brokers().into(),
    };

    loop {
        if target.is_some_and(|t| checkpoint.offset >= t) || shutdown.is_requested() {
            break;
        }
        let fetched = tokio::select! {
            fetched = partition.fetch_watched(
                checkpoint.offset,
                fetching.bytes,
                fetching.wait,
                fetching.watch,
            ) => fetched,
            _ = shutdown.requested() => break,
        };
        // What went wrong, if anything, decides between counting the records and retrying.
        let fetched = match fetched {
            // Nothing new (or the broker vouches for the topic): nothing to ask.
            Ok(fetched)
                if fetched.by_topic_id
                    || (fetched.records.is_empty() && fetched.next_offset <= checkpoint.offset) =>
            {
                Ok(fetched)
            }
            // Read by name, the records are the counted topic's only if the topic of that name
            // is still that one: asked after the fetch, an unchanged id means it was so during
            // it. Until then they are not counted, and are read again.
            Ok(fetched) => match fetching.topic_now(&counted).await {
                Ok(TopicNow::Same) => Ok(fetched),
                Ok(TopicNow::Replaced(now)) => return Err(replaced(now, checkpoint.offset)),
                Ok(TopicNow::Gone) => Err(no_topic()),
                Err(e) => Err(e),
            },
            // Any failed read may be the topic going away: a recreated one is not read on.
            Err(e) => match fetching.topic_now(&counted).await {
                Ok(TopicNow::Replaced(now)) => return Err(replaced(now, checkpoint.offset)),
                Ok(TopicNow::Gone) => Err(no_topic()),
                Ok(TopicNow::Same) | Err(_) => Err(e),
            },
        };
        let fetched = match fetched {
            Ok(fetched) => {
                failures = 0;
                backoff.reset();
                fetched
            }
            Err(e) if is_offset_out_of_range(&e) => {
                let (earliest, end) = partition.offsets().await?;
                if checkpoint.offset > end {
                    return Err(ConsumeError::BeyondEnd {
                        path: file.path(),
                        partition: id,
                        offset: checkpoint.offset,
                        end,
                    });
                }
                if checkpoint.offset < earliest {
                    warn!(
                        "partition {id}: records {}..{earliest} were deleted by the broker before they were read; continuing at {earliest}",
                        checkpoint.offset
                    );
                    checkpoint.offset = earliest;
                    continue;
                }
                // Within what the partition holds: a leader that has just taken over and has
                // not caught up yet. Ask again after a while.
                let delay = backoff.next_delay();
                debug!(
                    "partition {id}: offset {} out of range on the leader ({earliest}..{end} now); retrying in {delay:.1?}",
                    checkpoint.offset
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.requested() => break,
                }
            }
            // No retry changes what the cluster allows us.
            Err(e) if e.denies_access() => return Err(e.into()),
            Err(source) => {
                failures += 1;
                if target.is_some() && failures >= CATCH_UP_RETRIES {
                    return Err(ConsumeError::GaveUp {
                        partition: id,
                        offset: checkpoint.offset,
                        source,
                    });
                }
                let delay = backoff.next_delay();
                fetching
                    .watch
                    .lost(id, &format!("at offset {}: {source}", checkpoint.offset));
                debug!("partition {id}: {source}; retrying in {delay:.1?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.requested() => break,
                }
            }
        };
        // A fetch that covered only what is not ours to count (a transaction marker, records
        // of an aborted transaction) still moves the offset on.
        if fetched.records.is_empty() && fetched.next_offset <= checkpoint.offset {
            continue;
        }

        for r in &fetched.records {
            match checkpoint.stats.apply(r.key.as_deref(), r.value.as_deref()) {
                Outcome::Counted => summary.counted += 1,
                Outcome::Duplicate => summary.duplicates += 1,
                Outcome::Malformed(reason) => {
                    summary.skipped += 1;
                    if summary.skipped <= SKIP_WARNINGS {
                        warn!("partition {id} offset {}: skipped, {reason}", r.offset);
                    } else if summary.skipped == SKIP_WARNINGS + 1 {
                        warn!(
                            "partition {id}: more records skipped; counting them without a warning each"
                        );
                    }
                }
            }
            checkpoint.offset = r.offset + 1;
        }
        checkpoint.offset = checkpoint.offset.max(fetched.next_offset);
        // Statistics and offset leave memory together: in one changelog record (a group
        // member), then in one atomic file replace.
        checkpoint = save(&store, &counted, checkpoint).await?;
        summary.offset = checkpoint.offset;
        if let Some(newest) = fetched.records.iter().map(|r| r.timestamp_ms).max() {
            // `make bench` reads these lines for the end-to-end latency.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let latency = (now - newest * 1000) as f64 / 1000.0;
            debug!(
                "partition {id}: offset {} on disk {latency:.3} ms after its newest record was sent",
                checkpoint.offset
            );
        }

        if last_progress.elapsed() >= PROGRESS_EVERY {
            let behind = fetched.high_watermark - checkpoint.offset;
            info!(
                "partition {id}: offset {}, {behind} behind the end, {} counted so far",
                checkpoint.offset, summary.counted
            );
            last_progress = Instant::now();
        }
    }
    info!(
        "partition {id}: stopped at offset {} ({} counted, {} duplicates skipped, {} not reports)",
        summary.offset, summary.counted, summary.duplicates, summary.skipped
    );
    Ok(summary)
}

/// Saves a checkpoint: to the changelog first, if there is one, and once it is acknowledged
/// there to the file, off the async threads (fsync blocks, and other partitions keep
/// fetching meanwhile). The blocking task holds a clone of the file, so the lock outlives the
/// save even if this future is dropped.
async fn save(
    store: &Store<'_>,
    topic: &TopicIdentity,
    checkpoint: Checkpoint,
) -> Result<Checkpoint, ConsumeError> {
    let durability = match store.changelog {
        // Kafka holds the truth once acknowledged (acks=all); the file is a cache, which a
        // crash of this process leaves whole (old or new) and a power cut may leave older or
        // torn, both of which the next start copes with (`starting_point`).
        Some(changelog) => {
            changelog.write(&checkpoint, topic).await?;
            Durability::Cached
        }
        None => Durability::Synced,
    };
    let file = store.file.clone();
    let saved = tokio::task::spawn_blocking(move || {
        file.save_with(&checkpoint, durability).map(|()| checkpoint)
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
    Ok(saved)
}
