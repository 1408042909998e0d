//! The controller is the one authority: it keeps the definition as revisions, refuses
//! names it does not know with exit code 2, and conflicts exit 1.

use crate::harness::*;

const DEFINITION: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  local:
    nodes: [{ name: laptop, services: [catalog] }]
"#;

#[test]
fn unknown_services_and_environments_exit_2_with_a_hint() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let out = p.wharf(&["status", "--env", "locl"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "before any apply too: {}",
        text(&out)
    );
    p.ok(&["apply"]);
    for args in [
        &["status", "--env", "locl"][..],
        &["history", "catalog", "--env", "locl"],
        &["history", "catalg", "--env", "local"],
        &["logs", "catalg", "--env", "local"],
        &["rollback", "catalg", "--env", "local"],
        &["stop", "catalg", "--env", "local"],
        &["down", "--env", "locl"],
    ] {
        let out = p.wharf(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains("did you mean"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(
            !stderr(&out).contains("wharf deploy"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn the_controller_checks_names_against_its_stored_definition() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.ok(&["apply"]);
    let url = p.controller_url();
    // Straight to the API, with no wharf.yaml to check against on the caller's side.
    let http = p.http();
    let answer = http
        .get(format!("{url}/v1/history?service=catalg&env=local"))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(
        answer.text().unwrap().contains("catalog"),
        "did-you-mean hint"
    );
    let answer = http
        .get(format!("{url}/v1/status?env=nosuch"))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 404);
}

#[test]
fn every_applied_change_is_a_revision_with_a_diff() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let out = p.ok(&["apply", "-m", "first"]);
    assert!(stderr(&out).contains("revision 1"), "{}", text(&out));
    let out = p.ok(&["apply"]);
    assert!(stderr(&out).contains("unchanged"), "{}", text(&out));

    // A deploy submits the definition when it changed.
    p.write(
        "wharf.yaml",
        &DEFINITION.replace("timeout: 5s", "timeout: 6s"),
    );
    let out = p.wharf(&["definition", "diff"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "differences exit 1: {}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("+    health: { http: /health, timeout: 6s }"),
        "{}",
        text(&out)
    );
    let out = p.ok(&["deploy", "catalog", "--env", "local"]);
    assert!(
        stderr(&out).contains("definition revision 2"),
        "{}",
        text(&out)
    );

    let history = p.json(&["definition", "history"]);
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[1]["message"], "first");
    let table = stdout(&p.ok(&["definition", "history"]));
    assert!(
        table.contains("in force") && table.contains("superseded"),
        "{table}"
    );
    let out = p.wharf(&["definition", "diff", "1", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("-    health: { http: /health, timeout: 5s }"),
        "{}",
        text(&out)
    );
    let out = p.ok(&["definition", "show", "1"]);
    assert_eq!(stdout(&out), DEFINITION);

    // A revision that does not exist is bad input.
    let out = p.wharf(&["definition", "show", "9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_controller_validates_a_submitted_definition_itself() {
    let mut q = Project::new(DEFINITION, &["catalog"]);
    q.ok(&["apply"]);
    let url = q.controller_url();
    let http = q.http();
    let answer = http
        .post(format!("{url}/v1/definitions"))
        .json(&serde_json::json!({
            "source": "services:\n  web: { build: ./web, run: [] }\n",
            "path": "wharf.yaml"
        }))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 422);
    let body = answer.text().unwrap();
    assert!(body.contains("wharf.yaml:2:"), "{body}");
    assert_eq!(
        q.json(&["definition", "history"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn packing_the_project_folder_leaves_state_keys_and_ignored_files_out() {
    let definition = r#"
services:
  site:
    build: .
    run: ["python3", "catalog/app.py"]
    port: http
environments:
  local:
    nodes: [{ name: laptop, services: [site] }]
"#;
    let mut p = Project::new(definition, &["catalog"]);
    p.write(".wharfignore", "*.log\n.venv/\n");
    p.write("debug.log", "noise");
    p.write(".venv/bin/python", "");
    p.write(".env", "PASSWORD=hunter2");
    // The controller's state (keys, CA, database) is inside the packed folder.
    let out = p.ok(&["build", "site", "--version", "v1"]);
    assert!(p.state_dir().join("master.keys").exists());
    assert!(
        stderr(&out).contains("look like secrets: `.env`"),
        "{}",
        text(&out)
    );
    let artifacts = p.json(&["artifacts", "site"]);
    let digest = artifacts[0]["digest"].as_str().unwrap().to_owned();
    let archive = p
        .state_dir()
        .join("artifacts")
        .join(format!("{}.tar.gz", digest.trim_start_matches("sha256:")));
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(names.contains("catalog/app.py"), "{names}");
    for left_out in [
        ".wharf",
        "master.keys",
        "state.db",
        "debug.log",
        ".venv",
        "wharf.yaml",
    ] {
        assert!(!names.contains(left_out), "{left_out} was packed: {names}");
    }

    // The same files give the same digest although the state changed meanwhile.
    p.ok(&["status"]);
    p.write("catalog/more.log", "ignored");
    let out = p.ok(&["build", "site", "--version", "v1"]);
    assert!(stderr(&out).contains("same content"), "{}", text(&out));
}

/// The address a local TCP port listens on, from /proc/net/tcp (`0100007F` is loopback).
fn listening_address(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, p) = fields.get(1)?.split_once(':')?;
        // State 0A is LISTEN.
        (u16::from_str_radix(p, 16).ok()? == port && fields.get(3) == Some(&"0A"))
            .then(|| addr.to_owned())
    })
}

#[test]
fn the_laptop_controller_listens_for_agents_on_loopback_and_stops_on_request() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.ok(&["status"]);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("controller.json")).unwrap())
            .unwrap();
    let port: u16 = file["agent_url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(listening_address(port).as_deref(), Some("0100007F"));

    let out = p.ok(&["down", "--env", "local"]);
    assert!(
        stderr(&out).contains("`wharf server stop`"),
        "{}",
        text(&out)
    );
    let pid = p.controller_pid().expect("a controller runs");
    let out = p.ok(&["server", "stop"]);
    assert!(
        stderr(&out).contains("stopped the local controller"),
        "{}",
        text(&out)
    );
    assert!(!alive(pid));
    let out = p.ok(&["server", "stop"]);
    assert!(
        stderr(&out).contains("no local controller"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_node_no_host_claims_never_runs_on_the_controller() {
    let definition = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { MESSAGE: "meant for web-1" }
environments:
  staging:
    hosts: { provider: static, names: [web-1] }
    nodes: [{ name: web-1, services: [catalog] }]
"#;
    let mut p = Project::new(definition, &["catalog"]);
    let out = p.wharf(&["deploy", "catalog", "--env", "staging", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("which no host claims"),
        "{}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("wharf agent --name"),
        "{}",
        text(&out)
    );
    assert!(p.instances("catalog", "staging").is_empty());
    assert!(
        p.json(&["history", "catalog", "--env", "staging"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_production_controller_authenticates_and_runs_nothing_itself() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let state = p.path().join("controller-state");
    let out = std::process::Command::new(WHARF)
        .args(["server", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--listen"), "{}", text(&out));

    let mut child = std::process::Command::new(WHARF)
        .args(["server", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let file = state.join("controller.json");
    assert!(wait_until(std::time::Duration::from_secs(15), || file.exists()));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap().to_owned();
    let admin = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let as_admin = |p: &mut Project, args: &[&str], token: &str| {
        let mut all = vec!["--controller", url.as_str()];
        all.extend_from_slice(args);
        p.wharf_with(&all, &[("WHARF_TOKEN", token)], None)
    };
    let out = as_admin(&mut p, &["status"], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "tokens are required: {}",
        text(&out)
    );
    let out = as_admin(
        &mut p,
        &["deploy", "catalog", "--env", "local", "--version", "v1"],
        admin.trim(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("runs nothing itself"),
        "{}",
        text(&out)
    );
    let status = as_admin(&mut p, &["status", "-o", "json"], admin.trim());
    assert!(status.status.success(), "{}", text(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(report["services"].as_array().unwrap().is_empty());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

#[test]
fn approvals_need_authentication_and_the_rest_of_the_definition_still_works() {
    let definition = format!(
        "{DEFINITION}  production:\n    after: local\n    approval: required\n    nodes: [{{ name: web, services: [catalog] }}]\n"
    );
    let mut p = Project::new(&definition, &["catalog"]);
    // The laptop's open controller deploys `local` as usual...
    p.ok(&["deploy", "catalog", "--env", "local", "--version", "v1"]);
    // ...but nobody can be told apart for an approval: refused, with the way out.
    let out = p.wharf_with(
        &[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v1",
        ],
        &[("USER", "alice")],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("--auth"), "{}", text(&out));
    assert!(
        p.json(&["deployments", "--pending"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(p.instances("catalog", "production").is_empty());
    // Changing the approval environment's policy holds nothing on an open controller:
    // the laptop keeps deploying.
    p.write(
        "wharf.yaml",
        &definition.replace("name: web,", "name: web2,"),
    );
    let out = p.ok(&["deploy", "catalog", "--env", "local", "--version", "v1"]);
    assert!(!stderr(&out).contains("waiting"), "{}", text(&out));
    assert_eq!(p.json(&["definition", "history"])[0]["state"], "active");
}

#[test]
fn a_service_removed_from_the_definition_can_still_be_stopped() {
    let two = DEFINITION.replace(
        "environments:",
        "  legacy:\n    build: ./catalog\n    run: [\"python3\", \"app.py\"]\n    port: http\nenvironments:",
    )
    .replace("services: [catalog] }", "services: [catalog, legacy] }");
    let mut p = Project::new(&two, &["catalog"]);
    p.ok(&["deploy", "legacy", "--env", "local", "--version", "v1"]);
    p.write("wharf.yaml", DEFINITION);
    p.ok(&["apply", "-m", "legacy is gone"]);
    let history = p.json(&["history", "legacy", "--env", "local"]);
    assert_eq!(history.as_array().unwrap().len(), 1);
    let out = p.ok(&["stop", "legacy", "--env", "local"]);
    assert!(
        stderr(&out).contains("stopped 1 instance"),
        "{}",
        text(&out)
    );
    let out = p.wharf(&["stop", "nosuch", "--env", "local"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_state_folder_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.ok(&["deploy", "catalog", "--env", "local", "--version", "v1"]);
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    // Others may pass through (to instances' folders) but not list it.
    assert_eq!(mode(p.state_dir()), 0o711);
    assert_eq!(mode(p.state_dir().join("state.db")), 0o600);
    assert_eq!(mode(p.state_dir().join("master.keys")), 0o600);
    assert_eq!(mode(p.state_dir().join("server.log")), 0o600);
    assert_eq!(
        mode(p.state_dir().join("agent/id")),
        0o600,
        "the agent's id"
    );
    assert_eq!(mode(p.state_dir().join("agent/logs")), 0o700);
    assert_eq!(mode(p.state_dir().join("controller.json")), 0o600);
    let state = p.state_dir();
    let leaked: Vec<_> = readable_by_others(&state)
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(&state).unwrap();
            !(rel.starts_with("agent/releases")
                || rel.starts_with("agent/data")
                || ["api-port", "agent-port", "controller.lock"]
                    .iter()
                    .any(|n| rel == std::path::Path::new(n)))
        })
        .collect();
    assert!(leaked.is_empty(), "readable by other users: {leaked:?}");
}

#[test]
fn json_bodies_are_small_and_uploads_may_be_large() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.ok(&["apply"]);
    let url = p.controller_url();
    let big = format!(
        "{{\"set\": {{\"A\": \"{}\"}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let answer = p
        .http()
        .post(format!("{url}/v1/config/local/catalog"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 413);
    // A real artifact upload is not held to that limit.
    // Pseudo-random hex: it stays over 1 MiB once compressed.
    let mut x: u64 = 1;
    let noise: String = (0..3 * 1024 * 1024)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            char::from_digit(((x >> 60) & 0xf) as u32, 16).unwrap()
        })
        .collect();
    p.write("catalog/blob.bin", &noise);
    p.ok(&["build", "catalog", "--version", "big"]);
}

#[test]
fn a_controller_that_cannot_start_says_why_at_once() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    // A database the controller cannot open.
    std::fs::create_dir_all(p.state_dir().join("state.db")).unwrap();
    let out = p.wharf(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("could not start"), "{}", text(&out));
    assert!(!stderr(&out).contains("within 30s"), "{}", text(&out));
    assert!(
        stderr(&out).contains("database"),
        "the cause: {}",
        text(&out)
    );
}

#[test]
fn status_says_when_a_service_is_not_converged() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.ok(&["deploy", "catalog", "--env", "local", "--version", "v1"]);
    let out = p.wharf(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The definition now asks for more than runs.
    p.write(
        "wharf.yaml",
        &DEFINITION.replace(
            "services: [catalog]",
            "services: [{ name: catalog, instances: 3 }]",
        ),
    );
    p.ok(&["apply"]);
    let out = p.wharf(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("1 of 3 instances run"),
        "{}",
        text(&out)
    );
    let report = p.json(&["status"]);
    assert_eq!(report["services"][0]["desired"], 3);
    p.ok(&["deploy", "catalog", "--env", "local", "--version", "v1"]);
    let out = p.wharf(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
