//! Blue-green and canary rollouts behind a service's address: previews, promotion,
//! abort, automatic abort on the proxies' measures, and a controller restart mid-step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

const BLUE_GREEN: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health, interval: 100ms }
    rollout: { strategy: blue-green, scale_down_delay: 1h }
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 2 }]
"#;

/// What a client loop saw: requests sent, failures, and answers by version.
#[derive(Default)]
struct Seen {
    sent: usize,
    failed: Vec<String>,
    versions: std::collections::BTreeMap<String, usize>,
}

/// A client sending GET `url` in a loop (with `headers`) until stopped.
struct Client {
    running: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: std::thread::JoinHandle<()>,
}

impl Client {
    fn start(url: &str, headers: &[(&'static str, &'static str)]) -> Client {
        let running = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (r, s, url) = (running.clone(), seen.clone(), url.to_owned());
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .default_headers(map)
                .build()
                .unwrap();
            while r.load(Ordering::Relaxed) {
                let answer = http.get(&url).send();
                let mut seen = s.lock().unwrap();
                seen.sent += 1;
                match answer {
                    Ok(a) if a.status().is_success() => {
                        let body: serde_json::Value = a.json().unwrap_or_default();
                        let v = body["version"].as_str().unwrap_or("?").to_owned();
                        *seen.versions.entry(v).or_default() += 1;
                    }
                    Ok(a) => seen.failed.push(format!("{}", a.status())),
                    Err(e) => seen.failed.push(e.to_string()),
                }
            }
        });
        Client {
            running,
            seen,
            thread,
        }
    }

    /// How many answers came from `version` so far.
    fn answered_by(&self, version: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .versions
            .get(version)
            .copied()
            .unwrap_or(0)
    }

    fn stop(self) -> Seen {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen)
            .ok()
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

fn version_at(url: &str) -> Option<String> {
    let body: serde_json::Value = reqwest::blocking::get(url).ok()?.json().ok()?;
    body["version"].as_str().map(str::to_owned)
}

/// The versions of the service's instances, sorted.
fn versions(p: &mut Project) -> Vec<String> {
    let mut all: Vec<String> = p
        .instances("web", "ci")
        .iter()
        .map(|i| i["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    all.sort();
    all
}

#[test]
#[allow(clippy::print_stderr)]
fn blue_green_previews_promotes_and_aborts_failing_no_request() {
    let mut p = Project::alone(BLUE_GREEN, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let address = p.address("web", "ci");
    let client = Client::start(&address, &[]);
    assert!(wait_until(Duration::from_secs(10), || client
        .answered_by("v1")
        > 10));

    let out = p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
    assert!(stderr(&out).contains("preview address"), "{}", text(&out));
    let status = p.json(&["rollout", "status", "web", "--env", "ci"]);
    assert_eq!(status["phase"], "paused", "{status}");
    assert_eq!(status["weight"], 0);
    let preview = format!("http://{}/", status["preview"].as_str().unwrap());
    assert_eq!(
        version_at(&preview).as_deref(),
        Some("v2"),
        "the preview is the new set"
    );
    assert_eq!(versions(&mut p), ["v1", "v1", "v2", "v2"], "both sets run");
    let before = client.answered_by("v2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        client.answered_by("v2"),
        before,
        "no main traffic before promotion"
    );
    assert_eq!(before, 0);
    let pinned: serde_json::Value = reqwest::blocking::Client::new()
        .get(&address)
        .header("x-wharf-canary", "always")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        pinned["version"], "v1",
        "no pin reaches an unpromoted blue-green set"
    ); // A second deploy meanwhile is refused: the rollout holds the service.
    let refused = p.wharf(&["deploy", "web", "--env", "ci", "--version", "v3"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));

    let out = p.ok(&["rollout", "promote", "web", "--env", "ci"]);
    assert!(stderr(&out).contains("promoted"), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(5), || version_at(&address)
        .as_deref()
        == Some("v2")));
    let after_promotion = client.answered_by("v2");
    assert!(wait_until(Duration::from_secs(5), || client
        .answered_by("v2")
        > after_promotion + 10));
    assert_eq!(
        versions(&mut p).len(),
        4,
        "the old set waits for the scale-down delay"
    );

    let out = p.ok(&["rollout", "abort", "web", "--env", "ci"]);
    assert!(stderr(&out).contains("aborted"), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(5), || version_at(&address)
        .as_deref()
        == Some("v1")));
    assert!(wait_until(Duration::from_secs(15), || versions(&mut p) == ["v1", "v1"]));
    let status = p.json(&["rollout", "status", "web", "--env", "ci"]);
    assert_eq!(status["phase"], "aborted", "{status}");
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    let refused = p.wharf(&["rollout", "promote", "web", "--env", "ci"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        stderr(&refused).contains("already aborted"),
        "{}",
        text(&refused)
    );

    // Promoted in full, the old set goes at once.
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v3"]);
    p.ok(&["rollout", "promote", "web", "--env", "ci", "--full"]);
    assert!(wait_until(Duration::from_secs(15), || versions(&mut p) == ["v3", "v3"]));
    assert_eq!(
        p.json(&["history", "web", "--env", "ci"])[0]["state"],
        "succeeded"
    );
    assert!(wait_until(Duration::from_secs(5), || client
        .answered_by("v3")
        > 10));

    let seen = client.stop();
    eprintln!(
        "{} requests through the address during a blue-green promote, abort and full promote; {} failed",
        seen.sent,
        seen.failed.len()
    );
    assert!(
        seen.failed.is_empty(),
        "of {}: {:?}",
        seen.sent,
        seen.failed
    );
}

const CANARY: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health, interval: 100ms }
    rollout:
      strategy: canary
      steps: [{ weight: 50, pause: 10m }, { weight: 100 }]
      analysis: { max_error_increase: 5%, min_requests: 20 }
environments:
  ci:
    nodes:
      - name: local
        services: [web]
"#;

/// The app, answering 500 to everything but its health check: it passes its checks
/// and fails its users, as a bad release does.
const FAILING_APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 500
        body = b"ok" if code == 200 else b"broken"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
#[allow(clippy::print_stderr)]
fn a_canary_answering_500_is_aborted_while_clients_pinned_to_stable_see_no_failure() {
    let mut p = Project::alone(CANARY, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let address = p.address("web", "ci");
    let pinned = Client::start(&address, &[("x-wharf-canary", "never")]);
    let anyone = Client::start(&address, &[]);
    p.write("web/app.py", FAILING_APP);
    let out = p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
    assert!(stderr(&out).contains("50%"), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(30), || p
            .json(&["rollout", "status", "web", "--env", "ci"])["phase"]
            == "aborted"),
        "the analysis aborts it"
    );
    let status = p.json(&["rollout", "status", "web", "--env", "ci"]);
    let said: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"].as_str())
        .collect();
    assert!(
        said.iter()
            .any(|w| w.contains("aborted by its analysis") && w.contains("5xx")),
        "{said:?}"
    );
    assert!(wait_until(Duration::from_secs(15), || versions(&mut p) == ["v1"]));
    let (pinned, anyone) = (pinned.stop(), anyone.stop());
    eprintln!(
        "canary answering 500: pinned-to-stable clients {} failed of {}; others {} failed of {} until the abort",
        pinned.failed.len(),
        pinned.sent,
        anyone.failed.len(),
        anyone.sent
    );
    assert!(pinned.failed.is_empty(), "{:?}", pinned.failed);
    assert!(pinned.sent > 20);
    assert!(
        !anyone.failed.is_empty(),
        "unpinned clients reached the canary"
    );
    assert_eq!(
        p.json(&["history", "web", "--env", "ci"])[0]["state"],
        "rolled_back"
    );
}

#[test]
fn a_canary_goes_on_from_its_step_after_a_controller_restart_and_pins_by_cookie() {
    let mut p = Project::alone(CANARY, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let address = p.address("web", "ci");
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v2"]);
    let http = reqwest::blocking::Client::new();
    let pinned_to = |cookie: &str| -> Option<String> {
        let body: serde_json::Value = http
            .get(&address)
            .header("cookie", format!("a=b; wharf_canary={cookie}"))
            .send()
            .ok()?
            .json()
            .ok()?;
        body["version"].as_str().map(str::to_owned)
    };
    assert!((0..10).all(|_| pinned_to("always").as_deref() == Some("v2")));
    assert!((0..10).all(|_| pinned_to("never").as_deref() == Some("v1")));

    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    let status = p.json(&["rollout", "status", "web", "--env", "ci"]);
    assert_eq!(status["phase"], "paused", "{status}");
    assert_eq!(
        (status["step"].as_u64(), status["weight"].as_u64()),
        (Some(1), Some(50))
    );
    let after: Vec<Option<String>> = (0..10).map(|_| pinned_to("always")).collect();
    assert!(
        after.iter().all(|v| v.as_deref() == Some("v2")),
        "the split is back: {after:?}"
    );
    assert!((0..10).all(|_| pinned_to("never").as_deref() == Some("v1")));
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(
        history[0]["state"], "in_progress",
        "not taken for an interrupted deploy: {history}"
    );

    let out = p.ok(&["rollout", "promote", "web", "--env", "ci"]);
    assert!(stderr(&out).contains("step 2: 100%"), "{}", text(&out));
    p.ok(&["rollout", "promote", "web", "--env", "ci"]);
    assert!(wait_until(Duration::from_secs(15), || versions(&mut p) == ["v2"]));
    assert!(wait_until(Duration::from_secs(5), || p
        .json(&["rollout", "status", "web", "--env", "ci"])["phase"]
        == "succeeded"));
    assert_eq!(
        p.json(&["history", "web", "--env", "ci"])[0]["state"],
        "succeeded"
    );
}
