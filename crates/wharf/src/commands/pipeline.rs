//! `wharf promote`, `approve`, `reject`, `deployments`: moving artifacts along the
//! pipeline and holding them for approval.

use std::process::ExitCode;

use wharf_api::{DeployEvent, DeploymentState, PromoteRequest};

use crate::cli::Global;
use crate::commands::current_user;
use crate::commands::events::{EventView, succeeded};
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::{project, table};

pub async fn promote(
    global: &Global,
    printer: &Printer,
    service: &str,
    from: &str,
    to: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    project
        .definition
        .environment(from)
        .map_err(Failure::from)?;
    project
        .definition
        .deploy_spec(service, to)
        .map_err(Failure::from)?;
    let client = crate::connect::controller(global, printer).await?;
    crate::commands::definition::ensure_applied(&project, &client, printer).await?;
    let request = PromoteRequest {
        service: service.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        user: current_user(),
        force,
    };
    let mut view = EventView::new(printer);
    let last = client
        .promote(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    finish(
        printer,
        &last,
        &format!("promoted {service} from {from} to {to}"),
    )
}

pub async fn approve(global: &Global, printer: &Printer, id: i64) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let mut view = EventView::new(printer);
    let last = client
        .approve(id, &current_user(), |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    finish(printer, &last, &format!("approved deployment #{id}"))
}

pub async fn reject(global: &Global, printer: &Printer, id: i64) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let last = client
        .reject(id, &current_user())
        .await
        .map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&last);
    }
    printer.info(&format!("rejected deployment #{id}; nothing changed"));
    Ok(ExitCode::SUCCESS)
}

fn finish(printer: &Printer, last: &DeployEvent, done: &str) -> anyhow::Result<ExitCode> {
    let DeployEvent::Finished { state, message, .. } = last else {
        unreachable!("the client returns only finished events")
    };
    if printer.json() {
        printer.json_data(last);
    }
    if *state == DeploymentState::PendingApproval {
        printer.info(&format!(
            "{} {message}",
            printer.paint("waiting:", Tone::Warn)
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if !succeeded(last) {
        return Err(Failure::operation(format!("{done} failed: {message}")).into());
    }
    printer.info(&format!("{}: {message}", printer.paint(done, Tone::Good)));
    Ok(ExitCode::SUCCESS)
}

pub async fn deployments(global: &Global, printer: &Printer) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let waiting = client.pending().await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&waiting);
        return Ok(ExitCode::SUCCESS);
    }
    if waiting.is_empty() {
        printer.info("no deployment waits for approval");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = waiting
        .iter()
        .map(|d| {
            vec![
                format!("#{}", d.id),
                table::time(d.started_at),
                d.user.clone(),
                d.kind.as_str().to_owned(),
                d.service.clone(),
                d.env.clone(),
                d.version.clone(),
                table::short_digest(&d.digest),
            ]
        })
        .collect();
    printer.data(&table::render(
        &[
            "ID",
            "REQUESTED",
            "BY",
            "KIND",
            "SERVICE",
            "ENV",
            "VERSION",
            "DIGEST",
        ],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}

/// `wharf deployments show ID`.
/// `wharf deployments cancel ID`: asks, then waits for the deploy to have rolled back.
pub async fn cancel(global: &Global, printer: &Printer, id: i64) -> anyhow::Result<ExitCode> {
    use wharf_core::lifecycle::DeploymentState;
    let client = crate::connect::controller(global, printer).await?;
    let d = client
        .cancel(id, &crate::commands::current_user())
        .await
        .map_err(Failure::from)?;
    printer.info(&format!(
        "cancelling deployment #{id} ({} {} in {}); it rolls back what it changed",
        d.service, d.version, d.env
    ));
    let ended = loop {
        let now = client.deployment(id).await.map_err(Failure::from)?;
        if now.state != DeploymentState::InProgress {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    if printer.json() {
        printer.json_data(&ended);
    }
    let line = format!(
        "deployment #{id} {}: {}",
        ended.state.as_str().replace('_', " "),
        ended.message
    );
    match ended.state {
        DeploymentState::RolledBack => {
            printer.info(&line);
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Failure::operation(line).into()),
    }
}

pub async fn show_deployment(
    global: &Global,
    printer: &Printer,
    id: i64,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let d = client.deployment(id).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&d);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ("deployment", format!("#{}", d.id)),
        ("service", d.service.clone()),
        ("environment", d.env.clone()),
        ("kind", d.kind.as_str().to_owned()),
        ("version", d.version.clone()),
        ("digest", table::short_digest(&d.digest)),
        ("state", d.state.as_str().to_owned()),
        ("by", d.user.clone()),
        ("started", table::time(d.started_at)),
    ];
    if let Some(finished) = d.finished_at {
        rows.push(("finished", table::time(finished)));
    }
    if d.config_revision > 0 {
        rows.push(("config revision", d.config_revision.to_string()));
    }
    if let Some(who) = &d.approved_by {
        rows.push(("approved by", who.clone()));
    }
    match d.resolved_by {
        Some(0) => rows.push(("resolved", "nothing had to change".to_owned())),
        Some(by) => rows.push((
            "resolved by",
            format!("#{by} (`wharf deployments show {by}`)"),
        )),
        None if d.state == wharf_core::lifecycle::DeploymentState::Interrupted => rows.push((
            "resolved",
            "not yet: the controller resolves it when it starts".to_owned(),
        )),
        None => {}
    }
    rows.push(("message", d.message.clone()));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let text: Vec<String> = rows
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect();
    printer.data(&(text.join("\n") + "\n"));
    Ok(ExitCode::SUCCESS)
}
