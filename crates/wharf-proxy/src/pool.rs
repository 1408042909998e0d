//! Keep-alive connections to one backend: a stack of idle HTTP/1.1 senders. A sender goes
//! back on the stack when the answer it carried has been read to its end (so the next
//! request on it never waits behind a body), and is dropped otherwise; a backend that
//! leaves the route takes its connections with it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::http::ProxyBody;
use crate::target::Target;
/// How long a kept connection may take to be free again: one whose request body is
/// still being sent (the backend answered before reading it all) is dropped instead of
/// holding the next request.
const READY_WAIT: Duration = Duration::from_millis(50);
/// Idle connections kept per backend.
const MAX_IDLE: usize = 256;

pub(crate) type Sender = SendRequest<ProxyBody>;

#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Sender>>,
    /// Its backend left the route: nothing more is kept.
    closed: AtomicBool,
}

/// A connection to use, and whether it was reused (a reused one may have been closed by
/// the backend meanwhile: a request that fails on it may be tried again).
pub(crate) struct Checkout {
    pub sender: Sender,
    pub reused: bool,
}

impl Pool {
    fn pop(&self) -> Option<Sender> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// An idle connection that is still open, or a new one.
    pub(crate) async fn checkout(&self, target: &Target) -> std::io::Result<Checkout> {
        while let Some(mut sender) = self.pop() {
            if sender.is_closed() {
                continue;
            }
            // Returned once its answer was read: ready at once, or as soon as its
            // connection task has seen the end.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Ok(Checkout {
                    sender,
                    reused: true,
                });
            }
        }
        let stream = target.connect().await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(Checkout {
            sender,
            reused: false,
        })
    }

    /// Takes a connection back whose answer was read to its end.
    pub(crate) fn give_back(&self, sender: Sender) {
        if sender.is_closed() || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}

impl Pool {
    /// Closes the idle connections, and those in use once their answers are read.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
