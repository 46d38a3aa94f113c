//! TLS for every connection, with rustls and its `ring` provider: the same rustls that rskafka's
//! `transport-tls` pulls in, so the binary carries one TLS stack and one set of crypto.
//!
//! Verification is on by default: the broker's certificate must chain to the CA the user gave
//! (`ssl.ca.location`, or a PEM truststore) or, without one, to the system's roots (read with
//! rustls-native-certs, as Kafka's Java client and librdkafka use the platform's store, so a
//! company CA installed by the admin is trusted and follows system updates); and it must name
//! the host connected to (a DNS name, or an IP address as an IP subjectAltName).
//! `ssl.endpoint.identification.algorithm=` (empty) turns off only the host-name check;
//! `enable.ssl.certificate.verification=false` turns off all of it, with a warning at every start.

use std::fmt;
use std::sync::{Arc, Once};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::warn;

use super::properties::Entry;
use super::{SecurityError, bad};

/// Where the trusted certificates come from.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A PEM file: `ssl.ca.location`, or `ssl.truststore.location` with type PEM.
    File(Entry),
    /// `ssl.truststore.location` without a type: Kafka's Java client would read JKS; we take
    /// the file only if it is PEM.
    PemOnly(Entry),
    /// `ssl.truststore.certificates`: PEM text in the setting itself.
    Inline(Entry),
    /// The operating system's trusted roots.
    System,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::File(e) | Trust::PemOnly(e) => {
                write!(f, "the CA in {} ({})", e.value.expose(), e.key)
            }
            Trust::Inline(e) => write!(f, "the certificates in {} ({})", e.key, e.origin),
            Trust::System => f.write_str("the system's CA certificates"),
        }
    }
}

/// The TLS side of `Security`: one rustls configuration for rskafka and the wire layer.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    trust: Trust,
    check_host: bool,
    verify: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("trust", &self.trust.to_string())
            .field("check_host", &self.check_host)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// The one crypto provider of the binary (rskafka's rustls is built with `ring` too).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    pub fn new(trust: Trust, check_host: bool, verify: bool) -> Result<Self, SecurityError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                let library = Entry {
                    key: "ssl".into(),
                    value: Default::default(),
                    origin: super::properties::Origin::Env {
                        name: "(the TLS library)".into(),
                    },
                };
                bad(&library, format!(": {e}"))
            })?;
        let config = if !verify {
            // Loud every time, so it is never left on by accident.
            warn!(
                "enable.ssl.certificate.verification=false: broker certificates are NOT verified; \
                 anyone on the network path can read and change this traffic"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let roots = Arc::new(roots(&trust)?);
            if check_host {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                warn_once_no_host_check();
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| bad(&trust_entry(&trust), format!(" cannot be used: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostName(inner)))
                    .with_no_client_auth()
            }
        };
        Ok(Self {
            config: Arc::new(config),
            trust,
            check_host,
            verify,
        })
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The name the certificate must carry for `address` (`host:port`): an IP address for
    /// `127.0.0.1:9092`, a DNS name for `broker-1.example.com:9093`.
    pub fn server_name(address: &str) -> Option<ServerName<'static>> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).ok()
    }
}

fn warn_once_no_host_check() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        warn!(
            "ssl.endpoint.identification.algorithm is empty: broker certificates are checked \
             against the CA but not against the host name connected to"
        );
    });
}

fn trust_entry(trust: &Trust) -> Entry {
    match trust {
        Trust::File(e) | Trust::PemOnly(e) | Trust::Inline(e) => e.clone(),
        Trust::System => Entry {
            key: "ssl.ca.location".into(),
            value: Default::default(),
            origin: super::properties::Origin::Env {
                name: "(not set: the system's CA certificates)".into(),
            },
        },
    }
}

fn roots(trust: &Trust) -> Result<RootCertStore, SecurityError> {
    let certificates: Vec<CertificateDer<'static>> = match trust {
        Trust::File(entry) | Trust::PemOnly(entry) => {
            let path = entry.value.expose().trim();
            let bytes = std::fs::read(path)
                .map_err(|e| bad(entry, format!("={path}: cannot read it ({e})")))?;
            let certificates = pem_certificates(&bytes)
                .map_err(|reason| bad(entry, format!("={path}: {reason}")))?;
            if certificates.is_empty() {
                let hint = if matches!(trust, Trust::PemOnly(_)) {
                    "; a JKS or PKCS12 truststore cannot be read here: export the CA as PEM \
                     and set ssl.truststore.type=PEM, or use ssl.ca.location"
                } else {
                    ""
                };
                return Err(bad(
                    entry,
                    format!("={path} holds no PEM certificate (-----BEGIN CERTIFICATE-----){hint}"),
                ));
            }
            certificates
        }
        Trust::Inline(entry) => {
            let certificates = pem_certificates(entry.value.expose().as_bytes())
                .map_err(|reason| bad(entry, format!(" {reason}")))?;
            if certificates.is_empty() {
                return Err(bad(entry, " holds no PEM certificate"));
            }
            certificates
        }
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(bad(
                    &trust_entry(trust),
                    format!(
                        " is needed: no system CA certificates were found ({} errors); set it to \
                         the cluster's CA certificate (PEM)",
                        found.errors.len()
                    ),
                ));
            }
            found.certs
        }
    };
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(bad(
            &trust_entry(trust),
            format!(" holds {ignored} certificate(s), none of them usable as a CA"),
        ));
    }
    Ok(store)
}

fn pem_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM ({e})"))
}

/// Checks the chain as rustls does, and accepts a certificate whose only fault is the name
/// (`ssl.endpoint.identification.algorithm=`). webpki checks the chain before the name, so a
/// name error means the chain was good.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate (`enable.ssl.certificate.verification=false`), still checking
/// that the handshake is signed by the key in it, so the session keys are the broker's.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS handshake failed, as the person at the terminal needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The chain does not lead to a trusted CA.
    NotTrusted {
        detail: String,
        trust: String,
    },
    /// The certificate does not name the host we connected to.
    WrongName {
        host: String,
        presented: String,
    },
    /// Another certificate problem (expired, not yet valid, revoked, bad usage).
    Certificate {
        detail: String,
    },
    /// The broker sent a TLS alert: it refused us.
    Refused {
        alert: String,
    },
    /// The connection ended during the handshake: most likely not a TLS listener.
    NotTls,
    Other {
        detail: String,
    },
}

impl Failure {
    /// Reads what rustls said through tokio-rustls' `io::Error`.
    pub fn of(error: &std::io::Error, address: &str, trust: &Trust) -> Failure {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Failure::NotTrusted {
                        detail: if *c == CertificateError::UnknownIssuer {
                            "unknown issuer".into()
                        } else {
                            "bad signature".into()
                        },
                        trust: trust.to_string(),
                    }
                }
                CertificateError::NotValidForName => Failure::WrongName {
                    host: host_of(address),
                    presented: "other names".into(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => Failure::WrongName {
                    host: host_of(address),
                    presented: if presented.is_empty() {
                        "no names".into()
                    } else {
                        presented
                            .iter()
                            .map(|name| readable_name(name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                },
                other => Failure::Certificate {
                    detail: format!("{other:?}"),
                },
            },
            Some(rustls::Error::AlertReceived(alert)) => Failure::Refused {
                alert: format!("{alert:?}"),
            },
            Some(other) => Failure::Other {
                detail: other.to_string(),
            },
            None if matches!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            ) =>
            {
                Failure::NotTls
            }
            None => Failure::Other {
                detail: error.to_string(),
            },
        }
    }

    /// The one line, for the broker at `address`.
    pub fn line(&self, address: &str) -> String {
        match self {
            Failure::NotTrusted { detail, trust } => format!(
                "the TLS certificate of {address} is not trusted ({detail}): it is not signed by \
                 {trust}; set ssl.ca.location (or ssl.truststore.location with \
                 ssl.truststore.type=PEM) to the cluster's CA certificate"
            ),
            Failure::WrongName { host, presented } => format!(
                "the TLS certificate of {address} is not valid for the host name {host} (it \
                 names {presented}); connect by a name the certificate lists, or set \
                 ssl.endpoint.identification.algorithm= (empty) to skip only the host-name check"
            ),
            Failure::Certificate { detail } => {
                format!("the TLS certificate of {address} is not accepted ({detail})")
            }
            Failure::Refused { alert } => format!(
                "{address} refused the TLS handshake ({alert}); check security.protocol and the \
                 broker's TLS settings"
            ),
            Failure::NotTls => format!(
                "{address} closed the connection during the TLS handshake: is it a PLAINTEXT or \
                 SASL_PLAINTEXT listener? check security.protocol"
            ),
            Failure::Other { detail } => {
                format!("TLS handshake with {address} failed ({detail})")
            }
        }
    }

    /// A certificate or a refusal will not change by trying again; a cut connection may.
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::NotTls | Failure::Other { .. })
    }
}

/// rustls prints a certificate's names as `DnsName("broker.example.com")` and
/// `IpAddress(127.0.0.1)`; a person reads `broker.example.com` and `IP address 127.0.0.1`.
fn readable_name(name: &str) -> String {
    if let Some(ip) = name
        .strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
    {
        return format!("IP address {ip}");
    }
    name.strip_prefix("DnsName(")
        .and_then(|n| n.strip_suffix(')'))
        .map_or(name, |n| n.trim_matches('"'))
        .to_string()
}

fn host_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .to_string()
}
