//! `wharf env up ENV` for `provider: ssh`: every machine bootstrapped in parallel (at
//! most [`PARALLEL`] connections at once), each one's outcome shown on its own line, a
//! failed machine leaving the others to proceed.

use std::path::PathBuf;
use std::process::ExitCode;

use wharf_core::model::{SshEndpoint, SshHosts};
use wharf_provider::ssh::{Bootstrap, Login, Outcome, Trust, bootstrap_all};

use crate::cli::Global;
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

/// What host keys the machines of `ssh` are checked against, and who logs in.
fn trust(ssh: &SshHosts, state_dir: &std::path::Path, accept_new: bool) -> Trust {
    Trust {
        identity_file: expand(&ssh.identity_file),
        known_hosts: vec![
            home().join(".ssh/known_hosts"),
            state_dir.join("known_hosts"),
        ],
        learn_into: state_dir.join("known_hosts"),
        accept_new,
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
    let all: Vec<&str> = ssh.machines.iter().map(|m| m.name.as_str()).collect();
    bootstrap(global, printer, env, ssh, &options, &all, PARALLEL).await?;
    printer.info(&format!("{} host(s) of `{env}` are up", all.len()));
    crate::commands::hosts::list(global, printer, Some(env)).await
}

/// `wharf host upgrade [NAME] [--env ENV]`: the bootstrap again, one machine at a
/// time, so a new binary rolls host by host (its agent restarted on it, its instances
/// adopted as they run).
pub async fn upgrade(
    global: &Global,
    printer: &Printer,
    args: crate::cli::UpgradeArgs,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let ssh_envs: Vec<(&String, &SshHosts)> = project
        .definition
        .environments
        .iter()
        .filter(|(name, _)| args.env.as_ref().is_none_or(|e| e == *name))
        .filter_map(|(name, e)| Some((name, e.hosts.as_ref()?.ssh.as_ref()?)))
        .filter(|(_, ssh)| {
            args.host
                .as_ref()
                .is_none_or(|h| ssh.machines.iter().any(|m| &m.name == h))
        })
        .collect();
    let (env, ssh) = match (ssh_envs.as_slice(), &args.host) {
        ([one], _) => *one,
        ([], Some(host)) => {
            return Err(
                Failure::input(format!("no SSH host `{host}` in the definition"))
                    .hint("`wharf host upgrade` reaches hosts of `provider: ssh`")
                    .into(),
            );
        }
        ([], None) => {
            return Err(
                Failure::input("`wharf host upgrade` needs `--env ENV` or a host name")
                    .hint("it reaches the hosts of an environment with `provider: ssh`")
                    .into(),
            );
        }
        (_, _) => {
            return Err(Failure::input("several environments match: name one with `--env`").into());
        }
    };
    let chosen: Vec<&str> = ssh
        .machines
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| args.host.as_deref().is_none_or(|h| h == *n))
        .collect();
    let options = Options {
        accept_new_host_key: args.accept_new_host_key,
        agent_binary: args.agent_binary,
    };
    bootstrap(global, printer, env, ssh, &options, &chosen, 1).await?;
    printer.info(&format!(
        "{} host(s) of `{env}` run this agent",
        chosen.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// How long a removal waits for a drained host's instances to move.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The SSH environment a host of the definition belongs to (`--env` when given).
fn ssh_env_of<'d>(
    project: &'d crate::project::Project,
    host: &str,
    env: Option<&str>,
) -> anyhow::Result<(&'d String, &'d SshHosts)> {
    project
        .definition
        .environments
        .iter()
        .filter(|(name, _)| env.is_none_or(|e| e == name.as_str()))
        .filter_map(|(name, e)| Some((name, e.hosts.as_ref()?.ssh.as_ref()?)))
        .find(|(_, ssh)| ssh.machines.iter().any(|m| m.name == host))
        .ok_or_else(|| {
            Failure::input(format!("no SSH host `{host}` in the definition"))
                .hint("`wharf host remove` reaches hosts of `provider: ssh`; `wharf host revoke` any host")
                .into()
        })
}

/// `wharf host remove NAME`: drains the host (its pooled instances are placed
/// elsewhere), waits until it runs nothing, uninstalls its agent over SSH and revokes
/// its certificate.
pub async fn remove(
    global: &Global,
    printer: &Printer,
    args: crate::cli::HostArgs,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let (env, ssh) = ssh_env_of(&project, &args.host, args.env.as_deref())?;
    let machine = ssh
        .machines
        .iter()
        .find(|m| m.name == args.host)
        .ok_or_else(|| Failure::input(format!("no SSH host `{}`", args.host)))?;
    let client = crate::connect::controller(global, printer).await?;
    let state_dir = project::state_dir(global)?;
    let joined = client
        .hosts(Some(env))
        .await
        .map_err(Failure::from)?
        .into_iter()
        .any(|h| h.host.name == args.host);
    if joined {
        client
            .host_action(&args.host, "drain", Some(env))
            .await
            .map_err(Failure::from)?;
        printer.info(&format!(
            "draining `{}`: its instances move to the other hosts",
            args.host
        ));
        let begun = std::time::Instant::now();
        loop {
            let left = client
                .hosts(Some(env))
                .await
                .map_err(Failure::from)?
                .into_iter()
                .find(|h| h.host.name == args.host)
                .map(|h| h.instances)
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            if begun.elapsed() > DRAIN_LIMIT {
                return Err(Failure::operation(format!(
                    "`{}` still runs {left} instance(s) after {}s; nothing was removed",
                    args.host,
                    DRAIN_LIMIT.as_secs()
                ))
                .hint("services on nodes of this host have nowhere to move: change the definition first")
                .into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    let trust = trust(ssh, &state_dir, false);
    let jump = ssh.jump.as_ref().map(|j| login("jump host", j));
    wharf_provider::ssh::uninstall(
        &login(&machine.name, &machine.endpoint),
        jump.as_ref(),
        &trust,
    )
    .await
    .map_err(|e| Failure::operation(format!("`{}`: {e}", args.host)))?;
    printer.info(&format!("removed wharf from `{}`", args.host));
    if joined {
        client
            .host_action(&args.host, "revoke", Some(env))
            .await
            .map_err(Failure::from)?;
        printer.info(&format!("revoked the certificate of `{}`", args.host));
    }
    printer.info(&format!(
        "take `{}` out of `environments.{env}.hosts` in the definition, or `wharf env up {env}` installs it again",
        args.host
    ));
    Ok(ExitCode::SUCCESS)
}

/// Bootstraps the machines of `ssh` named in `only`, `parallel` at once, and waits for
/// those that succeeded to report; an error names those that did not.
async fn bootstrap(
    global: &Global,
    printer: &Printer,
    env: &str,
    ssh: &SshHosts,
    options: &Options,
    only: &[&str],
    parallel: usize,
) -> anyhow::Result<()> {
    let client = crate::connect::controller(global, printer).await?;
    let state_dir = project::state_dir(global)?;
    let binary = match &options.agent_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let machines: Vec<Login> = ssh
        .machines
        .iter()
        .filter(|m| only.contains(&m.name.as_str()))
        .map(|m| login(&m.name, &m.endpoint))
        .collect();
    // A token only when some machine is not a ready host yet: a re-run on a ready
    // environment makes none.
    let hosts = client.hosts(Some(env)).await.map_err(Failure::from)?;
    let ready = |name: &str| {
        hosts
            .iter()
            .any(|h| h.host.name == name && h.host.state.can_take_instances())
    };
    let new = machines.iter().filter(|m| !ready(&m.name)).count();
    let token = super::env::join_token(&client, env, new).await?;
    let plan = Bootstrap {
        env: env.to_owned(),
        binary,
        controller: ssh.controller.clone(),
        agent_port: super::env::agent_port(global)?,
        token,
        trust: trust(ssh, &state_dir, options.accept_new_host_key),
        jump: ssh.jump.as_ref().map(|j| login("jump host", j)),
    };
    printer.info(&format!(
        "bootstrapping {} machine(s) of `{env}` over SSH (at most {parallel} at once)",
        machines.len()
    ));
    let total = machines.len();
    let results = bootstrap_all(machines, plan, parallel).await;
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
            "{} of {total} machine(s) of `{env}` could not be bootstrapped: {}",
            failed.len(),
            failed.join(", ")
        ))
        .hint(format!(
            "the others are ready; fix what is said above and run `wharf env up {env}` again"
        ))
        .into());
    }
    Ok(())
}
