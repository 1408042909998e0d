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
    // Rates are over the time between two reads: the first one is 2 s before the first
    // view (agents on other hosts report their counts every 2 s).
    let mut earlier = client.traffic(env).await.map_err(Failure::from)?;
    let mut read_at = std::time::Instant::now();
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
    }
    loop {
        let report = client.status(env).await.map_err(Failure::from)?;
        let traffic = client.traffic(env).await.map_err(Failure::from)?;
        let seconds = read_at.elapsed().as_secs_f64().max(0.001);
        read_at = std::time::Instant::now();
        let rates = TrafficRates::between(&earlier, &traffic, seconds);
        if printer.json() {
            printer.json_data(&serde_json::json!({
                "status": report,
                "traffic": rates.json(),
            }));
        } else {
            if clear {
                printer.stream("\x1b[2J\x1b[H");
            }
            printer.data(&render_top(&report, &rates));
        }
        earlier = traffic;
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

/// Requests per second, the share that failed and latency percentiles, per service
/// and per instance, between two reads of the traffic counters.
struct TrafficRates {
    services: Vec<(String, String, Rate)>,
    instances: std::collections::BTreeMap<(String, String, String, u32), Rate>,
}

#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    errors: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Rate {
    fn of(c: &wharf_api::traffic::Counts, seconds: f64) -> Rate {
        Rate {
            per_second: c.requests as f64 / seconds,
            errors: if c.requests == 0 {
                0.0
            } else {
                c.errors as f64 / c.requests as f64
            },
            p50_ms: c.quantile_ms(0.5),
            p99_ms: c.quantile_ms(0.99),
        }
    }

    fn cells(&self) -> [String; 4] {
        let ms = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("<{v}ms"),
            Some(_) => ">10s".into(),
            None => "-".into(),
        };
        [
            format!("{:.1}", self.per_second),
            format!("{:.1}%", self.errors * 100.0),
            ms(self.p50_ms),
            ms(self.p99_ms),
        ]
    }
}

impl TrafficRates {
    fn between(
        earlier: &[wharf_api::traffic::ServiceTraffic],
        now: &[wharf_api::traffic::ServiceTraffic],
        seconds: f64,
    ) -> Self {
        let mut services = Vec::new();
        let mut instances = std::collections::BTreeMap::new();
        for s in now {
            // Only what both reads saw has a rate (a new one shows `-` until the next).
            let Some(before) = earlier
                .iter()
                .find(|e| e.env == s.env && e.service == s.service)
            else {
                continue;
            };
            let totals = s.totals.since(&before.totals);
            services.push((s.env.clone(), s.service.clone(), Rate::of(&totals, seconds)));
            for i in &s.instances {
                let Some(was) = before
                    .instances
                    .iter()
                    .find(|e| e.node == i.node && e.instance == i.instance)
                    .map(|e| &e.counts)
                else {
                    continue;
                };
                instances.insert(
                    (s.env.clone(), s.service.clone(), i.node.clone(), i.instance),
                    Rate::of(&i.counts.since(was), seconds),
                );
            }
        }
        TrafficRates {
            services,
            instances,
        }
    }

    fn json(&self) -> serde_json::Value {
        let one = |r: &Rate| {
            serde_json::json!({
                "requests_per_second": r.per_second,
                "error_ratio": r.errors,
                "p50_ms": r.p50_ms.filter(|v| v.is_finite()),
                "p99_ms": r.p99_ms.filter(|v| v.is_finite()),
            })
        };
        let instances: Vec<serde_json::Value> = self
            .instances
            .iter()
            .map(|((env, service, node, instance), r)| {
                let mut v = one(r);
                v["env"] = env.as_str().into();
                v["service"] = service.as_str().into();
                v["node"] = node.as_str().into();
                v["instance"] = (*instance).into();
                v
            })
            .collect();
        let services: Vec<serde_json::Value> = self
            .services
            .iter()
            .map(|(env, service, r)| {
                let mut v = one(r);
                v["env"] = env.as_str().into();
                v["service"] = service.as_str().into();
                v
            })
            .collect();
        serde_json::json!({ "services": services, "instances": instances })
    }
}

fn render_top(report: &StatusReport, rates: &TrafficRates) -> String {
    let mut instances: Vec<_> = report
        .services
        .iter()
        .flat_map(|s| s.instances.iter())
        .collect();
    instances.sort_by_key(|i| std::cmp::Reverse(i.cpu_millis.unwrap_or(0)));
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let mut row = vec![
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
            ];
            let key = (i.env.clone(), i.service.clone(), i.node.clone(), i.instance);
            match rates.instances.get(&key) {
                Some(rate) => row.extend(rate.cells()),
                None => row.extend(["-", "-", "-", "-"].map(String::from)),
            }
            row
        })
        .collect();
    let mut out = table::render(
        &[
            "ENV", "SERVICE", "#", "NODE", "CPU", "MEM", "RESTARTS", "UPTIME", "HEALTH", "REQ/S",
            "ERR", "P50", "P99",
        ],
        &rows,
    );
    if !rates.services.is_empty() {
        let rows: Vec<Vec<String>> = rates
            .services
            .iter()
            .map(|(env, service, rate)| {
                let mut row = vec![env.clone(), service.clone()];
                row.extend(rate.cells());
                row
            })
            .collect();
        out.push('\n');
        out.push_str(&table::render(
            &["ENV", "SERVICE", "REQ/S", "ERR", "P50", "P99"],
            &rows,
        ));
    }
    out
}
