//! `/v1/api-tokens`, `/v1/audit`, approvals and promotion: who may do what, and what
//! waits for whom.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_api::*;
use wharf_core::lifecycle::DeploymentKind;

use crate::Controller;
use crate::auth::{Action, Caller, check_scopes, new_api_token};
use crate::error::ServerError;
use crate::extract::{Json, Path, Query};
use crate::routes::{Audited, acting_user, authorize, outcome, stream_operation};

pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit))
        .routes(routes!(pending))
        .routes(routes!(show_deployment))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(cancel))
        .routes(routes!(promote))
}

type Ctl = State<Arc<Controller>>;

#[utoipa::path(
    post,
    path = "/v1/api-tokens",
    tag = "access",
    request_body = ApiTokenRequest,
    responses((status = 200, body = ApiTokenCreated))
)]
async fn issue_token(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<ApiTokenRequest>,
) -> Result<Json<ApiTokenCreated>, ServerError> {
    crate::edge::api_token(&req)?;
    let target = format!("api token {} ({})", req.name, req.scopes.join(","));
    authorize(&c, &caller, "*", Action::Admin, "token issue", &target)?;
    check_scopes(&req.scopes).map_err(|e| {
        ServerError::bad_request(e)
            .hint("scopes look like `ci:deploy`, `production:approve` or `*:config`")
    })?;
    // A grant for an environment the definition does not have is a typo.
    for scope in &req.scopes {
        if let Some((env, _)) = scope.split_once(':')
            && env != "*"
        {
            c.definitions.check_names(None, Some(env))?;
        }
    }
    let user = acting_user(&c, &caller, &req.user);
    let result = (|| {
        let (token, (record, hash)) = new_api_token(&req.name, req.scopes.clone(), &user)
            .map_err(|e| ServerError::internal(e.to_string()))?;
        c.store.create_api_token(&record, &hash)?;
        Ok(ApiTokenCreated {
            token,
            record: crate::wire::api_token(record),
        })
    })();
    c.record(&caller, "token issue", &target, &outcome(&result));
    result.map(Json)
}

#[utoipa::path(
    get,
    path = "/v1/api-tokens",
    tag = "access",
    responses((status = 200, body = Vec<ApiTokenRecord>))
)]
async fn list_tokens(
    State(c): Ctl,
    caller: Caller,
) -> Result<Json<Vec<ApiTokenRecord>>, ServerError> {
    caller.require("*", Action::Admin)?;
    Ok(Json(crate::wire::all(
        c.store.api_tokens()?,
        crate::wire::api_token,
    )))
}

#[utoipa::path(
    delete,
    path = "/v1/api-tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked."))
)]
async fn revoke_token(
    State(c): Ctl,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ServerError> {
    let target = format!("api token {id}");
    authorize(&c, &caller, "*", Action::Admin, "token revoke", &target)?;
    let result = match c.store.revoke_api_token(&id, crate::now_millis()) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(
            ServerError::not_found(format!("there is no live API token `{id}`"))
                .hint("`wharf token list` shows them"),
        ),
        Err(e) => Err(e.into()),
    };
    c.record(&caller, "token revoke", &target, &outcome(&result));
    result
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "access",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditRecord>))
)]
async fn audit(
    State(c): Ctl,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ServerError> {
    caller.require("*", Action::Admin)?;
    Ok(Json(crate::wire::all(
        c.store.audit_log(q.limit.unwrap_or(100))?,
        crate::wire::audit,
    )))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/pending",
    tag = "deployments",
    responses((status = 200, body = Vec<DeploymentRecord>))
)]
async fn pending(
    State(c): Ctl,
    caller: Caller,
) -> Result<Json<Vec<DeploymentRecord>>, ServerError> {
    let readable: Vec<_> = c
        .executor
        .pending()?
        .into_iter()
        .filter(|d| caller.may(&d.env, Action::Read))
        .collect();
    Ok(Json(crate::wire::all(readable, crate::wire::deployment)))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}",
    tag = "deployments",
    params(("id" = i64, Path, description = "The deployment's id")),
    responses((status = 200, body = DeploymentRecord))
)]
async fn show_deployment(
    State(c): Ctl,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<DeploymentRecord>, ServerError> {
    let d = c
        .store
        .deployment(id)?
        .ok_or_else(|| ServerError::not_found(format!("there is no deployment #{id}")))?;
    caller.require(&d.env, Action::Read)?;
    Ok(Json(crate::wire::deployment(d)))
}

/// Every environment whose approvers decide on a held deployment: its own, and for a
/// held definition revision each approval environment whose policy it changes.
pub(crate) fn held_envs(held: &wharf_store::DeploymentRecord) -> Vec<String> {
    let mut envs = vec![held.env.clone()];
    if let Some(serde_json::Value::Array(more)) = held.spec.field("envs") {
        envs.extend(more.iter().filter_map(|e| e.as_str().map(str::to_owned)));
    }
    envs.sort();
    envs.dedup();
    envs
}

/// The environment of a deployment, for checking the caller's grant.
pub(crate) fn env_of(
    c: &Controller,
    id: i64,
) -> Result<wharf_store::DeploymentRecord, ServerError> {
    c.store
        .deployment(id)?
        .ok_or_else(|| ServerError::not_found(format!("there is no deployment #{id}")))
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/approve",
    tag = "deployments",
    params(("id" = i64, Path, description = "The held deployment's id")),
    request_body = Approver,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn approve(
    State(c): Ctl,
    caller: Caller,
    Path(id): Path<i64>,
    Json(who): Json<Approver>,
) -> Result<Response, ServerError> {
    let held = env_of(&c, id)?;
    let target = format!("deployment #{id} ({} in {})", held.service, held.env);
    for env in held_envs(&held) {
        authorize(&c, &caller, &env, Action::Approve, "approve", &target)?;
    }
    let approver = acting_user(&c, &caller, &who.user);
    let audit = Audited {
        caller,
        action: "approve",
        target,
    };
    Ok(stream_operation(c, audit, move |c, events| async move {
        c.executor.approve(id, &approver, &events).await
    }))
}

/// Who decides, as history records it (on an open controller; a token names itself).
#[derive(Deserialize, utoipa::ToSchema)]
struct Approver {
    #[serde(default)]
    user: String,
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/reject",
    tag = "deployments",
    params(("id" = i64, Path, description = "The held deployment's id")),
    request_body = Approver,
    responses((status = 200, description = "The `finished` event of the rejected deployment.", body = DeployEvent))
)]
async fn reject(
    State(c): Ctl,
    caller: Caller,
    Path(id): Path<i64>,
    Json(who): Json<Approver>,
) -> Result<Json<DeployEvent>, ServerError> {
    let held = env_of(&c, id)?;
    let target = format!("deployment #{id} ({} in {})", held.service, held.env);
    for env in held_envs(&held) {
        authorize(&c, &caller, &env, Action::Approve, "reject", &target)?;
    }
    let who = acting_user(&c, &caller, &who.user);
    let result = c.executor.reject(id, &who);
    c.record(&caller, "reject", &target, &outcome(&result));
    result.map(Json)
}

/// Asks a deploy in progress to stop where it is and roll back what it changed; the
/// deploy itself records how that ended.
#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/cancel",
    tag = "deployments",
    params(("id" = i64, Path, description = "The running deployment's id")),
    request_body = Approver,
    responses((status = 202, description = "Asked to stop; it rolls back.", body = DeploymentRecord))
)]
async fn cancel(
    State(c): Ctl,
    caller: Caller,
    Path(id): Path<i64>,
    Json(who): Json<Approver>,
) -> Result<(StatusCode, Json<DeploymentRecord>), ServerError> {
    let d = env_of(&c, id)?;
    let target = format!("deployment #{id} ({} in {})", d.service, d.env);
    authorize(&c, &caller, &d.env, Action::Deploy, "cancel", &target)?;
    let who = acting_user(&c, &caller, &who.user);
    let result = if d.state == wharf_core::lifecycle::DeploymentState::PendingApproval {
        Err(ServerError::new(
            StatusCode::CONFLICT,
            format!("deployment #{id} waits for approval; nothing of it runs"),
        )
        .hint(format!("`wharf reject {id}` drops it")))
    } else if c.executor.cancels.cancel(id, &who) {
        Ok(d)
    } else {
        Err(ServerError::new(
            StatusCode::CONFLICT,
            format!(
                "deployment #{id} is not in progress (it {}); nothing to cancel",
                d.state.as_str().replace('_', " ")
            ),
        )
        .hint("`wharf rollback SERVICE --env ENV` undoes a finished deploy"))
    };
    c.record(&caller, "cancel", &target, &outcome(&result));
    Ok((StatusCode::ACCEPTED, Json(crate::wire::deployment(result?))))
}

#[utoipa::path(
    post,
    path = "/v1/promote",
    tag = "deployments",
    request_body = PromoteRequest,
    responses((status = 200, description = "The operation's progress, one JSON event per line; the last is `finished`, or `error` when it could not run.", content_type = "application/x-ndjson", body = DeployEvent))
)]
pub(crate) async fn promote(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<PromoteRequest>,
) -> Result<Response, ServerError> {
    crate::edge::promote(&req)?;
    let target = format!("{} from {} to {}", req.service, req.from, req.to);
    authorize(&c, &caller, &req.to, Action::Deploy, "promote", &target)?;
    let spec = c.definitions.spec_for(&req.service, &req.to)?;
    c.definitions.known_environment(&req.from)?;
    let version = c.executor.healthy_version(&req.service, &req.from)?;
    let request = crate::executor::Order {
        spec,
        version,
        user: acting_user(&c, &caller, &req.user),
        dry_run: false,
        unregistered_digest: None,
        force: req.force,
        config_revision: None,
        note: None,
        replay: None,
    };
    let audit = Audited {
        caller,
        action: "promote",
        target,
    };
    Ok(stream_operation(c, audit, |c, events| async move {
        c.executor
            .deploy(request, DeploymentKind::Promote, &events)
            .await
    }))
}

impl crate::executor::Executor {
    /// The version of a service healthy in an environment now: every instance healthy
    /// and running the same artifact.
    pub fn healthy_version(&self, service: &str, env: &str) -> Result<String, ServerError> {
        let instances = self.store.instances(Some(env), Some(service))?;
        if instances.is_empty() {
            return Err(ServerError::bad_request(format!(
                "`{service}` does not run in `{env}`; there is nothing to promote"
            ))
            .hint(format!(
                "deploy it there first: `wharf deploy {service} --env {env}`"
            )));
        }
        let mut digests: Vec<&str> = instances.iter().map(|i| i.digest.as_str()).collect();
        digests.dedup();
        if digests.len() > 1 {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!(
                    "`{service}` runs {} different artifacts in `{env}`",
                    digests.len()
                ),
            )
            .hint("wait for the deploy there to finish"));
        }
        let unhealthy: Vec<String> = instances
            .iter()
            .filter(|i| i.health != wharf_core::lifecycle::Health::Healthy)
            .map(|i| format!("instance {} is {}", i.instance, i.health.as_str()))
            .collect();
        if !unhealthy.is_empty() {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!(
                    "`{service}` is not healthy in `{env}`: {}",
                    unhealthy.join(", ")
                ),
            )
            .hint("only a healthy artifact is promoted; `wharf status` shows why"));
        }
        let digest = digests[0];
        if wharf_core::dev::source_of(digest).is_some() {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!("`{service}` runs a dev version in `{env}`, straight from its folder; a dev version is never promoted"),
            )
            .hint(format!(
                "build a version (`wharf build {service} --version V`), deploy it to `{env}`, then promote it"
            )));
        }
        let version = instances[0].version.clone();
        // The version name the instances report must still name that digest.
        match self.store.artifact(service, &version)? {
            Some(a) if a.digest == digest => Ok(version),
            _ => Err(ServerError::internal(format!(
                "the artifact {digest} of `{service}` running in `{env}` is not registered"
            ))),
        }
    }
}
