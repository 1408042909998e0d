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
    purge: bool,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = StopRequest {
        env: env.to_owned(),
        service: service.clone(),
        user: current_user(),
        prune: false,
        purge,
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

/// Asks before `down --purge` removes data; without a terminal to ask on, refuses and
/// names the flag that confirms.
pub fn confirm_purge(env: &str) -> Result<(), Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(Failure::input(format!(
            "`--purge` removes the data of every instance in `{env}` and there is no terminal to confirm on"
        ))
        .hint(format!("pass `--yes` to confirm: wharf down --env {env} --purge --yes")));
    }
    let mut terminal = std::io::stderr();
    let _ = write!(
        terminal,
        "This stops every service in `{env}` and removes their data folders for good. Type `{env}` to confirm: "
    );
    let _ = terminal.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == env {
        Ok(())
    } else {
        Err(Failure::operation(
            "not confirmed; nothing was stopped or removed",
        ))
    }
}
