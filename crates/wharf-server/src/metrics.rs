//! `/metrics`: per-instance CPU, memory, restarts, uptime and health in the Prometheus
//! text format, from the same rows `wharf status` shows.

use std::fmt::Write;

use wharf_store::{Health, InstanceRecord};

fn labels(i: &InstanceRecord) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "env=\"{}\",service=\"{}\",node=\"{}\",instance=\"{}\",version=\"{}\"",
        escape(&i.env),
        escape(&i.service),
        escape(&i.node),
        i.instance,
        escape(&i.version)
    )
}

/// Renders every instance's figures.
pub fn render(instances: &[InstanceRecord], now_millis: i64) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&InstanceRecord) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for i in instances {
                if let Some(v) = value(i) {
                    let _ = writeln!(out, "{name}{{{}}} {v}", labels(i));
                }
            }
        };
    family(
        "wharf_instance_cpu_cores",
        "gauge",
        "CPU in use, in cores.",
        &|i| i.cpu_millis.map(|m| m as f64 / 1000.0),
    );
    family(
        "wharf_instance_memory_bytes",
        "gauge",
        "Memory in use.",
        &|i| i.memory_bytes.map(|m| m as f64),
    );
    family(
        "wharf_instance_restarts_total",
        "counter",
        "Restarts after the instance exited on its own.",
        &|i| Some(f64::from(i.restarts)),
    );
    family(
        "wharf_instance_uptime_seconds",
        "gauge",
        "Time since the current process started.",
        &|i| {
            i.pid
                .map(|_| ((now_millis - i.started_at).max(0) as f64) / 1000.0)
        },
    );
    family(
        "wharf_instance_healthy",
        "gauge",
        "1 when the last health check passed.",
        &|i| {
            Some(if i.health == Health::Healthy {
                1.0
            } else {
                0.0
            })
        },
    );
    out
}

/// Renders what the services' addresses measured: per service and per instance,
/// requests, failures and a latency histogram (seconds to the answer's start).
pub fn render_traffic(services: &[wharf_api::traffic::ServiceTraffic]) -> String {
    use wharf_api::traffic::{BUCKET_BOUNDS_MS, Counts};
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let mut rows: Vec<(&str, String, &Counts)> = Vec::new();
    for s in services {
        let base = format!(
            "env=\"{}\",service=\"{}\"",
            escape(&s.env),
            escape(&s.service)
        );
        rows.push(("service", base.clone(), &s.totals));
        for i in &s.instances {
            let labels = format!(
                "{base},node=\"{}\",instance=\"{}\"",
                escape(&i.node),
                i.instance
            );
            rows.push(("instance", labels, &i.counts));
        }
    }
    let mut out = String::new();
    for scope in ["service", "instance"] {
        let of_scope = || rows.iter().filter(move |(s, _, _)| *s == scope);
        let requests = format!("wharf_{scope}_requests_total");
        let _ = writeln!(
            out,
            "# HELP {requests} Requests through the service's addresses."
        );
        let _ = writeln!(out, "# TYPE {requests} counter");
        for (_, labels, c) in of_scope() {
            let _ = writeln!(out, "{requests}{{{labels}}} {}", c.requests);
        }
        let errors = format!("wharf_{scope}_request_errors_total");
        let _ = writeln!(out, "# HELP {errors} Requests answered 5xx, or not at all.");
        let _ = writeln!(out, "# TYPE {errors} counter");
        for (_, labels, c) in of_scope() {
            let _ = writeln!(out, "{errors}{{{labels}}} {}", c.errors);
        }
        let duration = format!("wharf_{scope}_request_duration_seconds");
        let _ = writeln!(out, "# HELP {duration} Time until the answer started.");
        let _ = writeln!(out, "# TYPE {duration} histogram");
        for (_, labels, c) in of_scope() {
            // Every bound once, then +Inf, which is the count: whatever an agent sent.
            let mut cumulative = 0u64;
            for (i, bound) in BUCKET_BOUNDS_MS.iter().enumerate() {
                cumulative = cumulative.saturating_add(c.buckets.get(i).copied().unwrap_or(0));
                let le = bound / 1000.0;
                let _ = writeln!(
                    out,
                    "{duration}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let total = c
                .buckets
                .iter()
                .skip(BUCKET_BOUNDS_MS.len())
                .fold(cumulative, |a, b| a.saturating_add(*b));
            let _ = writeln!(out, "{duration}_bucket{{{labels},le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "{duration}_sum{{{labels}}} {}", c.micros as f64 / 1e6);
            let _ = writeln!(out, "{duration}_count{{{labels}}} {total}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_store::InstanceState;

    #[test]
    fn renders_the_prometheus_text_format() {
        let row = InstanceRecord {
            env: "ci".into(),
            service: "api".into(),
            node: "n".into(),
            instance: 0,
            version: "v1".into(),
            digest: "d".into(),
            config_digest: "c".into(),
            deployment_id: 1,
            pid: Some(9),
            port: None,
            state: InstanceState::Running,
            health: Health::Healthy,
            restarts: 2,
            started_at: 1_000,
            cpu_millis: Some(250),
            memory_bytes: Some(1024),
        };
        let text = render(&[row], 11_000);
        assert!(text.contains("# TYPE wharf_instance_cpu_cores gauge"));
        assert!(text.contains(r#"wharf_instance_cpu_cores{env="ci",service="api",node="n",instance="0",version="v1"} 0.25"#), "{text}");
        assert!(text.contains("wharf_instance_restarts_total{") && text.contains("} 2\n"));
        assert!(text.contains("wharf_instance_uptime_seconds{") && text.contains("} 10\n"));
    }
}
