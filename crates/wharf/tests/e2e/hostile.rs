//! Hostile neighbours: idle connections that would pin the controller's ports.

use std::time::{Duration, Instant};

use crate::harness::*;

const ONE: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
    health: { http: /health }
environments:
  ci: {}
"#;

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

#[test]
#[allow(clippy::print_stderr)]
fn a_thousand_idle_connections_on_each_port_do_not_stop_the_controller_answering() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65536), hard).unwrap();
    let mut p = Project::new(ONE, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("controller.json")).unwrap())
            .unwrap();
    let api = port_of(file["url"].as_str().unwrap());
    let agent = port_of(file["agent_url"].as_str().unwrap());
    let log = p.state_dir().join("server.log");
    let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);

    // Connections that say nothing, as an attacker's would.
    let mut idle = Vec::new();
    for port in [api, agent] {
        for _ in 0..1000 {
            idle.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
    }
    let url = p.controller_url();
    let http = p.http();
    let mut took = Vec::new();
    for _ in 0..20 {
        let begun = Instant::now();
        let answer = http.get(format!("{url}/v1/status?env=ci")).send().unwrap();
        assert_eq!(answer.status(), 200);
        took.push(begun.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    eprintln!(
        "status with 2000 idle connections: median {median:?}, max {:?}",
        took[took.len() - 1]
    );
    assert!(median < Duration::from_millis(500), "{took:?}");
    // The CLI too.
    let out = p.ok(&["status", "--env", "ci"]);
    assert!(stdout(&out).contains("web"));
    // An idle connection is closed once its first byte is overdue, so they do not
    // pile up for ever.
    let mut first = idle.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    let closed = std::io::Read::read(&mut first, &mut buf);
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    drop(idle);
    // And the log stayed small: nothing is logged per connection.
    let grown = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) - log_before;
    assert!(grown < 16 * 1024, "the log grew by {grown} bytes");
}

/// Answers every request on PORT with 200 "intruder".
const INTRUDER: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "8"); self.end_headers()
        self.wfile.write(b"intruder")
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
#[allow(clippy::print_stderr)]
fn a_local_users_process_with_a_forged_tag_on_the_instances_port_is_neither_adopted_nor_healthy() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        eprintln!("skipped: needs root to run a process as another user");
        return;
    }
    let mut p = Project::new(ONE, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let instance = p.instances("web", "ci")[0].clone();
    let port = instance["port"].as_u64().unwrap() as u16;
    let pid = instance["pid"].as_i64().unwrap() as i32;
    let controller = p.controller_pid().unwrap();
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    kill(Pid::from_raw(-pid), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));

    // Another user takes the port, carrying the instance's tag (as if the agent id had
    // leaked), in a process group of its own like an instance's.
    let id = std::fs::read_to_string(p.state_dir().join("agent/id")).unwrap();
    let mut intruder = std::process::Command::new("python3")
        .args(["-c", INTRUDER])
        .env("PORT", port.to_string())
        .env("WHARF_TAG", format!("{}:ci/web/local/0", id.trim()))
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .process_group(0)
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || get(port, "/")
        .is_some_and(|b| b == "intruder")));

    // The next controller does not adopt it, and does not count it as the instance.
    let mut seen = Vec::new();
    assert!(wait_until(Duration::from_secs(15), || {
        let all = p.instances("web", "ci");
        let now = all.first().cloned();
        seen.push(now.clone());
        now.is_some_and(|i| i["state"] != "running" || i["health"] == "unhealthy")
    }));
    for i in seen.iter().flatten() {
        assert_ne!(
            i["pid"].as_i64(),
            Some(intruder.id() as i64),
            "adopted: {i}"
        );
        assert_ne!(
            i["health"], "healthy",
            "the intruder passed as healthy: {i}"
        );
    }
    assert!(
        intruder.try_wait().unwrap().is_none(),
        "another user's process is not ours to stop"
    );
    let _ = intruder.kill();
    let _ = intruder.wait();
}
