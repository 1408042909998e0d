use std::process::ExitCode;

use wharf_api::{DeployEvent, StopRequest};

use crate::cli::Global;
use crate::commands::current_user;
use crate::commands::events::EventView;
use crate::failure::Failure;
use crate::printer::Printer;

/// `wharf stop SERVICE --env ENV` and `wharf down --env ENV`.
pub async fn stop(
    global: &Global,
    printer: &Printer,
    env: &str,
    service: Option<String>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = StopRequest {
        env: env.to_owned(),
        service: service.clone(),
        user: current_user(),
        prune: false,
    };
    let mut view = EventView::new(printer);
    let last = client
        .stop(&request, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    if let DeployEvent::Finished { message, .. } = &last {
        printer.info(message);
    }
    // `down` stops instances, not the controller the CLI started for the project.
    if service.is_none() && global.controller.is_none() {
        printer.info(
            "the local controller keeps running (it holds state and serves configuration); `wharf server stop` stops it",
        );
    }
    if printer.json() {
        printer.json_data(&last);
    }
    Ok(ExitCode::SUCCESS)
}
