//! Exactly once under faults: kills, a broker that goes away, broken state files, records
//! that are not reports and bad command lines. Every run that should succeed ends with
//! `weather verify` passing and counts equal to the days the topic holds, checked against the
//! topic and the generator, never against the programs' own counters.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rskafka::chrono::{TimeZone, Utc};
use rskafka::record::Record;
use support::ProduceRaw;
use support::exactly_once::{assert_counted_exactly_once, assert_counted_exactly_once_with};
use support::topic::{ends, topic_days, topic_records};
use support::{
    Broker, GUARD, HELD, HOLD_SAVE, Logged, folder_bytes, given_partitions, only_error_line,
    reading_partitions, run_ok, runtime, wait_for,
};
use time::macros::date;
use time::{Date, Month};
use weather_stream::checkpoint::{self, Checkpoint, PartitionFile, TopicIdentity};
use weather_stream::weather::Weather;

const TOPIC: &str = "temperatures";

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn offsets(state: &Path) -> BTreeMap<i32, i64> {
    checkpoint::load_all(state)
        .expect("after a crash, every partition file still loads")
        .iter()
        .map(|c| (c.partition, c.offset))
        .collect()
}

fn any_tmp(state: &Path) -> bool {
    std::fs::read_dir(state).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".json.tmp"))
    })
}

#[test]
fn a_consumer_sigkilled_at_random_moments_counts_every_day_once() {
    const KILLS: usize = 24;
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "300", "--delay-ms", "0", "--reset"]),
    );
    // One day per batch, through every round: each life of the consumer has new days to
    // count, and its small fetches make many checkpoints, so kills land in fetches, in
    // applies and in saves.
    let mut producer = Logged::spawn(
        broker.weather().args(["produce", "--delay-ms", "5"]),
        logs.path().join("producer.log"),
    );

    let mut progress = offsets(state.path());
    for round in 0..KILLS {
        // Every other life is held inside its Nth save (its .tmp written and fsynced, not yet
        // renamed) and killed there; the others die at a random moment.
        let hold_at = (round % 2 == 1).then(|| rng.u64(1..=12));
        let mut command = broker.weather();
        command
            .args(["consume", "0,1,2,3", "--fetch-bytes", "300"])
            .args(["--state-dir", state_dir]);
        if let Some(n) = hold_at {
            command.env(HOLD_SAVE, n.to_string());
        }
        let mut consumer = Logged::spawn(
            &mut command,
            logs.path().join(format!("consumer-{round}.log")),
        );
        match hold_at {
            Some(n) => wait_for(
                &format!("round {round}: save {n} to be held"),
                GUARD,
                || consumer.printed().contains(HELD),
            ),
            None => std::thread::sleep(Duration::from_millis(rng.u64(20..600))),
        }
        assert!(
            producer.is_running(),
            "round {round}: the producer stopped before the kill:\n{}",
            producer.printed()
        );
        consumer.kill();
        println!(
            "round {round} (held at save {hold_at:?}): {:?}",
            offsets(state.path())
        );
        if hold_at.is_some() {
            assert!(
                any_tmp(state.path()),
                "round {round}: killed inside a save, yet no .tmp is left:\n{}",
                consumer.printed()
            );
        }
        // Whatever the moment, every file is whole and no partition went backwards.
        let now = offsets(state.path());
        for (partition, offset) in &progress {
            assert!(
                now.get(partition).is_some_and(|o| o >= offset),
                "round {round}: partition {partition} went back from {offset} to {:?}",
                now.get(partition)
            );
        }
        progress = now;
    }

    producer.interrupt();
    producer.wait_ok("the producer to stop on Ctrl-C");
    let days = topic_days(&broker.cluster())
        .values()
        .map(|p| p.days.len())
        .sum();
    println!("{KILLS} kills, half of them inside a save, while the producer wrote {days} days");
    broker.catch_up("0,1,2,3", state.path());
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), days);
}

#[test]
fn a_broker_restart_under_a_running_producer_and_consumer_loses_and_doubles_nothing() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", "3000", "--delay-ms", "5"]),
        logs.path().join("producer.log"),
    );
    let mut consumer = Logged::spawn(
        broker
            .weather()
            .args(["consume", "0,1,2,3", "--state-dir", state_dir]),
        logs.path().join("consumer.log"),
    );
    wait_for("the consumer to follow the producer", GUARD, || {
        checkpoint::load_all(state.path())
            .is_ok_and(|files| files.iter().map(|c| c.offset).sum::<i64>() > 200)
    });

    // Both are at work when the broker goes (about 15 s of days at the producer's pace).
    assert!(producer.is_running(), "{}", producer.printed());
    broker.stop();
    // Long enough for both programs to notice: their requests fail while it is down.
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();

    producer.wait_ok("the producer to finish after the restart");
    let ends: BTreeMap<i32, i64> = ends(&broker.cluster())
        .into_iter()
        .filter(|(_, end)| *end > 0)
        .collect();
    wait_for("the consumer to reach the end", GUARD, || {
        offsets(state.path()) == ends
    });
    consumer.interrupt();
    consumer.wait_ok("the consumer to stop on Ctrl-C");

    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 3100);
    for (name, program) in [("consumer", &consumer), ("producer", &producer)] {
        let stderr = program.printed();
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
        println!("{name}:\n{stderr}");
        // The producer may also have to start a new session if the broker forgot its id.
        let most = if name == "consumer" { 1 } else { 2 };
        assert!(
            !warnings.is_empty() && warnings.len() <= most,
            "the {name} should say in one line that the broker went away:\n{stderr}"
        );
        assert!(!stderr.contains("ERROR"), "{name}:\n{stderr}");
    }
    let consumer = consumer.printed();
    assert_eq!(
        consumer.matches("answers again").count(),
        1,
        "one line when the broker is back:\n{consumer}"
    );
}

#[test]
fn a_broker_down_at_start_is_waited_for_and_given_up_on_in_one_line() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "40", "--delay-ms", "0", "--reset"]),
    );
    broker.stop();

    let mut producer = Logged::spawn(
        broker.weather().args([
            "produce",
            "--count",
            "60",
            "--delay-ms",
            "0",
            "--wait",
            "100",
        ]),
        logs.path().join("producer.log"),
    );
    let mut consumer = Logged::spawn(
        broker.weather().args([
            "consume",
            "0,1,2,3",
            "--until-caught-up",
            "--wait",
            "100",
            "--state-dir",
            state_dir,
        ]),
        logs.path().join("consumer.log"),
    );
    wait_for("both to say they are waiting", GUARD, || {
        producer.printed().contains("waiting for a broker")
            && consumer.printed().contains("waiting for a broker")
    });
    broker.restart();
    producer.wait_ok("the producer once the broker is up");
    consumer.wait_ok("the consumer once the broker is up");
    for program in [&producer, &consumer] {
        let stderr = program.printed();
        assert_eq!(
            stderr.matches("waiting for a broker").count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains("is up"), "{stderr}");
    }
    // The consumer caught up with what was there when it started; a second run takes the rest.
    broker.catch_up("0,1,2,3", Path::new(state_dir));
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 100);

    // Giving up: the waiting line, then one error line, and the files as they were.
    let before = folder_bytes(state.path());
    broker.stop();
    let started = Instant::now();
    let output = broker
        .weather()
        .args(["consume", "0", "--wait", "2", "--state-dir", state_dir])
        .output()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("waiting for a broker"), "{stderr}");
    assert!(
        lines[1].starts_with("error: cannot reach a broker at ")
            && lines[1].contains(&broker.address())
            && lines[1].contains("make up"),
        "{stderr}"
    );
    assert_eq!(folder_bytes(state.path()), before);
}

#[test]
fn broken_state_files_stop_the_consumer_in_one_line_and_stay_byte_for_byte() {
    let broker = Broker::start();
    let good = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "120", "--delay-ms", "0", "--reset"]),
    );
    run_ok(broker.weather().args([
        "consume",
        "0",
        "--until-caught-up",
        "--state-dir",
        path_str(good.path()),
    ]));
    let whole = std::fs::read(good.path().join("partition-0.json")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("not JSON", b"this is not json\n".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x7b]),
        ("wrong shape: a list", b"[0, 61]".to_vec()),
        (
            "wrong shape: offset is text",
            br#"{"partition": 0, "offset": "61"}"#.to_vec(),
        ),
        (
            "wrong shape: another partition's file",
            br#"{"partition": 3, "offset": 10}"#.to_vec(),
        ),
        (
            "wrong shape: a month without its fields",
            br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 3}}}"#.to_vec(),
        ),
    ];
    let path = state.path().join("partition-0.json");
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let line = only_error_line(broker.weather().args([
            "consume",
            "0",
            "--until-caught-up",
            "--state-dir",
            state_dir,
        ]));
        assert!(
            line.contains(path_str(&path))
                && line.contains("move it aside")
                && line.contains("--reset-state"),
            "{what}: {line}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}: file changed");
        assert_eq!(
            folder_bytes(state.path()).len(),
            1,
            "{what}: another file appeared"
        );
    }

    // A bad file among good partitions stops the run before any partition is read.
    let line = only_error_line(broker.weather().args([
        "consume",
        "2,0",
        "--until-caught-up",
        "--state-dir",
        state_dir,
    ]));
    assert!(line.contains("partition-0.json"), "{line}");
    assert!(!state.path().join("partition-2.json").exists());

    // The way out: --reset-state keeps the bad file as .bak and counts from the start.
    run_ok(broker.weather().args([
        "consume",
        "0,2",
        "--until-caught-up",
        "--reset-state",
        "--state-dir",
        state_dir,
    ]));
    let last_case = br#"{"partition": 0, "offset": 10, "March": {"2000": {"count": 3}}}"#;
    assert_eq!(
        std::fs::read(state.path().join("partition-0.json.bak")).unwrap(),
        last_case
    );
    std::fs::remove_file(state.path().join("partition-0.json.bak")).unwrap();
    broker.catch_up("1", Path::new(state_dir));
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 120);
}

#[test]
fn a_file_from_before_the_topic_was_recreated_is_refused_and_kept() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "400", "--delay-ms", "0", "--reset"]),
    );
    broker.catch_up("0,1,2,3", Path::new(state_dir));
    let before = folder_bytes(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "10", "--delay-ms", "0", "--reset"]),
    );
    let consume = || {
        only_error_line(broker.weather().args([
            "consume",
            "0,1,2,3",
            "--until-caught-up",
            "--state-dir",
            state_dir,
        ]))
    };
    let verify = || {
        let output = broker
            .weather()
            .args(["verify", "--state-dir", state_dir])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The files name the old topic's id: that is what the line says.
    let line = consume();
    assert!(
        line.contains("partition-0.json counts topic \"temperatures\" (id ")
            && line.contains("not topic \"temperatures\" (id ")
            && line.contains("--reset-state"),
        "{line}"
    );
    assert_eq!(folder_bytes(state.path()), before);
    assert!(verify().contains("the file counts topic \"temperatures\" (id "));

    // Files from before topic files name no topic: their offsets beyond the new ends still
    // give the recreated topic away.
    for c in checkpoint::load_all(state.path()).unwrap() {
        std::fs::remove_file(PartitionFile::new(state.path(), c.partition).topic_path()).unwrap();
    }
    let before = folder_bytes(state.path());
    let line = consume();
    assert!(
        line.contains("partition-0.json")
            && line.contains("beyond the end")
            && line.contains("--reset-state"),
        "{line}"
    );
    assert_eq!(folder_bytes(state.path()), before);
    assert!(verify().contains("beyond the partition's end"));

    run_ok(broker.weather().args([
        "consume",
        "0,1,2,3",
        "--until-caught-up",
        "--reset-state",
        "--state-dir",
        state_dir,
    ]));
    for name in before.keys() {
        let backup = state.path().join(format!("{name}.bak"));
        assert_eq!(std::fs::read(backup).unwrap(), before[name]);
        std::fs::remove_file(state.path().join(format!("{name}.bak"))).unwrap();
    }
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 10);
}

#[test]
fn a_leftover_tmp_from_a_crash_is_named_and_removed_and_the_file_kept() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    broker.catch_up("0", Path::new(state_dir));
    broker.produce(100);
    // A save of partition 0 cut short after its .tmp was written, and partition 2's very
    // first save cut short before any rename: there is a .tmp but no file.
    let tmp0 = state.path().join("partition-0.json.tmp");
    let tmp2 = state.path().join("partition-2.json.tmp");
    std::fs::write(&tmp0, "{\"partition\": 0, \"offset\": 99999, \"Mar").unwrap();
    std::fs::write(&tmp2, "").unwrap();
    let output = broker.catch_up("0,1,2,3", Path::new(state_dir));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for tmp in [&tmp0, &tmp2] {
        let line = format!("{} is left over from an interrupted save", tmp.display());
        assert_eq!(stderr.matches(&line).count(), 1, "{stderr}");
        assert!(!tmp.exists());
    }
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 200);
}

/// Makes `dir` unwritable for the consumer about to run, and returns how to run it.
///
/// chmod is enough for an ordinary user. Root writes through any mode bits, so as root the
/// consumer runs as `nobody` instead: the same unwritable folder, seen by a user it binds.
fn read_only_for_the_consumer(dir: &Path, mut command: Command) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = dir.join("probe");
    if File::create(&probe).is_ok() {
        std::fs::remove_file(&probe).unwrap();
        // Running as root: let nobody read the folder (tempdirs are 0700) but not write it.
        println!("root ignores mode bits: running the consumer as nobody (uid 65534)");
        let parent = dir.parent().expect("state folder has a parent");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        command.uid(65534).gid(65534);
    }
    command
}

#[test]
fn a_read_only_state_folder_stops_the_consumer_in_one_line_before_reading() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("state");
    let state_dir = path_str(&state);
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    broker.catch_up("0", Path::new(state_dir));
    broker.produce(100);
    let before = folder_bytes(&state);

    let mut command = read_only_for_the_consumer(&state, broker.weather());
    let line = only_error_line(command.args([
        "consume",
        "0",
        "--until-caught-up",
        "--state-dir",
        state_dir,
    ]));
    assert!(
        line.contains(&format!("cannot write {state_dir}: ")) && line.contains("writable"),
        "{line}"
    );
    assert_eq!(folder_bytes(&state), before);

    // Writable again, the same consumer carries on from the file.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    broker.catch_up("0,1,2,3", Path::new(state_dir));
    assert_counted_exactly_once(&broker, &state, date!(2000 - 01 - 01), 200);
}

#[test]
fn records_that_are_not_reports_are_counted_warned_about_skipped_and_passed() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "59", "--delay-ms", "0", "--reset"]),
    );
    let cluster = broker.cluster();
    let junk = |key: Option<&[u8]>, value: &[u8]| Record {
        key: key.map(<[u8]>::to_vec),
        value: Some(value.to_vec()),
        headers: BTreeMap::new(),
        timestamp: Utc.timestamp_millis_opt(0).unwrap(),
    };
    let report = |date: &str| {
        prost::Message::encode_to_vec(&weather_stream::report::Report {
            date: date.into(),
            degrees: 1.0,
        })
    };
    let counted = prost::Message::encode_to_vec(&Weather::new(1).report(date!(2000 - 01 - 05)));
    // January lands on partition 2, after its 31 days.
    runtime().block_on(async {
        let partition = cluster.partition(TOPIC, 2).await.unwrap();
        partition
            .produce(vec![
                junk(Some(b"January"), b"\xff\x01 not protobuf"),
                junk(None, &counted),
                junk(Some(b"January"), &report("2000-01-32")),
                junk(Some(b"January"), &report("yesterday")),
                junk(Some(b"Janvier"), &counted),
                // A replay of a day already counted: a duplicate, not an error.
                junk(Some(b"January"), &counted),
            ])
            .await
            .unwrap();
    });
    broker.produce(341);

    let output = broker.catch_up("0,1,2,3", Path::new(state_dir));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(": skipped, "))
        .collect();
    assert_eq!(warnings.len(), 5, "{stderr}");
    for (offset, reason) in [
        (31, "not a Report"),
        (32, "no key"),
        (33, "\"2000-01-32\" is not YYYY-MM-DD"),
        (34, "\"yesterday\" is not YYYY-MM-DD"),
        (35, "\"Janvier\" is not a month"),
    ] {
        assert!(
            warnings.iter().any(
                |w| w.contains(&format!("partition 2 offset {offset}: skipped"))
                    && w.contains(reason)
            ),
            "offset {offset}: {stderr}"
        );
    }
    assert!(
        stderr.contains("partition 2: stopped at offset")
            && stderr.contains("5 not reports")
            && stderr.contains("1 duplicates"),
        "{stderr}"
    );
    let file = PartitionFile::new(state.path(), 2).load().unwrap().unwrap();
    assert_eq!(file.offset, topic_records(&cluster)[&2].end);
    assert_counted_exactly_once_with(
        &broker,
        state.path(),
        date!(2000 - 01 - 01),
        400,
        &[date!(2000 - 01 - 05)],
        5,
    );
}

#[test]
fn bad_command_lines_get_exactly_one_line_and_a_failure() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "5", "--delay-ms", "0", "--reset"]),
    );
    let closed = format!("127.0.0.1:{}", support::free_port());
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["consume", "0", "7"],
            vec!["partition 7 does not exist", "0 to 3"],
        ),
        (
            vec!["consume", "4"],
            vec!["partition 4 does not exist", "0 to 3"],
        ),
        (
            vec!["consume", "1", "1"],
            vec!["partition 1 is listed twice"],
        ),
        (
            vec!["consume", "0,2,0"],
            vec!["partition 0 is listed twice"],
        ),
        (
            vec!["consume", "zero"],
            vec!["invalid value 'zero'", "--help"],
        ),
        (vec!["consume", "-1"], vec!["'-1'", "--help"]),
        (vec!["consume"], vec!["<PARTITION>", "--help"]),
        (
            vec!["consume", "0", "--topic", "nope"],
            vec!["topic \"nope\" does not exist", "weather produce"],
        ),
        (
            vec!["consume", "0", "--wait", "0", "--brokers", &closed],
            vec!["cannot reach a broker at", &closed, "make up"],
        ),
        (
            vec![
                "verify",
                "--wait",
                "0",
                "--brokers",
                "no-such-host.invalid:9092",
            ],
            vec![
                "cannot reach a broker at no-such-host.invalid:9092",
                // `make up` cannot start a remote broker: the line says what to check instead.
                "check the address (--brokers or KAFKA_BROKERS)",
            ],
        ),
        (vec!["produce", "--brokers", "localhost"], vec!["host:port"]),
        (vec!["produce", "--start", "2000-13-01"], vec!["YYYY-MM-DD"]),
        (vec!["verify"], vec!["no partition files"]),
    ];
    for (args, expected) in cases {
        let mut command = broker.weather();
        command.args(&args);
        if args[0] != "produce" {
            command.args(["--state-dir", state_dir]);
        }
        let line = only_error_line(&mut command);
        for part in expected {
            assert!(line.contains(part), "{args:?}: {line}");
        }
    }
    assert!(
        state.path().read_dir().unwrap().next().is_none(),
        "a failed run wrote state"
    );
    // The broker's topic is untouched by all of it.
    let topic = topic_days(&broker.cluster());
    assert_eq!(topic.values().map(|p| p.days.len()).sum::<usize>(), 5);
}

/// Reads every partition file over and over while a test runs, and notes each moment one did
/// not load or its offset went back: what a reader (the plot, the dashboard, a partition's
/// next owner) could have seen.
struct FileWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, usize)>,
}

impl FileWatch {
    fn start(dir: &Path) -> FileWatch {
        let dir = dir.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut problems = Vec::new();
            let mut last: BTreeMap<String, i64> = BTreeMap::new();
            let mut reads = 0;
            while !stopped.load(Ordering::Relaxed) {
                // Gone: the test has failed and its folder was removed.
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    break;
                };
                for entry in entries {
                    let name = entry.expect("entry").file_name();
                    let name = name.to_string_lossy().to_string();
                    if !(name.starts_with("partition-") && name.ends_with(".json")) {
                        continue;
                    }
                    let text = match std::fs::read_to_string(dir.join(&name)) {
                        Ok(text) => text,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => panic!("{name}: {e}"),
                    };
                    reads += 1;
                    // A partition's topic file must stay whole too.
                    if name.ends_with(".topic.json") {
                        if let Err(e) = TopicIdentity::from_json(&text) {
                            problems.push(format!("{name} did not load: {e}\n{text}"));
                        }
                        continue;
                    }
                    match Checkpoint::from_json(&text) {
                        Err(e) => problems.push(format!("{name} did not load: {e}\n{text}")),
                        Ok(c) => {
                            let before = last.insert(name.clone(), c.offset).unwrap_or(0);
                            if c.offset < before {
                                problems.push(format!(
                                    "{name} went back from {before} to {}",
                                    c.offset
                                ));
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (problems, reads)
        });
        FileWatch { stop, thread }
    }

    /// Stops watching and insists that every read loaded and no offset went back.
    fn assert_all_good(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (problems, reads) = self.thread.join().expect("the watch");
        println!("{reads} reads of partition files while the members ran");
        assert!(reads > 100, "the watch read too little: {reads}");
        assert!(
            problems.is_empty(),
            "{} bad reads, the first: {}",
            problems.len(),
            problems[0]
        );
    }
}

fn end_offsets(broker: &Broker) -> BTreeMap<i32, i64> {
    topic_days(&broker.cluster())
        .into_iter()
        .map(|(id, p)| (id, p.end))
        .filter(|(_, end)| *end > 0)
        .collect()
}

#[test]
fn a_group_member_frozen_past_its_session_never_writes_beside_the_new_owner() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "200", "--delay-ms", "0", "--reset"]),
    );
    let watch = FileWatch::start(state.path());
    // Small fetches, so each member saves often: many chances to write over the other.
    let member = |name: &str| {
        Logged::spawn(
            broker
                .weather()
                .args(["consume", "--group", "stats", "--state-dir", state_dir])
                .args(["--session-timeout-ms", "6000", "--fetch-bytes", "300"]),
            logs.path().join(name),
        )
    };
    let all: BTreeSet<i32> = (0..4).collect();
    let mut a = member("a.log");
    wait_for(
        "the first member to hold all four partitions",
        GUARD,
        || reading_partitions(&a.printed()) == Some(all.clone()),
    );
    let mut b = member("b.log");
    wait_for("the two members to share the partitions", GUARD, || match (
        reading_partitions(&a.printed()),
        reading_partitions(&b.printed()),
    ) {
        (Some(pa), Some(pb)) => {
            !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.union(&pb).count() == 4
        }
        _ => false,
    });
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", "3000", "--delay-ms", "5"]),
        logs.path().join("producer.log"),
    );
    let held_by_a = reading_partitions(&a.printed()).unwrap();
    let start = offsets(state.path());
    wait_for("the member about to freeze to be saving", GUARD, || {
        let now = offsets(state.path());
        held_by_a.iter().all(|p| now.get(p) > start.get(p))
    });

    // Frozen mid-work, still holding its partitions, until the group gives them to the other.
    a.signal("STOP");
    let files_of_a = |dir: &Path| -> BTreeMap<i32, (i64, Vec<u8>)> {
        held_by_a
            .iter()
            .map(|p| {
                let bytes = std::fs::read(dir.join(format!("partition-{p}.json"))).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                let offset = Checkpoint::from_json(&text).map_or(-1, |c| c.offset);
                (*p, (offset, bytes))
            })
            .collect()
    };
    let frozen = files_of_a(state.path());
    // Given, not yet reading: it waits for the frozen member's locks.
    wait_for(
        "the other member to be given all four partitions",
        GUARD,
        || given_partitions(&b.printed()) == Some(all.clone()),
    );
    std::thread::sleep(Duration::from_secs(3));
    // Until the frozen member lets go, it may still write: nobody else may.
    let now = files_of_a(state.path());
    let written: Vec<String> = held_by_a
        .iter()
        .filter(|p| now[p] != frozen[p])
        .map(|p| format!("partition {p} from offset {} to {}", frozen[p].0, now[p].0))
        .collect();
    assert!(
        written.is_empty(),
        "the new owner wrote while the frozen owner still held them: {written:?}"
    );
    let waiting = format!("waiting for pid {} ", a.pid());
    assert!(b.printed().contains(&waiting), "{}", b.printed());

    let mark = b.printed().len();
    a.signal("CONT");
    // The thawed member lets go and rejoins: the other takes over, or, when the rejoin ends
    // its generation first, reads again in the next one.
    let taking_over = format!("taking over from pid {} ", a.pid());
    wait_for(
        "the new owner to take over once the old one let go",
        GUARD,
        || {
            let printed = b.printed();
            printed.contains(&taking_over)
                || printed[mark..].lines().any(|l| {
                    l.contains(" reading partition ") && !l.ends_with(" reading partition none")
                })
        },
    );
    producer.wait_ok("the producer");
    let ends = end_offsets(&broker);
    wait_for("the members to bring every file to the end", GUARD, || {
        offsets(state.path()) == ends
    });
    // Both are still healthy members: they stop cleanly, and leave nothing behind.
    a.interrupt();
    b.interrupt();
    a.wait_ok("the member that was frozen");
    b.wait_ok("the member that took over");
    println!("a:\n{}\nb:\n{}", a.printed(), b.printed());
    watch.assert_all_good();
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 3200);
    let names: Vec<String> = folder_bytes(state.path()).into_keys().collect();
    // The partition files and their topic files; no lock or temporary file is left.
    let expected: Vec<String> = (0..4)
        .flat_map(|p| {
            [
                format!("partition-{p}.json"),
                format!("partition-{p}.topic.json"),
            ]
        })
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn a_second_consumer_of_a_partition_is_refused_naming_the_first_and_changes_nothing() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    let logs = tempfile::tempdir().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0", "--reset"]),
    );
    let mut first = Logged::spawn(
        broker
            .weather()
            .args(["consume", "0", "2", "--state-dir", state_dir]),
        logs.path().join("first.log"),
    );
    let ends = end_offsets(&broker);
    wait_for("the first consumer to catch up", GUARD, || {
        let now = offsets(state.path());
        [0, 2].iter().all(|p| now.get(p) == ends.get(p))
    });
    // Caught up and idle: it writes nothing more, so any change would be the second one's.
    let before = folder_bytes(state.path());
    for args in [
        vec!["consume", "0", "--until-caught-up"],
        vec!["consume", "0", "--until-caught-up", "--reset-state"],
        vec!["consume", "1,2", "--until-caught-up"],
    ] {
        let line = only_error_line(
            broker
                .weather()
                .args(&args)
                .args(["--state-dir", state_dir]),
        );
        assert!(
            line.contains(&format!("pid {} ", first.pid()))
                && line.contains("(weather consume 0 2)")
                && line.contains("stop that one first"),
            "{args:?}: {line}"
        );
        let partition = if args[1] == "0" { 0 } else { 2 };
        assert!(
            line.contains(&format!("partition {partition} is being consumed by")),
            "{line}"
        );
        assert_eq!(
            folder_bytes(state.path()),
            before,
            "{args:?} changed the folder"
        );
    }
    assert!(first.is_running());
    first.interrupt();
    first.wait_ok("the first consumer");

    // A holder killed outright holds nothing: the kernel drops its lock with it.
    let holder = Logged::spawn(
        broker
            .weather()
            .args(["consume", "0,1,2,3", "--state-dir", state_dir]),
        logs.path().join("killed.log"),
    );
    wait_for("the consumer to start reading", GUARD, || {
        holder.printed().matches("resuming at offset").count() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    holder.signal("KILL");
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "100", "--delay-ms", "0"]),
    );
    let output = run_ok(broker.weather().args([
        "consume",
        "0,1,2,3",
        "--until-caught-up",
        "--state-dir",
        state_dir,
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 200);
}

/// A March report for `day` of 2000 with these degrees, as a record on partition 0.
fn march_record(day: u8, degrees: f64) -> Record {
    let date = Date::from_calendar_date(2000, Month::March, day).unwrap();
    let value = prost::Message::encode_to_vec(&weather_stream::report::Report {
        date: date.to_string(),
        degrees,
    });
    Record {
        key: Some(b"March".to_vec()),
        value: Some(value),
        headers: BTreeMap::new(),
        timestamp: Utc.timestamp_millis_opt(0).unwrap(),
    }
}

/// Writes records to partition 0 (March's) directly, as another producer might.
fn write_to_partition_0(broker: &Broker, records: Vec<Record>) {
    let cluster = broker.cluster();
    runtime().block_on(async {
        let partition = cluster.partition(TOPIC, 0).await.unwrap();
        partition.produce(records).await.unwrap();
    });
}

#[test]
fn days_that_arrive_late_are_counted_once_in_any_order() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    // January and February from the producer; March only from us, out of order.
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "60", "--delay-ms", "0", "--reset"]),
    );
    let weather = Weather::new(1);
    let degrees =
        |day: u8| weather.degrees(Date::from_calendar_date(2000, Month::March, day).unwrap());
    let mut rng = fastrand::Rng::with_seed(support::seed());
    let mut late: Vec<u8> = (1..=30).collect();
    rng.shuffle(&mut late);
    // The month's last day first, then the others, in two runs of the consumer, with repeats.
    let first: Vec<u8> = [31].iter().chain(&late[..12]).copied().collect();
    let second: Vec<u8> = late[12..].iter().chain(&[late[3], 31]).copied().collect();
    let consume = || {
        run_ok(broker.weather().args([
            "consume",
            "0,1,2,3",
            "--until-caught-up",
            "--state-dir",
            state_dir,
        ]))
    };
    write_to_partition_0(
        &broker,
        first.iter().map(|&d| march_record(d, degrees(d))).collect(),
    );
    consume();
    let march = |state: &Path| {
        PartitionFile::new(state, 0)
            .load()
            .unwrap()
            .unwrap()
            .stats
            .get(Month::March, 2000)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        march(state.path()).count,
        13,
        "the late days of the first run"
    );
    for chunk in second.chunks(7) {
        write_to_partition_0(
            &broker,
            chunk.iter().map(|&d| march_record(d, degrees(d))).collect(),
        );
    }
    let output = consume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("partition 0: stopped at offset") && stderr.contains("2 duplicates"),
        "only the two repeats are duplicates: {stderr}"
    );

    // Every day once, summed in the order it arrived (the order verify reads it in).
    let mut seen = BTreeSet::new();
    let expected_sum = first
        .iter()
        .chain(&second)
        .filter(|d| seen.insert(**d))
        .fold(0.0, |sum, &d| sum + degrees(d));
    let m = march(state.path());
    assert_eq!(m.count, 31);
    assert_eq!(
        m.sum.to_bits(),
        expected_sum.to_bits(),
        "{} {expected_sum}",
        m.sum
    );
    assert_eq!(m.start, date!(2000 - 03 - 01));
    assert_eq!(m.end, date!(2000 - 03 - 31));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.path().join("partition-0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["March"]["2000"]["days"], 0x7fff_ffff_u32);
    broker.verify(state.path());
    assert_eq!(
        offsets(state.path())[&0],
        end_offsets(&broker)[&0],
        "the file is at the partition's end"
    );
}

#[test]
fn temperatures_no_day_can_have_are_skipped_and_the_file_stays_loadable() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = path_str(state.path());
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "60", "--delay-ms", "0", "--reset"]),
    );
    let weather = Weather::new(1);
    let degrees =
        |day: u8| weather.degrees(Date::from_calendar_date(2000, Month::March, day).unwrap());
    // Two finite values whose sum is not: JSON would write it as null, and the next start
    // would refuse the file, however often it was reset.
    write_to_partition_0(
        &broker,
        vec![
            march_record(1, degrees(1)),
            march_record(2, f64::MAX),
            march_record(3, f64::MAX),
            march_record(4, -1e300),
            march_record(2, degrees(2)),
            march_record(3, degrees(3)),
        ],
    );
    let consume = || {
        run_ok(broker.weather().args([
            "consume",
            "0",
            "--until-caught-up",
            "--state-dir",
            state_dir,
        ]))
    };
    let output = consume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not a temperature a day can have"))
        .collect();
    assert_eq!(warnings.len(), 3, "one warning each: {stderr}");
    for offset in 1..=3 {
        assert!(
            warnings[offset - 1].contains(&format!("partition 0 offset {offset}: skipped")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("3 not reports"), "{stderr}");
    let file = PartitionFile::new(state.path(), 0).load().unwrap().unwrap();
    assert_eq!(file.offset, 6);
    let m = file.stats.get(Month::March, 2000).unwrap();
    assert_eq!(m.count, 3);
    assert_eq!(
        m.sum.to_bits(),
        (degrees(1) + degrees(2) + degrees(3)).to_bits()
    );

    // The next start takes the file as it is, with nothing to warn about.
    write_to_partition_0(&broker, vec![march_record(4, degrees(4))]);
    let output = consume();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
    assert_eq!(
        PartitionFile::new(state.path(), 0)
            .load()
            .unwrap()
            .unwrap()
            .stats
            .days(),
        4
    );
    broker.verify(state.path());
}
