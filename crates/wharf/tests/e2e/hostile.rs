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
