//! What an address measures of the requests it sends: how many, how many failed (5xx,
//! or no answer at all), and how long each took to start answering (a histogram with
//! fixed buckets, so figures from many hosts add up). All counters only grow: rates and
//! percentiles come from the difference between two reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds; one more bucket takes the rest.
pub const BUCKETS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

#[derive(Default)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
}

/// A read of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub requests: u64,
    pub errors: u64,
    /// The sum of all latencies, in microseconds.
    pub micros: u64,
    /// Per bucket (not cumulative), the last one above every bound.
    pub buckets: Vec<u64>,
}

impl Stats {
    pub fn record(&self, failed: bool, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.micros.fetch_add(micros, Ordering::Relaxed);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let stats = Stats::default();
        stats.record(false, Duration::from_micros(900));
        stats.record(true, Duration::from_millis(30));
        stats.record(false, Duration::from_secs(60));
        let s = stats.snapshot();
        assert_eq!((s.requests, s.errors), (3, 1));
        assert_eq!(s.buckets[0], 1, "under 1 ms");
        assert_eq!(s.buckets[5], 1, "25 to 50 ms");
        assert_eq!(s.buckets[BUCKETS_MICROS.len()], 1, "beyond every bound");
    }
}
