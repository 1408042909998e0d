//! The deploy lock is the deployment row in progress. A task that runs a deployment holds
//! a [`DeployGuard`] for it, as mini-redis's connection tasks hold their permit: however
//! the task ends (an error returned early, a panic unwinding), the guard ends the
//! deployment, so the lock is free for the next deploy.

use std::sync::Arc;

use wharf_core::lifecycle::DeploymentState;
use wharf_store::{Store, StoreError};

use crate::now_millis;

/// What a deployment ended by a dropped guard says.
pub const ABANDONED: &str = "the deploy stopped before it finished (an internal error); what it changed may be partly applied, see `wharf status`";

/// Owns the end of a deployment in progress.
pub struct DeployGuard {
    store: Arc<dyn Store>,
    id: i64,
    ended: bool,
}

impl DeployGuard {
    pub fn new(store: Arc<dyn Store>, id: i64) -> Self {
        Self {
            store,
            id,
            ended: false,
        }
    }

    /// The deployment it holds.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Ends the deployment as it turned out.
    pub fn finish(mut self, state: DeploymentState, message: &str) -> Result<(), StoreError> {
        self.ended = true;
        let finished = self
            .store
            .finish_deployment(self.id, state, message, now_millis());
        crate::deploy_ended();
        finished
    }
}

impl Drop for DeployGuard {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        crate::deploy_ended();
        if let Err(e) =
            self.store
                .finish_deployment(self.id, DeploymentState::Failed, ABANDONED, now_millis())
        {
            tracing::error!("cannot end deployment #{}: {e}", self.id);
        } else {
            tracing::error!(
                "deployment #{} ended without finishing; marked failed",
                self.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::lifecycle::DeploymentKind;
    use wharf_store::{NewDeployment, SqliteStore};

    fn deployment() -> NewDeployment {
        NewDeployment {
            service: "catalog".into(),
            env: "ci".into(),
            kind: DeploymentKind::Deploy,
            version: "v1".into(),
            digest: "sha256:a".into(),
            config_digest: String::new(),
            spec: wharf_store::SpecJson::null(),
            user: "ann".into(),
            started_at: 1,
            config_revision: 0,
            forced: false,
            pending_approval: false,
        }
    }

    #[tokio::test]
    async fn a_deploy_task_that_panics_frees_the_lock() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let id = store.begin_deployment(&deployment()).unwrap();
        let held = store.clone();
        let task = tokio::spawn(async move {
            let _guard = DeployGuard::new(held, id);
            panic!("a bug in the deploy task");
        });
        assert!(task.await.unwrap_err().is_panic());
        let ended = store.deployment(id).unwrap().unwrap();
        assert_eq!(ended.state, DeploymentState::Failed);
        assert_eq!(ended.message, ABANDONED);
        // The next deploy of the same service runs.
        store.begin_deployment(&deployment()).unwrap();
    }

    #[test]
    fn a_finished_deployment_keeps_its_outcome() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let id = store.begin_deployment(&deployment()).unwrap();
        DeployGuard::new(store.clone(), id)
            .finish(DeploymentState::Succeeded, "ok")
            .unwrap();
        assert_eq!(
            store.deployment(id).unwrap().unwrap().state,
            DeploymentState::Succeeded
        );
    }
}
