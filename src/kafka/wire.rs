//! The Kafka wire for what rskafka lacks: one connection to one broker, speaking the
//! `kafka-protocol` crate's messages, over TCP or TLS, authenticated with SASL where the
//! cluster's settings say so (`security`).
//!
//! Requests are pipelined: `send` writes a request and returns at once with a handle on its
//! response, so several can be in flight. A broker answers the requests of one connection in
//! the order they came, which is what lets the idempotent producer keep up to five batches in
//! flight per partition without reordering them. A background task reads responses and hands
//! each to its caller by correlation id; when the connection breaks, every caller still waiting
//! gets `WireError::Closed`, and the connection is of no further use (make a new one).
//!
//! A SASL session the broker gives a lifetime (KIP-368, `connections.max.reauth.ms`) is not
//! re-authenticated in place: at 85% of its lifetime the connection says it is `expiring`, and
//! the callers that keep connections (partition leaders, the producer's senders, the group's
//! coordinator) open a fresh, freshly authenticated one before the next request, the same
//! path they take after a lost connection, minus the waiting and the log lines. Requests
//! already in flight finish on the old one; the broker only refuses new ones after expiry.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::quirks::Flavor;
use super::security::{Security, sasl, tls};

const CLIENT_ID: &str = "weather-stream";

/// Largest response we accept; a length beyond it means the stream is not Kafka.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// How long a response may take before the connection is considered dead.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connection to {address} closed")]
    Closed { address: String },
    #[error(
        "{address} closed the connection at once: is it a TLS or SASL listener? set \
         security.protocol (in the --command-config file, or KAFKA_SECURITY_PROTOCOL)"
    )]
    ClosedAtOnce { address: String },
    #[error(
        "{address} closed the connection after ApiVersions: is it a SASL listener? set \
         security.protocol and the SASL settings (in the --command-config file, or KAFKA_*)"
    )]
    NeedsSasl { address: String },
    #[error("{}", failure.line(address))]
    Tls {
        address: String,
        failure: Box<tls::Failure>,
    },
    #[error(transparent)]
    Authentication(Box<sasl::AuthenticationFailed>),
    #[error("no response from {address} within {timeout:?}")]
    TimedOut { address: String, timeout: Duration },
    #[error("{address} does not speak {api:?} versions {ours:?} (it offers {broker:?})")]
    Unsupported {
        address: String,
        api: ApiKey,
        broker: Option<RangeInclusive<i16>>,
        ours: RangeInclusive<i16>,
    },
    #[error("cannot encode or decode {api:?} for {address}: {reason}")]
    Codec {
        address: String,
        api: ApiKey,
        reason: String,
    },
}

impl WireError {
    /// True when trying again on a new connection may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Closed { .. }
            | Self::ClosedAtOnce { .. }
            | Self::TimedOut { .. } => true,
            Self::NeedsSasl { .. } => false,
            // A certificate or a password does not get better by trying again.
            Self::Tls { failure, .. } => failure.is_transient(),
            Self::Authentication(_) | Self::Unsupported { .. } | Self::Codec { .. } => false,
        }
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<Bytes>>>>;

/// One connection to one broker.
pub struct Connection {
    address: String,
    /// Plain TCP or TLS, whichever the cluster's settings say: the same pipelining either way.
    writer: tokio::sync::Mutex<Writer>,
    waiters: Waiters,
    /// Set when the reader has stopped: the connection is dead.
    closed: Arc<AtomicBool>,
    correlation: AtomicI32,
    /// How long a response may take (`REQUEST_TIMEOUT`, shorter in tests).
    timeout: Duration,
    /// The versions the broker accepts, by API key.
    versions: HashMap<i16, RangeInclusive<i16>>,
    flavor: Flavor,
    /// When to stop using this connection for new requests: 85% into the SASL session's
    /// lifetime, where the broker gave one.
    expires: Option<Instant>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("flavor", &self.flavor)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A response on its way; await it with `Pending::response`.
#[must_use = "a request's outcome is only known from its response"]
pub struct Pending<R: Request> {
    address: String,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    timeout: Duration,
    reply: oneshot::Receiver<Bytes>,
    waiters: Waiters,
    closed: Arc<AtomicBool>,
    _request: std::marker::PhantomData<R>,
}

impl<R: Request> Pending<R> {
    pub async fn response(self) -> Result<R::Response, WireError> {
        let frame = match tokio::time::timeout(self.timeout, self.reply).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => {
                return Err(WireError::Closed {
                    address: self.address,
                });
            }
            Err(_) => {
                // Whatever comes later on this connection cannot be trusted to be timely:
                // it is dead to new requests, and this one stops waiting.
                lock(&self.waiters).remove(&self.correlation_id);
                self.closed.store(true, Ordering::Relaxed);
                return Err(WireError::TimedOut {
                    address: self.address,
                    timeout: self.timeout,
                });
            }
        };
        let codec = |reason: String| WireError::Codec {
            address: self.address.clone(),
            api: self.api,
            reason,
        };
        let mut frame = frame;
        ResponseHeader::decode(&mut frame, R::Response::header_version(self.version))
            .map_err(|e| codec(e.to_string()))?;
        R::Response::decode(&mut frame, self.version).map_err(|e| codec(e.to_string()))
    }
}

impl Connection {
    /// Connects to `address` (host:port) in plaintext, unauthenticated, and asks which API
    /// versions it speaks. The library opens its connections through `ClusterView::open`,
    /// which applies the cluster's security settings.
    pub async fn open(address: &str) -> Result<Self, WireError> {
        Self::open_with(address, &Security::default()).await
    }

    /// Connects to `address` as `security` says: TCP, then the TLS handshake where the
    /// protocol has TLS, then ApiVersions, then SASL where it has SASL.
    pub async fn open_with(address: &str, security: &Security) -> Result<Self, WireError> {
        let connect_error = |source| WireError::Connect {
            address: address.into(),
            source,
        };
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (read, write): (Reader, Writer) = match &security.tls {
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Some(settings) => {
                let tls_error = |failure| WireError::Tls {
                    address: address.into(),
                    failure: Box::new(failure),
                };
                let name = tls::Tls::server_name(address).ok_or_else(|| {
                    tls_error(tls::Failure::Other {
                        detail: "the host is not a valid DNS name or IP address".into(),
                    })
                })?;
                let connector = tokio_rustls::TlsConnector::from(settings.config());
                let stream = tokio::time::timeout(REQUEST_TIMEOUT, connector.connect(name, stream))
                    .await
                    .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(|e| tls_error(tls::Failure::of(&e, address, settings.trust())))?;
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        };
        let waiters = Waiters::default();
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_responses(
            BufReader::new(read),
            waiters.clone(),
            closed.clone(),
        ));
        let mut connection = Self {
            address: address.into(),
            writer: tokio::sync::Mutex::new(write),
            waiters,
            closed,
            correlation: AtomicI32::new(0),
            timeout: REQUEST_TIMEOUT,
            versions: HashMap::new(),
            flavor: Flavor::ApacheKafka,
            expires: None,
            reader,
        };
        // Version 0 of ApiVersions is understood by every broker, old and new, and answered
        // before authentication.
        let versions = match connection.send_at(ApiVersionsRequest::default(), 0).await {
            Ok(pending) => pending.response().await,
            Err(e) => Err(e),
        };
        let versions = match versions {
            Ok(versions) => versions,
            // A TLS listener reads our request as a broken handshake and hangs up.
            Err(WireError::Closed { .. }) if security.tls.is_none() => {
                return Err(WireError::ClosedAtOnce {
                    address: address.into(),
                });
            }
            Err(e) => return Err(e),
        };
        connection.versions = supported_versions(&versions);
        connection.flavor = Flavor::detect(&connection.versions);
        if let Some(credentials) = &security.sasl {
            let lifetime = sasl::authenticate(&connection, credentials).await?;
            connection.expires = lifetime.map(|l| Instant::now() + l.mul_f64(0.85));
        }
        Ok(connection)
    }

    /// True once the SASL session is close to its end: open a new connection for the next
    /// request (see the module's note on re-authentication).
    pub fn expiring(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    /// True when this connection can take new requests: not closed, not expiring.
    #[cfg(test)]
    pub fn usable(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && !self.expiring()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Which broker this is, as far as a workaround cares (`quirks`).
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The highest version of `R` in `ours` that the broker also speaks.
    pub fn version<R: Request>(&self, ours: RangeInclusive<i16>) -> Result<i16, WireError> {
        pick::<R>(&self.versions, ours.clone()).map_err(|broker| WireError::Unsupported {
            address: self.address.clone(),
            api: api_key::<R>(),
            broker,
            ours,
        })
    }

    /// Sends `request` at the highest version in `ours` both sides speak.
    pub async fn send<R: Request>(
        &self,
        request: R,
        ours: RangeInclusive<i16>,
    ) -> Result<Pending<R>, WireError> {
        let version = self.version::<R>(ours)?;
        self.send_at(request, version).await
    }

    /// Sends and waits for the response.
    pub async fn request<R: Request>(
        &self,
        request: R,
        ours: RangeInclusive<i16>,
    ) -> Result<R::Response, WireError> {
        self.send(request, ours).await?.response().await
    }

    /// Like `request`, for a request the broker may rightly hold longer than usual (a
    /// JoinGroup waits for the whole group): `timeout` replaces `REQUEST_TIMEOUT`.
    pub async fn request_within<R: Request>(
        &self,
        request: R,
        ours: RangeInclusive<i16>,
        timeout: Duration,
    ) -> Result<R::Response, WireError> {
        let mut pending = self.send(request, ours).await?;
        pending.timeout = timeout;
        pending.response().await
    }

    async fn send_at<R: Request>(&self, request: R, version: i16) -> Result<Pending<R>, WireError> {
        let api = api_key::<R>();
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| WireError::Codec {
                address: self.address.clone(),
                api,
                reason: e.to_string(),
            })?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());

        let (tx, rx) = oneshot::channel();
        // Registered before writing, so a fast response always finds its waiter; the writer lock
        // keeps frames whole and in the order callers were served.
        let mut writer = self.writer.lock().await;
        {
            let mut waiters = lock(&self.waiters);
            // Once the reader has gone nothing would ever answer: fail now, not at the timeout.
            if self.closed.load(Ordering::Relaxed) {
                return Err(WireError::Closed {
                    address: self.address.clone(),
                });
            }
            waiters.insert(correlation_id, tx);
        }
        // A write cut short, by an error, the timeout or the caller dropping this future,
        // leaves part of a frame on the socket: nothing sent after it would be understood.
        let cut_short = MarkClosed(Some(&self.closed));
        let written = tokio::time::timeout(self.timeout, writer.write_all(&frame)).await;
        if !matches!(written, Ok(Ok(()))) {
            lock(&self.waiters).remove(&correlation_id);
            return Err(WireError::Closed {
                address: self.address.clone(),
            });
        }
        cut_short.disarm();
        Ok(Pending {
            address: self.address.clone(),
            api,
            version,
            correlation_id,
            timeout: self.timeout,
            reply: rx,
            waiters: self.waiters.clone(),
            closed: self.closed.clone(),
            _request: std::marker::PhantomData,
        })
    }
}

/// Marks a connection dead when dropped, unless disarmed first.
struct MarkClosed<'a>(Option<&'a AtomicBool>);

impl MarkClosed<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for MarkClosed<'_> {
    fn drop(&mut self) {
        if let Some(closed) = self.0 {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

fn lock(waiters: &Waiters) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<Bytes>>> {
    // A panic while holding this lock cannot leave the map half-changed: recover it.
    waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// The highest version in `ours`, the broker's range and the crate's; else the broker's range,
/// `None` when it does not know the API at all.
fn pick<R: Request>(
    broker: &HashMap<i16, RangeInclusive<i16>>,
    ours: RangeInclusive<i16>,
) -> Result<i16, Option<RangeInclusive<i16>>> {
    let theirs = broker.get(&R::KEY).cloned().ok_or(None)?;
    let high = (*ours.end()).min(*theirs.end()).min(R::VERSIONS.max);
    let low = (*ours.start()).max(*theirs.start()).max(R::VERSIONS.min);
    if low > high {
        Err(Some(theirs))
    } else {
        Ok(high)
    }
}

fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
}

fn supported_versions(response: &ApiVersionsResponse) -> HashMap<i16, RangeInclusive<i16>> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version..=k.max_version))
        .collect()
}

/// Reads frames until the connection ends, giving each to the caller waiting for it. Dropping
/// the waiters on exit tells every remaining caller the connection is gone.
async fn read_responses(mut read: BufReader<Reader>, waiters: Waiters, closed: Arc<AtomicBool>) {
    while let Ok(length) = read.read_i32().await {
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        if !(4..=MAX_FRAME).contains(&length) {
            break;
        }
        let mut frame = BytesMut::zeroed(length);
        if read.read_exact(&mut frame).await.is_err() {
            break;
        }
        let frame = frame.freeze();
        let correlation_id = (&frame[..4]).get_i32();
        if let Some(waiter) = lock(&waiters).remove(&correlation_id) {
            let _ = waiter.send(frame);
        }
    }
    // Marked under the waiters' lock, so a request either sees it or is among those dropped.
    let mut waiters = lock(&waiters);
    closed.store(true, Ordering::Relaxed);
    waiters.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest};

    #[test]
    fn versions_intersect_ours_the_brokers_and_the_crates() {
        let broker = HashMap::from([(ApiKey::Produce as i16, 3..=9)]);
        assert_eq!(pick::<ProduceRequest>(&broker, 3..=12), Ok(9));
        assert_eq!(pick::<ProduceRequest>(&broker, 3..=7), Ok(7));
        assert_eq!(pick::<ProduceRequest>(&broker, 10..=12), Err(Some(3..=9)));
        // An API the broker did not list is unsupported whatever we ask for.
        assert!(pick::<InitProducerIdRequest>(&broker, 0..=4).is_err());
    }

    /// A broker that answers `ApiVersions` (offering InitProducerId) and then nothing.
    async fn silent_broker() -> (String, tokio::task::JoinHandle<()>) {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let length = stream.read_i32().await.unwrap();
            let mut request = vec![0; length as usize];
            stream.read_exact(&mut request).await.unwrap();
            let header = RequestHeader::decode(&mut Bytes::from(request), 1).unwrap();
            let mut frame = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut frame, 0)
                .unwrap();
            ApiVersionsResponse::default()
                .with_api_keys(vec![
                    ApiVersion::default()
                        .with_api_key(ApiKey::InitProducerId as i16)
                        .with_min_version(0)
                        .with_max_version(4),
                ])
                .encode(&mut frame, 0)
                .unwrap();
            stream.write_i32(frame.len() as i32).await.unwrap();
            stream.write_all(&frame).await.unwrap();
            // Read whatever comes next and never answer it.
            let mut sink = [0; 1024];
            while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        (address, server)
    }

    #[tokio::test]
    async fn a_request_that_times_out_leaves_the_connection_dead_to_new_ones() {
        let (address, server) = silent_broker().await;
        let mut connection = Connection::open(&address).await.unwrap();
        connection.timeout = Duration::from_millis(100);
        let first = connection
            .request(InitProducerIdRequest::default(), 0..=4)
            .await;
        assert!(
            matches!(first, Err(WireError::TimedOut { .. })),
            "{first:?}"
        );
        assert!(
            lock(&connection.waiters).is_empty(),
            "the waiter stays behind"
        );
        // Fails at once instead of waiting out another timeout.
        let second = connection
            .send(InitProducerIdRequest::default(), 0..=4)
            .await;
        assert!(
            matches!(second, Err(WireError::Closed { .. })),
            "{:?}",
            second.err()
        );
        server.abort();
    }
}
