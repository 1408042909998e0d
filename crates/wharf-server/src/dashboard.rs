//! The dashboard at `/`: the environments by services matrix, live over server-sent
//! events that follow the store's committed writes (no polling), behind a sign-in.
//!
//! Sign-in: an API token posted to `/ui/sign-in` (or a one-time address `wharf ui`
//! prints, which is the only way into an open development controller) is kept in an
//! HttpOnly, SameSite=Strict cookie and checked again on every request, exactly as the
//! API checks a token, so a revoked token signs the browser out. Every change a page
//! posts carries a form token derived from the cookie and the controller's key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use wharf_core::lifecycle::Health;
use wharf_dashboard::{Cell, CellUpdate, Matrix, Viewer};

use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;

/// The cookie holding the signed-in credential.
const SESSION_COOKIE: &str = "wharf_session";
/// How long an address of `wharf ui` signs a browser in.
const CODE_LIFETIME: Duration = Duration::from_secs(120);
/// Changes this close together are one update of the page.
const COALESCE: Duration = Duration::from_millis(50);
/// The longest credential a sign-in form may post.
const MAX_CREDENTIAL: usize = 512;

pub(crate) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/", get(matrix_page))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/events", get(events))
        .route("/ui/deployments/{id}/{decision}", post(decide))
        .route("/ui/hosts", get(hosts_page))
        .route("/ui/services/{service}", get(service_page))
        .route("/ui/hosts/{env}/{name}/{action}", post(host_action))
        .route("/ui/live.js", get(script))
        .route("/ui/style.css", get(style))
        .route("/v1/ui/sign-in-codes", post(new_sign_in_code))
}

/// One-time sign-in codes (`wharf ui`), each the credential it signs in with, kept in
/// memory for [`CODE_LIFETIME`].
#[derive(Default)]
pub(crate) struct SignInCodes(Mutex<HashMap<String, (Instant, String)>>);

impl SignInCodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self, credential: String) -> std::io::Result<String> {
        let code = crate::random_hex(24)?;
        let mut codes = self.lock();
        codes.retain(|_, (made, _)| made.elapsed() < CODE_LIFETIME);
        codes.insert(code.clone(), (Instant::now(), credential));
        Ok(code)
    }

    /// The credential of `code`, once.
    fn redeem(&self, code: &str) -> Option<String> {
        let (made, credential) = self.lock().remove(code)?;
        (made.elapsed() < CODE_LIFETIME).then_some(credential)
    }
}

/// The credential a signed-in browser sends, if any.
fn session(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty() && v.len() <= MAX_CREDENTIAL)
}

/// Who a credential signs in: the open controller's own key, or an API token.
fn caller_of(c: &Controller, credential: &str) -> Result<Caller, ServerError> {
    if c.auth_required {
        return Caller::from_token(c, credential);
    }
    if wharf_secrets::constant_time_eq(credential.as_bytes(), c.local_key.as_bytes()) {
        Ok(Caller::open("dashboard".into()))
    } else {
        // The key changes with each start of the controller: sign in again.
        Err(ServerError::new(
            StatusCode::UNAUTHORIZED,
            "this sign-in is from an earlier run of the controller",
        ))
    }
}

/// The form token of a session: tied to its credential and this controller's key.
fn csrf_token(c: &Controller, credential: &str) -> String {
    wharf_secrets::keyed_digest(c.local_key.as_bytes(), &format!("wharf csrf\0{credential}"))
}

/// The signed-in viewer of a request, and its credential.
fn viewer(c: &Controller, headers: &HeaderMap) -> Option<(Caller, Viewer)> {
    let credential = session(headers)?;
    let caller = caller_of(c, credential).ok()?;
    let viewer = Viewer {
        name: caller.name.clone(),
        open: caller.is_open(),
        csrf: csrf_token(c, credential),
    };
    Some((caller, viewer))
}

/// An HTML page with the headers every page has.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    response
}

/// A page saying what went wrong.
fn problem(status: StatusCode, message: &str) -> Response {
    html(status, wharf_dashboard::problem_page(message))
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(wharf_dashboard::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn to_sign_in() -> Response {
    Redirect::to("/ui/sign-in").into_response()
}

/// The cookie that keeps `credential` (or, empty, forgets it).
fn session_cookie(credential: &str) -> HeaderValue {
    let age = if credential.is_empty() {
        "; Max-Age=0"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={credential}; HttpOnly; SameSite=Strict; Path=/{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("wharf_session=; Max-Age=0"))
}

#[derive(Deserialize, Default)]
struct Done {
    approved: Option<i64>,
    rejected: Option<i64>,
}

async fn matrix_page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    let notice = match (done.approved, done.rejected) {
        (Some(id), _) => Some(format!(
            "approved #{id}: it deploys now, and its cell follows"
        )),
        (_, Some(id)) => Some(format!("rejected #{id}: it never ships")),
        _ => None,
    };
    page_with(&c, caller, &viewer, StatusCode::OK, notice.as_deref()).await
}

/// The matrix page for `viewer`, answered with `status` and a notice.
async fn page_with(
    c: &Arc<Controller>,
    caller: Caller,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    let controller = c.clone();
    match tokio::task::spawn_blocking(move || matrix(&controller, &caller)).await {
        Ok(Ok(matrix)) => html(
            status,
            wharf_dashboard::matrix_page(viewer, &matrix, notice),
        ),
        Ok(Err(e)) => problem(e.status, &e.message),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// How long an approval is awaited before the page returns (the deploy goes on).
const DECISION_WAIT: Duration = Duration::from_secs(2);

/// `POST /ui/deployments/{id}/approve|reject`: the page's buttons. The form token and
/// the caller's grant are checked as the API checks them, and refusals are audited.
async fn decide(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path((id, decision)): Path<(i64, String)>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    if !wharf_secrets::constant_time_eq(form.csrf.as_bytes(), viewer.csrf.as_bytes()) {
        return problem(
            StatusCode::FORBIDDEN,
            "the form token does not match: load the page again",
        );
    }
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return problem(StatusCode::NOT_FOUND, "no such decision"),
    };
    let refused = |e: ServerError, caller: Caller| {
        let c = c.clone();
        let viewer = viewer.clone();
        async move { page_with(&c, caller, &viewer, e.status, Some(&e.message)).await }
    };
    let held = match crate::api_access::env_of(&c, id) {
        Ok(held) => held,
        Err(e) => return refused(e, caller).await,
    };
    let action = if approve { "approve" } else { "reject" };
    let target = format!("deployment #{id} ({} in {})", held.service, held.env);
    for env in crate::api_access::held_envs(&held) {
        if let Err(e) =
            crate::routes::authorize(&c, &caller, &env, Action::Approve, action, &target)
        {
            return refused(e, caller).await;
        }
    }
    let who = crate::routes::acting_user(&c, &caller, "");
    if !approve {
        let result = c.executor.reject(id, &who);
        c.record(&caller, "reject", &target, &crate::routes::outcome(&result));
        return match result {
            Ok(_) => Redirect::to(&format!("/?rejected={id}")).into_response(),
            Err(e) => refused(e, caller).await,
        };
    }
    // The deploy runs in a task of its own, recorded in the audit log when it ends; a
    // refusal comes at once and is shown, a deploy under way is followed in its cell.
    let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
    let (controller, auditor) = (c.clone(), caller.clone());
    let mut run = tokio::spawn(async move {
        let result = controller
            .executor
            .approve(id, &who, &crate::executor::Events(events))
            .await;
        controller.record(
            &auditor,
            "approve",
            &target,
            &crate::routes::outcome(&result),
        );
        result
    });
    match tokio::time::timeout(DECISION_WAIT, &mut run).await {
        Ok(Ok(Err(e))) => refused(e, caller).await,
        _ => Redirect::to(&format!("/?approved={id}")).into_response(),
    }
}

/// Names in paths: what wharf's names are made of, or nothing is looked up.
fn plain_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// How many deployments of each environment a service page lists.
const HISTORY_SHOWN: usize = 15;

async fn service_page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    if !plain_name(&service) {
        return problem(StatusCode::NOT_FOUND, "no such service");
    }
    let (controller, name) = (c.clone(), service.clone());
    match tokio::task::spawn_blocking(move || service_sections(&controller, &caller, &name)).await {
        Ok(Ok(sections)) => html(
            StatusCode::OK,
            wharf_dashboard::service_page(&viewer, &service, &sections),
        ),
        Ok(Err(e)) => problem(e.status, &e.message),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
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

/// The environments of `service` the caller may read, in pipeline order, each with its
/// instances and history.
fn service_sections(
    c: &Controller,
    caller: &Caller,
    service: &str,
) -> Result<Vec<wharf_dashboard::EnvSection>, ServerError> {
    let query = crate::routes::StatusQuery {
        env: None,
        service: Some(service.to_owned()),
    };
    let report = crate::routes::status_report(c, caller, &query)?;
    let pipeline = c
        .definitions
        .current()
        .map(|current| current.definition.pipeline.clone())
        .unwrap_or_default();
    let mut sections = Vec::new();
    for env in pipeline.iter().filter(|e| caller.may(e, Action::Read)) {
        let status = report.services.iter().find(|s| &s.env == env);
        let history: Vec<_> = c
            .store
            .history(service, env)?
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
            .collect();
        if status.is_none() && history.is_empty() {
            continue;
        }
        sections.push(wharf_dashboard::EnvSection {
            env: env.clone(),
            address: status.and_then(|s| s.address.clone()),
            warnings: status.map(|s| s.warnings.clone()).unwrap_or_default(),
            instances: status
                .map(|s| {
                    s.instances
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
                        })
                        .collect()
                })
                .unwrap_or_default(),
            history,
        });
    }
    Ok(sections)
}

#[derive(Deserialize, Default)]
struct HostDone {
    drained: Option<String>,
    undrained: Option<String>,
}

async fn hosts_page(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Query(done): Query<HostDone>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    let notice = match (done.drained, done.undrained) {
        (Some(host), _) => Some(format!(
            "drained {host}: it takes no new instances, and its pooled ones move"
        )),
        (_, Some(host)) => Some(format!("undrained {host}: it takes instances again")),
        _ => None,
    };
    hosts_with(&c, caller, &viewer, StatusCode::OK, notice.as_deref()).await
}

/// The hosts page for `viewer`, answered with `status` and a notice.
async fn hosts_with(
    c: &Arc<Controller>,
    caller: Caller,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    let controller = c.clone();
    let rows = tokio::task::spawn_blocking(move || host_rows(&controller, &caller)).await;
    match rows {
        Ok(Ok(rows)) => html(status, wharf_dashboard::hosts_page(viewer, &rows, notice)),
        Ok(Err(e)) => problem(e.status, &e.message),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn host_rows(
    c: &Controller,
    caller: &Caller,
) -> Result<Vec<wharf_dashboard::HostRow>, ServerError> {
    let statuses = c.fleet.statuses();
    Ok(c.store
        .hosts(None)?
        .into_iter()
        .filter(|h| caller.may(&h.env, Action::Read))
        .map(|h| wharf_dashboard::HostRow {
            instances: statuses
                .iter()
                .filter(|(p, _)| p.key.env == h.env && p.key.node == h.name)
                .count(),
            can_admin: caller.may(&h.env, Action::Admin),
            state: h.state.as_str().to_owned(),
            labels: h.labels.into_iter().collect(),
            cpu_millis: h.capacity.cpu_millis,
            memory_bytes: h.capacity.memory_bytes,
            address: h.address,
            name: h.name,
            env: h.env,
        })
        .collect())
}

/// `POST /ui/hosts/{env}/{name}/drain|undrain`: checked as `wharf host drain` is.
async fn host_action(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Path((env, name, action)): Path<(String, String, String)>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return to_sign_in();
    };
    if !wharf_secrets::constant_time_eq(form.csrf.as_bytes(), viewer.csrf.as_bytes()) {
        return problem(
            StatusCode::FORBIDDEN,
            "the form token does not match: load the page again",
        );
    }
    if !matches!(action.as_str(), "drain" | "undrain") {
        return problem(StatusCode::NOT_FOUND, "no such host action");
    }
    let plain = |s: &str| {
        (1..=253).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !plain(&name) || !plain(&env) {
        return problem(StatusCode::BAD_REQUEST, "no such host");
    }
    let call = format!("host {action}");
    if let Err(e) = crate::routes::authorize(&c, &caller, &env, Action::Admin, &call, &name) {
        return hosts_with(&c, caller, &viewer, e.status, Some(&e.message)).await;
    }
    let query = crate::routes::HostsQuery {
        env: Some(env.clone()),
    };
    let result = crate::routes::act_on_host(&c, name.clone(), action.clone(), query).await;
    c.record(&caller, &call, &name, &crate::routes::outcome(&result));
    match result {
        Ok(_) => {
            let done = if action == "drain" {
                "drained"
            } else {
                "undrained"
            };
            Redirect::to(&format!("/ui/hosts?{done}={name}")).into_response()
        }
        Err(e) => hosts_with(&c, caller, &viewer, e.status, Some(&e.message)).await,
    }
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

async fn sign_in_page(State(c): State<Arc<Controller>>, Query(q): Query<CodeQuery>) -> Response {
    let Some(code) = q.code.filter(|c| c.len() <= 128) else {
        return html(StatusCode::OK, wharf_dashboard::sign_in_page(None));
    };
    match c.ui_codes.redeem(&code) {
        Some(credential) => {
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&credential));
            response
        }
        None => html(
            StatusCode::UNAUTHORIZED,
            wharf_dashboard::sign_in_page(Some(
                "this sign-in address was used already or is older than two minutes: run `wharf ui` again",
            )),
        ),
    }
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(State(c): State<Arc<Controller>>, Form(form): Form<SignInForm>) -> Response {
    let token = form.token.trim();
    if !c.auth_required {
        return html(
            StatusCode::UNAUTHORIZED,
            wharf_dashboard::sign_in_page(Some(
                "this development controller takes no tokens: run `wharf ui` to sign in",
            )),
        );
    }
    let refused = if token.is_empty() || token.len() > MAX_CREDENTIAL {
        Some("give an API token".to_owned())
    } else {
        Caller::from_token(&c, token).err().map(|e| e.message)
    };
    if let Some(why) = refused {
        return html(
            StatusCode::UNAUTHORIZED,
            wharf_dashboard::sign_in_page(Some(&why)),
        );
    }
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(token));
    response
}

#[derive(Deserialize)]
struct ChangeForm {
    /// Missing is refused as a wrong one is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> Response {
    let Some(credential) = session(&headers) else {
        return to_sign_in();
    };
    if !wharf_secrets::constant_time_eq(form.csrf.as_bytes(), csrf_token(&c, credential).as_bytes())
    {
        return html(
            StatusCode::FORBIDDEN,
            "the form token does not match".into(),
        );
    }
    let mut response = to_sign_in();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(""));
    response
}

/// `wharf ui`: a one-time address signing a browser in as the caller.
async fn new_sign_in_code(
    State(c): State<Arc<Controller>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<wharf_api::SignInCode>, ServerError> {
    // The caller authenticated with it: the open controller's key, or its token.
    let credential = if caller.is_open() {
        c.local_key.clone()
    } else {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| ServerError::new(StatusCode::UNAUTHORIZED, "no API token"))?
    };
    let code = c.ui_codes.issue(credential).map_err(|e| {
        ServerError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot make a code: {e}"),
        )
    })?;
    Ok(Json(wharf_api::SignInCode {
        path: format!("/ui/sign-in?code={code}"),
        valid_secs: CODE_LIFETIME.as_secs(),
    }))
}

/// The matrix `caller` may see: the environments it may read, in pipeline order, and
/// every service of the definition or running there.
pub(crate) fn matrix(c: &Controller, caller: &Caller) -> Result<Matrix, ServerError> {
    let report = crate::routes::status_report(c, caller, &crate::routes::StatusQuery::default())?;
    let (environments, mut services) = match c.definitions.current() {
        Ok(current) => {
            let def = &current.definition;
            let envs: Vec<String> = def
                .pipeline
                .iter()
                .filter(|e| caller.may(e, Action::Read))
                .cloned()
                .collect();
            let services: Vec<String> = def.services.keys().cloned().collect();
            (envs, services)
        }
        Err(_) => (Vec::new(), Vec::new()),
    };
    let pending = c.executor.pending()?;
    let mut cells = Vec::new();
    for status in report.services {
        if !services.contains(&status.service) {
            services.push(status.service.clone());
        }
        let waiting = pending
            .iter()
            .filter(|d| d.service == status.service && d.env == status.env)
            .map(|d| d.id)
            .collect();
        cells.push(Cell {
            can_approve: caller.may(&status.env, Action::Approve),
            healthy: status
                .instances
                .iter()
                .filter(|i| i.health == Health::Healthy)
                .count(),
            desired: status.desired,
            drift: status.drift.map(|d| (d.previous_env, d.keys)),
            waiting,
            versions: status.versions,
            service: status.service,
            env: status.env,
        });
    }
    for d in &pending {
        let known = cells
            .iter()
            .any(|cell| cell.service == d.service && cell.env == d.env);
        if !known && caller.may(&d.env, Action::Read) {
            cells.push(Cell {
                service: d.service.clone(),
                env: d.env.clone(),
                waiting: vec![d.id],
                can_approve: caller.may(&d.env, Action::Approve),
                ..Cell::default()
            });
        }
    }
    services.sort();
    Ok(Matrix {
        environments,
        services,
        cells,
    })
}

/// `GET /ui/events`: every cell of the viewer's matrix once, then each cell again when
/// a committed write changed it.
async fn events(State(c): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    let Some((caller, viewer)) = viewer(&c, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(changes) = c.store.changes() else {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    };
    struct Follow {
        c: Arc<Controller>,
        caller: Caller,
        viewer: Viewer,
        changes: tokio::sync::watch::Receiver<u64>,
        sent: HashMap<String, CellUpdate>,
        first: bool,
    }
    let start = Follow {
        c,
        caller,
        viewer,
        changes,
        sent: HashMap::new(),
        first: true,
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        loop {
            if !f.first {
                f.changes.changed().await.ok()?;
                tokio::time::sleep(COALESCE).await;
                f.changes.borrow_and_update();
            }
            f.first = false;
            let (controller, caller) = (f.c.clone(), f.caller.clone());
            let Ok(Ok(matrix)) =
                tokio::task::spawn_blocking(move || matrix(&controller, &caller)).await
            else {
                continue;
            };
            let mut news = Vec::new();
            for cell in matrix.grid() {
                let update = wharf_dashboard::cell_update(&f.viewer, &cell);
                if f.sent.get(&update.id) != Some(&update) {
                    f.sent.insert(update.id.clone(), update.clone());
                    news.push(update);
                }
            }
            if !news.is_empty() {
                let events: Vec<Result<Event, Infallible>> = news
                    .iter()
                    .filter_map(|u| Event::default().event("cell").json_data(u).ok())
                    .map(Ok)
                    .collect();
                return Some((futures_util::stream::iter(events), f));
            }
        }
    })
    .flatten();
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    secure(response.headers_mut());
    response
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", wharf_dashboard::SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", wharf_dashboard::STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secure(headers);
    response
}
