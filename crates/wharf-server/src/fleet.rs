//! The agents a controller drives: the local agent of a dev controller, and remote
//! agents that joined over mutual TLS. The executor asks the fleet for the agent of an
//! instance's node and talks to it through [`AgentLink`], whichever kind it is.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wharf_agent::{Agent, InstancePlan, InstanceStatus, Unhealthy};
use wharf_api::agent::{RemoteMember, ServiceRoute, TrafficSplit};
use wharf_core::lifecycle::HostState;
use wharf_driver::InstanceKey;
use wharf_store::{Heartbeat, HostRecord, InstanceRecord, Store};

use crate::remote::RemoteAgent;

/// A plan as the controller holds it: shared, not copied, by every listing of what
/// runs (10,000 plans copied per listing were most of a large controller's memory).
pub type SharedPlan = Arc<InstancePlan>;

/// What the executor needs of an agent.
#[async_trait]
pub trait AgentLink: Send + Sync {
    /// Instances it runs, with what was last observed of each.
    fn statuses(&self) -> Vec<(SharedPlan, InstanceStatus)>;
    /// Those of [`AgentLink::statuses`] whose plan `keep` takes, the others not copied.
    fn statuses_where(
        &self,
        keep: &dyn Fn(&InstancePlan) -> bool,
    ) -> Vec<(SharedPlan, InstanceStatus)> {
        let mut all = self.statuses();
        all.retain(|(plan, _)| keep(plan));
        all
    }
    /// What was last observed of one instance (without copying every plan).
    fn status(&self, key: &InstanceKey) -> Option<InstanceStatus> {
        self.statuses()
            .into_iter()
            .find(|(p, _)| &p.key == key)
            .map(|(_, s)| s)
    }
    fn plan(&self, key: &InstanceKey) -> Option<InstancePlan>;
    /// The same plan, shared where the link keeps it shared.
    fn shared_plan(&self, key: &InstanceKey) -> Option<SharedPlan> {
        self.plan(key).map(Arc::new)
    }
    async fn start(&self, plan: InstancePlan) -> Result<(), String>;
    /// Starts several instances; remote agents take them in one assignment change.
    async fn start_all(&self, plans: Vec<SharedPlan>) -> Result<(), String> {
        for plan in plans {
            self.start(Arc::unwrap_or_clone(plan)).await?;
        }
        Ok(())
    }
    async fn stop(&self, key: &InstanceKey);
    async fn wait_healthy(&self, key: &InstanceKey, timeout: Duration) -> Result<(), Unhealthy>;
    /// The log file of an instance, when it is on this machine.
    fn log_path(&self, key: &InstanceKey) -> Option<PathBuf>;
    /// The last `lines` lines of an instance's log (only those written since `since`,
    /// when given), wherever it runs.
    async fn log_tail(
        &self,
        key: &InstanceKey,
        lines: usize,
        since: Option<i64>,
    ) -> Result<String, String>;
    /// For `wharf logs --follow` of an instance on another host: its last `lines` lines
    /// (written since `since`) and where its log ends, or (given `offset`) what was
    /// appended past it and where to ask from next.
    async fn follow_log(
        &self,
        key: &InstanceKey,
        _lines: usize,
        _since: Option<i64>,
        _offset: Option<u64>,
    ) -> Result<(String, u64), String> {
        Err(format!("the log of {key} is not on another host"))
    }
    /// Has the instance rewrite its `files` and send `signal` for configuration revision
    /// `generation` (once: a generation it has seen is not signalled again).
    async fn reload(
        &self,
        key: &InstanceKey,
        generation: i64,
        signal: &str,
        files: BTreeMap<String, String>,
    ) -> Result<(), String>;
    /// Runs a command once in the instance's environment and folder (`wharf exec`).
    async fn exec(
        &self,
        key: &InstanceKey,
        argv: &[String],
        limit: Duration,
    ) -> Result<wharf_driver::ExecOutput, String>;
}

#[async_trait]
impl AgentLink for Agent {
    fn statuses(&self) -> Vec<(SharedPlan, InstanceStatus)> {
        Agent::statuses(self)
            .into_iter()
            .map(|(plan, status)| (Arc::new(plan), status))
            .collect()
    }

    fn plan(&self, key: &InstanceKey) -> Option<InstancePlan> {
        Agent::plan(self, key)
    }

    async fn start(&self, plan: InstancePlan) -> Result<(), String> {
        Agent::start(self, plan).await.map_err(|e| e.to_string())
    }

    async fn stop(&self, key: &InstanceKey) {
        Agent::stop(self, key).await;
    }

    async fn wait_healthy(&self, key: &InstanceKey, timeout: Duration) -> Result<(), Unhealthy> {
        Agent::wait_healthy(self, key, timeout).await
    }

    fn log_path(&self, key: &InstanceKey) -> Option<PathBuf> {
        Some(Agent::log_path(self, key))
    }

    async fn reload(
        &self,
        key: &InstanceKey,
        generation: i64,
        signal: &str,
        files: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let reload = wharf_agent::Reload {
            generation,
            signal: signal.to_owned(),
        };
        match Agent::reload(self, key, reload, &files).await {
            Some(outcome) => outcome,
            None if Agent::plan(self, key).is_none() => Err(format!("{key} does not run here")),
            None => Ok(()),
        }
    }

    async fn log_tail(
        &self,
        key: &InstanceKey,
        lines: usize,
        since: Option<i64>,
    ) -> Result<String, String> {
        Ok(wharf_agent::logs::tail_from(
            &Agent::log_path(self, key),
            lines,
            since,
        ))
    }

    async fn exec(
        &self,
        key: &InstanceKey,
        argv: &[String],
        limit: Duration,
    ) -> Result<wharf_driver::ExecOutput, String> {
        Agent::exec(self, key, argv, limit).await
    }
}

/// Stands in for the agent of a node no host claims on a controller without a local
/// agent (production mode): it runs nothing and says why.
struct NoHost;

#[async_trait]
impl AgentLink for NoHost {
    fn statuses(&self) -> Vec<(SharedPlan, InstanceStatus)> {
        Vec::new()
    }

    fn plan(&self, _: &InstanceKey) -> Option<InstancePlan> {
        None
    }

    async fn start(&self, plan: InstancePlan) -> Result<(), String> {
        Err(format!(
            "no host claims node `{}` of `{}`, and this controller runs nothing itself",
            plan.key.node, plan.key.env
        ))
    }

    async fn stop(&self, _: &InstanceKey) {}

    async fn wait_healthy(&self, key: &InstanceKey, _: Duration) -> Result<(), Unhealthy> {
        Err(Unhealthy {
            reason: format!("no host claims node `{}`", key.node),
            log_tail: String::new(),
        })
    }

    fn log_path(&self, _: &InstanceKey) -> Option<PathBuf> {
        None
    }

    async fn log_tail(
        &self,
        key: &InstanceKey,
        _: usize,
        _: Option<i64>,
    ) -> Result<String, String> {
        Err(format!("no host claims node `{}`", key.node))
    }

    async fn reload(
        &self,
        key: &InstanceKey,
        _: i64,
        _: &str,
        _: BTreeMap<String, String>,
    ) -> Result<(), String> {
        Err(format!("no host claims node `{}`", key.node))
    }

    async fn exec(
        &self,
        key: &InstanceKey,
        _: &[String],
        _: Duration,
    ) -> Result<wharf_driver::ExecOutput, String> {
        Err(format!("no host claims node `{}`", key.node))
    }
}

/// Where an instance listens: its host (`None`: the local agent), environment, service
/// and port.
pub type PortKey = (Option<i64>, String, String, u16);

/// A host that may reach others through the mesh: its id and certificate serial.
pub type MeshPeer = (i64, u64);

/// Every agent of this controller.
pub struct Fleet {
    /// Runs the nodes no joined host claims (a dev controller's own machine); none on a
    /// production controller.
    pub local: Option<Arc<Agent>>,
    remotes: Mutex<HashMap<i64, Arc<RemoteAgent>>>,
    store: Arc<dyn Store>,
    /// Hosts by (environment, name), read from the store at most every [`HOSTS_TTL`]:
    /// a deploy of thousands of instances looks hosts up for each of them.
    hosts: Mutex<HostIndex>,
    /// Each environment's hosts in order, read at most every [`HOSTS_TTL`] too: every
    /// agent's answer lists its environment's routes, and a change answers them all.
    env_hosts: Mutex<HashMap<String, EnvHosts>>,
    /// Each environment's [`RouteTable`], by routes generation.
    route_tables: Mutex<HashMap<String, Arc<RouteTable>>>,
    /// Bumped when what other hosts route to changes (see [`RemoteAgent::watch`]).
    routes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The traffic splits of the rollouts in progress, by (environment, service).
    splits: Mutex<HashMap<(String, String), TrafficSplit>>,
    /// Hosts' latest reports not yet stored, by host id: a thousand hosts report every
    /// couple of seconds, and their heartbeats are stored together once a second.
    heartbeats: Mutex<HashMap<i64, Heartbeat>>,
    /// When each host was last heard from, by this controller (stored or not): what
    /// liveness judges silence by, so a heartbeat not yet stored still counts.
    last_heard: Mutex<HashMap<i64, i64>>,
    /// Instance rows that joined hosts reported, not yet stored, by slot (the latest).
    observed: Mutex<HashMap<(String, String, String, u32), InstanceRecord>>,
    /// Wakes the writer of `observed`.
    observed_arrived: tokio::sync::Notify,
}

/// Hosts by (environment, name), and when they were read.
type HostIndex = (Option<Instant>, HashMap<(String, String), HostRecord>);

/// An environment's routes and mesh peers as of a routes generation, serialized once
/// for every agent's answer (each agent leaves itself out: `Assignments::for_host`).
struct RouteTable {
    generation: u64,
    made: Instant,
    /// `"routes":[...],"mesh_peers":[...]`, the members of a JSON object.
    json: axum::body::Bytes,
}

/// The environment's part of every agent's answer.
#[derive(serde::Serialize)]
struct SharedRoutes {
    routes: Vec<ServiceRoute>,
    mesh_peers: Vec<MeshPeer>,
}

/// An environment's hosts, and when they were read.
type EnvHosts = (Instant, Arc<Vec<HostRecord>>);

/// Assignments recorded per store write when a batch starts many instances.
const ASSIGNMENTS_PER_WRITE: usize = 1_000;

/// How stale the host index may be. Host states change on heartbeats (seconds).
const HOSTS_TTL: Duration = Duration::from_millis(250);

impl Fleet {
    pub fn new(local: Option<Arc<Agent>>, store: Arc<dyn Store>) -> Self {
        Self {
            local,
            remotes: Mutex::new(HashMap::new()),
            store,
            hosts: Mutex::new((None, HashMap::new())),
            env_hosts: Mutex::new(HashMap::new()),
            route_tables: Mutex::new(HashMap::new()),
            routes: Arc::new(tokio::sync::watch::channel(0).0),
            splits: Mutex::new(HashMap::new()),
            heartbeats: Mutex::new(HashMap::new()),
            last_heard: Mutex::new(HashMap::new()),
            observed: Mutex::new(HashMap::new()),
            observed_arrived: tokio::sync::Notify::new(),
        }
    }

    /// Instance rows a joined host reported, to be stored by the observations' writer
    /// (`hosts::store_observations`).
    pub fn observed(&self, rows: Vec<InstanceRecord>) {
        if rows.is_empty() {
            return;
        }
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            observed.insert(row_slot(&row), row);
        }
        drop(observed);
        self.observed_arrived.notify_one();
    }

    /// Wakes the observations' writer (rows it put back wait).
    pub fn observations_waiting(&self) {
        self.observed_arrived.notify_one();
    }

    /// Waits until reported rows wait to be stored.
    pub async fn observations_arrived(&self) {
        self.observed_arrived.notified().await;
    }

    /// The reported rows not yet stored.
    pub fn take_observed(&self) -> Vec<InstanceRecord> {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *observed).into_values().collect()
    }

    /// Reported rows whose write failed, kept for the next (unless newer ones came):
    /// a host reports an instance again only when it changes.
    pub fn untaken_observed(&self, rows: Vec<InstanceRecord>) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            observed.entry(row_slot(&row)).or_insert(row);
        }
    }

    /// A report arrived from `host_id` (stored with the next [`Fleet::take_heartbeats`]).
    pub fn heard(&self, host_id: i64, at: i64, address: String) {
        self.last_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_id, at);
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                host_id,
                Heartbeat {
                    host_id,
                    at,
                    address,
                },
            );
    }

    /// The heartbeats heard since the last call, to be stored.
    pub fn take_heartbeats(&self) -> Vec<Heartbeat> {
        let mut heard = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *heard).into_values().collect()
    }

    /// Heartbeats whose write failed, kept for the next (unless newer ones came).
    pub fn untaken_heartbeats(&self, heartbeats: Vec<Heartbeat>) {
        let mut heard = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        for h in heartbeats {
            heard.entry(h.host_id).or_insert(h);
        }
    }

    /// When this controller last heard from `host_id` (0: not since it started).
    pub fn last_heard(&self, host_id: i64) -> i64 {
        self.last_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host_id)
            .copied()
            .unwrap_or(0)
    }

    /// Stops `keys` wherever they run, at once: the joined hosts' assignments removed in
    /// one transaction, then each agent's confirmation awaited (an agent drains before
    /// it stops). Whether the store forgot the assignments (if not, the instances stop
    /// anyway, and a restarted controller would start them again).
    pub async fn stop_all(&self, keys: &[InstanceKey]) -> bool {
        let (remote, elsewhere) = self.by_host(keys.iter().cloned(), |key| key);
        let slots: Vec<_> = remote
            .values()
            .flat_map(|(_, keys)| keys)
            .map(slot_ref)
            .collect();
        let forgotten = match self.store.remove_assignments(&slots) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    "cannot remove the assignments of {} instance(s): {e}",
                    slots.len()
                );
                false
            }
        };
        for (agent, keys) in remote.values() {
            agent.unassigned_now(keys);
        }
        let confirmed = remote.values().map(|(agent, keys)| agent.stopped(keys));
        let local = elsewhere
            .iter()
            .map(|key| async move { self.link(key).stop(key).await });
        futures_util::future::join(
            futures_util::future::join_all(confirmed),
            futures_util::future::join_all(local),
        )
        .await;
        forgotten
    }

    /// Starts `plans` wherever their nodes are: the joined hosts' shares recorded in one
    /// transaction (a batch spans hundreds of hosts), each host then told at once.
    pub async fn start_all(&self, plans: Vec<SharedPlan>) -> Result<(), String> {
        let (remote, elsewhere) = self.by_host(plans, |plan| &plan.key);
        if !remote.is_empty() {
            let all: Vec<(i64, &SharedPlan)> = remote
                .iter()
                .flat_map(|(host_id, (_, plans))| plans.iter().map(|p| (*host_id, p)))
                .collect();
            // Durable before any agent can see it; written a slice at a time, so a
            // pool's first deploy does not hold every plan's text at once.
            for slice in all.chunks(ASSIGNMENTS_PER_WRITE) {
                let rows: Vec<_> = slice
                    .iter()
                    .map(|(host_id, plan)| {
                        let (key, text) = crate::remote::assignment_row(plan);
                        (*host_id, key, text)
                    })
                    .collect();
                self.store
                    .put_assignments(&rows)
                    .map_err(|e| e.to_string())?;
            }
            drop(all);
            for (agent, plans) in remote.into_values() {
                agent.assigned_now(plans);
            }
        }
        // Every node no host claims has the same link: this machine's agent, or none.
        if let Some(first) = elsewhere.first() {
            let link = self.link(&first.key);
            link.start_all(elsewhere).await?;
        }
        Ok(())
    }

    /// `items` by the joined host that runs their instance (with its handle), and those
    /// whose node no host claims.
    #[allow(clippy::type_complexity)]
    fn by_host<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &InstanceKey,
    ) -> (HashMap<i64, (Arc<RemoteAgent>, Vec<T>)>, Vec<T>) {
        let mut remote: HashMap<i64, (Arc<RemoteAgent>, Vec<T>)> = HashMap::new();
        let mut elsewhere = Vec::new();
        for item in items {
            let k = key(&item);
            match self.host(&k.env, &k.node) {
                Some(host) => remote
                    .entry(host.id)
                    .or_insert_with(|| (self.remote(host.id), Vec::new()))
                    .1
                    .push(item),
                None => elsewhere.push(item),
            }
        }
        (remote, elsewhere)
    }

    /// Splits a service's traffic between a rollout's new set and the old one, on every
    /// host of its environment (none: no split, the rollout is over).
    pub fn set_split(&self, env: &str, service: &str, split: Option<TrafficSplit>) {
        let key = (env.to_owned(), service.to_owned());
        {
            let mut splits = self.splits.lock().unwrap_or_else(|p| p.into_inner());
            match &split {
                Some(s) => splits.insert(key, s.clone()),
                None => splits.remove(&key),
            };
        }
        if let Some(local) = &self.local {
            local.traffic().set_split(env, service, split);
        }
        self.routes_changed();
    }

    fn split_of(&self, env: &str, service: &str) -> Option<TrafficSplit> {
        self.splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(env.to_owned(), service.to_owned()))
            .cloned()
    }

    /// The hosts of `env`, as the store listed them at most [`HOSTS_TTL`] ago.
    fn hosts_of(&self, env: &str) -> Result<Arc<Vec<HostRecord>>, wharf_store::StoreError> {
        if let Some((at, hosts)) = self
            .env_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            && at.elapsed() <= HOSTS_TTL
        {
            return Ok(hosts.clone());
        }
        let hosts = Arc::new(self.store.hosts(Some(env))?);
        self.env_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_owned(), (Instant::now(), hosts.clone()));
        Ok(hosts)
    }

    /// The routes and peers of `env`, worked out and serialized once per change of
    /// routes (and at most [`HOSTS_TTL`] old): a change answers every agent's watch, and
    /// each answer would otherwise ask every host again, a thousand times a thousand,
    /// and carry its own copy of the same thousands of members.
    fn route_table(&self, env: &str) -> Result<Arc<RouteTable>, wharf_store::StoreError> {
        let generation = *self.routes.borrow();
        if let Some(table) = self
            .route_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
            && table.generation == generation
            && table.made.elapsed() <= HOSTS_TTL
        {
            return Ok(table.clone());
        }
        let hosts = self.hosts_of(env)?;
        let shared = self.shared_routes(env, &hosts);
        let json = serde_json::to_vec(&shared).unwrap_or_else(|_| b"{}".to_vec());
        // The object's members only: the caller puts them into each answer.
        let members = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default()
            .to_vec();
        let table = Arc::new(RouteTable {
            generation,
            made: Instant::now(),
            json: members.into(),
        });
        self.route_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_owned(), table.clone());
        Ok(table)
    }

    /// Every service address of `env`, with the instances that serve on each host
    /// (through its mesh listener), and the hosts that may reach one another.
    fn shared_routes(&self, env: &str, hosts: &[HostRecord]) -> SharedRoutes {
        let mut routes: BTreeMap<String, ServiceRoute> = BTreeMap::new();
        let mut peers = Vec::new();
        for host in hosts {
            let ready = matches!(host.state, HostState::Ready | HostState::Draining);
            if ready {
                peers.push((host.id, host.cert_serial));
            }
            let remote = self.remote(host.id);
            // A host whose agent is stopping takes no new traffic from the others (its
            // peers keep admitting it, for what is in flight).
            let serves = ready && !remote.is_leaving();
            let via = remote.mesh_port().and_then(|port| {
                let ip: std::net::IpAddr = host.address.parse().ok()?;
                Some(std::net::SocketAddr::new(ip, port))
            });
            for entry in remote.route_entries() {
                let route = routes
                    .entry(entry.service.clone())
                    .or_insert_with(|| ServiceRoute {
                        service: entry.service.clone(),
                        port: entry.address,
                        tcp: entry.tcp,
                        pause_timeout: entry.pause_timeout,
                        response_timeout: entry.response_timeout,
                        members: Vec::new(),
                        split: self.split_of(env, &entry.service),
                    });
                if let (true, Some(via), Some(port)) = (serves, via, entry.serving) {
                    route.members.push(RemoteMember {
                        host_id: host.id,
                        via,
                        port,
                        deployment: entry.deployment,
                    });
                }
            }
        }
        SharedRoutes {
            routes: routes.into_values().collect(),
            mesh_peers: peers,
        }
    }

    /// A joined host by id, as the store listed it at most [`HOSTS_TTL`] ago (none when
    /// the store cannot be read: the caller asks it again).
    pub fn cached_host(&self, id: i64) -> Option<HostRecord> {
        let mut cache = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0.is_none_or(|at| at.elapsed() > HOSTS_TTL) {
            let hosts = self.store.hosts(None).ok()?;
            cache.1 = hosts
                .into_iter()
                .map(|h| ((h.env.clone(), h.name.clone()), h))
                .collect();
            cache.0 = Some(Instant::now());
        }
        cache.1.values().find(|h| h.id == id).cloned()
    }

    /// The host named `node` in `env`, if one joined.
    fn host(&self, env: &str, node: &str) -> Option<HostRecord> {
        let mut cache = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0.is_none_or(|at| at.elapsed() > HOSTS_TTL) {
            let hosts = self.store.hosts(None).unwrap_or_default();
            cache.1 = hosts
                .into_iter()
                .map(|h| ((h.env.clone(), h.name.clone()), h))
                .collect();
            cache.0 = Some(Instant::now());
        }
        cache.1.get(&(env.to_owned(), node.to_owned())).cloned()
    }

    /// Forgets the host index, after a change the next lookup must see.
    pub fn hosts_changed(&self) {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).0 = None;
        self.env_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // A host that went down or came back changes where traffic may go.
        self.routes_changed();
    }

    /// Answers every agent's watch with fresh routes.
    pub fn routes_changed(&self) {
        self.routes.send_modify(|r| *r += 1);
    }

    /// The routes and mesh peers of `env` as the members of a JSON object, the same
    /// bytes for every agent of the environment until routes change. A store that fails
    /// now fails the answer: the agent keeps the routes it has rather than being told
    /// there are none.
    pub fn shared_routes_json(
        &self,
        env: &str,
    ) -> Result<axum::body::Bytes, wharf_store::StoreError> {
        Ok(self.route_table(env)?.json.clone())
    }

    fn remotes(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<RemoteAgent>>> {
        self.remotes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends every joined host fresh configuration tokens at once.
    pub fn renew_tokens(&self) {
        for remote in self.remotes().values() {
            remote.renew_tokens();
        }
    }

    /// The controller-side handle of a joined host, made on first use.
    pub fn remote(&self, host_id: i64) -> Arc<RemoteAgent> {
        self.remotes()
            .entry(host_id)
            .or_insert_with(|| {
                Arc::new(RemoteAgent::new(
                    host_id,
                    self.store.clone(),
                    self.routes.clone(),
                ))
            })
            .clone()
    }

    /// The agent that runs `key`'s node: the host of that name in that environment if
    /// one joined, else the local agent.
    pub fn link(&self, key: &InstanceKey) -> Arc<dyn AgentLink> {
        match self.host(&key.env, &key.node) {
            Some(host) => self.remote(host.id),
            None => match &self.local {
                Some(local) => local.clone(),
                None => Arc::new(NoHost),
            },
        }
    }

    /// Whether `key`'s node is this machine (no joined host claims it).
    pub fn is_local(&self, key: &InstanceKey) -> bool {
        self.host(&key.env, &key.node).is_none()
    }

    /// Whether the host of `key`'s node takes instances (the local machine always does).
    pub fn takes_instances(&self, key: &InstanceKey) -> bool {
        match self.host(&key.env, &key.node) {
            Some(host) => host.state.can_take_instances(),
            None => true,
        }
    }

    /// The instances of one environment (and one service, when named), on every agent:
    /// during a pool's deploy, copying every other instance's status was megabytes each
    /// time.
    pub fn statuses_of(
        &self,
        env: &str,
        service: Option<&str>,
    ) -> Vec<(SharedPlan, InstanceStatus)> {
        self.statuses_where(&|p| p.key.env == env && service.is_none_or(|s| p.key.service == s))
    }

    /// The instances whose plan `keep` takes, on every agent, the others not copied.
    pub fn statuses_where(
        &self,
        keep: &dyn Fn(&InstancePlan) -> bool,
    ) -> Vec<(SharedPlan, InstanceStatus)> {
        let mut all = self
            .local
            .as_ref()
            .map(|l| AgentLink::statuses_where(&**l, keep))
            .unwrap_or_default();
        let remotes: Vec<Arc<RemoteAgent>> = self.remotes().values().cloned().collect();
        for remote in remotes {
            all.extend(AgentLink::statuses_where(&*remote, keep));
        }
        all
    }

    /// Every instance of every agent.
    pub fn statuses(&self) -> Vec<(SharedPlan, InstanceStatus)> {
        self.statuses_where(&|_| true)
    }

    /// The joined hosts' handles by id, taken out of the lock (their calls may block).
    fn joined(&self) -> Vec<(i64, Arc<RemoteAgent>)> {
        self.remotes()
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    /// What every agent's addresses measured, by the host that reported it (`None`:
    /// the local agent).
    pub fn address_counts(&self) -> Vec<(Option<i64>, Vec<wharf_api::traffic::AddressCounts>)> {
        let mut all = Vec::new();
        if let Some(local) = &self.local {
            all.push((None, local.traffic().counts()));
        }
        for (id, remote) in self.joined() {
            all.push((Some(id), remote.traffic()));
        }
        all
    }

    /// Instances by where they listen: (host, env, service, port) -> (node, instance).
    pub fn plans_by_port(&self) -> HashMap<PortKey, (String, u32)> {
        let mut by_port = HashMap::new();
        let mut add = |host: Option<i64>, plans: Vec<(SharedPlan, InstanceStatus)>| {
            for (plan, _) in plans {
                if let Some(port) = plan.port {
                    let k = &plan.key;
                    by_port.insert(
                        (host, k.env.clone(), k.service.clone(), port),
                        (k.node.clone(), k.instance),
                    );
                }
            }
        };
        if let Some(local) = &self.local {
            add(None, AgentLink::statuses(&**local));
        }
        for (id, remote) in self.joined() {
            add(Some(id), AgentLink::statuses(&*remote));
        }
        by_port
    }

    /// Loads the assignments of every known host, at controller start.
    pub fn restore(&self, secrets: &wharf_agent::SecretSource) {
        for host in self.store.hosts(None).unwrap_or_default() {
            self.remote(host.id).restore(secrets);
        }
    }
}

/// An instance's slot as the store's key.
pub fn slot_ref(key: &InstanceKey) -> wharf_store::InstanceKeyRef<'_> {
    (
        key.env.as_str(),
        key.service.as_str(),
        key.node.as_str(),
        key.instance,
    )
}

/// A reported row's slot, which the rows waiting to be stored are kept by.
fn row_slot(row: &InstanceRecord) -> (String, String, String, u32) {
    (
        row.env.clone(),
        row.service.clone(),
        row.node.clone(),
        row.instance,
    )
}
