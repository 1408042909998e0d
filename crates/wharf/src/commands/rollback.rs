use std::process::ExitCode;

use wharf_api::{DeployEvent, RestartRequest, RollbackRequest};

use crate::cli::Global;
use crate::commands::current_user;
use crate::commands::events::{EventView, succeeded};
use crate::failure::Failure;
use crate::printer::{Printer, Tone};

pub async fn rollback(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = RollbackRequest {
        service: service.to_owned(),
        env: env.to_owned(),
        to,
        user: current_user(),
    };
    let mut view = EventView::new(printer);
    let last = client
        .rollback(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    finish(printer, &last, ("rollback", "rolled back"), service, env)
}

/// Reports how an operation on one service ended: `(noun, past)` name it ("rollback",
/// "rolled back").
fn finish(
    printer: &Printer,
    last: &DeployEvent,
    (noun, past): (&str, &str),
    service: &str,
    env: &str,
) -> anyhow::Result<ExitCode> {
    let DeployEvent::Finished {
        deployment,
        message,
        ..
    } = last
    else {
        unreachable!("the client returns only finished events")
    };
    let id = deployment
        .map(|d| format!(" (deployment #{d})"))
        .unwrap_or_default();
    if !succeeded(last) {
        return Err(Failure::operation(format!(
            "{noun} of {service} in {env}{id} failed: {message}"
        ))
        .into());
    }
    if printer.json() {
        printer.json_data(last);
    }
    printer.info(&format!(
        "{} {service} in {env}{id}: {message}",
        printer.paint(past, Tone::Good)
    ));
    Ok(ExitCode::SUCCESS)
}

/// `wharf restart`: every instance replaced by a fresh one of what runs now.
/// `wharf scale SERVICE --env ENV N`: a definition revision with the new count, then a
/// deploy of the running version with it.
pub async fn scale(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
    count: u32,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = wharf_api::ScaleRequest {
        service: service.to_owned(),
        env: env.to_owned(),
        count,
        user: current_user(),
    };
    let mut view = EventView::new(printer);
    let last = client
        .scale(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    finish(printer, &last, ("scale", "scaled"), service, env)
}

pub async fn restart(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = RestartRequest {
        service: service.to_owned(),
        env: env.to_owned(),
        user: current_user(),
    };
    let mut view = EventView::new(printer);
    let last = client
        .restart(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    finish(printer, &last, ("restart", "restarted"), service, env)
}
