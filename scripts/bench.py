"""`make bench`: weather side by side with librdkafka (confluent-kafka) and kafka-python, and on
Apache Kafka with Kafka's own Java client too, on one broker started for the run and stopped at
its end, every figure next to its peers' from the same run.

These machines are noisy: read the ratios, not the absolute times. The load average before and
after the run is printed with the table. Environment:
BENCH_BROKER (tansu, the default, or kafka), BENCH_DAYS (default 200000), BENCH_LATENCY_DAYS
(default 300), WEATHER (the binary), TANSU (the Tansu binary), KAFKA_HEAP (the Kafka node's heap,
default -Xms1g -Xmx1g), PYTHON (the virtualenv's python, for the peers).
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEATHER = os.environ.get("WEATHER", str(ROOT / "target/release/weather"))
PYTHON = os.environ.get("PYTHON", sys.executable)
PEERS = str(ROOT / "scripts/bench_peers.py")
KAFKA_SH = str(ROOT / "scripts/kafka.sh")
DAYS = int(os.environ.get("BENCH_DAYS", "200000"))
LATENCY_DAYS = int(os.environ.get("BENCH_LATENCY_DAYS", "300"))
TOPIC = "temperatures"
# About weather's record (a month name and a Report); the measured run uses the size measured.
WARM_UP_RECORD_SIZE = 27


def say(line):
    print(f"bench: {line}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, alive, seconds, what):
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not alive() or time.time() > deadline:
                raise SystemExit(f"bench: {what} did not start")
            time.sleep(0.05)


# ---- brokers: what the bench needs of one, and the two it runs on --------------------------

class Broker:
    """A broker of the bench's own, on a free loopback port with its data in a temporary folder.

    `address` bootstraps every client; `title` heads the table; `fetch_wait_ms` is weather's
    default fetch wait on this broker, which the librdkafka consumer is given too; `max_batch_bytes`
    is the largest batch it takes (for the broker-limit producer); `java_peers` says whether
    Kafka's own Java tools run as peers."""

    title = "?"
    fetch_wait_ms = 500
    max_batch_bytes = 1_000_000
    java_peers = False
    targets = False

    def before_run(self):
        """Called before each run that reads or makes a topic: a chance to hand it a broker
        in a clean state."""

    def stop(self):
        raise NotImplementedError


class Tansu(Broker):
    """Tansu 0.6.0 with SQLite in a temporary folder."""

    title = "Tansu 0.6.0 (SQLite)"
    # Tansu 0.6.0 sleeps out a fetch's whole wait, so weather waits 10 ms there (kafka::quirks).
    fetch_wait_ms = 10
    max_batch_bytes = 4_000_000

    def __init__(self):
        self.tansu = os.environ.get("TANSU") or shutil.which("tansu") or str(Path.home() / ".cargo/bin/tansu")
        if not Path(self.tansu).exists():
            raise SystemExit("bench: tansu not found; `make up` or `scripts/broker.sh install` installs it")
        version = subprocess.run([self.tansu, "--version"], capture_output=True, text=True).stdout.split()
        if version:
            self.title = f"Tansu {version[-1]} (SQLite)"
        self.dir = tempfile.mkdtemp(prefix="weather-bench-")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.start()

    def start(self):
        url = f"tcp://{self.address}"
        self.log = open(Path(self.dir) / "tansu.log", "a")
        self.process = subprocess.Popen(
            [self.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "sqlite://./tansu.db"],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, lambda: self.process.poll() is None, 60, f"tansu (see {self.dir}/tansu.log)")

    def halt(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def before_run(self):
        """Same data, new process. kafka-python's requests make Tansu 0.6.0's storage task
        panic ("more or less than one row"), which leaves the broker up but unable to serve."""
        self.halt()
        self.start()

    def stop(self):
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


class Kafka(Broker):
    """One Apache Kafka node (KRaft, broker and controller), started by scripts/kafka.sh, the
    script of `make up BROKER=kafka`, with its ports and data folder given as the tests give them."""

    java_peers = True
    targets = True

    def __init__(self):
        version = subprocess.run([KAFKA_SH, "version"], capture_output=True, text=True).stdout.strip()
        self.title = f"Apache Kafka {version} (KRaft, one node)"
        self.dir = tempfile.mkdtemp(prefix="weather-bench-kafka-")
        self.port = free_port()
        controller = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, KAFKA_DIR=self.dir, KAFKA_PORTS=str(self.port),
                        KAFKA_CONTROLLER_PORTS=str(controller),
                        # As kafka-server-start.sh sizes it.
                        KAFKA_HEAP=os.environ.get("KAFKA_HEAP", "-Xms1g -Xmx1g"))
        self.env.pop("KAFKA_ADVERTISED_PORTS", None)
        try:
            started = self.script("up")
        except BaseException:
            self.stop()
            raise
        if started.returncode != 0:
            self.stop()
            raise SystemExit(f"bench: Apache Kafka did not start: {started.stdout}{started.stderr}")

    def script(self, *args):
        return subprocess.run([KAFKA_SH, *args, "kafka"], env=self.env, capture_output=True, text=True)

    def tool(self, cls, *args):
        """Runs one of Kafka's own tools under GNU time: (stdout, peak RSS in MB)."""
        env = dict(self.env, KAFKA_TOOL_HEAP="-Xmx512m")  # as kafka-*-perf-test.sh
        out, _, _, rss = timed([KAFKA_SH, "tool", cls, *args], env=env)
        return out, rss

    def stop(self):
        self.script("down")
        shutil.rmtree(self.dir, ignore_errors=True)


BROKERS = {"tansu": Tansu, "kafka": Kafka}


# ---- running things --------------------------------------------------------------------------

def start(command, **kwargs):
    """Starts `command` in a process group of its own, so `stop_group` ends it with its
    children (GNU time's, a peer's) when the bench stops early."""
    return subprocess.Popen(command, start_new_session=True, text=True, **kwargs)


def stop_group(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def timed(command, env=None):
    """Runs `command` under GNU time; returns (stdout, stderr, seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile(mode="r") as report:
        started = time.perf_counter()
        process = start(["/usr/bin/time", "-o", report.name, "-f", "%M"] + command,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            stdout, stderr = process.communicate()
        finally:
            stop_group(process)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"bench: {' '.join(command)} failed:\n{stdout[-1000:]}{stderr[-2000:]}")
        rss_mb = int(report.read().strip().splitlines()[-1]) / 1024
    return stdout, stderr, seconds, rss_mb


def weather_env(broker):
    env = dict(os.environ, KAFKA_BROKERS=broker.address)
    env.pop("RUST_LOG", None)
    return env


def weather(broker, *args):
    return timed([WEATHER, *args], env=weather_env(broker))


def peer(broker, *args):
    """Runs a peer; its figure is its own timing of the work, without the interpreter's start
    or its client's close (kafka-python can take many seconds to close)."""
    out, _, _, rss = timed([PYTHON, PEERS, *args, "--brokers", broker.address,
                            "--fetch-wait-ms", str(broker.fetch_wait_ms),
                            "--max-batch-bytes", str(broker.max_batch_bytes)])
    result = json.loads(out)
    return result, result.get("seconds"), rss


def fresh_topic(broker):
    broker.before_run()
    weather(broker, "produce", "--reset", "--count", "0")


def java_produce(broker, count, record_size):
    """Kafka's own ProducerPerformance, idempotent with acks=all and unthrottled, at our average
    record size (it sends values of that size without a key); its own summary line."""
    out, rss = broker.tool(
        "org.apache.kafka.tools.ProducerPerformance", "--topic", TOPIC, "--num-records", str(count),
        "--record-size", str(record_size), "--throughput", "-1", "--producer-props", "acks=all",
        "enable.idempotence=true", f"bootstrap.servers={broker.address}")
    summary = re.findall(r"(\d+) records sent, ([0-9.]+) records/sec \([0-9.]+ MB/sec\), "
                         r"([0-9.]+) ms avg latency, ([0-9.]+) ms max latency, ", out)
    if not summary:
        raise SystemExit(f"bench: no summary line from ProducerPerformance:\n{out[-2000:]}")
    sent, rate, avg, worst = summary[-1]
    if int(sent) != count:
        raise SystemExit(f"bench: ProducerPerformance sent {sent} of {count} records")
    return {"rate": float(rate), "avg_ms": float(avg), "max_ms": float(worst), "rss": rss}


def java_consume(broker, count):
    """Kafka's own ConsumerPerformance over the topic: a no-checkpoint reference, not a peer
    doing our work. Its fetch.nMsg.sec leaves out joining its group, as the peers' figures
    leave out their setup."""
    out, rss = broker.tool(
        "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", broker.address,
        "--topic", TOPIC, "--messages", str(count), "--timeout", "30000", "--group", f"bench-{time.time_ns()}")
    lines = [l for l in out.splitlines() if l.strip()]
    header = next((l for l in lines if "nMsg.sec" in l), None)
    if header is None:
        raise SystemExit(f"bench: no summary from ConsumerPerformance:\n{out[-2000:]}")
    names = [n.strip() for n in header.split(",")]
    values = [v.strip() for v in lines[lines.index(header) + 1].split(",")]
    row = dict(zip(names, values))
    if int(row["data.consumed.in.nMsg"]) < count:
        raise SystemExit(f"bench: ConsumerPerformance read {row['data.consumed.in.nMsg']} of {count} records")
    return {"rate": float(row["fetch.nMsg.sec"]), "rss": rss}


def percentile(values, q):
    if not values:
        raise SystemExit("bench: no latency samples; see the consumer's -v output")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latency_weather(broker):
    fresh_topic(broker)
    state = tempfile.mkdtemp(prefix="weather-bench-state-")
    consumer = start([WEATHER, "-v", "consume", "0", "1", "2", "3", "--state-dir", state],
                     env=weather_env(broker), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        weather(broker, "produce", "--count", str(LATENCY_DAYS), "--delay-ms", "100")
        time.sleep(2)
        consumer.send_signal(signal.SIGTERM)
        _, stderr = consumer.communicate(timeout=30)
    finally:
        stop_group(consumer)
    shutil.rmtree(state, ignore_errors=True)
    return [float(m) for m in re.findall(r"on disk ([0-9.]+) ms after", stderr)]


def save_latency(saves=100):
    """What one checkpoint save costs on the disk under the state folders right now: write a
    4 KB file, fsync it, rename it over another, fsync the folder, as `weather consume` saves.
    The end-to-end figures include this; on a shared machine it is most of them."""
    folder = tempfile.mkdtemp(prefix="weather-bench-disk-")
    took = []
    for _ in range(saves):
        started = time.perf_counter()
        tmp = os.path.join(folder, "probe.json.tmp")
        with open(tmp, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, "probe.json"))
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        took.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    shutil.rmtree(folder, ignore_errors=True)
    return percentile(took, 50), percentile(took, 99)


def group_catch_up(broker, topic=TOPIC, days=DAYS):
    """`weather consume --group` from nothing to the end of the topic (every checkpoint written
    to the changelog, acknowledged, then to its file): seconds from start until the files say
    every day is counted, and peak RSS. The member runs until stopped, so the files are
    watched; each is replaced whole, and its offset is near its start."""
    state = tempfile.mkdtemp(prefix="weather-bench-group-")
    broker.before_run()
    with tempfile.NamedTemporaryFile(mode="r") as report, tempfile.TemporaryFile(mode="w+") as log:
        started = time.perf_counter()
        process = start(["/usr/bin/time", "-o", report.name, "-f", "%M", WEATHER, "--topic", topic,
                         "consume", "--group", f"bench-{os.getpid()}", "--state-dir", state],
                        stdout=subprocess.DEVNULL, stderr=log, env=weather_env(broker))
        try:
            while True:
                counted = 0
                for name in os.listdir(state):
                    if re.fullmatch(r"partition-\d+\.json", name):
                        with open(os.path.join(state, name)) as file:
                            found = re.search(r'"offset": (\d+)', file.read(80))
                        counted += int(found.group(1)) if found else 0
                if counted >= days:
                    break
                if process.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"bench: weather consume --group exited:\n{log.read()[-2000:]}")
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            # To the group: GNU time does not pass a signal on.
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)
        finally:
            stop_group(process)
        rss_mb = int(report.read().strip().splitlines()[-1]) / 1024
    shutil.rmtree(state, ignore_errors=True)
    return seconds, rss_mb


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


# ---- the run -------------------------------------------------------------------------------

def measure(broker):
    """Every figure, as {row: {column: value}}, plus the reference lines."""
    f = {row: {} for row in ["produce", "consume", "group", "p50", "p99", "produce_rss", "consume_rss",
                             "group_rss"]}
    ref = {}

    if broker.java_peers:
        # The JVM compiles its hot paths as it runs: one unmeasured round of Kafka's own
        # producer and consumer first, so the broker runs compiled code for every figure.
        say("warm-up: ProducerPerformance and ConsumerPerformance (not measured)")
        fresh_topic(broker)
        java_produce(broker, DAYS, WARM_UP_RECORD_SIZE)
        java_consume(broker, DAYS)

    say("weather produce")
    fresh_topic(broker)
    _, _, seconds, f["produce_rss"]["weather"] = weather(broker, "produce", "--count", str(DAYS), "--delay-ms", "0")
    f["produce"]["weather"] = DAYS / seconds

    say("weather consume (fsync'd checkpoints)")
    state = tempfile.mkdtemp(prefix="weather-bench-state-")
    broker.before_run()
    _, _, seconds, f["consume_rss"]["weather"] = weather(broker, "consume", "0", "1", "2", "3",
                                                         "--until-caught-up", "--state-dir", state)
    f["consume"]["weather"] = DAYS / seconds
    shutil.rmtree(state, ignore_errors=True)

    for client, column in [("confluent", "librdkafka"), ("kafka-python", "kafka-python")]:
        say(f"{client} consume (checkpoint per batch, no fsync)")
        state = tempfile.mkdtemp(prefix="weather-bench-peer-")
        broker.before_run()
        result, seconds, f["consume_rss"][column] = peer(broker, "consume", "--client", client, "--state-dir", state)
        if result["days"] != DAYS:
            raise SystemExit(f"bench: {client} consumed {result['days']} of {DAYS} days")
        f["consume"][column] = DAYS / seconds
        if "key_value_bytes" in result:
            ref["record_size"] = result["key_value_bytes"] / DAYS
        shutil.rmtree(state, ignore_errors=True)

    # The first group a cluster sees makes it create its offsets topic (fifty partitions on
    # Kafka: most of a second), once in the cluster's life: not part of a catch-up.
    say("warm-up: a group member on another topic (not measured)")
    weather(broker, "--topic", "bench-warm-up", "produce", "--count", "1000", "--delay-ms", "0")
    group_catch_up(broker, "bench-warm-up", 1000)
    say("weather consume --group (changelog snapshot acknowledged, then file without fsync)")
    seconds, f["group_rss"]["weather"] = group_catch_up(broker)
    f["group"]["weather"] = DAYS / seconds
    say("confluent consume (checkpoint per batch, fsync'd file and folder)")
    state = tempfile.mkdtemp(prefix="weather-bench-peer-")
    broker.before_run()
    result, seconds, f["group_rss"]["librdkafka"] = peer(broker, "consume", "--client", "confluent",
                                                         "--fsync", "--state-dir", state)
    if result["days"] != DAYS:
        raise SystemExit(f"bench: confluent consumed {result['days']} of {DAYS} days")
    f["group"]["librdkafka"] = DAYS / seconds
    shutil.rmtree(state, ignore_errors=True)

    if broker.java_peers:
        say("Kafka's ConsumerPerformance (no checkpoints, a reference)")
        ref["java_consume"] = java_consume(broker, DAYS)

    for client, column in [("confluent", "librdkafka"), ("kafka-python", "kafka-python"),
                           ("broker-limit", "limit")]:
        say(f"{client} produce")
        fresh_topic(broker)
        _, seconds, rss = peer(broker, "produce", "--client", client, "--count", str(DAYS))
        f["produce"][column] = DAYS / seconds
        f["produce_rss"][column] = rss

    if broker.java_peers:
        size = round(ref["record_size"])
        say(f"Kafka's ProducerPerformance, {size}-byte records")
        fresh_topic(broker)
        java = java_produce(broker, DAYS, size)
        f["produce"]["Java"] = java["rate"]
        f["produce_rss"]["Java"] = java["rss"]
        ref["java_produce"] = java

    say("disk: what one fsync'd save costs now")
    ref["save_ms"] = save_latency()
    say(f"end to end, one day every 100 ms, {LATENCY_DAYS} days: weather")
    ours = latency_weather(broker)
    say("end to end: confluent-kafka")
    fresh_topic(broker)
    state = tempfile.mkdtemp(prefix="weather-bench-peer-")
    result, _, _ = peer(broker, "latency", "--count", str(LATENCY_DAYS), "--state-dir", state)
    shutil.rmtree(state, ignore_errors=True)
    theirs = result["latencies_ms"]
    for q in (50, 99):
        f[f"p{q}"] = {"weather": percentile(ours, q), "librdkafka": percentile(theirs, q)}
    ref["samples"] = (len(ours), len(theirs))
    return f, ref


def ratio(ours, theirs, higher_is_better=True):
    if not ours or not theirs:
        return "-"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


ROWS = [("produce", "produce, days/s", True), ("consume", "consume catch-up, days/s", True),
        ("group", "group catch-up+changelog", True),
        ("p50", "end to end p50, ms", False), ("p99", "end to end p99, ms", False),
        ("produce_rss", "produce peak RSS, MB", False), ("consume_rss", "consume peak RSS, MB", False),
        ("group_rss", "group peak RSS, MB", False)]


def report(broker, f, ref, load):
    peers = ["librdkafka"] + (["Java"] if broker.java_peers else []) + ["kafka-python"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"weather-stream bench, {time.strftime('%Y-%m-%d')}: {DAYS} days, {broker.title} on loopback, "
          f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; load {load[0]} before, {load[1]} after")
    print(f"{'':28}{'weather':>10}" + "".join(f"{p:>14}{'ratio':>8}" for p in peers))
    for key, name, higher in ROWS:
        ours = f[key]["weather"]
        line = f"{name:28}{ours:>10.1f}"
        for p in peers:
            theirs = f[key].get(p)
            line += f"{theirs:>14.1f}{ratio(ours, theirs, higher):>8}" if theirs is not None else f"{'-':>14}{'-':>8}"
        print(line)
    limit = f["produce"]["limit"]
    print(f"{'librdkafka acks=1, days/s':28}{limit:>10.0f}   (tuned for throughput alone: no idempotence, "
          f"linger 50 ms, {broker.max_batch_bytes / 1e6:.0f} MB batches)")
    if broker.java_peers:
        jc, jp = ref["java_consume"], ref["java_produce"]
        print(f"{'Java consume, days/s':28}{jc['rate']:>10.0f}   (ConsumerPerformance: no checkpoints, "
              f"a reference, not a peer; {jc['rss']:.0f} MB)")
        print(f"Java producer: ProducerPerformance, {round(ref['record_size'])}-byte values without key "
              f"(weather's average key + value: {ref['record_size']:.1f} B), acks=all, idempotent, "
              f"{jp['avg_ms']:.0f} ms avg / {jp['max_ms']:.0f} ms max latency; after one unmeasured run, "
              f"its own JIT warm-up included.")
    print("group catch-up+changelog: weather consume --group, each checkpoint acknowledged by the changelog "
          "(acks=all) before its file is replaced without fsync, against librdkafka with fsync'd file "
          "checkpoints (file and folder), days/s.")
    samples, save = ref["samples"], ref["save_ms"]
    print(f"weather's produce rate is {f['produce']['weather'] / limit:.0%} of acks=1 librdkafka's, consume "
          f"{f['consume']['weather'] / limit:.0%}; latency over {samples[0]} checkpoints (weather) and "
          f"{samples[1]} days (librdkafka). Ratios: above 1 means weather is better. "
          f"weather fsyncs every checkpoint; the peers do not: one save (write, fsync, rename, fsync "
          f"folder) took {save[0]:.1f} ms p50, {save[1]:.1f} ms p99 on this disk before the latency runs.")
    if broker.targets:
        faster = max(f["produce"][p] for p in ("librdkafka", "Java"))
        rss = max(f["produce_rss"]["weather"], f["consume_rss"]["weather"])
        checks = [
            ("produce >= 1.0x the faster peer", f"{f['produce']['weather'] / faster:.2f}x",
             f["produce"]["weather"] >= faster),
            ("consume >= 1.2x librdkafka", f"{f['consume']['weather'] / f['consume']['librdkafka']:.2f}x",
             f["consume"]["weather"] >= 1.2 * f["consume"]["librdkafka"]),
            ("group catch-up with changelog >= 1.0x fsync'd librdkafka",
             f"{f['group']['weather'] / f['group']['librdkafka']:.2f}x",
             f["group"]["weather"] >= f["group"]["librdkafka"]),
            ("end to end p99 < 20 ms", f"{f['p99']['weather']:.1f} ms", f["p99"]["weather"] < 20),
            ("peak RSS <= 16 MB", f"{rss:.1f} MB", rss <= 16),
        ]
        print("targets: " + "; ".join(f"{name}: {value} {'met' if ok else 'MISSED'}" for name, value, ok in checks))


def main():
    kind = os.environ.get("BENCH_BROKER", "tansu")
    if kind not in BROKERS:
        raise SystemExit(f"bench: BENCH_BROKER={kind!r}: use one of {', '.join(BROKERS)}")
    if not Path(WEATHER).exists():
        raise SystemExit(f"bench: {WEATHER} missing; `make build` first")
    # A SIGTERM stops the run like Ctrl-C does: through `finally`, which stops the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    before = loadavg()
    # Every folder of the run (broker data, state folders) goes in one, removed whatever happens.
    tempfile.tempdir = tempfile.mkdtemp(prefix="weather-bench-")
    try:
        broker = BROKERS[kind]()
        try:
            say(f"{broker.title} on {broker.address}; {DAYS} days")
            f, ref = measure(broker)
        finally:
            broker.stop()
    finally:
        shutil.rmtree(tempfile.tempdir, ignore_errors=True)
    report(broker, f, ref, (before, loadavg()))


if __name__ == "__main__":
    main()
