//! Outages told once: one line when the first partition loses its leader, one more for each
//! other cause the outage turns out to have (a lost connection, then NOT_ENOUGH_REPLICAS once
//! the cluster has shrunk its in-sync replicas), and one when the last partition gets an
//! answer again, however many partitions and retries it spans. Shared by the producer's
//! senders and the consumers' fetch loops.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tracing::{info, warn};

/// The partitions of one program that currently get no answer.
#[derive(Debug)]
pub struct OutageWatch {
    /// What the program is doing, for the lines: "writing", "reading".
    doing: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    down: BTreeSet<i32>,
    /// The causes already told during this outage.
    told: BTreeSet<String>,
}

impl OutageWatch {
    pub fn new(doing: &'static str) -> Self {
        Self {
            doing,
            state: Mutex::default(),
        }
    }

    /// `partition` gets no answer (`why`). The first partition to lose its leader says so;
    /// returns whether it did.
    pub fn lost(&self, partition: i32, why: &str) -> bool {
        self.lost_because(partition, "", why)
    }

    /// Like `lost`, for a failure of kind `cause` (an error's name): a cause not yet told
    /// during this outage is told too. Returns whether a line was written.
    pub fn lost_because(&self, partition: i32, cause: &str, why: &str) -> bool {
        let mut state = self.lock();
        let first = state.down.is_empty();
        let new_cause = !cause.is_empty() && !state.told.contains(cause);
        if first || new_cause {
            warn!("partition {partition}: {why}; retrying with backoff, nothing is lost meanwhile");
            state.told.insert(cause.to_string());
        }
        state.down.insert(partition);
        first || new_cause
    }

    /// `partition` got an answer, from `leader` where known. The last partition to get one
    /// back says so; returns whether it did.
    pub fn answered(&self, partition: i32, leader: Option<&str>) -> bool {
        let mut state = self.lock();
        let last = state.down.remove(&partition) && state.down.is_empty();
        if last {
            state.told.clear();
            let through = leader.map_or_else(String::new, |l| {
                format!(" (partition {partition} through {l})")
            });
            info!("answers again{through}; {} again", self.doing);
        }
        last
    }

    /// Whether any partition is waiting for an answer.
    pub fn any_down(&self) -> bool {
        !self.lock().down.is_empty()
    }

    /// Whether `partition` is waiting for an answer.
    pub fn is_down(&self, partition: i32) -> bool {
        self.lock().down.contains(&partition)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Sets of plain values cannot be left half-changed by a panic: recover them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn each_new_cause_of_an_outage_is_told_once() {
        let watch = OutageWatch::new("writing");
        assert!(watch.lost_because(0, "connection", "connection closed"));
        assert!(!watch.lost_because(1, "connection", "connection closed"));
        assert!(watch.lost_because(1, "NotEnoughReplicas", "not enough replicas"));
        assert!(!watch.lost_because(2, "NotEnoughReplicas", "not enough replicas"));
        for p in 0..3 {
            watch.answered(p, None);
        }
        // A new outage tells its causes afresh.
        assert!(watch.lost_because(0, "connection", "connection closed"));
        assert!(!watch.lost_because(0, "NotEnoughReplicas", "x") || watch.any_down());
    }
}
