//! Every broker-specific workaround, named for the broker and version it is for, and nowhere
//! else. Apache Kafka is the reference: with it, none of these fire.
//!
//! Which broker answers is read once per connection from its ApiVersions answer (see
//! `Flavor::detect`), so a workaround can never fire on Apache Kafka because of a guess made
//! elsewhere.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// The broker on the other end, as far as a workaround cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Apache Kafka, or any broker that behaves like it where it matters here.
    ApacheKafka,
    /// Tansu 0.6.0, the embedded broker of `make up`.
    Tansu,
}

impl Flavor {
    /// Tells the brokers apart by what they offer: every Apache Kafka since 0.11 speaks
    /// OffsetForLeaderEpoch and EndTxn; Tansu 0.6.0 offers neither.
    pub fn detect(versions: &HashMap<i16, RangeInclusive<i16>>) -> Flavor {
        let offers = |api: ApiKey| versions.contains_key(&(api as i16));
        if offers(ApiKey::OffsetForLeaderEpoch) || offers(ApiKey::EndTxn) {
            Flavor::ApacheKafka
        } else {
            Flavor::Tansu
        }
    }

    /// How long a fetch waits at the end of a partition, unless the user said.
    ///
    /// Apache Kafka answers a fetch as soon as records arrive, so a long wait costs no latency
    /// and saves idle requests: 500 ms, the Java consumer's `fetch.max.wait.ms`. Tansu 0.6.0
    /// holds every fetch for its whole wait even when records arrive sooner, so there the
    /// wait is the latency: 10 ms, at the price of about a quarter of a core while idle.
    pub fn default_fetch_wait(self) -> Duration {
        match self {
            Flavor::ApacheKafka => Duration::from_millis(500),
            Flavor::Tansu => Duration::from_millis(10),
        }
    }

    /// The Fetch versions to offer. Tansu 0.6.0 answers Fetch v12 with tagged field 0 at the
    /// top level, which is NodeEndpoints, a field of v16 and later: kafka-protocol rightly
    /// refuses to decode it. Version 11, the last before tagged fields, is read correctly.
    pub fn fetch_versions(self, ours: RangeInclusive<i16>) -> RangeInclusive<i16> {
        match self {
            Flavor::ApacheKafka => ours,
            Flavor::Tansu => *ours.start()..=(*ours.end()).min(11),
        }
    }

    /// True when a SyncGroup answer cannot be trusted because the generation did not change
    /// through a rebalance (`held` is the generation this member had before rejoining).
    ///
    /// Tansu 0.6.0 can answer a rebalance with the old generation and the old assignment,
    /// where a dead member's partitions are handed to no one; rejoining as a new member makes
    /// it start a new generation. Apache Kafka legitimately gives a member that rejoins a
    /// stable group its generation back, so this never fires there.
    pub fn stale_generation(self, held: i32, got: i32) -> bool {
        self == Flavor::Tansu && held >= 0 && held == got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(apis: &[ApiKey]) -> HashMap<i16, RangeInclusive<i16>> {
        apis.iter().map(|&api| (api as i16, 0..=4)).collect()
    }

    #[test]
    fn tansu_is_told_from_apache_kafka_by_what_it_offers() {
        // Tansu 0.6.0's list, as BrokerApiVersionsCommand printed it (abridged).
        let tansu = offering(&[
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::Metadata,
            ApiKey::InitProducerId,
            ApiKey::AddPartitionsToTxn,
            ApiKey::TxnOffsetCommit,
        ]);
        assert_eq!(Flavor::detect(&tansu), Flavor::Tansu);
        let kafka = offering(&[
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::Metadata,
            ApiKey::OffsetForLeaderEpoch,
            ApiKey::EndTxn,
        ]);
        assert_eq!(Flavor::detect(&kafka), Flavor::ApacheKafka);
    }

    #[test]
    fn the_stale_generation_workaround_never_fires_on_apache_kafka() {
        assert!(Flavor::Tansu.stale_generation(3, 3));
        assert!(!Flavor::Tansu.stale_generation(3, 4));
        assert!(!Flavor::Tansu.stale_generation(-1, -1));
        assert!(!Flavor::ApacheKafka.stale_generation(3, 3));
    }

    #[test]
    fn fetch_stays_below_tagged_fields_on_tansu_only() {
        assert_eq!(Flavor::Tansu.fetch_versions(4..=12), 4..=11);
        assert_eq!(Flavor::ApacheKafka.fetch_versions(4..=12), 4..=12);
    }

    #[test]
    fn the_short_fetch_wait_is_for_tansu_only() {
        assert!(Flavor::ApacheKafka.default_fetch_wait() >= Duration::from_millis(500));
        assert!(Flavor::Tansu.default_fetch_wait() <= Duration::from_millis(10));
    }
}
