//! Images from a registry: a host that lacks a service's pinned image pulls it, with
//! the registry credentials kept as the service's secrets, and runs it only if it is
//! exactly the image that was built.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const DEFINITION: &str = r#"
services:
  inv:
    image: IMAGE
    run: ["/usr/local/bin/shop-inventory"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { BIND_ADDR: 0.0.0.0 }
environments:
  ci: {}
"#;

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

#[test]
fn a_missing_image_is_pulled_with_credentials_kept_as_secrets() {
    if !crate::docker::docker_answers() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let local = crate::containers::local_image(p.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("wharf-e2e/registry-{}", std::process::id());
    let reference = format!("127.0.0.1:{port}/{name}:v1");
    assert!(docker(&["tag", &local, &reference]).status.success());
    let archive = p.path().join("image.tar");
    assert!(
        docker(&["save", "-o", archive.to_str().unwrap(), &reference])
            .status
            .success()
    );
    p.write("wharf.yaml", &DEFINITION.replace("IMAGE", &reference));
    // Built (pinned) while the image is here; then the host loses it.
    p.ok(&["build", "inv", "--version", "v1"]);
    let pinned = String::from_utf8_lossy(
        &docker(&["image", "inspect", "--format", "{{.Id}}", &reference]).stdout,
    )
    .trim()
    .to_owned();
    assert!(docker(&["rmi", "-f", &reference, &local]).status.success());
    assert!(!docker(&["image", "inspect", &pinned]).status.success());

    let log = p.path().join("registry.log");
    const PASSWORD: &str = "reg-pa55-41bd7e";
    let _registry = Registry(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/registry.py"
            ))
            .args([
                &port.to_string(),
                archive.to_str().unwrap(),
                &name,
                "v1",
                "robot",
                PASSWORD,
            ])
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));

    // Wrong credentials: a clear error, nothing runs.
    for (key, value) in [
        ("WHARF_REGISTRY_USERNAME", "robot"),
        ("WHARF_REGISTRY_PASSWORD", "wrong"),
    ] {
        let out = p.wharf_with(
            &["secret", "set", "inv", "--env", "ci", key],
            &[],
            Some(value.as_bytes()),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = p.wharf(&["deploy", "inv", "--env", "ci", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("cannot pull it"), "{}", text(&out));
    assert!(p.instances("inv", "ci").is_empty());

    // The right ones: pulled, verified against the pinned id, run.
    let out = p.wharf_with(
        &[
            "secret",
            "set",
            "inv",
            "--env",
            "ci",
            "WHARF_REGISTRY_PASSWORD",
        ],
        &[],
        Some(PASSWORD.as_bytes()),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = p.ok(&["deploy", "inv", "--env", "ci", "--version", "v1"]);
    assert!(!text(&out).contains(PASSWORD));
    let requests = std::fs::read_to_string(&log).unwrap();
    assert!(requests.contains("/manifests/v1 authorized"), "{requests}");
    let port = p.port("inv", "ci", 0);
    assert!(get(port, "/health").is_some(), "the pulled image runs");
    let container = String::from_utf8_lossy(
        &docker(&["ps", "-q", "--filter", "label=wharf.service=inv"]).stdout,
    )
    .trim()
    .to_owned();
    let image =
        String::from_utf8_lossy(&docker(&["inspect", "--format", "{{.Image}}", &container]).stdout)
            .trim()
            .to_owned();
    assert_eq!(image, pinned, "exactly the image that was built");
    // The credentials are the engine's, not the instance's.
    let env = String::from_utf8_lossy(
        &docker(&["inspect", "--format", "{{.Config.Env}}", &container]).stdout,
    )
    .into_owned();
    assert!(!env.contains("WHARF_REGISTRY"), "{env}");
    p.ok(&["stop", "inv", "--env", "ci"]);
    let _ = docker(&["rmi", "-f", &pinned]);
}
