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
        let path = request.uri().path().to_owned();
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
        if chosen.strip_prefix && chosen.path != "/" {
            let rest = &path[chosen.path.len()..];
            let rest = if rest.is_empty() { "/" } else { rest };
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
        if let Some(value) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert("x-forwarded-host", value);
        }
        forward(request, peer, &route, &chosen.service).await
    }
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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
