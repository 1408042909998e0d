//! The definition lives in the controller, as Nomad's jobs do. A caller submits the text
//! of its wharf.yaml; the controller parses and validates it itself, decides who may
//! make the change (policy needs `admin` on each environment it touches), and stores it
//! as a numbered revision. Every deploy spec, pipeline rule and approval rule is derived
//! from the stored revision, never from what a caller sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;
use wharf_api::{DefinitionApplied, DefinitionRevision, DefinitionSource, DefinitionSubmission};
use wharf_core::Definition;
use wharf_core::decide::{RevisionChange, revision_change};
use wharf_core::spec::{DeploySpec, SpecError};
use wharf_store::DefinitionRecord;

use crate::auth::{Action, Caller};
use crate::error::ServerError;
use crate::extract::{Json, Path};
use crate::routes::{acting_user, outcome};
use crate::{Controller, now_millis};

mod ssh;

use ssh::add_recorded_hosts;

/// The service name a held definition revision is listed under.
pub const DEFINITION_SERVICE: &str = "(definition)";

/// The current revision, parsed once.
pub struct Current {
    pub revision: i64,
    pub digest: String,
    pub definition: Definition,
    /// Specs made from this revision, each once: a revision never changes, and a
    /// status report needs every service's spec in every environment.
    specs: Mutex<HashMap<(String, String), Arc<DeploySpec>>>,
}

impl Current {
    fn new(revision: i64, digest: String, definition: Definition) -> Self {
        Self {
            revision,
            digest,
            definition,
            specs: Mutex::default(),
        }
    }
}

/// The controller's definition: its stored revisions, the current one parsed once
/// (parsing a large definition takes a while), and applies serialized so each is judged
/// against the revision it replaces.
pub struct Definitions {
    store: Arc<dyn wharf_store::Store>,
    /// Callers are authenticated: only then can approvals hold a revision.
    auth_required: bool,
    current: Mutex<Option<Arc<Current>>>,
    applying: Mutex<()>,
}

impl Definitions {
    pub fn new(store: Arc<dyn wharf_store::Store>, auth_required: bool) -> Self {
        Self {
            store,
            auth_required,
            current: Mutex::new(None),
            applying: Mutex::new(()),
        }
    }

    fn get(&self) -> Option<Arc<Current>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, current: Arc<Current>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(current);
    }
}

pub fn routes() -> OpenApiRouter<Arc<Controller>> {
    let definition_limit = axum::extract::DefaultBodyLimit::max(crate::routes::MAX_DEFINITION_BODY);
    OpenApiRouter::new()
        .routes(routes!(list, apply).layer(definition_limit))
        .routes(routes!(show))
        .routes(routes!(ssh::routes::show))
        .routes(routes!(ssh::routes::add))
        .routes(routes!(ssh::routes::remove))
}

type Ctl = State<Arc<Controller>>;

fn revision_view(r: &DefinitionRecord) -> DefinitionRevision {
    DefinitionRevision {
        state: r.state.clone(),
        revision: r.revision,
        digest: r.digest.clone(),
        path: r.path.clone(),
        user: r.user.clone(),
        at: r.at,
        message: r.message.clone(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/definitions",
    operation_id = "list_definitions",
    tag = "definitions",
    responses((status = 200, body = Vec<DefinitionRevision>))
)]
async fn list(
    State(c): Ctl,
    _caller: Caller,
) -> Result<Json<Vec<DefinitionRevision>>, ServerError> {
    let store = c.store.clone();
    let records = tokio::task::spawn_blocking(move || store.definitions())
        .await
        .map_err(|e| ServerError::internal(e.to_string()))??;
    Ok(Json(records.iter().map(revision_view).collect()))
}

#[utoipa::path(
    get,
    path = "/v1/definitions/{revision}",
    operation_id = "show_definition",
    tag = "definitions",
    params(("revision" = String, Path, description = "A revision number, or `current`")),
    responses((status = 200, body = DefinitionSource))
)]
async fn show(
    State(c): Ctl,
    _caller: Caller,
    Path(revision): Path<String>,
) -> Result<Json<DefinitionSource>, ServerError> {
    let wanted = match revision.as_str() {
        "current" => None,
        n => Some(n.parse::<i64>().map_err(|_| {
            ServerError::bad_request(format!("`{n}` is not a revision number"))
                .hint("give a number, as `wharf definition history` lists them, or `current`")
        })?),
    };
    let record = c.store.definition(wanted)?.ok_or_else(|| match wanted {
        Some(n) => ServerError::not_found(format!("there is no definition revision {n}"))
            .hint("`wharf definition history` lists them"),
        None => no_definition(),
    })?;
    Ok(Json(DefinitionSource {
        revision: revision_view(&record),
        source: record.source,
        files: record.files,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/definitions",
    operation_id = "apply_definition",
    tag = "definitions",
    request_body = DefinitionSubmission,
    responses((status = 201, description = "A new revision.", body = DefinitionApplied), (status = 200, description = "The same text was the current revision.", body = DefinitionApplied))
)]
async fn apply(
    State(c): Ctl,
    caller: Caller,
    Json(submission): Json<DefinitionSubmission>,
) -> Result<(StatusCode, Json<DefinitionApplied>), ServerError> {
    let target = format!("definition {}", submission.path);
    let user = acting_user(&c, &caller, &submission.user);
    // Parsing a large definition is CPU work: off the async threads.
    let worker = c.clone();
    let (caller, result) = tokio::task::spawn_blocking(move || {
        let result = worker.definitions.apply(&caller, submission, &user);
        (caller, result)
    })
    .await
    .map_err(|e| ServerError::internal(format!("the definition check stopped: {e}")))?;
    c.record(&caller, "apply", &target, &outcome(&result));
    let applied = result?;
    let status = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)))
}

fn no_definition() -> ServerError {
    ServerError::new(
        StatusCode::CONFLICT,
        "the controller has no definition yet".to_owned(),
    )
    .hint("`wharf apply` submits wharf.yaml (and `wharf deploy` does when it changed)")
}

fn digest_of(source: &str, files: &std::collections::BTreeMap<String, String>) -> String {
    wharf_core::files::definition_digest(source, files)
}

/// The grants a revision change needs: deploy somewhere for any change, `ENV:admin`
/// for an environment's policy, `ENV:config` for its declared configuration, and
/// `ENV:deploy` in every environment that runs a changed service (before or after):
/// a token of one environment cannot change what another runs.
fn required(
    change: &RevisionChange,
    old: Option<&Definition>,
    new: &Definition,
) -> Vec<(String, Action)> {
    let mut needed: Vec<(String, Action)> = change
        .policy
        .iter()
        .map(|env| (env.clone(), Action::Admin))
        .collect();
    needed.extend(
        change
            .config
            .iter()
            .map(|env| (env.clone(), Action::Config)),
    );
    for definition in old.into_iter().chain([new]) {
        for (env, environment) in &definition.environments {
            let names = environment.service_names();
            if change.services.iter().any(|s| names.contains(&s.as_str())) {
                needed.push((env.clone(), Action::Deploy));
            }
        }
    }
    needed.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    needed.dedup_by(|a, b| a.0 == b.0 && a.1.as_str() == b.1.as_str());
    needed
}

impl Definitions {
    /// The current revision of the definition, parsed.
    pub fn current(&self) -> Result<Arc<Current>, ServerError> {
        // Only the number on the fast path: the text (megabytes, for large definitions)
        // is read and parsed once per revision.
        let in_force = self
            .store
            .definition_in_force()?
            .ok_or_else(no_definition)?;
        if let Some(current) = self.get().filter(|c| c.revision == in_force) {
            return Ok(current);
        }
        let record = self
            .store
            .definition(Some(in_force))?
            .ok_or_else(no_definition)?;
        // The controller validated it before storing it; a failure here means the
        // stored text no longer parses with this build of wharf.
        let files = wharf_core::definition::Bundled(&record.files);
        let mut definition =
            wharf_core::load(&record.source, &record.path, &files).map_err(|e| {
                ServerError::internal(format!(
                    "stored definition revision {} no longer validates:\n{e}",
                    record.revision
                ))
                .hint("`wharf apply` a corrected wharf.yaml")
            })?;
        for (target, count) in &record.scale {
            let Some((env, service)) = target.split_once('/') else {
                continue;
            };
            // Checked when it was set, against this very text.
            if let Err(e) = wharf_core::scale::scale(&mut definition, env, service, *count) {
                tracing::warn!(
                    revision = record.revision,
                    "ignoring `wharf scale` of {target}: {e}"
                );
            }
        }
        add_recorded_hosts(&mut definition, &record.ssh_hosts);
        let current = Arc::new(Current::new(record.revision, record.digest, definition));
        self.set(current.clone());
        Ok(current)
    }

    /// How `service` runs in `env`, from the stored definition.
    pub fn spec_for(&self, service: &str, env: &str) -> Result<DeploySpec, ServerError> {
        self.spec_shared(service, env).map(|spec| (*spec).clone())
    }

    /// The same, shared: made once per revision.
    pub fn spec_shared(&self, service: &str, env: &str) -> Result<Arc<DeploySpec>, ServerError> {
        let current = self.current()?;
        let key = (service.to_owned(), env.to_owned());
        let made = current
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(spec) = made {
            return Ok(spec);
        }
        let spec = Arc::new(
            current
                .definition
                .deploy_spec(service, env)
                .map_err(spec_error)?,
        );
        current
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, spec.clone());
        Ok(spec)
    }

    /// Stores the current revision again with `service` scaled to `count` in `env`, as
    /// a new revision (its text and files unchanged, so an apply of the same wharf.yaml
    /// keeps it; a changed wharf.yaml applied replaces it).
    pub fn scale(
        &self,
        env: &str,
        service: &str,
        count: u32,
        user: &str,
    ) -> Result<DefinitionRevision, ServerError> {
        let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current()?;
        let mut definition = current.definition.clone();
        wharf_core::scale::scale(&mut definition, env, service, count).map_err(|e| {
            let err = ServerError::bad_request(e.to_string());
            match e.hint() {
                Some(h) => err.hint(h),
                None => err,
            }
        })?;
        // The new count must still place: a deploy spec of it is made here.
        definition.deploy_spec(service, env).map_err(spec_error)?;
        let mut record = self.record_of(&current)?;
        record.scale.insert(format!("{env}/{service}"), count);
        let message = format!("wharf scale {service} --env {env} {count}");
        self.store_again(record, definition, user, message)
    }

    /// The stored record of the revision in force.
    fn record_of(&self, current: &Current) -> Result<DefinitionRecord, ServerError> {
        self.store
            .definition(Some(current.revision))?
            .ok_or_else(no_definition)
    }

    /// Stores `record` (the revision in force, changed by a command: its text and
    /// files as they were) as the next revision, and makes `definition`, already
    /// changed alike, the one in force.
    fn store_again(
        &self,
        mut record: DefinitionRecord,
        definition: Definition,
        user: &str,
        message: String,
    ) -> Result<DefinitionRevision, ServerError> {
        record.user = user.to_owned();
        record.at = now_millis();
        record.message = message;
        let stored = self.store.put_definition(&record)?;
        self.set(Arc::new(Current::new(
            stored.revision,
            stored.digest.clone(),
            definition,
        )));
        Ok(revision_view(&stored))
    }

    /// Refuses an environment the stored definition does not have.
    pub fn known_environment(&self, env: &str) -> Result<(), ServerError> {
        self.check_names(None, Some(env))
    }

    /// Refuses a service or environment that neither the stored definition nor the
    /// stored state knows (404, with a did-you-mean hint from the definition). Names the
    /// definition dropped stay usable while instances or history of them remain, so a
    /// removed service can still be stopped, and its logs and history read.
    pub fn check_names(&self, service: Option<&str>, env: Option<&str>) -> Result<(), ServerError> {
        // Before any definition is stored there is nothing to check names against.
        let current = match self.current() {
            Ok(current) => current,
            Err(e) if e.status == StatusCode::CONFLICT => return Ok(()),
            Err(e) => return Err(e),
        };
        let defined = |check: &dyn Fn(&Definition) -> Result<(), SpecError>| {
            check(&current.definition).map_err(spec_error)
        };
        if let Some(env) = env
            && let Err(e) = defined(&|d| d.environment(env).map(|_| ()))
            && self.store.instances(Some(env), None)?.is_empty()
        {
            let known =
                service.is_some_and(|s| !self.store.history(s, env).unwrap_or_default().is_empty());
            if !known {
                return Err(e);
            }
        }
        if let Some(service) = service
            && let Err(e) = defined(&|d| d.service(service).map(|_| ()))
        {
            let known = match env {
                Some(env) => {
                    !self.store.instances(Some(env), Some(service))?.is_empty()
                        || !self.store.history(service, env)?.is_empty()
                }
                None => !self.store.instances(None, Some(service))?.is_empty(),
            };
            if !known {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Refuses a change while a definition revision waits for approval: it was made
    /// against the revision in force, and would drop what came after it.
    fn refuse_while_held(&self, current: i64) -> Result<(), ServerError> {
        let now = now_millis();
        let waiting = self.store.pending_deployments()?.into_iter().find(|d| {
            let window = d
                .spec
                .field("approval_expires_ms")
                .and_then(|v| v.as_u64())
                .map(std::time::Duration::from_millis);
            d.kind == wharf_core::lifecycle::DeploymentKind::Definition
                && d.state.can_be_approved()
                && !wharf_core::decide::is_expired(d.started_at, window, now)
        });
        match waiting {
            None => Ok(()),
            Some(waiting) => Err(ServerError::new(
                StatusCode::CONFLICT,
                format!(
                    "definition revision {} waits for approval (deployment #{}); nothing was changed",
                    waiting.config_revision, waiting.id
                ),
            )
            .hint(format!(
                "an approver decides it (`wharf approve {id}` or `wharf reject {id}`); until then revision {current} stays in force (`wharf definition show` prints it)",
                id = waiting.id,
            ))),
        }
    }

    /// Validates a submitted definition and stores it as the next revision, if the
    /// caller may make each change it holds. The same text as the current revision
    /// changes nothing.
    fn apply(
        &self,
        caller: &Caller,
        submission: DefinitionSubmission,
        user: &str,
    ) -> Result<DefinitionApplied, ServerError> {
        // Submitting is part of deploying: a deploy grant somewhere is needed.
        if !caller.may_somewhere(Action::Deploy) {
            caller.require("*", Action::Deploy)?;
        }
        // One apply at a time, so none is judged against a revision another replaced.
        let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let path = crate::edge::submission_path(&submission);
        let digest = digest_of(&submission.source, &submission.files);
        let previous = match self.current() {
            Ok(current) => Some(current),
            Err(e) if e.status == StatusCode::CONFLICT => None,
            Err(e) => return Err(e),
        };
        if let Some(current) = previous.as_ref().filter(|c| c.digest == digest) {
            let record = self
                .store
                .definition(Some(current.revision))
                .map_err(ServerError::from)?
                .ok_or_else(no_definition)?;
            return Ok(DefinitionApplied {
                held_by: None,
                revision: revision_view(&record),
                created: false,
                policy_changed: Vec::new(),
                config_changed: Vec::new(),
                services_changed: Vec::new(),
            });
        }
        self.refuse_while_held(previous.as_ref().map_or(0, |c| c.revision))?;
        let mut definition = crate::edge::definition(&submission)?;
        // Machines `wharf host add` recorded stay, unless this text lists them itself
        // or no longer reaches its environment over SSH.
        let recorded = match &previous {
            Some(p) => self.record_of(p)?.ssh_hosts,
            None => Default::default(),
        };
        let ssh_hosts = add_recorded_hosts(&mut definition, &recorded);
        let change = revision_change(previous.as_ref().map(|c| &c.definition), &definition);
        for (env, action) in required(
            &change,
            previous.as_ref().map(|c| &c.definition),
            &definition,
        ) {
            if let Err(e) = caller.require(&env, action) {
                let what = match action {
                    Action::Admin => "its policy (pipeline, approval, hosts, nodes or pools)",
                    Action::Config => "its declared configuration",
                    _ => "a service that runs there",
                };
                let first = previous.is_none();
                return Err(ServerError {
                    message: if first {
                        format!(
                            "{}: the controller has no definition yet, and the first revision defines every environment",
                            e.message
                        )
                    } else {
                        format!("{}: this revision changes {what} in `{env}`", e.message)
                    },
                    hint: Some(if first {
                        "an admin runs `wharf apply` once (the bootstrap admin token may); after that, revisions need only the grants of what they change".to_owned()
                    } else {
                        format!(
                            "a token with `{env}:{}` may make this change; `wharf definition diff` shows it",
                            action.as_str()
                        )
                    }),
                    ..e
                });
            }
        }
        let record = DefinitionRecord {
            revision: 0,
            digest: digest.clone(),
            path,
            source: submission.source,
            files: submission.files,
            scale: Default::default(),
            ssh_hosts,
            user: user.to_owned(),
            at: now_millis(),
            message: submission.message.unwrap_or_default(),
            state: String::new(),
        };
        // Loosening or reshaping an approval environment's policy needs an approval
        // itself: one person alone cannot remove the four-eyes rule.
        // An open controller trusts every caller alike (and refuses approvals), so
        // nothing is held there.
        let guarded: Vec<(&str, std::time::Duration)> = previous
            .as_ref()
            .filter(|_| self.auth_required)
            .map(|p| {
                change
                    .policy
                    .iter()
                    .filter_map(|env| {
                        let window = p.definition.environments.get(env)?.approval?;
                        Some((env.as_str(), window))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let held = if let Some(&(first, window)) = guarded.first() {
            let envs: Vec<&str> = guarded.iter().map(|(e, _)| *e).collect();
            let approval = wharf_store::NewDeployment {
                service: DEFINITION_SERVICE.to_owned(),
                env: first.to_owned(),
                kind: wharf_core::lifecycle::DeploymentKind::Definition,
                version: String::new(),
                digest: digest.clone(),
                config_digest: String::new(),
                spec: wharf_store::SpecJson::of(&serde_json::json!({
                    "envs": envs,
                    "approval_expires_ms": window.as_millis() as u64,
                })),
                user: user.to_owned(),
                started_at: now_millis(),
                config_revision: 0,
                forced: false,
                pending_approval: true,
            };
            Some(self.store.hold_definition(&record, &approval)?)
        } else {
            None
        };
        let (record, held) = match held {
            Some((record, id)) => (record, Some(id)),
            None => {
                let record = self.store.put_definition(&record)?;
                self.set(Arc::new(Current::new(record.revision, digest, definition)));
                (record, None)
            }
        };
        Ok(DefinitionApplied {
            held_by: held,
            revision: revision_view(&record),
            created: true,
            policy_changed: change.policy.into_iter().collect(),
            config_changed: change.config.into_iter().collect(),
            services_changed: change.services.into_iter().collect(),
        })
    }
}

/// How `service` would run in `env` under a proposed definition (for dry runs):
/// validated as an applied one would be, never stored.
pub fn proposed_spec(
    proposed: &DefinitionSubmission,
    service: &str,
    env: &str,
) -> Result<DeploySpec, ServerError> {
    let definition = crate::edge::definition(proposed)?;
    definition.deploy_spec(service, env).map_err(spec_error)
}

/// Unknown names in a request are bad input (404), with the did-you-mean hint.
pub fn spec_error(e: SpecError) -> ServerError {
    let hint = e.hint().to_owned();
    let error = match &e {
        SpecError::NotPlaced { .. } => ServerError::bad_request(e.to_string()),
        _ => ServerError::not_found(e.to_string()),
    };
    if hint.is_empty() {
        error
    } else {
        error.hint(hint)
    }
}
