//! One stable address per service: balanced over its healthy instances, and rolling
//! deploys behind it fail no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;

const WEB: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health, interval: 100ms }
  front:
    build: ./front
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    config:
      PEER_URL: "{{ services.web.url }}"
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 3 }, front]
"#;

#[test]
#[allow(clippy::print_stderr)]
fn rolling_deploys_behind_the_service_address_fail_no_request() {
    let mut p = Project::alone(WEB, &["web", "front"]);
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    let web = p.address("web", "ci");
    // Peers are given the address, not one instance.
    let front = p.port("front", "ci", 0);
    assert_eq!(get_json(front)["peer"], web.as_str());
    let table = stdout(&p.ok(&["status", "--env", "ci"]));
    assert!(table.contains(&format!("web (ci): {web}/")), "{table}");

    let load = Load::start(&web, &["/"], Duration::from_secs(5));
    for version in ["v2", "v3", "v4"] {
        p.ok(&["deploy", "web", "--env", "ci", "--version", version]);
    }
    let (sent, failed, seen) = load.stop();
    eprintln!(
        "{sent} requests through the address during 3 rolling deploys, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "of {sent} requests: {failed:?}");
    assert!(sent > 100, "the load ran: {sent}");
    assert!(seen.contains("v4"), "traffic reached the new version");
}

/// A service that owns a fixed port: a new instance cannot start beside the old one.
const SOLO: &str = r#"
services:
  solo:
    build: ./solo
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: FIXED
    health: { http: /health, interval: 100ms }
environments:
  ci: {}
"#;

#[test]
#[allow(clippy::print_stderr)]
fn a_fixed_port_instance_replaced_in_place_makes_requests_wait_not_fail() {
    let fixed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = Project::alone(&SOLO.replace("FIXED", &fixed.to_string()), &["solo"]);
    p.ok(&["deploy", "solo", "--env", "ci", "--version", "v1"]);
    let url = p.address("solo", "ci");
    let load = Load::start(&url, &["/"], Duration::from_secs(15));
    assert!(wait_until(Duration::from_secs(10), || load
        .sent
        .load(Ordering::Relaxed)
        > 20));
    for version in ["v2", "v3"] {
        let out = p.ok(&["deploy", "solo", "--env", "ci", "--version", version]);
        assert!(
            stderr(&out).contains("replacing"),
            "replaced in place: {}",
            text(&out)
        );
    }
    assert_eq!(p.port("solo", "ci", 0), fixed, "it keeps its own port");
    let after = load.sent.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || load
        .sent
        .load(Ordering::Relaxed)
        > after + 20));
    let (sent, failed, _) = load.stop();
    eprintln!(
        "{sent} requests through a 1-instance service's address during 2 deploys, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "of {sent} requests: {failed:?}");
}

/// An app whose `/slow` answers after a second, so rollouts meet requests in flight.
pub(crate) const SLOW_APP: &str = r#"
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(1)
        body = b"ok" if self.path == "/health" else json.dumps({
            "version": os.environ.get("WHARF_VERSION"),
            "instance": os.environ.get("WHARF_INSTANCE"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

const PAIR: &str = r#"
services:
  pair:
    build: ./pair
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health, interval: 100ms }
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: pair, instances: 2 }]
"#;

/// Clients sending requests in a loop until stopped: (sent, failed, versions seen).
struct Load {
    running: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    seen: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// One client per path, each with `timeout` per request.
    fn start(url: &str, paths: &[&'static str], timeout: Duration) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let threads = paths
            .iter()
            .map(|path| {
                let (running, sent, failed, seen) =
                    (running.clone(), sent.clone(), failed.clone(), seen.clone());
                let url = format!("{url}{path}");
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(timeout)
                        .build()
                        .unwrap();
                    while running.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match http.get(&url).send() {
                            Ok(r) if r.status().is_success() => {
                                let body: serde_json::Value = r.json().unwrap_or_default();
                                if let Some(v) = body["version"].as_str() {
                                    seen.lock().unwrap().insert(v.to_owned());
                                }
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().unwrap_or_default();
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{url}: {status}: {body}"));
                            }
                            Err(e) => failed.lock().unwrap().push(format!("{url}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            running,
            sent,
            failed,
            seen,
            threads,
        }
    }

    fn stop(self) -> (usize, Vec<String>, std::collections::BTreeSet<String>) {
        self.running.store(false, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        let seen = self.seen.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failed, seen)
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn twenty_surged_rollouts_under_load_with_slow_requests_fail_none() {
    let mut p = Project::alone(PAIR, &[]);
    p.write("pair/app.py", SLOW_APP);
    p.ok(&["deploy", "pair", "--env", "ci", "--version", "v0"]);
    let url = p.address("pair", "ci");
    let load = Load::start(
        &url,
        &["/", "/", "/", "/slow", "/slow"],
        Duration::from_secs(20),
    );
    assert!(wait_until(Duration::from_secs(10), || load
        .sent
        .load(Ordering::Relaxed)
        > 20));
    let mut numbers = std::collections::BTreeSet::new();
    for n in 1..=20 {
        let version = format!("v{n}");
        let out = p.ok(&["deploy", "pair", "--env", "ci", "--version", &version]);
        let err = stderr(&out);
        assert!(
            err.contains("beside instance") && err.contains("draining"),
            "each new instance starts beside the old one, which then drains: {err}"
        );
        assert!(
            err.contains(&format!(
                "pair: 50% on {version} (1 of 2 instances in the rotation)"
            )) && err.contains(&format!("pair: 100% on {version}")),
            "the deploy shows traffic moving: {err}"
        );
        for i in p.instances("pair", "ci") {
            numbers.insert(i["instance"].as_u64().unwrap());
        }
    }
    let (sent, failed, seen) = load.stop();
    eprintln!(
        "{sent} requests (2 of 5 clients asking for 1 s answers) through a 2-instance service's address during 20 surged rollouts, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "of {sent}: {failed:?}");
    assert!(seen.contains("v20"), "traffic reached the last version");
    let instances = p.instances("pair", "ci");
    assert_eq!(
        instances.len(),
        2,
        "the old instances are gone: {instances:?}"
    );
    assert!(
        numbers.len() <= 4,
        "rollouts alternate between two sets of numbers: {numbers:?}"
    );
    let history = p.json(&["history", "pair", "--env", "ci"]);
    assert_eq!(history.as_array().unwrap().len(), 21);
}

#[test]
#[allow(clippy::print_stderr)]
fn a_killed_instance_leaves_the_rotation_failing_only_what_it_had_in_flight() {
    let mut p = Project::alone(PAIR, &[]);
    p.write("pair/app.py", SLOW_APP);
    p.ok(&["deploy", "pair", "--env", "ci", "--version", "v1"]);
    let url = p.address("pair", "ci");
    let clients = ["/", "/", "/", "/"];
    let load = Load::start(&url, &clients, Duration::from_secs(20));
    assert!(wait_until(Duration::from_secs(10), || load
        .sent
        .load(Ordering::Relaxed)
        > 50));
    let victim = p.instances("pair", "ci")[0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let at_kill = load.sent.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || load
        .sent
        .load(Ordering::Relaxed)
        > at_kill + 500));
    let (sent, failed, _) = load.stop();
    eprintln!(
        "SIGKILL of 1 of 2 instances under {} clients: {} of {sent} requests failed",
        clients.len(),
        failed.len()
    );
    assert!(
        failed.len() <= clients.len(),
        "at most the requests in flight on it fail (one per client): {failed:?}"
    );
}

/// Healthy while the file its instance number names does not exist.
const MOODY_APP: &str = r#"
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SICK = os.path.join(os.environ["SICK_DIR"], "sick-" + os.environ["WHARF_INSTANCE"])

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = self.path == "/health" and os.path.exists(SICK)
        body = json.dumps({"instance": os.environ["WHARF_INSTANCE"]}).encode()
        self.send_response(500 if sick else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn an_instance_failing_its_checks_leaves_the_rotation_and_rejoins_when_healthy() {
    let flags = tempfile::tempdir().unwrap();
    let definition = PAIR.replace(
        "    health: { http: /health, interval: 100ms }\n",
        &format!(
            "    health: {{ http: /health, interval: 250ms }}\n    config: {{ SICK_DIR: {} }}\n",
            flags.path().display()
        ),
    );
    let mut p = Project::alone(&definition, &[]);
    p.write("pair/app.py", MOODY_APP);
    p.ok(&["deploy", "pair", "--env", "ci", "--version", "v1"]);
    let port = p.address_port("pair", "ci");
    let numbers: Vec<String> = p
        .instances("pair", "ci")
        .iter()
        .map(|i| i["instance"].to_string())
        .collect();
    let answered = || -> std::collections::BTreeSet<String> {
        (0..40)
            .map(|_| get_json(port)["instance"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(answered().len(), 2, "both instances serve");

    std::fs::write(flags.path().join(format!("sick-{}", numbers[0])), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || answered()
            == std::collections::BTreeSet::from([numbers[1].clone()])),
        "the failing instance leaves the rotation"
    );
    let sick = p.instances("pair", "ci");
    assert!(
        sick.iter().any(|i| i["health"] == "unhealthy"),
        "status shows it: {sick:?}"
    );
    std::fs::remove_file(flags.path().join(format!("sick-{}", numbers[0]))).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || answered().len() == 2),
        "it rejoins once its checks pass again"
    );
}

#[test]
fn the_addresses_count_requests_per_service_and_instance_for_metrics_and_top() {
    let mut p = Project::alone(PAIR, &["pair"]);
    p.ok(&["deploy", "pair", "--env", "ci", "--version", "v1"]);
    let url = p.address("pair", "ci");
    let http = reqwest::blocking::Client::new();
    for _ in 0..200 {
        assert!(http.get(&url).send().unwrap().status().is_success());
    }
    let metrics = p
        .http()
        .get(format!("{}/metrics", p.controller_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |line_start: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    assert_eq!(
        value("wharf_service_requests_total{env=\"ci\",service=\"pair\"}"),
        vec![200.0],
        "{metrics}"
    );
    let per_instance = value("wharf_instance_requests_total{env=\"ci\",service=\"pair\"");
    assert_eq!(per_instance.len(), 2, "{metrics}");
    assert_eq!(per_instance.iter().sum::<f64>(), 200.0);
    assert!(
        per_instance.iter().all(|n| *n > 40.0),
        "balanced: {per_instance:?}"
    );
    assert_eq!(
        value("wharf_service_request_duration_seconds_count{env=\"ci\",service=\"pair\"}"),
        vec![200.0]
    );
    assert_eq!(
        value("wharf_service_request_errors_total{env=\"ci\",service=\"pair\"}"),
        vec![0.0]
    );
    // `wharf top` shows the rate while requests flow.
    let load = Load::start(&url, &["/", "/"], Duration::from_secs(10));
    let top = p.json(&["top", "--env", "ci", "-n", "1"]);
    load.stop();
    let service = &top["traffic"]["services"][0];
    assert_eq!(service["service"], "pair", "{top}");
    assert!(
        service["requests_per_second"].as_f64().unwrap() > 10.0,
        "{top}"
    );
    assert_eq!(top["traffic"]["instances"].as_array().unwrap().len(), 2);
}

/// One GET on 127.0.0.1:`port`, a connection of its own: Ok if it answered 200.
fn get_once(port: u16, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: pair\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    match answer.lines().next() {
        Some(line) if line.starts_with("HTTP/1.1 200") => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn a_controller_restart_refuses_no_connection_to_the_addresses() {
    let mut p = Project::alone(PAIR, &["pair"]);
    p.ok(&["deploy", "pair", "--env", "ci", "--version", "v1"]);
    let port = p.address_port("pair", "ci");
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let running = running.clone();
            std::thread::spawn(move || {
                let (mut sent, mut failed) = (0, Vec::new());
                while running.load(Ordering::Relaxed) {
                    sent += 1;
                    if let Err(e) = get_once(port, Duration::from_secs(30)) {
                        failed.push(e);
                    }
                }
                (sent, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let controller = p.controller_pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(controller),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(wait_until(Duration::from_secs(10), || !alive(controller)));
        // Down for a moment: connections wait in the held socket meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        p.ok(&["status", "--env", "ci"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    let (mut sent, mut failed) = (0, Vec::new());
    for c in clients {
        let (s, f) = c.join().unwrap();
        sent += s;
        failed.extend(f);
    }
    eprintln!(
        "{sent} requests, each on a connection of its own, across 2 controller restarts: {} failed",
        failed.len()
    );
    assert!(sent > 30, "{sent}");
    assert!(failed.is_empty(), "of {sent}: {failed:?}");
}

/// The app with a websocket at `/ws`: after the handshake it sends a text frame every
/// 50 ms, and answers a close with a close.
const WEBSOCKET_APP: &str = r#"
import base64, hashlib, os, struct, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path != "/ws":
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        closed = threading.Event()
        def reader():
            try:
                while True:
                    head = self.rfile.read(2)
                    if len(head) < 2:
                        break
                    n = head[1] & 0x7F
                    if n == 126:
                        n = struct.unpack(">H", self.rfile.read(2))[0]
                    elif n == 127:
                        n = struct.unpack(">Q", self.rfile.read(8))[0]
                    self.rfile.read(4 + n)
                    if head[0] & 0x0F == 8:
                        break
            finally:
                closed.set()
        threading.Thread(target=reader, daemon=True).start()
        version = os.environ.get("WHARF_VERSION", "").encode()
        try:
            while not closed.is_set():
                self.wfile.write(bytes([0x81, len(version)]) + version)
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(bytes([0x88, 0x02, 0x03, 0xE8]))
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// One websocket session through `addr`: frames read until the server closes it. Ok
/// with the number of frames when it ended by a close frame; Err when it was cut.
fn websocket_session(addr: &str) -> Result<usize, String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(90)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte)
            .map_err(|e| format!("handshake: {e}"))?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(String::from_utf8_lossy(&head).into_owned());
    }
    let mut frames = 0;
    loop {
        let mut header = [0u8; 2];
        tcp.read_exact(&mut header)
            .map_err(|e| format!("cut after {frames} frames: {e}"))?;
        let mut payload = vec![0u8; usize::from(header[1] & 0x7F)];
        tcp.read_exact(&mut payload)
            .map_err(|e| format!("cut in a frame: {e}"))?;
        if header[0] & 0x0F == 8 {
            // Answer the close, as a client does.
            let _ = tcp.write_all(&[0x88, 0x80, 0, 0, 0, 0]);
            return Ok(frames);
        }
        frames += 1;
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn long_lived_websockets_are_closed_cleanly_when_their_instance_is_drained() {
    let definition = WEB.replace(
        "    health: { http: /health, interval: 100ms }\n  front:",
        "    health: { http: /health, interval: 100ms }\n    rollout: { drain_timeout: 2m }\n  front:",
    );
    let mut p = Project::alone(&definition, &["web", "front"]);
    p.write("web/app.py", WEBSOCKET_APP);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let addr = p
        .address("web", "ci")
        .trim_start_matches("http://")
        .to_owned();
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (running, addr) = (running.clone(), addr.clone());
            std::thread::spawn(move || {
                let (mut closed, mut cut) = (0, Vec::new());
                while running.load(Ordering::Relaxed) {
                    match websocket_session(&addr) {
                        Ok(_) => closed += 1,
                        Err(e) => cut.push(e),
                    }
                }
                (closed, cut)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for version in ["v2", "v3"] {
        p.ok(&["deploy", "web", "--env", "ci", "--version", version]);
    }
    running.store(false, Ordering::Relaxed);
    // The sessions open now end with the next deploy.
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v4"]);
    let (mut closed, mut cut) = (0, Vec::new());
    for c in clients {
        let (n, failed) = c.join().unwrap();
        closed += n;
        cut.extend(failed);
    }
    eprintln!(
        "websockets through the address during 3 rolling deploys: {closed} closed by a close frame, {} cut",
        cut.len()
    );
    assert!(cut.is_empty(), "{cut:?}");
    assert!(
        closed >= 3,
        "every client's socket was closed at least once: {closed}"
    );
}

#[test]
fn a_fixed_port_already_taken_is_refused_at_plan_time_with_its_owner_named() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixed = squatter.local_addr().unwrap().port();
    let definition = SOLO
        .replace("FIXED", &fixed.to_string())
        .replace("  ci: {}\n", "  ci: {}\n  uat: {}\n");
    let mut p = Project::alone(&definition, &["solo"]);
    let out = p.wharf(&["deploy", "solo", "--env", "ci", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("port {fixed}"))
            && said.contains(&format!("pid {}", std::process::id())),
        "the owner is named: {said}"
    );
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(p.instances("solo", "ci").is_empty());
    let dry = p.wharf(&[
        "deploy",
        "solo",
        "--env",
        "ci",
        "--version",
        "v1",
        "--dry-run",
    ]);
    assert_eq!(
        dry.status.code(),
        Some(1),
        "a dry run says so too: {}",
        text(&dry)
    );

    drop(squatter);
    p.ok(&["deploy", "solo", "--env", "ci", "--version", "v1"]);
    let out = p.wharf(&[
        "deploy",
        "solo",
        "--env",
        "uat",
        "--version",
        "v1",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("taken by instance #0 of `solo` in `ci`"),
        "{}",
        text(&out)
    );
    // Its own instance, replaced in place, is no conflict.
    p.ok(&["deploy", "solo", "--env", "ci", "--version", "v2"]);
}
