//! HTTP/1.1 through a service's address: each request goes to the backend the balancer
//! picks, over a pool of keep-alive connections; a request without a body that could
//! not be delivered (connection refused) is tried once on another backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::route::{InFlight, Route};

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// How long a client connection may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `route` on `listener` until `shutdown`; `name` is the service, for errors.
pub async fn serve_http(
    listener: TcpListener,
    route: Arc<Route>,
    shutdown: CancellationToken,
    name: String,
) {
    let name: Arc<str> = name.into();
    serve_requests(listener, shutdown, None, move |request, peer| {
        let (route, name) = (route.clone(), name.clone());
        async move { forward(request, peer, &route, &name).await }
    })
    .await
}

/// Serves HTTP/1.1 connections on `listener` until `shutdown`, each request answered by
/// `answer` (given the client's address); over TLS with the configuration `tls` holds
/// at each connection's start, when given.
pub(crate) async fn serve_requests<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<Arc<arc_swap::ArcSwap<rustls::ServerConfig>>>,
    answer: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let acceptor = crate::accept::Acceptor::new(listener, shutdown.clone());
    while let Some(crate::accept::Accepted { tcp, peer, permit }) = acceptor.next().await {
        let (answer, shutdown, tls) = (answer.clone(), shutdown.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(TokioIo::new(tcp), peer, answer, shutdown).await,
                Some(config) => {
                    let handshake = tokio_rustls::TlsAcceptor::from(config.load_full()).accept(tcp);
                    // A client that never finishes its handshake is let go like one
                    // that never sends its headers.
                    if let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
                        serve_connection(TokioIo::new(stream), peer, answer, shutdown).await;
                    }
                }
            }
        });
    }
    acceptor.drained(DRAIN_LIMIT).await;
}

/// Requests at once on one HTTP/2 connection.
const MAX_STREAMS: u32 = 256;

/// How long a connection may go on as usual once its server shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// How long a server that shuts down waits for its connections' requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

async fn serve_connection<I, F, Fut>(
    io: I,
    peer: SocketAddr,
    answer: F,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let answer = answer.clone();
        async move { Ok::<_, Infallible>(answer(request, peer).await) }
    });
    // HTTP/1.1, or HTTP/2 for a client that starts with its preface (h2c with prior
    // knowledge, or h2 chosen by ALPN over TLS); instances are spoken to in HTTP/1.1.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            // A connection just accepted may not have sent its request yet: closing it
            // at once would answer that request with nothing. It gets a moment first.
            if tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.is_err() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            }
        }
    }
}

/// Sends one request on, and its answer back. A request to switch protocols
/// (websockets) keeps its `Upgrade` header; once the backend agrees (101), the two
/// connections are joined byte for byte.
pub(crate) async fn forward(
    request: Request<Incoming>,
    peer: SocketAddr,
    route: &Route,
    name: &str,
) -> Response<ProxyBody> {
    let begun = std::time::Instant::now();
    let mut sent_to = None;
    let response = send_on(request, peer, route, name, &mut sent_to).await;
    // Measured to the answer's head: how long the client waited for it to start.
    let (failed, took) = (response.status().is_server_error(), begun.elapsed());
    route.stats.record(failed, took);
    if let Some(backend) = sent_to {
        backend.stats.record(failed, took);
    }
    response
}

/// [`forward`] without the measuring; `sent_to` is the last backend the request went to.
async fn send_on(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    route: &Route,
    name: &str,
    sent_to: &mut Option<Arc<crate::route::Backend>>,
) -> Response<ProxyBody> {
    let upgrade = wants_upgrade(request.headers());
    let pinned = route
        .split()
        .and_then(|split| pinned_track(request.headers(), &split));
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    forwarded_for(&mut parts.headers, peer);
    // An HTTP/2 request names its host in the URI (`:authority`); HTTP/1.1 needs `Host`.
    if !parts.headers.contains_key(header::HOST)
        && let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, host);
    }
    // Sent on in origin form (a path): an absolute-form request loses its authority.
    let path: hyper::Uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        parts.uri.clone()
    } else {
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/"))
    };
    // Only a request with no body, of a method that may be repeated, is sent again
    // (and only where it cannot have been processed: refused, or never sent).
    let retriable = body.is_end_stream()
        && matches!(
            parts.method,
            hyper::Method::GET
                | hyper::Method::HEAD
                | hyper::Method::OPTIONS
                | hyper::Method::TRACE
                | hyper::Method::PUT
                | hyper::Method::DELETE
        );
    let mut body = Some(body.boxed());
    let mut tried = None;
    for _ in 0..2 {
        let Some(in_flight) = route
            .choose_or_wait(tried.as_ref(), route.pause(), pinned)
            .await
        else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no healthy instance of `{name}` to send this to (waited {:?})\n",
                    route.pause()
                ),
            );
        };
        let addr = in_flight.backend().target.clone();
        *sent_to = Some(in_flight.shared());
        let checkout = match in_flight.backend().pool.checkout(&addr).await {
            Ok(checkout) => checkout,
            Err(e) => {
                in_flight.backend().record(crate::Outcome::ConnectFailed);
                // Nothing of the request was sent (its body is still here): any request
                // may go to another instance.
                if tried.is_none() {
                    tracing::debug!(%addr, "backend refused a connection, trying another: {e}");
                    tried = Some(addr);
                    continue;
                }
                return answer(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot connect to the instance of `{name}` at {addr}: {e}\n"),
                );
            }
        };
        let (mut sender, reused) = (checkout.sender, checkout.reused);
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(path.clone())
            .version(hyper::Version::HTTP_11);
        if let Some(headers) = out.headers_mut() {
            *headers = parts.headers.clone();
        }
        let this_body = body
            .take()
            .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed());
        let Ok(out) = out.body(this_body) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "the request cannot be forwarded\n".into(),
            );
        };
        let limit = route.response_timeout();
        match tokio::time::timeout(limit, sender.send_request(out)).await {
            Ok(Ok(mut response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let Some(client_upgrade) = client_upgrade else {
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        format!("the instance of `{name}` at {addr} switched protocols unasked\n"),
                    );
                };
                let backend_upgrade = hyper::upgrade::on(&mut response);
                let websocket = upgrade
                    .as_ref()
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
                // The connection stays counted against its backend while it lasts.
                tokio::spawn(async move {
                    let leaving = in_flight.backend().leaving.clone();
                    let _in_flight = in_flight;
                    if let (Ok(client), Ok(backend)) = tokio::join!(client_upgrade, backend_upgrade)
                    {
                        let (mut client, mut backend) =
                            (TokioIo::new(client), TokioIo::new(backend));
                        if websocket {
                            crate::websocket::join(client, backend, leaving).await;
                        } else {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                        }
                    }
                });
                let (head, _) = response.into_parts();
                return Response::from_parts(
                    head,
                    Empty::new().map_err(|never| match never {}).boxed(),
                );
            }
            Ok(Ok(response)) => {
                in_flight
                    .backend()
                    .record(if response.status().is_server_error() {
                        crate::Outcome::ServerError
                    } else {
                        crate::Outcome::Answered
                    });
                let (mut head, incoming) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                // The version is the connection's, not the message's: a client of
                // HTTP/1.1 keeps its connection whatever the instance speaks.
                head.version = parts.version;
                // The request counts against its backend until its answer is sent.
                let mut guarded = Guarded {
                    inner: incoming,
                    sender: Some(sender),
                    in_flight,
                };
                // An empty answer may never be polled: its connection is free now.
                if guarded.inner.is_end_stream() {
                    guarded.finished();
                }
                return Response::from_parts(head, guarded.boxed());
            }
            // A kept connection the backend closed meanwhile: the request never reached
            // it, so it is sent again.
            Ok(Err(e)) if reused && retriable && e.is_canceled() => {
                tracing::debug!(%addr, "a kept connection was closed, trying again: {e}");
            }
            Ok(Err(e)) => {
                return answer(
                    StatusCode::BAD_GATEWAY,
                    format!("the instance of `{name}` at {addr} failed: {e}\n"),
                );
            }
            Err(_) => {
                return answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the instance of `{name}` at {addr} did not answer within {limit:?}\n"),
                );
            }
        }
    }
    answer(
        StatusCode::BAD_GATEWAY,
        format!("no instance of `{name}` accepted the connection\n"),
    )
}

pub(crate) fn answer(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade`).
fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// A backend's answer body that keeps its request counted until it is all sent, and
/// gives its connection back to the pool once it has been read to its end.
struct Guarded {
    inner: Incoming,
    sender: Option<crate::pool::Sender>,
    in_flight: InFlight,
}

impl Guarded {
    fn finished(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.in_flight.backend().pool.give_back(sender);
        }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.finished(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finished(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The set a request asks for while a split is in force: its pin header, else its pin
/// cookie, saying `always` (the canary) or `never` (the stable set).
fn pinned_track(headers: &HeaderMap, split: &crate::route::Split) -> Option<crate::route::Track> {
    use crate::route::Track;
    if split.header.is_empty() {
        // A split without pins (a blue-green preview): nothing reaches the new set
        // through the address before it is promoted.
        return None;
    }
    let track = |value: &str| match value.trim() {
        v if v.eq_ignore_ascii_case("always") => Some(Track::Canary),
        v if v.eq_ignore_ascii_case("never") => Some(Track::Stable),
        _ => None,
    };
    if let Some(found) = headers
        .get(split.header.as_str())
        .and_then(|v| v.to_str().ok())
        .and_then(track)
    {
        return Some(found);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim() == split.cookie)
        .and_then(|(_, value)| track(value))
}

#[cfg(test)]
mod pin_tests {
    use super::*;
    use crate::route::{Split, Track};

    #[test]
    fn a_header_or_a_cookie_pins_a_request() {
        let split = Split {
            weight: 10,
            header: "x-canary".into(),
            cookie: "canary".into(),
        };
        type Case = (&'static [(&'static str, &'static str)], Option<Track>);
        let table: &[Case] = &[
            (&[], None),
            (&[("X-Canary", "always")], Some(Track::Canary)),
            (&[("x-canary", "Never")], Some(Track::Stable)),
            (&[("x-canary", "maybe")], None),
            (&[("cookie", "a=1; canary=always")], Some(Track::Canary)),
            (&[("cookie", "canaryx=always")], None),
            (
                &[("x-canary", "never"), ("cookie", "canary=always")],
                Some(Track::Stable),
            ),
        ];
        for (headers, want) in table {
            let mut map = HeaderMap::new();
            for (k, v) in *headers {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_static(v),
                );
            }
            assert_eq!(pinned_track(&map, &split), *want, "{headers:?}");
        }
    }
}
