//! An environment's entry: requests routed by host and path to services' addresses.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn shop(listen: u16) -> String {
    format!(
        r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
    health: {{ http: /health }}
    config: {{ MESSAGE: web }}
  orders:
    build: ./orders
    run: ["python3", "app.py"]
    port: http
    health: {{ http: /health }}
    config: {{ MESSAGE: orders }}
environments:
  ci:
    ingress:
      listen: 127.0.0.1:{listen}
      routes:
        - {{ host: shop.local, service: web }}
        - {{ path: /api, service: orders, strip_prefix: true }}
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET through the entry with `Host: host`: the status and the body.
fn through(listen: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{listen}{path}"))
        .header("host", host)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    Some((r.status().as_u16(), r.text().unwrap_or_default()))
}

#[test]
fn the_entry_routes_by_host_and_path_and_tells_the_service_where_requests_came_from() {
    let listen = free_port();
    let mut p = Project::new(&shop(listen), &["web", "orders"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["deploy", "orders", "--env", "ci", "--version", "v1"]);
    assert!(
        wait_until(Duration::from_secs(5), || through(
            listen,
            "shop.local",
            "/"
        )
        .is_some_and(|(s, _)| s == 200)),
        "the entry listens on 127.0.0.1:{listen}"
    );
    let json = |host: &str, path: &str| -> Value {
        let (status, body) = through(listen, host, path).unwrap();
        assert_eq!(status, 200, "{host}{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let web = json("Shop.Local:8080", "/cart?x=1");
    assert_eq!(web["message"], "web", "{web}");
    assert_eq!(web["path"], "/cart?x=1");
    assert_eq!(web["forwarded_proto"], "http");
    assert_eq!(
        web["forwarded_host"], "Shop.Local:8080",
        "as the client sent it"
    );
    // Any other host: the path route, its prefix stripped.
    let orders = json("example.org", "/api/items?page=2");
    assert_eq!(orders["message"], "orders", "{orders}");
    assert_eq!(orders["path"], "/items?page=2");
    assert_eq!(json("example.org", "/api")["path"], "/");
    let (status, body) = through(listen, "example.org", "/apis").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no route") && body.contains("`/apis`"),
        "{body}"
    );
}

#[test]
fn a_new_definition_changes_the_routes_without_a_deploy() {
    let listen = free_port();
    let mut p = Project::new(&shop(listen), &["web", "orders"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["deploy", "orders", "--env", "ci", "--version", "v1"]);
    assert!(wait_until(Duration::from_secs(5), || through(
        listen,
        "example.org",
        "/api/x"
    )
    .is_some_and(|(s, _)| s == 200)));
    p.write(
        "wharf.yaml",
        &shop(listen).replace("path: /api,", "path: /orders,"),
    );
    p.ok(&["apply"]);
    let moved = wait_until(Duration::from_secs(5), || {
        through(listen, "example.org", "/orders/x")
            .is_some_and(|(s, b)| s == 200 && b.contains("\"orders\""))
    });
    assert!(moved, "the route moved to /orders");
    assert_eq!(through(listen, "example.org", "/api/x").unwrap().0, 404);
}

#[test]
fn https_routes_take_their_certificates_from_secrets_set_after_the_deploy() {
    let (listen, tls_listen) = (free_port(), free_port());
    let definition = shop(listen)
        .replace(
            &format!("listen: 127.0.0.1:{listen}\n"),
            &format!("listen: 127.0.0.1:{listen}\n      tls_listen: 127.0.0.1:{tls_listen}\n"),
        )
        .replace(
            "{ host: shop.local, service: web }",
            "{ host: shop.local, service: web, tls: { cert: TLS_CERT, key: TLS_KEY } }",
        );
    let mut p = Project::new(&definition, &["web", "orders"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let certified = rcgen::generate_simple_self_signed(vec!["shop.local".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (certified.cert.pem(), certified.signing_key.serialize_pem());
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve(
            "shop.local",
            std::net::SocketAddr::from(([127, 0, 0, 1], tls_listen)),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://shop.local:{tls_listen}/cart");
    assert!(
        https.get(&url).send().is_err(),
        "no certificate is served before its secrets are set"
    );
    for (name, value) in [("TLS_CERT", &cert_pem), ("TLS_KEY", &key_pem)] {
        let out = p.wharf_with(
            &["secret", "set", "web", "--env", "ci", name],
            &[],
            Some(value.as_bytes()),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut answer = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            answer = https.get(&url).send().ok().and_then(|r| r.text().ok());
            answer.is_some()
        }),
        "HTTPS works once the secrets are set, without a deploy"
    );
    let body: Value = serde_json::from_str(&answer.unwrap()).unwrap();
    assert_eq!(body["message"], "web");
    assert_eq!(body["forwarded_proto"], "https");
    assert_eq!(body["path"], "/cart");
    // The key never shows in the controller's log.
    let log = std::fs::read_to_string(p.state_dir().join("server.log")).unwrap();
    assert!(log.contains("ingress"), "the controller's log: {log}");
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!log.contains(key_line), "the key leaked into the log");
}
