//! The agent protocol: what the controller asks an agent to run, what the agent reports
//! back, and how a host joins.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::records::Capacity;
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
    /// The signal a stop sends first (default TERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Which of the service's slots it fills (its place in the deploy, kept across
    /// versions while instance numbers alternate), naming its data folder.
    #[serde(default)]
    pub data_slot: Option<u32>,
    /// What the instance requests of its host (counted by placement).
    #[serde(default)]
    pub resources: wharf_core::placement::Resources,
    /// How much output the instance keeps.
    #[serde(default)]
    pub logs: wharf_core::model::LogLimits,
    /// The port of its service's stable address on the agent's host, where the agent
    /// balances over the service's healthy instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u16>,
    /// Traffic through the address is plain TCP.
    #[serde(default)]
    pub tcp: bool,
    /// How long the instance may take to answer what it was sent when it stops.
    #[serde(default = "default_drain", with = "wharf_core::model::millis")]
    pub drain_timeout: Duration,
    /// How long requests through the address wait while no instance serves.
    #[serde(default = "default_pause", with = "wharf_core::model::millis")]
    pub pause_timeout: Duration,
    /// How long the instance may take to start answering a request through the address.
    #[serde(
        default = "wharf_core::model::default_response_timeout",
        with = "wharf_core::model::millis"
    )]
    pub response_timeout: Duration,
    /// Which driver runs it.
    #[serde(default)]
    pub driver: wharf_core::model::DriverKind,
    /// Whether `digest` is a Docker image id rather than a wharf archive.
    #[serde(default)]
    pub image: bool,
    /// Keys of `env` holding secrets: sent to the agent that runs the instance, never
    /// written to disk (see [`InstancePlan::redacted`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// For an image: the name it was built from (`registry/name:tag`), pulled when the
    /// host lacks the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// Asks the agent to send the instance a signal once per generation (a configuration
    /// revision), for `on_change: reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<Reload>,
    /// Files written into the instance's data folder before it starts (and before a
    /// reload signal): relative path -> rendered text, without secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// For a container: its own fixed port, published on `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// For an image: the program that runs `argv`, replacing the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Where the instance starts (rendered; may hold the data folder's placeholder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Who it runs as: a user name or `UID[:GID]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its other ports (`ports:`), given to it as `PORT_NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PublishedPort>,
    /// For a container: its volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<wharf_core::spec::VolumeSpec>,
}

/// One of an instance's other ports: the host's number, and the container's own port
/// it is published on (the same number when none is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub name: String,
    pub host: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<u16>,
}

fn default_drain() -> Duration {
    wharf_core::rollout::DEFAULT_DRAIN_TIMEOUT
}

fn default_pause() -> Duration {
    wharf_core::rollout::DEFAULT_PAUSE_TIMEOUT
}

/// A reload request carried by a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    pub generation: i64,
    pub signal: String,
}

impl InstancePlan {
    /// The plan without its secret values, for anything that is written to disk.
    pub fn redacted(&self) -> InstancePlan {
        let mut plan = self.clone();
        for key in &self.secret_keys {
            plan.env.remove(key);
        }
        plan
    }
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
    /// CPU in use, in thousandths of a core (averaged over the last few seconds).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// Memory in use, in bytes (the whole control group when the instance has one).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// `POST /v1/join` (agent listener, no client certificate yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    pub secret: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// PEM certificate signing request for the agent's own key.
    pub csr: String,
}

/// The answer to a join: the host's identity and its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub host_id: i64,
    pub env: String,
    pub cert: String,
    pub ca: String,
}

/// `GET /v1/agent/assignments?index=N`: blocks until the assignments differ from
/// revision N (or a timeout passes), then returns all of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignments {
    pub revision: u64,
    pub plans: Vec<InstancePlan>,
    /// Logs the controller wants (for `wharf logs`): the agent uploads each tail to
    /// `POST /v1/agent/logs/{id}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_requests: Vec<LogRequest>,
    /// Other work for the agent (`wharf exec`, `wharf down --purge`): it answers each
    /// at `POST /v1/agent/answers/{id}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<HostTask>,
    /// A fresh runtime configuration token per `ENV/SERVICE` the plans read
    /// configuration for, with every answer: what an instance the agent restarts gets,
    /// so a token that expired or died with a key rotation is never started again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config_tokens: BTreeMap<String, String>,
    /// The addresses of the host's environment: every service with an address gets a
    /// listener on this host, balancing over its instances here and those listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ServiceRoute>,
    /// The hosts of the environment that may reach this host's instances: their ids,
    /// and the serial of the one certificate each may use (a revoked one is not it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mesh_peers: Vec<(i64, u64)>,
    /// The environment's entry, when its definition has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressPlan>,
}

impl Assignments {
    /// The answer as the agent of host `host_id` uses it: the environment's routes and
    /// peers are the same for every host (the controller makes them once per change),
    /// so each agent leaves out its own instances (it reaches those directly) and
    /// itself.
    pub fn for_host(mut self, host_id: i64) -> Self {
        for route in &mut self.routes {
            route.members.retain(|m| m.host_id != host_id);
        }
        self.mesh_peers.retain(|(id, _)| *id != host_id);
        self
    }
}

/// An environment's entry, with the certificates of its HTTPS routes opened from their
/// secrets (sent over the agent's mutual TLS, kept in memory only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressPlan {
    pub ingress: wharf_core::model::Ingress,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<HostCertificate>,
}

/// A certificate chain and key (PEM) for one host name.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCertificate {
    pub host: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints a key.
impl std::fmt::Debug for IngressPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self.certificates.iter().map(|c| c.host.as_str()).collect();
        f.debug_struct("IngressPlan")
            .field("ingress", &self.ingress)
            .field("certificates_for", &hosts)
            .finish()
    }
}

/// A service's address in the environment, and its healthy instances on other hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoute {
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub tcp: bool,
    #[serde(default = "default_pause", with = "wharf_core::model::millis")]
    pub pause_timeout: Duration,
    #[serde(
        default = "wharf_core::model::default_response_timeout",
        with = "wharf_core::model::millis"
    )]
    pub response_timeout: Duration,
    pub members: Vec<RemoteMember>,
    /// While a blue-green or canary rollout runs: how traffic is split between its new
    /// set and the old one.
    #[serde(default)]
    pub split: Option<TrafficSplit>,
}

/// A rollout's split of a service's traffic, as every host's address applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSplit {
    /// The deployment whose instances are the new set.
    pub candidate: i64,
    /// Percent of requests to the new set.
    pub weight: u8,
    /// The header and cookie that pin a request to a set (lowercase header).
    pub header: String,
    pub cookie: String,
    /// The address that reaches only the new set.
    pub preview_port: Option<u16>,
}

/// An instance on another host, reached through that host's agent (the mesh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMember {
    pub host_id: i64,
    /// That agent's mesh listener.
    pub via: std::net::SocketAddr,
    /// The instance's port on that host.
    pub port: u16,
    /// The deployment it runs, which tells the sets of a split apart.
    #[serde(default)]
    pub deployment: i64,
}

/// The header every agent request carries its wharf version in: the controller refuses
/// a version it does not work with (`wharf_core::skew`).
pub const VERSION_HEADER: &str = "x-wharf-version";

/// The variables naming where an instance reads its configuration at runtime, and
/// holding its token for it.
pub const CONFIG_URL_VAR: &str = "WHARF_CONFIG_URL";
pub const CONFIG_TOKEN_VAR: &str = "WHARF_CONFIG_TOKEN";

/// A request for the last lines of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    pub id: u64,
    pub key: InstanceKey,
    pub lines: usize,
    /// Only lines written from then on (milliseconds since the epoch: `--since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// Work the controller asks of an agent beside running its plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTask {
    pub id: u64,
    pub work: HostWork,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostWork {
    /// Runs `argv` once in the instance's environment and folder, for at most
    /// `limit_secs` (`wharf exec`).
    Exec {
        key: InstanceKey,
        argv: Vec<String>,
        limit_secs: u64,
    },
    /// Removes the data folders and named volumes of `env` (of one `service`, or all)
    /// on the host (`wharf down --purge`).
    Purge {
        env: String,
        #[serde(default)]
        service: Option<String>,
    },
    /// What an instance's log holds past byte `offset` (whole lines, a bounded amount);
    /// without an offset, its last `lines` lines (written since `since`) and where the
    /// log ends: `wharf logs --follow` of an instance on the host.
    FollowLog {
        key: InstanceKey,
        lines: usize,
        #[serde(default)]
        since: Option<i64>,
        #[serde(default)]
        offset: Option<u64>,
    },
    /// Work of a kind this agent does not know (its controller is newer): answered as
    /// failed, rather than failing the whole answer that carries it.
    #[serde(other)]
    Unknown,
}

/// An agent's answer to a [`HostTask`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostAnswer {
    Exec {
        /// `None`: a signal (or the time limit) ended it.
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    Purged {
        folders: usize,
        volumes: usize,
    },
    /// A log's text, and the offset to ask from next.
    Log {
        text: String,
        offset: u64,
    },
    /// The work could not be done, and why.
    Failed {
        error: String,
    },
}

/// Names the plan an instance runs, without repeating it: reports stay small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    pub key: InstanceKey,
    pub deployment_id: i64,
    pub digest: String,
    pub config_digest: String,
}

impl PlanRef {
    /// Whether this names `plan` (and not an older plan of the same slot).
    pub fn names(&self, plan: &InstancePlan) -> bool {
        self.key == plan.key
            && self.deployment_id == plan.deployment_id
            && self.digest == plan.digest
            && self.config_digest == plan.config_digest
    }
}

impl From<&InstancePlan> for PlanRef {
    fn from(plan: &InstancePlan) -> Self {
        Self {
            key: plan.key.clone(),
            deployment_id: plan.deployment_id,
            digest: plan.digest.clone(),
            config_digest: plan.config_digest.clone(),
        }
    }
}

/// One instance as the agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportedInstance {
    pub plan: PlanRef,
    pub status: InstanceStatus,
    /// Set when this plan's instance failed to become healthy.
    pub failure: Option<ReportedFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedFailure {
    pub reason: String,
    pub log_tail: String,
}

/// `POST /v1/agent/report`: everything the agent runs; doubles as its heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentReport {
    pub instances: Vec<ReportedInstance>,
    /// The port of this agent's mesh listener, on the address it reports from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_port: Option<u16>,
    /// What its service addresses measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<crate::traffic::AddressCounts>,
    /// The agent is stopping (a restart, an upgrade): other hosts should send nothing
    /// more through the mesh to its instances until it reports again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_task_of_a_kind_the_agent_does_not_know_is_read_as_unknown() {
        let task: HostTask =
            serde_json::from_str(r#"{"id":3,"work":{"kind":"defragment","depth":2}}"#).unwrap();
        assert_eq!(task.id, 3);
        assert_eq!(task.work, HostWork::Unknown);
    }

    use super::*;

    fn member(host_id: i64) -> RemoteMember {
        RemoteMember {
            host_id,
            via: "10.0.0.1:7000".parse().unwrap(),
            port: 8000,
            deployment: 1,
        }
    }

    #[test]
    fn an_agent_leaves_itself_out_of_the_shared_routes_and_peers() {
        let answer = Assignments {
            revision: 1,
            plans: Vec::new(),
            log_requests: Vec::new(),
            tasks: Vec::new(),
            config_tokens: BTreeMap::new(),
            routes: vec![ServiceRoute {
                service: "web".into(),
                port: 9000,
                tcp: false,
                pause_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(1),
                members: vec![member(1), member(2), member(3)],
                split: None,
            }],
            mesh_peers: vec![(1, 10), (2, 20), (3, 30)],
            ingress: None,
        }
        .for_host(2);
        let hosts: Vec<i64> = answer.routes[0].members.iter().map(|m| m.host_id).collect();
        assert_eq!(hosts, [1, 3]);
        assert_eq!(answer.mesh_peers, [(1, 10), (3, 30)]);
    }
}
