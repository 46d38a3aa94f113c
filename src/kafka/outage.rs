//! Outages told once: one line when the first partition loses its leader, one when the last
//! gets an answer again, however many partitions and retries the outage spans. Shared by the
//! producer's senders and the consumers' fetch loops.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tracing::{info, warn};

/// The partitions of one program that currently get no answer.
#[derive(Debug)]
pub struct OutageWatch {
    /// What the program is doing, for the lines: "writing", "reading".
    doing: &'static str,
    down: Mutex<BTreeSet<i32>>,
}

impl OutageWatch {
    pub fn new(doing: &'static str) -> Self {
        Self {
            doing,
            down: Mutex::default(),
        }
    }

    /// `partition` gets no answer (`why`). The first partition to lose its leader says so;
    /// returns whether it did.
    pub fn lost(&self, partition: i32, why: &str) -> bool {
        let mut down = self.lock();
        let first = down.is_empty();
        if first {
            warn!("partition {partition}: {why}; retrying with backoff, nothing is lost meanwhile");
        }
        down.insert(partition);
        first
    }

    /// `partition` got an answer, from `leader` where known. The last partition to get one
    /// back says so; returns whether it did.
    pub fn answered(&self, partition: i32, leader: Option<&str>) -> bool {
        let mut down = self.lock();
        let last = down.remove(&partition) && down.is_empty();
        if last {
            let through = leader.map_or_else(String::new, |l| {
                format!(" (partition {partition} through {l})")
            });
            info!("answers again{through}; {} again", self.doing);
        }
        last
    }

    /// Whether any partition is waiting for an answer.
    pub fn any_down(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Whether `partition` is waiting for an answer.
    pub fn is_down(&self, partition: i32) -> bool {
        self.lock().contains(&partition)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        // A set of plain numbers cannot be left half-changed by a panic: recover it.
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_by_the_first_partition_to_lose_the_broker_and_the_last_to_regain_it() {
        let watch = OutageWatch::new("reading");
        assert!(!watch.answered(0, None), "nothing was down");
        assert!(watch.lost(0, "refused"));
        assert!(!watch.lost(1, "refused"));
        assert!(!watch.lost(0, "refused again"));
        // A partition that was never down answering says nothing of the others.
        assert!(!watch.answered(2, None));
        assert!(!watch.answered(0, None));
        assert!(watch.any_down() && watch.is_down(1) && !watch.is_down(0));
        assert!(watch.answered(1, Some("127.0.0.1:9094")));
        assert!(!watch.answered(1, None));
        assert!(!watch.any_down());
        assert!(watch.lost(3, "the next outage"));
    }
}
