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
use wharf_api::RuntimeConfig;
use wharf_core::decide::{DeploymentFacts, running_now};

use wharf_core::spec::DeploySpec;
use wharf_secrets::{Sealed, secret_context};
use wharf_store::{DeploymentRecord, SecretRecord};

use crate::error::ServerError;
use crate::now_millis;
use crate::render::{Extras, render};

/// `ENV\0SERVICE`: one string, so the read path looks views up without allocating.
type Scope = String;

/// A runtime token already checked: its environment, service and scope key.
#[derive(Clone)]
pub struct TokenScope {
    pub env: String,
    pub service: String,
    pub key: Scope,
    /// When the token stops working (Unix milliseconds).
    pub expires: i64,
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
        let now = crate::now_millis();
        if let Some(known) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return (now < known.expires).then(|| known.clone());
        }
        // The keyring stays read-locked until the token is remembered: a rotation (which
        // forgets every token) cannot slip in between the check and the insert.
        let keyring = keyring.read().unwrap_or_else(|p| p.into_inner());
        let (env, service, expires) = crate::auth::check_runtime_token(&keyring, token, now)?;
        let scope = TokenScope {
            key: Self::scope(&env, &service),
            env,
            service,
            expires,
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= TOKEN_MEMORY {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), scope.clone());
        Some(scope)
    }

    /// Forgets every token checked so far (after a key rotation, which revokes them).
    pub fn forget_tokens(&self) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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

    pub fn announce(&self, env: &str, service: &str, revision: i64) {
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        revisions
            .entry(Self::scope(env, service))
            .or_insert_with(|| watch::channel(0).0)
            .send_replace(revision);
    }
}

/// The configuration service's state: overrides and secrets in the store, the master
/// keyring (outside the database), and what running instances read and watch.
pub struct ConfigService {
    pub store: Arc<dyn wharf_store::Store>,
    /// The master keys secrets are sealed with; kept outside the database.
    pub keyring: crate::SharedKeyring,
    pub hub: ConfigHub,
    /// Where the HTTP API listens (instances read their configuration there).
    pub api_url: String,
    /// Where instances of a driver reach their host's service addresses when not on
    /// loopback (the local agent's container gateway), for the values they read.
    pub host_addresses: BTreeMap<wharf_core::model::DriverKind, std::net::IpAddr>,
}

impl ConfigService {
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
            crate::auth::runtime_token(&keyring, env, service, crate::now_millis())
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
        if let Some(current) = running_deployment(&*self.store, service, env, true)? {
            for (instance, body) in self.views_of(&current, service, env, revision, &overrides)? {
                by_instance.insert(instance, body);
            }
            // During a rollout the instances it replaces still run (under numbers of
            // their own) and still read theirs.
            if let Some(before) = running_deployment(&*self.store, service, env, false)?
                .filter(|before| before.id != current.id)
            {
                for (instance, body) in
                    self.views_of(&before, service, env, revision, &overrides)?
                {
                    by_instance.entry(instance).or_insert(body);
                }
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

    /// What each instance of `deployment` reads, with today's overrides.
    fn views_of(
        &self,
        deployment: &wharf_store::DeploymentRecord,
        service: &str,
        env: &str,
        revision: i64,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Vec<(u32, Bytes)>, ServerError> {
        let mut by_instance = Vec::new();
        let mut spec = spec_of(deployment)?;
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
            &deployment.version,
            &deployment.digest,
            deployment.id,
            &extras,
        )?;
        for plan in rendered.plans {
            // Peers' addresses as the instance reaches them (its agent fills in the same
            // in its environment): a container on a host whose gateway this controller
            // does not know reaches it by the name the engine gives it.
            let host = match (self.host_addresses.get(&plan.driver), plan.driver) {
                (Some(ip), _) => ip.to_string(),
                (None, wharf_core::model::DriverKind::Docker) => "host.docker.internal".into(),
                (None, wharf_core::model::DriverKind::Process) => "127.0.0.1".into(),
            };
            let values = plan
                .env
                .into_iter()
                .map(|(k, v)| (k, v.replace(wharf_core::template::HOST_PLACEHOLDER, &host)))
                .collect();
            let body = RuntimeConfig {
                service: service.to_owned(),
                env: env.to_owned(),
                revision,
                values,
            };
            let bytes = serde_json::to_vec(&body).expect("configs serialize");
            by_instance.push((plan.key.instance, Bytes::from(bytes)));
        }
        Ok(by_instance)
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
        // Runtime tokens are signed with the current key only: the old ones stop here.
        self.hub.forget_tokens();
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
        let Some(current) = running_deployment(&*self.store, service, env, false)? else {
            return Ok(None);
        };
        let spec = spec_of(&current)?;
        self.effective_of(service, env, &spec).map(Some)
    }

    /// [`Self::effective_config`] for the spec of the deployment running there.
    pub fn effective_of(
        &self,
        service: &str,
        env: &str,
        spec: &DeploySpec,
    ) -> Result<Effective, ServerError> {
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
        Ok((wharf_core::config::layer(&declared, &overrides), secrets))
    }
}

/// The one definition of "the deployment running now" ([`running_now`]), applied to the
/// stored history; `with_rollout` counts a deployment in progress.
pub fn running_deployment(
    store: &dyn wharf_store::Store,
    service: &str,
    env: &str,
    with_rollout: bool,
) -> Result<Option<DeploymentRecord>, ServerError> {
    // Chosen from the history without specs (a pool's spec is megabytes, and every
    // deployment has one); only the one chosen is read whole.
    let history = store.history_brief(service, env)?;
    match running_in(&history, with_rollout) {
        Some(running) => Ok(store.deployment(running.id)?),
        None => Ok(None),
    }
}

/// [`running_deployment`] over a history already read.
pub fn running_in(history: &[DeploymentRecord], with_rollout: bool) -> Option<&DeploymentRecord> {
    let facts: Vec<DeploymentFacts> = history
        .iter()
        .map(|d| DeploymentFacts {
            id: d.id,
            kind: d.kind,
            state: d.state,
            started_at: d.started_at,
        })
        .collect();
    let chosen = running_now(&facts, with_rollout)?;
    history.iter().find(|d| d.id == chosen.id)
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
    d.spec.parse().map_err(|e| {
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
