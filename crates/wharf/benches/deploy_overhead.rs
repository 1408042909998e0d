//! Deploy overhead: the time from `wharf deploy` to all instances healthy, minus the time
//! the same service takes to start and answer when spawned directly.
//!
//! Run with `cargo bench -p wharf --bench deploy_overhead` (WHARF_BENCH_RUNS sets the
//! number of runs, default 50). Each run is paired: a wharf deploy of N instances on one
//! node, then N direct spawns polled every millisecond until they answer.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{answers, p50_p99, stop_controller, wharf};

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Spawns `n` copies directly and waits until every one answers.
fn direct(dir: &Path, n: usize) -> Duration {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let begun = Instant::now();
    let mut children: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new("python3")
                .arg("app.py")
                .current_dir(dir)
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for port in &ports {
        while !answers(*port) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = begun.elapsed();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    println!(
        "| instances | runs | wharf p50 | wharf p99 | direct p50 | direct p99 | overhead p50 | overhead p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [1usize, 20] {
        let project = tempfile::tempdir().unwrap();
        let dir = project.path();
        std::fs::create_dir_all(dir.join("svc")).unwrap();
        std::fs::write(dir.join("svc/app.py"), APP).unwrap();
        std::fs::write(
            dir.join("wharf.yaml"),
            format!(
                "services:\n  svc:\n    build: ./svc\n    run: [python3, app.py]\n    port: http\n    health: {{ http: /health }}\n\
                 environments:\n  bench:\n    nodes:\n      - name: local\n        services: [{{ name: svc, instances: {n} }}]\n"
            ),
        )
        .unwrap();
        wharf(dir, &["build", "svc", "--version", "v1"]);
        wharf(dir, &["deploy", "svc", "--env", "bench", "--version", "v1"]);
        wharf(dir, &["down", "--env", "bench"]);
        let (mut with_wharf, mut bare, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let begun = Instant::now();
            wharf(
                dir,
                &[
                    "deploy",
                    "svc",
                    "--env",
                    "bench",
                    "--version",
                    "v1",
                    "--quiet",
                ],
            );
            let w = begun.elapsed().as_secs_f64() * 1000.0;
            wharf(dir, &["down", "--env", "bench", "--quiet"]);
            let d = direct(&dir.join("svc"), n).as_secs_f64() * 1000.0;
            with_wharf.push(w);
            bare.push(d);
            overhead.push(w - d);
        }
        let (w50, w99) = p50_p99(with_wharf);
        let (d50, d99) = p50_p99(bare);
        let (o50, o99) = p50_p99(overhead);
        println!(
            "| {n} | {runs} | {w50:.1} ms | {w99:.1} ms | {d50:.1} ms | {d99:.1} ms | {o50:.1} ms | {o99:.1} ms |"
        );
        if n == 1 {
            replacing(dir, runs);
        }
        stop_controller(dir);
    }
}

/// A new version replacing the one running, switch included: the deploy returns once
/// the new instance serves at the address and the old one is drained and stopped.
fn replacing(dir: &Path, runs: usize) {
    wharf(dir, &["build", "svc", "--version", "v2"]);
    wharf(
        dir,
        &[
            "deploy",
            "svc",
            "--env",
            "bench",
            "--version",
            "v1",
            "--quiet",
        ],
    );
    let (mut with_wharf, mut bare, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let version = if run % 2 == 0 { "v2" } else { "v1" };
        let begun = Instant::now();
        wharf(
            dir,
            &[
                "deploy",
                "svc",
                "--env",
                "bench",
                "--version",
                version,
                "--quiet",
            ],
        );
        let w = begun.elapsed().as_secs_f64() * 1000.0;
        let d = direct(&dir.join("svc"), 1).as_secs_f64() * 1000.0;
        with_wharf.push(w);
        bare.push(d);
        overhead.push(w - d);
    }
    let (w50, w99) = p50_p99(with_wharf);
    let (d50, d99) = p50_p99(bare);
    let (o50, o99) = p50_p99(overhead);
    println!(
        "| 1 (replacing the running one, switch included) | {runs} | {w50:.1} ms | {w99:.1} ms | {d50:.1} ms | {d99:.1} ms | {o50:.1} ms | {o99:.1} ms |"
    );
    wharf(dir, &["down", "--env", "bench", "--quiet"]);
}
