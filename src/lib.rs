//! weather-stream: daily weather reports through Kafka, counted exactly once.
//!
//! Data flows one way, and each step is one module:
//!
//! - `weather`: the generator. A day's temperature is a pure function of (seed, date).
//! - `report`: the protobuf `Report` (from `proto/report.proto`) and month names, the keys.
//! - `kafka`: the client layer, where the wire protocol lives: `kafka::wire` one
//!   kafka-protocol connection to one broker; `kafka::metadata` the one cluster view (leaders,
//!   topic ids); `kafka::fetch` reading a partition (READ_COMMITTED, compressed and
//!   transactional batches); `kafka::idempotent` the producer's write path; `kafka::group`
//!   consumer group membership, with `kafka::assignor` the range and round-robin assignors;
//!   `kafka::admin` topics; `kafka::partitioner` Kafka's murmur2; `kafka::backoff` every retry
//!   delay; `kafka::outage` one line per outage; `kafka::quirks` every broker-specific
//!   workaround; `kafka::security` how every connection is secured (TLS, SASL, the
//!   `--command-config` file and `KAFKA_*` variables).
//!   rskafka is kept for the first connection and topic deletion.
//! - `producer`: `weather produce`, which also resumes a topic where it ends, month by month
//!   (the key), wherever the partition count put each month's last day.
//! - `stats`: month/year aggregation and the exactly-once rules for what counts: the dedup
//!   rule (a date already among its (month, year)'s counted days is a duplicate, in any
//!   order) and the skip rule for records that are not reports (or not plausible temperatures).
//! - `checkpoint`: the partition files, and the only place files are written durably
//!   (a temporary file of each save's own, fsync, rename, fsync the folder; without the
//!   fsyncs where the file is only a cache of the changelog); a checkpoint that would not
//!   load again is refused. `partition-N.topic.json` beside each file names the topic it
//!   counts (`TopicIdentity`), so the partition file keeps the seed's format.
//! - `changelog`: the same checkpoints in Kafka, in the compacted topic `<topic>.stats`
//!   (partition p's snapshots in its partition p), written by group members before their file
//!   and restored on assignment: the newest snapshot, by offset, of the topic counted now.
//!   Why any snapshot, even a zombie's, is a correct place to resume is written there.
//! - `lock`: one writer per partition file: the flock a consumer holds on `partition-N.lock`
//!   from before it loads a partition until after its last save.
//! - `consumer`: `weather consume`, which joins the two: fetch, apply, save, repeat; per
//!   partition, on a list given by hand (files the truth) or on what a consumer group assigns
//!   (the changelog the truth, the file its cache). It refuses a file of another topic, and
//!   stops when its topic is recreated under it.
//! - `debug`: `weather debug`, a consumer group member that prints what arrives.
//! - `verify`: `weather verify`, which recomputes the files from the topic.
//! - `plot`: the SVG chart of monthly averages.
//! - `dashboard`: `weather serve`, the live page: the plot's chart pushed on every file change.
//! - `shutdown`: the Ctrl-C / SIGTERM signal handed to every loop.
//! - `cli`: argument parsing and the one-line errors.

pub mod changelog;
pub mod checkpoint;
pub mod cli;
pub mod consumer;
pub mod dashboard;
pub mod debug;
pub mod kafka;
pub mod lock;
pub mod plot;
pub mod producer;
pub mod report;
pub mod shutdown;
pub mod stats;
pub mod verify;
pub mod weather;
