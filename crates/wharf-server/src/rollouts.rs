//! Blue-green and canary rollouts. A deploy of such a service starts the whole new set
//! beside the old one under a traffic split (no share of the main address yet, a
//! preview address of its own), then hands its deployment, still in progress and so
//! still holding the deploy lock, to a [`Driver`]: a task that moves the split by the
//! rule in `wharf_core::strategy` (timed steps, `wharf rollout promote`, `abort`, the
//! proxies' measures) and, at the end, retires one set. Every move is stored before it
//! is applied; a controller that restarts picks the rollout up where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use wharf_api::agent::TrafficSplit;
use wharf_api::traffic::Counts;
use wharf_api::{DeployEvent, RolloutEvent, RolloutView};
use wharf_core::lifecycle::DeploymentState;
use wharf_core::plan::{Plan, Slot, Step};
use wharf_core::strategy::{self, Command, Measured, Next, Phase, Progress, Strategy};
use wharf_driver::InstanceKey;
use wharf_store::{RolloutRecord, Store};

use crate::deploy_guard::DeployGuard;
use crate::error::ServerError;
use crate::executor::{Events, Executor, Order};
use crate::fleet::{Fleet, SharedPlan};
use crate::now_millis;

/// How often a rollout looks for commands and timers.
const TICK: Duration = Duration::from_millis(100);
/// How often a canary's measures are compared with the stable set's.
const ANALYSIS_EVERY: Duration = Duration::from_millis(500);
/// Who an automatic move is recorded as.
const BY_WHARF: &str = "wharf";

/// A rollout as the controller stores it (the store keeps it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rollout {
    pub strategy: Strategy,
    pub progress: Progress,
    pub version: String,
    pub stable_version: String,
    pub preview_port: Option<u16>,
    /// The old set, retired when the rollout finishes.
    pub old: Vec<InstanceKey>,
    /// The new set, stopped when it is aborted.
    pub new: Vec<InstanceKey>,
    /// Decided and stored, not yet carried out to the end.
    pub ending: Option<Ending>,
    pub events: Vec<RolloutEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ending {
    Finish,
    Abort,
}

impl Rollout {
    fn log(&mut self, by: &str, what: String) {
        tracing::info!("rollout of {}: {what} ({by})", self.version);
        self.events.push(RolloutEvent {
            at: now_millis(),
            by: by.to_owned(),
            what,
        });
    }

    /// The split every address applies now. Only a canary pins clients, and not while
    /// it ends: a pinned request would wait for a set being retired.
    fn split(&self, candidate: i64) -> TrafficSplit {
        let (header, cookie) = match &self.strategy {
            Strategy::Canary { pin, .. } if self.ending.is_none() => {
                (pin.header.clone(), pin.cookie.clone())
            }
            _ => (String::new(), String::new()),
        };
        TrafficSplit {
            candidate,
            weight: self.progress.weight,
            header,
            cookie,
            preview_port: self.preview_port,
        }
    }
}

fn record(id: i64, service: &str, env: &str, rollout: &Rollout) -> RolloutRecord {
    RolloutRecord {
        deployment_id: id,
        service: service.to_owned(),
        env: env.to_owned(),
        phase: rollout.progress.phase.as_str().to_owned(),
        progress: serde_json::to_value(rollout).unwrap_or_default(),
        command: None,
        command_by: None,
        updated_at: now_millis(),
    }
}

fn parse(record: &RolloutRecord) -> Result<Rollout, ServerError> {
    serde_json::from_value(record.progress.clone()).map_err(|e| {
        ServerError::internal(format!(
            "rollout #{} is stored unreadably: {e}",
            record.deployment_id
        ))
    })
}

/// The splits of the rollouts whose sets run, as stored: applied before anything is
/// adopted at start, so no instance of a new set serves the main address unasked.
pub fn stored_splits(
    store: &dyn Store,
) -> Result<Vec<(String, String, TrafficSplit)>, wharf_store::StoreError> {
    let active = [Phase::Starting, Phase::Paused, Phase::Promoted].map(Phase::as_str);
    Ok(store
        .rollouts_in(&active)?
        .into_iter()
        .filter_map(|r| match parse(&r) {
            Ok(rollout) => Some((
                r.env.clone(),
                r.service.clone(),
                rollout.split(r.deployment_id),
            )),
            Err(e) => {
                tracing::error!("{}", e.message);
                None
            }
        })
        .collect())
}
/// Stops `keys` at once (each drains first) and forgets them.
async fn stop_and_forget(fleet: &Fleet, store: &dyn Store, keys: &[InstanceKey]) {
    join_all(
        keys.iter()
            .map(|key| async move { fleet.link(key).stop(key).await }),
    )
    .await;
    for key in keys {
        let _ = store.remove_instance(&key.env, &key.service, &key.node, key.instance);
    }
}

impl Executor {
    /// Starts the new set of a blue-green or canary deploy beside the old one, then
    /// leaves the rest to a [`Driver`]: the deployment stays in progress until the
    /// rollout ends.
    pub(crate) async fn roll_out(
        &self,
        guard: DeployGuard,
        req: &Order,
        plan: &Plan,
        plans: &HashMap<Slot, SharedPlan>,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let spec = &req.spec;
        let id = guard.id();
        let (service, env) = (spec.service.as_str(), spec.env.as_str());
        let key = |slot: &Slot| InstanceKey {
            env: env.to_owned(),
            service: service.to_owned(),
            node: slot.node.clone(),
            instance: slot.instance,
        };
        // The old set is what the plan replaces or stops; the new one what it starts.
        // Instances it leaves unchanged stay whatever the outcome.
        let mut running: Vec<(InstanceKey, String)> = Vec::new();
        let mut new = Vec::new();
        for step in plan.steps() {
            match step {
                Step::Start { to } => new.push(key(&to.slot)),
                Step::Replace { from, to } => {
                    running.push((key(&from.slot), from.version.clone()));
                    new.push(key(&to.slot));
                }
                Step::Stop { from } => running.push((key(&from.slot), from.version.clone())),
            }
        }
        let preview_port =
            crate::render::preview_port(&*self.store, env, service, spec.rollout.preview_port)?;
        let mut rollout = Rollout {
            strategy: spec.rollout.strategy.clone(),
            progress: Progress {
                phase: Phase::Starting,
                step: 0,
                weight: 0,
                since: now_millis(),
            },
            version: req.version.clone(),
            stable_version: running.first().map(|(_, v)| v.clone()).unwrap_or_default(),
            preview_port: Some(preview_port),
            old: running.into_iter().map(|(k, _)| k).collect(),
            new,
            ending: None,
            events: Vec::new(),
        };
        rollout.log(
            &req.user,
            format!(
                "{} rollout: starting {} beside {}",
                rollout.strategy.name(),
                rollout.version,
                rollout.stable_version
            ),
        );
        self.store
            .put_rollout(&record(id, service, env, &rollout))?;
        self.fleet.set_split(env, service, Some(rollout.split(id)));
        // The old set stays, surplus instances too, until the rollout ends.
        let beside = Plan {
            batches: plan
                .batches
                .iter()
                .map(|b| {
                    b.iter()
                        .filter(|s| !matches!(s, Step::Stop { .. }))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .filter(|b| !b.is_empty())
                .collect(),
            unchanged: plan.unchanged.clone(),
        };
        if let Err(rolled_back) = self.execute(&beside, plans, spec, events, true).await {
            self.fleet.set_split(env, service, None);
            let message = rolled_back.message();
            rollout.progress.phase = Phase::Aborted;
            rollout.log(BY_WHARF, format!("the new set did not start: {message}"));
            self.store
                .put_rollout(&record(id, service, env, &rollout))?;
            let state = if rolled_back.complete() {
                DeploymentState::RolledBack
            } else {
                DeploymentState::Failed
            };
            guard.finish(state, &message)?;
            return Ok(DeployEvent::Finished {
                deployment: Some(id),
                state,
                message,
            });
        }
        rollout.progress = strategy::begin(&rollout.strategy, now_millis());
        let preview = format!("127.0.0.1:{preview_port}");
        let message = match &rollout.strategy {
            Strategy::Canary { steps, .. } => format!(
                "canary {} takes {}% of requests (step 1 of {}; preview at {preview}); `wharf rollout status {service} --env {env}` follows it, `promote` moves it on, `abort` stops it",
                rollout.version,
                rollout.progress.weight,
                steps.len()
            ),
            _ => format!(
                "{} waits at its preview address {preview}: `wharf rollout promote {service} --env {env}` switches all traffic to it, `wharf rollout abort {service} --env {env}` stops it",
                rollout.version
            ),
        };
        rollout.log(
            BY_WHARF,
            format!(
                "the new set is healthy; {}% of requests on it",
                rollout.progress.weight
            ),
        );
        if let Err(e) = self.store.put_rollout(&record(id, service, env, &rollout)) {
            // Not stored, so not begun: the new set goes, as if it had failed.
            stop_and_forget(&self.fleet, &*self.store, &rollout.new).await;
            self.fleet.set_split(env, service, None);
            let message = format!("the rollout could not be stored ({e}); the new set was stopped");
            guard.finish(DeploymentState::Failed, &message)?;
            return Err(ServerError::internal(message));
        }
        self.fleet.set_split(env, service, Some(rollout.split(id)));
        events.send(DeployEvent::Traffic {
            service: service.to_owned(),
            version: rollout.version.clone(),
            percent: u32::from(rollout.progress.weight),
            instances: rollout.new.len(),
            of: rollout.new.len() + rollout.old.len(),
        });
        let driver = Driver {
            store: self.store.clone(),
            fleet: self.fleet.clone(),
            service: service.to_owned(),
            env: env.to_owned(),
            guard,
            rollout,
        };
        tokio::spawn(driver.run());
        Ok(DeployEvent::Finished {
            deployment: Some(id),
            state: DeploymentState::InProgress,
            message,
        })
    }

    /// At start, before interrupted deploys are resolved: rollouts whose new set
    /// serves go on (their deployment is still in progress).
    pub async fn resume_rollouts(&self) {
        let serving = [Phase::Paused, Phase::Promoted].map(Phase::as_str);
        for r in self.store.rollouts_in(&serving).unwrap_or_default() {
            let Ok(mut rollout) = parse(&r) else {
                tracing::error!("rollout #{} cannot be read; left as it is", r.deployment_id);
                continue;
            };
            let in_progress = matches!(
                self.store.deployment(r.deployment_id),
                Ok(Some(d)) if d.state == DeploymentState::InProgress
            );
            if !in_progress {
                // Its deployment ended (its last record was lost): nothing to drive.
                self.fleet.set_split(&r.env, &r.service, None);
                rollout.progress.phase = Phase::Aborted;
                rollout.log(
                    BY_WHARF,
                    "its deployment had ended; the rollout is closed".into(),
                );
                let _ =
                    self.store
                        .put_rollout(&record(r.deployment_id, &r.service, &r.env, &rollout));
                continue;
            }
            self.fleet
                .set_split(&r.env, &r.service, Some(rollout.split(r.deployment_id)));
            rollout.log(
                BY_WHARF,
                "the controller restarted; the rollout goes on".into(),
            );
            let driver = Driver {
                store: self.store.clone(),
                fleet: self.fleet.clone(),
                service: r.service.clone(),
                env: r.env.clone(),
                guard: DeployGuard::new(self.store.clone(), r.deployment_id),
                rollout,
            };
            tokio::spawn(driver.run_resumed());
        }
    }

    /// At start, once interrupted deploys are resolved: a rollout that was still
    /// starting its new set went with its deploy (rolled back, or resumed the rolling
    /// way); its split goes too.
    pub fn close_started_rollouts(&self) {
        let starting = [Phase::Starting.as_str()];
        for r in self.store.rollouts_in(&starting).unwrap_or_default() {
            self.fleet.set_split(&r.env, &r.service, None);
            let Ok(mut rollout) = parse(&r) else {
                continue;
            };
            rollout.progress.phase = Phase::Aborted;
            rollout.log(
                BY_WHARF,
                "the controller stopped while the new set started; the deploy was resolved as interrupted".into(),
            );
            let _ = self
                .store
                .put_rollout(&record(r.deployment_id, &r.service, &r.env, &rollout));
        }
    }
    /// The newest rollout of a service in an environment.
    pub fn rollout_view(&self, service: &str, env: &str) -> Result<RolloutView, ServerError> {
        let Some(r) = self.store.rollout(env, service)? else {
            return Err(ServerError::not_found(format!(
                "`{service}` has had no blue-green or canary rollout in `{env}`"
            ))
            .hint("`rollout: { strategy: blue-green }` or `canary` in wharf.yaml makes its deploys roll out so"));
        };
        let rollout = parse(&r)?;
        Ok(view(&r, &rollout))
    }

    /// Gives the running rollout of a service a command, and answers once it was
    /// carried out (or after a while, with the rollout as it is then).
    pub async fn command_rollout(
        &self,
        service: &str,
        env: &str,
        command: Command,
        by: &str,
    ) -> Result<RolloutView, ServerError> {
        let before = self.rollout_view(service, env)?;
        let phase = Phase::parse(&before.phase).unwrap_or(Phase::Aborted);
        let verb = match command {
            Command::Abort => "abort",
            Command::Promote { .. } => "promote",
        };
        if let Err(refusal) = strategy::may(command, phase) {
            let why = match refusal {
                strategy::Refusal::Finished(p) => format!("it already {}", p.as_str()),
                strategy::Refusal::StillStarting => "its new set is still starting".into(),
            };
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "cannot {verb} the rollout of `{service}` in `{env}` (deployment #{}): {why}",
                    before.deployment
                ),
            )
            .hint(format!(
                "`wharf rollout status {service} --env {env}` shows it"
            )));
        }
        let text = serde_json::to_string(&command).unwrap_or_default();
        let active = [Phase::Starting, Phase::Paused, Phase::Promoted].map(Phase::as_str);
        if !self
            .store
            .command_rollout(before.deployment, &active, &text, by)?
        {
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!("the rollout of `{service}` in `{env}` ended meanwhile"),
            ));
        }
        let begun = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            let now = self.rollout_view(service, env)?;
            let taken =
                now.deployment != before.deployment || now.events.len() > before.events.len();
            let settled = !matches!(now.phase.as_str(), "starting")
                && (now.phase != before.phase
                    || now.weight != before.weight
                    || !Phase::parse(&now.phase).is_some_and(Phase::is_active));
            if taken && settled && command != Command::Abort && now.phase == "aborted" {
                return Err(ServerError::new(
                    axum::http::StatusCode::CONFLICT,
                    format!("the rollout of `{service}` in `{env}` was aborted meanwhile; nothing was promoted"),
                )
                .hint(format!("`wharf rollout status {service} --env {env}` shows who aborted it and why")));
            }
            if (taken && settled) || begun.elapsed() > Duration::from_secs(60) {
                return Ok(now);
            }
        }
    }
}

fn view(r: &RolloutRecord, rollout: &Rollout) -> RolloutView {
    let steps = match &rollout.strategy {
        Strategy::Canary { steps, .. } => steps.clone(),
        _ => Vec::new(),
    };
    let active = rollout.progress.phase == Phase::Paused;
    RolloutView {
        deployment: r.deployment_id,
        service: r.service.clone(),
        env: r.env.clone(),
        strategy: rollout.strategy.name().into(),
        phase: rollout.progress.phase.as_str().into(),
        version: rollout.version.clone(),
        stable_version: rollout.stable_version.clone(),
        weight: rollout.progress.weight,
        step: if steps.is_empty() {
            0
        } else {
            rollout.progress.step + 1
        },
        steps: steps.len(),
        step_ends_at: steps
            .get(rollout.progress.step)
            .and_then(|s| s.pause_ms)
            .filter(|_| active)
            .map(|ms| rollout.progress.since.saturating_add(ms as i64)),
        preview: rollout
            .preview_port
            .filter(|_| rollout.progress.phase.is_active())
            .map(|p| format!("127.0.0.1:{p}")),
        events: rollout.events.clone(),
    }
}

/// Moves one rollout until it ends, holding its deployment (and so the deploy lock).
struct Driver {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    service: String,
    env: String,
    guard: DeployGuard,
    rollout: Rollout,
}

/// After a controller restart, how long the analysis waits for every host to report
/// before it takes its baseline (a host's first report carries all it counted).
const RESUME_GRACE: Duration = Duration::from_secs(5);

impl Driver {
    async fn run(self) {
        self.drive(Duration::ZERO).await
    }

    async fn run_resumed(self) {
        self.drive(RESUME_GRACE).await
    }

    /// `grace`: how long until the analysis' baseline is taken.
    async fn drive(mut self, grace: Duration) {
        let id = self.guard.id();
        let begun = Instant::now();
        let mut baseline = grace.is_zero().then(|| self.counts());
        let mut analysed = Instant::now();
        loop {
            if let Some(ending) = self.rollout.ending {
                return self.end(ending).await;
            }
            tokio::time::sleep(TICK).await;
            let (command, by) = match self.store.take_rollout_command(id) {
                Ok(Some((text, by))) => (serde_json::from_str::<Command>(&text).ok(), by),
                Ok(None) => (None, BY_WHARF.to_owned()),
                Err(e) => {
                    tracing::error!("rollout #{id}: cannot read its commands: {e}");
                    continue;
                }
            };
            let judged = matches!(self.rollout.strategy, Strategy::Canary { .. })
                && self.rollout.progress.phase == Phase::Paused
                && analysed.elapsed() >= ANALYSIS_EVERY;
            if baseline.is_none() && begun.elapsed() >= grace {
                baseline = Some(self.counts());
            }
            let failing = match &baseline {
                Some(baseline) if judged => {
                    analysed = Instant::now();
                    self.verdict(baseline)
                }
                _ => None,
            };
            let now = now_millis();
            let next = strategy::next(
                &self.rollout.strategy,
                &self.rollout.progress,
                now,
                command,
                failing.is_some(),
            );
            // Changed on a copy, kept only once stored.
            let mut moved = self.rollout.clone();
            let what = match next {
                Next::Wait => continue,
                Next::Move(progress) => {
                    moved.progress = progress;
                    match progress.phase {
                        Phase::Promoted => format!(
                            "promoted: all requests on {}; {} kept until the scale-down delay is over",
                            self.rollout.version, self.rollout.stable_version
                        ),
                        _ => format!(
                            "step {}: {}% of requests on {}",
                            progress.step + 1,
                            progress.weight,
                            self.rollout.version
                        ),
                    }
                }
                Next::Finish => {
                    moved.ending = Some(Ending::Finish);
                    format!(
                        "finishing: all requests on {}, {} retired",
                        self.rollout.version, self.rollout.stable_version
                    )
                }
                Next::Abort => {
                    moved.ending = Some(Ending::Abort);
                    match &failing {
                        Some(reason) if command != Some(Command::Abort) => {
                            format!("aborted by its analysis: {reason}")
                        }
                        _ => format!(
                            "aborted: all requests back on {}",
                            self.rollout.stable_version
                        ),
                    }
                }
            };
            let by = if command.is_some() {
                by
            } else {
                BY_WHARF.to_owned()
            };
            moved.log(&by, what);
            if self.save(&moved).is_err() {
                // Not acted on unless stored: the timer or the analysis decides again at
                // the next tick (a command is lost, and its caller sees nothing change).
                continue;
            }
            self.rollout = moved;
            if matches!(next, Next::Move(_)) {
                baseline = Some(self.counts());
                self.fleet
                    .set_split(&self.env, &self.service, Some(self.rollout.split(id)));
            }
        }
    }

    fn save(&self, rollout: &Rollout) -> Result<(), ()> {
        let id = self.guard.id();
        self.store
            .put_rollout(&record(id, &self.service, &self.env, rollout))
            .map_err(|e| tracing::error!("rollout #{id}: cannot store its progress: {e}"))
    }
    /// Carries out a stored ending: the winning set takes all traffic, the other is
    /// drained and stopped, the split goes, and the deployment ends.
    async fn end(mut self, ending: Ending) {
        let id = self.guard.id();
        let (weight, retired, phase, state) = match ending {
            Ending::Finish => (
                100,
                self.rollout.old.clone(),
                Phase::Succeeded,
                DeploymentState::Succeeded,
            ),
            Ending::Abort => (
                0,
                self.rollout.new.clone(),
                Phase::Aborted,
                DeploymentState::RolledBack,
            ),
        };
        self.rollout.progress.weight = weight;
        self.fleet
            .set_split(&self.env, &self.service, Some(self.rollout.split(id)));
        stop_and_forget(&self.fleet, &*self.store, &retired).await;
        self.fleet.set_split(&self.env, &self.service, None);
        self.rollout.progress.phase = phase;
        self.rollout.ending = None;
        let message = match ending {
            Ending::Finish => format!(
                "{} rollout finished: {} instance(s) of {} serve",
                self.rollout.strategy.name(),
                self.rollout.new.len(),
                self.rollout.version
            ),
            Ending::Abort => format!(
                "{} rollout aborted ({}); {} serves again",
                self.rollout.strategy.name(),
                self.rollout
                    .events
                    .last()
                    .map(|e| e.what.clone())
                    .unwrap_or_default(),
                self.rollout.stable_version
            ),
        };
        self.rollout.log(BY_WHARF, message.clone());
        // Its end is stored before its deployment ends (a restart in between resumes
        // nothing: see `resume_rollouts`); a store that fails is tried a few times.
        for _ in 0..10 {
            if self.save(&self.rollout).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Err(e) = self.guard.finish(state, &message) {
            tracing::error!("rollout #{id}: cannot end its deployment: {e}");
        }
    }

    /// Every instance's counts through the service's addresses now.
    fn counts(&self) -> HashMap<(String, u32), Counts> {
        crate::traffic::collect(&self.fleet)
            .into_iter()
            .filter(|s| s.env == self.env && s.service == self.service)
            .flat_map(|s| s.instances)
            .map(|i| ((i.node, i.instance), i.counts))
            .collect()
    }

    /// Why the new set does worse than the old since `baseline`, if it does.
    fn verdict(&self, baseline: &HashMap<(String, u32), Counts>) -> Option<String> {
        let Strategy::Canary { analysis, .. } = &self.rollout.strategy else {
            return None;
        };
        let new: Vec<(String, u32)> = self
            .rollout
            .new
            .iter()
            .map(|k| (k.node.clone(), k.instance))
            .collect();
        let (mut stable, mut canary) = (Counts::default(), Counts::default());
        for (instance, counts) in self.counts() {
            let since = counts.since(baseline.get(&instance).unwrap_or(&Counts::default()));
            if new.contains(&instance) {
                canary.add(&since);
            } else {
                stable.add(&since);
            }
        }
        let measured = |c: &Counts| Measured {
            requests: c.requests,
            errors: c.errors,
            p99_ms: c.quantile_ms(0.99),
        };
        strategy::verdict(analysis, &measured(&stable), &measured(&canary))
    }
}
