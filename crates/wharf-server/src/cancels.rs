//! `wharf deployments cancel`: the deploys in progress on this controller, each with a
//! flag its executor watches between and during its steps.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Who cancelled a deploy, once someone did.
pub type CancelWatch = watch::Receiver<Option<String>>;

#[derive(Default)]
pub struct Cancels(Mutex<HashMap<i64, watch::Sender<Option<String>>>>);

/// A deploy's place in [`Cancels`]: it leaves when the deploy ends, however it ends.
pub struct Registration<'a> {
    cancels: &'a Cancels,
    id: i64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.id);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<Option<String>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes deployment `id` cancellable while the registration lives.
    pub fn register(&self, id: i64) -> Registration<'_> {
        self.lock().insert(id, watch::channel(None).0);
        Registration { cancels: self, id }
    }

    pub fn watch(&self, id: i64) -> Option<CancelWatch> {
        self.lock().get(&id).map(watch::Sender::subscribe)
    }

    /// Asks deployment `id` to stop and roll back; false when it does not run here.
    pub fn cancel(&self, id: i64, who: &str) -> bool {
        match self.lock().get(&id) {
            Some(flag) => {
                flag.send_if_modified(|by| {
                    let first = by.is_none();
                    by.get_or_insert_with(|| who.to_owned());
                    first
                });
                true
            }
            None => false,
        }
    }
}

/// Who cancelled, if someone did.
pub fn cancelled_by(watch: Option<&CancelWatch>) -> Option<String> {
    watch.and_then(|w| w.borrow().clone())
}

/// Resolves with who cancelled, once someone does (never, without a watch).
pub async fn until_cancelled(watch: Option<&CancelWatch>) -> String {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    let mut watch = watch.clone();
    let by = watch
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|by| by.clone());
    match by {
        Some(by) => by,
        // The deploy ended meanwhile: nothing left to cancel.
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_reaches_the_watch_and_the_first_canceller_is_kept() {
        let cancels = Cancels::default();
        let registration = cancels.register(7);
        let watch = cancels.watch(7);
        assert_eq!(cancelled_by(watch.as_ref()), None);
        assert!(cancels.cancel(7, "alice"));
        assert!(cancels.cancel(7, "bob"));
        assert_eq!(until_cancelled(watch.as_ref()).await, "alice");
        drop(registration);
        assert!(
            !cancels.cancel(7, "alice"),
            "an ended deploy is not cancellable"
        );
        assert!(cancels.watch(7).is_none());
    }
}
