//! A service's page and what it posts. Its buttons call the API's own handlers with
//! the signed-in caller, so a button does exactly what the API allows that caller, and
//! nothing the page shows or hides decides it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use wharf_api::{
    DeployEvent, DeployRequest, DeploymentState, PromoteRequest, RollbackRequest, RolloutRequest,
};
use wharf_driver::InstanceKey;

use super::{
    ChangeForm, DECISION_WAIT, change_allowed, plain_name, problem, rendered, secure, session,
    to_sign_in, viewer,
};
use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::extract::Json;
use crate::logs::LogSource;

/// How many deployments of each environment a service page lists.
const HISTORY_SHOWN: usize = 15;
/// How many configuration revisions, and registered versions, it lists.
const REVISIONS_SHOWN: usize = 20;
const VERSIONS_SHOWN: usize = 30;
/// How often a log stream with nothing new checks its session again.
const RECHECK: Duration = Duration::from_secs(15);
/// The log lines a page starts with, per environment.
const LOG_LINES: usize = 50;

#[derive(Deserialize, Default)]
pub(super) struct Done {
    did: Option<String>,
    env: Option<String>,
}

/// What a finished action's redirect says on the page.
fn notice_of(done: &Done) -> Option<String> {
    let env = done.env.as_deref().filter(|e| plain_name(e))?;
    let text = match done.did.as_deref()? {
        "deploy" => format!("deploying to {env}: the instances below follow"),
        "promote" => format!("promoting to {env}: the instances below follow"),
        "rollback" => format!("rolling back in {env}: the instances below follow"),
        "rollout-promote" => format!("the rollout in {env} moved on"),
        "held" => format!(
            "the deploy to {env} waits for approval: someone else with the approve grant approves it here or with `wharf approve`"
        ),
        "rollout-abort" => {
            format!("the rollout in {env} was aborted: the stable version takes every request")
        }
        _ => return None,
    };
    Some(text)
}

pub(super) async fn page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path(service): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    if !plain_name(&service) {
        return problem(StatusCode::NOT_FOUND, "no such service");
    }
    let notice = notice_of(&done);
    page_with(
        &c,
        caller,
        &viewer,
        &service,
        StatusCode::OK,
        notice.as_deref(),
    )
    .await
}

async fn page_with(
    c: &Arc<Controller>,
    caller: Caller,
    viewer: &wharf_dashboard::Viewer,
    service: &str,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    let name = service.to_owned();
    rendered(
        c,
        status,
        move |c| sections(c, &caller, &name),
        |sections| wharf_dashboard::service_page(viewer, service, &sections, notice),
    )
    .await
}

/// A Unix time in milliseconds as the pages show it (UTC, to the second).
fn shown_time(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// The environments of `service` the caller may read, in pipeline order, each with
/// everything its section shows.
fn sections(
    c: &Controller,
    caller: &Caller,
    service: &str,
) -> Result<Vec<wharf_dashboard::EnvSection>, ServerError> {
    let query = crate::routes::StatusQuery {
        env: None,
        service: Some(service.to_owned()),
    };
    let report = crate::status::status_report(c, caller, &query)?;
    let pipeline = c
        .definitions
        .current()
        .map(|current| current.definition.pipeline.clone())
        .unwrap_or_default();
    let mut versions: Vec<_> = c.store.artifacts(Some(service))?;
    versions.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    let versions: Vec<String> = versions
        .into_iter()
        .take(VERSIONS_SHOWN)
        .map(|a| a.version)
        .collect();
    let pending = c.executor.pending()?;
    let traffic = crate::traffic::collect(&c.fleet);
    let mut sections = Vec::new();
    for env in pipeline.iter().filter(|e| caller.may(e, Action::Read)) {
        let status = report.services.iter().find(|s| &s.env == env);
        let history = c.store.history_brief(service, env)?;
        if status.is_none() && history.is_empty() {
            continue;
        }
        let rollout = c
            .executor
            .rollout_view(service, env)
            .ok()
            .filter(|r| !matches!(r.phase.as_str(), "succeeded" | "aborted"));
        let requests: BTreeMap<(String, u32), u64> = traffic
            .iter()
            .filter(|t| &t.env == env && t.service == service)
            .flat_map(|t| t.instances.iter())
            .map(|i| ((i.node.clone(), i.instance), i.counts.requests))
            .collect();
        let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
        let deployments: Vec<i64> = instances.iter().map(|i| i.deployment_id).collect();
        let share = |deployment: i64| {
            let r = rollout.as_ref()?;
            traffic_share(&deployments, r.deployment, r.weight, deployment)
        };
        let succeeded = history
            .iter()
            .filter(|d| d.state.as_str() == "succeeded")
            .count();
        sections.push(wharf_dashboard::EnvSection {
            env: env.clone(),
            address: status.and_then(|s| s.address.clone()),
            warnings: status.map(|s| s.warnings.clone()).unwrap_or_default(),
            instances: instances
                .iter()
                .map(|i| wharf_dashboard::InstanceRow {
                    node: i.node.clone(),
                    instance: i.instance,
                    version: i.version.clone(),
                    state: i.state.as_str().to_owned(),
                    health: i.health.as_str().to_owned(),
                    restarts: i.restarts,
                    cpu_millis: i.cpu_millis,
                    memory_bytes: i.memory_bytes,
                    port: i.port,
                    share: share(i.deployment_id),
                    requests: requests.get(&(i.node.clone(), i.instance)).copied(),
                })
                .collect(),
            actions: wharf_dashboard::Actions {
                can_deploy: caller.may(env, Action::Deploy),
                can_approve: caller.may(env, Action::Approve),
                versions: versions.clone(),
                promote_from: c
                    .definitions
                    .spec_shared(service, env)
                    .ok()
                    .and_then(|spec| spec.previous_env.clone()),
                can_roll_back: succeeded > 1,
            },
            rollout: rollout.map(|r| wharf_dashboard::RolloutRow {
                strategy: r.strategy,
                phase: r.phase,
                version: r.version,
                stable_version: r.stable_version,
                weight: r.weight,
                step: r.step,
                steps: r.steps,
            }),
            pending: pending
                .iter()
                .filter(|d| &d.env == env && d.service == service)
                .map(|d| wharf_dashboard::PendingRow {
                    id: d.id,
                    version: d.version.clone(),
                    user: d.user.clone(),
                })
                .collect(),
            config: config_rows(c, service, env)?,
            logs: log_view(c, env, service)?,
            history: history
                .into_iter()
                .take(HISTORY_SHOWN)
                .map(|d| wharf_dashboard::HistoryRow {
                    id: d.id,
                    kind: d.kind.as_str().to_owned(),
                    version: d.version,
                    user: d.user,
                    at: shown_time(d.started_at),
                    state: d.state.as_str().replace('_', " "),
                    config_revision: d.config_revision,
                    approved_by: d.approved_by,
                    message: d.message,
                })
                .collect(),
        });
    }
    Ok(sections)
}

/// The percent of a service's requests one instance gets during a rollout: the new
/// set (instances of the rollout's deployment; the same version may be rolled out
/// again with another configuration) shares `weight`, the stable set the rest.
fn traffic_share(
    deployments: &[i64],
    rollout_deployment: i64,
    weight: u8,
    instance_deployment: i64,
) -> Option<u8> {
    let new = instance_deployment == rollout_deployment;
    let alike = deployments
        .iter()
        .filter(|d| (**d == rollout_deployment) == new)
        .count();
    let percent = if new {
        weight.min(100)
    } else {
        100 - weight.min(100)
    };
    u8::try_from((usize::from(percent) + alike / 2) / alike.max(1)).ok()
}

/// The configuration revisions, newest first, each with what it changed from the
/// revision in force before it. A held revision stays off the page until it is
/// approved (the matrix and drift ignore it too); `wharf config history` lists it.
fn config_rows(
    c: &Controller,
    service: &str,
    env: &str,
) -> Result<Vec<wharf_dashboard::ConfigRevisionRow>, ServerError> {
    let mut revisions = c.store.config_revisions(service, env)?;
    revisions.retain(|r| r.state != "held");
    revisions.reverse();
    let mut in_force = BTreeMap::new();
    let mut rows = Vec::new();
    for r in revisions {
        let changes = wharf_dashboard::config_diff(&in_force, &r.values);
        if r.state == "active" {
            in_force = r.values;
        }
        rows.push(wharf_dashboard::ConfigRevisionRow {
            revision: r.revision,
            user: r.user,
            at: shown_time(r.at),
            message: r.message,
            state: r.state,
            changes,
        });
    }
    rows.reverse();
    rows.truncate(REVISIONS_SHOWN);
    Ok(rows)
}

/// The log files of a service's instances on the controller's machine, and whether
/// every instance is there (instances elsewhere keep their logs on their hosts).
fn log_sources(
    c: &Controller,
    env: &str,
    service: &str,
) -> Result<(Vec<LogSource>, bool), ServerError> {
    let instances = c.store.instances(Some(env), Some(service))?;
    let several = instances.len() > 1;
    let mut sources = Vec::new();
    for i in &instances {
        let key = InstanceKey {
            env: i.env.clone(),
            service: i.service.clone(),
            node: i.node.clone(),
            instance: i.instance,
        };
        if let Some(path) = c.fleet.link(&key).log_path(&key) {
            let prefix = if several {
                format!("[{} #{}] ", i.node, i.instance)
            } else {
                String::new()
            };
            sources.push(LogSource { prefix, path });
        }
    }
    let all_here = sources.len() == instances.len();
    Ok((sources, all_here))
}

fn log_view(
    c: &Controller,
    env: &str,
    service: &str,
) -> Result<wharf_dashboard::LogView, ServerError> {
    let (sources, all_here) = log_sources(c, env, service)?;
    let mut text = crate::logs::snapshot(&sources, LOG_LINES, None);
    if !all_here {
        text.push_str(&format!(
            "(instances on other hosts keep their logs there: `wharf logs {service} --env {env}` shows them)\n"
        ));
    }
    Ok(wharf_dashboard::LogView {
        text,
        live: !sources.is_empty(),
    })
}

/// `GET /ui/services/{service}/{env}/logs`: what the instances write from now on, as
/// server-sent `log` events. The session is checked again before each event.
pub(super) async fn logs(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path((service, env)): Path<(String, String)>,
) -> Response {
    let (Some((caller, _)), Some(session)) = (viewer(&c, &headers), session(&headers)) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !plain_name(&service) || !plain_name(&env) || !caller.may(&env, Action::Read) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (worker, (s, e)) = (c.clone(), (service.clone(), env.clone()));
    let sources = match tokio::task::spawn_blocking(move || log_sources(&worker, &e, &s)).await {
        Ok(Ok((sources, _))) => sources,
        _ => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let still_allowed = move || {
        c.ui_sessions
            .credential(&session)
            .and_then(|credential| super::caller_of(&c, &credential).ok())
            .is_some_and(|caller| caller.may(&env, Action::Read))
    };
    // The last lines again, in case some were written since the page was made, then
    // what follows them.
    let rest = crate::logs::appended(sources.clone());
    let first = crate::logs::snapshot(&sources, LOG_LINES, None);
    let event = |name: &'static str, text: String| {
        Ok::<_, Infallible>(
            Event::default()
                .event(name)
                .data(text.trim_end_matches('\n')),
        )
    };
    // A quiet log still has its session checked now and then (a tick, sent as nothing).
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(RECHECK).await;
        Some((None, ()))
    });
    let lines = futures_util::stream::once(std::future::ready(Some(event("reset", first))))
        .chain(futures_util::stream::select(
            rest.map(move |text| Some(event("log", text))),
            ticks,
        ))
        .then(move |event| {
            let check = still_allowed.clone();
            async move {
                let allowed = tokio::task::spawn_blocking(check).await.unwrap_or(false);
                (allowed, event)
            }
        })
        .take_while(|(allowed, _)| std::future::ready(*allowed))
        .filter_map(|(_, event)| std::future::ready(event));
    let mut response = Sse::new(lines)
        .keep_alive(KeepAlive::default())
        .into_response();
    secure(response.headers_mut());
    response
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    version: Option<String>,
}

/// `POST /ui/services/{service}/{env}/{action}`: deploy (a registered version),
/// promote, rollback, rollout-promote, rollout-abort. Each goes through the API's own
/// handler as the signed-in caller.
pub(super) async fn act(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path((service, env, action)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    let token = ChangeForm { csrf: form.csrf };
    if let Err(refused) = change_allowed(&c, &headers, &token) {
        return refused.into_response();
    }
    if !plain_name(&service) || !plain_name(&env) {
        return problem(StatusCode::NOT_FOUND, "no such service or environment");
    }
    let user = String::new();
    let state = State(c.clone());
    let as_api = caller.clone();
    let result = match action.as_str() {
        "deploy" => {
            let Some(version) = form.version.filter(|v| !v.is_empty()) else {
                return problem(StatusCode::BAD_REQUEST, "choose a version to deploy");
            };
            let request = DeployRequest {
                service: service.clone(),
                env: env.clone(),
                version,
                user,
                dry_run: false,
                unregistered_digest: None,
                force: false,
                proposed_definition: None,
            };
            followed(crate::routes::deploy(state, as_api, Json(request)).await).await
        }
        "promote" => {
            let target = format!("{service} to {env}");
            if let Err(e) =
                crate::routes::authorize(&c, &caller, &env, Action::Deploy, "promote", &target)
            {
                return page_with(&c, caller, &viewer, &service, e.status, Some(&e.message)).await;
            }
            let from = c
                .definitions
                .spec_for(&service, &env)
                .ok()
                .and_then(|spec| spec.previous_env);
            let Some(from) = from else {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("`{env}` has no environment before it to promote from"),
                );
            };
            let request = PromoteRequest {
                service: service.clone(),
                from,
                to: env.clone(),
                user,
                force: false,
            };
            followed(crate::api_access::promote(state, as_api, Json(request)).await).await
        }
        "rollback" => {
            let request = RollbackRequest {
                service: service.clone(),
                env: env.clone(),
                to: None,
                user,
            };
            followed(crate::routes::rollback(state, as_api, Json(request)).await).await
        }
        "rollout-promote" | "rollout-abort" => {
            let request = RolloutRequest {
                service: service.clone(),
                env: env.clone(),
                full: false,
                user,
            };
            let answer = if action == "rollout-promote" {
                crate::api_rollouts::promote(state, as_api, Json(request)).await
            } else {
                crate::api_rollouts::abort(state, as_api, Json(request)).await
            };
            answer.map(|_| Outcome::UnderWay)
        }
        _ => return problem(StatusCode::NOT_FOUND, "no such action"),
    };
    match result {
        Ok(outcome) => {
            let did = match outcome {
                Outcome::Held => "held",
                Outcome::UnderWay => action.as_str(),
            };
            Redirect::to(&format!("/ui/services/{service}?did={did}&env={env}")).into_response()
        }
        Err(e) => page_with(&c, caller, &viewer, &service, e.status, Some(&e.message)).await,
    }
}

/// What became of an operation the page started.
enum Outcome {
    /// It runs (or ran); the page follows it in its rows.
    UnderWay,
    /// It waits for an approval.
    Held,
}

/// Follows an operation's event stream for a moment: a refusal or a failure that
/// comes at once is the page's to show; an operation still under way goes on in the
/// controller, and the page follows it in its rows.
async fn followed(answer: Result<Response, ServerError>) -> Result<Outcome, ServerError> {
    let mut body = answer?.into_body().into_data_stream();
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + DECISION_WAIT;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<DeployEvent>(&line) {
                Ok(DeployEvent::Error {
                    error,
                    hint,
                    status,
                }) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                    let message = match hint {
                        Some(hint) => format!("{error} ({hint})"),
                        None => error,
                    };
                    return Err(ServerError::new(status, message));
                }
                Ok(DeployEvent::Finished { state, message, .. })
                    if !matches!(
                        state,
                        DeploymentState::Succeeded | DeploymentState::PendingApproval
                    ) =>
                {
                    return Err(ServerError::new(
                        StatusCode::CONFLICT,
                        format!("{}: {message}", state.as_str().replace('_', " ")),
                    ));
                }
                Ok(DeployEvent::Finished {
                    state: DeploymentState::PendingApproval,
                    ..
                }) => return Ok(Outcome::Held),
                Ok(DeployEvent::Finished { .. }) => return Ok(Outcome::UnderWay),
                _ => {}
            }
        }
    }
    Ok(Outcome::UnderWay)
}

#[cfg(test)]
mod tests {
    use super::traffic_share;

    #[test]
    fn the_new_set_shares_the_weight_and_the_stable_set_the_rest() {
        // Deployment 7 rolls out beside two instances of deployment 5.
        let running = [5, 5, 7];
        assert_eq!(traffic_share(&running, 7, 20, 7), Some(20));
        assert_eq!(traffic_share(&running, 7, 20, 5), Some(40));
        // The same version again with another configuration: told apart by deployment.
        let again = [7, 8, 8];
        assert_eq!(traffic_share(&again, 8, 50, 8), Some(25));
        assert_eq!(traffic_share(&again, 8, 50, 7), Some(50));
        // Rounded, not truncated; never past 100.
        assert_eq!(traffic_share(&[1, 1, 1, 2], 2, 25, 1), Some(25));
        assert_eq!(traffic_share(&[2, 2, 2], 2, 80, 2), Some(27));
        assert_eq!(traffic_share(&[2], 2, 200, 2), Some(100));
    }
}
