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
use crate::error::ServerError;

/// How often the entries are looked at again.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How often an entry that could not listen is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The entry of `env`, and the secrets its HTTPS routes name that are not set (those
/// hosts are served over plain HTTP only until they are). A store that fails is an
/// error, never "no entry": agents keep what they have.
pub fn plan_of_env(
    c: &Controller,
    env: &str,
) -> Result<Option<(IngressPlan, Vec<String>)>, ServerError> {
    let current = match c.definitions.current() {
        Ok(current) => current,
        // No definition stored yet: no entry.
        Err(e) if e.status == axum::http::StatusCode::CONFLICT => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(ingress) = current
        .definition
        .environments
        .get(env)
        .and_then(|e| e.ingress.clone())
    else {
        return Ok(None);
    };
    let mut certificates = Vec::new();
    let mut missing = Vec::new();
    for route in &ingress.routes {
        let (Some(tls), Some(host)) = (&route.tls, &route.host) else {
            continue;
        };
        let secrets = c.config.secret_values(&route.service, env)?;
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
    Ok(Some((
        IngressPlan {
            ingress,
            certificates,
        },
        missing,
    )))
}

/// Keeps the local agent's entries and the hosts' in step.
pub async fn watch(c: Arc<Controller>, shutdown: CancellationToken) {
    let mut applied: Option<BTreeMap<String, IngressPlan>> = None;
    let mut retry_at = None;
    loop {
        if let Ok(current) = c.definitions.current() {
            let mut plans = BTreeMap::new();
            let mut local = BTreeMap::new();
            let mut missing = Vec::new();
            let mut failed = false;
            for (name, environment) in &current.definition.environments {
                let (plan, unset) = match plan_of_env(&c, name) {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    // Tried again at the next look; what runs stays as it is.
                    Err(_) => {
                        failed = true;
                        continue;
                    }
                };
                missing.extend(unset);
                // Environments with hosts of their own run their entries there.
                if environment.hosts.is_none() {
                    local.insert(name.clone(), plan.clone());
                }
                plans.insert(name.clone(), plan);
            }
            // Entries whose listener could not be bound are tried again now and then.
            let retry = retry_at.is_some_and(|at| std::time::Instant::now() >= at);
            if !failed && (applied.as_ref() != Some(&plans) || retry) {
                for what in &missing {
                    tracing::warn!("the ingress serves no HTTPS for it yet: {what} is not set");
                }
                retry_at = None;
                if let Some(agent) = &c.fleet.local
                    && !agent.traffic().set_ingresses(local)
                {
                    retry_at = Some(std::time::Instant::now() + RETRY_EVERY);
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
