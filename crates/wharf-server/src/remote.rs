//! The controller's side of a remote agent: what its host should run (kept in the store
//! and served to the agent's long poll) and what the agent last reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use wharf_agent::{InstancePlan, InstanceStatus, Unhealthy};
use wharf_api::agent::{AgentReport, HostAnswer, HostWork, ReportedInstance};
use wharf_core::lifecycle::{Health, InstanceState};
use wharf_driver::InstanceKey;
use wharf_store::Store;

use crate::fleet::{AgentLink, SharedPlan};

/// How long a stopped instance may take to disappear from the agent's report.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct RemoteAgent {
    host_id: i64,
    store: Arc<dyn Store>,
    assignments: Mutex<BTreeMap<InstanceKey, SharedPlan>>,
    /// Bumped on every change of `assignments`; agents long-poll on it.
    revision: watch::Sender<u64>,
    reported: Mutex<BTreeMap<InstanceKey, ReportedInstance>>,
    /// Bumped on every report.
    reports: watch::Sender<u64>,
    last_report: Mutex<Option<std::time::Instant>>,
    /// Log tails asked for and not yet handed to the agent.
    log_requests: Mutex<Vec<wharf_api::agent::LogRequest>>,
    /// Who waits for which log request's answer.
    log_answers: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    /// Other work asked for and not yet handed to the agent, and who waits for each
    /// answer.
    tasks: Mutex<Vec<wharf_api::agent::HostTask>>,
    task_answers: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<HostAnswer>>>,
    /// Numbers log requests and tasks.
    next_request: std::sync::atomic::AtomicU64,
    /// Shared by every host: bumped when any host's routable instances change, so the
    /// watch of every agent answers with fresh routes.
    routes: Arc<watch::Sender<u64>>,
    /// The port of its mesh listener, as it last reported.
    mesh_port: Mutex<Option<u16>>,
    /// Its agent said it is stopping: its instances are out of other hosts' routes.
    leaving: std::sync::atomic::AtomicBool,
    /// What its addresses measured, as it last reported.
    traffic: Mutex<Vec<wharf_api::traffic::AddressCounts>>,
}

/// A service address this host has instances for, and the instance's port when it is
/// running and healthy (so other hosts may send it traffic).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    pub service: String,
    pub address: u16,
    pub tcp: bool,
    pub pause_timeout: Duration,
    pub response_timeout: Duration,
    pub serving: Option<u16>,
    pub deployment: i64,
}

/// How long `wharf logs` waits for a remote agent's answer.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// How much longer than its work may take an agent's answer may take to arrive.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);

/// How long a purge of a host's data may take.
pub const PURGE_WAIT: Duration = Duration::from_secs(120);

impl RemoteAgent {
    pub fn new(host_id: i64, store: Arc<dyn Store>, routes: Arc<watch::Sender<u64>>) -> Self {
        // Revisions start from the clock, so an agent still holding a revision from
        // before a controller restart never mistakes it for the current one.
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Self {
            host_id,
            store,
            assignments: Mutex::new(BTreeMap::new()),
            revision: watch::channel(first).0,
            reported: Mutex::new(BTreeMap::new()),
            reports: watch::channel(0).0,
            last_report: Mutex::new(None),
            log_requests: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            task_answers: Mutex::new(Default::default()),
            log_answers: Mutex::new(std::collections::HashMap::new()),
            next_request: std::sync::atomic::AtomicU64::new(1),
            routes,
            mesh_port: Mutex::new(None),
            leaving: Default::default(),
            traffic: Mutex::new(Vec::new()),
        }
    }

    pub fn traffic(&self) -> Vec<wharf_api::traffic::AddressCounts> {
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether its agent said it is stopping (and has not reported since).
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn mesh_port(&self) -> Option<u16> {
        *self.mesh_port.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its service addresses and the instances that may take traffic, in a stable order.
    pub fn route_entries(&self) -> Vec<RouteEntry> {
        let assigned = self.assigned();
        // Borrowed, not cloned: every agent's answer reads every host's entries.
        let reported = self.reported();
        let mut entries: Vec<RouteEntry> = assigned
            .values()
            .filter_map(|plan| {
                let address = plan.address?;
                let serving = reported
                    .get(&plan.key)
                    .filter(|r| r.plan.names(plan))
                    .filter(|r| {
                        r.status.state == InstanceState::Running
                            && (r.status.health == Health::Healthy || plan.health.is_none())
                    })
                    .and(plan.port);
                Some(RouteEntry {
                    service: plan.key.service.clone(),
                    address,
                    tcp: plan.tcp,
                    pause_timeout: plan.pause_timeout,
                    response_timeout: plan.response_timeout,
                    serving,
                    deployment: plan.deployment_id,
                })
            })
            .collect();
        entries.sort();
        entries
    }

    fn routes_changed(&self) {
        self.routes.send_modify(|r| *r += 1);
    }

    fn assigned(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceKey, SharedPlan>> {
        self.assignments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, BTreeMap<InstanceKey, ReportedInstance>> {
        self.reported.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the agent `plans`, already stored as its assignments.
    pub fn assigned_now(&self, plans: Vec<SharedPlan>) {
        let mut assigned = self.assigned();
        for plan in plans {
            assigned.insert(plan.key.clone(), plan);
        }
        drop(assigned);
        self.revision.send_modify(|r| *r += 1);
        self.routes_changed();
    }

    /// Takes `keys` from the agent's assignments, already removed from the store.
    pub fn unassigned_now(&self, keys: &[InstanceKey]) {
        let mut assigned = self.assigned();
        for key in keys {
            assigned.remove(key);
        }
        drop(assigned);
        self.revision.send_modify(|r| *r += 1);
        // Other hosts' proxies let go of them as they stop.
        self.routes_changed();
    }

    /// Waits (up to [`STOP_GRACE`]) until the agent no longer reports `keys`, which were
    /// taken from its assignments.
    pub async fn stopped(&self, keys: &[InstanceKey]) {
        // A silent agent will not confirm; it stops the instances when it is back.
        let fresh = self
            .last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        if !fresh {
            let mut reported = self.reported();
            for key in keys {
                reported.remove(key);
            }
            return;
        }
        let mut reports = self.reports.subscribe();
        let gone = async {
            while keys.iter().any(|key| self.reported().contains_key(key)) {
                if reports.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(STOP_GRACE, gone).await;
    }

    /// Loads this host's assignments from the store, their secrets from `secrets`.
    pub fn restore(&self, secrets: &wharf_agent::SecretSource) {
        let plans: Vec<InstancePlan> = self
            .store
            .assignments(self.host_id)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let mut assigned = self.assigned();
        for mut plan in plans {
            if !plan.secret_keys.is_empty() {
                plan.env.extend(secrets(&plan));
            }
            assigned.insert(plan.key.clone(), Arc::new(plan));
        }
        drop(assigned);
        self.revision.send_modify(|r| *r += 1);
    }

    /// Answers the agent's watch now, unchanged but for fresh configuration tokens
    /// (after a key rotation revoked the ones it has).
    pub fn renew_tokens(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    /// The assignments (and log requests) once they differ from revision `seen`, or
    /// after `wait`.
    /// The revision counts both its own changes and the routes' (both only grow).
    pub async fn watch(&self, seen: u64, wait: Duration) -> wharf_api::agent::Assignments {
        let mut changes = self.revision.subscribe();
        let mut routes = self.routes.subscribe();
        let now = || self.revision.borrow().wrapping_add(*self.routes.borrow());
        if now() == seen {
            let _ = tokio::time::timeout(wait, async {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = routes.changed() => {}
                }
            })
            .await;
        }
        let revision = now();
        wharf_api::agent::Assignments {
            revision,
            plans: self.assigned().values().map(|p| (**p).clone()).collect(),
            log_requests: std::mem::take(
                &mut *self.log_requests.lock().unwrap_or_else(|p| p.into_inner()),
            ),
            tasks: std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner())),
            // Filled in by the route that answers, with the keyring's current key.
            config_tokens: Default::default(),
            routes: Vec::new(),
            mesh_peers: Vec::new(),
            ingress: None,
        }
    }

    /// The last `lines` lines of an instance's log on this host (written since `since`,
    /// when given), asked of its agent.
    pub async fn fetch_log(
        &self,
        key: &InstanceKey,
        lines: usize,
        since: Option<i64>,
    ) -> Result<String, String> {
        let id = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.log_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, answer);
        self.log_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(wharf_api::agent::LogRequest {
                id,
                key: key.clone(),
                lines,
                since,
            });
        self.revision.send_modify(|r| *r += 1);
        let outcome = tokio::time::timeout(LOG_WAIT, answered).await;
        self.log_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match outcome {
            Ok(Ok(text)) => Ok(text),
            _ => Err(format!(
                "the agent of `{}` did not send the log of {key} within {}s",
                key.node,
                LOG_WAIT.as_secs()
            )),
        }
    }

    /// Has the agent do `work`, waiting up to `wait` for its answer (the agent must be
    /// watching its assignments: one that is cut off never answers).
    pub async fn ask(&self, work: HostWork, wait: Duration) -> Result<HostAnswer, String> {
        let id = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.task_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, answer);
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(wharf_api::agent::HostTask { id, work });
        self.revision.send_modify(|r| *r += 1);
        let outcome = tokio::time::timeout(wait, answered).await;
        // Asked and not yet taken (the agent is away): it is not done later.
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t| t.id != id);
        self.task_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            _ => Err(format!(
                "the agent of host {} did not answer within {}s: is it running and connected? (`wharf hosts`)",
                self.host_id,
                wait.as_secs()
            )),
        }
    }

    /// An agent's answer to a task; one nobody waits for any more is dropped.
    pub fn deliver_answer(&self, id: u64, answer: HostAnswer) {
        if let Some(waiting) = self
            .task_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
        {
            let _ = waiting.send(answer);
        }
    }

    /// An agent's answer to a log request.
    pub fn deliver_log(&self, id: u64, text: String) {
        if let Some(answer) = self
            .log_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
        {
            let _ = answer.send(text);
        }
    }

    /// Takes in a report; returns the instances it contained, for the status rows.
    /// Takes in a report; returns the instances whose plan or status changed since the
    /// last one (heartbeats of a steady host change nothing, and write nothing).
    pub fn report(&self, report: AgentReport) -> Vec<ReportedInstance> {
        let before = self.route_entries();
        let mesh_changed = {
            let mut port = self.mesh_port.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *port, report.mesh_port) != report.mesh_port
        };
        let leaving_changed = self
            .leaving
            .swap(report.leaving, std::sync::atomic::Ordering::Relaxed)
            != report.leaving;
        *self.traffic.lock().unwrap_or_else(|p| p.into_inner()) = report.traffic;
        let mut reported = self.reported();
        let changed: Vec<ReportedInstance> = report
            .instances
            .iter()
            .filter(|new| {
                reported
                    .get(&new.plan.key)
                    .is_none_or(|old| old.plan != new.plan || old.status != new.status)
            })
            .cloned()
            .collect();
        *reported = report
            .instances
            .into_iter()
            .map(|i| (i.plan.key.clone(), i))
            .collect();
        drop(reported);
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now());
        self.reports.send_modify(|n| *n += 1);
        if mesh_changed || leaving_changed || self.route_entries() != before {
            self.routes_changed();
        }
        changed
    }

    /// Whether the agent reported `plan`'s instance (not an older plan of the slot).
    fn reported_for(&self, plan: &InstancePlan) -> Option<ReportedInstance> {
        self.reported()
            .get(&plan.key)
            .filter(|r| r.plan.names(plan))
            .cloned()
    }
}

#[async_trait]
impl AgentLink for RemoteAgent {
    fn statuses(&self) -> Vec<(SharedPlan, InstanceStatus)> {
        self.statuses_where(&|_| true)
    }

    fn statuses_where(
        &self,
        keep: &dyn Fn(&InstancePlan) -> bool,
    ) -> Vec<(SharedPlan, InstanceStatus)> {
        let assigned = self.assigned();
        let reported = self.reported();
        assigned
            .values()
            .filter(|plan| keep(plan))
            .map(|plan| {
                let seen = reported.get(&plan.key).filter(|r| r.plan.names(plan));
                let status = match seen {
                    Some(r) => r.status.clone(),
                    None => InstanceStatus {
                        plan_version: plan.version.clone(),
                        key: plan.key.clone(),
                        pid: None,
                        state: InstanceState::Starting,
                        health: Health::Unknown,
                        restarts: 0,
                        started_at: 0,
                        last_exit: None,
                        cpu_millis: None,
                        memory_bytes: None,
                    },
                };
                (plan.clone(), status)
            })
            .collect()
    }

    fn status(&self, key: &InstanceKey) -> Option<InstanceStatus> {
        let assigned = self.assigned();
        let plan = assigned.get(key)?;
        let reported = self.reported();
        Some(match reported.get(key).filter(|r| r.plan.names(plan)) {
            Some(r) => r.status.clone(),
            None => InstanceStatus {
                plan_version: plan.version.clone(),
                key: plan.key.clone(),
                pid: None,
                state: InstanceState::Starting,
                health: Health::Unknown,
                restarts: 0,
                started_at: 0,
                last_exit: None,
                cpu_millis: None,
                memory_bytes: None,
            },
        })
    }

    fn plan(&self, key: &InstanceKey) -> Option<InstancePlan> {
        self.assigned().get(key).map(|p| (**p).clone())
    }

    fn shared_plan(&self, key: &InstanceKey) -> Option<SharedPlan> {
        self.assigned().get(key).cloned()
    }

    async fn start(&self, plan: InstancePlan) -> Result<(), String> {
        let k = &plan.key;
        // Secrets never reach the database; a restarted controller opens them again.
        let value = serde_json::to_value(plan.redacted()).expect("plans serialize");
        self.store
            .put_assignment(
                self.host_id,
                &k.env,
                &k.service,
                &k.node,
                k.instance,
                &value,
            )
            .map_err(|e| e.to_string())?;
        self.assigned().insert(plan.key.clone(), Arc::new(plan));
        self.revision.send_modify(|r| *r += 1);
        self.routes_changed();
        Ok(())
    }

    async fn start_all(&self, plans: Vec<SharedPlan>) -> Result<(), String> {
        let rows: Vec<_> = plans
            .iter()
            .map(|p| {
                let (key, plan) = assignment_row(p);
                (self.host_id, key, plan)
            })
            .collect();
        // Durable before the agent can see it: one transaction for the whole batch.
        self.store
            .put_assignments(&rows)
            .map_err(|e| e.to_string())?;
        self.assigned_now(plans);
        Ok(())
    }

    async fn stop(&self, key: &InstanceKey) {
        let _ = self
            .store
            .remove_assignment(&key.env, &key.service, &key.node, key.instance);
        self.unassigned_now(std::slice::from_ref(key));
        self.stopped(std::slice::from_ref(key)).await;
    }

    async fn wait_healthy(&self, key: &InstanceKey, timeout: Duration) -> Result<(), Unhealthy> {
        let Some(plan) = self.plan(key) else {
            return Err(Unhealthy {
                reason: format!("{key} is not assigned"),
                log_tail: String::new(),
            });
        };
        let mut reports = self.reports.subscribe();
        let verdict = async {
            loop {
                if let Some(r) = self.reported_for(&plan) {
                    if let Some(failure) = r.failure {
                        return Err(Unhealthy {
                            reason: failure.reason,
                            log_tail: failure.log_tail,
                        });
                    }
                    if r.status.health == Health::Healthy {
                        return Ok(());
                    }
                }
                if reports.changed().await.is_err() {
                    return Err(Unhealthy {
                        reason: "the controller is shutting down".into(),
                        log_tail: String::new(),
                    });
                }
            }
        };
        match tokio::time::timeout(timeout + Duration::from_secs(5), verdict).await {
            Ok(result) => result,
            Err(_) => Err(Unhealthy {
                reason: format!(
                    "the agent of `{}` reported no healthy instance within {}s",
                    key.node,
                    timeout.as_secs() + 5
                ),
                log_tail: String::new(),
            }),
        }
    }

    fn log_path(&self, _: &InstanceKey) -> Option<PathBuf> {
        None
    }

    async fn log_tail(
        &self,
        key: &InstanceKey,
        lines: usize,
        since: Option<i64>,
    ) -> Result<String, String> {
        self.fetch_log(key, lines, since).await
    }

    async fn follow_log(
        &self,
        key: &InstanceKey,
        lines: usize,
        since: Option<i64>,
        offset: Option<u64>,
    ) -> Result<(String, u64), String> {
        let work = HostWork::FollowLog {
            key: key.clone(),
            lines,
            since,
            offset,
        };
        match self.ask(work, LOG_WAIT).await? {
            HostAnswer::Log { text, offset } => Ok((text, offset)),
            HostAnswer::Failed { error } => Err(error),
            other => Err(format!("the agent answered a log read with {other:?}")),
        }
    }

    async fn exec(
        &self,
        key: &InstanceKey,
        argv: &[String],
        limit: Duration,
    ) -> Result<wharf_driver::ExecOutput, String> {
        let work = HostWork::Exec {
            key: key.clone(),
            argv: argv.to_vec(),
            limit_secs: limit.as_secs(),
        };
        match self.ask(work, limit + ANSWER_MARGIN).await? {
            HostAnswer::Exec {
                code,
                stdout,
                stderr,
            } => Ok(wharf_driver::ExecOutput {
                code,
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
            }),
            HostAnswer::Failed { error } => Err(error),
            other => Err(format!("the agent answered an exec with {other:?}")),
        }
    }

    /// The request travels in the instance's assignment; the agent signals it once.
    async fn reload(
        &self,
        key: &InstanceKey,
        generation: i64,
        signal: &str,
        files: std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut plan = self
            .plan(key)
            .ok_or_else(|| format!("{key} is not assigned to this host"))?;
        plan.files = files;
        plan.reload = Some(wharf_agent::Reload {
            generation,
            signal: signal.to_owned(),
        });
        self.start(plan).await
    }
}

/// A plan as its assignment row: its slot, and the plan as JSON text without its
/// secrets (those never reach the database; a restarted controller opens them again).
/// Written straight to text: a tree of JSON values per plan was tens of megabytes for a
/// pool's first deploy.
pub fn assignment_row(plan: &InstancePlan) -> (wharf_store::InstanceKeyRef<'_>, String) {
    let k = &plan.key;
    let text = if plan.secret_keys.is_empty() {
        serde_json::to_string(plan)
    } else {
        serde_json::to_string(&plan.redacted())
    };
    (
        (
            k.env.as_str(),
            k.service.as_str(),
            k.node.as_str(),
            k.instance,
        ),
        text.expect("plans serialize"),
    )
}
