//! The mesh: how an agent's proxy reaches an instance on another host. Instances listen
//! on their own host's loopback, so a proxy does not connect to them directly: it opens
//! a mutual-TLS connection to the other host's agent (both certificates from the
//! controller's CA, the server's naming the host meant), names the instance's port, and
//! the agent joins that connection to the instance if the port is one of its instances
//! in the rotation. Bytes then flow both ways until either side closes.
//!
//! After the handshake the dialer sends `W1` and the port (big-endian); the agent
//! answers one byte: [`ADMITTED`], or [`REFUSED`] (no such instance in its rotation,
//! or the caller is not a host of the environment), or [`UNREACHABLE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};
use tokio_util::sync::CancellationToken;

use crate::target::MeshTarget;

const MAGIC: [u8; 2] = *b"W1";
pub const ADMITTED: u8 = 0;
pub const REFUSED: u8 = 1;
pub const UNREACHABLE: u8 = 2;
/// How long a caller may take to finish the handshake and name a port.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Tunnels open at once through one agent.
const MAX_TUNNELS: usize = 10_000;
/// Callers still in their handshake at once: callers that never authenticate cannot
/// take the places of the tunnels.
const MAX_HANDSHAKES: usize = 256;

/// Reaches instances on other hosts with this agent's certificate.
pub struct MeshDialer {
    connector: TlsConnector,
}

impl MeshDialer {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: TlsConnector::from(config),
        }
    }

    pub(crate) async fn dial(&self, target: &MeshTarget) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(target.via).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut tls = self.connector.connect(name, tcp).await?;
        let [hi, lo] = target.port.to_be_bytes();
        tls.write_all(&[MAGIC[0], MAGIC[1], hi, lo]).await?;
        tls.flush().await?;
        match tls.read_u8().await? {
            ADMITTED => Ok(tls),
            REFUSED => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "{} has no instance in its rotation on port {}",
                    target.host, target.port
                ),
            )),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "{} cannot reach its instance on port {}",
                    target.host, target.port
                ),
            )),
        }
    }
}

/// Who may reach which port: given the caller's verified certificate (DER) and the
/// port it names.
pub type Admit = dyn Fn(&[u8], u16) -> bool + Send + Sync;

/// The receiving side: admits tunnels and counts those open per port, so an instance
/// being drained is stopped only once other hosts' proxies have let go of it.
pub struct MeshInbound {
    admit: Box<Admit>,
    open: Mutex<HashMap<u16, usize>>,
}

impl MeshInbound {
    pub fn new(admit: Box<Admit>) -> Arc<Self> {
        Arc::new(Self {
            admit,
            open: Mutex::default(),
        })
    }

    /// Tunnels open now, to any port.
    pub fn tunnels(&self) -> usize {
        self.lock().values().sum()
    }

    /// Tunnels open now to `port`.
    pub fn tunnels_to(&self, port: u16) -> usize {
        self.lock().get(&port).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts a tunnel until it ends.
struct Open(Arc<MeshInbound>, u16);

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        if let Some(n) = open.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves the mesh on `listener` until `shutdown`.
pub async fn serve_mesh(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    inbound: Arc<MeshInbound>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let Ok((tcp, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(shaking) = handshakes.clone().try_acquire_owned() else {
            continue;
        };
        let (acceptor, inbound) = (acceptor.clone(), inbound.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let admitted =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, admit(&acceptor, &inbound, tcp)).await;
            drop(shaking);
            match admitted {
                Ok(Ok(Some((mut tls, mut instance, open)))) => {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut instance).await;
                    drop(open);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "mesh connection refused: {e}"),
                Err(_) => tracing::debug!(%peer, "mesh handshake timed out"),
            }
        });
    }
}

type Admitted = (tokio_rustls::server::TlsStream<TcpStream>, TcpStream, Open);

async fn admit(
    acceptor: &TlsAcceptor,
    inbound: &Arc<MeshInbound>,
    tcp: TcpStream,
) -> std::io::Result<Option<Admitted>> {
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = [0u8; 4];
    tls.read_exact(&mut head).await?;
    if head[..2] != MAGIC {
        return Ok(None);
    }
    let port = u16::from_be_bytes([head[2], head[3]]);
    let caller = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    // Counted before it is admitted: a drain that begins between the look and the
    // count would otherwise see no tunnel and stop the instance under it.
    *inbound.lock().entry(port).or_default() += 1;
    let open = Open(inbound.clone(), port);
    let allowed = caller.is_some_and(|der| (inbound.admit)(&der, port));
    if !allowed {
        drop(open);
        let _ = tls.write_all(&[REFUSED]).await;
        let _ = tls.shutdown().await;
        return Ok(None);
    }
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(instance) => {
            let _ = instance.set_nodelay(true);
            tls.write_all(&[ADMITTED]).await?;
            tls.flush().await?;
            Ok(Some((tls, instance, open)))
        }
        Err(_) => {
            let _ = tls.write_all(&[UNREACHABLE]).await;
            let _ = tls.shutdown().await;
            Ok(None)
        }
    }
}
