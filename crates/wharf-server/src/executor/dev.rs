//! `wharf dev`: a service deployed straight from its folder on this machine (version
//! `dev`, kind `dev`), every instance replaced the rolling way, through the traffic
//! switch, so the last good instances serve until the new ones are healthy. Where it may
//! run is the controller's definition's to say (`wharf_core::dev::dev_allowed`).

use std::path::Path;

use axum::http::StatusCode;
use wharf_api::DeployEvent;
use wharf_core::dev::DevChange;
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_core::model::DriverKind;

use super::{Events, Executor, Order};
use crate::error::ServerError;

/// The folder a caller names, checked against the stored definition: an existing folder
/// of this machine that is `service`'s build folder (its path ends with the `build`
/// output wharf.yaml gives), so a caller runs the service from its own folder only.
fn build_folder(
    def: &wharf_core::Definition,
    service: &str,
    folder: &Path,
) -> Result<std::path::PathBuf, ServerError> {
    use std::path::Component;
    let build = def
        .services
        .get(service)
        .and_then(|s| s.build.as_ref())
        .ok_or_else(|| {
            ServerError::new(
                StatusCode::CONFLICT,
                format!("`{service}` has no build folder to run from"),
            )
        })?;
    let found = folder
        .is_absolute()
        .then(|| folder.canonicalize().ok())
        .flatten()
        .filter(|f| f.is_dir())
        .ok_or_else(|| {
            ServerError::bad_request(format!(
                "`{}` is not a folder on the controller's machine",
                folder.display()
            ))
        })?;
    let declared = Path::new(&build.output);
    let tail: std::path::PathBuf = declared
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let checkable =
        !declared.components().any(|c| c == Component::ParentDir) && !tail.as_os_str().is_empty();
    if checkable && !found.ends_with(&tail) {
        return Err(ServerError::bad_request(format!(
            "`{}` is not the build folder of `{service}` (`{}` in wharf.yaml)",
            found.display(),
            build.output
        )));
    }
    Ok(found)
}

impl Executor {
    /// Runs `service` from `folder`: its instances replaced (always when `fresh`: at
    /// the loop's start, after a build), or, where its `dev.on_change` says so and they
    /// already run from that folder, sent the signal.
    pub(crate) async fn dev(
        &self,
        service: &str,
        env: &str,
        folder: &Path,
        fresh: bool,
        user: String,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let current = self.definitions.current()?;
        wharf_core::dev::dev_allowed(&current.definition, env).map_err(|e| {
            let err = ServerError::new(
                StatusCode::CONFLICT,
                format!("`wharf dev` is refused in `{env}`: {e}"),
            );
            match e.hint() {
                Some(h) => err.hint(h),
                None => err,
            }
        })?;
        let local_only = current
            .definition
            .environments
            .get(env)
            .is_some_and(|e| e.hosts.is_none());
        if self.fleet.local.is_none() {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                "`wharf dev` runs services on the controller's own machine, and this controller runs nothing itself",
            )
            .hint("use the project's local controller (`wharf server --dev`, started by the CLI)"));
        }
        if !local_only {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!("`wharf dev` runs services on the controller's own machine, and `{env}` runs on hosts"),
            )
            .hint("run it in an environment without `hosts:`"));
        }
        let spec = self.definitions.spec_for(service, env)?;
        if spec.image || spec.driver != DriverKind::Process {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!("`{service}` runs in a container: `wharf dev` runs processes from their folders so far"),
            )
            .hint(format!("`wharf build {service}` and `wharf deploy {service} --env {env}`")));
        }
        let folder = build_folder(&current.definition, service, folder)?;
        if matches!(spec.port, Some(wharf_core::model::PortSpec::Fixed(_))) {
            events.send(DeployEvent::Warning {
                message: format!(
                    "`{service}` has a fixed port: its old instance stops before the new one starts, so a broken save leaves nothing serving until the next good one"
                ),
            });
        }
        let digest = wharf_core::dev::source_digest(&folder);
        let settings = current
            .definition
            .services
            .get(service)
            .map(|s| s.dev.clone())
            .unwrap_or_default();
        if let (false, DevChange::Signal(signal)) = (fresh, &settings.on_change)
            && let Some(signalled) = self.signal_dev(service, env, &digest, signal, events).await
        {
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message: format!("sent {signal} to {signalled} instance(s)"),
            });
        }
        let req = Order {
            spec,
            version: wharf_core::dev::DEV_VERSION.to_owned(),
            user,
            dry_run: false,
            unregistered_digest: None,
            force: false,
            config_revision: None,
            note: Some(format!("from {}", folder.display())),
            replay: None,
        };
        let prepared = self.prepare(&req, DeploymentKind::Dev, &digest)?;
        self.run(
            None,
            &req,
            DeploymentKind::Dev,
            &digest,
            prepared,
            false,
            events,
        )
        .await
    }

    /// Sends `signal` to the instances of `service` in `env` when every one runs from
    /// the folder of `digest`; how many, or `None` when they do not (they are then
    /// replaced instead).
    async fn signal_dev(
        &self,
        service: &str,
        env: &str,
        digest: &str,
        signal: &str,
        events: &Events,
    ) -> Option<usize> {
        let local = self.fleet.local.as_ref()?;
        let instances: Vec<_> = local
            .statuses()
            .into_iter()
            .filter(|(plan, _)| plan.key.env == env && plan.key.service == service)
            .collect();
        if instances.is_empty() || instances.iter().any(|(plan, _)| plan.digest != digest) {
            return None;
        }
        let mut signalled = 0;
        for (plan, _) in instances {
            match local.signal(&plan.key, signal).await {
                Ok(()) => signalled += 1,
                Err(e) => events.send(DeployEvent::Warning {
                    message: format!("{} not signalled: {e}", plan.key),
                }),
            }
        }
        // None took it (stopping, crashed): they are replaced instead.
        (signalled > 0).then_some(signalled)
    }
}
