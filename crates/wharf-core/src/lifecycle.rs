//! Lifecycle states of deployments and instances, persisted by name.

use serde::{Deserialize, Serialize};

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Held until someone other than its author approves it (`approval: required`).
    PendingApproval,
    /// Its approval was refused; nothing ran.
    Rejected,
    /// Nobody approved it in time; nothing ran.
    Expired,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::PendingApproval => "pending_approval",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL_STATES.into_iter().find(|state| state.as_str() == s)
    }

    /// Whether a deploy in this state ran to completion and may be rolled back to.
    pub fn can_be_rollback_target(self) -> bool {
        self == Self::Succeeded
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Self::InProgress | Self::PendingApproval)
    }

    /// Whether an approver may still act on it.
    pub fn can_be_approved(self) -> bool {
        self == Self::PendingApproval
    }

    /// The states a deployment may leave this one for: the one definition of every
    /// transition, which the store enforces as a compare-and-set.
    ///
    /// A held deployment is approved (in progress), rejected or expires; one in progress
    /// ends once, as succeeded, rolled back, failed or interrupted. Nothing leaves a
    /// finished state.
    pub fn may_become(self, next: Self) -> bool {
        use DeploymentState::*;
        match self {
            PendingApproval => matches!(next, InProgress | Rejected | Expired),
            InProgress => matches!(next, Succeeded | RolledBack | Failed | Interrupted),
            _ => false,
        }
    }

    /// The states from which a deployment may reach `next`.
    pub fn sources_of(next: Self) -> Vec<Self> {
        ALL_STATES
            .into_iter()
            .filter(|from| from.may_become(next))
            .collect()
    }
}

const ALL_STATES: [DeploymentState; 8] = [
    DeploymentState::InProgress,
    DeploymentState::Succeeded,
    DeploymentState::RolledBack,
    DeploymentState::Failed,
    DeploymentState::Interrupted,
    DeploymentState::PendingApproval,
    DeploymentState::Rejected,
    DeploymentState::Expired,
];

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    Deploy,
    Rollback,
    Stop,
    /// Pooled instances moved off a host that went down, was drained or revoked.
    Reschedule,
    /// The artifact healthy in the previous environment, moved to the next.
    Promote,
    /// Instances rolled because their configuration changed (`wharf config set`).
    Config,
    /// A definition revision that changes an approval environment's policy, held for
    /// approval; nothing runs (its `config_revision` is the definition revision).
    Definition,
    /// A deployment the controller found interrupted at start, resolved: rolled back to
    /// what ran before it (or resumed, where the environment says `recovery: resume`).
    Recovery,
    /// Instances brought back to the running deployment's set (one went missing, or an
    /// instance not wanted appeared), found by the periodic reconcile.
    Reconcile,
    /// Every instance replaced by a fresh one of the same version and configuration
    /// (`wharf restart`), the rolling way.
    Restart,
    /// A service run straight from its folder by `wharf dev` (version `dev`): every
    /// instance replaced, the rolling way; the pipeline gate never counts it.
    Dev,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Stop => "stop",
            Self::Reschedule => "reschedule",
            Self::Promote => "promote",
            Self::Config => "config",
            Self::Definition => "definition",
            Self::Recovery => "recovery",
            Self::Reconcile => "reconcile",
            Self::Restart => "restart",
            Self::Dev => "dev",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Deploy,
            Self::Rollback,
            Self::Stop,
            Self::Reschedule,
            Self::Promote,
            Self::Config,
            Self::Definition,
            Self::Recovery,
            Self::Reconcile,
            Self::Restart,
            Self::Dev,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::DeploymentState::{self, *};

    #[test]
    fn deployment_transitions() {
        let table: &[(DeploymentState, DeploymentState, bool)] = &[
            (PendingApproval, InProgress, true),
            (PendingApproval, Rejected, true),
            (PendingApproval, Expired, true),
            (PendingApproval, Succeeded, false),
            (InProgress, Succeeded, true),
            (InProgress, RolledBack, true),
            (InProgress, Failed, true),
            (InProgress, Interrupted, true),
            (InProgress, Rejected, false),
            (InProgress, PendingApproval, false),
            // A rejected deployment is never approved after all, and the reverse.
            (Rejected, InProgress, false),
            (Rejected, Expired, false),
            (Succeeded, Failed, false),
            (Interrupted, Succeeded, false),
            (Expired, InProgress, false),
        ];
        for &(from, to, allowed) in table {
            assert_eq!(from.may_become(to), allowed, "{from:?} -> {to:?}");
        }
        assert_eq!(DeploymentState::sources_of(Rejected), [PendingApproval]);
        assert_eq!(DeploymentState::sources_of(Failed), [InProgress]);
    }
}
