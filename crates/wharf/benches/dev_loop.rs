//! The dev loop: a file saved to the new code answering HTTP through the service's
//! address, and the requests that failed meanwhile (a load thread sends them back to
//! back the whole time). Two services: a Python one on the process driver, restarted
//! through the traffic switch on every edit (it reads the file at start); and a static
//! site in a container (busybox httpd, `dev: { on_change: sync }`), the file copied
//! into the running container through the Engine API. The container part needs Docker
//! and /bin/busybox (busybox-static), and says so when they are missing.
//!
//! Run with `cargo bench -p wharf --bench dev_loop` (WHARF_BENCH_RUNS sets the number of
//! edits, default 50). Each edit rewrites the file and polls the address every
//! millisecond until the new text answers; the next edit follows.
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

/// One measured loop: the project in `dir` is run by `wharf dev SERVICE`, and
/// `file` (relative to `dir`) edited `edits` times.
struct Loop<'a> {
    dir: &'a Path,
    service: &'a str,
    file: &'a str,
    edits: usize,
}

/// Edit to answer times (ms), requests sent and failed.
fn measure(l: &Loop<'_>) -> (Vec<f64>, u64, u64) {
    let mut dev = Command::new(WHARF)
        .args(["dev", l.service])
        .current_dir(l.dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let begun = Instant::now();
    let port = loop {
        if let Some(port) = address_port(l.dir).filter(|p| body(*p).as_deref() == Some("start")) {
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
    for i in 0..l.edits {
        let text = format!("edit {i}");
        let saved = Instant::now();
        std::fs::write(l.dir.join(l.file), &text).unwrap();
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
    wharf(l.dir, &["down", "--env", "local"]);
    stop_controller(l.dir);
    took.sort_by(f64::total_cmp);
    (
        took,
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}

fn row(what: &str, edits: usize, (took, sent, failed): (Vec<f64>, u64, u64)) {
    println!(
        "| {what} | {edits} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {sent} | {failed} |",
        percentile(&took, 50.0),
        percentile(&took, 95.0),
        percentile(&took, 99.0),
        took.last().copied().unwrap_or_default(),
    );
}

fn python_process(edits: usize) -> (Vec<f64>, u64, u64) {
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
    measure(&Loop {
        dir,
        service: "web",
        file: "web/note.txt",
        edits,
    })
}

fn container_sync(edits: usize) -> Option<(Vec<f64>, u64, u64)> {
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker || !Path::new("/bin/busybox").exists() {
        eprintln!("skipping the container sync: it needs Docker and /bin/busybox (busybox-static)");
        return None;
    }
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir_all(dir.join("site/www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("site/busybox")).unwrap();
    std::fs::write(dir.join("site/www/index.html"), "start").unwrap();
    std::fs::write(
        dir.join("wharf.yaml"),
        "services:\n  site:\n    build: ./site\n    driver: docker\n    run: [./busybox, httpd, -f, -p, \"{{ port }}\", -h, /www]\n    min_healthy_time: 0s\n    port: http\n    health: { http: / }\n    dev: { on_change: sync }\n\
         environments:\n  local: {}\n",
    )
    .unwrap();
    Some(measure(&Loop {
        dir,
        service: "site",
        file: "site/www/index.html",
        edits,
    }))
}

fn main() {
    let edits: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let process = python_process(edits);
    let container = container_sync(edits);
    println!("| service | edits | p50 | p95 | p99 | max | requests sent | failed |");
    println!("|---|---|---|---|---|---|---|---|");
    row("Python, process driver, restart", edits, process);
    if let Some(container) = container {
        row("static site, container, sync", edits, container);
    }
}
