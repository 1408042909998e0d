//! The HTTP API (`/v1/...`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;
use wharf_api::*;
use wharf_core::lifecycle::DeploymentKind;
use wharf_driver::InstanceKey;

use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::executor::Events;
use crate::extract::{Json, Path, Query};
use crate::logs::{self, LogSource};
use crate::{Controller, now_millis};

/// Uploads larger than this are refused.
const MAX_ARTIFACT_BYTES: usize = 1024 * 1024 * 1024;
/// Requests that carry a definition (`apply`, a dry run's proposal) may be this large.
pub(crate) const MAX_DEFINITION_BODY: usize = 10 * 1024 * 1024;
/// Every other request body: small JSON.
const MAX_JSON_BYTES: usize = 1024 * 1024;

pub fn router(controller: Arc<Controller>) -> axum::Router {
    let (api, document) = described();
    let document = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let served = move || {
        let body = document.clone();
        std::future::ready(([(header::CONTENT_TYPE, "application/json")], body))
    };
    api.route("/v1/openapi.json", axum::routing::get(served))
        .merge(crate::dashboard::routes())
        .fallback(crate::openapi::no_such_path)
        .method_not_allowed_fallback(crate::openapi::no_such_method)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(controller)
}

/// The API's routes, and the OpenAPI document they make.
pub fn described() -> (axum::Router<Arc<Controller>>, utoipa::openapi::OpenApi) {
    let (api, mut document) = operations().split_for_parts();
    crate::openapi::finish(&mut document);
    (api, document)
}

fn operations() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(health))
        .routes(routes!(info))
        .routes(routes!(crate::agent_api::ca))
        .routes(
            routes!(list_artifacts, upload_artifact)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_ARTIFACT_BYTES)),
        )
        .routes(routes!(download_artifact))
        .routes(routes!(register_image))
        .routes(routes!(deploy).layer(axum::extract::DefaultBodyLimit::max(MAX_DEFINITION_BODY)))
        .routes(routes!(rollback))
        .routes(routes!(stop))
        .routes(routes!(restart))
        .routes(routes!(dev))
        .routes(routes!(exec))
        .routes(routes!(scale))
        // Its own path: a controller that predates it answers 404 rather than reading a
        // prune as "stop everything".
        .routes(routes!(prune))
        .routes(routes!(status))
        .routes(routes!(history))
        .routes(routes!(logs))
        .routes(routes!(create_token))
        .routes(routes!(prometheus))
        .routes(routes!(traffic))
        .routes(routes!(list_hosts))
        .routes(routes!(host_action))
        .routes(routes!(crate::dashboard::new_sign_in_code))
        .merge(crate::api_config::routes())
        .merge(crate::api_rollouts::routes())
        .merge(crate::api_access::routes())
        .merge(crate::definitions::routes())
}

/// The user history records: the token's name, or on an open controller the user the
/// CLI names.
pub(crate) fn acting_user(c: &Controller, caller: &Caller, claimed: &str) -> String {
    if c.auth_required || claimed.is_empty() {
        caller.name.clone()
    } else {
        claimed.to_owned()
    }
}

/// Refuses a call the caller may not make, writing the refusal to the audit log.
pub(crate) fn authorize(
    c: &Controller,
    caller: &Caller,
    env: &str,
    action: Action,
    call: &str,
    target: &str,
) -> Result<(), ServerError> {
    caller.require(env, action).inspect_err(|_| {
        c.record(caller, call, target, "denied");
    })
}

impl Controller {
    /// Writes one line of the audit log; a failure to write is logged, not fatal.
    pub(crate) fn record(&self, caller: &Caller, action: &str, target: &str, outcome: &str) {
        if let Err(e) = self
            .store
            .audit(now_millis(), &caller.name, action, target, outcome)
        {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}

/// The audit outcome of a call's result.
pub(crate) fn outcome<T>(result: &Result<T, ServerError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {}", e.message),
    }
}

type Ctl = State<Arc<Controller>>;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HealthQuery {
    challenge: Option<String>,
}

/// Liveness for anyone; nothing about the controller unless the caller authenticates
/// (`/v1/info`).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "controller",
    params(HealthQuery),
    security(()),
    responses((status = 200, description = "The controller runs.", body = Liveness))
)]
async fn health(
    State(c): Ctl,
    Query(q): Query<HealthQuery>,
) -> Result<Json<wharf_api::Liveness>, ServerError> {
    let proof = match q.challenge {
        Some(challenge)
            if (16..=128).contains(&challenge.len())
                && challenge.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(crate::controller_proof(&c.local_key, &challenge))
        }
        Some(_) => {
            return Err(ServerError::bad_request(
                "a challenge is 16 to 128 hexadecimal digits",
            ));
        }
        None => None,
    };
    Ok(Json(wharf_api::Liveness {
        status: "ok".into(),
        proof,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "controller",
    responses((status = 200, body = ControllerInfo))
)]
async fn info(State(c): Ctl, _caller: Caller) -> Json<ControllerInfo> {
    Json(ControllerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: c.state_dir.display().to_string(),
        pid: std::process::id(),
        build: crate::build_id(),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ArtifactQuery {
    service: Option<String>,
    version: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/artifacts",
    tag = "artifacts",
    params(ArtifactQuery),
    responses((status = 200, body = Vec<ArtifactRecord>))
)]
async fn list_artifacts(
    State(c): Ctl,
    _caller: Caller,
    Query(q): Query<ArtifactQuery>,
) -> Result<Json<Vec<ArtifactRecord>>, ServerError> {
    Ok(Json(crate::wire::all(
        c.store.artifacts(q.service.as_deref())?,
        crate::wire::artifact,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/artifacts",
    tag = "artifacts",
    params(ArtifactQuery, ("x-wharf-digest" = String, Header, description = "`sha256:<hex>` of the body")),
    request_body(content = Vec<u8>, description = "The artifact: a gzipped tar archive of the build", content_type = "application/octet-stream"),
    responses((status = 201, description = "A new version.", body = ArtifactUploaded), (status = 200, description = "The same version with the same content was there already.", body = ArtifactUploaded))
)]
async fn upload_artifact(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<ArtifactQuery>,
    headers: HeaderMap,
    crate::extract::Bytes(body): crate::extract::Bytes,
) -> Result<Response, ServerError> {
    let (Some(service), Some(version)) = (q.service, q.version) else {
        return Err(ServerError::bad_request(
            "an upload needs `service` and `version`",
        ));
    };
    crate::edge::name("service", &service)?;
    crate::edge::version(&version)?;
    let target = format!("{service}@{version}");
    // Building is part of deploying; any environment's deploy grant allows it.
    if !caller_may_build(&caller) {
        c.record(&caller, "build", &target, "denied");
        return Err(caller.require("*", Action::Deploy).unwrap_err());
    }
    // Reading the archive through (its limits) and hashing are CPU work.
    let worker = c.clone();
    let result =
        tokio::task::spawn_blocking(move || upload(&worker, service, version, &headers, &body))
            .await
            .map_err(|e| ServerError::internal(format!("the upload check stopped: {e}")))
            .and_then(|r| r);
    c.record(&caller, "build", &target, &outcome(&result));
    result
}

/// Whether the caller may register artifacts: a deploy grant in some environment.
fn caller_may_build(caller: &Caller) -> bool {
    caller.may_somewhere(Action::Deploy)
}

fn upload(
    c: &Controller,
    service: String,
    version: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ServerError> {
    let claimed = headers
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ServerError::bad_request(format!("missing `{DIGEST_HEADER}` header")))?;
    // Check the name first, so a refused version leaves no file behind.
    if let Some(existing) = c
        .store
        .artifact(&service, &version)?
        .filter(|a| a.digest != claimed)
    {
        let existing = existing.digest;
        return Err(wharf_store::StoreError::VersionConflict {
            service,
            version,
            existing,
        }
        .into());
    }
    // Refused at upload already: what would escape its folder or unpack past the limits.
    wharf_artifact::check_limits(body, &wharf_artifact::UnpackLimits::default()).map_err(|e| {
        let status = match e {
            wharf_artifact::ArtifactError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ServerError::new(status, format!("artifact refused: {e}"))
    })?;
    let digest = c.artifacts.put(claimed, body)?;
    let record = wharf_store::ArtifactRecord {
        service,
        version,
        digest: digest.to_string(),
        size: body.len() as u64,
        created_at: now_millis(),
    };
    register(c, record)
}

/// Registers an artifact version: 201 when new, 200 when the same content was there.
fn register(c: &Controller, record: wharf_store::ArtifactRecord) -> Result<Response, ServerError> {
    let created = c.store.put_artifact(&record)? == wharf_store::PutOutcome::Created;
    let record = if created {
        record
    } else {
        c.store
            .artifact(&record.service, &record.version)?
            .unwrap_or(record)
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ArtifactUploaded {
            artifact: crate::wire::artifact(record),
            created,
        }),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/images",
    tag = "artifacts",
    request_body = ImageRegistration,
    responses((status = 201, description = "A new version.", body = ArtifactUploaded), (status = 200, description = "The same version with the same image was there already.", body = ArtifactUploaded))
)]
async fn register_image(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<ImageRegistration>,
) -> Result<Response, ServerError> {
    crate::edge::name("service", &req.service)?;
    crate::edge::version(&req.version)?;
    let target = format!("{}@{}", req.service, req.version);
    if !caller_may_build(&caller) {
        c.record(&caller, "build", &target, "denied");
        return Err(caller.require("*", Action::Deploy).unwrap_err());
    }
    let result = register_image_record(&c, req);
    c.record(&caller, "build", &target, &outcome(&result));
    result
}

fn register_image_record(c: &Controller, req: ImageRegistration) -> Result<Response, ServerError> {
    if !req.image_id.starts_with("sha256:") {
        return Err(ServerError::bad_request(format!(
            "`{}` is not an image id",
            req.image_id
        )));
    }
    let record = wharf_store::ArtifactRecord {
        service: req.service,
        version: req.version,
        digest: req.image_id,
        size: req.size,
        created_at: now_millis(),
    };
    register(c, record)
}

#[utoipa::path(
    get,
    path = "/v1/artifacts/{digest}",
    tag = "artifacts",
    params(("digest" = String, Path, description = "`sha256:<hex>`")),
    responses((status = 200, description = "The artifact's gzipped tar archive.", content_type = "application/gzip", body = Vec<u8>))
)]
async fn download_artifact(
    State(c): Ctl,
    _caller: Caller,
    Path(digest): Path<String>,
) -> Result<Response, ServerError> {
    let bytes = c.artifacts.get(&digest)?;
    Ok(([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response())
}

/// What the audit log records of a long operation, once it ends.
pub(crate) struct Audited {
    pub caller: Caller,
    pub action: &'static str,
    pub target: String,
}

/// Runs a long operation in its own task and streams its events as NDJSON; the audit
/// log gets its outcome.
pub(crate) fn stream_operation<F, Fut>(c: Arc<Controller>, audit: Audited, operation: F) -> Response
where
    F: FnOnce(Arc<Controller>, Events) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<DeployEvent, ServerError>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events(tx);
    tokio::spawn(async move {
        // The operation runs in a task of its own, so a panic in it still ends the
        // stream with an answer (and its guards have freed what it held).
        let running = tokio::spawn(operation(c.clone(), events.clone()));
        let last = match running.await {
            Ok(Ok(finished)) => finished,
            Ok(Err(e)) => DeployEvent::Error {
                error: e.message,
                hint: e.hint,
                status: e.status.as_u16(),
            },
            Err(e) => {
                tracing::error!("an operation of {} stopped: {e}", audit.caller.name);
                DeployEvent::Error {
                    error: "internal error: the operation stopped before it finished".into(),
                    hint: Some(
                        "`wharf status` and `wharf history` show what it changed; the controller's log has the cause"
                            .into(),
                    ),
                    status: 500,
                }
            }
        };
        let outcome = match &last {
            DeployEvent::Finished {
                deployment, state, ..
            } => match deployment {
                Some(id) => format!("{} (deployment #{id})", state.as_str()),
                None => state.as_str().to_owned(),
            },
            DeployEvent::Error { error, .. } => format!("error: {error}"),
            _ => "ok".into(),
        };
        c.record(&audit.caller, audit.action, &audit.target, &outcome);
        let _ = events.0.send(last);
    });
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(line), rx))
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[utoipa::path(
    post,
    path = "/v1/deployments",
    tag = "deployments",
    request_body = DeployRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
pub(crate) async fn deploy(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<DeployRequest>,
) -> Result<Response, ServerError> {
    crate::edge::deploy(&req)?;
    let target = format!("{} in {}@{}", req.service, req.env, req.version);
    authorize(&c, &caller, &req.env, Action::Deploy, "deploy", &target)?;
    let spec = match &req.proposed_definition {
        Some(_) if !req.dry_run => {
            return Err(
                ServerError::bad_request("a proposed definition is only for dry runs")
                    .hint("`wharf apply` stores a definition; deploys use the stored one"),
            );
        }
        Some(proposed) => crate::definitions::proposed_spec(proposed, &req.service, &req.env)?,
        None => c.definitions.spec_for(&req.service, &req.env)?,
    };
    let order = crate::executor::Order {
        spec,
        user: acting_user(&c, &caller, &req.user),
        version: req.version,
        dry_run: req.dry_run,
        unregistered_digest: req.unregistered_digest,
        force: req.force,
        config_revision: None,
        note: None,
        replay: None,
    };
    let audit = Audited {
        caller,
        action: if order.dry_run {
            "deploy --dry-run"
        } else {
            "deploy"
        },
        target,
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor
            .deploy(order, DeploymentKind::Deploy, &events)
            .await
    }))
}

#[utoipa::path(
    post,
    path = "/v1/rollback",
    tag = "deployments",
    request_body = RollbackRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
pub(crate) async fn rollback(
    State(c): Ctl,
    caller: Caller,
    Json(mut req): Json<RollbackRequest>,
) -> Result<Response, ServerError> {
    crate::edge::rollback(&req)?;
    let target = format!("{} in {}", req.service, req.env);
    authorize(&c, &caller, &req.env, Action::Deploy, "rollback", &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    req.user = acting_user(&c, &caller, &req.user);
    let audit = Audited {
        caller,
        action: "rollback",
        target,
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor.rollback(req, &events).await
    }))
}

#[utoipa::path(
    post,
    path = "/v1/prune",
    tag = "deployments",
    request_body = StopRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn prune(
    State(c): Ctl,
    caller: Caller,
    Json(mut req): Json<StopRequest>,
) -> Result<Response, ServerError> {
    req.prune = true;
    req.service = None;
    stop(State(c), caller, Json(req)).await
}

#[utoipa::path(
    post,
    path = "/v1/restart",
    tag = "deployments",
    request_body = RestartRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn restart(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<RestartRequest>,
) -> Result<Response, ServerError> {
    crate::edge::names(&req.service, &req.env)?;
    let target = format!("{} in {}", req.service, req.env);
    authorize(&c, &caller, &req.env, Action::Deploy, "restart", &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    let user = acting_user(&c, &caller, &req.user);
    let audit = Audited {
        caller,
        action: "restart",
        target,
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor
            .restart(&req.service, &req.env, user, &events)
            .await
    }))
}

#[utoipa::path(
    post,
    path = "/v1/dev",
    tag = "deployments",
    request_body = DevRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn dev(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<wharf_api::DevRequest>,
) -> Result<Response, ServerError> {
    crate::edge::dev(&req)?;
    let target = format!("{} in {}", req.service, req.env);
    authorize(&c, &caller, &req.env, Action::Deploy, "dev", &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    let user = acting_user(&c, &caller, &req.user);
    let audit = Audited {
        caller,
        action: "dev",
        target,
    };
    Ok(stream_operation(c, audit, move |c, events| async move {
        c.executor
            .dev(
                &req.service,
                &req.env,
                crate::executor::DevRun {
                    folder: std::path::Path::new(&req.folder),
                    fresh: req.fresh,
                    changed: req.changed.as_deref(),
                },
                user,
                &events,
            )
            .await
    }))
}

#[utoipa::path(
    post,
    path = "/v1/scale",
    tag = "deployments",
    request_body = ScaleRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn scale(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<wharf_api::ScaleRequest>,
) -> Result<Response, ServerError> {
    crate::edge::names(&req.service, &req.env)?;
    let target = format!("{} in {} to {}", req.service, req.env, req.count);
    authorize(&c, &caller, &req.env, Action::Deploy, "scale", &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    let user = acting_user(&c, &caller, &req.user);
    // The revision is stored before anything runs: a refused count changes nothing.
    let revision = c
        .definitions
        .scale(&req.env, &req.service, req.count, &user);
    c.record(&caller, "scale", &target, &outcome(&revision));
    let revision = revision?.revision;
    let audit = Audited {
        caller,
        action: "scale",
        target,
    };
    Ok(stream_operation(c, audit, move |c, events| async move {
        c.executor
            .scale(&req.service, &req.env, revision, user, &events)
            .await
    }))
}

/// How long a command of `wharf exec` may run.
const EXEC_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

#[utoipa::path(
    post,
    path = "/v1/exec",
    tag = "instances",
    request_body = ExecRequest,
    responses((status = 200, body = ExecResult))
)]
async fn exec(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<wharf_api::ExecRequest>,
) -> Result<Json<wharf_api::ExecResult>, ServerError> {
    crate::edge::exec(&req)?;
    let target = format!("{} in {}", req.service, req.env);
    // It runs anything with the instance's secrets: as much as a deploy may.
    authorize(&c, &caller, &req.env, Action::Deploy, "exec", &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    let mut candidates: Vec<_> = c
        .executor
        .fleet
        .statuses()
        .into_iter()
        .filter(|(plan, status)| {
            plan.key.env == req.env
                && plan.key.service == req.service
                && req.instance.is_none_or(|n| n == plan.key.instance)
                && status.state == wharf_core::lifecycle::InstanceState::Running
        })
        .map(|(plan, _)| plan.key.clone())
        .collect();
    candidates.sort_by_key(|k| k.instance);
    let Some(key) = candidates.into_iter().next() else {
        let which = req
            .instance
            .map_or_else(|| "no instance".to_owned(), |n| format!("no instance #{n}"));
        return Err(ServerError::not_found(format!(
            "{which} of `{}` runs in `{}`",
            req.service, req.env
        ))
        .hint(format!(
            "`wharf status --env {}` lists the instances that run",
            req.env
        )));
    };
    let ran = c
        .executor
        .fleet
        .link(&key)
        .exec(&key, &req.argv, EXEC_LIMIT)
        .await
        .map_err(|e| ServerError::new(StatusCode::CONFLICT, e));
    c.record(
        &caller,
        "exec",
        &format!("{target}: {}", req.argv[0]),
        &outcome(&ran),
    );
    let output = ran?;
    Ok(Json(wharf_api::ExecResult {
        instance: key.to_string(),
        code: output.code,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/stop",
    tag = "deployments",
    request_body = StopRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn stop(
    State(c): Ctl,
    caller: Caller,
    Json(mut req): Json<StopRequest>,
) -> Result<Response, ServerError> {
    let target = format!(
        "{} in {}",
        req.service.as_deref().unwrap_or("every service"),
        req.env
    );
    crate::edge::stop(&req)?;
    authorize(&c, &caller, &req.env, Action::Deploy, "stop", &target)?;
    c.definitions
        .check_names(req.service.as_deref(), Some(&req.env))?;
    req.user = acting_user(&c, &caller, &req.user);
    let audit = Audited {
        caller,
        action: "stop",
        target,
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor.stop(req, &events).await
    }))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusQuery {
    pub env: Option<String>,
    pub service: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "instances",
    params(StatusQuery),
    responses((status = 200, body = StatusReport))
)]
async fn status(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<StatusQuery>,
) -> Result<Json<StatusReport>, ServerError> {
    if let Some(env) = &q.env {
        caller.require(env, Action::Read)?;
    }
    let swarm = crate::status::engine_services(&c, &caller, &q);
    let engine = match crate::executor::engine::swarm_instances(swarm).await {
        Ok(replicas) => replicas,
        // Asked for the swarm environment itself: say why it cannot be shown.
        Err(e) if q.env.is_some() => {
            return Err(ServerError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                format!("cannot read the swarm's replicas: {e}"),
            )
            .hint("check the Docker engine (`docker service ls`)"));
        }
        // A listing of every environment still shows the others.
        Err(e) => {
            tracing::warn!("cannot read the swarm's replicas for `wharf status`: {e}");
            Vec::new()
        }
    };
    crate::status::status_report_with(&c, &caller, &q, engine).map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    service: String,
    env: String,
}

#[utoipa::path(
    get,
    path = "/v1/history",
    tag = "deployments",
    params(HistoryQuery),
    responses((status = 200, body = Vec<DeploymentRecord>))
)]
async fn history(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<DeploymentRecord>>, ServerError> {
    caller.require(&q.env, Action::Read)?;
    c.definitions.check_names(Some(&q.service), Some(&q.env))?;
    Ok(Json(crate::wire::all(
        c.store.history_brief(&q.service, &q.env)?,
        crate::wire::deployment,
    )))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    env: String,
    service: String,
    instance: Option<u32>,
    #[serde(default)]
    follow: bool,
    lines: Option<usize>,
    /// Only what was written at or after this time (Unix milliseconds).
    since: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/logs",
    tag = "instances",
    params(LogsQuery),
    responses((status = 200, description = "The lines, oldest first; with `follow`, a stream that stays open.", content_type = "text/plain", body = String))
)]
async fn logs(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ServerError> {
    caller.require(&q.env, Action::Read)?;
    c.definitions.check_names(Some(&q.service), Some(&q.env))?;
    let instances = c.store.instances(Some(&q.env), Some(&q.service))?;
    let chosen: Vec<_> = instances
        .iter()
        .filter(|i| q.instance.is_none_or(|n| n == i.instance))
        .collect();
    if chosen.is_empty() {
        let err = match q.instance {
            Some(n) if !instances.is_empty() => ServerError::not_found(format!(
                "`{}` has no instance {n} in `{}`",
                q.service, q.env
            ))
            .hint(format!(
                "instances: {}",
                instances
                    .iter()
                    .map(|i| i.instance.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => ServerError::not_found(format!("`{}` does not run in `{}`", q.service, q.env))
                .hint(format!(
                    "deploy it with `wharf deploy {} --env {}`",
                    q.service, q.env
                )),
        };
        return Err(err);
    }
    let several = chosen.len() > 1;
    let lines = q.lines.unwrap_or(100);
    let prefix = |i: &wharf_store::InstanceRecord| {
        if several {
            format!("[{} #{}] ", i.service, i.instance)
        } else {
            String::new()
        }
    };
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let mut sources = Vec::new();
    let mut remote = Vec::new();
    for i in chosen {
        let key = InstanceKey {
            env: i.env.clone(),
            service: i.service.clone(),
            node: i.node.clone(),
            instance: i.instance,
        };
        let link = c.fleet.link(&key);
        match link.log_path(&key) {
            Some(path) => sources.push(LogSource {
                prefix: prefix(i),
                path,
            }),
            None => remote.push((prefix(i), key, link)),
        }
    }
    if q.follow {
        let remote = remote
            .into_iter()
            .map(|(prefix, key, link)| logs::RemoteLog { prefix, key, link })
            .collect();
        return Ok((content_type, logs::follow(sources, remote, lines, q.since)).into_response());
    }
    // Logs stay on their hosts: remote agents are asked for their tails.
    let mut text = logs::snapshot(&sources, lines, q.since);
    for (prefix, key, link) in remote {
        let tail = link
            .log_tail(&key, lines, q.since)
            .await
            .map_err(|e| ServerError::new(StatusCode::GATEWAY_TIMEOUT, e))?;
        text.extend(tail.lines().map(|l| format!("{prefix}{l}\n")));
    }
    Ok((content_type, text).into_response())
}

/// What the services' addresses measured, on every host (`wharf top`).
#[utoipa::path(
    get,
    path = "/v1/traffic",
    tag = "instances",
    params(StatusQuery),
    responses((status = 200, body = Vec<wharf_api::traffic::ServiceTraffic>))
)]
async fn traffic(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Vec<wharf_api::traffic::ServiceTraffic>>, ServerError> {
    if let Some(env) = &q.env {
        caller.require(env, Action::Read)?;
    }
    c.definitions
        .check_names(q.service.as_deref(), q.env.as_deref())?;
    let all = crate::traffic::collect(&c.fleet)
        .into_iter()
        .filter(|t| caller.may(&t.env, Action::Read))
        .filter(|t| q.env.as_ref().is_none_or(|e| *e == t.env))
        .filter(|t| q.service.as_ref().is_none_or(|s| *s == t.service))
        .collect();
    Ok(Json(all))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "instances",
    responses((status = 200, description = "Prometheus' text format.", content_type = "text/plain", body = String))
)]
async fn prometheus(State(c): Ctl, caller: Caller) -> Result<Response, ServerError> {
    let readable: Vec<_> = c
        .store
        .instances(None, None)?
        .into_iter()
        .filter(|i| caller.may(&i.env, Action::Read))
        .collect();
    let traffic: Vec<_> = crate::traffic::collect(&c.fleet)
        .into_iter()
        .filter(|t| caller.may(&t.env, Action::Read))
        .collect();
    let mut text = crate::metrics::render(&readable, now_millis());
    text.push_str(&crate::metrics::render_traffic(&traffic));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "fleet",
    request_body = TokenRequest,
    responses((status = 200, body = TokenCreated))
)]
async fn create_token(
    State(c): Ctl,
    caller: Caller,
    Json(mut req): Json<TokenRequest>,
) -> Result<Json<TokenCreated>, ServerError> {
    crate::edge::join_token(&req)?;
    let target = format!("join token for {}", req.env);
    authorize(
        &c,
        &caller,
        &req.env,
        Action::Admin,
        "token create",
        &target,
    )?;
    req.user = acting_user(&c, &caller, &req.user);
    let result = create_join_token(&c, req);
    c.record(&caller, "token create", &target, &outcome(&result));
    result
}

fn create_join_token(c: &Controller, req: TokenRequest) -> Result<Json<TokenCreated>, ServerError> {
    if req.uses == 0 || req.ttl_secs == 0 {
        return Err(ServerError::bad_request(
            "a token needs at least one use and a lifetime",
        ));
    }
    let id = crate::random_hex(6).map_err(|e| ServerError::internal(e.to_string()))?;
    let secret = crate::random_hex(24).map_err(|e| ServerError::internal(e.to_string()))?;
    let now = now_millis();
    let record = wharf_store::JoinTokenRecord {
        id: id.clone(),
        env: req.env.clone(),
        expires_at: now + (req.ttl_secs as i64) * 1000,
        uses_left: req.uses,
        created_at: now,
        created_by: req.user,
    };
    c.store
        .create_join_token(&record, &crate::agent_api::hash_secret(&secret))?;
    let token = format!("wharf1.{id}.{secret}.{}", c.authority.fingerprint());
    Ok(Json(TokenCreated {
        token,
        id,
        env: req.env,
        expires_at: record.expires_at,
        uses: req.uses,
        agent_url: c.agent_url.clone(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HostsQuery {
    pub env: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "fleet",
    params(HostsQuery),
    responses((status = 200, body = Vec<HostView>))
)]
async fn list_hosts(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<HostsQuery>,
) -> Result<Json<Vec<HostView>>, ServerError> {
    let statuses = c.fleet.statuses();
    let hosts: Vec<_> = c
        .store
        .hosts(q.env.as_deref())?
        .into_iter()
        .filter(|h| caller.may(&h.env, Action::Read))
        .collect();
    Ok(Json(
        hosts
            .into_iter()
            .map(|host| {
                let instances = statuses
                    .iter()
                    .filter(|(p, _)| p.key.env == host.env && p.key.node == host.name)
                    .count();
                HostView {
                    host: crate::wire::host(host),
                    instances,
                }
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/{action}",
    tag = "fleet",
    params(("name" = String, Path, description = "The host's name"), ("action" = String, Path, description = "`drain`, `undrain` or `revoke`"), HostsQuery),
    responses((status = 200, body = HostView))
)]
async fn host_action(
    State(c): Ctl,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<HostsQuery>,
) -> Result<Json<HostView>, ServerError> {
    let env = q.env.clone().unwrap_or_else(|| "*".into());
    let call = format!("host {action}");
    authorize(&c, &caller, &env, Action::Admin, &call, &name)?;
    let result = act_on_host(&c, name.clone(), action, q).await;
    c.record(&caller, &call, &name, &outcome(&result));
    result
}

pub(crate) async fn act_on_host(
    c: &Arc<Controller>,
    name: String,
    action: String,
    q: HostsQuery,
) -> Result<Json<HostView>, ServerError> {
    let hosts = c.store.hosts(q.env.as_deref())?;
    let matching: Vec<_> = hosts.into_iter().filter(|h| h.name == name).collect();
    let host = match matching.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ServerError::not_found(format!("no host `{name}`"))
                .hint("`wharf hosts` lists them"));
        }
        _ => {
            return Err(ServerError::bad_request(format!(
                "host `{name}` exists in several environments"
            ))
            .hint("add `--env ENV`"));
        }
    };
    if action == "forget" {
        c.store.remove_host(host.id)?;
        c.fleet.hosts_changed();
        return Ok(Json(HostView {
            host: crate::wire::host(host),
            instances: 0,
        }));
    }
    // A revoked host's certificate is dead for good: draining or undraining it must
    // not make it a host again.
    if host.state == wharf_core::lifecycle::HostState::Revoked
        && matches!(action.as_str(), "drain" | "undrain")
    {
        return Err(ServerError::new(
            StatusCode::CONFLICT,
            format!("host `{name}` is revoked; it cannot be drained or undrained"),
        )
        .hint("join the machine again with a new token (`wharf token create`)"));
    }
    let state = match action.as_str() {
        "drain" => wharf_core::lifecycle::HostState::Draining,
        "revoke" => wharf_core::lifecycle::HostState::Revoked,
        "undrain" => wharf_core::lifecycle::HostState::Ready,
        other => {
            return Err(ServerError::not_found(format!(
                "unknown host action `{other}`"
            )));
        }
    };
    c.store.set_host_state(host.id, state)?;
    c.fleet.hosts_changed();
    // Pooled instances leave a drained or revoked host at once.
    if !state.can_take_instances() {
        let (c, env) = (c.clone(), host.env.clone());
        tokio::spawn(async move { c.executor.reschedule(&env).await });
    }
    let host = c.store.host(host.id)?.unwrap_or(host);
    Ok(Json(HostView {
        host: crate::wire::host(host),
        instances: 0,
    }))
}
