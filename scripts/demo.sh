#!/usr/bin/env bash
# make demo: the whole pipeline until Ctrl-C, on the embedded broker unless BROKER says. The
# producer resumes the topic, two consumers split the partitions (0,2 and 1,3), and month.svg is redrawn
# every few seconds and once more on the way out; the live dashboard serves on
# http://127.0.0.1:8080/ (DASHBOARD=ADDR moves it). Ctrl-C stops the programs; the broker and
# the state stay. The demo exits 0 only if every program ran until Ctrl-C and then stopped
# cleanly: a program that fails or ends by itself stops the demo with an error naming it.
#
# KAFKA_PORT and BROKER_DIR go to scripts/broker.sh (KAFKA_PORT and KAFKA_DIR to scripts/kafka.sh);
# DEMO_DIR holds state/ and month.svg (default: here); WEATHER names a weather binary to use
# instead of building one. COMMAND_CONFIG names a client properties file (TLS, SASL) that every
# program is given with --command-config; on BROKER=kafka-secure the producer gets the
# producer's file and the other programs the consumer's, as scripts/kafka.sh wrote them.
set -euo pipefail
cd "$(dirname "$0")/.."

# BROKER picks the broker as for make up: embedded (Tansu), kafka, kafka-cluster or kafka-secure
# (Apache Kafka from its jars), docker or docker-cluster. A three-node cluster gets a topic with
# three copies, two of which must have each write.
port=${KAFKA_PORT:-9092}
replicas=1
producer_config=()
consumer_config=()
if [[ -n ${COMMAND_CONFIG:-} ]]; then
  producer_config=(--command-config "$COMMAND_CONFIG")
  consumer_config=(--command-config "$COMMAND_CONFIG")
fi
case "${BROKER:-embedded}" in
  embedded) scripts/broker.sh up ;;
  kafka) scripts/kafka.sh up kafka ;;
  kafka-cluster) scripts/kafka.sh up kafka-cluster; replicas=3 ;;
  kafka-secure)
    scripts/kafka.sh up kafka-secure
    if [[ -z ${COMMAND_CONFIG:-} ]]; then
      secure=${KAFKA_DIR:-.kafka/kafka-secure}/secure
      producer_config=(--command-config "$secure/producer.properties")
      consumer_config=(--command-config "$secure/consumer.properties")
    fi
    ;;
  docker) scripts/docker.sh up docker ;;
  docker-cluster) scripts/docker.sh up docker-cluster; replicas=3 ;;
  *) echo "error: BROKER=$BROKER is not known: use embedded (the default), kafka, kafka-cluster, kafka-secure, docker or docker-cluster" >&2; exit 2 ;;
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
names=()
# Starts one program in the background, under the name the error lines use.
run() {
  local name=$1
  shift
  "$@" &
  pids+=($!)
  names+=("$name")
}

# Draws month.svg once a consumer has saved a partition file (before that there is nothing
# to draw); from then on a plot that fails is the demo's failure.
plot() {
  compgen -G "$dir/state/partition-*.json" >/dev/null || return 0
  RUST_LOG=warn "$weather" ${consumer_config[@]+"${consumer_config[@]}"} plot --state-dir "$dir/state" --out "$dir/month.svg"
}

# Stops every program and reads each one's exit status: a program stopped by Ctrl-C exits 0,
# so any other status is a failure. Exits the demo: 0 if all went well, else 1 ($1 is 1 when
# the demo is already failing).
stop() {
  trap - INT TERM EXIT
  local failed=$1 i status
  ((${#pids[@]} == 0)) || kill "${pids[@]}" 2>/dev/null || true
  for i in "${!pids[@]}"; do
    status=0
    wait "${pids[$i]}" || status=$?
    if ((status != 0)); then
      echo "error: ${names[$i]} exited with status $status" >&2
      failed=1
    fi
  done
  plot || failed=1
  echo
  if ((failed)); then
    echo "demo failed (see the error lines above); the broker keeps running (make down stops it)" >&2
    exit 1
  fi
  echo "demo stopped; the broker keeps running (make down stops it), statistics stay in $dir/state/"
  exit 0
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

# The consumers need the topic; on a new broker it does not exist until the producer makes it.
# ${a[@]+"${a[@]}"}: an empty array under set -u in bash before 4.4.
producer=("$weather" ${producer_config[@]+"${producer_config[@]}"})
consumer=("$weather" ${consumer_config[@]+"${consumer_config[@]}"})
RUST_LOG=warn "${producer[@]}" produce --count 0 --replication-factor "$replicas"
run "weather produce" "${producer[@]}" produce
run "weather consume 0,2" "${consumer[@]}" consume 0,2 --state-dir "$dir/state"
run "weather consume 1,3" "${consumer[@]}" consume 1,3 --state-dir "$dir/state"
run "weather serve" "${consumer[@]}" serve --listen "$dashboard" --state-dir "$dir/state"
echo "demo running: producer, consumers for partitions 0,2 and 1,3; $dir/month.svg refreshes every 5 s;"
echo "dashboard on http://$dashboard/ (Ctrl-C stops)"
while true; do
  sleep 5 &
  wait $! || true
  for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || {
      echo "error: ${names[$i]} ended by itself; see its lines above" >&2
      exit 1
    }
  done
  plot || exit 1
done
