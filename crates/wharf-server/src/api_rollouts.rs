//! `/v1/rollouts`: a blue-green or canary rollout's state, and `promote` / `abort`.

use std::sync::Arc;

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_api::{RolloutRequest, RolloutView};
use wharf_core::strategy::Command;

use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::extract::{Json, Path};
use crate::routes::{acting_user, authorize, outcome};

pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(promote))
        .routes(routes!(abort))
}

type Ctl = State<Arc<Controller>>;

#[utoipa::path(
    get,
    path = "/v1/rollouts/{env}/{service}",
    operation_id = "rollout_status",
    tag = "rollouts",
    params(("env" = String, Path, description = "An environment of the definition"), ("service" = String, Path, description = "A service of the definition")),
    responses((status = 200, body = RolloutView))
)]
async fn status(
    State(c): Ctl,
    caller: Caller,
    Path((env, service)): Path<(String, String)>,
) -> Result<Json<RolloutView>, ServerError> {
    crate::edge::names(&service, &env)?;
    caller.require(&env, Action::Read)?;
    c.definitions.check_names(Some(&service), Some(&env))?;
    Ok(Json(c.executor.rollout_view(&service, &env)?))
}

#[utoipa::path(
    post,
    path = "/v1/rollouts/promote",
    operation_id = "rollout_promote",
    tag = "rollouts",
    request_body = RolloutRequest,
    responses((status = 200, body = RolloutView))
)]
pub(crate) async fn promote(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<RolloutRequest>,
) -> Result<Json<RolloutView>, ServerError> {
    let command = Command::Promote { full: req.full };
    let call = if req.full {
        "rollout promote --full"
    } else {
        "rollout promote"
    };
    command_rollout(&c, caller, req, command, call).await
}

#[utoipa::path(
    post,
    path = "/v1/rollouts/abort",
    operation_id = "rollout_abort",
    tag = "rollouts",
    request_body = RolloutRequest,
    responses((status = 200, body = RolloutView))
)]
pub(crate) async fn abort(
    State(c): Ctl,
    caller: Caller,
    Json(req): Json<RolloutRequest>,
) -> Result<Json<RolloutView>, ServerError> {
    command_rollout(&c, caller, req, Command::Abort, "rollout abort").await
}

/// Who may deploy a service may move its rollout; every command is audited.
async fn command_rollout(
    c: &Arc<Controller>,
    caller: Caller,
    req: RolloutRequest,
    command: Command,
    call: &str,
) -> Result<Json<RolloutView>, ServerError> {
    crate::edge::names(&req.service, &req.env)?;
    let target = format!("{} in {}", req.service, req.env);
    authorize(c, &caller, &req.env, Action::Deploy, call, &target)?;
    c.definitions
        .check_names(Some(&req.service), Some(&req.env))?;
    let user = acting_user(c, &caller, &req.user);
    let result = c
        .executor
        .command_rollout(&req.service, &req.env, command, &user)
        .await;
    c.record(&caller, call, &target, &outcome(&result));
    result.map(Json)
}
