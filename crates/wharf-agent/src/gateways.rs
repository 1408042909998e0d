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
        let Some(gateway) = self.gateway(kind).and_then(|g| g.config) else {
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
    controller: Option<SocketAddr>,
) {
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
            let config = controller.and_then(|api| serve_config(traffic, host, api));
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
    let mut hosts: Vec<IpAddr> = found.values().map(|g| g.host).collect();
    hosts.dedup();
    traffic.listen_on_gateways(hosts);
    let _ = gateways.by_driver.set(found);
}

/// Serves the configuration gateway on `host`; its address, or `None` (logged).
fn serve_config(
    traffic: &Arc<Traffic>,
    host: IpAddr,
    controller: SocketAddr,
) -> Option<SocketAddr> {
    let listener = traffic
        .listen(SocketAddr::new(host, controller.port()))
        .or_else(|_| traffic.listen(SocketAddr::new(host, 0)))
        .map_err(|e| {
            tracing::error!("cannot open the configuration gateway on {host}: {e}; containers cannot read WHARF_CONFIG_URL")
        })
        .ok()?;
    let addr = listener.local_addr().ok()?;
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
