//! Connecting to a secured cluster: which protocol, which credentials, which certificates to
//! trust, from the settings Kafka users already write (`--command-config FILE`, a Java
//! properties file as Kafka's own tools take it, and `KAFKA_*` environment variables, which
//! override the file). Resolved once per program into a `Security` that every connection uses,
//! rskafka's and the wire layer's alike.
//!
//! - `properties`: the properties file and `sasl.jaas.config` parsers.
//! - `tls`: the rustls configuration (verification on unless the user turns it off) and the
//!   one-line explanations of handshake failures.
//! - `sasl`: SaslHandshake and SaslAuthenticate on a wire connection (PLAIN, SCRAM-SHA-256/512
//!   through rsasl, the SASL library rskafka itself uses), and rskafka's equivalent settings.
//! - `denied`: the broker's authorization errors as one line naming principal, operation and
//!   resource.
//!
//! A password lives in a `Secret` from the moment it is read: its `Debug` and `Display` print
//! `***`, and no error message of this module quotes a value of a key that may hold one.

pub mod denied;
pub mod properties;
pub mod sasl;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

pub use denied::{Denied, Operation, Resource};
use properties::{Entry, Origin};

/// A value that must never be printed: a password, or anything read before we know it is not
/// one. `Debug` and `Display` print `***`; `expose` is the one way to the text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The text itself, for the one place that needs it (the SASL exchange, a parser).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `security.protocol`: whether connections use TLS, SASL, both or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    const NAMES: [(&'static str, Protocol); 4] = [
        ("PLAINTEXT", Protocol::Plaintext),
        ("SSL", Protocol::Ssl),
        ("SASL_PLAINTEXT", Protocol::SaslPlaintext),
        ("SASL_SSL", Protocol::SaslSsl),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("PLAINTEXT", |(n, _)| n)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// `sasl.mechanism`: the ones Kafka offers for user names and passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    const NAMES: [(&'static str, Mechanism); 3] = [
        ("PLAIN", Mechanism::Plain),
        ("SCRAM-SHA-256", Mechanism::ScramSha256),
        ("SCRAM-SHA-512", Mechanism::ScramSha512),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("PLAIN", |(n, _)| n)
    }
}

/// The user a SASL connection authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// How every connection of one program is secured. The default is plaintext, unauthenticated:
/// what a program without `--command-config` or `KAFKA_SECURITY_PROTOCOL` does, unchanged.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub protocol: Protocol,
    pub sasl: Option<Credentials>,
    pub tls: Option<tls::Tls>,
}

impl Security {
    /// Plaintext and unauthenticated.
    pub fn plaintext() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The principal the broker's authorizer sees, as its ACLs name it: `User:<sasl user>`,
    /// or `User:ANONYMOUS` without SASL (no client certificates here).
    pub fn principal(&self) -> String {
        match &self.sasl {
            Some(c) => format!("User:{}", c.username),
            None => "User:ANONYMOUS".into(),
        }
    }

    /// Reads `--command-config` (if given), then the environment through `env`, which
    /// overrides the file key by key, and checks that the result makes a whole configuration.
    pub fn load(
        command_config: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SecurityError> {
        let mut settings = Settings::default();
        if let Some(path) = command_config {
            let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let entries = properties::parse(&text, path).map_err(SecurityError::Syntax)?;
            settings.file = Some(path.to_path_buf());
            for entry in entries {
                settings.values.insert(entry.key.clone(), entry);
            }
        }
        for key in KNOWN {
            let name = env_name(key);
            let value = env(&name).filter(|v| !v.is_empty() || *key == ENDPOINT_CHECK);
            if let Some(value) = value {
                let entry = Entry {
                    key: (*key).into(),
                    value: Secret::new(value),
                    origin: Origin::Env { name },
                };
                settings.values.insert((*key).into(), entry);
            }
        }
        settings.resolve()
    }

    /// `load` from this process's environment.
    pub fn from_environment(command_config: Option<&Path>) -> Result<Self, SecurityError> {
        Self::load(command_config, &|name| std::env::var(name).ok())
    }

    /// One line for the start of a program at debug level: how it connects, never a secret.
    pub fn describe(&self) -> String {
        let mut text = format!("security.protocol={}", self.protocol.name());
        if let Some(c) = &self.sasl {
            text.push_str(&format!(
                ", sasl.mechanism={} as {}",
                c.mechanism.name(),
                self.principal()
            ));
        }
        if let Some(t) = &self.tls {
            text.push_str(&format!(", trusting {}", t.trust()));
        }
        text
    }
}

/// The environment variable for a key: `KAFKA_` and the key in capitals, dots as underscores
/// (`sasl.username` → `KAFKA_SASL_USERNAME`), as the Confluent images name them.
pub fn env_name(key: &str) -> String {
    format!("KAFKA_{}", key.to_ascii_uppercase().replace('.', "_"))
}

const PROTOCOL: &str = "security.protocol";
const MECHANISM: &str = "sasl.mechanism";
const USERNAME: &str = "sasl.username";
const PASSWORD: &str = "sasl.password";
const JAAS: &str = "sasl.jaas.config";
const CA_LOCATION: &str = "ssl.ca.location";
const TRUSTSTORE_TYPE: &str = "ssl.truststore.type";
const TRUSTSTORE_LOCATION: &str = "ssl.truststore.location";
const TRUSTSTORE_CERTIFICATES: &str = "ssl.truststore.certificates";
const ENDPOINT_CHECK: &str = "ssl.endpoint.identification.algorithm";
/// librdkafka's name; `false` turns certificate verification off entirely (loudly).
const VERIFY_CERTIFICATES: &str = "enable.ssl.certificate.verification";

/// The keys this client reads, in the file and (as `env_name`) in the environment.
pub const KNOWN: &[&str] = &[
    PROTOCOL,
    MECHANISM,
    USERNAME,
    PASSWORD,
    JAAS,
    CA_LOCATION,
    TRUSTSTORE_TYPE,
    TRUSTSTORE_LOCATION,
    TRUSTSTORE_CERTIFICATES,
    ENDPOINT_CHECK,
    VERIFY_CERTIFICATES,
];

/// Keys that would change who we are or whom we trust and that this client cannot honour:
/// refused rather than ignored, so a connection is never less secure than the file says.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "ssl.keystore.location",
        ": client certificates (mutual TLS) are not supported; authenticate with SASL instead",
    ),
    (
        "ssl.keystore.certificate.chain",
        ": client certificates (mutual TLS) are not supported; authenticate with SASL instead",
    ),
    (
        "ssl.certificate.location",
        ": client certificates (mutual TLS) are not supported; authenticate with SASL instead",
    ),
    (
        "ssl.key.location",
        ": client certificates (mutual TLS) are not supported; authenticate with SASL instead",
    ),
    (
        "sasl.login.callback.handler.class",
        ": login callback handlers (OAUTHBEARER) are not supported; use PLAIN or SCRAM",
    ),
];

/// The line for `entry`'s value that cannot be used, and why (`reason` follows the key).
fn bad(entry: &Entry, reason: impl Into<String>) -> SecurityError {
    SecurityError::Bad {
        origin: entry.origin.clone(),
        key: entry.key.clone(),
        reason: reason.into(),
    }
}

/// A configuration that cannot be used: one line naming the key, where it was set, and what
/// to do. Never the value of a key that may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read --command-config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--command-config {0}")]
    Syntax(properties::SyntaxError),
    #[error("{origin}: {key}{reason}")]
    Bad {
        origin: Origin,
        key: String,
        reason: String,
    },
    #[error("{what} ({where_}): {hint}")]
    Missing {
        what: String,
        where_: String,
        hint: String,
    },
}

#[derive(Default)]
struct Settings {
    file: Option<PathBuf>,
    values: BTreeMap<String, Entry>,
}

impl Settings {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.values.get(key)
    }

    /// A non-secret value, trimmed as Kafka trims enum-like values.
    fn word(&self, key: &str) -> Option<(String, &Entry)> {
        self.get(key)
            .map(|e| (e.value.expose().trim().to_string(), e))
    }

    /// Where a missing key could be set, for the line that says it is missing.
    fn where_to_set(&self, key: &str) -> String {
        match &self.file {
            Some(path) => format!("set {key} in {} or {}", path.display(), env_name(key)),
            None => format!("set {key} in a --command-config file or {}", env_name(key)),
        }
    }

    fn resolve(self) -> Result<Security, SecurityError> {
        for (key, reason) in UNSUPPORTED {
            if let Some(entry) = self.get(key) {
                return Err(bad(entry, *reason));
            }
        }
        let unused: Vec<&str> = self
            .values
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN.contains(k))
            .collect();
        if !unused.is_empty() {
            // Files are shared with Kafka's Java tools, which take many more settings.
            debug!("not used by this client: {}", unused.join(", "));
        }
        let protocol = match self.word(PROTOCOL) {
            None => Protocol::Plaintext,
            Some((value, entry)) => Protocol::NAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&value))
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    bad(
                        entry,
                        format!("={value} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
                    )
                })?,
        };
        let sasl = if protocol.uses_sasl() {
            Some(self.credentials(protocol)?)
        } else {
            None
        };
        let tls = if protocol.uses_tls() {
            Some(self.tls()?)
        } else {
            None
        };
        let security = Security {
            protocol,
            sasl,
            tls,
        };
        if protocol == Protocol::Plaintext && self.values.keys().any(|k| k.starts_with("sasl.")) {
            warn!(
                "SASL settings are given but security.protocol is PLAINTEXT: connecting without \
                 authentication (set security.protocol=SASL_SSL or SASL_PLAINTEXT to use them)"
            );
        }
        Ok(security)
    }

    fn credentials(&self, protocol: Protocol) -> Result<Credentials, SecurityError> {
        let (value, entry) = self.word(MECHANISM).ok_or_else(|| SecurityError::Missing {
            what: format!("security.protocol={} needs sasl.mechanism", protocol.name()),
            where_: self.where_to_set(MECHANISM),
            hint: "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".into(),
        })?;
        let mechanism = Mechanism::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&value))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                bad(
                    entry,
                    format!("={value} is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                )
            })?;
        // sasl.jaas.config as Kafka's Java tools write it; sasl.username and sasl.password
        // (librdkafka's keys, and the environment's) take precedence field by field.
        let mut jaas_options = BTreeMap::new();
        if let Some(entry) = self.get(JAAS) {
            let jaas = properties::parse_jaas(entry.value.expose())
                .map_err(|reason| bad(entry, format!(" does not parse: {reason}")))?;
            let expected = match mechanism {
                Mechanism::Plain => properties::PLAIN_LOGIN_MODULE,
                Mechanism::ScramSha256 | Mechanism::ScramSha512 => properties::SCRAM_LOGIN_MODULE,
            };
            if jaas.module != expected {
                return Err(bad(
                    entry,
                    format!(
                        " names login module {} but sasl.mechanism={} needs {expected}",
                        jaas.module,
                        mechanism.name()
                    ),
                ));
            }
            jaas_options = jaas.options;
        }
        let username = match self.get(USERNAME) {
            Some(entry) => entry.value.expose().to_string(),
            None => jaas_options
                .get("username")
                .map(|s| s.expose().to_string())
                .ok_or_else(|| SecurityError::Missing {
                    what: format!("sasl.mechanism={} needs a user name", mechanism.name()),
                    where_: self.where_to_set(USERNAME),
                    hint: "or username=\"...\" in sasl.jaas.config".into(),
                })?,
        };
        let password = match self.get(PASSWORD) {
            Some(entry) => entry.value.clone(),
            None => {
                jaas_options
                    .get("password")
                    .cloned()
                    .ok_or_else(|| SecurityError::Missing {
                        what: format!("sasl.mechanism={} needs a password", mechanism.name()),
                        where_: self.where_to_set(PASSWORD),
                        hint: "or password=\"...\" in sasl.jaas.config; never on the command line"
                            .into(),
                    })?
            }
        };
        if username.is_empty() {
            let entry = self.get(USERNAME).or_else(|| self.get(JAAS));
            return Err(match entry {
                Some(entry) => bad(entry, " gives an empty user name"),
                None => SecurityError::Missing {
                    what: "the SASL user name is empty".into(),
                    where_: self.where_to_set(USERNAME),
                    hint: "give the user the cluster's admin made for you".into(),
                },
            });
        }
        Ok(Credentials {
            mechanism,
            username,
            password,
        })
    }

    fn tls(&self) -> Result<tls::Tls, SecurityError> {
        let trust = self.trust()?;
        let check_host = match self.get(ENDPOINT_CHECK) {
            None => true,
            Some(entry) => {
                let value = entry.value.expose().trim();
                if value.is_empty() {
                    false
                } else if value.eq_ignore_ascii_case("https") {
                    true
                } else {
                    return Err(bad(
                        entry,
                        format!(
                            "={value} is not known: https (the default) checks host names, \
                             empty turns only that check off"
                        ),
                    ));
                }
            }
        };
        let verify = match self.word(VERIFY_CERTIFICATES) {
            None => true,
            Some((value, entry)) => match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad(entry, format!("={value} is not true or false"))),
            },
        };
        tls::Tls::new(trust, check_host, verify)
    }

    /// Which certificates to trust: a PEM file (`ssl.ca.location`, or a PEM truststore), PEM
    /// text (`ssl.truststore.certificates`), or the system's roots.
    fn trust(&self) -> Result<tls::Trust, SecurityError> {
        if let Some(entry) = self.get(CA_LOCATION) {
            return Ok(tls::Trust::File(entry.clone()));
        }
        let store_type = self.word(TRUSTSTORE_TYPE);
        if let Some((kind, entry)) = &store_type
            && !kind.eq_ignore_ascii_case("PEM")
        {
            return Err(bad(
                entry,
                format!(
                    "={kind}: only PEM truststores can be read here; set ssl.truststore.type=PEM \
                     with a PEM file of the CA (keytool -exportcert -rfc, or openssl), or use \
                     ssl.ca.location"
                ),
            ));
        }
        if let Some(entry) = self.get(TRUSTSTORE_LOCATION) {
            if store_type.is_none() {
                // Kafka's Java client would read it as JKS; we take it only if it is PEM.
                return Ok(tls::Trust::PemOnly(entry.clone()));
            }
            return Ok(tls::Trust::File(entry.clone()));
        }
        if let Some(entry) = self.get(TRUSTSTORE_CERTIFICATES) {
            return Ok(tls::Trust::Inline(entry.clone()));
        }
        Ok(tls::Trust::System)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
