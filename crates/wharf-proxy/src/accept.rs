//! The accept loop both kinds of address share: a connection limit (each connection
//! holds a permit until its task ends) and a pause instead of a spin when accepting
//! fails (out of file descriptors).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub(crate) struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    /// Held by the connection's task for as long as it lasts.
    pub permit: OwnedSemaphorePermit,
}

pub(crate) struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, shutdown: CancellationToken) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(crate::MAX_CONNECTIONS)),
            shutdown,
        }
    }

    /// Closes its listener (no new connection lands in it), then waits up to `limit`
    /// until every connection it handed out has ended: after a shutdown, so the
    /// server's task ends only once what it carried is answered.
    pub(crate) async fn drained(self, limit: Duration) {
        let Acceptor {
            listener, permits, ..
        } = self;
        drop(listener);
        let all = u32::try_from(crate::MAX_CONNECTIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limit, permits.acquire_many(all)).await;
    }

    /// The next connection (with `TCP_NODELAY`), or `None` once shut down.
    pub(crate) async fn next(&self) -> Option<Accepted> {
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => permit.ok()?,
                _ = self.shutdown.cancelled() => return None,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = self.shutdown.cancelled() => return None,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some(Accepted { tcp, peer, permit });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
