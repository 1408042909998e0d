//! Deploys to an environment whose `engine:` places and supervises its instances. The
//! deploy is the same up to the hand-off (the pipeline gate, approvals, configuration
//! and secrets rendered, the deployment recorded); then the engine gets one service
//! spec, rolls it out itself, and wharf follows its rollout until it converges or the
//! engine rolls it back, and records which.

use std::time::Duration;

use wharf_api::DeployEvent;
use wharf_api::agent::InstancePlan;
use wharf_core::lifecycle::DeploymentState;
use wharf_core::model::{Engine, PortSpec};
use wharf_engine::swarm::Swarm;
use wharf_engine::{EngineService, Outcome, ServicePort};
use wharf_store::Store;

use super::{Events, Order, Prepared};
use crate::deploy_guard::DeployGuard;
use crate::error::ServerError;
use crate::render::{CONFIG_TOKEN_VAR, CONFIG_URL_VAR, Extras, Rendered, render};

/// How long a rollout may take beyond each replica's own start allowance.
const ROLLOUT_MARGIN: Duration = Duration::from_secs(120);

/// Renders an engine deploy: one slot per replica, numbered in order; nothing is
/// placed (the engine places) and nothing is planned step by step (the engine rolls).
pub(super) fn prepare(
    store: &dyn Store,
    req: &Order,
    digest: &str,
    config_revision: i64,
    extras: &Extras,
) -> Result<Prepared, ServerError> {
    let mut placed = req.spec.clone();
    for (rank, slot) in placed.slots.iter_mut().enumerate() {
        slot.node = "engine".into();
        slot.instance = u32::try_from(rank).unwrap_or(u32::MAX);
    }
    let rendered = render(store, &placed, &req.version, digest, 0, extras)?;
    Ok(Prepared {
        rendered,
        config_revision,
        plan: Default::default(),
        spec: placed,
    })
}

/// The engine's service of a rendered deploy: the configuration of its first replica
/// (what differs between replicas, such as `{{ instance }}`, is the first one's), its
/// secrets apart.
fn engine_service(req: &Order, first: &InstancePlan, replicas: usize, id: i64) -> EngineService {
    let spec = &req.spec;
    let hidden = |k: &String| k == CONFIG_URL_VAR || k == CONFIG_TOKEN_VAR;
    let secret = |k: &String| first.secret_keys.contains(k);
    let config = first
        .env
        .iter()
        .filter(|(k, _)| !hidden(k) && !secret(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let secrets = first
        .env
        .iter()
        .filter(|(k, _)| !hidden(k) && secret(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let published = match spec.port {
        Some(PortSpec::Fixed(port)) => Some(port),
        _ => None,
    };
    let port = spec
        .container_port
        .or(first.port)
        .map(|target| ServicePort { target, published });
    EngineService {
        env: spec.env.clone(),
        service: spec.service.clone(),
        version: req.version.clone(),
        deployment_id: id,
        image: first.digest.clone(),
        replicas: replicas as u64,
        args: first.argv.clone(),
        entrypoint: first.entrypoint.clone(),
        config,
        secrets,
        port,
        health: spec.health.clone(),
        parallelism: spec.max_parallel,
        monitor: spec.min_healthy_time,
        stop_grace: spec.stop_timeout,
        stop_signal: spec.stop_signal.clone(),
    }
}

/// Hands a deploy to its engine and records how its rollout ended.
pub(super) async fn run(
    guard: DeployGuard,
    req: &Order,
    engine: &Engine,
    rendered: Rendered,
    _events: &Events,
) -> Result<DeployEvent, ServerError> {
    let spec = &req.spec;
    let id = guard.id();
    let end = |guard: DeployGuard, state: DeploymentState, message: String| {
        guard.finish(state, &message)?;
        Ok(DeployEvent::Finished {
            deployment: Some(id),
            state,
            message,
        })
    };
    if let Engine::Kubernetes { .. } = engine {
        return end(
            guard,
            DeploymentState::Failed,
            format!(
                "`{}` hands its instances to kubernetes, which this controller cannot deploy to yet; nothing was changed",
                spec.env
            ),
        );
    }
    if !spec.image {
        return end(
            guard,
            DeploymentState::Failed,
            format!(
                "`{}` is built by wharf (`build:`), and a swarm runs images; nothing was changed. Give the service `image:` to run it on `{}`",
                spec.service, spec.env
            ),
        );
    }
    let Some(first) = rendered.plans.first() else {
        return end(
            guard,
            DeploymentState::Failed,
            format!("`{}` has no replicas in `{}`", spec.service, spec.env),
        );
    };
    let service = engine_service(req, first, rendered.plans.len(), id);
    let swarm = match Swarm::connect().await {
        Ok(swarm) => swarm,
        Err(e) => return end(guard, DeploymentState::Failed, e.to_string()),
    };
    // Saturating: the durations come from the definition.
    let allowance = spec
        .health
        .as_ref()
        .map(|h| h.timeout)
        .unwrap_or_default()
        .saturating_add(spec.min_healthy_time);
    let timeout = allowance
        .saturating_mul(u32::try_from(service.replicas).unwrap_or(u32::MAX).max(1))
        .saturating_add(ROLLOUT_MARGIN);
    match swarm.apply(&service, timeout).await {
        Ok(Outcome::Converged) => end(
            guard,
            DeploymentState::Succeeded,
            format!(
                "{} replica(s) of {} run on the swarm",
                service.replicas, req.version
            ),
        ),
        Ok(Outcome::RolledBack(why)) => end(
            guard,
            DeploymentState::RolledBack,
            format!("the swarm rolled {} back: {why}", req.version),
        ),
        Ok(Outcome::Failed(why)) => end(guard, DeploymentState::Failed, why),
        Err(e) => end(guard, DeploymentState::Failed, e.to_string()),
    }
}

/// Removes a service from its engine with its secrets; how many replicas it had.
pub(super) async fn remove(engine: &Engine, env: &str, service: &str) -> Result<usize, String> {
    let Engine::Swarm = engine else {
        return Ok(0);
    };
    let swarm = Swarm::connect().await.map_err(|e| e.to_string())?;
    let replicas = swarm
        .replicas(env, service)
        .await
        .map_err(|e| e.to_string())?;
    swarm
        .remove(env, service)
        .await
        .map_err(|e| e.to_string())?;
    Ok(replicas.len())
}

/// The replicas Swarm wants running of each named service of the swarm environments,
/// as `wharf status` lists instances (node `swarm`, numbered from Swarm's slots).
/// Read from the engine when asked: wharf keeps no copy that could be stale.
pub(crate) async fn swarm_instances(
    services: Vec<(String, String)>,
) -> Result<Vec<wharf_api::InstanceRecord>, String> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    let swarm = Swarm::connect().await.map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for (env, service) in services {
        let replicas = swarm
            .replicas(&env, &service)
            .await
            .map_err(|e| e.to_string())?;
        all.extend(replicas.into_iter().map(|r| instance_of(&env, &service, r)));
    }
    Ok(all)
}

fn instance_of(env: &str, service: &str, r: wharf_engine::Replica) -> wharf_api::InstanceRecord {
    use wharf_core::lifecycle::{Health, InstanceState};
    // Swarm holds a replica with a health check in `starting` until it passes.
    let (state, health) = match r.state.as_str() {
        "running" => (InstanceState::Running, Health::Healthy),
        "failed" | "rejected" => (InstanceState::Restarting, Health::Unhealthy),
        "shutdown" | "complete" | "orphaned" | "remove" => {
            (InstanceState::Stopping, Health::Unknown)
        }
        _ => (InstanceState::Starting, Health::Unknown),
    };
    wharf_api::InstanceRecord {
        env: env.to_owned(),
        service: service.to_owned(),
        node: "swarm".into(),
        instance: u32::try_from(r.slot.saturating_sub(1)).unwrap_or(u32::MAX),
        version: r.version,
        digest: String::new(),
        config_digest: String::new(),
        deployment_id: 0,
        pid: None,
        port: None,
        state,
        health,
        restarts: 0,
        started_at: 0,
        cpu_millis: None,
        memory_bytes: None,
    }
}
