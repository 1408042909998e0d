//! Environments' entries on this agent: an ingress listener for plain HTTP, and one for
//! HTTPS when a route has a certificate, both routing to the agent's service addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use wharf_api::agent::{HostCertificate, IngressPlan};
use wharf_proxy::ingress::{Ingress, IngressRoute};

use crate::traffic::Traffic;

/// An environment's entry running on this agent.
pub(crate) struct Entry {
    listen: SocketAddr,
    ingress: Arc<Ingress>,
    stop: CancellationToken,
    tls: Option<Https>,
}

/// The HTTPS listener of an entry and the certificates it serves.
struct Https {
    listen: SocketAddr,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    certificates: Vec<HostCertificate>,
    stop: CancellationToken,
}

impl Entry {
    pub(crate) fn stop(&self) {
        self.stop.cancel();
        if let Some(tls) = &self.tls {
            tls.stop.cancel();
        }
    }
}

/// The certificates as rustls serves them; a host whose certificate cannot be used is
/// logged (never its key) and left out.
fn tls_config(env: &str, certificates: &[HostCertificate]) -> rustls::ServerConfig {
    let triples: Vec<(String, String, String)> = certificates
        .iter()
        .map(|c| (c.host.clone(), c.cert_pem.clone(), c.key_pem.clone()))
        .collect();
    let (config, problems) = wharf_proxy::ingress::tls_config(&triples);
    for problem in problems {
        tracing::error!(%env, "the ingress cannot serve HTTPS for {problem}");
    }
    config
}

/// Starts the HTTPS listener of an entry; `None` if it cannot listen (logged).
fn start_https(
    traffic: &Traffic,
    env: &str,
    listen: SocketAddr,
    ingress: &Arc<Ingress>,
    certificates: &[HostCertificate],
) -> Option<Https> {
    let listener = traffic
        .listen(listen)
        .map_err(
            |e| tracing::error!(%env, "cannot listen for the ingress's HTTPS on {listen}: {e}"),
        )
        .ok()?;
    let config = Arc::new(ArcSwap::from_pointee(tls_config(env, certificates)));
    let stop = CancellationToken::new();
    traffic.tasks.spawn(wharf_proxy::ingress::serve_ingress(
        listener,
        ingress.clone(),
        Some(config.clone()),
        stop.clone(),
    ));
    tracing::info!(%env, "the environment's ingress takes HTTPS on {listen}");
    Some(Https {
        listen,
        config,
        certificates: certificates.to_vec(),
        stop,
    })
}

fn proxy_routes(plan: &IngressPlan) -> Vec<IngressRoute> {
    let mut routes: Vec<IngressRoute> = plan
        .ingress
        .routes
        .iter()
        .map(|r| IngressRoute {
            host: r.host.clone(),
            path: r.path.clone(),
            service: r.service.clone(),
            strip_prefix: r.strip_prefix,
        })
        .collect();
    routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path.len())));
    routes
}

impl Traffic {
    /// Runs exactly these environments' entries: a new one starts listening, a changed
    /// one takes its new routes and certificates (its plain listener kept when only its
    /// HTTPS one moves), others stop. Returns whether every listener is up (one that
    /// could not bind is tried again at the next call).
    pub fn set_ingresses(self: &Arc<Self>, wanted: BTreeMap<String, IngressPlan>) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|env, entry| {
            let keep = wanted
                .get(env)
                .is_some_and(|p| p.ingress.listen == entry.listen);
            if !keep {
                entry.stop();
                self.release(entry.listen);
                if let Some(tls) = &entry.tls {
                    self.release(tls.listen);
                }
            }
            keep
        });
        let mut all_up = true;
        for (env, plan) in wanted {
            let routes = proxy_routes(&plan);
            if let Some(entry) = entries.get_mut(&env) {
                if entry.ingress.routes() != routes {
                    entry.ingress.set(routes);
                }
                let tls_moved = entry.tls.as_ref().map(|t| t.listen) != plan.ingress.tls_listen;
                if tls_moved {
                    if let Some(old) = entry.tls.take() {
                        old.stop.cancel();
                        self.release(old.listen);
                    }
                    entry.tls = plan.ingress.tls_listen.and_then(|l| {
                        start_https(self, &env, l, &entry.ingress, &plan.certificates)
                    });
                    all_up &= entry.tls.is_some() == plan.ingress.tls_listen.is_some();
                } else if let Some(https) = entry
                    .tls
                    .as_mut()
                    .filter(|t| t.certificates != plan.certificates)
                {
                    https
                        .config
                        .store(Arc::new(tls_config(&env, &plan.certificates)));
                    https.certificates = plan.certificates;
                }
                continue;
            }
            let listener = match self.listen(plan.ingress.listen) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%env, "cannot listen for the environment's ingress on {}: {e}", plan.ingress.listen);
                    all_up = false;
                    continue;
                }
            };
            let traffic = Arc::downgrade(self);
            let name = env.clone();
            let ingress = Ingress::new(
                routes,
                Box::new(move |service| traffic.upgrade()?.route_of(&name, service)),
            );
            let stop = CancellationToken::new();
            self.tasks.spawn(wharf_proxy::ingress::serve_ingress(
                listener,
                ingress.clone(),
                None,
                stop.clone(),
            ));
            tracing::info!(%env, "the environment's ingress listens on {}", plan.ingress.listen);
            let tls = plan
                .ingress
                .tls_listen
                .and_then(|l| start_https(self, &env, l, &ingress, &plan.certificates));
            all_up &= tls.is_some() == plan.ingress.tls_listen.is_some();
            entries.insert(
                env,
                Entry {
                    listen: plan.ingress.listen,
                    ingress,
                    stop,
                    tls,
                },
            );
        }
        all_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::model::{Ingress as Definition, IngressRoute as Route};

    fn free() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn plan(listen: SocketAddr, tls_listen: Option<SocketAddr>) -> BTreeMap<String, IngressPlan> {
        let ingress = Definition {
            listen,
            tls_listen,
            routes: vec![Route {
                host: Some("shop.local".into()),
                path: "/".into(),
                service: "web".into(),
                strip_prefix: false,
                tls: None,
            }],
        };
        BTreeMap::from([(
            "ci".to_owned(),
            IngressPlan {
                ingress,
                certificates: Vec::new(),
            },
        )])
    }

    async fn listening(addr: SocketAddr) -> bool {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    }

    #[tokio::test]
    async fn moving_the_https_listener_keeps_the_plain_one_and_a_taken_port_is_retried() {
        let traffic = Arc::new(Traffic::default());
        let (http, first, second) = (free(), free(), free());
        assert!(traffic.set_ingresses(plan(http, Some(first))));
        assert!(listening(http).await && listening(first).await);
        assert!(traffic.set_ingresses(plan(http, Some(second))));
        assert!(listening(http).await, "the plain listener stayed");
        assert!(listening(second).await, "HTTPS moved");
        // A port someone else holds: reported, and tried again at the next call.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        assert!(!traffic.set_ingresses(plan(http, Some(busy))));
        drop(taken);
        assert!(traffic.set_ingresses(plan(http, Some(busy))));
        assert!(listening(busy).await);
        traffic.close();
    }
}
