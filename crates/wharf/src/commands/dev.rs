//! `wharf dev [SERVICE...] [--env ENV] [--restore]`: the services run straight from
//! their folders in a development environment, and every saved file answers as soon as
//! new instances from the folder are healthy (the old ones serve until then, so a
//! broken change shows inline and the last good code keeps answering). Ctrl-C leaves
//! dev mode; `--restore` brings back the versions deployed before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wharf_api::{DeployEvent, DeployRequest, DevRequest};
use wharf_client::Client;
use wharf_core::dev::{DevSettings, needs_rebuild};
use wharf_core::lifecycle::{DeploymentKind, DeploymentState};
use wharf_watch::Batch;

use crate::cli::{DevArgs, Global};
use crate::commands::current_user;
use crate::commands::events::succeeded;
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::project;

/// Changes this close together are one batch: an editor's save, a checkout.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// A service of the loop.
struct DevService {
    name: String,
    /// What is watched: where its sources are (the build's context).
    sources: PathBuf,
    /// What runs: the build's output folder (the sources, without a build command).
    runs_from: PathBuf,
    build: Option<Vec<String>>,
    settings: DevSettings,
}

pub async fn dev(global: &Global, printer: &Printer, args: DevArgs) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let env = match &args.env {
        Some(env) => env.clone(),
        None => wharf_core::dev::default_dev_environment(&project.definition)
            .ok_or_else(|| {
                Failure::input("no environment of wharf.yaml runs `wharf dev`")
                    .hint("the pipeline's first environment does, or one with `dev: true`")
            })?
            .to_owned(),
    };
    let environment = project
        .definition
        .environment(&env)
        .map_err(Failure::from)?;
    let names: Vec<String> = if args.services.is_empty() {
        environment
            .service_names()
            .into_iter()
            .filter(|s| {
                project
                    .definition
                    .services
                    .get(*s)
                    .is_some_and(|s| s.build.is_some())
            })
            .map(str::to_owned)
            .collect()
    } else {
        args.services.clone()
    };
    let mut services = Vec::new();
    for name in &names {
        project
            .definition
            .deploy_spec(name, &env)
            .map_err(Failure::from)?;
        let service = &project.definition.services[name.as_str()];
        let Some(build) = &service.build else {
            return Err(Failure::input(format!(
                "`{name}` runs an image: `wharf dev` runs services from their folders"
            ))
            .hint("leave it out of the services named")
            .into());
        };
        let folder = |relative: &str| -> anyhow::Result<PathBuf> {
            let path = project.dir.join(relative);
            Ok(path.canonicalize().map_err(|e| {
                Failure::input(format!("`{name}`'s folder {}: {e}", path.display()))
            })?)
        };
        services.push(DevService {
            name: name.clone(),
            sources: folder(&build.context)?,
            runs_from: folder(&build.output).or_else(|_| folder(&build.context))?,
            build: build.command.clone(),
            settings: service.dev.clone(),
        });
    }
    if services.is_empty() {
        return Err(
            Failure::input(format!("no service of `{env}` is built from a folder"))
                .hint("`wharf dev` runs services that have `build:`")
                .into(),
        );
    }
    let client = crate::connect::controller(global, printer).await?;
    crate::commands::definition::ensure_applied(&project, &client, printer).await?;
    let before = deployed_versions(&client, &services, &env).await?;

    // Changes made while nothing watched are in the folders: the first run takes them.
    // A refusal by the controller (where dev may run is its to say) ends here.
    for service in &services {
        if service.build.is_some() && !run_build(printer, service) {
            continue;
        }
        if let Some(refused) = deploy_folder(printer, &client, service, &env, true).await {
            return Err(refused.into());
        }
    }
    let (send, mut batches) = tokio::sync::mpsc::unbounded_channel::<(usize, Batch)>();
    let mut watches = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let mut watch = wharf_watch::watch(&service.sources, DEBOUNCE).map_err(|e| {
            let failure = Failure::operation(e.to_string());
            match e.hint() {
                Some(h) => failure.hint(h),
                None => failure,
            }
        })?;
        let send = send.clone();
        watches.push(tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                if send.send((i, batch)).is_err() {
                    break;
                }
            }
        }));
    }
    printer.info(&format!(
        "watching {} in `{env}` (Ctrl-C leaves dev mode)",
        services
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut snapshots: BTreeMap<usize, BTreeMap<PathBuf, wharf_watch::Stamp>> = BTreeMap::new();
    // Made once: a Ctrl-C that comes during a restart is kept for the next look.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        let first = tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            next = batches.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        // Everything that queued meanwhile goes with it: one restart for a checkout.
        let mut pending: BTreeMap<usize, Vec<PathBuf>> = BTreeMap::new();
        let mut add = |(i, batch): (usize, Batch)| match batch {
            Batch::Changed(paths) => pending.entry(i).or_default().extend(paths),
            Batch::Rescan => {
                let service: &DevService = &services[i];
                let now = wharf_watch::snapshot(&service.sources).unwrap_or_default();
                let before = snapshots.remove(&i).unwrap_or_default();
                let mut changed = wharf_watch::differences(&before, &now);
                if changed.is_empty() {
                    // Nothing to compare with: take the whole folder as changed.
                    changed = now.keys().cloned().collect();
                }
                snapshots.insert(i, now);
                pending.entry(i).or_default().extend(changed);
            }
            Batch::Failed(why) => printer.info(&format!(
                "{} watching `{}`: {why}",
                printer.paint("warning:", Tone::Warn),
                services[i].name
            )),
        };
        add(first);
        while let Ok(more) = batches.try_recv() {
            add(more);
        }
        for (i, paths) in pending {
            changed(printer, &client, &services[i], &env, &paths).await;
        }
    }
    for watch in watches {
        watch.abort();
    }
    leave(printer, &client, &services, &env, &before, args.restore).await
}

/// What a batch of changed files of `service` does.
async fn changed(
    printer: &Printer,
    client: &Client,
    service: &DevService,
    env: &str,
    paths: &[PathBuf],
) {
    let relative: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    let shown = match relative.as_slice() {
        [one] => one.clone(),
        many => format!("{} files", many.len()),
    };
    printer.info(&format!("{}: {shown} changed", service.name));
    let names: Vec<&str> = relative.iter().map(String::as_str).collect();
    // A new build is new code: its instances are replaced, not signalled.
    let rebuilt = service.build.is_some() && needs_rebuild(&service.settings, &names);
    if rebuilt && !run_build(printer, service) {
        return;
    }
    if let Some(refused) = deploy_folder(printer, client, service, env, rebuilt).await {
        printer.info(&format!(
            "{} `{}`: {refused}",
            printer.paint("error:", Tone::Bad),
            service.name
        ));
    }
}

/// Runs the service's build command in its sources; whether it succeeded (its output
/// is shown when it did not).
fn run_build(printer: &Printer, service: &DevService) -> bool {
    let Some(command) = &service.build else {
        return true;
    };
    let Some((program, rest)) = command.split_first() else {
        return true;
    };
    printer.info(&format!(
        "{}: building ({})",
        service.name,
        command.join(" ")
    ));
    match std::process::Command::new(program)
        .args(rest)
        .current_dir(&service.sources)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            printer.info(&format!(
                "{} the build of `{}` failed ({}); the running version keeps serving:\n{}",
                printer.paint("error:", Tone::Bad),
                service.name,
                out.status,
                last_lines(&said, 20)
            ));
            false
        }
        Err(e) => {
            printer.info(&format!(
                "{} cannot run the build of `{}`: {e}",
                printer.paint("error:", Tone::Bad),
                service.name
            ));
            false
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `service` from its folder; a failed start is shown, never the end of the loop.
/// What the controller refused to do, if it refused.
async fn deploy_folder(
    printer: &Printer,
    client: &Client,
    service: &DevService,
    env: &str,
    fresh: bool,
) -> Option<Failure> {
    let request = DevRequest {
        service: service.name.clone(),
        env: env.to_owned(),
        folder: service.runs_from.to_string_lossy().into_owned(),
        fresh,
        user: current_user(),
    };
    let begun = Instant::now();
    match client.dev(&request, |_| {}).await {
        // Signalled (`dev.on_change: { signal }`): the same processes reread their files.
        Ok(DeployEvent::Finished {
            deployment: None,
            state: DeploymentState::Succeeded,
            message,
        }) => printer.info(&format!(
            "{} `{}`: {message} ({} ms)",
            printer.paint("updated", Tone::Good),
            service.name,
            begun.elapsed().as_millis()
        )),
        Ok(last) if succeeded(&last) => printer.info(&format!(
            "{} `{}` answers from {} ({} ms)",
            printer.paint("updated", Tone::Good),
            service.name,
            project::display_path(&service.runs_from),
            begun.elapsed().as_millis()
        )),
        Ok(DeployEvent::Finished { message, .. }) => printer.info(&format!(
            "{} `{}` did not start from its folder: {message}\n  the previous instances keep serving; save again to retry",
            printer.paint("error:", Tone::Bad),
            service.name
        )),
        Ok(other) => printer.info(&format!(
            "{} `{}`: the controller ended with {other:?}",
            printer.paint("error:", Tone::Bad),
            service.name
        )),
        Err(e) => return Some(Failure::from(e)),
    }
    None
}

/// The version each service ran before dev mode: its newest deployment that succeeded
/// and was not a dev one (or a stop).
async fn deployed_versions(
    client: &Client,
    services: &[DevService],
    env: &str,
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut found = BTreeMap::new();
    for service in services {
        let history = client
            .history(&service.name, env)
            .await
            .map_err(Failure::from)?;
        let version = history
            .iter()
            .filter(|d| d.state == DeploymentState::Succeeded)
            .filter(|d| !matches!(d.kind, DeploymentKind::Dev | DeploymentKind::Stop))
            .max_by_key(|d| d.id)
            .map(|d| d.version.clone());
        found.insert(service.name.clone(), version);
    }
    Ok(found)
}

/// Says what keeps running after dev mode, or (`--restore`) brings back what ran before.
async fn leave(
    printer: &Printer,
    client: &Client,
    services: &[DevService],
    env: &str,
    before: &BTreeMap<String, Option<String>>,
    restore: bool,
) -> anyhow::Result<ExitCode> {
    if !restore {
        for service in services {
            let back = match before.get(&service.name).cloned().flatten() {
                Some(version) => format!(
                    "`wharf dev --restore` or `wharf deploy {} --env {env} --version {version}` brings back `{version}`",
                    service.name
                ),
                None => format!("`wharf stop {} --env {env}` stops it", service.name),
            };
            printer.info(&format!(
                "left dev mode: `{}` keeps running the dev version from {} in `{env}`; {back}",
                service.name,
                project::display_path(&service.runs_from)
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for service in services {
        let Some(version) = before.get(&service.name).cloned().flatten() else {
            printer.info(&format!(
                "left dev mode: `{}` ran no version in `{env}` before; the dev version keeps running (`wharf stop {} --env {env}` stops it)",
                service.name, service.name
            ));
            continue;
        };
        let request = DeployRequest {
            service: service.name.clone(),
            env: env.to_owned(),
            version: version.clone(),
            user: current_user(),
            dry_run: false,
            unregistered_digest: None,
            force: false,
            proposed_definition: None,
        };
        let last = client
            .deploy(&request, |_| {})
            .await
            .map_err(Failure::from)?;
        if succeeded(&last) {
            printer.info(&format!(
                "left dev mode: `{}` runs `{version}` again in `{env}`",
                service.name
            ));
        } else {
            failed = true;
            printer.info(&format!(
                "{} `{}` could not get `{version}` back: {last:?}",
                printer.paint("error:", Tone::Bad),
                service.name
            ));
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
