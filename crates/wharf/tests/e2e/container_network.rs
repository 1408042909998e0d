//! What a container reaches of its host: its peers' stable addresses and the
//! configuration service, at the bridge's gateway, and nothing else of the API.

use crate::containers::{busybox_image, busybox_ready, docker};
use crate::harness::*;

/// `web` is a process (busybox httpd); `site` a container that fetches `web` at the
/// address its template names and reads its own configuration from `WHARF_CONFIG_URL`
/// with its token, then serves what it got.
const TWO_SERVICES: &str = r#"
services:
  web:
    build: .
    run: ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:{{ port }}", "-h", "{{ data_dir }}"]
    port: http
    health: { http: /index.html, interval: 100ms }
    files:
      index.html: { content: "web says hi" }
  site:
    image: IMAGE
    entrypoint: ["/bin/busybox"]
    run:
      - sh
      - -c
      - >-
        until wget -q -O {{ data_dir }}/peer $PEER/index.html; do sleep 0.2; done;
        wget -q -O {{ data_dir }}/config --header "Authorization: Bearer $WHARF_CONFIG_TOKEN" "$WHARF_CONFIG_URL";
        exec /bin/busybox httpd -f -p 8080 -h {{ data_dir }}
    port: { name: http, container: 8080 }
    health: { http: /config, interval: 100ms }
    config:
      PEER: "{{ services.web.url }}"
      GREETING: hello from the controller
environments:
  local: {}
"#;

#[test]
fn a_container_reaches_its_peers_and_its_configuration_at_the_hosts_gateway() {
    if !busybox_ready() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let image = busybox_image(p.path());
    p.write("wharf.yaml", &TWO_SERVICES.replace("IMAGE", &image.0));
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    // Healthy only once it fetched both: the deploy itself says they were reached.
    p.ok(&["deploy", "site", "--env", "local", "--version", "v1"]);
    let site = p.address_port("site", "local");
    assert_eq!(get(site, "/peer").as_deref(), Some("web says hi"));
    let config: serde_json::Value =
        serde_json::from_str(&get(site, "/config").unwrap_or_default()).expect("JSON");
    assert_eq!(
        config["values"]["GREETING"], "hello from the controller",
        "{config}"
    );
    // What the container was given names the gateway, not its own loopback.
    let seen = stdout(&p.ok(&[
        "exec",
        "site",
        "--env",
        "local",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo $PEER $WHARF_CONFIG_URL",
    ]));
    let gateway = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ]);
    assert!(!seen.contains("127.0.0.1"), "{seen} (bridge {gateway})");
    let peer = config["values"]["PEER"].as_str().unwrap_or_default();
    assert!(
        seen.starts_with(peer) && !peer.contains("${"),
        "the value read at runtime is the one in the environment: {peer} vs {seen}"
    );
    // The gateway passes configuration reads with a token, and nothing else.
    let url = seen
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let base = url
        .split("/v1/")
        .next()
        .unwrap_or_default()
        .trim_start_matches("http://")
        .to_owned();
    let client = reqwest::blocking::Client::new();
    let status = |url: String| client.get(url).send().map(|r| r.status().as_u16()).ok();
    assert_eq!(status(url.clone()), Some(401), "a read without the token");
    for path in ["/v1/health", "/v1/api-tokens", "/v1/runtime"] {
        assert_eq!(status(format!("http://{base}{path}")), Some(404), "{path}");
    }
    p.ok(&["down", "--env", "local"]);
}
