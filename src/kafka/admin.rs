//! Topic administration on the wire: creating a topic with its configs (rskafka's CreateTopics
//! cannot carry any) and waiting until a deleted topic is really gone.

use std::ops::RangeInclusive;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::KafkaError;
use super::backoff::Backoff;
use super::metadata::{ClusterView, TopicInfo};
use super::security::{Operation, Resource, denied};
use super::wire::Connection;

const CREATE_TOPICS: RangeInclusive<i16> = 2..=7;
/// How long the broker may take to create a topic before it answers REQUEST_TIMED_OUT.
const CREATE_TIMEOUT_MS: i32 = 30_000;
/// How long a deleted topic may take to disappear (Kafka deletes in the background).
const DELETE_WAIT: Duration = Duration::from_secs(60);
/// How long a created topic may take to be listed, with a leader for every partition.
const CREATE_WAIT: Duration = Duration::from_secs(30);

/// The topic-level `min.insync.replicas` for a replication factor: with three copies, two
/// must have a write before it is acknowledged (one broker may be down, and an acknowledged
/// write survives losing any one). With fewer copies, one: the only setting that lets
/// acks=all writes through at all, whatever the cluster's default.
pub fn min_insync_replicas(replication_factor: i16) -> i16 {
    if replication_factor >= 3 { 2 } else { 1 }
}

/// What `create_topic` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Another client created it first (or it was never gone).
    AlreadyThere,
}

/// Creates `topic` with `configs`. A topic still being deleted is waited for.
pub async fn create_topic(
    view: &ClusterView,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, String)],
) -> Result<Created, KafkaError> {
    let action = format!("creating topic {topic}");
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(CREATE_TIMEOUT_MS)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(name, value)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string((*name).into()))
                                .with_value(Some(StrBytes::from_string(value.clone())))
                        })
                        .collect(),
                ),
        ]);
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    loop {
        let response = any_broker(view, &action)
            .await?
            .request(request.clone(), CREATE_TOPICS)
            .await
            .map_err(|e| KafkaError::wire(action.clone(), e))?;
        let Some(result) = response.topics.iter().find(|t| t.name.0.as_str() == topic) else {
            return Err(KafkaError::Refused {
                action,
                error: ResponseError::UnknownServerError,
            });
        };
        let message = result.error_message.as_ref().map(|m| m.to_string());
        match result.error_code.err() {
            None => return Ok(Created::Created),
            // Kafka answers this too while an earlier topic of the name is being deleted.
            Some(ResponseError::TopicAlreadyExists)
                if message
                    .as_deref()
                    .is_some_and(|m| m.contains("marked for deletion"))
                    && started.elapsed() < DELETE_WAIT =>
            {
                debug!("{topic}: the old topic is still being deleted; waiting");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Some(ResponseError::TopicAlreadyExists) => return Ok(Created::AlreadyThere),
            // Kafka creates a topic for whoever may CREATE on the cluster or on the topic, and
            // answers TOPIC_AUTHORIZATION_FAILED to the rest.
            Some(error) if denied::is_authorization(error) => {
                return Err(view.denied(
                    Operation::Create,
                    Resource::NewTopic(topic.into()),
                    error,
                ));
            }
            Some(error) => {
                return Err(KafkaError::RefusedWith {
                    action,
                    error,
                    message: message.unwrap_or_default(),
                });
            }
        }
    }
}

/// Waits until the cluster lists `topic` (after a create); `None` if it still does not after
/// `CREATE_WAIT`. Kafka's brokers learn of a topic from the controller's metadata log a moment
/// after CreateTopics answers, so a Metadata request in between says UNKNOWN_TOPIC_OR_PARTITION
/// (seen on 4.1.1 for a topic recreated right after its delete).
pub async fn wait_until_listed(
    view: &ClusterView,
    topic: &str,
) -> Result<Option<TopicInfo>, KafkaError> {
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    loop {
        let listed = view.topic(topic).await?;
        // Listed, and led: a partition without a leader yet cannot be written or read.
        let ready = listed
            .as_ref()
            .is_some_and(|t| t.partitions.values().all(|p| p.leader.is_some()));
        if ready || started.elapsed() > CREATE_WAIT {
            return Ok(listed);
        }
        debug!("{topic}: created, not listed yet; waiting");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Waits until the cluster no longer lists `topic` (after a delete).
pub async fn wait_until_gone(view: &ClusterView, topic: &str) -> Result<(), KafkaError> {
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    while view.topic(topic).await?.is_some() {
        if started.elapsed() > DELETE_WAIT {
            return Err(KafkaError::Refused {
                action: format!("deleting topic {topic} (still listed after {DELETE_WAIT:?})"),
                error: ResponseError::RequestTimedOut,
            });
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    Ok(())
}

/// A connection to the first bootstrap broker that takes one. Any broker of a KRaft cluster
/// forwards admin requests to the active controller.
async fn any_broker(view: &ClusterView, action: &str) -> Result<Connection, KafkaError> {
    let mut last = None;
    for address in view.bootstrap() {
        match view.open(address).await {
            Ok(connection) => return Ok(connection),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => KafkaError::wire(action.to_string(), e),
        None => KafkaError::BadAddress {
            address: String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_copies_need_two_in_sync_and_fewer_need_one() {
        assert_eq!(min_insync_replicas(1), 1);
        assert_eq!(min_insync_replicas(2), 1);
        assert_eq!(min_insync_replicas(3), 2);
        assert_eq!(min_insync_replicas(5), 2);
    }
}
