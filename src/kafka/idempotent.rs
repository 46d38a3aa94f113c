//! The idempotent producer, on `kafka-protocol`'s messages (rskafka always sends producer id -1).
//!
//! `InitProducerId` gives a producer id and epoch. Every record batch then carries them and a
//! per-partition sequence number, so the broker writes a batch once however often it is sent:
//! a batch resent after a lost response is answered `DUPLICATE_SEQUENCE_NUMBER`, which means
//! "already written" and counts as success.
//!
//! One task per partition owns that partition's connection to its leader. It gathers what the
//! caller hands it into a batch, sealed when full, when the pipe is idle, or after a short
//! linger, and keeps up to five batches in flight. A batch is encoded once, when sealed, and a
//! retry resends the same bytes. Order is kept by the broker answering one connection's
//! requests in turn; after a failure the task waits for everything in flight to come back, then
//! resends every unacknowledged batch in order.
//!
//! A caller that must know one record is written before it goes on (the changelog's snapshots,
//! acknowledged before the local file is replaced) gives its records increasing ids and waits
//! with `acknowledged`: each partition's task publishes the highest id it has had acknowledged,
//! and why it stopped if it did.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use super::KafkaError;
use super::backoff::Backoff;
use super::metadata::ClusterView;
use super::outage::OutageWatch;
use super::security::{Operation, Resource, denied};
use super::wire::{Connection, Pending, WireError};

/// Batches a partition may have sent and not yet seen answered; Kafka keeps the last five
/// batches of each producer to recognise duplicates, so more would lose that guarantee.
pub const MAX_IN_FLIGHT: usize = 5;
/// Retries of one batch (or one connection attempt) before the producer gives up; on the
/// backoff's delivery curve that rides out more than a minute of broker outage.
pub const MAX_RETRIES: u32 = super::backoff::DELIVERY_RETRIES;

/// Version 3 is the first with record batches v2, which carry producer ids; 12 and 13 name
/// topics by id only.
const PRODUCE_VERSIONS: RangeInclusive<i16> = 3..=11;
const INIT_PRODUCER_ID_VERSIONS: RangeInclusive<i16> = 0..=4;
/// How long the leader may wait for the in-sync replicas (acks=all) before answering; well
/// inside the wire's own `REQUEST_TIMEOUT`, so a slow acknowledgement arrives as the broker's
/// answer rather than as a dead connection.
const ACK_TIMEOUT_MS: i32 = 20_000;
/// Records a caller may queue per partition before `send` waits.
const QUEUE: usize = 4096;
/// While backing off from a lost leader, how often to look whether one answers again.
const LEADER_PROBE: Duration = Duration::from_secs(1);

/// When a batch is sealed and sent.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// A batch is sent once it holds about this many bytes of records.
    pub max_bytes: usize,
    /// How long a batch may wait for more records while others are in flight. With nothing in
    /// flight a batch goes at once, so a slow trickle of records is never held back.
    pub linger: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_bytes: 128 * 1024,
            linger: Duration::from_millis(5),
        }
    }
}

/// One record to write. `id` is the caller's own label, reported back once acknowledged.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
    pub id: i64,
}

impl Outgoing {
    /// A record made now: its timestamp is the wall clock's.
    pub fn now(key: Bytes, value: Bytes, id: i64) -> Outgoing {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Outgoing {
            key,
            value,
            timestamp_ms,
            id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Kafka(KafkaError),
    #[error("cannot get a producer id from {address}: {reason}")]
    InitProducerId { address: String, reason: String },
    #[error(
        "producing to {topic} partition {partition} failed after {tries} tries: {last}; \
         run again to resume where the topic ends (nothing is lost or doubled)"
    )]
    GaveUp {
        topic: String,
        partition: i32,
        tries: u32,
        last: String,
    },
    #[error(
        "{topic} partition {partition} refused batch with sequence {sequence} as out of order: \
         the broker lost acknowledged records or another producer writes with our id; \
         the topic needs checking (`weather verify`)"
    )]
    OutOfOrder {
        topic: String,
        partition: i32,
        sequence: i32,
    },
    #[error("the broker no longer knows our producer id ({topic} partition {partition})")]
    ProducerIdLost { topic: String, partition: i32 },
    #[error("{topic} partition {partition} refused a batch: {error}")]
    Refused {
        topic: String,
        partition: i32,
        error: String,
    },
    #[error("no partition {partition}: the topic has {partitions}")]
    NoSuchPartition { partition: i32, partitions: usize },
    #[error(transparent)]
    Wire(WireError),
    #[error(
        "stopped with {records} days handed to the producer but not confirmed by the broker; \
         run again to resume where the topic ends (nothing is lost or doubled)"
    )]
    Unconfirmed { records: u64 },
    #[error("the sender of partition {partition} stopped")]
    Stopped { partition: i32 },
    /// What `acknowledged` reports of a sender that stopped on an error; `close` returns the
    /// error itself.
    #[error("partition {partition}: {reason}")]
    Failed { partition: i32, reason: String },
}

/// What one partition's sender has done, for `IdempotentProducer::acknowledged`.
#[derive(Debug, Clone, Default)]
struct Lane {
    /// The highest record id acknowledged so far on this partition.
    acked: i64,
    /// Why the sender stopped, once it has stopped on an error.
    ended: Option<Arc<SendError>>,
}

/// What has been acknowledged so far, shared by all partitions' tasks.
#[derive(Debug)]
pub struct Acked {
    records: AtomicU64,
    highest_id: AtomicI64,
    /// The partitions that cannot write now, so an outage is told once, not per partition.
    outage: OutageWatch,
}

impl Default for Acked {
    fn default() -> Self {
        Self {
            records: AtomicU64::default(),
            highest_id: AtomicI64::default(),
            outage: OutageWatch::new("writing"),
        }
    }
}

impl Acked {
    /// Records acknowledged, and the highest `id` among them.
    pub fn get(&self) -> (u64, Option<i64>) {
        let records = self.records.load(Ordering::Relaxed);
        let id = self.highest_id.load(Ordering::Relaxed);
        (records, (records > 0).then_some(id))
    }
}

/// An idempotent producer for one topic: a producer id, and one sending task per partition.
#[derive(Debug)]
pub struct IdempotentProducer {
    queues: Vec<mpsc::Sender<Outgoing>>,
    tasks: Vec<JoinHandle<Result<(), SendError>>>,
    acked: Arc<Acked>,
    /// Per partition: what its sender has had acknowledged.
    lanes: Vec<watch::Receiver<Lane>>,
    /// Records handed to `send` and queued.
    queued: AtomicU64,
    producer_id: i64,
    epoch: i16,
}

impl IdempotentProducer {
    /// Asks a broker for a producer id and starts a sender for each of `partitions`.
    pub async fn start(
        view: &Arc<ClusterView>,
        topic: &str,
        partitions: i32,
        options: BatchOptions,
    ) -> Result<Self, SendError> {
        let (producer_id, epoch) = init_producer_id(view, topic).await?;
        info!("producer id {producer_id}, epoch {epoch}: idempotent, acks=all");
        let acked = Arc::new(Acked::default());
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        let mut lanes = Vec::new();
        for partition in 0..partitions {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (lane, lane_rx) = watch::channel(Lane::default());
            lanes.push(lane_rx);
            let sender = PartitionSender {
                topic: topic.into(),
                partition,
                view: view.clone(),
                leader: None,
                producer_id,
                epoch,
                options: options.clone(),
                acked: acked.clone(),
                lane,
                connection: None,
                next_sequence: 0,
                open: Vec::new(),
                open_bytes: 0,
                open_since: Instant::now(),
                unacked: VecDeque::new(),
                in_flight: FuturesOrdered::new(),
                failed: None,
                failures: 0,
                backoff: Backoff::delivery(),
            };
            queues.push(tx);
            tasks.push(tokio::spawn(sender.run(rx)));
        }
        Ok(Self {
            queues,
            tasks,
            acked,
            lanes,
            queued: AtomicU64::new(0),
            producer_id,
            epoch,
        })
    }

    pub fn producer_id(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    pub fn partitions(&self) -> i32 {
        self.queues.len() as i32
    }

    /// `partition`'s place among the queues (and lanes), or the error naming how many there are.
    fn index(&self, partition: i32) -> Result<usize, SendError> {
        usize::try_from(partition)
            .ok()
            .filter(|p| *p < self.queues.len())
            .ok_or(SendError::NoSuchPartition {
                partition,
                partitions: self.queues.len(),
            })
    }

    /// Queues a record for `partition`; waits while that partition's queue is full.
    pub async fn send(&self, partition: i32, record: Outgoing) -> Result<(), SendError> {
        let queue = &self.queues[self.index(partition)?];
        // A closed queue means the task ended with an error; `close` returns it.
        queue
            .send(record)
            .await
            .map_err(|_| SendError::Stopped { partition })?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn acked(&self) -> &Arc<Acked> {
        &self.acked
    }

    /// Waits until `partition` has had every record up to id `id` acknowledged. Ids must
    /// increase in the order records are sent to a partition (the sender acknowledges batches
    /// in order, so the highest id acknowledged covers every earlier one). Fails with the
    /// reason the partition's sender stopped, if it stopped before that.
    pub async fn acknowledged(&self, partition: i32, id: i64) -> Result<(), Arc<SendError>> {
        let stopped = || Arc::new(SendError::Stopped { partition });
        let mut lane = self.lanes[self.index(partition).map_err(Arc::new)?].clone();
        // Looks at the value there is first, so an acknowledgement before a stop still counts.
        let reached = lane.wait_for(|l| l.acked >= id || l.ended.is_some()).await;
        match reached {
            Ok(l) if l.acked >= id => Ok(()),
            Ok(l) => Err(l.ended.clone().unwrap_or_else(stopped)),
            // Stopped without an error of its own: aborted by `close`.
            Err(_) => Err(stopped()),
        }
    }

    /// Sends what is queued, waits for every acknowledgement and stops the tasks. The first
    /// task's error wins. If `give_up` completes first (the user stopped us while the broker
    /// is away, say), the tasks are stopped where they are and `Unconfirmed` says how many
    /// records were not acknowledged; the broker has each of those once or not at all.
    /// An error a task ended with before that still wins over `Unconfirmed`.
    pub async fn close(self, give_up: impl Future<Output = ()>) -> Result<(), SendError> {
        drop(self.queues);
        let stops: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let mut tasks: FuturesUnordered<_> = self
            .tasks
            .into_iter()
            .enumerate()
            .map(|(partition, task)| async move {
                task.await.unwrap_or(Err(SendError::Stopped {
                    partition: partition as i32,
                }))
            })
            .collect();
        let mut first_error = None;
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                outcome = tasks.next() => match outcome {
                    Some(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Some(Ok(())) => {}
                    None => break,
                },
                () = &mut give_up => {
                    stops.iter().for_each(tokio::task::AbortHandle::abort);
                    let queued = self.queued.load(Ordering::Relaxed);
                    let records = queued.saturating_sub(self.acked.get().0);
                    if first_error.is_none() && records > 0 {
                        first_error = Some(SendError::Unconfirmed { records });
                    }
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Asks the bootstrap brokers in turn for a producer id, retrying what may pass (a broker
/// restarting, a coordinator still loading) with backoff, and failing at once on the rest.
async fn init_producer_id(view: &ClusterView, topic: &str) -> Result<(i64, i16), SendError> {
    let bootstrap = view.bootstrap();
    let mut backoff = Backoff::delivery();
    let mut tries = 0;
    loop {
        let mut last = SendError::InitProducerId {
            address: bootstrap.join(","),
            reason: "no broker address".into(),
        };
        for address in bootstrap {
            match ask_producer_id(view, address, topic).await {
                Ok(id) => return Ok(id),
                Err((error, retriable)) if retriable => last = error,
                Err((error, _)) => return Err(error),
            }
        }
        tries += 1;
        if tries > MAX_RETRIES || bootstrap.is_empty() {
            return Err(last);
        }
        debug!("{last}; trying again");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One `InitProducerId` to one broker; on failure, the error and whether a retry may help.
async fn ask_producer_id(
    view: &ClusterView,
    address: &str,
    topic: &str,
) -> Result<(i64, i16), (SendError, bool)> {
    let failed = |reason: String, retriable: bool| {
        let error = SendError::InitProducerId {
            address: address.into(),
            reason,
        };
        (error, retriable)
    };
    let request = init_producer_id_request();
    let connection = view
        .open(address)
        .await
        .map_err(|e| failed(e.to_string(), e.is_transient()))?;
    let response = connection
        .request(request, INIT_PRODUCER_ID_VERSIONS)
        .await
        .map_err(|e| failed(e.to_string(), e.is_transient()))?;
    match response.error_code.err() {
        None => Ok((response.producer_id.0, response.producer_epoch)),
        // Kafka 3+ gives an idempotent producer an id if it may WRITE to any topic (or has
        // IDEMPOTENT_WRITE on the cluster, the older rule), and answers
        // CLUSTER_AUTHORIZATION_FAILED otherwise: for us, that is WRITE on our topic.
        Some(error) if denied::is_authorization(error) => {
            let denied = view.denied(Operation::Write, Resource::Topic(topic.into()), error);
            Err((SendError::Kafka(denied), false))
        }
        Some(error) => Err(failed(describe(response.error_code), error.is_retriable())),
    }
}

/// A request for a new idempotent producer. The crate's default names the empty
/// transactional id, which asks for a transactional producer instead.
fn init_producer_id_request() -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(-1)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1)
}

/// The broker's error code as a person reads it: Kafka's name for it, then what it means.
fn describe(code: i16) -> String {
    code.err().map_or_else(|| "no error".into(), super::explain)
}

/// A sealed batch: its encoded bytes are what every try sends.
#[derive(Debug)]
struct Batch {
    records: Bytes,
    base_sequence: i32,
    count: i32,
    highest_id: i64,
    acked: bool,
}

/// What came back for one batch sent.
type Answer = (i32, Result<ProduceResponse, WireError>);

struct PartitionSender {
    topic: String,
    partition: i32,
    view: Arc<ClusterView>,
    /// The leader this partition last wrote through, to tell when it moves.
    leader: Option<String>,
    producer_id: i64,
    epoch: i16,
    options: BatchOptions,
    acked: Arc<Acked>,
    /// Published for `IdempotentProducer::acknowledged`.
    lane: watch::Sender<Lane>,
    connection: Option<Arc<Connection>>,
    next_sequence: i32,
    /// Records not yet in a batch.
    open: Vec<Outgoing>,
    open_bytes: usize,
    open_since: Instant,
    /// Sealed batches in sequence order, until acknowledged; at most `MAX_IN_FLIGHT`.
    unacked: VecDeque<Batch>,
    in_flight: FuturesOrdered<futures::future::BoxFuture<'static, Answer>>,
    /// Why the current round failed; set, nothing new is sent until all in flight are back.
    failed: Option<Failure>,
    failures: u32,
    backoff: Backoff,
}

#[derive(Debug)]
struct Failure {
    /// What kind of failure: the broker's error name, or "connection".
    cause: String,
    reason: String,
    reconnect: bool,
}

impl PartitionSender {
    async fn run(mut self, queue: mpsc::Receiver<Outgoing>) -> Result<(), SendError> {
        let result = self.drive(queue).await;
        if let Err(e) = &result {
            // In words that fit any caller: GaveUp's own line tells `weather produce`'s user
            // to run it again.
            let reason = match e {
                SendError::GaveUp { tries, last, .. } => {
                    format!("not acknowledged after {tries} tries: {last}")
                }
                other => other.to_string(),
            };
            let ended = Arc::new(SendError::Failed {
                partition: self.partition,
                reason,
            });
            self.lane.send_modify(|lane| lane.ended = Some(ended));
        }
        result
    }

    async fn drive(&mut self, mut queue: mpsc::Receiver<Outgoing>) -> Result<(), SendError> {
        let mut closed = false;
        loop {
            if self.failed.is_some() && self.in_flight.is_empty() {
                self.recover().await?;
            }
            if self.failed.is_none() {
                self.pump(closed).await?;
            }
            // A round that failed with nothing in flight (the reconnect itself failed) is
            // recovered on this sender's own timer: the next record may be a month away.
            if self.failed.is_some() && self.in_flight.is_empty() {
                continue;
            }
            if closed && self.open.is_empty() && self.unacked.is_empty() {
                return Ok(());
            }
            let room = self.open_bytes < self.options.max_bytes;
            let linger_until = self.open_since + self.options.linger;
            let may_seal = !self.open.is_empty()
                && self.failed.is_none()
                && self.unacked.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                Some((sequence, answer)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle(sequence, answer)?;
                }
                record = queue.recv(), if !closed && room => match record {
                    Some(record) => self.add(record),
                    None => closed = true,
                },
                _ = tokio::time::sleep_until(linger_until), if may_seal => {
                    // `pump` at the top of the loop seals it now that it is due.
                }
                // Nothing to wait for: a failed round with nothing in flight, which the top
                // of the loop recovers from.
                else => {}
            }
        }
    }

    fn add(&mut self, record: Outgoing) {
        if self.open.is_empty() {
            self.open_since = Instant::now();
        }
        // Key, value and about 20 bytes of record framing.
        self.open_bytes += record.key.len() + record.value.len() + 20;
        self.open.push(record);
    }

    /// Sends what may go now: batches waiting for a resend, then the open batch when it is due.
    async fn pump(&mut self, closed: bool) -> Result<(), SendError> {
        let sent = self.in_flight.len();
        let waiting = self.unacked.len() > sent;
        let due = !self.open.is_empty()
            && self.unacked.len() < MAX_IN_FLIGHT
            && (self.open_bytes >= self.options.max_bytes
                || self.unacked.is_empty()
                || self.open_since.elapsed() >= self.options.linger
                || closed);
        if !waiting && !due {
            return Ok(());
        }
        let connection = match self.connect().await {
            Ok(connection) => connection,
            Err(SendError::Wire(e)) if !e.is_transient() => return Err(SendError::Wire(e)),
            Err(SendError::Kafka(e)) if !e.is_transient() => return Err(SendError::Kafka(e)),
            Err(e) => {
                self.fail("connection", e.to_string(), true);
                return Ok(());
            }
        };
        for index in sent..self.unacked.len() {
            self.transmit(&connection, index).await;
        }
        if due {
            self.seal()?;
            self.transmit(&connection, self.unacked.len() - 1).await;
        }
        Ok(())
    }

    /// The connection to the partition's leader, made on first use or after a failure.
    async fn connect(&mut self) -> Result<Arc<Connection>, SendError> {
        if let Some(connection) = &self.connection {
            // A SASL session near its end is replaced only between rounds: batches in flight
            // must all be on one connection, or the broker could see them out of order.
            if !(connection.expiring() && self.in_flight.is_empty()) {
                return Ok(connection.clone());
            }
            debug!(
                "partition {}: SASL session on {} near its end; opening a new connection",
                self.partition,
                connection.address()
            );
        }
        let leader = self
            .view
            .leader(&self.topic, self.partition)
            .await
            .map_err(SendError::Kafka)?;
        let connection = match self.view.open(&leader).await {
            Ok(connection) => Arc::new(connection),
            Err(e) => {
                self.view.leader_failed(&self.topic, self.partition);
                return Err(SendError::Wire(e));
            }
        };
        match self.leader.replace(leader.clone()) {
            Some(old) if old != leader => {
                info!(
                    "partition {}: new leader {leader} (was {old})",
                    self.partition
                );
            }
            _ => debug!("partition {} writes through {leader}", self.partition),
        }
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Encodes the open records as the next batch, with the next sequence numbers.
    fn seal(&mut self) -> Result<(), SendError> {
        let records = std::mem::take(&mut self.open);
        self.open_bytes = 0;
        let base_sequence = self.next_sequence;
        let encoded: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: sequence_after(base_sequence, i),
                timestamp: r.timestamp_ms,
                key: Some(r.key.clone()),
                value: Some(r.value.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut buffer = BytesMut::with_capacity(self.options.max_bytes + 1024);
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buffer, &encoded, &options).map_err(|e| {
            SendError::Refused {
                topic: self.topic.clone(),
                partition: self.partition,
                error: format!("cannot encode the batch: {e}"),
            }
        })?;
        let count = records.len() as i32;
        self.next_sequence = sequence_after(base_sequence, records.len());
        self.unacked.push_back(Batch {
            records: buffer.freeze(),
            base_sequence,
            count,
            highest_id: records.iter().map(|r| r.id).max().unwrap_or_default(),
            acked: false,
        });
        Ok(())
    }

    /// Sends `unacked[index]` and puts its answer in line behind those already in flight.
    async fn transmit(&mut self, connection: &Arc<Connection>, index: usize) {
        let batch = &self.unacked[index];
        let sequence = batch.base_sequence;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(ACK_TIMEOUT_MS)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(self.partition)
                            .with_records(Some(batch.records.clone())),
                    ]),
            ]);
        let pending: Result<Pending<ProduceRequest>, WireError> =
            connection.send(request, PRODUCE_VERSIONS).await;
        self.in_flight.push_back(Box::pin(async move {
            match pending {
                Ok(pending) => (sequence, pending.response().await),
                Err(e) => (sequence, Err(e)),
            }
        }));
    }

    /// Takes the answer for the batch starting at `sequence`.
    fn settle(
        &mut self,
        sequence: i32,
        answer: Result<ProduceResponse, WireError>,
    ) -> Result<(), SendError> {
        let code = match answer {
            Ok(response) => partition_error(&response, &self.topic, self.partition),
            Err(e) if !e.is_transient() => return Err(SendError::Wire(e)),
            Err(e) => {
                self.fail("connection", e.to_string(), true);
                return Ok(());
            }
        };
        match code.err() {
            // Already written by an earlier try whose answer was lost: that is success.
            None | Some(ResponseError::DuplicateSequenceNumber) => self.acknowledge(sequence),
            // Behind a failed batch, later ones are out of order by construction.
            Some(ResponseError::OutOfOrderSequenceNumber) if self.failed.is_some() => {}
            Some(ResponseError::OutOfOrderSequenceNumber) => {
                return Err(SendError::OutOfOrder {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    sequence,
                });
            }
            Some(ResponseError::UnknownProducerId) => {
                return Err(SendError::ProducerIdLost {
                    topic: self.topic.clone(),
                    partition: self.partition,
                });
            }
            Some(error) if denied::is_authorization(error) => {
                return Err(SendError::Kafka(self.view.denied(
                    Operation::Write,
                    Resource::Topic(self.topic.clone()),
                    error,
                )));
            }
            Some(error) if error.is_retriable() => {
                let reconnect = matches!(
                    error,
                    ResponseError::NotLeaderOrFollower
                        | ResponseError::LeaderNotAvailable
                        | ResponseError::UnknownTopicOrPartition
                );
                self.fail(&format!("{error:?}"), describe(code), reconnect);
            }
            Some(_) => {
                return Err(SendError::Refused {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    error: describe(code),
                });
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, sequence: i32) {
        if let Some(batch) = self
            .unacked
            .iter_mut()
            .find(|b| b.base_sequence == sequence)
        {
            batch.acked = true;
        }
        while self.unacked.front().is_some_and(|b| b.acked) {
            let Some(batch) = self.unacked.pop_front() else {
                break;
            };
            self.acked
                .records
                .fetch_add(batch.count as u64, Ordering::Relaxed);
            self.acked
                .highest_id
                .fetch_max(batch.highest_id, Ordering::Relaxed);
            self.lane
                .send_modify(|lane| lane.acked = lane.acked.max(batch.highest_id));
            let leader = self.connection.as_ref().map(|c| c.address().to_string());
            self.acked
                .outage
                .answered(self.partition, leader.as_deref());
            self.failures = 0;
            self.backoff.reset();
        }
    }

    fn fail(&mut self, cause: &str, reason: String, reconnect: bool) {
        match &mut self.failed {
            Some(failure) => failure.reconnect |= reconnect,
            None => {
                self.failed = Some(Failure {
                    cause: cause.into(),
                    reason,
                    reconnect,
                });
            }
        }
    }

    /// After a failed round, once nothing is in flight: wait, reconnect if needed, and let
    /// `pump` resend every unacknowledged batch in order.
    async fn recover(&mut self) -> Result<(), SendError> {
        let Some(failure) = self.failed.take() else {
            return Ok(());
        };
        self.failures += 1;
        if self.failures > MAX_RETRIES {
            return Err(SendError::GaveUp {
                topic: self.topic.clone(),
                partition: self.partition,
                tries: self.failures,
                last: failure.reason,
            });
        }
        let why = format!(
            "{} (try {} of {MAX_RETRIES})",
            failure.reason, self.failures
        );
        if !self
            .acked
            .outage
            .lost_because(self.partition, &failure.cause, &why)
        {
            debug!("partition {}: {}", self.partition, failure.reason);
        }
        let delay = self.backoff.next_delay();
        if !failure.reconnect {
            // The broker answered and refused (not enough replicas, a timeout waiting for
            // them): only time helps.
            tokio::time::sleep(delay).await;
            return Ok(());
        }
        // The leader is gone or moved: look for it about every second, and go as soon as
        // one answers, rather than sleeping out a long backoff after the cluster is back.
        self.connection = None;
        self.view.leader_failed(&self.topic, self.partition);
        let until = Instant::now() + delay;
        loop {
            tokio::time::sleep_until(until.min(Instant::now() + LEADER_PROBE)).await;
            match self.connect().await {
                Ok(_) => return Ok(()),
                Err(SendError::Wire(e)) if !e.is_transient() => return Err(SendError::Wire(e)),
                Err(SendError::Kafka(e)) if !e.is_transient() => return Err(SendError::Kafka(e)),
                Err(_) if Instant::now() >= until => return Ok(()),
                Err(_) => {}
            }
        }
    }
}

/// The sequence `n` records after `base`: after `i32::MAX` comes 0, as the protocol says.
fn sequence_after(base: i32, n: usize) -> i32 {
    ((i64::from(base) + n as i64) % (i64::from(i32::MAX) + 1)) as i32
}

fn partition_error(response: &ProduceResponse, topic: &str, partition: i32) -> i16 {
    response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == partition)
        .map_or(ResponseError::UnknownTopicOrPartition.code(), |p| {
            p.error_code
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};

    #[test]
    fn the_producer_id_request_names_no_transaction_at_every_version() {
        for version in INIT_PRODUCER_ID_VERSIONS {
            let mut encoded = BytesMut::new();
            init_producer_id_request()
                .encode(&mut encoded, version)
                .unwrap();
            let decoded = InitProducerIdRequest::decode(&mut encoded.freeze(), version).unwrap();
            assert_eq!(decoded.transactional_id, None, "version {version}");
            assert_eq!(decoded.producer_id.0, -1);
        }
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        assert_eq!(sequence_after(0, 5), 5);
        assert_eq!(sequence_after(i32::MAX - 2, 2), i32::MAX);
        assert_eq!(sequence_after(i32::MAX - 2, 3), 0);
        assert_eq!(sequence_after(i32::MAX, 10), 9);
    }

    /// A broker for one topic of one partition, on a loopback port: it answers ApiVersions,
    /// Metadata (itself the leader), InitProducerId and Produce, except while `down`, when it
    /// takes each connection and closes it at once, as a restarting broker does.
    struct FakeBroker {
        address: String,
        down: Arc<std::sync::atomic::AtomicBool>,
        produced: Arc<AtomicU64>,
    }

    impl FakeBroker {
        async fn start(topic: &'static str) -> FakeBroker {
            use kafka_protocol::messages::api_versions_response::ApiVersion;
            use kafka_protocol::messages::metadata_response::{
                MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
            };
            use kafka_protocol::messages::produce_response::{
                PartitionProduceResponse, TopicProduceResponse,
            };
            use kafka_protocol::messages::{
                ApiKey, ApiVersionsResponse, BrokerId, InitProducerIdResponse, MetadataResponse,
                RequestHeader, ResponseHeader,
            };
            use kafka_protocol::protocol::{HeaderVersion, decode_request_header_from_buffer};
            use tokio::io::{AsyncReadExt, AsyncWriteExt};

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let port = listener.local_addr().unwrap().port() as i32;
            let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let produced = Arc::new(AtomicU64::new(0));
            let (is_down, count) = (down.clone(), produced.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    if is_down.load(Ordering::Relaxed) {
                        continue; // dropped: closed at once
                    }
                    let (count, is_down) = (count.clone(), is_down.clone());
                    tokio::spawn(async move {
                        while let Ok(length) = stream.read_i32().await {
                            let mut request = vec![0; length as usize];
                            if stream.read_exact(&mut request).await.is_err()
                                || is_down.load(Ordering::Relaxed)
                            {
                                return;
                            }
                            let mut request = Bytes::from(request);
                            let header: RequestHeader =
                                decode_request_header_from_buffer(&mut request).unwrap();
                            let version = header.request_api_version;
                            let key = ApiKey::try_from(header.request_api_key).unwrap();
                            let mut body = BytesMut::new();
                            let header_version = match key {
                                ApiKey::ApiVersions => {
                                    let offer = |api: ApiKey, max| {
                                        ApiVersion::default()
                                            .with_api_key(api as i16)
                                            .with_min_version(0)
                                            .with_max_version(max)
                                    };
                                    ApiVersionsResponse::default()
                                        .with_api_keys(vec![
                                            offer(ApiKey::ApiVersions, 0),
                                            offer(ApiKey::Metadata, 12),
                                            offer(ApiKey::InitProducerId, 4),
                                            offer(ApiKey::Produce, 9),
                                            offer(ApiKey::EndTxn, 3),
                                        ])
                                        .encode(&mut body, version)
                                        .unwrap();
                                    ApiVersionsResponse::header_version(version)
                                }
                                ApiKey::Metadata => {
                                    MetadataResponse::default()
                                        .with_brokers(vec![
                                            MetadataResponseBroker::default()
                                                .with_node_id(BrokerId(1))
                                                .with_host(StrBytes::from_static_str("127.0.0.1"))
                                                .with_port(port),
                                        ])
                                        .with_topics(vec![
                                            MetadataResponseTopic::default()
                                                .with_name(Some(TopicName(
                                                    StrBytes::from_static_str(topic),
                                                )))
                                                .with_partitions(vec![
                                                    MetadataResponsePartition::default()
                                                        .with_partition_index(0)
                                                        .with_leader_id(BrokerId(1)),
                                                ]),
                                        ])
                                        .encode(&mut body, version)
                                        .unwrap();
                                    MetadataResponse::header_version(version)
                                }
                                ApiKey::InitProducerId => {
                                    InitProducerIdResponse::default()
                                        .with_producer_id(7.into())
                                        .encode(&mut body, version)
                                        .unwrap();
                                    InitProducerIdResponse::header_version(version)
                                }
                                ApiKey::Produce => {
                                    count.fetch_add(1, Ordering::Relaxed);
                                    ProduceResponse::default()
                                        .with_responses(vec![
                                            TopicProduceResponse::default()
                                                .with_name(TopicName(StrBytes::from_static_str(
                                                    topic,
                                                )))
                                                .with_partition_responses(vec![
                                                    PartitionProduceResponse::default()
                                                        .with_index(0),
                                                ]),
                                        ])
                                        .encode(&mut body, version)
                                        .unwrap();
                                    ProduceResponse::header_version(version)
                                }
                                other => panic!("the fake broker does not do {other:?}"),
                            };
                            let mut frame = BytesMut::new();
                            ResponseHeader::default()
                                .with_correlation_id(header.correlation_id)
                                .encode(&mut frame, header_version)
                                .unwrap();
                            frame.extend_from_slice(&body);
                            if stream.write_i32(frame.len() as i32).await.is_err()
                                || stream.write_all(&frame).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
            FakeBroker {
                address,
                down,
                produced,
            }
        }
    }

    fn record(id: i64) -> Outgoing {
        Outgoing {
            key: Bytes::from_static(b"January"),
            value: Bytes::from_static(b"report"),
            timestamp_ms: 0,
            id,
        }
    }

    #[tokio::test]
    async fn a_partition_whose_leader_came_back_retries_without_waiting_for_more_records() {
        let broker = FakeBroker::start("t").await;
        let view = Arc::new(ClusterView::new(vec![broker.address.clone()]));
        let producer = IdempotentProducer::start(&view, "t", 1, BatchOptions::default())
            .await
            .unwrap();
        producer.send(0, record(1)).await.unwrap();
        let acked = producer.acked().clone();
        let wait_for = |n: u64| {
            let acked = acked.clone();
            async move {
                while acked.get().0 < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait_for(1))
            .await
            .expect("the first record acknowledged");
        // The broker goes away under the open connection, and a record is sent into that: its
        // answer is lost and the reconnect fails. No record comes after it.
        broker.down.store(true, Ordering::Relaxed);
        producer.send(0, record(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.down.store(false, Ordering::Relaxed);
        // Back: the batch goes again on the sender's own timer, with no new record to wake it.
        tokio::time::timeout(Duration::from_secs(60), wait_for(2))
            .await
            .expect("the second record acknowledged once the broker is back");
        assert!(broker.produced.load(Ordering::Relaxed) >= 2);
    }
}
