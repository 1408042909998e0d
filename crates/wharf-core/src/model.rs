//! The validated, resolved definition. A value of these types has passed every check of
//! [`crate::definition::load`]: names resolve, durations parse, environments are ordered.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A validated wharf definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub services: BTreeMap<String, Service>,
    pub environments: BTreeMap<String, Environment>,
    /// Environment names in pipeline order: every environment comes after its `after`.
    pub pipeline: Vec<String>,
}

/// A service: how it is built, run and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// How the artifact is made; `None` for a service that runs a Docker image.
    pub build: Option<Build>,
    /// The Docker image (`name:tag`) a service runs instead of a wharf artifact.
    pub image: Option<String>,
    pub run: Vec<String>,
    pub port: Option<PortSpec>,
    pub health: Option<HealthCheck>,
    pub config: BTreeMap<String, String>,
    pub driver: DriverKind,
    pub stop_timeout: Duration,
    /// The signal a stop sends first (`TERM`, `QUIT`, ...), without `SIG`.
    pub stop_signal: Option<String>,
    pub max_parallel: u32,
    /// `None`: the environment's default (see `spec::default_min_healthy_time`).
    pub min_healthy_time: Option<Duration>,
    pub resources: crate::placement::Resources,
    pub on_change: OnChange,
    pub logs: LogLimits,
    /// The port of the service's stable address, when the definition fixes it.
    pub address_port: Option<u16>,
    /// Traffic through the address is plain TCP rather than HTTP.
    pub tcp: bool,
    /// How a new version replaces the running one.
    pub rollout: crate::rollout::Rollout,
    /// How long an instance may take to start answering through the address.
    pub response_timeout: Duration,
    /// Files rendered into each instance's data folder: relative path -> template text.
    pub files: BTreeMap<String, String>,
    /// For an image: the program that runs `run`, replacing the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// For a container: its own fixed port, published on the instance's port.
    pub container_port: Option<u16>,
    /// Where the instance starts (a template); `None`: the driver's default.
    pub working_dir: Option<String>,
    /// The instance's other ports (`ports:`).
    pub ports: Vec<ExtraPort>,
    /// For a container: paths inside it kept in volumes.
    pub volumes: Vec<String>,
    /// Who it runs as: a user name or `UID[:GID]`.
    pub user: Option<String>,
    /// What `wharf dev` does when its folder changes.
    pub dev: crate::dev::DevSettings,
}

/// The default of `response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn default_response_timeout() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

/// How much output an instance keeps: its log is rotated when it reaches `max_bytes`
/// (by the writer, as it writes), and `keep` rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    pub max_bytes: u64,
    pub keep: u32,
}

impl LogLimits {
    pub const MIN_BYTES: u64 = 4 * 1024;
    pub const MAX_KEEP: u32 = 100;
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// What a configuration change does to running instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    /// Roll the instances with the new configuration, as a deploy.
    #[default]
    Restart,
    /// Send them this signal (`HUP`, `USR1`, ...); they read the new values over HTTP.
    Reload { signal: String },
}

/// Signals `on_change: reload` may send.
pub const RELOAD_SIGNALS: &[&str] = &["HUP", "USR1", "USR2", "INT", "QUIT", "WINCH"];

/// Where an artifact's files come from, relative to the definition file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// Folder a build command runs in.
    pub context: String,
    pub command: Option<Vec<String>>,
    /// Folder that is packed, relative to the definition file's folder.
    pub output: String,
    /// Glob patterns of secret-looking files meant to be packed (no warning for them).
    pub include: Vec<String>,
}

/// An instance's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSpec {
    /// Instance N listens on this number + N.
    Fixed(u16),
    /// wharf assigns a free port per instance and keeps it across deploys.
    Named(String),
}

/// How wharf decides an instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// How long a new instance may take to pass.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Time between checks while waiting.
    #[serde(with = "millis")]
    pub interval: Duration,
    /// Consecutive failures that take a running instance out of the rotation.
    #[serde(default = "two")]
    pub fall: u32,
    /// Consecutive passes that put it back.
    #[serde(default = "two")]
    pub rise: u32,
    /// Consecutive failures that restart a running instance that was healthy (0: never).
    #[serde(default = "three")]
    pub unhealthy_after: u32,
}

fn two() -> u32 {
    2
}

fn three() -> u32 {
    3
}

impl HealthCheck {
    /// How often a running instance is re-checked.
    pub fn running_interval(&self) -> Duration {
        self.interval
            .clamp(Duration::from_millis(250), Duration::from_secs(2))
    }
}

/// One kind of health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Http { path: String },
    Tcp,
    Command { argv: Vec<String> },
}

/// How instances are run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    #[default]
    Process,
    Docker,
}

/// An environment's entry (see [`crate::raw::RawIngress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingress {
    pub listen: std::net::SocketAddr,
    pub tls_listen: Option<std::net::SocketAddr>,
    pub routes: Vec<IngressRoute>,
}

/// The secrets (of the route's service) holding a route's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRoute {
    /// Lowercase, without a port.
    pub host: Option<String>,
    /// Starts with `/`, and ends without one unless it is `/`.
    pub path: String,
    pub service: String,
    pub strip_prefix: bool,
    pub tls: Option<RouteTls>,
}

/// An environment of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub ingress: Option<Ingress>,
    pub after: Option<String>,
    /// Per-service configuration layer of this environment.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// Nodes with `count` expanded: `web` with count 3 is `web-1`, `web-2`, `web-3`.
    pub nodes: Vec<Node>,
    /// Services placed by wharf on this environment's hosts.
    pub pools: BTreeMap<String, Pool>,
    /// Hosts a provider makes for this environment, if it names a provider.
    pub hosts: Option<HostsSpec>,
    /// When deploys here wait for approval: how long an approval may take.
    pub approval: Option<Duration>,
    /// An interrupted deploy here is resumed at start rather than rolled back.
    pub resume_interrupted: bool,
    /// `dev:` as written: `Some(true)` lets `wharf dev` run here, `Some(false)` never.
    pub dev: Option<bool>,
    /// Host folders for services' volumes: service -> container path -> host folder.
    pub volumes: BTreeMap<String, BTreeMap<String, String>>,
    /// The cluster engine that places and supervises the instances, if not wharf.
    pub engine: Option<Engine>,
}

/// A cluster engine an environment hands its instances to (R11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Engine {
    Swarm,
    Kubernetes {
        /// None: the kubeconfig's current context.
        context: Option<String>,
        namespace: String,
    },
}

/// The provider and the names of an environment's hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsSpec {
    pub provider: Provider,
    pub names: Vec<String>,
    /// `provider: ssh`: how its machines are reached.
    pub ssh: Option<SshHosts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Netns,
    Docker,
    Static,
    Ssh,
}

/// How `provider: ssh` reaches its machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHosts {
    pub identity_file: String,
    /// Who logs in where a machine names no `user` of its own.
    pub user: String,
    pub machines: Vec<SshMachine>,
    pub jump: Option<SshEndpoint>,
    /// Where the hosts reach the controller's agent port, when given.
    pub controller: Option<String>,
}

/// One machine: its host name in wharf and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshMachine {
    pub name: String,
    pub endpoint: SshEndpoint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// `TYPE BASE64` as in a `.pub` file; `None`: known_hosts decides.
    pub host_key: Option<String>,
}

/// A port of `ports:`: assigned per instance and kept, or `fixed` (counting up per
/// instance); `container` is a container's own port it is published on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraPort {
    pub name: String,
    #[serde(default)]
    pub fixed: Option<u16>,
    #[serde(default)]
    pub container: Option<u16>,
}

/// A pooled service of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub count: u32,
    pub spread: crate::placement::Spread,
    pub max_per_host: Option<u32>,
}

/// A node and the services it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Service name and instances of it on this node, in the order written.
    pub services: Vec<(String, u32)>,
    /// Per-service configuration layer of this node.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    pub driver: Option<DriverKind>,
}

impl Environment {
    /// Names of the services that run somewhere in this environment.
    pub fn service_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.services.iter().map(|(s, _)| s.as_str()))
            .chain(self.pools.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// (De)serializes a `Duration` as whole milliseconds.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
