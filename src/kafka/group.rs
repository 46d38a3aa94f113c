//! Consumer group membership on the `kafka-protocol` messages: find the coordinator, join,
//! lead or follow the assignment, heartbeat, commit, leave.
//!
//! `run` is the whole life of a member. Each generation's partitions go to the caller's work,
//! which runs until its `stop` fires: on a rebalance (a heartbeat answered
//! REBALANCE_IN_PROGRESS), at shutdown, or when the member can no longer be sure it still
//! owns them. The work is waited for before the member rejoins, so a partition is given up
//! only after the work on it has finished (the eager protocol: every member lets go of
//! everything before anyone gets anything new).
//!
//! Heartbeats run beside the work. When the coordinator stops answering (a broker restarting,
//! leadership moving), the member looks for it again and keeps its partitions, as Kafka's own
//! client does, but only until its session would have expired: past that moment the
//! coordinator may have given them to another member, so the work stops first.

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
use super::security::{Operation, Resource};
use super::wire::{Connection, WireError};
use super::{Cluster, ClusterView, KafkaError};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub group: String,
    pub topic: String,
    /// How long the coordinator waits for a silent member before giving its partitions away.
    pub session_timeout: Duration,
}

/// How long the coordinator may wait for every member to rejoin during a rebalance. Our
/// members let go within a save; a Java member in the same group brings its own (five
/// minutes by default), and the coordinator waits for the longest.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a leader looks whether the topic's partition count changed.
const TOPIC_LOOK: Duration = Duration::from_secs(10);
/// Beyond the rebalance timeout, how long a JoinGroup may take before we call the connection
/// dead: the broker rightly holds the request until the group is complete, as the Java
/// client allows for.
const JOIN_MARGIN: Duration = Duration::from_secs(5);

impl GroupOptions {
    /// A third of the session timeout, Kafka's usual ratio: two heartbeats may be lost.
    fn heartbeat_interval(&self) -> Duration {
        self.session_timeout / 3
    }

    fn rebalance_timeout(&self) -> Duration {
        REBALANCE_TIMEOUT.max(self.session_timeout)
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
    #[error("group {group}: the coordinator did not answer within the session ({session:?})")]
    SessionLapsed { group: String, session: Duration },
}

impl GroupError {
    /// True when a new connection to the coordinator may succeed.
    fn is_transient(&self) -> bool {
        match self {
            Self::Wire(e) => e.is_transient(),
            Self::Kafka(e) => e.is_transient(),
            Self::Refused { error, .. } => coordinator_moved(*error),
            Self::SessionLapsed { .. } => true,
            Self::Protocol { .. } => false,
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
    /// Where to resume per partition, where known: the group's committed offset, or where this
    /// member itself got in an earlier generation when that is further (a commit lost to a
    /// coordinator outage must not make it skip or repeat what it already did).
    pub resume: BTreeMap<i32, i64>,
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

/// Where this member's work had got to, carried from one generation to the next.
type Reached = BTreeMap<i32, i64>;

/// Runs a member of `options.group` until `shutdown` or until the work fails, calling `work`
/// once per generation. Leaves the group on the way out, so others take over at once.
pub async fn run<E: From<GroupError>>(
    cluster: &Cluster,
    options: &GroupOptions,
    shutdown: &Shutdown,
    mut work: impl AsyncFnMut(Generation) -> Result<(), E>,
) -> Result<(), E> {
    let mut member = tokio::select! {
        connection = find_coordinator(cluster, options) => {
            Member::new(connection?, options, cluster.view().clone())
        }
        _ = shutdown.requested() => return Ok(()),
    };
    let mut reached = Reached::new();
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
        let mut resume = committed.clone();
        for p in &partitions {
            if let Some(&own) = reached.get(p) {
                let at = resume.entry(*p).or_insert(own);
                *at = (*at).max(own);
            }
        }
        let positions = Positions::default();
        let (trigger, stop) = Shutdown::new();
        let generation = Generation {
            id: member.generation,
            partitions,
            resume,
            positions: positions.clone(),
            stop,
        };
        let mut last_committed = committed;

        let job = work(generation);
        tokio::pin!(job);
        let (result, ending) = {
            let beats = member.keep_alive(cluster, &positions, &mut last_committed);
            tokio::pin!(beats);
            let mut result = None;
            let ending = loop {
                tokio::select! {
                    done = &mut job, if result.is_none() => match done {
                        Err(e) => {
                            result = Some(Err(e));
                            break Ending::WorkDone;
                        }
                        // Done with this generation's share (none at all, say, with more
                        // members than partitions): stay in the group, idle, so the next
                        // rebalance can give it some. Leaving would force a rebalance.
                        Ok(()) => result = Some(Ok(())),
                    },
                    ending = &mut beats => break ending,
                    _ = shutdown.requested() => break Ending::Exit,
                }
            };
            (result, ending)
        };
        // The work lets go of its partitions before anyone else may get them.
        trigger.trigger();
        let result = match result {
            Some(result) => result,
            None => job.await,
        };
        reached = positions.snapshot();
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
    /// The cluster as we connect to it, for the line that says what its authorizer refused.
    view: Arc<ClusterView>,
    member_id: String,
    generation: i32,
    /// As leader: the partition count of our topic the current assignment was made for
    /// (`None`: the topic was not there), to rebalance when it changes.
    led_for: Option<Option<i32>>,
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
/// Join attempts before a member gives up on a group that never settles.
const JOIN_ATTEMPTS: u32 = 50;

impl Member {
    fn new(connection: Connection, options: &GroupOptions, view: Arc<ClusterView>) -> Self {
        Self {
            connection,
            options: options.clone(),
            view,
            member_id: String::new(),
            generation: -1,
            led_for: None,
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

    /// Commits and heartbeats every interval while the work runs; returns when the generation
    /// must end. A coordinator that stops answering is looked for again meanwhile, for as long
    /// as this member's session can still be alive; every step is bounded by that moment.
    async fn keep_alive(
        &mut self,
        cluster: &Cluster,
        positions: &Positions,
        last_committed: &mut BTreeMap<i32, i64>,
    ) -> Ending {
        let session = self.options.session_timeout;
        let mut ticker = tokio::time::interval(self.options.heartbeat_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The coordinator counts the session from the last heartbeat it received; counting
        // from when ours was sent keeps this member's idea of it on the safe side.
        let mut alive_until = tokio::time::Instant::now() + session;
        let mut lost: Option<GroupError> = None;
        let mut next_look = tokio::time::Instant::now() + TOPIC_LOOK;
        loop {
            ticker.tick().await;
            // The leader looks now and then whether the topic has appeared or grown, as the
            // Java leader does: a rejoin by the leader makes the coordinator rebalance.
            if let Some(assigned) = self.led_for
                && tokio::time::Instant::now() >= next_look
            {
                next_look = tokio::time::Instant::now() + TOPIC_LOOK;
                if let Ok(now) = cluster.partition_count(&self.options.topic).await
                    && now != assigned
                {
                    info!(
                        "group {}: topic {} has {} partitions now ({} when assigned); rebalancing",
                        self.options.group,
                        self.options.topic,
                        now.unwrap_or(0),
                        assigned.unwrap_or(0)
                    );
                    return Ending::Rebalance;
                }
            }
            let sent = tokio::time::Instant::now();
            let beat = async {
                if lost.is_some() {
                    self.connection = find_coordinator_once(cluster, &self.options).await?;
                } else {
                    self.renew_if_expiring(cluster).await?;
                }
                self.commit(positions, last_committed).await;
                self.heartbeat().await
            };
            let answer = match tokio::time::timeout_at(alive_until, beat).await {
                Ok(answer) => answer,
                Err(_) => {
                    let why = lost.take().map_or_else(
                        || format!("no heartbeat answered for {session:?}"),
                        |e| e.to_string(),
                    );
                    warn!(
                        "group {}: {why}; the session has lapsed, letting go of the partitions",
                        self.options.group
                    );
                    return Ending::Failed(GroupError::SessionLapsed {
                        group: self.options.group.clone(),
                        session,
                    });
                }
            };
            match answer {
                Ok(true) => {
                    if lost.take().is_some() {
                        info!(
                            "group {}: the coordinator answers again; partitions kept",
                            self.options.group
                        );
                    }
                    alive_until = sent + session;
                }
                Ok(false) => return Ending::Rebalance,
                Err(e) if e.is_transient() => {
                    if lost.is_none() {
                        warn!(
                            "group {}: {e}; finding the coordinator again, keeping the partitions for up to {session:?}",
                            self.options.group
                        );
                    }
                    lost = Some(e);
                }
                Err(e) => return Ending::Failed(e),
            }
        }
    }

    async fn join_and_fetch(
        &mut self,
        cluster: &Cluster,
    ) -> Result<(Vec<i32>, BTreeMap<i32, i64>), GroupError> {
        // A rejoin may come long after the last heartbeat replaced the connection.
        self.renew_if_expiring(cluster).await?;
        let partitions = self.join(cluster).await?;
        let committed = self.committed(&partitions).await?;
        Ok((partitions, committed))
    }

    /// Replaces the coordinator connection before its SASL session ends (KIP-368).
    async fn renew_if_expiring(&mut self, cluster: &Cluster) -> Result<(), GroupError> {
        if self.connection.expiring() {
            debug!(
                "group {}: SASL session with the coordinator near its end; opening a new connection",
                self.options.group
            );
            self.connection = find_coordinator_once(cluster, &self.options).await?;
        }
        Ok(())
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
                .with_rebalance_timeout_ms(millis(self.options.rebalance_timeout()))
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
            let joined = self
                .connection
                .request_within(
                    request,
                    JOIN_GROUP,
                    self.options.rebalance_timeout() + JOIN_MARGIN,
                )
                .await?;
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
                Some(ResponseError::InvalidSessionTimeout) => {
                    return Err(self.protocol(
                        "joining",
                        format!(
                            "the broker does not accept a session timeout of {} ms (its group.min.session.timeout.ms and group.max.session.timeout.ms bound --session-timeout-ms)",
                            self.options.session_timeout.as_millis()
                        ),
                    ));
                }
                Some(error) => return Err(self.refusal("JoinGroup", error)),
            }
            self.member_id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let protocol = joined
                .protocol_name
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            self.led_for = None;
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
            // The leader's SyncGroup waits for nothing; a follower's waits for the leader's.
            let synced = self
                .connection
                .request_within(
                    request,
                    SYNC_GROUP,
                    self.options.rebalance_timeout() + JOIN_MARGIN,
                )
                .await?;
            match ResponseError::try_from_code(synced.error_code) {
                None if self
                    .connection
                    .flavor()
                    .stale_generation(held, self.generation) =>
                {
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
                Some(error) => return Err(self.refusal("SyncGroup", error)),
            }
        }
        Err(self.protocol(
            "joining",
            format!("the group did not settle after {JOIN_ATTEMPTS} attempts"),
        ))
    }

    /// The leader's part: decode every member's subscription and assign the partitions.
    async fn lead(
        &mut self,
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
        self.led_for = Some(counts.get(&self.options.topic).copied());
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
            Some(error) => Err(self.refusal("Heartbeat", error)),
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
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(self.refusal("OffsetFetch", error));
        }
        let mut committed = BTreeMap::new();
        for topic in response.topics {
            if topic.name.0.as_str() != self.options.topic {
                continue;
            }
            for p in topic.partitions {
                if let Some(error) = ResponseError::try_from_code(p.error_code) {
                    return Err(self.refusal("OffsetFetch", error));
                }
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

    fn refusal(&self, action: &'static str, error: ResponseError) -> GroupError {
        refusal(&self.view, &self.options, action, error)
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
/// until it succeeds: a restarting broker refuses connections, then answers
/// COORDINATOR_NOT_AVAILABLE. Callers race it against shutdown. An answer no retry can change
/// (the group is not ours to join) ends it.
async fn find_coordinator(
    cluster: &Cluster,
    options: &GroupOptions,
) -> Result<Connection, GroupError> {
    let mut backoff = Backoff::default();
    let mut said = false;
    loop {
        match find_coordinator_once(cluster, options).await {
            Ok(connection) => return Ok(connection),
            Err(e) if e.is_transient() => {
                if !said {
                    debug!(
                        "group {}: {e}; still looking for the coordinator",
                        options.group
                    );
                    said = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One round over the bootstrap brokers; the last error if none named a coordinator we
/// could connect to.
async fn find_coordinator_once(
    cluster: &Cluster,
    options: &GroupOptions,
) -> Result<Connection, GroupError> {
    let mut last = None;
    for address in cluster.bootstrap() {
        match coordinator_via(cluster, address, options).await {
            Ok(connection) => return Ok(connection),
            Err(e) if e.is_transient() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| GroupError::Protocol {
        group: options.group.clone(),
        what: "finding the coordinator".into(),
        reason: "no broker address".into(),
    }))
}

async fn coordinator_via(
    cluster: &Cluster,
    address: &str,
    options: &GroupOptions,
) -> Result<Connection, GroupError> {
    let view = cluster.view();
    let bootstrap = view.open(address).await?;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(options.group.clone()))
        .with_key_type(0);
    let response = bootstrap.request(request, FIND_COORDINATOR).await?;
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        return Err(refusal(view, options, "FindCoordinator", error));
    }
    let coordinator = format!("{}:{}", response.host, response.port);
    debug!("group {}: coordinator is {coordinator}", options.group);
    if coordinator == address {
        Ok(bootstrap)
    } else {
        Ok(view.open(&coordinator).await?)
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

/// The coordinator's `error` for `action`. An authorizer's no names what was lacking: READ on
/// the group for every group request (it covers DESCRIBE, which FindCoordinator needs), READ
/// on the topic for the offsets of its partitions.
fn refusal(
    view: &ClusterView,
    options: &GroupOptions,
    action: &'static str,
    error: ResponseError,
) -> GroupError {
    let resource = match error {
        ResponseError::GroupAuthorizationFailed => Resource::Group(options.group.clone()),
        ResponseError::TopicAuthorizationFailed => Resource::Topic(options.topic.clone()),
        _ => {
            return GroupError::Refused {
                group: options.group.clone(),
                action,
                error,
            };
        }
    };
    GroupError::Kafka(view.denied(Operation::Read, resource, error))
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
