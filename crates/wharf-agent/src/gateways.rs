//! How instances that do not share the host's network reach what this host serves
//! them. A container on the engine's bridge has its own loopback: it reaches the host
//! at the bridge's gateway, where the agent also opens every service address and, on
//! the controller's own machine, a configuration gateway that passes runtime
//! configuration reads (`/v1/runtime/config`, with the instance's token) to the
//! controller and nothing else (the controller's API stays on loopback).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wharf_core::model::DriverKind;
use wharf_proxy::answer::{Answer, Asked};
use wharf_proxy::ingress::{Ingress, IngressRoute};
use wharf_proxy::{Route, Target};

use crate::traffic::Traffic;

/// The only path the configuration gateway passes on.
pub const RUNTIME_CONFIG_PATH: &str = "/v1/runtime/config";

/// A runtime read may wait for a change this long (the controller's bound, with a
/// margin), so the gateway waits as long for its answer.
const LONG_POLL: Duration = Duration::from_secs(330);

/// How long a driver may take to say where its instances reach the host.
const ASK_LIMIT: Duration = Duration::from_secs(3);

/// The host's address for each driver whose instances do not reach it on loopback,
/// and the configuration gateway's address on it.
#[derive(Default)]
pub struct Gateways {
    by_driver: OnceLock<BTreeMap<DriverKind, Gateway>>,
    /// On a joined host, the configuration gateway for instances on the host's own
    /// network (processes): the controller is elsewhere.
    loopback_config: OnceLock<SocketAddr>,
}

/// Where the configuration gateway sends runtime configuration reads.
#[derive(Clone)]
pub enum ConfigUpstream {
    /// The controller's API on this machine (a dev controller's own agent).
    Api(SocketAddr),
    /// The controllers this joined agent is connected to, over its mutual TLS, so a
    /// read follows them through a failover. `port_file` remembers the gateway's port,
    /// so instances adopted after the agent restarts keep a working URL.
    Controllers {
        client: wharf_client::agent::AgentClient,
        port_file: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gateway {
    host: IpAddr,
    config: Option<SocketAddr>,
}

impl Gateways {
    /// Where instances of `kind` reach this host.
    pub fn host_for(&self, kind: DriverKind) -> IpAddr {
        self.gateway(kind)
            .map(|g| g.host)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// `url` (the controller's runtime configuration URL) as instances of `kind` reach
    /// it: through the configuration gateway when they do not share the host's network.
    pub fn config_url_for(&self, kind: DriverKind, url: &str) -> String {
        let gateway = self.gateway(kind).and_then(|g| g.config);
        let Some(gateway) = gateway.or_else(|| self.loopback_config.get().copied()) else {
            return url.to_owned();
        };
        match url.find(RUNTIME_CONFIG_PATH) {
            Some(at) => format!("http://{gateway}{}", &url[at..]),
            None => url.to_owned(),
        }
    }

    /// The host's address for each driver that has one.
    pub fn hosts(&self) -> BTreeMap<DriverKind, IpAddr> {
        self.by_driver
            .get()
            .into_iter()
            .flatten()
            .map(|(kind, g)| (*kind, g.host))
            .collect()
    }

    fn gateway(&self, kind: DriverKind) -> Option<Gateway> {
        self.by_driver.get()?.get(&kind).copied()
    }
}

/// Records where each driver's instances reach this host, makes the service addresses
/// listen there too, and, given the controller's API address, opens a configuration
/// gateway on each such address: on the API's port when it is free there (an adopted
/// container keeps a working URL across restarts), else on any.
pub async fn open(
    gateways: &Gateways,
    traffic: &Arc<Traffic>,
    drivers: &BTreeMap<DriverKind, Arc<dyn wharf_driver::Driver>>,
    upstream: Option<ConfigUpstream>,
) {
    let port = remembered_port(upstream.as_ref());
    let mut found = BTreeMap::new();
    for (kind, driver) in drivers {
        // An engine that does not answer soon is taken as having no gateway.
        let asked = tokio::time::timeout(ASK_LIMIT, driver.host_address()).await;
        if let Ok(Some(host)) = asked {
            // The engine may be another machine's, or this agent in a namespace of its
            // own: a gateway that is not an address of this host is not one.
            if let Err(e) = std::net::TcpListener::bind(SocketAddr::new(host, 0)) {
                tracing::info!(
                    driver = driver.name(),
                    "instances reach their host at {host}, which is not this host's ({e}): they are not given its addresses"
                );
                continue;
            }
            let config = upstream
                .clone()
                .and_then(|up| serve_config(traffic, host, up, port));
            tracing::info!(
                driver = driver.name(),
                "instances reach this host at {host}{}",
                config
                    .map(|c| format!(", the configuration service at http://{c}"))
                    .unwrap_or_default()
            );
            found.insert(*kind, Gateway { host, config });
        }
    }
    if let Some(up @ ConfigUpstream::Controllers { .. }) = &upstream
        && let Some(addr) = serve_config(traffic, IpAddr::V4(Ipv4Addr::LOCALHOST), up.clone(), port)
    {
        tracing::info!("instances on this host read their configuration at http://{addr}");
        let _ = gateways.loopback_config.set(addr);
    }
    if let (Some(ConfigUpstream::Controllers { port_file, .. }), Some(addr)) = (
        &upstream,
        gateways
            .loopback_config
            .get()
            .or_else(|| found.values().find_map(|g| g.config.as_ref())),
    ) && let Err(e) = std::fs::write(port_file, addr.port().to_string())
    {
        tracing::warn!(
            "cannot remember the configuration gateway's port in {}: {e}",
            port_file.display()
        );
    }
    let mut hosts: Vec<IpAddr> = found.values().map(|g| g.host).collect();
    hosts.dedup();
    traffic.listen_on_gateways(hosts);
    let _ = gateways.by_driver.set(found);
}

/// The port the configuration gateway had before, when it passes reads to the
/// controllers (a dev controller's agent takes the API's port instead).
fn remembered_port(upstream: Option<&ConfigUpstream>) -> u16 {
    match upstream {
        Some(ConfigUpstream::Api(api)) => api.port(),
        Some(ConfigUpstream::Controllers { port_file, .. }) => std::fs::read_to_string(port_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0),
        None => 0,
    }
}

/// Serves the configuration gateway on `host`, on `port` when it is free there;
/// its address, or `None` (logged).
fn serve_config(
    traffic: &Arc<Traffic>,
    host: IpAddr,
    upstream: ConfigUpstream,
    port: u16,
) -> Option<SocketAddr> {
    let listener = traffic
        .listen(SocketAddr::new(host, port))
        .or_else(|_| traffic.listen(SocketAddr::new(host, 0)))
        .map_err(|e| {
            tracing::error!("cannot open the configuration gateway on {host}: {e}; containers cannot read WHARF_CONFIG_URL")
        })
        .ok()?;
    let addr = listener.local_addr().ok()?;
    let controller = match upstream {
        ConfigUpstream::Api(controller) => controller,
        ConfigUpstream::Controllers { client, .. } => {
            traffic.tasks.spawn(wharf_proxy::answer::serve_answers(
                listener,
                traffic.closing.child_token(),
                move |asked| pass_on(client.clone(), asked),
            ));
            return Some(addr);
        }
    };
    let route = Arc::new(Route::new(&[Target::Local(controller)]));
    route.set_response_timeout(LONG_POLL);
    let ingress = Ingress::new(
        vec![IngressRoute {
            host: None,
            path: RUNTIME_CONFIG_PATH.into(),
            service: "controller".into(),
            strip_prefix: false,
        }],
        Box::new(move |_| Some(route.clone())),
    );
    traffic.tasks.spawn(wharf_proxy::ingress::serve_ingress(
        listener,
        ingress,
        None,
        traffic.closing.child_token(),
    ));
    Some(addr)
}

/// A request to a joined host's configuration gateway: a runtime configuration read
/// goes to the controller in use, anything else is not found.
async fn pass_on(client: wharf_client::agent::AgentClient, asked: Asked) -> Answer {
    if asked.method != "GET" || asked.path != RUNTIME_CONFIG_PATH {
        return answer_error(
            404,
            "this gateway passes on runtime configuration reads only",
        );
    }
    match client
        .runtime_config(&asked.query, asked.authorization.as_deref())
        .await
    {
        Ok(read) => {
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if let Some(revision) = read.revision {
                headers.push(("x-wharf-revision".into(), revision));
            }
            if let Some(token) = read.fresh_token {
                headers.push(("x-wharf-config-token".into(), token));
            }
            Answer {
                status: read.status,
                headers,
                body: read.body,
            }
        }
        Err(e) => answer_error(
            503,
            &format!("this host's agent cannot reach a controller: {e}"),
        ),
    }
}

fn answer_error(status: u16, error: &str) -> Answer {
    let body = wharf_api::ApiError {
        error: error.to_owned(),
        hint: None,
    };
    Answer {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kind: DriverKind, host: &str, config: Option<&str>) -> Gateways {
        let gateways = Gateways::default();
        let gateway = Gateway {
            host: host.parse().unwrap(),
            config: config.map(|c| c.parse().unwrap()),
        };
        let _ = gateways
            .by_driver
            .set([(kind, gateway)].into_iter().collect());
        gateways
    }

    #[test]
    fn a_driver_without_a_gateway_reaches_the_host_on_loopback() {
        let gateways = with(DriverKind::Docker, "172.17.0.1", None);
        assert_eq!(
            gateways.host_for(DriverKind::Process).to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            gateways.host_for(DriverKind::Docker).to_string(),
            "172.17.0.1"
        );
    }

    #[test]
    fn a_config_url_goes_through_the_gateway_only_for_its_driver() {
        let url = "http://127.0.0.1:7000/v1/runtime/config?instance=2";
        let gateways = with(DriverKind::Docker, "172.17.0.1", Some("172.17.0.1:7000"));
        assert_eq!(
            gateways.config_url_for(DriverKind::Docker, url),
            "http://172.17.0.1:7000/v1/runtime/config?instance=2"
        );
        assert_eq!(gateways.config_url_for(DriverKind::Process, url), url);
        // Without a configuration gateway, the URL is left as it is.
        let bare = with(DriverKind::Docker, "172.17.0.1", None);
        assert_eq!(bare.config_url_for(DriverKind::Docker, url), url);
    }
}
