//! `wharf env up ENV` for `provider: ssh`: every machine bootstrapped in parallel (at
//! most [`PARALLEL`] connections at once), each one's outcome shown on its own line, a
//! failed machine leaving the others to proceed.

use std::path::PathBuf;
use std::process::ExitCode;

use wharf_api::{SshEndpointView, SshEnvironment};
use wharf_client::Client;
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
fn trust(ssh: &SshEnvironment, state_dir: &std::path::Path, accept_new: bool) -> Trust {
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

fn login(name: &str, endpoint: &SshEndpointView) -> Login {
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

/// The controller, with this project's wharf.yaml in force (as a deploy applies it):
/// which machines an environment has is the controller's definition's to say,
/// `wharf host add`'s included.
async fn applied_controller(global: &Global, printer: &Printer) -> anyhow::Result<Client> {
    let project = project::load(global)?;
    let client = crate::connect::controller(global, printer).await?;
    crate::commands::definition::ensure_applied(&project, &client, printer).await?;
    Ok(client)
}

pub async fn up(
    global: &Global,
    printer: &Printer,
    env: &str,
    options: Options,
) -> anyhow::Result<ExitCode> {
    let client = applied_controller(global, printer).await?;
    let ssh = client.ssh_environment(env).await.map_err(Failure::from)?;
    let all: Vec<&str> = ssh.machines.iter().map(|m| m.name.as_str()).collect();
    bootstrap(global, printer, &client, &ssh, &options, &all, PARALLEL).await?;
    printer.info(&format!("{} host(s) of `{env}` are up", all.len()));
    crate::commands::hosts::list(global, printer, Some(env)).await
}

/// `wharf host add NAME --env ENV --ssh USER@ADDRESS[:PORT]`: one more machine,
/// recorded by the controller as a definition revision, then bootstrapped.
pub async fn add(
    global: &Global,
    printer: &Printer,
    args: crate::cli::AddArgs,
) -> anyhow::Result<ExitCode> {
    for (what, name) in [("host", &args.host), ("environment", &args.env)] {
        if !wharf_core::definition::valid_name(name) {
            return Err(
                Failure::input(format!("`{name}` is not a valid {what} name"))
                    .hint(wharf_core::definition::NAME_HINT)
                    .into(),
            );
        }
    }
    let target = wharf_core::ssh_hosts::parse_target(&args.ssh).map_err(|e| {
        Failure::input(format!("--ssh {e}")).hint("write it as `USER@ADDRESS[:PORT]`")
    })?;
    if let Some(problem) = args
        .host_key
        .as_deref()
        .and_then(wharf_core::ssh_hosts::host_key_problem)
    {
        return Err(Failure::input(format!("--host-key: {problem}"))
            .hint("the line of the host's /etc/ssh/ssh_host_ed25519_key.pub (`ssh-keyscan HOST` prints it)")
            .into());
    }
    let client = applied_controller(global, printer).await?;
    let request = wharf_api::SshHostAdd {
        name: args.host.clone(),
        address: target.address,
        port: target.port,
        user: target.user,
        host_key: args.host_key,
        by: crate::commands::current_user(),
    };
    let revision = client
        .add_ssh_host(&args.env, &request)
        .await
        .map_err(Failure::from)?;
    printer.info(&format!(
        "added `{}` to `{}` as definition revision {} ({})",
        args.host, args.env, revision.revision, revision.message
    ));
    let ssh = client
        .ssh_environment(&args.env)
        .await
        .map_err(Failure::from)?;
    let options = Options {
        accept_new_host_key: args.accept_new_host_key,
        agent_binary: args.agent_binary,
    };
    if let Err(e) = bootstrap(global, printer, &client, &ssh, &options, &[&args.host], 1).await {
        // Recorded all the same: fixed, `wharf env up` completes it.
        printer.info(&format!(
            "`{host}` stays in the definition: `wharf env up {env}` completes it once fixed, `wharf host remove {host} --env {env}` takes it out",
            host = args.host,
            env = args.env
        ));
        return Err(e);
    }
    printer.info(&format!("`{}` of `{}` is up", args.host, args.env));
    Ok(ExitCode::SUCCESS)
}

/// The SSH environments of this project that the controller knows, `only` one when
/// given.
async fn ssh_environments(
    global: &Global,
    client: &Client,
    only: Option<&str>,
) -> anyhow::Result<Vec<SshEnvironment>> {
    let project = project::load(global)?;
    let mut found = Vec::new();
    for (name, environment) in &project.definition.environments {
        let ssh = environment
            .hosts
            .as_ref()
            .is_some_and(|h| h.provider == wharf_core::model::Provider::Ssh);
        if ssh && only.is_none_or(|e| e == name) {
            found.push(client.ssh_environment(name).await.map_err(Failure::from)?);
        }
    }
    if let Some(env) = only
        && found.is_empty()
    {
        return Err(Failure::input(format!(
            "`{env}` is not an environment with `provider: ssh`"
        ))
        .hint("these commands reach hosts of `hosts: { provider: ssh }`")
        .into());
    }
    Ok(found)
}

/// The SSH environment a host belongs to (`--env` when given).
async fn ssh_env_of(
    global: &Global,
    client: &Client,
    host: &str,
    env: Option<&str>,
) -> anyhow::Result<SshEnvironment> {
    ssh_environments(global, client, env)
        .await?
        .into_iter()
        .find(|ssh| ssh.machines.iter().any(|m| m.name == host))
        .ok_or_else(|| {
            Failure::input(format!("no SSH host `{host}` in the definition"))
                .hint("`wharf hosts` lists the hosts; `wharf host revoke` reaches any host")
                .into()
        })
}

/// `wharf host upgrade [NAME] [--env ENV]`: the bootstrap again, one machine at a
/// time, each one's new agent reporting before the next is touched, so a new binary
/// rolls host by host (its instances adopted as they run).
pub async fn upgrade(
    global: &Global,
    printer: &Printer,
    args: crate::cli::UpgradeArgs,
) -> anyhow::Result<ExitCode> {
    let client = applied_controller(global, printer).await?;
    let ssh = match (&args.host, &args.env) {
        (Some(host), env) => ssh_env_of(global, &client, host, env.as_deref()).await?,
        (None, Some(env)) => ssh_environments(global, &client, Some(env))
            .await?
            .remove(0),
        (None, None) => {
            return Err(
                Failure::input("`wharf host upgrade` needs `--env ENV` or a host name")
                    .hint("it reaches the hosts of an environment with `provider: ssh`")
                    .into(),
            );
        }
    };
    let chosen: Vec<String> = ssh
        .machines
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| args.host.as_ref().is_none_or(|h| h == n))
        .collect();
    let options = Options {
        accept_new_host_key: args.accept_new_host_key,
        agent_binary: args.agent_binary,
    };
    for name in &chosen {
        let seen = last_seen(&client, &ssh.env, name).await?;
        bootstrap(global, printer, &client, &ssh, &options, &[name], 1).await?;
        reported_since(&client, &ssh.env, name, seen).await?;
    }
    printer.info(&format!(
        "{} host(s) of `{}` run this agent",
        chosen.len(),
        ssh.env
    ));
    Ok(ExitCode::SUCCESS)
}

/// When the controller last heard from a host (0: never).
async fn last_seen(client: &Client, env: &str, host: &str) -> anyhow::Result<i64> {
    Ok(client
        .hosts(Some(env))
        .await
        .map_err(Failure::from)?
        .into_iter()
        .find(|h| h.host.name == host)
        .map_or(0, |h| h.host.last_seen))
}

/// Waits until a host's agent reports after `seen` and can take instances.
async fn reported_since(client: &Client, env: &str, host: &str, seen: i64) -> anyhow::Result<()> {
    let begun = std::time::Instant::now();
    loop {
        let reported = client
            .hosts(Some(env))
            .await
            .map_err(Failure::from)?
            .into_iter()
            .any(|h| {
                h.host.name == host && h.host.last_seen > seen && h.host.state.can_take_instances()
            });
        if reported {
            return Ok(());
        }
        if begun.elapsed() > super::env::JOIN_TIMEOUT {
            return Err(Failure::operation(format!(
                "the new agent of `{host}` did not report within {}s; the hosts after it were left as they were",
                super::env::JOIN_TIMEOUT.as_secs()
            ))
            .hint("its log is /var/lib/wharf/agent.log on the machine (or `journalctl -u wharf-agent`)")
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How long a removal waits for a drained host's instances to move.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `wharf host remove NAME`: drains the host (its pooled instances are placed
/// elsewhere), waits until it runs nothing, uninstalls its agent over SSH, revokes
/// its certificate, and takes it out of the definition when `wharf host add` put it
/// there.
pub async fn remove(
    global: &Global,
    printer: &Printer,
    args: crate::cli::HostArgs,
) -> anyhow::Result<ExitCode> {
    if !wharf_core::definition::valid_name(&args.host) {
        return Err(
            Failure::input(format!("`{}` is not a valid host name", args.host))
                .hint(wharf_core::definition::NAME_HINT)
                .into(),
        );
    }
    let client = applied_controller(global, printer).await?;
    let ssh = ssh_env_of(global, &client, &args.host, args.env.as_deref()).await?;
    let env = ssh.env.as_str();
    let machine = ssh
        .machines
        .iter()
        .find(|m| m.name == args.host)
        .ok_or_else(|| Failure::input(format!("no SSH host `{}`", args.host)))?;
    let state_dir = project::state_dir(global)?;
    let joined = client
        .hosts(Some(env))
        .await
        .map_err(Failure::from)?
        .into_iter()
        .any(|h| h.host.name == args.host);
    if joined {
        drain(printer, &client, env, &args.host).await?;
    }
    let trust = trust(&ssh, &state_dir, false);
    let jump = ssh.jump.as_ref().map(|j| login("jump host", j));
    let uninstalled = wharf_provider::ssh::uninstall(
        &login(&machine.name, &machine.endpoint),
        jump.as_ref(),
        &trust,
    )
    .await;
    match uninstalled {
        Ok(()) => printer.info(&format!("removed wharf from `{}`", args.host)),
        // A machine that never joined may never have been reached: taking it out of
        // the definition is what is asked.
        Err(e) if !joined && machine.added => printer.info(&format!(
            "{} `{}` could not be reached to uninstall anything ({e}); it never joined",
            printer.paint("warning:", crate::printer::Tone::Warn),
            args.host
        )),
        Err(e) => return Err(Failure::operation(format!("`{}`: {e}", args.host)).into()),
    }
    if joined {
        client
            .host_action(&args.host, "revoke", Some(env))
            .await
            .map_err(Failure::from)?;
        printer.info(&format!("revoked the certificate of `{}`", args.host));
    }
    if machine.added {
        let revision = client
            .remove_ssh_host(env, &args.host)
            .await
            .map_err(Failure::from)?;
        printer.info(&format!(
            "definition revision {} no longer lists `{}`",
            revision.revision, args.host
        ));
    } else {
        printer.info(&format!(
            "take `{}` out of `environments.{env}.hosts` in wharf.yaml, or `wharf env up {env}` installs it again",
            args.host
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Drains a host and waits until its instances have moved.
async fn drain(printer: &Printer, client: &Client, env: &str, host: &str) -> anyhow::Result<()> {
    client
        .host_action(host, "drain", Some(env))
        .await
        .map_err(Failure::from)?;
    printer.info(&format!(
        "draining `{host}`: its instances move to the other hosts"
    ));
    let begun = std::time::Instant::now();
    loop {
        let left = client
            .hosts(Some(env))
            .await
            .map_err(Failure::from)?
            .into_iter()
            .find(|h| h.host.name == host)
            .map(|h| h.instances)
            .unwrap_or(0);
        if left == 0 {
            return Ok(());
        }
        if begun.elapsed() > DRAIN_LIMIT {
            return Err(Failure::operation(format!(
                "`{host}` still runs {left} instance(s) after {}s; nothing was removed",
                DRAIN_LIMIT.as_secs()
            ))
            .hint(
                "services on nodes of this host have nowhere to move: change the definition first",
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Bootstraps the machines of `ssh` named in `only`, `parallel` at once, and waits for
/// those that succeeded to report; an error names those that did not.
async fn bootstrap(
    global: &Global,
    printer: &Printer,
    client: &Client,
    ssh: &SshEnvironment,
    options: &Options,
    only: &[&str],
    parallel: usize,
) -> anyhow::Result<()> {
    let env = ssh.env.as_str();
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
    let token = super::env::join_token(client, env, new).await?;
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
    super::env::wait_ready(client, env, &done).await?;
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
