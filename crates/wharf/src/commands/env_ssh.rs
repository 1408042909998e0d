//! `wharf env up ENV` for `provider: ssh`: every machine bootstrapped in parallel (at
//! most [`PARALLEL`] connections at once), each one's outcome shown on its own line, a
//! failed machine leaving the others to proceed.

use std::path::PathBuf;
use std::process::ExitCode;

use wharf_api::TokenRequest;
use wharf_core::model::{SshEndpoint, SshHosts};
use wharf_provider::ssh::{Bootstrap, Login, Outcome, Trust, bootstrap_all};

use crate::cli::Global;
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::project;

/// How many machines are bootstrapped at once.
const PARALLEL: usize = 10;

pub struct Options {
    pub accept_new_host_key: bool,
    pub agent_binary: Option<PathBuf>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into())
}

/// `~/x` as the path it names.
fn expand(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(path),
    }
}

fn login(name: &str, endpoint: &SshEndpoint) -> Login {
    Login {
        name: name.to_owned(),
        address: endpoint.address.clone(),
        port: endpoint.port,
        user: endpoint.user.clone(),
        host_key: endpoint.host_key.clone(),
    }
}

fn describe(outcome: &Outcome) -> String {
    let mut did = Vec::new();
    if outcome.uploaded {
        did.push("installed wharf".to_owned());
    }
    if outcome.joined {
        did.push("joined".to_owned());
    }
    if outcome.started {
        did.push(format!("started its agent ({})", outcome.service));
    }
    if did.is_empty() {
        "ready, nothing to do".into()
    } else {
        did.join(", ")
    }
}

pub async fn up(
    global: &Global,
    printer: &Printer,
    env: &str,
    ssh: &SshHosts,
    options: Options,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let state_dir = project::state_dir(global)?;
    let binary = match options.agent_binary {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    // A token only when some machine is not a ready host yet: a re-run on a ready
    // environment makes none.
    let hosts = client.hosts(Some(env)).await.map_err(Failure::from)?;
    let ready = |name: &str| {
        hosts
            .iter()
            .any(|h| h.host.name == name && h.host.state.can_take_instances())
    };
    let new = ssh.machines.iter().filter(|m| !ready(&m.name)).count();
    let token = if new == 0 {
        None
    } else {
        let request = TokenRequest {
            env: env.to_owned(),
            ttl_secs: 600,
            uses: new as u32,
            user: current_user(),
        };
        Some(
            client
                .create_token(&request)
                .await
                .map_err(Failure::from)?
                .token,
        )
    };
    let plan = Bootstrap {
        env: env.to_owned(),
        binary,
        controller: ssh.controller.clone(),
        agent_port: super::env::agent_port(global)?,
        token,
        trust: Trust {
            identity_file: expand(&ssh.identity_file),
            known_hosts: vec![
                home().join(".ssh/known_hosts"),
                state_dir.join("known_hosts"),
            ],
            learn_into: state_dir.join("known_hosts"),
            accept_new: options.accept_new_host_key,
        },
        jump: ssh.jump.as_ref().map(|j| login("jump host", j)),
    };
    printer.info(&format!(
        "bootstrapping {} machine(s) of `{env}` over SSH (at most {PARALLEL} at once)",
        ssh.machines.len()
    ));
    let machines: Vec<Login> = ssh
        .machines
        .iter()
        .map(|m| login(&m.name, &m.endpoint))
        .collect();
    let results = bootstrap_all(machines, plan, PARALLEL).await;
    let mut failed = Vec::new();
    let mut done = Vec::new();
    for (machine, result) in results {
        match result {
            Ok(outcome) => {
                printer.info(&format!("  {}: {}", machine.name, describe(&outcome)));
                done.push(machine.name);
            }
            Err(e) => {
                printer.info(&format!("  {}: failed: {e}", machine.name));
                failed.push(machine.name);
            }
        }
    }
    super::env::wait_ready(&client, env, &done).await?;
    if !failed.is_empty() {
        return Err(Failure::operation(format!(
            "{} of {} machine(s) of `{env}` could not be bootstrapped: {}",
            failed.len(),
            ssh.machines.len(),
            failed.join(", ")
        ))
        .hint(format!(
            "the others are ready; fix what is said above and run `wharf env up {env}` again"
        ))
        .into());
    }
    printer.info(&format!("{} host(s) of `{env}` are up", done.len()));
    crate::commands::hosts::list(global, printer, Some(env)).await
}
