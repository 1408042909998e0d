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

/// What one `wharf dev` request asks of a service.
pub(crate) struct DevRun<'a> {
    /// The folder it runs from, as the caller names it (checked here).
    pub folder: &'a Path,
    /// Replace the instances, whatever `dev.on_change` says.
    pub fresh: bool,
    /// The files that changed, relative to the folder, when the caller knows them.
    pub changed: Option<&'a [String]>,
}

impl Executor {
    /// Runs `service` from `folder`: its instances replaced (always when `fresh`: at
    /// the loop's start, after a build), or, where its `dev.on_change` says so and they
    /// already run from that folder, updated in place: the `changed` files copied into
    /// containers, then the signal sent.
    pub(crate) async fn dev(
        &self,
        service: &str,
        env: &str,
        run: DevRun<'_>,
        user: String,
        events: &Events,
    ) -> Result<DeployEvent, ServerError> {
        let DevRun {
            folder,
            fresh,
            changed,
        } = run;
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
        if spec.image {
            return Err(ServerError::new(
                StatusCode::CONFLICT,
                format!("`{service}` runs an image: `wharf dev` runs services from their folders"),
            )
            .hint(format!(
                "`wharf build {service}` and `wharf deploy {service} --env {env}`"
            )));
        }
        let container = spec.driver == DriverKind::Docker;
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
        if !fresh
            && let Some(message) = self
                .update_in_place(
                    service,
                    env,
                    &digest,
                    &settings.on_change,
                    container.then_some(changed).flatten(),
                    container,
                    events,
                )
                .await
        {
            return Ok(DeployEvent::Finished {
                deployment: None,
                state: DeploymentState::Succeeded,
                message,
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

    /// Updates the instances of `service` in `env` without replacing them, where its
    /// `dev.on_change` says so and every one already runs from the folder of `digest`:
    /// the changed files copied into containers (`changed`, relative to the folder),
    /// then the signal sent, if any. What it did, or `None` when they are to be replaced
    /// instead (nothing runs from the folder, a file was removed, which a copy cannot
    /// do, or a copy or a signal reached none).
    #[allow(clippy::too_many_arguments)]
    async fn update_in_place(
        &self,
        service: &str,
        env: &str,
        digest: &str,
        on_change: &DevChange,
        changed: Option<&[String]>,
        container: bool,
        events: &Events,
    ) -> Option<String> {
        if *on_change == DevChange::Restart {
            return None;
        }
        let local = self.fleet.local.as_ref()?;
        let keys: Vec<_> = local
            .statuses()
            .into_iter()
            .filter(|(plan, _)| plan.key.env == env && plan.key.service == service)
            .map(|(plan, _)| (plan.key, plan.digest))
            .collect();
        if keys.is_empty() || keys.iter().any(|(_, d)| d != digest) {
            return None;
        }
        let mut done = Vec::new();
        if container {
            let folder = wharf_core::dev::source_of(digest)?;
            let Some(changed) = changed else {
                events.send(DeployEvent::Warning {
                    message: "the changed files are not known: the containers are replaced".into(),
                });
                return None;
            };
            let files: Vec<std::path::PathBuf> =
                changed.iter().map(std::path::PathBuf::from).collect();
            // Up to 20,000 lookups on disk: off the async threads.
            let (look_in, looked_for) = (folder.clone(), files.clone());
            let gone = tokio::task::spawn_blocking(move || {
                looked_for
                    .into_iter()
                    .find(|f| std::fs::symlink_metadata(look_in.join(f)).is_err())
            })
            .await
            .ok()
            .flatten();
            if let Some(gone) = gone {
                events.send(DeployEvent::Warning {
                    message: format!(
                        "`{}` was removed, and a copy cannot remove a file: the containers are replaced",
                        gone.display()
                    ),
                });
                return None;
            }
            for (key, _) in &keys {
                if let Err(e) = local.copy_in(key, &files).await {
                    events.send(DeployEvent::Warning {
                        message: format!("{key}: {e}; the containers are replaced"),
                    });
                    return None;
                }
            }
            done.push(format!(
                "copied {} file(s) into {} container(s)",
                files.len(),
                keys.len()
            ));
        }
        match on_change {
            DevChange::Signal(signal) => {
                let mut signalled = 0;
                for (key, _) in &keys {
                    match local.signal(key, signal).await {
                        Ok(()) => signalled += 1,
                        Err(e) => events.send(DeployEvent::Warning {
                            message: format!("{key} not signalled: {e}"),
                        }),
                    }
                }
                // None took it (stopping, crashed): they are replaced instead.
                if signalled == 0 {
                    return None;
                }
                done.push(format!("sent {signal} to {signalled} instance(s)"));
            }
            DevChange::Sync if !container => {
                done.push(format!("{} instance(s) read the folder itself", keys.len()));
            }
            DevChange::Sync | DevChange::Restart => {}
        }
        Some(done.join(", "))
    }
}
