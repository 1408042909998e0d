//! Definition-file errors through the CLI, and usage errors.

use crate::harness::*;

#[test]
fn a_malformed_definition_gives_exact_locations_and_exit_code_2() {
    let mut p = Project::new(
        "services:\n  catalog:\n    build: ./catalog\n    run: [python3, app.py]\n    helth: { http: /health }\nenvironments:\n  ci:\n    nodes:\n      - name: a\n        services: [catalgo]\n",
        &["catalog"],
    );
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("wharf.yaml:5:5"), "{err}");
    assert!(err.contains("did you mean `health`?"), "{err}");
    assert!(err.contains("wharf.yaml:10:20"), "{err}");
    assert!(err.contains("did you mean `catalog`?"), "{err}");
    assert!(err.contains("has 2 errors"), "{err}");
    // Nothing was started to report this.
    assert!(!p.state_dir().exists());
    let out = p.wharf(&["deploy", "catalog", "--env", "ci"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_and_schema_succeed_on_a_good_file() {
    let mut p = Project::new(
        "services:\n  a: { build: ./a, run: [python3, app.py] }\nenvironments:\n  ci: {}\n  prod: { after: ci }\n",
        &["a"],
    );
    let out = p.ok(&["validate"]);
    assert!(stderr(&out).contains("ci -> prod"), "{}", text(&out));
    let schema: serde_json::Value = serde_json::from_slice(&p.ok(&["schema"]).stdout).unwrap();
    assert!(schema["$defs"]["RawService"]["properties"]["health"].is_object());
}

#[test]
fn unknown_names_on_the_command_line_are_input_errors_with_hints() {
    let mut p = Project::new(
        "services:\n  catalog: { build: ./catalog, run: [python3, app.py] }\nenvironments:\n  ci: {}\n",
        &["catalog"],
    );
    let out = p.wharf(&["deploy", "catalog", "--env", "cii"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean `ci`?"),
        "{}",
        text(&out)
    );
    let out = p.wharf(&["deploy", "catalgo", "--env", "ci"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean `catalog`?"),
        "{}",
        text(&out)
    );
    let out = p.wharf(&["deploy", "catalog", "environment=ci", "--env", "uat"]);
    assert_eq!(out.status.code(), Some(2));
    let out = p.wharf(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_built_service_is_refused_by_a_swarm_environment_with_a_hint() {
    let mut p = Project::new(
        "services:\n  catalog: { build: ./catalog, run: [python3, app.py] }\nenvironments:\n  swarm:\n    engine: { kind: swarm }\n    pools:\n      catalog: { count: 2 }\n",
        &["catalog"],
    );
    p.ok(&["validate"]);
    p.ok(&["build", "catalog", "--version", "v1"]);
    let out = p.wharf(&["deploy", "catalog", "--env", "swarm", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("a swarm runs images"), "{err}");
    assert!(err.contains("Give the service `image:`"), "{err}");
    let history: serde_json::Value = serde_json::from_slice(
        &p.ok(&["history", "catalog", "--env", "swarm", "-o", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(history[0]["state"], "failed", "{history}");
}
