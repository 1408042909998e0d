use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::table;

pub async fn history(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let deployments = client.history(service, env).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&deployments);
        return Ok(ExitCode::SUCCESS);
    }
    if deployments.is_empty() {
        printer.info(&format!("`{service}` was never deployed to `{env}`"));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            vec![
                format!("#{}", d.id),
                table::time(d.started_at),
                d.user.clone(),
                d.kind.as_str().to_owned(),
                d.version.clone(),
                table::short_digest(&d.digest),
                format!(
                    "r{} {}",
                    d.config_revision,
                    d.config_digest.trim_start_matches("sha256:")
                ),
                [
                    Some(d.state.as_str().to_owned()),
                    d.forced.then(|| "forced".to_owned()),
                    d.approved_by.as_ref().map(|a| format!("approved by {a}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
                d.message.lines().next().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    printer.data(&table::render(
        &[
            "ID", "WHEN", "WHO", "KIND", "VERSION", "DIGEST", "CONFIG", "OUTCOME", "MESSAGE",
        ],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}
