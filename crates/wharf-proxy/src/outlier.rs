//! Passive ejection, like Envoy's outlier detection: a backend that refuses connections
//! or answers with a run of 5xx leaves the balancer for a while before its health check
//! notices, and comes back by itself. At most half of a service's backends are ever
//! ejected, so a fault that hits them all (or a bug in the client) cannot empty it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A refused connection ejects at once: nothing listens there.
pub const CONNECT_FAILURES: u32 = 1;
/// 5xx answers in a row that eject.
pub const CONSECUTIVE_5XX: u32 = 5;
/// The first ejection lasts this long; each next one in a row longer, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(2);
pub const MAX_EJECTION: Duration = Duration::from_secs(30);

/// What a request's outcome says of its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    ServerError,
    ConnectFailed,
}

/// A backend's record of recent failures.
#[derive(Debug, Default)]
pub struct Record {
    connect_failures: AtomicU32,
    server_errors: AtomicU32,
    /// Ejections in a row (reset by an answer after the last one ended).
    ejections: AtomicU32,
    /// Until when it is out, in milliseconds since [`epoch`] (0: not ejected).
    until_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Record {
    /// Records an outcome; returns whether it ejected the backend.
    pub fn record(&self, outcome: Outcome) -> bool {
        let (count, threshold) = match outcome {
            Outcome::Answered => {
                self.connect_failures.store(0, Ordering::Relaxed);
                self.server_errors.store(0, Ordering::Relaxed);
                if !self.is_ejected() {
                    self.ejections.store(0, Ordering::Relaxed);
                }
                return false;
            }
            Outcome::ServerError => (&self.server_errors, CONSECUTIVE_5XX),
            Outcome::ConnectFailed => (&self.connect_failures, CONNECT_FAILURES),
        };
        if count.fetch_add(1, Ordering::Relaxed) + 1 < threshold {
            return false;
        }
        count.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let length = BASE_EJECTION.saturating_mul(1 << n).min(MAX_EJECTION);
        self.until_ms
            .store(now_ms() + length.as_millis() as u64, Ordering::Relaxed);
        true
    }

    pub fn is_ejected(&self) -> bool {
        self.until_ms.load(Ordering::Relaxed) > now_ms()
    }
}

/// Which of `n` backends the balancer may choose, given which are ejected: the ejected
/// ones are skipped, but never more than half of them (the first ones stay out).
pub fn usable(ejected: &[bool]) -> Vec<usize> {
    let allowed_out = ejected.len() / 2;
    let mut out = 0;
    (0..ejected.len())
        .filter(|&i| {
            if ejected[i] && out < allowed_out {
                out += 1;
                false
            } else {
                true
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_half_of_the_backends_are_left_out() {
        let table: &[(&[bool], &[usize])] = &[
            (&[], &[]),
            (&[true], &[0]),
            (&[true, false], &[1]),
            (&[true, true], &[1]),
            (&[false, true, true], &[0, 2]),
            (&[true, true, true, true], &[2, 3]),
            (&[false, false, false], &[0, 1, 2]),
        ];
        for (ejected, expected) in table {
            assert_eq!(&usable(ejected), expected, "{ejected:?}");
        }
    }

    #[test]
    fn a_refused_connection_ejects_and_a_run_of_5xx_does() {
        let refused = Record::default();
        assert!(refused.record(Outcome::ConnectFailed));
        assert!(refused.is_ejected());

        let erring = Record::default();
        for _ in 1..CONSECUTIVE_5XX {
            assert!(!erring.record(Outcome::ServerError));
        }
        assert!(!erring.is_ejected());
        assert!(erring.record(Outcome::ServerError));
        assert!(erring.is_ejected());

        let mixed = Record::default();
        for _ in 0..3 * CONSECUTIVE_5XX {
            mixed.record(Outcome::ServerError);
            mixed.record(Outcome::Answered);
        }
        assert!(
            !mixed.is_ejected(),
            "an answer between errors resets the run"
        );
    }
}
