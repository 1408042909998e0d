//! `wharf agent --supervise --pid-file FILE`: where no systemd restarts the agent, this
//! small process does. It writes its pid to FILE, runs the agent (the same command
//! without those two flags) and starts it again whenever it exits, backing off when it
//! exits soon after starting; SIGTERM is passed on to the agent and ends both (the
//! agent's instances keep running, and are adopted by the next agent).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::failure::Failure;

/// An agent that ran this long before it exited is started again at once.
const STEADY: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn run(pid_file: &Path) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    super::server::init_logging();
    std::fs::write(pid_file, std::process::id().to_string()).map_err(|e| {
        Failure::operation(format!(
            "cannot write the pid file {}: {e}",
            pid_file.display()
        ))
    })?;
    let args = agent_args(std::env::args().skip(1));
    let exe = std::env::current_exe()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&exe).args(&args).spawn()?;
        let stop = tokio::select! {
            status = child.wait() => {
                tracing::warn!(
                    "the agent exited ({}); starting it again",
                    status.map(|s| s.to_string()).unwrap_or_default()
                );
                false
            }
            _ = terminate.recv() => true,
            _ = interrupt.recv() => true,
        };
        if stop {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait().await;
            let _ = std::fs::remove_file(pid_file);
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= STEADY {
            backoff = Duration::from_millis(500);
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// The supervised agent's arguments: the supervisor's own without its two flags.
fn agent_args(all: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in all {
        if skip_value {
            skip_value = false;
            continue;
        }
        match arg.as_str() {
            "--supervise" => {}
            "--pid-file" => skip_value = true,
            a if a.starts_with("--pid-file=") => {}
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::agent_args;

    #[test]
    fn the_agent_runs_without_the_supervisors_flags() {
        let given = [
            "agent",
            "--supervise",
            "--pid-file",
            "/p",
            "--name",
            "a",
            "--pid-file=/q",
        ];
        assert_eq!(
            agent_args(given.iter().map(|s| s.to_string())),
            ["agent", "--name", "a"]
        );
    }
}
