//! Types of the controller's HTTP/JSON API (`/v1/...`). The server and every client use
//! these, so the two sides cannot drift apart.
//!
//! Long operations (deploy, rollback, stop) answer with a stream of newline-delimited
//! JSON [`DeployEvent`]s that ends with [`DeployEvent::Finished`]. The operation runs in
//! the controller and completes even if the client goes away.

pub mod agent;
mod records;
pub mod traffic;

pub use records::*;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wharf_core::plan::Step;

/// The header carrying an uploaded artifact's digest.
pub const DIGEST_HEADER: &str = "x-wharf-digest";

/// `GET /v1/health`: liveness, told to anyone. With `?challenge=HEX`, the controller
/// proves it holds the key it wrote to its owner-only state folder, so a CLI can tell
/// its own controller from anything else listening on that port before it sends a
/// token or a secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// `GET /v1/info`: what runs, for an authenticated caller.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControllerInfo {
    pub version: String,
    /// The folder holding the controller's state.
    pub state_dir: String,
    pub pid: u32,
    /// Identifies the controller's executable, so a CLI can tell when its local
    /// controller runs an older build of wharf than itself.
    #[serde(default)]
    pub build: String,
}

/// An error answer: what went wrong and, when known, how to fix it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `POST /v1/artifacts?service=S&version=V` answers this.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactUploaded {
    pub artifact: ArtifactRecord,
    /// False when the same version with the same content was already registered.
    pub created: bool,
}

/// `POST /v1/images`: registers a local Docker image as a service's version, pinned to
/// its image id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageRegistration {
    pub service: String,
    pub version: String,
    /// `sha256:<hex>`, the image id.
    pub image_id: String,
    pub size: u64,
}

/// `POST /v1/deployments`: names what to deploy, nothing more. How it runs, the
/// pipeline and approvals come from the controller's stored definition.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub service: String,
    pub env: String,
    pub version: String,
    #[serde(default)]
    pub user: String,
    /// Plan only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// For a dry run of a version not registered yet: the digest it would have.
    #[serde(default)]
    pub unregistered_digest: Option<String>,
    /// Deploy even though the version was never healthy in the previous environment of
    /// the pipeline (recorded in history).
    #[serde(default)]
    pub force: bool,
    /// For a dry run only: plan against this definition instead of the stored one (as
    /// `nomad job plan` does); it is validated and never stored.
    #[serde(default)]
    pub proposed_definition: Option<DefinitionSubmission>,
}

/// `POST /v1/promote`: deploy to `to` exactly the artifact healthy in `from`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub service: String,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/definitions`: a new revision of the definition, as the text of its file.
/// The controller parses and validates it itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSubmission {
    /// The file's text.
    pub source: String,
    /// The file's name, for error locations.
    pub path: String,
    /// The files it refers to (env files, file templates): path as written -> text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub user: String,
}

/// A stored revision of the definition.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DefinitionRevision {
    pub revision: i64,
    /// sha256 of the source, hex.
    pub digest: String,
    pub path: String,
    pub user: String,
    pub at: i64,
    pub message: String,
    /// `active`, `held` (waits for approval, not in force) or `rejected`.
    #[serde(default)]
    pub state: String,
}

/// `POST /v1/definitions` answers this.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DefinitionApplied {
    pub revision: DefinitionRevision,
    /// False when the same text was the current revision already.
    pub created: bool,
    /// The deployment that holds this revision for approval, when it changes the
    /// policy of an environment with `approval: required`; it is not in force until then.
    #[serde(default)]
    pub held_by: Option<i64>,
    /// Environments whose policy (pipeline, approval, hosts, nodes, pools) changed.
    pub policy_changed: Vec<String>,
    pub config_changed: Vec<String>,
    pub services_changed: Vec<String>,
}

/// `GET /v1/definitions/{revision}` (or `current`): a revision with its text.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DefinitionSource {
    #[serde(flatten)]
    pub revision: DefinitionRevision,
    pub source: String,
    /// The files submitted with it (env files, file templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// `POST /v1/config/{env}/{service}`: change the overrides, making a revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigChange {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// For `wharf config rollback`: the revision whose values come back.
    #[serde(default)]
    pub restore: Option<i64>,
    pub user: String,
}

/// `GET /v1/config/{env}/{service}`: the overrides as they stand.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigState {
    pub service: String,
    pub env: String,
    /// 0 while nothing was ever set.
    pub revision: i64,
    pub overrides: std::collections::BTreeMap<String, String>,
    /// Secret names (never values).
    pub secrets: Vec<String>,
}

/// What an instance reads from `WHARF_CONFIG_URL`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuntimeConfig {
    pub service: String,
    pub env: String,
    pub revision: i64,
    pub values: std::collections::BTreeMap<String, String>,
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub key: String,
    pub version: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

/// How one secret compares between two environments.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretComparison {
    pub key: String,
    /// `same`, `differs`, or `only in ENV`.
    pub comparison: String,
}

/// `POST /v1/secrets/rotate-key`: the new key and how many secrets were sealed again.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRotated {
    pub key_id: String,
    pub resealed: usize,
}

/// `POST /v1/api-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiTokenRequest {
    pub name: String,
    /// `ENV:ACTION` grants.
    pub scopes: Vec<String>,
    pub user: String,
}

/// A new API token; `token` is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiTokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub record: ApiTokenRecord,
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollbackRequest {
    pub service: String,
    pub env: String,
    /// The version to return to; default: the one before the current.
    pub to: Option<String>,
    pub user: String,
}

/// `POST /v1/rollouts/promote` and `/v1/rollouts/abort`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutRequest {
    pub service: String,
    pub env: String,
    /// Promote: every remaining step at once (blue-green: scale the old set down now).
    #[serde(default)]
    pub full: bool,
    pub user: String,
}

/// A blue-green or canary rollout as `wharf rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutView {
    /// The deployment of the new version.
    pub deployment: i64,
    pub service: String,
    pub env: String,
    pub strategy: String,
    /// `starting`, `paused`, `promoted`, `succeeded` or `aborted`.
    pub phase: String,
    pub version: String,
    /// The version the old set runs.
    pub stable_version: String,
    /// Percent of requests to the new version.
    pub weight: u8,
    /// The canary step it is at (1-based) and how many there are; 0 of 0 for blue-green.
    pub step: usize,
    pub steps: usize,
    /// When the current step ends on its own, in ms since the epoch, if it does.
    pub step_ends_at: Option<i64>,
    /// The address that reaches only the new version.
    pub preview: Option<String>,
    pub events: Vec<RolloutEvent>,
}

/// One thing that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutEvent {
    pub at: i64,
    pub by: String,
    pub what: String,
}

/// `POST /v1/restart`: replace every instance of a service by a fresh one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestartRequest {
    pub service: String,
    pub env: String,
    pub user: String,
}

/// `POST /v1/scale`: run `count` instances of a service in an environment (a new
/// definition revision, then a deploy of the version that runs there).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScaleRequest {
    pub service: String,
    pub env: String,
    pub count: u32,
    pub user: String,
}

/// `POST /v1/dev`: run a service straight from its folder on the controller's machine
/// (`wharf dev`), replacing its instances the rolling way.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevRequest {
    pub service: String,
    pub env: String,
    /// The absolute path of the folder it runs from.
    pub folder: String,
    /// Replace the instances even where the service's `dev.on_change` sends a signal
    /// (the loop's start; after a build).
    #[serde(default)]
    pub fresh: bool,
    #[serde(default)]
    pub user: String,
    /// The files that changed, relative to `folder` (`/` separated), for a sync into
    /// running containers; `None` when the caller does not know (they are then
    /// replaced). At most [`DEV_CHANGED_MAX`].
    #[serde(default)]
    pub changed: Option<Vec<String>>,
}

/// `POST /v1/ui/sign-in-codes`: an address that signs a browser in to the dashboard as
/// the caller, once, within [`SignInCode::valid_secs`] (`wharf ui`). The caller's
/// credential never appears in it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignInCode {
    /// `/ui/sign-in?code=...`, relative to the controller's address.
    pub path: String,
    pub valid_secs: u64,
}

/// The most changed files one [`DevRequest`] names; beyond that the caller names none
/// and the instances are replaced.
pub const DEV_CHANGED_MAX: usize = 20_000;

/// `POST /v1/ssh/{env}/hosts`: one more machine for an SSH environment (`wharf host
/// add`), recorded as a definition revision.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshHostAdd {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Who logs in; `None`: the environment's `user`.
    #[serde(default)]
    pub user: Option<String>,
    /// `TYPE BASE64`; `None`: known_hosts decides.
    #[serde(default)]
    pub host_key: Option<String>,
    #[serde(default)]
    pub by: String,
}

/// One way in over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshEndpointView {
    pub address: String,
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub host_key: Option<String>,
}

/// A machine of an SSH environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshMachineView {
    pub name: String,
    #[serde(flatten)]
    pub endpoint: SshEndpointView,
    /// Put there by `wharf host add` (not in wharf.yaml's text).
    #[serde(default)]
    pub added: bool,
}

/// `GET /v1/ssh/{env}`: the machines of an SSH environment, as the controller's
/// definition in force has them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshEnvironment {
    pub env: String,
    pub identity_file: String,
    pub machines: Vec<SshMachineView>,
    #[serde(default)]
    pub jump: Option<SshEndpointView>,
    #[serde(default)]
    pub controller: Option<String>,
}

/// `POST /v1/stop`: stop one service, or all services of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StopRequest {
    pub env: String,
    pub service: Option<String>,
    pub user: String,
    /// Without a service: stop only the services that run in the environment but are
    /// no longer in it in the stored definition (what `wharf deploy --env ENV` prunes).
    #[serde(default)]
    pub prune: bool,
    /// Also remove the stopped instances' data folders (`wharf down --purge`).
    #[serde(default)]
    pub purge: bool,
}

/// Progress of a long operation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// The plan; `deployment` is absent for a dry run.
    Planned {
        deployment: Option<i64>,
        service: String,
        env: String,
        version: String,
        steps: Vec<Step>,
        unchanged: usize,
    },
    /// An instance is being started, replaced or stopped.
    Progress {
        service: String,
        node: String,
        instance: u32,
        message: String,
    },
    /// An instance passed its health check.
    Healthy {
        service: String,
        node: String,
        instance: u32,
        elapsed_ms: u64,
    },
    /// An instance failed; the deploy will roll back.
    Failed {
        service: String,
        node: String,
        instance: u32,
        reason: String,
        log_tail: String,
    },
    /// How much of the service's traffic the new version takes, after a batch.
    Traffic {
        service: String,
        version: String,
        percent: u32,
        /// Instances in the rotation that run it, of all in the rotation.
        instances: usize,
        of: usize,
    },
    /// Rolling back to what ran before.
    RollingBack { reason: String },
    /// Something the user should know that does not stop the operation.
    Warning { message: String },
    /// A configuration change was saved as this revision.
    ConfigSaved {
        service: String,
        env: String,
        revision: i64,
    },
    /// The end of the operation.
    Finished {
        deployment: Option<i64>,
        state: DeploymentState,
        message: String,
    },
    /// The operation could not run at all; `status` is the HTTP status the same error
    /// would have as an answer (400 bad input, 404 unknown, 409 conflict, ...).
    Error {
        error: String,
        hint: Option<String>,
        #[serde(default = "bad_request")]
        status: u16,
    },
}

fn bad_request() -> u16 {
    400
}

/// `GET /v1/status`: instances grouped by environment and service.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusReport {
    pub services: Vec<ServiceStatus>,
    /// Controller time, for computing uptimes.
    pub now: i64,
}

/// One service in one environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    pub env: String,
    pub service: String,
    /// Versions running, usually one.
    pub versions: Vec<String>,
    pub digests: Vec<String>,
    pub instances: Vec<InstanceRecord>,
    /// How many configuration keys differ from the previous environment of the
    /// pipeline, when both run the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
    /// How many instances the stored definition asks for, when it places the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<usize>,
    /// Why the service is not converged: fewer or more instances than desired, several
    /// versions at once, instances not healthy. Empty when all is as it should be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The service's latest deploy was interrupted by a controller crash: which, and how
    /// the controller resolved it when it started again (or that it is resolving it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Interruption>,
    /// The service's stable address on each host that runs it (`http://127.0.0.1:PORT`
    /// there), balanced over its healthy instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A deploy a controller crash interrupted, and how it was resolved.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interruption {
    pub deployment: i64,
    /// The deployment that rolled it back, resumed it or stopped what it started; `0`
    /// when nothing had to change; none while the controller is still resolving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<i64>,
    pub message: String,
}

/// Configuration that differs from the previous environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drift {
    pub previous_env: String,
    pub keys: usize,
}

/// `POST /v1/tokens`: a join token for hosts of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    pub env: String,
    /// Seconds until it expires.
    pub ttl_secs: u64,
    /// How many hosts may join with it.
    pub uses: u32,
    pub user: String,
}

/// A new join token. `token` holds the secret and is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub token: String,
    pub id: String,
    pub env: String,
    pub expires_at: i64,
    pub uses: u32,
    /// Where agents connect: pass it to `wharf agent --controller`.
    pub agent_url: String,
}

/// `GET /v1/hosts`: a host and how many instances it runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    #[serde(flatten)]
    pub host: HostRecord,
    pub instances: usize,
}

/// `POST /v1/exec`: runs a command once in an instance's environment and folder (`wharf
/// exec`), as the instance's user, without a terminal.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    pub env: String,
    pub service: String,
    /// The instance's number (as `wharf status` shows it); default: the first that runs.
    #[serde(default)]
    pub instance: Option<u32>,
    pub argv: Vec<String>,
}

/// What a command run by `wharf exec` printed, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecResult {
    /// The instance it ran in (`env/service/node#N`).
    pub instance: String,
    /// Its exit status; `None` when a signal ended it (or the time limit did).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}
