//! Throughput and latency under load: wrk against one backend (1 KiB answers) straight,
//! through a service address of wharf's proxy running on one core, and through Debian's
//! nginx as a reverse proxy (one worker, keep-alive upstream), in the same run and with
//! the same load generator, rounds interleaved. The load generator runs on CPU 0; the
//! backend and the proxy under test (either) share CPU 1, so both proxies get exactly
//! one core, the same one, and neither competes with wrk.
//!
//! Run with `cargo bench -p wharf-proxy --bench versus_nginx` (needs `nginx` and `wrk`:
//! `apt-get install nginx wrk`). WHARF_BENCH_SECONDS per measurement (default 5),
//! WHARF_BENCH_ROUNDS (default 3), WHARF_BENCH_CONNECTIONS (default 50).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_proxy::{Route, serve_http};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_listener() -> StdListener {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The CPU the servers run on; wrk gets [`LOAD_CPU`].
const SERVER_CPU: usize = 1;
const LOAD_CPU: usize = 0;

/// Runs `serve` on a thread of its own with a single-threaded runtime, on
/// [`SERVER_CPU`].
fn on_one_core<F>(serve: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        let mut set = nix::sched::CpuSet::new();
        if set.set(SERVER_CPU).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve());
    });
}

fn backend() -> SocketAddr {
    let listener = free_listener();
    let addr = listener.local_addr().unwrap();
    // Made into a tokio listener inside the runtime (`from_std` needs its reactor).
    on_one_core(move || async move {
        common::serve_kib(tokio::net::TcpListener::from_std(listener).unwrap()).await
    });
    addr
}

fn wharf_proxy(backend: SocketAddr) -> SocketAddr {
    let listener = free_listener();
    let addr = listener.local_addr().unwrap();
    on_one_core(move || async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        serve_http(
            listener,
            Arc::new(Route::new(&[backend])),
            CancellationToken::new(),
            "bench".into(),
        )
        .await;
    });
    addr
}

/// nginx with one worker in front of `backend`; killed when the guard drops, and its
/// folder removed.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(backend: SocketAddr) -> (SocketAddr, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_listener().local_addr().unwrap().port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
           fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
           upstream backend {{ server {backend}; keepalive 128; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
               proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_buffering on;\n    }}\n  }}\n}}\n",
        dir = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("taskset")
        .args(["-c", &SERVER_CPU.to_string(), "nginx", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (addr, Nginx { child, _dir: dir })
}

/// What wrk measured: requests per second, p50 and p99 latency in microseconds.
#[derive(Clone, Copy)]
struct Measured {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn wrk(addr: SocketAddr, seconds: u64, connections: u64) -> Measured {
    let out = Command::new("taskset")
        .args([
            "-c",
            &LOAD_CPU.to_string(),
            "wrk",
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let micros = |v: &str| -> f64 {
        let (number, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
        let n: f64 = number.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => f64::NAN,
        }
    };
    let errors = text
        .lines()
        .any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if errors {
        eprintln!("wrk saw errors against {addr}:\n{text}");
    }
    Measured {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_us: field("50%").map(micros).unwrap_or(f64::NAN),
        p99_us: field("99%").map(micros).unwrap_or(f64::NAN),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    for tool in ["nginx", "wrk", "taskset"] {
        if Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!(
                "skipping: this benchmark needs `{tool}` (apt-get install nginx wrk util-linux)"
            );
            return;
        }
    }
    let seconds = env("WHARF_BENCH_SECONDS", 5);
    let rounds = env("WHARF_BENCH_ROUNDS", 3);
    let connections = env("WHARF_BENCH_CONNECTIONS", 50);
    let backend = backend();
    let wharf = wharf_proxy(backend);
    let (nginx_addr, _nginx) = nginx(backend);
    // WHARF_BENCH_ONLY=wharf (or nginx, direct) measures one path, e.g. under perf.
    let only = std::env::var("WHARF_BENCH_ONLY").unwrap_or_default();
    let targets: Vec<(&str, SocketAddr)> = [
        ("direct to the backend", backend),
        ("wharf-proxy (1 core)", wharf),
        ("nginx (1 worker)", nginx_addr),
    ]
    .into_iter()
    .filter(|(name, _)| name.contains(only.as_str()))
    .collect();
    // Warm-up: pools filled, nginx's upstream keep-alive connections open.
    for (_, addr) in &targets {
        wrk(*addr, 1, connections);
    }
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, (_, addr)) in targets.iter().enumerate() {
            results[i].push(wrk(*addr, seconds, connections));
        }
    }
    println!(
        "wrk -t1 -c{connections} -d{seconds}s on CPU {LOAD_CPU}, backend and proxy on CPU {SERVER_CPU}, 1 KiB answers, median of {rounds} interleaved rounds"
    );
    println!("| path | req/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for ((name, _), runs) in targets.iter().zip(&results) {
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs |",
            median(runs.iter().map(|m| m.rps).collect()),
            median(runs.iter().map(|m| m.p50_us).collect()),
            median(runs.iter().map(|m| m.p99_us).collect()),
        );
    }
}
