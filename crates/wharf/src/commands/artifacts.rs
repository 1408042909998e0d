use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::table;

pub async fn list(
    global: &Global,
    printer: &Printer,
    service: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let artifacts = client.artifacts(service).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&artifacts);
        return Ok(ExitCode::SUCCESS);
    }
    if artifacts.is_empty() {
        printer.info("no artifacts yet; `wharf build SERVICE --version V` makes one");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = artifacts
        .iter()
        .map(|a| {
            vec![
                a.service.clone(),
                a.version.clone(),
                a.digest.clone(),
                table::size(a.size),
                table::time(a.created_at),
            ]
        })
        .collect();
    printer.data(&table::render(
        &["SERVICE", "VERSION", "DIGEST", "SIZE", "CREATED"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}
