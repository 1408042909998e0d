//! The walking skeleton: build, deploy, upgrade, failed deploy rolled back, history,
//! rollback, stop.

use std::time::Duration;

use crate::harness::*;

const DEFINITION: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { MESSAGE: "from the service", LEVEL: info }
  orders:
    build: ./orders
    run: ["python3", "app.py"]
    port: http
    health: { tcp: true, timeout: 5s }
    config:
      PEER_URL: "{{ services.catalog.url }}"
environments:
  ci:
    config:
      catalog: { MESSAGE: "from ci" }
  uat:
    nodes:
      - name: box
        services: [{ name: catalog, instances: 2 }, orders]
        config:
          catalog: { LEVEL: debug }
    config:
      catalog: { MESSAGE: "from uat" }
"#;

fn project() -> Project {
    Project::new(DEFINITION, &["catalog", "orders"])
}

#[test]
fn build_deploy_upgrade_fail_rollback_and_stop() {
    let mut p = project();
    p.write("catalog/note.txt", "first");
    let out = p.ok(&["build", "catalog", "--version", "v1"]);
    assert!(
        stderr(&out).contains("started a local controller"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("built catalog v1"), "{}", text(&out));

    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    let port = p.port("catalog", "ci", 0);
    let answer = get_json(port);
    assert_eq!(
        answer["message"], "from ci",
        "environment config wins over the service default"
    );
    assert_eq!(answer["level"], "info");
    assert_eq!(answer["note"], "first");
    assert_eq!(answer["version"], "v1");

    // v2 is not built yet: deploy builds it first.
    p.write("catalog/note.txt", "second");
    let out = p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v2"]);
    assert!(stderr(&out).contains("built catalog v2"), "{}", text(&out));
    assert_ne!(
        p.port("catalog", "ci", 0),
        port,
        "v2 started beside v1, on a port of its own"
    );
    // The service's address stays across versions: clients use it.
    let port = p.address_port("catalog", "ci");
    assert_eq!(get_json(port)["note"], "second");

    // A broken v3 fails its health check and is rolled back by itself.
    p.write("catalog/app.py", BROKEN_APP);
    let out = p.wharf(&["deploy", "catalog", "--env", "ci", "--version", "v3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("the previous version was restored"), "{err}");
    assert!(
        err.contains("exited with status 3"),
        "the failed check is named: {err}"
    );
    assert!(
        err.contains("boom: cannot connect to the database"),
        "the instance's last log lines are shown: {err}"
    );
    assert_eq!(get_json(port)["note"], "second", "v2 still answers");

    let history = p.json(&["history", "catalog", "--env", "ci"]);
    let rows: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("v3".into(), "rolled_back".into()),
            ("v2".into(), "succeeded".into()),
            ("v1".into(), "succeeded".into())
        ]
    );
    for d in history.as_array().unwrap() {
        assert!(
            !d["user"].as_str().unwrap().is_empty(),
            "who deployed is recorded"
        );
        assert!(d["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(d["config_digest"].as_str().unwrap().starts_with("sha256:"));
    }

    // Explicit rollback: back to the version before the current one.
    let out = p.ok(&["rollback", "catalog", "--env", "ci"]);
    assert!(stderr(&out).contains("rolled back"), "{}", text(&out));
    assert_eq!(get_json(port)["note"], "first");
    assert_eq!(get_json(port)["version"], "v1");
    p.ok(&["rollback", "catalog", "--env", "ci", "--to", "v2"]);
    assert_eq!(get_json(port)["note"], "second");
    let out = p.wharf(&["rollback", "catalog", "--env", "ci", "--to", "v9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("never ran successfully"),
        "{}",
        text(&out)
    );

    let port = p.port("catalog", "ci", 0);
    p.ok(&["stop", "catalog", "--env", "ci"]);
    assert!(
        wait_until(Duration::from_secs(3), || get(port, "/health").is_none()),
        "the instance is gone"
    );
    assert!(p.instances("catalog", "ci").is_empty());
}

#[test]
fn layered_config_instances_and_peers_in_a_multi_instance_environment() {
    let mut p = project();
    p.ok(&["deploy", "--env", "uat", "--version", "v1"]);
    let instances = p.instances("catalog", "uat");
    assert_eq!(instances.len(), 2);
    let first = get_json(p.port("catalog", "uat", 0));
    let second = get_json(p.port("catalog", "uat", 1));
    assert_eq!(first["message"], "from uat");
    assert_eq!(
        first["level"], "debug",
        "node config wins over the environment's"
    );
    assert_eq!(
        (first["instance"].as_str(), second["instance"].as_str()),
        (Some("0"), Some("1"))
    );
    // Peers are found through config: the service's stable address, which balances
    // over its instances.
    let orders = get_json(p.port("orders", "uat", 0));
    let status = p.json(&["status", "--env", "uat"]);
    let catalog = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "catalog")
        .unwrap()["address"]
        .clone();
    assert_eq!(orders["peer"], catalog, "peers are found through config");
    let through = reqwest::blocking::get(format!("{}/", catalog.as_str().unwrap()))
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(through["message"], "from uat");
}

#[test]
fn the_books_form_deploys_the_same_way() {
    let mut p = project();
    p.ok(&["build", "catalog", "--version", "build-7"]);
    p.ok(&[
        "deploy",
        "artifact=catalog",
        "environment=ci",
        "version=build-7",
    ]);
    assert_eq!(get_json(p.port("catalog", "ci", 0))["version"], "build-7");
}

#[test]
fn deploying_one_service_never_restarts_another() {
    let mut p = project();
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    let orders_pid = p.instances("orders", "ci")[0]["pid"].clone();
    p.write("catalog/note.txt", "changed");
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v2"]);
    assert_eq!(p.instances("orders", "ci")[0]["pid"], orders_pid);
    assert_eq!(p.instances("orders", "ci")[0]["restarts"], 0);
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let mut p = project();
    let out = p.ok(&[
        "deploy",
        "catalog",
        "--env",
        "uat",
        "--version",
        "v1",
        "--dry-run",
    ]);
    let plan = stdout(&out);
    assert!(
        plan.contains("start    catalog #0 on box: v1"),
        "{}",
        text(&out)
    );
    assert!(
        plan.contains("start    catalog #1 on box: v1"),
        "{}",
        text(&out)
    );
    assert!(
        p.json(&["artifacts"]).as_array().unwrap().is_empty(),
        "nothing was registered"
    );
    assert!(
        p.instances("catalog", "uat").is_empty(),
        "nothing was started"
    );
    assert!(
        p.json(&["history", "catalog", "--env", "uat"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_version_never_points_at_two_contents() {
    let mut p = project();
    p.ok(&["build", "catalog", "--version", "v1"]);
    let out = p.ok(&["build", "catalog", "--version", "v1"]);
    assert!(
        stderr(&out).contains("already built (same content)"),
        "{}",
        text(&out)
    );
    p.write("catalog/note.txt", "different");
    let out = p.wharf(&["build", "catalog", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("already exists with digest"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("hint:"), "{}", text(&out));
    let artifacts = p.json(&["artifacts", "catalog"]);
    assert_eq!(artifacts.as_array().unwrap().len(), 1);
}

#[test]
fn an_instance_that_dies_is_restarted_and_the_restart_shows() {
    let mut p = project();
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    let pid = p.instances("catalog", "ci")[0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_until(Duration::from_secs(10), || {
        let i = &p.instances("catalog", "ci")[0];
        i["restarts"] == 1 && i["state"] == "running" && i["pid"].as_i64() != Some(pid as i64)
    });
    assert!(restarted, "{:?}", p.instances("catalog", "ci"));
    let port = p.port("catalog", "ci", 0);
    assert!(wait_until(Duration::from_secs(5), || get(port, "/health").is_some()));
    let table = stdout(&p.ok(&["status", "--env", "ci"]));
    assert!(table.contains("RESTARTS"), "{table}");
}

#[test]
fn logs_show_each_instances_output() {
    let mut p = project();
    p.ok(&["deploy", "catalog", "--env", "uat", "--version", "v1"]);
    let port = p.port("catalog", "uat", 1);
    get(port, "/hello-from-the-test").unwrap();
    let out = p.ok(&["logs", "catalog", "--env", "uat", "--instance", "1"]);
    let log = stdout(&out);
    assert!(log.contains("starting on"), "{log}");
    assert!(wait_until(Duration::from_secs(3), || stdout(&p.ok(&[
        "logs",
        "catalog",
        "--env",
        "uat",
        "--instance",
        "1"
    ]))
    .contains("/hello-from-the-test")));
    let both = stdout(&p.ok(&["logs", "catalog", "--env", "uat"]));
    assert!(
        both.contains("[catalog #0]") && both.contains("[catalog #1]"),
        "{both}"
    );
    let out = p.wharf(&["logs", "catalog", "--env", "uat", "--instance", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn down_stops_every_service_of_an_environment() {
    let mut p = project();
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    let ports = [p.port("catalog", "ci", 0), p.port("orders", "ci", 0)];
    p.ok(&["down", "--env", "ci"]);
    for port in ports {
        assert!(wait_until(Duration::from_secs(3), || get(port, "/health").is_none()));
    }
    let history = p.json(&["history", "orders", "--env", "ci"]);
    assert_eq!(history[0]["kind"], "stop");
}

#[test]
fn logs_follow_streams_new_lines_as_they_are_written() {
    use std::io::{BufRead, BufReader};
    let mut p = project();
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    let port = p.port("catalog", "ci", 0);
    let mut follower = std::process::Command::new(WHARF)
        .args(["logs", "catalog", "--env", "ci", "--follow", "--lines", "1"])
        .current_dir(p.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the one line of the past");
    get(port, "/followed-request").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if line.contains("/followed-request") {
            seen = true;
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(seen, "the new request's log line arrived while following");
}

const CHATTY: &str = r#"
services:
  chatty:
    build: ./chatty
    run: ["python3", "chatty.py"]
    port: http
    health: { tcp: true }
    logs: { max_size: 1Mi, keep: 2 }
environments:
  ci: {}
"#;

/// Listens on its port (for the health check) and writes about 20 MB/s of lines.
const CHATTY_APP: &str = r#"
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(16)
n = 0
while True:
    begun = time.monotonic()
    block = "".join(f"line {n + i} {'x' * 90}\n" for i in range(2000))
    n += 2000
    sys.stdout.write(block); sys.stdout.flush()
    time.sleep(max(0.0, 0.01 - (time.monotonic() - begun)))
"#;

#[test]
fn logs_written_at_20_mb_per_second_never_pass_the_size_limit() {
    let mut p = Project::new(CHATTY, &[]);
    p.write("chatty/chatty.py", CHATTY_APP);
    p.ok(&["deploy", "chatty", "--env", "ci", "--version", "v1"]);
    let log = p.state_dir().join("agent/logs/ci/chatty/local-0.log");
    let rotated = |n: u32| std::path::PathBuf::from(format!("{}.{n}", log.display()));
    assert!(wait_until(Duration::from_secs(20), || rotated(2).exists()));
    // Sampled while the writer keeps writing: no file is ever over 1 MiB, none beyond
    // the two kept.
    let limit = 1024 * 1024;
    let mut largest = 0;
    for _ in 0..40 {
        for file in [log.clone(), rotated(1), rotated(2)] {
            largest = largest.max(std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0));
        }
        assert!(!rotated(3).exists());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(largest <= limit, "a log file reached {largest} bytes");
    // `wharf logs` starts at a line boundary.
    let out = stdout(&p.ok(&["logs", "chatty", "--env", "ci", "--lines", "500"]));
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("line ") || first.starts_with("--- wharf"),
        "{first:?}"
    );
    assert!(
        out.lines()
            .all(|l| l.starts_with("line ") || l.starts_with("--- wharf")),
        "partial lines"
    );
}

/// An app whose check fails while the file `SICK` names exists.
const SICKENING_APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.environ["SICK"])
        code = 500 if self.path == "/health" and sick else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn an_instance_that_turns_unhealthy_is_restarted() {
    let sick = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let path = sick.to_str().unwrap().to_owned();
    std::fs::remove_file(&path).unwrap();
    let definition = format!(
        "services:\n  web:\n    build: ./web\n    run: [\"python3\", \"app.py\"]\n    port: http\n    health: {{ http: /health, interval: 100ms }}\n    config: {{ SICK: \"{path}\" }}\nenvironments:\n  ci: {{}}\n"
    );
    let mut p = Project::new(&definition, &["web"]);
    p.write("web/app.py", SICKENING_APP);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let pid = p.instances("web", "ci")[0]["pid"].clone();
    std::fs::write(&path, "").unwrap();
    assert!(
        wait_until(
            Duration::from_secs(15),
            || p.instances("web", "ci")[0]["restarts"] == 1
        ),
        "restarted after its checks failed: {:?}",
        p.instances("web", "ci")
    );
    let now = &p.instances("web", "ci")[0];
    assert_ne!(now["pid"], pid, "a new process");
    let log = stdout(&p.ok(&["logs", "web", "--env", "ci"]));
    assert!(
        log.contains("it failed 3 health checks in a row"),
        "the log says why: {log}"
    );
    // Still failing, it is not restarted again and again: it was not healthy since.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.instances("web", "ci")[0]["restarts"], 1);
    std::fs::remove_file(&path).unwrap();
    assert!(wait_until(Duration::from_secs(10), || p
        .instances("web", "ci")[0]["health"]
        == "healthy"));
}
