//! Configuration changes as rollouts: a `wharf config set` is saved as a revision and
//! rolled out (or signalled) by the executor, or held for approval where the stored
//! definition asks for it; everything is decided before anything is written.

use std::collections::BTreeMap;

use wharf_api::DeployEvent;
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_core::model::OnChange;
use wharf_store::DeploymentRecord;

use crate::config_service::spec_of;
use crate::error::ServerError;
use crate::executor::{Events, Executor, Order};
use crate::now_millis;

impl Executor {
    /// Saves a configuration change as a new revision, then applies it to running
    /// instances as the service's `on_change` says.
    pub async fn change_config(
        &self,
        service: &str,
        env: &str,
        change: wharf_api::ConfigChange,
        user: &str,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        // Until the revision is saved (and, where approvals hold it, its roll is held),
        // no other change is decided: two cannot both build on the same values.
        let deciding = self.config_changes.lock().await;
        // A change the deploy lock would refuse is refused before anything is saved.
        self.refuse_if_locked(service, env)?;
        let (current_revision, current) = self.config.overrides(service, env, None)?;
        let (values, message) = match change.restore {
            Some(revision) => {
                let (_, values) = self.config.overrides(service, env, Some(revision))?;
                let message = change
                    .message
                    .unwrap_or_else(|| format!("rollback to revision {revision}"));
                (values, message)
            }
            None => {
                let mut values = current.clone();
                for key in &change.unset {
                    if values.remove(key).is_none() {
                        return Err(ServerError::not_found(format!(
                            "`{key}` is not set for `{service}` in `{env}`"
                        ))
                        .hint("`wharf config get` shows where each value comes from; only `config set` values can be unset"));
                    }
                }
                values.extend(change.set);
                (values, change.message.unwrap_or_default())
            }
        };
        if values == current && current_revision > 0 {
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: format!(
                    "no changes: revision {current_revision} already holds these values"
                ),
            });
        }
        // Decided before anything is written: one held change at a time, and whether
        // this one waits for approval (from the stored definition, not the caller).
        if let Some(waiting) = self
            .pending()?
            .into_iter()
            .find(|d| d.service == service && d.env == env && d.kind == DeploymentKind::Config)
        {
            return Err(ServerError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "configuration revision {} of `{service}` in `{env}` waits for approval (deployment #{}); nothing was changed",
                    waiting.config_revision, waiting.id
                ),
            )
            .hint(format!(
                "`wharf approve {id}` or `wharf reject {id}` first",
                id = waiting.id
            )));
        }
        let running = self.current_deployment(service, env)?;
        let needs_approval = running.is_some() && self.approval_window(env)?.is_some();
        if needs_approval {
            let Some(current) = running else {
                return Err(ServerError::internal("the running deployment vanished"));
            };
            return self
                .hold_config(service, env, &values, &message, user, current, events)
                .await;
        }
        let saved =
            self.store
                .put_config_revision(service, env, &values, user, now_millis(), &message)?;
        drop(deciding);
        self.config.hub.invalidate(env, service);
        // Watchers find the new view ready when they wake.
        let _ = self.config.runtime_view(env, service);
        self.config.hub.announce(env, service, saved.revision);
        events.send(DeployEvent::ConfigSaved {
            service: service.to_owned(),
            env: env.to_owned(),
            revision: saved.revision,
        });
        self.apply_config(service, env, saved.revision, user, events)
            .await
    }

    /// How long approvals may take in `env` if it needs them, from the stored definition.
    fn approval_window(&self, env: &str) -> Result<Option<std::time::Duration>, ServerError> {
        Ok(self
            .definitions
            .current()?
            .definition
            .environment(env)
            .map_err(crate::definitions::spec_error)?
            .approval)
    }

    /// In an environment with approvals: saves the revision held (instances and runtime
    /// readers keep the current one) and holds the roll that ships it for approval.
    #[allow(clippy::too_many_arguments)]
    async fn hold_config(
        &self,
        service: &str,
        env: &str,
        values: &BTreeMap<String, String>,
        message: &str,
        user: &str,
        current: DeploymentRecord,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        if !self.auth_required {
            return Err(ServerError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("`{env}` has `approval: required`, which needs callers this controller can tell apart; it runs open"),
            )
            .hint("run the controller with `--auth` (API tokens name who approves)"));
        }
        let mut spec = spec_of(&current)?;
        spec.approval_expires_ms = self.approval_window(env)?.map(|w| w.as_millis() as u64);
        let saved =
            self.store
                .hold_config_revision(service, env, values, user, now_millis(), message)?;
        events.send(DeployEvent::ConfigSaved {
            service: service.to_owned(),
            env: env.to_owned(),
            revision: saved.revision,
        });
        let order = Order {
            spec,
            version: current.version.clone(),
            user: user.to_owned(),
            dry_run: false,
            unregistered_digest: None,
            force: false,
            config_revision: Some(saved.revision),
            note: None,
            replay: Some(current.digest.clone()),
        };
        self.deploy(order, DeploymentKind::Config, events).await
    }

    /// Rolls or signals the running instances of a service after a configuration change.
    async fn apply_config(
        &self,
        service: &str,
        env: &str,
        revision: i64,
        user: &str,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let Some(current) = self.current_deployment(service, env)? else {
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: format!(
                    "revision {revision} saved; `{service}` does not run in `{env}`, its next deploy uses it"
                ),
            });
        };
        let spec = spec_of(&current)?;
        match &spec.on_change {
            OnChange::Restart => {
                // Whether the roll waits is the stored definition's call, not the old spec's.
                let mut spec = spec;
                spec.approval_expires_ms = self.approval_window(env)?.map(|w| w.as_millis() as u64);
                let request = Order {
                    spec,
                    version: current.version.clone(),
                    user: user.to_owned(),
                    dry_run: false,
                    unregistered_digest: None,
                    force: false,
                    config_revision: Some(revision),
                    note: None,
                    replay: Some(current.digest.clone()),
                };
                self.deploy(request, DeploymentKind::Config, events).await
            }
            OnChange::Reload { signal } => {
                // Files are templates over the configuration: each instance gets them
                // rendered with the new revision before it is signalled to re-read them.
                let (_, extras) = self.config.extras(service, env, Some(revision))?;
                let rendered = crate::render::render(
                    &*self.store,
                    &spec,
                    &current.version,
                    &current.digest,
                    0,
                    &extras,
                )?;
                let mut signalled = 0;
                for (plan, _) in self.fleet.statuses() {
                    if plan.key.env != env || plan.key.service != service {
                        continue;
                    }
                    let files = rendered
                        .plans
                        .iter()
                        .find(|p| p.key == plan.key)
                        .map_or_else(|| plan.files.clone(), |p| p.files.clone());
                    let outcome = self
                        .fleet
                        .link(&plan.key)
                        .reload(&plan.key, revision, signal, files)
                        .await;
                    match outcome {
                        Ok(()) => signalled += 1,
                        Err(e) => events.send(DeployEvent::Warning {
                            message: format!("{} not signalled: {e}", plan.key),
                        }),
                    }
                }
                Ok(DeployEvent::Finished {
                    deployment: None,
                    state: DeploymentState::Succeeded,
                    message: format!(
                        "revision {revision} saved; sent {signal} to {signalled} instance(s) of `{service}` to reload it"
                    ),
                })
            }
        }
    }
}
