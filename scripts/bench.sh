#!/usr/bin/env bash
# make bench [BROKER=kafka] (after `make build`): installs the broker if missing, makes the peers'
# virtualenv once (.bench/venv), runs scripts/bench.py on Tansu (BROKER=embedded, the default)
# or on Apache Kafka (BROKER=kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${BROKER:-embedded}" in
  embedded | tansu) scripts/broker.sh install; KIND=tansu ;;
  kafka) scripts/kafka.sh install >/dev/null; KIND=kafka ;;
  *) echo "bench: BROKER=${BROKER}: make bench runs on BROKER=embedded (Tansu, the default) or BROKER=kafka" >&2; exit 1 ;;
esac
VENV=.bench/venv
PEERS="confluent-kafka==2.16.1 kafka-python==3.0.12 protobuf"
if ! "$VENV/bin/python" -c "import confluent_kafka, kafka, google.protobuf" 2>/dev/null; then
    echo "bench: creating $VENV with $PEERS (once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet $PEERS
fi
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
BENCH_BROKER=$KIND PYTHON="$VENV/bin/python" exec "$VENV/bin/python" scripts/bench.py
