//! The `consumer` group protocol's payloads and its two standard assignors.
//!
//! What members say in JoinGroup (a `ConsumerProtocolSubscription`) and what the leader hands
//! out in SyncGroup (a `ConsumerProtocolAssignment`) are the same bytes the Java client and
//! librdkafka use: a big-endian version, then the message at that version. The assignors give
//! the same answer as Java's `RangeAssignor` and `RoundRobinAssignor`, so a member written in any
//! of them can lead a group that we are in, and we can lead theirs.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

/// The group's protocol type for consumers.
pub const PROTOCOL_TYPE: &str = "consumer";
/// Version 1 adds owned partitions; every client since Kafka 2.4 reads it, and we decode any.
const ENCODE_VERSION: i16 = 1;

/// The assignors we offer, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
}

impl Assignor {
    pub const ALL: [Assignor; 2] = [Assignor::Range, Assignor::RoundRobin];

    pub fn name(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Partitions per member per topic. `partitions` holds the partition count of every topic
    /// some member subscribes to; a topic missing from it is not assigned.
    pub fn assign(self, members: &[Subscriber], partitions: &BTreeMap<String, i32>) -> Assignment {
        match self {
            Self::Range => range(members, partitions),
            Self::RoundRobin => round_robin(members, partitions),
        }
    }
}

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
}

/// member id → topic → partitions, each list ascending.
pub type Assignment = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// Java's member order: static members (by instance id) first, then by member id.
fn sorted(members: &[Subscriber]) -> Vec<&Subscriber> {
    let mut sorted: Vec<&Subscriber> = members.iter().collect();
    sorted.sort_by(|a, b| {
        let key = |m: &Subscriber| (m.group_instance_id.is_none(), m.group_instance_id.clone());
        key(a)
            .cmp(&key(b))
            .then_with(|| a.member_id.cmp(&b.member_id))
    });
    sorted
}

fn empty_assignment(members: &[Subscriber]) -> Assignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeMap::new()))
        .collect()
}

/// Per topic, consecutive runs of partitions; the first `count % members` members get one more.
fn range(members: &[Subscriber], partitions: &BTreeMap<String, i32>) -> Assignment {
    let mut assignment = empty_assignment(members);
    let members = sorted(members);
    for (topic, &count) in partitions {
        let subscribed: Vec<&&Subscriber> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        let Ok(n) = i32::try_from(subscribed.len()) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let (each, extra) = (count / n, count % n);
        for (i, member) in (0..).zip(subscribed) {
            let start = each * i + i.min(extra);
            let length = each + i32::from(i < extra);
            if length > 0
                && let Some(topics) = assignment.get_mut(&member.member_id)
            {
                topics.insert(topic.clone(), (start..start + length).collect());
            }
        }
    }
    assignment
}

/// Every partition of every topic in (topic, partition) order, dealt in turn to the next
/// member, skipping members not subscribed to its topic.
fn round_robin(members: &[Subscriber], partitions: &BTreeMap<String, i32>) -> Assignment {
    let mut assignment = empty_assignment(members);
    let members = sorted(members);
    let mut next = 0;
    for (topic, &count) in partitions {
        if !members.iter().any(|m| m.topics.contains(topic)) {
            continue;
        }
        for partition in 0..count {
            while !members[next % members.len()].topics.contains(topic) {
                next += 1;
            }
            let member = &members[next % members.len()].member_id;
            next += 1;
            if let Some(topics) = assignment.get_mut(member) {
                topics.entry(topic.clone()).or_default().push(partition);
            }
        }
    }
    assignment
}

/// The JoinGroup metadata for a member subscribed to `topics`.
pub fn encode_subscription(topics: &[String]) -> Result<Bytes, String> {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_versioned(&subscription, ENCODE_VERSION)
}

pub fn decode_subscription(metadata: Bytes) -> Result<Vec<String>, String> {
    let subscription: ConsumerProtocolSubscription = decode_versioned(metadata)?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// The SyncGroup payload for one member: its partitions per topic.
pub fn encode_assignment(topics: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, String> {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topics
            .iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(StrBytes::from_string(topic.clone()).into())
                    .with_partitions(partitions.clone())
            })
            .collect(),
    );
    encode_versioned(&assignment, ENCODE_VERSION)
}

/// A member's partitions per topic. Empty bytes are what a broker sends a member that the
/// leader gave nothing.
pub fn decode_assignment(payload: Bytes) -> Result<BTreeMap<String, Vec<i32>>, String> {
    if payload.is_empty() {
        return Ok(BTreeMap::new());
    }
    let assignment: ConsumerProtocolAssignment = decode_versioned(payload)?;
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for t in assignment.assigned_partitions {
        topics
            .entry(t.topic.0.to_string())
            .or_default()
            .extend(t.partitions);
    }
    for partitions in topics.values_mut() {
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(topics)
}

fn encode_versioned<T: Encodable>(message: &T, version: i16) -> Result<Bytes, String> {
    let mut buffer = BytesMut::new();
    buffer.put_i16(version);
    message
        .encode(&mut buffer, version)
        .map_err(|e| e.to_string())?;
    Ok(buffer.freeze())
}

/// A newer version than we know is read as the newest we know: later versions only append.
fn decode_versioned<T: Decodable + Message>(mut payload: Bytes) -> Result<T, String> {
    if payload.remaining() < 2 {
        return Err(format!("{} bytes is too short", payload.len()));
    }
    let version = payload.get_i16();
    if version < 0 {
        return Err(format!("version {version} is not valid"));
    }
    T::decode(&mut payload, version.min(T::VERSIONS.max)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> Subscriber {
        Subscriber {
            member_id: id.into(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn of(assignment: &Assignment, member: &str, topic: &str) -> Vec<i32> {
        assignment[member].get(topic).cloned().unwrap_or_default()
    }

    #[test]
    fn range_gives_runs_and_the_remainder_to_the_first_members() {
        let members = [
            member("b", &["t"]),
            member("a", &["t"]),
            member("c", &["t"]),
        ];
        let a = Assignor::Range.assign(&members, &counts(&[("t", 4)]));
        assert_eq!(of(&a, "a", "t"), vec![0, 1]);
        assert_eq!(of(&a, "b", "t"), vec![2]);
        assert_eq!(of(&a, "c", "t"), vec![3]);
    }

    #[test]
    fn range_works_per_topic_so_the_first_member_gets_more_of_each() {
        // Java's documented example: two members, two topics of three partitions.
        let members = [member("c0", &["t0", "t1"]), member("c1", &["t0", "t1"])];
        let a = Assignor::Range.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(of(&a, "c0", "t0"), vec![0, 1]);
        assert_eq!(of(&a, "c0", "t1"), vec![0, 1]);
        assert_eq!(of(&a, "c1", "t0"), vec![2]);
        assert_eq!(of(&a, "c1", "t1"), vec![2]);
    }

    #[test]
    fn round_robin_deals_across_topics_in_turn() {
        // Java's documented example, where round-robin evens out what range does not.
        let members = [member("c1", &["t0", "t1"]), member("c0", &["t0", "t1"])];
        let a = Assignor::RoundRobin.assign(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(of(&a, "c0", "t0"), vec![0, 2]);
        assert_eq!(of(&a, "c0", "t1"), vec![1]);
        assert_eq!(of(&a, "c1", "t0"), vec![1]);
        assert_eq!(of(&a, "c1", "t1"), vec![0, 2]);
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let members = [
            member("a", &["t0"]),
            member("b", &["t0", "t1"]),
            member("c", &["t2"]),
        ];
        let topics = counts(&[("t0", 2), ("t1", 2), ("t2", 1)]);
        for assignor in Assignor::ALL {
            let a = assignor.assign(&members, &topics);
            assert!(a["a"].keys().all(|t| t == "t0"), "{assignor:?}: {a:?}");
            assert_eq!(of(&a, "b", "t1"), vec![0, 1], "{assignor:?}");
            assert_eq!(of(&a, "c", "t2"), vec![0], "{assignor:?}");
            let mut t0 = [of(&a, "a", "t0"), of(&a, "b", "t0")].concat();
            t0.sort();
            assert_eq!(t0, vec![0, 1], "{assignor:?}");
        }
    }

    #[test]
    fn every_partition_goes_to_exactly_one_member() {
        for n in 1..=6 {
            let members: Vec<Subscriber> =
                (0..n).map(|i| member(&format!("m{i}"), &["t"])).collect();
            for assignor in Assignor::ALL {
                let a = assignor.assign(&members, &counts(&[("t", 4)]));
                let mut all: Vec<i32> = a.keys().flat_map(|m| of(&a, m, "t")).collect();
                all.sort();
                assert_eq!(all, vec![0, 1, 2, 3], "{assignor:?} with {n} members");
                assert_eq!(a.len(), n, "every member has an entry, even an empty one");
            }
        }
    }

    #[test]
    fn static_members_sort_before_dynamic_ones() {
        let mut late = member("a", &["t"]);
        late.group_instance_id = None;
        let mut fixed = member("z", &["t"]);
        fixed.group_instance_id = Some("instance-1".into());
        let a = Assignor::Range.assign(&[late, fixed], &counts(&[("t", 2)]));
        assert_eq!(of(&a, "z", "t"), vec![0]);
        assert_eq!(of(&a, "a", "t"), vec![1]);
    }

    #[test]
    fn subscription_bytes_are_the_standard_layout() {
        let bytes = encode_subscription(&["temperatures".into()]).unwrap();
        // version 1, one topic (i32 count, i16 length, name), null user data, no owned partitions.
        let mut expected = vec![0, 1, 0, 0, 0, 1, 0, 12];
        expected.extend_from_slice(b"temperatures");
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(decode_subscription(bytes).unwrap(), vec!["temperatures"]);
    }

    #[test]
    fn assignment_round_trips_and_empty_means_nothing() {
        let topics = BTreeMap::from([("temperatures".to_string(), vec![0, 2])]);
        let bytes = encode_assignment(&topics).unwrap();
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(decode_assignment(bytes).unwrap(), topics);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn newer_versions_decode_as_the_newest_known_and_garbage_is_an_error() {
        // A version-0 subscription body labelled as version 9 still reads (later versions append).
        let mut v0 = BytesMut::new();
        v0.put_i16(9);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .encode(&mut v0, 3)
            .unwrap();
        assert_eq!(decode_subscription(v0.freeze()).unwrap(), vec!["t"]);
        assert!(decode_subscription(Bytes::from_static(&[0])).is_err());
        assert!(decode_subscription(Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
        assert!(decode_assignment(Bytes::from_static(&[0xff, 0xff, 0])).is_err());
    }
}
