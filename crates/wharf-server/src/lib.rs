//! The controller. It owns wharf's state (a SQLite store and the artifact files), serves
//! the HTTP API, and executes deploys through the agents. In `--dev` mode the agent of
//! the local host runs in the same process; the data still flows CLI -> API -> store ->
//! agent -> driver, with observations flowing back through the agent's status sink.

mod agent_api;
mod api_access;
mod api_config;
mod api_rollouts;
mod artifact_store;
mod auth;
mod cancels;
mod config_rollout;
mod config_service;
mod dashboard;
mod definitions;
mod deploy_guard;
pub mod edge;
mod error;
mod executor;
mod extract;
mod fleet;
mod hosts;
mod ingress;
mod listen;
mod logs;
mod metrics;
mod openapi;
mod port_owner;
mod rate;
mod recovery;
mod remote;
mod render;
mod replicated;
mod rollouts;
mod routes;
mod sink;
mod status;
mod traffic;
mod wire;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs2::FileExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wharf_agent::{Agent, FolderSource};
use wharf_core::model::DriverKind;
use wharf_driver::Driver;
use wharf_store::{SqliteStore, Store};

pub use artifact_store::ArtifactStore;
pub use error::ServerError;
pub use executor::Events;
pub use fleet::{AgentLink, Fleet};

/// The controller's shared state.
pub struct Controller {
    pub store: Arc<dyn Store>,
    pub fleet: Arc<Fleet>,
    /// Issues agent certificates; present when the agent listener runs.
    pub authority: Arc<wharf_pki::Authority>,
    pub artifacts: ArtifactStore,
    pub state_dir: PathBuf,
    /// Where agents connect.
    pub agent_url: String,
    /// Every API call needs a token (always so beyond loopback).
    pub auth_required: bool,
    /// Configuration overrides, secrets and what instances read at runtime.
    pub config: Arc<config_service::ConfigService>,
    /// The stored definition revisions every spec and policy comes from.
    pub definitions: Arc<definitions::Definitions>,
    /// Deploys, rollbacks, approvals and reschedules.
    pub executor: Arc<executor::Executor>,
    /// A secret made at each start and written to the owner-only `controller.json`:
    /// an open controller answers only callers that send it, and proves it holds it.
    pub local_key: String,
    /// How often one caller may compare secrets between environments.
    pub(crate) compare_limit: rate::RateLimit,
    /// The dashboard's sessions and one-time sign-in codes (`wharf ui`).
    pub(crate) ui_sessions: dashboard::Sessions,
    /// The specs of succeeded deployments, parsed once (status reports read them).
    pub(crate) running_specs: status::SpecCache,
}

/// The master keyring, shared by everything that uses it.
pub(crate) type SharedKeyring = Arc<std::sync::RwLock<wharf_secrets::Keyring>>;

/// Secret comparisons one caller may make a minute.
const COMPARES_PER_MINUTE: u32 = 10;

/// At most this many API connections at once.
const MAX_API_CONNECTIONS: usize = 10_000;

/// The header carrying the local key to an open controller.
pub const LOCAL_KEY_HEADER: &str = "x-wharf-local-key";

/// What a controller answers to `challenge` to prove it holds `key`.
pub fn controller_proof(key: &str, challenge: &str) -> String {
    wharf_secrets::keyed_digest(key.as_bytes(), &format!("wharf controller\0{challenge}"))
}

/// When process `pid` started (clock ticks since boot, from `/proc`), so a pid is never
/// mistaken for another process that reused it.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Written beside the state so CLIs of the same project find their controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerFile {
    pub url: String,
    pub pid: u32,
    /// When `pid` started ([`process_start_ticks`]): a CLI signals it only if it matches.
    #[serde(default)]
    pub started: u64,
    /// The build of wharf it runs ([`build_id`]).
    #[serde(default)]
    pub build: String,
    /// The local key ([`Controller::local_key`]).
    #[serde(default)]
    pub key: String,
    /// Where agents join and connect (mutual TLS).
    #[serde(default)]
    pub agent_url: String,
}

/// The file name of [`ControllerFile`] in a state folder.
pub const CONTROLLER_FILE: &str = "controller.json";

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another controller already runs for `{0}`")]
    AlreadyRunning(PathBuf),
    #[error(
        "refusing to listen on {0} without authentication: only a loopback controller may run open (add `--auth`)"
    )]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Keyring(#[from] wharf_secrets::SecretError),
    #[error("cannot use state folder `{path}`: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] wharf_store::StoreError),
    #[error(transparent)]
    Agent(#[from] wharf_agent::AgentError),
    #[error("certificate authority: {0}")]
    Pki(String),
    #[error("the local agent was given no driver")]
    NoDriver,
    #[error(
        "a development controller keeps its state in its own folder; several controllers share PostgreSQL as production controllers (drop `--dev`)"
    )]
    DevShared,
}

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where agents connect (mutual TLS).
    pub agent_listen: SocketAddr,
    /// Require an API token on every call. Forced on beyond loopback.
    pub auth: bool,
    /// The master keyring (default: `master.keys` in the state folder).
    pub master_key_file: Option<PathBuf>,
    /// The program (`wharf`) that holds the local agent's listening sockets across
    /// controller restarts; `None` binds them in this process.
    pub listener_holder: Option<PathBuf>,
    /// A PostgreSQL database (`postgres://USER@HOST/DB`) shared with other controllers,
    /// one of which leads; `None`: SQLite in the state folder, this controller alone.
    pub store: Option<String>,
    /// The API address followers name to callers while this controller leads
    /// (default: `http://` or `https://` and the listening address).
    pub advertise: Option<String>,
}

/// The file a controller with authentication writes its first admin token to.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Marks a state folder whose controller requires authentication.
const AUTH_MARKER: &str = "auth-required";

/// The drivers of the controller's own machine, made by the caller (the binary), so this
/// crate depends on the driver trait only. Called with the prefix of the local agent's
/// instance tags; the first driver is the default one.
pub type LocalDrivers = Box<dyn FnOnce(&str) -> Vec<(DriverKind, Arc<dyn Driver>)> + Send>;

/// How a controller runs.
pub enum Mode {
    /// The laptop's one process: the controller with an agent of its own machine, which
    /// runs the nodes of environments without `hosts:`.
    Dev(LocalDrivers),
    /// A controller only: authentication always, every node runs on a host that joined.
    Production,
}

/// Starts a controller on `listen`, keeping state under `state_dir`, until `shutdown`
/// is cancelled. In [`Mode::Dev`] its local agent's instances keep running after it
/// stops and are adopted by the next controller of the same state folder.
pub async fn run(
    state_dir: &Path,
    options: Options,
    mode: Mode,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let Options {
        listen,
        agent_listen,
        auth,
        master_key_file,
        listener_holder,
        store,
        advertise,
    } = options;
    // Once a state folder ran with authentication it keeps it: a controller restarted
    // without `--auth` (say, by a CLI after an upgrade) must not come back open. A
    // production controller always authenticates.
    let auth = auth || matches!(mode, Mode::Production) || state_dir.join(AUTH_MARKER).exists();
    if !listen.ip().is_loopback() && !auth {
        return Err(StartError::NotLoopback(listen));
    }
    let io = |source| StartError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    owner_only(state_dir).map_err(io)?;
    // Held for the controller's life: one controller per state folder.
    let lock = File::create(state_dir.join("controller.lock")).map_err(io)?;
    // (Holds nothing: readable by anyone who passes through, as a pid file is.)
    lock.try_lock_exclusive()
        .map_err(|_| StartError::AlreadyRunning(state_dir.to_owned()))?;

    let held = Held {
        lock,
        listen,
        agent_listen,
        auth,
        master_key_file,
        listener_holder,
    };
    match store {
        None => {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&state_dir.join("state.db"))?);
            serve(state_dir, held, mode, store, shutdown).await
        }
        Some(url) => {
            if matches!(mode, Mode::Dev(_)) {
                return Err(StartError::DevShared);
            }
            replicated::run(state_dir, held, url, advertise, shutdown).await
        }
    }
}

/// The master keyring: `--master-key-file`, else `master.keys` in the state folder.
pub(crate) fn open_keyring(
    state_dir: &Path,
    master_key_file: Option<PathBuf>,
) -> Result<wharf_secrets::Keyring, StartError> {
    Ok(wharf_secrets::Keyring::load_or_create(
        &master_key_file.unwrap_or_else(|| state_dir.join("master.keys")),
    )?)
}

/// What [`run`] checked and holds, for the controller it serves as.
pub(crate) struct Held {
    /// One controller per state folder, held for its life.
    pub lock: File,
    pub listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub auth: bool,
    pub master_key_file: Option<PathBuf>,
    pub listener_holder: Option<PathBuf>,
}

/// What runs when a deployment ends, set once by the binary (which hands the deploy's
/// freed memory back to the system; this crate does not choose the allocator).
static DEPLOY_ENDED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs each time a deployment ends; only the first call counts.
pub fn on_deploy_ended(hook: fn()) {
    let _ = DEPLOY_ENDED.set(hook);
}

pub(crate) fn deploy_ended() {
    if let Some(hook) = DEPLOY_ENDED.get() {
        hook();
    }
}

/// Serves as the controller of `store` until `shutdown`: this one alone (SQLite), or
/// the leader of the controllers sharing it (PostgreSQL).
pub(crate) async fn serve(
    state_dir: &Path,
    held: Held,
    mode: Mode,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let Held {
        lock,
        listen,
        agent_listen,
        auth,
        master_key_file,
        listener_holder,
    } = held;
    let io = |source| StartError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    let keyring = open_keyring(state_dir, master_key_file)?;
    // One keyring for everything that seals, opens or signs: a rotation is seen at once
    // by the configuration service and by whatever gives recovered plans their secrets.
    let keyring: SharedKeyring = Arc::new(std::sync::RwLock::new(keyring));
    if auth {
        std::fs::write(state_dir.join(AUTH_MARKER), "").map_err(io)?;
        bootstrap_admin_token(&*store, state_dir).map_err(io)?;
    }
    let artifacts = ArtifactStore::new(state_dir.join("artifacts"))
        .map_err(io)?
        .shared_through(store.clone());
    // Recover before serving: interrupted deploys are marked (and resolved once the
    // controller runs, below), instances adopted, and rows of instances that no longer
    // exist are dropped.
    store.interrupt_unfinished("the controller stopped during this deploy", now_millis())?;
    let splits = rollouts::stored_splits(&*store)?;
    // Bound before the agent recovers: containers it restarts read their configuration
    // through a gateway to this address.
    let listener = bind_remembered(state_dir, listen, "api-port").await?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    let agent = match mode {
        Mode::Dev(drivers) => {
            let agent = local_agent(state_dir, &store, &keyring, &artifacts, drivers)?;
            // Before recovery, which brings the addresses of adopted instances back.
            if let Some(program) = listener_holder {
                agent
                    .traffic()
                    .hold_listeners_in(wharf_agent::listeners::Listeners::new(
                        state_dir.join("agent").join("listeners.sock"),
                        program,
                    ));
            }
            // Before recovery too: an adopted instance of a rollout's new set joins
            // its split, not the main rotation.
            for (env, service, split) in &splits {
                agent.traffic().set_split(env, service, Some(split.clone()));
            }
            agent
                .open_gateways(Some(wharf_agent::gateways::ConfigUpstream::Api(
                    loopback_if_unspecified(addr),
                )))
                .await;
            let recovery = agent.recover().await;
            tracing::info!(
                adopted = recovery.adopted.len(),
                restarted = recovery.restarted.len(),
                orphans = recovery.orphans_stopped,
                "recovered instances"
            );
            Some(agent)
        }
        Mode::Production => None,
    };
    let fleet = Fleet::new(agent.clone(), store.clone());
    for (env, service, split) in splits {
        fleet.set_split(&env, &service, Some(split));
    }
    fleet.restore(&secret_source(store.clone(), keyring.clone()));
    // A set: a new leader of 10,000 instances checks each row against it.
    let live: std::collections::HashSet<_> = fleet
        .statuses()
        .into_iter()
        .map(|(p, _)| p.key.clone())
        .collect();
    for row in store.instances(None, None)? {
        let key = wharf_driver::InstanceKey {
            env: row.env.clone(),
            service: row.service.clone(),
            node: row.node.clone(),
            instance: row.instance,
        };
        if !live.contains(&key) {
            store.remove_instance(&row.env, &row.service, &row.node, row.instance)?;
        }
    }

    if store.shares_files() {
        replicated::share_authority(&*store, &keyring, &state_dir.join("pki"))?;
    }
    let authority = Arc::new(
        wharf_pki::Authority::load_or_create(&state_dir.join("pki"))
            .map_err(|e| StartError::Pki(e.to_string()))?,
    );
    let tls = authority
        .server_config()
        .map_err(|e| StartError::Pki(e.to_string()))?;
    // Agents may connect from other hosts: this listener authenticates them by their
    // certificates, so it may listen beyond loopback.
    let agent_listener = bind_remembered(state_dir, agent_listen, "agent-port").await?;
    let agent_addr = agent_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: agent_listen,
            source,
        })?;
    let fleet = Arc::new(fleet);
    let config = Arc::new(config_service::ConfigService {
        store: store.clone(),
        keyring: keyring.clone(),
        hub: Default::default(),
        api_url: format!("http://{}", loopback_if_unspecified(addr)),
        host_addresses: agent
            .as_ref()
            .map(|a| a.host_addresses())
            .unwrap_or_default(),
    });
    let definitions = Arc::new(definitions::Definitions::new(store.clone(), auth));
    let executor = Arc::new(executor::Executor {
        store: store.clone(),
        fleet: fleet.clone(),
        config: config.clone(),
        definitions: definitions.clone(),
        auth_required: auth,
        config_changes: Default::default(),
        cancels: Default::default(),
        reschedules: Default::default(),
    });
    let controller = Arc::new(Controller {
        store,
        fleet,
        authority,
        artifacts,
        state_dir: state_dir.to_owned(),
        agent_url: agent_url(agent_addr),
        auth_required: auth,
        config,
        definitions,
        executor,
        local_key: random_hex(32).map_err(io)?,
        compare_limit: rate::RateLimit::new(
            COMPARES_PER_MINUTE,
            std::time::Duration::from_secs(60),
        ),
        ui_sessions: Default::default(),
        running_specs: Default::default(),
    });
    tokio::spawn(hosts::watch_heartbeats(
        controller.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(hosts::store_observations(
        controller.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(ingress::watch(controller.clone(), shutdown.clone()));
    {
        let (executor, shutdown) = (controller.executor.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Rollouts first: their commands and timers do not wait for the others.
            executor.resume_rollouts().await;
            executor.resolve_interrupted().await;
            executor.close_started_rollouts();
            recovery::watch(executor, shutdown).await;
        });
    }
    tokio::spawn(agent_api::serve(
        agent_listener,
        tls,
        agent_api::router(controller.clone()),
        shutdown.clone(),
    ));
    write_controller_file(
        state_dir,
        &ControllerFile {
            url: format!("http://{addr}"),
            pid: std::process::id(),
            started: process_start_ticks(std::process::id()).unwrap_or(0),
            build: build_id(),
            key: controller.local_key.clone(),
            agent_url: agent_url(agent_addr),
        },
    )
    .map_err(io)?;
    tracing::info!(
        "controller listening on http://{addr}, state in {}",
        state_dir.display()
    );

    // Beyond loopback the API takes TLS, with a certificate from the controller's CA
    // that clients pin (`WHARF_CA`); plain HTTP is served to loopback peers only.
    let api_tls = if listen.ip().is_loopback() {
        None
    } else {
        let config = controller
            .authority
            .api_server_config()
            .map_err(|e| StartError::Pki(e.to_string()))?;
        tracing::info!(
            "the API takes HTTPS beyond loopback: clients pin its CA with WHARF_CA=sha256:{}",
            controller.authority.fingerprint()
        );
        Some(tokio_rustls::TlsAcceptor::from(config))
    };
    let app = routes::router(controller);
    let bounds = listen::Bounds {
        max_connections: MAX_API_CONNECTIONS,
        handshake: std::time::Duration::from_secs(10),
        idle: std::time::Duration::from_secs(75),
    };
    let tag: listen::Tagger<()> = Arc::new(|_, _| ());
    listen::serve(
        listener,
        listen::Security::LoopbackPlain(api_tls),
        app,
        bounds,
        shutdown.clone(),
        "API",
        tag,
    )
    .await;
    if let Some(agent) = &agent {
        // Connections waiting in the held sockets are the next controller's.
        agent
            .traffic()
            .close_gracefully(wharf_agent::CLOSE_LIMIT)
            .await;
        agent.detach();
    }
    let _ = std::fs::remove_file(state_dir.join(CONTROLLER_FILE));
    drop(lock);
    Ok(())
}

/// The agent of the controller's own machine, with the drivers the caller made.
fn local_agent(
    state_dir: &Path,
    store: &Arc<dyn Store>,
    keyring: &SharedKeyring,
    artifacts: &ArtifactStore,
    drivers: LocalDrivers,
) -> Result<Arc<Agent>, StartError> {
    let io = |source| StartError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    let agent_root = state_dir.join("agent");
    let agent_id = agent_id(&agent_root).map_err(io)?;
    let mut drivers = drivers(&format!("{agent_id}:")).into_iter();
    let Some((_, default)) = drivers.next() else {
        return Err(StartError::NoDriver);
    };
    let source = Box::new(FolderSource(artifacts.dir().to_owned()));
    let mut agent = Agent::new(
        &agent_id,
        &agent_root,
        default,
        source,
        Arc::new(sink::StoreSink(store.clone())),
    )?
    .with_secret_source(secret_source(store.clone(), keyring.clone()))
    .with_source_folders();
    for (kind, driver) in drivers {
        agent = agent.with_driver(kind, driver);
    }
    Ok(Arc::new(agent))
}

/// The state folder's parts that are its owner's alone: the authority's key, the
/// artifacts; the database (configuration values, token hashes, secret ciphertexts),
/// the master keys and the controller's log.
const PRIVATE_DIRS: &[&str] = &["pki", "artifacts"];
const PRIVATE_FILES: &[&str] = &[
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "master.keys",
    "server.log",
];

/// Makes the state folder its owner's: only its `agent/` folder's release and data
/// folders are reachable by other users (instances running as them), and nothing in it
/// can be listed by them.
fn owner_only(state_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let db = state_dir.join("state.db");
    // Only a folder that is wharf's (new, or holding its database) is restricted: a
    // WHARF_HOME pointed at a shared folder must not lose its permissions.
    const OURS: &[&str] = &[
        "server.log",
        "controller.lock",
        "controller.json",
        // Written by the CLI's supervisor of this controller (`wharf server --supervise`).
        "supervisor.pid",
        "api-port",
        "agent-port",
        "auth-required",
        "admin.token",
        "master.keys",
        "artifacts",
        "agent",
        "pki",
        "hosts",
    ];
    let mut entries = std::fs::read_dir(state_dir)?;
    let ours = db.exists()
        || entries.all(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name();
                OURS.iter().any(|o| name == *o) || name.to_string_lossy().starts_with('.')
            })
        });
    if ours {
        // Traversable, not listable: instances running as another user (`user:`) pass
        // through to their folders below `agent/`; what is not theirs is private below.
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o711))?;
        for dir in PRIVATE_DIRS {
            let path = state_dir.join(dir);
            std::fs::create_dir_all(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
    } else {
        tracing::warn!(
            "state folder {} is not wharf's alone; keep it private to its owner",
            state_dir.display()
        );
    }
    if !db.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db)?;
    }
    for name in PRIVATE_FILES {
        let path = state_dir.join(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The API's OpenAPI 3.1 document, as `GET /v1/openapi.json` serves it (and
/// `docs/openapi.json` holds it).
pub fn openapi_json() -> String {
    let (_, document) = routes::described();
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// Identifies the running executable: its version, size and modification time. Two
/// processes of the same wharf build agree on it.
pub fn build_id() -> String {
    let identity = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-{modified}", m.len())
        });
    format!(
        "{}+{}",
        env!("CARGO_PKG_VERSION"),
        identity.unwrap_or_default()
    )
}

fn write_controller_file(dir: &Path, file: &ControllerFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(".controller.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    // It holds the local key: its owner's only, from the moment it exists.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    out.write_all(&serde_json::to_vec(file).expect("serializes"))?;
    out.sync_all()?;
    std::fs::rename(tmp, dir.join(CONTROLLER_FILE))
}

/// Binds a listener. Agents keep the address they joined with and instances the
/// configuration URL they were given, so when no port is asked for, the port of the
/// previous run of this state folder is taken again.
async fn bind_remembered(
    state_dir: &Path,
    requested: SocketAddr,
    file: &str,
) -> Result<tokio::net::TcpListener, StartError> {
    let saved = state_dir.join(file);
    let listen_err = |addr| move |source| StartError::Listen { addr, source };
    let previous = std::fs::read_to_string(&saved)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok());
    if let Some(port) = previous.filter(|_| requested.port() == 0) {
        let previous = SocketAddr::new(requested.ip(), port);
        match tokio::net::TcpListener::bind(previous).await {
            Ok(listener) => return Ok(listener),
            Err(e) => tracing::warn!(
                "cannot listen on {previous} again ({e}); what was given the old address must be pointed at the new one"
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(listen_err(requested))?;
    let port = listener.local_addr().map_err(listen_err(requested))?.port();
    let _ = std::fs::write(&saved, port.to_string());
    Ok(listener)
}

/// The address agents on this machine use; one listening everywhere is reached at
/// loopback (agents elsewhere use this machine's address and the same port).
fn agent_url(addr: SocketAddr) -> String {
    format!("https://{}", loopback_if_unspecified(addr))
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// A controller with authentication and no tokens yet makes an admin token and writes it
/// to a file only its owner can read, as `kubeadm` and `k3s` do; the CLI on this machine
/// uses it, and an admin issues narrower tokens with it.
fn bootstrap_admin_token(store: &dyn Store, state_dir: &Path) -> std::io::Result<()> {
    if !store
        .api_tokens()
        .map_err(std::io::Error::other)?
        .is_empty()
    {
        return Ok(());
    }
    let (token, record) = auth::new_api_token("admin", vec!["*:*".into()], "wharf (bootstrap)")?;
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()?;
    }
    store
        .create_api_token(&record.0, &record.1)
        .map_err(std::io::Error::other)?;
    tracing::info!("made an admin token; it is in {}", path.display());
    Ok(())
}

impl Controller {
    /// Gives plans read back from disk their secrets.
    pub(crate) fn secret_source(&self) -> wharf_agent::SecretSource {
        secret_source(self.store.clone(), self.config.keyring.clone())
    }
}

/// Gives plans recovered from disk their secrets back.
fn secret_source(store: Arc<dyn Store>, keyring: SharedKeyring) -> wharf_agent::SecretSource {
    Arc::new(move |plan| {
        let keyring = keyring.read().unwrap_or_else(|p| p.into_inner());
        let mut values: std::collections::BTreeMap<String, String> =
            config_service::open_secrets(&*store, &keyring, &plan.key.service, &plan.key.env)
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value, _)| (key, value))
                .collect();
        if plan
            .secret_keys
            .iter()
            .any(|k| k == render::CONFIG_TOKEN_VAR)
        {
            values.insert(
                render::CONFIG_TOKEN_VAR.into(),
                auth::runtime_token(&keyring, &plan.key.env, &plan.key.service, now_millis()),
            );
        }
        values.retain(|k, _| plan.secret_keys.contains(k));
        values
    })
}

/// `bytes` random bytes from the kernel, in hex.
pub(crate) fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A stable id for this state folder's agent, so its instances are told apart from
/// other projects' on the same host.
fn agent_id(root: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(root)?;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = root.join("id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        // (One an older wharf wrote may be readable by others: it is not any more.)
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        return Ok(id.trim().to_owned());
    }
    let mut bytes = [0u8; 8];
    use std::io::{Read, Write};
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?
        .write_all(id.as_bytes())?;
    Ok(id)
}
