#!/usr/bin/env bash
# make demo: the whole pipeline on the embedded broker until Ctrl-C. The producer resumes
# the topic, two consumers split the partitions (0,2 and 1,3), and month.svg is redrawn
# every few seconds; the live dashboard serves on http://127.0.0.1:8080/ (DASHBOARD=ADDR moves
# it). Ctrl-C stops the programs; the broker and the state stay.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/broker.sh up
cargo build --release --quiet
weather=target/release/weather

pids=()
stop() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo
  echo "demo stopped; the broker keeps running (make down stops it), statistics stay in state/"
}
trap stop INT TERM EXIT

"$weather" produce & pids+=($!)
"$weather" consume 0,2 & pids+=($!)
"$weather" consume 1,3 & pids+=($!)
"$weather" serve --listen "${DASHBOARD:-127.0.0.1:8080}" & pids+=($!)
echo "demo running: producer, consumers for partitions 0,2 and 1,3; month.svg refreshes every 5 s;"
echo "dashboard on http://${DASHBOARD:-127.0.0.1:8080}/ (Ctrl-C stops)"
while true; do
  sleep 5
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "error: a demo program (pid $pid) exited; see its lines above" >&2; exit 1; }
  done
  RUST_LOG=warn "$weather" plot 2>/dev/null || true
done
