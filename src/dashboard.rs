//! `weather serve`: the live dashboard, one page over HTTP.
//!
//! The page is `dashboard.html`, compiled into the binary (no build step, nothing fetched
//! from the internet). Its chart is the SVG from `plot`, pushed with server-sent events:
//! a watcher looks at the partition files' size and mtime every 200 ms, and every change
//! sends each open page a fresh snapshot. Files are read with the checkpoint loader; they
//! are replaced by rename, so a read sees the old file or the new one, never half of one.
//! Lag comes from a background task that asks the broker for end offsets; the pages never
//! wait on the broker, and an unreachable one is shown, not fatal. With `--from-kafka` the
//! same task reads the newest snapshot of every partition from the changelog every second
//! (`changelog`) instead of the folder, so a dashboard on any machine shows the whole topic.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::checkpoint::{self, Checkpoint, CheckpointError, StatsJson};
use crate::kafka::{Cluster, KafkaError, Partition};
use crate::plot;
use crate::report::{MONTHS, format_date};
use crate::shutdown::Shutdown;
use crate::stats::PartitionStats;

const PAGE: &str = include_str!("dashboard.html");
const WATCH_EVERY: Duration = Duration::from_millis(200);
const BROKER_EVERY: Duration = Duration::from_secs(1);
/// Longest the broker task waits on one request before calling the broker unreachable.
const BROKER_DEADLINE: Duration = Duration::from_secs(5);

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Read the changelog, not `state_dir`.
    pub from_kafka: bool,
    pub brokers: String,
    /// How the connections to the brokers are secured (TLS, SASL).
    pub security: std::sync::Arc<crate::kafka::security::Security>,
    pub topic: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen on {address}: {source}; pick another address with --listen")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the dashboard server stopped: {0}")]
    Serve(std::io::Error),
}

/// What the broker task last learned: the topic's end offsets, or why there are none.
#[derive(Debug, Clone, PartialEq)]
enum BrokerView {
    Connecting,
    Unreachable(String),
    NoTopic,
    Ends(BTreeMap<i32, i64>),
}

struct Shared {
    options: ServeOptions,
    broker: Mutex<BrokerView>,
    /// Partitions that ever had a file, so one that disappears shows as missing.
    seen: Mutex<BTreeSet<i32>>,
    /// With `--from-kafka`: the changelog's newest snapshots, as last read.
    snapshots: Mutex<BTreeMap<i32, Checkpoint>>,
    /// Bumped on every change to the files or the broker's view; pages follow it.
    changes: watch::Sender<u64>,
    shutdown: Shutdown,
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// What the statistics are read from, as the page and the log name it.
    fn source(&self) -> String {
        if self.options.from_kafka {
            format!(
                "changelog {}",
                crate::changelog::topic_for(&self.options.topic)
            )
        } else {
            self.options.state_dir.display().to_string()
        }
    }

    fn broker_view(&self) -> BrokerView {
        self.broker
            .lock()
            .map(|view| view.clone())
            .unwrap_or(BrokerView::Connecting)
    }
}

/// Serves the dashboard until `shutdown` fires.
pub async fn run(options: ServeOptions, shutdown: &Shutdown) -> Result<(), DashboardError> {
    let address = options.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DashboardError::Bind { address, source })?;
    let bound = listener.local_addr().unwrap_or(address);
    let shared = Arc::new(Shared {
        options,
        broker: Mutex::new(BrokerView::Connecting),
        seen: Mutex::new(BTreeSet::new()),
        snapshots: Mutex::new(BTreeMap::new()),
        changes: watch::channel(0).0,
        shutdown: shutdown.clone(),
    });
    if !shared.options.from_kafka {
        tokio::spawn(watch_files(shared.clone()));
    }
    tokio::spawn(follow_broker(shared.clone()));
    info!(
        "dashboard on http://{bound}/ for {} (Ctrl-C stops)",
        shared.source()
    );
    let stop = shutdown.clone();
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move { stop.requested().await })
        .await
        .map_err(DashboardError::Serve)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/stats", get(stats_route))
        .route("/api/status", get(status_route))
        .route("/chart.svg", get(chart_route))
        .route("/events", get(events_route))
        .with_state(shared)
}

#[derive(Debug, Deserialize)]
struct YearQuery {
    year: Option<i32>,
}

/// The merged statistics, in the partition files' month → year shape.
async fn stats_route(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = snapshot(shared).await;
    let body = serde_json::json!({
        "partitions": snapshot.merged_partitions,
        "months": StatsJson(&snapshot.merged),
    });
    axum::Json(body).into_response()
}

async fn status_route(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(snapshot(shared).await.view(None)).into_response()
}

async fn chart_route(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<YearQuery>,
) -> Response {
    let snapshot = snapshot(shared).await;
    match snapshot.chart(query.year) {
        Some((_, svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no statistics yet: run `weather consume` to fill the state folder\n",
        )
            .into_response(),
    }
}

/// A `snapshot` event now, and another after every change, until the page goes or we stop.
async fn events_route(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<YearQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = shared.changes.subscribe();
    let stream = futures::stream::unfold(
        (shared, changes, true),
        move |(shared, mut changes, first)| async move {
            if !first {
                let stop = shared.shutdown.clone();
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    _ = stop.requested() => return None,
                }
            }
            changes.mark_unchanged();
            let view = snapshot(shared.clone()).await.view(Some(query.year));
            let event = Event::default()
                .event("snapshot")
                .json_data(&view)
                .unwrap_or_else(|_| Event::default().event("snapshot").data("{}"));
            Some((Ok(event), (shared, changes, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// One partition file as last read.
enum FileState {
    Loaded(Checkpoint),
    Missing,
    Broken(String),
}

/// The state folder and the broker's view at one moment.
struct Snapshot {
    files: BTreeMap<i32, FileState>,
    folder_problem: Option<String>,
    merged: PartitionStats,
    merged_partitions: Vec<i32>,
    broker: BrokerView,
    shared: Arc<Shared>,
}

async fn snapshot(shared: Arc<Shared>) -> Snapshot {
    let reader = shared.clone();
    let read = tokio::task::spawn_blocking(move || read_folder(&reader)).await;
    let (files, folder_problem) =
        read.unwrap_or_else(|e| (BTreeMap::new(), Some(format!("reading failed: {e}"))));
    let mut merged = PartitionStats::default();
    let mut merged_partitions = Vec::new();
    for (partition, file) in &files {
        if let FileState::Loaded(c) = file {
            merged.merge(&c.stats);
            merged_partitions.push(*partition);
        }
    }
    Snapshot {
        files,
        folder_problem,
        merged,
        merged_partitions,
        broker: shared.broker_view(),
        shared,
    }
}

/// Reads every partition file there is, plus those we expect (seen before, or in the topic).
fn read_folder(shared: &Shared) -> (BTreeMap<i32, FileState>, Option<String>) {
    if shared.options.from_kafka {
        return read_changelog(shared);
    }
    let dir = &shared.options.state_dir;
    let (present, folder_problem) = match checkpoint::partition_files(dir) {
        Ok(files) => (files, None),
        Err(CheckpointError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let problem = format!(
                "state folder {} does not exist yet; run `weather consume` to create it",
                dir.display()
            );
            (Vec::new(), Some(problem))
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let mut expected: BTreeSet<i32> = present.iter().map(|f| f.partition()).collect();
    if let Ok(mut seen) = shared.seen.lock() {
        seen.extend(expected.iter().copied());
        expected.extend(seen.iter().copied());
    }
    if let BrokerView::Ends(ends) = shared.broker_view() {
        expected.extend(ends.keys().copied());
    }
    let files = expected
        .into_iter()
        .map(|partition| {
            let state = match checkpoint::PartitionFile::new(dir, partition).load() {
                Ok(Some(c)) => FileState::Loaded(c),
                Ok(None) => FileState::Missing,
                Err(CheckpointError::Corrupt { reason, .. }) => FileState::Broken(reason),
                Err(e) => FileState::Broken(e.to_string()),
            };
            (partition, state)
        })
        .collect();
    (files, folder_problem)
}

/// The changelog's snapshots as last read, plus the partitions the topic has.
fn read_changelog(shared: &Shared) -> (BTreeMap<i32, FileState>, Option<String>) {
    let snapshots = shared
        .snapshots
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let mut files: BTreeMap<i32, FileState> = snapshots
        .into_iter()
        .map(|(partition, c)| (partition, FileState::Loaded(c)))
        .collect();
    if let BrokerView::Ends(ends) = shared.broker_view() {
        for partition in ends.keys() {
            files.entry(*partition).or_insert(FileState::Missing);
        }
    }
    (files, None)
}

/// What the page (and `/api/status`) is told.
#[derive(Debug, Serialize)]
struct View {
    state_dir: String,
    topic: String,
    brokers: String,
    /// `connecting`, `reachable`, `unreachable` or `no topic`.
    broker: &'static str,
    broker_detail: Option<String>,
    folder_problem: Option<String>,
    years: Vec<i32>,
    /// The year the chart shows, if there is any data.
    year: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    svg: Option<String>,
    partitions: Vec<PartitionView>,
}

#[derive(Debug, Serialize)]
struct PartitionView {
    partition: i32,
    /// `ok`, `missing` or `corrupt`.
    file: &'static str,
    problem: Option<String>,
    offset: Option<i64>,
    last_date: Option<String>,
    days: Option<u64>,
    end: Option<i64>,
    lag: Option<i64>,
}

impl Snapshot {
    /// The year to draw (the one asked for, else the latest) and its chart.
    fn chart(&self, year: Option<i32>) -> Option<(i32, String)> {
        let year = year.or_else(|| self.merged.latest_year())?;
        let bars = plot::bars(&self.merged, &MONTHS, year);
        let svg = plot::month_chart(&bars, year, &plot::HIGHLIGHTED).to_string();
        Some((year, svg))
    }

    /// The page's view; `chart` is `Some(year wanted)` when the SVG should come along.
    fn view(&self, chart: Option<Option<i32>>) -> View {
        let ends = match &self.broker {
            BrokerView::Ends(ends) => Some(ends),
            _ => None,
        };
        let (broker, broker_detail) = match &self.broker {
            BrokerView::Connecting => ("connecting", None),
            BrokerView::Unreachable(why) => ("unreachable", Some(why.clone())),
            BrokerView::NoTopic => (
                "no topic",
                Some(format!(
                    "topic {} does not exist yet; `weather produce` creates it",
                    self.shared.options.topic
                )),
            ),
            BrokerView::Ends(_) => ("reachable", None),
        };
        let partitions = self
            .files
            .iter()
            .map(|(&partition, file)| {
                let end = ends.and_then(|e| e.get(&partition).copied());
                let mut view = PartitionView {
                    partition,
                    file: "ok",
                    problem: None,
                    offset: None,
                    last_date: None,
                    days: None,
                    end,
                    lag: None,
                };
                match file {
                    FileState::Loaded(c) => {
                        view.offset = Some(c.offset);
                        view.last_date = c.stats.last_date().map(format_date);
                        view.days = Some(c.stats.days());
                        view.lag = end.map(|end| (end - c.offset).max(0));
                    }
                    FileState::Missing => view.file = "missing",
                    FileState::Broken(why) => {
                        view.file = "corrupt";
                        view.problem = Some(why.clone());
                    }
                }
                view
            })
            .collect();
        let drawn = chart.and_then(|wanted| self.chart(wanted));
        let year = drawn
            .as_ref()
            .map(|(year, _)| *year)
            .or_else(|| self.merged.latest_year());
        let options = &self.shared.options;
        View {
            state_dir: self.shared.source(),
            topic: options.topic.clone(),
            brokers: options.brokers.clone(),
            broker,
            broker_detail,
            folder_problem: self.folder_problem.clone(),
            years: self.merged.years().into_iter().collect(),
            year,
            svg: drawn.map(|(_, svg)| svg),
            partitions,
        }
    }
}

/// Size and mtime of every partition file: when this changes, a file was replaced.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let files = checkpoint::partition_files(dir).ok()?;
    Some(
        files
            .iter()
            .map(|f| {
                let path = f.path();
                let meta = std::fs::metadata(&path).ok();
                let size = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (path, size, modified)
            })
            .collect(),
    )
}

async fn watch_files(shared: Arc<Shared>) {
    let dir = shared.options.state_dir.clone();
    let mut last = None;
    loop {
        let dir = dir.clone();
        let now = tokio::task::spawn_blocking(move || fingerprint(&dir))
            .await
            .unwrap_or(None);
        if now != last {
            last = now;
            shared.changed();
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = shared.shutdown.requested() => return,
        }
    }
}

/// Keeps `shared.broker` up to date: connect, read end offsets every second, and on any
/// failure say so and try again.
async fn follow_broker(shared: Arc<Shared>) {
    let options = &shared.options;
    let mut handles: Vec<Partition> = Vec::new();
    let mut snapshot_readers: Vec<Partition> = Vec::new();
    let mut cluster: Option<Cluster> = None;
    loop {
        let view = match &cluster {
            None => {
                let connect = Cluster::connect_with(
                    &options.brokers,
                    options.security.clone(),
                    Duration::ZERO,
                    &shared.shutdown,
                );
                match tokio::time::timeout(BROKER_DEADLINE * 2, connect).await {
                    Ok(Ok(connected)) => {
                        cluster = Some(connected);
                        continue;
                    }
                    Ok(Err(KafkaError::Interrupted)) => return,
                    Ok(Err(e)) => BrokerView::Unreachable(e.to_string()),
                    Err(_) => BrokerView::Unreachable("no answer in time".into()),
                }
            }
            Some(c) => {
                let read = end_offsets(c, &options.topic, &mut handles);
                let view = match tokio::time::timeout(BROKER_DEADLINE, read).await {
                    Ok(Ok(view)) => view,
                    Ok(Err(e)) => BrokerView::Unreachable(e.to_string()),
                    Err(_) => BrokerView::Unreachable("no answer in time".into()),
                };
                if options.from_kafka && matches!(view, BrokerView::Ends(_)) {
                    let read =
                        crate::changelog::read_all_with(c, &options.topic, &mut snapshot_readers);
                    match tokio::time::timeout(BROKER_DEADLINE, read).await {
                        Ok(Ok((_, all))) => follow_snapshots(&shared, all),
                        Ok(Err(e)) => {
                            snapshot_readers.clear();
                            warn!("reading the changelog: {e}")
                        }
                        Err(_) => {
                            snapshot_readers.clear();
                            warn!("reading the changelog: no answer in time")
                        }
                    }
                }
                view
            }
        };
        if matches!(view, BrokerView::Unreachable(_)) {
            cluster = None;
            handles.clear();
            snapshot_readers.clear();
        }
        let before = std::mem::replace(
            &mut *shared
                .broker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            view.clone(),
        );
        if before != view {
            match &view {
                BrokerView::Unreachable(why) => warn!("broker unreachable: {why}"),
                BrokerView::Ends(_) if !matches!(before, BrokerView::Ends(_)) => {
                    info!("broker at {} is reachable", options.brokers)
                }
                _ => {}
            }
            shared.changed();
        }
        tokio::select! {
            _ = tokio::time::sleep(BROKER_EVERY) => {}
            _ = shared.shutdown.requested() => return,
        }
    }
}

/// Keeps the changelog's newest snapshots, telling the pages when they changed.
fn follow_snapshots(shared: &Shared, all: Vec<Checkpoint>) {
    let now: BTreeMap<i32, Checkpoint> = all.into_iter().map(|c| (c.partition, c)).collect();
    let mut kept = shared
        .snapshots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *kept != now {
        *kept = now;
        drop(kept);
        shared.changed();
    }
}

async fn end_offsets(
    cluster: &Cluster,
    topic: &str,
    handles: &mut Vec<Partition>,
) -> Result<BrokerView, KafkaError> {
    let Some(count) = cluster.partition_count(topic).await? else {
        handles.clear();
        return Ok(BrokerView::NoTopic);
    };
    if handles.len() != count as usize {
        handles.clear();
        for id in 0..count {
            handles.push(cluster.partition(topic, id).await?);
        }
    }
    let mut ends = BTreeMap::new();
    for handle in handles.iter() {
        let (_, end) = handle.offsets().await?;
        ends.insert(handle.id(), end);
    }
    Ok(BrokerView::Ends(ends))
}
