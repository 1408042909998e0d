//! The crash campaign: the laptop controller killed with SIGKILL in the middle of
//! deploys and configuration changes of a 3-instance service; after each kill the next
//! command's controller brings the service back to exactly its desired set, at one
//! version, healthy, with the interrupted deploy recorded as rolled back or resumed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;

const WEB: &str = r#"
services:
  web:
    build: ./web
    run: ["sh", "-c", "sleep 0.3 && exec python3 app.py"]
    port: http
    health: { http: /health, interval: 100ms }
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 3 }]
"#;

/// The same service, where an interrupted deploy is finished rather than undone.
fn web_resumed() -> String {
    WEB.replace("  ci:\n", "  ci:\n    recovery: resume\n")
}

/// A small deterministic generator: the seed is printed so a failing round replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn spawn(p: &Project, args: &[&str]) -> std::process::Child {
    std::process::Command::new(WHARF)
        .args(args)
        .current_dir(p.path())
        .env_remove("WHARF_CONTROLLER")
        .env_remove("WHARF_HOME")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether `web` runs exactly three instances (under any numbers: rollouts start
/// successors under new ones) at one version, all healthy, with
/// nothing interrupted left unresolved; returns the status for messages.
fn converged(p: &mut Project) -> Result<String, String> {
    let status = p.json(&["status", "--env", "ci"]);
    let Some(web) = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "web")
    else {
        return Err(format!("web is not listed: {status}"));
    };
    let instances = web["instances"].as_array().unwrap();
    let numbers: BTreeSet<u64> = instances
        .iter()
        .map(|i| i["instance"].as_u64().unwrap())
        .collect();
    let versions: BTreeSet<&str> = instances
        .iter()
        .map(|i| i["version"].as_str().unwrap())
        .collect();
    let healthy = instances
        .iter()
        .all(|i| i["health"] == "healthy" && i["state"] == "running");
    let unresolved = web["interrupted"].is_object() && web["interrupted"]["resolved_by"].is_null();
    if numbers.len() != 3 || instances.len() != 3 || versions.len() != 1 || !healthy || unresolved {
        return Err(format!("not converged: {web}"));
    }
    Ok(versions.into_iter().next().unwrap().to_owned())
}

fn integrity(p: &Project) -> String {
    let db = rusqlite::Connection::open(p.state_dir().join("state.db")).unwrap();
    db.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Kills the controller and waits until it is gone.
fn crash(p: &Project) {
    let pid = p.controller_pid().expect("a controller runs");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
}

/// After a crash: the next command's controller converges within a few seconds, no
/// process runs twice or unowned, the database is intact, and an interrupted deploy
/// says how it was resolved. Returns how long convergence took and the version.
fn recovered(p: &mut Project, round: &str) -> (Duration, String) {
    let begun = Instant::now();
    let mut last = String::new();
    let mut version = None;
    let done = wait_until(Duration::from_secs(20), || match converged(p) {
        Ok(v) => {
            version = Some(v);
            true
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(done, "{round}: {last}");
    let took = begun.elapsed();
    let tags: Vec<String> = p
        .tagged_processes()
        .into_iter()
        .map(|(_, tag)| tag)
        .filter(|tag| tag.starts_with("ci/web/"))
        .collect();
    let distinct: BTreeSet<&String> = tags.iter().collect();
    assert_eq!(
        tags.len(),
        3,
        "{round}: one process per instance, no orphan: {tags:?}"
    );
    assert_eq!(distinct.len(), 3, "{round}: {tags:?}");
    assert_eq!(integrity(p), "ok", "{round}");
    let history = p.json(&["history", "web", "--env", "ci"]);
    for d in history.as_array().unwrap() {
        if d["state"] == "interrupted" {
            assert!(d["resolved_by"].is_i64(), "{round}: unresolved {d}");
            let message = d["message"].as_str().unwrap();
            assert!(
                message.contains("rolled back")
                    || message.contains("resumed")
                    || message.contains("replaced it"),
                "{round}: {d}"
            );
        }
    }
    (took, version.unwrap())
}

#[test]
fn a_crash_right_after_the_old_process_exits_leaves_no_instance_missing() {
    let mut p = Project::new(WEB, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["build", "web", "--version", "v2"]);
    let deploy = spawn(&p, &["deploy", "web", "--env", "ci", "--version", "v2"]);
    // The targeted point: the first replaced instance's old process has exited and its
    // new one is not healthy yet.
    let url = p.controller_url();
    let client = p.http();
    let replacing = wait_until(Duration::from_secs(10), || {
        let Ok(status) = client
            .get(format!("{url}/v1/status?env=ci"))
            .send()
            .and_then(|r| r.json::<Value>())
        else {
            return false;
        };
        status["services"][0]["instances"]
            .as_array()
            .is_some_and(|all| all.iter().any(|i| i["version"] == "v2"))
    });
    assert!(replacing, "the rollout reached the first instance");
    crash(&p);
    let out = deploy.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wharf deployments show"),
        "{}",
        stderr(&out)
    );

    let (_, version) = recovered(&mut p, "targeted");
    assert_eq!(version, "v1", "rolled back to what ran before");
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(history[0]["kind"], "recovery", "{history}");
    assert_eq!(history[1]["state"], "interrupted", "{history}");
    assert_eq!(history[1]["resolved_by"], history[0]["id"], "{history}");
    // v1 runs; v2 never ran to success, so there is nothing earlier to roll back to
    // (the interrupted v2 is no rollback target).
    let out = p.wharf(&["rollback", "web", "--env", "ci"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("no earlier version"),
        "{}",
        text(&out)
    );
    // What the table says about it.
    let table = stdout(&p.ok(&["status", "--env", "ci"]));
    assert!(
        table.contains(&format!("deploy #{} of `web`", history[1]["id"])),
        "{table}"
    );
}

#[test]
fn an_environment_with_recovery_resume_finishes_the_interrupted_deploy() {
    let mut p = Project::new(&web_resumed(), &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["build", "web", "--version", "v2"]);
    let mut deploy = spawn(&p, &["deploy", "web", "--env", "ci", "--version", "v2"]);
    assert!(wait_until(Duration::from_secs(10), || p
        .instances("web", "ci")
        .iter()
        .any(|i| i["version"] == "v2")));
    crash(&p);
    let _ = deploy.wait();
    let (_, version) = recovered(&mut p, "resume");
    assert_eq!(version, "v2");
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert!(
        history[1]["message"]
            .as_str()
            .unwrap()
            .contains("resumed at `v2`"),
        "{history}"
    );
}

#[test]
#[allow(clippy::print_stderr)]
fn killed_at_random_points_of_deploys_and_config_changes_it_always_converges() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash campaign seed {seed}");
    let mut random = Lcg(seed);
    let mut p = Project::new(WEB, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    p.ok(&["build", "web", "--version", "v2"]);
    let mut took = Vec::new();
    for round in 0..8 {
        let (_, version) = recovered(&mut p, "before");
        let next = if version == "v1" { "v2" } else { "v1" };
        let value = format!("MESSAGE=round-{round}");
        let args: Vec<&str> = if round % 3 == 2 {
            vec!["config", "set", "web", "--env", "ci", &value]
        } else {
            vec!["deploy", "web", "--env", "ci", "--version", next]
        };
        let mut change = spawn(&p, &args);
        // A random point of the rollout (three batches of about half a second each).
        std::thread::sleep(Duration::from_millis(random.below(1800)));
        crash(&p);
        let _ = change.wait();
        let (t, _) = recovered(&mut p, &format!("round {round} (seed {seed})"));
        took.push(t);
    }
    took.sort();
    let history = p.json(&["history", "web", "--env", "ci"]);
    let interrupted = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "interrupted")
        .count();
    eprintln!(
        "{interrupted} of 8 rounds interrupted a rollout; converged after a crash: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        interrupted >= 2,
        "the kills landed inside rollouts: {history}"
    );
}
