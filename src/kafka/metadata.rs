//! The one cluster view: which brokers there are, which leads each partition, and each topic's
//! id, from Metadata requests on the wire. Everything of ours that needs a leader or a topic's
//! shape asks here; a leader that stopped answering is forgotten (`leader_failed`) and looked
//! up afresh on the next ask. (rskafka's partition handles keep their own leader cache, which
//! it refreshes the same way on NOT_LEADER_OR_FOLLOWER and lost connections.)

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::Mutex;

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use super::KafkaError;
use super::security::{Denied, Operation, Resource, Security};
use super::wire::{Connection, WireError};

/// Version 4 is the first that can ask for no auto-creation; 8 and later can say what we may
/// do with a topic; 10 and later carry topic ids.
const METADATA_VERSIONS: RangeInclusive<i16> = 4..=12;

/// Kafka's codes of the ACL operations (`AclOperation`), the bits of `authorized`.
const ACL_DESCRIBE: u32 = 8;

fn acl_code(operation: Operation) -> u32 {
    match operation {
        Operation::Read => 3,
        Operation::Write => 4,
        Operation::Create => 5,
        Operation::Delete => 6,
        Operation::Describe => ACL_DESCRIBE,
    }
}

/// One topic as the cluster describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    /// The topic's id, where the broker gives one (Metadata v10+); all zeros otherwise.
    pub id: [u8; 16],
    pub partitions: BTreeMap<i32, PartitionInfo>,
    /// What the cluster's authorizer lets us do with the topic, as Kafka's bit field of ACL
    /// operations (Metadata v8+); `None` where the broker does not say.
    pub authorized: Option<i32>,
}

impl TopicInfo {
    /// False only when the broker said which operations we may do on the topic and `operation`
    /// is not among them. A broker that lists a topic to us lets us DESCRIBE it, so a field
    /// without that bit is taken as not filled in (Kafka sends every bit when it has no
    /// authorizer; another broker may send zero).
    pub fn allows(&self, operation: Operation) -> bool {
        let bit = |code: u32| 1i32.checked_shl(code).unwrap_or(0);
        match self.authorized {
            Some(ops) if ops & bit(ACL_DESCRIBE) != 0 => ops & bit(acl_code(operation)) != 0,
            _ => true,
        }
    }

    /// The id as Kafka prints it (URL-safe base64, no padding), `None` when the broker gave none.
    pub fn id_text(&self) -> Option<String> {
        (self.id != [0; 16]).then(|| base64_url(&self.id))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    /// The leader's node id; `None` while the partition has none (an election under way).
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub in_sync: Vec<i32>,
}

/// What the cluster said last, shared by everything that talks to it.
#[derive(Debug)]
pub struct ClusterView {
    bootstrap: Vec<String>,
    /// How every connection to this cluster is secured.
    security: Arc<Security>,
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Node id → host:port.
    brokers: BTreeMap<i32, String>,
    topics: HashMap<String, TopicInfo>,
}

impl ClusterView {
    /// A view of a cluster reached in plaintext, unauthenticated.
    pub fn new(bootstrap: Vec<String>) -> Self {
        Self::secured(bootstrap, Security::plaintext())
    }

    /// A view of a cluster whose every connection is secured as `security` says.
    pub fn secured(bootstrap: Vec<String>, security: Arc<Security>) -> Self {
        Self {
            bootstrap,
            security,
            known: Mutex::default(),
        }
    }

    /// A new connection to `address` with this cluster's TLS and SASL settings: the one way
    /// the library opens a wire connection.
    pub async fn open(&self, address: &str) -> Result<Connection, WireError> {
        Connection::open_with(address, &self.security).await
    }

    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// The refusal of `operation` on `resource` by this cluster's authorizer, for the
    /// principal these settings authenticate as.
    pub fn denied(
        &self,
        operation: Operation,
        resource: Resource,
        error: ResponseError,
    ) -> KafkaError {
        KafkaError::Denied(Box::new(Denied::new(
            self.security.principal(),
            operation,
            resource,
            error,
        )))
    }

    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// Asks the cluster about `topic` now; `None` when it does not exist.
    pub async fn topic(&self, topic: &str) -> Result<Option<TopicInfo>, KafkaError> {
        let response = self.ask(topic).await?;
        let mut known = self.lock();
        known.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let Some(described) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            known.topics.remove(topic);
            return Ok(None);
        };
        match described.error_code.err() {
            None => {}
            Some(ResponseError::UnknownTopicOrPartition) => {
                known.topics.remove(topic);
                return Ok(None);
            }
            // Metadata lists a topic only to those allowed to DESCRIBE it.
            Some(error @ ResponseError::TopicAuthorizationFailed) => {
                return Err(self.denied(Operation::Describe, Resource::Topic(topic.into()), error));
            }
            Some(error) => {
                return Err(KafkaError::Refused {
                    action: format!("describing topic {topic}"),
                    error,
                });
            }
        }
        let authorized = (described.topic_authorized_operations != i32::MIN)
            .then_some(described.topic_authorized_operations);
        let info = TopicInfo {
            id: *described.topic_id.as_bytes(),
            authorized,
            partitions: described
                .partitions
                .iter()
                .map(|p| {
                    let leader =
                        (p.error_code.is_ok() && p.leader_id.0 >= 0).then_some(p.leader_id.0);
                    let info = PartitionInfo {
                        leader,
                        replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                        in_sync: p.isr_nodes.iter().map(|n| n.0).collect(),
                    };
                    (p.partition_index, info)
                })
                .collect(),
        };
        known.topics.insert(topic.into(), info.clone());
        Ok(Some(info))
    }

    /// The address of `partition`'s leader: what the view knows, else what the cluster says now.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<String, KafkaError> {
        if let Some(address) = self.known_leader(topic, partition) {
            return Ok(address);
        }
        let no_leader = |reason: &str| KafkaError::NoLeader {
            topic: topic.into(),
            partition,
            reason: reason.into(),
        };
        let info = self
            .topic(topic)
            .await?
            .ok_or_else(|| no_leader("the topic does not exist"))?;
        let leader = info
            .partitions
            .get(&partition)
            .ok_or_else(|| no_leader("no such partition"))?
            .leader
            .ok_or_else(|| no_leader("the cluster names none (an election may be under way)"))?;
        self.known_leader(topic, partition)
            .ok_or_else(|| no_leader(&format!("node {leader} is not among the live brokers")))
    }

    /// Forgets `partition`'s leader after it stopped answering or said it no longer leads.
    pub fn leader_failed(&self, topic: &str, partition: i32) {
        if let Some(info) = self.lock().topics.get_mut(topic)
            && let Some(p) = info.partitions.get_mut(&partition)
        {
            p.leader = None;
        }
    }

    fn known_leader(&self, topic: &str, partition: i32) -> Option<String> {
        let known = self.lock();
        let leader = known
            .topics
            .get(topic)?
            .partitions
            .get(&partition)?
            .leader?;
        known.brokers.get(&leader).cloned()
    }

    /// One Metadata answer about `topic`, from the first broker that gives one: the brokers
    /// the cluster last named, then the bootstrap list.
    async fn ask(&self, topic: &str) -> Result<MetadataResponse, KafkaError> {
        let mut addresses: Vec<String> = self.lock().brokers.values().cloned().collect();
        addresses.extend(self.bootstrap.iter().cloned());
        addresses.dedup();
        let mut last = None;
        for address in &addresses {
            // Never create the topic as a side effect: `weather produce` creates it on purpose.
            let request = MetadataRequest::default()
                .with_allow_auto_topic_creation(false)
                .with_topics(Some(vec![
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
                ]));
            let answer = match self.open(address).await {
                Ok(connection) => {
                    // Asked for where the broker can say it, so a program can tell at start
                    // that it lacks READ or WRITE, before it does anything else.
                    let ask_operations = connection
                        .version::<MetadataRequest>(METADATA_VERSIONS)
                        .is_ok_and(|v| v >= 8);
                    let request = request.with_include_topic_authorized_operations(ask_operations);
                    connection.request(request, METADATA_VERSIONS).await
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(response) => return Ok(response),
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(KafkaError::wire(format!("describing topic {topic}"), e)),
            }
        }
        Err(KafkaError::Unreachable {
            brokers: addresses.join(","),
            reason: last.map_or_else(|| "no broker address".into(), |e| e.to_string()),
            waited: std::time::Duration::ZERO,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // Plain maps replaced whole: a panic cannot leave them half-changed.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// URL-safe base64 without padding, the way Kafka prints topic and cluster ids.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        let digits = chunk.len() + 1;
        for i in 0..digits {
            text.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_allows_what_the_authorizer_said_and_everything_when_it_said_nothing() {
        let with = |authorized| TopicInfo {
            id: [0; 16],
            partitions: BTreeMap::new(),
            authorized,
        };
        // Kafka's bits for the consumer of kafka-secure: READ (3), DESCRIBE (8),
        // DESCRIBE_CONFIGS (10).
        let consumer = with(Some(1 << 3 | 1 << 8 | 1 << 10));
        assert!(consumer.allows(Operation::Read));
        assert!(consumer.allows(Operation::Describe));
        assert!(!consumer.allows(Operation::Write));
        assert!(!consumer.allows(Operation::Create));
        let producer = with(Some(1 << 4 | 1 << 5 | 1 << 8 | 1 << 10));
        assert!(producer.allows(Operation::Write));
        assert!(!producer.allows(Operation::Read));
        // Not asked (before v8), or a broker that fills in nothing: no refusal of ours.
        assert!(with(None).allows(Operation::Write));
        assert!(with(Some(0)).allows(Operation::Read));
    }

    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        // Kafka's TopicCommand --describe printed "TopicId: ydkhtVCbR0u-DIR8A8fJhw" for a
        // topic with these id bytes.
        let id = [
            0xc9, 0xd9, 0x21, 0xb5, 0x50, 0x9b, 0x47, 0x4b, 0xbe, 0x0c, 0x84, 0x7c, 0x03, 0xc7,
            0xc9, 0x87,
        ];
        assert_eq!(base64_url(&id), "ydkhtVCbR0u-DIR8A8fJhw");
        assert_eq!(base64_url(b"\xff\xfe"), "__4");
    }
}
