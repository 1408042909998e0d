//! The agent's service addresses: for each service with an address, a listener
//! (`wharf-proxy`) that balances over the service's healthy instances, those this agent
//! runs and (on a host of a fleet) those the controller lists on the environment's
//! other hosts, reached through their agents (the mesh). An instance joins the rotation
//! once healthy and leaves it when it fails its check or is about to stop; a stop waits
//! for the requests it still serves, from this host and through the mesh (the drain).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wharf_api::agent::{ServiceRoute, TrafficSplit};
use wharf_driver::InstanceKey;
use wharf_proxy::mesh::{MeshDialer, MeshInbound};
use wharf_proxy::{Backend, MeshTarget, Route, Target};

/// One service's address on this agent.
struct Address {
    port: u16,
    /// Plain TCP rather than HTTP.
    tcp: bool,
    route: Arc<Route>,
    members: HashMap<u32, SocketAddr>,
    /// The deployment each local instance runs (a split tells its sets apart by it).
    deployments: HashMap<u32, i64>,
    /// Instances being drained: nothing puts them back in the rotation (their status
    /// still says running and healthy) until they are stopped.
    draining: HashSet<u32>,
    /// Its instances on other hosts, as the controller last listed them, with the
    /// deployment each runs.
    remote: Vec<(Target, i64)>,
    /// The split of a blue-green or canary rollout in progress.
    split: Option<TrafficSplit>,
    /// The address that reaches only a rollout's new set, while it runs.
    preview: Option<Preview>,
    /// Backends taken out of the rotation, kept until drained.
    retired: Vec<Arc<Backend>>,
    /// The same for the preview address (not counted in the address's traffic).
    preview_retired: Vec<Arc<Backend>>,
    stop: CancellationToken,
}

/// A preview address: its own listener over a route of the new set only.
struct Preview {
    port: u16,
    route: Arc<Route>,
    stop: CancellationToken,
}

impl Address {
    /// Puts the current members in the route (a swap: nothing in flight is lost), split
    /// between the old and the new set while a rollout runs.
    fn publish(&mut self) {
        self.retired.retain(|b| b.outstanding() > 0);
        self.retired.extend(self.route.snapshot());
        self.preview_retired.retain(|b| b.outstanding() > 0);
        if let Some(preview) = &self.preview {
            self.preview_retired.extend(preview.route.snapshot());
        }
        let mut local: Vec<(SocketAddr, i64)> = self
            .members
            .iter()
            .map(|(n, addr)| (*addr, self.deployments.get(n).copied().unwrap_or(0)))
            .collect();
        local.sort();
        let all: Vec<(Target, i64)> = local
            .into_iter()
            .map(|(addr, d)| (Target::Local(addr), d))
            .chain(self.remote.iter().cloned())
            .collect();
        let Some(split) = &self.split else {
            let targets: Vec<Target> = all.into_iter().map(|(t, _)| t).collect();
            self.route.set(&targets);
            return;
        };
        let (canary, stable): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(_, d)| *d == split.candidate);
        let canary: Vec<Target> = canary.into_iter().map(|(t, _)| t).collect();
        let stable: Vec<Target> = stable.into_iter().map(|(t, _)| t).collect();
        self.route.set_split(
            &stable,
            &canary,
            Some(wharf_proxy::Split {
                weight: split.weight,
                header: split.header.clone(),
                cookie: split.cookie.clone(),
            }),
        );
        if let Some(preview) = &self.preview {
            preview.route.set(&canary);
        }
    }

    /// Requests outstanding on `target` through this address or its preview.
    fn outstanding_on(&self, target: SocketAddr) -> usize {
        let preview = match &self.preview {
            Some(p) => p.route.outstanding_on(target, &self.preview_retired),
            None => self
                .preview_retired
                .iter()
                .filter(|b| b.target == Target::Local(target))
                .map(|b| b.outstanding())
                .max()
                .unwrap_or(0),
        };
        self.route.outstanding_on(target, &self.retired) + preview
    }
}

type Id = (String, String);

#[derive(Default)]
pub struct Traffic {
    addresses: Mutex<HashMap<Id, Address>>,
    /// The splits the controller set, kept for addresses opened later (instances
    /// adopted after a restart).
    splits: Mutex<HashMap<Id, TrafficSplit>>,
    /// Where they are kept across restarts, on a host of a fleet.
    splits_file: OnceLock<std::path::PathBuf>,
    /// Entries by environment.
    pub(crate) entries: Mutex<HashMap<String, crate::entry::Entry>>,
    /// This agent's mesh listener, once it has one: drains wait for its tunnels too.
    inbound: OnceLock<Arc<MeshInbound>>,
    /// Where listening sockets come from when they must outlive the agent.
    listeners: OnceLock<crate::listeners::Listeners>,
    /// The other addresses of this host its instances reach it at (a container bridge's
    /// gateway), where every service address listens too.
    gateways: OnceLock<Vec<IpAddr>>,
    /// Cancelled when every address stops listening: listeners that belong to no
    /// address (the configuration gateways) stop with it.
    pub(crate) closing: CancellationToken,
    /// Every listener's task, so a shutdown can wait for their connections.
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

impl Traffic {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Address>> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes listening sockets from a holder process from now on, so that they (and
    /// the connections waiting in them) outlive this agent.
    pub fn hold_listeners_in(&self, listeners: crate::listeners::Listeners) {
        let _ = self.listeners.set(listeners);
    }

    /// A listening socket on `addr`: the held one when there is a holder (a holder that
    /// cannot be reached is reported, and the socket bound here instead).
    pub(crate) fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let held = self.listeners.get().map(|l| l.bind(addr));
        let listener = match held {
            Some(Ok(listener)) => listener,
            Some(Err(e)) => {
                tracing::warn!(
                    "cannot get {addr} from the listener holder ({e}); binding it here, so it will not outlive this agent"
                );
                std::net::TcpListener::bind(addr)?
            }
            None => std::net::TcpListener::bind(addr)?,
        };
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// Service addresses listen on `gateways` too from now on (set once, before any
    /// address opens): instances that reach this host there find their peers.
    pub fn listen_on_gateways(&self, gateways: Vec<IpAddr>) {
        let _ = self.gateways.set(gateways);
    }

    /// A service address's listeners: on loopback (which must work) and on each
    /// gateway (one that cannot be bound is reported and left out).
    fn listen_everywhere(&self, port: u16) -> std::io::Result<Vec<tokio::net::TcpListener>> {
        let mut all = vec![self.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?];
        for gateway in self.gateways.get().into_iter().flatten() {
            let addr = SocketAddr::from((*gateway, port));
            match self.listen(addr) {
                Ok(listener) => all.push(listener),
                Err(e) => tracing::error!(
                    "cannot listen on {addr}: containers will not reach this address ({e})"
                ),
            }
        }
        Ok(all)
    }

    /// The service address on `port` is no longer wanted, on any of its addresses.
    fn release_everywhere(&self, port: u16) {
        self.release(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        for gateway in self.gateways.get().into_iter().flatten() {
            self.release(SocketAddr::from((*gateway, port)));
        }
    }

    /// The listener on `addr` is no longer wanted: the holder closes its copy.
    pub(crate) fn release(&self, addr: SocketAddr) {
        if let Some(listeners) = self.listeners.get() {
            listeners.release(addr);
        }
    }

    /// Serves a new route on `listeners` (plain TCP or HTTP), tracked for shutdown;
    /// `timeouts`: how long requests wait for an instance, and for its answer.
    fn serve(
        &self,
        listeners: Vec<tokio::net::TcpListener>,
        tcp: bool,
        (pause, response_timeout): (Duration, Duration),
        name: String,
    ) -> (Arc<Route>, CancellationToken) {
        let route = Arc::new(Route::default().with_pause(pause));
        route.set_response_timeout(response_timeout);
        let stop = CancellationToken::new();
        for listener in listeners {
            if tcp {
                self.tasks.spawn(wharf_proxy::serve_tcp(
                    listener,
                    route.clone(),
                    stop.clone(),
                ));
            } else {
                self.tasks.spawn(wharf_proxy::serve_http(
                    listener,
                    route.clone(),
                    stop.clone(),
                    name.clone(),
                ));
            }
        }
        (route, stop)
    }

    /// Makes sure the service of `key` listens on `port` (on loopback); a port that
    /// cannot be bound is reported and the service goes without an address.
    /// `deployment` is the one the instance runs.
    pub fn ensure(
        &self,
        key: &InstanceKey,
        deployment: i64,
        port: u16,
        tcp: bool,
        pause: Duration,
        response_timeout: Duration,
    ) {
        self.ensure_for(
            (&key.env, &key.service),
            port,
            tcp,
            (pause, response_timeout),
        );
        if let Some(address) = self.lock().get_mut(&(key.env.clone(), key.service.clone())) {
            address.deployments.insert(key.instance, deployment);
        }
    }

    /// `timeouts`: how long requests wait for an instance, and for its answer.
    fn ensure_for(
        &self,
        (env, service): (&str, &str),
        port: u16,
        tcp: bool,
        timeouts: (Duration, Duration),
    ) {
        let (pause, response_timeout) = timeouts;
        let id = (env.to_owned(), service.to_owned());
        let mut all = self.lock();
        if let Some(address) = all.get(&id).filter(|a| a.port == port) {
            address.route.set_pause(pause);
            address.route.set_response_timeout(response_timeout);
            return;
        }
        if let Some(mut old) = all.remove(&id) {
            old.stop.cancel();
            self.release_everywhere(old.port);
            self.close_preview(&mut old);
        }
        let listeners = match self.listen_everywhere(port) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%service, %env, "cannot listen on the service's address 127.0.0.1:{port}: {e}");
                return;
            }
        };
        let (route, stop) = self.serve(
            listeners,
            tcp,
            (pause, response_timeout),
            service.to_owned(),
        );
        let split = self
            .splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let mut address = Address {
            port,
            tcp,
            route,
            members: HashMap::new(),
            deployments: HashMap::new(),
            draining: HashSet::new(),
            remote: Vec::new(),
            split: None,
            preview: None,
            retired: Vec::new(),
            preview_retired: Vec::new(),
            stop,
        };
        if split.is_some() {
            self.apply_split(env, service, &mut address, split);
        }
        all.insert(id, address);
    }

    /// Puts the instance in the rotation (`Some(its address)`) or takes it out.
    pub fn set(&self, key: &InstanceKey, member: Option<SocketAddr>) {
        let mut all = self.lock();
        let Some(address) = all.get_mut(&(key.env.clone(), key.service.clone())) else {
            return;
        };
        let member = member.filter(|_| !address.draining.contains(&key.instance));
        if address.members.get(&key.instance).copied() == member {
            return;
        }
        match member {
            Some(addr) => address.members.insert(key.instance, addr),
            None => address.members.remove(&key.instance),
        };
        address.publish();
    }

    /// The environment's addresses as the controller lists them, with the instances on
    /// other hosts; an address neither listed nor used here any more stops listening.
    pub fn set_routes(&self, env: &str, routes: &[ServiceRoute], dialer: &Arc<MeshDialer>) {
        for route in routes {
            self.ensure_for(
                (env, &route.service),
                route.port,
                route.tcp,
                (route.pause_timeout, route.response_timeout),
            );
        }
        {
            // A service gone from the routes has no rollout any more.
            let listed: Vec<&str> = routes.iter().map(|r| r.service.as_str()).collect();
            let stale: Vec<String> = self
                .splits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .filter(|(e, s)| e == env && !listed.contains(&s.as_str()))
                .map(|(_, s)| s.clone())
                .collect();
            for service in stale {
                self.remember_split((env, &service), None);
            }
        }
        let mut all = self.lock();
        all.retain(|(e, service), address| {
            if e != env {
                return true;
            }
            let listed = routes.iter().find(|r| &r.service == service);
            let remote: Vec<(Target, i64)> = listed
                .map(|r| {
                    r.members
                        .iter()
                        .map(|m| {
                            let target = Target::Mesh(MeshTarget {
                                host: wharf_pki::host_name(m.host_id),
                                via: m.via,
                                port: m.port,
                                dialer: dialer.clone(),
                            });
                            (target, m.deployment)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let split = listed.and_then(|r| r.split.clone());
            self.remember_split((env, service), split.clone());
            if remote != address.remote || split != address.split {
                address.remote = remote;
                self.apply_split(env, service, address, split);
                address.publish();
            }
            let used =
                listed.is_some() || !address.members.is_empty() || !address.draining.is_empty();
            if !used {
                address.stop.cancel();
                self.release_everywhere(address.port);
                self.close_preview(address);
            }
            used
        });
    }

    /// Splits a service's traffic between a rollout's new set and the old one (none:
    /// the rollout is over), as the controller decided.
    pub fn set_split(&self, env: &str, service: &str, split: Option<TrafficSplit>) {
        self.remember_split((env, service), split.clone());
        let mut all = self.lock();
        let Some(address) = all.get_mut(&(env.to_owned(), service.to_owned())) else {
            return;
        };
        if address.split == split {
            return;
        }
        self.apply_split(env, service, address, split);
        address.publish();
    }

    /// Keeps the split of a service for addresses opened later, in the splits file too
    /// when there is one (an agent that restarts reads it before it adopts instances).
    fn remember_split(&self, (env, service): (&str, &str), split: Option<TrafficSplit>) {
        let id = (env.to_owned(), service.to_owned());
        let mut splits = self.splits.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match &split {
            Some(s) => splits.insert(id, s.clone()).as_ref() != Some(s),
            None => splits.remove(&id).is_some(),
        };
        if changed && let Some(path) = self.splits_file.get() {
            let all: Vec<(&Id, &TrafficSplit)> = splits.iter().collect();
            let tmp = path.with_extension("tmp");
            let written = serde_json::to_vec(&all)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                tracing::warn!("cannot keep the traffic splits in {}: {e}", path.display());
            }
        }
    }

    /// Keeps the splits the controller sets in `path`, and takes back those it holds:
    /// an instance of a rollout's new set adopted after a restart joins its split, not
    /// the main rotation, before the controller is reached again.
    pub fn remember_splits_in(&self, path: std::path::PathBuf) {
        let kept: Vec<(Id, TrafficSplit)> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        self.splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(kept);
        let _ = self.splits_file.set(path);
    }

    /// Records `split` on `address`, opening or closing its preview listener.
    fn apply_split(
        &self,
        env: &str,
        service: &str,
        address: &mut Address,
        split: Option<TrafficSplit>,
    ) {
        let wanted = split.as_ref().and_then(|s| s.preview_port);
        address.split = split;
        if address.preview.as_ref().map(|p| p.port) == wanted {
            return;
        }
        self.close_preview(address);
        let Some(port) = wanted else {
            return;
        };
        let listener = match self.listen(SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%service, %env, "cannot listen on the preview address 127.0.0.1:{port}: {e}");
                return;
            }
        };
        // The preview speaks what the main address speaks, with its timeouts.
        let timeouts = (address.route.pause(), address.route.response_timeout());
        let (route, stop) = self.serve(
            vec![listener],
            address.tcp,
            timeouts,
            format!("{service} (preview)"),
        );
        address.preview = Some(Preview { port, route, stop });
    }

    fn close_preview(&self, address: &mut Address) {
        if let Some(preview) = address.preview.take() {
            // What it still carries is drained like the rest.
            address.preview_retired.extend(preview.route.snapshot());
            preview.stop.cancel();
            self.release(SocketAddr::from(([127, 0, 0, 1], preview.port)));
        }
    }

    /// Whether `port` is one of this agent's instances in a rotation (what the mesh
    /// lets other hosts reach).
    pub fn serves_port(&self, port: u16) -> bool {
        self.lock().values().any(|a| {
            a.members
                .iter()
                .any(|(n, addr)| addr.port() == port && !a.draining.contains(n))
        })
    }

    /// What each address measured, in total and per backend it sends to now or still
    /// drains.
    pub fn counts(&self) -> Vec<wharf_api::traffic::AddressCounts> {
        use wharf_api::traffic::{AddressCounts, BackendCounts, Counts};
        let wire = |s: wharf_proxy::stats::Snapshot| Counts {
            requests: s.requests,
            errors: s.errors,
            micros: s.micros,
            buckets: s.buckets,
        };
        let mut all: Vec<AddressCounts> = self
            .lock()
            .iter()
            .map(|((env, service), a)| {
                let mut seen: Vec<&Arc<Backend>> = Vec::new();
                let current = a.route.snapshot();
                // The retired ones may still be in the route: each counts once.
                for b in current.iter().chain(&a.retired) {
                    if !seen.iter().any(|s| Arc::ptr_eq(s, b)) {
                        seen.push(b);
                    }
                }
                let backends = seen
                    .into_iter()
                    .map(|b| {
                        let (host_id, port) = match &b.target {
                            Target::Local(addr) => (None, addr.port()),
                            Target::Mesh(m) => (
                                m.host.strip_prefix("host-").and_then(|id| id.parse().ok()),
                                m.port,
                            ),
                        };
                        BackendCounts {
                            host_id,
                            port,
                            counts: wire(b.stats.snapshot()),
                        }
                    })
                    .collect();
                AddressCounts {
                    env: env.clone(),
                    service: service.clone(),
                    totals: wire(a.route.stats.snapshot()),
                    backends,
                }
            })
            .collect();
        all.sort_by(|a, b| (&a.env, &a.service).cmp(&(&b.env, &b.service)));
        all
    }

    /// Tunnels other hosts hold open to this agent's instances now.
    pub fn mesh_tunnels(&self) -> usize {
        self.inbound.get().map_or(0, |m| m.tunnels())
    }

    /// Remembers the mesh listener, whose tunnels a drain waits for.
    pub fn set_inbound(&self, inbound: Arc<MeshInbound>) {
        let _ = self.inbound.set(inbound);
    }

    /// Takes the instance out of the rotation and waits (up to `limit`) until the
    /// requests it was sent are answered, and other hosts' proxies have closed their
    /// connections to it (they do once the controller's routes drop it).
    pub async fn drain(&self, key: &InstanceKey, limit: Duration) {
        let id = (key.env.clone(), key.service.clone());
        let target = self
            .lock()
            .get(&id)
            .and_then(|a| a.members.get(&key.instance).copied());
        let Some(target) = target else {
            return;
        };
        if let Some(a) = self.lock().get_mut(&id) {
            a.draining.insert(key.instance);
        }
        self.set(key, None);
        let begun = Instant::now();
        while begun.elapsed() < limit {
            let here = self
                .lock()
                .get(&id)
                .map(|a| a.outstanding_on(target))
                .unwrap_or(0);
            let through_mesh = self
                .inbound
                .get()
                .map(|m| m.tunnels_to(target.port()))
                .unwrap_or(0);
            if here == 0 && through_mesh == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(a) = self.lock().get_mut(&id) {
            a.retired.retain(|b| b.target != target);
            a.preview_retired
                .retain(|b| b.target != Target::Local(target));
        }
    }

    /// Whether the instance is being drained (it is about to stop).
    pub fn is_draining(&self, key: &InstanceKey) -> bool {
        self.lock()
            .get(&(key.env.clone(), key.service.clone()))
            .is_some_and(|a| a.draining.contains(&key.instance))
    }

    /// The instance is stopped: a new one under its key may join the rotation.
    pub fn forget(&self, key: &InstanceKey) {
        if let Some(a) = self.lock().get_mut(&(key.env.clone(), key.service.clone())) {
            a.draining.remove(&key.instance);
            a.deployments.remove(&key.instance);
        }
    }

    /// The route of a service's address here, if it has one.
    pub(crate) fn route_of(&self, env: &str, service: &str) -> Option<Arc<Route>> {
        self.lock()
            .get(&(env.to_owned(), service.to_owned()))
            .map(|a| a.route.clone())
    }

    /// Stops taking connections (those waiting stay queued in held sockets for the next
    /// agent), lets the connections it has finish what they carry, up to `limit`.
    pub async fn close_gracefully(&self, limit: Duration) {
        self.close();
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
    }

    /// Every address stops listening (the agent is going away).
    pub fn close(&self) {
        self.closing.cancel();
        for (_, entry) in self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            entry.stop();
        }
        for (_, address) in self.lock().drain() {
            address.stop.cancel();
            if let Some(preview) = address.preview {
                preview.stop.cancel();
            }
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

    fn in_rotation(traffic: &Traffic) -> Vec<Target> {
        let all = traffic.lock();
        all.get(&("ci".to_owned(), "web".to_owned()))
            .map(|a| a.route.targets())
            .unwrap_or_default()
    }

    fn instance(n: u32) -> InstanceKey {
        InstanceKey {
            instance: n,
            ..key()
        }
    }

    #[tokio::test]
    async fn a_split_outlives_an_agent_restart_and_its_preview_reaches_only_the_new_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traffic_splits.json");
        let second = Duration::from_secs(1);
        let preview = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let split = TrafficSplit {
            candidate: 2,
            weight: 0,
            header: String::new(),
            cookie: String::new(),
            preview_port: Some(preview),
        };
        let (old, new): (SocketAddr, SocketAddr) = (
            "127.0.0.1:4001".parse().unwrap(),
            "127.0.0.1:4002".parse().unwrap(),
        );
        {
            let before = Traffic::default();
            before.remember_splits_in(file.clone());
            before.set_split("ci", "web", Some(split.clone()));
            before.close();
        }
        // The next agent reads the split before it adopts anything.
        let traffic = Traffic::default();
        traffic.remember_splits_in(file.clone());
        traffic.ensure(&instance(0), 1, 0, false, second, second);
        traffic.ensure(&instance(1), 2, 0, false, second, second);
        traffic.set(&instance(0), Some(old));
        traffic.set(&instance(1), Some(new));
        {
            let all = traffic.lock();
            let address = all.get(&("ci".to_owned(), "web".to_owned())).unwrap();
            assert_eq!(address.split.as_ref(), Some(&split));
            let preview = address.preview.as_ref().expect("the preview listens");
            assert_eq!(preview.route.targets(), vec![Target::Local(new)]);
            assert_eq!(address.route.split().map(|s| s.weight), Some(0));
        }
        traffic.set_split("ci", "web", None);
        assert!(
            traffic.lock()[&("ci".to_owned(), "web".to_owned())]
                .preview
                .is_none(),
            "the rollout over, the preview closes"
        );
        let kept: Vec<(Id, TrafficSplit)> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert!(kept.is_empty(), "nor is it kept: {kept:?}");
        traffic.close();
    }

    #[tokio::test]
    async fn a_draining_instance_is_not_put_back_by_a_status_report() {
        let traffic = Traffic::default();
        let second = Duration::from_secs(1);
        traffic.ensure(&key(), 1, 0, false, second, second);
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        traffic.set(&key(), Some(addr));
        assert_eq!(in_rotation(&traffic), vec![Target::Local(addr)]);
        assert!(traffic.serves_port(4000));
        traffic.drain(&key(), Duration::from_secs(1)).await;
        // Its supervisor still reports it running and healthy until it is stopped.
        traffic.set(&key(), Some(addr));
        assert!(
            in_rotation(&traffic).is_empty(),
            "it stays out while it stops"
        );
        assert!(!traffic.serves_port(4000), "nor does the mesh reach it");
        traffic.forget(&key());
        traffic.set(&key(), Some(addr));
        assert_eq!(
            in_rotation(&traffic),
            vec![Target::Local(addr)],
            "a new instance joins"
        );
        traffic.close();
    }
}
