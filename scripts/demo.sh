#!/usr/bin/env bash
# make demo: the whole pipeline until Ctrl-C, on the embedded broker unless BROKER says. The producer resumes
# the topic, two consumers split the partitions (0,2 and 1,3), and month.svg is redrawn
# every few seconds; the live dashboard serves on http://127.0.0.1:8080/ (DASHBOARD=ADDR moves
# it). Ctrl-C stops the programs; the broker and the state stay.
#
# KAFKA_PORT and BROKER_DIR go to scripts/broker.sh; DEMO_DIR holds state/ and month.svg
# (default: here); WEATHER names a weather binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

# BROKER picks the broker as for make up: embedded (Tansu), kafka or kafka-cluster (Apache
# Kafka from its jars), docker or docker-cluster. A three-node cluster gets a topic with
# three copies, two of which must have each write.
port=${KAFKA_PORT:-9092}
replicas=1
case "${BROKER:-embedded}" in
  embedded) scripts/broker.sh up ;;
  kafka) scripts/kafka.sh up kafka ;;
  kafka-cluster) scripts/kafka.sh up kafka-cluster; replicas=3 ;;
  docker) scripts/docker.sh up docker ;;
  docker-cluster) scripts/docker.sh up docker-cluster; replicas=3 ;;
  *) echo "error: BROKER=$BROKER is not known: use embedded (the default), kafka, kafka-cluster, docker or docker-cluster" >&2; exit 2 ;;
esac
if [ "$replicas" = 3 ]; then
  export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$port,127.0.0.1:$((port + 2)),127.0.0.1:$((port + 4))}
else
  export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:$port}
fi
if [[ -z ${WEATHER:-} ]]; then
  cargo build --release --quiet
fi
weather=${WEATHER:-target/release/weather}
dir=${DEMO_DIR:-.}
dashboard=${DASHBOARD:-127.0.0.1:8080}

pids=()
stop() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo
  echo "demo stopped; the broker keeps running (make down stops it), statistics stay in $dir/state/"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# The consumers need the topic; on a new broker it does not exist until the producer makes it.
RUST_LOG=warn "$weather" produce --count 0 --replication-factor "$replicas"
"$weather" produce & pids+=($!)
"$weather" consume 0,2 --state-dir "$dir/state" & pids+=($!)
"$weather" consume 1,3 --state-dir "$dir/state" & pids+=($!)
"$weather" serve --listen "$dashboard" --state-dir "$dir/state" & pids+=($!)
echo "demo running: producer, consumers for partitions 0,2 and 1,3; $dir/month.svg refreshes every 5 s;"
echo "dashboard on http://$dashboard/ (Ctrl-C stops)"
while true; do
  sleep 5 & wait $! || true
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "error: a demo program (pid $pid) exited; see its lines above" >&2; exit 1; }
  done
  RUST_LOG=warn "$weather" plot --state-dir "$dir/state" --out "$dir/month.svg" 2>/dev/null || true
done
