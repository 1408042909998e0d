//! Host providers. The `netns` provider makes each host of an environment a Linux
//! network namespace on this machine, with its own address on a bridge, so a fleet of
//! agents runs production-like on one laptop (R12) and single hosts can be stopped,
//! killed or cut off to test failure modes.
//!
//! Every command goes through [`Runner`], so the provider's bookkeeping is tested with a
//! recording fake and the real one runs `ip`.

mod docker;
mod netns;
pub mod ssh;

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

/// A short id of a project (its state folder), so two projects' links, networks and
/// namespaces never clash, and the /24 its hosts get: `<prefix>.<third octet>`.
pub(crate) struct ProjectId(String);

impl ProjectId {
    pub(crate) fn of(state_dir: &std::path::Path) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(state_dir.to_string_lossy().as_bytes());
        Self(hex::encode(&digest[..3]))
    }

    /// One /24 of `prefix` (`10.231`) per project, picked by its id.
    pub(crate) fn subnet(&self, prefix: &str) -> String {
        format!("{prefix}.{}", self.third_octet())
    }

    fn third_octet(&self) -> u16 {
        u16::from(u8::from_str_radix(self.0.get(..2).unwrap_or("00"), 16).unwrap_or(0)) % 250 + 1
    }

    /// Every /24 of `prefix`, the project's own first, then the ones after it.
    pub(crate) fn subnets<'a>(&self, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        let first = self.third_octet();
        (0..250u16).map(move |k| format!("{prefix}.{}", (first - 1 + k) % 250 + 1))
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A provider's record of what it made, as a JSON file in the state folder. Saved after
/// every step (write to a temporary file, then rename), so a failure halfway leaves
/// nothing untracked.
pub(crate) struct RecordFile(pub std::path::PathBuf);

impl RecordFile {
    pub(crate) fn error(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::State {
            path: self.0.display().to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn load<T: serde::de::DeserializeOwned + Default>(
        &self,
    ) -> Result<T, ProviderError> {
        match std::fs::read(&self.0) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(self.error(e)),
        }
    }

    pub(crate) fn save<T: serde::Serialize>(&self, record: &T) -> Result<(), ProviderError> {
        let tmp = self.0.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(record).expect("records serialize"),
        )
        .map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.0).map_err(|e| self.error(e))
    }

    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
