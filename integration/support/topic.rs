//! Reading the topic itself, the way a skeptic checks what the programs claim.

use std::collections::BTreeMap;

use time::Date;
use weather_stream::kafka::Cluster;
use weather_stream::stats::DayReading;

use super::runtime;

/// One partition as the topic holds it: its end offset and every report in it, in order.
pub struct PartitionDays {
    pub end: i64,
    pub days: Vec<DayReading>,
    /// The offsets of records that do not decode as reports (a test that writes junk on
    /// purpose expects them; everywhere else there are none).
    pub not_reports: Vec<i64>,
}

/// Every report in the topic, read straight from the broker: the checker's view, not a
/// program's. Insists that every record is a report and that each partition's end offset is
/// its number of days, so a record that fails to decode, or a read that stops short, cannot
/// make a topic look right.
pub fn topic_days(cluster: &Cluster) -> BTreeMap<i32, PartitionDays> {
    let topic = topic_records(cluster);
    for (id, partition) in &topic {
        assert!(
            partition.not_reports.is_empty(),
            "partition {id}: records at offsets {:?} are not reports",
            partition.not_reports
        );
        assert_eq!(
            partition.end,
            partition.days.len() as i64,
            "partition {id}: the end offset is not the number of days read"
        );
    }
    topic
}

/// Every record in the topic, reports decoded and the others kept by offset; insists only
/// that the read saw every offset from the earliest to the end.
pub fn topic_records(cluster: &Cluster) -> BTreeMap<i32, PartitionDays> {
    runtime().block_on(async {
        let count = cluster.require_topic("temperatures").await.unwrap();
        let mut all = BTreeMap::new();
        for id in 0..count {
            let partition = cluster.partition("temperatures", id).await.unwrap();
            let (earliest, end) = partition.offsets().await.unwrap();
            let (mut days, mut not_reports, mut read) = (Vec::new(), Vec::new(), 0);
            partition
                .scan(earliest, end, |r| {
                    read += 1;
                    match DayReading::from_record(r.key.as_deref(), r.value.as_deref()) {
                        Ok(day) => days.push(day),
                        Err(_) => not_reports.push(r.offset),
                    }
                })
                .await
                .unwrap();
            assert_eq!(
                read,
                end - earliest,
                "partition {id}: read {read} records from offset {earliest} to {end}"
            );
            all.insert(
                id,
                PartitionDays {
                    end,
                    days,
                    not_reports,
                },
            );
        }
        all
    })
}

/// Each partition's end offset, read straight from the broker (cheap enough to poll); none
/// while the topic does not exist.
pub fn ends(cluster: &Cluster) -> BTreeMap<i32, i64> {
    runtime().block_on(async {
        let count = cluster.partition_count("temperatures").await.unwrap();
        let mut ends = BTreeMap::new();
        for id in 0..count.unwrap_or(0) {
            let partition = cluster.partition("temperatures", id).await.unwrap();
            ends.insert(id, partition.offsets().await.unwrap().1);
        }
        ends
    })
}

/// The number of records in the topic, over connections kept open, so a test can poll it
/// often while a producer runs flat out.
pub struct Growth {
    runtime: tokio::runtime::Runtime,
    partitions: Vec<weather_stream::kafka::Partition>,
}

impl Growth {
    pub fn new(cluster: &Cluster) -> Growth {
        let runtime = runtime();
        let partitions = runtime.block_on(async {
            let count = cluster.require_topic("temperatures").await.unwrap();
            let mut partitions = Vec::new();
            for id in 0..count {
                partitions.push(cluster.partition("temperatures", id).await.unwrap());
            }
            partitions
        });
        Growth {
            runtime,
            partitions,
        }
    }

    /// Records in the topic now: the sum of the partitions' end offsets.
    pub fn records(&self) -> i64 {
        self.runtime.block_on(async {
            let mut total = 0;
            for partition in &self.partitions {
                total += partition.offsets().await.unwrap().1;
            }
            total
        })
    }

    /// Records in the topic once two counts half a second apart agree: a producer killed
    /// with requests on the wire may still have them appended after it died.
    pub fn settled(&self) -> i64 {
        let mut last = self.records();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = self.records();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// All dates in the topic, sorted, with duplicates kept.
pub fn all_dates(cluster: &Cluster) -> Vec<Date> {
    let mut dates: Vec<Date> = topic_days(cluster)
        .into_values()
        .flat_map(|p| p.days)
        .map(|d| d.date)
        .collect();
    dates.sort();
    dates
}

pub fn consecutive(from: Date, days: usize) -> Vec<Date> {
    std::iter::successors(Some(from), |d| d.next_day())
        .take(days)
        .collect()
}
