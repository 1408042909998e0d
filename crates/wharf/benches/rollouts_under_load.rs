//! Rolling deploys under load: a 2-instance service (WHARF_BENCH_INSTANCES) takes 1,000 requests a second
//! through its address (8 clients, keep-alive, paced) while it is deployed 100 times.
//! Reports the requests that failed, their latency, and how long each deploy took
//! (each replaces both instances: a new one beside the old, the switch, the drain), next
//! to the time the same program takes to start and answer when spawned directly.
//!
//! Run with `cargo bench -p wharf --bench rollouts_under_load` (WHARF_BENCH_ROLLOUTS,
//! default 100; WHARF_BENCH_RATE, requests per second, default 1000).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{answers, p50_p99, stop_controller, wharf};

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle on, the body waits for a delayed ACK.
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long the program takes to start and answer when spawned by hand.
fn direct_start(dir: &std::path::Path) -> f64 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let begun = Instant::now();
    let mut child = Command::new("python3")
        .arg("app.py")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !answers(port) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = begun.elapsed().as_secs_f64() * 1000.0;
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn main() {
    let rollouts = env_or("WHARF_BENCH_ROLLOUTS", 100);
    let rate = env_or("WHARF_BENCH_RATE", 1000);
    let instances = env_or("WHARF_BENCH_INSTANCES", 2);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir_all(dir.join("svc")).unwrap();
    std::fs::write(dir.join("svc/app.py"), APP).unwrap();
    std::fs::write(
        dir.join("wharf.yaml"),
        format!("services:\n  svc:\n    build: ./svc\n    run: [python3, app.py]\n    port: http\n    health: {{ http: /health, interval: 100ms }}\n\
         environments:\n  bench:\n    nodes:\n      - name: local\n        services: [{{ name: svc, instances: {instances} }}]\n"),
    )
    .unwrap();
    wharf(
        dir,
        &[
            "deploy",
            "svc",
            "--env",
            "bench",
            "--version",
            "v0",
            "--quiet",
        ],
    );
    let status: serde_json::Value =
        serde_json::from_str(&wharf(dir, &["status", "--env", "bench", "-o", "json"])).unwrap();
    let url = format!("{}/", status["services"][0]["address"].as_str().unwrap());

    let running = Arc::new(AtomicBool::new(true));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let clients = 8;
    let every = Duration::from_secs_f64(clients as f64 / rate as f64);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (running, latencies, failed, url) = (
                running.clone(),
                latencies.clone(),
                failed.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut next = Instant::now();
                let mut mine = Vec::new();
                while running.load(Ordering::Relaxed) {
                    let begun = Instant::now();
                    match http.get(&url).send() {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes();
                            mine.push(begun.elapsed().as_secs_f64() * 1000.0);
                        }
                        Ok(r) => failed.lock().unwrap().push(r.status().to_string()),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    next += every;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let load_began = Instant::now();
    let mut deploys = Vec::with_capacity(rollouts);
    for n in 1..=rollouts {
        let begun = Instant::now();
        wharf(
            dir,
            &[
                "deploy",
                "svc",
                "--env",
                "bench",
                "--version",
                &format!("v{n}"),
                "--quiet",
            ],
        );
        deploys.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    running.store(false, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let seconds = load_began.elapsed().as_secs_f64();
    let latencies = latencies.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    let answered = latencies.len();
    let (l50, l99) = p50_p99(latencies);
    let (d50, d99) = p50_p99(deploys);
    let direct: Vec<f64> = (0..20).map(|_| direct_start(&dir.join("svc"))).collect();
    let (s50, s99) = p50_p99(direct);
    stop_controller(dir);
    println!(
        "| instances | rollouts | requests | req/s | failed | latency p50 | latency p99 | deploy p50 | deploy p99 | direct start p50 | direct start p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {instances} | {rollouts} | {} | {:.0} | {} | {l50:.2} ms | {l99:.2} ms | {d50:.0} ms | {d99:.0} ms | {s50:.0} ms | {s99:.0} ms |",
        answered + failed.len(),
        (answered + failed.len()) as f64 / seconds,
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("failures: {:?}", &failed[..failed.len().min(10)]);
    }
}
