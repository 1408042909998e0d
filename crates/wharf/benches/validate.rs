//! Validation time of large definitions: parse, structural check and semantic checks of
//! a wharf.yaml with N services (each with a health check, a port, config with a
//! `{{ services.X.url }}` template), 8 services per node. Validation must stay linear in
//! the size of the file: the 5 MB one (21,000 services) in well under 2 s.
//!
//! Run with `cargo bench -p wharf --bench validate` (WHARF_BENCH_RUNS sets the runs per
//! size, default 5).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::fmt::Write;
use std::time::Instant;

use common::p50_p99;

/// A definition of `n` services, about 250 bytes each.
fn definition(n: usize) -> String {
    let mut out = String::from("services:\n");
    for i in 0..n {
        let peer = (i + 1) % n;
        let _ = writeln!(
            out,
            "  svc{i}:\n    build: ./svc\n    run: [\"python3\", \"app.py\", \"--name\", \"svc{i}\"]\n    port: http\n    health: {{ http: /health, timeout: 5s }}\n    config: {{ LOG_LEVEL: info, PEER: \"{{{{ services.svc{peer}.url }}}}\", GREETING: hello-{i} }}"
        );
    }
    out.push_str("environments:\n  local:\n    nodes:\n");
    for start in (0..n).step_by(8) {
        let names: Vec<String> = (start..n.min(start + 8))
            .map(|j| format!("svc{j}"))
            .collect();
        let _ = writeln!(
            out,
            "      - {{ name: node{start}, services: [{}] }}",
            names.join(", ")
        );
    }
    out.push_str("  ci:\n    after: local\n");
    out
}

fn main() {
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    println!("services  bytes      p50 ms   p99 ms   ms per 1000 services");
    for n in [1_000, 4_000, 8_000, 21_000] {
        let text = definition(n);
        let mut times = Vec::new();
        for _ in 0..runs {
            let begun = Instant::now();
            let definition = wharf_core::load(&text, "wharf.yaml", &wharf_core::AnyFolder)
                .expect("the generated definition is valid");
            times.push(begun.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(definition.services.len(), n);
        }
        let (p50, p99) = p50_p99(times);
        println!(
            "{n:>8}  {:>9}  {p50:>7.0}  {p99:>7.0}  {:>7.1}",
            text.len(),
            p50 / (n as f64 / 1000.0)
        );
    }
}
