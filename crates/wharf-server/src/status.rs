//! What `wharf status` shows, and what the dashboard's matrix and service pages are made
//! of: every service of every environment the caller may read, with its instances,
//! drift from the previous environment, desired count, address and warnings.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use wharf_api::{Drift, InstanceRecord, ServiceStatus, StatusReport};
use wharf_core::spec::DeploySpec;
use wharf_store::DeploymentRecord;

use crate::auth::{Action, Caller};
use crate::config_service::{Effective, differing_keys};
use crate::error::ServerError;
use crate::routes::StatusQuery;
use crate::{Controller, now_millis};

/// What `wharf status` shows (and the dashboard's matrix is made of): each service of
/// each environment the caller may read, or of the ones `q` names.
pub(crate) fn status_report(
    c: &Controller,
    caller: &Caller,
    q: &StatusQuery,
) -> Result<StatusReport, ServerError> {
    status_report_with(c, caller, q, Vec::new())
}

/// The swarm services `q` asks for, of the environments the caller may read.
pub(crate) fn engine_services(
    c: &Controller,
    caller: &Caller,
    q: &StatusQuery,
) -> Vec<(String, String)> {
    let Ok(current) = c.definitions.current() else {
        return Vec::new();
    };
    let mut wanted = Vec::new();
    for (env, environment) in &current.definition.environments {
        let swarm = environment.engine == Some(wharf_core::model::Engine::Swarm);
        if !swarm || q.env.as_ref().is_some_and(|e| e != env) || !caller.may(env, Action::Read) {
            continue;
        }
        for service in environment.service_names() {
            if q.service.as_deref().is_none_or(|s| s == service) {
                wanted.push((env.clone(), service.to_owned()));
            }
        }
    }
    wanted
}

/// [`status_report`] with the replicas an engine reports (`engine`), beside the
/// instances of wharf's own hosts.
pub(crate) fn status_report_with(
    c: &Controller,
    caller: &Caller,
    q: &StatusQuery,
    engine: Vec<InstanceRecord>,
) -> Result<StatusReport, ServerError> {
    if let Some(env) = &q.env {
        caller.require(env, Action::Read)?;
    }
    c.definitions
        .check_names(q.service.as_deref(), q.env.as_deref())?;
    // Without `--env`, the environments the caller may read.
    let instances: Vec<_> = c
        .store
        .instances(q.env.as_deref(), q.service.as_deref())?
        .into_iter()
        .filter(|i| caller.may(&i.env, Action::Read))
        .collect();
    let mut grouped: BTreeMap<(String, String), Vec<InstanceRecord>> = BTreeMap::new();
    for i in instances {
        grouped
            .entry((i.env.clone(), i.service.clone()))
            .or_default()
            .push(crate::wire::instance(i));
    }
    for i in engine {
        grouped
            .entry((i.env.clone(), i.service.clone()))
            .or_default()
            .push(i);
    }
    let mut reader = Reader::new(c);
    // A service whose every instance is gone is listed too, while it should run.
    if let Ok(current) = c.definitions.current() {
        for (env, environment) in &current.definition.environments {
            if q.env.as_ref().is_some_and(|e| e != env) || !caller.may(env, Action::Read) {
                continue;
            }
            for service in environment.service_names() {
                let key = (env.clone(), service.to_owned());
                let wanted = q.service.as_deref().is_none_or(|s| s == service);
                if wanted && !grouped.contains_key(&key) && reader.runs(service, env)? {
                    grouped.insert(key, Vec::new());
                }
            }
        }
    }
    let mut services = Vec::with_capacity(grouped.len());
    for ((env, service), instances) in grouped {
        let versions = distinct(instances.iter().map(|i| i.version.clone()));
        let digests = distinct(instances.iter().map(|i| i.digest.clone()));
        let drift = reader.drift(&service, &env).unwrap_or(None);
        let spec = c.definitions.spec_shared(&service, &env).ok();
        let desired = spec.as_ref().map(|spec| spec.slots.len());
        let address = spec.filter(|s| s.port.is_some()).and_then(|s| {
            let port = match s.address_port {
                Some(port) => Some(port),
                None => c
                    .store
                    .assigned_port(&env, &service, crate::render::ADDRESS_NODE, 0)
                    .ok()
                    .flatten(),
            };
            let scheme = if s.tcp { "tcp" } else { "http" };
            port.map(|p| format!("{scheme}://127.0.0.1:{p}"))
        });
        let interrupted = reader
            .history(&service, &env)
            .ok()
            .and_then(|h| latest_interruption(&h));
        let mut warnings = status_warnings(&instances, &versions, desired);
        if let Some(i) = interrupted.as_ref().filter(|i| i.resolved_by.is_none()) {
            warnings.push(format!(
                "deploy #{} was interrupted; the controller is rolling it back (or resuming it) now",
                i.deployment
            ));
        }
        services.push(ServiceStatus {
            env,
            service,
            versions,
            digests,
            instances,
            drift,
            desired,
            warnings,
            interrupted,
            address,
        });
    }
    Ok(StatusReport {
        services,
        now: now_millis(),
    })
}

/// The specs of deployments that succeeded, by id. Such a spec never changes again,
/// and reading and parsing it is most of what a status report costs.
#[derive(Default)]
pub(crate) struct SpecCache(Mutex<HashMap<i64, Arc<DeploySpec>>>);

/// How many specs the cache keeps before it starts over.
const SPECS_KEPT: usize = 4096;

impl SpecCache {
    /// The spec of a succeeded deployment.
    fn of(&self, c: &Controller, id: i64) -> Result<Option<Arc<DeploySpec>>, ServerError> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(spec) = kept {
            return Ok(Some(spec));
        }
        let Some(deployment) = c.store.deployment(id)? else {
            return Ok(None);
        };
        let spec = Arc::new(crate::config_service::spec_of(&deployment)?);
        if deployment.state == wharf_core::lifecycle::DeploymentState::Succeeded {
            let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() >= SPECS_KEPT {
                kept.clear();
            }
            kept.insert(id, spec.clone());
        }
        Ok(Some(spec))
    }
}

type Key = (String, String);

/// What one report reads of the store, each thing once: a service's history in an
/// environment, the spec of the deployment running there, and its effective
/// configuration (which drift compares with the previous environment's, so each is
/// needed twice).
struct Reader<'a> {
    c: &'a Controller,
    histories: HashMap<Key, Rc<Vec<DeploymentRecord>>>,
    specs: HashMap<Key, Option<Arc<DeploySpec>>>,
    effective: HashMap<Key, Option<Rc<Effective>>>,
}

impl<'a> Reader<'a> {
    fn new(c: &'a Controller) -> Self {
        Self {
            c,
            histories: HashMap::new(),
            specs: HashMap::new(),
            effective: HashMap::new(),
        }
    }

    fn key(service: &str, env: &str) -> Key {
        (service.to_owned(), env.to_owned())
    }

    fn history(
        &mut self,
        service: &str,
        env: &str,
    ) -> Result<Rc<Vec<DeploymentRecord>>, ServerError> {
        let key = Self::key(service, env);
        if let Some(history) = self.histories.get(&key) {
            return Ok(history.clone());
        }
        let history = Rc::new(self.c.store.history_brief(service, env)?);
        self.histories.insert(key, history.clone());
        Ok(history)
    }

    /// Whether a deployment runs there now (`wharf_core::decide::running_now`).
    fn runs(&mut self, service: &str, env: &str) -> Result<bool, ServerError> {
        let history = self.history(service, env)?;
        Ok(crate::config_service::running_in(&history, false).is_some())
    }

    /// The spec of the deployment running now.
    fn running_spec(
        &mut self,
        service: &str,
        env: &str,
    ) -> Result<Option<Arc<DeploySpec>>, ServerError> {
        let key = Self::key(service, env);
        if let Some(spec) = self.specs.get(&key) {
            return Ok(spec.clone());
        }
        let history = self.history(service, env)?;
        let spec = match crate::config_service::running_in(&history, false) {
            Some(running) => self.c.running_specs.of(self.c, running.id)?,
            None => None,
        };
        self.specs.insert(key, spec.clone());
        Ok(spec)
    }

    fn effective(
        &mut self,
        service: &str,
        env: &str,
    ) -> Result<Option<Rc<Effective>>, ServerError> {
        let key = Self::key(service, env);
        if let Some(effective) = self.effective.get(&key) {
            return Ok(effective.clone());
        }
        let effective = match self.running_spec(service, env)? {
            Some(spec) => Some(Rc::new(self.c.config.effective_of(service, env, &spec)?)),
            None => None,
        };
        self.effective.insert(key, effective.clone());
        Ok(effective)
    }

    /// How many configuration keys (and secrets) differ from the previous environment
    /// of the pipeline, when both run the service.
    fn drift(&mut self, service: &str, env: &str) -> Result<Option<Drift>, ServerError> {
        let Some(spec) = self.running_spec(service, env)? else {
            return Ok(None);
        };
        let Some(previous) = spec.previous_env.clone() else {
            return Ok(None);
        };
        let (Some(here), Some(there)) = (
            self.effective(service, env)?,
            self.effective(service, &previous)?,
        ) else {
            return Ok(None);
        };
        let keys =
            differing_keys(&here.0, &there.0).len() + differing_keys(&here.1, &there.1).len();
        Ok(Some(Drift {
            previous_env: previous,
            keys,
        }))
    }
}

/// Each value once, in the order first seen.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// The service's latest deploy, when a crash interrupted it: only the deployment that
/// resolved it may have run since (`history` is newest first).
fn latest_interruption(
    history: &[wharf_store::DeploymentRecord],
) -> Option<wharf_api::Interruption> {
    let position = history
        .iter()
        .position(|d| d.state == wharf_core::lifecycle::DeploymentState::Interrupted)?;
    let d = &history[position];
    let only_its_resolution = history[..position]
        .iter()
        .all(|newer| Some(newer.id) == d.resolved_by);
    only_its_resolution.then(|| wharf_api::Interruption {
        deployment: d.id,
        resolved_by: d.resolved_by,
        message: d.message.clone(),
    })
}

/// What keeps a service from being converged, in words a user acts on.
fn status_warnings(
    instances: &[wharf_api::InstanceRecord],
    versions: &[String],
    desired: Option<usize>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    match desired {
        Some(want) if instances.len() < want => warnings.push(format!(
            "{} of {want} instances run; the controller starts the missing ones again (see `wharf history`)",
            instances.len()
        )),
        Some(want) if instances.len() > want => warnings.push(format!(
            "{} instances run where the definition asks for {want}",
            instances.len()
        )),
        _ => {}
    }
    if versions.len() > 1 {
        warnings.push(format!(
            "runs {} versions at once ({}): a deploy is in progress or was interrupted",
            versions.len(),
            versions.join(", ")
        ));
    }
    let unhealthy = instances
        .iter()
        .filter(|i| i.health == wharf_core::lifecycle::Health::Unhealthy)
        .count();
    if unhealthy > 0 {
        warnings.push(format!("{unhealthy} instance(s) fail their health check"));
    }
    warnings
}
