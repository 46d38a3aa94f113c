"""`make bench`: weather side by side with librdkafka (confluent-kafka) and kafka-python, on one
embedded broker started for the run, every figure next to its peer's from the same run.

These machines are noisy: read the ratios, not the absolute times. Environment:
BENCH_DAYS (default 200000), BENCH_LATENCY_DAYS (default 300), WEATHER (the binary),
TANSU (the broker binary), PYTHON (the virtualenv's python, for the peers).
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
DAYS = int(os.environ.get("BENCH_DAYS", "200000"))
LATENCY_DAYS = int(os.environ.get("BENCH_LATENCY_DAYS", "300"))


def say(line):
    print(f"bench: {line}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Tansu on a free loopback port with SQLite in a temporary folder."""

    def __init__(self):
        self.tansu = os.environ.get("TANSU") or shutil.which("tansu") or str(Path.home() / ".cargo/bin/tansu")
        if not Path(self.tansu).exists():
            raise SystemExit("bench: tansu not found; `make up` or `scripts/broker.sh install` installs it")
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
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"bench: tansu did not start; see {self.dir}/tansu.log")
                time.sleep(0.05)

    def halt(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def restart(self):
        """Same data, new process. kafka-python's requests make Tansu 0.6.0's storage task
        panic ("more or less than one row"), which leaves the broker up but unable to serve."""
        self.halt()
        self.start()

    def stop(self):
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


def timed(command, env=None):
    """Runs `command` under GNU time; returns (stdout, stderr, seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile(mode="r") as report:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M"] + command,
                              capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
        rss_mb = int(report.read().strip().splitlines()[-1]) / 1024
    return done.stdout, done.stderr, seconds, rss_mb


def weather_env(broker):
    env = dict(os.environ, KAFKA_BROKERS=broker.address)
    env.pop("RUST_LOG", None)
    return env


def weather(broker, *args):
    return timed([WEATHER, *args], env=weather_env(broker))


def peer(broker, *args):
    """Runs a peer; its figure is its own timing of the work, without the interpreter's start
    or its client's close (kafka-python can take many seconds to close)."""
    out, _, _, rss = timed([PYTHON, PEERS, *args, "--brokers", broker.address])
    result = json.loads(out)
    return result, result.get("seconds"), rss


def fresh_topic(broker):
    # A new broker process on the same data first: Tansu 0.6.0's storage task sometimes
    # panics under a peer's requests and stays up unable to serve (see Broker.restart).
    broker.restart()
    weather(broker, "produce", "--reset", "--count", "0")


def percentile(values, q):
    if not values:
        raise SystemExit("bench: no latency samples; see the consumer's -v output")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latency_weather(broker):
    fresh_topic(broker)
    state = tempfile.mkdtemp(prefix="weather-bench-state-")
    consumer = subprocess.Popen([WEATHER, "-v", "consume", "0", "1", "2", "3", "--state-dir", state],
                                env=weather_env(broker), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    weather(broker, "produce", "--count", str(LATENCY_DAYS), "--delay-ms", "100")
    time.sleep(2)
    consumer.send_signal(signal.SIGTERM)
    _, stderr = consumer.communicate(timeout=30)
    shutil.rmtree(state, ignore_errors=True)
    return [float(m) for m in re.findall(r"on disk ([0-9.]+) ms after", stderr)]


def ratio(ours, theirs, higher_is_better=True):
    if not ours or not theirs:
        return "-"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def main():
    if not Path(WEATHER).exists():
        raise SystemExit(f"bench: {WEATHER} missing; `make build` first")
    broker = Broker()
    try:
        say(f"broker on {broker.address}; {DAYS} days")

        say("weather produce")
        fresh_topic(broker)
        _, _, seconds, produce_rss = weather(broker, "produce", "--count", str(DAYS), "--delay-ms", "0")
        ours_produce = DAYS / seconds

        say("weather consume (fsync'd checkpoints)")
        state = tempfile.mkdtemp(prefix="weather-bench-state-")
        _, _, seconds, consume_rss = weather(broker, "consume", "0", "1", "2", "3",
                                             "--until-caught-up", "--state-dir", state)
        ours_consume = DAYS / seconds
        shutil.rmtree(state, ignore_errors=True)

        peers_consume, peers_consume_rss = {}, {}
        for client in ["confluent", "kafka-python"]:
            say(f"{client} consume (checkpoint per batch, no fsync)")
            broker.restart()
            state = tempfile.mkdtemp(prefix="weather-bench-peer-")
            result, seconds, rss = peer(broker, "consume", "--client", client, "--state-dir", state)
            if result["days"] != DAYS:
                raise SystemExit(f"bench: {client} consumed {result['days']} of {DAYS} days")
            peers_consume[client] = DAYS / seconds
            peers_consume_rss[client] = rss
            shutil.rmtree(state, ignore_errors=True)

        peers_produce, peers_produce_rss = {}, {}
        for client in ["confluent", "kafka-python", "broker-limit"]:
            say(f"{client} produce")
            fresh_topic(broker)
            _, seconds, rss = peer(broker, "produce", "--client", client, "--count", str(DAYS))
            peers_produce[client] = DAYS / seconds
            peers_produce_rss[client] = rss

        say(f"end to end, one day every 100 ms, {LATENCY_DAYS} days: weather")
        ours_latency = latency_weather(broker)
        say("end to end: confluent-kafka")
        fresh_topic(broker)
        state = tempfile.mkdtemp(prefix="weather-bench-peer-")
        result, _, _ = peer(broker, "latency", "--count", str(LATENCY_DAYS), "--state-dir", state)
        shutil.rmtree(state, ignore_errors=True)
        peer_latency = result["latencies_ms"]
    finally:
        broker.stop()

    limit = peers_produce["broker-limit"]
    c, k = "confluent", "kafka-python"
    rows = [
        ("produce, days/s", ours_produce, peers_produce[c], peers_produce[k], True),
        ("consume catch-up, days/s", ours_consume, peers_consume[c], peers_consume[k], True),
        ("end to end p50, ms", percentile(ours_latency, 50), percentile(peer_latency, 50), None, False),
        ("end to end p99, ms", percentile(ours_latency, 99), percentile(peer_latency, 99), None, False),
        ("produce peak RSS, MB", produce_rss, peers_produce_rss[c], peers_produce_rss[k], False),
        ("consume peak RSS, MB", consume_rss, peers_consume_rss[c], peers_consume_rss[k], False),
    ]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"weather-stream bench, {time.strftime('%Y-%m-%d')}: {DAYS} days, Tansu 0.6.0 (SQLite) on loopback, "
          f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
    print(f"{'':28}{'weather':>10}{'librdkafka':>12}{'ratio':>8}{'kafka-python':>14}{'ratio':>8}")
    for name, ours, rd, kp, higher in rows:
        kp_text = f"{kp:>14.1f}{ratio(ours, kp, higher):>8}" if kp is not None else f"{'-':>14}{'-':>8}"
        print(f"{name:28}{ours:>10.1f}{rd:>12.1f}{ratio(ours, rd, higher):>8}{kp_text}")
    print(f"{'broker limit, days/s':28}{limit:>10.0f}   (librdkafka, acks=1, linger 50 ms, 4 MB batches)")
    print(f"weather's produce rate is {ours_produce / limit:.0%} of it, consume {ours_consume / limit:.0%}; "
          f"latency over {len(ours_latency)} checkpoints (weather) and {len(peer_latency)} days (librdkafka). "
          f"Ratios: above 1 means weather is better. weather fsyncs every checkpoint; the peers do not.")


if __name__ == "__main__":
    main()
