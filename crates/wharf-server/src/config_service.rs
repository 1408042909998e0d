//! The configuration service: `wharf config set` overrides versioned per service and
//! environment, secrets sealed under the master keyring, and the configuration running
//! instances read (and watch) over HTTP.
//!
//! Precedence, lowest first: the service's `config` in wharf.yaml < the environment's
//! `config` < the node's `config` < `wharf config set` overrides < secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::watch;
use wharf_api::{DeployEvent, RuntimeConfig};
use wharf_core::decide::{DeploymentFacts, running_now};

use crate::executor::Order;
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_core::model::OnChange;
use wharf_core::spec::DeploySpec;
use wharf_secrets::{Sealed, secret_context};
use wharf_store::{DeploymentRecord, SecretRecord};

use crate::error::ServerError;
use crate::executor::Events;
use crate::render::{Extras, render};
use crate::{Controller, now_millis};

/// `ENV\0SERVICE`: one string, so the read path looks views up without allocating.
type Scope = String;

/// A runtime token already checked: its environment, service and scope key.
#[derive(Clone)]
pub struct TokenScope {
    pub env: String,
    pub service: String,
    pub key: Scope,
}

/// A service's configuration in an environment: plain values, and secret values.
pub type Effective = (BTreeMap<String, String>, BTreeMap<String, String>);

/// What instances read at runtime, per service and environment, and who waits for it.
#[derive(Default)]
pub struct ConfigHub {
    views: Mutex<HashMap<Scope, Arc<RuntimeView>>>,
    epochs: Mutex<HashMap<Scope, u64>>,
    revisions: Mutex<HashMap<Scope, watch::Sender<i64>>>,
    /// Runtime tokens seen and found genuine (they stay valid: rotation keeps old keys).
    tokens: std::sync::RwLock<HashMap<String, TokenScope>>,
}

/// How many checked tokens are remembered before the memory is cleared.
const TOKEN_MEMORY: usize = 10_000;

/// The configuration of each instance of a service, serialized once per revision.
pub struct RuntimeView {
    pub revision: i64,
    by_instance: BTreeMap<u32, Bytes>,
}

impl RuntimeView {
    /// The answer for one instance (default: the lowest-numbered).
    pub fn body(&self, instance: Option<u32>) -> Option<Bytes> {
        match instance {
            Some(n) => self.by_instance.get(&n).cloned(),
            None => self.by_instance.values().next().cloned(),
        }
    }
}

impl ConfigHub {
    fn scope(env: &str, service: &str) -> Scope {
        format!("{env}\0{service}")
    }

    /// The scope of a runtime token, checked against the keyring once and remembered.
    pub fn check_token(
        &self,
        keyring: &std::sync::RwLock<wharf_secrets::Keyring>,
        token: &str,
    ) -> Option<TokenScope> {
        if let Some(known) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return Some(known.clone());
        }
        let (env, service) = {
            let keyring = keyring.read().unwrap_or_else(|p| p.into_inner());
            crate::auth::check_runtime_token(&keyring, token)?
        };
        let scope = TokenScope {
            key: Self::scope(&env, &service),
            env,
            service,
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= TOKEN_MEMORY {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), scope.clone());
        Some(scope)
    }

    /// The cached view of a scope, if there is one.
    pub fn cached_view(&self, key: &str) -> Option<Arc<RuntimeView>> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.get(key).cloned()
    }

    /// Revisions of one service and environment as they are saved.
    pub fn subscribe(&self, env: &str, service: &str) -> watch::Receiver<i64> {
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        revisions
            .entry(Self::scope(env, service))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn cached(&self, env: &str, service: &str) -> Option<Arc<RuntimeView>> {
        self.cached_view(&Self::scope(env, service))
    }

    /// How many times a scope's view was invalidated: a view computed before an
    /// invalidation must not be cached after it.
    fn epoch(&self, env: &str, service: &str) -> u64 {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.get(&Self::scope(env, service)).copied().unwrap_or(0)
    }

    /// Caches a view computed at `epoch`, unless the scope was invalidated since.
    fn store_view(&self, env: &str, service: &str, epoch: u64, view: Arc<RuntimeView>) {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let scope = Self::scope(env, service);
        if epochs.get(&scope).copied().unwrap_or(0) == epoch {
            let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            views.insert(scope, view);
        }
    }

    /// Forgets the view of a service (its deployment or configuration changed).
    pub fn invalidate(&self, env: &str, service: &str) {
        let scope = Self::scope(env, service);
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        *epochs.entry(scope.clone()).or_default() += 1;
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.remove(&scope);
    }

    /// Tells watchers the newest revision as the store has it.
    pub fn announce_current(&self, store: &dyn wharf_store::Store, env: &str, service: &str) {
        if let Ok(Some(r)) = store.config_revision(service, env, None) {
            self.announce(env, service, r.revision);
        }
    }

    fn announce(&self, env: &str, service: &str, revision: i64) {
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        revisions
            .entry(Self::scope(env, service))
            .or_insert_with(|| watch::channel(0).0)
            .send_replace(revision);
    }
}

impl Controller {
    /// The overrides of a revision (default: the newest) and its number (0: none yet).
    pub fn overrides(
        &self,
        service: &str,
        env: &str,
        revision: Option<i64>,
    ) -> Result<(i64, BTreeMap<String, String>), ServerError> {
        match self.store.config_revision(service, env, revision)? {
            Some(r) => Ok((r.revision, r.values)),
            None if revision.is_none_or(|r| r == 0) => Ok((0, BTreeMap::new())),
            None => Err(ServerError::not_found(format!(
                "`{service}` has no configuration revision {} in `{env}`",
                revision.unwrap_or_default()
            ))
            .hint(format!(
                "`wharf config history {service} --env {env}` lists them"
            ))),
        }
    }

    /// Secret values of a service in an environment, opened, with their versions.
    pub fn secret_values(
        &self,
        service: &str,
        env: &str,
    ) -> Result<Vec<(String, String, i64)>, ServerError> {
        let keyring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
        open_secrets(&*self.store, &keyring, service, env)
    }

    /// Everything the controller adds to a deploy's configuration.
    pub fn extras(
        &self,
        service: &str,
        env: &str,
        revision: Option<i64>,
    ) -> Result<(i64, Extras), ServerError> {
        let (revision, overrides) = self.overrides(service, env, revision)?;
        let token = {
            let keyring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
            crate::auth::runtime_token(&keyring, env, service)
        };
        Ok((
            revision,
            Extras {
                overrides,
                secrets: self.secret_values(service, env)?,
                runtime: Some((format!("{}/v1/runtime/config", self.api_url), token)),
            },
        ))
    }

    /// The deployment a service runs as now in an environment, if it runs.
    pub fn current_deployment(
        &self,
        service: &str,
        env: &str,
    ) -> Result<Option<DeploymentRecord>, ServerError> {
        self.running(service, env, false)
    }

    /// The one definition of "the deployment running now" ([`running_now`]), applied to
    /// the stored history; `with_rollout` counts a deployment in progress.
    pub fn running(
        &self,
        service: &str,
        env: &str,
        with_rollout: bool,
    ) -> Result<Option<DeploymentRecord>, ServerError> {
        let history = self.store.history(service, env)?;
        let facts: Vec<DeploymentFacts> = history
            .iter()
            .map(|d| DeploymentFacts {
                id: d.id,
                kind: d.kind,
                state: d.state,
                started_at: d.started_at,
            })
            .collect();
        let Some(chosen) = running_now(&facts, with_rollout) else {
            return Ok(None);
        };
        Ok(history.into_iter().find(|d| d.id == chosen.id))
    }

    /// What instances of a service read at runtime: cached until the next change.
    pub fn runtime_view(&self, env: &str, service: &str) -> Result<Arc<RuntimeView>, ServerError> {
        if let Some(view) = self.hub.cached(env, service) {
            return Ok(view);
        }
        let epoch = self.hub.epoch(env, service);
        let view = Arc::new(self.compute_view(env, service)?);
        self.hub.store_view(env, service, epoch, view.clone());
        Ok(view)
    }

    fn compute_view(&self, env: &str, service: &str) -> Result<RuntimeView, ServerError> {
        let (revision, overrides) = self.overrides(service, env, None)?;
        let mut by_instance = BTreeMap::new();
        // A deploy in progress counts: its new instances read their configuration
        // while it waits for them to be healthy.
        if let Some(current) = self.running(service, env, true)? {
            let mut spec = spec_of(&current)?;
            // Pooled slots are placed where their instances run.
            let running = self.store.instances(Some(env), Some(service))?;
            for slot in spec.slots.iter_mut().filter(|s| s.node.is_empty()) {
                if let Some(i) = running.iter().find(|i| i.instance == slot.instance) {
                    slot.node = i.node.clone();
                }
            }
            spec.slots.retain(|s| !s.node.is_empty());
            let extras = Extras {
                overrides: overrides.clone(),
                ..Default::default()
            };
            let rendered = render(
                &*self.store,
                &spec,
                &current.version,
                &current.digest,
                current.id,
                &extras,
            )?;
            for plan in rendered.plans {
                let body = RuntimeConfig {
                    service: service.to_owned(),
                    env: env.to_owned(),
                    revision,
                    values: plan.env,
                };
                let bytes = serde_json::to_vec(&body).expect("configs serialize");
                by_instance.insert(plan.key.instance, Bytes::from(bytes));
            }
        } else {
            let body = RuntimeConfig {
                service: service.to_owned(),
                env: env.to_owned(),
                revision,
                values: overrides,
            };
            let bytes = serde_json::to_vec(&body).expect("configs serialize");
            by_instance.insert(0, Bytes::from(bytes));
        }
        Ok(RuntimeView {
            revision,
            by_instance,
        })
    }

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
        let (current_revision, current) = self.overrides(service, env, None)?;
        let (values, message) = match change.restore {
            Some(revision) => {
                let (_, values) = self.overrides(service, env, Some(revision))?;
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
        self.hub.invalidate(env, service);
        // Watchers find the new view ready when they wake.
        let _ = self.runtime_view(env, service);
        self.hub.announce(env, service, saved.revision);
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
            .current_definition()?
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
                let request = Order {
                    spec,
                    version: current.version.clone(),
                    user: user.to_owned(),
                    dry_run: false,
                    unregistered_digest: None,
                    force: false,
                    config_revision: Some(revision),
                };
                self.deploy(request, DeploymentKind::Config, events).await
            }
            OnChange::Reload { signal } => {
                let mut signalled = 0;
                for (plan, _) in self.fleet.statuses() {
                    if plan.key.env != env || plan.key.service != service {
                        continue;
                    }
                    let outcome = self
                        .fleet
                        .link(&plan.key)
                        .reload(&plan.key, revision, signal)
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

    /// Seals and stores a secret.
    pub fn set_secret(
        &self,
        service: &str,
        env: &str,
        key: &str,
        value: &[u8],
        user: &str,
    ) -> Result<(), ServerError> {
        let sealed = {
            let keyring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
            keyring.seal(value, &secret_context(service, env, key))
        };
        self.store.put_secret(&SecretRecord {
            service: service.to_owned(),
            env: env.to_owned(),
            key: key.to_owned(),
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            version: 0,
            updated_at: now_millis(),
            updated_by: user.to_owned(),
        })?;
        Ok(())
    }

    /// Makes a new master key and seals every secret again under it, in one
    /// transaction; secrets stay readable throughout (the old key stays in the ring).
    pub fn rotate_master_key(&self) -> Result<wharf_api::KeyRotated, ServerError> {
        let mut keyring = self.keyring.write().unwrap_or_else(|p| p.into_inner());
        let mut next = keyring.clone();
        let key_id = next
            .rotate()
            .map_err(|e| ServerError::internal(e.to_string()))?
            .to_owned();
        let mut resealed = Vec::new();
        for mut s in self.store.secrets(None)? {
            let context = secret_context(&s.service, &s.env, &s.key);
            let plain = next
                .open(&sealed_of(&s), &context)
                .map_err(|e| ServerError::internal(format!("secret `{}`: {e}", s.key)))?;
            let sealed = next.seal(&plain, &context);
            (s.key_id, s.nonce, s.ciphertext) = (sealed.key_id, sealed.nonce, sealed.ciphertext);
            resealed.push(s);
        }
        self.store.reencrypt_secrets(&resealed)?;
        *keyring = next;
        Ok(wharf_api::KeyRotated {
            key_id,
            resealed: resealed.len(),
        })
    }

    /// The configuration of a service in an environment as its current deployment
    /// declares it (environment level, templates unrendered), with overrides, and the
    /// secret values; for comparing environments.
    pub fn effective_config(
        &self,
        service: &str,
        env: &str,
    ) -> Result<Option<Effective>, ServerError> {
        let Some(current) = self.current_deployment(service, env)? else {
            return Ok(None);
        };
        let spec = spec_of(&current)?;
        let declared = spec
            .slots
            .first()
            .map(|s| s.config.clone())
            .unwrap_or_default();
        let (_, overrides) = self.overrides(service, env, None)?;
        let secrets = self
            .secret_values(service, env)?
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        Ok(Some((
            wharf_core::config::layer(&declared, &overrides),
            secrets,
        )))
    }
}

/// How many keys differ between two configurations (a key missing on one side counts).
pub fn differing_keys(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The secrets of a service in an environment, opened, with their versions.
pub fn open_secrets(
    store: &dyn wharf_store::Store,
    keyring: &wharf_secrets::Keyring,
    service: &str,
    env: &str,
) -> Result<Vec<(String, String, i64)>, ServerError> {
    store
        .secrets(Some((service, env)))?
        .into_iter()
        .map(|s| {
            let value = keyring
                .open(&sealed_of(&s), &secret_context(service, env, &s.key))
                .map_err(|e| {
                    ServerError::internal(format!(
                        "secret `{}` of `{service}` in `{env}`: {e}",
                        s.key
                    ))
                })?;
            Ok((
                s.key,
                String::from_utf8_lossy(&value).into_owned(),
                s.version,
            ))
        })
        .collect()
}

fn sealed_of(s: &SecretRecord) -> Sealed {
    Sealed {
        key_id: s.key_id.clone(),
        nonce: s.nonce.clone(),
        ciphertext: s.ciphertext.clone(),
    }
}

pub fn spec_of(d: &DeploymentRecord) -> Result<DeploySpec, ServerError> {
    serde_json::from_value(d.spec.clone()).map_err(|e| {
        ServerError::internal(format!("deployment #{} has an unreadable spec: {e}", d.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(revision: i64) -> Arc<RuntimeView> {
        Arc::new(RuntimeView {
            revision,
            by_instance: BTreeMap::from([(0, Bytes::from_static(b"{}"))]),
        })
    }

    #[test]
    fn a_view_computed_before_a_change_is_not_cached_after_it() {
        let hub = ConfigHub::default();
        let before = hub.epoch("ci", "orders");
        // A reader computes a view; meanwhile a change invalidates and caches its own.
        hub.invalidate("ci", "orders");
        let after = hub.epoch("ci", "orders");
        hub.store_view("ci", "orders", after, view(2));
        hub.store_view("ci", "orders", before, view(1));
        assert_eq!(hub.cached("ci", "orders").unwrap().revision, 2);
        assert!(hub.cached("ci", "catalog").is_none());
    }

    #[test]
    fn differing_keys_count_missing_ones() {
        let a = BTreeMap::from([
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned()),
        ]);
        let b = BTreeMap::from([
            ("A".to_owned(), "1".to_owned()),
            ("C".to_owned(), "3".to_owned()),
        ]);
        assert_eq!(differing_keys(&a, &b), ["B", "C"]);
        assert!(differing_keys(&a, &a).is_empty());
    }
}
