//! The rows wharf keeps, and the lifecycle states they move through.

use serde::{Deserialize, Serialize};

/// A built, registered artifact version of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub service: String,
    pub version: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    InProgress,
    Succeeded,
    /// New instances failed; the previous version was restored.
    RolledBack,
    /// Failed and could not be rolled back completely.
    Failed,
    /// The controller stopped while it ran.
    Interrupted,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::InProgress, Self::Succeeded, Self::RolledBack, Self::Failed, Self::Interrupted]
            .into_iter()
            .find(|state| state.as_str() == s)
    }

    /// Whether a deploy in this state ran to completion and may be rolled back to.
    pub fn can_be_rollback_target(self) -> bool {
        self == Self::Succeeded
    }

    pub fn is_finished(self) -> bool {
        self != Self::InProgress
    }
}

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    Deploy,
    Rollback,
    Stop,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Deploy, Self::Rollback, Self::Stop].into_iter().find(|k| k.as_str() == s)
    }
}

/// A deployment, as history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: i64,
    pub service: String,
    pub env: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub digest: String,
    /// Digest of the rendered configuration of every instance.
    pub config_digest: String,
    /// The deploy spec it ran with (JSON), so a rollback restores exactly this.
    pub spec: serde_json::Value,
    pub user: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub state: DeploymentState,
    pub message: String,
}

/// A deployment about to begin.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub service: String,
    pub env: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub digest: String,
    pub config_digest: String,
    pub spec: serde_json::Value,
    pub user: String,
    pub started_at: i64,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Running,
    /// Exited on its own; waiting for its backoff before a restart.
    Restarting,
    Stopping,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopping => "stopping",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Starting, Self::Running, Self::Restarting, Self::Stopping].into_iter().find(|k| k.as_str() == s)
    }
}

/// The last health check result of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Unknown, Self::Healthy, Self::Unhealthy].into_iter().find(|k| k.as_str() == s)
    }
}

/// An instance wharf runs, with what it last observed of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub env: String,
    pub service: String,
    pub node: String,
    pub instance: u32,
    pub version: String,
    pub digest: String,
    pub config_digest: String,
    pub deployment_id: i64,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub state: InstanceState,
    pub health: Health,
    pub restarts: u32,
    /// Unix time in milliseconds of the current process's start.
    pub started_at: i64,
}
