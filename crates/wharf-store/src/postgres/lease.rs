//! The leader lease: one row, taken and renewed by the database's clock (a controller's
//! own clock never decides who leads), with an epoch that grows at every change of
//! holder. The holder's writes are fenced by that epoch ([`PgStore::write`]); a change of
//! holder is announced with `NOTIFY wharf_leader` so followers move at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::PgStore;
use crate::{Result, StoreError};

/// The channel a change of leader is announced on.
const CHANNEL: &str = "wharf_leader";

/// The lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// Who holds it (a controller's id for this run), empty when nobody ever did or the
    /// last holder resigned.
    pub holder: String,
    /// Where its API listens.
    pub address: String,
    pub epoch: i64,
    /// Milliseconds until it expires by the database's clock (negative: expired).
    pub expires_in_ms: i64,
}

impl LeaseState {
    /// Whether someone holds it now.
    pub fn held(&self) -> bool {
        !self.holder.is_empty() && self.expires_in_ms > 0
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl PgStore {
    /// Takes the lease for `ttl` if it is free or expired; returns its new epoch, after
    /// which this store's writes are fenced by it. `None`: another controller holds it.
    pub fn campaign(&self, holder: &str, address: &str, ttl: Duration) -> Result<Option<i64>> {
        let (holder, address, ttl) = (holder.to_owned(), address.to_owned(), millis(ttl));
        let epoch = self.call(move |client| async move {
            let row = client
                .query_opt(
                    "UPDATE leader_lease SET holder = $1, address = $2, epoch = epoch + 1,
                         expires_at = now() + $3::float8 * interval '1 millisecond'
                     WHERE id = 1 AND (expires_at <= now() OR holder = '')
                     RETURNING epoch",
                    &[&holder, &address, &(ttl as f64)],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let epoch: i64 = row.try_get(0)?;
            client
                .execute(&format!("NOTIFY {CHANNEL}, '{epoch}'"), &[])
                .await?;
            Ok(Some(epoch))
        })?;
        if let Some(epoch) = epoch {
            self.fence.store(epoch, Ordering::SeqCst);
        }
        Ok(epoch)
    }

    /// Extends the lease held at `epoch` by `ttl`; false when it is no longer ours, after
    /// which nothing this store writes commits.
    pub fn renew(&self, holder: &str, epoch: i64, ttl: Duration) -> Result<bool> {
        let (holder, ttl) = (holder.to_owned(), millis(ttl));
        let renewed = self.call(move |client| async move {
            let n = client
                .execute(
                    "UPDATE leader_lease SET expires_at = now() + $3::float8 * interval '1 millisecond'
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &epoch, &(ttl as f64)],
                )
                .await?;
            Ok(n == 1)
        })?;
        if !renewed {
            self.give_up_fence();
        }
        Ok(renewed)
    }

    /// Gives the lease up (a graceful stop): it expires now and followers are told.
    pub fn resign(&self, holder: &str, epoch: i64) -> Result<()> {
        self.give_up_fence();
        let holder = holder.to_owned();
        self.call(move |client| async move {
            client
                .execute(
                    "UPDATE leader_lease SET holder = '', expires_at = now()
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &epoch],
                )
                .await?;
            client
                .execute(&format!("NOTIFY {CHANNEL}, 'resigned'"), &[])
                .await?;
            Ok(())
        })
    }

    /// Stops writing under the lease held so far (its loss was noticed).
    pub fn give_up_fence(&self) {
        self.fence.store(0, Ordering::SeqCst);
    }

    /// The epoch this store's writes are fenced by (0: none).
    pub fn fence_epoch(&self) -> i64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// The lease as the database has it now.
    pub fn lease(&self) -> Result<LeaseState> {
        self.call(|client| async move {
            let row = client
                .query_one(
                    "SELECT holder, address, epoch,
                         (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::BIGINT
                     FROM leader_lease WHERE id = 1",
                    &[],
                )
                .await?;
            Ok(LeaseState {
                holder: row.try_get(0)?,
                address: row.try_get(1)?,
                epoch: row.try_get(2)?,
                // -infinity (never held) reads as NULL.
                expires_in_ms: row.try_get::<_, Option<i64>>(3)?.unwrap_or(i64::MIN),
            })
        })
    }

    /// A counter that moves whenever the lease changes holder or is given up
    /// (`LISTEN wharf_leader` on a connection of its own, reconnected when it drops).
    pub fn leader_changes(&self) -> Result<tokio::sync::watch::Receiver<u64>> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Unavailable("the store is closed".into()));
        };
        let (tell, told) = tokio::sync::watch::channel(0u64);
        let (config, tls) = (self.config.clone(), self.tls.clone());
        runtime.spawn(async move {
            while !tell.is_closed() {
                if let Ok((client, mut messages)) =
                    super::connect_alone(&config, tls.as_ref()).await
                {
                    let statement = format!("LISTEN {CHANNEL}");
                    let listen = client.batch_execute(&statement);
                    // The connection makes progress only while its messages are polled.
                    let mut listen = std::pin::pin!(listen);
                    let mut listening = false;
                    loop {
                        tokio::select! {
                            done = &mut listen, if !listening => {
                                if done.is_err() { break; }
                                listening = true;
                                // Whatever changed while nobody listened counts too.
                                tell.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            message = messages.next() => match message {
                                Some(Ok(AsyncMessage::Notification(_))) => {
                                    tell.send_modify(|n| *n = n.wrapping_add(1));
                                }
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => break,
                            },
                            _ = tell.closed() => return,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(told)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::pg;
    use crate::{ArtifactRecord, Store};

    fn artifact(version: &str) -> ArtifactRecord {
        ArtifactRecord {
            service: "catalog".into(),
            version: version.into(),
            digest: "sha256:aa".into(),
            size: 1,
            created_at: 1,
        }
    }

    /// Two controllers' stores on one new database.
    fn two() -> Option<(PgStore, PgStore)> {
        let url = pg::new_database()?;
        Some((
            PgStore::connect(&url).unwrap(),
            PgStore::connect(&url).unwrap(),
        ))
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_store_that_never_led_writes_nothing() {
        let Some((a, _)) = two() else { return };
        assert!(matches!(
            a.put_artifact(&artifact("v1")),
            Err(StoreError::Fenced { epoch: 0 })
        ));
        assert!(a.artifacts(None).unwrap().is_empty(), "reads still work");
    }

    #[test]
    fn one_leader_at_a_time_and_a_deposed_leaders_write_changes_nothing() {
        let Some((a, b)) = two() else { return };
        let first = a
            .campaign("a", "http://a", Duration::from_millis(400))
            .unwrap()
            .unwrap();
        assert_eq!(
            b.campaign("b", "http://b", Duration::from_secs(3)).unwrap(),
            None,
            "held"
        );
        assert_eq!(b.lease().unwrap().address, "http://a");
        a.put_artifact(&artifact("v1")).unwrap();
        // A stops renewing (paused, say); its lease runs out by the database's clock.
        wait_until("the lease expires", || !b.lease().unwrap().held());
        let second = b
            .campaign("b", "http://b", Duration::from_secs(3))
            .unwrap()
            .unwrap();
        assert!(second > first);
        // A wakes up and writes as if it still led: refused, and nothing changed.
        let late = a.put_artifact(&artifact("v2"));
        assert!(
            matches!(late, Err(StoreError::Fenced { epoch }) if epoch == first),
            "{late:?}"
        );
        assert!(
            !a.renew("a", first, Duration::from_secs(3)).unwrap(),
            "its renewal fails too"
        );
        let versions: Vec<_> = b
            .artifacts(None)
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, ["v1"]);
        b.put_artifact(&artifact("v3")).unwrap();
    }

    #[test]
    fn a_leader_that_renews_keeps_the_lease() {
        let Some((a, b)) = two() else { return };
        let epoch = a
            .campaign("a", "http://a", Duration::from_millis(500))
            .unwrap()
            .unwrap();
        for _ in 0..5 {
            assert!(a.renew("a", epoch, Duration::from_millis(500)).unwrap());
            assert_eq!(
                b.campaign("b", "http://b", Duration::from_secs(3)).unwrap(),
                None
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(a.fence_epoch(), epoch);
    }

    #[test]
    fn a_resignation_is_announced_and_the_lease_free_at_once() {
        let Some((a, b)) = two() else { return };
        let mut changes = b.leader_changes().unwrap();
        // The listener is in place once it reports its first (catch-up) change.
        wait_until("the listener is ready", || {
            changes.has_changed().unwrap_or(false)
        });
        changes.mark_unchanged();
        let epoch = a
            .campaign("a", "http://a", Duration::from_secs(30))
            .unwrap()
            .unwrap();
        wait_until("the new leader is announced", || {
            changes.has_changed().unwrap_or(false)
        });
        changes.mark_unchanged();
        a.resign("a", epoch).unwrap();
        wait_until("the resignation is announced", || {
            changes.has_changed().unwrap_or(false)
        });
        assert!(
            b.campaign("b", "http://b", Duration::from_secs(3))
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            a.put_artifact(&artifact("v1")),
            Err(StoreError::Fenced { .. })
        ));
    }
}
