//! From a bare machine to a running, joined agent: what is already there is found in
//! one probe, and only what is missing is done (the binary uploaded when its checksum
//! differs, the agent joined when it holds no credentials, started when it does not
//! run), so a re-run on a ready machine changes nothing and an interrupted one is
//! completed by the next.

use std::path::PathBuf;
use std::sync::Arc;

use super::SshError;
use super::session::{Login, Session, Trust};

/// Where wharf lives on a machine.
pub const BINARY: &str = "/usr/local/bin/wharf";
pub const STATE_DIR: &str = "/var/lib/wharf/agent";
const PID_FILE: &str = "/var/lib/wharf/agent.pid";
const LOG_FILE: &str = "/var/lib/wharf/agent.log";
const UNIT: &str = "/etc/systemd/system/wharf-agent.service";

/// What every machine of one bootstrap gets.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub env: String,
    /// The wharf binary to install (this one: the machines must share its architecture).
    pub binary: PathBuf,
    /// Where the agents reach the controller, when the definition says; else the
    /// address each connection comes from, on `agent_port`.
    pub controller: Option<String>,
    pub agent_port: u16,
    /// The single-use join token (for machines whose agent has not joined yet).
    pub token: Option<String>,
    pub trust: Trust,
    pub jump: Option<Login>,
}

/// What a bootstrap did on one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub uploaded: bool,
    pub joined: bool,
    pub started: bool,
    /// How its agent runs: `systemd`, or a supervised process with a pid file.
    pub service: String,
}

/// Bootstraps every machine, at most `parallel` at once; each one's outcome, in order.
pub async fn bootstrap_all(
    machines: Vec<Login>,
    plan: Bootstrap,
    parallel: usize,
) -> Vec<(Login, Result<Outcome, SshError>)> {
    let plan = Arc::new(plan);
    let binary = match std::fs::read(&plan.binary) {
        Ok(bytes) => Arc::new(bytes),
        Err(e) => {
            let why = SshError::Host(format!("cannot read {}: {e}", plan.binary.display()));
            return machines
                .into_iter()
                .map(|m| (m, Err(why.clone())))
                .collect();
        }
    };
    let checksum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(binary.as_slice()))
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for machine in machines {
        let (plan, binary, checksum, gate) =
            (plan.clone(), binary.clone(), checksum.clone(), gate.clone());
        let task_machine = machine.clone();
        let task = tokio::spawn(async move {
            let _turn = gate.acquire_owned().await;
            one(&task_machine, &plan, &binary, &checksum).await
        });
        tasks.push((machine, task));
    }
    let mut all = Vec::new();
    for (machine, task) in tasks {
        // A task that broke still gets its line: no machine goes unreported.
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(SshError::Host(format!("the bootstrap broke: {e}"))));
        all.push((machine, outcome));
    }
    all
}

/// What the probe found on a machine.
#[derive(Debug, Default)]
struct Found {
    arch: String,
    checksum: String,
    joined: bool,
    running: bool,
    systemd: bool,
    root: bool,
}

fn parse_probe(text: &str) -> Found {
    let mut found = Found::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("arch", v)) => found.arch = v.trim().to_owned(),
            Some(("sum", v)) => {
                found.checksum = v.split_whitespace().next().unwrap_or("").to_owned()
            }
            Some(("joined", v)) => found.joined = v.trim() == "yes",
            Some(("running", v)) => found.running = v.trim() == "yes",
            Some(("systemd", v)) => found.systemd = v.trim() == "yes",
            Some(("uid", v)) => found.root = v.trim() == "0",
            _ => {}
        }
    }
    found
}

fn probe_script() -> String {
    format!(
        "echo arch=$(uname -m); echo uid=$(id -u); \
         echo sum=$(sha256sum {BINARY} 2>/dev/null); \
         [ -f {STATE_DIR}/joined.json ] && echo joined=yes; \
         [ -d /run/systemd/system ] && echo systemd=yes; \
         if [ -d /run/systemd/system ]; then systemctl is-active --quiet wharf-agent && echo running=yes; \
         else p=$(cat {PID_FILE} 2>/dev/null) && [ -n \"$p\" ] && [ -d /proc/$p ] && echo running=yes; fi; true"
    )
}

/// The architecture an ELF binary is built for, as `uname -m` names it.
fn elf_arch(binary: &[u8]) -> Option<&'static str> {
    if binary.get(..4) != Some(b"\x7fELF".as_slice()) {
        return None;
    }
    let machine = u16::from_le_bytes([*binary.get(18)?, *binary.get(19)?]);
    Some(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0x28 => "armv7l",
        0xf3 => "riscv64",
        _ => return None,
    })
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

async fn one(
    machine: &Login,
    plan: &Bootstrap,
    binary: &[u8],
    checksum: &str,
) -> Result<Outcome, SshError> {
    let session = Session::open(machine, plan.jump.as_ref(), &plan.trust).await?;
    let done = steps(&session, machine, plan, binary, checksum).await;
    session.close().await;
    done
}

async fn steps(
    session: &Session,
    machine: &Login,
    plan: &Bootstrap,
    binary: &[u8],
    checksum: &str,
) -> Result<Outcome, SshError> {
    let fail = |what: &str, ran: &super::Ran| SshError::Host(format!("{what}: {}", ran.why()));
    let probe = session
        .run(&format!("sh -c {}", quote(&probe_script())), b"")
        .await?;
    let mut found = parse_probe(&probe.stdout);
    let built_for = elf_arch(binary).unwrap_or("an unknown architecture");
    if found.arch != built_for {
        return Err(SshError::Host(format!(
            "the machine is {} and {} is built for {built_for}: pass one built for it with `--agent-binary PATH`; nothing was installed",
            if found.arch.is_empty() {
                "of an unknown architecture"
            } else {
                &found.arch
            },
            plan.binary.display(),
        )));
    }
    // Another user goes through sudo, which must not ask for a password.
    let sudo = if found.root {
        ""
    } else {
        let ran = session.run("sudo -n true", b"").await?;
        if !ran.ok() {
            return Err(SshError::Host(format!(
                "`{}` is not root and `sudo -n` refused ({}): allow it passwordless sudo (NOPASSWD) or log in as root",
                machine.user,
                ran.why()
            )));
        }
        "sudo -n "
    };
    // What is installed is root's to see (the agent's state and pid file are its
    // owner's alone): through sudo, the probe reads it.
    let probe_command = format!("{sudo}sh -c {}", quote(&probe_script()));
    if !found.root {
        let ran = session.run(&probe_command, b"").await?;
        if !ran.ok() {
            return Err(fail("cannot look at the machine through sudo", &ran));
        }
        found = parse_probe(&ran.stdout);
    }
    let mut outcome = Outcome {
        service: if found.systemd {
            "systemd"
        } else {
            "supervised process"
        }
        .into(),
        ..Default::default()
    };
    if found.checksum != checksum {
        let install = format!(
            "{sudo}sh -c {}",
            quote(&format!(
                "mkdir -p /usr/local/bin {STATE_DIR} && {{ cat > {BINARY}.new && chmod 755 {BINARY}.new && mv -f {BINARY}.new {BINARY}; }} || {{ rm -f {BINARY}.new; exit 1; }}"
            ))
        );
        let ran = session.run(&install, binary).await?;
        if !ran.ok() {
            return Err(fail(&format!("cannot install {BINARY}"), &ran));
        }
        outcome.uploaded = true;
    }
    let controller = match (&plan.controller, session.local_ip) {
        (Some(url), _) => url.clone(),
        (None, Some(ip)) => format!("https://{}", std::net::SocketAddr::new(ip, plan.agent_port)),
        (None, None) => {
            return Err(SshError::Host(
                "where the machine reaches the controller is not known: set `controller:` in its hosts".into(),
            ));
        }
    };
    let agent_args = format!(
        "agent --controller {} --name {} --labels {} --state-dir {STATE_DIR}",
        quote(&controller),
        quote(&machine.name),
        quote(&format!("provider=ssh,env={}", plan.env)),
    );
    if !found.joined {
        let Some(token) = &plan.token else {
            return Err(SshError::Host(
                "its agent has not joined and no join token was made".into(),
            ));
        };
        // The token goes on standard input: never in argv, the environment or a file.
        let join = format!("{sudo}{BINARY} {agent_args} --join-only --token-stdin");
        let ran = session.run(&join, format!("{token}\n").as_bytes()).await?;
        if !ran.ok() {
            return Err(fail("the agent could not join", &ran));
        }
        outcome.joined = true;
    }
    if outcome.uploaded && found.running {
        // A new binary: the agent is restarted on it (its instances keep running and
        // are adopted).
        let restart = if found.systemd {
            format!("{sudo}systemctl restart wharf-agent")
        } else {
            format!(
                "{sudo}sh -c {}",
                quote(&format!("kill -TERM $(cat {PID_FILE})"))
            )
        };
        let ran = session.run(&restart, b"").await?;
        if !ran.ok() {
            return Err(fail("cannot restart the agent", &ran));
        }
        outcome.started = !found.systemd;
    }
    if !found.running || outcome.started {
        let start = if found.systemd {
            let unit = format!(
                "[Unit]\nDescription=wharf agent\nAfter=network-online.target\n\n[Service]\nExecStart={BINARY} {agent_args}\nRestart=always\nRestartSec=1\nKillMode=process\n\n[Install]\nWantedBy=multi-user.target\n"
            );
            let ran = session
                .run(
                    &format!("{sudo}sh -c {}", quote(&format!("cat > {UNIT}"))),
                    unit.as_bytes(),
                )
                .await?;
            if !ran.ok() {
                return Err(fail("cannot write the systemd unit", &ran));
            }
            format!(
                "{sudo}sh -c {}",
                quote("systemctl daemon-reload && systemctl enable --now wharf-agent")
            )
        } else {
            // No systemd: a supervisor process (restarting the agent when it exits)
            // that outlives this session, found again by its pid file.
            format!(
                "{sudo}sh -c {}",
                quote(&format!(
                    "while [ -f {PID_FILE} ] && kill -0 $(cat {PID_FILE}) 2>/dev/null; do sleep 0.1; done; \
                     setsid {BINARY} {agent_args} --supervise --pid-file {PID_FILE} </dev/null >>{LOG_FILE} 2>&1 &"
                ))
            )
        };
        let ran = session.run(&start, b"").await?;
        if !ran.ok() {
            return Err(fail("cannot start the agent", &ran));
        }
        outcome.started = true;
        // Started means running: the probe sees it before this machine is done.
        let mut runs = false;
        for _ in 0..50 {
            runs = parse_probe(&session.run(&probe_command, b"").await?.stdout).running;
            if runs {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if !runs {
            return Err(SshError::Host(format!(
                "the agent was started but does not run: see {LOG_FILE} on the machine"
            )));
        }
    }
    Ok(outcome)
}

/// Stops a machine's agent for good and removes everything wharf put there: the
/// service (unit or supervisor), the binary and the agent's state. A removal drains the
/// host first, so no instance runs there any more.
pub async fn uninstall(
    machine: &Login,
    jump: Option<&Login>,
    trust: &Trust,
) -> Result<(), SshError> {
    let session = Session::open(machine, jump, trust).await?;
    let probe = session
        .run(&format!("sh -c {}", quote(&probe_script())), b"")
        .await?;
    let found = parse_probe(&probe.stdout);
    let sudo = if found.root { "" } else { "sudo -n " };
    let script = format!(
        "if [ -d /run/systemd/system ]; then systemctl disable --now wharf-agent 2>/dev/null; rm -f {UNIT}; systemctl daemon-reload; fi; \
         p=$(cat {PID_FILE} 2>/dev/null); [ -n \"$p\" ] && kill -TERM $p 2>/dev/null; \
         for i in $(seq 50); do [ -n \"$p\" ] && [ -d /proc/$p ] || break; sleep 0.1; done; \
         rm -rf {STATE_DIR} {PID_FILE} {LOG_FILE} {BINARY}"
    );
    let ran = session
        .run(&format!("{sudo}sh -c {}", quote(&script)), b"")
        .await?;
    session.close().await;
    if !ran.ok() {
        return Err(SshError::Host(format!(
            "cannot remove wharf: {}",
            ran.why()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_what_the_machine_has() {
        let found =
            parse_probe("arch=x86_64\nuid=1000\nsum=abc  /usr/local/bin/wharf\njoined=yes\n");
        assert_eq!(found.arch, "x86_64");
        assert_eq!(found.checksum, "abc");
        assert!(found.joined && !found.running && !found.root && !found.systemd);
        let bare = parse_probe("arch=aarch64\nuid=0\nsum=\n");
        assert!(bare.checksum.is_empty() && bare.root && !bare.joined);
    }

    #[test]
    fn a_binarys_architecture_is_read_from_its_elf_header() {
        let mut header = b"\x7fELF".to_vec();
        header.resize(20, 0);
        header[18] = 0xb7;
        assert_eq!(elf_arch(&header), Some("aarch64"));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_arch(&me), Some(std::env::consts::ARCH));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
