//! `wharf env up|down` and failure injection on provisioned hosts.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use wharf_api::{StopRequest, TokenRequest};
use wharf_client::Client;
use wharf_core::model::Provider;
use wharf_provider::{
    DockerProvider, NetnsHost, NetnsProvider, Runner, SystemRunner, write_rootfs,
};
use wharf_server::{CONTROLLER_FILE, ControllerFile};

use crate::cli::{EnvCommand, Global, HostArgs};
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::project;

/// How long `env up` waits for new hosts to join.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

fn provider(global: &Global) -> anyhow::Result<NetnsProvider<SystemRunner>> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            Failure::operation(wharf_provider::ProviderError::NotRoot.to_string())
                .hint("run it as root (sudo), or use `provider: static` and start agents yourself")
                .into(),
        );
    }
    Ok(NetnsProvider::new(
        SystemRunner,
        &project::state_dir(global)?,
    ))
}

pub(crate) fn agent_port(global: &Global) -> anyhow::Result<u16> {
    let file: ControllerFile = serde_json::from_slice(&std::fs::read(
        project::state_dir(global)?.join(CONTROLLER_FILE),
    )?)?;
    let port = file
        .agent_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok());
    port.ok_or_else(|| Failure::operation("the local controller has no agent listener").into())
}

pub async fn env(
    global: &Global,
    printer: &Printer,
    command: EnvCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        EnvCommand::Up {
            env,
            accept_new_host_key,
            agent_binary,
        } => up(global, printer, &env, accept_new_host_key, agent_binary).await,
        EnvCommand::Down { env } => down(global, printer, &env).await,
    }
}

async fn up(
    global: &Global,
    printer: &Printer,
    env: &str,
    accept_new_host_key: bool,
    agent_binary: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let environment = project.definition.environment(env).map_err(Failure::from)?;
    let Some(hosts) = &environment.hosts else {
        return Err(
            Failure::input(format!("environment `{env}` names no host provider"))
                .hint("add `hosts: { provider: netns, count: 3 }` to it")
                .into(),
        );
    };
    match hosts.provider {
        Provider::Static => {
            printer.info(&format!("`{env}` uses static hosts: start `wharf agent` on each (`wharf token create --env {env}` prints how)"));
            return Ok(ExitCode::SUCCESS);
        }
        Provider::Docker => return docker_up(global, printer, env, &hosts.names).await,
        Provider::Ssh => {
            let options = super::env_ssh::Options {
                accept_new_host_key,
                agent_binary,
            };
            return super::env_ssh::up(global, printer, env, options).await;
        }
        Provider::Netns => {}
    }
    let provider = provider(global)?;
    let client = crate::connect::controller(global, printer).await?;
    let made = provider
        .up(env, &hosts.names)
        .map_err(|e| Failure::operation(e.to_string()))?;
    let record = provider
        .record()
        .map_err(|e| Failure::operation(e.to_string()))?;
    // Start agents of hosts that have none running (new ones, and ones stopped before).
    let idle: Vec<NetnsHost> = record
        .hosts
        .values()
        .filter(|h| h.env == env && !h.agent_pid.is_some_and(alive))
        .cloned()
        .collect();
    if !idle.is_empty() {
        let url = format!("https://{}:{}", record.gateway(), agent_port(global)?);
        let new_names: Vec<&str> = made.iter().map(|h| h.name.as_str()).collect();
        let token = join_token(&client, env, made.len()).await?;
        for host in &idle {
            let token = token
                .as_deref()
                .filter(|_| new_names.contains(&host.name.as_str()));
            let pid = spawn_agent(global, host, &url, token)?;
            provider
                .set_agent(env, &host.name, Some(pid))
                .map_err(|e| Failure::operation(e.to_string()))?;
        }
    }
    wait_ready(&client, env, &hosts.names).await?;
    printer.info(&format!(
        "{} host(s) of `{env}` are up ({} new)",
        hosts.names.len(),
        made.len()
    ));
    crate::commands::hosts::list(global, printer, Some(env)).await
}

/// Starts a host's agent inside its namespace, detached from this command.
fn spawn_agent(
    global: &Global,
    host: &NetnsHost,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<u32> {
    let dir = host_dir(global, host)?;
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))?;
    let mut command = std::process::Command::new("ip");
    command
        .args(["netns", "exec", &host.netns])
        .arg(std::env::current_exe()?)
        .args([
            "agent",
            "--controller",
            url,
            "--name",
            &host.name,
            "--labels",
            &format!("provider=netns,env={}", host.env),
        ])
        .arg("--state-dir")
        .arg(&dir)
        .env_remove("WHARF_JOIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(token) = token {
        command.env("WHARF_JOIN_TOKEN", token);
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = command.spawn().map_err(|e| {
        Failure::operation(format!("cannot start the agent of `{}`: {e}", host.name))
    })?;
    Ok(child.id())
}

fn host_dir(global: &Global, host: &NetnsHost) -> anyhow::Result<std::path::PathBuf> {
    Ok(project::state_dir(global)?
        .join("hosts")
        .join(&host.env)
        .join(&host.name))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

/// A join token good for `uses` new hosts of `env` for ten minutes; none for none.
pub(crate) async fn join_token(
    client: &Client,
    env: &str,
    uses: usize,
) -> anyhow::Result<Option<String>> {
    if uses == 0 {
        return Ok(None);
    }
    let request = TokenRequest {
        env: env.to_owned(),
        ttl_secs: 600,
        uses: uses as u32,
        user: current_user(),
    };
    let created = client.create_token(&request).await.map_err(Failure::from)?;
    Ok(Some(created.token))
}

pub(crate) async fn wait_ready(client: &Client, env: &str, names: &[String]) -> anyhow::Result<()> {
    let begun = Instant::now();
    loop {
        let hosts = client.hosts(Some(env)).await.map_err(Failure::from)?;
        let ready = names.iter().all(|n| {
            hosts
                .iter()
                .any(|h| &h.host.name == n && h.host.state.can_take_instances())
        });
        if ready {
            return Ok(());
        }
        if begun.elapsed() > JOIN_TIMEOUT {
            return Err(Failure::operation(format!(
                "the hosts of `{env}` did not all join within {}s",
                JOIN_TIMEOUT.as_secs()
            ))
            .hint("their agents' logs are in .wharf/hosts/ENV/HOST/agent.log")
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn down(global: &Global, printer: &Printer, env: &str) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = StopRequest {
        env: env.to_owned(),
        service: None,
        user: current_user(),
        prune: false,
        purge: false,
    };
    client.stop(&request, |_| {}).await.map_err(Failure::from)?;
    let mut removed = docker_provider(global)?
        .down(env)
        .map_err(|e| Failure::operation(e.to_string()))?;
    let netns_record = project::state_dir(global)?.join("netns.json");
    if netns_record.exists() {
        removed.extend(
            provider(global)?
                .down(env)
                .map_err(|e| Failure::operation(e.to_string()))?,
        );
    }
    for name in &removed {
        let _ = client.host_action(name, "forget", Some(env)).await;
        let dir = project::state_dir(global)?
            .join("hosts")
            .join(env)
            .join(name);
        let _ = std::fs::remove_dir_all(dir);
    }
    printer.info(&format!(
        "removed {} host(s) of `{env}` and everything on them",
        removed.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `wharf host stop|start|kill|partition|heal`.
pub async fn inject(
    global: &Global,
    printer: &Printer,
    action: &str,
    args: HostArgs,
) -> anyhow::Result<ExitCode> {
    let docker = docker_provider(global)?;
    if let Ok(host) = docker.host(args.env.as_deref(), &args.host) {
        docker
            .inject(&host, action)
            .map_err(|e| Failure::operation(e.to_string()))?;
        printer.info(&format!("host `{}` of `{}`: {action}", host.name, host.env));
        return Ok(ExitCode::SUCCESS);
    }
    let provider = provider(global)?;
    let host = provider
        .host(args.env.as_deref(), &args.host)
        .map_err(|e| {
            Failure::input(e.to_string())
                .hint("failure injection works on hosts `wharf env up` made")
        })?;
    let fail = |e: wharf_provider::ProviderError| Failure::operation(e.to_string());
    match action {
        "stop" => stop_all(&provider, &host, Signal::SIGTERM),
        "kill" => stop_all(&provider, &host, Signal::SIGKILL),
        "partition" => provider.partition(&host).map_err(fail)?,
        "heal" => provider.heal(&host).map_err(fail)?,
        "start" => {
            if host.agent_pid.is_some_and(alive) {
                printer.info(&format!("the agent of `{}` already runs", host.name));
                return Ok(ExitCode::SUCCESS);
            }
            let _client = crate::connect::controller(global, printer).await?;
            let record = provider.record().map_err(fail)?;
            let url = format!("https://{}:{}", record.gateway(), agent_port(global)?);
            let pid = spawn_agent(global, &host, &url, None)?;
            provider
                .set_agent(&host.env, &host.name, Some(pid))
                .map_err(fail)?;
        }
        _ => unreachable!("clap only passes known actions"),
    }
    printer.info(&format!("host `{}` of `{}`: {action}", host.name, host.env));
    Ok(ExitCode::SUCCESS)
}

fn stop_all(provider: &NetnsProvider<SystemRunner>, host: &NetnsHost, signal: Signal) {
    provider.signal_all(host, signal);
    let begun = Instant::now();
    while !provider.pids(host).is_empty() && begun.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn docker_provider(global: &Global) -> anyhow::Result<DockerProvider<SystemRunner>> {
    Ok(DockerProvider::new(
        SystemRunner,
        &project::state_dir(global)?,
    ))
}

/// Hosts as containers: the image (built here, never pulled), the network, and one
/// container per host running its agent.
async fn docker_up(
    global: &Global,
    printer: &Printer,
    env: &str,
    names: &[String],
) -> anyhow::Result<ExitCode> {
    let fail = |e: wharf_provider::ProviderError| Failure::operation(e.to_string());
    SystemRunner
        .run(&["docker", "version", "--format", "{{.Server.Version}}"])
        .map_err(|e| {
            Failure::operation(format!("the Docker engine does not answer: {e}"))
                .hint("start it, or set DOCKER_HOST")
        })?;
    let provider = docker_provider(global)?;
    let client = crate::connect::controller(global, printer).await?;
    let state_dir = project::state_dir(global)?;
    let rootfs = state_dir.join("wharf-host.tar");
    if provider.record().map_err(fail)?.network.is_empty() {
        printer.info("building the host image from this wharf binary (no registry needed)");
        write_rootfs(&SystemRunner, &std::env::current_exe()?, &rootfs, &[]).map_err(fail)?;
    }
    let made = provider.up(env, names, &rootfs).map_err(fail)?;
    let _ = std::fs::remove_file(&rootfs);
    if !made.is_empty() {
        let record = provider.record().map_err(fail)?;
        let url = format!("https://{}:{}", record.gateway(), agent_port(global)?);
        let token = join_token(&client, env, made.len()).await?;
        for host in &made {
            provider
                .start_agent(host, &url, token.as_deref())
                .map_err(fail)?;
        }
    }
    wait_ready(&client, env, names).await?;
    printer.info(&format!(
        "{} host(s) of `{env}` are up as containers ({} new)",
        names.len(),
        made.len()
    ));
    crate::commands::hosts::list(global, printer, Some(env)).await
}
