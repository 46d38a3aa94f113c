//! `weather produce`: one report a day, keyed by month, to the topic.
//!
//! On a topic that already holds days, it resumes where the topic ends: per month (the key)
//! it finds the last date written, wherever it is, and sends only that month's days after it
//! (from the topic's first date on). A producer stopped between two partitions' batches
//! therefore fills the hole on restart instead of leaving it, and doubles nothing. Following
//! the key rather than the partition is what keeps this true when the topic gets more
//! partitions (`kafka-topics --alter --partitions 6`): a month that moves to a partition holding
//! nothing of it yet continues after its last day in the old one, instead of starting over.
//!
//! The writing itself is `kafka::idempotent`: batches the broker writes once however often
//! they are sent, so a lost answer costs a resend, never a doubled day.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::{Date, Month};
use tracing::{info, warn};

use crate::kafka::idempotent::{Acked, BatchOptions, IdempotentProducer, Outgoing, SendError};
use crate::kafka::partitioner::partition_for;
use crate::kafka::security::Operation;
use crate::kafka::{Cluster, KafkaError, Partition};
use crate::report::{MONTHS, format_date, month_name};
use crate::shutdown::Shutdown;
use crate::stats::DayReading;
use crate::weather::Weather;

/// How often a progress line is logged when stderr is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often the live status line is redrawn on a terminal.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// New producer sessions in a row after the broker forgets our producer id.
const MAX_SESSIONS: u32 = 3;
/// After Ctrl-C, how long the batches already sent may take to be acknowledged before the
/// producer stops without them (a rerun resumes where the topic ends).
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("ran out of dates after {last}")]
    EndOfCalendar { last: String },
    /// Resuming reads the topic's last days, which needs READ; a producer's user often lacks it.
    #[error(
        "{} is not allowed to READ topic {topic} ({}), which the producer reads to resume after \
         the last day in it; ask the cluster's admin for an ACL allowing READ on topic {topic}, \
         or write to a new topic (--topic)",
        denied.principal,
        crate::kafka::security::denied::code_name(denied.error)
    )]
    CannotResume {
        topic: String,
        denied: Box<crate::kafka::security::Denied>,
    },
}

/// What a run wrote: days acknowledged by the broker, and the dates handed to it.
#[derive(Debug, Clone, Default, PartialEq)]
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
    let info = cluster
        .ensure_topic(topic, options.partitions, options.replication_factor)
        .await?;
    // WRITE before anything is read or said: without it, the refusal is the only line.
    cluster.check_allowed(topic, &info, Operation::Write)?;
    let partition_count = info.partitions.len() as i32;
    let mut partitions = Vec::with_capacity(partition_count as usize);
    for id in 0..partition_count {
        partitions.push(cluster.partition(topic, id).await?);
    }

    let mut summary = ProduceSummary::default();
    let started = Instant::now();
    let mut session = 0;
    // The topic as this run found it: which days the run is to write is fixed by it, so a
    // later session (after the broker forgot our producer id) writes the rest of the same
    // days, not `--count` more after whatever the first one left.
    let mut before: Option<Extent> = None;
    // The latest day the broker acknowledged, for the last line.
    let mut confirmed = None;
    loop {
        session += 1;
        // Read afresh for every session: a session that ended early may have written batches
        // whose answers never came.
        let extent = topic_extent(&partitions).await.map_err(|e| match e {
            KafkaError::Denied(denied) if denied.operation == Operation::Read => {
                ProduceError::CannotResume {
                    topic: topic.clone(),
                    denied,
                }
            }
            other => other.into(),
        })?;
        if let (1, Some(last)) = (session, extent.last.values().map(|l| l.date).max()) {
            info!(
                "topic {topic} already holds days up to {}; resuming after it (--reset starts over)",
                format_date(last)
            );
            let moved: Vec<String> = extent
                .last
                .iter()
                .filter_map(|(month, last)| {
                    let now = partition_for(month_name(*month).as_bytes(), partition_count);
                    (now != last.partition).then(|| {
                        format!(
                            "{} ({} → {now}, after {})",
                            month_name(*month),
                            last.partition,
                            format_date(last.date)
                        )
                    })
                })
                .collect();
            if !moved.is_empty() {
                info!(
                    "the topic has {partition_count} partitions now, so these months go to another partition than their last day: {}",
                    moved.join(", ")
                );
            }
        }
        let start = IdempotentProducer::start(
            cluster.view(),
            topic,
            partition_count,
            BatchOptions::default(),
        );
        let producer = tokio::select! {
            producer = start => producer?,
            () = shutdown.requested() => break,
        };
        let before = before.get_or_insert_with(|| extent.clone());
        let status = Status::start(producer.acked().clone(), summary.days, started);
        let plan = Plan::new(before, &extent, options.start, options.count);
        let generated = generate(&producer, plan, options, shutdown, &mut summary).await;
        let closed = producer
            .close(async {
                shutdown.requested().await;
                tokio::time::sleep(STOP_GRACE).await;
            })
            .await;
        let (days, last) = status.stop();
        summary.days = days;
        confirmed = confirmed.max(last);
        match (generated, closed) {
            (_, Err(SendError::ProducerIdLost { topic, partition })) if session < MAX_SESSIONS => {
                warn!(
                    "the broker forgot our producer id ({topic} partition {partition}); \
                     starting a new producer from where the topic ends"
                );
            }
            (_, Err(e @ SendError::Unconfirmed { .. })) => {
                warn!("{e}");
                break;
            }
            (_, Err(e)) => return Err(e.into()),
            (Err(e), Ok(())) => return Err(e),
            (Ok(()), Ok(())) => break,
        }
    }
    log_progress(summary.days, confirmed, started.elapsed());
    Ok(summary)
}

/// Hands the producer one day at a time, paced by `--delay-ms`: the days of `plan` that the
/// topic does not hold yet.
async fn generate(
    producer: &IdempotentProducer,
    mut plan: Plan<'_>,
    options: &ProduceOptions,
    shutdown: &Shutdown,
    summary: &mut ProduceSummary,
) -> Result<(), ProduceError> {
    let partition_count = producer.partitions();
    let weather = Weather::new(options.seed);
    let mut ticker = tokio::time::interval(options.delay.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !shutdown.is_requested() {
        let Some(date) = plan.next() else {
            if plan.calendar_ended() {
                return Err(ProduceError::EndOfCalendar {
                    last: summary.last.map(format_date).unwrap_or_default(),
                });
            }
            break;
        };
        let key = month_name(date.month());
        let partition = partition_for(key.as_bytes(), partition_count);
        if !options.delay.is_zero() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.requested() => break,
            }
        }
        let record = Outgoing::now(
            Bytes::from_static(key.as_bytes()),
            prost::Message::encode_to_vec(&weather.report(date)).into(),
            date.to_julian_day().into(),
        );
        // A stopped sender's own error comes from `close`, which the caller reads next. A
        // full queue (the broker is away) must not keep a stop waiting.
        let sent = tokio::select! {
            sent = producer.send(partition, record) => sent,
            () = shutdown.requested() => break,
        };
        if sent.is_err() {
            break;
        }
        summary.first.get_or_insert(date);
        summary.last = Some(date);
    }
    Ok(())
}

/// The days one run of the producer writes, in order: from where the topic began when the
/// run started (or `--start`), each day the topic did not hold then, `--count` of them (or
/// without end). A day of the plan that the topic holds now, written by an earlier session of
/// the same run whose acknowledgement never came, still counts towards `--count` but is not
/// handed out again.
struct Plan<'a> {
    before: &'a Extent,
    now: &'a Extent,
    cursor: Option<Date>,
    planned: u64,
    count: Option<u64>,
}

impl<'a> Plan<'a> {
    fn new(before: &'a Extent, now: &'a Extent, start: Date, count: Option<u64>) -> Self {
        Self {
            before,
            now,
            cursor: Some(before.first.unwrap_or(start)),
            planned: 0,
            count,
        }
    }

    /// Whether the plan stopped short of `--count` because the calendar ran out.
    fn calendar_ended(&self) -> bool {
        self.cursor.is_none() && self.count.is_none_or(|n| self.planned < n)
    }
}

impl Iterator for Plan<'_> {
    type Item = Date;

    fn next(&mut self) -> Option<Date> {
        while self.count.is_none_or(|n| self.planned < n) {
            let date = self.cursor?;
            self.cursor = date.next_day();
            if self.before.holds(date) {
                continue;
            }
            self.planned += 1;
            if !self.now.holds(date) {
                return Some(date);
            }
        }
        None
    }
}

/// Progress while the producer runs: a live line on a terminal, a log line every few seconds
/// otherwise. Counts only what the broker acknowledged.
struct Status {
    task: tokio::task::JoinHandle<()>,
    acked: Arc<Acked>,
    before: u64,
    /// Drawing a live line on a terminal, rather than logging.
    live: bool,
}

impl Status {
    fn start(acked: Arc<Acked>, before: u64, started: Instant) -> Self {
        let live = std::io::stderr().is_terminal();
        let every = if live { STATUS_EVERY } else { PROGRESS_EVERY };
        let watched = acked.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (days, last) = watched.get();
                let last = last.and_then(julian_date);
                if live {
                    let line = progress_line(before + days, last, started.elapsed());
                    let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
                } else {
                    log_progress(before + days, last, started.elapsed());
                }
            }
        });
        Self {
            task,
            acked,
            before,
            live,
        }
    }

    /// Stops the display; returns the days acknowledged in all sessions so far, and the
    /// latest of this session's.
    fn stop(self) -> (u64, Option<Date>) {
        self.task.abort();
        if self.live {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        let (days, last) = self.acked.get();
        (self.before + days, last.and_then(julian_date))
    }
}

/// The date an acknowledged record's id names.
fn julian_date(id: i64) -> Option<Date> {
    Date::from_julian_day(i32::try_from(id).ok()?).ok()
}

fn progress_line(days: u64, last: Option<Date>, elapsed: Duration) -> String {
    let rate = days as f64 / elapsed.as_secs_f64().max(1e-3);
    match last {
        Some(last) => format!(
            "sent {days} days, up to {} ({rate:.0} days/s)",
            format_date(last)
        ),
        None => "sent no days yet".into(),
    }
}

fn log_progress(days: u64, last: Option<Date>, elapsed: Duration) {
    info!("{}", progress_line(days, last, elapsed));
}

/// Where the days already in the topic begin and, per month, end.
#[derive(Debug, Clone)]
struct Extent {
    first: Option<Date>,
    /// Each month's last day written, and the partition that holds it.
    last: BTreeMap<Month, LastDay>,
}

impl Extent {
    /// Whether the topic holds `date`: our producer writes each month's days in order, so
    /// every day of a month up to its last one written is there (from the topic's first).
    fn holds(&self, date: Date) -> bool {
        self.last
            .get(&date.month())
            .is_some_and(|last| date <= last.date)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct LastDay {
    date: Date,
    partition: i32,
}

/// Reads where the topic's days begin (each partition's first report) and each month's last
/// day, scanning from either end in growing windows, so a few foreign records at an end do
/// not hide where our days are.
///
/// A month's last day is looked for in every partition, not only in the one its key goes to
/// now: the partition count may have grown since it was written. Each partition is read back
/// from its end only as far as can matter: our producer writes a partition's days in date
/// order, so the records before the oldest date read so far are older still, and can hold no
/// month's last day once every month's last day found is at least that old.
async fn topic_extent(partitions: &[Partition]) -> Result<Extent, KafkaError> {
    let mut extent = Extent {
        first: None,
        last: BTreeMap::new(),
    };
    let mut tails = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (earliest, latest) = partition.offsets().await?;
        if let Some(first) = first_date(partition, earliest, latest).await? {
            extent.first = Some(extent.first.map_or(first, |f| f.min(first)));
        }
        tails.push(Tail {
            partition,
            earliest,
            latest,
            from: latest,
            oldest: None,
            window: 64,
        });
    }
    loop {
        let mut read = false;
        for tail in &mut tails {
            if tail.may_hold_a_later_day(&extent.last) {
                tail.read_back(&mut extent.last).await?;
                read = true;
            }
        }
        if !read {
            break;
        }
    }
    for tail in &tails {
        if tail.oldest.is_none() && tail.latest > tail.earliest {
            warn!(
                "partition {} holds {} records but no weather report",
                tail.partition.id(),
                tail.latest - tail.earliest
            );
        }
    }
    Ok(extent)
}

/// How far back one partition has been read for `topic_extent`.
struct Tail<'a> {
    partition: &'a Partition,
    earliest: i64,
    latest: i64,
    /// Read from here to `latest`.
    from: i64,
    /// The oldest report date read so far.
    oldest: Option<Date>,
    window: i64,
}

impl Tail<'_> {
    /// Whether the records not yet read could still hold a month's last day.
    fn may_hold_a_later_day(&self, last: &BTreeMap<Month, LastDay>) -> bool {
        if self.from <= self.earliest {
            return false;
        }
        let Some(oldest) = self.oldest else {
            return true;
        };
        MONTHS
            .iter()
            .any(|month| last.get(month).is_none_or(|l| l.date < oldest))
    }

    /// Reads the next window back, noting each month's latest date in `last`.
    async fn read_back(&mut self, last: &mut BTreeMap<Month, LastDay>) -> Result<(), KafkaError> {
        let to = self.from;
        self.from = (to - self.window).max(self.earliest);
        self.window *= 4;
        let id = self.partition.id();
        let mut oldest = self.oldest;
        self.partition
            .scan(self.from, to, |r| {
                let Ok(reading) = DayReading::from_record(r.key.as_deref(), r.value.as_deref())
                else {
                    return;
                };
                let date = reading.date;
                oldest = Some(oldest.map_or(date, |o| o.min(date)));
                let known = last.get(&date.month()).is_some_and(|l| l.date >= date);
                if !known {
                    last.insert(
                        date.month(),
                        LastDay {
                            date,
                            partition: id,
                        },
                    );
                }
            })
            .await?;
        self.oldest = oldest;
        Ok(())
    }
}

/// The earliest report date among the records nearest the start of the partition.
async fn first_date(
    partition: &Partition,
    earliest: i64,
    latest: i64,
) -> Result<Option<Date>, KafkaError> {
    let mut window = 64;
    let mut low = earliest;
    while low < latest {
        let to = (low + window).min(latest);
        let mut first: Option<Date> = None;
        partition
            .scan(low, to, |r| {
                if let Ok(reading) = DayReading::from_record(r.key.as_deref(), r.value.as_deref()) {
                    first = Some(first.map_or(reading.date, |f| f.min(reading.date)));
                }
            })
            .await?;
        if first.is_some() {
            return Ok(first);
        }
        low = to;
        window *= 4;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    /// The topic holding every day from `first` to `last`, as our producer leaves it.
    fn holding(first: Date, last: Date) -> Extent {
        let mut months = BTreeMap::new();
        let mut day = first;
        while day <= last {
            months.insert(
                day.month(),
                LastDay {
                    date: day,
                    partition: 0,
                },
            );
            day = day.next_day().unwrap();
        }
        Extent {
            first: Some(first),
            last: months,
        }
    }

    fn empty() -> Extent {
        Extent {
            first: None,
            last: BTreeMap::new(),
        }
    }

    #[test]
    fn a_run_writes_count_days_after_what_the_topic_held() {
        let before = holding(date!(2000 - 01 - 01), date!(2000 - 01 - 10));
        let days: Vec<Date> = Plan::new(&before, &before, date!(1999 - 01 - 01), Some(3)).collect();
        assert_eq!(
            days,
            [
                date!(2000 - 01 - 11),
                date!(2000 - 01 - 12),
                date!(2000 - 01 - 13)
            ]
        );
    }

    #[test]
    fn a_later_session_writes_the_rest_of_the_same_days_not_count_more() {
        // The first session of a run with --count 10 on an empty topic wrote 7 days (some of
        // them never acknowledged) before the broker forgot its producer id.
        let before = empty();
        let now = holding(date!(2000 - 01 - 01), date!(2000 - 01 - 07));
        let days: Vec<Date> = Plan::new(&before, &now, date!(2000 - 01 - 01), Some(10)).collect();
        assert_eq!(
            days,
            [
                date!(2000 - 01 - 08),
                date!(2000 - 01 - 09),
                date!(2000 - 01 - 10)
            ]
        );
    }

    #[test]
    fn the_calendar_running_out_is_told_apart_from_the_count_reached() {
        let before = empty();
        let mut plan = Plan::new(&before, &before, Date::MAX.previous_day().unwrap(), Some(5));
        assert_eq!(plan.by_ref().count(), 2);
        assert!(plan.calendar_ended());
        let mut plan = Plan::new(&before, &before, date!(2000 - 01 - 01), Some(2));
        assert_eq!(plan.by_ref().count(), 2);
        assert!(!plan.calendar_ended());
    }
}
