//! State that follows its partition: `weather consume --group` members on "several machines"
//! (one state folder each) keep every partition's checkpoint in the changelog topic
//! `temperatures.stats`, restore the newest snapshot when given a partition, and end with the
//! generator's counts in the changelog, whatever moved between them.
//!
//! The argument the design rests on is checked directly: every snapshot ever written is a
//! correct state at its own offset, so restoring an older one on purpose, from the changelog or
//! from a local file, and reading on ends in exactly the state the newest gives. Where it does
//! not hold (a snapshot of another topic), the snapshot is fenced, and that is checked too.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::exactly_once::{
    assert_checkpoints_exact, assert_topic_holds_each_day_once, checkpoints_exact_in,
};
use support::topic::ends;
use support::{Broker, GUARD, KillOnDrop, Logged, http_get, run_ok, wait_for, with_cluster};
use time::Date;
use time::macros::date;
use weather_stream::changelog::{self, Changelog};
use weather_stream::checkpoint::{self, Checkpoint, PartitionFile, TopicIdentity};
use weather_stream::kafka::Cluster;

const TOPIC: &str = "temperatures";
const CHANGELOG: &str = "temperatures.stats";
/// Short, so a killed member's partitions move on quickly; long enough for Tansu's 3 s
/// follower pause while a group forms.
const SESSION_MS: &str = "6000";
const FIRST: Date = date!(2000 - 01 - 01);
/// Days a test's first member counts (`catch_up_in_group`).
const DAYS: u64 = 300;

/// The merged state as any machine reads it: the newest snapshot of every partition.
fn changelog_state(broker: &Broker) -> Vec<Checkpoint> {
    with_cluster(broker, async |cluster| {
        changelog::read_all(cluster, TOPIC)
            .await
            .expect("read the changelog")
            .1
    })
}

/// [`changelog_state`] over one connection, for the waits that poll it. Made after any broker
/// restart or node kill it must see past.
struct ChangelogWatch {
    runtime: tokio::runtime::Runtime,
    cluster: Cluster,
}

impl ChangelogWatch {
    fn new(broker: &Broker) -> ChangelogWatch {
        let runtime = support::runtime();
        let cluster = runtime.block_on(broker.connect());
        ChangelogWatch { runtime, cluster }
    }

    /// The merged state now.
    fn state(&self) -> Vec<Checkpoint> {
        self.runtime.block_on(async {
            changelog::read_all(&self.cluster, TOPIC)
                .await
                .expect("read the changelog")
                .1
        })
    }
}

/// Every snapshot in changelog partition `partition`, in the order written.
fn all_snapshots(broker: &Broker, partition: i32) -> Vec<Checkpoint> {
    with_cluster(broker, async |cluster| {
        let reader = cluster.partition(CHANGELOG, partition).await.unwrap();
        let (earliest, end) = reader.offsets().await.unwrap();
        let mut all = Vec::new();
        reader
            .scan(earliest, end, |r| {
                all.push(changelog::decode(r.value.as_deref().unwrap()).expect("a snapshot"));
            })
            .await
            .unwrap();
        all
    })
}

/// Writes `snapshots` to the changelog with the library's own writer, as a member would.
fn write_snapshots(broker: &Broker, snapshots: &[Checkpoint]) {
    with_cluster(broker, async |cluster| {
        let info = cluster.require_described(TOPIC).await.unwrap();
        let topic = TopicIdentity::of(TOPIC, &info);
        let writer = Changelog::open(cluster, TOPIC, &info).await.unwrap();
        for s in snapshots {
            writer.write(s, &topic).await.unwrap();
        }
    });
}

fn delete_changelog(broker: &Broker) {
    with_cluster(broker, async |cluster| {
        cluster.delete_topic(CHANGELOG).await.unwrap()
    });
}

/// `weather consume --group stats` with its own state folder: a machine of its own.
fn member(broker: &Broker, dir: &Path, log: &Path) -> Logged {
    let mut command = broker.weather();
    command
        .args([
            "consume",
            "--group",
            "stats",
            "--session-timeout-ms",
            SESSION_MS,
        ])
        .arg("--state-dir")
        .arg(dir);
    Logged::spawn(&mut command, log.to_path_buf())
}

/// Waits until the changelog's merged state has every partition at its end (an empty
/// partition has no snapshot: nothing was read from it).
fn wait_for_changelog_at_ends(broker: &Broker, what: &str, members: &[&Logged]) {
    let mut ends = ends(&broker.cluster());
    ends.retain(|_, end| *end > 0);
    let watch = ChangelogWatch::new(broker);
    let started = std::time::Instant::now();
    loop {
        let state: std::collections::BTreeMap<i32, i64> = watch
            .state()
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect();
        if state == ends {
            return;
        }
        if started.elapsed() > GUARD {
            let logs: Vec<String> = members.iter().map(|m| m.printed()).collect();
            panic!(
                "timed out waiting for {what}: changelog at {state:?}, ends {ends:?}\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a member with SIGINT and insists it exits cleanly.
fn stop(mut m: Logged, what: &str) {
    m.interrupt();
    m.wait_ok(what);
}

/// A member in `dir` until the changelog has every partition at its end (`waiting_for`), then
/// stopped (`name`): what it logged.
fn member_until_changelog_at_ends(
    broker: &Broker,
    dir: &Path,
    log: &Path,
    waiting_for: &str,
    name: &str,
) -> String {
    let m = member(broker, dir, log);
    wait_for_changelog_at_ends(broker, waiting_for, &[&m]);
    stop(m, name);
    std::fs::read_to_string(log).unwrap()
}

/// A member in `dir` until it reads all four partitions, then stopped (`name`): what it
/// logged.
fn member_until_it_reads_all_four(broker: &Broker, dir: &Path, log: &Path, name: &str) -> String {
    let m = member(broker, dir, log);
    wait_for("the member to read all four partitions", GUARD, || {
        support::reading_partitions(&m.printed()).is_some_and(|p| p.len() == 4)
    });
    stop(m, name);
    std::fs::read_to_string(log).unwrap()
}

/// A first member, with its folder `dir`, catches up on `DAYS` days and stops: the
/// changelog's state then.
fn caught_up_by_a_first_member(broker: &Broker, dir: &Path, logs: &Path) -> Vec<Checkpoint> {
    stop(
        catch_up_in_group(broker, dir, &logs.join("first.log"), DAYS),
        "the first member",
    );
    changelog_state(broker)
}

/// One member in `dir` reads the topic while `days` more days arrive in six runs of the
/// producer, catching up after each: so every partition with days in two runs has two
/// snapshots or more. Returns the member, still running.
fn catch_up_in_group(broker: &Broker, dir: &Path, log: &Path, days: u64) -> Logged {
    broker.produce(days / 6);
    let m = member(broker, dir, log);
    wait_for_changelog_at_ends(broker, "one member to catch up", &[&m]);
    for _ in 1..6 {
        broker.produce(days / 6);
        wait_for_changelog_at_ends(broker, "one member to catch up", &[&m]);
    }
    m
}

/// The offset a member's log says it resumed `partition` at, and from where.
fn resumed(log: &str, partition: i32) -> Option<(i64, String)> {
    let prefix = format!("partition {partition}: resuming at offset ");
    // The first restore: when a partition comes back to the same member, the member's own
    // file is as new as the changelog and the later lines name the file.
    let line = log.lines().find(|l| l.contains(&prefix))?;
    let rest = line.split_once(&prefix)?.1;
    let (offset, from) = rest.split_once(" from ")?;
    Some((offset.parse().ok()?, from.to_string()))
}

#[test]
fn members_in_separate_folders_end_with_the_generators_counts_in_the_changelog() {
    let broker = Broker::start();
    broker.produce(400);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs = tempfile::tempdir().unwrap();
    let log = |i: usize| logs.path().join(format!("member-{i}.log"));
    let a = member(&broker, dirs[0].path(), &log(0));
    let mut b = member(&broker, dirs[1].path(), &log(1));
    wait_for("both members to read partitions", GUARD, || {
        let (pa, pb) = (
            support::reading_partitions(&a.printed()),
            support::reading_partitions(&b.printed()),
        );
        matches!((pa, pb), (Some(pa), Some(pb)) if !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb))
    });

    // More days arrive while b dies without a word and c, on a third machine, joins.
    let mut producer = broker.weather();
    producer.args(["produce", "--count", "300", "--delay-ms", "5"]);
    let mut producer = KillOnDrop::spawn(producer.stdout(Stdio::null()).stderr(Stdio::null()));
    // Every partition has a snapshot before b dies, so whatever c is given, it restores.
    let watch = ChangelogWatch::new(&broker);
    wait_for("a snapshot of every partition", GUARD, || {
        let state = watch.state();
        state.len() == 4 && state.iter().all(|c| c.offset > 0)
    });
    drop(watch);
    b.kill();
    let c = member(&broker, dirs[2].path(), &log(2));
    assert!(producer.wait().unwrap().success());
    // a alone may bring every partition to its end before the group takes c in (Tansu holds
    // c's join until b's session has expired): c must still be given partitions.
    wait_for("c to read partitions", GUARD, || {
        support::reading_partitions(&c.printed()).is_some_and(|p| !p.is_empty())
    });

    wait_for_changelog_at_ends(
        &broker,
        "the members to bring the changelog to the end",
        &[&a, &c],
    );
    // Partitions that moved to the new machine were restored from the changelog, not counted
    // again from the start (c's folder was empty).
    let c_log = c.printed();
    let moved_to_c = support::reading_partitions(&c_log).unwrap_or_default();
    assert!(!moved_to_c.is_empty(), "{c_log}");
    for p in &moved_to_c {
        let (offset, from) = resumed(&c_log, *p).expect(&c_log);
        assert!(from.starts_with("the changelog"), "{from}");
        assert!(offset > 0);
    }
    stop(a, "member a");
    stop(c, "member c");

    let topic = assert_topic_holds_each_day_once(&broker, FIRST, 700);
    let state = changelog_state(&broker);
    checkpoints_exact_in(&topic, &state, FIRST, 700);
    // Every local file, on every machine, is a valid partition file that matches the topic
    // up to its own offset.
    for dir in &dirs {
        checkpoint::load_all(dir.path()).expect("every local file loads");
        if !checkpoint::partition_files(dir.path()).unwrap().is_empty() {
            broker.verify(dir.path());
        }
    }
    any_machine_reads_the_merged_state_from_kafka(&broker, &state);
}

/// `verify`, `plot` and `serve --from-kafka`, on a machine with no state folder, see exactly
/// the merged `state`; and verify notices a snapshot that does not match the topic.
fn any_machine_reads_the_merged_state_from_kafka(broker: &Broker, state: &[Checkpoint]) {
    let verified = run_ok(broker.weather().args(["verify", "--from-kafka"]));
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(stdout.matches(": ok,").count(), state.len(), "{stdout}");

    // The chart from the changelog is the chart of the same checkpoints as files.
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("merged");
    std::fs::create_dir(&folder).unwrap();
    for c in state {
        PartitionFile::new(&folder, c.partition).save(c).unwrap();
    }
    let from_kafka = out.path().join("from-kafka.svg");
    let from_files = out.path().join("from-files.svg");
    run_ok(
        broker
            .weather()
            .args(["plot", "--from-kafka", "--out"])
            .arg(&from_kafka),
    );
    run_ok(
        broker
            .weather()
            .args(["plot", "--state-dir"])
            .arg(&folder)
            .arg("--out")
            .arg(&from_files),
    );
    assert_eq!(
        std::fs::read(&from_kafka).unwrap(),
        std::fs::read(&from_files).unwrap()
    );

    // The dashboard's merged statistics.
    let port = support::free_port();
    let serve = Logged::spawn(
        broker.weather().args([
            "serve",
            "--from-kafka",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]),
        out.path().join("serve.log"),
    );
    let mut merged = weather_stream::stats::PartitionStats::default();
    for c in state {
        merged.merge(&c.stats);
    }
    let expected = serde_json::json!({
        "partitions": state.iter().map(|c| c.partition).collect::<Vec<_>>(),
        "months": checkpoint::StatsJson(&merged),
    });
    let mut last = String::new();
    wait_for("the dashboard to show the changelog's state", GUARD, || {
        last = http_get(port, "/api/stats")
            .ok()
            .and_then(|a| Some(a.split_once("\r\n\r\n")?.1.to_string()))
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&last).is_ok_and(|v| v == expected)
    });
    drop(serve);

    // A snapshot written last at the same offset, one day's degrees off: verify says so.
    let mut wrong = state[0].clone();
    let (_, years) = wrong.stats.months.iter_mut().next().unwrap();
    let (_, month) = years.iter_mut().next().unwrap();
    month.sum += 1.0;
    write_snapshots(broker, &[wrong]);
    let output = broker
        .weather()
        .args(["verify", "--from-kafka"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 of 4 changelog snapshots do not match the topic"),
        "{stderr}"
    );
}

#[test]
fn a_zombies_late_lower_snapshot_does_not_hide_the_newest() {
    let broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let newest = caught_up_by_a_first_member(&broker, first.path(), logs.path());
    // A member that lost its partitions while stopped writes its last, older snapshots after
    // the newest ones.
    let late: Vec<Checkpoint> = newest
        .iter()
        .map(|c| all_snapshots(&broker, c.partition)[0].clone())
        .collect();
    write_snapshots(&broker, &late);

    // A new machine restores the newest of each partition, not the last written, nor its own
    // older local file.
    let dir = tempfile::tempdir().unwrap();
    for l in &late {
        PartitionFile::new(dir.path(), l.partition).save(l).unwrap();
    }
    let printed = member_until_it_reads_all_four(
        &broker,
        dir.path(),
        &logs.path().join("second.log"),
        "the second member",
    );
    for (n, l) in newest.iter().zip(&late) {
        let (offset, from) = resumed(&printed, n.partition).expect(&printed);
        assert_eq!(offset, n.offset, "partition {}: {printed}", n.partition);
        let local = format!(
            "the changelog {CHANGELOG} (local file: offset {})",
            l.offset
        );
        assert_eq!(from, local);
    }
    assert_eq!(changelog_state(&broker), newest);
}

#[test]
fn a_torn_local_file_is_set_aside_and_the_changelog_restores_it() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let newest = caught_up_by_a_first_member(&broker, dir.path(), logs.path());
    // What a power cut may leave of a file saved without fsync, in the partition January's
    // days go to, so the member saves it again.
    assert!(newest.iter().any(|c| c.partition == 2));
    let torn = PartitionFile::new(dir.path(), 2);
    std::fs::write(torn.path(), b"{\"partition\": 0, \"off").unwrap();
    broker.produce(100);
    let printed = member_until_changelog_at_ends(
        &broker,
        dir.path(),
        &logs.path().join("second.log"),
        "the member to catch up again",
        "the second member",
    );
    assert!(printed.contains("set aside as"), "{printed}");
    assert!(torn.path().with_extension("json.bak").exists());
    let state = changelog_state(&broker);
    assert_checkpoints_exact(&broker, &state, FIRST, 400);
    assert_eq!(checkpoint::load_all(dir.path()).unwrap(), state);
    broker.verify(dir.path());
}

/// Where a broker gives no topic id (Tansu 0.6.0), a snapshot of this name's topic before it
/// was recreated carries the same identity; one whose offset lies beyond the partition's end
/// is what gives it away, and it is never restored (the member counts from its own file
/// instead). Made here by hand, as it would be left, so the check runs on both brokers.
#[test]
fn a_snapshot_beyond_the_partitions_end_is_never_restored() {
    let broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let newest = caught_up_by_a_first_member(&broker, first.path(), logs.path());
    let mut beyond = newest[0].clone();
    beyond.offset += 100;
    write_snapshots(&broker, &[beyond.clone()]);

    // The first machine again: its own file is the newest usable state.
    let printed = member_until_it_reads_all_four(
        &broker,
        first.path(),
        &logs.path().join("second.log"),
        "the second member",
    );
    let (offset, from) = resumed(&printed, beyond.partition).expect(&printed);
    assert_eq!(offset, newest[0].offset, "{printed}");
    assert!(from.ends_with(".json"), "{from}");
    assert!(
        printed.contains("lies beyond the partition's end"),
        "{printed}"
    );
    assert_checkpoints_exact(
        &broker,
        &checkpoint::load_all(first.path()).unwrap(),
        FIRST,
        DAYS as usize,
    );
}

/// Members in three folders ("machines") while days arrive: at random (seeded, replay with
/// FAULTS_SEED) one is SIGKILLed, one frozen past its session and resumed (a zombie whose
/// partitions moved meanwhile), one leaves, one joins; on Tansu the broker restarts once
/// midway (`kafka_only` kills the changelog's leader on three nodes instead). At the end the
/// changelog holds exactly the generator's counts, every local file is valid and matches the
/// topic, and `verify --from-kafka` passes.
fn members_come_go_die_and_freeze(broker: &mut Broker, days: u64, restart_broker: bool) {
    // Days in the topic before the producer under test starts, so members have a topic.
    const BEFORE: u64 = 100;
    let mut rng = fastrand::Rng::with_seed(support::seed());
    // The members need the topic to be there.
    broker.produce(BEFORE);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs = tempfile::tempdir().unwrap();
    let mut lives = 0;
    let mut start = |broker: &Broker, slot: usize| {
        lives += 1;
        member(
            broker,
            dirs[slot].path(),
            &logs.path().join(format!("member-{slot}-{lives}.log")),
        )
    };
    let mut slots: Vec<Option<Logged>> = (0..3).map(|slot| Some(start(broker, slot))).collect();
    let mut producer = Logged::spawn(
        broker
            .weather()
            .args(["produce", "--count", &days.to_string(), "--delay-ms", "4"]),
        logs.path().join("producer.log"),
    );
    let watch = ChangelogWatch::new(broker);
    wait_for("a first snapshot", GUARD, || !watch.state().is_empty());
    drop(watch);
    let mut round = 0;
    let mut restarted = !restart_broker;
    let mut done = Vec::new();
    while producer.is_running() || round < 8 {
        round += 1;
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        let running: Vec<usize> = (0..3).filter(|s| slots[*s].is_some()).collect();
        let idle: Vec<usize> = (0..3).filter(|s| slots[*s].is_none()).collect();
        // Every kind of fault at least once, in the first rounds: a zombie, a death, a
        // leave, then joins; at random after that.
        const SCHEDULE: [u8; 5] = [2, 0, 3, 4, 4];
        let action = SCHEDULE
            .get(round - 1)
            .copied()
            .unwrap_or_else(|| rng.u8(0..5));
        let what = match action {
            0 | 1 if running.len() > 1 => {
                let slot = running[rng.usize(..running.len())];
                let mut m = slots[slot].take().unwrap();
                m.kill();
                done.push(m);
                format!("SIGKILL member {slot}")
            }
            2 if !running.is_empty() => {
                let slot = running[rng.usize(..running.len())];
                let m = slots[slot].as_ref().unwrap();
                m.signal("STOP");
                // Past its session, so the group gives its partitions to the others.
                std::thread::sleep(Duration::from_millis(8000));
                m.signal("CONT");
                format!("froze member {slot} for 8 s")
            }
            3 if running.len() > 1 => {
                let slot = running[rng.usize(..running.len())];
                let mut m = slots[slot].take().unwrap();
                m.interrupt();
                m.wait_ok(&format!("member {slot} to leave"));
                done.push(m);
                format!("member {slot} left")
            }
            _ if !idle.is_empty() => {
                let slot = idle[rng.usize(..idle.len())];
                slots[slot] = Some(start(broker, slot));
                format!("member {slot} joined")
            }
            _ => "nothing".into(),
        };
        println!("round {round}: {what}");
        if !restarted && round == 3 {
            broker.restart();
            restarted = true;
            println!("round {round}: broker restarted");
        }
    }
    producer.wait_ok("the producer");
    // Everyone back, so every partition is read to the end.
    for (slot, m) in slots.iter_mut().enumerate() {
        if m.is_none() {
            *m = Some(start(broker, slot));
        }
    }
    let members: Vec<&Logged> = slots.iter().flatten().collect();
    wait_for_changelog_at_ends(
        broker,
        "the members to bring the changelog to the end",
        &members,
    );
    for (slot, m) in slots.into_iter().enumerate() {
        stop(m.unwrap(), &format!("member {slot} at the end"));
    }

    // The topic holds exactly the days asked for, also when a broker restart made the
    // producer start a new session (it writes the rest of the same days, not more).
    let written = (BEFORE + days) as usize;
    let topic = assert_topic_holds_each_day_once(broker, FIRST, written);
    let state = changelog_state(broker);
    checkpoints_exact_in(&topic, &state, FIRST, written);
    for dir in &dirs {
        checkpoint::load_all(dir.path()).expect("every local file loads");
        if !checkpoint::partition_files(dir.path()).unwrap().is_empty() {
            broker.verify(dir.path());
        }
    }
    let verified = run_ok(broker.weather().args(["verify", "--from-kafka"]));
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(stdout.matches(": ok,").count(), state.len(), "{stdout}");
}

#[test]
fn members_in_three_folders_killed_frozen_added_and_removed_end_exact() {
    let mut broker = Broker::start();
    let restart = broker.kind == support::Kind::Tansu;
    members_come_go_die_and_freeze(&mut broker, 2500, restart);
}

/// Tests that delete one topic and need the other kept. Tansu 0.6.0 deletes both: deleting
/// `temperatures` took `temperatures.stats` with it, and deleting `temperatures.stats` took
/// `temperatures` (seen here; it gives every topic the all-zero id, which looks like the
/// key it deletes by). Without topic ids a recreated topic also looks like the old one; the
/// partition-end check is all there is there.
mod kafka_only {
    use super::*;
    use support::Kind;

    #[test]
    fn restoring_an_older_snapshot_ends_in_the_same_state_as_the_newest() {
        let broker = Broker::start_kind(Kind::Kafka);
        let first = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let newest = caught_up_by_a_first_member(&broker, first.path(), logs.path());
        assert_checkpoints_exact(&broker, &newest, FIRST, 300);
        // Each partition's first snapshot: a state well before its end.
        let older: Vec<Checkpoint> = newest
            .iter()
            .map(|c| {
                let all = all_snapshots(&broker, c.partition);
                assert!(
                    all.len() > 1,
                    "several snapshots of partition {}",
                    c.partition
                );
                all[0].clone()
            })
            .collect();
        assert!(older.iter().zip(&newest).all(|(o, n)| o.offset < n.offset));

        // From the changelog: only the older snapshots there, no local file.
        delete_changelog(&broker);
        write_snapshots(&broker, &older);
        let second = tempfile::tempdir().unwrap();
        let log = member_until_changelog_at_ends(
            &broker,
            second.path(),
            &logs.path().join("second.log"),
            "the member restored from older snapshots",
            "the member restored from the changelog",
        );
        for o in &older {
            let (offset, from) = resumed(&log, o.partition).expect(&log);
            assert_eq!(offset, o.offset, "{log}");
            assert!(from.starts_with("the changelog"), "{from}");
        }
        assert_eq!(changelog_state(&broker), newest);

        // From a local file: the older snapshots as the files of a third machine, and a changelog
        // that knows nothing.
        delete_changelog(&broker);
        let third = tempfile::tempdir().unwrap();
        for o in &older {
            PartitionFile::new(third.path(), o.partition)
                .save(o)
                .unwrap();
        }
        let log = member_until_changelog_at_ends(
            &broker,
            third.path(),
            &logs.path().join("third.log"),
            "the member restored from older files",
            "the member restored from its files",
        );
        for o in &older {
            let (offset, from) = resumed(&log, o.partition).expect(&log);
            assert_eq!(offset, o.offset, "{log}");
            assert!(
                from.ends_with(&format!("partition-{}.json", o.partition)),
                "{from}"
            );
        }
        assert_eq!(changelog_state(&broker), newest);
        assert_eq!(
            checkpoint::load_all(third.path()).unwrap(),
            newest,
            "the local files end where the changelog does"
        );
    }

    #[test]
    fn a_snapshot_of_the_topic_before_it_was_recreated_is_never_restored() {
        let broker = Broker::start_kind(Kind::Kafka);
        let logs = tempfile::tempdir().unwrap();
        let first = tempfile::tempdir().unwrap();
        let old = caught_up_by_a_first_member(&broker, first.path(), logs.path());
        // The topic deleted and made again, longer, from another first day: the old snapshots'
        // offsets all lie within the new partitions, so only the topic they count tells them
        // apart.
        let second_first = date!(2001 - 01 - 01);
        run_ok(broker.weather().args([
            "produce",
            "--reset",
            "--start",
            "2001-01-01",
            "--count",
            "500",
            "--delay-ms",
            "0",
        ]));
        let ends = ends(&broker.cluster());
        assert!(old.iter().all(|c| c.offset < ends[&c.partition]));
        assert!(
            !all_snapshots(&broker, 0).is_empty(),
            "the old snapshots are still in the changelog"
        );

        let dir = tempfile::tempdir().unwrap();
        let printed = member_until_changelog_at_ends(
            &broker,
            dir.path(),
            &logs.path().join("second.log"),
            "the member to count the new topic",
            "the second member",
        );
        let state = changelog_state(&broker);
        assert_checkpoints_exact(&broker, &state, second_first, 500);
        assert!(printed.contains("count another topic"), "{printed}");
    }

    /// Three Apache Kafka nodes (replication factor 3, which Tansu is not): the changelog
    /// gets the source topic's three copies and min.insync.replicas 2, and the leader of a
    /// changelog partition killed under two members, while days arrive, costs nothing.
    #[test]
    fn the_changelog_leader_killed_on_three_nodes_costs_nothing() {
        let mut broker = Broker::kafka_cluster();
        run_ok(
            broker
                .weather()
                .args(["produce", "--count", "0", "--replication-factor", "3"]),
        );
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let m = member(&broker, dir.path(), &logs.path().join("m.log"));
        wait_for("the changelog to be created", GUARD, || {
            m.printed().contains("created changelog")
        });
        let described = with_cluster(&broker, async |cluster| {
            cluster.require_described(CHANGELOG).await.unwrap()
        });
        assert!(described.partitions.values().all(|p| p.replicas.len() == 3));
        let config = run_ok(broker.kafka_tool("kafka.admin.ConfigCommand").args([
            "--bootstrap-server",
            &broker.address(),
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            CHANGELOG,
        ]));
        let config = String::from_utf8_lossy(&config.stdout);
        for setting in ["min.insync.replicas=2", "cleanup.policy=compact"] {
            assert!(config.contains(setting), "{config}");
        }
        stop(m, "the first member");

        // January's partition: its changelog partition is written all along.
        let leader = with_cluster(&broker, async |cluster| {
            cluster
                .require_described(CHANGELOG)
                .await
                .unwrap()
                .partitions[&2]
                .leader
                .unwrap()
        });
        kill_changelog_leader_midway(&mut broker, leader);
    }

    /// About 16 s at the producer's pace: the group forms, restores and writes snapshots
    /// before the kill, on three brokers sharing two cores, with days still to come.
    const DAYS_THROUGH_FAILOVER: usize = 4000;

    fn kill_changelog_leader_midway(broker: &mut Broker, leader: i32) {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let logs = tempfile::tempdir().unwrap();
        let members: Vec<Logged> = (0..2)
            .map(|i| {
                member(
                    broker,
                    dirs[i].path(),
                    &logs.path().join(format!("member-{i}.log")),
                )
            })
            .collect();
        let mut producer = Logged::spawn(
            broker
                .weather()
                .args(["produce", "--count", &DAYS_THROUGH_FAILOVER.to_string()])
                .args(["--delay-ms", "4"]),
            logs.path().join("producer.log"),
        );
        let watch = ChangelogWatch::new(broker);
        wait_for("snapshots of January's partition", GUARD, || {
            watch
                .state()
                .iter()
                .any(|c| c.partition == 2 && c.offset > 50)
        });
        drop(watch);
        broker.kill_node(leader);
        assert!(producer.is_running(), "the kill came too late to matter");
        producer.wait_ok("the producer through the failover");
        let refs: Vec<&Logged> = members.iter().collect();
        wait_for_changelog_at_ends(broker, "the members through the failover", &refs);
        let moved = with_cluster(broker, async |cluster| {
            cluster
                .require_described(CHANGELOG)
                .await
                .unwrap()
                .partitions[&2]
                .leader
        });
        assert_ne!(
            moved,
            Some(leader),
            "the changelog partition has a new leader"
        );
        for (i, m) in members.into_iter().enumerate() {
            stop(m, &format!("member {i}"));
        }
        let topic = assert_topic_holds_each_day_once(broker, FIRST, DAYS_THROUGH_FAILOVER);
        let state = changelog_state(broker);
        checkpoints_exact_in(&topic, &state, FIRST, DAYS_THROUGH_FAILOVER);
        for dir in &dirs {
            checkpoint::load_all(dir.path()).expect("every local file loads");
            if !checkpoint::partition_files(dir.path()).unwrap().is_empty() {
                broker.verify(dir.path());
            }
        }
        run_ok(broker.weather().args(["verify", "--from-kafka"]));
    }
}
