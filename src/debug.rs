//! `weather debug`: a group member that prints every report it is assigned, one JSON object
//! a line, and commits how far it got.
//!
//! It starts where the group left off (committed offsets), else at the end of each partition,
//! so a new group only shows what arrives from now on; `--from-beginning` starts a new group at
//! the earliest offset instead. Printing is at-least-once: a member killed between printing and
//! its next commit has those lines printed again by whoever takes its partitions.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::consumer::FETCH_BYTES;
use crate::kafka::backoff::Backoff;
use crate::kafka::group::{self, Generation, GroupError, GroupOptions, Positions};
use crate::kafka::outage::OutageWatch;
use crate::kafka::security::Operation;
use crate::kafka::{Cluster, KafkaError, Partition, is_offset_out_of_range};
use crate::shutdown::Shutdown;
use crate::stats::DayReading;

#[derive(Debug, Clone)]
pub struct DebugOptions {
    pub group: GroupOptions,
    pub from_beginning: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
}

/// One printed line, fields in the documented order.
#[derive(Debug, Serialize)]
struct Line<'a> {
    partition: i32,
    key: &'a str,
    date: String,
    degrees: f64,
}

pub async fn run(
    cluster: &Cluster,
    options: &DebugOptions,
    shutdown: &Shutdown,
) -> Result<(), DebugError> {
    cluster
        .require_allowed(&options.group.topic, Operation::Read)
        .await?;
    let watch = OutageWatch::new("printing");
    group::run(cluster, &options.group, shutdown, async |generation| {
        print_generation(cluster, options, generation, &watch).await
    })
    .await
}

async fn print_generation(
    cluster: &Cluster,
    options: &DebugOptions,
    generation: Generation,
    watch: &OutageWatch,
) -> Result<(), DebugError> {
    let wait = cluster.flavor().default_fetch_wait();
    let mut runs = Vec::new();
    let mut starts = Vec::new();
    for &id in &generation.partitions {
        let partition = cluster.partition(&options.group.topic, id).await?;
        let start = match generation.resume.get(&id) {
            Some(&offset) => offset,
            None => {
                let (earliest, end) = partition.offsets().await?;
                if options.from_beginning {
                    earliest
                } else {
                    end
                }
            }
        };
        starts.push(format!("{id} at {start}"));
        runs.push(print_partition(
            partition,
            start,
            wait,
            watch,
            &generation.positions,
            &generation.stop,
        ));
    }
    // Tests wait for this line: from here on, a new record is printed.
    info!(
        "group {}: generation {} reading partition {}",
        options.group.group,
        generation.id,
        if starts.is_empty() {
            "none".to_string()
        } else {
            starts.join(", ")
        }
    );
    futures::future::try_join_all(runs).await?;
    Ok(())
}

async fn print_partition(
    partition: Partition,
    mut offset: i64,
    wait: Duration,
    watch: &OutageWatch,
    positions: &Positions,
    stop: &Shutdown,
) -> Result<(), DebugError> {
    let id = partition.id();
    let mut backoff = Backoff::default();
    positions.set(id, offset);
    while !stop.is_requested() {
        let fetched = tokio::select! {
            fetched = partition.fetch_watched(offset, FETCH_BYTES, wait, watch) => fetched,
            _ = stop.requested() => break,
        };
        match fetched {
            Ok(fetched) => {
                backoff.reset();
                let mut out = Vec::new();
                for r in &fetched.records {
                    match line(id, r.key.as_deref(), r.value.as_deref()) {
                        Ok(text) => {
                            out.extend_from_slice(text.as_bytes());
                            out.push(b'\n');
                        }
                        Err(reason) => {
                            warn!("partition {id} offset {}: skipped, {reason}", r.offset);
                        }
                    }
                    offset = r.offset + 1;
                }
                offset = offset.max(fetched.next_offset);
                // The whole batch is out before its offsets can be committed.
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&out)
                    .and_then(|()| stdout.flush())
                    .map_err(DebugError::Stdout)?;
                positions.set(id, offset);
            }
            Err(e) if is_offset_out_of_range(&e) => {
                let (earliest, end) = partition.offsets().await?;
                let next = offset.clamp(earliest, end);
                if next != offset {
                    warn!("partition {id}: offset {offset} no longer exists; continuing at {next}");
                    offset = next;
                } else {
                    // A leader that has just taken over and has not caught up yet.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.requested() => break,
                    }
                }
            }
            // No retry changes what the cluster allows us.
            Err(e) if e.denies_access() => return Err(e.into()),
            Err(e) => {
                let delay: Duration = backoff.next_delay();
                watch.lost(id, &format!("at offset {offset}: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.requested() => break,
                }
            }
        }
    }
    Ok(())
}

/// The JSON line for one record, or why it is not a report.
fn line(partition: i32, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<String, String> {
    let reading = DayReading::from_record(key, value)?;
    // from_record checked the key is a UTF-8 month name.
    let key = key.and_then(|k| std::str::from_utf8(k).ok()).unwrap_or("");
    serde_json::to_string(&Line {
        partition,
        key,
        date: reading.date.to_string(),
        degrees: reading.degrees,
    })
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;
    use prost::Message;

    #[test]
    fn a_report_prints_as_the_documented_line() {
        let value = Report {
            date: "2000-12-26".into(),
            degrees: 31.5235,
        }
        .encode_to_vec();
        assert_eq!(
            line(2, Some(b"December"), Some(&value)).unwrap(),
            r#"{"partition":2,"key":"December","date":"2000-12-26","degrees":31.5235}"#
        );
    }

    #[test]
    fn a_record_that_is_not_a_report_is_not_printed() {
        assert!(line(0, Some(b"December"), Some(b"\xff\xff")).is_err());
        assert!(line(0, None, None).is_err());
    }
}
