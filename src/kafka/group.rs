//! Consumer group membership on the `kafka-protocol` messages: find the coordinator, join,
//! lead or follow the assignment, heartbeat, commit, leave.
//!
//! `run` is the whole life of a member. Each generation's partitions go to the caller's work,
//! which runs until its `stop` fires: on a rebalance (a heartbeat answered
//! REBALANCE_IN_PROGRESS), or at shutdown. The work is waited for before the member rejoins, so
//! a partition is given up only after the work on it has finished (the eager protocol: every
//! member lets go of everything before anyone gets anything new).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info, warn};

use super::assignor::{self, Assignor, Subscriber};
use super::backoff::Backoff;
use super::wire::{Connection, WireError};
use super::{Cluster, KafkaError};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub group: String,
    pub topic: String,
    /// How long the coordinator waits for a silent member before giving its partitions away.
    pub session_timeout: Duration,
}

impl GroupOptions {
    /// A third of the session timeout, Kafka's usual ratio: two heartbeats may be lost.
    fn heartbeat_interval(&self) -> Duration {
        self.session_timeout / 3
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("group {group}: {action} refused by the broker: {error}")]
    Refused {
        group: String,
        action: &'static str,
        error: ResponseError,
    },
    #[error("group {group}: {what}: {reason}")]
    Protocol {
        group: String,
        what: String,
        reason: String,
    },
}

impl GroupError {
    /// True when a new connection to the coordinator may succeed.
    fn is_transient(&self) -> bool {
        match self {
            Self::Wire(e) => e.is_transient(),
            Self::Refused { error, .. } => coordinator_moved(*error),
            _ => false,
        }
    }
}

/// Where the work has got to per partition: the offsets to commit.
#[derive(Debug, Clone, Default)]
pub struct Positions(Arc<Mutex<BTreeMap<i32, i64>>>);

impl Positions {
    /// Records that everything before `offset` in `partition` is done with.
    pub fn set(&self, partition: i32, offset: i64) {
        self.lock().insert(partition, offset);
    }

    fn snapshot(&self) -> BTreeMap<i32, i64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, i64>> {
        // A map of plain numbers cannot be left half-changed by a panic: recover it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One generation's share of the topic, handed to the work.
#[derive(Debug)]
pub struct Generation {
    pub id: i32,
    pub partitions: Vec<i32>,
    /// The group's committed offset per partition, where it has one.
    pub committed: BTreeMap<i32, i64>,
    /// Set by the work as it goes; committed on every heartbeat and when the generation ends.
    pub positions: Positions,
    /// Fires when the partitions are about to be taken away or the program stops.
    pub stop: Shutdown,
}

/// Why a generation ended.
enum Ending {
    Rebalance,
    Exit,
    WorkDone,
    Failed(GroupError),
}

/// Runs a member of `options.group` until `shutdown` or until the work fails, calling `work`
/// once per generation. Leaves the group on the way out, so others take over at once.
pub async fn run<E: From<GroupError>>(
    cluster: &Cluster,
    options: &GroupOptions,
    shutdown: &Shutdown,
    mut work: impl AsyncFnMut(Generation) -> Result<(), E>,
) -> Result<(), E> {
    let mut member = tokio::select! {
        connection = find_coordinator(cluster, options) => Member::new(connection?, options),
        _ = shutdown.requested() => return Ok(()),
    };
    loop {
        let joined = tokio::select! {
            joined = member.join_and_fetch(cluster) => joined,
            _ = shutdown.requested() => {
                member.leave().await;
                return Ok(());
            }
        };
        let (partitions, committed) = match joined {
            Ok(joined) => joined,
            Err(e) if e.is_transient() => {
                tokio::select! {
                    reconnected = member.reconnect(cluster, &e) => reconnected?,
                    _ = shutdown.requested() => return Ok(()),
                }
                continue;
            }
            Err(e) => {
                member.leave().await;
                return Err(e.into());
            }
        };
        info!(
            "group {}: generation {}, assigned partitions {partitions:?}",
            options.group, member.generation
        );
        let positions = Positions::default();
        let (trigger, stop) = Shutdown::new();
        let generation = Generation {
            id: member.generation,
            partitions,
            committed: committed.clone(),
            positions: positions.clone(),
            stop,
        };
        let mut last_committed = committed;
        let mut ticker = tokio::time::interval(options.heartbeat_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let job = work(generation);
        tokio::pin!(job);
        let mut result = None;
        let ending = loop {
            tokio::select! {
                done = &mut job => {
                    result = Some(done);
                    break Ending::WorkDone;
                }
                // The work waits while a beat is out: a millisecond on a live coordinator, and a
                // dead one ends the generation anyway.
                _ = ticker.tick() => {
                    member.commit(&positions, &mut last_committed).await;
                    match member.heartbeat().await {
                        Ok(true) => {}
                        Ok(false) => break Ending::Rebalance,
                        Err(e) => break Ending::Failed(e),
                    }
                }
                _ = shutdown.requested() => break Ending::Exit,
            }
        };
        // The work lets go of its partitions before anyone else may get them.
        trigger.trigger();
        let result = match result {
            Some(result) => result,
            None => job.await,
        };
        member.commit(&positions, &mut last_committed).await;
        match (result, ending) {
            (Err(e), _) => {
                member.leave().await;
                return Err(e);
            }
            (Ok(()), Ending::Failed(e)) if e.is_transient() => {
                tokio::select! {
                    reconnected = member.reconnect(cluster, &e) => reconnected?,
                    _ = shutdown.requested() => return Ok(()),
                }
            }
            (Ok(()), Ending::Failed(e)) => {
                member.leave().await;
                return Err(e.into());
            }
            (Ok(()), Ending::Exit | Ending::WorkDone) => {
                member.leave().await;
                return Ok(());
            }
            (Ok(()), Ending::Rebalance) => {
                info!("group {}: rebalancing, partitions released", options.group);
            }
        }
    }
}

/// A member's session with its group coordinator.
struct Member {
    connection: Connection,
    options: GroupOptions,
    member_id: String,
    generation: i32,
}

const FIND_COORDINATOR: std::ops::RangeInclusive<i16> = 1..=3;
/// From version 4 the broker hands out member ids (MEMBER_ID_REQUIRED) before accepting a join.
const JOIN_GROUP: std::ops::RangeInclusive<i16> = 4..=9;
/// Version 5 names the protocol in the request, which brokers check against the group's.
const SYNC_GROUP: std::ops::RangeInclusive<i16> = 5..=5;
const HEARTBEAT: std::ops::RangeInclusive<i16> = 3..=4;
const LEAVE_GROUP: std::ops::RangeInclusive<i16> = 3..=5;
const OFFSET_FETCH: std::ops::RangeInclusive<i16> = 1..=7;
const OFFSET_COMMIT: std::ops::RangeInclusive<i16> = 2..=8;
/// Rounds over the bootstrap brokers before giving up on finding the coordinator (about a minute).
const COORDINATOR_ATTEMPTS: u32 = 30;
/// Join attempts before a member gives up on a group that never settles.
const JOIN_ATTEMPTS: u32 = 50;

impl Member {
    fn new(connection: Connection, options: &GroupOptions) -> Self {
        Self {
            connection,
            options: options.clone(),
            member_id: String::new(),
            generation: -1,
        }
    }

    /// After a lost connection: finds the coordinator again, keeping the member id, so the
    /// rejoin is a rebalance of the same member rather than a new one.
    async fn reconnect(&mut self, cluster: &Cluster, cause: &GroupError) -> Result<(), GroupError> {
        warn!(
            "group {}: {cause}; finding the coordinator again",
            self.options.group
        );
        self.connection = find_coordinator(cluster, &self.options).await?;
        Ok(())
    }

    async fn join_and_fetch(
        &mut self,
        cluster: &Cluster,
    ) -> Result<(Vec<i32>, BTreeMap<i32, i64>), GroupError> {
        let partitions = self.join(cluster).await?;
        let committed = self.committed(&partitions).await?;
        Ok((partitions, committed))
    }

    /// Joins (or rejoins) and syncs until the group settles; returns this member's partitions.
    async fn join(&mut self, cluster: &Cluster) -> Result<Vec<i32>, GroupError> {
        let group = self.options.group.clone();
        let metadata = assignor::encode_subscription(std::slice::from_ref(&self.options.topic))
            .map_err(|reason| self.protocol("encoding our subscription", reason))?;
        let mut backoff = Backoff::rejoin();
        let held = self.generation;
        for _ in 0..JOIN_ATTEMPTS {
            let request = JoinGroupRequest::default()
                .with_group_id(StrBytes::from_string(group.clone()).into())
                .with_session_timeout_ms(millis(self.options.session_timeout))
                .with_rebalance_timeout_ms(millis(self.options.session_timeout))
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str(assignor::PROTOCOL_TYPE))
                .with_protocols(
                    Assignor::ALL
                        .iter()
                        .map(|a| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(a.name()))
                                .with_metadata(metadata.clone())
                        })
                        .collect(),
                );
            let joined = self.connection.request(request, JOIN_GROUP).await?;
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(e) if !coordinator_moved(e) && (e.is_retriable() || is_rebalance(e)) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Some(error) => {
                    return Err(GroupError::Refused {
                        group,
                        action: "JoinGroup",
                        error,
                    });
                }
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let protocol = joined
                .protocol_name
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let assignments = if joined.leader == joined.member_id {
                let assignor = Assignor::from_name(&protocol).ok_or_else(|| {
                    self.protocol("the group chose", format!("unknown assignor {protocol:?}"))
                })?;
                self.lead(cluster, assignor, &joined.members).await?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(StrBytes::from_string(group.clone()).into())
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(Some(StrBytes::from_static_str(assignor::PROTOCOL_TYPE)))
                .with_protocol_name(Some(StrBytes::from_string(protocol)))
                .with_assignments(assignments);
            let synced = self.connection.request(request, SYNC_GROUP).await?;
            match ResponseError::try_from_code(synced.error_code) {
                // A rebalance always makes a new generation. Tansu 0.6.0 can answer a rebalance
                // with the old one and the old assignment, where a dead member's partitions are
                // handed to no one: start again as a new member, which makes a new generation.
                None if held >= 0 && self.generation == held => {
                    warn!(
                        "group {group}: the coordinator kept generation {held} through a rebalance; rejoining as a new member"
                    );
                    self.leave().await;
                }
                None => {
                    let topics = assignor::decode_assignment(synced.assignment)
                        .map_err(|reason| self.protocol("decoding our assignment", reason))?;
                    return Ok(topics.get(&self.options.topic).cloned().unwrap_or_default());
                }
                Some(ResponseError::UnknownMemberId) => self.member_id.clear(),
                // The leader has not handed out this generation yet, or a newer one began.
                Some(e) if !coordinator_moved(e) && (e.is_retriable() || is_rebalance(e)) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Some(error) => {
                    return Err(GroupError::Refused {
                        group,
                        action: "SyncGroup",
                        error,
                    });
                }
            }
        }
        Err(self.protocol(
            "joining",
            format!("the group did not settle after {JOIN_ATTEMPTS} attempts"),
        ))
    }

    /// The leader's part: decode every member's subscription and assign the partitions.
    async fn lead(
        &self,
        cluster: &Cluster,
        assignor: Assignor,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, GroupError> {
        let mut subscribers = Vec::new();
        for m in members {
            let topics = assignor::decode_subscription(m.metadata.clone()).map_err(|reason| {
                self.protocol(&format!("subscription of member {}", m.member_id), reason)
            })?;
            subscribers.push(Subscriber {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics,
            });
        }
        let mut counts = BTreeMap::new();
        for topic in subscribers.iter().flat_map(|s| &s.topics) {
            if !counts.contains_key(topic)
                && let Some(count) = cluster.partition_count(topic).await?
            {
                counts.insert(topic.clone(), count);
            }
        }
        let assignment = assignor.assign(&subscribers, &counts);
        info!(
            "group {}: leading generation {} with {} ({} members)",
            self.options.group,
            self.generation,
            assignor.name(),
            subscribers.len()
        );
        assignment
            .iter()
            .map(|(member, topics)| {
                let bytes = assignor::encode_assignment(topics)
                    .map_err(|reason| self.protocol("encoding an assignment", reason))?;
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member.clone()))
                    .with_assignment(bytes))
            })
            .collect()
    }

    /// True while this member keeps its partitions; false when it must rejoin.
    async fn heartbeat(&mut self) -> Result<bool, GroupError> {
        let request = HeartbeatRequest::default()
            .with_group_id(StrBytes::from_string(self.options.group.clone()).into())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = self.connection.request(request, HEARTBEAT).await?;
        match ResponseError::try_from_code(response.error_code) {
            None => Ok(true),
            Some(ResponseError::UnknownMemberId) => {
                warn!(
                    "group {}: the coordinator dropped this member (session timed out); rejoining",
                    self.options.group
                );
                self.member_id.clear();
                Ok(false)
            }
            Some(e) if is_rebalance(e) => Ok(false),
            Some(e) if e.is_retriable() && !coordinator_moved(e) => {
                warn!("group {}: heartbeat: {e}", self.options.group);
                Ok(true)
            }
            Some(error) => Err(GroupError::Refused {
                group: self.options.group.clone(),
                action: "Heartbeat",
                error,
            }),
        }
    }

    /// The group's committed offsets for `partitions` of the topic (absent: none).
    async fn committed(&self, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, GroupError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let request = OffsetFetchRequest::default()
            .with_group_id(StrBytes::from_string(self.options.group.clone()).into())
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(StrBytes::from_string(self.options.topic.clone()).into())
                    .with_partition_indexes(partitions.to_vec()),
            ]));
        let response = self.connection.request(request, OFFSET_FETCH).await?;
        refused(&self.options.group, "OffsetFetch", response.error_code)?;
        let mut committed = BTreeMap::new();
        for topic in response.topics {
            if topic.name.0.as_str() != self.options.topic {
                continue;
            }
            for p in topic.partitions {
                refused(&self.options.group, "OffsetFetch", p.error_code)?;
                if p.committed_offset >= 0 {
                    committed.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        Ok(committed)
    }

    /// Commits the positions that moved since `last`. A failure is only a warning: the
    /// positions are committed again on the next beat, and a lost commit means re-reading.
    async fn commit(&self, positions: &Positions, last: &mut BTreeMap<i32, i64>) {
        let moved: BTreeMap<i32, i64> = positions
            .snapshot()
            .into_iter()
            .filter(|(p, offset)| last.get(p) != Some(offset))
            .collect();
        if moved.is_empty() {
            return;
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_string(self.options.group.clone()).into())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(StrBytes::from_string(self.options.topic.clone()).into())
                    .with_partitions(
                        moved
                            .iter()
                            .map(|(&p, &offset)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                            })
                            .collect(),
                    ),
            ]);
        let response = match self.connection.request(request, OFFSET_COMMIT).await {
            Ok(response) => response,
            Err(e) => {
                warn!("group {}: commit failed: {e}", self.options.group);
                return;
            }
        };
        for p in response.topics.iter().flat_map(|t| &t.partitions) {
            match ResponseError::try_from_code(p.error_code) {
                None => {
                    if let Some(&offset) = moved.get(&p.partition_index) {
                        last.insert(p.partition_index, offset);
                    }
                }
                Some(e) => warn!(
                    "group {}: commit of partition {} failed: {e}",
                    self.options.group, p.partition_index
                ),
            }
        }
    }

    /// Leaves the group so the others take over without waiting for the session timeout.
    async fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        let request = LeaveGroupRequest::default()
            .with_group_id(StrBytes::from_string(self.options.group.clone()).into())
            .with_members(vec![
                MemberIdentity::default()
                    .with_member_id(StrBytes::from_string(self.member_id.clone())),
            ]);
        match self.connection.request(request, LEAVE_GROUP).await {
            Ok(response) if response.error_code == 0 => {
                info!("group {}: left", self.options.group);
            }
            Ok(response) => warn!(
                "group {}: leaving: {:?}",
                self.options.group,
                ResponseError::try_from_code(response.error_code)
            ),
            Err(e) => warn!("group {}: leaving: {e}", self.options.group),
        }
        self.member_id.clear();
        self.generation = -1;
    }

    fn protocol(&self, what: &str, reason: String) -> GroupError {
        GroupError::Protocol {
            group: self.options.group.clone(),
            what: what.into(),
            reason,
        }
    }
}

/// Asks the bootstrap brokers which broker coordinates the group, and connects to it, trying
/// for a while: a restarting broker refuses connections, then answers COORDINATOR_NOT_AVAILABLE.
async fn find_coordinator(
    cluster: &Cluster,
    options: &GroupOptions,
) -> Result<Connection, GroupError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        let mut last = None;
        for address in cluster.brokers().split(',').map(str::trim) {
            match coordinator_via(address, options).await {
                Ok(connection) => return Ok(connection),
                Err(e) => last = Some(e),
            }
        }
        attempt += 1;
        match last {
            Some(e) if e.is_transient() && attempt < COORDINATOR_ATTEMPTS => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Some(e) => return Err(e),
            None => {
                return Err(GroupError::Protocol {
                    group: options.group.clone(),
                    what: "finding the coordinator".into(),
                    reason: "no broker address".into(),
                });
            }
        }
    }
}

async fn coordinator_via(address: &str, options: &GroupOptions) -> Result<Connection, GroupError> {
    let bootstrap = Connection::open(address).await?;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(options.group.clone()))
        .with_key_type(0);
    let response = bootstrap.request(request, FIND_COORDINATOR).await?;
    refused(&options.group, "FindCoordinator", response.error_code)?;
    let coordinator = format!("{}:{}", response.host, response.port);
    debug!("group {}: coordinator is {coordinator}", options.group);
    if coordinator == address {
        Ok(bootstrap)
    } else {
        Ok(Connection::open(&coordinator).await?)
    }
}

/// Errors that mean: ask again which broker coordinates the group.
fn coordinator_moved(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
    )
}

fn is_rebalance(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration
    )
}

fn refused(group: &str, action: &'static str, code: i16) -> Result<(), GroupError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(GroupError::Refused {
            group: group.into(),
            action,
            error,
        }),
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
