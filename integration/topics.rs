//! A topic that is not the one a state folder counts: another topic read with the same
//! `--state-dir`, a topic deleted and created again under a running consumer, a topic given
//! more partitions between two producer runs. In each, no day is counted twice or from the
//! wrong topic: checked by loading every partition file, by `weather verify`, and against the
//! topic and the generator, never against the programs' own counters.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::topic::{all_dates, consecutive, topic_days};
use support::{
    Broker, GUARD, Kind, Logged, folder_bytes, only_error_line, run_ok, runtime, wait_for,
};
use time::macros::date;
use time::{Date, Month};
use weather_stream::checkpoint::{self, Checkpoint, PartitionFile, TopicIdentity};
use weather_stream::stats::{Days, PartitionStats};
use weather_stream::weather::Weather;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// `weather consume 0,1,2,3 --until-caught-up` on `state`, with any other arguments.
fn catch_up(broker: &Broker, state: &Path, more: &[&str]) -> String {
    let output = run_ok(
        broker
            .weather()
            .args(["consume", "0,1,2,3", "--until-caught-up", "--state-dir"])
            .arg(state)
            .args(more),
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The topic of that name as the cluster has it now.
fn topic_now(broker: &Broker, name: &str) -> TopicIdentity {
    let cluster = broker.cluster();
    let info = runtime()
        .block_on(cluster.describe(name))
        .expect("describe the topic")
        .expect("the topic exists");
    TopicIdentity::of(name, &info)
}

/// The topic every partition file in `state` counts: one and the same for all.
fn topic_of_files(state: &Path) -> TopicIdentity {
    let files = checkpoint::load_all(state).expect("partition files load");
    assert!(!files.is_empty());
    let topic = files[0].topic.clone().expect("the file names its topic");
    for c in &files {
        assert_eq!(c.topic.as_ref(), Some(&topic), "partition {}", c.partition);
    }
    topic
}

/// The proof for a folder: `weather verify` passes (for `topic`), every file counts that
/// topic, and merged they hold the generator's `days` days from `first`: each (month, year)
/// with its count, days and dates, and its sum (to rounding: a month split over two
/// partitions is summed in two parts).
fn assert_merged_equals_generator(
    broker: &Broker,
    state: &Path,
    topic: &str,
    first: Date,
    days: usize,
) {
    let verify =
        run_ok(
            broker
                .weather()
                .args(["verify", "--topic", topic, "--state-dir", path_str(state)]),
        );
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(!stdout.contains("problem"), "{stdout}");
    let files = checkpoint::load_all(state).expect("partition files load");
    let mut merged = PartitionStats::default();
    for c in &files {
        assert_eq!(
            c.topic.as_ref().map(|t| t.name.as_str()),
            Some(topic),
            "partition {}",
            c.partition
        );
        merged.merge(&c.stats);
    }
    let weather = Weather::new(1);
    let mut expected: BTreeMap<(i32, Month), (u64, f64, Days)> = BTreeMap::new();
    for date in consecutive(first, days) {
        let entry = expected.entry((date.year(), date.month())).or_default();
        entry.0 += 1;
        entry.1 += weather.degrees(date);
        entry.2.insert(date.day());
    }
    for ((year, month), (count, sum, days)) in &expected {
        let m = merged
            .get(*month, *year)
            .unwrap_or_else(|| panic!("{month} {year} is missing"));
        assert_eq!(
            (m.count, m.days),
            (*count, *days),
            "{month} {year}: count and days"
        );
        assert!(
            (m.sum - sum).abs() <= 1e-9 * sum.abs(),
            "{month} {year}: sum"
        );
    }
    assert_eq!(merged.days(), days as u64, "no other days in the files");
}

#[test]
fn another_topic_in_the_same_state_folder_is_refused_in_one_line_and_left_byte_for_byte() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    catch_up(&broker, state.path(), &[]);
    // More days in the other topic: every offset in the files lies within its partitions,
    // so nothing but the topic itself tells the files are not its own.
    run_ok(broker.weather().args([
        "produce",
        "--topic",
        "other",
        "--count",
        "400",
        "--delay-ms",
        "0",
    ]));
    let before = folder_bytes(state.path());
    let line = only_error_line(broker.weather().args([
        "consume",
        "0,1,2,3",
        "--topic",
        "other",
        "--until-caught-up",
        "--state-dir",
        state_dir,
    ]));
    assert!(
        line.contains("partition-0.json counts topic \"temperatures\" (id ")
            && line.contains("not topic \"other\" (id ")
            && line.contains("--state-dir")
            && line.contains("--reset-state"),
        "{line}"
    );
    assert_eq!(folder_bytes(state.path()), before, "the folder changed");
    let temperatures = topic_of_files(state.path());
    assert_eq!(temperatures, topic_now(&broker, "temperatures"));

    // verify against the other topic: each file is a problem of its own, and not compared.
    let verify = broker
        .weather()
        .args(["verify", "--topic", "other", "--state-dir", state_dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{stdout}");
    assert_eq!(
        stdout
            .matches(&format!(
                "the file counts {temperatures}, not topic \"other\""
            ))
            .count(),
        checkpoint::partition_files(state.path()).unwrap().len(),
        "{stdout}"
    );
    // Against its own topic the folder is as good as it was.
    broker.verify(state.path());

    // The way out: --reset-state keeps the old files and counts the other topic afresh.
    catch_up(
        &broker,
        state.path(),
        &["--topic", "other", "--reset-state"],
    );
    for (name, bytes) in &before {
        let backup = state.path().join(format!("{name}.bak"));
        assert_eq!(&std::fs::read(&backup).unwrap(), bytes, "{name}.bak");
        std::fs::remove_file(backup).unwrap();
    }
    assert_merged_equals_generator(&broker, state.path(), "other", date!(2000 - 01 - 01), 400);
}

/// Reads every partition file in the folders over and over while a test runs, and notes each
/// time one did not load, or held a day from `mixed_from` on (a day only the new topic has).
struct FileWatch {
    stop: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<usize>,
}

impl FileWatch {
    fn start(dirs: Vec<PathBuf>, mixed_from: i32) -> FileWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (stopped, found) = (stop.clone(), problems.clone());
        let thread = std::thread::spawn(move || {
            let mut reads = 0;
            while !stopped.load(Ordering::Relaxed) {
                for dir in &dirs {
                    for file in checkpoint::partition_files(dir).unwrap_or_default() {
                        let Ok(text) = std::fs::read_to_string(file.path()) else {
                            continue;
                        };
                        reads += 1;
                        let name = file.path().display().to_string();
                        let problem = match Checkpoint::from_json(&text) {
                            Err(e) => format!("{name} did not load: {e}"),
                            Ok(c) if c.stats.years().range(mixed_from..).next().is_some() => {
                                format!("{name} holds the new topic's days:\n{text}")
                            }
                            Ok(_) => continue,
                        };
                        found.lock().unwrap().push(problem);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            reads
        });
        FileWatch {
            stop,
            problems,
            thread,
        }
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    fn assert_all_good(self) {
        self.stop.store(true, Ordering::Relaxed);
        let reads = self.thread.join().expect("the watch");
        println!("{reads} reads of partition files");
        assert!(reads > 20, "the watch read too little: {reads}");
        let problems = self.problems.lock().unwrap().clone();
        assert_eq!(problems, Vec::<String>::new());
    }
}

/// Waits for a consumer to stop by itself on a changed topic (or for a file to show it did
/// not), and checks its last words: one error line, naming the file and the way out.
fn assert_stopped_on_the_new_topic(consumer: &mut Logged, watch: &FileWatch, what: &str) {
    wait_for(what, GUARD, || {
        !consumer.is_running() || !watch.problems().is_empty()
    });
    let printed = consumer.printed();
    println!("{what}:\n{printed}");
    assert_eq!(watch.problems(), Vec::<String>::new(), "{what}");
    let errors: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: one error line:\n{printed}");
    assert_eq!(printed.lines().last(), Some(errors[0]), "{printed}");
    let line = errors[0];
    assert!(
        line.contains("topic \"temperatures\" (id ")
            && line.contains("was replaced by topic \"temperatures\" (id ")
            && line.contains("partition-")
            && line.contains("with nothing of the new topic")
            && line.contains("--reset-state"),
        "{what}: {line}"
    );
}

#[test]
fn a_topic_recreated_under_a_running_consumer_stops_it_before_anything_is_mixed() {
    let broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let frozen_state = tempfile::tempdir().unwrap();
    let live_state = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "200", "--delay-ms", "0", "--reset"]),
    );
    let consumer = |state: &Path, log: &str| {
        Logged::spawn(
            broker
                .weather()
                .args(["consume", "0,1,2,3", "--state-dir", path_str(state)]),
            logs.path().join(log),
        )
    };
    // One consumer is frozen through the deletion and the new topic's first days, so it never
    // sees a read fail: only the topic id can tell it. On Apache Kafka a second one keeps
    // reading throughout, and sees the reads fail. Not on Tansu 0.6.0: a Fetch for a topic
    // being deleted panics its SQLite storage ("more or less than one row", tansu-storage
    // lite.rs:503), after which the broker answers nothing.
    let mut frozen = consumer(frozen_state.path(), "frozen.log");
    let mut live = (broker.kind == Kind::Kafka).then(|| consumer(live_state.path(), "live.log"));
    let ends: BTreeMap<i32, i64> = topic_days(&broker.cluster())
        .into_iter()
        .map(|(id, p)| (id, p.end))
        .collect();
    let offsets = |state: &Path| -> BTreeMap<i32, i64> {
        checkpoint::load_all(state)
            .unwrap_or_default()
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect()
    };
    let mut dirs = vec![frozen_state.path().to_path_buf()];
    if live.is_some() {
        dirs.push(live_state.path().to_path_buf());
    }
    wait_for("the consumers to catch up", GUARD, || {
        dirs.iter().all(|dir| offsets(dir) == ends)
    });
    let old = topic_now(&broker, "temperatures");
    // The partition files (a consumer's locks go with it).
    let files = |dir: &PathBuf| {
        let mut bytes = folder_bytes(dir);
        bytes.retain(|name, _| name.ends_with(".json"));
        bytes
    };
    let before: Vec<_> = dirs.iter().map(files).collect();
    // From here on, any year from 2010 in a file is the new topic's.
    let watch = FileWatch::start(dirs.clone(), 2010);

    frozen.signal("STOP");
    std::thread::sleep(Duration::from_millis(300));
    // Twice the days, so each old offset lies well within the new topic's partitions.
    run_ok(broker.weather().args([
        "produce",
        "--count",
        "400",
        "--delay-ms",
        "0",
        "--reset",
        "--start",
        "2010-01-01",
    ]));
    if let Some(live) = &mut live {
        assert_stopped_on_the_new_topic(live, &watch, "the live consumer to stop");
    }
    frozen.signal("CONT");
    assert_stopped_on_the_new_topic(&mut frozen, &watch, "the frozen consumer to stop");
    watch.assert_all_good();
    let after: Vec<_> = dirs.iter().map(files).collect();
    assert!(after == before, "a file changed");
    for dir in &dirs {
        assert_eq!(topic_of_files(dir), old);
    }

    let state_dir = path_str(frozen_state.path());
    let verify = broker
        .weather()
        .args(["verify", "--state-dir", state_dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{stdout}");
    assert!(stdout.contains(&format!(
        "the file counts {old}, not topic \"temperatures\" (id "
    )));
    // The next start refuses as well, and --reset-state counts the new topic alone.
    let line = only_error_line(broker.weather().args([
        "consume",
        "0,1,2,3",
        "--until-caught-up",
        "--state-dir",
        state_dir,
    ]));
    assert!(
        line.contains(&format!("counts {old}, not topic \"temperatures\" (id ")),
        "{line}"
    );
    for dir in &dirs {
        catch_up(&broker, dir, &["--reset-state"]);
        assert_ne!(topic_of_files(dir), old);
        assert_merged_equals_generator(&broker, dir, "temperatures", date!(2010 - 01 - 01), 400);
    }
}

/// Tests that need Apache Kafka whatever the pass: the Makefile's Tansu pass skips this
/// module, so they run once, in the Kafka pass.
mod kafka_only {
    use super::*;

    #[test]
    fn more_partitions_between_two_producer_runs_write_no_day_twice() {
        // On Apache Kafka whatever WEATHER_TEST_BROKER says: Tansu 0.6.0 has no CreatePartitions
        // (Kafka's TopicCommand --alter gets "The node does not support CREATE_PARTITIONS").
        let broker = Broker::start_kind(Kind::Kafka);
        let state = tempfile::tempdir().unwrap();
        // 381 days: up to 2001-01-15, so January 2001 is split over two partitions.
        run_ok(
            broker
                .weather()
                .args(["produce", "--count", "381", "--delay-ms", "0", "--reset"]),
        );
        catch_up(&broker, state.path(), &[]);
        let before = topic_now(&broker, "temperatures");
        run_ok(
            broker
                .kafka_tool("org.apache.kafka.tools.TopicCommand")
                .args([
                    "--bootstrap-server",
                    &broker.address(),
                    "--alter",
                    "--topic",
                    "temperatures",
                    "--partitions",
                    "6",
                ]),
        );
        let output =
            run_ok(
                broker
                    .weather()
                    .args(["produce", "--count", "400", "--delay-ms", "0"]),
            );
        // Every day in the topic exactly once.
        let dates = all_dates(&broker.cluster());
        assert_eq!(dates, consecutive(date!(2000 - 01 - 01), 781));
        // With 6 partitions January goes to partition 0, and July and November, which had none
        // of their days written since, to the new partition 5.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("January (2 → 0, after 2001-01-15)")
                && stderr.contains("July (1 → 5, after 2000-07-31)"),
            "{stderr}"
        );

        // The files of the four old partitions resume, the two new ones start; verify, the merge
        // and the plot see each day once, January 2001's halves added up.
        run_ok(broker.weather().args([
            "consume",
            "0,1,2,3,4,5",
            "--until-caught-up",
            "--state-dir",
            path_str(state.path()),
        ]));
        assert_eq!(topic_of_files(state.path()), before, "the same topic");
        assert_merged_equals_generator(
            &broker,
            state.path(),
            "temperatures",
            date!(2000 - 01 - 01),
            781,
        );
        let split: Vec<i32> = checkpoint::load_all(state.path())
            .unwrap()
            .iter()
            .filter(|c| c.stats.get(Month::January, 2001).is_some())
            .map(|c| c.partition)
            .collect();
        assert_eq!(
            split,
            [0, 2],
            "January 2001 on its old and its new partition"
        );
        let weather = Weather::new(1);
        let january = consecutive(date!(2001 - 01 - 01), 31);
        let avg = january.iter().map(|d| weather.degrees(*d)).sum::<f64>() / 31.0;
        let svg = state.path().join("month.svg");
        let output = run_ok(broker.weather().args([
            "plot",
            "--state-dir",
            path_str(state.path()),
            "--year",
            "2001",
            "--months",
            "January",
            "--out",
            path_str(&svg),
        ]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("January {avg:.1}°F")), "{stderr}");
    }
}

#[test]
fn a_file_of_the_first_format_is_taken_as_the_topics_and_saved_with_it() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    catch_up(&broker, state.path(), &[]);
    let topic = topic_now(&broker, "temperatures");
    // As the previous version left them: the same partition files, and no topic files.
    let files = checkpoint::load_all(state.path()).unwrap();
    for c in &files {
        let file = PartitionFile::new(state.path(), c.partition);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(
            !text.contains("topic") && !text.contains("format"),
            "the partition file is in the seed's format: {text}"
        );
        std::fs::remove_file(file.topic_path()).unwrap();
    }
    // Days for every partition (August and September for March's), so each file is saved.
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "200", "--delay-ms", "0"]),
    );
    let stderr = catch_up(&broker, state.path(), &[]);
    let adopted: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("does not say which topic it counts"))
        .collect();
    assert_eq!(adopted.len(), files.len(), "one line per file:\n{stderr}");
    assert!(
        adopted
            .iter()
            .all(|l| l.contains(&format!("taken as {topic}'s"))),
        "{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert_eq!(topic_of_files(state.path()), topic, "saved with the topic");
    assert_merged_equals_generator(
        &broker,
        state.path(),
        "temperatures",
        date!(2000 - 01 - 01),
        300,
    );
}
