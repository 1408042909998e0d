//! The HTTP API (`/v1/...`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use wharf_api::*;
use wharf_core::lifecycle::DeploymentKind;
use wharf_driver::InstanceKey;

use crate::error::ServerError;
use crate::executor::Events;
use crate::logs::{self, LogSource};
use crate::{Controller, now_millis};

/// Uploads larger than this are refused.
const MAX_ARTIFACT_BYTES: usize = 1024 * 1024 * 1024;

pub fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/artifacts", get(list_artifacts).post(upload_artifact))
        .route("/v1/artifacts/{digest}", get(download_artifact))
        .route("/v1/images", post(register_image))
        .route("/v1/deployments", post(deploy))
        .route("/v1/rollback", post(rollback))
        .route("/v1/stop", post(stop))
        .route("/v1/status", get(status))
        .route("/v1/history", get(history))
        .route("/v1/logs", get(logs))
        .route("/v1/tokens", post(create_token))
        .route("/metrics", get(prometheus))
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{name}/{action}", post(host_action))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ARTIFACT_BYTES))
        .with_state(controller)
}

type Ctl = State<Arc<Controller>>;

async fn health(State(c): Ctl) -> Json<ControllerInfo> {
    Json(ControllerInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: c.state_dir.display().to_string(),
        pid: std::process::id(),
        build: crate::build_id(),
    })
}

#[derive(Deserialize)]
struct ArtifactQuery {
    service: Option<String>,
    version: Option<String>,
}

async fn list_artifacts(
    State(c): Ctl,
    Query(q): Query<ArtifactQuery>,
) -> Result<Json<Vec<ArtifactRecord>>, ServerError> {
    Ok(Json(c.store.artifacts(q.service.as_deref())?))
}

async fn upload_artifact(
    State(c): Ctl,
    Query(q): Query<ArtifactQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServerError> {
    let (Some(service), Some(version)) = (q.service, q.version) else {
        return Err(ServerError::bad_request(
            "an upload needs `service` and `version`",
        ));
    };
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
    let digest = c.artifacts.put(claimed, &body)?;
    let record = ArtifactRecord {
        service,
        version,
        digest: digest.to_string(),
        size: body.len() as u64,
        created_at: now_millis(),
    };
    register(&c, record)
}

/// Registers an artifact version: 201 when new, 200 when the same content was there.
fn register(c: &Controller, record: ArtifactRecord) -> Result<Response, ServerError> {
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
            artifact: record,
            created,
        }),
    )
        .into_response())
}

async fn register_image(
    State(c): Ctl,
    Json(req): Json<ImageRegistration>,
) -> Result<Response, ServerError> {
    if !req.image_id.starts_with("sha256:") {
        return Err(ServerError::bad_request(format!(
            "`{}` is not an image id",
            req.image_id
        )));
    }
    let record = ArtifactRecord {
        service: req.service,
        version: req.version,
        digest: req.image_id,
        size: req.size,
        created_at: now_millis(),
    };
    register(&c, record)
}

async fn download_artifact(
    State(c): Ctl,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Result<Response, ServerError> {
    let bytes = c.artifacts.get(&digest)?;
    Ok(([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response())
}

/// Runs a long operation in its own task and streams its events as NDJSON.
fn stream_operation<F, Fut>(c: Arc<Controller>, operation: F) -> Response
where
    F: FnOnce(Arc<Controller>, Events) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<DeployEvent, ServerError>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events(tx);
    tokio::spawn(async move {
        let last = match operation(c, events.clone()).await {
            Ok(finished) => finished,
            Err(e) => DeployEvent::Error {
                error: e.message,
                hint: e.hint,
            },
        };
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

async fn deploy(State(c): Ctl, Json(req): Json<DeployRequest>) -> Response {
    stream_operation(c, |c, events| async move {
        c.deploy(req, DeploymentKind::Deploy, &events).await
    })
}

async fn rollback(State(c): Ctl, Json(req): Json<RollbackRequest>) -> Response {
    stream_operation(c, |c, events| async move { c.rollback(req, &events).await })
}

async fn stop(State(c): Ctl, Json(req): Json<StopRequest>) -> Response {
    stream_operation(c, |c, events| async move { c.stop(req, &events).await })
}

#[derive(Deserialize)]
struct StatusQuery {
    env: Option<String>,
    service: Option<String>,
}

async fn status(
    State(c): Ctl,
    Query(q): Query<StatusQuery>,
) -> Result<Json<StatusReport>, ServerError> {
    let instances = c.store.instances(q.env.as_deref(), q.service.as_deref())?;
    let mut grouped: BTreeMap<(String, String), Vec<InstanceRecord>> = BTreeMap::new();
    for i in instances {
        grouped
            .entry((i.env.clone(), i.service.clone()))
            .or_default()
            .push(i);
    }
    let services = grouped
        .into_iter()
        .map(|((env, service), instances)| {
            let mut versions: Vec<String> = instances.iter().map(|i| i.version.clone()).collect();
            versions.dedup();
            let mut digests: Vec<String> = instances.iter().map(|i| i.digest.clone()).collect();
            digests.dedup();
            ServiceStatus {
                env,
                service,
                versions,
                digests,
                instances,
            }
        })
        .collect();
    Ok(Json(StatusReport {
        services,
        now: now_millis(),
    }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    service: String,
    env: String,
}

async fn history(
    State(c): Ctl,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<DeploymentRecord>>, ServerError> {
    Ok(Json(c.store.history(&q.service, &q.env)?))
}

#[derive(Deserialize)]
struct LogsQuery {
    env: String,
    service: String,
    instance: Option<u32>,
    #[serde(default)]
    follow: bool,
    lines: Option<usize>,
}

async fn logs(State(c): Ctl, Query(q): Query<LogsQuery>) -> Result<Response, ServerError> {
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
    let sources: Vec<LogSource> = chosen
        .iter()
        .map(|i| {
            let key = InstanceKey {
                env: i.env.clone(),
                service: i.service.clone(),
                node: i.node.clone(),
                instance: i.instance,
            };
            LogSource {
                prefix: if several {
                    format!("[{} #{}] ", i.service, i.instance)
                } else {
                    String::new()
                },
                path: c.fleet.link(&key).log_path(&key).unwrap_or_default(),
            }
        })
        .collect();
    let lines = q.lines.unwrap_or(100);
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if q.follow {
        Ok((content_type, logs::follow(sources, lines)).into_response())
    } else {
        Ok((content_type, logs::snapshot(&sources, lines)).into_response())
    }
}

async fn prometheus(State(c): Ctl) -> Result<Response, ServerError> {
    let text = crate::metrics::render(&c.store.instances(None, None)?, now_millis());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn create_token(
    State(c): Ctl,
    Json(req): Json<TokenRequest>,
) -> Result<Json<TokenCreated>, ServerError> {
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

#[derive(Deserialize)]
struct HostsQuery {
    env: Option<String>,
}

async fn list_hosts(
    State(c): Ctl,
    Query(q): Query<HostsQuery>,
) -> Result<Json<Vec<HostView>>, ServerError> {
    let statuses = c.fleet.statuses();
    let hosts = c.store.hosts(q.env.as_deref())?;
    Ok(Json(
        hosts
            .into_iter()
            .map(|host| {
                let instances = statuses
                    .iter()
                    .filter(|(p, _)| p.key.env == host.env && p.key.node == host.name)
                    .count();
                HostView { host, instances }
            })
            .collect(),
    ))
}

async fn host_action(
    State(c): Ctl,
    axum::extract::Path((name, action)): axum::extract::Path<(String, String)>,
    Query(q): Query<HostsQuery>,
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
        return Ok(Json(HostView { host, instances: 0 }));
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
        tokio::spawn(async move { c.reschedule(&env).await });
    }
    let host = c.store.host(host.id)?.unwrap_or(host);
    Ok(Json(HostView { host, instances: 0 }))
}
