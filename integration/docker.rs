//! The Docker files agree with the project: docker/compose.yml, docker/compose.cluster.yml and
//! docker/Dockerfile against the `weather` command line, Cargo.toml and the Makefile. No Docker
//! engine is needed: the files are parsed, and `make up BROKER=...` runs against a stand-in
//! `docker` that records what it was asked to do.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::{ArgMatches, CommandFactory};
use serde_json::{Map, Value};
use weather_stream::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SINGLE: &str = "docker/compose.yml";
const CLUSTER: &str = "docker/compose.cluster.yml";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// A Compose file as JSON, the way Compose sees it: aliases expanded, `<<` merge keys applied
/// (explicit keys win), and every scalar a string, as Compose passes environment values on.
fn compose(relative: &str) -> Value {
    let docs = YamlLoader::load_from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    let doc = docs
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{relative} is empty"));
    to_json(&doc)
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            if let Some(base) = hash.get(&Yaml::String("<<".into()))
                && let Value::Object(base) = to_json(base)
            {
                map.extend(base);
            }
            for (key, value) in hash {
                let key = scalar(key);
                if key != "<<" {
                    map.insert(key, to_json(value));
                }
            }
            Value::Object(map)
        }
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Null => Value::Null,
        other => Value::String(scalar(other)),
    }
}

fn scalar(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn services(file: &Value) -> &Map<String, Value> {
    file["services"].as_object().expect("a services: mapping")
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is missing or not a string: {value}"))
}

fn list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(|i| text(i, "list item").into()).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list, found {other}"),
    }
}

/// The Kafka services: the ones that run the apache/kafka image.
fn kafka_services(file: &Value) -> Vec<(&String, &Value)> {
    services(file)
        .iter()
        .filter(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("apache/kafka:"))
        })
        .collect()
}

/// The services built from this repository, which run `weather`.
fn weather_services(file: &Value) -> Vec<(&String, &Value)> {
    services(file)
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .collect()
}

/// `NAME://HOST:PORT,...` as NAME → (HOST, PORT); an empty host listens on every interface.
fn listeners(value: &str) -> BTreeMap<String, (String, u16)> {
    value
        .split(',')
        .map(|entry| {
            let (name, address) = entry
                .split_once("://")
                .unwrap_or_else(|| panic!("listener {entry:?} is not NAME://HOST:PORT"));
            let (host, port) = address
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("listener {entry:?} has no port"));
            let port = port
                .parse()
                .unwrap_or_else(|_| panic!("listener {entry:?} has no numeric port"));
            (name.to_string(), (host.to_string(), port))
        })
        .collect()
}

/// One Kafka service's listeners, checked against each other.
struct Broker {
    node_id: String,
    /// Where containers on the compose network reach it.
    internal: String,
    /// Where programs on the host reach it, and the `ports:` entry that makes it so.
    host: String,
    controller_port: u16,
}

fn broker(name: &str, service: &Value) -> Broker {
    let env = &service["environment"];
    let get = |key: &str| text(&env[key], &format!("{name}: {key}")).to_string();
    let roles: BTreeSet<String> = get("KAFKA_PROCESS_ROLES")
        .split(',')
        .map(String::from)
        .collect();
    assert!(
        roles.contains("broker") && roles.contains("controller"),
        "{name}: KRaft combined mode needs KAFKA_PROCESS_ROLES broker,controller, found {roles:?}"
    );
    let bound = listeners(&get("KAFKA_LISTENERS"));
    let advertised = listeners(&get("KAFKA_ADVERTISED_LISTENERS"));
    let protocols: BTreeMap<&str, &str> = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .collect();
    for name_bound in bound.keys() {
        assert!(
            protocols.contains_key(name_bound.as_str()),
            "{name}: listener {name_bound} has no entry in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
        );
    }
    for (listener, (_, port)) in &advertised {
        let bound_port = bound.get(listener).map(|(_, p)| *p);
        assert_eq!(
            bound_port,
            Some(*port),
            "{name}: advertised listener {listener} is on port {port} but KAFKA_LISTENERS binds it on {bound_port:?}"
        );
    }
    let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
    let controller_port = bound
        .get(&controller)
        .unwrap_or_else(|| panic!("{name}: controller listener {controller} is not bound"))
        .1;
    let inter_broker = get("KAFKA_INTER_BROKER_LISTENER_NAME");
    let (internal_host, internal_port) = advertised.get(&inter_broker).unwrap_or_else(|| {
        panic!("{name}: inter-broker listener {inter_broker} is not advertised")
    });
    assert_eq!(
        internal_host, name,
        "{name}: the container listener must be advertised under the service name"
    );
    let published = list(&service["ports"]);
    let host = advertised
        .values()
        .filter(|(host, _)| host == "127.0.0.1" || host == "localhost")
        .map(|(host, port)| {
            let mapping = format!("127.0.0.1:{port}:{port}");
            assert!(
                published.contains(&mapping),
                "{name}: advertises {host}:{port} to the host but does not publish {mapping:?} (ports: {published:?})"
            );
            format!("{host}:{port}")
        })
        .next()
        .unwrap_or_else(|| panic!("{name}: no listener advertised on 127.0.0.1 for host programs"));

    let health = list(&service["healthcheck"]["test"]).join(" ");
    let internal = format!("{internal_host}:{internal_port}");
    let local = format!("localhost:{internal_port}");
    assert!(
        health.contains(&format!("--bootstrap-server {internal}"))
            || health.contains(&format!("--bootstrap-server {local}")),
        "{name}: the healthcheck must ask the broker's own listener {internal}: {health:?}"
    );
    Broker {
        node_id: get("KAFKA_NODE_ID"),
        internal,
        host,
        controller_port,
    }
}

fn brokers(file: &Value) -> BTreeMap<String, Broker> {
    kafka_services(file)
        .into_iter()
        .map(|(name, service)| (name.clone(), broker(name, service)))
        .collect()
}

/// A service's command as the `weather` binary would parse it: (subcommand, its matches).
fn weather_command(file: &str, name: &str, service: &Value) -> (String, ArgMatches) {
    let args = list(&service["command"]);
    let matches = Cli::command()
        .try_get_matches_from(std::iter::once("weather".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| {
            panic!(
                "{file} {name}: `weather {}` is not a valid command:\n{e}",
                args.join(" ")
            )
        });
    let (sub, sub_matches) = matches
        .subcommand()
        .unwrap_or_else(|| panic!("{file} {name}: no subcommand"));
    (sub.to_string(), sub_matches.clone())
}

/// An argument's values as given (or defaulted), whatever type the program parses them into.
fn raw(matches: &ArgMatches, id: &str) -> Vec<String> {
    matches
        .try_get_raw(id)
        .unwrap_or_else(|e| panic!("no argument {id}: {e}"))
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Named volume → where it is mounted, for one service; every volume must be declared.
fn mounts(file: &Value, name: &str, service: &Value) -> BTreeMap<String, String> {
    list(&service["volumes"])
        .iter()
        .map(|entry| {
            let mut parts = entry.split(':');
            let (volume, target) = (parts.next().unwrap_or_default(), parts.next());
            let target = target.unwrap_or_else(|| panic!("{name}: volume {entry:?} has no target"));
            assert!(
                file["volumes"].get(volume).is_some(),
                "{name}: volume {volume} is not declared under the top-level volumes:"
            );
            (volume.to_string(), target.to_string())
        })
        .collect()
}

/// The named volume mounted exactly where `--state-dir` points.
fn state_volume(file: &Value, name: &str, service: &Value, matches: &ArgMatches) -> String {
    let dir = raw(matches, "state_dir").join(",");
    mounts(file, name, service)
        .into_iter()
        .find(|(_, target)| *target == dir)
        .map(|(volume, _)| volume)
        .unwrap_or_else(|| {
            panic!("{name}: --state-dir {dir} is not where any named volume is mounted, so the state would die with the container")
        })
}

fn both_files() -> [(&'static str, Value); 2] {
    [(SINGLE, compose(SINGLE)), (CLUSTER, compose(CLUSTER))]
}

#[test]
fn every_image_is_pinned_to_a_version() {
    for (path, file) in both_files() {
        assert!(
            !kafka_services(&file).is_empty(),
            "{path}: no apache/kafka service"
        );
        for (name, service) in services(&file) {
            let image = text(&service["image"], &format!("{path} {name}: image"));
            if service.get("build").is_some() {
                continue;
            }
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                tag.starts_with(|c: char| c.is_ascii_digit()) && tag != "latest",
                "{path} {name}: image {image} is not pinned to a version"
            );
        }
    }
}

#[test]
fn single_kafka_answers_where_the_makefile_and_the_cli_look() {
    let file = compose(SINGLE);
    let brokers = brokers(&file);
    assert_eq!(brokers.len(), 1, "{SINGLE}: one Kafka node");
    let kafka = brokers.values().next().expect("one broker");
    let voters = text(
        &kafka_services(&file)[0].1["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"],
        "voters",
    );
    let (id, host) = (
        &kafka.node_id,
        &kafka.internal.split(':').next().unwrap_or(""),
    );
    assert_eq!(voters, format!("{id}@{host}:{}", kafka.controller_port));

    // `make up BROKER=docker` must leave Kafka where host programs dial by default.
    let makefile = read("Makefile");
    let port = make_variable(&makefile, "KAFKA_PORT");
    let brokers_default = make_variable(&makefile, "KAFKA_BROKERS").replace("$(KAFKA_PORT)", &port);
    assert_eq!(
        kafka.host, brokers_default,
        "Makefile's KAFKA_BROKERS vs the host listener"
    );
    let cli_default = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == "brokers")
        .and_then(|a| a.get_default_values().first().cloned())
        .expect("--brokers has a default");
    assert_eq!(
        kafka.host,
        cli_default.to_string_lossy(),
        "--brokers default vs the host listener"
    );
}

fn make_variable(makefile: &str, name: &str) -> String {
    makefile
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ?= ")))
        .unwrap_or_else(|| panic!("Makefile sets no {name} ?= default"))
        .trim()
        .to_string()
}

#[test]
fn weather_services_dial_a_container_listener_after_kafka_is_healthy() {
    for (path, file) in both_files() {
        let brokers = brokers(&file);
        let internal: BTreeSet<&str> = brokers.values().map(|b| b.internal.as_str()).collect();
        let services = weather_services(&file);
        assert!(
            services.len() >= 4,
            "{path}: produce, two consumers and serve"
        );
        for (name, service) in services {
            let build = &service["build"];
            assert_eq!(
                text(&build["dockerfile"], "dockerfile"),
                "docker/Dockerfile",
                "{path} {name}"
            );
            let context = Path::new(ROOT)
                .join("docker")
                .join(text(&build["context"], "context"));
            assert!(
                context.join("Cargo.toml").is_file()
                    && context.join(text(&build["dockerfile"], "")).is_file(),
                "{path} {name}: the build context {} is not the repository root",
                context.display()
            );
            let dialed = text(
                &service["environment"]["KAFKA_BROKERS"],
                &format!("{path} {name}: KAFKA_BROKERS"),
            );
            for address in dialed.split(',') {
                assert!(
                    internal.contains(address),
                    "{path} {name}: KAFKA_BROKERS has {address}, which no broker advertises to containers ({internal:?})"
                );
            }
            for broker in brokers.keys() {
                assert_eq!(
                    service["depends_on"][broker]["condition"].as_str(),
                    Some("service_healthy"),
                    "{path} {name}: must wait for {broker} to be healthy"
                );
            }
        }
    }
}

#[test]
fn producer_and_consumers_are_real_weather_commands_sharing_one_state_volume() {
    for (path, file) in both_files() {
        let mut partitions_created = None;
        let mut consumed = Vec::new();
        let mut volumes = BTreeSet::new();
        for (name, service) in weather_services(&file) {
            if name == "serve" {
                continue; // its own test below
            }
            let (sub, matches) = weather_command(path, name, service);
            match sub.as_str() {
                "produce" => {
                    let count: i32 = raw(&matches, "partitions")[0].parse().expect("a number");
                    partitions_created = Some(count);
                }
                "consume" => {
                    for p in raw(&matches, "partitions") {
                        consumed.push(p.parse::<i32>().expect("a partition number"));
                    }
                    volumes.insert(state_volume(&file, name, service, &matches));
                }
                other => panic!("{path} {name}: unexpected service command {other}"),
            }
        }
        let partitions = partitions_created.unwrap_or_else(|| panic!("{path}: no produce service"));
        consumed.sort();
        assert_eq!(
            consumed,
            (0..partitions).collect::<Vec<_>>(),
            "{path}: the consumers must cover each of the {partitions} partitions exactly once"
        );
        assert_eq!(
            volumes.len(),
            1,
            "{path}: consumers must share one state volume: {volumes:?}"
        );
    }
}

/// Needs `weather serve` (the dashboard): this fails until that subcommand exists.
#[test]
fn dashboard_listens_on_the_published_port_and_reads_the_consumers_state() {
    for (path, file) in both_files() {
        let serve = &services(&file)["serve"];
        let (sub, matches) = weather_command(path, "serve", serve);
        assert_eq!(sub, "serve");
        let listen = raw(&matches, "listen").join(",");
        let (host, port) = listen.rsplit_once(':').expect("--listen HOST:PORT");
        assert_eq!(
            host, "0.0.0.0",
            "{path} serve: inside a container it must listen on every interface"
        );
        let published = list(&serve["ports"]);
        assert_eq!(
            published,
            vec![format!("127.0.0.1:{port}:{port}")],
            "{path} serve: publish the --listen port {port}, on loopback only"
        );
        let dashboard_volume = state_volume(&file, "serve", serve, &matches);
        let consume = &services(&file)["consume-a"];
        let (_, consume_matches) = weather_command(path, "consume-a", consume);
        assert_eq!(
            dashboard_volume,
            state_volume(&file, "consume-a", consume, &consume_matches),
            "{path}: the dashboard must read the consumers' state volume"
        );
    }
}

#[test]
fn cluster_replicates_three_ways_and_needs_two_in_sync() {
    let file = compose(CLUSTER);
    let brokers = brokers(&file);
    assert_eq!(brokers.len(), 3, "{CLUSTER}: three brokers");
    let ids: BTreeSet<&str> = brokers.values().map(|b| b.node_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "node ids must differ: {ids:?}");
    let hosts: BTreeSet<&str> = brokers.values().map(|b| b.host.as_str()).collect();
    assert_eq!(
        hosts.len(),
        3,
        "each broker needs its own host port: {hosts:?}"
    );
    let expected_voters: BTreeSet<String> = brokers
        .iter()
        .map(|(name, b)| format!("{}@{name}:{}", b.node_id, b.controller_port))
        .collect();
    let mut cluster_ids = BTreeSet::new();
    for (name, service) in kafka_services(&file) {
        let env = &service["environment"];
        let voters: BTreeSet<String> = text(&env["KAFKA_CONTROLLER_QUORUM_VOTERS"], "voters")
            .split(',')
            .map(String::from)
            .collect();
        assert_eq!(voters, expected_voters, "{name}: quorum voters");
        cluster_ids.insert(text(&env["CLUSTER_ID"], &format!("{name}: CLUSTER_ID")).to_string());
        for (key, value) in [
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
        ] {
            assert_eq!(env[key].as_str(), Some(value), "{name}: {key}");
        }
    }
    assert_eq!(
        cluster_ids.len(),
        1,
        "one CLUSTER_ID for all three: {cluster_ids:?}"
    );
    let (_, produce) = weather_command(CLUSTER, "produce", &services(&file)["produce"]);
    assert_eq!(
        raw(&produce, "replication_factor"),
        ["3"],
        "produce --replication-factor"
    );
}

#[test]
fn single_node_topic_fits_on_one_broker() {
    let file = compose(SINGLE);
    let (_, produce) = weather_command(SINGLE, "produce", &services(&file)["produce"]);
    assert_eq!(
        raw(&produce, "replication_factor"),
        ["1"],
        "one broker holds one replica"
    );
}

/// Dockerfile instructions with continuation lines joined, grouped by `FROM` stage.
struct Stage {
    from: String,
    name: Option<String>,
    lines: Vec<(String, String)>,
}

fn dockerfile() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let joined = read("docker/Dockerfile").replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (op, rest) = (op.to_uppercase(), rest.trim().to_string());
        if op == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            stages.push(Stage {
                from: words[0].to_string(),
                name: (words.len() == 3 && words[1].eq_ignore_ascii_case("as"))
                    .then(|| words[2].to_string()),
                lines: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .lines
                .push((op, rest));
        }
    }
    stages
}

/// `key = "value"` lines of Cargo.toml, in order.
fn cargo_values(key: &str) -> Vec<String> {
    read("Cargo.toml")
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .collect()
}

/// `1.88` from `1.88`, `1.88.0` or `1.88-slim-bookworm`; empty when the text starts otherwise.
fn version(text: &str) -> Vec<u32> {
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    text[..end]
        .split('.')
        .map_while(|part| part.parse().ok())
        .collect()
}

#[test]
fn dockerfile_builds_like_the_project_and_runs_as_non_root() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "a multi-stage build");
    let final_stage = stages.last().expect("stages");
    let builder = stages
        .iter()
        .find(|s| {
            s.lines
                .iter()
                .any(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        })
        .expect("a stage that runs cargo build");
    let builder_name = builder
        .name
        .clone()
        .expect("the builder stage is named (AS ...)");

    let (image, tag) = builder
        .from
        .split_once(':')
        .expect("the builder image has a tag");
    assert_eq!(image, "rust", "build with the official Rust image");
    let wanted = cargo_values("rust-version");
    assert!(
        version(tag) >= version(&wanted[0]),
        "builder toolchain {tag} is older than Cargo.toml's rust-version {}",
        wanted[0]
    );

    let bin = cargo_bin_name().expect("a [[bin]] name in Cargo.toml");
    let build = builder
        .lines
        .iter()
        .find(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
        .expect("cargo build");
    for flag in ["--release", "--locked"] {
        assert!(
            build.contains(&flag),
            "cargo build without {flag}: {build:?}"
        );
    }

    // Every file the build reads is copied in: the manifest, the lock file, and each target path.
    let copied: Vec<String> = builder
        .lines
        .iter()
        .filter(|(op, _)| op == "COPY")
        .flat_map(|(_, rest)| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for source in &copied {
        assert!(
            Path::new(ROOT).join(source).exists(),
            "COPY {source}: no such path in the repository"
        );
    }
    let needed = [
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "build.rs".to_string(),
    ]
    .into_iter()
    .chain(cargo_values("path"));
    for path in needed {
        assert!(
            copied
                .iter()
                .any(|c| path == *c || path.starts_with(&format!("{c}/"))),
            "the builder does not copy {path}, which the build reads (copied: {copied:?})"
        );
    }

    // The final stage: small, the binary from the builder, run as an unprivileged user.
    assert!(
        !final_stage.from.starts_with("rust"),
        "the final image {} carries the toolchain",
        final_stage.from
    );
    let final_tag = final_stage
        .from
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("");
    assert!(
        !final_tag.is_empty() && final_tag != "latest",
        "final image {} not pinned",
        final_stage.from
    );
    let binary = final_stage
        .lines
        .iter()
        .find_map(|(op, rest)| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            (op == "COPY" && words.first() == Some(&format!("--from={builder_name}").as_str()))
                .then(|| (words[1].to_string(), words[2].to_string()))
        })
        .expect("COPY --from=<builder> of the binary");
    assert!(
        binary.0.ends_with(&format!("target/release/{bin}")),
        "the final stage copies {} rather than the release binary {bin}",
        binary.0
    );
    let user = final_stage
        .lines
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, rest)| rest.clone())
        .expect("a USER in the final stage");
    assert!(
        !["root", "0", "0:0", "root:root"].contains(&user.as_str()),
        "the final stage runs as {user}"
    );
    let entrypoint = final_stage
        .lines
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, rest)| rest.clone())
        .expect("an ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entrypoint).expect("ENTRYPOINT in exec form");
    assert_eq!(entry, [binary.1], "ENTRYPOINT must run the copied binary");
}

/// The `[[bin]]` target's name in Cargo.toml.
fn cargo_bin_name() -> Option<String> {
    let manifest = read("Cargo.toml");
    let section = manifest.split("[[bin]]").nth(1)?;
    section.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A folder with a stand-in `docker` that logs its arguments to `docker.log` and, for the
/// listed subcommands, fails.
fn fake_docker(failing: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    let log = dir.path().join("docker.log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\ncase \" {failing} \" in *\" $1 \"*) exit 1;; esac\nexit 0\n",
        log.display()
    );
    let path = dir.path().join("docker");
    std::fs::write(&path, script).expect("write the stand-in docker");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for tool in ["bash", "dirname", "sh", "env"] {
        std::os::unix::fs::symlink(on_path(tool), dir.path().join(tool)).expect("link a tool");
    }
    dir
}

fn on_path(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

/// `make TARGET BROKER=...` with only `bin` on PATH, so a `docker` elsewhere is not seen.
fn make(bin: &Path, target: &str, broker: &str) -> Output {
    Command::new(on_path("make"))
        .args([
            "--no-print-directory",
            "-C",
            ROOT,
            target,
            &format!("BROKER={broker}"),
        ])
        .env("PATH", bin)
        .output()
        .expect("run make")
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn make_up_and_down_drive_compose_with_the_matching_file() {
    for (broker, path) in [("docker", SINGLE), ("cluster", CLUSTER)] {
        let bin = fake_docker("");
        let up = make(bin.path(), "up", broker);
        assert!(
            up.status.success(),
            "make up BROKER={broker}: {}",
            output_text(&up)
        );
        let down = make(bin.path(), "down", broker);
        assert!(
            down.status.success(),
            "make down BROKER={broker}: {}",
            output_text(&down)
        );
        let log =
            std::fs::read_to_string(bin.path().join("docker.log")).expect("docker was called");
        let calls: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("compose -f"))
            .collect();

        let file = compose(path);
        let brokers = brokers(&file);
        let names: Vec<&str> = brokers.keys().map(String::as_str).collect();
        assert_eq!(
            calls,
            [
                format!("compose -f {path} up --detach --wait {}", names.join(" ")),
                format!("compose -f {path} down"),
            ],
            "BROKER={broker}"
        );
        // It tells host programs where the brokers are, as the compose file publishes them.
        let hosts: Vec<&str> = brokers.values().map(|b| b.host.as_str()).collect();
        let said = output_text(&up);
        assert!(
            said.contains(&format!("KAFKA_BROKERS={}", hosts.join(","))),
            "make up BROKER={broker} should name {hosts:?}: {said}"
        );
    }
}

#[test]
fn make_up_with_docker_says_one_line_when_docker_cannot_run_it() {
    let cases = [
        (None, "docker not found"),
        (Some("info"), "the Docker engine is not running"),
        (Some("compose"), "the docker compose plugin is missing"),
    ];
    for (failing, expected) in cases {
        let bin = fake_docker(failing.unwrap_or(""));
        if failing.is_none() {
            std::fs::remove_file(bin.path().join("docker")).expect("remove docker");
        }
        let out = make(bin.path(), "up", "docker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert!(!out.status.success(), "{expected}: make up succeeded");
        assert_eq!(errors.len(), 1, "{expected}: one error line, got {stderr}");
        assert!(errors[0].contains(expected), "{expected}: got {stderr}");
        let log = std::fs::read_to_string(bin.path().join("docker.log")).unwrap_or_default();
        assert!(
            !log.contains("compose -f"),
            "{expected}: nothing may be started: {log}"
        );
    }
    let out = make(fake_docker("").path(), "up", "kubernetes");
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("BROKER=kubernetes is not known"),
        "{}",
        output_text(&out)
    );
}
