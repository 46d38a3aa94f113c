//! The client layer: everything that talks to brokers, one layer whatever carries the request.
//!
//! rskafka does what it supports (per-partition fetch, list offsets, topic deletion). What it
//! lacks is built on the `kafka-protocol` crate's messages over `wire` (one connection to one
//! broker): `metadata`, the one cluster view (brokers, leaders, topic ids); `admin`, topic
//! creation with configs; `idempotent`, the producer's write path; `group` with `assignor`,
//! consumer group membership. Callers see one error type, `KafkaError`, which says whether a
//! retry can help (`is_transient`), whichever side failed. Retries go through `backoff`;
//! partitioning through `partitioner`; every broker-specific workaround lives in `quirks`.

pub mod admin;
pub mod assignor;
pub mod backoff;
pub mod fetch;
pub mod group;
pub mod idempotent;
pub mod metadata;
pub mod outage;
pub mod partitioner;
pub mod quirks;
pub mod security;
pub mod wire;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use rskafka::client::{Client, ClientBuilder};
use tracing::{info, warn};

use crate::shutdown::Shutdown;
use backoff::Backoff;
use metadata::{ClusterView, TopicInfo};
use quirks::Flavor;
use security::{Operation, Resource, Security};
use wire::WireError;

pub use fetch::{Fetched, FetchedRecord, Partition, is_offset_out_of_range};

pub use rskafka::client::error::Error as ClientError;
pub use rskafka::client::error::ProtocolError;

/// The least time the first connection gets for its handshake once a broker took it, even
/// with `--wait 0` or at the end of the wait.
const FIRST_ANSWER_FLOOR: Duration = Duration::from_secs(3);

/// How long one request may keep retrying inside rskafka before we see the error.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("bad broker address {address:?}: expected host:port, as in 127.0.0.1:9092")]
    BadAddress { address: String },
    #[error(
        "cannot reach a broker at {brokers} ({reason}){}; {}",
        waited_for(*.waited),
        reach_hint(brokers)
    )]
    Unreachable {
        brokers: String,
        reason: String,
        waited: Duration,
    },
    #[error("topic {topic:?} does not exist on {brokers}; `weather produce` creates it")]
    NoTopic { topic: String, brokers: String },
    #[error("{action} failed: {source}")]
    Request {
        action: String,
        source: Box<ClientError>,
    },
    #[error("{action} failed: {source}")]
    Wire { action: String, source: WireError },
    #[error("{action}: the broker refused ({})", explain(*error))]
    Refused {
        action: String,
        error: ResponseError,
    },
    #[error("{action}: the broker refused ({}: {message})", explain(*error))]
    RefusedWith {
        action: String,
        error: ResponseError,
        message: String,
    },
    #[error("no leader for {topic} partition {partition}: {reason}")]
    NoLeader {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error(
        "{topic} partition {partition} at offset {offset}: the broker sent records that do not decode ({reason})"
    )]
    Corrupt {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The cluster's authorizer said no: never retried, one line naming who lacked what.
    #[error(transparent)]
    Denied(#[from] Box<security::Denied>),
    #[error("interrupted")]
    Interrupted,
}

impl KafkaError {
    fn request(action: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let action = action.into();
        move |source| Self::Request {
            action,
            source: Box::new(source),
        }
    }

    pub fn wire(action: impl Into<String>, source: WireError) -> Self {
        Self::Wire {
            action: action.into(),
            source,
        }
    }

    /// True when trying again may succeed: the broker is away, busy, or moving a leader.
    /// False when it said no for good (authorization, a bad request, a missing topic), so
    /// that retrying would only hide the reason. One rule for rskafka's requests and ours:
    /// Kafka's own retriable flag for the broker's error codes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::NoLeader { .. } => true,
            Self::Wire { source, .. } => source.is_transient(),
            Self::Refused { error, .. } | Self::RefusedWith { error, .. } => error.is_retriable(),
            Self::Request { source, .. } => match &**source {
                ClientError::ServerError { protocol_error, .. } => {
                    response_error(protocol_error).is_none_or(|e| e.is_retriable())
                }
                ClientError::InvalidResponse(_) => false,
                ClientError::Connection(_)
                | ClientError::Request(_)
                | ClientError::RetryFailed(_)
                | ClientError::Timeout => true,
                _ => true,
            },
            Self::BadAddress { .. }
            | Self::Denied(_)
            | Self::NoTopic { .. }
            | Self::Corrupt { .. }
            | Self::Interrupted => false,
        }
    }
}

impl KafkaError {
    /// True when the cluster refuses us access for good: an authorizer's no, credentials it
    /// does not take, a certificate we do not trust. Loops that ride out outages stop on these
    /// at once, since waiting cannot change them.
    pub fn denies_access(&self) -> bool {
        match self {
            Self::Denied(_) => true,
            Self::Wire { source, .. } => {
                matches!(
                    source,
                    WireError::Authentication(_) | WireError::NeedsSasl { .. }
                ) || matches!(source, WireError::Tls { .. } if !source.is_transient())
            }
            _ => false,
        }
    }
}

/// A broker's error as a person reads it: Kafka's name for it, then what it means.
pub fn explain(error: ResponseError) -> String {
    format!("{error:?}: {error}")
}

/// kafka-protocol's name for one of rskafka's protocol errors: both crates name Kafka's error
/// codes as Kafka does, and only kafka-protocol knows which codes Kafka calls retriable.
fn response_error(error: &ProtocolError) -> Option<ResponseError> {
    let name = format!("{error:?}");
    (-1..=150)
        .filter_map(ResponseError::try_from_code)
        .find(|e| format!("{e:?}") == name)
}

/// A connection to the cluster, from which topic and partition handles are made.
#[derive(Debug)]
pub struct Cluster {
    client: Client,
    brokers: String,
    view: Arc<ClusterView>,
    flavor: Flavor,
}

impl Cluster {
    /// Connects to `brokers` (comma-separated `host:port`) in plaintext, unauthenticated;
    /// see `connect_with`.
    pub async fn connect(
        brokers: &str,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Self, KafkaError> {
        Self::connect_with(brokers, Security::plaintext(), wait, shutdown).await
    }

    /// Connects to `brokers` (comma-separated `host:port`) with `security`'s TLS and SASL
    /// settings, waiting up to `wait` for one to accept connections, with a log line while it
    /// waits. The first connection is not retried past that: a certificate, a password or a
    /// protocol that does not match the listener is one line at once.
    pub async fn connect_with(
        brokers: &str,
        security: Arc<Security>,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Self, KafkaError> {
        let addresses: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        if addresses.is_empty() {
            return Err(KafkaError::BadAddress {
                address: brokers.into(),
            });
        }
        for address in &addresses {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(KafkaError::BadAddress {
                    address: address.clone(),
                });
            }
        }
        let started = tokio::time::Instant::now();
        let reachable = wait_until_reachable(&addresses, brokers, wait, shutdown).await?;
        tracing::debug!("connecting with {}", security.describe());
        let view = Arc::new(ClusterView::secured(addresses.clone(), security.clone()));
        // `--wait` bounds the first answer too, not only the TCP connect: a server that accepts
        // and never answers would otherwise hold us for the wire's 30 s request timeout. A
        // broker that took a connection late in the wait still gets the floor for its TLS,
        // ApiVersions and SASL.
        let deadline = (started + wait).max(tokio::time::Instant::now() + FIRST_ANSWER_FLOOR);
        let silent = || KafkaError::Unreachable {
            brokers: brokers.into(),
            reason: format!(
                "{reachable} accepted the connection but did not finish the Kafka handshake (TLS, ApiVersions, SASL): a stopped or stalled broker process?"
            ),
            waited: Duration::from_secs(started.elapsed().as_secs()),
        };
        let first = tokio::time::timeout_at(deadline, view.open(&reachable))
            .await
            .map_err(|_| silent())?
            .map_err(|e| KafkaError::wire(format!("connecting to {reachable}"), e))?;
        let flavor = first.flavor();
        if flavor != Flavor::ApacheKafka {
            tracing::debug!("{reachable} is {flavor:?}: its workarounds apply (kafka::quirks)");
        }
        // A SASL listener answers ApiVersions before authentication and hangs up on anything
        // else: one request of substance here turns that into a line about security.protocol.
        if security.sasl.is_none() {
            let probe = kafka_protocol::messages::MetadataRequest::default()
                .with_topics(Some(Vec::new()))
                .with_allow_auto_topic_creation(false);
            // Anything but a hang-up shows itself on the requests that follow, as before.
            let answer = tokio::time::timeout_at(deadline, first.request(probe, 4..=12))
                .await
                .map_err(|_| silent())?;
            if let Err(WireError::Closed { .. }) = answer {
                return Err(KafkaError::wire(
                    format!("connecting to {reachable}"),
                    WireError::NeedsSasl { address: reachable },
                ));
            }
        }
        drop(first);
        let mut builder = ClientBuilder::new(addresses.clone())
            .client_id("weather-stream")
            .backoff_config(backoff::rskafka_config(REQUEST_DEADLINE));
        if let Some(tls) = &security.tls {
            builder = builder.tls_config(tls.config());
        }
        if let Some(credentials) = &security.sasl {
            builder = builder.sasl_config(security::sasl::rskafka_config(credentials));
        }
        let client = builder.build().await.map_err(|e| KafkaError::Unreachable {
            brokers: brokers.into(),
            reason: e.to_string(),
            waited: REQUEST_DEADLINE,
        })?;
        Ok(Self {
            client,
            brokers: brokers.into(),
            view,
            flavor,
        })
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The bootstrap addresses, one `host:port` each.
    pub fn bootstrap(&self) -> &[String] {
        self.view.bootstrap()
    }

    /// The cluster view shared by everything talking to this cluster.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// Which broker this is, for the workarounds in `quirks`.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// What the cluster says of `topic` now, `None` when it does not exist.
    pub async fn describe(&self, topic: &str) -> Result<Option<TopicInfo>, KafkaError> {
        self.view.topic(topic).await
    }

    /// The number of partitions of `topic`, or `None` when it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<i32>, KafkaError> {
        Ok(self
            .describe(topic)
            .await?
            .map(|t| t.partitions.len() as i32))
    }

    /// Like `describe`, but a missing topic is an error that says how to make it.
    pub async fn require_described(&self, topic: &str) -> Result<TopicInfo, KafkaError> {
        self.describe(topic)
            .await?
            .ok_or_else(|| KafkaError::NoTopic {
                topic: topic.into(),
                brokers: self.brokers.clone(),
            })
    }

    /// Like `require_described`, and refused in one line when the cluster says that we may not
    /// do `operation` on the topic: checked before a program does anything else, so the
    /// refusal is its only line and its files stay as they are.
    pub async fn require_allowed(
        &self,
        topic: &str,
        operation: Operation,
    ) -> Result<TopicInfo, KafkaError> {
        let info = self.require_described(topic).await?;
        self.check_allowed(topic, &info, operation)?;
        Ok(info)
    }

    /// The refusal `require_allowed` makes, for a topic already described.
    pub fn check_allowed(
        &self,
        topic: &str,
        info: &TopicInfo,
        operation: Operation,
    ) -> Result<(), KafkaError> {
        if info.allows(operation) {
            return Ok(());
        }
        Err(self.view.denied(
            operation,
            Resource::Topic(topic.into()),
            kafka_protocol::ResponseError::TopicAuthorizationFailed,
        ))
    }

    /// Like `partition_count`, but a missing topic is an error that says how to make it.
    pub async fn require_topic(&self, topic: &str) -> Result<i32, KafkaError> {
        Ok(self.require_described(topic).await?.partitions.len() as i32)
    }

    /// Creates `topic` unless it exists, with the `min.insync.replicas` its replication factor
    /// calls for (`admin::min_insync_replicas`); returns what the cluster says of it either way.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<TopicInfo, KafkaError> {
        if let Some(existing) = self.describe(topic).await? {
            let count = existing.partitions.len() as i32;
            if count != partitions {
                warn!("topic {topic} has {count} partitions, not {partitions}; using it as it is");
            }
            return Ok(existing);
        }
        let min_insync = admin::min_insync_replicas(replication_factor);
        let configs = [("min.insync.replicas", min_insync.to_string())];
        let created =
            admin::create_topic(&self.view, topic, partitions, replication_factor, &configs)
                .await?;
        if created == admin::Created::Created {
            info!(
                "created topic {topic} ({partitions} partitions, replication factor {replication_factor}, min.insync.replicas {min_insync})"
            );
        }
        // Another client may have made it meanwhile with another shape: ask again, until
        // the broker lists it (`admin::wait_until_listed`).
        admin::wait_until_listed(&self.view, topic)
            .await?
            .ok_or_else(|| KafkaError::NoTopic {
                topic: topic.into(),
                brokers: self.brokers.clone(),
            })
    }

    /// Deletes `topic` if it exists, and waits until the cluster no longer lists it, so that
    /// a topic created next under the same name is a new one.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), KafkaError> {
        if self.partition_count(topic).await?.is_none() {
            return Ok(());
        }
        let controller = self
            .client
            .controller_client()
            .map_err(KafkaError::request("finding the controller"))?;
        match controller.delete_topic(topic, 10_000).await {
            Ok(())
            | Err(ClientError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            }) => {}
            Err(ClientError::ServerError {
                protocol_error: ProtocolError::TopicAuthorizationFailed,
                ..
            }) => {
                return Err(self.view.denied(
                    Operation::Delete,
                    Resource::Topic(topic.into()),
                    kafka_protocol::ResponseError::TopicAuthorizationFailed,
                ));
            }
            Err(e) => return Err(KafkaError::request(format!("deleting topic {topic}"))(e)),
        }
        admin::wait_until_gone(&self.view, topic).await?;
        info!("deleted topic {topic}");
        Ok(())
    }

    /// A handle on one partition, read through its leader (found when first used).
    pub async fn partition(&self, topic: &str, partition: i32) -> Result<Partition, KafkaError> {
        Ok(Partition::new(self.view.clone(), topic, partition))
    }
}

/// Tries each address until one accepts a TCP connection, backing off between rounds;
/// returns the one that did.
async fn wait_until_reachable(
    addresses: &[String],
    brokers: &str,
    wait: Duration,
    shutdown: &Shutdown,
) -> Result<String, KafkaError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::default();
    let mut announced = false;
    loop {
        let mut reason = String::new();
        for address in addresses {
            let resolved = address.to_socket_addrs().map(|mut a| a.next());
            let result = match resolved {
                Ok(Some(socket)) => tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(socket),
                )
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                .map(drop),
                Ok(None) => Err(std::io::ErrorKind::NotFound.into()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if announced {
                        info!("broker at {address} is up");
                    }
                    return Ok(address.clone());
                }
                Err(e) => reason = format!("{address}: {e}"),
            }
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Err(KafkaError::Unreachable {
                brokers: brokers.into(),
                reason,
                waited: Duration::from_secs(waited.as_secs()),
            });
        }
        let delay = backoff.next_delay().min(wait - waited);
        if !announced {
            warn!("waiting for a broker at {brokers} ({reason}); giving up after {wait:?}");
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.requested() => return Err(KafkaError::Interrupted),
        }
    }
}

/// What to do about an unreachable broker: start one, where it would be on this machine;
/// otherwise check the address, since `make up` cannot start a remote one.
fn reach_hint(brokers: &str) -> &'static str {
    let local = brokers.split(',').map(str::trim).all(|address| {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    });
    if local {
        "is it running? `make up` starts one"
    } else {
        "check the address (--brokers or KAFKA_BROKERS) and that the brokers are up and reachable from here"
    }
}

/// " after 12s" for the Unreachable message; nothing for a single try.
fn waited_for(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(" after {waited:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_says_how_long_it_waited_only_when_it_did() {
        let unreachable = |waited| {
            KafkaError::Unreachable {
                brokers: "127.0.0.1:9092".into(),
                reason: "connection refused".into(),
                waited,
            }
            .to_string()
        };
        let once = unreachable(Duration::ZERO);
        assert!(
            once.starts_with("cannot reach a broker at 127.0.0.1:9092 (connection refused); "),
            "{once}"
        );
        let waited = unreachable(Duration::from_secs(12));
        assert!(
            waited.contains("(connection refused) after 12s; "),
            "{waited}"
        );
    }

    /// A server that accepts every connection and never sends a byte, as a broker process
    /// stopped with SIGSTOP or a stalled proxy does.
    async fn accepts_and_never_answers() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (address, server)
    }

    #[tokio::test]
    async fn wait_bounds_the_first_answer_not_only_the_connect() {
        // Before the fix this took the wire's 30 s request timeout whatever --wait said.
        let (address, server) = accepts_and_never_answers().await;
        let started = std::time::Instant::now();
        let (_trigger, shutdown) = Shutdown::new();
        let result = Cluster::connect(&address, Duration::from_secs(2), &shutdown).await;
        let took = started.elapsed();
        server.abort();
        let error = result.expect_err("nothing answered");
        assert!(matches!(error, KafkaError::Unreachable { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("did not finish the Kafka handshake"),
            "{error}"
        );
        // Far below the 30 s it took before, however loaded the machine.
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }

    #[test]
    fn make_up_is_suggested_only_for_a_broker_on_this_machine() {
        assert!(reach_hint("127.0.0.1:9092,localhost:9094").contains("make up"));
        let remote = reach_hint("kafka-1.example.com:9092");
        assert!(!remote.contains("make up") && remote.contains("KAFKA_BROKERS"));
        assert!(!reach_hint("127.0.0.1:9092,10.0.0.5:9092").contains("make up"));
    }
}
