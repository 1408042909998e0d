//! What the service addresses measured: requests, failures (5xx, or no answer) and how
//! long answers took to start, as counters that only grow (rates come from two reads).
//! Latencies are a histogram with the bucket bounds of [`BUCKET_BOUNDS_MS`].

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest.
pub const BUCKET_BOUNDS_MS: [f64; 13] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// The sum of the latencies, in microseconds.
    pub micros: u64,
    /// Per bucket, not cumulative.
    pub buckets: Vec<u64>,
}

impl Counts {
    /// Adds `other` (as an agent sent it: its buckets are taken as they come, any past
    /// the last bound counted in the last one).
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.micros = self.micros.saturating_add(other.micros);
        self.buckets.resize(BUCKET_BOUNDS_MS.len() + 1, 0);
        for (i, theirs) in other.buckets.iter().enumerate() {
            let at = i.min(BUCKET_BOUNDS_MS.len());
            self.buckets[at] = self.buckets[at].saturating_add(*theirs);
        }
    }

    /// What happened between `earlier` and this read. Counters that restarted (fewer
    /// requests than before) count from zero, all of them: fields judged apart could
    /// pair one set's errors with another's requests.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let restarted = self.requests < earlier.requests;
        let minus = |a: u64, b: u64| if restarted { a } else { a.saturating_sub(b) };
        Counts {
            requests: minus(self.requests, earlier.requests),
            errors: minus(self.errors, earlier.errors),
            micros: minus(self.micros, earlier.micros),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| minus(*b, earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The latency under which `quantile` of the requests started answering, in
    /// milliseconds (the bound of its bucket), if any were counted.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Some(BUCKET_BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

/// One address on one agent: its totals, and per backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddressCounts {
    pub env: String,
    pub service: String,
    pub totals: Counts,
    pub backends: Vec<BackendCounts>,
}

/// Requests an address sent to one instance: on the reporting host (`host_id: None`) or
/// another, by its port there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendCounts {
    #[serde(default)]
    pub host_id: Option<i64>,
    pub port: u16,
    pub counts: Counts,
}

/// `GET /v1/traffic`: a service's traffic through its addresses on every host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceTraffic {
    pub env: String,
    pub service: String,
    pub totals: Counts,
    pub instances: Vec<InstanceTraffic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceTraffic {
    pub node: String,
    pub instance: u32,
    pub counts: Counts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds_and_differences_survive_restarts() {
        let mut buckets = vec![0; 14];
        buckets[0] = 98;
        buckets[6] = 2;
        let c = Counts {
            requests: 100,
            errors: 1,
            micros: 0,
            buckets,
        };
        assert_eq!(c.quantile_ms(0.5), Some(1.0));
        assert_eq!(c.quantile_ms(0.99), Some(100.0));
        assert_eq!(Counts::default().quantile_ms(0.5), None);
        let later = Counts {
            requests: 150,
            ..c.clone()
        };
        assert_eq!(later.since(&c).requests, 50);
        assert_eq!(c.since(&later).requests, 100, "a restarted counter");
    }
}
