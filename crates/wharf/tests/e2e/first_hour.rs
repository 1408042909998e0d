//! The commands of a user's first hour: versions, completions, templates in `run`.

use crate::harness::*;

const ONE: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py", "--port", "{{ port }}"]
    port: http
    health: { http: /health, interval: 100ms }
environments:
  ci: {}
"#;

#[test]
fn version_names_the_cli_and_the_running_controller() {
    let mut p = Project::new(ONE, &["web"]);
    let before = stdout(&p.ok(&["version"]));
    assert!(before.starts_with("wharf "), "{before}");
    assert!(
        before.contains("none runs"),
        "no controller is started for it: {before}"
    );
    assert!(p.controller_pid().is_none());
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let versions = p.json(&["version"]);
    assert_eq!(
        versions["cli"], versions["controller"]["version"],
        "{versions}"
    );
    assert_eq!(versions["build"], versions["controller"]["build"]);
}

#[test]
fn completions_are_generated_for_three_shells() {
    let mut p = Project::new(ONE, &["web"]);
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&p.ok(&["completions", shell]));
        assert!(
            script.contains("rollout") && script.contains("deploy"),
            "{shell}: {}",
            &script[..script.len().min(200)]
        );
    }
    let out = p.wharf(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_definition_file_is_capital_f_and_logs_follow_is_f() {
    let mut p = Project::new(ONE, &["web"]);
    let file = p.path().join("wharf.yaml");
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(WHARF)
        .args(["-F", file.to_str().unwrap(), "validate"])
        .current_dir(other.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = stdout(&p.ok(&["logs", "--help"]));
    assert!(
        help.contains("-f, --follow") && help.contains("--tail"),
        "{help}"
    );
}

const TWO: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
  worker:
    build: ./worker
    run: ["python3", "app.py"]
    port: http
environments:
  ci:
    nodes:
      - name: local
        services: [web, worker]
"#;

#[test]
fn deploying_an_environment_stops_the_services_no_longer_in_it() {
    let mut p = Project::new(TWO, &["web", "worker"]);
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    assert_eq!(p.instances("worker", "ci").len(), 1);
    p.write(
        "wharf.yaml",
        &TWO.replace("services: [web, worker]", "services: [web]"),
    );
    // One service's deploy prunes nothing.
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    assert_eq!(p.instances("worker", "ci").len(), 1);
    let dry = p.ok(&["deploy", "--env", "ci", "--version", "v1", "--dry-run"]);
    assert!(
        stderr(&dry).contains("would stop `worker`: no longer in `ci`"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        p.instances("worker", "ci").len(),
        1,
        "a dry run changes nothing"
    );
    let out = p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    assert!(
        stderr(&out).contains("stopped `worker`: no longer in `ci`"),
        "{}",
        text(&out)
    );
    assert!(p.instances("worker", "ci").is_empty());
    assert_eq!(p.instances("web", "ci").len(), 1, "the rest keeps running");
}
