//! The dev loop: a file saved to the new code answering HTTP through the service's
//! address, for a Python service run by `wharf dev` on the process driver; and the
//! requests that failed meanwhile (a load thread sends them back to back the whole
//! time).
//!
//! Run with `cargo bench -p wharf --bench dev_loop` (WHARF_BENCH_RUNS sets the number of
//! edits, default 50). Each edit rewrites the file the service reads at start and polls
//! the address every millisecond until the new text answers; the next edit follows.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{WHARF, stop_controller, wharf};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
NOTE = open("note.txt").read().strip().encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"ok" if self.path == "/health" else NOTE
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The body of `GET /` on the port, if it answers 200.
fn body(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut all = String::new();
    stream.read_to_string(&mut all).ok()?;
    if !all.starts_with("HTTP/1.1 200") {
        return None;
    }
    all.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn address_port(dir: &Path) -> Option<u16> {
    let status: serde_json::Value =
        serde_json::from_str(&wharf(dir, &["status", "--env", "local", "-o", "json"])).ok()?;
    status["services"]
        .as_array()?
        .iter()
        .find_map(|s| s["address"].as_str())?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let edits: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("web/app.py"), APP).unwrap();
    std::fs::write(dir.join("web/note.txt"), "start").unwrap();
    std::fs::write(
        dir.join("wharf.yaml"),
        "services:\n  web:\n    build: ./web\n    run: [python3, app.py]\n    min_healthy_time: 0s\n    port: http\n    health: { http: /health }\n\
         environments:\n  local: {}\n",
    )
    .unwrap();
    let mut dev = Command::new(WHARF)
        .args(["dev", "web"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let begun = Instant::now();
    let port = loop {
        if let Some(port) = address_port(dir).filter(|p| body(*p).as_deref() == Some("start")) {
            break port;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(60),
            "wharf dev did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if body(port).is_none() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut took = Vec::new();
    for i in 0..edits {
        let text = format!("edit {i}");
        let saved = Instant::now();
        std::fs::write(dir.join("web/note.txt"), &text).unwrap();
        while body(port).as_deref() != Some(text.as_str()) {
            assert!(
                saved.elapsed() < Duration::from_secs(30),
                "edit {i} never answered"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(saved.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    wharf(dir, &["down", "--env", "local"]);
    stop_controller(dir);
    took.sort_by(f64::total_cmp);
    println!("| edits | p50 | p95 | p99 | max | requests sent | failed |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {edits} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} | {} |",
        percentile(&took, 50.0),
        percentile(&took, 95.0),
        percentile(&took, 99.0),
        took.last().copied().unwrap_or_default(),
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}
