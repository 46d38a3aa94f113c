//! The one place retry delays are decided: exponential backoff with jitter, on a few named
//! curves, for rskafka's requests and ours alike.

use std::time::Duration;

/// Retries of one produced batch (or one connection attempt) before the producer gives up.
pub const DELIVERY_RETRIES: u32 = 10;

/// How long to wait before the next try; doubles after each failure up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            next: initial,
            max,
        }
    }

    /// The delay before the next try: the current step with up to ±25% jitter, so that
    /// clients that failed together do not all retry in the same instant.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// For loops that retry until stopped (fetching, finding a coordinator): quick at first,
    /// then every few seconds, so a returning broker is noticed soon.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// For the producer's bounded retries: `DELIVERY_RETRIES` tries spread over about 80 s,
    /// long enough for an Apache Kafka node to restart after a crash (log recovery and all, 20
    /// s and more on two loaded cores) or a new leader to be elected. The Java producer's
    /// `delivery.timeout.ms` (120 s) is the same idea.
    pub fn delivery() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// For rejoining a group that is rebalancing: the other members are seconds away.
    pub fn rejoin() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// rskafka's own retry policy for each request: the same curve, giving up after `deadline`.
/// With the defaults that is about ten tries before an error reaches us.
pub fn rskafka_config(deadline: Duration) -> rskafka::BackoffConfig {
    rskafka::BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        base: 2.0,
        deadline: Some(deadline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_retries_ride_out_a_broker_restart() {
        // Ten tries must span most of a minute even with the jitter at its lowest (-25%), or
        // a restarting Kafka node outlasts the producer.
        let mut backoff = Backoff::delivery();
        let total: Duration = (0..DELIVERY_RETRIES).map(|_| backoff.next_delay()).sum();
        assert!(total >= Duration::from_secs(45), "{total:?}");
    }

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        for (delay, step) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step.mul_f64(0.75) && *delay <= step.mul_f64(1.25),
                "{delay:?} vs {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(125));
    }
}
