//! The rows wharf keeps, and the lifecycle states they move through.

use serde::{Deserialize, Serialize};
pub use wharf_core::lifecycle::*;

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
    pub spec: SpecJson,
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
    /// For an interrupted deployment: the deployment that resolved it at the next
    /// start (0 when nothing had to be done), or none yet.
    #[serde(default)]
    pub resolved_by: Option<i64>,
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
    pub spec: SpecJson,
    pub user: String,
    pub started_at: i64,
    pub config_revision: i64,
    pub forced: bool,
    /// Held for approval instead of starting (it then holds no deploy lock).
    pub pending_approval: bool,
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
    /// CPU in use, thousandths of a core.
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// What a host offers, as its agent reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A host that joined an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A host asking to join.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub env: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub capacity: Capacity,
    pub address: String,
    pub at: i64,
}

/// A report heard from a host: when, and from which address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub host_id: i64,
    pub at: i64,
    pub address: String,
}

/// A join token as listed (its secret is kept only as a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub env: String,
    pub expires_at: i64,
    pub uses_left: u32,
    pub created_at: i64,
    pub created_by: String,
}

/// One revision of the `wharf config set` overrides of a service in an environment: the
/// whole set of overrides as it stood after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRevision {
    pub service: String,
    pub env: String,
    pub revision: i64,
    pub values: std::collections::BTreeMap<String, String>,
    pub user: String,
    pub at: i64,
    pub message: String,
    /// `active`; `held` while the deployment that rolls it waits for approval (nobody
    /// sees it); `rejected` when that deployment was rejected or expired (never ships).
    #[serde(default = "active")]
    pub state: String,
}

fn active() -> String {
    "active".into()
}

/// A secret as stored: encrypted under the master key `key_id`, never in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub service: String,
    pub env: String,
    pub key: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Counts the changes of its value, so configuration digests change without
    /// hashing the value.
    pub version: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

/// An API token as listed (its secret is kept only as a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    /// `ENV:ACTION` grants; `*` stands for any environment or action.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// A blue-green or canary rollout: the deployment whose new set it moves traffic to,
/// where it is (`phase`, and the controller's own record of its progress), and the
/// command given to it that it has not carried out yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    pub deployment_id: i64,
    pub service: String,
    pub env: String,
    pub phase: String,
    pub progress: serde_json::Value,
    pub command: Option<String>,
    pub command_by: Option<String>,
    pub updated_at: i64,
}

/// One mutating call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied`, or the error.
    pub outcome: String,
}

/// A machine `wharf host add` put in an SSH environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddedSshHost {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub host_key: Option<String>,
}

/// One revision of the definition (wharf.yaml) as the controller stores it: the source
/// text, which the controller parsed and validated itself before storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRecord {
    pub revision: i64,
    /// sha256 of `source`, hex.
    pub digest: String,
    /// The file name it was submitted as, for error locations.
    pub path: String,
    pub source: String,
    /// The files submitted with it (env files, file templates), path -> text.
    pub files: std::collections::BTreeMap<String, String>,
    /// Instance counts `wharf scale` set on this revision: "ENV/SERVICE" -> count.
    pub scale: std::collections::BTreeMap<String, u32>,
    /// Machines `wharf host add` put in SSH environments on this revision: ENV -> them.
    pub ssh_hosts: std::collections::BTreeMap<String, Vec<AddedSshHost>>,
    pub user: String,
    pub at: i64,
    pub message: String,
    /// `active`; `held` while its approval is pending (not in force); `rejected`.
    pub state: String,
}

/// A deployment's spec as the JSON text it is stored as. Kept as text, not a tree of
/// JSON values: a pool's spec lists every slot, and at 10,000 instances the tree was
/// megabytes more than the text each time a deployment was read or written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecJson(Box<serde_json::value::RawValue>);

impl SpecJson {
    /// `null`, for a record that runs no spec (a stop).
    pub fn null() -> Self {
        Self::of(&serde_json::Value::Null)
    }

    /// The JSON of `spec`, written straight to text.
    pub fn of<T: Serialize + ?Sized>(spec: &T) -> Self {
        // Specs are plain data (strings, numbers, maps with string keys): they always
        // serialize.
        Self(serde_json::value::to_raw_value(spec).expect("specs serialize"))
    }

    /// Checks that `text` is JSON.
    pub fn from_text(text: String) -> serde_json::Result<Self> {
        serde_json::value::RawValue::from_string(text).map(Self)
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }

    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// One top-level field, for the small specs of held revisions and approvals.
    pub fn field(&self, name: &str) -> Option<serde_json::Value> {
        match self.parse::<serde_json::Value>() {
            Ok(serde_json::Value::Object(mut fields)) => fields.remove(name),
            _ => None,
        }
    }
}

impl PartialEq for SpecJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}
