//! Records other producers write, read as Kafka's own consumer reads them (issue 13 item 5):
//! transactions of Kafka's Java client committed and aborted among our own writes, batches in
//! every codec, and transaction markers alone at a consumer's offset. The statistics expected
//! come from what the writers were told by the broker, never from what our fetch code reads.
//!
//! Transactions need Apache Kafka: Tansu 0.6.0 offers no EndTxn (its ApiVersions lists none),
//! so a transaction can be neither committed nor aborted there. Those tests choose Kafka
//! themselves, in module `kafka_only` (the Makefile's Tansu pass leaves them to its Kafka
//! pass). Compressed batches run on the broker WEATHER_TEST_BROKER names, so on both.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use prost::Message;
use rskafka::chrono::{TimeZone, Utc};
use support::{Broker, GUARD, KillOnDrop, Kind, Logged, ProduceRaw, wait_for, with_cluster};
use tempfile::TempDir;
use time::{Date, Month};
use weather_stream::checkpoint::{self, Checkpoint, PartitionFile};
use weather_stream::kafka::idempotent::{BatchOptions, IdempotentProducer, Outgoing};
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::{Report, format_date, month_name};
use weather_stream::stats::{DayReading, PartitionStats};
use weather_stream::weather::Weather;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOPIC: &str = "temperatures";
const PARTITIONS: i32 = 4;
/// Every compression.type of the Java producer.
const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const JDK_HINT: &str = "it needs a JDK 17 (javac and java on PATH, or JAVA_HOME; Debian: apt-get install openjdk-17-jdk-headless)";

fn date(year: i32, month: Month, day: u8) -> Date {
    Date::from_calendar_date(year, month, day).expect("a real date")
}

/// The generator's report for each of `days` of a month: what `weather produce` sends.
fn generated(year: i32, month: Month, days: impl IntoIterator<Item = u8>) -> Vec<DayReading> {
    let weather = Weather::new(1);
    days.into_iter()
        .map(|day| {
            let date = date(year, month, day);
            DayReading {
                date,
                degrees: weather.degrees(date),
            }
        })
        .collect()
}

/// The same days with other temperatures: what an aborted transaction may say of days that
/// a committed one says again, so counting the aborted ones shows in the sums.
fn rewritten(readings: &[DayReading]) -> Vec<DayReading> {
    readings
        .iter()
        .map(|r| DayReading {
            date: r.date,
            degrees: r.degrees + 20.5,
        })
        .collect()
}

fn partition_of(date: Date) -> i32 {
    partition_for(month_name(date.month()).as_bytes(), PARTITIONS)
}

/// A JDK tool: from JAVA_HOME when it is set, else from PATH.
fn jdk(tool: &str) -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) => PathBuf::from(home).join("bin").join(tool),
        None => PathBuf::from(tool),
    }
}

/// The folder of Kafka's jars that scripts/kafka.sh assembled.
fn kafka_lib() -> PathBuf {
    std::env::var_os("KAFKA_LIB").map_or_else(
        || Path::new(ROOT).join(format!(".kafka/{}/lib", support::broker::kafka_version())),
        PathBuf::from,
    )
}

/// One "sent DATE DEGREES PARTITION OFFSET" line: a record the broker acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    reading: DayReading,
    partition: i32,
    offset: i64,
}

/// integration/peers/TransactionalReports.java, compiled against Kafka's own client jars.
struct JavaPeer {
    classes: TempDir,
    lib: PathBuf,
}

impl JavaPeer {
    fn compile() -> JavaPeer {
        let lib = kafka_lib();
        assert!(
            lib.join(".complete").exists() || std::env::var_os("KAFKA_LIB").is_some(),
            "Apache Kafka's jars were not found in {}: run scripts/kafka.sh install",
            lib.display()
        );
        let classes = tempfile::tempdir().expect("folder for the compiled peer");
        let source = Path::new(ROOT).join("integration/peers/TransactionalReports.java");
        let compiled = Command::new(jdk("javac"))
            .arg("-d")
            .arg(classes.path())
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg(&source)
            .output()
            .unwrap_or_else(|e| panic!("cannot run javac ({e}): {JDK_HINT}"));
        assert!(
            compiled.status.success(),
            "javac {}: {}",
            source.display(),
            String::from_utf8_lossy(&compiled.stderr)
        );
        JavaPeer { classes, lib }
    }

    /// Starts the program against `broker`, compressing as `compression` says; its log goes
    /// to `logs`.
    fn start(&self, broker: &Broker, compression: &str, logs: &Path) -> JavaReports {
        let log = logs.join(format!("java-{compression}.log"));
        let mut child = KillOnDrop::spawn(
            Command::new(jdk("java"))
                .args(["-Xmx128m", "-XX:+UseSerialGC"])
                .arg(format!(
                    "-Dlog4j2.configurationFile={ROOT}/scripts/kafka/tools-log4j2.properties"
                ))
                .arg("-cp")
                .arg(format!(
                    "{}:{}/*",
                    self.classes.path().display(),
                    self.lib.display()
                ))
                .args([
                    "TransactionalReports",
                    &broker.address(),
                    TOPIC,
                    compression,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("log file")),
        );
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (sender, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        JavaReports {
            child,
            stdin,
            answers,
            log,
        }
    }
}

/// The running program: Kafka's own Java producer, transactional, driven one command a line,
/// each waited for.
struct JavaReports {
    child: KillOnDrop,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    log: PathBuf,
}

impl JavaReports {
    /// Runs one command; returns what it printed before "ok".
    fn command(&mut self, line: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().expect("the program's input is open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{line}: the Java producer is gone ({e}): {}", self.log()));
        let mut printed = Vec::new();
        loop {
            match self.answers.recv_timeout(GUARD) {
                Ok(answer) if answer == "ok" => return printed,
                Ok(answer) if answer.starts_with("error") => {
                    panic!("{line}: {answer}\n{}", self.log())
                }
                Ok(answer) => printed.push(answer),
                Err(e) => panic!(
                    "{line}: no answer from the Java producer ({e})\n{}",
                    self.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value the program writes for this report.
    fn encode(&mut self, reading: &DayReading) -> Vec<u8> {
        let line = format!("encode {} {}", format_date(reading.date), reading.degrees);
        let printed = self.command(&line);
        let hex = printed.first().expect("the encoded value");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn begin(&mut self, id: &str) {
        self.command(&format!("begin {id}"));
    }

    fn send(&mut self, id: &str, readings: &[DayReading]) {
        for r in readings {
            // Display of an f64 is the shortest text that parses back to the same bits, in
            // Java as in Rust.
            self.command(&format!("send {id} {} {}", format_date(r.date), r.degrees));
        }
    }

    /// Runs `verb` (flush, commit or abort) on transaction `id`; returns the records the
    /// broker acknowledged meanwhile.
    fn finish(&mut self, verb: &str, id: &str) -> Vec<Acked> {
        self.command(&format!("{verb} {id}"))
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert!(fields.len() == 5 && fields[0] == "sent", "{line}");
                Acked {
                    reading: DayReading {
                        date: weather_stream::report::parse_date(fields[1]).expect(line),
                        degrees: fields[2].parse().expect(line),
                    },
                    partition: fields[3].parse().expect(line),
                    offset: fields[4].parse().expect(line),
                }
            })
            .collect()
    }

    /// Closes its input, so it closes its producers and exits, and insists that it succeeded.
    fn close(mut self) {
        drop(self.stdin.take());
        let log = self.log();
        let mut child = self.child.into_child();
        let mut status = None;
        wait_for("the Java producer to exit", GUARD, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    }
}

/// What a record's writer was last told about it.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// In a transaction still open, of this transactional id.
    Open(String),
    Committed,
    Aborted,
}

/// Every record the test wrote, in the order the broker acknowledged it (each write is
/// acknowledged before the next starts, so this is offset order within a partition), and
/// what became of it: the checker's view, independent of the code under test.
#[derive(Default)]
struct Ledger {
    records: Vec<(i32, DayReading, Fate)>,
    /// The last offset the Java producers were given, per partition.
    java_offsets: BTreeMap<i32, i64>,
}

impl Ledger {
    /// Records a transactional producer had acknowledged, with their offsets checked.
    fn transactional(&mut self, id: &str, acked: Vec<Acked>) {
        for a in acked {
            assert_eq!(
                a.partition,
                partition_of(a.reading.date),
                "the Java client's default partitioner (murmur2) agrees with ours for {}",
                a.reading.date
            );
            if let Some(last) = self.java_offsets.insert(a.partition, a.offset) {
                assert!(a.offset > last, "offsets grow in the order acknowledged");
            }
            self.records
                .push((a.partition, a.reading, Fate::Open(id.into())));
        }
    }

    /// Records written outside any transaction, already acknowledged.
    fn plain(&mut self, readings: &[DayReading]) {
        for r in readings {
            self.records
                .push((partition_of(r.date), r.clone(), Fate::Committed));
        }
    }

    fn end(&mut self, id: &str, fate: Fate) {
        for (_, _, f) in &mut self.records {
            if *f == Fate::Open(id.into()) {
                *f = fate.clone();
            }
        }
    }

    /// The statistics each partition must have: its committed records, in offset order,
    /// through the same `stats` rules (so every sum is added in the same order).
    fn expected(&self) -> BTreeMap<i32, PartitionStats> {
        let mut expected: BTreeMap<i32, PartitionStats> = BTreeMap::new();
        for (partition, reading, fate) in &self.records {
            assert!(!matches!(fate, Fate::Open(_)), "a transaction left open");
            if *fate == Fate::Committed {
                expected.entry(*partition).or_default().add(reading);
            }
        }
        expected
    }

    /// (partition, date, degrees bits) of every committed record.
    fn committed(&self) -> BTreeSet<(i32, Date, u64)> {
        self.with_fate(&Fate::Committed)
    }

    fn aborted(&self) -> BTreeSet<(i32, Date, u64)> {
        self.with_fate(&Fate::Aborted)
    }

    fn with_fate(&self, wanted: &Fate) -> BTreeSet<(i32, Date, u64)> {
        self.records
            .iter()
            .filter(|(_, _, fate)| fate == wanted)
            .map(|(p, r, _)| (*p, r.date, r.degrees.to_bits()))
            .collect()
    }
}

/// Writes `readings` with our own idempotent producer (not transactional), and waits until
/// the broker has acknowledged every one.
fn write_ours(broker: &Broker, readings: &[DayReading]) {
    with_cluster(broker, async |cluster| {
        let producer =
            IdempotentProducer::start(cluster.view(), TOPIC, PARTITIONS, BatchOptions::default())
                .await
                .expect("producer id");
        for r in readings {
            let key = month_name(r.date.month());
            let value = Report {
                date: format_date(r.date),
                degrees: r.degrees,
            }
            .encode_to_vec();
            let record = Outgoing {
                key: Bytes::from_static(key.as_bytes()),
                value: value.into(),
                timestamp_ms: 0,
                id: r.date.to_julian_day().into(),
            };
            producer
                .send(partition_of(r.date), record)
                .await
                .expect("queued");
        }
        producer
            .close(std::future::pending())
            .await
            .expect("every record acknowledged");
    });
}

/// `weather consume 0,1,2,3 --until-caught-up` into `state`, which must end by itself: a
/// consumer that loops on a record it cannot step over fails here after `GUARD`.
fn catch_up(broker: &Broker, state: &Path, extra: &[&str], logs: &Path, name: &str) -> String {
    let mut consumer = Logged::spawn(
        broker
            .weather()
            .args(["consume", "0,1,2,3", "--until-caught-up", "--state-dir"])
            .arg(state)
            .args(extra),
        logs.join(format!("{name}.log")),
    );
    consumer.wait_ok(&format!("{name}: weather consume --until-caught-up"));
    consumer.printed()
}

/// The next offset of each partition (ListOffsets: the end, transaction markers included,
/// or where an open transaction starts).
fn ends(broker: &Broker) -> BTreeMap<i32, i64> {
    with_cluster(broker, async |cluster| {
        let mut ends = BTreeMap::new();
        for id in 0..PARTITIONS {
            let partition = cluster.partition(TOPIC, id).await.expect("partition");
            ends.insert(id, partition.offsets().await.expect("offsets").1);
        }
        ends
    })
}

fn file_offsets(state: &Path) -> BTreeMap<i32, i64> {
    checkpoint::load_all(state)
        .expect("partition files load")
        .iter()
        .map(|c| (c.partition, c.offset))
        .collect()
}

/// The proof: a file for each partition with data, at the partition's end (markers
/// included), holding exactly the expected statistics (counts, day sets, sums to the bit),
/// and `weather verify` agrees.
fn assert_counted_exactly(broker: &Broker, state: &Path, expected: &BTreeMap<i32, PartitionStats>) {
    let ends = ends(broker);
    let files = checkpoint::load_all(state).expect("partition files load");
    assert_eq!(
        files.iter().map(|c| c.partition).collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "a file for each partition with reports"
    );
    for c in &files {
        assert_eq!(c.offset, ends[&c.partition], "partition {}", c.partition);
        let want = &expected[&c.partition];
        let differences = c.stats.differences(want);
        // `differences` calls the expected side "topic": here it is what the writers had
        // committed.
        assert!(
            differences.is_empty() && c.stats == *want,
            "partition {}, file against the committed reports: {differences:#?}",
            c.partition
        );
    }
    let verified = broker.verify(state);
    let said = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(said.matches(": ok,").count(), expected.len(), "{said}");
}

/// Ends transaction `id` with `verb` (commit or abort), and says so in the ledger.
fn end(java: &mut JavaReports, ledger: &mut Ledger, verb: &str, id: &str) {
    let acked = java.finish(verb, id);
    ledger.transactional(id, acked);
    ledger.end(
        id,
        if verb == "commit" {
            Fate::Committed
        } else {
            Fate::Aborted
        },
    );
}

/// The Java program's hand-made protobuf is our `Report`, byte for byte, and decodes as one.
fn assert_java_writes_our_report(java: &mut JavaReports) {
    let odd = DayReading {
        date: date(1999, Month::July, 4),
        degrees: -0.1,
    };
    for reading in generated(2000, Month::December, [1, 26, 31])
        .into_iter()
        .chain([odd])
    {
        let bytes = java.encode(&reading);
        let ours = Report {
            date: format_date(reading.date),
            degrees: reading.degrees,
        };
        assert_eq!(bytes, ours.encode_to_vec(), "{reading:?}");
        let decoded = Report::decode(bytes.as_slice()).expect("decodes as our Report");
        assert_eq!(decoded.date, ours.date);
        assert_eq!(decoded.degrees.to_bits(), reading.degrees.to_bits());
    }
}

/// `weather debug --from-beginning` prints every committed report and nothing else: no
/// record of an aborted transaction.
fn assert_debug_prints_the_committed_reports(broker: &Broker, ledger: &Ledger, logs: &Path) {
    let out = logs.join("debug.out");
    let _debug = KillOnDrop::spawn(
        broker
            .weather()
            .args(["debug", "--from-beginning", "--group", "foreign"])
            .stdout(std::fs::File::create(&out).expect("debug output"))
            .stderr(std::fs::File::create(logs.join("debug.log")).expect("debug log")),
    );
    // Whole lines only: the last one may be half written.
    let printed = || -> BTreeSet<(i32, Date, u64)> {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let whole = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
        whole
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect(line);
                let date = weather_stream::report::parse_date(value["date"].as_str().expect(line))
                    .expect(line);
                (
                    value["partition"].as_i64().expect(line) as i32,
                    date,
                    value["degrees"].as_f64().expect(line).to_bits(),
                )
            })
            .collect()
    };
    let committed = ledger.committed();
    // Every partition ends with committed reports, so once those are printed every aborted
    // record has been passed.
    wait_for(
        "weather debug to print every committed report",
        GUARD,
        || printed().is_superset(&committed),
    );
    let printed = printed();
    let aborted = ledger.aborted();
    let aborted: Vec<_> = printed.intersection(&aborted).collect();
    assert!(aborted.is_empty(), "aborted reports printed: {aborted:?}");
    assert_eq!(printed, committed);
}
/// Whether the broker can serve a snappy batch it was given. Tansu 0.6.0 stores a batch's
/// records uncompressed and compresses them again for each fetch, with no snappy encoder: it
/// takes a snappy batch, then answers every fetch that reaches it by closing the connection
/// (its log: `UnexpectedType("Snappy")`), for any client. Nothing a reader can do about it,
/// so snappy is tested on Apache Kafka only (here, and by the Java producer).
fn serves_snappy(kind: Kind) -> bool {
    kind == Kind::Kafka
}

#[test]
fn compressed_batches_from_another_producer_are_counted_exactly() {
    let broker = Broker::start();
    let dirs = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    // Ours: January and February 2000 (partitions 2 and 1).
    broker.produce(60);
    ledger.plain(&generated(2000, Month::January, 1..=31));
    ledger.plain(&generated(2000, Month::February, 1..=29));
    // Another producer's: a month a batch, one batch per codec, on all four partitions.
    let batches = [
        (Compression::None, Month::March, 31),
        (Compression::Gzip, Month::April, 30),
        (Compression::Snappy, Month::May, 31),
        (Compression::Lz4, Month::June, 30),
        (Compression::Zstd, Month::July, 31),
    ];
    for (compression, month, days) in batches {
        // May stays where it is, so that the producer's resume below has the same topic.
        let compression = if compression == Compression::Snappy && !serves_snappy(broker.kind) {
            Compression::None
        } else {
            compression
        };
        let readings = generated(2000, month, 1..=days);
        let records = readings
            .iter()
            .map(|r| rskafka::record::Record {
                key: Some(month_name(month).as_bytes().to_vec()),
                value: Some(
                    Report {
                        date: format_date(r.date),
                        degrees: r.degrees,
                    }
                    .encode_to_vec(),
                ),
                headers: BTreeMap::new(),
                timestamp: Utc.timestamp_millis_opt(0).unwrap(),
            })
            .collect();
        with_cluster(&broker, async |cluster| {
            let partition = cluster
                .partition(TOPIC, partition_of(readings[0].date))
                .await
                .expect("partition");
            let offsets = partition
                .produce_compressed(records, compression)
                .await
                .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(offsets.len(), readings.len());
        });
        ledger.plain(&readings);
    }
    // Our producer resumes after what the topic holds, compressed batches included: every
    // partition's last date is known, so the next 30 new days are August's.
    support::run_ok(
        broker
            .weather()
            .args(["produce", "--count", "30", "--delay-ms", "0"]),
    );
    ledger.plain(&generated(2000, Month::August, 1..=30));

    let state = dirs.path().join("state");
    catch_up(&broker, &state, &[], dirs.path(), "consume");
    assert_counted_exactly(&broker, &state, &ledger.expected());
}

/// Transactions: on Apache Kafka whatever WEATHER_TEST_BROKER says (see the top of the file).
/// The Makefile's Tansu pass skips this module by its name.
mod kafka_only {
    use super::*;

    #[test]
    fn a_java_transactional_producer_counts_only_what_it_commits() {
        let broker = Broker::start_kind(Kind::Kafka);
        let dirs = tempfile::tempdir().unwrap();
        let logs = dirs.path();
        let state = dirs.path().join("state");
        let peer = JavaPeer::compile();
        let mut ledger = Ledger::default();
        // Our producer makes the topic and writes January 2000 (partition 2).
        broker.produce(31);
        ledger.plain(&generated(2000, Month::January, 1..=31));

        // One round a compression type, each in a year of its own, with two transactional
        // producers: A on partitions 0 (March) and 1 (February), B on 0 and 3 (May), ours on 0
        // and 2 (January) in between.
        for (round, compression) in COMPRESSIONS.into_iter().enumerate() {
            let year = 2001 + round as i32;
            let month = |month, days| generated(year, month, days);
            let mut java = peer.start(&broker, compression, logs);
            if round == 0 {
                assert_java_writes_our_report(&mut java);
            }
            let (a, b) = (format!("{compression}-a"), format!("{compression}-b"));

            // A opens a transaction, with temperatures that must never be counted.
            java.begin(&a);
            java.send(&a, &rewritten(&month(Month::March, 1..=5)));
            java.send(&a, &rewritten(&month(Month::February, 1..=5)));
            let a_open = java.finish("flush", &a);
            // B opens one beside it.
            java.begin(&b);
            java.send(&b, &month(Month::March, 6..=10));
            java.send(&b, &month(Month::May, 1..=5));
            let b_open = java.finish("flush", &b);
            let mut stable = BTreeMap::new();
            for acked in a_open.iter().chain(&b_open) {
                stable.entry(acked.partition).or_insert(acked.offset);
            }
            ledger.transactional(&a, a_open);
            ledger.transactional(&b, b_open);
            // Ours, idempotent and in no transaction: after both open ones on partition 0, and
            // on partition 2 where none is open.
            let ours = [month(Month::March, 11..=12), month(Month::January, 1..=3)].concat();
            write_ours(&broker, &ours);
            ledger.plain(&ours);

            // A consumer now reads up to where the first open transaction starts, and no
            // further (the last stable offset); it resumes from there next round.
            catch_up(&broker, &state, &[], logs, &format!("{compression}-open"));
            stable.insert(2, ends(&broker)[&2]);
            // A partition that held nothing before the open transactions has no file yet.
            stable.retain(|_, offset| *offset > 0);
            assert_eq!(file_offsets(&state), stable, "round {compression}");

            end(&mut java, &mut ledger, "abort", &a);
            // B goes on after A's abort marker, and commits.
            java.send(&b, &month(Month::March, 13..=14));
            end(&mut java, &mut ledger, "commit", &b);
            // A writes again the days it aborted, now with the generator's temperatures.
            java.begin(&a);
            java.send(&a, &month(Month::March, 1..=5));
            java.send(&a, &month(Month::February, 6..=10));
            end(&mut java, &mut ledger, "commit", &a);
            // B aborts days nobody writes again.
            java.begin(&b);
            java.send(&b, &month(Month::February, 11..=15));
            java.send(&b, &month(Month::January, 4..=6));
            end(&mut java, &mut ledger, "abort", &b);
            // A last transaction on every partition, committed: each partition ends with a
            // commit marker.
            java.begin(&a);
            for (m, day) in [
                (Month::March, 15),
                (Month::February, 16),
                (Month::January, 7),
                (Month::May, 6),
            ] {
                java.send(&a, &month(m, day..=day));
            }
            end(&mut java, &mut ledger, "commit", &a);
            java.close();
        }
        assert!(
            ledger.aborted().len() >= 5 * 18,
            "aborted records are in the log"
        );

        let expected = ledger.expected();
        // The consumer that read along, resumed from where the open transactions started.
        catch_up(&broker, &state, &[], logs, "resumed");
        assert_counted_exactly(&broker, &state, &expected);
        // One from nothing that fetches one batch at a time, so that every marker and every
        // aborted batch is in turn alone at its offset.
        let one_batch = dirs.path().join("one-batch");
        catch_up(
            &broker,
            &one_batch,
            &["--fetch-bytes", "1"],
            logs,
            "one-batch",
        );
        assert_counted_exactly(&broker, &one_batch, &expected);
        assert_debug_prints_the_committed_reports(&broker, &ledger, logs);
    }

    #[test]
    fn a_transaction_marker_alone_at_the_consumers_offset_is_stepped_over() {
        let broker = Broker::start_kind(Kind::Kafka);
        let dirs = tempfile::tempdir().unwrap();
        let logs = dirs.path();
        let mut ledger = Ledger::default();
        broker.produce(31);
        ledger.plain(&generated(2000, Month::January, 1..=31));
        let peer = JavaPeer::compile();
        let mut java = peer.start(&broker, "none", logs);
        java.begin("t");
        java.send("t", &generated(2000, Month::March, 1..=3));
        let acked = java.finish("commit", "t");
        let marker = acked.last().expect("three acknowledged").offset + 1;
        ledger.transactional("t", acked);
        ledger.end("t", Fate::Committed);
        assert_eq!(
            ends(&broker)[&0],
            marker + 1,
            "March's partition ends with the marker"
        );

        // A file at the marker, as a consumer that read the three days leaves it (any correct
        // checkpoint is a place to resume from): the next fetch holds the marker alone.
        let at_marker = dirs.path().join("at-marker");
        std::fs::create_dir_all(&at_marker).unwrap();
        let mut stats = PartitionStats::default();
        for reading in generated(2000, Month::March, 1..=3) {
            stats.add(&reading);
        }
        PartitionFile::new(&at_marker, 0)
            .save(&Checkpoint {
                partition: 0,
                offset: marker,
                topic: None,
                stats,
            })
            .unwrap();
        catch_up(&broker, &at_marker, &[], logs, "at-marker");
        assert_counted_exactly(&broker, &at_marker, &ledger.expected());

        // Then an aborted transaction and a committed one: the partition ends with a marker
        // again, after an abort marker and aborted records.
        java.begin("t");
        java.send("t", &rewritten(&generated(2000, Month::March, 4..=6)));
        end(&mut java, &mut ledger, "abort", "t");
        java.begin("t");
        java.send("t", &generated(2000, Month::March, 4..=6));
        end(&mut java, &mut ledger, "commit", "t");
        java.close();
        let expected = ledger.expected();
        catch_up(&broker, &at_marker, &[], logs, "at-marker-again");
        assert_counted_exactly(&broker, &at_marker, &expected);
        // One batch a fetch from nothing: each marker alone at the consumer's offset in turn.
        let one_batch = dirs.path().join("one-batch");
        catch_up(
            &broker,
            &one_batch,
            &["--fetch-bytes", "1"],
            logs,
            "one-batch",
        );
        assert_counted_exactly(&broker, &one_batch, &expected);
        // At the end a run finds nothing more to read, and ends.
        catch_up(&broker, &one_batch, &[], logs, "at-end");
        assert_counted_exactly(&broker, &one_batch, &expected);
    }
}
