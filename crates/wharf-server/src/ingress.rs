//! Environments' entries as the definition in force says: the local agent's are set
//! here whenever the revision in force changes (and at start); joined hosts get theirs
//! with their assignments, woken by the same change.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::model::Ingress;

use crate::Controller;

/// How often the revision in force is looked at (a definition applied, or approved).
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The entry of `env` in the definition in force.
pub fn of_env(c: &Controller, env: &str) -> Option<Ingress> {
    let current = c.definitions.current().ok()?;
    current.definition.environments.get(env)?.ingress.clone()
}

/// Keeps the local agent's entries and the hosts' in step with the definition.
pub async fn watch(c: Arc<Controller>, shutdown: CancellationToken) {
    let mut applied = None;
    loop {
        if let Ok(current) = c.definitions.current()
            && applied != Some(current.revision)
        {
            applied = Some(current.revision);
            if let Some(local) = &c.fleet.local {
                // Environments with hosts of their own run their entries there.
                let here = current
                    .definition
                    .environments
                    .iter()
                    .filter(|(_, e)| e.hosts.is_none())
                    .filter_map(|(name, e)| Some((name.clone(), e.ingress.clone()?)))
                    .collect();
                local.traffic().set_ingresses(here);
            }
            c.fleet.routes_changed();
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
