//! `wharf ui [--open]`: the dashboard's address, as a one-time sign-in address for
//! this CLI's identity (its token, or the open controller's key, neither of which
//! appears in it).

use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;

pub async fn ui(global: &Global, printer: &Printer, open: bool) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let code = client.sign_in_code().await.map_err(Failure::from)?;
    let address = format!("{}{}", client.url().trim_end_matches('/'), code.path);
    if open {
        let opened = std::process::Command::new("xdg-open")
            .arg(&address)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if opened {
            printer.info("opened the dashboard in your browser");
            return Ok(ExitCode::SUCCESS);
        }
        printer.info("cannot open a browser here (xdg-open); open this address instead:");
    }
    printer.data(&address);
    printer.info(&format!(
        "it signs one browser in, within {} seconds; the dashboard is at {}/",
        code.valid_secs,
        client.url().trim_end_matches('/')
    ));
    Ok(ExitCode::SUCCESS)
}
