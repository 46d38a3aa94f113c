//! The command line: one `weather` binary, a subcommand per program.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use time::Date;
use tracing::info;

use crate::changelog::{self, ChangelogError};
use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::consumer::{self, ConsumeError, ConsumeOptions};
use crate::debug::{self, DebugError, DebugOptions};
use crate::kafka::group::GroupOptions;
use crate::kafka::security::Security;
use crate::kafka::{Cluster, KafkaError};
use crate::plot;
use crate::producer::{self, ProduceError, ProduceOptions};
use crate::report::parse_date;
use crate::shutdown::Shutdown;
use crate::stats::PartitionStats;
use crate::verify::{self, VerifyError};

#[derive(Debug, Parser)]
#[command(
    name = "weather",
    version,
    about = "Daily weather reports through Kafka, with exactly-once statistics",
    long_about = "Daily weather reports through Kafka, with exactly-once statistics.\n\n\
        produce  publishes one report a day to the topic\n\
        debug    prints what arrives, as a member of a consumer group\n\
        consume  keeps per-partition statistics in state files, exactly once\n\
        verify   checks the state files against the topic\n\
        plot     draws month.svg from the state files\n\
        serve    the live dashboard in the browser"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Bootstrap brokers, comma-separated host:port
    #[arg(
        long,
        global = true,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Topic the reports go to
    #[arg(long, global = true, default_value = "temperatures")]
    pub topic: String,
    /// How long to wait for an unreachable broker before giving up, in seconds
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
    /// More detail: -v for debug lines, -vv for the Kafka client's own
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Client settings for a secured cluster, a Java properties file as Kafka's own tools
    /// take it: security.protocol, sasl.mechanism, sasl.jaas.config (or sasl.username and
    /// sasl.password), ssl.ca.location (or a PEM ssl.truststore.location). KAFKA_SECURITY_PROTOCOL,
    /// KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION and
    /// the like override it key by key
    #[arg(long, global = true, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one weather report a day, keyed by month
    Produce(ProduceArgs),
    /// Print each report as it arrives, one JSON line, as a member of a consumer group
    Debug(DebugArgs),
    /// Keep per-partition statistics for the listed partitions (or a group's), exactly once
    Consume(ConsumeArgs),
    /// Recompute every partition file's statistics from the topic and compare
    Verify(VerifyArgs),
    /// Draw the monthly averages of the latest year as an SVG bar chart
    Plot(PlotArgs),
    /// Serve the live dashboard: chart and partition status, updated as files change
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0:8080 to let other machines in)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read the newest snapshot of every partition from the changelog topic <topic>.stats
    /// (what `consume --group` members write, on whichever machine), not the state folder
    #[arg(long, conflicts_with = "state_dir")]
    pub from_kafka: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Delete and recreate the topic first (everything in it is lost)
    #[arg(long)]
    pub reset: bool,
    /// First day to publish on an empty topic (YYYY-MM-DD)
    #[arg(long, value_parser = date_arg, default_value = "2000-01-01")]
    pub start: Date,
    /// Stop after this many days (default: run forever)
    #[arg(long, value_name = "DAYS")]
    pub count: Option<u64>,
    /// Pause between days, in milliseconds (0: as fast as the broker takes them)
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub delay_ms: u64,
    /// Seed of the weather: the same seed gives the same temperatures
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Partitions of the topic when it is created
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor of the topic when it is created
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..=100))]
    pub replication_factor: i16,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Partitions to read, by number: `0 2` or `0,2`
    #[arg(required_unless_present = "group", value_delimiter = ',', value_name = "PARTITION",
          value_parser = clap::value_parser!(i32).range(0..))]
    pub partitions: Vec<i32>,
    /// Let this consumer group assign the partitions instead of listing them
    #[arg(long, value_name = "NAME", conflicts_with_all = ["partitions", "until_caught_up", "reset_state"])]
    pub group: Option<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Exit once every partition reaches the end it had at start
    #[arg(long)]
    pub until_caught_up: bool,
    /// Set the partitions' state files aside (as .bak) and count from the earliest offset
    #[arg(long)]
    pub reset_state: bool,
    /// Longest a fetch waits at the end of a partition for new records [default: 500 on
    /// Apache Kafka, which answers as soon as records arrive; 10 on Tansu 0.6.0, which waits
    /// this long even when they arrive sooner, so there it bounds the latency]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub fetch_wait_ms: Option<u64>,
    /// Upper bound on one fetch in bytes; smaller means more, smaller checkpoints
    #[arg(long, hide = true, default_value_t = consumer::FETCH_BYTES,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub fetch_bytes: i32,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// Consumer group to join
    #[arg(long, default_value = "debug", value_name = "NAME")]
    pub group: String,
    /// Where the group has no committed offset, start at the earliest instead of the end
    #[arg(long)]
    pub from_beginning: bool,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// How long the group waits for a silent member before handing its partitions to others
    /// (Apache Kafka accepts 6000 to 1800000 unless its group.min/max.session.timeout.ms say
    /// otherwise)
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(6_000..=1_800_000))]
    pub session_timeout_ms: u64,
}

impl SessionArgs {
    fn group(&self, group: &str, topic: &str) -> GroupOptions {
        GroupOptions {
            group: group.into(),
            topic: topic.into(),
            session_timeout: Duration::from_millis(self.session_timeout_ms),
        }
    }
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// Folder of the partition files
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Where to write the chart
    #[arg(long, default_value = "month.svg")]
    pub out: PathBuf,
    /// Months to draw, comma-separated
    #[arg(long, default_value = "January,February,March", value_parser = plot::parse_months)]
    pub months: std::vec::Vec<time::Month>,
    /// Year to draw (default: the latest year with data)
    #[arg(long)]
    pub year: Option<i32>,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// clap's usage error folded into one line: what was wrong and where to read more.
pub fn usage_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut line = String::new();
    let parts = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"));
    for part in parts {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line + " (see --help)"
}

fn date_arg(text: &str) -> Result<Date, String> {
    parse_date(text).map_err(|_| format!("{text:?} is not a date in the form YYYY-MM-DD"))
}

/// Everything that can stop a command, each one line for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error(transparent)]
    Debug(#[from] DebugError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
    #[error(transparent)]
    Security(#[from] crate::kafka::security::SecurityError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let shutdown = Shutdown::on_signals();
    let global = &cli.global;
    // Read before anything else, so a bad setting stops every program at once; `plot` reaches
    // no broker but gets the same check, so one file works for all of them.
    let security = Arc::new(Security::from_environment(
        global.command_config.as_deref(),
    )?);
    let connect = || async {
        Cluster::connect_with(
            &global.brokers,
            security.clone(),
            Duration::from_secs(global.wait),
            &shutdown,
        )
        .await
    };
    match cli.command {
        Command::Produce(args) => {
            let options = ProduceOptions {
                topic: global.topic.clone(),
                start: args.start,
                count: args.count,
                delay: Duration::from_millis(args.delay_ms),
                seed: args.seed,
                reset: args.reset,
                partitions: args.partitions,
                replication_factor: args.replication_factor,
            };
            let cluster = connect().await?;
            producer::run(&cluster, &options, &shutdown).await?;
        }
        Command::Debug(args) => {
            let options = DebugOptions {
                group: args.session.group(&args.group, &global.topic),
                from_beginning: args.from_beginning,
            };
            let cluster = connect().await?;
            debug::run(&cluster, &options, &shutdown).await?;
        }
        Command::Consume(args) => {
            let mut seen = BTreeSet::new();
            if let Some(twice) = args.partitions.iter().find(|p| !seen.insert(**p)) {
                return Err(CliError::Usage(format!(
                    "partition {twice} is listed twice"
                )));
            }
            let options = ConsumeOptions {
                topic: global.topic.clone(),
                partitions: args.partitions,
                state_dir: args.state.state_dir,
                until_caught_up: args.until_caught_up,
                reset_state: args.reset_state,
                fetch_wait: args.fetch_wait_ms.map(Duration::from_millis),
                fetch_bytes: args.fetch_bytes,
            };
            let cluster = connect().await?;
            match &args.group {
                Some(group) => {
                    let group = args.session.group(group, &global.topic);
                    consumer::run_group(&cluster, &options, &group, &shutdown).await?;
                }
                None => {
                    consumer::run(&cluster, &options, &shutdown).await?;
                }
            }
        }
        Command::Verify(args) => {
            let cluster = connect().await?;
            let verdicts = if args.source.from_kafka {
                verify::run_from_kafka(&cluster, &global.topic).await?
            } else {
                verify::run(&cluster, &global.topic, &args.state.state_dir).await?
            };
            let what = if args.source.from_kafka {
                "changelog snapshots"
            } else {
                "partition files"
            };
            let mut failed = 0;
            for v in &verdicts {
                if v.matches() {
                    println!(
                        "partition {}: ok, {} reports up to offset {}",
                        v.partition, v.reports, v.offset
                    );
                } else {
                    failed += 1;
                    println!("partition {}: {} problem(s)", v.partition, v.problems.len());
                    for problem in &v.problems {
                        println!("  {problem}");
                    }
                }
            }
            if failed > 0 {
                return Err(CliError::Mismatch(format!(
                    "{failed} of {} {what} do not match the topic",
                    verdicts.len()
                )));
            }
        }
        Command::Plot(args) => {
            let checkpoints = if args.source.from_kafka {
                let cluster = connect().await?;
                changelog::read_all(&cluster, &global.topic).await?.1
            } else {
                load_folder(&args.state.state_dir)?
            };
            let from = if args.source.from_kafka {
                changelog::topic_for(&global.topic)
            } else {
                args.state.state_dir.display().to_string()
            };
            plot_command(&args, &checkpoints, &from)?
        }
        Command::Serve(args) => {
            let options = crate::dashboard::ServeOptions {
                listen: args.listen,
                state_dir: args.state.state_dir,
                from_kafka: args.source.from_kafka,
                brokers: global.brokers.clone(),
                security: security.clone(),
                topic: global.topic.clone(),
            };
            crate::dashboard::run(options, &shutdown).await?;
        }
    }
    Ok(())
}

/// Every partition file in `dir`, or one line on why not.
fn load_folder(dir: &Path) -> Result<Vec<Checkpoint>, CliError> {
    checkpoint::load_all(dir).map_err(|e| match e {
        CheckpointError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CliError::Usage(format!(
                "state folder {} does not exist; run `weather consume` first",
                dir.display()
            ))
        }
        other => other.into(),
    })
}

/// Draws the chart of `checkpoints`, read `from` a folder or the changelog.
fn plot_command(args: &PlotArgs, checkpoints: &[Checkpoint], from: &str) -> Result<(), CliError> {
    let mut merged = PartitionStats::default();
    for c in checkpoints {
        merged.merge(&c.stats);
    }
    let year = args.year.or_else(|| merged.latest_year()).ok_or_else(|| {
        CliError::Usage(format!(
            "no statistics in {from} yet; run `weather consume` first"
        ))
    })?;
    let bars = plot::bars(&merged, &args.months, year);
    let svg = plot::month_chart(&bars, year, &args.months).to_string();
    write_atomically(&args.out, svg.as_bytes())?;
    let shown: Vec<String> = bars
        .iter()
        .map(|b| match b.avg {
            Some(avg) => format!("{} {avg:.1}°F", crate::report::month_name(b.month)),
            None => format!("{} no data", crate::report::month_name(b.month)),
        })
        .collect();
    info!(
        "wrote {} for {year} from {} partitions in {from}: {}",
        args.out.display(),
        checkpoints.len(),
        shown.join(", ")
    );
    Ok(())
}

/// Writes via a temporary file and a rename, so a browser never loads half a chart.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let tmp = path.with_extension("svg.tmp");
    let err = |source| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
