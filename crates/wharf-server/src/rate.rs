//! A per-caller limit on how often a call may be made: a fixed window per caller,
//! enough to turn a guessing oracle (comparing secrets) from thousands of tries a
//! second into a handful a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    per_window: u32,
    window: Duration,
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimit {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `who` may make the call now (and counts it if so).
    pub fn allow(&self, who: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Old windows are dropped as they pass, so the map stays as small as the
        // number of recent callers.
        seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        let (_, count) = seen.entry(who.to_owned()).or_insert((now, 0));
        if *count >= self.per_window {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_gets_its_share_per_window() {
        let limit = RateLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.allow("ci", t0)));
        assert!(
            !limit.allow("ci", t0),
            "the fourth in the window is refused"
        );
        assert!(limit.allow("admin", t0), "another caller is not held back");
        assert!(
            limit.allow("ci", t0 + Duration::from_secs(61)),
            "a new window"
        );
    }
}
