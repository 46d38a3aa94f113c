"""The peers `make bench` measures weather against: the same work done with Python's
confluent-kafka (librdkafka) and kafka-python, on the same topic of the same broker.

One command a run, so that each gets its own process and its own peak RSS:

    bench_peers.py produce  --client confluent|kafka-python|broker-limit --count N
    bench_peers.py consume  --client confluent|kafka-python --state-dir DIR
    bench_peers.py latency  --state-dir DIR --count N          (confluent producer + consumer)

--fetch-wait-ms is what the confluent consumer waits at the end of a partition (weather's
default on the broker: Tansu 10, Kafka 500); --max-batch-bytes bounds the broker-limit
producer's batches (the broker's largest: Kafka takes about 1 MB).

Each prints one JSON object on stdout with what it measured.
"""

import argparse
import json
import os
import sys
import threading
import time
from datetime import date, timedelta

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

MONTHS = [
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
]
MEANS = [27, 31, 44, 58, 70, 79, 83, 81, 74, 61, 46, 32]
TOPIC = "temperatures"


def report_class():
    """`Report` from proto/report.proto's field numbers, built without protoc."""
    proto = descriptor_pb2.FileDescriptorProto(name="report.proto", package="weather", syntax="proto3")
    message = proto.message_type.add(name="Report")
    message.field.add(name="date", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    message.field.add(name="degrees", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("weather.Report"))


Report = report_class()


def days(count, start=date(2000, 1, 1)):
    """(key, value, date) for `count` days; the values need only be plausible reports."""
    for i in range(count):
        day = start + timedelta(days=i)
        degrees = round(MEANS[day.month - 1] + ((i * 7919) % 1000) / 100.0 - 5.0, 4)
        value = Report(date=day.isoformat(), degrees=degrees).SerializeToString()
        yield MONTHS[day.month - 1].encode(), value, day


# ---- producers -----------------------------------------------------------------------------

def produce_confluent(brokers, count, tuned_for_limit=False, delay=0.0, linger_ms=20,
                      max_batch_bytes=4_000_000):
    from confluent_kafka import Producer

    if tuned_for_limit:
        # The broker's own limit: no idempotence, leader ack only, long linger, big batches.
        config = {"acks": "1", "linger.ms": 50, "batch.size": max_batch_bytes}
    else:
        config = {"enable.idempotence": True, "acks": "all", "linger.ms": linger_ms, "batch.size": 1_000_000}
    config.update({
        "bootstrap.servers": brokers,
        # librdkafka's default partitioner differs from Kafka's; this one agrees with ours.
        "partitioner": "murmur2_random",
        "message.max.bytes": max(max_batch_bytes + 500_000, 1_000_000) if tuned_for_limit else 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    })
    producer = Producer(config)
    failed = []

    def delivered(error, _message):
        if error is not None:
            failed.append(str(error))

    started = time.perf_counter()
    for key, value, _ in days(count):
        while True:
            try:
                producer.produce(TOPIC, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        if delay:
            time.sleep(delay)
    producer.flush()
    elapsed = time.perf_counter() - started
    if failed:
        raise SystemExit(f"confluent-kafka: {len(failed)} deliveries failed, the first: {failed[0]}")
    return {"days": count, "seconds": elapsed}


def produce_kafka_python(brokers, count):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=brokers, acks="all", enable_idempotence=True,
                             linger_ms=20, batch_size=1_000_000, max_request_size=1_048_576)
    started = time.perf_counter()
    futures = [producer.send(TOPIC, key=key, value=value) for key, value, _ in days(count)]
    producer.flush()
    for future in futures:
        future.get(timeout=60)
    elapsed = time.perf_counter() - started
    producer.close()
    return {"days": count, "seconds": elapsed}


# ---- consumers: the same statistics as `weather consume`, a checkpoint per batch -------------

class Stats:
    def __init__(self, partition, offset):
        self.partition = partition
        self.offset = offset
        self.months = {}

    def apply(self, key, value):
        try:
            report = Report.FromString(value)
            day = date.fromisoformat(report.date)
            month = key.decode()
        except Exception:
            return
        year = self.months.setdefault(month, {}).setdefault(str(day.year), None)
        if year is None:
            self.months[month][str(day.year)] = {"count": 1, "sum": report.degrees,
                                                  "start": report.date, "end": report.date}
        elif report.date > year["end"]:
            year["count"] += 1
            year["sum"] += report.degrees
            year["end"] = report.date

    def save(self, folder, fsync=False):
        document = {"partition": self.partition, "offset": self.offset}
        for month, years in self.months.items():
            document[month] = {y: dict(s, avg=s["sum"] / s["count"]) for y, s in years.items()}
        path = os.path.join(folder, f"partition-{self.partition}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(document, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        # Atomic replace, as weather does; fsync'd file and folder only with --fsync, as
        # `weather consume 0 2` does every save.
        os.replace(path + ".tmp", path)
        if fsync:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def consume_confluent(brokers, folder, partitions=(0, 1, 2, 3), on_saved=None, stop=None, wait=0.5,
                      fetch_wait_ms=10, fsync=False):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench-peer",
                         "enable.auto.commit": False, "fetch.max.bytes": 4 << 20,
                         # As weather on this broker: Tansu 0.6.0 sleeps out the whole wait.
                         "fetch.wait.max.ms": fetch_wait_ms})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in partitions}
    stats = {p: Stats(p, 0) for p in partitions}
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
    started = time.perf_counter()
    counted = size = 0
    while True:
        if stop is None and all(stats[p].offset >= ends[p] for p in partitions):
            break
        if stop is not None and stop.is_set():
            break
        batch = consumer.consume(num_messages=10_000, timeout=wait)
        touched = set()
        for message in batch:
            if message.error():
                continue
            s = stats[message.partition()]
            s.apply(message.key(), message.value())
            s.offset = message.offset() + 1
            touched.add(s.partition)
            counted += 1
            size += len(message.key() or b"") + len(message.value() or b"")
        for p in touched:
            stats[p].save(folder, fsync)
            if on_saved:
                on_saved([m for m in batch if not m.error() and m.partition() == p])
    elapsed = time.perf_counter() - started
    consumer.close()
    # Key and value bytes read: the record size Kafka's own ProducerPerformance is given.
    return {"days": counted, "seconds": elapsed, "key_value_bytes": size}


def consume_kafka_python(brokers, folder, partitions=(0, 1, 2, 3)):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False,
                             fetch_max_bytes=4 << 20, max_poll_records=10_000)
    assigned = [TopicPartition(TOPIC, p) for p in partitions]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    ends = {tp.partition: offset for tp, offset in consumer.end_offsets(assigned).items()}
    stats = {p: Stats(p, 0) for p in partitions}
    started = time.perf_counter()
    counted = 0
    while not all(stats[p].offset >= ends[p] for p in partitions):
        polled = consumer.poll(timeout_ms=500)
        for tp, messages in polled.items():
            s = stats[tp.partition]
            for message in messages:
                s.apply(message.key, message.value)
                s.offset = message.offset + 1
                counted += 1
            s.save(folder)
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"days": counted, "seconds": elapsed}


def latency_confluent(brokers, folder, count, delay, fetch_wait_ms):
    """The peer's end to end: confluent producer at the seed's rate, confluent consumer
    writing its files; latency = file replaced minus the record's timestamp."""
    latencies = []
    stop = threading.Event()

    def saved(messages):
        now = time.time() * 1000
        latencies.extend(now - m.timestamp()[1] for m in messages)

    reader = threading.Thread(target=consume_confluent, args=(brokers, folder),
                              # consume() waits for a full batch or the timeout: keep it short.
                              kwargs={"on_saved": saved, "stop": stop, "wait": 0.005,
                                      "fetch_wait_ms": fetch_wait_ms})
    reader.start()
    time.sleep(2)
    produce_confluent(brokers, count, delay=delay, linger_ms=0)
    deadline = time.time() + 30
    while len(latencies) < count and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    reader.join()
    return {"latencies_ms": latencies}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["produce", "consume", "latency"])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--client", default="confluent",
                        choices=["confluent", "kafka-python", "broker-limit"])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--delay-ms", type=float, default=100)
    parser.add_argument("--state-dir")
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--max-batch-bytes", type=int, default=4_000_000)
    parser.add_argument("--fsync", action="store_true",
                        help="consume: fsync each checkpoint file and its folder, as weather does")
    args = parser.parse_args()

    if args.command == "produce":
        if args.client == "kafka-python":
            result = produce_kafka_python(args.brokers, args.count)
        else:
            result = produce_confluent(args.brokers, args.count, tuned_for_limit=args.client == "broker-limit",
                                       max_batch_bytes=args.max_batch_bytes)
    elif args.command == "consume":
        os.makedirs(args.state_dir, exist_ok=True)
        if args.client == "kafka-python":
            result = consume_kafka_python(args.brokers, args.state_dir)
        else:
            result = consume_confluent(args.brokers, args.state_dir, fetch_wait_ms=args.fetch_wait_ms,
                                       fsync=args.fsync)
    else:
        os.makedirs(args.state_dir, exist_ok=True)
        result = latency_confluent(args.brokers, args.state_dir, args.count, args.delay_ms / 1000,
                                   args.fetch_wait_ms)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
