#!/usr/bin/env bash
# Apache Kafka itself (KRaft, no ZooKeeper, no Docker), run from its own jars on Maven Central.
#   scripts/kafka.sh install                  assemble Kafka's jars into .kafka/VERSION/lib (once)
#   scripts/kafka.sh up kafka|kafka-cluster|kafka-secure [NODE...]
#                                             start one node or three, formatting on first start;
#                                             only the nodes not running are started (or only the
#                                             nodes named, 1 to 3), then waited on until they answer
#   scripts/kafka.sh down kafka|kafka-cluster|kafka-secure    stop them (data kept)
#   scripts/kafka.sh status kafka|kafka-cluster|kafka-secure
#   scripts/kafka.sh tool CLASS [ARGS...]     one of Kafka's own tools, e.g.
#                                             org.apache.kafka.tools.TopicCommand --describe ...
#
# Ports (all on 127.0.0.1): one node listens on $KAFKA_PORT (default 9092), its controller on the
# next port. Three nodes listen on KAFKA_PORT, KAFKA_PORT+2 and KAFKA_PORT+4 (9092, 9094, 9096),
# each controller on the port after its node's. KAFKA_PORTS and KAFKA_CONTROLLER_PORTS
# (comma-separated, one per node) place the nodes by hand, as the tests do on free ports, and
# KAFKA_ADVERTISED_PORTS sends clients elsewhere (a proxy in front of a node).
# Data, logs and pid files live in $KAFKA_DIR (default .kafka/kafka, .kafka/kafka-cluster or
# .kafka/kafka-secure).
#
# kafka-secure is one node as a managed cluster runs it: clients reach it only through a SASL_SSL
# listener (TLS, then SCRAM-SHA-512), and the StandardAuthorizer lets each user do only what its
# ACLs say (allow.everyone.if.no.acl.found=false; User:admin is the one super user). At first
# start the script writes, in $KAFKA_DIR/secure/ (folder mode 0700, every file 0600):
#   ca.pem, ca.key          a CA made with openssl; ca.pem is what clients trust
#   broker.pem              the broker's key and certificate chain (a PEM key store), signed by
#                           the CA, for IP:127.0.0.1 only: localhost is a host-name mismatch
#   admin.properties, producer.properties, consumer.properties
#                           one SCRAM user each, with a random password (openssl rand), for
#                           --command-config of Kafka's tools and of weather alike
# The users are created when the storage is formatted (--add-scram), so the files and the data
# belong together: a formatted data folder without them is refused. After every start the
# ACLs (see ACLS below) are made with Kafka's AclCommand as User:admin; those already there are
# left be. The controller listener stays on loopback and takes SASL PLAIN as User:admin only: a
# PLAINTEXT one would have to make User:ANONYMOUS (anyone on the machine) a super user, since
# the broker registers with its controller through it and needs CLUSTER_ACTION there.
# KAFKA_HEAP (default -Xmx512m) sizes each node's Java heap; JAVA_HOME picks the Java (else java
# on PATH), MAVEN the Maven command (default mvn), KAFKA_LIB the jar folder.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/scripts/kafka
# The version the tests run and docker/ pins; change it here and in the pom.
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
LIB=${KAFKA_LIB:-$ROOT/.kafka/$VERSION/lib}
PORT=${KAFKA_PORT:-9092}
HEAP=${KAFKA_HEAP:--Xmx512m}
MAVEN=${MAVEN:-mvn}

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

java_bin() {
  if [ -n "${JAVA_HOME:-}" ]; then
    if [ -x "$JAVA_HOME/bin/java" ]; then printf '%s' "$JAVA_HOME/bin/java"; fi
  else
    command -v java || true
  fi
}

# Apache Kafka 4.x brokers and tools need Java 17 or later.
check_java() {
  local java version major
  java=$(java_bin)
  if [ -z "$java" ] && [ -n "${JAVA_HOME:-}" ]; then
    fail "JAVA_HOME=$JAVA_HOME has no bin/java: point it at a Java 17 or later, or unset it to use java from PATH"
  fi
  [ -n "$java" ] || fail "java not found: Apache Kafka $VERSION needs Java 17 or later (Debian: apt-get install openjdk-17-jre-headless)"
  version=$("$java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | sed -n 1p)
  major=${version%%.*}
  [ "$major" = 1 ] && major=$(printf '%s' "$version" | cut -d. -f2)
  if ! [ "${major:-0}" -ge 17 ] 2>/dev/null; then
    fail "$java is Java ${version:-of unknown version}; Apache Kafka $VERSION needs Java 17 or later (set JAVA_HOME to one)"
  fi
}

install() {
  check_java
  if [ -f "$LIB/.complete" ]; then
    say "Apache Kafka $VERSION: $(ls "$LIB" | grep -c '\.jar$') jars in ${LIB#"$ROOT"/} (already assembled)"
    return
  fi
  command -v "$MAVEN" >/dev/null || fail "$MAVEN not found: assembling Apache Kafka's jars needs Maven 3 (Debian: apt-get install maven)"
  local started=$SECONDS work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cp "$HERE/pom.xml" "$work/pom.xml"
  # Maven 3.8's default dependency plugin (2.8) cannot copy a runtime closure: name 3.x.
  if ! (cd "$work" && "$MAVEN" -q -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -DoutputDirectory="$work/lib" -DincludeScope=runtime >"$work/mvn.log" 2>&1); then
    tail -n 20 "$work/mvn.log" >&2
    fail "Maven could not fetch Apache Kafka $VERSION's jars from Maven Central (above); check the network and run this again"
  fi
  mkdir -p "$(dirname "$LIB")"
  rm -rf "$LIB"
  mv "$work/lib" "$LIB"
  touch "$LIB/.complete"
  say "Apache Kafka $VERSION: $(ls "$LIB" | grep -c '\.jar$') jars assembled from Maven Central into ${LIB#"$ROOT"/} in $((SECONDS - started)) s"
}

# The java command line for Kafka's classpath, logging to $1/logs with log4j2 config $2.
java_command() {
  # shellcheck disable=SC2206
  JAVA_COMMAND=("$(java_bin)" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dkafka.logs.dir="$1/logs" -Dlog4j2.configurationFile="$HERE/$2" -cp "$LIB/*")
}

# Sets NODES (how many), PORTS, CONTROLLERS, ADVERTISED (arrays) and DIR for mode $1.
layout() {
  case "$1" in
    kafka | kafka-secure) NODES=1 ;;
    kafka-cluster) NODES=3 ;;
    *) fail "unknown broker ${1:-(none)}: use kafka (one node), kafka-cluster (three) or kafka-secure (one, SASL_SSL and ACLs)" ;;
  esac
  MODE=$1
  DIR=${KAFKA_DIR:-$ROOT/.kafka/$MODE}
  # The properties files name the CA by absolute path, which must hold from any folder.
  [[ $DIR == /* ]] || DIR=$PWD/$DIR
  SECURE=$DIR/secure
  local i
  PORTS=() CONTROLLERS=() ADVERTISED=()
  if [ -n "${KAFKA_PORTS:-}" ]; then
    IFS=, read -r -a PORTS <<<"$KAFKA_PORTS"
    IFS=, read -r -a CONTROLLERS <<<"${KAFKA_CONTROLLER_PORTS:?KAFKA_PORTS needs KAFKA_CONTROLLER_PORTS}"
  else
    for ((i = 0; i < NODES; i++)); do
      PORTS+=($((PORT + 2 * i)))
      CONTROLLERS+=($((PORT + 2 * i + 1)))
    done
  fi
  if [ -n "${KAFKA_ADVERTISED_PORTS:-}" ]; then
    IFS=, read -r -a ADVERTISED <<<"$KAFKA_ADVERTISED_PORTS"
  else
    ADVERTISED=("${PORTS[@]}")
  fi
  [ "${#PORTS[@]}" = "$NODES" ] && [ "${#CONTROLLERS[@]}" = "$NODES" ] && [ "${#ADVERTISED[@]}" = "$NODES" ] ||
    fail "$MODE has $NODES node(s): KAFKA_PORTS, KAFKA_CONTROLLER_PORTS and KAFKA_ADVERTISED_PORTS need one port each"
}

node_dir() { printf '%s/node-%s' "$DIR" "$1"; }

running_pid() {
  local pidfile
  pidfile="$(node_dir "$1")/pid"
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  # A killed JVM that nobody has reaped yet is not running.
  kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] && printf '%s' "$pid"
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The node's server.properties: the shared settings, then its own.
write_config() {
  local id=$1 index=$(($1 - 1)) dir voters="" i
  dir=$(node_dir "$id")
  # Made 0600 before a line is written to it (a redirection keeps an existing file's mode).
  if [ "$MODE" = kafka-secure ]; then (umask 077 && : >"$dir/server.properties"); fi
  for ((i = 0; i < NODES; i++)); do
    voters+="${voters:+,}$((i + 1))@127.0.0.1:${CONTROLLERS[$i]}"
  done
  {
    cat "$HERE/server.properties"
    echo
    echo "# This node ($MODE, written by scripts/kafka.sh)"
    echo "node.id=$id"
    if [ "$MODE" = kafka-secure ]; then
      secure_listeners "$index"
    else
      echo "listeners=PLAINTEXT://127.0.0.1:${PORTS[$index]},CONTROLLER://127.0.0.1:${CONTROLLERS[$index]}"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:${ADVERTISED[$index]}"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=PLAINTEXT"
    fi
    echo "controller.quorum.voters=$voters"
    echo "log.dirs=$dir/data"
    if [ "$NODES" = 1 ]; then
      # One node cannot hold three copies of the group and transaction logs.
      echo "offsets.topic.replication.factor=1"
      echo "transaction.state.log.replication.factor=1"
      echo "transaction.state.log.min.isr=1"
      echo "default.replication.factor=1"
      echo "min.insync.replicas=1"
    else
      echo "offsets.topic.replication.factor=3"
      echo "transaction.state.log.replication.factor=3"
      echo "transaction.state.log.min.isr=2"
      echo "default.replication.factor=3"
      echo "min.insync.replicas=2"
    fi
  } >"$dir/server.properties"
}

# kafka-secure's listeners, TLS key store and authorizer for the node at index $1. The lines
# hold the admin's password (the broker authenticates to itself and to its controller as
# User:admin), so server.properties is 0600 (write_config) like the files in secure/.
secure_listeners() {
  local index=$1 password
  password=$(password_of admin)
  cat <<EOF
listeners=SASL_SSL://127.0.0.1:${PORTS[$index]},CONTROLLER://127.0.0.1:${CONTROLLERS[$index]}
advertised.listeners=SASL_SSL://127.0.0.1:${ADVERTISED[$index]}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$password";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$password" user_admin="$password";
ssl.keystore.type=PEM
ssl.keystore.location=$SECURE/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE/ca.pem
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
EOF
}

# The SCRAM users of kafka-secure; admin is the super user, the others get the ACLs below.
USERS=(admin producer consumer)

password_of() {
  sed -n 's/.*password="\([^"]*\)".*/\1/p' "$SECURE/$1.properties"
}

# kafka-secure's CA, broker certificate and users' files, made once (see the top of this file).
secure_files() {
  [ -f "$SECURE/.complete" ] && return
  if [ -f "$(node_dir 1)/data/meta.properties" ]; then
    fail "$DIR holds a formatted node but no complete ${SECURE#"$ROOT"/}, so its SCRAM users' passwords are lost: make down BROKER=$MODE and remove $DIR to start over"
  fi
  command -v openssl >/dev/null || fail "openssl not found: kafka-secure makes its CA and certificate with it (Debian: apt-get install openssl)"
  rm -rf "$SECURE"
  (umask 077 && mkdir -p "$SECURE")
  local log=$SECURE/openssl.log user
  # EC P-256 keys: quick to make, and Java and rustls both take them. Unencrypted PKCS#8, which
  # Kafka's PEM key store reads without an ssl.key.password.
  if ! (
    umask 077
    set -e
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=weather-stream kafka-secure CA" -keyout "$SECURE/ca.key" -out "$SECURE/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=weather-stream kafka-secure broker" -keyout "$SECURE/broker.key" -out "$SECURE/broker.csr"
    # IP:127.0.0.1 and nothing else, so that a client dialling localhost sees a mismatch.
    printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=critical,CA:FALSE \
      keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth >"$SECURE/broker.ext"
    openssl x509 -req -in "$SECURE/broker.csr" -CA "$SECURE/ca.pem" -CAkey "$SECURE/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 825 -extfile "$SECURE/broker.ext" -out "$SECURE/broker.crt"
    cat "$SECURE/broker.key" "$SECURE/broker.crt" "$SECURE/ca.pem" >"$SECURE/broker.pem"
    rm -f "$SECURE/broker.key" "$SECURE/broker.csr" "$SECURE/broker.ext" "$SECURE/broker.crt"
  ) >"$log" 2>&1; then
    fail "openssl could not make kafka-secure's CA and certificate: $(tail -n 2 "$log" | tr '\n' ' ')"
  fi
  for user in "${USERS[@]}"; do
    (
      umask 077
      cat >"$SECURE/$user.properties" <<EOF
# SCRAM user $user of kafka-secure (scripts/kafka.sh): --command-config for Kafka's tools and weather.
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$(openssl rand -hex 24)";
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE/ca.pem
EOF
    )
  done
  rm -f "$log"
  (umask 077 && : >"$SECURE/.complete")
}

# The --add-scram arguments that create the users when the storage is formatted.
scram_arguments() {
  SCRAM_ARGUMENTS=()
  [ "$MODE" = kafka-secure ] || return 0
  local user
  for user in "${USERS[@]}"; do
    SCRAM_ARGUMENTS+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(password_of "$user")]")
  done
}

# kafka-secure's least-privilege ACLs, one "principal operation resource-type name" a line.
# What each program sends, and what Kafka 4.1 checks for it (KafkaApis, AuthHelper):
# - weather produce: Metadata (DESCRIBE on the topic, which WRITE implies), CreateTopics when
#   the topic is missing (CREATE on the topic, or on the cluster), InitProducerId for its
#   idempotent producer id (IDEMPOTENT_WRITE on the cluster or, since Kafka 2.8 (KIP-679),
#   WRITE on any topic: so no cluster ACL), Produce (WRITE on the topic; an idempotent batch
#   needs nothing more since 2.8), DescribeConfigs of the topic (DESCRIBE_CONFIGS).
#   Resuming on a non-empty topic reads its tail with ListOffsets and Fetch, and Fetch needs
#   READ on the topic: exactly-once resume is part of the producer's job, so READ on its topic
#   is part of its least privilege. Without it a producer can fill a new topic but not resume
#   one. It gets no group, so it can read only as `weather produce` and `consume 0 2` do.
# - weather consume, verify: Metadata and ListOffsets (DESCRIBE), Fetch (READ) on the topic.
# - weather debug (group debug) and group stats: FindCoordinator (DESCRIBE on the group, which
#   READ implies), JoinGroup, SyncGroup, Heartbeat, LeaveGroup (READ on the group), OffsetFetch
#   (DESCRIBE on the group and the topic), OffsetCommit (READ on the group and the topic).
# - weather consume --group stats keeps each partition's state in the changelog
#   temperatures.stats: CreateTopics the first time (CREATE), Produce of its snapshots with an
#   idempotent producer (WRITE), Fetch when it restores one (READ), DESCRIBE for its Metadata.
#   verify, plot and serve --from-kafka read it (READ).
# Nothing on the cluster, no DELETE (produce --reset takes the admin's file), no ALTER.
ACLS="User:producer WRITE TOPIC temperatures
User:producer DESCRIBE TOPIC temperatures
User:producer CREATE TOPIC temperatures
User:producer DESCRIBE_CONFIGS TOPIC temperatures
User:producer READ TOPIC temperatures
User:consumer READ TOPIC temperatures
User:consumer DESCRIBE TOPIC temperatures
User:consumer DESCRIBE_CONFIGS TOPIC temperatures
User:consumer CREATE TOPIC temperatures.stats
User:consumer WRITE TOPIC temperatures.stats
User:consumer READ TOPIC temperatures.stats
User:consumer DESCRIBE TOPIC temperatures.stats
User:consumer READ GROUP debug
User:consumer READ GROUP stats"

# Kafka's AclCommand as User:admin against node 1.
acl_command() {
  local HEAP=${KAFKA_TOOL_HEAP:--Xmx256m}
  java_command "$DIR" tools-log4j2.properties
  "${JAVA_COMMAND[@]}" org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:${ADVERTISED[0]}" \
    --command-config "$SECURE/admin.properties" "$@"
}

# Adds the ACLs above that are missing, and sets ACL_SUMMARY to what it did.
ensure_acls() {
  local listed missing principal operation type name log=$DIR/acl.log
  if ! listed=$(acl_command --list 2>"$log"); then
    fail "listing kafka-secure's ACLs as User:admin failed: $(head -n 1 "$log")"
  fi
  # "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=temperatures, ...`"
  # then one "(principal=User:producer, host=*, operation=WRITE, permissionType=ALLOW)" a line.
  listed=$(printf '%s\n' "$listed" | sed -n \
    -e 's/.*resourceType=\([A-Z_]*\), name=\([^,]*\), patternType=LITERAL.*/resource \1 \2/p' \
    -e 's/.*principal=\([^,]*\), host=\*, operation=\([A-Z_]*\), permissionType=ALLOW.*/acl \1 \2/p' |
    awk '$1 == "resource" { type = $2; name = $3 } $1 == "acl" { print $2, $3, type, name }')
  missing=$(grep -vxF -f <(printf '%s\n' "$listed") <<<"$ACLS" || true)
  rm -f "$log"
  if [ -z "$missing" ]; then
    ACL_SUMMARY="all $(wc -l <<<"$ACLS") ACLs in place, none added"
    return
  fi
  # One AclCommand (one JVM) a principal and resource, with all its missing operations.
  local operations flags
  while read -r principal type name operations; do
    flags=()
    for operation in $operations; do
      # AclCommand names operations in camel case: DESCRIBE_CONFIGS is DescribeConfigs.
      flags+=(--operation "$(sed -E 's/(^|_)([A-Z])([A-Z]*)/\2\L\3/g' <<<"$operation")")
    done
    if ! acl_command --add --allow-principal "$principal" "${flags[@]}" \
        "--${type,,}" "$name" >"$log" 2>&1; then
      fail "adding the ACLs $principal $operations on ${type,,} $name failed: $(head -n 1 "$log")"
    fi
  done < <(awk '{ key = $1 " " $3 " " $4; ops[key] = ops[key] " " $2 }
    END { for (key in ops) print key ops[key] }' <<<"$missing")
  rm -f "$log"
  ACL_SUMMARY="added $(wc -l <<<"$missing") of $(wc -l <<<"$ACLS") ACLs"
}

# Formats a node's storage on its first start; every node of a cluster shares one cluster id.
format_node() {
  local id=$1 dir
  dir=$(node_dir "$id")
  [ -f "$dir/data/meta.properties" ] && return
  if [ ! -f "$DIR/cluster.id" ]; then
    # A Kafka cluster id is 16 random bytes in URL-safe base64 without padding; like Kafka's
    # own Uuid.randomUuid, never one starting with '-', which would read as an option.
    local id=-
    while [[ $id == -* ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    printf '%s' "$id" >"$DIR/cluster.id"
  fi
  java_command "$dir" log4j2.properties
  local format=(kafka.tools.StorageTool format -t "$(cat "$DIR/cluster.id")" -c "$dir/server.properties")
  if [ "$MODE" = kafka-secure ]; then
    # The users' passwords reach the JVM in a 0600 argument file (java @FILE holds the main
    # class and its arguments), never on a command line that anyone's ps shows.
    local argument arguments=$SECURE/format.arguments
    scram_arguments
    (
      umask 077
      for argument in "${format[@]}" "${SCRAM_ARGUMENTS[@]}"; do
        printf '"%s"\n' "$argument"
      done >"$arguments"
    )
    format=("@$arguments")
  fi
  if ! "${JAVA_COMMAND[@]}" "${format[@]}" >"$dir/logs/format.log" 2>&1; then
    rm -f "$SECURE/format.arguments"
    fail "formatting node $id's storage failed: $(tail -n 3 "$dir/logs/format.log" | tr '\n' ' ')"
  fi
  rm -f "$SECURE/format.arguments"
}

start_node() {
  local id=$1 index=$(($1 - 1)) dir
  dir=$(node_dir "$id")
  for port in "${PORTS[$index]}" "${CONTROLLERS[$index]}"; do
    # A node killed a moment ago may still hold its ports while its last threads exit.
    for _ in $(seq 1 25); do
      port_answers "$port" || break
      sleep 0.2
    done
    if port_answers "$port"; then
      fail "port $port on 127.0.0.1 is taken by another program: stop it, or move Kafka with KAFKA_PORT=19092"
    fi
  done
  mkdir -p "$dir/data" "$dir/logs"
  write_config "$id"
  format_node "$id"
  # Where this start's lines begin in the log, to wait for this start and not an earlier one.
  wc -c <"$dir/logs/server.log" 2>/dev/null >"$dir/log.mark" || echo 0 >"$dir/log.mark"
  # Its own session, so a Ctrl-C meant for make does not reach it; `node` execs java in place,
  # so the pid recorded is the JVM's.
  setsid "$0" node "$dir" >>"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
}

started_since_mark() {
  local dir mark
  dir=$(node_dir "$1")
  mark=$(cat "$dir/log.mark" 2>/dev/null || echo 0)
  tail -c +"$((mark + 1))" "$dir/logs/server.log" 2>/dev/null | grep -q "Kafka Server started"
}

up() {
  layout "$1"
  shift
  local only=("$@")
  install >/dev/null
  mkdir -p "$DIR"
  if [ "$MODE" = kafka-secure ]; then secure_files; fi
  local id started=() waiting=()
  for id in "${only[@]}"; do
    [[ $id =~ ^[0-9]+$ ]] && [ "$id" -ge 1 ] && [ "$id" -le "$NODES" ] ||
      fail "no node $id in $MODE: its nodes are 1 to $NODES"
  done
  for ((id = 1; id <= NODES; id++)); do
    if running_pid "$id" >/dev/null; then
      continue
    fi
    if [ "${#only[@]}" -gt 0 ] && [[ " ${only[*]} " != *" $id "* ]]; then
      continue
    fi
    start_node "$id"
    started+=("$id")
  done
  if [ "${#started[@]}" = 0 ]; then
    if [ "$MODE" = kafka-secure ]; then ensure_acls; fi
    say "Apache Kafka $VERSION already running ($(describe)); make down BROKER=$MODE stops it"
    return
  fi
  # A node of a cluster cannot finish starting without a quorum, so all start before any is waited on.
  waiting=("${started[@]}")
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-120}))
  while [ "${#waiting[@]}" -gt 0 ]; do
    local still=()
    for id in "${waiting[@]}"; do
      if ! running_pid "$id" >/dev/null; then
        fail "Kafka node $id exited at start; last lines of $(node_dir "$id")/logs: $(tail -n 3 "$(node_dir "$id")/logs/stdout.log" "$(node_dir "$id")/logs/server.log" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')"
      fi
      started_since_mark "$id" || still+=("$id")
    done
    waiting=("${still[@]+"${still[@]}"}")
    [ "${#waiting[@]}" = 0 ] && break
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "Kafka node(s) ${waiting[*]} did not start within ${KAFKA_START_TIMEOUT:-120} s; see $DIR/node-*/logs/server.log, and make down BROKER=$MODE to stop them"
    sleep 0.2
  done
  if [ "$MODE" = kafka-secure ]; then ensure_acls; fi
  say "Apache Kafka $VERSION up: started node(s) ${started[*]} of $NODES ($(describe)); make down BROKER=$MODE stops it"
}

# "127.0.0.1:9092, data in .kafka/kafka" for the one-line messages.
describe() {
  local hosts="" i
  for ((i = 0; i < NODES; i++)); do
    hosts+="${hosts:+,}127.0.0.1:${ADVERTISED[$i]}"
  done
  if [ "$MODE" = kafka-secure ]; then
    local files=${SECURE#"$ROOT"/}
    printf 'KAFKA_BROKERS=%s over SASL_SSL with SCRAM-SHA-512 (CA %s/ca.pem): --command-config %s/producer.properties to write, %s/consumer.properties to read, %s/admin.properties for everything; %s; data and logs in %s' \
      "$hosts" "$files" "$files" "$files" "$files" "${ACL_SUMMARY:-ACLs not checked}" "${DIR#"$ROOT"/}"
  else
    printf 'KAFKA_BROKERS=%s, data and logs in %s' "$hosts" "${DIR#"$ROOT"/}"
  fi
}

down() {
  layout "$1"
  local id pid stopped=0
  for ((id = 1; id <= NODES; id++)); do
    pid=$(running_pid "$id") || { rm -f "$(node_dir "$id")/pid"; continue; }
    kill "$pid"
    stopped=$((stopped + 1))
  done
  for ((id = 1; id <= NODES; id++)); do
    pid=$(running_pid "$id") || continue
    # A controlled shutdown hands leadership over first; give it time, then insist.
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$(node_dir "$id")/pid"
  done
  if [ "$stopped" = 0 ]; then
    say "no Apache Kafka running from ${DIR#"$ROOT"/}"
  else
    say "Apache Kafka stopped ($stopped node(s); data kept in ${DIR#"$ROOT"/})"
  fi
}

status() {
  layout "$1"
  local id pid down=0
  for ((id = 1; id <= NODES; id++)); do
    if pid=$(running_pid "$id"); then
      say "node $id: running on 127.0.0.1:${PORTS[$((id - 1))]} (pid $pid)"
    else
      say "node $id: not running"
      down=$((down + 1))
    fi
  done
  [ "$down" = 0 ]
}

tool() {
  [ $# -ge 1 ] || fail "usage: scripts/kafka.sh tool CLASS [ARGS...]"
  check_java
  [ -f "$LIB/.complete" ] || fail "Apache Kafka's jars are not assembled yet: run scripts/kafka.sh install"
  HEAP=${KAFKA_TOOL_HEAP:--Xmx256m}
  java_command /tmp tools-log4j2.properties
  exec "${JAVA_COMMAND[@]}" "$@"
}

node() {
  java_command "$1" log4j2.properties
  exec "${JAVA_COMMAND[@]}" kafka.Kafka "$1/server.properties"
}

case "${1:-}" in
  install) install ;;
  up) shift; up "${1:-kafka}" "${@:2}" ;;
  down) down "${2:-kafka}" ;;
  status) status "${2:-kafka}" ;;
  tool) shift; tool "$@" ;;
  node) node "$2" ;;
  version) say "$VERSION" ;;
  *) fail "usage: scripts/kafka.sh install | up kafka|kafka-cluster|kafka-secure [NODE...] | down|status kafka|kafka-cluster|kafka-secure | tool CLASS [ARGS...]" ;;
esac
