//! The deploy executor: plans with the pure reconciler, then carries the plan out through
//! the agent batch by batch, each batch gated on health. A failed batch rolls everything
//! this deploy changed back to what ran before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::mpsc;
use wharf_agent::InstancePlan;
use wharf_api::{DeployEvent, RollbackRequest, StopRequest};
use wharf_core::decide::{self, DeploymentFacts};
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_core::model::PortSpec;
use wharf_core::placement::{self, HostView, Resources};
use wharf_core::plan::{self, DesiredInstance, ObservedInstance, Plan, Slot, Step};
use wharf_core::rollout;
use wharf_core::spec::DeploySpec;
use wharf_driver::InstanceKey;
use wharf_store::NewDeployment;

use crate::deploy_guard::DeployGuard;
use crate::error::ServerError;
use crate::fleet::SharedPlan;
use crate::now_millis;
use crate::render::render;

mod dev;
pub(crate) mod engine;
pub(crate) use dev::DevRun;

/// How long an instance without a health check may take to start.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where progress goes; a client that went away does not stop the operation.
#[derive(Clone)]
pub struct Events(pub mpsc::UnboundedSender<DeployEvent>);

impl Events {
    pub(crate) fn send(&self, event: DeployEvent) {
        let _ = self.0.send(event);
    }

    fn progress(&self, key: &InstanceKey, message: String) {
        self.send(DeployEvent::Progress {
            service: key.service.clone(),
            node: key.node.clone(),
            instance: key.instance,
            message,
        });
    }
}

/// A deploy as the executor carries it out: the spec comes from the controller's own
/// state (its stored definition, or the deployment a rollback returns to), never from
/// the caller.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub spec: DeploySpec,
    pub version: String,
    pub user: String,
    pub dry_run: bool,
    pub unregistered_digest: Option<String>,
    pub force: bool,
    /// The configuration revision to run with (default: the newest).
    pub config_revision: Option<i64>,
    /// Why the controller runs it on its own (recovery, reconcile): the start of the
    /// deployment's message in history.
    pub note: Option<String>,
    /// The artifact a replay of a deployment runs: its stored digest (a `wharf dev`
    /// folder has no registered version). `None`: the version's registered artifact.
    pub replay: Option<String>,
}

/// A deploy placed, numbered, rendered and planned.
struct Prepared {
    rendered: crate::render::Rendered,
    config_revision: i64,
    plan: Plan,
    /// The spec as the deployment records it: its slots under the numbers their
    /// instances run under once it is done.
    spec: DeploySpec,
}

/// What a step changed, so a rollback can undo it. Previous plans are shared with
/// the agent link, not copied: a rollout of 10,000 instances keeps every one it stops.
enum Done {
    Started(InstanceKey),
    Replaced {
        key: InstanceKey,
        previous: Option<SharedPlan>,
    },
    Stopped(SharedPlan),
}

/// The first instance of a batch that failed.
struct Failure {
    reason: String,
    /// The last lines of the failed instance's log, if it has any.
    log_tail: String,
}

/// How a rollback went.
pub(crate) struct RolledBack {
    failure: Failure,
    /// Every instance the deploy touched is back as it was.
    complete: bool,
    /// Some earlier instance was started again (false on a first deploy).
    restored_previous: bool,
    /// Earlier instances kept running throughout (successors started beside them).
    kept_previous: bool,
}

impl RolledBack {
    /// Every instance the deploy touched is back as it was.
    pub(crate) fn complete(&self) -> bool {
        self.complete
    }

    pub(crate) fn message(&self) -> String {
        let outcome = match (self.complete, self.restored_previous, self.kept_previous) {
            (true, true, _) => "the previous version was restored",
            (true, false, true) => {
                "the previous version was restored: it kept serving while the new instances started beside it"
            }
            (true, false, false) => "its new instances were removed (nothing ran before)",
            (false, _, _) => "the rollback did not complete; see `wharf status`",
        };
        let mut message = format!("{}; {outcome}", self.failure.reason);
        if !self.failure.log_tail.is_empty() {
            message.push_str(&format!(
                "\nlast lines of its log:\n{}",
                indent(&self.failure.log_tail)
            ));
        }
        message
    }
}

/// The rendered plan of a slot the reconciler named; a slot without one is a bug
/// reported as an error, not a panic.
fn plan_of(plans: &HashMap<Slot, SharedPlan>, slot: &Slot) -> Result<SharedPlan, String> {
    plans.get(slot).cloned().ok_or_else(|| {
        format!(
            "internal error: no plan for instance {} on `{}`",
            slot.instance, slot.node
        )
    })
}

/// How long a new instance may take to pass its check.
fn start_timeout(spec: &DeploySpec) -> Duration {
    spec.health
        .as_ref()
        .map(|h| h.timeout)
        .unwrap_or(DEFAULT_START_TIMEOUT)
}

/// What the rendered plans want, as the reconciler sees it.
fn desired_of(rendered: &crate::render::Rendered) -> Vec<DesiredInstance> {
    rendered
        .plans
        .iter()
        .map(|p| DesiredInstance {
            slot: slot_of(&p.key),
            version: p.version.clone(),
            digest: p.digest.clone(),
            config_digest: p.config_digest.clone(),
        })
        .collect()
}

/// Whether a deploy runs its new set beside the old under a traffic split: a deploy or
/// promotion of a blue-green or canary service. Rollbacks, recoveries and reconciles
/// restore what ran, the rolling way.
fn splits(spec: &DeploySpec, kind: DeploymentKind) -> bool {
    spec.rollout.strategy.splits()
        && matches!(kind, DeploymentKind::Deploy | DeploymentKind::Promote)
}

fn slot_of(key: &InstanceKey) -> Slot {
    Slot {
        node: key.node.clone(),
        instance: key.instance,
    }
}

/// Carries out deploys, rollbacks, stops, approvals and reschedules. It reaches the rest
/// of the controller through narrow handles: the store, the fleet of agents, the
/// configuration service (what a deploy adds to configuration) and the definitions
/// (specs and policy).
pub struct Executor {
    pub store: Arc<dyn wharf_store::Store>,
    pub fleet: Arc<crate::fleet::Fleet>,
    pub config: Arc<crate::config_service::ConfigService>,
    pub definitions: Arc<crate::definitions::Definitions>,
    /// Whether callers are authenticated (approvals need it).
    pub auth_required: bool,
    /// Held while a configuration change is decided and saved, so two cannot both be
    /// held for approval at once.
    pub config_changes: tokio::sync::Mutex<()>,
    /// The deploys in progress here, which `wharf deployments cancel` may stop.
    pub cancels: crate::cancels::Cancels,
    /// Environments being rescheduled, and whether another pass was asked for since.
    pub reschedules: Reschedules,
}

/// Runs CPU-bound work (planning a deploy renders and compares every instance of a
/// pool) without holding an async worker: the runtime moves its other tasks (agents'
/// reports, which are their heartbeats) to another thread meanwhile. A pool of 10,000
/// took a worker for seconds, and hosts whose reports waited behind it were seen down.
fn off_the_async_threads<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// One reschedule per environment at a time: hosts going down together (a rack, a
/// controller too busy to hear them) ask for one pass each, and all but the first only
/// ask for one more pass after it. Without this, a thousand hosts seen down at once
/// started a thousand deploys of the same pool, each planning every instance.
#[derive(Default)]
pub struct Reschedules(std::sync::Mutex<HashMap<String, bool>>);

impl Reschedules {
    /// Takes `env`'s turn, or (when a pass runs) asks it for one more and returns None.
    fn take(&self, env: &str) -> Option<RescheduleTurn<'_>> {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = running.get_mut(env) {
            *again = true;
            return None;
        }
        running.insert(env.to_owned(), false);
        Some(RescheduleTurn {
            of: self,
            env: env.to_owned(),
        })
    }
}

/// An environment's reschedule turn, given back however the task holding it ends.
struct RescheduleTurn<'a> {
    of: &'a Reschedules,
    env: String,
}

impl RescheduleTurn<'_> {
    /// Whether another pass was asked for since the last (and clears the request).
    fn again(&self) -> bool {
        let mut running = self.of.0.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get_mut(&self.env)
            .map(std::mem::take)
            .unwrap_or(false)
    }
}

impl Drop for RescheduleTurn<'_> {
    fn drop(&mut self) {
        self.of
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.env);
    }
}

impl Executor {
    /// The deployment a service runs as now in an environment, if it runs.
    pub fn current_deployment(
        &self,
        service: &str,
        env: &str,
    ) -> Result<Option<wharf_store::DeploymentRecord>, ServerError> {
        crate::config_service::running_deployment(&*self.store, service, env, false)
    }

    /// Deploys `req.spec` at `req.version`, recording it as `kind`.
    pub(crate) async fn deploy(
        &self,
        req: Order,
        kind: DeploymentKind,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let spec = &req.spec;
        let digest = match (
            &req.replay,
            self.store.artifact(&spec.service, &req.version)?,
            &req.unregistered_digest,
        ) {
            (Some(digest), _, _) => digest.clone(),
            (None, Some(artifact), _) => artifact.digest,
            (None, None, Some(digest)) if req.dry_run => digest.clone(),
            (None, None, _) => {
                return Err(ServerError::not_found(format!(
                    "version `{}` of `{}` is not built",
                    req.version, spec.service
                ))
                .hint(format!(
                    "run `wharf build {} --version {}` first",
                    spec.service, req.version
                )));
            }
        };
        // Deploys and promotions follow the pipeline; they and configuration rolls wait
        // for approval where asked. Rollbacks and reschedules keep what already ran.
        // A folder `wharf dev` runs was let in by the environment's dev rule; the gate
        // never counts it, nor applies to it.
        let gated = matches!(kind, DeploymentKind::Deploy | DeploymentKind::Promote)
            && wharf_core::dev::source_of(&digest).is_none();
        let held = gated || kind == DeploymentKind::Config;
        let forced = gated && self.check_pipeline(&req, &digest)?;
        if forced && !req.dry_run {
            events.send(DeployEvent::Warning {
                message: format!(
                    "`{}` was never healthy in `{}`; deploying anyway (--force), recorded in history",
                    req.version,
                    spec.previous_env.as_deref().unwrap_or_default()
                ),
            });
        }
        let needs_approval = held && spec.approval_expires_ms.is_some();
        if needs_approval && !self.auth_required {
            return Err(ServerError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "`{}` has `approval: required`, which needs callers this controller can tell apart; it runs open",
                    spec.env
                ),
            )
            .hint("run the controller with `--auth` (API tokens name who approves)"));
        }
        let prepared = off_the_async_threads(|| self.prepare(&req, kind, &digest))?;
        if needs_approval && !req.dry_run {
            let id = self.store.begin_deployment(&NewDeployment {
                pending_approval: true,
                ..self.new_deployment(&req, kind, &digest, &prepared, forced)
            })?;
            return Ok(DeployEvent::Finished {
                deployment: Some(id),
                state: DeploymentState::PendingApproval,
                message: format!(
                    "`{}` needs approval: deployment #{id} waits for `wharf approve {id}` by another user or token",
                    spec.env
                ),
            });
        }
        self.run(None, &req, kind, &digest, prepared, forced, events)
            .await
    }

    /// Whether the deploy goes past the pipeline rule (allowed only with `--force`):
    /// a version must have been healthy in the environment before this one.
    fn check_pipeline(&self, req: &Order, digest: &str) -> Result<bool, ServerError> {
        let spec = &req.spec;
        let healthy_there = match &spec.previous_env {
            Some(previous) => self
                .store
                .ran_successfully(&spec.service, previous, digest)?,
            None => false,
        };
        match decide::pipeline_gate(spec.previous_env.as_deref(), healthy_there, req.force) {
            decide::Gate::Open => Ok(false),
            decide::Gate::Forced { .. } => Ok(true),
            decide::Gate::Closed { previous } => Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "version `{}` of `{}` was never healthy in `{previous}`, which comes before `{}` in the pipeline",
                    req.version, spec.service, spec.env
                ),
            )
            .hint(format!(
                "deploy it to `{previous}` first (or `wharf promote {} --from {previous} --to {}`); `--force` deploys anyway and is recorded in history",
                spec.service, spec.env
            ))),
        }
    }

    /// Approves a held deployment and runs it. The approver must not be its author.
    pub async fn approve(
        &self,
        id: i64,
        approver: &str,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let held = self.held(id)?;
        if let Err(decide::ApprovalRefusal::OwnDeployment) = decide::may_approve(
            held.state,
            &held.user,
            approver,
            held.started_at,
            None,
            now_millis(),
        ) {
            return Err(ServerError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "deployment #{id} was requested by `{approver}`, who cannot approve it too"
                ),
            )
            .hint("another user or token with the `approve` scope must approve it"));
        }
        if held.kind == DeploymentKind::Definition {
            return self.approve_definition(&held, approver);
        }
        // A held deployment pins the version and configuration of when it was asked
        // for: approving it after a newer one ran would silently go back in time.
        if let Some(newer) = self
            .store
            .history(&held.service, &held.env)?
            .into_iter()
            .find(|d| d.id > held.id && d.state == DeploymentState::Succeeded)
        {
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "deployment #{} ({} {}) ran since #{id} was asked for; approving #{id} would replace it with an older request",
                    newer.id,
                    newer.kind.as_str(),
                    newer.version
                ),
            )
            .hint(format!(
                "reject it (`wharf reject {id}`) and ask again: `wharf deploy {} --env {}`",
                held.service, held.env
            )));
        }
        let spec = crate::config_service::spec_of(&held)?;
        self.store.approve_deployment(id, approver, now_millis())?;
        // In progress from here: the guard ends it however this task ends.
        let guard = DeployGuard::new(self.store.clone(), id);
        if held.kind == DeploymentKind::Config {
            // The held configuration revision became the current one.
            self.config.hub.invalidate(&held.env, &held.service);
            self.config
                .hub
                .announce_current(&*self.store, &held.env, &held.service);
        }
        events.send(DeployEvent::Warning {
            message: format!("deployment #{id} approved by `{approver}`"),
        });
        let req = Order {
            spec,
            version: held.version.clone(),
            user: held.user.clone(),
            dry_run: false,
            unregistered_digest: None,
            force: held.forced,
            config_revision: Some(held.config_revision),
            note: None,
            replay: None,
        };
        let prepared = match off_the_async_threads(|| self.prepare(&req, held.kind, &held.digest)) {
            Ok(p) => p,
            Err(e) => {
                guard.finish(DeploymentState::Failed, &e.message)?;
                return Err(e);
            }
        };
        self.run(
            Some(guard),
            &req,
            held.kind,
            &held.digest,
            prepared,
            held.forced,
            events,
        )
        .await
    }

    /// Puts a held definition revision in force: nothing runs, the next deploys use it.
    fn approve_definition(
        &self,
        held: &wharf_store::DeploymentRecord,
        approver: &str,
    ) -> Result<DeployEvent, ServerError> {
        self.store
            .approve_deployment(held.id, approver, now_millis())?;
        let message = format!(
            "definition revision {} is in force, approved by `{approver}`",
            held.config_revision
        );
        DeployGuard::new(self.store.clone(), held.id)
            .finish(DeploymentState::Succeeded, &message)?;
        Ok(DeployEvent::Finished {
            deployment: Some(held.id),
            state: DeploymentState::Succeeded,
            message,
        })
    }

    /// Rejects a held deployment; nothing runs.
    pub fn reject(&self, id: i64, who: &str) -> Result<DeployEvent, ServerError> {
        self.held(id)?;
        let message = format!("rejected by `{who}`");
        self.store
            .finish_deployment(id, DeploymentState::Rejected, &message, now_millis())?;
        Ok(DeployEvent::Finished {
            deployment: Some(id),
            state: DeploymentState::Rejected,
            message,
        })
    }

    /// A deployment waiting for approval; expired ones are marked so and refused.
    fn held(&self, id: i64) -> Result<wharf_store::DeploymentRecord, ServerError> {
        let held = self
            .store
            .deployment(id)?
            .ok_or_else(|| ServerError::not_found(format!("there is no deployment #{id}")))?;
        if !held.state.can_be_approved() {
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "deployment #{id} is {}, not waiting for approval",
                    held.state.as_str().replace('_', " ")
                ),
            )
            .hint("`wharf deployments --pending` lists what waits"));
        }
        // Every held kind records its approval window in its spec.
        let window = held
            .spec
            .field("approval_expires_ms")
            .and_then(|v| v.as_u64())
            .map(Duration::from_millis);
        if decide::is_expired(held.started_at, window, now_millis()) {
            self.store.finish_deployment(
                id,
                DeploymentState::Expired,
                "nobody approved it in time",
                now_millis(),
            )?;
            return Err(ServerError::new(
                axum::http::StatusCode::GONE,
                format!("deployment #{id} expired before anyone approved it; nothing changed"),
            )
            .hint(if held.kind == DeploymentKind::Definition {
                "submit it again: `wharf apply`".to_owned()
            } else {
                format!(
                    "deploy again: `wharf deploy {} --env {}`",
                    held.service, held.env
                )
            }));
        }
        Ok(held)
    }

    /// Marks held deployments whose approval time ran out; returns the ones still held.
    pub fn pending(&self) -> Result<Vec<wharf_store::DeploymentRecord>, ServerError> {
        let mut waiting = Vec::new();
        for d in self.store.pending_deployments()? {
            match self.held(d.id) {
                Ok(d) => waiting.push(d),
                Err(e) if e.status == axum::http::StatusCode::GONE => {}
                Err(e) => return Err(e),
            }
        }
        Ok(waiting)
    }

    fn new_deployment(
        &self,
        req: &Order,
        kind: DeploymentKind,
        digest: &str,
        prepared: &Prepared,
        forced: bool,
    ) -> NewDeployment {
        NewDeployment {
            service: req.spec.service.clone(),
            env: req.spec.env.clone(),
            kind,
            version: req.version.clone(),
            digest: digest.to_owned(),
            config_digest: prepared.rendered.config_digest.clone(),
            spec: wharf_store::SpecJson::of(&prepared.spec),
            user: req.user.clone(),
            started_at: now_millis(),
            config_revision: prepared.config_revision,
            forced,
            pending_approval: false,
        }
    }

    /// Places and renders a deploy: everything that can fail on input, before anything
    /// changes.
    fn prepare(
        &self,
        req: &Order,
        kind: DeploymentKind,
        digest: &str,
    ) -> Result<Prepared, ServerError> {
        let spec = &req.spec;
        let (config_revision, extras) =
            self.config
                .extras(&spec.service, &spec.env, req.config_revision)?;
        if spec.engine.is_some() {
            return engine::prepare(&*self.store, req, digest, config_revision, &extras);
        }
        let observed = self.observed(&spec.env, &spec.service);
        let mut placed = self.place(spec, &observed)?;
        self.check_hosts(&placed)?;
        // Each slot keeps the number its node runs it under (a surged rollout moved it).
        let wanted: Vec<Slot> = placed
            .slots
            .iter()
            .map(|s| Slot {
                node: s.node.clone(),
                instance: s.instance,
            })
            .collect();
        let running: Vec<Slot> = observed.iter().map(|o| o.slot.clone()).collect();
        for (slot, number) in placed
            .slots
            .iter_mut()
            .zip(rollout::number_slots(&wanted, &running))
        {
            slot.instance = number;
        }
        let mut rendered = render(&*self.store, &placed, &req.version, digest, 0, &extras)?;
        let surge_possible = !matches!(spec.port, Some(PortSpec::Fixed(_)));
        let limits = if splits(spec, kind) {
            // The whole new set starts at once beside the old one.
            rollout::Limits {
                max_surge: u32::MAX / 2,
                max_unavailable: 0,
            }
        } else {
            spec.rollout.limits.effective(surge_possible)
        };
        let mut planned = plan::plan(&desired_of(&rendered), &observed, 1);
        // A restart replaces every instance; so does `wharf dev`, whose folder changed
        // under the same digest.
        if matches!(kind, DeploymentKind::Restart | DeploymentKind::Dev) {
            planned = plan::replacing_unchanged(planned, &desired_of(&rendered), &observed);
        }
        let mut plan = rollout::roll(
            planned,
            limits,
            &running.iter().map(|s| s.instance).collect::<Vec<_>>(),
        );
        let surged: Vec<(Slot, u32)> = plan
            .steps()
            .filter(|s| rollout::is_surged(s))
            .filter_map(|s| match s {
                Step::Replace { from, to } => Some((from.slot.clone(), to.slot.instance)),
                _ => None,
            })
            .collect();
        if !surged.is_empty() {
            // By slot: a rolled pool has as many surged slots as instances.
            let moved: HashMap<&Slot, u32> = surged.iter().map(|(from, n)| (from, *n)).collect();
            for slot in &mut placed.slots {
                let at = Slot {
                    node: slot.node.clone(),
                    instance: slot.instance,
                };
                if let Some(n) = moved.get(&at) {
                    slot.instance = *n;
                }
            }
            // The first rendering goes before the second is made: at 10,000 instances
            // each is tens of megabytes.
            drop(std::mem::take(&mut rendered.plans));
            rendered = render(&*self.store, &placed, &req.version, digest, 0, &extras)?;
            let desired = desired_of(&rendered);
            let now_at = wharf_core::plan::by_slot(&desired, |d| &d.slot);
            for step in plan.batches.iter_mut().flatten() {
                if let Step::Replace { to, .. } = step
                    && let Some(now) = now_at.get(&to.slot)
                {
                    *to = (*now).clone();
                }
            }
        }
        self.check_fixed_ports(spec, &rendered, &plan)?;
        let mut numbered = spec.clone();
        for (slot, placed) in numbered.slots.iter_mut().zip(&placed.slots) {
            slot.instance = placed.instance;
        }
        Ok(Prepared {
            rendered,
            config_revision,
            plan,
            spec: numbered,
        })
    }

    /// A fixed port a new instance would need on this machine must be free (or held by
    /// the instance it replaces): one taken by another service, or by a program wharf
    /// does not run, is refused now, its owner named, rather than left to crash-loop on
    /// "address already in use". Hosts of a fleet check their own ports as they start.
    fn check_fixed_ports(
        &self,
        spec: &DeploySpec,
        rendered: &crate::render::Rendered,
        plan: &Plan,
    ) -> Result<(), ServerError> {
        if !matches!(spec.port, Some(PortSpec::Fixed(_))) {
            return Ok(());
        }
        let starting: Vec<&Slot> = plan
            .steps()
            .filter_map(|s| match s {
                Step::Start { to } | Step::Replace { to, .. } => Some(&to.slot),
                Step::Stop { .. } => None,
            })
            .collect();
        // Only this machine's instances share its ports.
        let statuses: Vec<_> = self
            .fleet
            .statuses()
            .into_iter()
            .filter(|(q, _)| self.fleet.is_local(&q.key))
            .collect();
        for p in &rendered.plans {
            let Some(port) = p.port else { continue };
            if !starting.contains(&&slot_of(&p.key)) || !self.fleet.is_local(&p.key) {
                continue;
            }
            let this_service =
                |q: &InstancePlan| q.key.env == spec.env && q.key.service == spec.service;
            if statuses
                .iter()
                .any(|(q, _)| this_service(q) && q.port == Some(port))
            {
                continue;
            }
            let taken_by = |q: &InstancePlan| q.port == Some(port) || q.address == Some(port);
            let owner = match statuses
                .iter()
                .find(|(q, _)| !this_service(q) && taken_by(q))
            {
                Some((q, _)) if q.port == Some(port) => format!(
                    "instance #{} of `{}` in `{}`",
                    q.key.instance, q.key.service, q.key.env
                ),
                Some((q, _)) => format!("the address of `{}` in `{}`", q.key.service, q.key.env),
                None if crate::port_owner::is_free(port) => continue,
                None => crate::port_owner::owner(port)
                    .unwrap_or_else(|| "a program wharf does not run".to_owned()),
            };
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "port {port}, which instance #{} of `{}` in `{}` needs (`port: {}`), is taken by {owner}; nothing was changed",
                    p.key.instance,
                    spec.service,
                    spec.env,
                    match spec.port { Some(PortSpec::Fixed(base)) => base, _ => port }
                ),
            )
            .hint(format!(
                "stop what holds it, or give `{}` a named port (`port: http`) so wharf picks a free one per instance and clients use its address",
                spec.service
            )));
        }
        Ok(())
    }

    /// In an environment with `hosts:`, every node must be a host that joined: nothing
    /// falls back to running on the controller's machine (with the secrets of an
    /// environment that was meant to be elsewhere).
    fn check_hosts(&self, spec: &DeploySpec) -> Result<(), ServerError> {
        // Whether the environment has hosts is policy: the stored definition's, not that
        // of the spec a rollback or a held deployment carries from earlier.
        let hosts_required = match self.definitions.current() {
            Ok(current) => current
                .definition
                .environments
                .get(&spec.env)
                .map_or(spec.hosts_required, |e| e.hosts.is_some()),
            Err(_) => spec.hosts_required,
        };
        // A production controller has no machine of its own to fall back on.
        if !hosts_required && self.fleet.local.is_some() {
            return Ok(());
        }
        let mut missing: Vec<&str> = spec
            .slots
            .iter()
            .map(|s| s.node.as_str())
            .filter(|node| {
                self.fleet.is_local(&InstanceKey {
                    env: spec.env.clone(),
                    service: spec.service.clone(),
                    node: (*node).to_owned(),
                    instance: 0,
                })
            })
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let names = missing
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ServerError::new(
            axum::http::StatusCode::CONFLICT,
            format!(
                "`{}` in `{}` runs on node(s) {names}, which no host claims: {}, so its instances never run on the controller's machine; nothing was changed",
                spec.service,
                spec.env,
                if hosts_required {
                    format!("`{}` declares `hosts:`", spec.env)
                } else {
                    "this controller runs nothing itself (production mode)".to_owned()
                }
            ),
        )
        .hint(format!(
            "`wharf env up {}` makes its hosts; for static hosts, start `wharf agent --name NODE` on each (`wharf token create --env {}`)",
            spec.env, spec.env
        )))
    }

    /// Plans and carries out a prepared deploy, recording it (as deployment `id` when
    /// it was held for approval and is now in progress).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        approved: Option<DeployGuard>,
        req: &Order,
        kind: DeploymentKind,
        digest: &str,
        mut prepared: Prepared,
        forced: bool,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let spec = &req.spec;
        let plan = std::mem::take(&mut prepared.plan);
        let planned = |deployment| DeployEvent::Planned {
            deployment,
            service: spec.service.clone(),
            env: spec.env.clone(),
            version: req.version.clone(),
            steps: plan.steps().cloned().collect(),
            unchanged: plan.unchanged.len(),
        };
        if req.dry_run {
            events.send(planned(None));
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: "dry run: nothing was changed".into(),
            });
        }
        let approved_now = approved.is_some();
        let guard = match approved {
            Some(guard) => guard,
            None => DeployGuard::new(
                self.store.clone(),
                self.store
                    .begin_deployment(&self.new_deployment(req, kind, digest, &prepared, forced))?,
            ),
        };
        let id = guard.id();
        let _cancellable = self.cancels.register(id);
        if approved_now {
            // Held earlier: numbered against what runs now.
            self.store
                .set_deployment_spec(id, &wharf_store::SpecJson::of(&prepared.spec))?;
        }
        events.send(planned(Some(id)));
        self.config.hub.invalidate(&spec.env, &spec.service);
        if let Some(engine) = &spec.engine {
            return engine::run(guard, req, engine, prepared.rendered, events).await;
        }
        let rendered = prepared.rendered;
        if spec.resources.cpu_millis > 0 || spec.resources.memory_bytes > 0 {
            let local = rendered.plans.iter().any(|p| self.fleet.is_local(&p.key));
            let reason = self
                .fleet
                .local
                .as_ref()
                .and_then(|l| l.limits_unavailable());
            if let Some(reason) = reason.filter(|_| local) {
                events.send(DeployEvent::Warning {
                    message: format!(
                        "the resource limits of `{}` are not enforced on this machine: {reason}",
                        spec.service
                    ),
                });
            }
        }
        let plans: HashMap<Slot, SharedPlan> = rendered
            .plans
            .into_iter()
            .map(|mut p| {
                p.deployment_id = id;
                (slot_of(&p.key), Arc::new(p))
            })
            .collect();
        let replaces = plan.steps().any(|s| matches!(s, Step::Replace { .. }));
        if splits(spec, kind) && replaces {
            return self.roll_out(guard, req, &plan, &plans, events).await;
        }
        let (state, message) = match self.execute(&plan, &plans, spec, events, false).await {
            Ok(()) if plan.is_empty() => (
                DeploymentState::Succeeded,
                "no changes: every instance already runs this version and configuration".to_owned(),
            ),
            Ok(()) => (
                DeploymentState::Succeeded,
                format!("{} instance(s) healthy", plans.len()),
            ),
            Err(rolled_back) => {
                let state = if rolled_back.complete {
                    DeploymentState::RolledBack
                } else {
                    DeploymentState::Failed
                };
                (state, rolled_back.message())
            }
        };
        let message = match &req.note {
            Some(note) => format!("{note}; {message}"),
            None => message,
        };
        guard.finish(state, &message)?;
        self.config.hub.invalidate(&spec.env, &spec.service);
        Ok(DeployEvent::Finished {
            deployment: Some(id),
            state,
            message,
        })
    }

    /// For a pooled service, picks the host of every slot; other specs pass unchanged.
    /// A pool that does not fit is refused here, before anything changes.
    fn place(
        &self,
        spec: &DeploySpec,
        observed: &[ObservedInstance],
    ) -> Result<DeploySpec, ServerError> {
        let Some(pool) = &spec.pool else {
            return Ok(spec.clone());
        };
        // What the environment's other services take of each host.
        let statuses = self
            .fleet
            .statuses_where(&|p| p.key.env == spec.env && p.key.service != spec.service);
        let hosts: Vec<HostView> = self
            .store
            .hosts(Some(&spec.env))?
            .into_iter()
            .map(|h| {
                let used_by_others = statuses
                    .iter()
                    .filter(|(p, _)| {
                        p.key.env == spec.env
                            && p.key.node == h.name
                            && p.key.service != spec.service
                    })
                    .fold(Resources::default(), |sum, (p, _)| Resources {
                        cpu_millis: sum.cpu_millis + p.resources.cpu_millis,
                        memory_bytes: sum.memory_bytes + p.resources.memory_bytes,
                    });
                HostView {
                    takes_instances: h.state.can_take_instances(),
                    state: h.state.as_str().to_owned(),
                    capacity: Resources {
                        cpu_millis: h.capacity.cpu_millis,
                        memory_bytes: h.capacity.memory_bytes,
                    },
                    used_by_others,
                    name: h.name,
                }
            })
            .collect();
        // Where each running instance is, by rank: a surged rollout gives instances new
        // numbers, and the slot they fill is their place in the order.
        let mut running: Vec<&Slot> = observed.iter().map(|o| &o.slot).collect();
        running.sort_by_key(|s| s.instance);
        let current = running
            .iter()
            .enumerate()
            .map(|(rank, s)| (rank as u32, s.node.clone()))
            .collect();
        let placement = placement::place(pool, &hosts, &current).map_err(|infeasible| {
            ServerError::bad_request(format!(
                "cannot place {} of {} instance(s) of `{}` in `{}` ({}): no host takes another:\n  {}",
                infeasible.instances.len(),
                pool.count,
                spec.service,
                spec.env,
                instance_list(&infeasible.instances),
                reason_list(&infeasible.reasons)
            ))
            .hint("join more hosts (`wharf token create`), lower the pool's count or resources, or undrain a host")
        })?;
        let mut placed = spec.clone();
        // Placement places positions 0..count; a slot's position is its place in the
        // spec (its number may have moved with a surged rollout).
        for (position, slot) in placed.slots.iter_mut().enumerate() {
            slot.node = placement.get(&(position as u32)).cloned().ok_or_else(|| {
                ServerError::internal(format!(
                    "placement left instance {} of `{}` without a host",
                    slot.instance, spec.service
                ))
            })?;
        }
        Ok(placed)
    }

    /// Moves pooled instances of `env` off hosts that no longer take instances, by
    /// deploying each affected service again at the version it runs now. Asked while a
    /// pass runs, it only makes that pass run once more.
    pub async fn reschedule(&self, env: &str) {
        let Some(turn) = self.reschedules.take(env) else {
            return;
        };
        loop {
            self.reschedule_pass(env).await;
            if !turn.again() {
                break;
            }
        }
    }

    async fn reschedule_pass(&self, env: &str) {
        let hosts = self.store.hosts(Some(env)).unwrap_or_default();
        let unusable: Vec<&str> = hosts
            .iter()
            .filter(|h| !h.state.can_take_instances())
            .map(|h| h.name.as_str())
            .collect();
        let statuses = self.fleet.statuses();
        let running: Vec<(&str, &str)> = statuses
            .iter()
            .filter(|(p, _)| p.key.env == env)
            .map(|(p, _)| (p.key.service.as_str(), p.key.node.as_str()))
            .collect();
        let services = decide::services_to_move(&running, &unusable);
        for service in services {
            let Ok(Some(last)) = self.current_deployment(&service, env) else {
                continue;
            };
            let Ok(spec) = last.spec.parse::<DeploySpec>() else {
                continue;
            };
            if spec.pool.is_none() {
                continue;
            }
            let request = Order {
                spec,
                version: last.version.clone(),
                user: "wharf (reschedule)".into(),
                dry_run: false,
                unregistered_digest: None,
                force: false,
                config_revision: None,
                note: None,
                replay: Some(last.digest.clone()),
            };
            // Another deploy of the service may hold the lock: try again shortly.
            for _ in 0..30 {
                let (tx, _rx) = mpsc::unbounded_channel();
                match self
                    .deploy(request.clone(), DeploymentKind::Reschedule, &Events(tx))
                    .await
                {
                    Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    Err(e) => {
                        tracing::error!(%service, %env, "cannot reschedule: {}", e.message);
                        break;
                    }
                    Ok(outcome) => {
                        tracing::info!(%service, %env, "rescheduled: {outcome:?}");
                        break;
                    }
                }
            }
        }
    }

    /// What runs now for one service in one environment, as the reconciler sees it.
    fn observed(&self, env: &str, service: &str) -> Vec<ObservedInstance> {
        self.fleet
            .statuses_of(env, Some(service))
            .into_iter()
            .map(|(p, s)| ObservedInstance {
                slot: slot_of(&p.key),
                version: p.version.clone(),
                digest: p.digest.clone(),
                config_digest: p.config_digest.clone(),
                healthy: decide::counts_as_healthy(
                    s.state,
                    s.health,
                    self.fleet.takes_instances(&p.key),
                ),
            })
            .collect()
    }

    /// Carries out a plan. On failure returns the reason and whether the rollback
    /// restored every instance it touched.
    /// `keep_replaced`: the instances that new ones start beside keep running (a
    /// blue-green or canary rollout retires them when it ends).
    pub(crate) async fn execute(
        &self,
        plan: &Plan,
        plans: &HashMap<Slot, SharedPlan>,
        spec: &DeploySpec,
        events: &Events,
        keep_replaced: bool,
    ) -> Result<(), RolledBack> {
        let timeout = start_timeout(spec);
        let mut done = Vec::new();
        let cancel = plans
            .values()
            .next()
            .and_then(|p| self.cancels.watch(p.deployment_id));
        let cancelled = |who: String| Failure {
            reason: format!("cancelled by {who}"),
            log_tail: String::new(),
        };
        for batch in &plan.batches {
            if let Some(who) = crate::cancels::cancelled_by(cancel.as_ref()) {
                return Err(self.roll_back(cancelled(who), done, spec, events).await);
            }
            let (started, replaced) = match self
                .apply_batch(batch, plans, spec, events, &mut done)
                .await
            {
                Ok(applied) => applied,
                Err(reason) => {
                    let failure = Failure {
                        reason,
                        log_tail: String::new(),
                    };
                    return Err(self.roll_back(failure, done, spec, events).await);
                }
            };
            let begun = Instant::now();
            let checks =
                join_all(started.iter().map(|key| async move {
                    self.fleet.link(key).wait_healthy(key, timeout).await
                }));
            let checks = tokio::select! {
                checks = checks => checks,
                who = crate::cancels::until_cancelled(cancel.as_ref()) => {
                    return Err(self.roll_back(cancelled(who), done, spec, events).await);
                }
            };
            let mut failure = None;
            for (key, result) in started.iter().zip(checks) {
                match result {
                    Ok(()) => events.send(DeployEvent::Healthy {
                        service: key.service.clone(),
                        node: key.node.clone(),
                        instance: key.instance,
                        elapsed_ms: begun.elapsed().as_millis() as u64,
                    }),
                    Err(unhealthy) => {
                        events.send(DeployEvent::Failed {
                            service: key.service.clone(),
                            node: key.node.clone(),
                            instance: key.instance,
                            reason: unhealthy.reason.clone(),
                            log_tail: unhealthy.log_tail.clone(),
                        });
                        failure.get_or_insert_with(|| Failure {
                            reason: format!("{key} did not become healthy: {}", unhealthy.reason),
                            log_tail: unhealthy.log_tail.clone(),
                        });
                    }
                }
            }
            if failure.is_none() && !spec.min_healthy_time.is_zero() && !started.is_empty() {
                failure = tokio::select! {
                    failure = self.stayed_healthy(&started, spec.min_healthy_time) => failure,
                    who = crate::cancels::until_cancelled(cancel.as_ref()) => Some(cancelled(who)),
                };
            }
            if let Some(failure) = failure {
                return Err(self.roll_back(failure, done, spec, events).await);
            }
            if !keep_replaced {
                self.retire(&replaced, events, &mut done).await;
                self.traffic_moved(plans, spec, events);
            }
        }
        Ok(())
    }

    /// Says how much of the service's traffic the new version takes now: the share of
    /// its instances in the rotation that run it.
    fn traffic_moved(&self, plans: &HashMap<Slot, SharedPlan>, spec: &DeploySpec, events: &Events) {
        let Some(new) = plans.values().next().filter(|_| spec.port.is_some()) else {
            return;
        };
        let serving: Vec<bool> = self
            .fleet
            .statuses_of(&spec.env, Some(&spec.service))
            .into_iter()
            .filter(|(_, s)| {
                s.state == wharf_core::lifecycle::InstanceState::Running
                    && s.health == wharf_core::lifecycle::Health::Healthy
            })
            .map(|(p, _)| p.deployment_id == new.deployment_id)
            .collect();
        let on_new = serving.iter().filter(|n| **n).count();
        if serving.is_empty() {
            return;
        }
        events.send(DeployEvent::Traffic {
            service: spec.service.clone(),
            version: new.version.clone(),
            percent: (on_new * 100 / serving.len()) as u32,
            instances: on_new,
            of: serving.len(),
        });
    }

    /// Stops the instances a batch started successors for beside them, now that those
    /// serve: each leaves the rotation, answers what it was sent (the drain), and stops.
    async fn retire(&self, replaced: &[(InstanceKey, u32)], events: &Events, done: &mut Vec<Done>) {
        let mut stopping = Vec::new();
        for (key, successor) in replaced {
            let Some(previous) = self.fleet.link(key).shared_plan(key) else {
                continue;
            };
            events.progress(
                key,
                format!(
                    "draining {}: traffic moved to instance #{successor}",
                    previous.version
                ),
            );
            done.push(Done::Stopped(previous));
            stopping.push(key.clone());
        }
        self.stop_all(&stopping, |_| false).await;
    }

    /// Stops `keys` at once (each agent drains before it stops) and forgets the
    /// instances that `restarting` does not name.
    async fn stop_all(&self, keys: &[InstanceKey], restarting: impl Fn(&InstanceKey) -> bool) {
        if !self.fleet.stop_all(keys).await {
            // Their assignments are still stored: so are their rows, which say so.
            return;
        }
        let forgotten: Vec<_> = keys
            .iter()
            .filter(|key| !restarting(key))
            .map(crate::fleet::slot_ref)
            .collect();
        if let Err(e) = self.store.remove_instances(&forgotten) {
            tracing::warn!("cannot forget {} stopped instance(s): {e}", forgotten.len());
        }
    }

    /// Waits `min_healthy_time`, then checks that every instance of the batch still runs
    /// its first process and passes its checks.
    async fn stayed_healthy(
        &self,
        batch: &[InstanceKey],
        min_healthy_time: Duration,
    ) -> Option<Failure> {
        // Watched through the window, so an instance that falls over fails the batch at
        // once rather than when the window ends.
        let deadline = tokio::time::Instant::now() + min_healthy_time;
        loop {
            let now = tokio::time::Instant::now();
            if let Some(failure) = self.unsteady(batch, min_healthy_time) {
                return Some(failure);
            }
            if now >= deadline {
                return None;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
        }
    }

    /// The first instance of `batch` that no longer runs its first process healthily.
    fn unsteady(&self, batch: &[InstanceKey], min_healthy_time: Duration) -> Option<Failure> {
        for key in batch {
            let status = self.fleet.link(key).status(key);
            let steady = status
                .as_ref()
                .is_some_and(|s| decide::is_steady(s.state, s.health, s.restarts));
            if !steady {
                let what = status
                    .and_then(|s| s.last_exit)
                    .map(|e| format!(" (it {e})"))
                    .unwrap_or_default();
                return Some(Failure {
                    reason: format!(
                        "{key} did not stay healthy for {}ms{what}",
                        min_healthy_time.as_millis()
                    ),
                    log_tail: String::new(),
                });
            }
        }
        None
    }

    /// Carries out one batch: every stop it needs at once, then every start, grouped by
    /// agent so a remote host takes its share in one assignment change. Returns the
    /// instances started, to be health-checked, and the instances that successors were
    /// started beside (with the successor's number), to be stopped once those serve.
    async fn apply_batch(
        &self,
        batch: &[Step],
        plans: &HashMap<Slot, SharedPlan>,
        spec: &DeploySpec,
        events: &Events,
        done: &mut Vec<Done>,
    ) -> Result<(Vec<InstanceKey>, Vec<(InstanceKey, u32)>), String> {
        let mut stops = Vec::new();
        let mut starts = Vec::new();
        let mut replaced = Vec::new();
        for step in batch {
            match step {
                Step::Replace { from, to } if rollout::is_surged(step) => {
                    let plan = plan_of(plans, &to.slot)?;
                    let old = InstanceKey {
                        env: spec.env.clone(),
                        service: spec.service.clone(),
                        node: from.slot.node.clone(),
                        instance: from.slot.instance,
                    };
                    let message = if from.version == to.version {
                        format!(
                            "starting {} with new configuration beside instance #{}",
                            to.version, from.slot.instance
                        )
                    } else {
                        format!(
                            "starting {} beside instance #{} ({})",
                            to.version, from.slot.instance, from.version
                        )
                    };
                    events.progress(&plan.key, message);
                    done.push(Done::Started(plan.key.clone()));
                    replaced.push((old, to.slot.instance));
                    starts.push(plan);
                }
                Step::Start { to } => {
                    let plan = plan_of(plans, &to.slot)?;
                    events.progress(&plan.key, format!("starting {}", plan.version));
                    done.push(Done::Started(plan.key.clone()));
                    starts.push(plan);
                }
                Step::Replace { from, to } => {
                    let plan = plan_of(plans, &to.slot)?;
                    let key = plan.key.clone();
                    let message = if from.version == to.version {
                        format!("restarting {} with new configuration", to.version)
                    } else {
                        format!("replacing {} with {}", from.version, to.version)
                    };
                    events.progress(&key, message);
                    let previous = self.fleet.link(&key).shared_plan(&key);
                    done.push(Done::Replaced {
                        key: key.clone(),
                        previous,
                    });
                    stops.push(key);
                    starts.push(plan);
                }
                Step::Stop { from } => {
                    let key = InstanceKey {
                        env: spec.env.clone(),
                        service: spec.service.clone(),
                        node: from.slot.node.clone(),
                        instance: from.slot.instance,
                    };
                    let Some(previous) = self.fleet.link(&key).shared_plan(&key) else {
                        continue;
                    };
                    events.progress(
                        &key,
                        format!("stopping {} (no longer wanted)", from.version),
                    );
                    done.push(Done::Stopped(previous));
                    stops.push(key);
                }
            }
        }
        let restarting: std::collections::HashSet<&InstanceKey> =
            starts.iter().map(|p| &p.key).collect();
        self.stop_all(&stops, |key| restarting.contains(key)).await;
        let started: Vec<InstanceKey> = starts.iter().map(|p| p.key.clone()).collect();
        self.fleet
            .start_all(starts)
            .await
            .map_err(|e| format!("cannot start instances of `{}`: {e}", spec.service))?;
        Ok((started, replaced))
    }

    /// Undoes `done` in reverse; returns the failure and whether everything was restored.
    async fn roll_back(
        &self,
        failure: Failure,
        done: Vec<Done>,
        spec: &DeploySpec,
        events: &Events,
    ) -> RolledBack {
        let timeout = start_timeout(spec);
        events.send(DeployEvent::RollingBack {
            reason: failure.reason.clone(),
        });
        let mut complete = true;
        let mut restored_previous = false;
        let shape: Vec<decide::Done> = done
            .iter()
            .map(|step| match step {
                Done::Started(_) => decide::Done::Started,
                Done::Replaced { previous, .. } => decide::Done::Replaced {
                    had_previous: previous.is_some(),
                },
                Done::Stopped(_) => decide::Done::Stopped,
            })
            .collect();
        let mut done: Vec<Option<Done>> = done.into_iter().map(Some).collect();
        for (index, undo) in decide::undo_order(&shape) {
            let Some(step) = done.get_mut(index).and_then(Option::take) else {
                continue;
            };
            let (key, previous) = match step {
                Done::Started(key) => (Some(key), None),
                Done::Replaced { key, previous } => (Some(key), previous),
                Done::Stopped(previous) => (None, Some(previous)),
            };
            if let Some(key) = key {
                self.fleet.link(&key).stop(&key).await;
                if undo == decide::Undo::Stop {
                    let _ =
                        self.store
                            .remove_instance(&key.env, &key.service, &key.node, key.instance);
                }
            }
            let Some(previous) = previous.filter(|_| undo != decide::Undo::Stop) else {
                continue;
            };
            let key = previous.key.clone();
            events.progress(&key, format!("restoring {}", previous.version));
            let link = self.fleet.link(&key);
            let ok = match link.start(Arc::unwrap_or_clone(previous)).await {
                Ok(()) => link.wait_healthy(&key, timeout).await.is_ok(),
                Err(_) => false,
            };
            complete &= ok;
            restored_previous = true;
        }
        RolledBack {
            failure,
            complete,
            restored_previous,
            // What still runs once every new instance is gone ran before.
            kept_previous: !self.observed(&spec.env, &spec.service).is_empty(),
        }
    }

    /// Rolls a service back to an earlier successful deploy: its artifact and its
    /// configuration, exactly as they ran.
    pub async fn rollback(
        &self,
        req: RollbackRequest,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        self.definitions.known_environment(&req.env)?;
        let history = self.store.history(&req.service, &req.env)?;
        let facts: Vec<(DeploymentFacts, &str)> = history
            .iter()
            .map(|d| {
                let facts = DeploymentFacts {
                    id: d.id,
                    kind: d.kind,
                    state: d.state,
                    started_at: d.started_at,
                };
                (facts, d.version.as_str())
            })
            .collect();
        let current = self
            .current_deployment(&req.service, &req.env)?
            .map(|d| d.version);
        let chosen = decide::rollback_target(&facts, current.as_deref(), req.to.as_deref())
            .map_err(|refusal| match refusal {
                decide::RollbackRefusal::NeverRan { known } => ServerError::not_found(format!(
                    "version `{}` never ran successfully for `{}` in `{}`",
                    req.to.as_deref().unwrap_or_default(),
                    req.service,
                    req.env
                ))
                .hint(if known.is_empty() {
                    "nothing has been deployed there yet".to_owned()
                } else {
                    format!(
                        "versions that ran: {}",
                        known
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
                decide::RollbackRefusal::NothingEarlier => ServerError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!(
                        "no earlier version of `{}` ran successfully in `{}`",
                        req.service, req.env
                    ),
                )
                .hint("`wharf history` lists what ran"),
            })?;
        let Some(target) = history.iter().find(|d| d.id == chosen) else {
            return Err(ServerError::internal(format!(
                "deployment #{chosen} vanished"
            )));
        };
        self.redeploy(
            target,
            DeploymentKind::Rollback,
            req.user,
            None,
            true,
            events,
        )
        .await
    }

    /// Refuses, before anything is saved, a change the deploy lock would refuse later.
    pub(crate) fn refuse_if_locked(&self, service: &str, env: &str) -> Result<(), ServerError> {
        let holder = self
            .store
            .history(service, env)?
            .into_iter()
            .find(|d| d.state == DeploymentState::InProgress);
        match holder {
            None => Ok(()),
            Some(holder) => Err(wharf_store::StoreError::Locked {
                service: service.to_owned(),
                env: env.to_owned(),
                holder: holder.user,
                id: holder.id,
                started: format!("{}s ago", (now_millis() - holder.started_at).max(0) / 1000),
            }
            .into()),
        }
    }

    /// Deploys `target` again: its spec and artifact, and with `restore_config` the
    /// configuration it ran with (those overrides become the newest revision again
    /// where they changed); without, the newest configuration (a reconcile must not
    /// undo a change made since, say one reloaded in place).
    pub(crate) async fn redeploy(
        &self,
        target: &wharf_store::DeploymentRecord,
        kind: DeploymentKind,
        user: String,
        note: Option<String>,
        restore_config: bool,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let spec: DeploySpec = target.spec.parse().map_err(|e| {
            ServerError::internal(format!(
                "deployment #{} has an unreadable spec: {e}",
                target.id
            ))
        })?;
        self.refuse_if_locked(&target.service, &target.env)?;
        // The configuration comes back with the artifact: the overrides the target ran
        // with become the newest revision again.
        let (current_revision, current) =
            self.config.overrides(&target.service, &target.env, None)?;
        let (_, wanted) = if restore_config {
            self.config
                .overrides(&target.service, &target.env, Some(target.config_revision))?
        } else {
            (current_revision, current.clone())
        };
        let config_revision = if wanted != current {
            let saved = self.store.put_config_revision(
                &target.service,
                &target.env,
                &wanted,
                &user,
                now_millis(),
                &format!("restored by the rollback to deployment #{}", target.id),
            )?;
            self.config.hub.invalidate(&target.env, &target.service);
            events.send(DeployEvent::ConfigSaved {
                service: target.service.clone(),
                env: target.env.clone(),
                revision: saved.revision,
            });
            saved.revision
        } else {
            current_revision
        };
        let request = Order {
            spec,
            version: target.version.clone(),
            user,
            dry_run: false,
            unregistered_digest: None,
            force: false,
            config_revision: Some(config_revision),
            note,
            replay: Some(target.digest.clone()),
        };
        let outcome = self.deploy(request, kind, events).await;
        self.config
            .hub
            .announce_current(&*self.store, &target.env, &target.service);
        outcome
    }

    /// Replaces every instance of a service by a fresh one of what runs now, the rolling
    /// way (each new one serves before the one it replaces is drained).
    pub async fn restart(
        &self,
        service: &str,
        env: &str,
        user: String,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let Some(running) = self.current_deployment(service, env)? else {
            return Err(ServerError::not_found(format!(
                "`{service}` does not run in `{env}`: nothing to restart"
            ))
            .hint(format!("`wharf deploy {service} --env {env}` starts it")));
        };
        self.redeploy(
            &running,
            DeploymentKind::Restart,
            user,
            Some("restart".into()),
            false,
            events,
        )
        .await
    }

    /// Runs the version that runs now with the stored definition's new instance count
    /// (new slots start, surplus ones stop last); nothing runs yet: the next deploy uses it.
    pub async fn scale(
        &self,
        service: &str,
        env: &str,
        revision: i64,
        user: String,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let Some(running) = self.current_deployment(service, env)? else {
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: format!(
                    "definition revision {revision} saved; `{service}` does not run in `{env}`, its next deploy runs the new count"
                ),
            });
        };
        let order = Order {
            spec: self.definitions.spec_for(service, env)?,
            version: running.version.clone(),
            user,
            dry_run: false,
            unregistered_digest: None,
            // It passed the gate (or was forced past it) when it was deployed.
            force: running.forced,
            config_revision: None,
            note: Some(format!("scale (definition revision {revision})")),
            replay: Some(running.digest.clone()),
        };
        self.deploy(order, DeploymentKind::Deploy, events).await
    }

    /// Stops one service or every service of an environment, recording it in history.
    pub async fn stop(
        &self,
        req: StopRequest,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let mut by_service: std::collections::BTreeMap<String, Vec<InstancePlan>> =
            Default::default();
        let current = self.definitions.current().ok();
        let environment = current
            .as_ref()
            .and_then(|c| c.definition.environments.get(&req.env));
        // What the stored definition runs in the environment: a prune stops the rest.
        let defined: Vec<String> = environment
            .map(|e| e.service_names().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        // An engine environment's replicas are the engine's to remove.
        let engine = environment.and_then(|e| e.engine.clone());
        if req.prune && defined.is_empty() {
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "the stored definition has no services in `{}`; nothing is pruned",
                    req.env
                ),
            )
            .hint("`wharf down --env ENV` stops every service of an environment"));
        }
        let pruned = |service: &str| !req.prune || !defined.iter().any(|d| d == service);
        for (plan, _) in self.fleet.statuses() {
            if plan.key.env == req.env
                && req.service.as_ref().is_none_or(|s| *s == plan.key.service)
                && pruned(&plan.key.service)
            {
                by_service
                    .entry(plan.key.service.clone())
                    .or_default()
                    .push(Arc::unwrap_or_clone(plan));
            }
        }
        // A service whose instances are all gone still runs as far as history says: its
        // stop is recorded too, or the reconcile would bring it back.
        let named: Vec<String> = match &req.service {
            Some(service) => vec![service.clone()],
            None if req.prune => Vec::new(),
            None => defined.clone(),
        };
        let mut ran: HashMap<String, (String, String)> = HashMap::new();
        for service in named {
            if let Some(d) = self.current_deployment(&service, &req.env)? {
                ran.insert(service.clone(), (d.version, d.digest));
                by_service.entry(service).or_default();
            }
        }
        if by_service.is_empty() {
            let what = req
                .service
                .as_ref()
                .map(|s| format!("`{s}`"))
                .unwrap_or_else(|| "nothing".to_owned());
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: format!("{what} runs in `{}`; nothing to stop", req.env),
            });
        }
        let mut last = None;
        let mut count = 0;
        for (service, plans) in by_service {
            let (version, digest) = match (plans.first(), ran.get(&service)) {
                (Some(p), _) => (p.version.clone(), p.digest.clone()),
                (None, Some(last)) => last.clone(),
                (None, None) => continue,
            };
            let id = self.store.begin_deployment(&NewDeployment {
                service: service.clone(),
                env: req.env.clone(),
                kind: DeploymentKind::Stop,
                version,
                digest,
                config_digest: String::new(),
                spec: wharf_store::SpecJson::null(),
                user: req.user.clone(),
                started_at: now_millis(),
                config_revision: 0,
                forced: false,
                pending_approval: false,
            })?;
            let guard = DeployGuard::new(self.store.clone(), id);
            self.config.hub.invalidate(&req.env, &service);
            let mut stopped_here = plans.len();
            if let Some(engine) = &engine {
                match engine::remove(engine, &req.env, &service).await {
                    Ok(removed) => {
                        count += removed;
                        stopped_here += removed;
                    }
                    Err(why) => {
                        guard.finish(DeploymentState::Failed, &why)?;
                        return Err(ServerError::new(axum::http::StatusCode::BAD_GATEWAY, why)
                            .hint(
                                "check the engine (`docker service ls`) and run `wharf down` again",
                            ));
                    }
                }
            }
            for plan in &plans {
                events.progress(&plan.key, format!("stopping {} {}", service, plan.version));
                self.fleet.link(&plan.key).stop(&plan.key).await;
                self.store.remove_instance(
                    &plan.key.env,
                    &service,
                    &plan.key.node,
                    plan.key.instance,
                )?;
                count += 1;
            }
            guard.finish(
                DeploymentState::Succeeded,
                &format!("stopped {stopped_here} instance(s)"),
            )?;
            last = Some(id);
        }
        let mut message = format!("stopped {count} instance(s) in `{}`", req.env);
        if req.purge {
            message.push_str(&self.purge_data(&req, events).await?);
        }
        Ok(DeployEvent::Finished {
            deployment: last,
            state: DeploymentState::Succeeded,
            message,
        })
    }

    /// Removes the data folders and named volumes of what `req` stopped, on this
    /// machine and on every connected host of the environment; a host that is away
    /// keeps its own (named in a warning: a later purge removes them).
    async fn purge_data(&self, req: &StopRequest, events: &Events) -> Result<String, ServerError> {
        let (mut folders, mut volumes) = (0, 0);
        for host in self.store.hosts(Some(&req.env))? {
            let kept = |why: String| DeployEvent::Warning {
                message: format!(
                    "host `{}` keeps its data of `{}`: {why}; `wharf down --env {} --purge` again once it is back",
                    host.name, req.env, req.env
                ),
            };
            use wharf_core::lifecycle::HostState;
            if !matches!(host.state, HostState::Ready | HostState::Draining) {
                events.send(kept(format!("it is {}", host.state.as_str())));
                continue;
            }
            let work = wharf_api::agent::HostWork::Purge {
                env: req.env.clone(),
                service: req.service.clone(),
            };
            match self
                .fleet
                .remote(host.id)
                .ask(work, crate::remote::PURGE_WAIT)
                .await
            {
                Ok(wharf_api::agent::HostAnswer::Purged {
                    folders: f,
                    volumes: v,
                }) => {
                    folders += f;
                    volumes += v;
                }
                Ok(wharf_api::agent::HostAnswer::Failed { error }) => events.send(kept(error)),
                Ok(other) => events.send(kept(format!("its agent answered {other:?}"))),
                Err(e) => events.send(kept(e)),
            }
        }
        let Some(local) = self.fleet.local.clone() else {
            return Ok(purged(folders, volumes));
        };
        // Data folders can be large: removing them is blocking work.
        let (env, service) = (req.env.clone(), req.service.clone());
        let removed =
            tokio::task::spawn_blocking(move || local.purge_data(&env, service.as_deref()))
                .await
                .map_err(|e| ServerError::internal(e.to_string()))?
                .map_err(|e| ServerError::new(axum::http::StatusCode::CONFLICT, e))?;
        let local_volumes = self
            .fleet
            .local
            .as_ref()
            .map(|local| local.purge_volumes(&req.env, req.service.as_deref()));
        if let Some(purge) = local_volumes {
            volumes += purge
                .await
                .map_err(|e| ServerError::new(axum::http::StatusCode::CONFLICT, e))?;
        }
        Ok(purged(folders + removed.len(), volumes))
    }
}

/// What a purge says it removed.
fn purged(folders: usize, volumes: usize) -> String {
    let mut said = format!("; removed {folders} data folder(s)");
    if volumes > 0 {
        said.push_str(&format!(" and {volumes} volume(s)"));
    }
    said
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Instances by number, the first few of many: `instances 3, 4, 5 and 9,995 more`.
fn instance_list(instances: &[u32]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = instances.iter().take(SHOWN).map(u32::to_string).collect();
    let word = if instances.len() == 1 {
        "instance"
    } else {
        "instances"
    };
    match instances.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{word} {} and {more} more", shown.join(", ")),
        _ => format!("{word} {}", shown.join(", ")),
    }
}

/// A reason per host, the first few of many hosts.
fn reason_list(reasons: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut lines: Vec<String> = reasons.iter().take(SHOWN).cloned().collect();
    if reasons.len() > SHOWN {
        lines.push(format!("... and {} more hosts", reasons.len() - SHOWN));
    }
    lines.join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reschedules_of_one_environment_coalesce_into_one_more_pass() {
        let reschedules = Reschedules::default();
        let turn = reschedules.take("scale").expect("the first takes the turn");
        assert!(!turn.again(), "nobody asked yet");
        for _ in 0..1000 {
            assert!(reschedules.take("scale").is_none(), "a pass runs already");
        }
        assert!(
            reschedules.take("other").is_some(),
            "environments are apart"
        );
        assert!(turn.again(), "a thousand asks make one more pass");
        assert!(!turn.again());
        drop(turn);
        assert!(
            reschedules.take("scale").is_some(),
            "given back when it ends"
        );
    }
}
