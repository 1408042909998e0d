//! Reaching the controller: the configured one, else this project's local controller,
//! started in the background when none answers.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use wharf_client::Client;
use wharf_server::{CONTROLLER_FILE, ControllerFile};

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::project;

/// The pid file of a supervised dev controller's supervisor, in its state folder.
pub const SUPERVISOR_FILE: &str = "supervisor.pid";

/// How long a freshly started local controller may take to answer (it recovers its
/// instances and addresses first, which on a loaded machine takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The API token: WHARF_TOKEN, else the admin token a local controller with
/// authentication wrote to its state folder (readable by its owner only).
fn token(state_dir: Option<&Path>) -> Option<String> {
    if let Some(token) = std::env::var("WHARF_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let file = state_dir?.join(wharf_server::ADMIN_TOKEN_FILE);
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn client(url: &str, state_dir: Option<&Path>, key: Option<&str>) -> Client {
    Client::with_local_key(
        url,
        token(state_dir).as_deref(),
        &crate::commands::current_user(),
        key,
    )
}

/// The controller to use if one runs (none is started): the one `--controller` names,
/// or the project's local one.
pub async fn existing(global: &Global) -> Option<Client> {
    if let Some(url) = &global.controller {
        return remote(url).await.ok();
    }
    let state_dir = project::state_dir(global).ok()?;
    running(&state_dir)
        .await
        .ok()
        .flatten()
        .map(|(client, _)| client)
}

pub async fn controller(global: &Global, printer: &Printer) -> anyhow::Result<Client> {
    if let Some(url) = &global.controller {
        // This project's own controller named by its address: the key from its state
        // folder goes with the calls (once it proved it holds it), as without --controller.
        // (The token is still only WHARF_TOKEN's, as for any address given.)
        if let Ok(state_dir) = project::state_dir(global)
            && let Ok(Some((_, file))) = running(&state_dir).await
            && file.url.trim_end_matches('/') == url.trim_end_matches('/')
        {
            return Ok(client(url, None, Some(&file.key)));
        }
        let client = remote(url).await?;
        client.health(None).await.map_err(Failure::from)?;
        return Ok(client);
    }
    let state_dir = project::state_dir(global)?;
    if let Some((client, file)) = running(&state_dir).await? {
        if file.build == wharf_server::build_id() {
            return Ok(client);
        }
        // wharf was rebuilt or upgraded since this controller started: replace it.
        // Instances keep running and the new controller adopts them.
        printer.info(&format!(
            "restarting the local controller (pid {}): it runs another build of wharf",
            file.pid
        ));
        stop(&file).await;
    }
    // Hosts in network namespaces, containers or over SSH reach the agent listener
    // through their own links, so a project that has such environments gets one beyond
    // loopback (agents authenticate with certificates, hosts join with tokens).
    let fleet = project::load(global)
        .map(|p| {
            p.definition.environments.values().any(|e| {
                e.hosts.as_ref().is_some_and(|h| {
                    matches!(
                        h.provider,
                        wharf_core::model::Provider::Netns
                            | wharf_core::model::Provider::Docker
                            | wharf_core::model::Provider::Ssh
                    )
                })
            })
        })
        .unwrap_or(false);
    let log = state_dir.join("server.log");
    let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut child = start(&state_dir, fleet)?;
    let begun = Instant::now();
    while begun.elapsed() < START_TIMEOUT {
        if let Some((client, _)) = running(&state_dir).await? {
            printer.info(&format!(
                "started a local controller at {} (state in {})",
                client.url(),
                project::display_path(&state_dir)
            ));
            return Ok(client);
        }
        // A controller that could not start says why at once, unless it only found
        // another one starting for the same folder (that one is waited for).
        if let Ok(Some(status)) = child.try_wait() {
            let said = log_since(&log, log_start);
            if !status.success() && !said.contains("already runs") {
                let cause = said
                    .lines()
                    .rev()
                    .find(|l| l.contains("error"))
                    .or_else(|| said.lines().last())
                    .unwrap_or("it printed nothing")
                    .trim()
                    .to_owned();
                return Err(Failure::operation(format!(
                    "the local controller could not start ({status}): {cause}"
                ))
                .hint(format!("its log is `{}`", log.display()))
                .into());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tail = log_since(&log, log_start);
    let last: Vec<&str> = tail.lines().rev().take(5).collect();
    Err(Failure::operation(format!(
        "the local controller did not start within {}s",
        START_TIMEOUT.as_secs()
    ))
    .hint(format!(
        "its log `{}` ends with:\n{}",
        log.display(),
        last.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
    .into())
}

/// A client of a controller given by address: over TLS pinned to `WHARF_CA` beyond
/// loopback, where plain HTTP would carry the token in clear.
/// How long a CLI given several controllers waits for one of them to lead (a
/// failover elects a new leader within a few seconds).
const ELECTION_WAIT: Duration = Duration::from_secs(15);

/// The controller `--controller` names: with several addresses (comma-separated, the
/// controllers sharing one database), the one that leads, found by asking each.
async fn remote(list: &str) -> anyhow::Result<Client> {
    let urls: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.len() <= 1 {
        return remote_one(urls.first().copied().unwrap_or(list)).await;
    }
    let begun = Instant::now();
    loop {
        let mut heard = Vec::new();
        for url in &urls {
            let client = remote_one(url).await?;
            match client.role().await {
                Ok(wharf_client::Role::Leader) => return Ok(client),
                Ok(wharf_client::Role::Follower {
                    leader: Some(leader),
                }) => {
                    let leading = remote_one(&leader).await?;
                    if let Ok(wharf_client::Role::Leader) = leading.role().await {
                        return Ok(leading);
                    }
                    heard.push(format!("{url}: follows {leader}, which does not lead now"));
                }
                Ok(role) => heard.push(format!("{url}: {role:?}")),
                Err(e) => heard.push(format!("{url}: {e}")),
            }
        }
        if begun.elapsed() >= ELECTION_WAIT {
            return Err(Failure::operation(format!(
                "none of the controllers leads: {}",
                heard.join("; ")
            ))
            .hint("are they running, and do they reach their database? each logs what it does")
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `--controller` names several controllers (sharing one database), so that
/// another takes over when the one answering goes.
pub fn several_controllers(global: &Global) -> bool {
    global
        .controller
        .as_deref()
        .is_some_and(|list| list.split(',').filter(|u| !u.trim().is_empty()).count() > 1)
}

/// How long a CLI waits for the next leader to resolve a deploy the last one left.
const RESOLVE_WAIT: Duration = Duration::from_secs(180);

/// After the leader running deployment `id` stopped answering, with several controllers
/// given: finds the next leader and waits until the deployment is resolved there (it
/// resumes or rolls back what the last one left), then says how. `Ok(true)`: it
/// finished; `Ok(false)`: it did not (rolled back, failed); `None`: one controller only,
/// so nobody else will resolve it now.
pub async fn after_failover(
    global: &Global,
    printer: &Printer,
    id: i64,
) -> anyhow::Result<Option<bool>> {
    use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
    let Some(list) = global.controller.as_deref() else {
        return Ok(None);
    };
    if !several_controllers(global) {
        return Ok(None);
    }
    printer.info(&format!(
        "the controller running deployment #{id} stopped answering; waiting for the next leader to resolve it"
    ));
    let begun = Instant::now();
    let mut watched = id;
    // What it was to ship: a recovery that rolled back ships what ran before instead.
    let mut version = None;
    while begun.elapsed() < RESOLVE_WAIT {
        let found = match remote(list).await {
            Ok(client) => client.deployment(watched).await.ok(),
            Err(_) => None,
        };
        if let Some(d) = found {
            let version = version.get_or_insert_with(|| d.version.clone());
            match d.state {
                DeploymentState::InProgress => {}
                DeploymentState::Interrupted => match d.resolved_by {
                    Some(by) if by > 0 => {
                        printer.info(&format!(
                            "deployment #{watched} is resolved by deployment #{by}"
                        ));
                        watched = by;
                        continue;
                    }
                    Some(_) => {
                        printer.info(&format!(
                            "deployment #{watched} was interrupted and left as it stood: {}",
                            d.message
                        ));
                        return Ok(Some(false));
                    }
                    None => {}
                },
                DeploymentState::Succeeded
                    if d.kind != DeploymentKind::Rollback && d.version == *version =>
                {
                    printer.info(&format!("deployment #{watched} finished: {}", d.message));
                    return Ok(Some(true));
                }
                _ => {
                    printer.info(&format!(
                        "deployment #{watched} ended {}: {}",
                        d.state.as_str(),
                        d.message
                    ));
                    return Ok(Some(false));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Failure::operation(format!(
        "no controller resolved deployment #{id} within {}s",
        RESOLVE_WAIT.as_secs()
    ))
    .hint(format!(
        "`wharf deployments show {id}` shows where it stands"
    ))
    .into())
}

async fn remote_one(url: &str) -> anyhow::Result<Client> {
    let token = token(None);
    let user = crate::commands::current_user();
    if url.starts_with("https://") {
        let pin = ca_pin()?.ok_or_else(|| {
            Failure::input(format!("`{url}` takes HTTPS: which CA does it use? pass it in WHARF_CA"))
                .hint("WHARF_CA=sha256:FINGERPRINT (the controller logs it when it starts) or WHARF_CA=/path/to/ca.pem (`pki/ca.pem` in its state folder)")
        })?;
        return Ok(Client::pinned(url, token.as_deref(), &user, &pin)
            .await
            .map_err(Failure::from)?);
    }
    let authority = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(Failure::input(format!(
            "`{url}` is plain HTTP beyond loopback: the token would cross the network in clear"
        ))
        .hint("use https:// with the same host and port, and pin the controller's CA with WHARF_CA")
        .into());
    }
    Ok(client(url, None, None))
}

/// The CA pinned in `WHARF_CA`: `sha256:HEX`, or the path of a PEM file.
fn ca_pin() -> anyhow::Result<Option<wharf_client::CaPin>> {
    let Some(value) = std::env::var("WHARF_CA").ok().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Some(hex) = value.strip_prefix("sha256:") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                Failure::input(format!("WHARF_CA `{value}` is not a sha256 fingerprint"))
                    .hint("64 hexadecimal digits after `sha256:`, as the controller logs it")
                    .into(),
            );
        }
        return Ok(Some(wharf_client::CaPin::Fingerprint(
            hex.to_ascii_lowercase(),
        )));
    }
    let pem = std::fs::read_to_string(&value).map_err(|e| {
        Failure::input(format!("cannot read WHARF_CA `{value}`: {e}"))
            .hint("give the controller's CA certificate (PEM) or `sha256:FINGERPRINT`")
    })?;
    Ok(Some(wharf_client::CaPin::Pem(pem)))
}

/// The controller recorded in `state_dir`, if it answers. Before anything is sent to
/// it (a token, a secret), it must prove it holds the key its state folder records:
/// after a crash, anything may listen on its port.
async fn running(state_dir: &Path) -> Result<Option<(Client, ControllerFile)>, Failure> {
    let read = || {
        std::fs::read(state_dir.join(CONTROLLER_FILE))
            .ok()
            .and_then(|text| serde_json::from_slice::<ControllerFile>(&text).ok())
    };
    let Some(mut file) = read() else {
        return Ok(None);
    };
    if file.key.is_empty() {
        // Written by a build of wharf from before controllers proved themselves: stop
        // that controller (if its pid is still a controller of this folder) so a new
        // one starts.
        stop_legacy(state_dir, file.pid).await;
        return Ok(None);
    }
    // A controller starting for this folder may answer on the remembered port just
    // before it replaces the file: a proof under a key that changed meanwhile is
    // checked again against the new file.
    for _ in 0..3 {
        match prove(&file).await {
            None => return Ok(None),
            Some(true) => {
                let client = client(&file.url, Some(state_dir), Some(&file.key));
                return Ok(Some((client, file)));
            }
            Some(false) => match read() {
                Some(newer) if newer.key != file.key => file = newer,
                _ => break,
            },
        }
    }
    Err(impostor(state_dir, &file))
}

/// Whether what answers at the file's address holds its key (`None`: nothing answers).
async fn prove(file: &ControllerFile) -> Option<bool> {
    let challenge = challenge();
    let stranger = Client::with_identity(&file.url, None, "");
    let health = stranger.health(Some(&challenge)).await.ok()?;
    let expected = wharf_server::controller_proof(&file.key, &challenge);
    Some(
        !file.key.is_empty()
            && health.proof.is_some_and(|p| {
                wharf_secrets::constant_time_eq(p.as_bytes(), expected.as_bytes())
            }),
    )
}

fn impostor(state_dir: &Path, file: &ControllerFile) -> Failure {
    Failure::operation(format!(
        "something answers at {} that is not the controller of `{}`: it cannot prove it holds the key in its state folder, so nothing was sent to it",
        file.url,
        project::display_path(state_dir)
    ))
    .hint(format!(
        "the controller that wrote `{}` stopped and another program took its port; stop that program (`ss -ltnp` names it) and run the command again",
        state_dir.join(CONTROLLER_FILE).display()
    ))
}

/// A fresh random challenge, in hex.
fn challenge() -> String {
    let bytes: [u8; 16] = wharf_secrets::random_bytes().unwrap_or_else(|_| {
        // No kernel randomness: the time still makes a fresh challenge per call.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        nanos.to_le_bytes()
    });
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stops this project's background controller, if one runs; returns its pid.
pub async fn stop_local(global: &Global) -> anyhow::Result<Option<u32>> {
    let state_dir = project::state_dir(global)?;
    // The supervisor first, or it starts the controller again (it passes SIGTERM on).
    let supervised = stop_supervisor(&state_dir).await;
    let Some((_, file)) = running(&state_dir).await? else {
        return Ok(supervised);
    };
    stop(&file).await;
    Ok(Some(file.pid))
}

/// Stops the supervisor of this state folder's controller, if one runs: only a
/// `wharf server --supervise` of this very folder is signalled. Its pid, if it ran.
async fn stop_supervisor(state_dir: &Path) -> Option<u32> {
    let file = state_dir.join(SUPERVISOR_FILE);
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.contains(&b"--supervise".as_slice())
        && args.contains(&state_dir.as_os_str().as_encoded_bytes());
    if !ours {
        return None;
    }
    let target = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM).ok()?;
    let begun = Instant::now();
    while begun.elapsed() < Duration::from_secs(10)
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(pid)
}

/// Stops a controller started by an older build, identified by its command line
/// (`wharf server --dev --state-dir STATE`), not by what answers on its port.
async fn stop_legacy(state_dir: &Path, pid: u32) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.contains(&b"server".as_slice())
        && args.contains(&state_dir.as_os_str().as_encoded_bytes());
    if !ours {
        return;
    }
    let file = ControllerFile {
        url: String::new(),
        pid,
        started: wharf_server::process_start_ticks(pid).unwrap_or(0),
        build: String::new(),
        key: String::new(),
        agent_url: String::new(),
    };
    stop(&file).await;
}

/// Asks a controller to stop and waits until it has. Only the process its own file
/// names, and only while that pid is still the process that wrote it (same start
/// time): a pid reused by another program is never signalled.
async fn stop(file: &ControllerFile) {
    if file.started == 0 || wharf_server::process_start_ticks(file.pid) != Some(file.started) {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(file.pid as i32);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        return;
    }
    let begun = Instant::now();
    while begun.elapsed() < Duration::from_secs(10) && nix::sys::signal::kill(pid, None).is_ok() {
        if std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `wharf server --dev` for `state_dir`, detached from this terminal session so
/// it outlives the command. Two commands racing here are fine: the second controller
/// finds the state folder locked and exits, and both commands use the first.
/// What a log file got after `offset`.
fn log_since(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

fn start(state_dir: &Path, agents_beyond_loopback: bool) -> anyhow::Result<std::process::Child> {
    {
        use std::os::unix::fs::DirBuilderExt;
        // The state folder is its owner's alone from the start.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| {
                Failure::operation(format!("cannot create `{}`: {e}", state_dir.display()))
            })?;
    }
    // The controller's log is its owner's alone (the folder lets others pass through).
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(state_dir.join("server.log"))?
    };
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("server")
        .arg("--dev")
        // Started again should it die: the laptop's instances are never left unwatched
        // until the next command.
        .arg("--supervise")
        .arg("--state-dir")
        .arg(state_dir)
        .args(
            agents_beyond_loopback
                .then_some(["--agent-listen", "0.0.0.0:0"])
                .into_iter()
                .flatten(),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    Ok(command
        .spawn()
        .map_err(|e| Failure::operation(format!("cannot start a local controller: {e}")))?)
}
