//! The Swarm engine against a real single-node swarm on the local Docker engine: made
//! here (`docker swarm init --advertise-addr 127.0.0.1`) when the engine is in none,
//! and left again at the end. Images are built here from busybox (never pulled).
//! Without Docker the test is skipped with a reason, except under CI, where it fails.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use wharf_core::model::{HealthCheck, Probe};
use wharf_engine::swarm::Swarm;
use wharf_engine::{EngineService, Outcome};

fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

fn docker_answers() -> bool {
    let (up, _) = docker(&["version", "--format", "{{.Server.Version}}"]);
    let busybox = std::path::Path::new("/bin/busybox").exists();
    if !(up && busybox) {
        let why = if up {
            "/bin/busybox is missing (apt-get install busybox-static)"
        } else {
            "the Docker engine does not answer"
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "the Swarm test cannot run in CI: {why}"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping the Swarm test: {why}");
        }
    }
    up && busybox
}

/// The swarm for the test; leaves it at the end if the test made it.
struct SwarmMode {
    made: bool,
}

impl SwarmMode {
    fn up() -> Self {
        let (_, state) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state.trim() == "active" {
            return Self { made: false };
        }
        let (ok, out) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(ok, "docker swarm init: {out}");
        Self { made: true }
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", "wharf-swarmtest-web"]);
        if self.made {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
        for tag in ["v1", "v2", "v3"] {
            let _ = docker(&["image", "rm", "-f", &format!("wharf-swarmtest:{tag}")]);
        }
    }
}

/// A scratch image with busybox serving `page` over HTTP on 8080 (or failing at once).
fn image(dir: &std::path::Path, tag: &str, page: &str, fails: bool) -> String {
    let context = dir.join(tag);
    std::fs::create_dir_all(context.join("www")).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox")).unwrap();
    std::fs::write(context.join("www/index.html"), page).unwrap();
    let command = if fails {
        r#"CMD ["/bin/sh", "-c", "echo cannot start >&2; exit 3"]"#
    } else {
        r#"CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#
    };
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY www /www\n{command}\n"
        ),
    )
    .unwrap();
    let name = format!("wharf-swarmtest:{tag}");
    let (ok, out) = docker(&["build", "-q", "-t", &name, context.to_str().unwrap()]);
    assert!(ok, "docker build: {out}");
    let (_, id) = docker(&["images", "-q", "--no-trunc", &name]);
    id.trim().to_owned()
}

fn web(version: &str, image: &str, replicas: u64, deployment: i64) -> EngineService {
    EngineService {
        env: "swarmtest".into(),
        service: "web".into(),
        version: version.into(),
        deployment_id: deployment,
        image: image.into(),
        replicas,
        args: Vec::new(),
        entrypoint: None,
        config: BTreeMap::from([("GREETING".into(), "hello".into())]),
        secrets: BTreeMap::from([("API_KEY".into(), "s3cr3t-value".into())]),
        // Not published: the routing mesh needs IPVS in the kernel, which test machines
        // may lack; each replica is reached inside it instead.
        port: Some(wharf_engine::ServicePort {
            target: 8080,
            published: None,
        }),
        health: Some(HealthCheck {
            probe: Probe::Http { path: "/".into() },
            timeout: Duration::from_secs(10),
            interval: Duration::from_millis(500),
            fall: 2,
            rise: 1,
            unhealthy_after: 2,
        }),
        parallelism: 1,
        monitor: Duration::from_secs(2),
        stop_grace: Duration::from_secs(2),
        stop_signal: None,
    }
}

/// What each running replica serves, read inside it.
fn served(swarm_replicas: &[wharf_engine::Replica]) -> Vec<String> {
    swarm_replicas
        .iter()
        .filter(|r| r.state == "running")
        .map(|r| {
            let container = r
                .container
                .as_deref()
                .expect("a running replica's container");
            let (ok, out) = docker(&[
                "exec",
                container,
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ]);
            assert!(ok, "wget in {container}: {out}");
            out.trim().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_rolls_out_rolls_back_scales_and_goes_on_a_real_swarm() {
    if !docker_answers() {
        return;
    }
    let _swarm_mode = SwarmMode::up();
    let dir = tempfile::tempdir().unwrap();
    let v1 = image(dir.path(), "v1", "one", false);
    let v2 = image(dir.path(), "v2", "two", false);
    let broken = image(dir.path(), "v3", "three", true);
    let swarm = Swarm::connect().await.unwrap();
    let wait = Duration::from_secs(120);

    // A first deploy: two replicas, each serving, each with its secret as a file.
    let outcome = swarm.apply(&web("v1", &v1, 2, 1), wait).await.unwrap();
    assert_eq!(outcome, Outcome::Converged);
    let replicas = swarm.replicas("swarmtest", "web").await.unwrap();
    assert_eq!(served(&replicas), ["one", "one"]);
    let container = replicas[0].container.clone().unwrap();
    let (_, secret) = docker(&["exec", &container, "cat", "/run/secrets/API_KEY"]);
    assert_eq!(secret.trim(), "s3cr3t-value");
    let (_, inspected) = docker(&["service", "inspect", "wharf-swarmtest-web"]);
    assert!(!inspected.contains("s3cr3t-value"), "{inspected}");

    // A new version replaces every replica.
    let outcome = swarm.apply(&web("v2", &v2, 2, 2), wait).await.unwrap();
    assert_eq!(outcome, Outcome::Converged);
    let replicas = swarm.replicas("swarmtest", "web").await.unwrap();
    assert_eq!(served(&replicas), ["two", "two"]);

    // A release that cannot start is rolled back by Swarm, and the old one serves on.
    let outcome = swarm.apply(&web("v3", &broken, 2, 3), wait).await.unwrap();
    let Outcome::RolledBack(why) = outcome else {
        panic!("expected a rollback, got {outcome:?}");
    };
    assert!(!why.is_empty());
    let replicas = swarm.replicas("swarmtest", "web").await.unwrap();
    assert_eq!(served(&replicas), ["two", "two"]);

    // The same version deployed again (a restart, a configuration change) waits for
    // new replicas: none of the old ones counts.
    let old: Vec<String> = replicas.iter().map(|r| r.id.clone()).collect();
    let outcome = swarm.apply(&web("v2", &v2, 2, 4), wait).await.unwrap();
    assert_eq!(outcome, Outcome::Converged);
    let replicas = swarm.replicas("swarmtest", "web").await.unwrap();
    assert_eq!(served(&replicas), ["two", "two"]);
    assert!(
        replicas
            .iter()
            .all(|r| !old.contains(&r.id) && r.deployment == "4")
    );

    // Scaled to three.
    let outcome = swarm.apply(&web("v2", &v2, 3, 4), wait).await.unwrap();
    assert_eq!(outcome, Outcome::Converged);
    let replicas = swarm.replicas("swarmtest", "web").await.unwrap();
    assert_eq!(served(&replicas), ["two", "two", "two"]);

    // Down: the service and its secrets are gone.
    assert!(swarm.remove("swarmtest", "web").await.unwrap());
    let (_, services) = docker(&["service", "ls", "--format", "{{.Name}}"]);
    assert!(!services.contains("wharf-swarmtest-web"), "{services}");
    let (_, secrets) = docker(&["secret", "ls", "--format", "{{.Name}}"]);
    assert!(!secrets.contains("wharf-swarmtest-web"), "{secrets}");
    assert!(!swarm.remove("swarmtest", "web").await.unwrap());
}
