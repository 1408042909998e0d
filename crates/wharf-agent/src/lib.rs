//! The host agent. The controller tells it which instances to run; it prepares their
//! artifacts, starts them through a [`Driver`], supervises them (restarts with backoff,
//! health checks, log rotation) and reports what it observes. It keeps a small state file
//! per instance so that a restarted agent adopts running instances instead of restarting
//! them.

pub mod connected;
mod entry;
pub mod gateways;
pub mod health;
mod instance_files;
pub mod listeners;
pub mod logs;
mod plan;
mod releases;
mod sockets;
mod supervisor;
mod tasks;

/// How long a stopping agent lets its addresses' connections finish what they carry.
pub const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);
pub mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use wharf_core::lifecycle::{Health, InstanceState};
use wharf_core::model::DriverKind;
use wharf_driver::{Driver, Exit, Found, InstanceKey, LaunchSpec, Running};

pub use plan::{InstancePlan, InstanceStatus, NoSink, Reload, StatusSink};
pub use releases::{ArtifactSource, FolderSource, Releases};
use supervisor::{Control, Supervisor};

/// Probe interval while an instance is new.
const FAST_PROBE: Duration = Duration::from_millis(10);
/// How long a new instance is probed at [`FAST_PROBE`].
const FAST_PROBING_FOR: Duration = Duration::from_secs(2);

/// Why the agent could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("artifact: {0}")]
    Artifact(String),
    #[error("{key} is already running")]
    AlreadyRunning { key: InstanceKey },
    #[error(transparent)]
    Driver(#[from] wharf_driver::DriverError),
    #[error("this agent has no {0:?} driver")]
    NoDriver(DriverKind),
    #[error("cannot write the instance's files: {0}")]
    Files(String),
    #[error("cannot write agent state `{path}`: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A new instance that did not become healthy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Unhealthy {
    /// The failed check or how the process ended.
    pub reason: String,
    /// The last lines of the instance's log.
    pub log_tail: String,
}

/// What [`Agent::recover`] found after a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Instances still running, now watched again.
    pub adopted: Vec<InstanceKey>,
    /// Instances that had died meanwhile and were started again.
    pub restarted: Vec<InstanceKey>,
    /// Tagged processes with no instance record, stopped.
    pub orphans_stopped: usize,
}

struct Handle {
    plan: InstancePlan,
    workdir: PathBuf,
    log_path: PathBuf,
    status: Arc<watch::Sender<InstanceStatus>>,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// The agent of one host.
pub struct Agent {
    id: String,
    state_dir: PathBuf,
    logs_dir: PathBuf,
    /// The instances' own persistent folders (`data/ENV/SERVICE/SLOT`).
    data_dir: PathBuf,
    /// The process driver, and any other the agent was given.
    drivers: std::collections::BTreeMap<DriverKind, Arc<dyn Driver>>,
    releases: Releases,
    sink: Arc<dyn StatusSink>,
    instances: Mutex<HashMap<InstanceKey, Handle>>,
    /// Gives back the secret values of a plan read from disk (where they are not kept).
    secret_source: Option<SecretSource>,
    /// The services' stable addresses on this host.
    traffic: Arc<traffic::Traffic>,
    /// Where instances that do not share the host's network reach it.
    gateways: gateways::Gateways,
    /// Runs services straight from folders of this machine (`wharf dev`): only the
    /// agent of the controller's own machine, whose folders the CLI's are.
    source_folders: bool,
}

/// Looks up the secret values of a recovered plan.
pub type SecretSource = Arc<dyn Fn(&InstancePlan) -> BTreeMap<String, String> + Send + Sync>;

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Agent {
    /// An agent keeping its state under `root` (`instances/`, `releases/`, `logs/`,
    /// `data/`).
    /// `id` distinguishes its instances from other agents' on the same host.
    pub fn new(
        id: &str,
        root: &Path,
        driver: Arc<dyn Driver>,
        source: Box<dyn ArtifactSource>,
        sink: Arc<dyn StatusSink>,
    ) -> Result<Self, AgentError> {
        let state_dir = root.join("instances");
        let logs_dir = root.join("logs");
        let data_dir = root.join("data");
        // Instances that run as another user (`user:`) pass through the root to their
        // release and data folders: it and the data folder are traversable, not
        // listable; instance records and logs are the agent's user's only, and so is
        // its id (with it, another user could tag a process as one of its instances).
        let layout = [
            (root.to_owned(), 0o711),
            (state_dir.clone(), 0o700),
            (logs_dir.clone(), 0o700),
            (data_dir.clone(), 0o711),
        ];
        for (dir, mode) in layout {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|source| AgentError::State { path: dir, source })?;
        }
        Ok(Self {
            id: id.to_owned(),
            state_dir,
            logs_dir,
            data_dir,
            drivers: [(DriverKind::Process, driver)].into_iter().collect(),
            releases: Releases::new(root.join("releases"), source),
            sink,
            instances: Mutex::new(HashMap::new()),
            secret_source: None,
            traffic: Arc::default(),
            gateways: Default::default(),
            source_folders: false,
        })
    }

    /// Lets `wharf dev` run services straight from their folders on this machine.
    pub fn with_source_folders(mut self) -> Self {
        self.source_folders = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Handle>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tag(&self, key: &InstanceKey) -> String {
        format!("{}:{}", self.id, key.tag())
    }

    fn state_file(&self, key: &InstanceKey) -> PathBuf {
        self.state_dir
            .join(format!("{}.json", key.tag().replace('/', "--")))
    }

    /// Why this host cannot enforce resource limits, if it cannot.
    pub fn limits_unavailable(&self) -> Option<String> {
        self.drivers[&DriverKind::Process].limits_unavailable()
    }

    /// Where recovered plans get their secrets back from.
    pub fn with_secret_source(mut self, source: SecretSource) -> Self {
        self.secret_source = Some(source);
        self
    }

    /// Sends a signal (`HUP`, `USR1`, ...) to a running instance, for a reload.
    pub async fn signal(&self, key: &InstanceKey, signal: &str) -> Result<(), String> {
        let control = self
            .lock()
            .get(key)
            .map(|h| h.control.clone())
            .ok_or_else(|| format!("{key} does not run here"))?;
        let (done, answer) = oneshot::channel();
        control
            .send(Control::Signal {
                signal: signal.to_owned(),
                done,
            })
            .await
            .map_err(|_| format!("{key} is stopping"))?;
        answer.await.map_err(|_| format!("{key} is stopping"))?
    }

    /// What a running instance was started with, and its driver: for work done beside
    /// it (an exec, a copy).
    fn running_launch(&self, key: &InstanceKey) -> Result<(LaunchSpec, Arc<dyn Driver>), String> {
        let (plan, workdir) = self
            .lock()
            .get(key)
            .map(|h| (h.plan.clone(), h.workdir.clone()))
            .ok_or_else(|| format!("{key} does not run here"))?;
        let launch = self
            .launch_spec(&plan, &workdir)
            .map_err(|e| e.to_string())?;
        let driver = self.driver(plan.driver).map_err(|e| e.to_string())?;
        Ok((launch, driver))
    }

    /// Runs `argv` once in a running instance's environment and folder (`wharf exec`).
    pub async fn exec(
        &self,
        key: &InstanceKey,
        argv: &[String],
        limit: std::time::Duration,
    ) -> Result<wharf_driver::ExecOutput, String> {
        let (launch, driver) = self.running_launch(key)?;
        driver
            .exec(&launch, argv, limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// Copies `files` (relative to the instance's folder) into a running instance, for
    /// `wharf dev`'s sync; nothing to do for a process, which runs from the folder.
    pub async fn copy_in(&self, key: &InstanceKey, files: &[PathBuf]) -> Result<(), String> {
        let (launch, driver) = self.running_launch(key)?;
        driver
            .copy_in(&launch, files)
            .await
            .map_err(|e| e.to_string())
    }

    /// Gives a running instance the secret values of `plan` (its own plan) when it
    /// lacks them, as after an agent restart (secrets are never on disk), so that its
    /// next restart has them.
    pub async fn resupply(&self, plan: &InstancePlan) {
        let (control, workdir) = {
            let mut instances = self.lock();
            let Some(handle) = instances.get_mut(&plan.key) else {
                return;
            };
            let lacking = plan
                .secret_keys
                .iter()
                .any(|k| !handle.plan.env.contains_key(k));
            if !lacking || handle.plan.config_digest != plan.config_digest {
                return;
            }
            handle.plan = plan.clone();
            (handle.control.clone(), handle.workdir.clone())
        };
        if let Ok(launch) = self.prepared_launch(plan, &workdir) {
            let _ = control.send(Control::Relaunch(Box::new(launch))).await;
        }
    }

    /// Sends the reload signal a plan asks for, once per generation, after writing the
    /// plan's files (rendered with the new configuration).
    pub async fn reload_if_asked(&self, plan: &InstancePlan) -> Option<Result<(), String>> {
        let reload = plan.reload.clone()?;
        self.reload(&plan.key, reload, &plan.files).await
    }

    /// Rewrites an instance's files, then sends it `reload.signal`; nothing when it has
    /// seen this generation already.
    pub async fn reload(
        &self,
        key: &InstanceKey,
        reload: Reload,
        files: &std::collections::BTreeMap<String, String>,
    ) -> Option<Result<(), String>> {
        let newer = {
            let mut instances = self.lock();
            let handle = instances.get_mut(key)?;
            let seen = handle.plan.reload.as_ref().map(|r| r.generation);
            if seen.is_some_and(|g| g >= reload.generation) {
                return None;
            }
            handle.plan.reload = Some(reload.clone());
            handle.plan.files = files.clone();
            handle.plan.clone()
        };
        // Remembered on disk, so a restarted agent does not signal the same change again
        // (and writes these files, not the old ones, when it starts the instance again).
        let _ = self.write_state(&newer);
        if let Err(e) =
            instance_files::write(&self.instance_data_dir(&newer), files, &self.placer(&newer))
        {
            return Some(Err(e));
        }
        Some(self.signal(key, &reload.signal).await)
    }

    /// Asks the drivers where their instances reach this host when not on loopback (a
    /// container bridge's gateway) and opens the service addresses there too, with a
    /// configuration gateway to the controller's API at `controller` when given. Call
    /// it once, before recovery and before any address opens.
    pub async fn open_gateways(&self, upstream: Option<gateways::ConfigUpstream>) {
        gateways::open(&self.gateways, &self.traffic, &self.drivers, upstream).await;
    }

    /// Where instances of each driver reach this host, for those that do not on
    /// loopback (known once [`Agent::open_gateways`] ran).
    pub fn host_addresses(&self) -> BTreeMap<DriverKind, std::net::IpAddr> {
        self.gateways.hosts()
    }

    /// Fills in what only this agent knows where the controller left placeholders: the
    /// instance's data folder and the address it reaches this host at.
    fn placer(&self, plan: &InstancePlan) -> impl Fn(&str) -> String + use<> {
        let data = self.instance_data_dir(plan).display().to_string();
        let host = self.gateways.host_for(plan.driver).to_string();
        move |text: &str| {
            text.replace(wharf_core::template::DATA_DIR_PLACEHOLDER, &data)
                .replace(wharf_core::template::HOST_PLACEHOLDER, &host)
        }
    }

    /// Adds a driver (the process driver is always there).
    pub fn with_driver(mut self, kind: DriverKind, driver: Arc<dyn Driver>) -> Self {
        self.drivers.insert(kind, driver);
        self
    }

    fn driver(&self, kind: DriverKind) -> Result<Arc<dyn Driver>, AgentError> {
        self.drivers
            .get(&kind)
            .cloned()
            .ok_or(AgentError::NoDriver(kind))
    }

    /// Where an instance runs: its unpacked artifact, or (for images) the agent's folder.
    async fn workdir(&self, plan: &InstancePlan) -> Result<PathBuf, AgentError> {
        // An image needs nothing here; an archive is unpacked (for the docker driver, the
        // unpacked folder becomes an image's root filesystem).
        if plan.image {
            return Ok(self.state_dir.clone());
        }
        // `wharf dev`: the service's folder itself, as it is on this machine.
        if let Some(folder) = wharf_core::dev::source_of(&plan.digest) {
            if !self.source_folders {
                return Err(AgentError::Artifact(
                    "this agent runs artifacts only: `wharf dev` runs services on the controller's own machine".into(),
                ));
            }
            if !folder.is_dir() {
                return Err(AgentError::Artifact(format!(
                    "the folder {} `wharf dev` runs from is gone",
                    folder.display()
                )));
            }
            return Ok(folder);
        }
        self.releases.prepare(&plan.digest).await
    }

    /// The log file of an instance.
    pub fn log_path(&self, key: &InstanceKey) -> PathBuf {
        self.logs_dir
            .join(&key.env)
            .join(&key.service)
            .join(format!("{}-{}.log", key.node, key.instance))
    }

    /// Starts an instance and supervises it. Returns once its process runs; use
    /// [`Agent::wait_healthy`] to wait for its health check.
    pub async fn start(&self, plan: InstancePlan) -> Result<(), AgentError> {
        if self.lock().contains_key(&plan.key) {
            return Err(AgentError::AlreadyRunning { key: plan.key });
        }
        let driver = self.driver(plan.driver)?;
        let workdir = self.workdir(&plan).await?;
        self.write_state(&plan)?;
        let launch = self.prepared_launch(&plan, &workdir)?;
        logs::mark(
            &launch.log_path,
            &format!(
                "starting {} (deployment #{})",
                plan.version, plan.deployment_id
            ),
        );
        let running = match driver.start(&launch).await {
            Ok(running) => running,
            Err(e) => {
                let _ = std::fs::remove_file(self.state_file(&plan.key));
                return Err(e.into());
            }
        };
        self.supervise(plan, launch, running, driver, 0, false);
        Ok(())
    }

    /// Removes the data folders of `env` (of one `service`, or all of them), refusing
    /// while an instance that uses one still runs here; returns the folders removed.
    pub fn purge_data(&self, env: &str, service: Option<&str>) -> Result<Vec<PathBuf>, String> {
        let running: Vec<String> = self
            .lock()
            .keys()
            .filter(|k| k.env == env && service.is_none_or(|s| s == k.service))
            .map(|k| k.to_string())
            .collect();
        if !running.is_empty() {
            return Err(format!(
                "{} still run(s) here; stop it first",
                running.join(", ")
            ));
        }
        let env_dir = self.data_dir.join(env);
        let services: Vec<PathBuf> = match service {
            Some(s) => vec![env_dir.join(s)],
            None => match std::fs::read_dir(&env_dir) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(_) => Vec::new(),
            },
        };
        let mut removed = Vec::new();
        for dir in services.into_iter().filter(|d| d.exists()) {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
            removed.push(dir);
        }
        Ok(removed)
    }

    /// A container's volumes as (source, path inside): below the environment's host
    /// folder (one per slot, made here), else a named volume per environment and slot.
    fn volumes_of(&self, plan: &InstancePlan) -> Result<Vec<(String, String)>, AgentError> {
        let slot = plan.data_slot.unwrap_or(plan.key.instance);
        plan.volumes
            .iter()
            .map(|v| {
                let source = match &v.host {
                    Some(host) => {
                        let folder = PathBuf::from(host).join(slot.to_string());
                        std::fs::create_dir_all(&folder).map_err(|source| AgentError::State {
                            path: folder.clone(),
                            source,
                        })?;
                        folder.display().to_string()
                    }
                    None => format!(
                        "{}{}",
                        volume_prefix(&plan.key.env, Some(&plan.key.service)),
                        volume_slug(slot, &v.path)
                    ),
                };
                Ok((source, v.path.clone()))
            })
            .collect()
    }

    /// Removes the named volumes of `env` (of one `service`, or all) from every driver.
    pub async fn purge_volumes(&self, env: &str, service: Option<&str>) -> Result<usize, String> {
        let prefix = volume_prefix(env, service);
        let mut removed = 0;
        for driver in self.drivers.values() {
            removed += driver
                .remove_volumes(&prefix)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(removed)
    }

    /// The instance's own persistent folder: per environment, service and slot.
    fn instance_data_dir(&self, plan: &InstancePlan) -> PathBuf {
        self.data_dir
            .join(&plan.key.env)
            .join(&plan.key.service)
            .join(plan.data_slot.unwrap_or(plan.key.instance).to_string())
    }

    /// What the instance of `plan` starts with, its files written into its folder first.
    fn prepared_launch(
        &self,
        plan: &InstancePlan,
        workdir: &Path,
    ) -> Result<LaunchSpec, AgentError> {
        let launch = self.launch_spec(plan, workdir)?;
        instance_files::write(
            &self.instance_data_dir(plan),
            &plan.files,
            &self.placer(plan),
        )
        .map_err(AgentError::Files)?;
        Ok(launch)
    }

    /// What the instance of `plan` runs with (an exec runs with the same, and leaves its
    /// files as they are).
    fn launch_spec(&self, plan: &InstancePlan, workdir: &Path) -> Result<LaunchSpec, AgentError> {
        let log_path = self.log_path(&plan.key);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| AgentError::State {
                path: dir.to_owned(),
                source,
            })?;
        }
        // Its own folder, per environment, service and slot: kept across versions and
        // restarts, never shared with another environment.
        let data_dir = self.instance_data_dir(plan);
        std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::State {
            path: data_dir.clone(),
            source,
        })?;
        let place = self.placer(plan);
        let placed = |text: &String| place(text);
        // Registry credentials are for the engine, not the instance.
        let mut env: std::collections::BTreeMap<String, String> = plan
            .env
            .iter()
            .map(|(k, v)| (k.clone(), placed(v)))
            .collect();
        env.insert("WHARF_DATA_DIR".into(), data_dir.display().to_string());
        if let Some(url) = env.get_mut(wharf_api::agent::CONFIG_URL_VAR) {
            *url = self.gateways.config_url_for(plan.driver, url);
        }
        let username = env.remove(wharf_driver::REGISTRY_USERNAME);
        let password = env.remove(wharf_driver::REGISTRY_PASSWORD);
        let pull = plan
            .image_ref
            .clone()
            .filter(|_| plan.image)
            .map(|reference| wharf_driver::ImagePull {
                reference,
                username,
                password,
            });
        Ok(LaunchSpec {
            key: plan.key.clone(),
            workdir: workdir.to_owned(),
            argv: plan.argv.iter().map(placed).collect(),
            env,
            secret_keys: plan.secret_keys.clone(),
            pull,
            log_path,
            log_max_bytes: plan.logs.max_bytes,
            log_keep: plan.logs.keep,
            tag: self.tag(&plan.key),
            limits: wharf_driver::Limits {
                cpu_millis: plan.resources.cpu_millis,
                memory_bytes: plan.resources.memory_bytes,
            },
            image: plan.image.then(|| plan.digest.clone()),
            stop_signal: plan.stop_signal.clone(),
            data_dir: Some(data_dir),
            container_port: plan.container_port,
            entrypoint: plan.entrypoint.clone(),
            working_dir: plan.working_dir.as_ref().map(|d| PathBuf::from(placed(d))),
            user: plan.user.clone(),
            volumes: self.volumes_of(plan)?,
            extra_ports: plan
                .ports
                .iter()
                .map(|p| {
                    let variable = wharf_core::config::port_variable(&p.name);
                    (variable, p.host, p.container)
                })
                .collect(),
            from_source: wharf_core::dev::source_of(&plan.digest).is_some(),
        })
    }

    fn supervise(
        &self,
        plan: InstancePlan,
        launch: LaunchSpec,
        running: Box<dyn Running>,
        driver: Arc<dyn Driver>,
        restarts: u32,
        adopted: bool,
    ) {
        let status = InstanceStatus {
            plan_version: plan.version.clone(),
            key: plan.key.clone(),
            pid: Some(running.handle_id()),
            state: InstanceState::Running,
            health: Health::Unknown,
            restarts,
            started_at: running.started_at_millis().unwrap_or_else(now_millis),
            last_exit: None,
            cpu_millis: None,
            memory_bytes: None,
        };
        self.sink.instance_changed(&plan, &status);
        if let Some(port) = plan.address {
            self.traffic.ensure(
                &plan.key,
                plan.deployment_id,
                port,
                plan.tcp,
                plan.pause_timeout,
                plan.response_timeout,
            );
        }
        // An adopted instance that was serving keeps serving while it is checked again.
        if adopted {
            self.traffic.set(&plan.key, rotation_member(&plan, &status));
        }
        let status = Arc::new(watch::channel(status).0);
        let (control, control_rx) = mpsc::channel(4);
        let handle = Handle {
            plan: plan.clone(),
            workdir: launch.workdir.clone(),
            log_path: launch.log_path.clone(),
            status: status.clone(),
            control,
            task: tokio::spawn(async {}),
        };
        // An adopted instance's health is unknown until checked; check it at once.
        let supervisor = Supervisor {
            plan: plan.clone(),
            launch,
            driver,
            sink: self.sink.clone(),
            status,
            check_first: adopted,
            secrets: self.secret_source.clone(),
            traffic: self.traffic.clone(),
            streak: health::Streak::default(),
            failing: (0, false),
        };
        let task = tokio::spawn(supervisor.run(running, control_rx));
        self.lock().insert(plan.key, Handle { task, ..handle });
    }

    /// Waits until the instance passes its health check, fails, or `timeout` passes.
    /// An instance without a health check is healthy once it has stayed up briefly.
    pub async fn wait_healthy(
        &self,
        key: &InstanceKey,
        timeout: Duration,
    ) -> Result<(), Unhealthy> {
        let (plan, workdir, log_path, status) = {
            let map = self.lock();
            let Some(h) = map.get(key) else {
                return Err(Unhealthy {
                    reason: format!("{key} is not running"),
                    log_tail: String::new(),
                });
            };
            (
                h.plan.clone(),
                h.workdir.clone(),
                h.log_path.clone(),
                h.status.clone(),
            )
        };
        let mut changes = status.subscribe();
        let first_restarts = status.borrow().restarts;
        let begun = Instant::now();
        // Probe every 10ms for the first two seconds (a deploy should notice readiness
        // at once, and a loopback probe is cheap), then back off to the configured
        // interval so a slow starter is not hammered.
        let max_interval = plan
            .health
            .as_ref()
            .map(|h| h.interval)
            .unwrap_or(Duration::from_millis(100));
        let mut interval = FAST_PROBE.min(max_interval);
        let mut last_failure = String::from("no health check ran");
        let fail = |reason: String| {
            Err(Unhealthy {
                reason,
                log_tail: logs::report_of_last_run(&log_path),
            })
        };
        // A health command sees what the instance sees of its data folder.
        let mut probe_env = plan.env.clone();
        probe_env.insert(
            "WHARF_DATA_DIR".into(),
            self.instance_data_dir(&plan).display().to_string(),
        );
        loop {
            {
                let s = status.borrow();
                if s.state == InstanceState::Restarting || s.restarts > first_restarts {
                    let exit = s.last_exit.clone().unwrap_or_else(|| "exited".into());
                    return fail(format!("the process {exit} before it became healthy"));
                }
            }
            match &plan.health {
                None if begun.elapsed() >= Duration::from_millis(300) => break,
                None => {}
                Some(check) => {
                    let pid = status.borrow().pid;
                    match health::probe(&check.probe, plan.port, &workdir, &probe_env)
                        .await
                        .and_then(|()| answered_by_instance(&plan, pid))
                    {
                        Ok(()) => break,
                        Err(e) => last_failure = e,
                    }
                }
            }
            if begun.elapsed() >= timeout {
                return fail(format!(
                    "{last_failure} (not healthy within {})",
                    humanize(timeout)
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = changes.changed() => {}
            }
            if begun.elapsed() > FAST_PROBING_FOR {
                interval = (interval * 2).min(max_interval);
            }
        }
        status.send_modify(|s| s.health = Health::Healthy);
        self.traffic
            .set(key, rotation_member(&plan, &status.borrow()));
        self.sink.instance_changed(&plan, &status.borrow());
        Ok(())
    }

    /// Stops an instance and forgets it. Returns how it ended, or `None` if unknown.
    pub async fn stop(&self, key: &InstanceKey) -> Option<Exit> {
        // Out of the rotation first, and its requests answered, before it is stopped.
        let drain = self.lock().get(key).map(|h| h.plan.drain_timeout);
        if let Some(limit) = drain {
            self.traffic.drain(key, limit).await;
        }
        let Some(handle) = self.lock().remove(key) else {
            self.traffic.forget(key);
            return None;
        };
        let (done, exited) = oneshot::channel();
        let grace = handle.plan.stop_timeout;
        let exit = if handle
            .control
            .send(Control::Stop { grace, done })
            .await
            .is_ok()
        {
            exited.await.ok()
        } else {
            None
        };
        let _ = std::fs::remove_file(self.state_file(key));
        self.traffic.forget(key);
        exit
    }

    /// Its service addresses.
    pub fn traffic(&self) -> &Arc<traffic::Traffic> {
        &self.traffic
    }

    /// Stops supervising without stopping anything: instances keep running for the next
    /// agent to adopt. Used when the agent itself shuts down.
    pub fn detach(&self) {
        for (_, handle) in self.lock().drain() {
            handle.task.abort();
        }
    }

    /// Every instance this agent supervises and what it last saw of each.
    pub fn statuses(&self) -> Vec<(InstancePlan, InstanceStatus)> {
        let map = self.lock();
        let mut all: Vec<_> = map
            .values()
            .map(|h| (h.plan.clone(), h.status.borrow().clone()))
            .collect();
        all.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        all
    }

    /// The plan an instance runs with, if it runs.
    pub fn plan(&self, key: &InstanceKey) -> Option<InstancePlan> {
        self.lock().get(key).map(|h| h.plan.clone())
    }

    fn write_state(&self, plan: &InstancePlan) -> Result<(), AgentError> {
        let path = self.state_file(&plan.key);
        let err = |source| AgentError::State {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        // Secrets stay in memory: a restarted agent gets them again from its controller.
        let body = serde_json::to_vec_pretty(&plan.redacted()).expect("plans serialize");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            file.write_all(&body).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// After a restart: adopts instances that still run, restarts the ones that died,
    /// and stops tagged processes nobody planned.
    pub async fn recover(&self) -> Recovery {
        let mut recovery = Recovery::default();
        let mut found: Vec<(DriverKind, Found)> = Vec::new();
        for (kind, driver) in &self.drivers {
            found.extend(driver.find_running().await.into_iter().map(|f| (*kind, f)));
        }
        let plans: Vec<InstancePlan> = std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        for mut plan in plans {
            if self.lock().contains_key(&plan.key) {
                continue;
            }
            if !plan.secret_keys.is_empty()
                && let Some(source) = &self.secret_source
            {
                plan.env.extend(source(&plan));
            }
            let tag = self.tag(&plan.key);
            let Ok(driver) = self.driver(plan.driver) else {
                tracing::error!(instance = %plan.key, "cannot recover: no {:?} driver on this agent", plan.driver);
                continue;
            };
            let workdir = match self.workdir(&plan).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(instance = %plan.key, "cannot recover: {e}");
                    continue;
                }
            };
            let Ok(launch) = self.prepared_launch(&plan, &workdir) else {
                continue;
            };
            let adopted = match found
                .iter()
                .position(|(kind, f)| *kind == plan.driver && f.tag == tag)
            {
                Some(i) => driver.adopt(&found.remove(i).1, Some(&launch)).await,
                None => None,
            };
            let key = plan.key.clone();
            match adopted {
                Some(running) => {
                    self.supervise(plan, launch, running, driver.clone(), 0, true);
                    recovery.adopted.push(key);
                }
                None => match driver.start(&launch).await {
                    Ok(running) => {
                        self.supervise(plan, launch, running, driver.clone(), 1, false);
                        recovery.restarted.push(key);
                    }
                    Err(e) => tracing::error!(instance = %key, "cannot restart: {e}"),
                },
            }
        }
        for (kind, orphan) in found {
            if let Some(mut running) = self.drivers[&kind].adopt(&orphan, None).await {
                running.stop(Duration::from_secs(5)).await;
                recovery.orphans_stopped += 1;
            }
        }
        recovery
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// For a process instance with a port, that what answered its check is the instance:
/// the port's listener belongs to its process group (`pid` leads it).
pub(crate) fn answered_by_instance(plan: &InstancePlan, pid: Option<u32>) -> Result<(), String> {
    match (plan.driver, plan.port, pid) {
        (DriverKind::Process, Some(port), Some(pid)) => sockets::check_listener(port, pid),
        _ => Ok(()),
    }
}

/// Where the instance takes traffic through its service's address, if it is in the
/// rotation now: running, with its port, and passing its check (or without one).
pub(crate) fn rotation_member(
    plan: &InstancePlan,
    status: &InstanceStatus,
) -> Option<std::net::SocketAddr> {
    let port = plan.port?;
    plan.address?;
    let serving = status.state == InstanceState::Running
        && (status.health == Health::Healthy || plan.health.is_none());
    serving.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The start of the names of an environment's named volumes (of one service); `.`,
/// which names do not hold, keeps `ci` from matching `ci-2`.
fn volume_prefix(env: &str, service: Option<&str>) -> String {
    match service {
        Some(service) => format!("wharf.{env}.{service}."),
        None => format!("wharf.{env}."),
    }
}

/// The rest of a named volume's name: its slot and its path (`/var/lib/x` is
/// `0.var-lib-x`), in the characters volume names allow.
fn volume_slug(slot: u32, path: &str) -> String {
    let path: String = path
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{slot}.{path}")
}
