//! Machines `wharf host add` puts in an SSH environment: kept with the definition
//! revision, as `wharf scale`'s counts are, and added to its text's machines wherever
//! the revision is read. The CLI bootstraps the machines the controller lists, so
//! which machines an environment has is the controller's to say.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use wharf_api::{DefinitionRevision, SshEndpointView, SshEnvironment, SshMachineView};
use wharf_core::Definition;
use wharf_core::model::{SshEndpoint, SshMachine};
use wharf_store::AddedSshHost;

use super::Definitions;
use crate::error::ServerError;

fn machine_of(host: &AddedSshHost) -> SshMachine {
    SshMachine {
        name: host.name.clone(),
        endpoint: SshEndpoint {
            address: host.address.clone(),
            port: host.port,
            user: host.user.clone(),
            host_key: host.host_key.clone(),
        },
    }
}

/// Adds the recorded machines to `def`; returns those that still fit (a changed text
/// may list one itself, or no longer reach its environment over SSH).
pub(super) fn add_recorded_hosts(
    def: &mut Definition,
    recorded: &BTreeMap<String, Vec<AddedSshHost>>,
) -> BTreeMap<String, Vec<AddedSshHost>> {
    let mut kept: BTreeMap<String, Vec<AddedSshHost>> = BTreeMap::new();
    for (env, hosts) in recorded {
        for host in hosts {
            match wharf_core::ssh_hosts::add_machine(def, env, machine_of(host)) {
                Ok(()) => kept.entry(env.clone()).or_default().push(host.clone()),
                Err(e) => tracing::info!(
                    "host `{}` that `wharf host add` put in `{env}` is no longer added: {e}",
                    host.name
                ),
            }
        }
    }
    kept
}

fn endpoint_view(e: &SshEndpoint) -> SshEndpointView {
    SshEndpointView {
        address: e.address.clone(),
        port: e.port,
        user: e.user.clone(),
        host_key: e.host_key.clone(),
    }
}

impl Definitions {
    /// The machines of `env` as the revision in force has them.
    pub fn ssh_environment(&self, env: &str) -> Result<SshEnvironment, ServerError> {
        let current = self.current()?;
        let ssh = ssh_of(&current.definition, env)?;
        let record = self.record_of(&current)?;
        let added: Vec<&str> = record
            .ssh_hosts
            .get(env)
            .map(|hosts| hosts.iter().map(|h| h.name.as_str()).collect())
            .unwrap_or_default();
        Ok(SshEnvironment {
            env: env.to_owned(),
            identity_file: ssh.identity_file.clone(),
            machines: ssh
                .machines
                .iter()
                .map(|m| SshMachineView {
                    name: m.name.clone(),
                    endpoint: endpoint_view(&m.endpoint),
                    added: added.contains(&m.name.as_str()),
                })
                .collect(),
            jump: ssh.jump.as_ref().map(endpoint_view),
            controller: ssh.controller.clone(),
        })
    }

    /// Stores the revision in force again with one more machine in `env`.
    pub fn add_ssh_host(
        &self,
        env: &str,
        mut host: AddedSshHost,
        user: &str,
    ) -> Result<DefinitionRevision, ServerError> {
        let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current()?;
        self.refuse_while_held(current.revision)?;
        refuse_where_approved(&current.definition, env)?;
        let mut definition = current.definition.clone();
        if host.user.is_empty() {
            host.user = ssh_of(&definition, env)?.user.clone();
        }
        wharf_core::ssh_hosts::add_machine(&mut definition, env, machine_of(&host)).map_err(
            |e| {
                let status = match e {
                    wharf_core::ssh_hosts::AddHostError::NameTaken { .. }
                    | wharf_core::ssh_hosts::AddHostError::AddressTaken { .. } => {
                        StatusCode::CONFLICT
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                let err = ServerError::new(status, e.to_string());
                match e.hint() {
                    Some(h) => err.hint(h),
                    None => err,
                }
            },
        )?;
        let message = format!(
            "wharf host add {} --env {env} --ssh {}@{}:{}",
            host.name, host.user, host.address, host.port
        );
        let mut record = self.record_of(&current)?;
        record
            .ssh_hosts
            .entry(env.to_owned())
            .or_default()
            .push(host);
        self.store_again(record, definition, user, message)
    }

    /// Stores the revision in force again without the machine `wharf host add` put in
    /// `env` as `name`.
    pub fn remove_ssh_host(
        &self,
        env: &str,
        name: &str,
        user: &str,
    ) -> Result<DefinitionRevision, ServerError> {
        let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current()?;
        self.refuse_while_held(current.revision)?;
        refuse_where_approved(&current.definition, env)?;
        let mut definition = current.definition.clone();
        let mut record = self.record_of(&current)?;
        let was_added = record
            .ssh_hosts
            .get(env)
            .is_some_and(|hosts| hosts.iter().any(|h| h.name == name));
        if !was_added {
            let listed = ssh_of(&definition, env)?
                .machines
                .iter()
                .any(|m| m.name == name);
            return Err(if listed {
                ServerError::new(
                    StatusCode::CONFLICT,
                    format!("host `{name}` of `{env}` is listed in wharf.yaml, not added by `wharf host add`"),
                )
                .hint(format!("take it out of `environments.{env}.hosts` and `wharf apply`"))
            } else {
                ServerError::new(
                    StatusCode::NOT_FOUND,
                    format!("`{env}` has no SSH host `{name}`"),
                )
                .hint(format!("`wharf hosts --env {env}` lists its hosts"))
            });
        }
        wharf_core::ssh_hosts::remove_machine(&mut definition, env, name);
        let message = format!("wharf host remove {name} --env {env}");
        if let Some(list) = record.ssh_hosts.get_mut(env) {
            list.retain(|h| h.name != name);
        }
        record.ssh_hosts.retain(|_, list| !list.is_empty());
        self.store_again(record, definition, user, message)
    }
}

/// Refuses a change of machines in an environment whose changes of policy wait for
/// approval: one person alone may not add a machine that then gets its deploys and
/// secrets.
fn refuse_where_approved(def: &Definition, env: &str) -> Result<(), ServerError> {
    if def
        .environments
        .get(env)
        .is_some_and(|e| e.approval.is_some())
    {
        return Err(ServerError::new(
            StatusCode::CONFLICT,
            format!("`{env}` waits for approval of its changes; a machine added or removed by command would skip it"),
        )
        .hint(format!(
            "change `environments.{env}.hosts` in wharf.yaml and `wharf apply`: the revision waits for another person's approval"
        )));
    }
    Ok(())
}

/// The SSH machines of `env`, or why it has none.
fn ssh_of<'d>(
    def: &'d Definition,
    env: &str,
) -> Result<&'d wharf_core::model::SshHosts, ServerError> {
    let environment = def.environments.get(env).ok_or_else(|| {
        ServerError::new(
            StatusCode::NOT_FOUND,
            format!("there is no environment `{env}`"),
        )
    })?;
    environment
        .hosts
        .as_ref()
        .and_then(|h| h.ssh.as_ref())
        .ok_or_else(|| {
            ServerError::bad_request(format!("`{env}` does not use `provider: ssh`")).hint(
                "`wharf host add` and `wharf env up` over SSH need `hosts: { provider: ssh, hosts: [...] }`",
            )
        })
}

/// The longest address, user or host key `wharf host add` takes.
const MAX_FIELD: usize = 8 * 1024;

/// What a caller sends for a new machine, checked before it reaches the definition.
fn check_added(req: &wharf_api::SshHostAdd) -> Result<(), ServerError> {
    crate::edge::name("host", &req.name)?;
    let printable = |s: &str| !s.chars().any(|c| c.is_control());
    let address_ok = !req.address.is_empty()
        && req.address.len() <= 255
        && !req
            .address
            .contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
        && printable(&req.address);
    if !address_ok {
        return Err(ServerError::bad_request(format!(
            "`{}` is not a host address",
            req.address.escape_debug()
        ))
        .hint("an IP address or a DNS name"));
    }
    if req.port == 0 {
        return Err(ServerError::bad_request("port 0 is not an SSH port"));
    }
    if let Some(user) = &req.user {
        let user_ok = !user.is_empty()
            && user.len() <= 64
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !user_ok {
            return Err(ServerError::bad_request(format!(
                "`{}` is not a login name",
                user.escape_debug()
            )));
        }
    }
    if req
        .host_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_FIELD || !printable(k))
    {
        return Err(ServerError::bad_request(
            "the host key is not one line of a `.pub` file",
        ));
    }
    Ok(())
}

pub(super) mod routes {
    use std::sync::Arc;

    use axum::extract::State;
    use wharf_api::{DefinitionRevision, SshEnvironment, SshHostAdd};
    use wharf_store::AddedSshHost;

    use crate::Controller;
    use crate::auth::{Action, Caller};
    use crate::error::ServerError;
    use crate::extract::{Json, Path};
    use crate::routes::{acting_user, authorize, outcome};

    type Ctl = State<Arc<Controller>>;

    #[utoipa::path(
        get,
        path = "/v1/ssh/{env}",
        operation_id = "show_ssh_environment",
        tag = "ssh",
        params(("env" = String, Path, description = "An SSH environment")),
        responses((status = 200, body = SshEnvironment))
    )]
    pub async fn show(
        State(c): Ctl,
        caller: Caller,
        Path(env): Path<String>,
    ) -> Result<Json<SshEnvironment>, ServerError> {
        crate::edge::name("environment", &env)?;
        caller.require(&env, Action::Read)?;
        let worker = c.clone();
        let found = tokio::task::spawn_blocking(move || worker.definitions.ssh_environment(&env))
            .await
            .map_err(|e| ServerError::internal(e.to_string()))??;
        Ok(Json(found))
    }

    /// The machines of an environment are its policy: an admin of it may change them.
    #[utoipa::path(
        post,
        path = "/v1/ssh/{env}/hosts",
        operation_id = "add_ssh_host",
        tag = "ssh",
        params(("env" = String, Path, description = "An SSH environment")),
        request_body = SshHostAdd,
        responses((status = 200, description = "The definition revision that adds it.", body = DefinitionRevision))
    )]
    pub async fn add(
        State(c): Ctl,
        caller: Caller,
        Path(env): Path<String>,
        Json(req): Json<SshHostAdd>,
    ) -> Result<Json<DefinitionRevision>, ServerError> {
        crate::edge::name("environment", &env)?;
        super::check_added(&req)?;
        let target = format!("{} in {env}", req.name);
        authorize(&c, &caller, &env, Action::Admin, "host add", &target)?;
        let user = acting_user(&c, &caller, &req.by);
        let host = AddedSshHost {
            name: req.name,
            address: req.address,
            port: req.port,
            user: req.user.unwrap_or_default(),
            host_key: req.host_key,
        };
        let worker = c.clone();
        let result =
            tokio::task::spawn_blocking(move || worker.definitions.add_ssh_host(&env, host, &user))
                .await
                .map_err(|e| ServerError::internal(e.to_string()))?;
        c.record(&caller, "host add", &target, &outcome(&result));
        Ok(Json(result?))
    }

    #[utoipa::path(
        delete,
        path = "/v1/ssh/{env}/hosts/{name}",
        operation_id = "remove_ssh_host",
        tag = "ssh",
        params(("env" = String, Path, description = "An SSH environment"), ("name" = String, Path, description = "A machine added by `wharf host add`")),
        responses((status = 200, description = "The definition revision that removes it.", body = DefinitionRevision))
    )]
    pub async fn remove(
        State(c): Ctl,
        caller: Caller,
        Path((env, name)): Path<(String, String)>,
    ) -> Result<Json<DefinitionRevision>, ServerError> {
        crate::edge::name("environment", &env)?;
        crate::edge::name("host", &name)?;
        let target = format!("{name} in {env}");
        authorize(&c, &caller, &env, Action::Admin, "host remove", &target)?;
        let user = acting_user(&c, &caller, "");
        let worker = c.clone();
        let result = tokio::task::spawn_blocking(move || {
            worker.definitions.remove_ssh_host(&env, &name, &user)
        })
        .await
        .map_err(|e| ServerError::internal(e.to_string()))?;
        c.record(&caller, "host remove", &target, &outcome(&result));
        Ok(Json(result?))
    }
}
