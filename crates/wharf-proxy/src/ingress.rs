//! An environment's entry: one listener that sends each request to a service's route
//! by its host name and path, with `X-Forwarded-For`, `-Proto` and `-Host` set. Routes
//! are tried most specific first (one naming a host before one that does not, then the
//! longest path); a path matches whole segments (`/api` takes `/api` and `/api/items`,
//! not `/apis`).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{ProxyBody, answer, forward};
use crate::route::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRoute {
    /// Lowercase, without a port; `None` takes any host.
    pub host: Option<String>,
    /// Starts with `/`; ends without one unless it is `/`.
    pub path: String,
    pub service: String,
    pub strip_prefix: bool,
}

/// Finds a service's route by name (the agent's addresses).
pub type Resolve = dyn Fn(&str) -> Option<Arc<Route>> + Send + Sync;

pub struct Ingress {
    routes: ArcSwap<Vec<IngressRoute>>,
    resolve: Box<Resolve>,
}

impl Ingress {
    pub fn new(routes: Vec<IngressRoute>, resolve: Box<Resolve>) -> Arc<Self> {
        let ingress = Arc::new(Self {
            routes: ArcSwap::from_pointee(Vec::new()),
            resolve,
        });
        ingress.set(routes);
        ingress
    }

    /// Replaces the routes (a new definition): requests under way are not affected.
    pub fn set(&self, mut routes: Vec<IngressRoute>) {
        routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path.len())));
        self.routes.store(Arc::new(routes));
    }

    pub fn routes(&self) -> Vec<IngressRoute> {
        self.routes.load().as_ref().clone()
    }

    /// The route a request for `host` and `path` takes.
    pub fn select(&self, host: Option<&str>, path: &str) -> Option<IngressRoute> {
        self.routes
            .load()
            .iter()
            .find(|r| r.host.as_deref().is_none_or(|h| Some(h) == host) && under(path, &r.path))
            .cloned()
    }

    async fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<ProxyBody> {
        let host = request_host(&request);
        let Some(path) = normal_path(request.uri().path()) else {
            return answer(
                StatusCode::BAD_REQUEST,
                format!(
                    "the path `{}` has `.` or `..` segments or an encoded slash; send it resolved\n",
                    request.uri().path()
                ),
            );
        };
        // What routing used: the absolute URI's authority, else the Host header.
        let sent_host = match request.uri().authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => request.headers().get(header::HOST).cloned(),
        };
        let Some(chosen) = self.select(host.as_deref(), &path) else {
            return answer(
                StatusCode::NOT_FOUND,
                format!(
                    "no route of this environment's ingress takes host `{}` and path `{path}`\n",
                    host.as_deref().unwrap_or("")
                ),
            );
        };
        let Some(route) = (self.resolve)(&chosen.service) else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service `{}` has no address here yet: is it deployed?\n",
                    chosen.service
                ),
            );
        };
        let rest = if chosen.strip_prefix && chosen.path != "/" {
            path.get(chosen.path.len()..).unwrap_or("")
        } else {
            &path
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        if rest != request.uri().path() {
            let target = match request.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            if let Ok(uri) = target.parse() {
                *request.uri_mut() = uri;
            }
        }
        let headers = request.headers_mut();
        let proto = if https { "https" } else { "http" };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        // What the client asked for, port included; never what it claims was asked
        // of a proxy before this one (this is the edge).
        headers.remove("x-forwarded-host");
        if let Some(value) = sent_host {
            headers.insert("x-forwarded-host", value);
        }
        forward(request, peer, &route, &chosen.service).await
    }
}

/// The path with percent-escapes of unreserved characters decoded (`/%61pi` is
/// `/api`, RFC 3986 6.2.2.2), or `None` when it has dot segments or an encoded slash,
/// which would let a request match one route and reach another's paths.
fn normal_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                out.push(char::from(b));
                i += 3;
            }
            Some(b'/') | Some(b'\\') => return None,
            _ => {
                let end = path[i..]
                    .char_indices()
                    .nth(1)
                    .map(|(n, _)| i + n)
                    .unwrap_or(bytes.len());
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    // A backslash is a separator to some backends.
    if out.contains('\\')
        || out
            .split('/')
            .any(|segment| segment == "." || segment == "..")
    {
        return None;
    }
    Some(out)
}

/// Whether `path` is `prefix` or under it, segment by segment.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The host a request names (its `Host`, or the authority of an absolute URI),
/// lowercase and without a port.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    let raw = request
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            let host = match value.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
                _ => value,
            };
            Some(host.to_owned())
        })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

/// Serves `ingress` on `listener` until `shutdown`: over TLS with the certificates
/// `tls` holds (see [`tls_config`]), when given.
pub async fn serve_ingress(
    listener: TcpListener,
    ingress: Arc<Ingress>,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    shutdown: CancellationToken,
) {
    let https = tls.is_some();
    crate::http::serve_requests(listener, shutdown, tls, move |request, peer| {
        let ingress = ingress.clone();
        async move { ingress.handle(request, peer, https).await }
    })
    .await
}

/// A TLS configuration choosing the certificate by the name the client asks for (SNI),
/// from `(host, certificate chain PEM, private key PEM)`; a host whose PEM cannot be
/// used is left out, with why.
pub fn tls_config(
    certificates: &[(String, String, String)],
) -> (rustls::ServerConfig, Vec<String>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = rustls::server::ResolvesServerCertUsingSni::new();
    let mut problems = Vec::new();
    for (host, cert_pem, key_pem) in certificates {
        let certified = (|| -> Result<rustls::sign::CertifiedKey, String> {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("the certificate is not PEM: {e}"))?;
            if chain.is_empty() {
                return Err("the certificate holds no certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("the key cannot sign: {e}"))?;
            let certified = rustls::sign::CertifiedKey::new(chain, signing);
            certified
                .keys_match()
                .map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
            Ok(certified)
        })()
        .and_then(|c| {
            resolver
                .add(host, c)
                .map_err(|e| format!("the certificate does not name `{host}`: {e}"))
        });
        if let Err(why) = certified {
            problems.push(format!("{host}: {why}"));
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions are supported")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (config, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, service: &str) -> IngressRoute {
        IngressRoute {
            host: host.map(str::to_owned),
            path: path.into(),
            service: service.into(),
            strip_prefix: false,
        }
    }

    #[test]
    fn paths_are_normalized_before_matching_and_dot_segments_refused() {
        assert_eq!(normal_path("/%61pi/items").as_deref(), Some("/api/items"));
        assert_eq!(
            normal_path("/a%20b").as_deref(),
            Some("/a%20b"),
            "reserved stays"
        );
        assert_eq!(normal_path("/caf\u{e9}").as_deref(), Some("/caf\u{e9}"));
        for bad in [
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/./x",
            "/a\\..\\b",
            "/a%2Fb",
            "/a%5cb",
        ] {
            assert_eq!(normal_path(bad), None, "{bad}");
        }
        assert_eq!(normal_path("/a%zz").as_deref(), Some("/a%zz"));
        assert_eq!(normal_path("/a%").as_deref(), Some("/a%"));
    }

    #[test]
    fn the_most_specific_route_wins_whatever_the_order() {
        let ingress = Ingress::new(
            vec![
                route(None, "/", "web"),
                route(None, "/api", "orders"),
                route(Some("shop.local"), "/", "shop"),
                route(None, "/api/admin", "admin"),
            ],
            Box::new(|_| None),
        );
        let pick = |host: Option<&str>, path: &str| ingress.select(host, path).map(|r| r.service);
        let cases = [
            (Some("shop.local"), "/api", "shop"),
            (Some("other"), "/api", "orders"),
            (None, "/api/items", "orders"),
            (None, "/apis", "web"),
            (None, "/api/admin/x", "admin"),
            (None, "/", "web"),
        ];
        for (host, path, want) in cases {
            assert_eq!(pick(host, path).as_deref(), Some(want), "{host:?} {path}");
        }
        let only_api = Ingress::new(vec![route(None, "/api", "orders")], Box::new(|_| None));
        assert!(only_api.select(None, "/other").is_none());
    }
}
