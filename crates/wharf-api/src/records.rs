//! What the API answers about wharf's state. These are the wire's own types: the server
//! converts its store rows into them, so the database can change without the API
//! changing, and what is internal (a deployment's full spec, token hashes) stays in.

use serde::{Deserialize, Serialize};
pub use wharf_core::lifecycle::*;

/// A built, registered artifact version of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactRecord {
    pub service: String,
    pub version: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// Unix time in milliseconds.
    pub created_at: i64,
}

/// A deployment, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeploymentRecord {
    pub id: i64,
    pub service: String,
    pub env: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub digest: String,
    /// Digest of the rendered configuration of every instance.
    pub config_digest: String,
    pub user: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub state: DeploymentState,
    pub message: String,
    /// The configuration revision (`wharf config`) it ran with; 0 when none was set.
    #[serde(default)]
    pub config_revision: i64,
    /// Deployed past the pipeline rule with `--force`.
    #[serde(default)]
    pub forced: bool,
    /// Who approved it, in an environment with `approval: required`.
    #[serde(default)]
    pub approved_by: Option<String>,
    /// For an interrupted deployment: the deployment that rolled it back or resumed it
    /// when the controller started again (0: nothing had to be done), or none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<i64>,
}

/// An instance wharf runs, with what it last observed of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// CPU in use, thousandths of a core.
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// What a host offers, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A host that joined an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostRecord {
    pub id: i64,
    pub name: String,
    pub env: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Where its agent connected from.
    pub address: String,
    pub state: HostState,
    pub joined_at: i64,
    pub last_seen: i64,
    /// Serial of the one certificate currently valid for this host.
    pub cert_serial: u64,
}

/// One revision of the `wharf config set` overrides of a service in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigRevision {
    pub service: String,
    pub env: String,
    pub revision: i64,
    pub values: std::collections::BTreeMap<String, String>,
    pub user: String,
    pub at: i64,
    pub message: String,
    /// `active`, `held` (waits for approval, seen by nobody) or `rejected` (never ships).
    pub state: String,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    /// `ENV:ACTION` grants; `*` stands for any environment or action.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// One mutating call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied`, or the error.
    pub outcome: String,
}
