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
}

impl Entry {
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
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

impl Traffic {
    /// Runs exactly these environments' entries: a new one starts listening, a changed
    /// one takes its new routes and certificates (or moves if it listens elsewhere),
    /// others stop.
    pub fn set_ingresses(self: &Arc<Self>, wanted: BTreeMap<String, IngressPlan>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|env, entry| {
            let keep = wanted.get(env).is_some_and(|p| {
                p.ingress.listen == entry.listen
                    && p.ingress.tls_listen == entry.tls.as_ref().map(|t| t.listen)
            });
            if !keep {
                entry.stop.cancel();
            }
            keep
        });
        for (env, plan) in wanted {
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
            if let Some(entry) = entries.get_mut(&env) {
                routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path.len())));
                if entry.ingress.routes() != routes {
                    entry.ingress.set(routes);
                }
                if let Some(https) = entry
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
            let listener = match bind(plan.ingress.listen) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%env, "cannot listen for the environment's ingress on {}: {e}", plan.ingress.listen);
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
            tokio::spawn(wharf_proxy::ingress::serve_ingress(
                listener,
                ingress.clone(),
                None,
                stop.clone(),
            ));
            tracing::info!(%env, "the environment's ingress listens on {}", plan.ingress.listen);
            let tls = plan.ingress.tls_listen.and_then(|listen| {
                let listener = bind(listen)
                    .map_err(|e| tracing::error!(%env, "cannot listen for the ingress's HTTPS on {listen}: {e}"))
                    .ok()?;
                let config = Arc::new(ArcSwap::from_pointee(tls_config(&env, &plan.certificates)));
                tokio::spawn(wharf_proxy::ingress::serve_ingress(
                    listener,
                    ingress.clone(),
                    Some(config.clone()),
                    stop.clone(),
                ));
                tracing::info!(%env, "the environment's ingress takes HTTPS on {listen}");
                Some(Https {
                    listen,
                    config,
                    certificates: plan.certificates.clone(),
                })
            });
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
    }
}
