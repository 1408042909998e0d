//! What the controller asks an agent to run, and what the agent reports back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wharf_core::lifecycle::{Health, InstanceState};
use wharf_core::model::HealthCheck;
use wharf_driver::InstanceKey;

/// One instance to run: which artifact, which command, which environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstancePlan {
    pub key: InstanceKey,
    pub version: String,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    pub config_digest: String,
    pub deployment_id: i64,
    pub argv: Vec<String>,
    /// The rendered environment of the instance.
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
    pub health: Option<HealthCheck>,
    #[serde(with = "wharf_core::model::millis")]
    pub stop_timeout: Duration,
}

/// What the agent last observed of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub plan_version: String,
    pub key: InstanceKey,
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub health: Health,
    pub restarts: u32,
    /// Unix milliseconds when the current process started.
    pub started_at: i64,
    /// How the last process ended, when it ended on its own.
    pub last_exit: Option<String>,
}

/// Where the agent sends what it observes.
pub trait StatusSink: Send + Sync {
    fn instance_changed(&self, plan: &InstancePlan, status: &InstanceStatus);
}

/// A sink that drops reports, for callers that only poll [`crate::Agent::statuses`].
pub struct NoSink;

impl StatusSink for NoSink {
    fn instance_changed(&self, _: &InstancePlan, _: &InstanceStatus) {}
}
