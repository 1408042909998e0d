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
use std::sync::Arc;
use std::time::Duration;

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

mod service;
mod sessions;
pub(crate) use sessions::Sessions;
use sessions::{CODE_LIFETIME, Credential};

use crate::Controller;
use crate::auth::{Action, Caller};
use crate::error::ServerError;

/// The cookie holding the session id.
const SESSION_COOKIE: &str = "wharf_session";
/// Changes this close together are one update of the page (every heartbeat is a
/// write, so this bounds how often a page's matrix is made again).
const COALESCE: Duration = Duration::from_millis(200);
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
        .route("/ui/services/{service}", get(service::page))
        .route("/ui/services/{service}/{env}/logs", get(service::logs))
        .route("/ui/services/{service}/{env}/{action}", post(service::act))
        .route("/ui/hosts/{env}/{name}/{action}", post(host_action))
        .route("/ui/live.js", get(script))
        .route("/ui/style.css", get(style))
}

/// The session id a signed-in browser sends, if any.
fn session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// Who a session's credential signs in, checked as the API checks a caller: a token
/// must still be known and not revoked; an open sign-in needs an open controller.
fn caller_of(c: &Controller, credential: &Credential) -> Result<Caller, ServerError> {
    match (credential, c.auth_required) {
        (Credential::Token(token), true) => Caller::from_token(c, token),
        (Credential::Open { user }, false) => Ok(Caller::open(user.clone())),
        _ => Err(ServerError::new(
            StatusCode::UNAUTHORIZED,
            "this sign-in does not fit the controller",
        )),
    }
}

/// The form token of a session: tied to it and to this controller's key.
fn csrf_token(c: &Controller, session: &str) -> String {
    wharf_secrets::keyed_digest(c.local_key.as_bytes(), &format!("wharf csrf\0{session}"))
}

/// The signed-in viewer of a request.
fn viewer(c: &Controller, headers: &HeaderMap) -> Option<(Caller, Viewer)> {
    let session = session(headers)?;
    let caller = caller_of(c, &c.ui_sessions.credential(&session)?).ok()?;
    let viewer = Viewer {
        name: caller.name.clone(),
        open: caller.is_open(),
        csrf: csrf_token(c, &session),
    };
    Some((caller, viewer))
}

/// Whether a post comes from another site: a browser says so in `Sec-Fetch-Site`, or
/// names another origin than this controller in `Origin`. (A form on another site may
/// post to this one; SameSite keeps only the cookie back, and a sign-in needs none.)
fn cross_site(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if value("sec-fetch-site").is_some_and(|site| !matches!(site, "same-origin" | "none")) {
        return true;
    }
    match (value("origin"), value("host")) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        (Some(_), None) => true,
        _ => false,
    }
}

fn from_elsewhere() -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "this form was posted from another site, so nothing was done",
    )
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
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn to_sign_in() -> Response {
    Redirect::to("/ui/sign-in").into_response()
}

/// The cookie that keeps session `id` (or, empty, forgets it).
fn session_cookie(id: &str) -> HeaderValue {
    let age = if id.is_empty() { "; Max-Age=0" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{age}"
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

/// Reads the controller's state off the async threads (SQLite), then renders it; a
/// failure is a page saying what went wrong.
async fn rendered<T: Send + 'static>(
    c: &Arc<Controller>,
    status: StatusCode,
    read: impl FnOnce(&Controller) -> Result<T, ServerError> + Send + 'static,
    render: impl FnOnce(T) -> String,
) -> Response {
    let controller = c.clone();
    let begun = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || read(&controller)).await {
        Ok(Ok(state)) => {
            let read = begun.elapsed();
            let page = render(state);
            let mut response = html(status, page);
            // How long the page took, for the browser's developer tools and the
            // benchmark (`cargo bench -p wharf --bench dashboard`).
            let timing = format!(
                "read;dur={:.2}, render;dur={:.2}",
                read.as_secs_f64() * 1000.0,
                (begun.elapsed() - read).as_secs_f64() * 1000.0
            );
            if let Ok(value) = HeaderValue::from_str(&timing) {
                response.headers_mut().insert("server-timing", value);
            }
            response
        }
        Ok(Err(e)) => problem(e.status, &e.message),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The matrix page for `viewer`, answered with `status` and a notice.
async fn page_with(
    c: &Arc<Controller>,
    caller: Caller,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    rendered(
        c,
        status,
        move |c| matrix(c, &caller),
        |matrix| wharf_dashboard::matrix_page(viewer, &matrix, notice),
    )
    .await
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
    if let Err(refused) = change_allowed(&c, &headers, &form) {
        return refused.into_response();
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
        Ok(Err(stopped)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "the approval stopped before it finished ({stopped}); `wharf history` shows what it changed"
            ),
        ),
        _ => Redirect::to(&format!("/?approved={id}")).into_response(),
    }
}

/// Names in paths: what wharf's names are made of, or nothing is looked up.
fn plain_name(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
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
    rendered(
        c,
        status,
        move |c| host_rows(c, &caller),
        |rows| wharf_dashboard::hosts_page(viewer, &rows, notice),
    )
    .await
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
    if let Err(refused) = change_allowed(&c, &headers, &form) {
        return refused.into_response();
    }
    if !matches!(action.as_str(), "drain" | "undrain") {
        return problem(StatusCode::NOT_FOUND, "no such host action");
    }
    if !plain_name(&name) || !plain_name(&env) {
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

/// Signs the browser in: a new session for `credential`, its id in the cookie.
fn signed_in(c: &Controller, credential: Credential) -> Response {
    match c.ui_sessions.open(credential) {
        Ok(id) => {
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&id));
            response
        }
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot make a session: {e}"),
        ),
    }
}

async fn sign_in_page(State(c): State<Arc<Controller>>, Query(q): Query<CodeQuery>) -> Response {
    let Some(code) = q.code.filter(|c| c.len() <= 128) else {
        return html(StatusCode::OK, wharf_dashboard::sign_in_page(None));
    };
    match c.ui_sessions.redeem_code(&code) {
        Some(credential) => signed_in(&c, credential),
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

async fn sign_in(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if cross_site(&headers) {
        return from_elsewhere();
    }
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
    signed_in(&c, Credential::Token(token.to_owned()))
}

#[derive(Deserialize)]
struct ChangeForm {
    /// Missing is refused as a wrong one is (403), not as a malformed form.
    #[serde(default)]
    csrf: String,
}

/// Why a posted change does not go on.
enum Refused {
    Elsewhere,
    NotSignedIn,
    WrongFormToken,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Elsewhere => from_elsewhere(),
            Self::NotSignedIn => to_sign_in(),
            Self::WrongFormToken => problem(
                StatusCode::FORBIDDEN,
                "the form token does not match: load the page again",
            ),
        }
    }
}

/// Whether a change may go on: posted from this controller's own page, with the form
/// token of the session it comes with; that session.
fn change_allowed(
    c: &Controller,
    headers: &HeaderMap,
    form: &ChangeForm,
) -> Result<String, Refused> {
    if cross_site(headers) {
        return Err(Refused::Elsewhere);
    }
    let session = session(headers).ok_or(Refused::NotSignedIn)?;
    let expected = csrf_token(c, &session);
    if !wharf_secrets::constant_time_eq(form.csrf.as_bytes(), expected.as_bytes()) {
        return Err(Refused::WrongFormToken);
    }
    Ok(session)
}

async fn sign_out(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> Response {
    let session = match change_allowed(&c, &headers, &form) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    c.ui_sessions.close(&session);
    let mut response = to_sign_in();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(""));
    response
}

/// `wharf ui`: a one-time address signing a browser in as the caller.
#[utoipa::path(
    post,
    path = "/v1/ui/sign-in-codes",
    tag = "dashboard",
    responses((status = 200, body = wharf_api::SignInCode))
)]
pub(crate) async fn new_sign_in_code(
    State(c): State<Arc<Controller>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<wharf_api::SignInCode>, ServerError> {
    // As the caller: the open controller's user, or the token it authenticated with.
    let credential = if caller.is_open() {
        Credential::Open {
            user: caller.name.clone(),
        }
    } else {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Credential::Token(t.to_owned()))
            .ok_or_else(|| ServerError::new(StatusCode::UNAUTHORIZED, "no API token"))?
    };
    let code = c
        .ui_sessions
        .issue_code(credential)
        .map_err(|e| {
            ServerError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a code: {e}"),
            )
        })?
        .ok_or_else(|| {
            ServerError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sign-in addresses wait to be used",
            )
            .hint("use one, or wait two minutes")
        })?;
    Ok(Json(wharf_api::SignInCode {
        path: format!("/ui/sign-in?code={code}"),
        valid_secs: CODE_LIFETIME.as_secs(),
    }))
}

/// The matrix `caller` may see: the environments it may read, in pipeline order, and
/// every service of the definition or running there.
pub(crate) fn matrix(c: &Controller, caller: &Caller) -> Result<Matrix, ServerError> {
    let report = crate::status::status_report(c, caller, &crate::routes::StatusQuery::default())?;
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
    let (Some((_, viewer)), Some(session)) = (viewer(&c, &headers), session(&headers)) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(changes) = c.store.changes() else {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    };
    struct Follow {
        c: Arc<Controller>,
        /// Checked again before each update: a session signed out or a token revoked
        /// ends the stream.
        session: String,
        viewer: Viewer,
        changes: tokio::sync::watch::Receiver<u64>,
        sent: HashMap<String, CellUpdate>,
        first: bool,
    }
    let start = Follow {
        c,
        session,
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
            let (controller, session) = (f.c.clone(), f.session.clone());
            let looked = tokio::task::spawn_blocking(move || {
                let credential = controller.ui_sessions.credential(&session)?;
                let caller = caller_of(&controller, &credential).ok()?;
                Some(matrix(&controller, &caller))
            })
            .await;
            let matrix = match looked {
                Ok(Some(Ok(matrix))) => matrix,
                Ok(None) => return None,
                _ => continue,
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
