//! `--supervise`: a small process that runs the same command without its supervising
//! flags and starts it again when it dies.
//!
//! - `wharf agent --supervise --pid-file FILE`, where no systemd restarts the agent: the
//!   agent is started again whenever it exits.
//! - `wharf server --dev --supervise`, the laptop's background controller as the CLI
//!   starts it: started again when it dies (killed, crashed), so the local agent's
//!   instances are watched again within a second; a controller that stops on purpose
//!   (exit 0, as after SIGTERM or `wharf server stop`) or cannot start is left stopped.
//!
//! Either backs off when the command dies soon after starting; SIGTERM is passed on and
//! ends both (instances keep running, and are adopted by the next agent or controller).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::failure::Failure;

/// A command that ran this long before it died is started again at once.
const STEADY: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A controller that fails within this long after starting could not start: it is not
/// started again (its log says why, and the CLI shows it).
const START_WINDOW: Duration = Duration::from_secs(5);

/// When the supervised command is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Whenever it exits.
    Always,
    /// When it dies; not when it exits 0 (it was told to stop), nor when it fails
    /// within [`START_WINDOW`] of starting (it cannot start).
    WhenItDies,
}

/// What to do after the command ended with `status` having run for `ran`.
fn again(restart: Restart, status: Option<std::process::ExitStatus>, ran: Duration) -> Option<u8> {
    use std::os::unix::process::ExitStatusExt;
    match restart {
        Restart::Always => None,
        Restart::WhenItDies => match status {
            Some(s) if s.success() => Some(0),
            Some(s) if s.signal().is_none() && ran < START_WINDOW => {
                Some(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
            }
            _ => None,
        },
    }
}

/// Runs the supervisor (logging is set up by the caller).
pub async fn run(what: &str, pid_file: &Path, restart: Restart) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    write_owner_only(pid_file, &std::process::id().to_string()).map_err(|e| {
        Failure::operation(format!(
            "cannot write the pid file {}: {e}",
            pid_file.display()
        ))
    })?;
    let args = supervised_args(std::env::args().skip(1));
    let exe = std::env::current_exe()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&exe).args(&args).spawn()?;
        let ended = tokio::select! {
            status = child.wait() => Some(status.ok()),
            _ = terminate.recv() => None,
            _ = interrupt.recv() => None,
        };
        let Some(status) = ended else {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = child.wait().await;
            remove_own(pid_file);
            return Ok(ExitCode::SUCCESS);
        };
        let ran = started.elapsed();
        if let Some(code) = again(restart, status, ran) {
            remove_own(pid_file);
            return Ok(ExitCode::from(code));
        }
        tracing::warn!(
            "the {what} ended ({}); starting it again",
            status.map(|s| s.to_string()).unwrap_or_default()
        );
        if ran >= STEADY {
            backoff = Duration::from_millis(500);
        } else {
            // Told to stop while waiting: nothing more is started.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = terminate.recv() => { remove_own(pid_file); return Ok(ExitCode::SUCCESS); }
                _ = interrupt.recv() => { remove_own(pid_file); return Ok(ExitCode::SUCCESS); }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Removes the pid file while it names this process (another supervisor of a start
/// race may have written its own since).
fn remove_own(pid_file: &Path) {
    let ours =
        std::fs::read_to_string(pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Writes `text` to `path`, readable by its owner alone (as the rest of a state folder).
fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// The supervised command's arguments: the supervisor's own without its flags.
fn supervised_args(all: impl Iterator<Item = String>) -> Vec<String> {
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
    use super::{Restart, again, supervised_args};
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::time::Duration;

    #[test]
    fn a_controller_is_started_again_only_when_it_dies() {
        let exit = |code: i32| Some(ExitStatus::from_raw(code << 8));
        let killed = Some(ExitStatus::from_raw(9));
        let (soon, later) = (Duration::from_secs(1), Duration::from_secs(60));
        for (status, ran, expected) in [
            (exit(0), later, Some(0)),
            (exit(0), soon, Some(0)),
            (exit(2), soon, Some(2)),
            (exit(101), later, None),
            (killed, soon, None),
            (killed, later, None),
        ] {
            assert_eq!(
                again(Restart::WhenItDies, status, ran),
                expected,
                "{status:?} after {ran:?}"
            );
            assert_eq!(again(Restart::Always, status, ran), None);
        }
    }

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
            supervised_args(given.iter().map(|s| s.to_string())),
            ["agent", "--name", "a"]
        );
    }
}
