//! SASL on a wire connection: SaslHandshake v1 names the mechanism, then SaslAuthenticate
//! carries the exchange (v1 and later also say how long the session lasts, KIP-368).
//!
//! The mechanisms themselves (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) are rsasl's: rskafka already
//! depends on it for its own SASL, so both paths share one implementation of RFC 5802/7677,
//! which checks the server's signature too (a broker that does not know the password cannot
//! pass for one that does), and this crate writes no cryptography of its own.

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rsasl::prelude::{Mechname, SASLClient, SASLConfig};
use tracing::debug;

use super::{Credentials, Mechanism};
use crate::kafka::wire::{Connection, WireError};

/// Version 1 frames the exchange in SaslAuthenticate requests (version 0 sent raw tokens).
const HANDSHAKE_VERSIONS: RangeInclusive<i16> = 1..=1;
/// Version 1 adds session_lifetime_ms; 2 is the flexible encoding of the same.
const AUTHENTICATE_VERSIONS: RangeInclusive<i16> = 0..=2;

/// The broker did not take our credentials, or the exchange went wrong: one line naming the
/// user and the broker, never the password.
#[derive(Debug, thiserror::Error)]
#[error(
    "SASL authentication failed for User:{user} with {mechanism} at {address}{}: {reason}",
    error.map_or_else(String::new, |e| format!(" ({})", super::denied::code_name(e)))
)]
pub struct AuthenticationFailed {
    pub address: String,
    pub user: String,
    pub mechanism: &'static str,
    pub error: Option<ResponseError>,
    pub reason: String,
}

/// Authenticates `connection` as `credentials`. Returns how long the broker will honour the
/// session (`None`: as long as the connection lives).
pub async fn authenticate(
    connection: &Connection,
    credentials: &Credentials,
) -> Result<Option<Duration>, WireError> {
    let address = connection.address().to_string();
    let mechanism = credentials.mechanism.name();
    let failed = |error: Option<ResponseError>, reason: String| {
        WireError::Authentication(Box::new(AuthenticationFailed {
            address: address.clone(),
            user: credentials.username.clone(),
            mechanism,
            error,
            reason,
        }))
    };
    let handshake = connection
        .request(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            HANDSHAKE_VERSIONS,
        )
        .await?;
    if let Some(error) = handshake.error_code.err() {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        let reason = match error {
            ResponseError::UnsupportedSaslMechanism => format!(
                "the broker offers {}, not {mechanism}; set sasl.mechanism to one of those",
                if offered.is_empty() {
                    "no SASL mechanism".to_string()
                } else {
                    offered.join(", ")
                }
            ),
            ResponseError::IllegalSaslState => {
                "the listener does not expect SASL: is it an SSL or \
                 PLAINTEXT listener? check security.protocol"
                    .into()
            }
            other => other.to_string(),
        };
        return Err(failed(Some(error), reason));
    }

    let config = SASLConfig::with_credentials(
        None,
        credentials.username.clone(),
        credentials.password.expose().to_string(),
    )
    .map_err(|e| failed(None, format!("the credentials cannot be used ({e})")))?;
    let name = Mechname::parse(mechanism.as_bytes())
        .map_err(|e| failed(None, format!("mechanism {mechanism}: {e}")))?;
    let mut session = SASLClient::new(config)
        .start_suggested(&[name])
        .map_err(|e| failed(None, format!("cannot start {mechanism} ({e})")))?;
    let mut received: Option<Bytes> = None;
    let mut lifetime = None;
    loop {
        let mut message = Vec::new();
        let state = session
            .step(received.as_deref(), &mut message)
            // rsasl's errors name the step (a bad server signature, a malformed message),
            // never the password.
            .map_err(|e| failed(None, format!("the {mechanism} exchange failed ({e})")))?;
        if state.has_sent_message() {
            let response = connection
                .request(
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message)),
                    AUTHENTICATE_VERSIONS,
                )
                .await?;
            if let Some(error) = response.error_code.err() {
                let said = response
                    .error_message
                    .as_ref()
                    .map_or_else(|| error.to_string(), |m| m.to_string());
                let hint = if error == ResponseError::SaslAuthenticationFailed {
                    "; check the user name and password (sasl.jaas.config, or sasl.username and \
                     sasl.password)"
                } else {
                    ""
                };
                return Err(failed(Some(error), format!("{said}{hint}")));
            }
            if response.session_lifetime_ms > 0 {
                lifetime = Some(Duration::from_millis(response.session_lifetime_ms as u64));
            }
            received = Some(response.auth_bytes);
        }
        if state.is_finished() {
            break;
        }
    }
    debug!(
        "{address}: authenticated as User:{} with {mechanism}{}",
        credentials.username,
        lifetime.map_or_else(String::new, |l| format!(", session lasts {l:?}"))
    );
    Ok(lifetime)
}

/// The same credentials for rskafka's own connections.
pub fn rskafka_config(credentials: &Credentials) -> rskafka::client::SaslConfig {
    use rskafka::client::{Credentials as RsCredentials, SaslConfig};
    let pair = RsCredentials::new(
        credentials.username.clone(),
        credentials.password.expose().to_string(),
    );
    match credentials.mechanism {
        Mechanism::Plain => SaslConfig::Plain(pair),
        Mechanism::ScramSha256 => SaslConfig::ScramSha256(pair),
        Mechanism::ScramSha512 => SaslConfig::ScramSha512(pair),
    }
}
