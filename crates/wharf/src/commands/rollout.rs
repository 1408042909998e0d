//! `wharf rollout status|promote|abort`.

use std::process::ExitCode;

use wharf_api::{RolloutRequest, RolloutView};

use crate::cli::{Global, RolloutArgs, RolloutCommand};
use crate::commands::current_user;
use crate::failure::Failure;
use crate::printer::{Printer, Tone};
use crate::table;

pub async fn rollout(
    global: &Global,
    printer: &Printer,
    command: RolloutCommand,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let (action, target, full) = match command {
        RolloutCommand::Status(target) => {
            let view = client
                .rollout(&target.service, &target.env)
                .await
                .map_err(Failure::from)?;
            show(printer, &view);
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCommand::Promote { target, full } => ("promote", target, full),
        RolloutCommand::Abort(target) => ("abort", target, false),
    };
    let RolloutArgs { service, env } = target;
    let request = RolloutRequest {
        service,
        env,
        full,
        user: current_user(),
    };
    let view = client
        .rollout_command(action, &request)
        .await
        .map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&view);
    } else if let Some(last) = view.events.last() {
        let tone = if view.phase == "aborted" {
            Tone::Warn
        } else {
            Tone::Good
        };
        printer.info(&format!(
            "{} {}",
            printer.paint(&format!("{}:", view.service), tone),
            last.what
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn show(printer: &Printer, view: &RolloutView) {
    if printer.json() {
        printer.json_data(view);
        return;
    }
    let step = match view.steps {
        0 => "-".to_owned(),
        n => format!("{} of {n}", view.step),
    };
    let ends = view
        .step_ends_at
        .map(table::time)
        .unwrap_or_else(|| "-".into());
    printer.data(&table::render(
        &[
            "DEPLOYMENT",
            "STRATEGY",
            "PHASE",
            "STABLE",
            "NEW",
            "WEIGHT",
            "STEP",
            "STEP ENDS",
            "PREVIEW",
        ],
        &[vec![
            format!("#{}", view.deployment),
            view.strategy.clone(),
            view.phase.clone(),
            view.stable_version.clone(),
            view.version.clone(),
            format!("{}%", view.weight),
            step,
            ends,
            view.preview.clone().unwrap_or_else(|| "-".into()),
        ]],
    ));
    let rows: Vec<Vec<String>> = view
        .events
        .iter()
        .map(|e| vec![table::time(e.at), e.by.clone(), e.what.clone()])
        .collect();
    printer.data("");
    printer.data(&table::render(&["WHEN", "WHO", "WHAT"], &rows));
}
