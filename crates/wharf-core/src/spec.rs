//! A deploy spec: everything the controller needs to run one service in one environment,
//! resolved from the definition on the caller's side and stored with each deployment so a
//! rollback restores exactly what ran.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigMap};
use crate::model::*;
use crate::suggest::hint_for;

/// One service in one environment, ready to deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub service: String,
    pub env: String,
    pub run: Vec<String>,
    pub port: Option<PortSpec>,
    pub health: Option<HealthCheck>,
    #[serde(with = "crate::model::millis")]
    pub stop_timeout: Duration,
    #[serde(default)]
    pub stop_signal: Option<String>,
    pub max_parallel: u32,
    /// How a new version replaces the running one (stored specs from before it roll
    /// with the defaults).
    #[serde(default)]
    pub rollout: crate::rollout::Rollout,
    #[serde(
        default = "crate::model::default_response_timeout",
        with = "crate::model::millis"
    )]
    pub response_timeout: Duration,
    /// How long each batch must stay healthy before the next one starts.
    #[serde(default, with = "crate::model::millis")]
    pub min_healthy_time: Duration,
    pub driver: DriverKind,
    /// Every instance slot, with its layered (not yet rendered) configuration.
    pub slots: Vec<SlotSpec>,
    /// Port specs of every service of the environment, for `{{ services.NAME.url }}`.
    pub peers: BTreeMap<String, Option<PortSpec>>,
    /// The node of each peer's instance 0, where the definition names it (pooled peers
    /// are looked up where they run).
    #[serde(default)]
    pub peer_nodes: BTreeMap<String, String>,
    /// The fixed address ports of peers that give `address_port`.
    #[serde(default)]
    pub peer_address_ports: BTreeMap<String, u16>,
    /// What one instance requests of its host.
    #[serde(default)]
    pub resources: crate::placement::Resources,
    /// The service runs a Docker image (its artifact digest is an image id) rather than a
    /// wharf archive.
    #[serde(default)]
    pub image: bool,
    /// The image's name as wharf.yaml gives it (`registry/name:tag`), for pulls.
    #[serde(default)]
    pub image_ref: Option<String>,
    /// Set for a pooled service: wharf picks the host of each slot (their `node` is
    /// empty until placement fills it in).
    #[serde(default)]
    pub pool: Option<crate::placement::PoolRequest>,
    /// What a configuration change does to running instances.
    #[serde(default)]
    pub on_change: OnChange,
    /// The environment before this one in the pipeline: a version must have been
    /// healthy there before it may be deployed here.
    #[serde(default)]
    pub previous_env: Option<String>,
    /// Set when deploys here wait for approval: how long one may wait (milliseconds).
    #[serde(default)]
    pub approval_expires_ms: Option<u64>,
    /// The environment declares `hosts:`: its nodes run only on hosts that joined under
    /// their names, never on the controller's own machine.
    #[serde(default)]
    pub hosts_required: bool,
    /// The environment says `recovery: resume`: a deploy interrupted by a controller
    /// crash is finished at start instead of rolled back.
    #[serde(default)]
    pub resume_interrupted: bool,
    /// How much output each instance keeps.
    #[serde(default)]
    pub logs: crate::model::LogLimits,
    /// The port of the service's stable address, when the definition fixes it.
    #[serde(default)]
    pub address_port: Option<u16>,
    /// Traffic through the address is plain TCP.
    #[serde(default)]
    pub tcp: bool,
    /// Files rendered into each instance's data folder: relative path -> template text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// For an image: the program that runs `run`, replacing the image's ENTRYPOINT.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Where the instance starts (a template).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The instance's other ports.
    #[serde(default)]
    pub ports: Vec<crate::model::ExtraPort>,
    /// For a container: its volumes, each a named volume or under a host folder.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Who it runs as: a user name or `UID[:GID]`.
    #[serde(default)]
    pub user: Option<String>,
    /// For a container: its own fixed port, published on the instance's port.
    #[serde(default)]
    pub container_port: Option<u16>,
    /// The cluster engine the environment hands its instances to; `slots` then only
    /// count the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::model::Engine>,
}

/// How long new instances must stay healthy when the service does not say: 1s in the
/// first environment of the pipeline (fast feedback), 10s in the later ones, as Nomad's
/// `min_healthy_time`, so a release that crashes soon after its first passing check
/// fails there instead of passing the gate.
pub fn default_min_healthy_time(environment: &Environment) -> Duration {
    if environment.after.is_none() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    }
}

/// A path inside a container kept across its restarts and versions: in the host folder
/// the environment names (a folder per slot below it), else a named volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub path: String,
    #[serde(default)]
    pub host: Option<String>,
}

/// One instance position: a node and the instance's ordinal within the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub node: String,
    /// 0-based ordinal of the instance across the environment (`{{ instance }}`).
    pub instance: u32,
    pub config: ConfigMap,
    /// The node's driver, when it overrides the service's.
    #[serde(default)]
    pub driver: Option<DriverKind>,
}

/// Why a deploy spec cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown service `{name}`")]
    UnknownService { name: String, hint: String },
    #[error("unknown environment `{name}`")]
    UnknownEnvironment { name: String, hint: String },
    #[error("service `{service}` does not run in environment `{env}`")]
    NotPlaced {
        service: String,
        env: String,
        hint: String,
    },
}

impl SpecError {
    pub fn hint(&self) -> &str {
        match self {
            SpecError::UnknownService { hint, .. }
            | SpecError::UnknownEnvironment { hint, .. }
            | SpecError::NotPlaced { hint, .. } => hint,
        }
    }
}

impl Definition {
    /// Looks an environment up, with a hint when it is unknown.
    pub fn environment(&self, env: &str) -> Result<&Environment, SpecError> {
        self.environments
            .get(env)
            .ok_or_else(|| SpecError::UnknownEnvironment {
                name: env.to_owned(),
                hint: hint_for(
                    env,
                    "environment",
                    &self
                        .environments
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                ),
            })
    }

    /// Looks a service up, with a hint when it is unknown.
    /// The configuration wharf.yaml declares for a service in an environment, with
    /// where each value comes from: the service, the environment, or a node (node
    /// values apply to that node's instances only, so they are listed apart).
    pub fn declared_config(
        &self,
        service: &str,
        env: &str,
    ) -> Result<Vec<(String, String, String)>, SpecError> {
        let svc = self.service(service)?;
        let environment = self.environment(env)?;
        let mut merged: BTreeMap<String, (String, String)> = svc
            .config
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), "wharf.yaml: service".to_owned())))
            .collect();
        for (k, v) in environment.config.get(service).into_iter().flatten() {
            merged.insert(
                k.clone(),
                (v.clone(), format!("wharf.yaml: environment {env}")),
            );
        }
        let mut rows: Vec<(String, String, String)> =
            merged.into_iter().map(|(k, (v, s))| (k, v, s)).collect();
        for node in &environment.nodes {
            for (k, v) in node.config.get(service).into_iter().flatten() {
                rows.push((
                    k.clone(),
                    v.clone(),
                    format!("wharf.yaml: node {}", node.name),
                ));
            }
        }
        Ok(rows)
    }

    pub fn service(&self, name: &str) -> Result<&Service, SpecError> {
        self.services
            .get(name)
            .ok_or_else(|| SpecError::UnknownService {
                name: name.to_owned(),
                hint: hint_for(
                    name,
                    "service",
                    &self.services.keys().map(String::as_str).collect::<Vec<_>>(),
                ),
            })
    }

    /// Resolves `service` in `env` into a deploy spec.
    pub fn deploy_spec(&self, service: &str, env: &str) -> Result<DeploySpec, SpecError> {
        let environment = self.environment(env)?;
        let svc = self.service(service)?;
        let empty = ConfigMap::new();
        let env_layer = environment.config.get(service).unwrap_or(&empty);
        let mut slots = Vec::new();
        for node in &environment.nodes {
            let Some((_, instances)) = node.services.iter().find(|(s, _)| s == service) else {
                continue;
            };
            let node_layer = node.config.get(service).unwrap_or(&empty);
            let merged = config::layered([&svc.config, env_layer, node_layer]);
            for _ in 0..*instances {
                let instance = slots.len() as u32;
                slots.push(SlotSpec {
                    node: node.name.clone(),
                    instance,
                    config: merged.clone(),
                    driver: node.driver,
                });
            }
        }
        let pool = environment
            .pools
            .get(service)
            .map(|p| crate::placement::PoolRequest {
                count: p.count,
                resources: svc.resources,
                spread: p.spread,
                max_per_host: p.max_per_host,
            });
        if let Some(pool) = &pool {
            let merged = config::layered([&svc.config, env_layer]);
            for instance in 0..pool.count {
                slots.push(SlotSpec {
                    node: String::new(),
                    instance,
                    config: merged.clone(),
                    driver: None,
                });
            }
        }
        if slots.is_empty() {
            let placed = environment.service_names();
            return Err(SpecError::NotPlaced {
                service: service.to_owned(),
                env: env.to_owned(),
                hint: format!(
                    "add it to a node of `{env}`; it runs {}",
                    placed
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let peers = environment
            .service_names()
            .into_iter()
            .filter_map(|name| {
                self.services
                    .get(name)
                    .map(|s| (name.to_owned(), s.port.clone()))
            })
            .collect();
        let peer_address_ports = environment
            .service_names()
            .into_iter()
            .filter_map(|name| {
                let port = self.services.get(name)?.address_port?;
                Some((name.to_owned(), port))
            })
            .collect();
        Ok(DeploySpec {
            engine: environment.engine.clone(),
            peer_address_ports,
            service: service.to_owned(),
            env: env.to_owned(),
            run: svc.run.clone(),
            port: svc.port.clone(),
            health: svc.health.clone(),
            stop_timeout: svc.stop_timeout,
            stop_signal: svc.stop_signal.clone(),
            max_parallel: svc.max_parallel,
            rollout: svc.rollout.clone(),
            response_timeout: svc.response_timeout,
            min_healthy_time: svc
                .min_healthy_time
                .unwrap_or_else(|| default_min_healthy_time(environment)),
            driver: svc.driver,
            slots,
            peers,
            resources: svc.resources,
            image: svc.image.is_some(),
            image_ref: svc.image.clone(),
            pool,
            on_change: svc.on_change.clone(),
            previous_env: environment.after.clone(),
            approval_expires_ms: environment.approval.map(|d| d.as_millis() as u64),
            hosts_required: environment.hosts.is_some(),
            resume_interrupted: environment.resume_interrupted,
            logs: svc.logs,
            address_port: svc.address_port,
            tcp: svc.tcp,
            files: svc.files.clone(),
            entrypoint: svc.entrypoint.clone(),
            working_dir: svc.working_dir.clone(),
            ports: svc.ports.clone(),
            volumes: svc
                .volumes
                .iter()
                .map(|path| VolumeSpec {
                    path: path.clone(),
                    host: environment
                        .volumes
                        .get(service)
                        .and_then(|v| v.get(path))
                        .cloned(),
                })
                .collect(),
            user: svc.user.clone(),
            container_port: svc.container_port,
            peer_nodes: environment
                .service_names()
                .into_iter()
                .filter_map(|name| {
                    let node = environment
                        .nodes
                        .iter()
                        .find(|n| n.services.iter().any(|(s, _)| s == name))?;
                    Some((name.to_owned(), node.name.clone()))
                })
                .collect(),
        })
    }
}
