//! A service's backends: the set is replaced whole (an atomic swap), while each
//! backend's count of outstanding requests survives the swaps it stays in, so a new set
//! starts from the load the proxy already knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::target::Target;

/// One instance traffic may go to.
pub struct Backend {
    pub target: Target,
    outstanding: AtomicUsize,
    /// Recent failures, for passive ejection.
    outliers: crate::outlier::Record,
    /// Its idle keep-alive connections.
    pub(crate) pool: crate::pool::Pool,
    /// What the requests sent to it saw.
    pub stats: crate::stats::Stats,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("target", &self.target)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl Backend {
    fn new(target: Target) -> Self {
        Self {
            target,
            outstanding: AtomicUsize::new(0),
            outliers: Default::default(),
            pool: Default::default(),
            stats: Default::default(),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Records how a request to it went (a refused connection or a run of 5xx takes it
    /// out of the balancer for a while).
    pub fn record(&self, outcome: crate::Outcome) {
        if self.outliers.record(outcome) {
            tracing::warn!(target = %self.target, ?outcome, "instance ejected from the balancer for a while");
        }
    }

    pub fn is_ejected(&self) -> bool {
        self.outliers.is_ejected()
    }
}

/// Counts a request (or connection) against a backend until dropped.
pub(crate) struct InFlight(Arc<Backend>);

impl InFlight {
    pub(crate) fn backend(&self) -> &Backend {
        &self.0
    }

    pub(crate) fn shared(&self) -> Arc<Backend> {
        self.0.clone()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends of one service, swapped atomically.
#[derive(Default)]
pub struct Route {
    backends: ArcSwap<Vec<Arc<Backend>>>,
    draws: AtomicU64,
    /// Woken at every swap: requests that found no backend wait here for one.
    changed: tokio::sync::Notify,
    /// How long they wait, in milliseconds (0: [`crate::PAUSE`]).
    pause_ms: AtomicU64,
    /// What the requests through it saw, whichever backend answered.
    pub stats: crate::stats::Stats,
    /// How long an instance may take to start answering, in milliseconds (0:
    /// [`crate::RESPONSE_TIMEOUT`]).
    response_ms: AtomicU64,
}

impl Route {
    pub fn new<T: Into<Target> + Clone>(targets: &[T]) -> Self {
        let route = Self::default();
        route.set(targets);
        route
    }

    /// How long a request waits for a backend when there is none.
    pub fn with_pause(self, pause: std::time::Duration) -> Self {
        self.set_pause(pause);
        self
    }

    /// Changes how long requests wait for a backend (a new definition may say so).
    pub fn set_pause(&self, pause: std::time::Duration) {
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(1);
        self.pause_ms.store(ms, Ordering::Relaxed);
    }

    /// Changes how long an instance may take to start answering.
    pub fn set_response_timeout(&self, timeout: std::time::Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.response_ms.store(ms, Ordering::Relaxed);
    }

    pub fn response_timeout(&self) -> std::time::Duration {
        match self.response_ms.load(Ordering::Relaxed) {
            0 => crate::RESPONSE_TIMEOUT,
            ms => std::time::Duration::from_millis(ms),
        }
    }

    pub fn pause(&self) -> std::time::Duration {
        match self.pause_ms.load(Ordering::Relaxed) {
            0 => crate::PAUSE,
            ms => std::time::Duration::from_millis(ms),
        }
    }

    /// Replaces the set of backends. Requests already sent keep going to the old ones
    /// (drain them with [`Route::outstanding_on`] before stopping those); the idle
    /// connections of a backend that leaves are closed at once, the others once their
    /// answers are read, so the instance (or another host's agent) sees them go.
    pub fn set<T: Into<Target> + Clone>(&self, targets: &[T]) {
        let current = self.backends.load();
        let next: Vec<Arc<Backend>> = targets
            .iter()
            .map(|t| {
                let target: Target = t.clone().into();
                current
                    .iter()
                    .find(|b| b.target == target)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Backend::new(target)))
            })
            .collect();
        for gone in current
            .iter()
            .filter(|b| !next.iter().any(|n| Arc::ptr_eq(n, b)))
        {
            gone.pool.close();
        }
        self.backends.store(Arc::new(next));
        self.changed.notify_waiters();
    }

    /// A backend, waiting up to `pause` for one when there is none (an instance being
    /// replaced in place leaves the service without one for a moment: its requests
    /// wait for the new one instead of being refused).
    pub(crate) async fn choose_or_wait(
        &self,
        except: Option<&Target>,
        pause: std::time::Duration,
    ) -> Option<InFlight> {
        let deadline = tokio::time::Instant::now() + pause;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a swap between the look and the wait is
            // not missed.
            changed.as_mut().enable();
            if let Some(chosen) = self.choose(except) {
                return Some(chosen);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        self.backends
            .load()
            .iter()
            .map(|b| b.target.clone())
            .collect()
    }

    /// Requests (or connections) outstanding on `target` that this route sent,
    /// including to a backend no longer in the set.
    pub fn outstanding_on(&self, target: impl Into<Target>, retired: &[Arc<Backend>]) -> usize {
        let target = target.into();
        self.backends
            .load()
            .iter()
            .chain(retired)
            .filter(|b| b.target == target)
            .map(|b| b.outstanding())
            .max()
            .unwrap_or(0)
    }

    /// The backends now, to keep while draining the ones a swap removes.
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.backends.load().as_ref().clone()
    }

    /// Chooses a backend (other than `except`, when there is another) and counts a
    /// request on it.
    pub(crate) fn choose(&self, except: Option<&Target>) -> Option<InFlight> {
        let all = self.backends.load();
        // The common case (nothing ejected, nothing to avoid) allocates nothing: this
        // runs for every request.
        let backend = if except.is_none() && !all.iter().any(|b| b.is_ejected()) {
            let i = crate::balance::pick_by(all.len(), |i| all[i].outstanding(), self.draws())?;
            all[i].clone()
        } else {
            let ejected: Vec<bool> = all.iter().map(|b| b.is_ejected()).collect();
            let usable = crate::outlier::usable(&ejected);
            let candidates: Vec<&Arc<Backend>> = usable
                .iter()
                .map(|&i| &all[i])
                .filter(|b| Some(&b.target) != except || usable.len() == 1)
                .collect();
            let i = crate::balance::pick_by(
                candidates.len(),
                |i| candidates[i].outstanding(),
                self.draws(),
            )?;
            candidates[i].clone()
        };
        backend.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(backend))
    }

    /// Two cheap pseudo-random draws (a counter through SplitMix64): spreading load
    /// needs no cryptographic randomness.
    fn draws(&self) -> (u64, u64) {
        let n = self.draws.fetch_add(2, Ordering::Relaxed);
        (splitmix(n), splitmix(n + 1))
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Target {
        Target::Local(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_swap_keeps_the_load_of_backends_that_stay() {
        let route = Route::new(&[addr(1), addr(2)]);
        let held = route.choose(Some(&addr(2))).unwrap();
        assert_eq!(held.backend().target, addr(1));
        route.set(&[addr(1), addr(3)]);
        let kept = route.snapshot();
        assert_eq!(
            kept[0].outstanding(),
            1,
            "the request in flight still counts"
        );
        assert_eq!(kept[1].outstanding(), 0);
        drop(held);
        assert_eq!(route.outstanding_on(addr(1), &[]), 0);
    }

    #[test]
    fn an_empty_route_chooses_nothing() {
        assert!(Route::new::<Target>(&[]).choose(None).is_none());
    }
}
