use std::process::ExitCode;

use wharf_api::{DeployEvent, DeployRequest, DeploymentState};
use wharf_client::Client;

use crate::cli::{DeployArgs, Global};
use crate::commands::build::{build_and_register, build_locally, dev_version};
use crate::commands::current_user;
use crate::commands::events::{EventView, succeeded};
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::project::{self, Project};

/// The deploy target, from flags or the book's `artifact= environment= version=` form.
#[derive(Debug, Default, PartialEq)]
struct Target {
    service: Option<String>,
    env: Option<String>,
    version: Option<String>,
}

fn set(slot: &mut Option<String>, value: &str, what: &str) -> Result<(), Failure> {
    match slot {
        Some(existing) if existing != value => Err(Failure::input(format!(
            "{what} given twice: `{existing}` and `{value}`"
        ))),
        _ => {
            *slot = Some(value.to_owned());
            Ok(())
        }
    }
}

fn parse_target(args: &DeployArgs) -> Result<Target, Failure> {
    let mut target = Target {
        env: args.env.clone(),
        version: args.version.clone(),
        service: None,
    };
    for word in &args.target {
        match word.split_once('=') {
            Some(("artifact" | "service", v)) => set(&mut target.service, v, "the service")?,
            Some(("environment" | "env", v)) => set(&mut target.env, v, "the environment")?,
            Some(("version", v)) => set(&mut target.version, v, "the version")?,
            Some((key, _)) => {
                return Err(Failure::input(format!("unknown deploy argument `{key}=`")).hint("use `artifact=SERVICE environment=ENV version=V`, or `SERVICE --env ENV --version V`"));
            }
            None => set(&mut target.service, word, "the service")?,
        }
    }
    Ok(target)
}

pub async fn deploy(
    global: &Global,
    printer: &Printer,
    args: DeployArgs,
) -> anyhow::Result<ExitCode> {
    let target = parse_target(&args)?;
    let env = target.env.clone().ok_or_else(|| {
        Failure::input("which environment? pass `--env ENV`")
            .hint("environments are listed by `wharf validate`")
    })?;
    let project = project::load(global)?;
    let environment = project
        .definition
        .environment(&env)
        .map_err(Failure::from)?;
    let services: Vec<String> = match &target.service {
        Some(service) => vec![service.clone()],
        None => environment
            .service_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    // Check every service before touching anything.
    for service in &services {
        project
            .definition
            .deploy_spec(service, &env)
            .map_err(Failure::from)?;
    }
    let mut client = crate::connect::controller(global, printer).await?;
    if !args.dry_run {
        crate::commands::definition::ensure_applied(&project, &client, printer).await?;
    }
    let mut finished = Vec::new();
    'services: for service in services.clone() {
        let (version, unregistered_digest) = ensure_built(
            &project,
            &client,
            printer,
            &service,
            target.version.as_deref(),
            args.dry_run,
        )
        .await?;
        let request = DeployRequest {
            service,
            env: env.clone(),
            version,
            user: current_user(),
            dry_run: args.dry_run,
            unregistered_digest,
            force: args.force,
            // A dry run plans against wharf.yaml as it is here, without storing it.
            proposed_definition: args.dry_run.then(|| wharf_api::DefinitionSubmission {
                source: project.text.clone(),
                path: crate::project::display_path(&project.file),
                files: project.files.clone(),
                message: None,
                user: String::new(),
            }),
        };
        let mut view = EventView::new(printer);
        let deadline = args.wait_lock.map(|wait| std::time::Instant::now() + wait);
        let mut told = false;
        let last = loop {
            match client.deploy(&request, |e| view.show(e)).await {
                Err(e)
                    if is_locked(&e) && deadline.is_some_and(|d| std::time::Instant::now() < d) =>
                {
                    if !told {
                        printer.info(&format!("{e}; waiting for it (--wait-lock)"));
                        told = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(wharf_client::ClientError::Interrupted {
                    deployment: Some(id),
                    reason,
                }) => match crate::connect::after_failover(global, printer, id).await? {
                    Some(true) => {
                        // The rest go to the controller that leads now.
                        client = crate::connect::controller(global, printer).await?;
                        continue 'services;
                    }
                    Some(false) => {
                        return Err(Failure::operation(format!(
                            "deployment #{id} did not finish: its controller stopped ({reason}) and the next one did not carry it through"
                        ))
                        .hint(format!("`wharf deployments show {id}` says how it was resolved"))
                        .into());
                    }
                    None => {
                        return Err(Failure::from(wharf_client::ClientError::Interrupted {
                            deployment: Some(id),
                            reason,
                        })
                        .into());
                    }
                },
                other => break other.map_err(Failure::from)?,
            }
        };
        let ok = succeeded(&last);
        report(printer, &request, &last, args.dry_run);
        finished.push(last);
        if !ok {
            return Err(failure(&request, finished.last().expect("just pushed")).into());
        }
    }
    if target.service.is_none() {
        prune(&client, printer, &env, &services, args.dry_run).await?;
    }
    if printer.json() && !args.dry_run {
        printer.json_data(&finished);
    }
    Ok(ExitCode::SUCCESS)
}

/// A deploy of every service of an environment also stops the services that run there
/// but are no longer in it (a dry run lists them).
async fn prune(
    client: &Client,
    printer: &Printer,
    env: &str,
    wanted: &[String],
    dry_run: bool,
) -> anyhow::Result<()> {
    let status = client.status(Some(env)).await.map_err(Failure::from)?;
    let mut gone: Vec<String> = status
        .services
        .iter()
        .filter(|s| s.env == env && !s.instances.is_empty() && !wanted.contains(&s.service))
        .map(|s| s.service.clone())
        .collect();
    gone.sort();
    gone.dedup();
    if gone.is_empty() {
        return Ok(());
    }
    let names = gone
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if dry_run {
        printer.info(&format!("would stop {names}: no longer in `{env}`"));
        return Ok(());
    }
    let request = wharf_api::StopRequest {
        env: env.to_owned(),
        service: None,
        user: current_user(),
        prune: true,
        purge: false,
    };
    let mut view = EventView::new(printer);
    let last = client
        .prune(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    if !succeeded(&last) {
        return Err(
            Failure::operation(format!("stopping {names} (no longer in `{env}`) failed")).into(),
        );
    }
    printer.info(&format!("stopped {names}: no longer in `{env}`"));
    Ok(())
}

/// Whether a call was refused because another deploy of the service holds its lock.
fn is_locked(e: &wharf_client::ClientError) -> bool {
    matches!(e, wharf_client::ClientError::Api { status: 409, error, .. } if error.contains("is being deployed by"))
}

/// The version to deploy, built and registered first when needed. A dry run registers
/// nothing: it only learns the digest the version would have.
async fn ensure_built(
    project: &Project,
    client: &Client,
    printer: &Printer,
    service: &str,
    version: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let known = client
        .artifacts(Some(service))
        .await
        .map_err(Failure::from)?;
    if let Some(version) = version.filter(|v| known.iter().any(|a| a.version == *v)) {
        return Ok((version.to_owned(), None));
    }
    if dry_run {
        let packed = build_locally(project, printer, service, version).await?;
        let name = version
            .map(str::to_owned)
            .unwrap_or_else(|| dev_version(&packed));
        let registered = known.iter().any(|a| a.version == name);
        return Ok((name, (!registered).then(|| packed.digest.clone())));
    }
    let (record, _) = build_and_register(project, client, printer, service, version).await?;
    Ok((record.version, None))
}

fn report(printer: &Printer, request: &DeployRequest, last: &DeployEvent, dry_run: bool) {
    let DeployEvent::Finished {
        deployment,
        state,
        message,
    } = last
    else {
        return;
    };
    let (service, env, version) = (&request.service, &request.env, &request.version);
    if dry_run {
        printer.info(message);
    } else if *state == DeploymentState::Succeeded {
        let id = deployment
            .map(|d| format!(" (deployment #{d})"))
            .unwrap_or_default();
        printer.info(&format!(
            "{} {service} {version} to {env}{id}: {message}",
            printer.paint("deployed", Tone::Good)
        ));
    } else if *state == DeploymentState::PendingApproval {
        printer.info(&format!(
            "{} {message}",
            printer.paint("waiting:", Tone::Warn)
        ));
    } else if *state == DeploymentState::InProgress {
        let id = deployment
            .map(|d| format!(" (deployment #{d})"))
            .unwrap_or_default();
        printer.info(&format!(
            "{} {service} {version} in {env}{id}: {message}",
            printer.paint("rolling out", Tone::Good)
        ));
    }
}

fn failure(request: &DeployRequest, last: &DeployEvent) -> Failure {
    let (service, env, version) = (&request.service, &request.env, &request.version);
    let DeployEvent::Finished {
        deployment,
        state,
        message,
    } = last
    else {
        return Failure::operation(format!(
            "deploy of {service} {version} to {env} did not finish"
        ));
    };
    let what = match state {
        DeploymentState::RolledBack => "failed and was rolled back",
        _ => "failed",
    };
    let id = deployment
        .map(|d| format!(" (deployment #{d})"))
        .unwrap_or_default();
    Failure::operation(format!("deploy of {service} {version} to {env}{id} {what}: {message}"))
        .hint(format!("`wharf logs {service} --env {env}` shows the instances' output; `wharf history {service} --env {env}` the outcomes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> DeployArgs {
        DeployArgs {
            target: words.iter().map(|w| w.to_string()).collect(),
            env: None,
            version: None,
            dry_run: false,
            force: false,
            wait_lock: None,
        }
    }

    #[test]
    fn the_books_form_and_flags_mean_the_same() {
        let book = parse_target(&args(&[
            "artifact=catalog",
            "environment=ci",
            "version=build-7",
        ]))
        .unwrap();
        let flags = parse_target(&DeployArgs {
            env: Some("ci".into()),
            version: Some("build-7".into()),
            ..args(&["catalog"])
        })
        .unwrap();
        assert_eq!(book, flags);
    }

    #[test]
    fn contradictions_and_unknown_keys_are_usage_errors() {
        let err = parse_target(&DeployArgs {
            env: Some("uat".into()),
            ..args(&["environment=ci"])
        })
        .unwrap_err();
        assert!(err.message.contains("given twice"));
        assert_eq!(err.code, 2);
        assert!(parse_target(&args(&["colour=blue"])).is_err());
    }
}
