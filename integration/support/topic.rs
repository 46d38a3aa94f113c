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
}

/// Every report in the topic, read straight from the broker: the checker's view, not a
/// program's.
pub fn topic_days(cluster: &Cluster) -> BTreeMap<i32, PartitionDays> {
    runtime().block_on(async {
        let count = cluster.require_topic("temperatures").await.unwrap();
        let mut all = BTreeMap::new();
        for id in 0..count {
            let partition = cluster.partition("temperatures", id).await.unwrap();
            let (earliest, end) = partition.offsets().await.unwrap();
            let mut days = Vec::new();
            partition
                .scan(earliest, end, |r| {
                    days.extend(DayReading::from_record(r.key.as_deref(), r.value.as_deref()).ok());
                })
                .await
                .unwrap();
            all.insert(id, PartitionDays { end, days });
        }
        all
    })
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
