//! `wharf config`: the versioned configuration of a service in an environment.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;
use wharf_api::{ConfigChange, DeployEvent};
use wharf_client::Client;

use crate::cli::{ConfigCommand, Global, ServiceEnv};
use crate::commands::current_user;
use crate::commands::events::{EventView, succeeded};
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::{project, table};

/// One key of the merged configuration and where its value comes from.
#[derive(Serialize)]
struct Sourced {
    key: String,
    /// Absent for secrets.
    value: Option<String>,
    source: String,
}

pub async fn config(
    global: &Global,
    printer: &Printer,
    command: ConfigCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Get(target) => get(global, printer, &target).await,
        ConfigCommand::Set {
            target,
            pairs,
            message,
        } => {
            let mut set = BTreeMap::new();
            for pair in &pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    Failure::input(format!("`{pair}` is not KEY=VALUE"))
                        .hint("write `wharf config set SERVICE --env ENV KEY=VALUE ...`")
                })?;
                set.insert(key.to_owned(), value.to_owned());
            }
            let change = ConfigChange {
                set,
                message,
                user: current_user(),
                ..Default::default()
            };
            apply(global, printer, &target, change).await
        }
        ConfigCommand::Unset {
            target,
            keys,
            message,
        } => {
            let change = ConfigChange {
                unset: keys,
                message,
                user: current_user(),
                ..Default::default()
            };
            apply(global, printer, &target, change).await
        }
        ConfigCommand::History(target) => history(global, printer, &target).await,
        ConfigCommand::Rollback {
            target,
            to,
            message,
        } => {
            let client = crate::connect::controller(global, printer).await?;
            let revisions = client
                .config_history(&target.service, &target.env)
                .await
                .map_err(Failure::from)?;
            let to = match to {
                Some(to) => to,
                None => revisions.get(1).map(|r| r.revision).ok_or_else(|| {
                    Failure::input(format!(
                        "`{}` has no earlier configuration revision in `{}`",
                        target.service, target.env
                    ))
                    .hint("`wharf config history` lists the revisions")
                })?,
            };
            let change = ConfigChange {
                restore: Some(to),
                message,
                user: current_user(),
                ..Default::default()
            };
            apply(global, printer, &target, change).await
        }
        ConfigCommand::Diff { service, envs } => diff(global, printer, &service, &envs).await,
    }
}

/// The merged configuration of a service in an environment, lowest precedence first
/// replaced key by key: wharf.yaml (service < environment < node) < `config set` <
/// secrets.
async fn merged(
    global: &Global,
    client: &Client,
    service: &str,
    env: &str,
) -> anyhow::Result<(i64, Vec<Sourced>)> {
    let project = project::load(global)?;
    let declared = project
        .definition
        .declared_config(service, env)
        .map_err(Failure::from)?;
    let state = client.config(service, env).await.map_err(Failure::from)?;
    let mut rows: Vec<Sourced> = Vec::new();
    for (key, value, source) in declared {
        rows.retain(|r| r.key != key || source.contains("node"));
        rows.push(Sourced {
            key,
            value: Some(value),
            source,
        });
    }
    for (key, value) in &state.overrides {
        rows.retain(|r| &r.key != key);
        rows.push(Sourced {
            key: key.clone(),
            value: Some(value.clone()),
            source: format!("config set (revision {})", state.revision),
        });
    }
    for key in &state.secrets {
        rows.retain(|r| &r.key != key);
        rows.push(Sourced {
            key: key.clone(),
            value: None,
            source: "secret".into(),
        });
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((state.revision, rows))
}

async fn get(global: &Global, printer: &Printer, target: &ServiceEnv) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let (revision, rows) = merged(global, &client, &target.service, &target.env).await?;
    if printer.json() {
        printer.json_data(&serde_json::json!({ "revision": revision, "config": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.value.clone().unwrap_or_else(|| "(secret)".into()),
                r.source.clone(),
            ]
        })
        .collect();
    printer.data(&table::render(&["KEY", "VALUE", "SOURCE"], &cells));
    printer.info(&format!(
        "revision {revision}; precedence: service < environment < node < config set < secret"
    ));
    Ok(ExitCode::SUCCESS)
}

/// Refuses a service or environment the definition does not have, before anything
/// is sent.
pub fn check_target(global: &Global, target: &ServiceEnv) -> anyhow::Result<()> {
    let project = project::load(global)?;
    project
        .definition
        .service(&target.service)
        .map_err(Failure::from)?;
    project
        .definition
        .environment(&target.env)
        .map_err(Failure::from)?;
    Ok(())
}

async fn apply(
    global: &Global,
    printer: &Printer,
    target: &ServiceEnv,
    change: ConfigChange,
) -> anyhow::Result<ExitCode> {
    check_target(global, target)?;
    let client = crate::connect::controller(global, printer).await?;
    let mut view = EventView::new(printer);
    let last = client
        .change_config(&target.service, &target.env, &change, |e| view.show(e))
        .await
        .map_err(Failure::from)?;
    let DeployEvent::Finished { message, .. } = &last else {
        unreachable!("the client returns only finished events")
    };
    if printer.json() {
        printer.json_data(&last);
    }
    if !succeeded(&last) {
        return Err(Failure::operation(format!(
            "the configuration of {} in {} was saved, but rolling it out failed: {message}",
            target.service, target.env
        ))
        .hint("`wharf config rollback` returns to the previous revision")
        .into());
    }
    printer.info(&format!(
        "{} {} in {}: {message}",
        printer.paint("configured", Tone::Good),
        target.service,
        target.env
    ));
    Ok(ExitCode::SUCCESS)
}

async fn history(
    global: &Global,
    printer: &Printer,
    target: &ServiceEnv,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let revisions = client
        .config_history(&target.service, &target.env)
        .await
        .map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&revisions);
        return Ok(ExitCode::SUCCESS);
    }
    if revisions.is_empty() {
        printer.info(&format!(
            "no configuration was set for `{}` in `{}`; it runs with wharf.yaml's",
            target.service, target.env
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                table::time(r.at),
                r.user.clone(),
                r.values
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                r.message.clone(),
            ]
        })
        .collect();
    printer.data(&table::render(
        &["REVISION", "WHEN", "WHO", "OVERRIDES", "MESSAGE"],
        &rows,
    ));
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Difference {
    key: String,
    /// Values per environment; absent for secrets and missing keys.
    values: Vec<Option<String>>,
    note: String,
}

async fn diff(
    global: &Global,
    printer: &Printer,
    service: &str,
    envs: &[String],
) -> anyhow::Result<ExitCode> {
    let [a, b] = envs else {
        return Err(Failure::input("`config diff` compares two environments")
            .hint("write `wharf config diff SERVICE --env A --env B`")
            .into());
    };
    let client = crate::connect::controller(global, printer).await?;
    let (_, left) = merged(global, &client, service, a).await?;
    let (_, right) = merged(global, &client, service, b).await?;
    let plain = |rows: &[Sourced]| -> BTreeMap<String, String> {
        rows.iter()
            .filter(|r| !r.source.contains("node"))
            .filter_map(|r| r.value.clone().map(|v| (r.key.clone(), v)))
            .collect()
    };
    let (l, r) = (plain(&left), plain(&right));
    let mut differences = Vec::new();
    let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if l.get(key) != r.get(key) {
            differences.push(Difference {
                key: key.clone(),
                values: vec![l.get(key).cloned(), r.get(key).cloned()],
                note: String::new(),
            });
        }
    }
    for secret in client
        .compare_secrets(service, a, b)
        .await
        .map_err(Failure::from)?
    {
        if secret.comparison != "same" {
            differences.push(Difference {
                key: secret.key,
                values: vec![None, None],
                note: format!("secret: {}", secret.comparison),
            });
        }
    }
    if printer.json() {
        printer.json_data(&differences);
        return Ok(ExitCode::SUCCESS);
    }
    if differences.is_empty() {
        printer.info(&format!(
            "`{service}` is configured alike in `{a}` and `{b}`"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = differences
        .iter()
        .map(|d| {
            if d.note.is_empty() {
                vec![d.key.clone(), show(&d.values[0]), show(&d.values[1])]
            } else {
                vec![d.key.clone(), d.note.clone(), String::new()]
            }
        })
        .collect();
    printer.data(&table::render(&["KEY", a, b], &rows));
    printer.info(&format!("{} key(s) differ", differences.len()));
    Ok(ExitCode::SUCCESS)
}
