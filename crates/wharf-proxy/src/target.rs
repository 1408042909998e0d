//! Where a backend is: an instance on this host, reached on loopback, or an instance on
//! another host, reached through that host's agent over mutual TLS (the mesh).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::mesh::MeshDialer;

/// How long connecting to a backend may take (the TLS handshake included).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a backend, whatever carries it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Clone)]
pub enum Target {
    /// An instance on this host.
    Local(SocketAddr),
    /// An instance on another host.
    Mesh(MeshTarget),
}

/// An instance's port on another host, and that host's agent.
#[derive(Clone)]
pub struct MeshTarget {
    /// The host's name in its certificate (`host-<id>`), verified when connecting.
    pub host: String,
    /// Where its agent's mesh listener is.
    pub via: SocketAddr,
    /// The instance's port on that host's loopback.
    pub port: u16,
    pub dialer: Arc<MeshDialer>,
}

impl Target {
    fn identity(&self) -> (Option<&str>, SocketAddr, u16) {
        match self {
            Target::Local(addr) => (None, *addr, 0),
            Target::Mesh(m) => (Some(&m.host), m.via, m.port),
        }
    }

    /// Connects to it (through the other host's agent for a mesh target).
    pub async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        match self {
            Target::Local(addr) => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())??;
                let _ = tcp.set_nodelay(true);
                Ok(Box::new(tcp))
            }
            Target::Mesh(m) => {
                let tunnel = tokio::time::timeout(CONNECT_TIMEOUT, m.dialer.dial(m))
                    .await
                    .map_err(|_| timed_out())??;
                Ok(Box::new(tunnel))
            }
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Local(addr)
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for Target {}

impl PartialEq<SocketAddr> for Target {
    fn eq(&self, other: &SocketAddr) -> bool {
        matches!(self, Target::Local(a) if a == other)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(addr) => write!(f, "{addr}"),
            Target::Mesh(m) => write!(f, "port {} on {} ({})", m.port, m.host, m.via),
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
