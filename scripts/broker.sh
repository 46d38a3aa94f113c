#!/usr/bin/env bash
# The embedded broker: Tansu 0.6.0 (Apache-2.0, Kafka-compatible) with SQLite storage.
#   scripts/broker.sh install   install Tansu from crates.io unless `tansu --version` says 0.6.0
#   scripts/broker.sh up        install if needed, start on 127.0.0.1:$KAFKA_PORT, wait until it answers
#   scripts/broker.sh down      stop the broker started by `up`
#   scripts/broker.sh status    say whether it runs
# Data and log live in $BROKER_DIR (default .broker/, git-ignored).
set -euo pipefail

TANSU_VERSION=0.6.0
PORT=${KAFKA_PORT:-9092}
DIR=${BROKER_DIR:-.broker}
PIDFILE=$DIR/tansu.pid
LOG=$DIR/tansu.log
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

install() {
  if tansu --version 2>/dev/null | grep -q " $TANSU_VERSION\$"; then
    return
  fi
  command -v cargo >/dev/null || fail "cargo not found: install Rust from rustup, then run this again"
  say "Installing Tansu $TANSU_VERSION from crates.io (first time only: about 8 minutes on 2 cores)..."
  local started=$SECONDS
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql,dynostore
  say "Installed Tansu $TANSU_VERSION in $((SECONDS - started)) s: $(command -v tansu)"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

up() {
  install
  if pid=$(running_pid); then
    say "broker already running at 127.0.0.1:$PORT (pid $pid, data in $DIR/tansu.db)"
    return
  fi
  if port_answers; then
    fail "port $PORT on 127.0.0.1 is already taken by another program: stop it, or pick a free port with KAFKA_PORT=9093 (programs then need KAFKA_BROKERS=127.0.0.1:9093)"
  fi
  mkdir -p "$DIR"
  # Tansu 0.6.0 prefixes the working directory to absolute SQLite paths, so it starts from inside
  # its data folder with a relative path; it listens on 0.0.0.0 unless told, so it is told.
  (
    cd "$DIR"
    exec setsid tansu broker \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "sqlite://./tansu.db" \
      >tansu.log 2>&1 </dev/null
  ) &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if ! pid=$(running_pid); then
      rm -f "$PIDFILE"
      fail "the broker exited at start; last lines of $LOG: $(tail -n 3 "$LOG" | tr '\n' ' ')"
    fi
    if port_answers; then
      say "broker up at 127.0.0.1:$PORT (Tansu $TANSU_VERSION, pid $pid, data in $DIR/tansu.db, log in $LOG); make down stops it"
      return
    fi
    sleep 0.2
  done
  fail "the broker did not answer on 127.0.0.1:$PORT within 20 s; see $LOG, and make down to stop it"
}

down() {
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    say "no broker running (none started from $DIR)"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$PIDFILE"
  say "broker stopped (data kept in $DIR/tansu.db)"
}

status() {
  if pid=$(running_pid); then
    say "broker running at 127.0.0.1:$PORT (pid $pid)"
  else
    say "no broker running"
    return 1
  fi
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) fail "usage: scripts/broker.sh install|up|down|status" ;;
esac
