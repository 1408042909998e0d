//! Host providers. The `netns` provider makes each host of an environment a Linux
//! network namespace on this machine, with its own address on a bridge, so a fleet of
//! agents runs production-like on one laptop (R12) and single hosts can be stopped,
//! killed or cut off to test failure modes.
//!
//! Every command goes through [`Runner`], so the provider's bookkeeping is tested with a
//! recording fake and the real one runs `ip`.

mod docker;
mod netns;

pub use docker::{ContainerHost, DockerProvider, DockerRecord, write_rootfs};
pub use netns::{NetnsHost, NetnsProvider, NetworkRecord};

use std::process::Command;

/// Why a provider could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("the netns provider needs root (it creates network namespaces and links)")]
    NotRoot,
    #[error("no host `{0}` was provisioned by `wharf env up`")]
    UnknownHost(String),
    #[error("cannot read or write provider state `{path}`: {reason}")]
    State { path: String, reason: String },
}

/// Runs system commands.
pub trait Runner: Send + Sync {
    /// Runs `argv`; returns its stdout, or an error with its stderr.
    fn run(&self, argv: &[&str]) -> Result<String, ProviderError>;
}

/// The real runner.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[&str]) -> Result<String, ProviderError> {
        let output = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|e| ProviderError::Command {
                command: argv.join(" "),
                reason: e.to_string(),
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ProviderError::Command {
                command: argv.join(" "),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// A runner that records commands and answers from a script, for tests.
#[derive(Default)]
pub struct RecordingRunner {
    pub commands: std::sync::Mutex<Vec<String>>,
}

impl Runner for RecordingRunner {
    fn run(&self, argv: &[&str]) -> Result<String, ProviderError> {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(argv.join(" "));
        Ok(String::new())
    }
}
