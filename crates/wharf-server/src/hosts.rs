//! Host liveness: a host that stops reporting is marked down, then lost.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::lifecycle::HostState;
use wharf_store::HostRecord;

use crate::error::ServerError;
use crate::{Controller, now_millis};

/// A host silent for this long is down.
pub const DOWN_AFTER: Duration = Duration::from_secs(6);
/// A host down for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(60);

/// What a host's state becomes after `silent_for` without a report.
pub fn state_after_silence(state: HostState, silent_for: Duration) -> HostState {
    match state {
        HostState::Ready | HostState::Draining | HostState::Down if silent_for >= LOST_AFTER => {
            HostState::Lost
        }
        HostState::Ready | HostState::Draining if silent_for >= DOWN_AFTER => HostState::Down,
        other => other,
    }
}

/// Marks silent hosts down and lost, until `shutdown`. Silence counts from this
/// controller's start at the earliest: hosts could not report to a controller that was
/// not running (or, after a failover, reported to the one before), and are not moved
/// for it.
pub async fn watch_heartbeats(c: Arc<Controller>, shutdown: CancellationToken) {
    let started = now_millis();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // Reports heard since the last tick, stored together.
        let heartbeats = c.fleet.take_heartbeats();
        if let Err(e) = c.store.touch_hosts(&heartbeats) {
            tracing::warn!("cannot record hosts' heartbeats: {e}");
            c.fleet.untaken_heartbeats(heartbeats);
        }
        let now = now_millis();
        for host in c.store.hosts(None).unwrap_or_default() {
            // What this controller heard counts whether or not it is stored yet: a
            // host back from down reports (and is ready) before its heartbeat is.
            let heard = host.last_seen.max(c.fleet.last_heard(host.id)).max(started);
            let silent = Duration::from_millis((now - heard).max(0) as u64);
            let next = state_after_silence(host.state, silent);
            if next != host.state {
                tracing::warn!(host = %host.name, env = %host.env, "host is {} after {}s without a report", next.as_str(), silent.as_secs());
                let _ = c.store.set_host_state(host.id, next);
                c.fleet.hosts_changed();
                if next == HostState::Down {
                    let (c, env) = (c.clone(), host.env.clone());
                    tokio::spawn(async move { c.executor.reschedule(&env).await });
                }
            }
        }
    }
}

/// Stores what joined hosts report, until `shutdown`: the rows that arrived while the
/// last write ran go together in the next, so a thousand hosts' reports cost a few
/// writes, not one each (nor a waiting request each).
pub async fn store_observations(c: Arc<Controller>, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = c.fleet.observations_arrived() => false,
            _ = shutdown.cancelled() => true,
        };
        let rows = c.fleet.take_observed();
        if let Err(e) = c.store.put_observed_instances(&rows) {
            tracing::warn!("cannot record {} instance report(s): {e}", rows.len());
            c.fleet.untaken_observed(rows);
            // Tried again after a pause, not at once, while the store is away.
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
            c.fleet.observations_waiting();
            continue;
        }
        if stopping {
            return;
        }
    }
}

/// A report arrived: a down or lost host is ready again.
pub fn heard_from(c: &Controller, host: &HostRecord) -> Result<(), ServerError> {
    if matches!(host.state, HostState::Down | HostState::Lost) {
        tracing::info!(host = %host.name, "host is back");
        c.store.set_host_state(host.id, HostState::Ready)?;
        c.fleet.hosts_changed();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_turns_ready_hosts_down_then_lost() {
        let s = |secs| Duration::from_secs(secs);
        assert_eq!(
            state_after_silence(HostState::Ready, s(3)),
            HostState::Ready
        );
        assert_eq!(
            state_after_silence(HostState::Ready, s(11)),
            HostState::Down
        );
        assert_eq!(state_after_silence(HostState::Down, s(30)), HostState::Down);
        assert_eq!(state_after_silence(HostState::Down, s(61)), HostState::Lost);
        assert_eq!(
            state_after_silence(HostState::Revoked, s(600)),
            HostState::Revoked
        );
    }
}
