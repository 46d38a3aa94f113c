//! docker/ agrees with the rest of the project, where the two can drift apart: the services'
//! command lines with the real `weather` CLI, the Kafka version and listeners with what the
//! suite runs and what `make` and the CLI dial, the Dockerfile with Cargo.toml, and
//! `make up|down BROKER=docker|docker-cluster` with the compose files, driven against a
//! stand-in `docker` that records what it is asked. No Docker engine is needed. What only a
//! Docker engine can check (that Kafka starts from these settings) is left to one.

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
/// Each compose file with the `make up BROKER=...` name that starts its brokers.
const FILES: [(&str, &str); 2] = [(SINGLE, "docker"), (CLUSTER, "docker-cluster")];

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

/// Where one Kafka service is reached: by containers on the compose network (the listener it
/// advertises under its service name), and by programs on the host (the one on 127.0.0.1).
struct Reached {
    internal: String,
    host: String,
}

fn reached(name: &str, service: &Value) -> Reached {
    let advertised = text(
        &service["environment"]["KAFKA_ADVERTISED_LISTENERS"],
        &format!("{name}: KAFKA_ADVERTISED_LISTENERS"),
    );
    let addresses: Vec<&str> = advertised
        .split(',')
        .map(|l| {
            l.split_once("://")
                .unwrap_or_else(|| panic!("{name}: listener {l:?} is not NAME://HOST:PORT"))
                .1
        })
        .collect();
    let find = |host: &str| {
        addresses
            .iter()
            .find(|a| a.rsplit_once(':').is_some_and(|(h, _)| h == host))
            .map(|a| a.to_string())
            .unwrap_or_else(|| panic!("{name}: no listener advertised as {host}: {advertised}"))
    };
    let host = find("127.0.0.1");
    // Advertised to host programs, so it must be published there, on loopback only.
    let port = host.rsplit_once(':').expect("HOST:PORT").1;
    let published = list(&service["ports"]);
    let mapping = format!("127.0.0.1:{port}:{port}");
    assert!(
        published.contains(&mapping),
        "{name}: advertises {host} to the host but does not publish {mapping:?} (ports: {published:?})"
    );
    Reached {
        internal: find(name),
        host,
    }
}

/// Every Kafka service of a file, by name.
fn brokers(file: &Value) -> BTreeMap<String, Reached> {
    kafka_services(file)
        .into_iter()
        .map(|(name, service)| (name.clone(), reached(name, service)))
        .collect()
}

/// A service's command as the `weather` binary parses it: (subcommand, its matches).
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

/// The named volume mounted exactly where `--state-dir` points.
fn state_volume(file: &Value, name: &str, service: &Value, matches: &ArgMatches) -> String {
    let dir = raw(matches, "state_dir").join(",");
    list(&service["volumes"])
        .iter()
        .filter_map(|entry| {
            let (volume, target) = entry.split_once(':')?;
            let target = target.split(':').next().unwrap_or_default();
            (target == dir && file["volumes"].get(volume).is_some()).then(|| volume.to_string())
        })
        .next()
        .unwrap_or_else(|| {
            panic!("{name}: --state-dir {dir} is not where a declared named volume is mounted, so the state would die with the container")
        })
}

/// A variable as `make` itself sets it for `BROKER=broker`, whatever the Makefile computes.
fn make_variable(name: &str, broker: &str) -> String {
    let output = Command::new("make")
        .args(["--no-print-directory", "-s", "-C", ROOT])
        .arg(format!("--eval=print-variable: ; @echo $({name})"))
        .args(["print-variable", &format!("BROKER={broker}")])
        .env_remove("KAFKA_BROKERS")
        .env_remove("KAFKA_PORT")
        .env_remove("BROKER")
        .output()
        .expect("run make");
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn weather_services_run_valid_commands_that_cover_each_partition_once_into_one_state_volume() {
    for (path, _) in FILES {
        let file = compose(path);
        let mut partitions_created = None;
        let mut consumed = Vec::new();
        let mut volumes = BTreeSet::new();
        for (name, service) in weather_services(&file) {
            // Built from this repository with the Dockerfile the tests below check.
            let build = &service["build"];
            let context = Path::new(ROOT)
                .join("docker")
                .join(text(&build["context"], "build context"));
            let dockerfile = context.join(text(&build["dockerfile"], "dockerfile"));
            assert!(
                context.join("Cargo.toml").is_file()
                    && dockerfile.canonicalize().ok()
                        == Path::new(ROOT)
                            .join("docker/Dockerfile")
                            .canonicalize()
                            .ok(),
                "{path} {name}: not built from the repository root with docker/Dockerfile"
            );
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
                "serve" => {
                    volumes.insert(state_volume(&file, name, service, &matches));
                    let listen = raw(&matches, "listen").join(",");
                    let (host, port) = listen.rsplit_once(':').expect("--listen HOST:PORT");
                    assert_eq!(
                        host, "0.0.0.0",
                        "{path} serve: inside a container it must listen on every interface"
                    );
                    assert_eq!(
                        list(&service["ports"]),
                        vec![format!("127.0.0.1:{port}:{port}")],
                        "{path} serve: publish the --listen port {port}, on loopback only"
                    );
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
            "{path}: the consumers and the dashboard must share one state volume: {volumes:?}"
        );
    }
}

#[test]
fn weather_services_dial_the_brokers_of_their_file() {
    for (path, _) in FILES {
        let file = compose(path);
        let internal: BTreeSet<String> = brokers(&file).into_values().map(|b| b.internal).collect();
        for (name, service) in weather_services(&file) {
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
        }
    }
}

#[test]
fn host_listeners_are_where_make_and_the_cli_default_send_programs() {
    for (path, broker) in FILES {
        let hosts: Vec<String> = brokers(&compose(path))
            .into_values()
            .map(|b| b.host)
            .collect();
        assert_eq!(
            hosts.join(","),
            make_variable("KAFKA_BROKERS", broker),
            "{path}: the host listeners vs make's KAFKA_BROKERS for BROKER={broker}"
        );
    }
    let cli_default = Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == "brokers")
        .and_then(|a| a.get_default_values().first().cloned())
        .expect("--brokers has a default");
    let single = brokers(&compose(SINGLE));
    assert_eq!(
        single.values().map(|b| b.host.as_str()).collect::<Vec<_>>(),
        [cli_default.to_string_lossy()],
        "{SINGLE}: the host listener vs the --brokers default"
    );
}

#[test]
fn docker_runs_the_kafka_version_the_suite_tests() {
    let tested = support::broker::kafka_version();
    for (path, _) in FILES {
        for (name, service) in kafka_services(&compose(path)) {
            assert_eq!(
                text(&service["image"], "image"),
                format!("apache/kafka:{tested}"),
                "{path} {name}: the suite runs Apache Kafka {tested} (scripts/kafka/pom.xml)"
            );
        }
    }
}

#[test]
fn any_one_broker_can_stop_without_losing_an_acknowledged_report() {
    for (path, _) in FILES {
        let file = compose(path);
        let kafka = kafka_services(&file);
        let setting = |key: &str| -> BTreeSet<u32> {
            kafka
                .iter()
                .map(|(name, s)| {
                    text(&s["environment"][key], &format!("{path} {name}: {key}"))
                        .parse()
                        .expect("a number")
                })
                .collect()
        };
        let (_, produce) = weather_command(path, "produce", &services(&file)["produce"]);
        let replicas: u32 = raw(&produce, "replication_factor")[0].parse().unwrap();
        assert_eq!(
            setting("KAFKA_DEFAULT_REPLICATION_FACTOR"),
            BTreeSet::from([replicas]),
            "{path}: produce --replication-factor vs the brokers' default"
        );
        assert!(
            replicas as usize <= kafka.len(),
            "{path}: {replicas} replicas on {} brokers",
            kafka.len()
        );
        if kafka.len() > 1 {
            // acks=all waits for min.insync.replicas copies: two at least, one short of all.
            let min_insync = setting("KAFKA_MIN_INSYNC_REPLICAS");
            assert_eq!(
                min_insync,
                BTreeSet::from([replicas - 1]),
                "{path}: min.insync.replicas"
            );
            assert!(
                replicas >= 3,
                "{path}: an ack must mean two copies, a broker to spare"
            );
            for (name, s) in &kafka {
                assert_eq!(
                    s["environment"]["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"].as_str(),
                    Some("false"),
                    "{path} {name}: an out-of-sync replica must never lead"
                );
            }
        }
    }
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

/// The `[[bin]]` target's name in Cargo.toml.
fn cargo_bin_name() -> Option<String> {
    let manifest = read("Cargo.toml");
    let section = manifest.split("[[bin]]").nth(1)?;
    section.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
    })
}

#[test]
fn dockerfile_builds_and_ships_what_cargo_toml_describes() {
    let stages = dockerfile();
    let builder = stages
        .iter()
        .find(|s| {
            s.lines
                .iter()
                .any(|(op, rest)| op == "RUN" && rest.contains("cargo build"))
        })
        .expect("a stage that runs cargo build");
    let tag = builder.from.split_once(':').map(|(_, t)| t).unwrap_or("");
    let wanted = cargo_values("rust-version");
    assert!(
        version(tag) >= version(&wanted[0]),
        "builder toolchain {} is older than Cargo.toml's rust-version {}",
        builder.from,
        wanted[0]
    );

    // Every file the build reads is copied in: the manifest, the lock file, each target path.
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
    let needed = ["Cargo.toml", "Cargo.lock", "build.rs"]
        .map(String::from)
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

    // The final stage runs the release binary Cargo.toml names, copied from the builder.
    let bin = cargo_bin_name().expect("a [[bin]] name in Cargo.toml");
    let builder_name = builder.name.clone().expect("the builder stage is named");
    let final_stage = stages.last().expect("stages");
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
    let entrypoint = final_stage
        .lines
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, rest)| rest.clone())
        .expect("an ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entrypoint).expect("ENTRYPOINT in exec form");
    assert_eq!(entry, [binary.1], "ENTRYPOINT must run the copied binary");
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
        .env_remove("KAFKA_BROKERS")
        .env_remove("KAFKA_PORT")
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
fn make_up_status_and_down_drive_compose_with_the_matching_file() {
    for (path, broker) in FILES {
        let bin = fake_docker("");
        let up = make(bin.path(), "up", broker);
        assert!(
            up.status.success(),
            "make up BROKER={broker}: {}",
            output_text(&up)
        );
        let status = make(bin.path(), "status", broker);
        assert!(
            status.status.success(),
            "make status BROKER={broker}: {}",
            output_text(&status)
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

        let brokers = brokers(&compose(path));
        let names: Vec<&str> = brokers.keys().map(String::as_str).collect();
        assert_eq!(
            calls,
            [
                format!("compose -f {path} up --detach --wait {}", names.join(" ")),
                format!("compose -f {path} ps {}", names.join(" ")),
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
