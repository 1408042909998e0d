//! Lifecycle states of deployments and instances, persisted by name.

use serde::{Deserialize, Serialize};

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
        [
            Self::InProgress,
            Self::Succeeded,
            Self::RolledBack,
            Self::Failed,
            Self::Interrupted,
        ]
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
    /// Pooled instances moved off a host that went down, was drained or revoked.
    Reschedule,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Stop => "stop",
            Self::Reschedule => "reschedule",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Deploy, Self::Rollback, Self::Stop, Self::Reschedule]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
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
        [
            Self::Starting,
            Self::Running,
            Self::Restarting,
            Self::Stopping,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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
        [Self::Unknown, Self::Healthy, Self::Unhealthy]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating and accepting instances.
    Ready,
    /// Missed its heartbeats; its instances are assumed to still run.
    Down,
    /// Down for longer than the grace period; its instances are assumed gone.
    Lost,
    /// Heartbeating, but taking no new instances (maintenance).
    Draining,
    /// Its credential was revoked; it gets nothing.
    Revoked,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Down => "down",
            Self::Lost => "lost",
            Self::Draining => "draining",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ready,
            Self::Down,
            Self::Lost,
            Self::Draining,
            Self::Revoked,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether new instances may be placed on a host in this state.
    pub fn can_take_instances(self) -> bool {
        self == Self::Ready
    }

    /// Whether the host's credential still opens the agent API.
    pub fn can_connect(self) -> bool {
        self != Self::Revoked
    }
}
