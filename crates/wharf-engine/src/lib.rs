//! Cluster engines an environment hands its instances to (R11): wharf keeps the
//! definition, the pipeline, configuration, secrets, approvals and history; the engine
//! places and supervises the replicas. `swarm`: Docker's Swarm mode through bollard.

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_core::model::HealthCheck;

pub mod swarm;

/// One service of an engine environment, as a deploy wants it to run.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineService {
    pub env: String,
    pub service: String,
    pub version: String,
    pub deployment_id: i64,
    /// What the engine runs: a local image id (`sha256:...`) or a reference.
    pub image: String,
    pub replicas: u64,
    /// Arguments (`run:`); empty keeps the image's own command.
    pub args: Vec<String>,
    /// Replaces the image's ENTRYPOINT when set.
    pub entrypoint: Option<Vec<String>>,
    /// Rendered configuration, given as environment variables.
    pub config: BTreeMap<String, String>,
    /// Secrets: key -> value. Delivered as engine secrets (files under
    /// `/run/secrets/KEY`), never in the service's spec.
    pub secrets: BTreeMap<String, String>,
    /// The port the container listens on, and the one the engine publishes it on.
    pub port: Option<ServicePort>,
    pub health: Option<HealthCheck>,
    /// How many replicas are replaced at once.
    pub parallelism: u32,
    /// How long a new replica must stay healthy before the update goes on.
    pub monitor: Duration,
    pub stop_grace: Duration,
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    /// Where each replica listens.
    pub target: u16,
    /// Where the engine publishes it (Swarm: on every node, through the routing mesh);
    /// None: reached only inside the engine's networks.
    pub published: Option<u16>,
}

/// How an applied service ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every replica runs the new spec.
    Converged,
    /// The engine rolled the update back (a replica failed), with its reason.
    RolledBack(String),
    /// The update stopped without converging, with the engine's reason.
    Failed(String),
}

/// One replica as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub slot: u64,
    pub version: String,
    /// The wharf deployment that made its spec (every deploy makes a new one, so a
    /// replica of the same version from an earlier deploy is told apart).
    pub deployment: String,
    /// The engine's state (`running`, `starting`, `failed`, ...).
    pub state: String,
    pub message: String,
    pub container: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(
        "the Docker engine is not a swarm manager ({0}); run `docker swarm init` on it, or join it to a swarm as a manager"
    )]
    NotASwarm(String),
    #[error("the rollout of `{service}` was not seen to end within {waited:?}")]
    Timeout { service: String, waited: Duration },
}

/// The engine's name for a service of an environment: `wharf-ENV-SERVICE`.
pub fn engine_name(env: &str, service: &str) -> String {
    format!("wharf-{env}-{service}")
}

/// Labels every object wharf makes carries.
pub const LABEL_SERVICE: &str = "wharf.service";
pub const LABEL_ENV: &str = "wharf.env";
pub const LABEL_VERSION: &str = "wharf.version";
pub const LABEL_DEPLOYMENT: &str = "wharf.deployment";
