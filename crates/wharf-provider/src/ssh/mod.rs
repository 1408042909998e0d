//! `provider: ssh`: machines reached over SSH get the wharf binary, an agent installed
//! as a service and joined to the controller, in one command (`wharf env up`), many at
//! once, each one's outcome reported on its own.

mod bootstrap;
mod session;

pub use bootstrap::{Bootstrap, Outcome, bootstrap_all, uninstall};
pub use session::{Login, Ran, Session, Trust};

/// Why a machine could not be bootstrapped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("{0}")]
    HostKey(String),
    #[error("login refused: {0}")]
    LoginRefused(String),
    #[error("the identity file: {0}")]
    Key(String),
    #[error("the SSH session broke: {0}")]
    Session(String),
    #[error("{0}")]
    Host(String),
}
