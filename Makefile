# weather-stream: `make demo` runs everything, `make test` tests everything.
# The programs talk to $(KAFKA_BROKERS); the embedded broker listens on 127.0.0.1:$(KAFKA_PORT).

KAFKA_PORT ?= 9092
KAFKA_BROKERS ?= 127.0.0.1:$(KAFKA_PORT)
export KAFKA_PORT KAFKA_BROKERS
P ?= 0,1,2,3
# embedded: Tansu (scripts/broker.sh); docker or cluster: Apache Kafka in Docker (scripts/docker.sh)
BROKER ?= embedded
BROKER_SCRIPT = $(if $(filter embedded,$(BROKER)),scripts/broker.sh,scripts/docker.sh $(BROKER))
ARGS ?=
WEATHER := target/release/weather

.PHONY: help build install up down produce debug consume plot verify serve demo test bench lint clean

help:
	@echo "make demo              broker, producer, two consumers and a fresh month.svg, until Ctrl-C"
	@echo "make test              every test (installs the broker first if missing)"
	@echo "make up / make down    start / stop the embedded broker (Tansu) on 127.0.0.1:$(KAFKA_PORT)"
	@echo "make up BROKER=docker  Apache Kafka in Docker instead (BROKER=cluster: three brokers)"
	@echo "make produce           publish one report a day (ARGS='--count 3650 --delay-ms 0 --reset')"
	@echo "make debug             print what arrives, as group 'debug' (ARGS='--from-beginning')"
	@echo "make consume P=0,2     keep statistics for partitions 0 and 2 in state/"
	@echo "make verify            check state/ against the topic"
	@echo "make plot              draw month.svg from state/"
	@echo "make serve             live dashboard of state/ on http://127.0.0.1:8080/"
	@echo "make install           put the weather binary on your PATH (cargo install)"
	@echo "make bench             throughput, latency and memory next to librdkafka and kafka-python"
	@echo "make lint              cargo fmt --check and clippy -D warnings"

build:
	cargo build --release --quiet

install:
	cargo install --path . --locked

up:
	@$(BROKER_SCRIPT) up

down:
	@$(BROKER_SCRIPT) down

produce: build
	$(WEATHER) produce $(ARGS)

debug: build
	$(WEATHER) debug $(ARGS)

consume: build
	$(WEATHER) consume $(P) $(ARGS)

verify: build
	$(WEATHER) verify $(ARGS)

plot: build
	$(WEATHER) plot $(ARGS)

serve: build
	$(WEATHER) serve $(ARGS)

demo:
	@scripts/demo.sh

# Integration tests start their own broker on a free port; they need the tansu binary.
test:
	@scripts/broker.sh install
	cargo test --all-targets

# A broker of its own on a free port; peers from a virtualenv it makes in .bench/.
bench: build
	@scripts/broker.sh install
	@scripts/bench.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf state month.svg
