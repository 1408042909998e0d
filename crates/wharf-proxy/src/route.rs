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
    /// Cancelled when it leaves the route: its websockets are closed cleanly.
    pub(crate) leaving: tokio_util::sync::CancellationToken,
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
            leaving: Default::default(),
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

/// Which of two sets a request goes to while a new version runs beside the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Stable,
    Canary,
}

/// A traffic split: the header and cookie that pin a request to a set (`always`: the
/// canary, `never`: the stable set), and the canary's share of the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Percent of requests (or connections) to the canary, 0 to 100.
    pub weight: u8,
    /// Lowercase.
    pub header: String,
    pub cookie: String,
}

/// The backends, each marked canary or not, and the split between them.
#[derive(Default)]
struct Members {
    backends: Vec<Arc<Backend>>,
    canary: Vec<bool>,
    split: Option<Split>,
}

/// The backends of one service, swapped atomically.
#[derive(Default)]
pub struct Route {
    members: ArcSwap<Members>,
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
        self.set_split::<T>(targets, &[], None);
    }

    /// Replaces the set with `stable` and `canary` backends, split by `split` (none:
    /// one set of all of them), in one swap.
    pub fn set_split<T: Into<Target> + Clone>(
        &self,
        stable: &[T],
        canary: &[T],
        split: Option<Split>,
    ) {
        let current = self.members.load();
        let mut next = Members {
            split,
            ..Members::default()
        };
        for (t, is_canary) in stable
            .iter()
            .map(|t| (t, false))
            .chain(canary.iter().map(|t| (t, true)))
        {
            let target: Target = t.clone().into();
            let backend = current
                .backends
                .iter()
                .find(|b| b.target == target)
                .cloned()
                .unwrap_or_else(|| Arc::new(Backend::new(target)));
            next.backends.push(backend);
            next.canary.push(is_canary);
        }
        for gone in current
            .backends
            .iter()
            .filter(|b| !next.backends.iter().any(|n| Arc::ptr_eq(n, b)))
        {
            gone.pool.close();
            gone.leaving.cancel();
        }
        self.members.store(Arc::new(next));
        self.changed.notify_waiters();
    }

    /// The split in force, if any: what a request's pin is read from.
    pub fn split(&self) -> Option<Split> {
        self.members.load().split.clone()
    }

    /// A backend, waiting up to `pause` for one when there is none (an instance being
    /// replaced in place leaves the service without one for a moment: its requests
    /// wait for the new one instead of being refused).
    pub(crate) async fn choose_or_wait(
        &self,
        except: Option<&Target>,
        pause: std::time::Duration,
        pinned: Option<Track>,
    ) -> Option<InFlight> {
        let deadline = tokio::time::Instant::now() + pause;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a swap between the look and the wait is
            // not missed.
            changed.as_mut().enable();
            if let Some(chosen) = self.choose_pinned(except, pinned) {
                return Some(chosen);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    pub fn targets(&self) -> Vec<Target> {
        self.members
            .load()
            .backends
            .iter()
            .map(|b| b.target.clone())
            .collect()
    }

    /// Requests (or connections) outstanding on `target` that this route sent,
    /// including to a backend no longer in the set.
    pub fn outstanding_on(&self, target: impl Into<Target>, retired: &[Arc<Backend>]) -> usize {
        let target = target.into();
        self.members
            .load()
            .backends
            .iter()
            .chain(retired)
            .filter(|b| b.target == target)
            .map(|b| b.outstanding())
            .max()
            .unwrap_or(0)
    }

    /// The backends now, to keep while draining the ones a swap removes.
    pub fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.members.load().backends.clone()
    }

    /// Chooses a backend (other than `except`, when there is another) and counts a
    /// request on it, within the set a split sends the request to: the one it is
    /// pinned to, else the canary for `weight` percent of draws. A drawn set with
    /// nothing in it gives way to the other unless the weight is 0: a blue-green
    /// preview never takes the main address's traffic before it is promoted. A pinned
    /// request waits for its own set (as while its instances come back after a
    /// restart).
    pub(crate) fn choose_pinned(
        &self,
        except: Option<&Target>,
        pinned: Option<Track>,
    ) -> Option<InFlight> {
        let members = self.members.load();
        let Some(split) = &members.split else {
            return self.choose_among(&members.backends, except);
        };
        let drawn = || {
            if splitmix(self.draws.fetch_add(1, Ordering::Relaxed)) % 100 < u64::from(split.weight)
            {
                Track::Canary
            } else {
                Track::Stable
            }
        };
        let track = pinned.unwrap_or_else(drawn);
        let of = |track: Track| -> Vec<Arc<Backend>> {
            members
                .backends
                .iter()
                .zip(&members.canary)
                .filter(|(_, c)| **c == (track == Track::Canary))
                .map(|(b, _)| b.clone())
                .collect()
        };
        let mut set = of(track);
        let may_give_way = pinned.is_none() && split.weight > 0;
        if set.is_empty() && may_give_way {
            set = of(match track {
                Track::Canary => Track::Stable,
                Track::Stable => Track::Canary,
            });
        }
        self.choose_among(&set, except)
    }

    fn choose_among(&self, all: &[Arc<Backend>], except: Option<&Target>) -> Option<InFlight> {
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
        let held = route.choose_pinned(Some(&addr(2)), None).unwrap();
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

    fn split(weight: u8) -> Option<Split> {
        Some(Split {
            weight,
            header: "x-wharf-canary".into(),
            cookie: "wharf_canary".into(),
        })
    }

    fn sent_to(route: &Route, pinned: Option<Track>, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| match route.choose_pinned(None, pinned) {
                Some(f) => match &f.backend().target {
                    Target::Local(a) => a.port(),
                    Target::Mesh(_) => 0,
                },
                None => 0,
            })
            .collect()
    }

    #[test]
    fn a_split_sends_its_weight_to_the_canary_and_pins_win() {
        let route = Route::default();
        route.set_split(&[addr(1)], &[addr(2)], split(0));
        assert!(
            sent_to(&route, None, 200).iter().all(|p| *p == 1),
            "weight 0: none to the canary"
        );
        assert!(
            sent_to(&route, Some(Track::Canary), 20)
                .iter()
                .all(|p| *p == 2),
            "pinned to it"
        );
        route.set_split(&[addr(1)], &[], split(50));
        assert_eq!(
            sent_to(&route, Some(Track::Canary), 5),
            vec![0; 5],
            "a pin waits for its set"
        );
        assert_eq!(
            sent_to(&route, None, 5),
            vec![1; 5],
            "others go to the set that serves"
        );
        route.set_split::<Target>(&[], &[addr(2)], split(50));
        assert_eq!(
            sent_to(&route, Some(Track::Stable), 5),
            vec![0; 5],
            "a pin waits for its set"
        );
        route.set_split(&[addr(1)], &[addr(2)], split(100));
        assert!(sent_to(&route, None, 200).iter().all(|p| *p == 2));
        assert!(
            sent_to(&route, Some(Track::Stable), 20)
                .iter()
                .all(|p| *p == 1)
        );
        route.set_split(&[addr(1)], &[addr(2)], split(10));
        let canary = sent_to(&route, None, 2000)
            .iter()
            .filter(|p| **p == 2)
            .count();
        assert!((100..300).contains(&canary), "about 10% of 2000: {canary}");
    }

    #[test]
    fn an_unpromoted_preview_never_takes_the_main_traffic() {
        let route = Route::default();
        route.set_split::<Target>(&[], &[addr(2)], split(0));
        assert_eq!(
            sent_to(&route, None, 20),
            vec![0; 20],
            "no stable instance: nothing"
        );
        route.set_split::<Target>(&[], &[addr(2)], split(50));
        assert_eq!(
            sent_to(&route, None, 20),
            vec![2; 20],
            "halfway: the canary serves"
        );
        route.set_split::<Target>(&[addr(1)], &[], split(100));
        assert_eq!(
            sent_to(&route, None, 5),
            vec![1; 5],
            "no canary: the old set serves"
        );
    }

    #[test]
    fn an_empty_route_chooses_nothing() {
        assert!(
            Route::new::<Target>(&[])
                .choose_pinned(None, None)
                .is_none()
        );
    }
}
