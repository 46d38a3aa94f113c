//! Reading the topic itself, the way a skeptic checks what the programs claim.

use std::collections::BTreeMap;

use time::Date;
use weather_stream::kafka::Cluster;
use weather_stream::stats::DayReading;

use super::runtime;

/// Every report in the topic, per partition in offset order.
pub fn topic_days(cluster: &Cluster) -> BTreeMap<i32, Vec<DayReading>> {
    runtime().block_on(async {
        let count = cluster.require_topic("temperatures").await.unwrap();
        let mut days = BTreeMap::new();
        for id in 0..count {
            let partition = cluster.partition("temperatures", id).await.unwrap();
            let (earliest, end) = partition.offsets().await.unwrap();
            let mut readings = Vec::new();
            partition
                .scan(earliest, end, |r| {
                    if let Ok(day) =
                        DayReading::from_record(r.record.key.as_deref(), r.record.value.as_deref())
                    {
                        readings.push(day);
                    }
                })
                .await
                .unwrap();
            days.insert(id, readings);
        }
        days
    })
}

/// All dates in the topic, sorted, with duplicates kept.
pub fn all_dates(cluster: &Cluster) -> Vec<Date> {
    let mut dates: Vec<Date> = topic_days(cluster)
        .into_values()
        .flatten()
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
