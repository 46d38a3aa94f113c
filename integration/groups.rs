//! Consumer groups against a real broker: `weather debug` members sharing the topic, and
//! `weather consume --group` members keeping exact statistics across a member's death.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::exactly_once::assert_counted_exactly_once;
use support::topic::ends;
use support::{Broker, KillOnDrop, kill, run_ok};
use time::macros::date;
use weather_stream::checkpoint;

const GUARD: Duration = Duration::from_secs(90);
/// Short, so a killed member's partitions move on quickly; long enough for Tansu's 3 s
/// follower pause while a group forms.
const SESSION_MS: &str = "6000";

/// A running `weather` whose stdout and stderr lines are collected as they come.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(stream: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (lines, reader)
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weather");
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
    /// The partitions this member reads in its latest generation (see
    /// `support::reading_partitions`).
    fn assigned(&self) -> Option<BTreeSet<i32>> {
        support::reading_partitions(&self.log())
    }

    /// SIGTERM, then insists on a clean exit.
    fn stop(mut self) -> Self {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        assert!(exit.success(), "{exit}: {}", self.log());
        assert!(
            self.log().contains("left"),
            "left the group: {}",
            self.log()
        );
        self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn debug_member(broker: &Broker, extra: &[&str]) -> Running {
    Running::start(
        broker
            .weather()
            .args(["debug", "--session-timeout-ms", SESSION_MS])
            .args(extra),
    )
}

fn produce(broker: &Broker, days: u32, reset: bool) {
    let count = days.to_string();
    let mut command = broker.weather();
    command.args(["produce", "--count", &count, "--delay-ms", "0"]);
    if reset {
        command.arg("--reset");
    }
    run_ok(&mut command);
}

/// A printed line's (partition, date).
fn parse(line: &str) -> (i32, String) {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    let at: Vec<usize> = ["partition", "key", "date", "degrees"]
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).expect(line))
        .collect();
    assert!(
        at.is_sorted() && value.as_object().unwrap().len() == 4,
        "{line}"
    );
    (
        value["partition"].as_i64().unwrap() as i32,
        value["date"].as_str().unwrap().to_string(),
    )
}

fn dates(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| parse(l).1).collect()
}

/// The `n` dates after the `skip` first ones from 2000-01-01.
fn days(skip: usize, n: usize) -> BTreeSet<String> {
    let start = time::macros::date!(2000 - 01 - 01);
    std::iter::successors(Some(start), |d| d.next_day())
        .skip(skip)
        .take(n)
        .map(|d| d.to_string())
        .collect()
}

/// Like `wait_for`, with the members' logs in the failure.
fn wait_seeing(what: &str, members: &[&Running], mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        if started.elapsed() > GUARD {
            let logs: Vec<String> = members
                .iter()
                .map(|m| {
                    format!(
                        "--- member log:\n{}\n--- stdout: {} lines",
                        m.log(),
                        m.lines().len()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_four() -> BTreeSet<i32> {
    (0..4).collect()
}

#[test]
fn two_debug_members_split_the_partitions_and_the_survivor_takes_all() {
    let broker = Broker::start();
    produce(&broker, 10, true);
    let a = debug_member(&broker, &[]);
    wait_seeing("the first member to get all four partitions", &[&a], || {
        a.assigned() == Some(all_four())
    });
    let b = debug_member(&broker, &[]);
    wait_seeing(
        "the two members to split the partitions",
        &[&a, &b],
        || match (a.assigned(), b.assigned()) {
            (Some(pa), Some(pb)) => {
                !pa.is_empty()
                    && !pb.is_empty()
                    && pa.is_disjoint(&pb)
                    && pa.union(&pb).copied().collect::<BTreeSet<_>>() == all_four()
            }
            _ => false,
        },
    );
    let (pa, pb) = (a.assigned().unwrap(), b.assigned().unwrap());

    // Ten days were in the topic before anyone joined: a new group starts at the end.
    produce(&broker, 60, false);
    let expected = days(10, 60);
    wait_seeing("the 60 new days to be printed", &[&a, &b], || {
        a.lines().len() + b.lines().len() >= expected.len()
    });
    let (la, lb) = (a.lines(), b.lines());
    let mut printed = dates(&la);
    printed.extend(dates(&lb));
    assert_eq!(printed.len(), expected.len(), "nothing printed twice");
    assert_eq!(printed.into_iter().collect::<BTreeSet<_>>(), expected);
    for (lines, mine) in [(&la, &pa), (&lb, &pb)] {
        for line in lines.iter() {
            assert!(mine.contains(&parse(line).0), "{line} is not in {mine:?}");
        }
    }

    // The leader killed without a word: the other takes its partitions after the session
    // timeout, leading the group itself.
    let mut a = a;
    kill(&mut a.child);
    produce(&broker, 30, false);
    let expected = days(70, 30);
    wait_seeing(
        "the survivor to print the days of all four partitions",
        &[&b],
        || {
            b.assigned() == Some(all_four())
                && expected.is_subset(&dates(&b.lines()).into_iter().collect())
        },
    );
    b.stop();
}

#[test]
fn a_debug_member_starts_at_the_end_then_resumes_from_its_commits() {
    let broker = Broker::start();
    produce(&broker, 40, true);
    let first = debug_member(&broker, &[]);
    wait_seeing("the member to be assigned", &[&first], || {
        first.assigned() == Some(all_four())
    });
    produce(&broker, 5, false);
    wait_seeing("five lines", &[&first], || first.lines().len() >= 5);
    let first = first.stop();
    assert_eq!(
        dates(&first.lines()).into_iter().collect::<BTreeSet<_>>(),
        days(40, 5),
        "only what arrived after it joined"
    );
    assert_eq!(first.lines().len(), 5);

    // Committed on exit: the next member of the group picks up exactly there.
    produce(&broker, 7, false);
    let second = debug_member(&broker, &[]);
    wait_seeing("seven lines", &[&second], || second.lines().len() >= 7);
    let second = second.stop();
    assert_eq!(second.lines().len(), 7, "{:?}", second.lines());
    assert_eq!(
        dates(&second.lines()).into_iter().collect::<BTreeSet<_>>(),
        days(45, 7)
    );

    // A new group asking for the beginning gets everything.
    let everything = debug_member(&broker, &["--group", "fresh", "--from-beginning"]);
    wait_seeing("all 52 days", &[&everything], || {
        everything.lines().len() >= 52
    });
    let everything = everything.stop();
    assert_eq!(everything.lines().len(), 52);
}

#[test]
fn group_stats_members_stay_exact_when_one_dies_midway() {
    let broker = Broker::start();
    produce(&broker, 400, true);
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_string();
    let member = || {
        Running::start(broker.weather().args([
            "consume",
            "--group",
            "stats",
            "--state-dir",
            &dir,
            "--session-timeout-ms",
            SESSION_MS,
        ]))
    };
    let a = member();
    let mut b = member();
    wait_seeing("both stats members to hold partitions", &[&a, &b], || {
        matches!((a.assigned(), b.assigned()), (Some(pa), Some(pb))
            if !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb))
    });

    // More days arrive while one member dies without saving anything more.
    let mut producer = broker.weather();
    producer.args(["produce", "--count", "300", "--delay-ms", "5"]);
    let mut producer = KillOnDrop::spawn(producer.stdout(Stdio::null()).stderr(Stdio::null()));
    let held_by_b = b.assigned().unwrap();
    // The folder is shared: a, alone at first, may have written b's files already. Only
    // files that move on after the split are b's work.
    let offset_of = |p: i32| {
        checkpoint::PartitionFile::new(state.path(), p)
            .load()
            .ok()
            .flatten()
            .map(|c| c.offset)
    };
    let at_split: BTreeMap<i32, Option<i64>> =
        held_by_b.iter().map(|p| (*p, offset_of(*p))).collect();
    wait_seeing(
        "the doomed member to have saved something",
        &[&a, &b],
        || held_by_b.iter().any(|p| offset_of(*p) > at_split[p]),
    );
    kill(&mut b.child);
    assert!(producer.wait().unwrap().success());

    let ends = ends(&broker.cluster());
    wait_seeing("the survivor to bring every file to the end", &[&a], || {
        let files: BTreeMap<i32, i64> = checkpoint::load_all(state.path())
            .map(|all| all.iter().map(|c| (c.partition, c.offset)).collect())
            .unwrap_or_default();
        a.assigned() == Some(all_four()) && files == ends
    });
    a.stop();

    // Every day produced counted once, checked against the topic and the generator.
    assert_counted_exactly_once(&broker, state.path(), date!(2000 - 01 - 01), 700);
}

#[test]
fn a_partition_list_and_a_group_do_not_mix() {
    let output = Command::new(env!("CARGO_BIN_EXE_weather"))
        .args(["consume", "0", "--group", "stats"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--group"), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn a_debug_member_carries_on_through_a_broker_restart() {
    let mut broker = Broker::start();
    produce(&broker, 10, true);
    let member = debug_member(&broker, &[]);
    wait_seeing("the member to be assigned", &[&member], || {
        member.assigned() == Some(all_four())
    });
    produce(&broker, 5, false);
    wait_seeing("five lines", &[&member], || member.lines().len() >= 5);

    broker.restart();
    produce(&broker, 5, false);
    let expected = days(10, 10);
    wait_seeing(
        "the days from before and after the restart",
        &[&member],
        || expected.is_subset(&dates(&member.lines()).into_iter().collect()),
    );
    // Its heartbeats noticed the lost connection and it found its coordinator again: within
    // its session it kept its partitions (Tansu restarts in a second); past it, it rejoined
    // (an Apache Kafka node takes longer than the 6 s session to come back).
    wait_seeing("the member to be back in its group", &[&member], || {
        let log = member.log();
        let lost = log.rfind("finding the coordinator again");
        let back = log
            .rfind("the coordinator answers again; partitions kept")
            .max(log.rfind(" reading partition "));
        lost.is_some() && lost < back
    });
    member.stop();
}

#[test]
fn a_member_without_partitions_stays_in_the_group_and_takes_over_when_another_leaves() {
    let broker = Broker::start();
    produce(&broker, 10, true);
    let mut members: Vec<Running> = (0..5).map(|_| debug_member(&broker, &[])).collect();
    let shares = |members: &[Running]| -> Vec<Option<BTreeSet<i32>>> {
        members.iter().map(Running::assigned).collect()
    };
    let refs: Vec<&Running> = members.iter().collect();
    // Four members with one partition each, one with none, all four partitions covered.
    wait_seeing("five members to share four partitions", &refs, || {
        let shares = shares(&members);
        let held: Vec<&BTreeSet<i32>> = shares.iter().flatten().collect();
        held.len() == 5
            && held.iter().filter(|s| s.len() == 1).count() == 4
            && held.iter().filter(|s| s.is_empty()).count() == 1
            && held.iter().fold(BTreeSet::new(), |all, s| &all | s) == all_four()
    });
    let idle = shares(&members)
        .iter()
        .position(|s| s.as_ref().is_some_and(BTreeSet::is_empty))
        .unwrap();
    // It stays, idle: not exited, not left.
    produce(&broker, 31, false);
    wait_seeing("the busy members to print the new days", &refs, || {
        members.iter().map(|m| m.lines().len()).sum::<usize>() >= 31
    });
    assert!(
        members[idle].child.try_wait().unwrap().is_none(),
        "the idle member exited: {}",
        members[idle].log()
    );
    assert!(
        !members[idle].log().contains("left"),
        "{}",
        members[idle].log()
    );

    // A busy member leaves: the idle one is given a partition and prints from there on.
    let busy = (0..5).find(|i| *i != idle).unwrap();
    members.remove(busy).stop();
    let idle = if busy < idle { idle - 1 } else { idle };
    let refs: Vec<&Running> = members.iter().collect();
    wait_seeing("the idle member to take a partition", &refs, || {
        members[idle].assigned().is_some_and(|s| !s.is_empty())
            && shares(&members)
                .iter()
                .flatten()
                .fold(BTreeSet::new(), |all, s| &all | s)
                == all_four()
    });
    let before = members[idle].lines().len();
    produce(&broker, 365, false);
    wait_seeing(
        "the former idle member to print its new share",
        &refs,
        || members[idle].lines().len() > before,
    );
    for member in members {
        member.stop();
    }
}
