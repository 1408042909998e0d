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
    /// It runs in containers: a change is copied into them (or they are replaced).
    container: bool,
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
    // Every service is checked before any runs from its folder: a refusal changes
    // nothing. (The controller checks again; where dev may run is its to say.)
    wharf_core::dev::dev_allowed(&project.definition, &env).map_err(|e| {
        let failure = Failure::operation(format!("`wharf dev` is refused in `{env}`: {e}"));
        match e.hint() {
            Some(h) => failure.hint(h),
            None => failure,
        }
    })?;
    let base = project.dir.canonicalize().map_err(|e| {
        Failure::input(format!("the project folder {}: {e}", project.dir.display()))
    })?;
    let mut services = Vec::new();
    for name in &names {
        let spec = project
            .definition
            .deploy_spec(name, &env)
            .map_err(Failure::from)?;
        let service = &project.definition.services[name.as_str()];
        let Some(build) = service.build.as_ref().filter(|_| !spec.image) else {
            return Err(Failure::input(format!(
                "`{name}` runs an image: `wharf dev` runs services from their folders"
            ))
            .hint("leave it out of the services named")
            .into());
        };
        let sources = base.join(&build.context);
        let sources = sources
            .canonicalize()
            .map_err(|e| Failure::input(format!("`{name}`'s folder {}: {e}", sources.display())))?;
        services.push(DevService {
            name: name.clone(),
            sources,
            // Made by the build, so perhaps not there yet.
            runs_from: lexical(&base.join(&build.output)),
            build: build.command.clone(),
            settings: service.dev.clone(),
            container: spec.driver == wharf_core::model::DriverKind::Docker,
        });
    }
    if services.is_empty() {
        return Err(
            Failure::input(format!("no service of `{env}` is built from a folder"))
                .hint("`wharf dev` runs services that have `build:`")
                .into(),
        );
    }
    // Made before anything runs: a Ctrl-C at any point is seen (and one during a
    // restart is kept for the next look).
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let client = crate::connect::controller(global, printer).await?;
    crate::commands::definition::ensure_applied(&project, &client, printer).await?;
    let before = deployed_versions(&client, &services, &env).await?;

    // The folders are watched before the first run: a file saved while it starts is
    // the next batch's, not lost.
    let (send, mut batches) = tokio::sync::mpsc::unbounded_channel::<(usize, Batch)>();
    let mut watches = Vec::new();
    let mut snapshots = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let ignored = service.ignored();
        let mut watch = wharf_watch::watch(&service.sources, DEBOUNCE, &ignored).map_err(|e| {
            let failure = Failure::operation(e.to_string());
            match e.hint() {
                Some(h) => failure.hint(h),
                None => failure,
            }
        })?;
        snapshots.push(wharf_watch::snapshot(&service.sources, &ignored).unwrap_or_default());
        let send = send.clone();
        watches.push(tokio::spawn(async move {
            while let Some(batch) = watch.next().await {
                if send.send((i, batch)).is_err() {
                    break;
                }
            }
        }));
    }
    // Changes made while nothing watched are in the folders: the first run takes them.
    // A refusal by the controller ends here.
    for service in &services {
        if service.build.is_some() && !run_build(printer, service).await {
            continue;
        }
        if let Some(refused) = deploy_folder(printer, &client, service, &env, true, None).await {
            for watch in watches {
                watch.abort();
            }
            return Err(refused.into());
        }
    }
    printer.info(&format!(
        "watching {} in `{env}` (Ctrl-C leaves dev mode)",
        services
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    'watching: loop {
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
                // Events were lost: what differs from the last look is what changed.
                let service: &DevService = &services[i];
                let now =
                    wharf_watch::snapshot(&service.sources, &service.ignored()).unwrap_or_default();
                let changed = wharf_watch::differences(&snapshots[i], &now);
                if !changed.is_empty() {
                    pending.entry(i).or_default().extend(changed);
                }
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
            let service = &services[i];
            // A Ctrl-C during a restart leaves at once (the controller finishes it).
            tokio::select! {
                _ = changed(printer, &client, service, &env, &paths) => {}
                _ = interrupt.recv() => break 'watching,
                _ = terminate.recv() => break 'watching,
            }
            if let Ok(now) = wharf_watch::snapshot(&service.sources, &service.ignored()) {
                snapshots[i] = now;
            }
        }
    }
    for watch in watches {
        watch.abort();
    }
    leave(printer, &client, &services, &env, &before, args.restore).await
}

/// `path` with its `.` parts taken out (it may not exist yet, so it is not resolved).
fn lexical(path: &std::path::Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

impl DevService {
    /// `changed` (relative to the sources) as paths relative to the folder that runs,
    /// for a copy into its containers. `None` for a process (it reads the folder
    /// itself), when one is outside the folder that runs, or when there are too many.
    fn running_files(&self, changed: &[PathBuf]) -> Option<Vec<String>> {
        if !self.container {
            return None;
        }
        // Both resolved, so `output: ../public` relates too; a change that cannot be
        // related to what runs is not copied: the containers are replaced instead.
        let runs = self.runs_from.canonicalize().ok()?;
        let mut files = Vec::new();
        for path in changed {
            let inside = self.sources.join(path);
            let relative = inside.strip_prefix(&runs).ok()?;
            if relative.as_os_str().is_empty() {
                return None;
            }
            files.push(relative.to_string_lossy().into_owned());
        }
        (files.len() <= wharf_api::DEV_CHANGED_MAX).then_some(files)
    }

    /// What the watcher leaves out besides the ignore files: the build's output, when
    /// it is inside the sources (a build writing it is no change of its own).
    fn ignored(&self) -> Vec<PathBuf> {
        if self.runs_from != self.sources && self.runs_from.starts_with(&self.sources) {
            vec![self.runs_from.clone()]
        } else {
            Vec::new()
        }
    }
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
    // A new build is new code: its instances are replaced, not signalled. Without
    // `dev.rebuild`, every change of a service with a build command runs it.
    let rebuilt = service.build.is_some()
        && (service.settings.rebuild.is_empty() || needs_rebuild(&service.settings, &names));
    if rebuilt && !run_build(printer, service).await {
        return;
    }
    let synced = (!rebuilt).then(|| service.running_files(paths)).flatten();
    if let Some(refused) = deploy_folder(printer, client, service, env, rebuilt, synced).await {
        printer.info(&format!(
            "{} `{}`: {refused}",
            printer.paint("error:", Tone::Bad),
            service.name
        ));
    }
}

/// Runs the service's build command in its sources; whether it succeeded (its output
/// is shown when it did not).
async fn run_build(printer: &Printer, service: &DevService) -> bool {
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
    // Awaited, not blocked on: a Ctrl-C during a long build is seen.
    match tokio::process::Command::new(program)
        .args(rest)
        .current_dir(&service.sources)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
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
    changed: Option<Vec<String>>,
) -> Option<Failure> {
    let request = DevRequest {
        service: service.name.clone(),
        env: env.to_owned(),
        folder: service.runs_from.to_string_lossy().into_owned(),
        fresh,
        user: current_user(),
        changed,
    };
    let begun = Instant::now();
    let warn = |event: &DeployEvent| {
        if let DeployEvent::Warning { message } = event {
            printer.info(&format!(
                "{} {message}",
                printer.paint("warning:", Tone::Warn)
            ));
        }
    };
    match client.dev(&request, warn).await {
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

/// What a service ran before dev mode.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Before {
    /// Nothing ever ran, or a dev version only.
    Nothing,
    /// It was stopped.
    Stopped,
    Version(String),
}

/// What each service ran before dev mode: its newest deployment that succeeded and
/// was not of a folder (a dev run, or a scale or restart of one).
async fn deployed_versions(
    client: &Client,
    services: &[DevService],
    env: &str,
) -> anyhow::Result<BTreeMap<String, Before>> {
    let mut found = BTreeMap::new();
    for service in services {
        let history = client
            .history(&service.name, env)
            .await
            .map_err(Failure::from)?;
        let newest = history
            .iter()
            .filter(|d| d.state == DeploymentState::Succeeded)
            .filter(|d| {
                d.kind != DeploymentKind::Dev && wharf_core::dev::source_of(&d.digest).is_none()
            })
            .max_by_key(|d| d.id);
        let before = match newest {
            None => Before::Nothing,
            Some(d) if d.kind == DeploymentKind::Stop => Before::Stopped,
            Some(d) => Before::Version(d.version.clone()),
        };
        found.insert(service.name.clone(), before);
    }
    Ok(found)
}

/// Says what keeps running after dev mode, or (`--restore`) brings back what ran before.
async fn leave(
    printer: &Printer,
    client: &Client,
    services: &[DevService],
    env: &str,
    before: &BTreeMap<String, Before>,
    restore: bool,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for service in services {
        let name = &service.name;
        let before = before.get(name).cloned().unwrap_or(Before::Nothing);
        if !restore {
            let back = match &before {
                Before::Version(version) => format!(
                    "`wharf dev --restore` or `wharf deploy {name} --env {env} --version {version}` brings back `{version}`"
                ),
                Before::Stopped | Before::Nothing => {
                    format!("`wharf stop {name} --env {env}` stops it")
                }
            };
            printer.info(&format!(
                "left dev mode: `{name}` keeps running the dev version from {} in `{env}`; {back}",
                project::display_path(&service.runs_from)
            ));
            continue;
        }
        let (last, what) = match &before {
            Before::Nothing => {
                printer.info(&format!(
                    "left dev mode: `{name}` ran no version in `{env}` before; the dev version keeps running (`wharf stop {name} --env {env}` stops it)"
                ));
                continue;
            }
            Before::Stopped => {
                let request = wharf_api::StopRequest {
                    env: env.to_owned(),
                    service: Some(name.clone()),
                    user: current_user(),
                    prune: false,
                    purge: false,
                };
                let last = client.stop(&request, |_| {}).await.map_err(Failure::from)?;
                (last, "stopped again (as before dev mode)".to_owned())
            }
            Before::Version(version) => {
                let request = DeployRequest {
                    service: name.clone(),
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
                (last, format!("runs `{version}` again"))
            }
        };
        if succeeded(&last) {
            printer.info(&format!("left dev mode: `{name}` {what} in `{env}`"));
        } else {
            failed = true;
            let message = match &last {
                DeployEvent::Finished { message, .. } => message.clone(),
                other => format!("{other:?}"),
            };
            printer.info(&format!(
                "{} `{name}` could not be brought back: {message}",
                printer.paint("error:", Tone::Bad)
            ));
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
