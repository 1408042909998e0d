//! Debian's redis-server, unchanged, as a `protocol: tcp` service: its clients reach it
//! through the service's address, and a deploy (in place: redis owns its port) makes
//! new connections wait for the new instance instead of being refused.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::*;

const REDIS: &str = r#"
services:
  cache:
    build: ./cache
    run: ["/usr/bin/redis-server", "--port", "PORT", "--save", "", "--appendonly", "no"]
    port: PORT
    protocol: tcp
    health: { tcp: true, interval: 100ms }
environments:
  ci: {}
"#;

fn redis_installed() -> bool {
    crate::daemons::installed("/usr/bin/redis-server", "redis-server")
}

/// One PING on a new connection to `port`: Ok once redis answered PONG.
fn ping(port: u16) -> Result<(), String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut answer = [0u8; 7];
    tcp.read_exact(&mut answer).map_err(|e| e.to_string())?;
    if &answer == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&answer).into_owned())
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn redis_server_through_its_address_refuses_no_connection_during_deploys() {
    if !redis_installed() {
        return;
    }
    let fixed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = Project::new(&REDIS.replace("PORT", &fixed.to_string()), &["cache"]);
    p.ok(&["deploy", "cache", "--env", "ci", "--version", "v1"]);
    let address = p.address_port("cache", "ci");
    assert_ne!(
        address, fixed,
        "clients use the address, not the instance's port"
    );
    ping(address).expect("redis answers through its address");

    let running = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (running, sent) = (running.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                while running.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = ping(address) {
                        failed.push(e);
                    }
                }
                failed
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || sent
        .load(Ordering::Relaxed)
        > 50));
    for version in ["v2", "v3"] {
        let out = p.ok(&["deploy", "cache", "--env", "ci", "--version", version]);
        assert!(
            stderr(&out).contains("replacing"),
            "in place: {}",
            text(&out)
        );
    }
    let after = sent.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || sent
        .load(Ordering::Relaxed)
        > after + 50));
    running.store(false, Ordering::Relaxed);
    let failed: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "redis-server: {sent} PINGs (a connection each) through its address during 2 in-place deploys, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "of {sent}: {failed:?}");
    let versions: Vec<String> = p
        .instances("cache", "ci")
        .iter()
        .map(|i| i["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(versions, ["v3"]);
}

/// The same redis-server, told its port by a template in `run`: wharf picks a port per
/// instance, so a new version starts beside the old one.
const REDIS_NAMED: &str = r#"
services:
  cache:
    build: ./cache
    run: ["/usr/bin/redis-server", "--port", "{{ port }}", "--save", "", "--appendonly", "no"]
    port: redis
    protocol: tcp
    health: { tcp: true, interval: 100ms }
environments:
  ci: {}
"#;

#[test]
fn redis_server_told_its_port_by_a_template_in_run_is_surged() {
    if !redis_installed() {
        return;
    }
    let mut p = Project::new(REDIS_NAMED, &["cache"]);
    p.ok(&["deploy", "cache", "--env", "ci", "--version", "v1"]);
    let first = p.port("cache", "ci", 0);
    ping(first).expect("redis listens on the port wharf chose");
    let address = p.address_port("cache", "ci");
    ping(address).expect("and answers through its address");
    let out = p.ok(&["deploy", "cache", "--env", "ci", "--version", "v2"]);
    assert!(stderr(&out).contains("beside"), "surged: {}", text(&out));
    assert_ne!(
        p.port("cache", "ci", 0),
        first,
        "the new instance has a port of its own"
    );
    ping(address).unwrap();
}
