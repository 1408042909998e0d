//! An agent on its own host, connected to a controller: joins once with a token, then
//! watches its assignments (one long poll at a time), reconciles what runs against them
//! and reports what it observes, which is also its heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wharf_api::agent::{AgentReport, Capacity, ReportedFailure, ReportedInstance};
use wharf_artifact::ArtifactDigest;
use wharf_client::ClientError;
use wharf_client::agent::{AgentClient, Credentials, JoinToken};
use wharf_core::model::DriverKind;
use wharf_driver::{Driver, InstanceKey};

use crate::{Agent, AgentError, ArtifactSource, InstancePlan, InstanceStatus, StatusSink};

/// How often the agent reports when nothing changes (its heartbeat).
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What a host keeps after joining (the key is in `key.pem`, owner-only).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Joined {
    host_id: i64,
    env: String,
    controller: String,
    cert: String,
    ca: String,
}

/// Why a connected agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "this host has not joined a controller yet; pass `--join-token` (from `wharf token create`)"
    )]
    NotJoined,
    #[error("invalid join token: {0}")]
    BadToken(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("cannot use agent state `{path}`: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("the controller refused this agent's credential: {0}")]
    Refused(String),
    #[error("cannot listen for other hosts on {0}: {1}; pick another with `--mesh-listen`")]
    Mesh(std::net::SocketAddr, std::io::Error),
}

/// How to reach the controller and who this host is.
pub struct ConnectOptions {
    pub state_dir: PathBuf,
    pub controller: String,
    pub join_token: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Where other hosts' agents reach this host's instances (mutual TLS); port 0 picks
    /// a free one, which the agent reports.
    pub mesh_listen: std::net::SocketAddr,
    /// The program (`wharf`) that holds the listening sockets of the service addresses
    /// and ingresses across restarts of this agent; `None` binds them here.
    pub listener_holder: Option<PathBuf>,
}

/// The mesh: this agent's listener for other hosts, and its dialer to theirs.
struct Mesh {
    port: u16,
    dialer: Arc<wharf_proxy::mesh::MeshDialer>,
    /// The hosts the controller says may reach this one.
    peers: Arc<std::sync::RwLock<std::collections::HashSet<(i64, u64)>>>,
    /// Where they are remembered for the next start.
    known: PathBuf,
}

impl Mesh {
    fn set_peers(&self, peers: &[(i64, u64)]) {
        let peers: std::collections::HashSet<(i64, u64)> = peers.iter().copied().collect();
        let mut current = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if *current != peers {
            let _ = serde_json::to_vec(&peers).map(|b| std::fs::write(&self.known, b));
            *current = peers;
        }
    }
}

/// Starts the mesh listener: a caller is admitted to a port only with a certificate of
/// a host the controller lists as a peer, and only to an instance in a rotation here.
async fn start_mesh(
    options: &ConnectOptions,
    credentials: &Credentials,
    agent: &Arc<Agent>,
    stop: &CancellationToken,
) -> Result<Mesh, ConnectError> {
    let tls = wharf_pki::mesh_tls(
        &credentials.cert_pem,
        &credentials.key_pem,
        &credentials.ca_pem,
    )
    .map_err(|e| state_err(&options.state_dir, e))?;
    // Port 0 picks a port once: a restarted agent keeps it (and, held, its waiting
    // connections), so other hosts' routes stay right across the restart.
    let chosen = options.state_dir.join("mesh_port");
    let mut listen = options.mesh_listen;
    if listen.port() == 0
        && let Some(port) = std::fs::read_to_string(&chosen)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
    {
        listen.set_port(port);
    }
    let listener = agent
        .traffic()
        .listen(listen)
        .or_else(|_| agent.traffic().listen(options.mesh_listen))
        .map_err(|e| ConnectError::Mesh(options.mesh_listen, e))?;
    let port = listener
        .local_addr()
        .map_err(|e| ConnectError::Mesh(options.mesh_listen, e))?
        .port();
    let _ = std::fs::write(&chosen, port.to_string());
    // The peers the controller last named, until it names them again.
    let known = options.state_dir.join("mesh_peers.json");
    let remembered: std::collections::HashSet<(i64, u64)> = std::fs::read(&known)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let peers = Arc::new(std::sync::RwLock::new(remembered));
    let (traffic, allowed) = (Arc::downgrade(agent.traffic()), peers.clone());
    let inbound = wharf_proxy::mesh::MeshInbound::new(Box::new(move |cert, port| {
        let Some(caller) = wharf_pki::agent_identity(cert) else {
            return false;
        };
        let peer = allowed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(caller.host_id, caller.serial));
        peer && traffic.upgrade().is_some_and(|t| t.serves_port(port))
    }));
    agent.traffic().set_inbound(inbound.clone());
    tokio::spawn(wharf_proxy::mesh::serve_mesh(
        listener,
        tls.server,
        inbound,
        stop.clone(),
    ));
    tracing::info!("reachable by the environment's other hosts on port {port} (mutual TLS)");
    Ok(Mesh {
        port,
        dialer: Arc::new(wharf_proxy::mesh::MeshDialer::new(tls.client)),
        peers,
        known,
    })
}

fn state_err(path: &Path, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Loads this host's credentials, joining first if it has none.
/// Joins with the options' token and keeps the credentials, without running: what a
/// bootstrap does before it installs the agent as a service. Already joined: nothing.
pub async fn join_only(options: &ConnectOptions) -> Result<(), ConnectError> {
    credentials(options).await.map(|_| ())
}

async fn credentials(options: &ConnectOptions) -> Result<(Joined, Credentials), ConnectError> {
    let dir = &options.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
    let (joined_path, key_path) = (dir.join("joined.json"), dir.join("key.pem"));
    if let (Ok(text), Ok(key_pem)) = (
        std::fs::read(&joined_path),
        std::fs::read_to_string(&key_path),
    ) {
        let joined: Joined =
            serde_json::from_slice(&text).map_err(|e| state_err(&joined_path, e))?;
        let credentials = Credentials {
            key_pem,
            cert_pem: joined.cert.clone(),
            ca_pem: joined.ca.clone(),
        };
        return Ok((joined, credentials));
    }
    let token: JoinToken = options
        .join_token
        .as_deref()
        .ok_or(ConnectError::NotJoined)?
        .parse()
        .map_err(ConnectError::BadToken)?;
    let (response, credentials) = wharf_client::agent::join(
        &options.controller,
        &token,
        &options.name,
        options.labels.clone(),
        capacity(),
    )
    .await?;
    wharf_pki::write_private(&key_path, &credentials.key_pem)
        .map_err(|e| state_err(&key_path, e))?;
    let joined = Joined {
        host_id: response.host_id,
        env: response.env,
        controller: options.controller.clone(),
        cert: response.cert,
        ca: response.ca,
    };
    std::fs::write(
        &joined_path,
        serde_json::to_vec_pretty(&joined).expect("serializes"),
    )
    .map_err(|e| state_err(&joined_path, e))?;
    tracing::info!(host = %options.name, env = %joined.env, "joined the controller at {}", options.controller);
    Ok((joined, credentials))
}

/// This host's CPU and memory.
pub fn capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let memory_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0);
    Capacity {
        cpu_millis: cpus * 1000,
        memory_bytes: memory_kb * 1024,
    }
}

/// Downloads artifacts from the controller into `downloads/`, resumably; a finished
/// download is checked against its digest when it is unpacked.
struct ControllerArtifacts {
    client: AgentClient,
    downloads: PathBuf,
}

#[async_trait]
impl ArtifactSource for ControllerArtifacts {
    async fn fetch(&self, digest: &ArtifactDigest) -> Result<Vec<u8>, String> {
        std::fs::create_dir_all(&self.downloads).map_err(|e| e.to_string())?;
        let partial = self.downloads.join(format!("{}.partial", digest.hex()));
        let bytes = self
            .client
            .artifact(digest.hex(), &partial)
            .await
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&partial);
        if &ArtifactDigest::of(&bytes) != digest {
            return Err(format!(
                "the download of {digest} is corrupt; it will be fetched again"
            ));
        }
        Ok(bytes)
    }
}

/// Wakes the reporter whenever an instance changes.
struct ReportSoon(Arc<Notify>);

impl StatusSink for ReportSoon {
    fn instance_changed(&self, _: &InstancePlan, _: &InstanceStatus) {
        self.0.notify_one();
    }
}

/// Health failures of plans, reported until the controller withdraws the plan.
type Failures = Arc<Mutex<HashMap<InstanceKey, (i64, ReportedFailure)>>>;

/// Runs the agent until `stop` is set. Instances keep running when it returns.
/// `drivers` makes the drivers for an agent id, the process driver first: instances'
/// tags start with `<id>:`.
pub async fn run(
    options: ConnectOptions,
    drivers: impl FnOnce(&str) -> Vec<(DriverKind, Arc<dyn Driver>)>,
    stop: CancellationToken,
) -> Result<(), ConnectError> {
    let (joined, credentials) = credentials(&options).await?;
    let client = AgentClient::connect(&options.controller, &credentials).await?;
    let changed = Arc::new(Notify::new());
    // Unique on this machine even when agents of several controllers share it: the
    // driver finds (and adopts or stops) only processes tagged with this id.
    let controller =
        wharf_pki::fingerprint_pem(&joined.ca).map_err(|e| state_err(&options.state_dir, e))?;
    let id = format!("{}-host{}", &controller[..12], joined.host_id);
    let mut drivers = drivers(&id).into_iter();
    let Some((_, process)) = drivers.next() else {
        return Err(ConnectError::Agent(AgentError::NoDriver(
            DriverKind::Process,
        )));
    };
    let mut agent = Agent::new(
        &id,
        &options.state_dir,
        process,
        Box::new(ControllerArtifacts {
            client: client.clone(),
            downloads: options.state_dir.join("downloads"),
        }),
        Arc::new(ReportSoon(changed.clone())),
    )?;
    for (kind, driver) in drivers {
        agent = agent.with_driver(kind, driver);
    }
    // What a restarted instance reads its configuration with: the newest token the
    // controller sent (the one in the plan expires, or dies with a key rotation).
    let tokens: Tokens = Arc::default();
    let latest = tokens.clone();
    let agent = Arc::new(agent.with_secret_source(Arc::new(move |plan| {
        let key = format!("{}/{}", plan.key.env, plan.key.service);
        latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map(|t| {
                std::collections::BTreeMap::from([(
                    wharf_api::agent::CONFIG_TOKEN_VAR.to_owned(),
                    t.clone(),
                )])
            })
            .unwrap_or_default()
    })));
    // Before recovery, which brings the addresses of adopted instances back: they take
    // the held sockets, and the connections waiting in them.
    if let Some(program) = &options.listener_holder {
        agent
            .traffic()
            .hold_listeners_in(crate::listeners::Listeners::new(
                options.state_dir.join("listeners.sock"),
                program.clone(),
            ));
    }
    agent
        .traffic()
        .remember_splits_in(options.state_dir.join("traffic_splits.json"));
    // Containers here reach their peers at the bridge's gateway. The controller is
    // elsewhere: instances read their configuration from this agent's gateway, which
    // passes the reads to whichever controller leads.
    agent
        .open_gateways(Some(crate::gateways::ConfigUpstream::Controllers {
            client: client.clone(),
            port_file: options.state_dir.join("config-gateway.port"),
        }))
        .await;
    let recovery = agent.recover().await;
    tracing::info!(
        adopted = recovery.adopted.len(),
        restarted = recovery.restarted.len(),
        "agent started for `{}` in `{}`",
        options.name,
        joined.env
    );
    let failures: Failures = Arc::default();
    let mesh = start_mesh(&options, &credentials, &agent, &stop).await?;

    // A refused report (revoked credential) ends the agent as a refused watch does.
    let refused = stop.child_token();
    let reporter = tokio::spawn(report_loop(
        client.clone(),
        agent.clone(),
        failures.clone(),
        changed.clone(),
        refused.clone(),
        mesh.port,
    ));
    let watching = Watching {
        host_id: joined.host_id,
        client: &client,
        agent: &agent,
        env: &joined.env,
        mesh: &mesh,
        tokens: &tokens,
    };
    let result = watch_loop(watching, &failures, &changed, &refused).await;
    reporter.abort();
    let reported = reporter.await.ok().flatten();
    if result.is_ok() && reported.is_none() {
        leave_the_mesh(&client, &agent, &failures, mesh.port).await;
    } // Connections waiting in the held sockets are the next agent's.
    agent.traffic().close_gracefully(crate::CLOSE_LIMIT).await;
    agent.detach();
    match (result, reported) {
        (Ok(()), Some(refusal)) => Err(ConnectError::Refused(refusal)),
        (result, _) => result,
    }
}

/// Before a stopping agent closes: it tells the controller, which takes its instances
/// out of the other hosts' routes; their proxies then close the tunnels they keep here
/// once what they carry is answered. Waits for that, up to [`crate::CLOSE_LIMIT`].
async fn leave_the_mesh(
    client: &AgentClient,
    agent: &Arc<Agent>,
    failures: &Failures,
    mesh_port: u16,
) {
    let report = AgentReport {
        leaving: true,
        ..report_now(agent, failures, mesh_port)
    };
    let told = tokio::time::timeout(Duration::from_secs(1), client.report(&report)).await;
    if !matches!(told, Ok(Ok(()))) {
        return;
    }
    let begun = std::time::Instant::now();
    while agent.traffic().mesh_tunnels() > 0 && begun.elapsed() < crate::CLOSE_LIMIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the agent runs and measured now, as a report.
fn report_now(agent: &Agent, failures: &Failures, mesh_port: u16) -> AgentReport {
    AgentReport {
        mesh_port: Some(mesh_port),
        traffic: agent.traffic().counts(),
        instances: agent
            .statuses()
            .into_iter()
            .map(|(plan, status)| {
                let failure = failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&plan.key)
                    .filter(|(id, _)| *id == plan.deployment_id)
                    .map(|(_, f)| f.clone());
                ReportedInstance {
                    plan: (&plan).into(),
                    status,
                    failure,
                }
            })
            .collect(),
        leaving: false,
    }
}

/// Reports until cancelled; returns the controller's refusal if it refused a report.
async fn report_loop(
    client: AgentClient,
    agent: Arc<Agent>,
    failures: Failures,
    changed: Arc<Notify>,
    refused: CancellationToken,
    mesh_port: u16,
) -> Option<String> {
    loop {
        let report = report_now(&agent, &failures, mesh_port);
        match client.report(&report).await {
            Ok(()) => {}
            Err(ClientError::Api {
                status: 403, error, ..
            }) => {
                refused.cancel();
                return Some(error);
            }
            Err(e) => tracing::warn!("cannot report to the controller: {e}"),
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
}

/// The newest runtime configuration token per `ENV/SERVICE`.
type Tokens = Arc<std::sync::RwLock<std::collections::BTreeMap<String, String>>>;

/// What the watch loop works with.
struct Watching<'a> {
    /// This host's id: its own instances are left out of the routes it is sent.
    host_id: i64,
    client: &'a AgentClient,
    agent: &'a Arc<Agent>,
    env: &'a str,
    mesh: &'a Mesh,
    tokens: &'a Tokens,
}

/// Reconciles to the newest plans, one reconcile at a time, apart from the watch: a
/// stop that drains for seconds does not hold back the routes that follow it (which
/// the drains of other hosts wait for).
fn reconciler(agent: Arc<Agent>, failures: Failures, changed: Arc<Notify>) -> Reconciler {
    let latest: Arc<Mutex<Option<Vec<InstancePlan>>>> = Arc::default();
    let wake = Arc::new(Notify::new());
    let (slot, woken) = (latest.clone(), wake.clone());
    let task = tokio::spawn(async move {
        loop {
            woken.notified().await;
            let plans = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(plans) = plans {
                reconcile(&agent, plans, &failures, &changed).await;
            }
        }
    });
    Reconciler {
        latest,
        wake,
        _task: AbortOnDrop(task),
    }
}

/// The newest plans not reconciled yet, and the task that reconciles them.
struct Reconciler {
    latest: Arc<Mutex<Option<Vec<InstancePlan>>>>,
    wake: Arc<Notify>,
    _task: AbortOnDrop,
}

impl Reconciler {
    fn reconcile(&self, plans: Vec<InstancePlan>) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(plans);
        self.wake.notify_one();
    }
}

async fn watch_loop(
    w: Watching<'_>,
    failures: &Failures,
    changed: &Arc<Notify>,
    stop: &CancellationToken,
) -> Result<(), ConnectError> {
    let Watching {
        host_id,
        client,
        agent,
        env,
        mesh,
        tokens,
    } = w;
    let reconciler = reconciler(agent.clone(), failures.clone(), changed.clone());
    let mut index = 0;
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let assignments = tokio::select! {
            a = client.assignments(index) => a,
            _ = stop.cancelled() => return Ok(()),
        };
        match assignments {
            Ok(a) => {
                let a = a.for_host(host_id);
                backoff = Duration::from_millis(200);
                index = a.revision;
                *tokens.write().unwrap_or_else(|p| p.into_inner()) = a.config_tokens;
                for request in a.log_requests {
                    let (client, agent) = (client.clone(), agent.clone());
                    tokio::spawn(async move {
                        let path = agent.log_path(&request.key);
                        let text = crate::logs::tail_from(&path, request.lines, request.since);
                        if let Err(e) = client.send_log(request.id, text).await {
                            tracing::warn!("cannot send the log of {}: {e}", request.key);
                        }
                    });
                }
                for task in a.tasks {
                    let (client, agent) = (client.clone(), agent.clone());
                    tokio::spawn(async move {
                        let answer = crate::tasks::run(&agent, task.work).await;
                        if let Err(e) = client.send_answer(task.id, &answer).await {
                            tracing::warn!("cannot send the answer to task {}: {e}", task.id);
                        }
                    });
                }
                mesh.set_peers(&a.mesh_peers);
                agent.traffic().set_routes(env, &a.routes, &mesh.dialer);
                // One that could not listen is tried again with the next answer.
                let entries = a.ingress.map(|i| (env.to_owned(), i)).into_iter().collect();
                let _ = agent.traffic().set_ingresses(entries);
                reconciler.reconcile(a.plans);
            }
            Err(ClientError::Api {
                status: 403, error, ..
            }) => return Err(ConnectError::Refused(error)),
            Err(e) => {
                tracing::warn!("cannot reach the controller: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    Ok(())
}

/// Ends a task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn same_plan(a: &InstancePlan, b: &InstancePlan) -> bool {
    a.deployment_id == b.deployment_id && a.digest == b.digest && a.config_digest == b.config_digest
}

/// Makes what runs match `plans`: stops what is no longer (or differently) wanted, then
/// starts what is missing and watches each new instance's health.
async fn reconcile(
    agent: &Arc<Agent>,
    plans: Vec<InstancePlan>,
    failures: &Failures,
    changed: &Arc<Notify>,
) {
    let wanted: HashMap<InstanceKey, InstancePlan> =
        plans.into_iter().map(|p| (p.key.clone(), p)).collect();
    for (running, _) in agent.statuses() {
        if !wanted
            .get(&running.key)
            .is_some_and(|w| same_plan(w, &running))
        {
            agent.stop(&running.key).await;
        }
    }
    failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|k, (id, _)| wanted.get(k).is_some_and(|w| w.deployment_id == *id));
    for plan in wanted.into_values() {
        if agent.plan(&plan.key).is_some() {
            agent.resupply(&plan).await;
            if let Some(Err(e)) = agent.reload_if_asked(&plan).await {
                tracing::warn!(instance = %plan.key, "cannot signal it to reload: {e}");
            }
            continue;
        }
        let key = plan.key.clone();
        let deployment = plan.deployment_id;
        let timeout = plan
            .health
            .as_ref()
            .map(|h| h.timeout)
            .unwrap_or(Duration::from_secs(30));
        if let Err(e) = agent.start(plan).await {
            let failure = ReportedFailure {
                reason: format!("cannot start: {e}"),
                log_tail: String::new(),
            };
            failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (deployment, failure));
            changed.notify_one();
            continue;
        }
        let (agent, failures, changed) = (agent.clone(), failures.clone(), changed.clone());
        tokio::spawn(async move {
            if let Err(unhealthy) = agent.wait_healthy(&key, timeout).await {
                let failure = ReportedFailure {
                    reason: unhealthy.reason,
                    log_tail: unhealthy.log_tail,
                };
                failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (deployment, failure));
            }
            changed.notify_one();
        });
    }
}
