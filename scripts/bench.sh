#!/usr/bin/env bash
# make bench (after `make build`): makes the peers' virtualenv once (.bench/venv), runs scripts/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench/venv
PEERS="confluent-kafka==2.16.1 kafka-python==3.0.12 protobuf"
if ! "$VENV/bin/python" -c "import confluent_kafka, kafka, google.protobuf" 2>/dev/null; then
    echo "bench: creating $VENV with $PEERS (once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet $PEERS
fi
command -v /usr/bin/time >/dev/null || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
PYTHON="$VENV/bin/python" exec "$VENV/bin/python" scripts/bench.py
