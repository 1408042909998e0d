//! `provider: docker`: hosts are containers on the local Docker engine, from an image
//! built here (never pulled). Needs a running engine: skipped with a reason elsewhere,
//! failing in CI.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const BOXES: &str = r#"
services:
  inv:
    build: ./inv
    run: ["./shop-inventory"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  boxes:
    hosts: { provider: docker, count: 3, prefix: box }
    pools:
      inv: { count: 3 }
"#;

pub fn docker_answers() -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Docker tests cannot run in CI: the Docker engine does not answer"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping a Docker test: the Docker engine does not answer");
        }
    }
    up
}

struct Boxes(Project);

impl Drop for Boxes {
    fn drop(&mut self) {
        let _ = self.0.wharf(&["env", "down", "boxes"]);
    }
}

/// Inventory processes running in this project's containers.
fn running(p: &Project) -> usize {
    let Ok(bytes) = std::fs::read(p.state_dir().join("docker.json")) else {
        return 0;
    };
    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    record["hosts"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| {
            let out = Command::new("docker")
                .args(["top", h["container"].as_str().unwrap()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("shop-inventory"))
                .count()
        })
        .sum()
}

fn healthy(p: &mut Project) -> Vec<serde_json::Value> {
    p.instances("inv", "boxes")
        .into_iter()
        .filter(|i| i["state"] == "running" && i["health"] == "healthy")
        .collect()
}

#[test]
fn container_hosts_come_up_fail_over_heal_and_leave_nothing_behind() {
    if !docker_answers() {
        return;
    }
    let mut boxes = Boxes(Project::new(BOXES, &[]));
    let p = &mut boxes.0;
    std::fs::create_dir_all(p.path().join("inv")).unwrap();
    std::fs::copy(inventory_binary(), p.path().join("inv/shop-inventory")).unwrap();
    p.ok(&["env", "up", "boxes"]);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("docker.json")).unwrap()).unwrap();
    let (network, image) = (
        record["network"].as_str().unwrap().to_owned(),
        record["image"].as_str().unwrap().to_owned(),
    );
    p.ok(&["deploy", "inv", "--env", "boxes", "--version", "v1"]);
    assert_eq!(healthy(p).len(), 3);
    assert_eq!(running(p), 3);

    let victim = healthy(p)[0]["node"].as_str().unwrap().to_owned();
    p.ok(&["host", "kill", &victim]);
    assert!(wait_until(Duration::from_secs(30), || {
        let up = healthy(p);
        up.len() == 3 && up.iter().all(|i| i["node"] != victim.as_str())
    }));
    p.ok(&["host", "start", &victim]);

    let cut = healthy(p)[0]["node"].as_str().unwrap().to_owned();
    p.ok(&["host", "partition", &cut]);
    assert!(wait_until(Duration::from_secs(30), || {
        let up = healthy(p);
        up.len() == 3 && up.iter().all(|i| i["node"] != cut.as_str())
    }));
    p.ok(&["host", "heal", &cut]);
    assert!(
        wait_until(Duration::from_secs(30), || running(p) == 3),
        "converged to exactly three: {}",
        running(p)
    );

    p.ok(&["env", "down", "boxes"]);
    let containers = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&containers.stdout).contains(&network),
        "no container is left"
    );
    assert!(
        !Command::new("docker")
            .args(["network", "inspect", &network])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(
        !Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .unwrap()
            .status
            .success()
    );
}
