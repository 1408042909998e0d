//! Bounded servers for both of the controller's ports: a connection limit (each
//! connection holds a permit, released however its task ends), a deadline for the TLS
//! handshake (or the first byte) and for each request's headers, backoff with
//! rate-limited warnings when accepting fails (out of file descriptors), and a graceful
//! stop that lets requests in flight finish for a moment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    /// How long a new connection may take to finish its TLS handshake (or to send its
    /// first byte).
    pub handshake: Duration,
    /// How long a connection may take to send the headers of its next request.
    pub idle: Duration,
}

/// How connections are secured.
#[derive(Clone)]
pub enum Security {
    /// TLS on every connection (the agent port).
    Tls(TlsAcceptor),
    /// The API port: TLS when the client starts a handshake, plain HTTP only from a
    /// loopback peer (`None`: no TLS, so plain from loopback only).
    LoopbackPlain(Option<TlsAcceptor>),
}

/// What a connection's requests carry: the peer's certificates (first is its own)
/// and address.
pub type Tagger<E> = Arc<dyn Fn(Option<&[CertificateDer<'static>]>, SocketAddr) -> E + Send + Sync>;

/// How long requests in flight may take to finish once a stop is asked for.
const GRACE: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts connections until `shutdown`, serving `app` with each connection's tag as a
/// request extension.
pub async fn serve<E: Clone + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    security: Security,
    app: Router,
    bounds: Bounds,
    shutdown: CancellationToken,
    name: &'static str,
    tag: Tagger<E>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    let mut last_complaint: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => break,
        };
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors (or similar): back off instead of spinning,
                    // and say so once in a while, not on every try.
                    if last_complaint.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!("the {name} listener cannot accept: {e} (backing off)");
                        last_complaint = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (security, app, tag, shutdown) =
            (security.clone(), app.clone(), tag.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(bounds.handshake, secure(tcp, address, &security));
            let Ok(Some(stream)) = handshake.await else {
                return;
            };
            match stream {
                Stream::Plain(tcp) => {
                    let tag = tag(None, address);
                    connection(TokioIo::new(tcp), app, tag, bounds, shutdown).await
                }
                Stream::Tls(tls) => {
                    let certs = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                    let tag = tag(certs.as_deref(), address);
                    connection(TokioIo::new(*tls), app, tag, bounds, shutdown).await
                }
            }
        });
    }
    // Stopping: wait (a moment) until every connection task has ended.
    let all = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), permits.acquire_many(all)).await;
}

enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Completes the TLS handshake, or lets plain HTTP through from a loopback peer; a
/// plain request from beyond loopback is answered with how to connect, and closed.
async fn secure(
    mut tcp: tokio::net::TcpStream,
    address: SocketAddr,
    security: &Security,
) -> Option<Stream> {
    let acceptor = match security {
        Security::Tls(acceptor) => return tls(acceptor, tcp).await,
        Security::LoopbackPlain(acceptor) => acceptor,
    };
    let mut first = [0u8; 1];
    tcp.peek(&mut first).await.ok()?;
    // This machine talking to itself: over loopback, or to its own address (a
    // controller bound to one address is reached by its own CLI and instances there).
    let peer = address.ip().to_canonical();
    let own = tcp.local_addr().ok().map(|a| a.ip().to_canonical()) == Some(peer);
    match acceptor {
        Some(acceptor) if first[0] == TLS_HANDSHAKE => tls(acceptor, tcp).await,
        _ if peer.is_loopback() || own => Some(Stream::Plain(tcp)),
        _ => {
            let body = "this controller takes HTTPS beyond loopback (tokens must not cross the network in clear): use https:// and pin its CA with WHARF_CA\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            None
        }
    }
}

async fn tls(acceptor: &TlsAcceptor, tcp: tokio::net::TcpStream) -> Option<Stream> {
    acceptor
        .accept(tcp)
        .await
        .ok()
        .map(|s| Stream::Tls(Box::new(s)))
}

/// Serves one connection until it closes, or until a stop lets its requests finish.
async fn connection<S, E>(
    io: TokioIo<S>,
    app: Router,
    tag: E,
    bounds: Bounds,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(tag.clone());
        app.clone().call(request)
    });
    // HTTP/1 only: its header deadline bounds every connection (an HTTP/2 connection
    // could idle for ever on a slot).
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    // A connection that sends no request headers in time is closed (long polls and
    // event streams answer well within it).
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(bounds.idle);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}
