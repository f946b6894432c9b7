//! The HTTP server of the gateway and of the admin endpoint: HTTP/1.1 over hyper's own
//! connection builder, with the timeouts and caps that `axum::serve` lacks.
//!
//! - A cap on open TCP connections, in total and per peer address ([`Limits::max_connections`],
//!   [`Limits::max_connections_per_address`]; trusted proxies count only in the total). A
//!   connection beyond it is answered at once with a bare `503` or `429` and closed, before a
//!   byte of it is read. Its place is held by the connection's socket itself, so a WebSocket
//!   keeps it until it closes.
//! - A header-read timeout ([`Limits::header_timeout`], hyper's own): a client must send a
//!   request's headers within it, counted from connecting or from the end of its previous
//!   response, so a client that sends them a byte at a time, or a keep-alive connection that
//!   sends no next request, is closed then.
//! - An idle timeout ([`Limits::idle_timeout`]): a connection on which no byte moves in either
//!   direction for that long is closed (a body that never comes, a response nobody reads),
//!   until it becomes a WebSocket, which the signalling session watches itself.
//! - Request heads of at most [`MAX_HEAD_BYTES`], so that a connection costs little memory
//!   before it has said what it wants.
//!
//! Every request carries the peer's address as [`ConnectInfo`], for the limits per address.
//!
//! Only HTTP/1.1 is served, over plain TCP behind a proxy that terminates TLS, or over TLS
//! itself (standalone mode with a certificate, [`Tls`]): WebSockets upgrade from HTTP/1.1. A
//! TLS handshake must finish within the header-read timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_service::Service;
use tracing::{debug, warn};

use super::address::AddressKey;
use super::limits::{Crowded, Limits, Tally, Ticket};

/// The largest request head (request line and headers) read; hyper's smallest allowed buffer
/// is 8 KiB, and browsers send far less to this server (it sets no cookies).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long the server waits after the operating system refused a connection (out of file
/// descriptors, say) before it accepts again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The certificate and key HTTPS is served with.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    /// Serves `chain` (the certificate first) with `key`, both PEM.
    pub fn from_pem(chain: &str, key: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("the certificate: {error}"))?;
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".to_owned());
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|error| format!("the key: {error}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| format!("the certificate and key: {error}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Serves `router` on `listener` under `limits`, over TLS when `tls` is given, for as long as
/// the task runs.
pub async fn serve(listener: TcpListener, router: Router, limits: &Limits, tls: Option<Tls>) {
    let tally = Tally::new(limits.max_connections, limits.max_connections_per_address);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let peer_ip = peer.ip().to_canonical();
        let address =
            (!limits.trusted_proxies.contains(peer_ip)).then(|| AddressKey::from(peer_ip));
        let ticket = match tally.enter(address) {
            Ok(ticket) => ticket,
            Err(crowded) => {
                // Over TLS a plain answer would only be a broken handshake: just close.
                if tls.is_none() {
                    turn_away(&stream, crowded);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
            _ticket: ticket,
        });
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // A router is always ready, and cheap to clone.
            router.clone().call(request)
        });
        let idle = limits.idle_timeout;
        let Some(Tls(acceptor)) = tls.clone() else {
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::spawn(run_connection(connection, activity, idle));
            continue;
        };
        let (builder, handshake_within) = (builder.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let handshake = acceptor.accept(io.into_inner());
            let stream = match tokio::time::timeout(handshake_within, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return debug!(%peer, %error, "a TLS handshake failed"),
                Err(_) => return debug!(%peer, "a TLS handshake took too long"),
            };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            run_connection(connection, activity, idle).await;
        });
    }
}

/// Drives one connection until it ends, is upgraded, or idles for `idle`.
async fn run_connection<F>(connection: F, activity: Activity, idle: Duration)
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    debug!(%error, "connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle <= Instant::now() {
                    debug!("closing a connection on which nothing moved");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// Answers a connection beyond a cap, if its socket takes the few bytes at once, and closes
/// it. Nothing of the request is read: this must cost less than serving it.
fn turn_away(stream: &TcpStream, crowded: Crowded) {
    let response: &[u8] = match crowded {
        Crowded::Address => {
            b"HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-type: text/plain\r\n\
              content-length: 21\r\n\r\ntoo-many-connections\n"
        }
        Crowded::Total => {
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\n\
              retry-after: 10\r\ncontent-length: 12\r\n\r\nserver-busy\n"
        }
    };
    let _ = stream.try_write(response);
}

/// When a byte last moved on a connection.
#[derive(Clone, Debug)]
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's socket, noting when bytes move and holding the connection's place in the
/// tally until it is dropped (after an upgrade, by the WebSocket).
struct Watched {
    stream: TcpStream,
    activity: Activity,
    _ticket: Ticket,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
