use std::collections::HashMap;
use std::io::Write;

use super::*;

/// The test CA (`testdata/README`): signed the certificate of `testdata/server.pem`.
pub(crate) const CA_PEM: &str = include_str!("testdata/ca.pem");

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

pub(crate) fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn ca_file() -> tempfile::NamedTempFile {
    file(CA_PEM)
}

fn load(path: Option<&Path>, vars: &[(&str, &str)]) -> Result<Security, SecurityError> {
    Security::load(path, &env(vars))
}

#[test]
fn nothing_configured_is_plaintext_as_before() {
    let security = load(None, &[]).unwrap();
    assert_eq!(security.protocol, Protocol::Plaintext);
    assert!(security.sasl.is_none() && security.tls.is_none());
    assert_eq!(security.principal(), "User:ANONYMOUS");
}

#[test]
fn the_kafka_tools_file_of_the_secure_broker_is_read_as_it_is() {
    let ca = ca_file();
    let text = format!(
        "security.protocol=SASL_SSL\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"producer\" password=\"p4ss;word\";\n\
         ssl.truststore.type=PEM\n\
         ssl.truststore.location={}\n",
        ca.path().display()
    );
    let config = file(&text);
    let security = load(Some(config.path()), &[]).unwrap();
    assert_eq!(security.protocol, Protocol::SaslSsl);
    let sasl = security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, Mechanism::ScramSha512);
    assert_eq!(sasl.username, "producer");
    assert_eq!(sasl.password.expose(), "p4ss;word");
    assert_eq!(security.principal(), "User:producer");
    let tls = security.tls.as_ref().unwrap();
    assert!(matches!(tls.trust(), tls::Trust::File(e) if e.key == "ssl.truststore.location"));
}

#[test]
fn librdkafka_keys_and_the_environment_which_overrides_the_file() {
    let ca = ca_file();
    let config = file(&format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=alice\n\
         sasl.password=from-file\nssl.ca.location={}\n",
        ca.path().display()
    ));
    let from_file = load(Some(config.path()), &[]).unwrap();
    assert_eq!(from_file.protocol, Protocol::SaslPlaintext);
    assert!(
        from_file.tls.is_none(),
        "no TLS without SSL in the protocol"
    );
    let sasl = from_file.sasl.unwrap();
    assert_eq!(
        (sasl.mechanism, sasl.username.as_str()),
        (Mechanism::Plain, "alice")
    );

    let overridden = load(
        Some(config.path()),
        &[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("KAFKA_SASL_USERNAME", "bob"),
            ("KAFKA_SASL_PASSWORD", "from-env"),
            ("KAFKA_SSL_CA_LOCATION", &ca.path().display().to_string()),
        ],
    )
    .unwrap();
    assert_eq!(overridden.protocol, Protocol::SaslSsl);
    let sasl = overridden.sasl.unwrap();
    assert_eq!(sasl.mechanism, Mechanism::ScramSha256);
    assert_eq!(sasl.username, "bob");
    assert_eq!(sasl.password.expose(), "from-env");
    assert!(overridden.tls.is_some());
}

#[test]
fn explicit_user_and_password_win_over_the_jaas_line_field_by_field() {
    let config = file(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"producer\" password=\"jaas-pass\";\n",
    );
    let security = load(Some(config.path()), &[("KAFKA_SASL_USERNAME", "consumer")]).unwrap();
    let sasl = security.sasl.unwrap();
    assert_eq!(sasl.username, "consumer");
    assert_eq!(sasl.password.expose(), "jaas-pass");
}

#[test]
fn environment_alone_is_enough() {
    let security = load(
        None,
        &[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
            // Empty variables count as unset, as shells make them easily.
            ("KAFKA_SSL_CA_LOCATION", ""),
        ],
    )
    .unwrap();
    assert_eq!(security.principal(), "User:u");
}

/// Runs `load` and returns its one error line, checking it never holds the password.
fn error_line(text: &str, vars: &[(&str, &str)]) -> (String, String) {
    let config = file(text);
    let path = config.path().display().to_string();
    let error = load(Some(config.path()), vars).unwrap_err().to_string();
    assert!(!error.contains("hunter2"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    (error, path)
}

#[test]
fn bad_configuration_is_one_line_naming_key_file_and_remedy() {
    let (line, path) = error_line("security.protocol=SASL_SSLX\n", &[]);
    assert_eq!(
        line,
        format!(
            "{path} line 1: security.protocol=SASL_SSLX is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        )
    );

    let (line, path) = error_line(
        "security.protocol=SASL_PLAINTEXT\nsasl.password=hunter2\nsasl.username=u\n",
        &[],
    );
    assert_eq!(
        line,
        format!(
            "security.protocol=SASL_PLAINTEXT needs sasl.mechanism (set sasl.mechanism in {path} or KAFKA_SASL_MECHANISM): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    );

    let (line, _) = error_line(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\nsasl.password=hunter2\n",
        &[],
    );
    assert!(
        line.contains("line 2: sasl.mechanism=GSSAPI is not supported"),
        "{line}"
    );

    let (line, _) = error_line(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.password=hunter2\n",
        &[],
    );
    assert!(line.contains("needs a user name"), "{line}");

    let (line, _) = error_line(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"hunter2\";\n",
        &[],
    );
    assert!(
        line.contains("line 3: sasl.jaas.config names login module"),
        "{line}"
    );

    let (line, _) = error_line(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"hunter2\"\n",
        &[],
    );
    assert!(
        line.contains("sasl.jaas.config does not parse: it should end with `;`"),
        "{line}"
    );

    let (line, _) = error_line(
        "security.protocol=SSL\nssl.truststore.type=JKS\nssl.truststore.location=/x.jks\n",
        &[],
    );
    assert!(
        line.contains("line 2: ssl.truststore.type=JKS: only PEM"),
        "{line}"
    );

    let (line, _) = error_line(
        "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n",
        &[],
    );
    assert!(
        line.contains("line 2: ssl.ca.location=/nonexistent/ca.pem: cannot read it"),
        "{line}"
    );

    let (line, _) = error_line("security.protocol=SSL\nssl.keystore.location=/k.jks\n", &[]);
    assert!(line.contains("mutual TLS"), "{line}");

    let (line, _) = error_line(
        "security.protocol=SSL\n",
        &[("KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "dns")],
    );
    assert!(
        line.starts_with("environment variable KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM: "),
        "{line}"
    );
}

#[test]
fn a_file_that_is_not_pem_is_refused_as_a_ca() {
    let not_pem = file("\u{feed}\u{face}binary keystore");
    let (line, _) = error_line(
        &format!(
            "security.protocol=SSL\nssl.truststore.location={}\n",
            not_pem.path().display()
        ),
        &[],
    );
    assert!(line.contains("holds no PEM certificate"), "{line}");
    assert!(line.contains("JKS or PKCS12"), "{line}");
}

#[test]
fn a_missing_command_config_file_is_named() {
    let error = load(Some(Path::new("/nonexistent/client.properties")), &[])
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("cannot read --command-config /nonexistent/client.properties: "),
        "{error}"
    );
}

#[test]
fn secrets_print_as_stars_in_debug_and_display() {
    let config = file(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=hunter2\n",
    );
    let security = load(Some(config.path()), &[]).unwrap();
    let debug = format!("{security:?} {:#?}", security);
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("***"), "{debug}");
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret} {secret:?}"), "*** ***");
    assert!(!security.describe().contains("hunter2"));
    // Every parsed entry holds its value as a secret, whatever the key.
    let entries = properties::parse("sasl.password=hunter2", Path::new("f")).unwrap();
    assert!(!format!("{entries:?}").contains("hunter2"));
    let jaas = properties::parse_jaas(
        "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"hunter2\";",
    )
    .unwrap();
    assert!(!format!("{jaas:?}").contains("hunter2"));
}

#[test]
fn host_names_can_be_unchecked_and_verification_turned_off() {
    let ca = ca_file();
    let base = format!(
        "security.protocol=SSL\nssl.ca.location={}\n",
        ca.path().display()
    );
    let unchecked = file(&format!("{base}ssl.endpoint.identification.algorithm=\n"));
    let security = load(Some(unchecked.path()), &[]).unwrap();
    assert!(format!("{:?}", security.tls.unwrap()).contains("check_host: false"));
    let off = file(&format!(
        "{base}enable.ssl.certificate.verification=false\n"
    ));
    let security = load(Some(off.path()), &[]).unwrap();
    assert!(format!("{:?}", security.tls.unwrap()).contains("verify: false"));
}

#[test]
fn environment_names_follow_the_keys() {
    assert_eq!(env_name("security.protocol"), "KAFKA_SECURITY_PROTOCOL");
    assert_eq!(env_name("sasl.jaas.config"), "KAFKA_SASL_JAAS_CONFIG");
    assert_eq!(env_name("ssl.ca.location"), "KAFKA_SSL_CA_LOCATION");
}

#[test]
fn server_names_for_ip_addresses_and_host_names() {
    use rustls::pki_types::ServerName;
    assert!(matches!(
        tls::Tls::server_name("127.0.0.1:9092"),
        Some(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        tls::Tls::server_name("localhost:9092"),
        Some(ServerName::DnsName(_))
    ));
    assert!(matches!(
        tls::Tls::server_name("[::1]:9092"),
        Some(ServerName::IpAddress(_))
    ));
}
