//! `weather serve`: every route over HTTP, lag against a real broker, and the page in a real
//! headless Chromium that follows a partition file changing without a reload.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Broker, free_port, kill, run_ok, wait_for};
use time::Month;
use time::macros::date;
use weather_stream::checkpoint::{Checkpoint, PartitionFile};
use weather_stream::kafka::partitioner::partition_for;
use weather_stream::report::month_name;
use weather_stream::stats::{DayReading, PartitionStats};
use weather_stream::weather::Weather;

const GUARD: Duration = Duration::from_secs(60);

/// Partition files for every day of 2001–2003, split over four partitions by month as the
/// producer would; each file's offset is the number of reports it counted.
fn write_three_years(dir: &Path) -> Vec<Checkpoint> {
    let weather = Weather::new(1);
    let mut files: Vec<Checkpoint> = (0..4).map(|p| Checkpoint::empty(p, 0)).collect();
    let mut day = date!(2001 - 01 - 01);
    while day.year() <= 2003 {
        let p = partition_for(month_name(day.month()).as_bytes(), 4) as usize;
        files[p].stats.add(&DayReading {
            date: day,
            degrees: weather.degrees(day),
        });
        files[p].offset += 1;
        day = day.next_day().unwrap();
    }
    for c in &files {
        PartitionFile::new(dir, c.partition).save(c).unwrap();
    }
    files
}

fn merged(files: &[Checkpoint]) -> PartitionStats {
    let mut all = PartitionStats::default();
    for c in files {
        all.merge(&c.stats);
    }
    all
}

/// A running `weather serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(state_dir: &Path, brokers: &str) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_weather"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--brokers", brokers])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weather serve");
        let mut server = Server { child, port };
        wait_for("weather serve to listen", GUARD, || {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "weather serve exited"
            );
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn get(&self, path: &str) -> Reply {
        http_get(self.port, path)
    }

    fn json(&self, path: &str) -> Value {
        let reply = self.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        serde_json::from_str(&reply.body).expect("JSON body")
    }

    fn status_until(&self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let last = self.json("/api/status");
            if done(&last) {
                return last;
            }
            assert!(
                started.elapsed() < GUARD,
                "timed out waiting for {what}: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 GET, its body read by Content-Length, chunks, or to the end.
fn http_get(port: u16, path: &str) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read reply headers");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut body = Vec::new();
    if let Ok(length) = header("content-length").parse::<usize>() {
        body.resize(length, 0);
        reader.read_exact(&mut body).expect("read reply body");
    } else if header("transfer-encoding") == "chunked" {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).expect("read reply body");
    }
    Reply {
        status,
        content_type: header("content-type"),
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// An open `/events` stream, read one `snapshot` event at a time.
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(port: u16, path: &str) -> Events {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(GUARD)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            headers.push_str(&line.to_ascii_lowercase());
        }
        assert!(
            headers.contains("content-type: text/event-stream"),
            "{headers}"
        );
        Events { reader }
    }

    /// The next snapshot's JSON (chunk-size lines and keep-alive comments are skipped).
    fn next(&mut self) -> Value {
        let mut event = String::new();
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < GUARD, "no snapshot within {GUARD:?}");
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("event stream");
            assert!(read > 0, "the event stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:")
                && event == "snapshot"
            {
                return serde_json::from_str(data.trim()).expect("snapshot JSON");
            }
        }
    }
}

fn bar_count(svg: &str) -> usize {
    svg.matches("class=\"bar\"").count()
}

/// The `data-avg` the chart gives a month's bar.
fn bar_avg(svg: &str, month: Month) -> String {
    let wanted = format!("data-month=\"{}\"", month_name(month));
    let rect = svg
        .split("<rect")
        .map(|r| &r[..r.find('>').unwrap_or(r.len())])
        .find(|r| r.contains(&wanted))
        .unwrap_or_else(|| panic!("no bar for {month}: {svg}"));
    let avg = rect.split("data-avg=\"").nth(1).unwrap();
    avg[..avg.find('"').unwrap()].to_string()
}

/// The lag summed over the partitions of a status.
fn total_lag(status: &Value) -> i64 {
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["lag"].as_i64())
        .sum()
}

/// A broker address nothing listens on.
fn nowhere() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn every_route_answers_from_the_state_folder() {
    let state = tempfile::tempdir().unwrap();
    let files = write_three_years(state.path());
    let all = merged(&files);
    let server = Server::start(state.path(), &nowhere());

    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("new EventSource(\"events\""));
    // One page, nothing fetched from elsewhere.
    for outside in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!page.body.contains(outside), "page loads {outside}");
    }

    let stats = server.json("/api/stats");
    assert_eq!(stats["partitions"], json!([0, 1, 2, 3]));
    for (month, year) in [(Month::January, 2003), (Month::August, 2001)] {
        let expected = all.get(month, year).unwrap();
        let got = &stats["months"][month_name(month)][year.to_string()];
        assert_eq!(got["count"], expected.count);
        assert_eq!(got["avg"], expected.avg());
        assert_eq!(
            got["end"],
            format!("{}-{:02}-{}", year, month as u8, expected.end.day())
        );
    }

    let chart = server.get("/chart.svg");
    assert_eq!(chart.status, 200);
    assert_eq!(chart.content_type, "image/svg+xml");
    assert_eq!(
        bar_count(&chart.body),
        12,
        "all twelve months of the latest year"
    );
    assert!(chart.body.contains("Average maximum temperature, 2003"));
    let january = all.get(Month::January, 2003).unwrap().avg();
    assert_eq!(
        bar_avg(&chart.body, Month::January),
        format!("{january:.2}")
    );
    let older = server.get("/chart.svg?year=2001");
    assert!(older.body.contains("Average maximum temperature, 2001"));
    let march_2001 = all.get(Month::March, 2001).unwrap().avg();
    assert_eq!(
        bar_avg(&older.body, Month::March),
        format!("{march_2001:.2}")
    );
    assert_eq!(server.get("/chart.svg?year=soon").status, 400);

    let status = server.status_until("the broker to be found unreachable", |s| {
        s["broker"] == "unreachable"
    });
    assert_eq!(status["years"], json!([2001, 2002, 2003]));
    assert_eq!(status["year"], 2003);
    assert!(status.get("svg").is_none(), "status carries no chart");
    let rows = status["partitions"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (row, file) in rows.iter().zip(&files) {
        assert_eq!(row["file"], "ok");
        assert_eq!(row["offset"], file.offset);
        assert_eq!(
            row["last_date"],
            weather_stream::report::format_date(file.stats.last_date().unwrap())
        );
        assert_eq!(row["lag"], Value::Null, "no lag without a broker");
    }

    let mut events = Events::open(server.port, "/events?year=2002");
    let first = events.next();
    assert_eq!(first["year"], 2002);
    let svg = first["svg"].as_str().unwrap();
    assert_eq!(bar_count(svg), 12);
    assert!(svg.contains("Average maximum temperature, 2002"));

    assert_eq!(server.get("/no-such-page").status, 404);
}

#[test]
fn a_changed_partition_file_is_pushed_to_open_pages() {
    let state = tempfile::tempdir().unwrap();
    let mut files = write_three_years(state.path());
    let server = Server::start(state.path(), &nowhere());
    let mut events = Events::open(server.port, "/events");
    let first = events.next();
    assert_eq!(first["year"], 2003);

    // The consumer counts the first days of 2004 into partition 2 (January's).
    let january = &mut files[2];
    assert_eq!(partition_for(b"January", 4), 2);
    for (day, degrees) in [(date!(2004 - 01 - 01), 40.0), (date!(2004 - 01 - 02), 50.0)] {
        january.stats.add(&DayReading { date: day, degrees });
        january.offset += 1;
    }
    PartitionFile::new(state.path(), 2).save(january).unwrap();

    let started = Instant::now();
    let pushed = loop {
        let next = events.next();
        if next["year"] == 2004 {
            break next;
        }
        assert!(started.elapsed() < GUARD, "no snapshot for 2004: {next}");
    };
    let svg = pushed["svg"].as_str().unwrap();
    assert_eq!(bar_count(svg), 1, "only January has data in 2004");
    assert_eq!(bar_avg(svg, Month::January), "45.00");
    let row = &pushed["partitions"][2];
    assert_eq!(row["offset"], january.offset);
    assert_eq!(row["last_date"], "2004-01-02");
}

/// How soon `weather serve` must exit after SIGTERM: it ends its streams rather than wait for
/// the pages to go, so anything near this bound is a server waiting on its clients.
const PROMPT_EXIT: Duration = Duration::from_secs(5);

#[test]
fn sigterm_ends_open_event_streams_and_exits_cleanly() {
    let state = tempfile::tempdir().unwrap();
    write_three_years(state.path());
    let mut server = Server::start(state.path(), &nowhere());
    let mut events = Events::open(server.port, "/events");
    events.next();
    run_ok(Command::new("kill").args(["-TERM", &server.child.id().to_string()]));
    let mut status = None;
    wait_for(
        "weather serve to exit soon after SIGTERM",
        PROMPT_EXIT,
        || {
            status = server.child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    // The open stream ended as an HTTP body ends, with its last chunk, then the connection
    // closed: no read error, no further snapshot.
    let mut rest = String::new();
    events
        .reader
        .read_to_string(&mut rest)
        .expect("the event stream ends cleanly");
    assert!(rest.ends_with("0\r\n\r\n"), "no final chunk: {rest:?}");
    assert!(!rest.contains("event: snapshot"), "{rest}");
}

#[test]
fn missing_and_corrupt_files_show_as_such_and_the_server_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let server = Server::start(&state, &nowhere());

    // No folder yet: the page says so, the chart has nothing to draw.
    let status = server.json("/api/status");
    assert!(
        status["folder_problem"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{status}"
    );
    assert_eq!(server.get("/chart.svg").status, 404);
    assert_eq!(server.json("/api/stats")["months"], json!({}));

    std::fs::create_dir(&state).unwrap();
    let files = write_three_years(&state);
    let garbage = b"{\"partition\": 1, \"offset\": 12, \"Janu";
    std::fs::write(state.join("partition-1.json"), garbage).unwrap();
    std::fs::remove_file(state.join("partition-3.json")).unwrap();
    let status = server.status_until("the corrupt file to show", |s| {
        s["partitions"][1]["file"] == "corrupt"
    });
    let rows = status["partitions"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{status}");
    assert_eq!(rows[0]["file"], "ok");
    assert!(
        rows[1]["problem"].as_str().unwrap().contains("EOF"),
        "{status}"
    );
    assert_eq!(rows[1]["offset"], Value::Null);

    // Files that are readable still make the chart and the statistics.
    let stats = server.json("/api/stats");
    assert_eq!(stats["partitions"], json!([0, 2]));
    let january = merged(&files[2..3])
        .get(Month::January, 2003)
        .unwrap()
        .avg();
    assert_eq!(stats["months"]["January"]["2003"]["avg"], january);

    // A file that was there and is gone shows as missing.
    std::fs::remove_file(state.join("partition-0.json")).unwrap();
    let status = server.status_until("partition 0 to be missing", |s| {
        s["partitions"][0]["file"] == "missing"
    });
    assert_eq!(status["partitions"][0]["partition"], 0);

    // The server read the corrupt file and left it exactly as it was.
    assert_eq!(
        std::fs::read(state.join("partition-1.json")).unwrap(),
        garbage
    );
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn lag_is_the_distance_to_the_topics_end_and_a_lost_broker_is_shown() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "140", "--delay-ms", "0"]),
    );
    run_ok(broker.weather().args([
        "consume",
        "0,1,2,3",
        "--until-caught-up",
        "--state-dir",
        dir,
    ]));
    let server = Server::start(state.path(), &broker.address());

    let caught_up = server.status_until("lag 0 on every partition", |s| {
        s["broker"] == "reachable"
            && s["partitions"].as_array().unwrap().len() == 4
            && s["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lag"] == 0)
    });
    for row in caught_up["partitions"].as_array().unwrap() {
        assert_eq!(row["end"], row["offset"], "{caught_up}");
    }

    // Twenty more days on the topic and no consumer: the lag is what is left to read.
    run_ok(
        broker
            .weather()
            .args(["produce", "--count", "20", "--delay-ms", "0"]),
    );
    let behind = server.status_until("a lag of 20 in all", |s| total_lag(s) == 20);
    for row in behind["partitions"].as_array().unwrap() {
        let (end, offset) = (
            row["end"].as_i64().unwrap(),
            row["offset"].as_i64().unwrap(),
        );
        assert_eq!(row["lag"], end - offset, "{behind}");
    }

    broker.stop();
    let lost = server.status_until("the broker to be unreachable", |s| {
        s["broker"] == "unreachable"
    });
    assert_eq!(lost["partitions"][0]["lag"], Value::Null);
    assert_eq!(
        server.get("/chart.svg").status,
        200,
        "the page does not wait on the broker"
    );

    // The broker comes back, and so does the lag.
    broker.restart();
    server.status_until("the broker to be back", |s| {
        s["broker"] == "reachable" && total_lag(s) == 20
    });
}

// ---- the real browser ----

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMIUM_HINT: &str = "install it with `sudo apt-get install -y chromium` (Debian's package), then run the tests again";

/// Chromium, installed from Debian's packages when it is not there yet.
fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    if !path.is_file() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut install = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        let done = install
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            done && path.is_file(),
            "Chromium is not at {CHROMIUM} and installing it failed: {CHROMIUM_HINT}"
        );
    }
    path
}

/// The Chromium process on its fresh profile, killed on drop even if opening failed.
struct Chromium {
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Headless Chromium driven over the DevTools protocol; closed on drop.
struct Browser {
    process: Chromium,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} ({e}): {CHROMIUM_HINT}"));
        let mut process = Chromium { child, profile };
        // Chromium writes the port it picked into the profile.
        let port_file = process.profile.path().join("DevToolsActivePort");
        let mut port = 0;
        wait_for("Chromium's DevTools port", GUARD, || {
            assert!(
                process.child.try_wait().unwrap().is_none(),
                "Chromium exited at start"
            );
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse().ok()))
                .unwrap_or(0);
            port != 0
        });
        let mut page_socket = String::new();
        wait_for("the page in Chromium's target list", GUARD, || {
            let reply = http_get(port, "/json/list");
            let targets: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            let page = targets.as_array().into_iter().flatten().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
            });
            if let Some(ws) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                page_socket = ws.to_string();
            }
            !page_socket.is_empty()
        });
        let (socket, _) = tungstenite::connect(page_socket.as_str()).expect("DevTools socket");
        Browser {
            process,
            socket,
            next_id: 0,
        }
    }

    /// One DevTools command and its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(message))
            .expect("send to Chromium");
        loop {
            let message = self.socket.read().expect("read from Chromium");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let reply: Value = serde_json::from_str(text).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    fn eval_until(
        &mut self,
        what: &str,
        expression: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(expression);
            if done(&value) {
                return value;
            }
            assert!(
                started.elapsed() < GUARD,
                "timed out waiting for {what}: last {value}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let close = json!({"id": 0, "method": "Browser.close"}).to_string();
        let _ = self.socket.send(tungstenite::Message::text(close));
        let started = Instant::now();
        while self.process.child.try_wait().ok().flatten().is_none()
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Then `process` drops: a Chromium that did not close is killed.
    }
}

const BARS: &str = "Array.from(document.querySelectorAll('#chart svg rect.bar'))\
    .map(r => [r.dataset.month, r.dataset.avg, r.getBBox().height])";

#[test]
fn the_page_draws_the_chart_and_follows_a_file_change_in_a_real_browser() {
    let state = tempfile::tempdir().unwrap();
    let mut files = write_three_years(state.path());
    let server = Server::start(state.path(), &nowhere());
    let mut browser = Browser::open(&server.url());

    let bars = browser.eval_until("twelve drawn bars", BARS, |v| {
        v.as_array().is_some_and(|bars| bars.len() == 12)
    });
    for bar in bars.as_array().unwrap() {
        assert!(bar[2].as_f64().unwrap() > 10.0, "a bar is not drawn: {bar}");
    }
    let january = merged(&files).get(Month::January, 2003).unwrap().avg();
    assert_eq!(bars[0][0], "January");
    assert_eq!(bars[0][1], format!("{january:.2}"));
    browser.eval_until(
        "the partition table",
        "document.querySelectorAll('#partitions tr[data-partition]').length",
        |v| v == 4,
    );
    browser.eval_until(
        "the broker line",
        "document.getElementById('broker').textContent",
        |v| v == "broker unreachable",
    );

    // Mark this document: a reload would lose the mark.
    browser.eval("window.sameDocument = 'yes'");
    // January 2003 turns ten degrees warmer in partition 2's file.
    let file = &mut files[2];
    let warmer = file
        .stats
        .months
        .get_mut(&Month::January)
        .unwrap()
        .get_mut(&2003)
        .unwrap();
    warmer.sum += 10.0 * warmer.count as f64;
    file.offset += 1;
    PartitionFile::new(state.path(), 2).save(file).unwrap();
    let expected = format!("{:.2}", january + 10.0);
    browser.eval_until("January's bar to move", BARS, |v| {
        v[0][1] == expected.as_str()
    });
    assert_eq!(
        browser.eval("window.sameDocument"),
        "yes",
        "the page reloaded"
    );
    let offset = browser
        .eval("document.querySelector('#partitions tr[data-partition=\"2\"] .offset').textContent");
    assert_eq!(offset, file.offset.to_string());

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-artifacts/dashboard.png");
    browser.screenshot(&shot);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );

    // The year selector redraws the chart for that year.
    browser.eval("const s = document.getElementById('year'); s.value = '2001'; s.dispatchEvent(new Event('change')); s.value");
    browser.eval_until(
        "the 2001 chart",
        "document.querySelector('#chart svg title').textContent",
        |v| v == "Average maximum temperature, 2001",
    );
    drop(browser);
}
