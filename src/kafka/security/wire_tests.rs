//! The wire's TLS and SASL against a fake broker: a rustls server with the test certificates
//! of `testdata/`, and rsasl's own SCRAM server side checking our client's proof (so the
//! exchange is tested against an independent implementation of the server's half, not against
//! our own reading of the RFC).

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use digest::Digest;
use digest::generic_array::GenericArray;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rsasl::callback::{Context, Request as SaslRequest, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::scram::tools;
use rsasl::prelude::{Mechname, SASLConfig, SASLServer, SessionError};
use rsasl::property::AuthId;
use rsasl::validate::NoValidation;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tls::{Failure, Tls, Trust};
use super::{Credentials, Mechanism, Protocol, Secret, Security};
use crate::kafka::security::properties::{Entry, Origin};
use crate::kafka::wire::{Connection, WireError};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pass";

/// What the fake broker does.
#[derive(Clone)]
struct Broker {
    tls: bool,
    /// SASL mechanisms offered; empty: no SASL (a PLAINTEXT or SSL listener).
    mechanisms: Vec<&'static str>,
    session_lifetime_ms: i64,
}

/// Starts the broker on a free loopback port, on a thread of its own (rsasl's sessions are
/// not Send), serving connections until the test ends; returns its port.
fn start(broker: Broker) -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(server_config());
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let broker = broker.clone();
                        let acceptor = acceptor.clone();
                        tokio::task::spawn_local(async move {
                            if broker.tls {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve(stream, &broker).await;
                                }
                            } else {
                                serve(stream, &broker).await;
                            }
                        });
                    }
                })
                .await;
        });
    });
    port
}

fn server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(include_bytes!("testdata/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// The SCRAM server's stored credentials for `USER`, as a broker keeps them.
struct Users;

impl SessionCallback for Users {
    fn callback(
        &self,
        session: &SessionData,
        context: &Context,
        request: &mut SaslRequest,
    ) -> Result<(), SessionError> {
        if context.get_ref::<AuthId>() != Some(USER) {
            return Ok(());
        }
        let salt = b"fake broker salt";
        let iterations = 4096;
        let mechanism = session.mechanism().mechanism.as_str();
        macro_rules! stored {
            ($digest:ty) => {{
                let mut salted = GenericArray::default();
                tools::hash_password::<$digest>(PASSWORD.as_bytes(), iterations, salt, &mut salted);
                let (client_key, server_key) = tools::derive_keys::<$digest>(salted.as_slice());
                let stored_key = <$digest>::digest(client_key);
                request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                    iterations,
                    salt,
                    stored_key.as_slice(),
                    server_key.as_slice(),
                ))?;
            }};
        }
        match mechanism {
            "SCRAM-SHA-256" => stored!(sha2::Sha256),
            "SCRAM-SHA-512" => stored!(sha2::Sha512),
            _ => {}
        }
        Ok(())
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, broker: &Broker) {
    let mut session = None;
    loop {
        let Ok(length) = stream.read_i32().await else {
            return;
        };
        let mut frame = vec![0; length as usize];
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        let mut frame = Bytes::from(frame);
        let key = (&frame[..2]).get_i16();
        let version = (&frame[2..4]).get_i16();
        let mut out = BytesMut::new();
        if key == ApiKey::ApiVersions as i16 {
            let header = RequestHeader::decode(&mut frame, 1).unwrap();
            let offered = [
                (ApiKey::SaslHandshake, 0, 1),
                (ApiKey::SaslAuthenticate, 0, 2),
                (ApiKey::Metadata, 0, 12),
            ];
            let response = ApiVersionsResponse::default().with_api_keys(
                offered
                    .iter()
                    .map(|(k, low, high)| {
                        ApiVersion::default()
                            .with_api_key(*k as i16)
                            .with_min_version(*low)
                            .with_max_version(*high)
                    })
                    .collect(),
            );
            respond(&mut out, header.correlation_id, version, response);
        } else if key == ApiKey::SaslHandshake as i16 {
            let header =
                RequestHeader::decode(&mut frame, SaslHandshakeRequest::header_version(version))
                    .unwrap();
            let request = SaslHandshakeRequest::decode(&mut frame, version).unwrap();
            let asked = request.mechanism.to_string();
            let code = if broker.mechanisms.is_empty() {
                34 // ILLEGAL_SASL_STATE: not a SASL listener
            } else if broker.mechanisms.contains(&asked.as_str()) {
                let config = SASLConfig::builder()
                    .with_defaults()
                    .with_callback(Users)
                    .unwrap();
                let name = Mechname::parse(asked.as_bytes()).unwrap();
                session = Some(
                    SASLServer::<NoValidation>::new(config)
                        .start_suggested(name)
                        .unwrap(),
                );
                0
            } else {
                33 // UNSUPPORTED_SASL_MECHANISM
            };
            let response = SaslHandshakeResponse::default()
                .with_error_code(code)
                .with_mechanisms(
                    broker
                        .mechanisms
                        .iter()
                        .map(|m| StrBytes::from_static_str(m))
                        .collect(),
                );
            respond(&mut out, header.correlation_id, version, response);
        } else if key == ApiKey::SaslAuthenticate as i16 {
            let header =
                RequestHeader::decode(&mut frame, SaslAuthenticateRequest::header_version(version))
                    .unwrap();
            let request = SaslAuthenticateRequest::decode(&mut frame, version).unwrap();
            let Some(server) = session.as_mut() else {
                return;
            };
            let mut message = Vec::new();
            let step = server.step(Some(&request.auth_bytes), &mut message);
            // rsasl's SCRAM server answers a bad proof with "e=...", as RFC 5802 says; Kafka
            // answers with an error code instead.
            let failed = step.is_err() || message.starts_with(b"e=");
            let response = if failed {
                SaslAuthenticateResponse::default()
                    .with_error_code(58) // SASL_AUTHENTICATION_FAILED
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Authentication failed during authentication due to invalid credentials",
                    )))
            } else {
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(message))
                    .with_session_lifetime_ms(broker.session_lifetime_ms)
            };
            respond(&mut out, header.correlation_id, version, response);
            if failed {
                let _ = write_frame(&mut stream, out).await;
                return;
            }
        } else {
            return;
        }
        if write_frame(&mut stream, out).await.is_err() {
            return;
        }
    }
}

fn respond<R: Encodable + HeaderVersion>(out: &mut BytesMut, correlation_id: i32, v: i16, r: R) {
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(out, R::header_version(v))
        .unwrap();
    r.encode(out, v).unwrap();
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, body: BytesMut) -> std::io::Result<()> {
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

fn ca(pem: &str) -> (Trust, tempfile::NamedTempFile) {
    let file = super::tests::file(pem);
    let entry = Entry {
        key: "ssl.ca.location".into(),
        value: Secret::new(file.path().display().to_string()),
        origin: Origin::Env {
            name: "KAFKA_SSL_CA_LOCATION".into(),
        },
    };
    (Trust::File(entry), file)
}

fn security(
    protocol: Protocol,
    mechanism: Mechanism,
    password: &str,
    ca_pem: &str,
) -> (Security, tempfile::NamedTempFile) {
    let (trust, file) = ca(ca_pem);
    let security = Security {
        protocol,
        sasl: protocol.uses_sasl().then(|| Credentials {
            mechanism,
            username: USER.into(),
            password: Secret::new(password),
        }),
        tls: protocol
            .uses_tls()
            .then(|| Tls::new(trust, true, true).unwrap()),
    };
    (security, file)
}

use super::tests::CA_PEM as CA;
const OTHER_CA: &str = include_str!("testdata/other-ca.pem");

fn scram_broker(tls: bool, lifetime_ms: i64) -> u16 {
    start(Broker {
        tls,
        mechanisms: vec!["SCRAM-SHA-256", "SCRAM-SHA-512"],
        session_lifetime_ms: lifetime_ms,
    })
}

#[tokio::test]
async fn scram_sha_256_and_512_authenticate_against_rsasls_server_side() {
    let port = scram_broker(false, 0);
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
        let (security, _ca) = security(Protocol::SaslPlaintext, mechanism, PASSWORD, CA);
        let connection = Connection::open_with(&format!("127.0.0.1:{port}"), &security)
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?}: {e}"));
        assert!(connection.usable());
        assert!(!connection.expiring(), "no lifetime given: no expiry");
    }
}

#[tokio::test]
async fn sasl_ssl_with_the_clusters_ca_and_a_session_lifetime() {
    let port = scram_broker(true, 200);
    let (security, _ca) = security(Protocol::SaslSsl, Mechanism::ScramSha512, PASSWORD, CA);
    let connection = Connection::open_with(&format!("127.0.0.1:{port}"), &security)
        .await
        .unwrap();
    assert!(!connection.expiring(), "fresh session");
    // 85% of 200 ms: the callers open a new connection from then on.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(connection.expiring());
    assert!(!connection.usable());
}

#[tokio::test]
async fn a_wrong_password_is_one_line_naming_the_user_never_the_password() {
    let port = scram_broker(false, 0);
    let (security, _ca) = security(
        Protocol::SaslPlaintext,
        Mechanism::ScramSha512,
        "hunter2-wrong",
        CA,
    );
    let error = Connection::open_with(&format!("127.0.0.1:{port}"), &security)
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let line = error.to_string();
    assert!(
        line.starts_with(&format!(
            "SASL authentication failed for User:{USER} with SCRAM-SHA-512 at 127.0.0.1:{port} (SASL_AUTHENTICATION_FAILED)"
        )),
        "{line}"
    );
    assert!(line.contains("check the user name and password"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(!format!("{error:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_mechanism_the_broker_does_not_offer_names_those_it_does() {
    let port = scram_broker(false, 0);
    let (security, _ca) = security(Protocol::SaslPlaintext, Mechanism::Plain, PASSWORD, CA);
    let line = Connection::open_with(&format!("127.0.0.1:{port}"), &security)
        .await
        .unwrap_err()
        .to_string();
    assert!(line.contains("(UNSUPPORTED_SASL_MECHANISM)"), "{line}");
    assert!(
        line.contains("the broker offers SCRAM-SHA-256, SCRAM-SHA-512, not PLAIN"),
        "{line}"
    );
}

#[tokio::test]
async fn sasl_on_a_listener_without_it_says_check_security_protocol() {
    let port = start(Broker {
        tls: false,
        mechanisms: vec![],
        session_lifetime_ms: 0,
    });
    let (security, _ca) = security(
        Protocol::SaslPlaintext,
        Mechanism::ScramSha256,
        PASSWORD,
        CA,
    );
    let line = Connection::open_with(&format!("127.0.0.1:{port}"), &security)
        .await
        .unwrap_err()
        .to_string();
    assert!(line.contains("(ILLEGAL_SASL_STATE)"), "{line}");
    assert!(line.contains("check security.protocol"), "{line}");
}

#[tokio::test]
async fn tls_failures_are_one_line_each_and_final() {
    let port = scram_broker(true, 0);
    let address = format!("127.0.0.1:{port}");

    // A CA that did not sign the broker's certificate.
    let (untrusting, _ca) = security(Protocol::Ssl, Mechanism::Plain, PASSWORD, OTHER_CA);
    let error = Connection::open_with(&address, &untrusting)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WireError::Tls { failure, .. } if matches!(**failure, Failure::NotTrusted { .. })),
        "{error:?}"
    );
    assert!(!error.is_transient());
    let line = error.to_string();
    assert!(
        line.starts_with(&format!(
            "the TLS certificate of {address} is not trusted (unknown issuer)"
        )),
        "{line}"
    );

    // The right CA, but a name the certificate does not hold (it names IP 127.0.0.1 only).
    let (trusting, _ca) = security(Protocol::Ssl, Mechanism::Plain, PASSWORD, CA);
    let line = Connection::open_with(&format!("localhost:{port}"), &trusting)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        line.contains("is not valid for the host name localhost (it names IP address 127.0.0.1)"),
        "{line}"
    );

    // The same, with host-name checks off: the chain is still checked, and it is good.
    let (trust, _ca) = ca(CA);
    let unchecked = Security {
        protocol: Protocol::Ssl,
        sasl: None,
        tls: Some(Tls::new(trust, false, true).unwrap()),
    };
    Connection::open_with(&format!("localhost:{port}"), &unchecked)
        .await
        .unwrap();
    Connection::open_with(&address, &trusting).await.unwrap();

    // A plaintext client on the TLS port.
    let line = Connection::open(&address).await.unwrap_err().to_string();
    assert_eq!(
        line,
        format!(
            "{address} closed the connection at once: is it a TLS or SASL listener? set security.protocol (in the --command-config file, or KAFKA_SECURITY_PROTOCOL)"
        )
    );
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_says_check_security_protocol() {
    // Answers the handshake's first bytes by closing, as a Kafka PLAINTEXT listener does with a
    // request it cannot frame.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0; 64];
            let _ = stream.read(&mut buffer).await;
        }
    });
    let (trusting, _ca) = security(Protocol::Ssl, Mechanism::Plain, PASSWORD, CA);
    let line = Connection::open_with(&address, &trusting)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        line.contains("closed the connection during the TLS handshake")
            && line.contains("check security.protocol"),
        "{line}"
    );
}
