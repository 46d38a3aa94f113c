//! `weather produce`: one report a day, keyed by month, to the topic.
//!
//! On a topic that already holds days, it resumes where the topic ends: per partition it
//! finds the last date written, and sends only that partition's days after it (from the
//! topic's first date on). A producer stopped between two partitions' batches therefore
//! fills the hole on restart instead of leaving it, and doubles nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rskafka::chrono::{DateTime, TimeZone, Utc};
use rskafka::record::Record;
use time::Date;
use tracing::{info, warn};

use crate::kafka::partitioner::partition_for;
use crate::kafka::{Cluster, KafkaError, Partition};
use crate::report::{format_date, month_name};
use crate::shutdown::Shutdown;
use crate::stats::DayReading;
use crate::weather::Weather;

/// Days generated and sent per round when there is no delay between days.
const BURST_DAYS: usize = 5_000;
/// How often a progress line is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    pub start: Date,
    pub count: Option<u64>,
    pub delay: Duration,
    pub seed: u64,
    pub reset: bool,
    pub partitions: i32,
    pub replication_factor: i16,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("ran out of dates after {last}")]
    EndOfCalendar { last: String },
}

/// What a run sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ProduceSummary {
    pub days: u64,
    pub first: Option<Date>,
    pub last: Option<Date>,
}

pub async fn run(
    cluster: &Cluster,
    options: &ProduceOptions,
    shutdown: &Shutdown,
) -> Result<ProduceSummary, ProduceError> {
    let topic = &options.topic;
    if options.reset {
        cluster.delete_topic(topic).await?;
    }
    let partition_count = cluster
        .ensure_topic(topic, options.partitions, options.replication_factor)
        .await?;
    let mut partitions = Vec::with_capacity(partition_count as usize);
    for id in 0..partition_count {
        partitions.push(cluster.partition(topic, id).await?);
    }

    let extent = topic_extent(&partitions).await?;
    let last_written = extent.last;
    // Days between the topic's first date and a partition's own last date are already
    // there; any later day of a partition is missing, whatever other partitions hold.
    let start = extent.first.unwrap_or(options.start);
    if let Some(last) = last_written.values().max() {
        info!(
            "topic {topic} already holds days up to {}; resuming after it (--reset starts over)",
            format_date(*last)
        );
    }

    let weather = Weather::new(options.seed);
    let per_round = if options.delay.is_zero() {
        BURST_DAYS
    } else {
        1
    };
    let mut summary = ProduceSummary {
        days: 0,
        first: None,
        last: None,
    };
    let mut cursor = Some(start);
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut ticker = tokio::time::interval(options.delay.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !shutdown.is_requested() && options.count.is_none_or(|n| summary.days < n) {
        // Generate the next round of days, skipping any the topic already has.
        let mut round: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let mut in_round = 0u64;
        while in_round < per_round as u64
            && options.count.is_none_or(|n| summary.days + in_round < n)
        {
            let Some(date) = cursor else {
                return Err(ProduceError::EndOfCalendar {
                    last: summary.last.map(format_date).unwrap_or_default(),
                });
            };
            cursor = date.next_day();
            let key = month_name(date.month());
            let partition = partition_for(key.as_bytes(), partition_count);
            if last_written
                .get(&partition)
                .is_some_and(|last| date <= *last)
            {
                continue;
            }
            round
                .entry(partition)
                .or_default()
                .push(record(key, &weather, date));
            summary.first.get_or_insert(date);
            summary.last = Some(date);
            in_round += 1;
        }
        if !options.delay.is_zero() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.requested() => break,
            }
        }
        send_round(&partitions, round).await?;
        summary.days += in_round;

        if last_progress.elapsed() >= PROGRESS_EVERY {
            log_progress(&summary, started.elapsed());
            last_progress = Instant::now();
        }
    }
    log_progress(&summary, started.elapsed());
    Ok(summary)
}

fn record(key: &str, weather: &Weather, date: Date) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(prost::Message::encode_to_vec(&weather.report(date))),
        headers: BTreeMap::new(),
        timestamp: now(),
    }
}

/// The wall clock as a record timestamp (rskafka's chrono comes without its clock).
fn now() -> DateTime<Utc> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

/// Sends each partition's share of a round as one batch, all partitions at once.
async fn send_round(
    partitions: &[Partition],
    round: BTreeMap<i32, Vec<Record>>,
) -> Result<(), KafkaError> {
    let sends = round
        .into_iter()
        .map(|(id, records)| partitions[id as usize].produce(records));
    futures::future::try_join_all(sends).await?;
    Ok(())
}

fn log_progress(summary: &ProduceSummary, elapsed: Duration) {
    let rate = summary.days as f64 / elapsed.as_secs_f64().max(1e-3);
    match summary.last {
        Some(last) => info!(
            "sent {} days, up to {} ({rate:.0} days/s)",
            summary.days,
            format_date(last)
        ),
        None => info!("sent no days"),
    }
}

/// Where the days already in the topic begin and, per partition, end.
struct Extent {
    first: Option<Date>,
    last: BTreeMap<i32, Date>,
}

/// Reads each partition's first and last reports, scanning from either end in growing
/// windows, so a few foreign records at an end do not hide where our days are.
async fn topic_extent(partitions: &[Partition]) -> Result<Extent, KafkaError> {
    let mut extent = Extent {
        first: None,
        last: BTreeMap::new(),
    };
    for partition in partitions {
        let (earliest, latest) = partition.offsets().await?;
        if let Some(first) = edge_date(partition, earliest, latest, Edge::First).await? {
            extent.first = Some(extent.first.map_or(first, |f| f.min(first)));
        }
        if let Some(last) = edge_date(partition, earliest, latest, Edge::Last).await? {
            extent.last.insert(partition.id(), last);
        }
    }
    Ok(extent)
}

#[derive(Clone, Copy, PartialEq)]
enum Edge {
    First,
    Last,
}

/// The earliest (or latest) report date among the records nearest that end of the partition.
async fn edge_date(
    partition: &Partition,
    earliest: i64,
    latest: i64,
    edge: Edge,
) -> Result<Option<Date>, KafkaError> {
    let mut window = 64;
    let (mut low, mut high) = (earliest, latest);
    while low < high {
        let (from, to) = match edge {
            Edge::First => (low, (low + window).min(high)),
            Edge::Last => ((high - window).max(low), high),
        };
        let dates = read_range(partition, from, to)
            .await?
            .into_iter()
            .filter_map(|r| {
                DayReading::from_record(r.record.key.as_deref(), r.record.value.as_deref())
                    .ok()
                    .map(|reading| reading.date)
            });
        let found = match edge {
            Edge::First => dates.min(),
            Edge::Last => dates.max(),
        };
        if found.is_some() {
            return Ok(found);
        }
        match edge {
            Edge::First => low = to,
            Edge::Last => high = from,
        }
        window *= 4;
    }
    if latest > earliest && edge == Edge::Last {
        warn!(
            "partition {} holds {} records but no weather report",
            partition.id(),
            latest - earliest
        );
    }
    Ok(None)
}

/// Every record in `from..to`.
async fn read_range(
    partition: &Partition,
    from: i64,
    to: i64,
) -> Result<Vec<rskafka::record::RecordAndOffset>, KafkaError> {
    let mut records = Vec::new();
    let mut offset = from;
    while offset < to {
        let fetched = partition
            .fetch(offset, 1 << 20, Duration::from_millis(100))
            .await?;
        let Some(next) = fetched.records.last().map(|r| r.offset + 1) else {
            break;
        };
        records.extend(fetched.records.into_iter().filter(|r| r.offset < to));
        offset = next;
    }
    Ok(records)
}
