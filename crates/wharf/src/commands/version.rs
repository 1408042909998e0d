//! `wharf version`: this CLI's version, and the controller's when one runs (none is
//! started for it).

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::Global;
use crate::printer::Printer;

#[derive(Serialize)]
struct Versions {
    cli: String,
    build: String,
    /// None when no controller runs for this project (or `--controller` answers not).
    controller: Option<wharf_api::ControllerInfo>,
}

pub async fn version(global: &Global, printer: &Printer) -> anyhow::Result<ExitCode> {
    let controller = match crate::connect::existing(global).await {
        Some(client) => client.info().await.ok(),
        None => None,
    };
    let versions = Versions {
        cli: env!("CARGO_PKG_VERSION").to_owned(),
        build: wharf_server::build_id(),
        controller,
    };
    if printer.json() {
        printer.json_data(&versions);
        return Ok(ExitCode::SUCCESS);
    }
    printer.data(&format!(
        "wharf {} (build {})",
        versions.cli, versions.build
    ));
    match &versions.controller {
        Some(c) => printer.data(&format!(
            "controller {} (build {}, pid {}, state in {}){}",
            c.version,
            c.build,
            c.pid,
            c.state_dir,
            if c.build == versions.build {
                ""
            } else {
                ": another build than this CLI (the next command restarts a local one)"
            }
        )),
        None => printer.data("controller: none runs for this project"),
    }
    Ok(ExitCode::SUCCESS)
}
