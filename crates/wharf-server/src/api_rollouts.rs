//! `/v1/rollouts`: a blue-green or canary rollout's state, and `promote` / `abort`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use wharf_api::{RolloutRequest, RolloutView};
use wharf_core::strategy::Command;

use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::routes::{acting_user, authorize, outcome};

pub fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/v1/rollouts/{env}/{service}", get(status))
        .route("/v1/rollouts/promote", post(promote))
        .route("/v1/rollouts/abort", post(abort))
}

type Ctl = State<Arc<Controller>>;

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

async fn promote(
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

async fn abort(
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
