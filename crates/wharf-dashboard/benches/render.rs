//! The matrix page rendered for 100 services by 4 environments (400 cells, a tenth of
//! them with an approval waiting, drift everywhere), as the controller renders it for
//! each page load: the page's size and the time to render it, 200 renders.
//!
//! Run with `cargo bench -p wharf-dashboard --bench render` (WHARF_BENCH_RUNS sets the
//! number of renders). This measures the rendering alone; the controller also reads
//! its state for the page (`wharf status`'s report), which this does not include.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use wharf_dashboard::{Cell, Matrix, Viewer, matrix_page};

fn matrix() -> Matrix {
    let environments: Vec<String> = ["local", "ci", "uat", "production"]
        .iter()
        .map(|e| e.to_string())
        .collect();
    let services: Vec<String> = (0..100).map(|i| format!("service-{i:03}")).collect();
    let mut cells = Vec::new();
    for (s, service) in services.iter().enumerate() {
        for (e, env) in environments.iter().enumerate() {
            cells.push(Cell {
                service: service.clone(),
                env: env.clone(),
                versions: vec![format!("build-{}", 100 + s - e)],
                healthy: 3 - usize::from(s % 7 == 0),
                desired: Some(3),
                drift: (e > 0).then(|| (environments[e - 1].clone(), s % 4)),
                waiting: if s % 10 == 0 && e == 3 {
                    vec![s as i64]
                } else {
                    vec![]
                },
                can_approve: true,
            });
        }
    }
    Matrix {
        environments,
        services,
        cells,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let matrix = matrix();
    let viewer = Viewer {
        name: "ann".into(),
        open: false,
        csrf: "0".repeat(64),
    };
    let mut took = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let begun = Instant::now();
        let page = matrix_page(&viewer, &matrix, None);
        took.push(begun.elapsed().as_secs_f64() * 1000.0);
        size = page.len();
    }
    took.sort_by(f64::total_cmp);
    println!("| cells | renders | p50 | p99 | page size |");
    println!("|---|---|---|---|---|");
    println!(
        "| 400 | {runs} | {:.2} ms | {:.2} ms | {:.1} KB |",
        percentile(&took, 50.0),
        percentile(&took, 99.0),
        size as f64 / 1024.0
    );
}
