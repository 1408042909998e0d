//! Environments' entries as the definition in force says, with the certificates of
//! their HTTPS routes opened from secrets: the local agent's are set here whenever they
//! change (a definition applied or approved, a secret set) and at start; joined hosts
//! get theirs with their assignments, woken by the same change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_api::agent::{HostCertificate, IngressPlan};

use crate::Controller;

/// How often the entries are looked at again.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// The entry of `env`, and the secrets its HTTPS routes name that are not set (those
/// hosts are served over plain HTTP only until they are).
pub fn plan_of_env(c: &Controller, env: &str) -> Option<(IngressPlan, Vec<String>)> {
    let current = c.definitions.current().ok()?;
    let ingress = current.definition.environments.get(env)?.ingress.clone()?;
    let mut certificates = Vec::new();
    let mut missing = Vec::new();
    for route in &ingress.routes {
        let (Some(tls), Some(host)) = (&route.tls, &route.host) else {
            continue;
        };
        let secrets = c
            .config
            .secret_values(&route.service, env)
            .unwrap_or_default();
        let value = |name: &str| {
            secrets
                .iter()
                .find(|(k, _, _)| k == name)
                .map(|(_, v, _)| v.clone())
        };
        match (value(&tls.cert), value(&tls.key)) {
            (Some(cert_pem), Some(key_pem)) => certificates.push(HostCertificate {
                host: host.clone(),
                cert_pem,
                key_pem,
            }),
            (cert, _) => {
                let name = if cert.is_none() { &tls.cert } else { &tls.key };
                missing.push(format!(
                    "secret `{name}` of service `{}` in `{env}` (for host `{host}`)",
                    route.service
                ));
            }
        }
    }
    Some((
        IngressPlan {
            ingress,
            certificates,
        },
        missing,
    ))
}

/// Keeps the local agent's entries and the hosts' in step.
pub async fn watch(c: Arc<Controller>, shutdown: CancellationToken) {
    let mut applied: Option<BTreeMap<String, IngressPlan>> = None;
    loop {
        if let Ok(current) = c.definitions.current() {
            let mut plans = BTreeMap::new();
            let mut local = BTreeMap::new();
            let mut missing = Vec::new();
            for (name, environment) in &current.definition.environments {
                let Some((plan, unset)) = plan_of_env(&c, name) else {
                    continue;
                };
                missing.extend(unset);
                // Environments with hosts of their own run their entries there.
                if environment.hosts.is_none() {
                    local.insert(name.clone(), plan.clone());
                }
                plans.insert(name.clone(), plan);
            }
            if applied.as_ref() != Some(&plans) {
                for what in &missing {
                    tracing::warn!("the ingress serves no HTTPS for it yet: {what} is not set");
                }
                if let Some(agent) = &c.fleet.local {
                    agent.traffic().set_ingresses(local);
                }
                c.fleet.routes_changed();
                applied = Some(plans);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
