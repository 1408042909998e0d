//! The agent's service addresses: for each service with an address, a listener
//! (`wharf-proxy`) that balances over the healthy instances this agent runs. An
//! instance joins the rotation once healthy and leaves it when it fails its check or
//! is about to stop; a stop waits for the requests it still serves (the drain).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wharf_driver::InstanceKey;
use wharf_proxy::{Backend, Route};

/// One service's address on this agent.
struct Address {
    port: u16,
    route: Arc<Route>,
    members: HashMap<u32, SocketAddr>,
    /// Instances being drained: nothing puts them back in the rotation (their status
    /// still says running and healthy) until they are stopped.
    draining: std::collections::HashSet<u32>,
    /// Backends taken out of the rotation, kept until drained.
    retired: Vec<Arc<Backend>>,
    stop: CancellationToken,
}

#[derive(Default)]
pub struct Traffic {
    addresses: Mutex<HashMap<(String, String), Address>>,
}

impl Traffic {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Address>> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the service of `key` listens on `port` (on loopback); a port that
    /// cannot be bound is reported and the service goes without an address.
    pub fn ensure(&self, key: &InstanceKey, port: u16, tcp: bool, pause: Duration) {
        let id = (key.env.clone(), key.service.clone());
        let mut all = self.lock();
        if let Some(address) = all.get(&id).filter(|a| a.port == port) {
            address.route.set_pause(pause);
            return;
        }
        if let Some(old) = all.remove(&id) {
            old.stop.cancel();
        }
        let listener = match std::net::TcpListener::bind(("127.0.0.1", port)).and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(service = %key.service, env = %key.env, "cannot listen on the service's address 127.0.0.1:{port}: {e}");
                return;
            }
        };
        let route = Arc::new(Route::new(&[]).with_pause(pause));
        let stop = CancellationToken::new();
        if tcp {
            tokio::spawn(wharf_proxy::serve_tcp(
                listener,
                route.clone(),
                stop.clone(),
            ));
        } else {
            tokio::spawn(wharf_proxy::serve_http(
                listener,
                route.clone(),
                stop.clone(),
                key.service.clone(),
            ));
        }
        all.insert(
            id,
            Address {
                port,
                route,
                members: HashMap::new(),
                draining: Default::default(),
                retired: Vec::new(),
                stop,
            },
        );
    }

    /// Puts the instance in the rotation (`Some(its address)`) or takes it out.
    pub fn set(&self, key: &InstanceKey, member: Option<SocketAddr>) {
        let mut all = self.lock();
        let Some(address) = all.get_mut(&(key.env.clone(), key.service.clone())) else {
            return;
        };
        let member = member.filter(|_| !address.draining.contains(&key.instance));
        let before = address.members.get(&key.instance).copied();
        if before == member {
            return;
        }
        if before.is_some() {
            // Kept until what was sent to them is answered; then let go (with their
            // idle connections).
            address.retired.retain(|b| b.outstanding() > 0);
            address.retired.extend(address.route.snapshot());
        }
        match member {
            Some(addr) => address.members.insert(key.instance, addr),
            None => address.members.remove(&key.instance),
        };
        let mut addrs: Vec<SocketAddr> = address.members.values().copied().collect();
        addrs.sort();
        address.route.set(&addrs);
    }

    /// Takes the instance out of the rotation and waits (up to `limit`) until the
    /// requests it was sent are answered.
    pub async fn drain(&self, key: &InstanceKey, limit: Duration) {
        let target = {
            let all = self.lock();
            all.get(&(key.env.clone(), key.service.clone()))
                .and_then(|a| a.members.get(&key.instance).copied())
        };
        let Some(target) = target else {
            return;
        };
        if let Some(a) = self.lock().get_mut(&(key.env.clone(), key.service.clone())) {
            a.draining.insert(key.instance);
        }
        self.set(key, None);
        let begun = Instant::now();
        while begun.elapsed() < limit {
            let busy = {
                let all = self.lock();
                all.get(&(key.env.clone(), key.service.clone()))
                    .map(|a| a.route.outstanding_on(target, &a.retired))
                    .unwrap_or(0)
            };
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(a) = self.lock().get_mut(&(key.env.clone(), key.service.clone())) {
            a.retired.retain(|b| b.addr != target);
        }
    }

    /// The instance is stopped: a new one under its key may join the rotation.
    pub fn forget(&self, key: &InstanceKey) {
        if let Some(a) = self.lock().get_mut(&(key.env.clone(), key.service.clone())) {
            a.draining.remove(&key.instance);
        }
    }

    /// Every address stops listening (the agent is going away).
    pub fn close(&self) {
        for (_, address) in self.lock().drain() {
            address.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> InstanceKey {
        InstanceKey {
            env: "ci".into(),
            service: "web".into(),
            node: "local".into(),
            instance: 0,
        }
    }

    fn in_rotation(traffic: &Traffic) -> Vec<SocketAddr> {
        let all = traffic.lock();
        all.get(&("ci".to_owned(), "web".to_owned()))
            .map(|a| a.route.addrs())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_draining_instance_is_not_put_back_by_a_status_report() {
        let traffic = Traffic::default();
        traffic.ensure(&key(), 0, false, Duration::from_secs(1));
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        traffic.set(&key(), Some(addr));
        assert_eq!(in_rotation(&traffic), vec![addr]);
        traffic.drain(&key(), Duration::from_secs(1)).await;
        // Its supervisor still reports it running and healthy until it is stopped.
        traffic.set(&key(), Some(addr));
        assert!(
            in_rotation(&traffic).is_empty(),
            "it stays out while it stops"
        );
        traffic.forget(&key());
        traffic.set(&key(), Some(addr));
        assert_eq!(in_rotation(&traffic), vec![addr], "a new instance joins");
        traffic.close();
    }
}
