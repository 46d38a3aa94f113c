# weather-stream: `make demo` runs everything, `make test` tests everything.
# The programs talk to $(KAFKA_BROKERS); a broker started here listens on 127.0.0.1:$(KAFKA_PORT)
# (three nodes: KAFKA_PORT, KAFKA_PORT+2, KAFKA_PORT+4).

KAFKA_PORT ?= 9092
# embedded: Tansu (scripts/broker.sh); kafka, kafka-cluster or kafka-secure: Apache Kafka from its
# jars (scripts/kafka.sh); docker or docker-cluster: Apache Kafka in Docker (scripts/docker.sh).
BROKER ?= embedded
THREE_NODES = $(filter kafka-cluster docker-cluster,$(BROKER))
KAFKA_BROKERS ?= $(if $(THREE_NODES),127.0.0.1:$(KAFKA_PORT)$(COMMA)127.0.0.1:$(shell echo $$(($(KAFKA_PORT)+2)))$(COMMA)127.0.0.1:$(shell echo $$(($(KAFKA_PORT)+4))),127.0.0.1:$(KAFKA_PORT))
COMMA := ,
# A topic made on three nodes gets three copies (and min.insync.replicas 2), as make demo does.
REPLICAS = $(if $(THREE_NODES),3,1)
export KAFKA_PORT KAFKA_BROKERS BROKER
P ?= 0,1,2,3
BROKER_SCRIPT = $(if $(filter embedded,$(BROKER)),scripts/broker.sh,$(if $(filter kafka kafka-cluster kafka-secure,$(BROKER)),scripts/kafka.sh,scripts/docker.sh))
# A secured cluster's client properties (security.protocol, SASL, the CA), given to every program
# as --command-config: COMMAND_CONFIG=FILE names one file for all of them. On BROKER=kafka-secure
# it defaults to the files scripts/kafka.sh wrote: the producer's user to produce, the
# consumer's to read.
COMMAND_CONFIG ?=
SECURE_FILES = $(or $(KAFKA_DIR),.kafka/kafka-secure)/secure
config_for = $(if $(COMMAND_CONFIG),--command-config $(COMMAND_CONFIG),$(if $(filter kafka-secure,$(BROKER)),--command-config $(SECURE_FILES)/$(1).properties))
# Integration suites that run once per broker (WEATHER_TEST_BROKER picks it); the cluster,
# Java-interop and secure (SASL_SSL and ACLs, which Tansu has not) suites need Apache Kafka
# itself and run in the Kafka pass only. Tests in a module
# kafka_only of a per-broker suite (foreign: transactions, which Tansu 0.6.0 cannot end; topics:
# more partitions, which it cannot create) start Apache Kafka whatever the pass, so the Tansu
# pass leaves them to the Kafka pass.
BROKER_SUITES = pipeline producer faults groups changelog dashboard scripts foreign topics
KAFKA_SUITES = cluster interop secure
KAFKA_ONLY = kafka_only::
ARGS ?=
WEATHER := target/release/weather

.PHONY: help build install up down status produce debug consume plot verify serve demo test test-unit test-props test-tansu test-kafka bench lint clean

help:
	@echo "make demo              broker, producer, two consumers and a fresh month.svg, until Ctrl-C"
	@echo "make test              every test, on Tansu and on Apache Kafka (installs both if missing)"
	@echo "make test-tansu        unit tests, then the integration suites on Tansu only"
	@echo "make test-kafka        the integration suites on Apache Kafka (one node; cluster tests on three)"
	@echo "make test-props        explore: the property tests from a random seed, 20 times the cases"
	@echo "make up / make down    start / stop the embedded broker (Tansu) on 127.0.0.1:$(KAFKA_PORT)"
	@echo "make up BROKER=kafka   Apache Kafka itself from Maven Central (BROKER=kafka-cluster: three nodes)"
	@echo "make up BROKER=kafka-secure  one Kafka node with TLS, SCRAM users and ACLs (files in .kafka/kafka-secure/secure/)"
	@echo "make status            whether the broker (BROKER=...) runs"
	@echo "make up BROKER=docker  Apache Kafka in Docker (BROKER=docker-cluster: three brokers)"
	@echo "make produce           publish one report a day (ARGS='--count 3650 --delay-ms 0 --reset')"
	@echo "  ... COMMAND_CONFIG=FILE  any program on a secured cluster, with Kafka's client properties from FILE"
	@echo "make debug             print what arrives, as group 'debug' (ARGS='--from-beginning')"
	@echo "make consume P=0,2     keep statistics for partitions 0 and 2 in state/"
	@echo "make verify            check state/ against the topic"
	@echo "make plot              draw month.svg from state/"
	@echo "make serve             live dashboard of state/ on http://127.0.0.1:8080/"
	@echo "make install           put the weather binary on your PATH (cargo install)"
	@echo "make bench             throughput, latency and memory next to librdkafka and kafka-python"
	@echo "make bench BROKER=kafka  the same on Apache Kafka, with Kafka's own Java producer too"
	@echo "make lint              cargo fmt --check and clippy -D warnings"

build:
	cargo build --release --quiet

install:
	cargo install --path . --locked

up:
	@$(BROKER_SCRIPT) up $(BROKER)

down:
	@$(BROKER_SCRIPT) down $(BROKER)

status:
	@$(BROKER_SCRIPT) status $(BROKER)

produce: build
	$(WEATHER) $(call config_for,producer) produce --replication-factor $(REPLICAS) $(ARGS)

debug: build
	$(WEATHER) $(call config_for,consumer) debug $(ARGS)

consume: build
	$(WEATHER) $(call config_for,consumer) consume $(P) $(ARGS)

verify: build
	$(WEATHER) $(call config_for,consumer) verify $(ARGS)

plot: build
	$(WEATHER) $(call config_for,consumer) plot $(ARGS)

serve: build
	$(WEATHER) $(call config_for,consumer) serve $(ARGS)

demo:
	@scripts/demo.sh

# Integration tests start their own brokers on free ports: Tansu, then Apache Kafka.
test: test-tansu test-kafka

test-unit:
	cargo test --lib --bins --quiet
	cargo test --test docker --test properties --quiet

# `make test` draws nothing at random: property tests run from a fixed seed (and first replay
# every case in proptest-regressions/), fault tests from support::FIXED_SEED. Exploration is
# here: a fresh seed (printed; PROPTEST_RNG_SEED=N replays it) and PROPERTIES_SCALE times the
# cases. A failure adds its case to proptest-regressions/properties.txt: commit it. The fault
# suites explore the same way with FAULTS_SEED=random (for example `FAULTS_SEED=random make test-kafka`).
test-props:
	@seed=$${PROPTEST_RNG_SEED:-$$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}; \
	echo "property seed $$seed (replay with make test-props PROPTEST_RNG_SEED=$$seed)"; \
	PROPTEST_RNG_SEED=$$seed PROPERTIES_SCALE=$${PROPERTIES_SCALE:-20} cargo test --test properties --quiet \
	  || { echo "property tests failed from seed $$seed: replay with make test-props PROPTEST_RNG_SEED=$$seed, and commit proptest-regressions/"; exit 1; }

test-tansu: test-unit
	@scripts/broker.sh install
	WEATHER_TEST_BROKER=tansu cargo test $(addprefix --test ,$(BROKER_SUITES)) -- --skip $(KAFKA_ONLY)

test-kafka:
	@scripts/kafka.sh install
	WEATHER_TEST_BROKER=kafka cargo test $(addprefix --test ,$(BROKER_SUITES) $(KAFKA_SUITES))

# A broker of its own on a free port (Tansu, or BROKER=kafka: one Apache Kafka node); peers from
# a virtualenv it makes in .bench/.
bench: build
	@scripts/bench.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf state month.svg
