//! `wharf token issue|list|revoke` (API tokens) and `wharf audit`.

use std::process::ExitCode;

use wharf_api::ApiTokenRequest;

use crate::cli::Global;
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::table;

pub async fn issue(
    global: &Global,
    printer: &Printer,
    name: String,
    scopes: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let scopes: Vec<String> = scopes
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let client = crate::connect::controller(global, printer).await?;
    let created = client
        .issue_api_token(&ApiTokenRequest {
            name,
            scopes,
            user: current_user(),
        })
        .await
        .map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&created);
    } else {
        printer.data(&created.token);
        printer.info(&format!(
            "API token `{}` ({}): shown once; callers pass it in WHARF_TOKEN",
            created.record.name,
            created.record.scopes.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(global: &Global, printer: &Printer) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let tokens = client.api_tokens().await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&tokens);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.scopes.join(","),
                table::time(t.created_at),
                t.created_by.clone(),
                t.revoked_at
                    .map(|at| format!("revoked {}", table::time(at)))
                    .unwrap_or_else(|| "live".into()),
            ]
        })
        .collect();
    printer.data(&table::render(
        &["ID", "NAME", "SCOPES", "CREATED", "BY", "STATE"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(global: &Global, printer: &Printer, id: &str) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    client.revoke_api_token(id).await.map_err(Failure::from)?;
    printer.info(&format!(
        "revoked API token {id}; it is refused from now on"
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(global: &Global, printer: &Printer, limit: usize) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let entries = client.audit(limit).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&entries);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                table::time(e.at),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.outcome.clone(),
            ]
        })
        .collect();
    printer.data(&table::render(
        &["WHEN", "WHO", "ACTION", "TARGET", "OUTCOME"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}
