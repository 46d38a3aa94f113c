#!/usr/bin/env bash
# Apache Kafka in Docker, for `make up BROKER=docker|docker-cluster` and `make down BROKER=...`.
#   scripts/docker.sh up docker|docker-cluster    start Kafka (one node, or three) and wait until healthy
#   scripts/docker.sh down docker|docker-cluster  stop and remove its containers; the data volumes stay
#   scripts/docker.sh status docker|docker-cluster  list its broker containers and their health
# The whole pipeline in containers: docker compose -f docker/compose.yml up --build
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

case "${2:-}" in
  docker) file=docker/compose.yml; brokers=(kafka); hosts=127.0.0.1:9092 ;;
  docker-cluster) file=docker/compose.cluster.yml; brokers=(kafka-1 kafka-2 kafka-3)
    hosts=127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096 ;;
  *) fail "BROKER=${2:-} is not known: use BROKER=embedded (the default), kafka, kafka-cluster, kafka-secure, docker or docker-cluster" ;;
esac

command -v docker >/dev/null ||
  fail "docker not found: install Docker (with its compose plugin), or leave BROKER unset for the embedded broker"
docker info >/dev/null 2>&1 ||
  fail "the Docker engine is not running (\`docker info\` fails): start it, or leave BROKER unset for the embedded broker"
docker compose version >/dev/null 2>&1 ||
  fail "the docker compose plugin is missing (\`docker compose version\` fails): install it, or leave BROKER unset"
compose() { docker compose -f "$file" "$@"; }

case "${1:-}" in
  up)
    compose up --detach --wait "${brokers[@]}"
    say "Kafka up (${#brokers[@]} broker(s) from $file); programs here use KAFKA_BROKERS=$hosts; make down BROKER=$2 stops it"
    ;;
  down)
    compose down
    say "Kafka stopped (data kept in the compose volumes; \`docker compose -f $file down -v\` drops them)"
    ;;
  status) compose ps "${brokers[@]}" ;;
  *) fail "usage: scripts/docker.sh up|down|status docker|docker-cluster" ;;
esac
