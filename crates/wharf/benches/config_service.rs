//! Configuration service: reads over HTTP (keep-alive, 64 connections) against etcd's
//! range reads in the same run, and one change notified to 1,000 long-polling watchers.
//!
//! Run with `./scripts/bench-config` (it installs `wrk` and Debian's `etcd-server` when
//! missing), or `cargo bench -p wharf --bench config_service` when both are there.
//! WHARF_BENCH_SECONDS sets each read run's length (default 10), WHARF_BENCH_WATCHERS the
//! number of watchers (default 1000), WHARF_BENCH_ROUNDS the changes (default 5).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{p50_p99, stop_controller, wharf};

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
services:
  reader:
    build: ./reader
    run: ["sh", "run.sh"]
    on_change: reload
    reload_signal: WINCH
    config: { GREETING: hello, LIMIT: "10" }
environments:
  bench: {}
"#;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Requests/s, p50 and p99 (ms) of a wrk run.
struct WrkRun {
    rate: f64,
    p50: f64,
    p99: f64,
}

fn wrk(seconds: u64, args: &[&str]) -> WrkRun {
    let out = Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{seconds}s"), "--latency"])
        .args(args)
        .output()
        .expect("wrk runs (./scripts/bench-config installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> String {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{text}"))
            .to_owned()
    };
    if text.contains("Non-2xx") {
        panic!("some reads failed:\n{text}");
    }
    WrkRun {
        rate: field("Requests/sec:").parse().unwrap(),
        p50: millis(&field("50%")),
        p99: millis(&field("99%")),
    }
}

/// wrk's `123.45us`, `1.20ms`, `2.00s` in milliseconds.
fn millis(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap() * factor
}

/// The configuration URL and token an instance of `reader` was given.
fn instance_credentials(dir: &Path) -> (String, String) {
    let status: serde_json::Value =
        serde_json::from_str(&wharf(dir, &["status", "--env", "bench", "-o", "json"])).unwrap();
    let pid = status["services"][0]["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let var = |name: &str| {
        environ
            .split('\0')
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    (var("WHARF_CONFIG_URL"), var("WHARF_CONFIG_TOKEN"))
}

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(dir: &Path) -> (Etcd, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd runs (./scripts/bench-config installs etcd-server)");
    let etcd = Etcd(child);
    let http = reqwest::blocking::Client::new();
    let begun = Instant::now();
    loop {
        let put = http
            .post(format!("{url}/v3/kv/put"))
            // key "reader/bench", value: the same configuration as JSON.
            .body(r#"{"key":"cmVhZGVyL2JlbmNo","value":"eyJHUkVFVElORyI6ImhlbGxvIiwiTElNSVQiOiIxMCJ9"}"#)
            .send();
        if put.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(20),
            "etcd did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (etcd, url)
}

/// One change to the configuration, timed until every watcher has its answer.
async fn notify_round(
    watchers: usize,
    url: &str,
    token: &str,
    api: &str,
    revision: i64,
) -> Vec<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(watchers + 8)
        .build()
        .unwrap();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    let start = std::sync::Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        let (ready, start) = (ready_tx.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let request = client
                .get(format!("{url}&wait={revision}&timeout=60"))
                .bearer_auth(token)
                .send();
            let _ = ready.send(()).await;
            let answer = request.await.unwrap();
            let seen = answer.headers()["x-wharf-revision"]
                .to_str()
                .unwrap()
                .parse::<i64>()
                .unwrap();
            let _ = answer.bytes().await;
            let at = Instant::now();
            assert!(seen > revision, "a watcher was answered without a change");
            at.duration_since(*start.get().expect("answered before the change"))
                .as_secs_f64()
                * 1000.0
        }));
    }
    for _ in 0..watchers {
        ready_rx.recv().await;
    }
    // Every request is in flight; give the controller a moment to hold them all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = start.set(Instant::now());
    let change =
        serde_json::json!({ "set": { "LIMIT": format!("{}", revision + 100) }, "user": "bench" });
    let response = client
        .post(format!("{api}/v1/config/bench/reader"))
        .json(&change)
        .send()
        .await
        .unwrap();
    let _ = response.bytes().await;
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    latencies
}

fn main() {
    let seconds = env_number("WHARF_BENCH_SECONDS", 10);
    let watchers = env_number("WHARF_BENCH_WATCHERS", 1000) as usize;
    let rounds = env_number("WHARF_BENCH_ROUNDS", 5);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wharf.yaml"), DEFINITION).unwrap();
    std::fs::create_dir_all(dir.path().join("reader")).unwrap();
    std::fs::write(dir.path().join("reader/run.sh"), "exec sleep 100000\n").unwrap();
    wharf(
        dir.path(),
        &["deploy", "reader", "--env", "bench", "--version", "v1"],
    );
    wharf(
        dir.path(),
        &["config", "set", "reader", "--env", "bench", "LIMIT=20"],
    );
    let (url, token) = instance_credentials(dir.path());
    let api = url.split("/v1/").next().unwrap().to_owned();

    // Reads: wharf, then etcd (linearizable, its default, and serializable), same tool.
    let auth = format!("Authorization: Bearer {token}");
    let wharf_reads = wrk(seconds, &["-H", &auth, &url]);
    let (_etcd, etcd_url) = start_etcd(dir.path());
    let lua = |body: &str| {
        let path = dir.path().join(format!("range-{}.lua", body.len()));
        std::fs::write(
            &path,
            format!("wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
        )
        .unwrap();
        path
    };
    let linearizable = lua(r#"{"key":"cmVhZGVyL2JlbmNo"}"#);
    let serializable = lua(r#"{"key":"cmVhZGVyL2JlbmNo","serializable":true}"#);
    let range = format!("{etcd_url}/v3/kv/range");
    let etcd_linear = wrk(seconds, &["-s", linearizable.to_str().unwrap(), &range]);
    let etcd_serial = wrk(seconds, &["-s", serializable.to_str().unwrap(), &range]);
    drop(_etcd);

    // Watchers: one change, every watcher answered.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let current: i64 = {
            let http = reqwest::blocking::Client::new();
            let answer = http.get(&url).bearer_auth(&token).send().unwrap();
            answer.headers()["x-wharf-revision"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        };
        latencies.extend(runtime.block_on(notify_round(watchers, &url, &token, &api, current)));
    }
    let (n50, n99) = p50_p99(latencies.clone());

    println!(
        "configuration reads, keep-alive, 64 connections, {seconds}s each (wrk -t1 -c64: one load-generating thread, one core left to the server):"
    );
    println!("| server | reads/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, run) in [
        ("wharf `GET /v1/runtime/config`", &wharf_reads),
        ("etcd range (linearizable, default)", &etcd_linear),
        ("etcd range (serializable)", &etcd_serial),
    ] {
        println!(
            "| {name} | {:.0} | {:.3} ms | {:.3} ms |",
            run.rate, run.p50, run.p99
        );
    }
    println!(
        "ratio wharf/etcd: {:.2}x (linearizable), {:.2}x (serializable)",
        wharf_reads.rate / etcd_linear.rate,
        wharf_reads.rate / etcd_serial.rate
    );
    println!(
        "one change to {watchers} watchers, {rounds} rounds ({} answers): p50 {n50:.1} ms, p99 {n99:.1} ms",
        latencies.len()
    );
    wharf(dir.path(), &["down", "--env", "bench"]);
    stop_controller(dir.path());
}
