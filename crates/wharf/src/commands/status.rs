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
    check: bool,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let report = client.status(env).await.map_err(Failure::from)?;
    // `--check`: exit 1 when something is not converged, for scripts and CI.
    let converged = report.services.iter().all(|s| s.warnings.is_empty());
    let code = if check && !converged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    if printer.json() {
        printer.json_data(&report);
        return Ok(code);
    }
    if report.services.is_empty() {
        // A controller that stores no definition yet cannot tell a typo: wharf.yaml can.
        if let (Some(env), Ok(project)) = (env, crate::project::load(global)) {
            project.definition.environment(env).map_err(Failure::from)?;
        }
        let place = env.map(|e| format!(" in `{e}`")).unwrap_or_default();
        printer.info(&format!(
            "nothing runs{place}; `wharf deploy --env ENV` starts it"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    printer.data(&render(&report));
    Ok(code)
}

/// The status table, then the URLs of instances that have a port.
pub fn render(report: &StatusReport) -> String {
    let mut rows = Vec::new();
    let mut urls = Vec::new();
    for service in &report.services {
        if let Some(address) = &service.address {
            urls.push(format!(
                "  {} ({}): {address}/ (balanced over its healthy instances)",
                service.service, service.env
            ));
        }
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
                i.cpu_millis.map(table::cpu).unwrap_or_else(|| "-".into()),
                i.memory_bytes
                    .map(table::size)
                    .unwrap_or_else(|| "-".into()),
            ]);
            if let Some(port) = i.port.filter(|_| service.address.is_none()) {
                urls.push(format!(
                    "  {} ({} #{}): http://127.0.0.1:{port}/",
                    i.service, i.env, i.instance
                ));
            }
        }
    }
    let header = [
        "ENV", "SERVICE", "VERSION", "DIGEST", "#", "NODE", "PID", "PORT", "STATE", "HEALTH",
        "RESTARTS", "UPTIME", "CPU", "MEM",
    ];
    let mut out = table::render(&header, &rows);
    let drift: Vec<String> = report
        .services
        .iter()
        .filter_map(|s| {
            let d = s.drift.as_ref()?;
            Some(format!(
                "  {} in {}: {} key(s) differ from {}{}",
                s.service,
                s.env,
                d.keys,
                d.previous_env,
                if d.keys > 0 {
                    format!(
                        " (`wharf config diff {} --env {} --env {}`)",
                        s.service, d.previous_env, s.env
                    )
                } else {
                    String::new()
                }
            ))
        })
        .collect();
    if !drift.is_empty() {
        out.push_str("\nconfiguration drift along the pipeline:\n");
        out.push_str(&drift.join("\n"));
        out.push('\n');
    }
    let warnings: Vec<String> = report
        .services
        .iter()
        .flat_map(|s| {
            s.warnings
                .iter()
                .map(move |w| format!("warning: `{}` in `{}` {w}", s.service, s.env))
        })
        .collect();
    let interruptions: Vec<String> = report
        .services
        .iter()
        .filter_map(|s| {
            let i = s.interrupted.as_ref()?;
            let how = i.resolved_by.map(|_| format!(": {}", i.message)).unwrap_or_default();
            Some(format!(
                "note: deploy #{} of `{}` in `{}` was interrupted{how} (`wharf deployments show {}`)",
                i.deployment, s.service, s.env, i.deployment
            ))
        })
        .collect();
    if !interruptions.is_empty() {
        out.push('\n');
        out.push_str(&interruptions.join("\n"));
        out.push('\n');
    }
    if !warnings.is_empty() {
        out.push('\n');
        out.push_str(&warnings.join("\n"));
        out.push('\n');
    }
    if !urls.is_empty() {
        out.push_str("\nopen:\n");
        out.push_str(&urls.join("\n"));
        out.push('\n');
    }
    out
}

/// `wharf top`: instances by CPU, refreshed until interrupted or `iterations` are shown.
pub async fn top(
    global: &Global,
    printer: &Printer,
    env: Option<&str>,
    iterations: Option<u32>,
    every: u64,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout()) && !printer.json();
    let mut shown = 0;
    loop {
        let report = client.status(env).await.map_err(Failure::from)?;
        if printer.json() {
            printer.json_data(&report);
        } else {
            if clear {
                printer.stream("\x1b[2J\x1b[H");
            }
            printer.data(&render_top(&report));
        }
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn render_top(report: &StatusReport) -> String {
    let mut instances: Vec<_> = report
        .services
        .iter()
        .flat_map(|s| s.instances.iter())
        .collect();
    instances.sort_by_key(|i| std::cmp::Reverse(i.cpu_millis.unwrap_or(0)));
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.env.clone(),
                i.service.clone(),
                i.instance.to_string(),
                i.node.clone(),
                i.cpu_millis.map(table::cpu).unwrap_or_else(|| "-".into()),
                i.memory_bytes
                    .map(table::size)
                    .unwrap_or_else(|| "-".into()),
                i.restarts.to_string(),
                if i.pid.is_some() {
                    table::age(report.now - i.started_at)
                } else {
                    "-".into()
                },
                i.health.as_str().to_owned(),
            ]
        })
        .collect();
    table::render(
        &[
            "ENV", "SERVICE", "#", "NODE", "CPU", "MEM", "RESTARTS", "UPTIME", "HEALTH",
        ],
        &rows,
    )
}
