//! Convergence: at start, every deployment a crash interrupted is resolved by the rule in
//! `decide::recovery` (rolled back to what ran before it, resumed, or its stop
//! finished) and the resolution recorded on it; then, every few seconds, a service whose
//! instances differ from its running deployment (one went missing, one not wanted
//! appeared, one runs another version) is deployed again as that deployment ran.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_api::{DeployEvent, StopRequest};
use wharf_core::decide::{self, DeploymentFacts, Resolution};
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_core::spec::DeploySpec;
use wharf_store::DeploymentRecord;

use crate::error::ServerError;
use crate::executor::{Events, Executor};

/// How often running deployments are compared with their instances.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// After a reconcile that did not succeed, how long until the next try (doubling).
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

const RECOVERY_USER: &str = "wharf (recovery)";
const RECONCILE_USER: &str = "wharf (reconcile)";

fn facts(d: &DeploymentRecord) -> DeploymentFacts {
    DeploymentFacts {
        id: d.id,
        kind: d.kind,
        state: d.state,
        started_at: d.started_at,
    }
}

/// Events nobody listens to: the outcome is recorded in history.
fn unheard() -> Events {
    let (tx, _rx) = mpsc::unbounded_channel();
    Events(tx)
}

/// The deployment an operation finished as, and how.
fn finished(outcome: &DeployEvent) -> Option<(i64, DeploymentState)> {
    match outcome {
        DeployEvent::Finished {
            deployment: Some(id),
            state,
            ..
        } => Some((*id, *state)),
        _ => None,
    }
}

impl Executor {
    /// Resolves every interrupted deployment not resolved yet, oldest first. A crash
    /// during this leaves the rest unresolved for the next start.
    pub async fn resolve_interrupted(&self) {
        let interrupted = match self.store.unresolved_interruptions() {
            Ok(list) => list,
            Err(e) => {
                tracing::error!("cannot read interrupted deployments: {e}");
                return;
            }
        };
        for d in interrupted {
            let (by, what) = match self.resolve(&d).await {
                Ok(resolved) => resolved,
                Err(e) => (0, format!("it could not be resolved: {}", e.message)),
            };
            tracing::warn!(
                "deployment #{} of {} in {} was interrupted; {what}",
                d.id,
                d.service,
                d.env
            );
            let message = format!("the controller stopped during this deploy; {what}");
            if let Err(e) = self.store.resolve_interruption(d.id, by, &message) {
                tracing::error!("cannot record how deployment #{} was resolved: {e}", d.id);
            }
        }
    }

    /// Carries out the rule for one interrupted deployment; returns the deployment that
    /// resolved it (0: none was needed) and what happened, in words.
    async fn resolve(&self, d: &DeploymentRecord) -> Result<(i64, String), ServerError> {
        let history = self.store.history(&d.service, &d.env)?;
        let all: Vec<DeploymentFacts> = history.iter().map(facts).collect();
        let resume = d
            .spec
            .parse::<DeploySpec>()
            .map(|s| s.resume_interrupted)
            .unwrap_or(false);
        let events = unheard();
        match decide::recovery(&facts(d), &all, resume) {
            Resolution::Superseded(0) => Ok((0, "it ran nothing; nothing to undo".to_owned())),
            Resolution::Superseded(by) => {
                Ok((by, format!("deployment #{by} replaced it; nothing to undo")))
            }
            Resolution::RollBackTo(target) => {
                let target = history.iter().find(|t| t.id == target).ok_or_else(|| {
                    ServerError::internal(format!("deployment #{target} vanished"))
                })?;
                let note = format!(
                    "rolls back interrupted deployment #{} to `{}`",
                    d.id, target.version
                );
                let outcome = self
                    .redeploy(
                        target,
                        DeploymentKind::Recovery,
                        RECOVERY_USER.into(),
                        Some(note),
                        true,
                        &events,
                    )
                    .await?;
                Ok(described(
                    &outcome,
                    &format!("rolled back to `{}`", target.version),
                ))
            }
            Resolution::Resume(_) => {
                let note = format!(
                    "resumes interrupted deployment #{} of `{}`",
                    d.id, d.version
                );
                let outcome = self
                    .redeploy(
                        d,
                        DeploymentKind::Recovery,
                        RECOVERY_USER.into(),
                        Some(note),
                        false,
                        &events,
                    )
                    .await?;
                Ok(described(&outcome, &format!("resumed at `{}`", d.version)))
            }
            Resolution::StopAll => {
                let request = StopRequest {
                    env: d.env.clone(),
                    service: Some(d.service.clone()),
                    user: RECOVERY_USER.into(),
                    prune: false,
                    purge: false,
                };
                let outcome = self.stop(request, &events).await?;
                let why = if d.kind == DeploymentKind::Stop {
                    "the stop was finished"
                } else {
                    "nothing ran before it, so its instances were stopped"
                };
                Ok(match finished(&outcome) {
                    Some((by, _)) => (by, format!("{why} by deployment #{by}")),
                    None => (0, "nothing of it was left running".to_owned()),
                })
            }
        }
    }

    /// Deploys again, as it ran, every running deployment whose instances differ from
    /// its set; `backoff` keeps a service that cannot be reconciled from churning.
    pub async fn reconcile(&self, backoff: &mut HashMap<(String, String), (Instant, Duration)>) {
        let Ok(current) = self.definitions.current() else {
            return;
        };
        let statuses = self.fleet.statuses();
        for (env, environment) in &current.definition.environments {
            // An engine supervises its own replicas; wharf's agents report none of them.
            if environment.engine.is_some() {
                continue;
            }
            for service in environment.service_names() {
                let key = (env.clone(), service.to_owned());
                if backoff
                    .get(&key)
                    .is_some_and(|(until, _)| Instant::now() < *until)
                {
                    continue;
                }
                let observed: Vec<(u32, &str)> = statuses
                    .iter()
                    .filter(|(p, _)| &p.key.env == env && p.key.service == service)
                    .map(|(p, _)| (p.key.instance, p.version.as_str()))
                    .collect();
                if self.drift_from_running(service, env, &observed).is_none() {
                    continue;
                }
                // The snapshot may be old by now (an earlier reconcile of this pass took
                // a while): look again before acting.
                let fresh = self.fleet.statuses();
                let observed: Vec<(u32, &str)> = fresh
                    .iter()
                    .filter(|(p, _)| &p.key.env == env && p.key.service == service)
                    .map(|(p, _)| (p.key.instance, p.version.as_str()))
                    .collect();
                let Some((running, reason)) = self.drift_from_running(service, env, &observed)
                else {
                    continue;
                };
                let note = format!("reconcile: {reason}");
                tracing::warn!(%service, %env, "{note}; deploying deployment #{} again", running.id);
                let outcome = self
                    .redeploy(
                        &running,
                        DeploymentKind::Reconcile,
                        RECONCILE_USER.into(),
                        Some(note),
                        false,
                        &unheard(),
                    )
                    .await;
                match outcome.as_ref().map(finished) {
                    Ok(Some((_, DeploymentState::Succeeded))) => {
                        backoff.remove(&key);
                    }
                    // Someone else deploys it now: they decide what runs.
                    Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
                    other => {
                        let wait = backoff
                            .get(&key)
                            .map(|(_, last)| (*last * 2).min(MAX_BACKOFF))
                            .unwrap_or(FIRST_BACKOFF);
                        tracing::error!(%service, %env, "reconcile did not succeed ({other:?}); next try in {}s", wait.as_secs());
                        backoff.insert(key, (Instant::now() + wait, wait));
                    }
                }
            }
        }
    }

    /// The running deployment of a service and why its instances differ from it; none
    /// while a deploy is in progress (it decides) or when nothing should run.
    fn drift_from_running(
        &self,
        service: &str,
        env: &str,
        observed: &[(u32, &str)],
    ) -> Option<(DeploymentRecord, String)> {
        // Without specs: a pool's is megabytes, and this runs for every service on
        // every pass.
        let history = self.store.history_brief(service, env).ok()?;
        if history
            .iter()
            .any(|d| d.state == DeploymentState::InProgress)
        {
            return None;
        }
        let running = self.current_deployment(service, env).ok()??;
        let spec = running.spec.parse::<DeploySpec>().ok()?;
        if spec.engine.is_some() {
            return None;
        }
        let wanted: Vec<u32> = spec.slots.iter().map(|s| s.instance).collect();
        let reason = decide::reconcile_reason(&wanted, &running.version, observed)?;
        Some((running, reason))
    }
}

/// Words for how a recovery deploy ended, with its id.
fn described(outcome: &DeployEvent, done: &str) -> (i64, String) {
    match finished(outcome) {
        Some((id, DeploymentState::Succeeded)) => (id, format!("{done} by deployment #{id}")),
        Some((id, state)) => (
            id,
            format!(
                "deployment #{id} tried to resolve it and ended {}",
                state.as_str()
            ),
        ),
        None => (0, format!("{done}: nothing had to change")),
    }
}

/// Reconciles every [`RECONCILE_EVERY`] until `shutdown`.
pub async fn watch(executor: Arc<Executor>, shutdown: CancellationToken) {
    let mut backoff = HashMap::new();
    let mut ticker = tokio::time::interval(RECONCILE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        executor.reconcile(&mut backoff).await;
    }
}
