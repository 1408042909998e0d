//! A typed client of the controller's `/v1` API.

pub mod agent;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wharf_api::*;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The controller answered with an error.
    #[error("{error}")]
    Api {
        status: u16,
        error: String,
        hint: Option<String>,
    },
    #[error("unexpected answer from the controller: {0}")]
    Protocol(String),
    /// The controller went away in the middle of a long operation.
    #[error("the controller stopped answering during {}: {reason}", match .deployment { Some(id) => format!("deployment #{id}"), None => "the operation".to_owned() })]
    Interrupted {
        deployment: Option<i64>,
        reason: String,
    },
}

impl ClientError {
    /// Whether the caller's input was at fault (bad request, no credentials, unknown
    /// name, too large, unprocessable), as opposed to the operation failing or
    /// conflicting with state (409), being refused to this caller (403) or expiring (410).
    pub fn is_input_error(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if matches!(status, 400 | 401 | 404 | 413 | 422))
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Api { hint, .. } => hint.clone(),
            ClientError::Unreachable { .. } => Some(
                "is it running? `wharf server --dev` starts one, and every command starts one when none is configured".to_owned(),
            ),
            ClientError::Protocol(_) => None,
            ClientError::Interrupted { deployment, .. } => Some(match deployment {
                Some(id) => format!(
                    "the deploy was partly applied; when the controller starts again it rolls it back to what ran before (or resumes it, with `recovery: resume`): `wharf deployments show {id}` says how it was resolved, `wharf status` what runs"
                ),
                None => "what it changed so far is recorded: `wharf status` shows what runs and `wharf history SERVICE --env ENV` how it ended".to_owned(),
            }),
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// How a client trusts a controller beyond loopback: its CA certificate, or the CA's
/// sha256 fingerprint (hex).
#[derive(Debug, Clone)]
pub enum CaPin {
    Pem(String),
    Fingerprint(String),
}

/// The headers every call carries: the API token, the local key of an open controller
/// (both marked sensitive, so never logged) and the acting user's name.
fn identity_headers(
    token: Option<&str>,
    user: &str,
    key: Option<&str>,
) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(mut value) = key.and_then(|k| reqwest::header::HeaderValue::from_str(k).ok()) {
        value.set_sensitive(true);
        headers.insert("x-wharf-local-key", value);
    }
    if let Some(mut value) =
        token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    if let Ok(value) = reqwest::header::HeaderValue::from_str(user) {
        headers.insert("x-wharf-user", value);
    }
    headers
}

/// The header a follower names the leader's API address in.
pub const LEADER_HEADER: &str = "wharf-leader";

/// A controller's part among several sharing one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// It follows `leader` (if it knows who leads).
    Follower {
        leader: Option<String>,
    },
    /// Nobody leads right now: an election is under way.
    Electing,
}

/// A connection to one controller.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with_identity(base, None, "")
    }

    /// A client that sends an API token (`wharf_...`) on every call, and the user name an
    /// open development controller records.
    pub fn with_identity(base: &str, token: Option<&str>, user: &str) -> Self {
        Self::with_local_key(base, token, user, None)
    }

    /// A client of a controller beyond loopback, over TLS, trusting only its CA: given
    /// as PEM, or as its sha256 fingerprint (the CA is then fetched and checked before
    /// anything is sent).
    pub async fn pinned(url: &str, token: Option<&str>, user: &str, pin: &CaPin) -> Result<Self> {
        let (addr, base) = agent::resolve(url).await?;
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.into(),
            reason: root_cause(&e),
        };
        let ca_pem = match pin {
            CaPin::Pem(pem) => pem.clone(),
            CaPin::Fingerprint(wanted) => {
                let (pem, presented) =
                    agent::unverified_ca(addr, &format!("{base}/v1/ca"), url).await?;
                if !presented.eq_ignore_ascii_case(wanted) {
                    return Err(ClientError::Protocol(format!(
                        "the controller at {url} presents CA sha256:{presented}, not the sha256:{wanted} WHARF_CA pins; nothing was sent to it"
                    )));
                }
                pem
            }
        };
        let http = agent::pinned_builder(&ca_pem, addr)?
            .pool_idle_timeout(Duration::from_secs(30))
            .default_headers(identity_headers(token, user, None))
            .build()
            .map_err(unreachable)?;
        Ok(Self { base, http })
    }

    /// A client of this user's own open controller, sending the key from its state
    /// folder on every call (only once the controller proved it holds it).
    pub fn with_local_key(base: &str, token: Option<&str>, user: &str, key: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .default_headers(identity_headers(token, user, key))
            .build()
            .expect("the HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        }
    }

    async fn check(
        &self,
        response: std::result::Result<Response, reqwest::Error>,
    ) -> Result<Response> {
        let response = response.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => Err(ClientError::Api {
                status: status.as_u16(),
                error: e.error,
                hint: e.hint,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                error: format!("{status}: {}", text.trim()),
                hint: None,
            }),
        }
    }

    /// Sends a request and reads its JSON answer, errors mapped as everywhere else.
    async fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = self.check(request.send().await).await?;
        response
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T> {
        let query: Vec<(&str, String)> = query
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
            .collect();
        self.call(self.http.get(format!("{}{path}", self.base)).query(&query))
            .await
    }

    /// Whether the controller answers; with a `challenge`, its proof that it holds its
    /// local key (see [`Liveness`]).
    pub async fn health(&self, challenge: Option<&str>) -> Result<Liveness> {
        let mut request = self
            .http
            .get(format!("{}/v1/health", self.base))
            .timeout(Duration::from_secs(2));
        if let Some(challenge) = challenge {
            request = request.query(&[("challenge", challenge)]);
        }
        self.call(request).await
    }

    /// Whether this controller leads, among several sharing one database: a follower
    /// answers `421` naming the leader in the `wharf-leader` header, and `503` while an
    /// election is under way. A controller alone always leads.
    pub async fn role(&self) -> Result<Role> {
        let response = self
            .http
            .get(format!("{}/v1/health", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        match response.status().as_u16() {
            421 => Ok(Role::Follower {
                leader: response
                    .headers()
                    .get(LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            503 => Ok(Role::Electing),
            _ => {
                self.check(Ok(response)).await?;
                Ok(Role::Leader)
            }
        }
    }

    /// What the controller runs (version, build, pid, state folder).
    pub async fn info(&self) -> Result<ControllerInfo> {
        self.get("/v1/info", &[]).await
    }

    pub async fn upload_artifact(
        &self,
        service: &str,
        version: &str,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactUploaded> {
        let request = self
            .http
            .post(format!("{}/v1/artifacts", self.base))
            .query(&[("service", service), ("version", version)])
            .header(DIGEST_HEADER, digest)
            .body(bytes);
        self.call(request).await
    }

    pub async fn register_image(
        &self,
        registration: &ImageRegistration,
    ) -> Result<ArtifactUploaded> {
        self.call(
            self.http
                .post(format!("{}/v1/images", self.base))
                .json(registration),
        )
        .await
    }

    pub async fn artifacts(&self, service: Option<&str>) -> Result<Vec<ArtifactRecord>> {
        self.get("/v1/artifacts", &[("service", service.map(str::to_owned))])
            .await
    }

    pub async fn status(&self, env: Option<&str>) -> Result<StatusReport> {
        self.get("/v1/status", &[("env", env.map(str::to_owned))])
            .await
    }

    /// What the services' addresses measured on every host.
    pub async fn traffic(
        &self,
        env: Option<&str>,
    ) -> Result<Vec<wharf_api::traffic::ServiceTraffic>> {
        self.get("/v1/traffic", &[("env", env.map(str::to_owned))])
            .await
    }

    pub async fn history(&self, service: &str, env: &str) -> Result<Vec<DeploymentRecord>> {
        self.get(
            "/v1/history",
            &[
                ("service", Some(service.to_owned())),
                ("env", Some(env.to_owned())),
            ],
        )
        .await
    }

    /// Runs a long operation, handing each event to `on_event`; returns the last one.
    async fn operation<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        let response = self
            .check(
                self.http
                    .post(format!("{}{path}", self.base))
                    .json(body)
                    .send()
                    .await,
            )
            .await?;
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut last = None;
        let mut deployment = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Interrupted {
                deployment,
                reason: root_cause(&e),
            })?;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let event: DeployEvent = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                if let DeployEvent::Planned {
                    deployment: Some(id),
                    ..
                } = &event
                {
                    deployment = Some(*id);
                }
                on_event(&event);
                last = Some(event);
            }
        }
        match last {
            Some(DeployEvent::Error {
                error,
                hint,
                status,
            }) => Err(ClientError::Api {
                status,
                error,
                hint,
            }),
            Some(event @ DeployEvent::Finished { .. }) => Ok(event),
            _ => Err(ClientError::Interrupted {
                deployment,
                reason: "it closed the stream before the operation finished".into(),
            }),
        }
    }

    pub async fn deploy(
        &self,
        request: &DeployRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/deployments", request, on_event).await
    }

    /// Submits the definition; the controller validates and stores it as a revision.
    pub async fn apply(&self, submission: &DefinitionSubmission) -> Result<DefinitionApplied> {
        self.call(
            self.http
                .post(format!("{}/v1/definitions", self.base))
                .json(submission),
        )
        .await
    }

    /// The revisions of the definition, newest first.
    pub async fn definitions(&self) -> Result<Vec<DefinitionRevision>> {
        self.get("/v1/definitions", &[]).await
    }

    /// The machines of an SSH environment, as the definition in force has them.
    pub async fn ssh_environment(&self, env: &str) -> Result<wharf_api::SshEnvironment> {
        self.get(&format!("/v1/ssh/{env}"), &[]).await
    }

    /// One more machine for an SSH environment: a new definition revision.
    pub async fn add_ssh_host(
        &self,
        env: &str,
        host: &wharf_api::SshHostAdd,
    ) -> Result<DefinitionRevision> {
        self.call(
            self.http
                .post(format!("{}/v1/ssh/{env}/hosts", self.base))
                .json(host),
        )
        .await
    }

    /// Takes a machine `wharf host add` put there out again: a new definition revision.
    pub async fn remove_ssh_host(&self, env: &str, name: &str) -> Result<DefinitionRevision> {
        self.call(
            self.http
                .delete(format!("{}/v1/ssh/{env}/hosts/{name}", self.base)),
        )
        .await
    }

    /// One revision with its text; `None`: the current one.
    pub async fn definition(&self, revision: Option<i64>) -> Result<DefinitionSource> {
        let which = revision
            .map(|r| r.to_string())
            .unwrap_or_else(|| "current".into());
        self.get(&format!("/v1/definitions/{which}"), &[]).await
    }

    pub async fn rollback(
        &self,
        request: &RollbackRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/rollback", request, on_event).await
    }

    /// Stops the services that run in the environment but are no longer in it.
    pub async fn prune(
        &self,
        request: &StopRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/prune", request, on_event).await
    }

    pub async fn restart(
        &self,
        request: &RestartRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/restart", request, on_event).await
    }

    /// Runs a service straight from its folder (`wharf dev`), with progress.
    pub async fn dev(
        &self,
        request: &wharf_api::DevRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/dev", request, on_event).await
    }

    pub async fn scale(
        &self,
        request: &wharf_api::ScaleRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/scale", request, on_event).await
    }

    pub async fn stop(
        &self,
        request: &StopRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/stop", request, on_event).await
    }

    pub async fn promote(
        &self,
        request: &PromoteRequest,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation("/v1/promote", request, on_event).await
    }

    pub async fn approve(
        &self,
        id: i64,
        user: &str,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        let body = serde_json::json!({ "user": user });
        self.operation(&format!("/v1/deployments/{id}/approve"), &body, on_event)
            .await
    }

    pub async fn reject(&self, id: i64, user: &str) -> Result<DeployEvent> {
        self.call(
            self.http
                .post(format!("{}/v1/deployments/{id}/reject", self.base))
                .json(&serde_json::json!({ "user": user })),
        )
        .await
    }

    /// Asks a deploy in progress to stop and roll back; answers at once.
    pub async fn cancel(&self, id: i64, user: &str) -> Result<DeploymentRecord> {
        self.call(
            self.http
                .post(format!("{}/v1/deployments/{id}/cancel", self.base))
                .json(&serde_json::json!({ "user": user })),
        )
        .await
    }

    pub async fn deployment(&self, id: i64) -> Result<DeploymentRecord> {
        self.get(&format!("/v1/deployments/{id}"), &[]).await
    }

    /// A one-time address that signs a browser in to the dashboard as this client.
    pub async fn sign_in_code(&self) -> Result<SignInCode> {
        self.call(self.http.post(format!("{}/v1/ui/sign-in-codes", self.base)))
            .await
    }

    pub async fn pending(&self) -> Result<Vec<DeploymentRecord>> {
        self.get("/v1/deployments/pending", &[]).await
    }

    pub async fn config(&self, service: &str, env: &str) -> Result<ConfigState> {
        self.get(&format!("/v1/config/{env}/{service}"), &[]).await
    }

    pub async fn config_history(&self, service: &str, env: &str) -> Result<Vec<ConfigRevision>> {
        self.get(&format!("/v1/config/{env}/{service}/history"), &[])
            .await
    }

    /// Saves a configuration change; the controller then rolls or signals instances.
    pub async fn change_config(
        &self,
        service: &str,
        env: &str,
        change: &ConfigChange,
        on_event: impl FnMut(&DeployEvent),
    ) -> Result<DeployEvent> {
        self.operation(&format!("/v1/config/{env}/{service}"), change, on_event)
            .await
    }

    /// Stores a secret; its value travels in the request body only.
    pub async fn set_secret(
        &self,
        service: &str,
        env: &str,
        key: &str,
        value: Vec<u8>,
        user: &str,
    ) -> Result<()> {
        self.check(
            self.http
                .put(format!("{}/v1/secrets/{env}/{service}/{key}", self.base))
                .query(&[("user", user)])
                .body(value)
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    pub async fn unset_secret(&self, service: &str, env: &str, key: &str) -> Result<()> {
        self.check(
            self.http
                .delete(format!("{}/v1/secrets/{env}/{service}/{key}", self.base))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    pub async fn secrets(&self, service: &str, env: &str) -> Result<Vec<SecretInfo>> {
        self.get(&format!("/v1/secrets/{env}/{service}"), &[]).await
    }

    pub async fn compare_secrets(
        &self,
        service: &str,
        a: &str,
        b: &str,
    ) -> Result<Vec<SecretComparison>> {
        self.get(
            "/v1/secrets/compare",
            &[
                ("service", Some(service.to_owned())),
                ("a", Some(a.to_owned())),
                ("b", Some(b.to_owned())),
            ],
        )
        .await
    }

    pub async fn rotate_key(&self) -> Result<KeyRotated> {
        self.call(
            self.http
                .post(format!("{}/v1/secrets/rotate-key", self.base)),
        )
        .await
    }

    pub async fn issue_api_token(&self, request: &ApiTokenRequest) -> Result<ApiTokenCreated> {
        self.call(
            self.http
                .post(format!("{}/v1/api-tokens", self.base))
                .json(request),
        )
        .await
    }

    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.get("/v1/api-tokens", &[]).await
    }

    pub async fn revoke_api_token(&self, id: &str) -> Result<()> {
        self.check(
            self.http
                .delete(format!("{}/v1/api-tokens/{id}", self.base))
                .send()
                .await,
        )
        .await
        .map(|_| ())
    }

    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.get("/v1/audit", &[("limit", Some(limit.to_string()))])
            .await
    }

    /// Runs a command once in an instance (`wharf exec`); answers when it ended.
    pub async fn exec(&self, request: &wharf_api::ExecRequest) -> Result<wharf_api::ExecResult> {
        self.call(
            self.http
                .post(format!("{}/v1/exec", self.base))
                .json(request),
        )
        .await
    }

    pub async fn create_token(&self, request: &TokenRequest) -> Result<TokenCreated> {
        self.call(
            self.http
                .post(format!("{}/v1/tokens", self.base))
                .json(request),
        )
        .await
    }

    pub async fn hosts(&self, env: Option<&str>) -> Result<Vec<HostView>> {
        self.get("/v1/hosts", &[("env", env.map(str::to_owned))])
            .await
    }

    /// `drain`, `undrain` or `revoke` a host.
    /// The newest blue-green or canary rollout of a service in an environment.
    pub async fn rollout(&self, service: &str, env: &str) -> Result<RolloutView> {
        self.call(
            self.http
                .get(format!("{}/v1/rollouts/{env}/{service}", self.base)),
        )
        .await
    }

    /// `action` is `promote` or `abort`; answers once the rollout carried it out.
    pub async fn rollout_command(
        &self,
        action: &str,
        request: &RolloutRequest,
    ) -> Result<RolloutView> {
        self.call(
            self.http
                .post(format!("{}/v1/rollouts/{action}", self.base))
                .json(request),
        )
        .await
    }

    pub async fn host_action(
        &self,
        name: &str,
        action: &str,
        env: Option<&str>,
    ) -> Result<HostView> {
        let mut request = self
            .http
            .post(format!("{}/v1/hosts/{name}/{action}", self.base));
        if let Some(env) = env {
            request = request.query(&[("env", env)]);
        }
        self.call(request).await
    }

    /// Streams an instance's log, handing text to `on_text` as it arrives.
    pub async fn logs(
        &self,
        env: &str,
        service: &str,
        instance: Option<u32>,
        follow: bool,
        (lines, since): (usize, Option<i64>),
        mut on_text: impl FnMut(&str),
    ) -> Result<()> {
        let mut query = vec![
            ("env", env.to_owned()),
            ("service", service.to_owned()),
            ("follow", follow.to_string()),
            ("lines", lines.to_string()),
        ];
        if let Some(n) = instance {
            query.push(("instance", n.to_string()));
        }
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        let response = self
            .check(
                self.http
                    .get(format!("{}/v1/logs", self.base))
                    .query(&query)
                    .send()
                    .await,
            )
            .await?;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            on_text(&String::from_utf8_lossy(&chunk));
        }
        Ok(())
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
