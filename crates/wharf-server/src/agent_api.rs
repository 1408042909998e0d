//! The agent API: a separate TLS listener where hosts join with a token and agents,
//! authenticated by the client certificates the controller's CA issued them, watch
//! their assignments, report what they run and download artifacts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wharf_api::agent::{AgentReport, Assignments, JoinRequest, JoinResponse};
use wharf_pki::AgentIdentity;
use wharf_store::{HostRecord, NewHost};

use crate::error::ServerError;
use crate::fleet::AgentLink;
use crate::{Controller, now_millis};

/// How long an assignments request waits for a change before answering anyway.
const WATCH_WAIT: Duration = Duration::from_secs(25);

/// Who is on the other end of a TLS connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: Option<AgentIdentity>,
    pub address: SocketAddr,
}

pub fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/v1/join/ca", get(ca))
        .route("/v1/join", post(join))
        .route("/v1/agent/assignments", get(assignments))
        .route("/v1/agent/logs/{id}", axum::routing::post(log_tail))
        .route(
            "/v1/agent/answers/{id}",
            post(answer).layer(axum::extract::DefaultBodyLimit::max(MAX_ANSWER_BYTES)),
        )
        .route("/v1/agent/report", post(report))
        .route("/v1/agent/artifacts/{digest}", get(artifact))
        .route("/v1/agent/runtime/config", get(runtime_config))
        .layer(axum::middleware::from_fn(refuse_unsupported_agents))
        .with_state(controller)
}

/// Refuses a request from an agent whose version this controller does not work with
/// (one that names none predates the check and is let through), naming both versions.
async fn refuse_unsupported_agents(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let controller = env!("CARGO_PKG_VERSION");
    let agent = request
        .headers()
        .get(wharf_api::agent::VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    if let Some(agent) = agent
        && let Err(why) = wharf_core::skew::agent_supported(controller, &agent)
    {
        return ServerError::new(StatusCode::CONFLICT, why).into_response();
    }
    next.run(request).await
}

/// At most this many agent connections at once (each a TLS session).
const MAX_AGENT_CONNECTIONS: usize = 10_000;
/// How long a connection may take to send the headers of its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Accepts TLS connections until `shutdown`, serving `app` with each connection's
/// verified client identity attached to its requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let bounds = crate::listen::Bounds {
        max_connections: MAX_AGENT_CONNECTIONS,
        handshake: Duration::from_secs(10),
        idle: IDLE_TIMEOUT,
    };
    let tag: crate::listen::Tagger<Peer> = Arc::new(|certs, address| Peer {
        identity: certs
            .and_then(|certs| certs.first())
            .and_then(|cert| wharf_pki::agent_identity(cert)),
        address,
    });
    let security = crate::listen::Security::Tls(tokio_rustls::TlsAcceptor::from(tls));
    crate::listen::serve(listener, security, app, bounds, shutdown, "agent", tag).await
}

type Ctl = State<Arc<Controller>>;

fn forbidden(message: &str) -> ServerError {
    ServerError::new(StatusCode::FORBIDDEN, message)
}

/// The host behind a request's client certificate, if that certificate is still the
/// host's current one and the host is not revoked.
fn authenticate(c: &Controller, peer: &Peer) -> Result<HostRecord, ServerError> {
    let identity = peer
        .identity
        .as_ref()
        .ok_or_else(|| forbidden("a client certificate is required; join with a token first"))?;
    // Every report and watch of every agent comes here: a host as listed a moment ago
    // lets it in; anything else is decided on the store's own row.
    let admitted = |h: &HostRecord| h.cert_serial == identity.serial && h.state.can_connect();
    if let Some(host) = c.fleet.cached_host(identity.host_id).filter(admitted) {
        return Ok(host);
    }
    let host = c
        .store
        .host(identity.host_id)?
        .ok_or_else(|| forbidden("unknown host"))?;
    if !admitted(&host) {
        return Err(forbidden("this credential was revoked or replaced"));
    }
    Ok(host)
}

#[utoipa::path(
    get,
    path = "/v1/ca",
    tag = "controller",
    security(()),
    responses((status = 200, description = "The controller's CA certificate, which clients beyond loopback pin.", content_type = "application/x-pem-file", body = String))
)]
pub(crate) async fn ca(State(c): Ctl) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        c.authority.cert_pem().to_owned(),
    )
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

async fn join(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ServerError> {
    crate::edge::join(&req)?;
    wharf_pki::Authority::check_request(&req.csr).map_err(|e| {
        ServerError::bad_request(format!("the join's signing request is unreadable: {e}"))
    })?;
    // A live host's name cannot be taken over by joining again: its assignments (and
    // their secrets) belong to the agent that holds its certificate. Checked before the
    // token is spent.
    if let Some(token) = c
        .store
        .join_tokens()?
        .into_iter()
        .find(|t| t.id == req.token_id)
        && let Some(live) =
            c.store.hosts(Some(&token.env))?.into_iter().find(|h| {
                h.name == req.name && h.state != wharf_core::lifecycle::HostState::Revoked
            })
    {
        return Err(ServerError::new(
            StatusCode::CONFLICT,
            format!(
                "a host named `{}` already joined `{}` (it is {}); nothing was changed",
                live.name,
                live.env,
                live.state.as_str()
            ),
        )
        .hint(format!(
            "an agent that lost its state joins again after `wharf host revoke {name}`; a new host needs a name of its own",
            name = live.name
        )));
    }
    let env = c
        .store
        .redeem_join_token(&req.token_id, &hash_secret(&req.secret), now_millis())
        .map_err(|e| forbidden(&e.to_string()))?;
    let host = c.store.register_host(&NewHost {
        name: req.name.clone(),
        env: env.clone(),
        labels: req.labels,
        capacity: crate::wire::capacity_row(req.capacity),
        address: peer.address.ip().to_string(),
        at: now_millis(),
    })?;
    let cert = c
        .authority
        .sign_agent(&req.csr, host.id, host.cert_serial)
        .map_err(|e| ServerError::bad_request(e.to_string()))?;
    tracing::info!(host = %host.name, env = %env, "host joined");
    c.fleet.hosts_changed();
    c.fleet.remote(host.id).restore(&c.secret_source());
    Ok(Json(JoinResponse {
        host_id: host.id,
        env,
        cert,
        ca: c.authority.cert_pem().to_owned(),
    }))
}

#[derive(Deserialize)]
struct WatchQuery {
    #[serde(default)]
    index: u64,
}

async fn assignments(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Query(q): Query<WatchQuery>,
) -> Result<axum::response::Response, ServerError> {
    let host = authenticate(&c, &peer)?;
    let remote = c.fleet.remote(host.id);
    let mut assignments = remote.watch(q.index, WATCH_WAIT).await;
    // A credential revoked while the request waited gets nothing.
    authenticate(&c, &peer)?;
    let now = now_millis();
    let keyring = c.config.keyring.read().unwrap_or_else(|p| p.into_inner());
    for plan in &assignments.plans {
        if plan
            .secret_keys
            .iter()
            .any(|k| k == wharf_api::agent::CONFIG_TOKEN_VAR)
        {
            let (env, service) = (&plan.key.env, &plan.key.service);
            assignments
                .config_tokens
                .entry(format!("{env}/{service}"))
                .or_insert_with(|| crate::auth::runtime_token(&keyring, env, service, now));
        }
    }
    drop(keyring);
    let shared = c.fleet.shared_routes_json(&host.env)?;
    assignments.ingress = crate::ingress::plan_of_env(&c, &host.env)?.map(|(plan, _)| plan);
    Ok(with_shared_routes(&assignments, shared))
}

/// The answer to an agent's watch: its own assignments, and its environment's routes
/// as the bytes every agent of it is sent (not a copy per agent: a change answers a
/// thousand agents at once, each routes list naming thousands of instances).
fn with_shared_routes(assignments: &Assignments, shared: Bytes) -> axum::response::Response {
    // Its routes and peers are empty, so left out: the object's members end it.
    let mut own = serde_json::to_vec(assignments).unwrap_or_else(|_| b"{}".to_vec());
    own.pop();
    if !shared.is_empty() {
        own.push(b',');
    }
    let parts = [Bytes::from(own), shared, Bytes::from_static(b"}")];
    let body = axum::body::Body::from_stream(futures_util::stream::iter(
        parts.map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// An instance's runtime configuration read, passed on by the agent of its host (whose
/// configuration gateway follows the controllers through a failover): the agent must
/// be a joined host, and the instance's token must be for that host's environment.
async fn runtime_config(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, ServerError> {
    let host = authenticate(&c, &peer)?;
    crate::api_config::answer_runtime(&c, request, Some(&host.env)).await
}

/// An agent's answer to a log request: the tail of one instance's log.
async fn log_tail(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ServerError> {
    let host = authenticate(&c, &peer)?;
    c.fleet
        .remote(host.id)
        .deliver_log(id, String::from_utf8_lossy(&body).into_owned());
    Ok(StatusCode::NO_CONTENT)
}

/// The largest answer to a task: an exec's two outputs at their limit, escaped.
const MAX_ANSWER_BYTES: usize = 4 * wharf_driver::EXEC_OUTPUT_MAX + 64 * 1024;

/// An agent's answer to a task it was given (an exec's output, a purge's count).
async fn answer(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Path(id): Path<u64>,
    Json(answer): Json<wharf_api::agent::HostAnswer>,
) -> Result<StatusCode, ServerError> {
    let host = authenticate(&c, &peer)?;
    c.fleet.remote(host.id).deliver_answer(id, answer);
    Ok(StatusCode::NO_CONTENT)
}

async fn report(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Json(report): Json<AgentReport>,
) -> Result<StatusCode, ServerError> {
    let host = authenticate(&c, &peer)?;
    c.fleet
        .heard(host.id, now_millis(), peer.address.ip().to_string());
    crate::hosts::heard_from(&c, &host)?;
    let remote = c.fleet.remote(host.id);
    // An instance the host should no longer run (it was moved while the host was cut
    // off) is not shown; the agent stops it on its next look at its assignments.
    let rows: Vec<_> = remote
        .report(report)
        .into_iter()
        .filter_map(|instance| {
            let plan = remote
                .plan(&instance.plan.key)
                .filter(|p| instance.plan.names(p))?;
            Some(crate::sink::record(&plan, &instance.status))
        })
        .collect();
    c.fleet.observed(rows);
    Ok(StatusCode::NO_CONTENT)
}

/// Serves an artifact, or its tail from `Range: bytes=N-` so an interrupted download
/// resumes where it stopped.
async fn artifact(
    State(c): Ctl,
    Extension(peer): Extension<Peer>,
    Path(digest): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ServerError> {
    authenticate(&c, &peer)?;
    let bytes = Bytes::from(c.artifacts.get(&digest)?);
    let content_type = (header::CONTENT_TYPE, "application/gzip");
    match headers
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .and_then(resume_offset)
    {
        Some(from) if from < bytes.len() => {
            tracing::info!(host = ?peer.identity, "resuming the download of {digest} at byte {from}");
            let range = format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len());
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [content_type, (header::CONTENT_RANGE, range.as_str())],
                bytes.slice(from..),
            )
                .into_response())
        }
        Some(_) => Err(ServerError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "the range starts past the end of the artifact",
        )),
        None => Ok(([content_type], bytes).into_response()),
    }
}

/// The N of `bytes=N-`, the only range form agents send.
fn resume_offset(range: &str) -> Option<usize> {
    range
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_open_ended_byte_ranges_are_understood() {
        assert_eq!(super::resume_offset("bytes=100-"), Some(100));
        assert_eq!(super::resume_offset("bytes=0-"), Some(0));
        assert_eq!(super::resume_offset("bytes=1-5"), None);
        assert_eq!(super::resume_offset("items=1-"), None);
    }

    #[tokio::test]
    async fn an_answer_joins_its_own_assignments_with_the_shared_routes() {
        use wharf_api::agent::Assignments;
        let own = Assignments {
            revision: 7,
            plans: Vec::new(),
            log_requests: Vec::new(),
            tasks: Vec::new(),
            config_tokens: [("ci/web".to_owned(), "token".to_owned())].into(),
            routes: Vec::new(),
            mesh_peers: Vec::new(),
            ingress: None,
        };
        let shared =
            r#""routes":[{"service":"web","port":9000,"members":[]}],"mesh_peers":[[2,20]]"#;
        let response = super::with_shared_routes(&own, shared.into());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let read: Assignments = serde_json::from_slice(&body).unwrap();
        assert_eq!(read.revision, 7);
        assert_eq!(read.config_tokens["ci/web"], "token");
        assert_eq!(read.routes[0].service, "web");
        assert_eq!(read.mesh_peers, [(2, 20)]);
    }
}
