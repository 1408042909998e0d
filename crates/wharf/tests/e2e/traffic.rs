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
    port: http
    health: { http: /health, interval: 100ms }
  front:
    build: ./front
    run: ["python3", "app.py"]
    port: http
    config:
      PEER_URL: "{{ services.web.url }}"
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 3 }, front]
"#;

fn address(p: &mut Project, service: &str) -> String {
    let status = p.json(&["status", "--env", "ci"]);
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .and_then(|s| s["address"].as_str())
        .unwrap_or_else(|| panic!("no address for {service}: {status}"))
        .to_owned()
}

#[test]
#[allow(clippy::print_stderr)]
fn rolling_deploys_behind_the_service_address_fail_no_request() {
    let mut p = Project::new(WEB, &["web", "front"]);
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    let web = address(&mut p, "web");
    // Peers are given the address, not one instance.
    let front = p.port("front", "ci", 0);
    assert_eq!(get_json(front)["peer"], web.as_str());
    let table = stdout(&p.ok(&["status", "--env", "ci"]));
    assert!(table.contains(&format!("web (ci): {web}/")), "{table}");

    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let client = {
        let (running, sent, failed, seen, url) = (
            running.clone(),
            sent.clone(),
            failed.clone(),
            seen.clone(),
            web.clone(),
        );
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while running.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match http.get(format!("{url}/")).send() {
                    Ok(r) if r.status().is_success() => {
                        let body: serde_json::Value = r.json().unwrap_or_default();
                        if let Some(v) = body["version"].as_str() {
                            seen.lock().unwrap().insert(v.to_owned());
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    for version in ["v2", "v3", "v4"] {
        p.ok(&["deploy", "web", "--env", "ci", "--version", version]);
    }
    running.store(false, Ordering::Relaxed);
    client.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} requests through the address during 3 rolling deploys, {failed} failed");
    assert_eq!(failed, 0, "of {sent} requests");
    assert!(sent > 100, "the load ran: {sent}");
    assert!(
        seen.lock().unwrap().contains("v4"),
        "traffic reached the new version"
    );
}

const SOLO: &str = r#"
services:
  solo:
    build: ./solo
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, interval: 100ms }
environments:
  ci: {}
"#;

#[test]
#[allow(clippy::print_stderr)]
fn a_single_instance_replaced_in_place_makes_requests_wait_not_fail() {
    let mut p = Project::new(SOLO, &["solo"]);
    p.ok(&["deploy", "solo", "--env", "ci", "--version", "v1"]);
    let url = address(&mut p, "solo");
    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (running, sent, failed) = (running.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            while running.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if !http
                    .get(format!("{url}/"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    assert!(wait_until(Duration::from_secs(10), || sent
        .load(Ordering::Relaxed)
        > 20));
    for version in ["v2", "v3"] {
        p.ok(&["deploy", "solo", "--env", "ci", "--version", version]);
    }
    let after = sent.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || sent
        .load(Ordering::Relaxed)
        > after + 20));
    running.store(false, Ordering::Relaxed);
    client.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{sent} requests through a 1-instance service's address during 2 deploys, {failed} failed"
    );
    assert_eq!(failed, 0, "of {sent} requests");
}
