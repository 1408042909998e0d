//! `/v1/config`, `/v1/secrets` and `/v1/runtime/config`: the configuration service's API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_api::*;

use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::extract::{Json, Path, Query};
use crate::routes::{Audited, acting_user, authorize, outcome, stream_operation};

/// The longest a watcher may wait in one request.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::new()
        .routes(routes!(get_config, change_config))
        .routes(routes!(config_history))
        .routes(routes!(list_secrets))
        .routes(routes!(set_secret, unset_secret))
        .routes(routes!(compare_secrets))
        .routes(routes!(rotate_key))
        .routes(routes!(runtime_config))
}

type Ctl = State<Arc<Controller>>;

#[utoipa::path(
    get,
    path = "/v1/config/{env}/{service}",
    tag = "config",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition")),
    responses((status = 200, body = ConfigState))
)]
async fn get_config(
    State(c): Ctl,
    caller: Caller,
    Path((env, service)): Path<(String, String)>,
) -> Result<Json<ConfigState>, ServerError> {
    caller.require(&env, Action::Read)?;
    c.definitions.check_names(Some(&service), Some(&env))?;
    let (revision, overrides) = c.config.overrides(&service, &env, None)?;
    let secrets = c
        .store
        .secrets(Some((&service, &env)))?
        .into_iter()
        .map(|s| s.key)
        .collect();
    Ok(Json(ConfigState {
        service,
        env,
        revision,
        overrides,
        secrets,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/config/{env}/{service}",
    tag = "config",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition")),
    request_body = ConfigChange,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn change_config(
    State(c): Ctl,
    caller: Caller,
    Path((env, service)): Path<(String, String)>,
    Json(change): Json<ConfigChange>,
) -> Result<Response, ServerError> {
    c.definitions.check_names(Some(&service), Some(&env))?;
    let target = format!("{service} in {env}");
    let call = if change.restore.is_some() {
        "config rollback"
    } else {
        "config set"
    };
    authorize(&c, &caller, &env, Action::Config, call, &target)?;
    crate::edge::config_change(&change)?;
    let user = acting_user(&c, &caller, &change.user);
    let audit = Audited {
        caller,
        action: call,
        target: format!(
            "{target}: {}",
            change
                .set
                .keys()
                .map(|k| format!("set {k}"))
                .chain(change.unset.iter().map(|k| format!("unset {k}")))
                .chain(change.restore.map(|r| format!("restore revision {r}")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor
            .change_config(&service, &env, change, &user, &events)
            .await
    }))
}

#[utoipa::path(
    get,
    path = "/v1/config/{env}/{service}/history",
    tag = "config",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition")),
    responses((status = 200, body = Vec<ConfigRevision>))
)]
async fn config_history(
    State(c): Ctl,
    caller: Caller,
    Path((env, service)): Path<(String, String)>,
) -> Result<Json<Vec<ConfigRevision>>, ServerError> {
    caller.require(&env, Action::Read)?;
    c.definitions.check_names(Some(&service), Some(&env))?;
    Ok(Json(crate::wire::all(
        c.store.config_revisions(&service, &env)?,
        crate::wire::config_revision,
    )))
}

#[utoipa::path(
    get,
    path = "/v1/secrets/{env}/{service}",
    tag = "secrets",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition")),
    responses((status = 200, body = Vec<SecretInfo>))
)]
async fn list_secrets(
    State(c): Ctl,
    caller: Caller,
    Path((env, service)): Path<(String, String)>,
) -> Result<Json<Vec<SecretInfo>>, ServerError> {
    c.definitions.check_names(Some(&service), Some(&env))?;
    caller.require(&env, Action::Secret)?;
    Ok(Json(
        c.store
            .secrets(Some((&service, &env)))?
            .into_iter()
            .map(|s| SecretInfo {
                key: s.key,
                version: s.version,
                updated_at: s.updated_at,
                updated_by: s.updated_by,
            })
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SecretQuery {
    #[serde(default)]
    user: String,
}

#[utoipa::path(
    put,
    path = "/v1/secrets/{env}/{service}/{key}",
    tag = "secrets",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition"), ("key" = String, Path, description = "The secret's name"), SecretQuery),
    request_body(content = Vec<u8>, description = "The value, as bytes", content_type = "application/octet-stream"),
    responses((status = 204, description = "Stored, sealed."))
)]
async fn set_secret(
    State(c): Ctl,
    caller: Caller,
    Path((env, service, key)): Path<(String, String, String)>,
    Query(q): Query<SecretQuery>,
    crate::extract::Bytes(value): crate::extract::Bytes,
) -> Result<StatusCode, ServerError> {
    let target = format!("{service} in {env}: {key}");
    authorize(&c, &caller, &env, Action::Secret, "secret set", &target)?;
    c.definitions.check_names(Some(&service), Some(&env))?;
    crate::edge::config_key(&key)?;
    if value.is_empty() {
        return Err(
            ServerError::bad_request(format!("the value of secret `{key}` is empty"))
                .hint("pipe the value on standard input, or type it at the prompt"),
        );
    }
    let user = acting_user(&c, &caller, &q.user);
    let result = c.config.set_secret(&service, &env, &key, &value, &user);
    c.record(&caller, "secret set", &target, &outcome(&result));
    result.map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{env}/{service}/{key}",
    tag = "secrets",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition"), ("key" = String, Path, description = "The secret's name")),
    responses((status = 204, description = "Removed."))
)]
async fn unset_secret(
    State(c): Ctl,
    caller: Caller,
    Path((env, service, key)): Path<(String, String, String)>,
) -> Result<StatusCode, ServerError> {
    let target = format!("{service} in {env}: {key}");
    authorize(&c, &caller, &env, Action::Secret, "secret unset", &target)?;
    let result = match c.store.remove_secret(&service, &env, &key) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ServerError::not_found(format!(
            "`{service}` has no secret `{key}` in `{env}`"
        ))),
        Err(e) => Err(e.into()),
    };
    c.record(&caller, "secret unset", &target, &outcome(&result));
    result
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CompareQuery {
    service: String,
    a: String,
    b: String,
}

/// Whether each secret differs between two environments; never the values.
#[utoipa::path(
    get,
    path = "/v1/secrets/compare",
    tag = "secrets",
    params(CompareQuery),
    responses((status = 200, body = Vec<SecretComparison>))
)]
async fn compare_secrets(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<CompareQuery>,
) -> Result<Json<Vec<SecretComparison>>, ServerError> {
    // Comparing tells something of both sides' values: it needs the secret grant in
    // both environments (else it is an oracle for guessing one from the other).
    let target = format!("{} in {} and {}", q.service, q.a, q.b);
    authorize(&c, &caller, &q.a, Action::Secret, "secret compare", &target)?;
    authorize(&c, &caller, &q.b, Action::Secret, "secret compare", &target)?;
    if !c
        .compare_limit
        .allow(&caller.name, std::time::Instant::now())
    {
        return Err(ServerError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many secret comparisons: at most 10 a minute per caller",
        )
        .hint("try again in a minute"));
    }
    c.definitions.check_names(Some(&q.service), Some(&q.a))?;
    c.definitions.check_names(None, Some(&q.b))?;
    let values = |env: &str| -> Result<std::collections::BTreeMap<String, String>, ServerError> {
        Ok(c.config
            .secret_values(&q.service, env)?
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect())
    };
    let (a, b) = (values(&q.a)?, values(&q.b)?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(Json(
        keys.into_iter()
            .map(|key| SecretComparison {
                key: key.clone(),
                comparison: match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) if x == y => "same".into(),
                    (Some(_), Some(_)) => "differs".into(),
                    (Some(_), None) => format!("only in {}", q.a),
                    _ => format!("only in {}", q.b),
                },
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/secrets/rotate-key",
    tag = "secrets",
    responses((status = 200, body = KeyRotated))
)]
async fn rotate_key(State(c): Ctl, caller: Caller) -> Result<Json<KeyRotated>, ServerError> {
    authorize(
        &c,
        &caller,
        "*",
        Action::Admin,
        "secret rotate-key",
        "master key",
    )?;
    let result = c.config.rotate_master_key();
    if result.is_ok() {
        // Their instances' tokens died with the old key: agents get new ones now, for
        // the instances they restart.
        c.fleet.renew_tokens();
    }
    c.record(
        &caller,
        "secret rotate-key",
        "master key",
        &outcome(&result),
    );
    result.map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RuntimeQuery {
    instance: Option<u32>,
    /// Answer once the revision is newer than this (a long poll).
    wait: Option<i64>,
    /// How long to wait, in seconds (default 60, at most 300).
    timeout: Option<u64>,
}

/// What a running instance reads: its configuration, now or once it changes. This is
/// the hot path of the configuration service: no allocation beyond the answer's
/// headers when the view is cached and the token known.
#[utoipa::path(
    get,
    path = "/v1/runtime/config",
    tag = "config",
    params(RuntimeQuery),
    security(("config_token" = [])),
    responses((status = 200, body = RuntimeConfig))
)]
async fn runtime_config(
    State(c): Ctl,
    request: axum::extract::Request,
) -> Result<Response, ServerError> {
    answer_runtime(&c, request, None).await
}

/// A runtime configuration read, from an instance (`env`: none) or passed on by the
/// agent of a host in `env`, which may read for its own environment only.
pub(crate) async fn answer_runtime(
    c: &Controller,
    request: axum::extract::Request,
    env: Option<&str>,
) -> Result<Response, ServerError> {
    let (parts, _) = request.into_parts();
    let axum::extract::Query(q) = axum::extract::Query::<RuntimeQuery>::try_from_uri(&parts.uri)
        .map_err(|e| ServerError::bad_request(e.body_text()))?;
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let Some(scope) = c
        .config
        .hub
        .check_token(&c.config.keyring, token)
        .filter(|scope| env.is_none_or(|env| scope.env == env))
    else {
        return Err(ServerError::new(
            StatusCode::UNAUTHORIZED,
            "a configuration read needs the instance's WHARF_CONFIG_TOKEN",
        ));
    };
    let view = match (q.wait, c.config.hub.cached_view(&scope.key)) {
        (None, Some(view)) => view,
        (None, None) => c.config.runtime_view(&scope.env, &scope.service)?,
        (Some(seen), _) => {
            let mut changes = c.config.hub.subscribe(&scope.env, &scope.service);
            let mut view = c.config.runtime_view(&scope.env, &scope.service)?;
            let wait = Duration::from_secs(q.timeout.unwrap_or(60)).min(MAX_WAIT);
            let deadline = tokio::time::Instant::now() + wait;
            while view.revision <= seen {
                match tokio::time::timeout_at(deadline, changes.changed()).await {
                    Ok(Ok(())) => view = c.config.runtime_view(&scope.env, &scope.service)?,
                    _ => break,
                }
            }
            view
        }
    };
    let body = view.body(q.instance).ok_or_else(|| {
        ServerError::not_found(format!(
            "`{}` has no instance {} in `{}`",
            scope.service,
            q.instance.unwrap_or_default(),
            scope.env
        ))
    })?;
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("x-wharf-revision"),
                header::HeaderValue::from(view.revision),
            ),
        ],
        body,
    )
        .into_response();
    // In the second half of its life the token is renewed with the answer: an instance
    // that keeps reading keeps a working token (one that stops reading does not).
    let now = crate::now_millis();
    if scope.expires - now < crate::auth::RUNTIME_TOKEN_LIFETIME_MS / 2 {
        let fresh = {
            let keyring = c.config.keyring.read().unwrap_or_else(|p| p.into_inner());
            crate::auth::runtime_token(&keyring, &scope.env, &scope.service, now)
        };
        if let Ok(mut value) = header::HeaderValue::from_str(&fresh) {
            value.set_sensitive(true);
            response.headers_mut().insert(
                header::HeaderName::from_static("x-wharf-config-token"),
                value,
            );
        }
    }
    Ok(response)
}
