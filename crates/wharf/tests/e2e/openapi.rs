//! The API against its own OpenAPI document: schemathesis (from PyPI, in the virtual
//! environment scripts/test makes) drives a running controller through every operation
//! the document describes. No answer may be a 5xx, and every answer must be what the
//! document says, in status, content type and body (NDJSON event streams too, through
//! `schemathesis_hooks.py`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::harness::*;

const SHOP: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s
    port: http
    health: { http: /health, timeout: 10s }
environments:
  ci: {}
  production: { after: ci, approval: required }
"#;

/// What the run sends: its token comes from the environment, never argv. Known names
/// are mixed into what it generates, so that operations reach past "not found".
const CONFIG: &str = r#"
headers = { Authorization = "Bearer ${WHARF_FUZZ_TOKEN}" }
request-timeout = 30.0

[generation]
max-examples = 12

[dictionaries.envs]
values = ["ci", "production"]
[dictionaries.services]
values = ["web"]
[dictionaries.versions]
values = ["v1", "v2"]

[parameters]
env = { dictionary = "envs", probability = 0.5 }
service = { dictionary = "services", probability = 0.5 }
"body.env" = { dictionary = "envs", probability = 0.5 }
"body.service" = { dictionary = "services", probability = 0.5 }
"body.version" = { dictionary = "versions", probability = 0.5 }
# Following logs is a stream that never ends: schemathesis reads the lines there are.
"query.follow" = false
"#;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

/// scripts/test makes the virtual environment; `WHARF_SCHEMATHESIS` names its binary.
fn schemathesis() -> Option<PathBuf> {
    let found = std::env::var_os("WHARF_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/schemathesis/bin/schemathesis")
        });
    if found.exists() {
        return Some(found);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI has schemathesis: scripts/test installs it into target/schemathesis"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "skipping: needs schemathesis (scripts/test installs it; or python3 -m venv \
             target/schemathesis && target/schemathesis/bin/pip install schemathesis)"
        );
    }
    None
}

#[test]
fn every_operation_answers_as_its_document_says() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let mut p = Project::new(SHOP, &["web"]);
    let c = crate::governance::AuthController::start(&p);
    let as_admin = |p: &mut Project, args: &[&str]| c.as_admin(p, args);
    as_admin(&mut p, &["apply"]);
    as_admin(&mut p, &["deploy", "web", "--env", "ci", "--version", "v1"]);
    let fuzz = as_admin(&mut p, &["token", "issue", "fuzz", "--scope", "*:*"]);

    let work = p.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("schemathesis.toml"), CONFIG).unwrap();
    std::fs::write(
        work.join("schemathesis_hooks.py"),
        include_str!("schemathesis_hooks.py"),
    )
    .unwrap();
    let document = format!("{}/v1/openapi.json", c.url);
    let run = |only_revoke: bool| {
        let mut command = Command::new(&schemathesis);
        command
            .current_dir(&work)
            .env("WHARF_FUZZ_TOKEN", &fuzz)
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", &work)
            .env("NO_COLOR", "1")
            .args(["--config-file", "schemathesis.toml", "run", &document])
            .args(["--checks", CHECKS, "--workers", "1"]);
        // A revoked token answers 403 to everything after: revoking runs last, alone.
        if only_revoke {
            command.args(["--include-operation-id", "revoke_token"]);
        } else {
            command.args(["--exclude-operation-id", "revoke_token"]);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .expect("run schemathesis");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "schemathesis found failures:\n{report}"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{report}");
        }
        report
    };
    let described: serde_json::Value = reqwest::blocking::get(&document).unwrap().json().unwrap();
    let operations: usize = described["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let report = run(false);
    let all_but_revoke = format!("Tested: {}", operations - 1);
    assert!(report.contains(&all_but_revoke), "{report}");
    run(true);

    // The controller still serves, and what it ran it still runs.
    let status = as_admin(&mut p, &["status", "--output", "json"]);
    assert!(status.contains("\"services\""), "{status}");
}
