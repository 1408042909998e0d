//! `engine: { kind: swarm }`: the same `wharf deploy` hands a service to Docker's Swarm
//! mode on the local engine, which places, rolls and supervises its replicas. The test
//! makes a single-node swarm when the engine is in none, and leaves it at the end.

use std::process::Command;

use crate::harness::*;

const SWARM: &str = r#"
services:
  web:
    image: IMAGE
    run: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
    health: { command: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/"], timeout: 5s }
    min_healthy_time: 1s
    config: { GREETING: "hello from {{ env }}" }
environments:
  swarm:
    engine: { kind: swarm }
    pools:
      web: { count: 2 }
"#;

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The swarm of the test, left at the end if the test made it.
struct SwarmMode {
    made: bool,
    tag: String,
}

impl SwarmMode {
    fn up(tag: String) -> Self {
        let (_, state) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let made = state.trim() != "active";
        if made {
            let (ok, out) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            assert!(ok, "docker swarm init: {out}");
        }
        Self { made, tag }
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", "wharf-swarm-web"]);
        if self.made {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
        let _ = docker(&["image", "rm", "-f", &self.tag]);
    }
}

/// A scratch image of busybox serving `page` over HTTP on 8080, tagged `tag`.
fn busybox_image(dir: &std::path::Path, tag: &str, page: &str) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("www/index.html"), page).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY www /www\n",
    )
    .unwrap();
    let (ok, out) = docker(&["build", "-q", "-t", tag, dir.to_str().unwrap()]);
    assert!(ok, "docker build: {out}");
}

/// What each running replica of the service serves, and its GREETING, read inside it.
fn replicas() -> Vec<(String, String)> {
    let (_, ids) = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.swarm.service.name=wharf-swarm-web",
    ]);
    let mut seen: Vec<(String, String)> = ids
        .split_whitespace()
        .map(|id| {
            let (_, page) = docker(&[
                "exec",
                id,
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ]);
            let (_, env) = docker(&["exec", id, "sh", "-c", "echo \"$GREETING\""]);
            (page.trim().to_owned(), env.trim().to_owned())
        })
        .collect();
    seen.sort();
    seen
}

#[test]
fn a_swarm_environment_runs_the_same_deploy_and_history_through_swarm() {
    if !crate::docker::docker_answers() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let tag = format!("wharf-e2e-swarm:{}", std::process::id());
    let _swarm = SwarmMode::up(tag.clone());
    busybox_image(&p.path().join("image"), &tag, "one");
    p.write("wharf.yaml", &SWARM.replace("IMAGE", &tag));

    let out = p.wharf_with(
        &["secret", "set", "web", "--env", "swarm", "API_KEY"],
        &[],
        Some(b"swarm-secret-value\n"),
    );
    assert!(out.status.success(), "{}", text(&out));

    p.ok(&["deploy", "web", "--env", "swarm", "--version", "v1"]);
    // The secret is a Swarm secret, a file in each replica, and not in the service.
    let (_, ids) = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.swarm.service.name=wharf-swarm-web",
    ]);
    let first = ids.split_whitespace().next().expect("a replica");
    let (_, secret) = docker(&["exec", first, "cat", "/run/secrets/API_KEY"]);
    assert_eq!(secret.trim(), "swarm-secret-value");
    let (_, service) = docker(&["service", "inspect", "wharf-swarm-web"]);
    assert!(!service.contains("swarm-secret-value"), "{service}");
    let greeting = "hello from swarm".to_owned();
    // `wharf status` reads the replicas from Swarm.
    let running: Vec<serde_json::Value> = p
        .instances("web", "swarm")
        .into_iter()
        .filter(|i| i["state"] == "running" && i["version"] == "v1")
        .collect();
    assert_eq!(running.len(), 2, "{running:?}");
    assert_eq!(
        replicas(),
        [
            ("one".to_owned(), greeting.clone()),
            ("one".to_owned(), greeting.clone())
        ]
    );

    // A release whose replicas never pass their check is rolled back by Swarm; the
    // deploy says so, fails, and v1 serves on.
    p.write(
        "wharf.yaml",
        &SWARM
            .replace("IMAGE", &tag)
            .replace("http://127.0.0.1:8080/", "http://127.0.0.1:9/"),
    );
    let out = p.wharf(&["deploy", "web", "--env", "swarm", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("rolled v2 back"), "{}", text(&out));
    assert_eq!(replicas().len(), 2);

    let history: serde_json::Value = serde_json::from_slice(
        &p.ok(&["history", "web", "--env", "swarm", "-o", "json"])
            .stdout,
    )
    .unwrap();
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"succeeded"), "{history}");
    assert!(states.contains(&"rolled_back"), "{history}");
    // The periodic reconcile (every few seconds) leaves the engine's replicas alone.
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"reconcile"), "{history}");

    // A new image, then a rollback to the one before: Swarm runs v1's image again.
    let tag_two = format!("{tag}-two");
    busybox_image(&p.path().join("image-two"), &tag_two, "two");
    p.write("wharf.yaml", &SWARM.replace("IMAGE", &tag_two));
    p.ok(&["deploy", "web", "--env", "swarm", "--version", "v3"]);
    assert_eq!(
        replicas(),
        [
            ("two".to_owned(), greeting.clone()),
            ("two".to_owned(), greeting.clone())
        ]
    );
    p.ok(&["rollback", "web", "--env", "swarm"]);
    assert_eq!(
        replicas(),
        [
            ("one".to_owned(), greeting.clone()),
            ("one".to_owned(), greeting.clone())
        ]
    );
    let _ = docker(&["image", "rm", "-f", &tag_two]);

    // Down: the Swarm service is gone, and history says so.
    let out = p.ok(&["down", "--env", "swarm"]);
    assert!(
        stderr(&out).contains("stopped 2 instance(s)"),
        "{}",
        text(&out)
    );
    let (_, services) = docker(&["service", "ls", "--format", "{{.Name}}"]);
    assert!(!services.contains("wharf-swarm-web"), "{services}");
}
