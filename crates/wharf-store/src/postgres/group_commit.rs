//! Group commit: the writes waiting when the writer is free go into one transaction,
//! fenced once by the lease and committed once, each in a savepoint of its own so one
//! refused write changes nothing and fails alone. A thousand agents' reports then cost
//! a few commits a second rather than a thousand lock-and-fsync round trips, and each
//! caller still returns only once its write is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;

use std::panic::AssertUnwindSafe;

use deadpool_postgres::{Pool, Transaction};
use futures_util::FutureExt;

use super::CALL_TIMEOUT;
use crate::{Result, StoreError};

/// The most writes one transaction carries.
const MAX_BATCH: usize = 256;

/// How long a batch takes more of its writes: it holds the lease row's lock, which the
/// lease's renewal waits for, so a batch of long writes commits and leaves the rest to
/// the next rather than hold the lock for seconds.
const BATCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(300);

/// A write's outcome, held until the transaction it ran in commits or fails.
pub(super) trait Outcome: Send {
    fn failed(&self) -> bool;
    /// Hands the caller its result, or the transaction's failure when the result was
    /// an effect that did not commit.
    fn deliver(self: Box<Self>, committed: std::result::Result<(), &StoreError>);
}

pub(super) type Erased = Box<
    dyn for<'t> FnOnce(
            &'t Transaction<'t>,
        ) -> Pin<Box<dyn Future<Output = Box<dyn Outcome>> + Send + 't>>
        + Send,
>;

/// A write waiting for the writer: how to run it, and how to tell its caller it did
/// not run.
pub(super) struct Queued {
    pub run: Erased,
    pub refuse: Box<dyn FnOnce(StoreError) + Send>,
}

/// One caller's result and where it waits for it.
pub(super) struct Answer<T> {
    pub out: Result<T>,
    pub to: SyncSender<Result<T>>,
}

impl<T: Send> Outcome for Answer<T> {
    fn failed(&self) -> bool {
        self.out.is_err()
    }

    fn deliver(self: Box<Self>, committed: std::result::Result<(), &StoreError>) {
        let out = match committed {
            Err(e) if self.out.is_ok() => Err(again(e)),
            _ => self.out,
        };
        let _ = self.to.send(out);
    }
}

/// The same failure for each caller of a batch (errors do not clone).
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Fenced { epoch } => StoreError::Fenced { epoch: *epoch },
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Postgres(m) => StoreError::Postgres(m.clone()),
        other => StoreError::Postgres(other.to_string()),
    }
}

/// The writer: takes the queued writes in batches until every sender is gone.
pub(super) async fn run(
    pool: Pool,
    fence: Arc<AtomicI64>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Queued>,
    changes: tokio::sync::watch::Sender<u64>,
) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    loop {
        if waiting.is_empty() {
            if queue.recv_many(&mut waiting, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            // Left over from the last batch: with whatever queued since, at once.
            while waiting.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => break,
                }
            }
        }
        let jobs = std::mem::take(&mut waiting);
        let epoch = fence.load(Ordering::SeqCst);
        let (committed, outcomes) =
            match tokio::time::timeout(CALL_TIMEOUT, commit(&pool, epoch, jobs)).await {
                Ok((committed, outcomes, left)) => {
                    waiting = left;
                    (committed, outcomes)
                }
                Err(_) => (
                    Err(StoreError::Unavailable(format!(
                        "no answer within {}s",
                        CALL_TIMEOUT.as_secs()
                    ))),
                    Vec::new(),
                ),
            };
        if committed.is_ok() {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        // A batch that timed out dropped its outcomes, and with them their senders:
        // those callers hear that the database did not answer.
        for outcome in outcomes {
            outcome.deliver(committed.as_ref().map(|_| ()));
        }
    }
}

/// Runs `jobs` in one fenced transaction, for [`BATCH_BUDGET`] at most; whether it
/// committed, the outcomes of the jobs that ran (those refused have been told why),
/// and the jobs left for the next batch.
async fn commit(pool: &Pool, epoch: i64, jobs: Vec<Queued>) -> Batch {
    let begun = std::time::Instant::now();
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return refused(jobs, StoreError::Unavailable(super::with_causes(&e))),
    };
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return refused(jobs, e.into()),
    };
    // The lease row is locked first, so the batch commits while the lease is ours.
    let held = tx
        .query_opt(
            "SELECT 1 FROM leader_lease WHERE id = 1 AND epoch = $1 AND $1 > 0 FOR UPDATE",
            &[&epoch],
        )
        .await;
    match held {
        Ok(Some(_)) => {}
        Ok(None) => return refused(jobs, StoreError::Fenced { epoch }),
        Err(e) => return refused(jobs, e.into()),
    }
    let alone = jobs.len() == 1;
    let mut outcomes: Vec<Box<dyn Outcome>> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let opened = if alone {
            Ok(())
        } else {
            tx.batch_execute("SAVEPOINT write").await
        };
        if let Err(e) = opened {
            let e = StoreError::from(e);
            tell(std::iter::once(job).chain(jobs), &e);
            return (Err(e), outcomes, Vec::new());
        }
        // A write that panics fails alone (its caller hears the database did not
        // answer); the writer goes on.
        let ran = AssertUnwindSafe((job.run)(&tx)).catch_unwind().await;
        let failed = ran.as_ref().map_or(true, |outcome| outcome.failed());
        let settled = match (alone, failed) {
            (true, _) => Ok(()),
            (false, false) => tx.batch_execute("RELEASE SAVEPOINT write").await,
            (false, true) => tx.batch_execute("ROLLBACK TO SAVEPOINT write").await,
        };
        if let Ok(outcome) = ran {
            outcomes.push(outcome);
        } else if alone {
            let _ = tx.rollback().await;
            return (Ok(()), outcomes, Vec::new());
        }
        if let Err(e) = settled {
            let e = StoreError::from(e);
            tell(jobs, &e);
            return (Err(e), outcomes, Vec::new());
        }
        if begun.elapsed() >= BATCH_BUDGET {
            break;
        }
    }
    let left: Vec<Queued> = jobs.collect();
    if alone && outcomes.iter().all(|o| o.failed()) {
        // Its one write failed: nothing to keep.
        let _ = tx.rollback().await;
        return (Ok(()), outcomes, left);
    }
    match tx.commit().await {
        Ok(()) => (Ok(()), outcomes, left),
        Err(e) => {
            let e = StoreError::from(e);
            tell(left, &e);
            (Err(e), outcomes, Vec::new())
        }
    }
}

/// What a batch did: whether it committed, the outcomes of its writes, and the writes
/// left for the next batch.
type Batch = (Result<()>, Vec<Box<dyn Outcome>>, Vec<Queued>);

/// Tells each caller of `jobs`, which did not run, why.
fn tell(jobs: impl IntoIterator<Item = Queued>, why: &StoreError) {
    for job in jobs {
        (job.refuse)(again(why));
    }
}

/// A batch that never started: every caller hears why.
fn refused(jobs: Vec<Queued>, why: StoreError) -> Batch {
    tell(jobs, &why);
    (Err(why), Vec::new(), Vec::new())
}
