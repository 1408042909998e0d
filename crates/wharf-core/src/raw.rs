//! The file format of `wharf.yaml`, as serde types mirroring the YAML.
//!
//! These types are the single source of truth for the format: the JSON Schema printed by
//! `wharf schema` is generated from them, and the structural check of a file walks that
//! same schema. Values here are unvalidated; [`crate::definition`] turns them into the
//! resolved model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A wharf definition: the services of a system and the environments they run in.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDefinition {
    /// Services by name. Each becomes one immutable artifact per version.
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    /// Environments by name, ordered into a pipeline by `after`.
    #[serde(default)]
    pub environments: BTreeMap<String, RawEnvironment>,
}

/// How to build, run and check one service.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// The folder that becomes the artifact, or a build step that produces it.
    #[serde(default)]
    pub build: Option<RawBuild>,
    /// Instead of `build`: a Docker image already on the host (`name:tag`), pinned to its
    /// image id when it is built. Runs with `driver: docker`.
    #[serde(default)]
    pub image: Option<String>,
    /// The command to run, relative to the unpacked artifact: `[program, args...]`.
    /// For an image, the default is the image's own command.
    #[serde(default)]
    pub run: Vec<String>,
    /// The instance's port: a number (instance N listens on number + N) or a name,
    /// in which case wharf assigns a free port per instance and keeps it across deploys.
    #[serde(default)]
    pub port: Option<RawPort>,
    /// How wharf decides an instance is healthy.
    #[serde(default)]
    pub health: Option<RawHealth>,
    /// Configuration defaults, passed to instances as environment variables.
    /// Values may use templates: `{{ port }}`, `{{ env }}`, `{{ version }}`, `{{ instance }}`,
    /// `{{ service }}`, `{{ node }}` and `{{ services.NAME.url }}` / `{{ services.NAME.port }}`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// How an instance is run: `process` (the default for `build`) or `docker` (the default
    /// for `image`).
    #[serde(default)]
    pub driver: Option<RawDriver>,
    /// How long a stopping instance gets between SIGTERM and SIGKILL, e.g. `10s`.
    #[serde(default)]
    pub stop_timeout: Option<String>,
    /// The signal that asks an instance to stop (default `TERM`; nginx wants `QUIT` for a
    /// graceful stop).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// How many instances of a rolling upgrade are replaced at once (default 1).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// How long a new batch must stay healthy before the next batch starts, e.g. `5s`
    /// (default 0: the next batch starts once this one passes its checks).
    #[serde(default)]
    pub min_healthy_time: Option<String>,
    /// What one instance needs: placement checks it against each host's capacity.
    #[serde(default)]
    pub resources: Option<RawResources>,
    /// What a `wharf config set` does to running instances: `restart` rolls them (the
    /// default, recorded as a deploy), `reload` sends them `reload_signal` and they read
    /// the new values from the configuration URL wharf gives them.
    #[serde(default)]
    pub on_change: Option<RawOnChange>,
    /// The signal of `on_change: reload`: `HUP` (default), `USR1`, `USR2`, `INT`, `QUIT`,
    /// `WINCH`.
    #[serde(default)]
    pub reload_signal: Option<String>,
    /// How much output each instance keeps: `{ max_size: 10Mi, keep: 3 }` (the default).
    #[serde(default)]
    pub logs: Option<RawLogs>,
    /// The port of the service's stable address (default: one assigned once and kept).
    #[serde(default)]
    pub address_port: Option<u16>,
    /// `http` (default: proxied request by request) or `tcp` (connection by connection,
    /// for redis and databases).
    #[serde(default)]
    pub protocol: Option<RawProtocol>,
    /// How a new version replaces the running one: `{ max_surge: 1, max_unavailable: 0,
    /// drain_timeout: 30s, pause_timeout: 10s }` (the defaults).
    #[serde(default)]
    pub rollout: Option<RawRollout>,
    /// How long an instance may take to start answering a request through the address
    /// before the request is answered 504 (default `60s`).
    #[serde(default)]
    pub response_timeout: Option<String>,
    /// Files written into each instance's data folder before it starts, rendered as
    /// templates for that instance (`{{ port }}`, `{{ config.KEY }}`...) and rendered
    /// again on every configuration change: `{ "nginx.conf": { template: ./nginx.conf.tmpl } }`
    /// or `{ "app.ini": { content: "port = {{ port }}" } }`.
    #[serde(default)]
    pub files: BTreeMap<String, RawFile>,
    /// Files of `KEY=VALUE` lines (docker compose's `.env` format) read by the CLI into
    /// the service's configuration, beneath `config:`. Never packed into the artifact.
    #[serde(default)]
    pub env_file: Option<RawPaths>,
    /// For an image: the program that runs `run` (the image's ENTRYPOINT otherwise;
    /// `[]` runs `run` as it stands).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Where the instance starts: a template (`"{{ data_dir }}"`); relative to the
    /// release folder for a process, absolute inside a container. Default: the release
    /// folder (a process), the image's WORKDIR (a container).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// More ports of each instance beside `port`, by name: `[admin]` (wharf assigns
    /// one per instance and keeps it) or `{ name, host, container }`; instances get
    /// them as `PORT_ADMIN` and `{{ ports.admin }}`.
    #[serde(default)]
    pub ports: Vec<RawExtraPort>,
    /// For a container: paths inside it whose data outlives it, each a Docker named
    /// volume per environment and slot (`wharf.ENV.SERVICE.SLOT.PATH`), or the host
    /// folder the environment names for it (`environments.ENV.volumes`).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Who the instance runs as: a user name or `UID[:GID]` (the agent must run as root
    /// for a process; a container passes it to the engine). Default: the agent's user,
    /// the image's USER.
    #[serde(default)]
    pub user: Option<String>,
    /// What `wharf dev` does when the service's folder changes: `{ on_change: restart }`
    /// (the default), `{ on_change: sync }` (the files only) or `{ on_change: { signal:
    /// HUP } }`, and `rebuild: ["src/**"]`, the changes that run the build first.
    #[serde(default)]
    pub dev: Option<RawDev>,
}

/// A service's `dev:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDev {
    #[serde(default)]
    pub on_change: Option<RawDevChange>,
    #[serde(default)]
    pub rebuild: Vec<String>,
}

/// `restart`, `sync`, or `{ signal: HUP }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawDevChange {
    Word(String),
    Signal { signal: String },
}

/// A file of `files:`: exactly one of `template` (a file beside wharf.yaml, read when
/// the definition is submitted) or `content`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// One path or several.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPaths {
    One(String),
    Many(Vec<String>),
}

impl RawPaths {
    pub fn paths(&self) -> Vec<&str> {
        match self {
            RawPaths::One(p) => vec![p.as_str()],
            RawPaths::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

/// How a rolling upgrade replaces instances.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// `rolling` (the default: instances replaced a few at a time), `blue-green` (the
    /// whole new set beside the old, at a preview address until promoted) or `canary`
    /// (the new set takes a growing share of the traffic, by `steps`).
    #[serde(default)]
    pub strategy: Option<RawStrategy>,
    /// blue-green: how long the old set keeps running after a promotion, so an abort
    /// switches back at once (default `30s`).
    #[serde(default)]
    pub scale_down_delay: Option<String>,
    /// blue-green and canary: the port of the address that reaches only the new set
    /// (assigned once and kept when not given).
    #[serde(default)]
    pub preview_port: Option<u16>,
    /// canary: the shares of traffic the new set takes, in order, each held for its
    /// `pause` (without one, until `wharf rollout promote`).
    #[serde(default)]
    pub steps: Option<Vec<RawCanaryStep>>,
    /// canary: the header and cookie that pin a client to the new set (`always`) or to
    /// the old one (`never`), whatever the weight.
    #[serde(default)]
    pub pin: Option<RawPin>,
    /// canary: when the proxies' own measures abort the rollout.
    #[serde(default)]
    pub analysis: Option<RawAnalysis>,
    /// New instances started beside the old ones at once (default 1, or `max_parallel`).
    /// A service with a fixed port cannot run two instances on it and is replaced in place.
    #[serde(default)]
    pub max_surge: Option<u32>,
    /// Instances stopped before their successors start, at once (default 0).
    #[serde(default)]
    pub max_unavailable: Option<u32>,
    /// How long a stopping instance may take to answer the requests it was sent before
    /// it is stopped anyway (default `30s`).
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// How long a request through the service's address waits for an instance while
    /// none serves (default `10s`), e.g. while a fixed-port instance is replaced in place.
    #[serde(default)]
    pub pause_timeout: Option<String>,
}

/// Rollout strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RawStrategy {
    Rolling,
    BlueGreen,
    Canary,
}

/// One step of a canary: `{ weight: 10, pause: 5m }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCanaryStep {
    /// The percentage of requests the new set takes (1 to 100).
    pub weight: u32,
    /// How long the step lasts; without it, until `wharf rollout promote`.
    #[serde(default)]
    pub pause: Option<String>,
}

/// The header and cookie that pin a client to one set during a canary.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    /// Default `X-Wharf-Canary`.
    #[serde(default)]
    pub header: Option<String>,
    /// Default `wharf_canary`.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// When a canary is aborted: its 5xx rate or its p99 latency beyond the stable set's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    /// How many percentage points the new set's 5xx rate may exceed the old set's by
    /// (default `5%`).
    #[serde(default)]
    pub max_error_increase: Option<String>,
    /// How much the new set's p99 latency may exceed the old set's by (default `500ms`).
    #[serde(default)]
    pub max_p99_increase: Option<String>,
    /// Requests the new set must have answered before it is judged (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
}

/// How traffic reaches a service through its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawProtocol {
    Http,
    Tcp,
}

/// An instance's log files: rotated when one reaches `max_size`, `keep` old files kept.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// The size at which the log is rotated, e.g. `10Mi` (default), at least `4Ki`.
    #[serde(default)]
    pub max_size: Option<String>,
    /// How many rotated files are kept, 1 to 100 (default 3).
    #[serde(default)]
    pub keep: Option<u32>,
}

/// What a configuration change does to running instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawOnChange {
    Restart,
    Reload,
}

/// Whether deploys to an environment wait for someone's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawApproval {
    /// Each deploy waits for `wharf approve` by another user or token.
    Required,
    None,
}

/// What the controller does with a deploy it finds interrupted when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawRecovery {
    /// Back to what ran before the deploy, as a failed deploy would (the default).
    Rollback,
    /// Finish the deploy: the version it was deploying, on every instance.
    Resume,
}

/// CPU and memory of one instance.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// CPU cores, e.g. `0.5`.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory, e.g. `256Mi` or `1Gi`.
    #[serde(default)]
    pub memory: Option<String>,
}

/// Instances of a service placed by wharf on the environment's hosts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// How many instances.
    pub count: u32,
    /// `host` (default): as evenly over hosts as they allow; `none`: roomiest host first.
    #[serde(default)]
    pub spread: Option<RawSpread>,
    /// At most this many instances on one host.
    #[serde(default)]
    pub max_per_host: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawSpread {
    Host,
    None,
}

/// The build of a service: a folder, or a command that fills a folder.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawBuild {
    /// A folder, relative to wharf.yaml, packed as it is.
    Folder(String),
    /// A build step.
    Step(RawBuildStep),
}

/// A build command and the folder it leaves behind.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuildStep {
    /// Folder the command runs in, relative to wharf.yaml.
    pub context: String,
    /// The command, `[program, args...]`. WHARF_VERSION is set while it runs.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Folder to pack after the command, relative to `context` (default: `context` itself).
    #[serde(default)]
    pub output: Option<String>,
    /// Files that look like secrets (`.env`, `*.pem`, `*.key`, `id_*`) but belong in the
    /// artifact, as glob patterns relative to the packed folder; `wharf build` warns
    /// about the others (leave them out with `.wharfignore`).
    #[serde(default)]
    pub include: Vec<String>,
}

/// A fixed port number, the name of a port wharf assigns, or a container's own port
/// published on one of those: `{ name: http, container: 80 }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPort {
    Fixed(u16),
    Named(String),
    Mapped(RawMappedPort),
}

/// A container's fixed port (`container`) published on the instance's port: a named one
/// wharf assigns (`name`, default `http`) or a fixed number (`host`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMappedPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub host: Option<u16>,
    pub container: u16,
}

/// One of `ports:`: a name, or a name with a fixed `host` number and/or a container's
/// own `container` port.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawExtraPort {
    Name(String),
    Mapped(RawMappedPort),
}

/// The health check of an instance: exactly one of `http`, `tcp` or `command`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path answered with a 2xx status on the instance's port, e.g. `/health`.
    #[serde(default)]
    pub http: Option<String>,
    /// `true`: healthy once the instance's port accepts connections.
    #[serde(default)]
    pub tcp: Option<bool>,
    /// A command run in the artifact folder with the instance's environment; exit 0 is healthy.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// How long a new instance may take to become healthy, e.g. `5s` (default 30s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Longest time between checks while an instance starts, e.g. `200ms` (default 100ms;
    /// checks run every 10ms for the first 2s, then back off to this). A running instance
    /// is re-checked every `interval` (at least 250ms, at most 2s).
    #[serde(default)]
    pub interval: Option<String>,
    /// Consecutive failed checks after which a running instance leaves the rotation
    /// (default 2).
    #[serde(default)]
    pub fall: Option<u32>,
    /// Consecutive passed checks after which it joins again (default 2).
    #[serde(default)]
    pub rise: Option<u32>,
    /// Consecutive failed checks after which a running instance that was healthy is
    /// restarted (default 3; 0: never).
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
}

/// An instance driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawDriver {
    /// Plain processes on the host.
    Process,
    /// Containers on the host's Docker engine.
    Docker,
}

/// One environment of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    /// The environment before this one in the pipeline.
    #[serde(default)]
    pub after: Option<String>,
    /// Per-service configuration for this environment: `{ service: { KEY: value } }`.
    #[serde(default)]
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// The nodes of this environment. When absent, one node `local` runs every service
    /// that is not pooled once.
    #[serde(default)]
    pub nodes: Option<Vec<RawNode>>,
    /// Services wharf places itself on the hosts that joined this environment:
    /// `{ service: { count, spread, max_per_host } }`.
    #[serde(default)]
    pub pools: BTreeMap<String, RawPool>,
    /// Where this environment's hosts come from; `wharf env up` provisions them.
    #[serde(default)]
    pub hosts: Option<RawHosts>,
    /// `required`: every deploy and promotion here waits for `wharf approve`.
    #[serde(default)]
    pub approval: Option<RawApproval>,
    /// How long a deploy waits for its approval before it expires (default `24h`).
    #[serde(default)]
    pub approval_expires: Option<String>,
    /// `rollback` (default) or `resume`: how a deploy interrupted by a controller crash
    /// is finished when the controller starts again.
    #[serde(default)]
    pub recovery: Option<RawRecovery>,
    /// `true`: `wharf dev` may run here (besides the pipeline's first environment);
    /// `false`: never, not even in the first.
    #[serde(default)]
    pub dev: Option<bool>,
    /// The environment's entry: one listener on each of its hosts that routes requests
    /// by host name and path to the services' addresses.
    #[serde(default)]
    pub ingress: Option<RawIngress>,
    /// Per-service env files for this environment, `{ service: .env.staging }`: beneath
    /// this environment's `config:` of the service, above the service's own.
    #[serde(default)]
    pub env_file: BTreeMap<String, RawPaths>,
    /// Host folders for services' volumes here: `{ service: { /container/path:
    /// /host/folder } }`; each slot gets a folder of its own below it.
    #[serde(default)]
    pub volumes: BTreeMap<String, BTreeMap<String, String>>,
    /// An existing cluster engine that places and supervises this environment's
    /// instances: `{ kind: swarm }` or `{ kind: kubernetes, context, namespace }`.
    #[serde(default)]
    pub engine: Option<RawEngine>,
}

/// `engine:` of an environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    pub kind: RawEngineKind,
    /// Kubernetes: the kubeconfig context (default: the current one).
    #[serde(default)]
    pub context: Option<String>,
    /// Kubernetes: the namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawEngineKind {
    /// Docker's Swarm mode, on the Docker engine the controller reaches.
    Swarm,
    /// A Kubernetes cluster, through a kubeconfig context.
    Kubernetes,
}

/// `ingress: { listen, routes }` of an environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    /// Where it listens on each host: `127.0.0.1:8080`, or `0.0.0.0:80` to be reached
    /// from other machines.
    pub listen: String,
    /// Where it takes HTTPS on each host, for the routes with `tls` (the certificate
    /// is chosen by the name the client asks for).
    #[serde(default)]
    pub tls_listen: Option<String>,
    /// Tried most specific first: a route naming a host beats one that does not, then
    /// the longest path wins.
    #[serde(default)]
    pub routes: Vec<RawIngressRoute>,
}

/// One route of an ingress: requests for `host` (any host when absent) whose path
/// starts with `path` (whole segments; `/` when absent) go to `service`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIngressRoute {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    pub service: String,
    /// Sends `/api/items` to the service as `/items` for `path: /api`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// HTTPS for `host` on `tls_listen`, with a certificate and key (PEM) kept as
    /// secrets of the route's service in the environment.
    #[serde(default)]
    pub tls: Option<RawRouteTls>,
}

/// The names of the secrets holding a route's certificate chain and private key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouteTls {
    pub cert: String,
    pub key: String,
}

/// The hosts of an environment and the provider that makes them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHosts {
    /// `netns` (a Linux network namespace per host, on this machine; needs root),
    /// `docker` (a container per host on the local Docker engine, image built locally) or
    /// `static` (hosts whose agents are started by hand or by other tooling).
    pub provider: RawProvider,
    /// Host names. Default: `PREFIX-1` .. `PREFIX-COUNT`, else the environment's node names.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// How many hosts, named `PREFIX-1` .. `PREFIX-COUNT`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Name prefix for `count` hosts (default `host`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `provider: ssh`: who logs in (default `root`; another user needs `sudo -n`).
    #[serde(default)]
    pub user: Option<String>,
    /// `provider: ssh`: the private key to log in with (default `~/.ssh/id_ed25519`).
    #[serde(default)]
    pub identity_file: Option<String>,
    /// `provider: ssh`: the machines, each with its address and, ideally, its host key.
    #[serde(default)]
    pub hosts: Option<Vec<RawSshHost>>,
    /// `provider: ssh`: a bastion every connection goes through.
    #[serde(default)]
    pub jump: Option<RawSshJump>,
    /// `provider: ssh`: where the hosts reach the controller's agent port
    /// (`https://ADDRESS:PORT`). Default: the address this machine connects from.
    #[serde(default)]
    pub controller: Option<String>,
}

/// One machine of `provider: ssh`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSshHost {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    /// Its public host key, `ssh-ed25519 AAAA...` (as in `/etc/ssh/ssh_host_*.pub`).
    #[serde(default)]
    pub host_key: Option<String>,
    /// Who logs in here, when not the hosts' `user`.
    #[serde(default)]
    pub user: Option<String>,
}

/// The bastion of `provider: ssh`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSshJump {
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub host_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawProvider {
    Netns,
    Docker,
    Static,
    Ssh,
}

/// A node (host) shape and the services it runs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// The node's name, unique within its environment.
    pub name: String,
    /// The services this node runs: a name, or `{ name, instances }`.
    pub services: Vec<RawPlacement>,
    /// How many nodes of this shape (default 1); they are named `NAME-1` .. `NAME-N`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Per-service configuration on this node: `{ service: { KEY: value } }`.
    #[serde(default)]
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// The driver for instances on this node, overriding the service's.
    #[serde(default)]
    pub driver: Option<RawDriver>,
}

/// A service placed on a node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPlacement {
    Name(String),
    Counted(RawCountedPlacement),
}

/// A service placed on a node with a number of instances.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCountedPlacement {
    pub name: String,
    /// Instances of the service on each such node (default 1).
    pub instances: u32,
}

/// The JSON Schema of `wharf.yaml`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawDefinition);
    serde_json::to_value(schema).expect("schemas serialize")
}
