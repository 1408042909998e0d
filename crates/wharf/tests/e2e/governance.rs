//! Who may do what (API tokens, scopes, audit) and the pipeline: promotion of the exact
//! artifact, the rule that a version be healthy in the previous environment first, and
//! approvals.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

const DEFINITION: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  ci: {}
  uat:
    after: ci
  production:
    after: uat
    approval: required
  # Like production, with an approval time short enough to see it expire.
  hotfix:
    after: uat
    approval: required
    approval_expires: 2s
"#;

#[test]
fn promotion_moves_the_healthy_digest_and_waits_for_approval() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    // Approvals need identities the controller can tell apart: API tokens. The CLI on
    // this machine acts as `admin` (the author below); `bob` approves.
    let _controller = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob_token = stdout(&out).trim().to_owned();
    let bob = [("WHARF_TOKEN", bob_token.as_str())];
    p.ok(&["build", "catalog", "--version", "v1"]);

    // Not healthy in ci yet: uat refuses it, with the reason, and nothing changes.
    let out = p.wharf(&["deploy", "catalog", "--env", "uat", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("never healthy in `ci`"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", text(&out));
    assert!(p.instances("catalog", "uat").is_empty());
    assert!(
        p.json(&["history", "catalog", "--env", "uat"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // --force goes past it, recorded in history.
    p.ok(&[
        "deploy",
        "catalog",
        "--env",
        "uat",
        "--version",
        "v1",
        "--force",
    ]);
    let history = p.json(&["history", "catalog", "--env", "uat"]);
    assert_eq!(history[0]["forced"], true);
    p.ok(&["stop", "catalog", "--env", "uat"]);

    // Promotion takes exactly the digest healthy in the environment before.
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    p.write("catalog/note.txt", "a newer build nobody tested");
    p.ok(&["build", "catalog", "--version", "v2"]);
    p.ok(&["promote", "catalog", "--from", "ci", "--to", "uat"]);
    let digest_of = |p: &mut Project, env: &str| -> String {
        p.instances("catalog", env)[0]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ci_digest = digest_of(&mut p, "ci");
    assert_eq!(digest_of(&mut p, "uat"), ci_digest);
    let history = p.json(&["history", "catalog", "--env", "uat"]);
    assert_eq!(history[0]["kind"], "promote");
    assert_eq!(history[0]["forced"], false);

    // Drift from the previous environment shows in status.
    let drift =
        |p: &mut Project| p.json(&["status", "--env", "uat"])["services"][0]["drift"].clone();
    assert_eq!(drift(&mut p)["keys"], 0);
    p.ok(&[
        "config",
        "set",
        "catalog",
        "--env",
        "uat",
        "FEATURE=on",
        "MESSAGE=hi",
    ]);
    assert_eq!(drift(&mut p)["previous_env"], "ci");
    assert_eq!(drift(&mut p)["keys"], 2);
    let out = p.ok(&["status", "--env", "uat"]);
    assert!(
        stdout(&out).contains("2 key(s) differ from ci"),
        "{}",
        text(&out)
    );

    // Production needs an approval by someone else.
    let out = p.wharf_with(
        &["promote", "catalog", "--from", "uat", "--to", "production"],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("wharf approve"), "{}", text(&out));
    assert!(
        p.instances("catalog", "production").is_empty(),
        "nothing runs before approval"
    );
    let pending = p.json(&["deployments", "--pending"]);
    let id = pending[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(pending[0]["env"], "production");

    let out = p.wharf_with(&["approve", &id], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot approve it too"),
        "{}",
        text(&out)
    );
    assert!(p.instances("catalog", "production").is_empty());

    let out = p.wharf_with(&["approve", &id], &bob, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(digest_of(&mut p, "production"), ci_digest);
    let history = p.json(&["history", "catalog", "--env", "production"]);
    assert_eq!(history[0]["approved_by"], "bob");
    assert_eq!(history[0]["user"], "admin");
    assert_eq!(history[0]["state"], "succeeded");

    // A configuration change there is held too: saved, rolled out once approved.
    let out = p.wharf_with(
        &[
            "config",
            "set",
            "catalog",
            "--env",
            "production",
            "MESSAGE=approved",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("wharf approve"), "{}", text(&out));
    let port = p.port("catalog", "production", 0);
    assert_ne!(
        get_json(port)["message"],
        "approved",
        "not before the approval"
    );
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = p.wharf_with(&["approve", &id], &bob, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        get_json(p.port("catalog", "production", 0))["message"],
        "approved"
    );

    // A rejected deploy changes nothing; so does an expired one.
    let out = p.wharf_with(
        &[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v2",
            "--force",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    p.ok(&["reject", &id]);
    assert_eq!(digest_of(&mut p, "production"), ci_digest);
    assert!(
        p.json(&["deployments", "--pending"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = p.wharf_with(&["approve", &id], &bob, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = p.wharf_with(
        &["promote", "catalog", "--from", "uat", "--to", "hotfix"],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(3));
    let out = p.wharf_with(&["approve", &id], &bob, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("expired"), "{}", text(&out));
    assert!(p.instances("catalog", "hotfix").is_empty(), "nothing ran");
    assert_eq!(digest_of(&mut p, "production"), ci_digest);
    let states = |p: &mut Project, env: &str| -> Vec<String> {
        p.json(&["history", "catalog", "--env", env])
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        states(&mut p, "production"),
        ["rejected", "succeeded", "succeeded"]
    );
    assert_eq!(states(&mut p, "hotfix"), ["expired"]);
}

/// A controller with authentication, run as a separate process for one test.
pub(crate) struct AuthController {
    child: Child,
    pub(crate) url: String,
    pub(crate) admin: String,
}

impl AuthController {
    pub(crate) fn start(p: &Project) -> Self {
        let state = p.state_dir();
        let child = Command::new(WHARF)
            .args(["server", "--dev", "--auth", "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let file = state.join("controller.json");
        assert!(
            wait_until(Duration::from_secs(15), || file.exists()),
            "the controller did not start"
        );
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let admin = std::fs::read_to_string(state.join("admin.token")).unwrap();
        Self {
            child,
            url: info["url"].as_str().unwrap().to_owned(),
            admin: admin.trim().to_owned(),
        }
    }
}

impl AuthController {
    /// Runs wharf against this controller with its admin token; what it printed.
    pub(crate) fn as_admin(&self, p: &mut Project, args: &[&str]) -> String {
        let mut all = vec!["--controller", self.url.as_str()];
        all.extend_from_slice(args);
        let out = p.wharf_with(&all, &[("WHARF_TOKEN", self.admin.as_str())], None);
        assert!(out.status.success(), "{}", text(&out));
        stdout(&out).trim().to_owned()
    }
}

impl Drop for AuthController {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn tokens_are_scoped_per_environment_and_action_and_every_change_is_audited() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let c = AuthController::start(&p);
    let mode = std::fs::metadata(p.state_dir().join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let as_token = |p: &mut Project, token: &str, args: &[&str]| {
        let mut all = vec!["--controller", c.url.as_str()];
        all.extend_from_slice(args);
        p.wharf_with(&all, &[("WHARF_TOKEN", token)], None)
    };

    // Without a token: refused.
    let out = as_token(&mut p, "", &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("needs an API token"),
        "{}",
        text(&out)
    );

    let admin = c.admin.clone();
    let out = as_token(
        &mut p,
        &admin,
        &["token", "issue", "ci-bot", "--scope", "ci:deploy,ci:config"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ci = stdout(&out).trim().to_owned();
    assert!(ci.starts_with("wharf_"), "{ci}");

    // The definition's policy is an admin's to set; a ci token cannot submit it.
    let out = as_token(&mut p, &ci, &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("may not admin"), "{}", text(&out));
    let out = as_token(&mut p, &admin, &["apply", "-m", "first"]);
    assert!(out.status.success(), "{}", text(&out));
    // Nor may it change a service that other environments run.
    p.write("wharf.yaml", &DEFINITION.replace("app.py", "other.py"));
    let out = as_token(&mut p, &ci, &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("a service that runs there"),
        "{}",
        text(&out)
    );
    p.write("wharf.yaml", DEFINITION);

    // Allowed: deploy and configure ci.
    let out = as_token(
        &mut p,
        &ci,
        &["deploy", "catalog", "--env", "ci", "--version", "v1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = as_token(
        &mut p,
        &ci,
        &["config", "set", "catalog", "--env", "ci", "A=1"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // Refused with 403, and nothing changes: production, secrets, admin.
    for args in [
        vec![
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v1",
            "--force",
        ],
        vec!["config", "set", "catalog", "--env", "production", "A=2"],
        vec!["secret", "list", "catalog", "--env", "production"],
        vec!["secret", "list", "catalog", "--env", "ci"],
        vec!["token", "issue", "sneaky", "--scope", "*:*"],
        vec!["audit"],
    ] {
        let out = as_token(&mut p, &ci, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains("may not"), "{args:?}: {}", text(&out));
    }
    // The same over HTTP: 403, and 401 without a token.
    let http = reqwest::blocking::Client::new();
    let config_set = |env: &str, token: Option<&str>| {
        let mut request = http
            .post(format!("{}/v1/config/{env}/catalog", c.url))
            .json(&serde_json::json!({ "set": { "A": "9" }, "user": "x" }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(config_set("production", Some(&ci)), 403);
    assert_eq!(config_set("production", None), 401);
    let out = as_token(
        &mut p,
        &admin,
        &[
            "history",
            "catalog",
            "--env",
            "production",
            "--output",
            "json",
        ],
    );
    assert_eq!(stdout(&out).trim(), "[]", "{}", text(&out));
    let out = as_token(
        &mut p,
        &admin,
        &[
            "config",
            "history",
            "catalog",
            "--env",
            "production",
            "--output",
            "json",
        ],
    );
    assert_eq!(stdout(&out).trim(), "[]", "{}", text(&out));

    // History names the token.
    let out = as_token(
        &mut p,
        &admin,
        &["history", "catalog", "--env", "ci", "--output", "json"],
    );
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history[0]["user"], "ci-bot");

    // Revoked: refused at once.
    let out = as_token(&mut p, &admin, &["token", "list", "--output", "json"]);
    let tokens: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-bot")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = as_token(&mut p, &admin, &["token", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = as_token(
        &mut p,
        &ci,
        &["config", "set", "catalog", "--env", "ci", "A=3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("revoked"), "{}", text(&out));
    assert_eq!(
        config_set("ci", Some(&ci)),
        403,
        "a revoked token is refused"
    );
    let out = as_token(
        &mut p,
        &admin,
        &[
            "config", "get", "catalog", "--env", "ci", "--output", "json",
        ],
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got["revision"], 1,
        "nothing changed after the revocation: {got}"
    );

    // The audit log has the changes and the refusals, by name.
    let out = as_token(&mut p, &admin, &["audit", "--output", "json"]);
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = audit.as_array().unwrap();
    let has = |actor: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    assert!(has("ci-bot", "deploy", "succeeded"), "{audit}");
    assert!(has("ci-bot", "deploy", "denied"), "{audit}");
    assert!(has("ci-bot", "config set", "succeeded"), "{audit}");
    assert!(has("admin", "token revoke", "ok"), "{audit}");

    // A controller of this state folder started without `--auth` still requires it.
    drop(c);
    let restarted = Command::new(WHARF)
        .args(["server", "--dev", "--state-dir"])
        .arg(p.state_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = AuthController {
        child: restarted,
        url: String::new(),
        admin: String::new(),
    };
    let file = p.state_dir().join("controller.json");
    assert!(wait_until(Duration::from_secs(15), || file.exists()));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap();
    let open = http.get(format!("{url}/v1/status")).send().unwrap();
    assert_eq!(
        open.status().as_u16(),
        401,
        "still closed after a restart without --auth"
    );

    // Tokens are stored hashed.
    let secret = ci.rsplit('_').next().unwrap();
    let db = std::fs::read(p.state_dir().join("state.db")).unwrap();
    let wal = std::fs::read(p.state_dir().join("state.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    drop(c);
}

#[test]
fn a_controller_beyond_loopback_needs_authentication() {
    let p = Project::new(DEFINITION, &["catalog"]);
    let out = Command::new(WHARF)
        .args(["server", "--dev", "--listen", "0.0.0.0:0", "--state-dir"])
        .arg(p.state_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("without authentication"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_deployer_cannot_drop_approval_from_its_own_copy_of_the_definition() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let c = AuthController::start(&p);
    let admin = [("WHARF_TOKEN", c.admin.as_str())];
    let out = p.wharf_with(&["apply"], &admin, None);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.ok(&[
        "token",
        "issue",
        "deployer",
        "--scope",
        "production:deploy",
        "--scope",
        "ci:deploy",
    ]);
    let deployer = stdout(&out).trim().to_owned();
    let deployer = [("WHARF_TOKEN", deployer.as_str())];
    p.ok(&["build", "catalog", "--version", "v1"]);

    // Its own copy of wharf.yaml without `approval: required`...
    p.write(
        "wharf.yaml",
        &DEFINITION.replace(
            "    approval: required
  # Like",
            "  # Like",
        ),
    );
    let out = p.wharf_with(
        &[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v1",
            "--force",
        ],
        &deployer,
        None,
    );
    // ...is refused as a policy change, and nothing runs.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("may not admin in `production`"),
        "{}",
        text(&out)
    );
    assert!(p.instances("catalog", "production").is_empty());
    assert_eq!(
        p.json(&["definition", "history"]).as_array().unwrap().len(),
        1
    );

    // A request posted by hand names what to deploy, never how: a spec is refused.
    let http = reqwest::blocking::Client::new();
    let answer = http
        .post(format!("{}/v1/deployments", c.url))
        .bearer_auth(deployer[0].1)
        .json(&serde_json::json!({
            "service": "catalog", "env": "production", "version": "v1", "force": true,
            "spec": { "approval_expires_ms": null }
        }))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 422, "{:?}", answer.text());

    // With the stored definition, the deploy is held for approval.
    p.write("wharf.yaml", DEFINITION);
    let out = p.wharf_with(
        &[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v1",
            "--force",
        ],
        &deployer,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("needs approval"), "{}", text(&out));
    assert!(p.instances("catalog", "production").is_empty());
}

#[test]
fn of_a_racing_approve_and_reject_exactly_one_wins() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let c = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob = stdout(&out).trim().to_owned();
    p.ok(&["build", "catalog", "--version", "v1"]);
    p.ok(&["apply"]);
    let http = reqwest::blocking::Client::new();
    for round in 0..8 {
        let out = p.ok(&[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            "v1",
            "--force",
        ]);
        assert!(stderr(&out).contains("needs approval"), "{}", text(&out));
        let id = p.json(&["deployments", "--pending"])[0]["id"]
            .as_i64()
            .unwrap();
        let send = |action: &str| {
            let http = http.clone();
            let url = format!("{}/v1/deployments/{id}/{action}", c.url);
            let bob = bob.clone();
            std::thread::spawn(move || {
                let answer = http
                    .post(url)
                    .bearer_auth(bob)
                    .json(&serde_json::json!({}))
                    .send()
                    .unwrap();
                let status = answer.status().as_u16();
                let body = answer.text().unwrap();
                // The approve answer streams; a lost race ends in an error event.
                let won = status == 200 && !body.contains("\"event\":\"error\"");
                (won, body)
            })
        };
        let (approve, reject) = (send("approve"), send("reject"));
        let (approved, a) = approve.join().unwrap();
        let (rejected, r) = reject.join().unwrap();
        assert!(
            approved ^ rejected,
            "round {round}: approve {approved} ({a}), reject {rejected} ({r})"
        );
        let loser = if approved { &r } else { &a };
        assert!(
            loser.contains("cannot become") || loser.contains("not waiting"),
            "{loser}"
        );
        let state = p.json(&["history", "catalog", "--env", "production"])[0]["state"].clone();
        let expected = if approved { "succeeded" } else { "rejected" };
        assert_eq!(state, expected, "round {round}");
        if approved {
            p.ok(&["stop", "catalog", "--env", "production"]);
        }
    }
}

/// What an instance reads from its configuration URL, with its own token.
fn runtime_values(pid: u64) -> serde_json::Value {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let var = |name: &str| {
        environ
            .split('\0')
            .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned))
            .unwrap()
    };
    reqwest::blocking::Client::new()
        .get(var("WHARF_CONFIG_URL"))
        .bearer_auth(var("WHARF_CONFIG_TOKEN"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn held_configuration_is_invisible_until_approved_and_a_rejected_one_never_ships() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let _controller = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob_token = stdout(&out).trim().to_owned();
    let bob = [("WHARF_TOKEN", bob_token.as_str())];
    let approve_pending = |p: &mut Project| {
        let id = p.json(&["deployments", "--pending"])[0]["id"]
            .as_i64()
            .unwrap()
            .to_string();
        let out = p.wharf_with(&["approve", &id], &bob, None);
        assert!(out.status.success(), "{}", text(&out));
    };
    p.ok(&["build", "catalog", "--version", "v1"]);
    let deploy = [
        "deploy",
        "catalog",
        "--env",
        "production",
        "--version",
        "v1",
        "--force",
    ];
    p.ok(&deploy);
    approve_pending(&mut p);

    // Held: instances, runtime readers and `config get` keep the current values.
    let out = p.ok(&[
        "config",
        "set",
        "catalog",
        "--env",
        "production",
        "MESSAGE=held",
    ]);
    assert!(stderr(&out).contains("wharf approve"), "{}", text(&out));
    let pid = p.instances("catalog", "production")[0]["pid"]
        .as_u64()
        .unwrap();
    assert_ne!(runtime_values(pid)["values"]["MESSAGE"], "held");
    let out = p.ok(&["config", "get", "catalog", "--env", "production"]);
    assert!(!stdout(&out).contains("held"), "{}", text(&out));
    // One held change at a time: a second is refused and saves nothing.
    let out = p.wharf(&[
        "config",
        "set",
        "catalog",
        "--env",
        "production",
        "MESSAGE=other",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("waits for approval"),
        "{}",
        text(&out)
    );

    // Rejected: it never ships, not even with the next approved deploy.
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = p.wharf_with(&["reject", &id], &bob, None);
    assert!(out.status.success(), "{}", text(&out));
    p.write("catalog/note.txt", "v2");
    p.ok(&["build", "catalog", "--version", "v2"]);
    p.ok(&[
        "deploy",
        "catalog",
        "--env",
        "production",
        "--version",
        "v2",
        "--force",
    ]);
    approve_pending(&mut p);
    let port = p.port("catalog", "production", 0);
    assert_eq!(get_json(port)["note"], "v2");
    assert_ne!(get_json(port)["message"], "held");
    let history = p.json(&["config", "history", "catalog", "--env", "production"]);
    assert_eq!(history[0]["state"], "rejected");

    // Approved: then it ships, and readers see it.
    p.ok(&[
        "config",
        "set",
        "catalog",
        "--env",
        "production",
        "MESSAGE=approved",
    ]);
    approve_pending(&mut p);
    let port = p.port("catalog", "production", 0);
    assert_eq!(get_json(port)["message"], "approved");
    let pid = p.instances("catalog", "production")[0]["pid"]
        .as_u64()
        .unwrap();
    assert_eq!(runtime_values(pid)["values"]["MESSAGE"], "approved");
}

/// A random walk of deploys, configuration changes, approvals, rejections and expiries
/// in approval environments: after every step, what each instance serves is a version
/// and a configuration value that an approver let through, never a held or rejected one.
#[test]
fn any_sequence_of_changes_and_decisions_runs_only_approved_revisions() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let _controller = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob_token = stdout(&out).trim().to_owned();
    let bob = [("WHARF_TOKEN", bob_token.as_str())];
    for v in ["v1", "v2", "v3"] {
        p.write("catalog/note.txt", v);
        p.ok(&["build", "catalog", "--version", v]);
    }
    // What an approver let through, per environment: versions and MESSAGE values.
    let mut approved_versions: std::collections::HashMap<&str, Vec<String>> = Default::default();
    let mut approved_messages: std::collections::HashMap<&str, Vec<String>> = Default::default();
    // What each pending deployment would ship, by id.
    let mut pending: Vec<(String, &str, Option<String>, Option<String>)> = Vec::new();
    let mut seed: u64 = std::env::var("WHARF_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let envs = ["production", "hotfix"];
    for step in 0..100 {
        let env = envs[next(2) as usize];
        let running = !p.instances("catalog", env).is_empty();
        let newest_pending = |p: &mut Project| {
            p.json(&["deployments", "--pending"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["env"] == env)
                .map(|d| d["id"].as_i64().unwrap().to_string())
                .next_back()
        };
        match next(5) {
            0 => {
                let version = format!("v{}", next(3) + 1);
                let out = p.wharf(&[
                    "deploy",
                    "catalog",
                    "--env",
                    env,
                    "--version",
                    &version,
                    "--force",
                ]);
                assert!(out.status.success(), "step {step}: {}", text(&out));
                if let Some(id) = newest_pending(&mut p) {
                    pending.push((id, env, Some(version), None));
                }
            }
            1 if running => {
                let message = format!("m{step}");
                let out = p.wharf(&[
                    "config",
                    "set",
                    "catalog",
                    "--env",
                    env,
                    &format!("MESSAGE={message}"),
                ]);
                // A second held change is refused: that is one of the outcomes.
                if out.status.success()
                    && let Some(id) = newest_pending(&mut p)
                {
                    pending.push((id, env, None, Some(message)));
                }
            }
            2 | 3 => {
                let Some(index) = pending.iter().rposition(|d| d.1 == env) else {
                    continue;
                };
                let (id, env, version, message) = pending.remove(index);
                let out = p.wharf_with(&["approve", &id], &bob, None);
                if out.status.success() {
                    approved_versions.entry(env).or_default().extend(version);
                    approved_messages.entry(env).or_default().extend(message);
                }
            }
            4 => {
                let Some(index) = pending.iter().rposition(|d| d.1 == env) else {
                    continue;
                };
                let (id, ..) = pending.remove(index);
                let _ = p.wharf_with(&["reject", &id], &bob, None);
            }
            _ => continue,
        }
        for env in envs {
            for instance in p.instances("catalog", env) {
                let port = instance["port"].as_u64().unwrap() as u16;
                let Some(served) =
                    get(port, "/").and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                else {
                    continue;
                };
                let version = served["version"].as_str().unwrap_or_default().to_owned();
                assert!(
                    approved_versions
                        .get(env)
                        .is_some_and(|v| v.contains(&version)),
                    "step {step}: {env} runs {version}, approved: {approved_versions:?}"
                );
                // What the instance was started with, and what it reads at runtime.
                let read = instance["pid"]
                    .as_u64()
                    .map(|pid| runtime_values(pid)["values"]["MESSAGE"].clone());
                for message in [
                    served["message"].as_str(),
                    read.as_ref().and_then(|r| r.as_str()),
                ]
                .into_iter()
                .flatten()
                {
                    assert!(
                        approved_messages
                            .get(env)
                            .is_some_and(|m| m.iter().any(|a| a == message)),
                        "step {step}: {env} serves MESSAGE={message}, approved: {approved_messages:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn dropping_approval_from_an_environment_needs_an_approval_itself() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let _controller = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob_token = stdout(&out).trim().to_owned();
    let bob = [("WHARF_TOKEN", bob_token.as_str())];
    p.ok(&["apply"]);
    p.ok(&["build", "catalog", "--version", "v1"]);
    let relaxed = DEFINITION.replace("    approval: required\n  # Like", "  # Like");

    // Even an admin alone cannot lift the four-eyes rule: the revision is held.
    p.write("wharf.yaml", &relaxed);
    let out = p.ok(&["apply", "-m", "no more approvals"]);
    assert!(stderr(&out).contains("waiting:"), "{}", text(&out));
    let pending = p.json(&["deployments", "--pending"]);
    assert_eq!(pending[0]["kind"], "definition");
    let id = pending[0]["id"].as_i64().unwrap().to_string();
    // Still in force: the old policy, so a deploy is held and a new apply is refused.
    let out = p.wharf(&[
        "deploy",
        "catalog",
        "--env",
        "production",
        "--version",
        "v1",
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("waits for approval"),
        "{}",
        text(&out)
    );
    assert!(p.instances("catalog", "production").is_empty());
    let history = p.json(&["definition", "history"]);
    assert_eq!(history[0]["state"], "held");

    // Rejected: it never comes into force.
    let out = p.wharf_with(&["reject", &id], &bob, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.json(&["definition", "history"])[0]["state"], "rejected");

    // Submitted again and approved by another token: in force, deploys no longer wait.
    let out = p.ok(&["apply", "-m", "no more approvals, agreed"]);
    assert!(stderr(&out).contains("waiting:"), "{}", text(&out));
    let id = p.json(&["deployments", "--pending"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = p.wharf(&["approve", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the author cannot approve: {}",
        text(&out)
    );
    let out = p.wharf_with(&["approve", &id], &bob, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.json(&["definition", "history"])[0]["state"], "active");
    let out = p.ok(&[
        "deploy",
        "catalog",
        "--env",
        "production",
        "--version",
        "v1",
        "--force",
    ]);
    assert!(!stderr(&out).contains("needs approval"), "{}", text(&out));
    assert_eq!(p.instances("catalog", "production").len(), 1);
}

#[test]
fn comparing_secrets_needs_the_secret_grant_in_both_environments() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let c = AuthController::start(&p);
    p.ok(&["apply"]);
    let out = p.wharf_with(
        &["secret", "set", "catalog", "--env", "production", "PIN"],
        &[],
        Some(b"4821"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = p.ok(&["token", "issue", "ci-secrets", "--scope", "ci:secret"]);
    let ci = stdout(&out).trim().to_owned();
    let out = p.wharf_with(
        &["secret", "set", "catalog", "--env", "ci", "PIN"],
        &[("WHARF_TOKEN", &ci)],
        Some(b"1234"),
    );
    assert!(out.status.success(), "{}", text(&out));
    // Guessing production's PIN by comparing with ci's is refused.
    let answer = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v1/secrets/compare?service=catalog&a=ci&b=production",
            c.url
        ))
        .bearer_auth(&ci)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 403, "{:?}", answer.text());
    // An admin may compare.
    let diff = p.json(&[
        "config",
        "diff",
        "catalog",
        "--env",
        "ci",
        "--env",
        "production",
    ]);
    assert!(diff.to_string().contains("PIN"), "{diff}");
}

#[test]
fn an_older_held_deployment_cannot_be_approved_after_a_newer_one_ran() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let _controller = AuthController::start(&p);
    let out = p.ok(&["token", "issue", "bob", "--scope", "*:approve"]);
    let bob_token = stdout(&out).trim().to_owned();
    let bob = [("WHARF_TOKEN", bob_token.as_str())];
    p.ok(&["apply"]);
    // A grant for an environment that does not exist is a typo.
    let out = p.wharf(&["token", "issue", "x", "--scope", "prodution:deploy"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("did you mean `production`"),
        "{}",
        text(&out)
    );
    for v in ["v1", "v2"] {
        p.write("catalog/note.txt", v);
        p.ok(&["build", "catalog", "--version", v]);
        p.ok(&[
            "deploy",
            "catalog",
            "--env",
            "production",
            "--version",
            v,
            "--force",
        ]);
    }
    let pending = p.json(&["deployments", "--pending"]);
    let id = |i: usize| pending[i]["id"].as_i64().unwrap().to_string();
    let (older, newer) = (id(0), id(1));
    let out = p.wharf_with(&["approve", &format!("#{newer}")], &bob, None);
    assert!(
        out.status.success(),
        "ids as listings show them: {}",
        text(&out)
    );
    let out = p.wharf_with(&["approve", &older], &bob, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("ran since"), "{}", text(&out));
    assert_eq!(get_json(p.port("catalog", "production", 0))["note"], "v2");
}

#[test]
fn a_token_reads_only_the_environments_it_has_grants_on() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let _controller = AuthController::start(&p);
    p.ok(&["build", "catalog", "--version", "v1"]);
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    p.ok(&["deploy", "catalog", "--env", "uat", "--version", "v1"]);
    let out = p.ok(&["token", "issue", "ci-reader", "--scope", "ci:read"]);
    let ci = stdout(&out).trim().to_owned();
    let ci = [("WHARF_TOKEN", ci.as_str())];
    let out = p.wharf_with(&["status", "-o", "json"], &ci, None);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let envs: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["env"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["ci"]);
    for args in [
        &["history", "catalog", "--env", "uat"][..],
        &["logs", "catalog", "--env", "uat"],
        &["status", "--env", "uat"],
        &["config", "get", "catalog", "--env", "uat"],
    ] {
        let out = p.wharf_with(args, &ci, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains("may not read in `uat`"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = p.wharf_with(&["history", "catalog", "--env", "ci"], &ci, None);
    assert!(out.status.success(), "{}", text(&out));
}

/// Another machine on a link of its own: a network namespace joined to this one by a
/// veth pair, `10.232.N.2` there and `10.232.N.1` here. Removed however the test ends.
struct Peer {
    ns: String,
    link: String,
    here: String,
}

impl Peer {
    fn new() -> Option<Self> {
        let n = std::process::id() % 250;
        let (ns, link) = (format!("wtls{n}"), format!("wtls{n}a"));
        let here = format!("10.232.{n}.1");
        let peer = Self {
            ns: ns.clone(),
            link: link.clone(),
            here: here.clone(),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.clone()],
            vec![
                "link".into(),
                "add".into(),
                link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                format!("wtls{n}b"),
            ],
            vec![
                "link".into(),
                "set".into(),
                format!("wtls{n}b"),
                "netns".into(),
                ns.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{here}/24"),
                "dev".into(),
                link.clone(),
            ],
            vec!["link".into(), "set".into(), link.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.clone(),
                "addr".into(),
                "add".into(),
                format!("10.232.{n}.2/24"),
                "dev".into(),
                format!("wtls{n}b"),
            ],
            vec![
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                format!("wtls{n}b"),
                "up".into(),
            ],
            vec![
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let ok = Command::new("ip")
                .args(&step)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        Some(peer)
    }

    /// A command run on the peer.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn beyond_loopback_the_api_takes_only_https_and_the_cli_pins_its_ca() {
    let peer = nix::unistd::geteuid().is_root().then(Peer::new).flatten();
    let Some(peer) = peer else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this as root, with iproute2"
        );
        eprintln!("skipped: needs root and iproute2 for a peer in a network namespace");
        return;
    };
    let ip = peer.here.clone();
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let state = p.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let log = state.join("test-server.log");
    let mut child = Command::new(WHARF)
        .args([
            "server",
            "--dev",
            "--auth",
            "--listen",
            "0.0.0.0:0",
            "--state-dir",
        ])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let file = state.join("controller.json");
    assert!(wait_until(Duration::from_secs(15), || file.exists()));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let port = info["url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let admin = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let admin = admin.trim();
    // The controller says which CA to pin (its log is written as it goes).
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("WHARF_CA="))
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    let fingerprint = logged
        .split("WHARF_CA=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no CA fingerprint in the log: {logged}"))
        .to_owned();

    // Plain HTTP from another machine is answered with how to connect, and nothing
    // else.
    let script = format!(
        "import urllib.request, urllib.error\ntry:\n    urllib.request.urlopen('http://{ip}:{port}/v1/status')\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())"
    );
    let plain = peer
        .command("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&plain.stdout);
    assert!(
        answer.starts_with("400"),
        "{answer} {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(answer.contains("HTTPS beyond loopback"), "{answer}");
    // Over HTTPS from there, with the CA pinned, it answers.
    let remote = peer
        .command(WHARF)
        .args(["--controller", &format!("https://{ip}:{port}"), "status"])
        .env("WHARF_TOKEN", admin)
        .env("WHARF_CA", &fingerprint)
        .env("NO_COLOR", "1")
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(remote.status.success(), "{}", text(&remote));
    // The CLI refuses to send a token that way at all.
    let token = [("WHARF_TOKEN", admin)];
    let http_url = format!("http://{ip}:{port}");
    let out = p.wharf_with(&["--controller", &http_url, "status"], &token, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("in clear"), "{}", text(&out));

    // Over HTTPS, with the CA pinned by fingerprint or by file, it works.
    let https_url = format!("https://{ip}:{port}");
    let ca_file = state.join("pki/ca.pem");
    for pin in [fingerprint.clone(), ca_file.display().to_string()] {
        let out = p.wharf_with(
            &["--controller", &https_url, "status"],
            &[("WHARF_TOKEN", admin), ("WHARF_CA", &pin)],
            None,
        );
        assert!(out.status.success(), "{pin}: {}", text(&out));
    }
    // Without a pin, or with another CA's, nothing is sent.
    let out = p.wharf_with(&["--controller", &https_url, "status"], &token, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("WHARF_CA"), "{}", text(&out));
    let other = format!("sha256:{}", "0".repeat(64));
    let out = p.wharf_with(
        &["--controller", &https_url, "status"],
        &[("WHARF_TOKEN", admin), ("WHARF_CA", &other)],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("nothing was sent"), "{}", text(&out));
    // Loopback keeps plain HTTP.
    let local = format!("http://127.0.0.1:{port}");
    let out = p.wharf_with(&["--controller", &local, "status"], &token, None);
    assert!(out.status.success(), "{}", text(&out));

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

#[test]
fn a_change_a_token_may_not_make_is_refused_before_its_body_is_read() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    let c = AuthController::start(&p);
    let admin = [("WHARF_TOKEN", c.admin.as_str())];
    let out = p.wharf_with(&["apply"], &admin, None);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.ok(&["token", "issue", "ci-only", "--scope", "ci:secret"]);
    let ci = stdout(&out).trim().to_owned();
    // Headers announcing a body far over the route's limit, and no body: the answer
    // comes without the body ever being sent, refused for the grant (403), so the
    // controller never buffers a body for an environment the token has no grant on.
    let status = |path: &str| -> u16 {
        use std::io::{BufRead, Write};
        let address = c.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(address).unwrap();
        write!(
            tcp,
            "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ci}\r\nContent-Type: application/json\r\nContent-Length: 5242880\r\n\r\n"
        )
        .unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(tcp).read_line(&mut line).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // (Before, the controller waited for the body: the read above timed out.)
    assert_eq!(status("/v1/secrets/production/catalog/PIN"), 403);
    // The refusal is audited like any other.
    let out = p.wharf_with(&["audit", "--output", "json"], &admin, None);
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ci-only"
                && e["action"] == "secret set"
                && e["outcome"] == "denied"),
        "{audit}"
    );
}

#[test]
fn a_machine_is_not_added_by_command_where_changes_wait_for_approval() {
    let definition = r#"
services: {}
environments:
  production:
    approval: required
    hosts:
      provider: ssh
      hosts:
        - { name: web-1, address: 10.255.0.5, host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBase64KeyBody" }
"#;
    let mut p = Project::new(definition, &[]);
    let _controller = AuthController::start(&p);
    p.ok(&["apply"]);
    let revisions = p.json(&["definition", "history"]).as_array().map(Vec::len);
    let out = p.wharf(&[
        "host",
        "add",
        "web-2",
        "--env",
        "production",
        "--ssh",
        "root@10.255.0.6",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("`production` waits for approval of its changes"),
        "{}",
        text(&out)
    );
    let history = p.json(&["definition", "history"]);
    assert_eq!(history.as_array().map(Vec::len), revisions, "{history}");
}
