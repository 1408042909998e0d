use std::process::ExitCode;

use wharf_api::StatusReport;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::table;

pub async fn status(
    global: &Global,
    printer: &Printer,
    env: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let report = client.status(env).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&report);
        return Ok(ExitCode::SUCCESS);
    }
    if report.services.is_empty() {
        let place = env.map(|e| format!(" in `{e}`")).unwrap_or_default();
        printer.info(&format!(
            "nothing runs{place}; `wharf deploy --env ENV` starts it"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    printer.data(&render(&report));
    Ok(ExitCode::SUCCESS)
}

/// The status table, then the URLs of instances that have a port.
pub fn render(report: &StatusReport) -> String {
    let mut rows = Vec::new();
    let mut urls = Vec::new();
    for service in &report.services {
        for i in &service.instances {
            rows.push(vec![
                i.env.clone(),
                i.service.clone(),
                i.version.clone(),
                table::short_digest(&i.digest),
                i.instance.to_string(),
                i.node.clone(),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.state.as_str().to_owned(),
                i.health.as_str().to_owned(),
                i.restarts.to_string(),
                if i.pid.is_some() {
                    table::age(report.now - i.started_at)
                } else {
                    "-".into()
                },
            ]);
            if let Some(port) = i.port {
                urls.push(format!(
                    "  {} ({} #{}): http://127.0.0.1:{port}/",
                    i.service, i.env, i.instance
                ));
            }
        }
    }
    let header = [
        "ENV", "SERVICE", "VERSION", "DIGEST", "#", "NODE", "PID", "PORT", "STATE", "HEALTH",
        "RESTARTS", "UPTIME",
    ];
    let mut out = table::render(&header, &rows);
    if !urls.is_empty() {
        out.push_str("\nopen:\n");
        out.push_str(&urls.join("\n"));
        out.push('\n');
    }
    out
}
