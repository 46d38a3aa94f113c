//! `<topic>.stats`: every partition's checkpoint in Kafka, so that state follows its partition.
//!
//! A group member (`weather consume --group`) writes each partition's checkpoint, after every
//! batch, to the compacted changelog topic `<topic>.stats`: source partition p to changelog
//! partition p (chosen explicitly, not by murmur2), key the partition number as text, value an
//! envelope holding the partition file's JSON and the topic it counts:
//! `{"format":1,"topic":"temperatures","topic_id":"…","checkpoint":{"partition":0,…}}`.
//! The write goes through the idempotent producer with acks=all and is acknowledged before the
//! local file is replaced. A member given a partition restores the newest snapshot there is,
//! the changelog's or its own file's, whichever has the higher offset.
//!
//! Why any snapshot may be restored: the statistics at offset X are a pure function of the
//! partition's records before X (`stats`: the dedup rule makes order within them irrelevant).
//! So every snapshot ever written, by whichever member, even one that lost the partition and
//! does not know it yet, is a correct state at its own offset, and reading on from it ends
//! in the same state as reading on from any other. Taking the highest offset only saves
//! reading. What breaks the function is a snapshot of other records: another topic, or this
//! name's topic before it was recreated. Those are fenced by the topic identity in the
//! envelope (Kafka's topic id) and, where a broker gives no id, by an offset beyond the
//! partition's end.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, info};

use crate::checkpoint::{Checkpoint, TopicIdentity, TopicInstance, Unusable};
use crate::kafka::idempotent::{BatchOptions, IdempotentProducer, Outgoing, SendError};
use crate::kafka::metadata::TopicInfo;
use crate::kafka::{Cluster, KafkaError, Partition, admin};

/// The envelope's format.
pub const FORMAT: u32 = 1;

/// The changelog's own configs besides `min.insync.replicas`. One key per partition means the
/// log holds one live record each; rolling a segment every ten seconds (only when one is
/// written to) and cleaning at 1 % dirt lets the cleaner keep it near that, where Kafka's
/// defaults (a week, 50 %) would keep every snapshot of a busy week. Restoring never
/// depends on it: it reads from the end.
const CONFIGS: [(&str, &str); 3] = [
    ("cleanup.policy", "compact"),
    ("segment.ms", "10000"),
    ("min.cleanable.dirty.ratio", "0.01"),
];
/// Records read back from a changelog partition's end at first; each further window is four
/// times larger. A partition's own snapshots are the only ones in it, so the newest is among
/// the last few: a zombie adds one or two late ones at most.
const FIRST_WINDOW: i64 = 8;

/// The changelog topic of `source`.
pub fn topic_for(source: &str) -> String {
    format!("{source}.stats")
}

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot start the changelog producer for {topic}: {source}")]
    Start { topic: String, source: SendError },
    #[error(
        "partition {partition}: the snapshot at offset {offset} was not acknowledged by {topic}, so the local file was not replaced: {source}"
    )]
    Write {
        topic: String,
        partition: i32,
        offset: i64,
        source: Arc<SendError>,
    },
    #[error(
        "changelog {topic} has {has} partitions, fewer than the {needs} of {source_topic}; give it more (kafka-topics --alter --partitions {needs}) or delete it so that the next group member creates it again"
    )]
    TooFewPartitions {
        topic: String,
        has: i32,
        needs: i32,
        source_topic: String,
    },
    #[error(
        "topic {topic:?} does not exist on {brokers}, so neither does its changelog {changelog}"
    )]
    NoTopic {
        topic: String,
        changelog: String,
        brokers: String,
    },
}

/// The envelope as written.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_partitions: Option<i32>,
    checkpoint: &'a Checkpoint,
}

/// The envelope as read: the checkpoint is parsed by `Checkpoint::from_json`, with every
/// check a partition file gets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn {
    format: u32,
    topic: String,
    topic_id: Option<String>,
    topic_partitions: Option<i32>,
    checkpoint: Box<RawValue>,
}

/// One snapshot's value: `checkpoint` of `topic`.
pub fn encode(checkpoint: &Checkpoint, topic: &TopicIdentity) -> String {
    let (topic_id, topic_partitions) = match &topic.instance {
        TopicInstance::Id(id) => (Some(id.as_str()), None),
        TopicInstance::Partitions(n) => (None, Some(*n)),
    };
    let envelope = EnvelopeOut {
        format: FORMAT,
        topic: &topic.name,
        topic_id,
        topic_partitions,
        checkpoint,
    };
    // Plain numbers and strings into a String cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// A snapshot read back: its checkpoint, which carries the topic it counts.
pub fn decode(value: &[u8]) -> Result<Checkpoint, String> {
    let envelope: EnvelopeIn = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    if envelope.format != FORMAT {
        return Err(format!(
            "format {} is not one this version reads (format {FORMAT})",
            envelope.format
        ));
    }
    let instance = match (envelope.topic_id, envelope.topic_partitions) {
        (Some(id), None) if !id.is_empty() => TopicInstance::Id(id),
        (None, Some(n)) if n > 0 => TopicInstance::Partitions(n),
        _ => return Err("it needs either a topic_id or a topic_partitions above 0".into()),
    };
    let topic = TopicIdentity {
        name: envelope.topic,
        instance,
    };
    let checkpoint = Checkpoint::from_json(envelope.checkpoint.get()).map_err(|e| match e {
        Unusable::Invalid(reason) => reason,
        other => other.to_string(),
    })?;
    let checkpoint = checkpoint.of_topic(topic);
    checkpoint.check()?;
    Ok(checkpoint)
}

/// The replication factor of `info`'s topic: the most replicas any of its partitions has.
fn replication_factor(info: &TopicInfo) -> i16 {
    let replicas = info.partitions.values().map(|p| p.replicas.len());
    i16::try_from(replicas.max().unwrap_or(1).max(1)).unwrap_or(i16::MAX)
}

/// Creates `source`'s changelog unless it exists: as many partitions as `source`, its
/// replication factor and the `min.insync.replicas` that goes with it, compacted. Returns the
/// changelog's partition count.
pub async fn ensure(
    cluster: &Cluster,
    source: &str,
    info: &TopicInfo,
) -> Result<i32, ChangelogError> {
    let topic = topic_for(source);
    let needs = info.partitions.len() as i32;
    let count = match cluster.partition_count(&topic).await? {
        Some(count) => count,
        None => {
            let replicas = replication_factor(info);
            let min_insync = admin::min_insync_replicas(replicas).to_string();
            let mut configs: Vec<(&str, String)> = vec![("min.insync.replicas", min_insync)];
            configs.extend(CONFIGS.iter().map(|(k, v)| (*k, v.to_string())));
            let created =
                admin::create_topic(cluster.view(), &topic, needs, replicas, &configs).await?;
            if created == admin::Created::Created {
                info!(
                    "created changelog {topic} ({needs} partitions, replication factor {replicas}, compacted)"
                );
            }
            admin::wait_until_listed(cluster.view(), &topic)
                .await?
                .map(|t| t.partitions.len() as i32)
                .ok_or_else(|| KafkaError::NoTopic {
                    topic: topic.clone(),
                    brokers: cluster.brokers().into(),
                })?
        }
    };
    if count < needs {
        return Err(ChangelogError::TooFewPartitions {
            topic,
            has: count,
            needs,
            source_topic: source.into(),
        });
    }
    Ok(count)
}

/// The writing side: one idempotent producer on the changelog for the member's whole life.
#[derive(Debug)]
pub struct Changelog {
    topic: String,
    producer: IdempotentProducer,
    /// Record ids, increasing across all partitions (so within each): what
    /// `IdempotentProducer::acknowledged` waits for.
    last_id: AtomicI64,
}

impl Changelog {
    /// Creates the changelog if needed and starts its producer.
    pub async fn open(
        cluster: &Cluster,
        source: &str,
        info: &TopicInfo,
    ) -> Result<Self, ChangelogError> {
        let partitions = ensure(cluster, source, info).await?;
        let topic = topic_for(source);
        // Small batches sent at once: one snapshot per partition is in flight at a time.
        let options = BatchOptions {
            linger: std::time::Duration::ZERO,
            ..BatchOptions::default()
        };
        let producer = IdempotentProducer::start(cluster.view(), &topic, partitions, options)
            .await
            .map_err(|source| ChangelogError::Start {
                topic: topic.clone(),
                source,
            })?;
        Ok(Self {
            topic,
            producer,
            last_id: AtomicI64::new(0),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `checkpoint` (of `topic`) to its partition and waits until all in-sync replicas
    /// have it.
    pub async fn write(
        &self,
        checkpoint: &Checkpoint,
        topic: &TopicIdentity,
    ) -> Result<(), ChangelogError> {
        let partition = checkpoint.partition;
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let record = Outgoing::now(
            Bytes::from(partition.to_string()),
            Bytes::from(encode(checkpoint, topic)),
            id,
        );
        let failed = |source| ChangelogError::Write {
            topic: self.topic.clone(),
            partition,
            offset: checkpoint.offset,
            source,
        };
        if let Err(e) = self.producer.send(partition, record).await {
            // A stopped sender's own reason is what the user needs, not "stopped".
            return Err(failed(
                match self.producer.acknowledged(partition, id).await {
                    Err(reason) => reason,
                    Ok(()) => Arc::new(e),
                },
            ));
        }
        self.producer
            .acknowledged(partition, id)
            .await
            .map_err(failed)
    }
}

/// What a changelog partition holds for one source partition.
#[derive(Debug, Default, PartialEq)]
pub struct Restored {
    /// The snapshot of `topic` with the highest offset among those read.
    pub checkpoint: Option<Checkpoint>,
    /// Snapshots read that count another topic (or this name's topic before it was recreated).
    pub other_topic: u64,
}

/// The newest snapshot of `topic`'s partition `partition` in its changelog, read back from the
/// changelog partition's end a window at a time until one is found, taking the highest offset
/// among every snapshot read: a zombie's late, lower snapshot after the newest does not hide it.
pub async fn newest(
    cluster: &Cluster,
    topic: &TopicIdentity,
    partition: i32,
) -> Result<Restored, KafkaError> {
    let changelog = topic_for(&topic.name);
    let count = cluster.partition_count(&changelog).await?;
    if count.is_none_or(|n| n <= partition) {
        return Ok(Restored::default());
    }
    newest_in(
        &cluster.partition(&changelog, partition).await?,
        topic,
        partition,
    )
    .await
}

/// `newest`, read from `reader`, the changelog partition that holds `partition`'s snapshots.
async fn newest_in(
    reader: &Partition,
    topic: &TopicIdentity,
    partition: i32,
) -> Result<Restored, KafkaError> {
    let changelog = topic_for(&topic.name);
    let mut restored = Restored::default();
    let (earliest, end) = reader.offsets().await?;
    let mut from = end;
    let mut window = FIRST_WINDOW;
    let key = partition.to_string();
    while from > earliest && restored.checkpoint.is_none() {
        let to = from;
        from = (to - window).max(earliest);
        window *= 4;
        reader
            .scan(from, to, |record| {
                let snapshot = record.value.as_deref().map(decode);
                let key_ok = record.key.as_deref() == Some(key.as_bytes());
                match snapshot {
                    Some(Ok(c)) if key_ok && c.partition == partition => {
                        if c.topic.as_ref() != Some(topic) {
                            restored.other_topic += 1;
                        } else if restored
                            .checkpoint
                            .as_ref()
                            .is_none_or(|best| best.offset <= c.offset)
                        {
                            // Of equal offsets, the one written last (read last).
                            restored.checkpoint = Some(c);
                        }
                    }
                    // A compacted-away key's tombstone, or something not ours.
                    other => {
                        debug!(
                            "{changelog} partition {partition} offset {}: not a snapshot of partition {partition} ({:?})",
                            record.offset,
                            other.map(|r| r.err())
                        );
                    }
                }
            })
            .await?;
    }
    Ok(restored)
}

/// The newest snapshot of every partition of `source` in its changelog: the merged state of a
/// group's members wherever they run. Partitions without a snapshot are left out.
pub async fn read_all(
    cluster: &Cluster,
    source: &str,
) -> Result<(TopicIdentity, Vec<Checkpoint>), ChangelogError> {
    read_all_with(cluster, source, &mut Vec::new()).await
}

/// `read_all` through `readers`, the changelog's partitions as the last call left them: a
/// caller that reads again and again (the dashboard, every second) keeps its connections.
pub async fn read_all_with(
    cluster: &Cluster,
    source: &str,
    readers: &mut Vec<Partition>,
) -> Result<(TopicIdentity, Vec<Checkpoint>), ChangelogError> {
    let no_topic = || ChangelogError::NoTopic {
        topic: source.into(),
        changelog: topic_for(source),
        brokers: cluster.brokers().into(),
    };
    let info = cluster.describe(source).await?.ok_or_else(no_topic)?;
    let topic = TopicIdentity::of(source, &info);
    let changelog = topic_for(source);
    // Each snapshot lies in the changelog partition of its source partition's number.
    let kept = cluster.partition_count(&changelog).await?.unwrap_or(0);
    let wanted = (info.partitions.len() as i32).min(kept);
    if readers.len() != wanted as usize {
        readers.clear();
        for partition in 0..wanted {
            readers.push(cluster.partition(&changelog, partition).await?);
        }
    }
    let mut all = Vec::new();
    for (partition, reader) in (0..).zip(readers.iter()) {
        if let Some(checkpoint) = newest_in(reader, &topic, partition).await?.checkpoint {
            all.push(checkpoint);
        }
    }
    Ok((topic, all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DayReading;
    use time::macros::date;

    fn topic() -> TopicIdentity {
        TopicIdentity {
            name: "temperatures".into(),
            instance: TopicInstance::Id("ydkhtVCbR0u-DIR8A8fJhw".into()),
        }
    }

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::empty(2, 0);
        for (i, day) in [date!(2000 - 01 - 03), date!(2000 - 01 - 01)]
            .iter()
            .enumerate()
        {
            c.stats.add(&DayReading {
                date: *day,
                degrees: 20.5 + i as f64,
            });
        }
        c.offset = 2;
        c.of_topic(topic())
    }

    #[test]
    fn a_snapshot_reads_back_as_the_checkpoint_it_was() {
        let c = sample();
        let value = encode(&c, &topic());
        assert!(
            value.starts_with(r#"{"format":1,"topic":"temperatures","topic_id":"ydkhtVCbR0u-DIR8A8fJhw","checkpoint":{"partition":2,"offset":2,"January":"#),
            "{value}"
        );
        assert_eq!(decode(value.as_bytes()), Ok(c));
    }

    #[test]
    fn a_topic_without_an_id_is_named_by_its_partition_count() {
        let topic = TopicIdentity {
            name: "t".into(),
            instance: TopicInstance::Partitions(4),
        };
        let c = sample().of_topic(topic.clone());
        let value = encode(&c, &topic);
        assert!(value.contains(r#""topic_partitions":4"#), "{value}");
        assert_eq!(decode(value.as_bytes()).map(|c| c.topic), Ok(Some(topic)));
    }

    #[test]
    fn snapshots_that_are_not_checkpoints_are_refused() {
        let good = encode(&sample(), &topic());
        for bad in [
            good.replace(r#""format":1"#, r#""format":2"#),
            good.replace(r#","topic_id":"ydkhtVCbR0u-DIR8A8fJhw""#, ""),
            good.replace(r#""offset":2"#, r#""offset":-2"#),
            good.replace(r#""count":2"#, r#""count":0"#),
            good.replace(r#""format":1"#, r#""format":1,"extra":0"#),
            "{}".into(),
            "not json".into(),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_changelog_is_named_after_its_topic() {
        assert_eq!(topic_for("temperatures"), "temperatures.stats");
    }
}
