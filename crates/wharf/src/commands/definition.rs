//! `wharf apply` and `wharf definition history|diff|show`: the definition lives in the
//! controller as numbered revisions; the CLI submits wharf.yaml and reads them back.

use std::process::ExitCode;

use wharf_api::{DefinitionApplied, DefinitionSubmission};
use wharf_client::Client;

use crate::cli::{DefinitionCommand, Global};
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::project::{self, Project};
use crate::table;

/// `wharf apply`: submit wharf.yaml as the controller's next definition revision.
pub async fn apply(
    global: &Global,
    printer: &Printer,
    message: Option<String>,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let client = crate::connect::controller(global, printer).await?;
    let applied = submit(&project, &client, message).await?;
    if printer.json() {
        printer.json_data(&applied);
    } else {
        report(printer, &applied);
    }
    Ok(ExitCode::SUCCESS)
}

async fn submit(
    project: &Project,
    client: &Client,
    message: Option<String>,
) -> anyhow::Result<DefinitionApplied> {
    let submission = DefinitionSubmission {
        source: project.text.clone(),
        path: project::display_path(&project.file),
        files: project.files.clone(),
        message,
        user: current_user(),
    };
    Ok(client.apply(&submission).await.map_err(Failure::from)?)
}

fn report(printer: &Printer, applied: &DefinitionApplied) {
    let revision = applied.revision.revision;
    if let Some(id) = applied.held_by {
        printer.info(&format!(
            "{} definition revision {revision} changes the policy of an environment with approvals: it is in force once deployment #{id} is approved (`wharf approve {id}` by another token)",
            printer.paint("waiting:", Tone::Warn)
        ));
        return;
    }
    if !applied.created {
        printer.info(&format!(
            "definition unchanged: the controller's revision {revision} is this file"
        ));
        return;
    }
    let mut what = Vec::new();
    let list = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !applied.policy_changed.is_empty() {
        what.push(format!("policy of {}", list(&applied.policy_changed)));
    }
    if !applied.config_changed.is_empty() {
        what.push(format!(
            "configuration of {}",
            list(&applied.config_changed)
        ));
    }
    if !applied.services_changed.is_empty() {
        what.push(format!("services {}", list(&applied.services_changed)));
    }
    let what = if revision == 1 {
        " (the controller's first)".to_owned()
    } else if what.is_empty() {
        String::new()
    } else {
        format!(" (changes {})", what.join("; "))
    };
    printer.info(&format!(
        "{} definition revision {revision}{what}",
        printer.paint("applied", Tone::Good)
    ));
}

/// Submits wharf.yaml when it differs from the controller's current revision, so a
/// deploy runs what the caller sees; says so when it does.
pub async fn ensure_applied(
    project: &Project,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<()> {
    let digest = wharf_core::files::definition_digest(&project.text, &project.files);
    match client.definition(None).await {
        Ok(current) if current.revision.digest == digest => return Ok(()),
        Ok(_) => {}
        Err(wharf_client::ClientError::Api { status: 409, .. }) => {}
        Err(e) => return Err(Failure::from(e).into()),
    }
    let applied = submit(project, client, None).await?;
    if let Some(id) = applied.held_by {
        return Err(Failure::operation(format!(
            "wharf.yaml changes the policy of an environment with approvals; its definition revision {} waits for approval (deployment #{id}), so nothing was deployed",
            applied.revision.revision
        ))
        .hint(format!("`wharf approve {id}` by another token puts it in force; then deploy again"))
        .into());
    }
    if !printer.json() {
        report(printer, &applied);
    }
    Ok(())
}

pub async fn definition(
    global: &Global,
    printer: &Printer,
    command: DefinitionCommand,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    match command {
        DefinitionCommand::History => history(printer, &client).await,
        DefinitionCommand::Show { revision } => {
            let found = client.definition(revision).await.map_err(Failure::from)?;
            if printer.json() {
                printer.json_data(&found);
            } else {
                printer.stream(&found.source);
            }
            Ok(ExitCode::SUCCESS)
        }
        DefinitionCommand::Diff { from, to } => diff(global, printer, &client, from, to).await,
    }
}

async fn history(printer: &Printer, client: &Client) -> anyhow::Result<ExitCode> {
    let revisions = client.definitions().await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&revisions);
        return Ok(ExitCode::SUCCESS);
    }
    if revisions.is_empty() {
        printer.info("no definition was applied yet; `wharf apply` submits wharf.yaml");
        return Ok(ExitCode::SUCCESS);
    }
    // Newest first: the first active revision is the one in force.
    let in_force = revisions
        .iter()
        .find(|r| r.state == "active")
        .map(|r| r.revision);
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let state = match r.state.as_str() {
                "active" if Some(r.revision) == in_force => "in force".to_owned(),
                "active" => "superseded".to_owned(),
                other => other.to_owned(),
            };
            vec![
                r.revision.to_string(),
                table::time(r.at),
                r.user.clone(),
                r.digest.chars().take(12).collect(),
                state,
                r.message.clone(),
            ]
        })
        .collect();
    printer.data(&table::render(
        &["REVISION", "WHEN", "WHO", "DIGEST", "STATE", "MESSAGE"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}

/// `diff`: the current revision against wharf.yaml; `diff A`: revision A against the
/// current one; `diff A B`: revision A against revision B. Exits 1 when they differ,
/// as `diff` and `kubectl diff` do.
async fn diff(
    global: &Global,
    printer: &Printer,
    client: &Client,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let (old_name, old_text, new_name, new_text) = match (from, to) {
        (None, _) => {
            let project = project::load(global)?;
            let current = client.definition(None).await.map_err(Failure::from)?;
            (
                format!("revision {}", current.revision.revision),
                current.source,
                project::display_path(&project.file),
                project.text,
            )
        }
        (Some(a), b) => {
            let old = client.definition(Some(a)).await.map_err(Failure::from)?;
            let new = client.definition(b).await.map_err(Failure::from)?;
            (
                format!("revision {}", old.revision.revision),
                old.source,
                format!("revision {}", new.revision.revision),
                new.source,
            )
        }
    };
    let text = similar::TextDiff::from_lines(&old_text, &new_text)
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &new_name)
        .to_string();
    if text.is_empty() {
        printer.info(&format!("{old_name} and {new_name} are the same"));
        return Ok(ExitCode::SUCCESS);
    }
    printer.stream(&text);
    Ok(ExitCode::from(1))
}
