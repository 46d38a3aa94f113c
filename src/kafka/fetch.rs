//! Reading one partition on the wire: Fetch and ListOffsets to its leader, found through the
//! cluster view.
//!
//! rskafka's partition reads cannot do this correctly for records other producers write, so
//! this is where reading lives: it drops control batches (transaction markers) without saying
//! where the next offset is, so a marker alone at the consumer's offset made it fetch the same
//! offset forever; it ignores the aborted-transactions list, so records of aborted
//! transactions were counted; and after a leader moves it can keep asking a stale cached
//! Metadata answer until its retry deadline. Here:
//! - reads are READ_COMMITTED: nothing past the last stable offset, and batches of aborted
//!   transactions are skipped, the way Kafka's own consumer does it;
//! - control batches are stepped over, and `Fetched::next_offset` says where the next read
//!   starts even when a fetch held no records for us;
//! - compressed batches (gzip, snappy, lz4, zstd) are decoded by kafka-protocol;
//! - a batch cut short at the end of a response (the broker fills up to the size asked) is
//!   left for the next fetch;
//! - a leader that moves or goes away is looked up again and the request retried for up to
//!   `RETRY_DEADLINE`, so a short failover shows up as a slow fetch rather than an error.
//! - a partition handle can be tied to one topic id (`Partition::of_topic_id`): its fetches
//!   then name the topic by id where the broker can (Fetch v13 and later), so a topic deleted
//!   and recreated under the same name is refused by the broker instead of read.

use std::collections::{BTreeSet, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::Mutex;
use tracing::debug;
use uuid::Uuid;

use super::KafkaError;
use super::backoff::Backoff;
use super::metadata::ClusterView;
use super::outage::OutageWatch;
use super::security::{Operation, Resource, denied};
use super::wire::Connection;

/// Version 4 is the first with isolation levels and aborted transactions (and Apache Kafka
/// 4's floor); 13 and later name topics by id only.
const FETCH_VERSIONS: RangeInclusive<i16> = 4..=12;
/// Fetch by topic id (KIP-516): Apache Kafka since 3.1. Tansu 0.6.0 is held below version 12
/// (`quirks`), so it is always read by name.
const FETCH_BY_ID_VERSIONS: RangeInclusive<i16> = 13..=17;
/// Version 2 is the first with an isolation level.
const LIST_OFFSETS_VERSIONS: RangeInclusive<i16> = 2..=7;
const READ_COMMITTED: i8 = 1;
/// The replica id of a request from a client, not from a broker.
const CONSUMER_REPLICA_ID: i32 = -1;
/// How long one read keeps retrying a leader that moved or went away before the caller
/// sees the error.
const RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a fetch may go unanswered beyond its own wait before the user is told.
const SLOW_FETCH: Duration = Duration::from_secs(3);
/// Largest read of one `Partition::scan` step.
const SCAN_BYTES: i64 = 192 << 10;
/// A record batch's fixed header, up to and including its record count.
const BATCH_HEADER: usize = 61;

/// One record as read: where it is, and what the producer wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// When the producer made it (or the broker appended it), in ms since the epoch.
    pub timestamp_ms: i64,
}

/// Records from one fetch, and the partition's end at that moment.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Committed data records, in offset order, none before the offset asked for.
    pub records: Vec<FetchedRecord>,
    /// Where the next read starts: past every batch this fetch covered, counted or not
    /// (transaction markers, aborted records). Equal to the offset asked for when the fetch
    /// covered nothing.
    pub next_offset: i64,
    pub high_watermark: i64,
    /// The end a READ_COMMITTED reader may read to now: the high watermark, or earlier while
    /// a transaction is open.
    pub last_stable_offset: i64,
    /// True when the fetch named the topic by its id, so the broker vouches that the records
    /// are that topic's. False when it went by name (no id to go by, or a broker that cannot):
    /// then a topic recreated under the name since could have answered.
    pub by_topic_id: bool,
}

/// One partition of a topic, read through its leader.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    id: i32,
    /// The one topic of that name this handle reads, if tied to one (`of_topic_id`).
    topic_id: Option<[u8; 16]>,
    view: Arc<ClusterView>,
    leader: Mutex<Option<Arc<Connection>>>,
}

impl Partition {
    pub(super) fn new(view: Arc<ClusterView>, topic: &str, id: i32) -> Self {
        Self {
            topic: topic.into(),
            id,
            topic_id: None,
            view,
            leader: Mutex::new(None),
        }
    }

    /// Ties the handle to the topic with this id (`TopicInfo::id`; all zeros: no tie). Its
    /// fetches go by id where the broker can, and a fetch error that says the topic is not
    /// there (UNKNOWN_TOPIC_ID, INCONSISTENT_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION) comes back
    /// at once instead of being retried, since by the time it clears, a new topic of the same
    /// name may be the one answering: the caller looks at the topic itself.
    pub fn of_topic_id(self, topic_id: [u8; 16]) -> Self {
        Self {
            topic_id: (topic_id != [0; 16]).then_some(topic_id),
            ..self
        }
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The first offset still kept and the next offset a READ_COMMITTED reader can reach (the
    /// end of the partition, or the start of a transaction still open).
    pub async fn offsets(&self) -> Result<(i64, i64), KafkaError> {
        let earliest = self.offset_at(-2).await?;
        let latest = self.offset_at(-1).await?;
        Ok((earliest, latest))
    }

    /// ListOffsets for `timestamp` (-2 earliest, -1 latest).
    async fn offset_at(&self, timestamp: i64) -> Result<i64, KafkaError> {
        let action = format!("reading offsets of {} partition {}", self.topic, self.id);
        let request = list_offsets_request(&self.topic, self.id, timestamp);
        self.on_leader(&action, Reads::Offsets, |leader| {
            let request = request.clone();
            let action = action.clone();
            async move {
                let response = leader
                    .request(request, LIST_OFFSETS_VERSIONS)
                    .await
                    .map_err(|e| KafkaError::wire(action.clone(), e))?;
                let answer = response
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == self.topic)
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.partition_index == self.id)
                    .ok_or_else(|| KafkaError::Refused {
                        action: action.clone(),
                        error: ResponseError::UnknownTopicOrPartition,
                    })?;
                match answer.error_code.err() {
                    None => Ok(answer.offset),
                    Some(error) => Err(self.refused(action, error, Operation::Describe)),
                }
            }
        })
        .await
    }

    /// Records from `offset` on, up to about `max_bytes` (at least one batch whatever its
    /// size), waiting up to `max_wait` for any to arrive.
    pub async fn fetch(
        &self,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched, KafkaError> {
        let action = format!(
            "fetching {} partition {} at offset {offset}",
            self.topic, self.id
        );
        let wait = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let partition = FetchPartition::default()
            .with_partition(self.id)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(max_bytes);
        let request = FetchRequest::default()
            .with_max_wait_ms(wait)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(READ_COMMITTED);
        self.on_leader(&action, Reads::Records, |leader| {
            let action = action.clone();
            let flavor = leader.flavor();
            // By id where this leader can; by name otherwise.
            let by_id = self.topic_id.filter(|_| {
                let versions = flavor.fetch_versions(FETCH_BY_ID_VERSIONS);
                leader.version::<FetchRequest>(versions).is_ok()
            });
            let (topic, versions) = match by_id {
                Some(id) => (
                    FetchTopic::default().with_topic_id(Uuid::from_bytes(id)),
                    flavor.fetch_versions(FETCH_BY_ID_VERSIONS),
                ),
                None => (
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(self.topic.clone()))),
                    flavor.fetch_versions(FETCH_VERSIONS),
                ),
            };
            let request = request
                .clone()
                .with_topics(vec![topic.with_partitions(vec![partition.clone()])]);
            async move {
                // The broker may rightly hold a fetch for its whole wait.
                let response = leader
                    .request_within(request, versions, max_wait + super::wire::REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| KafkaError::wire(action.clone(), e))?;
                if let Some(error) = response.error_code.err() {
                    return Err(self.refused(action, error, Operation::Read));
                }
                let data = response
                    .responses
                    .into_iter()
                    .filter(|t| match by_id {
                        Some(id) => t.topic_id.as_bytes() == &id,
                        None => t.topic.0.as_str() == self.topic,
                    })
                    .flat_map(|t| t.partitions)
                    .find(|p| p.partition_index == self.id)
                    .ok_or_else(|| KafkaError::Refused {
                        action: action.clone(),
                        error: ResponseError::UnknownTopicOrPartition,
                    })?;
                if let Some(error) = data.error_code.err() {
                    return Err(self.refused(action, error, Operation::Read));
                }
                let aborted = data
                    .aborted_transactions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| (a.first_offset, a.producer_id.0))
                    .collect();
                let read = read_batches(data.records.unwrap_or_default(), offset, aborted)
                    .map_err(|reason| KafkaError::Corrupt {
                        topic: self.topic.clone(),
                        partition: self.id,
                        offset,
                        reason,
                    })?;
                Ok(Fetched {
                    records: read.records,
                    next_offset: read.next_offset,
                    high_watermark: data.high_watermark,
                    last_stable_offset: if data.last_stable_offset >= 0 {
                        data.last_stable_offset
                    } else {
                        data.high_watermark
                    },
                    by_topic_id: by_id.is_some(),
                })
            }
        })
        .await
    }

    /// Like `fetch`, telling `watch` when the broker is slow to answer, and when it answers
    /// again which broker leads the partition now.
    pub async fn fetch_watched(
        &self,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        watch: &OutageWatch,
    ) -> Result<Fetched, KafkaError> {
        let fetch = self.fetch(offset, max_bytes, max_wait);
        tokio::pin!(fetch);
        let fetched = tokio::select! {
            fetched = &mut fetch => fetched,
            _ = tokio::time::sleep(max_wait + SLOW_FETCH) => {
                watch.lost(self.id, &format!("no answer for {SLOW_FETCH:?} at offset {offset}"));
                fetch.await
            }
        };
        if fetched.is_ok() && watch.is_down(self.id) {
            let leader = self
                .leader
                .lock()
                .await
                .as_ref()
                .map(|c| c.address().to_string());
            watch.answered(self.id, leader.as_deref());
        }
        fetched
    }

    /// Calls `each` on every record in `from..to`, in offset order: records known to be there
    /// already, so no fetch waits (Tansu 0.6.0 would sleep out any wait given).
    pub async fn scan(
        &self,
        from: i64,
        to: i64,
        mut each: impl FnMut(&FetchedRecord),
    ) -> Result<(), KafkaError> {
        let mut offset = from;
        while offset < to {
            // About what the range holds, so a look at a few records stays a small read.
            let max_bytes = ((to - offset) * 128).clamp(4 << 10, SCAN_BYTES);
            let fetched = self.fetch(offset, max_bytes as i32, Duration::ZERO).await?;
            fetched
                .records
                .iter()
                .filter(|r| r.offset < to)
                .for_each(&mut each);
            if fetched.next_offset <= offset {
                break;
            }
            offset = fetched.next_offset;
        }
        Ok(())
    }

    /// Runs `attempt` on the partition's leader, finding the leader again and retrying while
    /// the error is one a new leader or a little time can fix, up to `RETRY_DEADLINE`. With
    /// `Reads::Records` on a handle tied to a topic id, an error saying the topic is not there
    /// comes back at once (see `of_topic_id`).
    async fn on_leader<T, F, Fut>(
        &self,
        action: &str,
        reads: Reads,
        attempt: F,
    ) -> Result<T, KafkaError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, KafkaError>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let result = match self.leader_connection().await {
                Ok(leader) => attempt(leader).await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) if is_offset_out_of_range(&e) || !e.is_transient() => return Err(e),
                Err(e)
                    if reads == Reads::Records
                        && self.topic_id.is_some()
                        && is_topic_unknown(&e) =>
                {
                    return Err(e);
                }
                Err(e) => e,
            };
            if moves_leader(&error) {
                *self.leader.lock().await = None;
                self.view.leader_failed(&self.topic, self.id);
            }
            let delay = backoff.next_delay();
            if started.elapsed() + delay > RETRY_DEADLINE {
                return Err(error);
            }
            debug!("{action}: {error}; retrying in {delay:.1?}");
            tokio::time::sleep(delay).await;
        }
    }

    /// The broker's `error` for `action`: an authorization error names what was lacking.
    fn refused(&self, action: String, error: ResponseError, operation: Operation) -> KafkaError {
        if denied::is_authorization(error) {
            self.view
                .denied(operation, Resource::Topic(self.topic.clone()), error)
        } else {
            KafkaError::Refused { action, error }
        }
    }

    /// The address of the partition's leader now.
    pub async fn leader_address(&self) -> Result<String, KafkaError> {
        Ok(self.leader_connection().await?.address().to_string())
    }

    async fn leader_connection(&self) -> Result<Arc<Connection>, KafkaError> {
        let mut leader = self.leader.lock().await;
        if let Some(connection) = leader.as_ref() {
            if !connection.expiring() {
                return Ok(connection.clone());
            }
            debug!(
                "{} partition {}: SASL session on {} near its end; opening a new connection",
                self.topic,
                self.id,
                connection.address()
            );
        }
        let address = self.view.leader(&self.topic, self.id).await?;
        let connection = self.view.open(&address).await.map_err(|e| {
            self.view.leader_failed(&self.topic, self.id);
            KafkaError::wire(format!("connecting to {address}"), e)
        })?;
        let connection = Arc::new(connection);
        *leader = Some(connection.clone());
        Ok(connection)
    }
}

/// ListOffsets for one partition at `timestamp`, asked as a consumer: replica id -1, where
/// kafka-protocol's default is 0, a broker's id. Apache Kafka ignores the isolation level of a
/// replica's request and answers the log end offset, past any open transaction, so a
/// `--until-caught-up` aiming there waited forever at the last stable offset.
fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(CONSUMER_REPLICA_ID))
        .with_isolation_level(READ_COMMITTED)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ]),
        ])
}

/// What a request to the leader reads. Offsets are only numbers, and a topic just created
/// may be unknown to its leader for a moment: they are retried whatever the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Offsets,
    Records,
}

/// Errors after which the partition's leader must be looked up again.
fn moves_leader(error: &KafkaError) -> bool {
    match error {
        KafkaError::Wire { .. } | KafkaError::Unreachable { .. } | KafkaError::NoLeader { .. } => {
            true
        }
        KafkaError::Refused { error, .. } | KafkaError::RefusedWith { error, .. } => matches!(
            error,
            ResponseError::NotLeaderOrFollower
                | ResponseError::LeaderNotAvailable
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch
                | ResponseError::ReplicaNotAvailable
                | ResponseError::KafkaStorageError
        ),
        _ => false,
    }
}

/// True when a fetch failed because the offset lies outside what the partition holds.
pub fn is_offset_out_of_range(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::Refused {
            error: ResponseError::OffsetOutOfRange,
            ..
        }
    )
}

/// True when the broker said the topic (of that name, or that id) is not the one it has: the
/// topic was deleted, possibly created again, or is too new for this broker to know yet.
fn is_topic_unknown(error: &KafkaError) -> bool {
    match error {
        KafkaError::Refused { error, .. } | KafkaError::RefusedWith { error, .. } => matches!(
            error,
            ResponseError::UnknownTopicOrPartition
                | ResponseError::UnknownTopicId
                | ResponseError::InconsistentTopicId
        ),
        _ => false,
    }
}

/// What one fetch's record bytes hold for a READ_COMMITTED reader.
#[derive(Debug, Default, PartialEq)]
struct Read {
    records: Vec<FetchedRecord>,
    next_offset: i64,
}

/// What a reader needs of one batch's header. kafka-protocol decodes the header for us, but
/// gives neither the batch's length (to tell a whole batch from one cut short) nor its last
/// offset (a compacted batch may have lost its last records and still covers their offsets):
/// those two come from the documented v2 layout, baseOffset int64 and batchLength int32 at
/// the start, lastOffsetDelta int32 at byte 23.
struct BatchHeader {
    base_offset: i64,
    /// The whole batch, its 12 bytes of offset and length included.
    size: usize,
    last_offset: i64,
    transactional: bool,
    control: bool,
    producer_id: i64,
}

/// The header of the batch at the front of `bytes`; `None` when `bytes` holds no whole batch.
fn batch_header(bytes: &Bytes) -> Result<Option<BatchHeader>, String> {
    if bytes.len() < BATCH_HEADER {
        return Ok(None);
    }
    let mut prefix = bytes.slice(..12);
    let base_offset = prefix.get_i64();
    let length = prefix.get_i32();
    let size = usize::try_from(length)
        .ok()
        .filter(|l| *l >= BATCH_HEADER - 12)
        .ok_or_else(|| format!("the batch at offset {base_offset} has length {length}"))?
        + 12;
    if bytes.len() < size {
        return Ok(None);
    }
    let batch = bytes.slice(..size);
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(format!(
            "the batch at offset {base_offset} has message format v{magic}; only v2 exists since Kafka 4"
        ));
    }
    let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone())
        .map_err(|e| format!("the batch at offset {base_offset} does not decode: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("the batch at offset {base_offset} does not decode"))?;
    let last_offset_delta = batch.slice(23..27).get_i32();
    Ok(Some(BatchHeader {
        base_offset,
        size,
        last_offset: base_offset + i64::from(last_offset_delta),
        transactional: info.transactional,
        control: info.control,
        producer_id: info.producer_id,
    }))
}

/// Walks the batches of one fetch: committed data records at or after `from`, and where the
/// next read starts. `aborted` lists (first offset, producer id) of the aborted transactions
/// the broker says overlap these batches.
fn read_batches(mut bytes: Bytes, from: i64, aborted: Vec<(i64, i64)>) -> Result<Read, String> {
    let mut read = Read {
        records: Vec::new(),
        next_offset: from,
    };
    // Kafka's consumer does the same: an aborted transaction's producer is skipped from its
    // first offset on, until that producer's abort marker.
    let mut pending: BTreeSet<(i64, i64)> = aborted.into_iter().collect();
    let mut aborting: HashSet<i64> = HashSet::new();
    // A batch cut short by the size asked for ends the walk: the next fetch starts with it.
    while let Some(header) = batch_header(&bytes)? {
        let mut batch = bytes.split_to(header.size);
        while let Some(&(first, producer)) = pending.first() {
            if first > header.last_offset {
                break;
            }
            pending.pop_first();
            aborting.insert(producer);
        }
        let skip_records = header.last_offset < from
            || (header.transactional && !header.control && aborting.contains(&header.producer_id));
        if header.control {
            if ends_abort(&mut batch.clone())? {
                aborting.remove(&header.producer_id);
            }
        } else if !skip_records {
            let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
                format!(
                    "the batch at offset {} does not decode: {e}",
                    header.base_offset
                )
            })?;
            read.records.extend(
                set.records
                    .into_iter()
                    .filter(|r| r.offset >= from && !r.control)
                    .map(|r| FetchedRecord {
                        offset: r.offset,
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp,
                    }),
            );
        }
        read.next_offset = read.next_offset.max(header.last_offset + 1);
    }
    Ok(read)
}

/// Whether a control batch is an ABORT marker. A control record's key is a version (int16)
/// and a type (int16): 0 abort, 1 commit.
fn ends_abort(batch: &mut Bytes) -> Result<bool, String> {
    let set = RecordBatchDecoder::decode(batch).map_err(|e| e.to_string())?;
    let Some(mut key) = set.records.into_iter().find_map(|r| r.key) else {
        return Ok(false);
    };
    if key.remaining() < 4 {
        return Ok(false);
    }
    let _version = key.get_i16();
    Ok(key.get_i16() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One batch: `values` at offsets from `base`, as one producer would write them.
    fn batch(base: i64, values: &[&str], producer: Option<i64>, compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: producer.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer.unwrap_or(-1),
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from_static(b"March")),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    /// A transaction marker at `offset` for `producer`: commit or abort.
    fn marker(offset: i64, producer: i64, commit: bool) -> Bytes {
        let mut key = BytesMut::new();
        key.extend_from_slice(&0i16.to_be_bytes());
        key.extend_from_slice(&(commit as i16).to_be_bytes());
        let record = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_000,
            key: Some(key.freeze()),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn joined(parts: &[Bytes]) -> Bytes {
        let mut all = BytesMut::new();
        for part in parts {
            all.extend_from_slice(part);
        }
        all.freeze()
    }

    fn values(read: &Read) -> Vec<String> {
        read.records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn committed_transactions_count_and_aborted_ones_do_not() {
        let bytes = joined(&[
            batch(0, &["a", "b"], None, Compression::None),
            batch(2, &["t1", "t2"], Some(7), Compression::None),
            marker(4, 7, true),
            batch(5, &["x1", "x2"], Some(8), Compression::None),
            batch(7, &["c"], None, Compression::None),
            marker(8, 8, false),
            batch(9, &["t3"], Some(7), Compression::None),
            marker(10, 7, true),
        ]);
        let read = read_batches(bytes, 0, vec![(5, 8)]).unwrap();
        assert_eq!(values(&read), ["a", "b", "t1", "t2", "c", "t3"]);
        assert_eq!(read.next_offset, 11);
        let offsets: Vec<i64> = read.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 7, 9]);
    }

    #[test]
    fn a_marker_alone_moves_the_next_offset_past_it() {
        let read = read_batches(marker(12, 3, true), 12, Vec::new()).unwrap();
        assert!(read.records.is_empty());
        assert_eq!(read.next_offset, 13);
    }

    #[test]
    fn compressed_batches_are_read_like_plain_ones() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = batch(0, &["a", "b", "c"], None, compression);
            let read = read_batches(bytes, 1, Vec::new()).unwrap();
            assert_eq!(values(&read), ["b", "c"], "{compression:?}");
            assert_eq!(read.next_offset, 3);
        }
    }

    #[test]
    fn a_batch_cut_short_is_left_for_the_next_fetch() {
        let whole = batch(0, &["a"], None, Compression::None);
        let second = batch(1, &["b", "c"], None, Compression::None);
        let cut = joined(&[whole.clone(), second.slice(..second.len() - 3)]);
        let read = read_batches(cut, 0, Vec::new()).unwrap();
        assert_eq!(values(&read), ["a"]);
        assert_eq!(read.next_offset, 1);
        // Fewer bytes than a header: nothing to read, nothing skipped.
        let read = read_batches(second.slice(..20), 1, Vec::new()).unwrap();
        assert_eq!(
            read,
            Read {
                records: Vec::new(),
                next_offset: 1
            }
        );
    }

    #[test]
    fn offsets_are_asked_for_as_a_read_committed_consumer() {
        let request = list_offsets_request("temperatures", 3, -1);
        assert_eq!(request.replica_id, BrokerId(-1), "a consumer, not broker 0");
        assert_eq!(request.isolation_level, READ_COMMITTED);
        let partition = &request.topics[0].partitions[0];
        assert_eq!((partition.partition_index, partition.timestamp), (3, -1));
        assert_eq!(request.topics[0].name.0.as_str(), "temperatures");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut bytes = BytesMut::from(&batch(0, &["a"], None, Compression::None)[..]);
        bytes[16] = 1; // the magic byte: an old message format
        assert!(read_batches(bytes.freeze(), 0, Vec::new()).is_err());
        let mut bytes = BytesMut::from(&batch(0, &["a"], None, Compression::None)[..]);
        bytes[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(read_batches(bytes.freeze(), 0, Vec::new()).is_err());
    }
}
