use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;

pub async fn logs(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
    follow: bool,
    instance: Option<u32>,
    lines: usize,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    client
        .logs(env, service, instance, follow, lines, |text| {
            printer.stream(text)
        })
        .await
        .map_err(Failure::from)?;
    Ok(ExitCode::SUCCESS)
}
