//! The configuration service: versioned overrides rolled out as deploys, rollback of
//! artifact and configuration together, runtime reads and watches, reload by signal.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const DEFINITION: &str = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { MESSAGE: "declared", LEVEL: info }
environments:
  ci:
    config:
      catalog: { LEVEL: debug }
"#;

#[test]
fn config_changes_roll_instances_and_rollback_restores_artifact_and_config() {
    let mut p = Project::new(DEFINITION, &["catalog"]);
    p.write("catalog/note.txt", "first");
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v1"]);
    assert_eq!(get_json(p.port("catalog", "ci", 0))["message"], "declared");

    let out = p.ok(&[
        "config",
        "set",
        "catalog",
        "--env",
        "ci",
        "MESSAGE=one",
        "-m",
        "first override",
    ]);
    assert!(stderr(&out).contains("revision 1"), "{}", text(&out));
    let port = p.port("catalog", "ci", 0);
    assert_eq!(
        get_json(port)["message"],
        "one",
        "the change was rolled out"
    );
    assert_eq!(get_json(port)["level"], "debug", "declared layers stay");

    // Where each value comes from.
    let got = p.json(&["config", "get", "catalog", "--env", "ci"]);
    let source = |key: &str| -> String {
        got["config"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| r["source"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(source("MESSAGE"), "config set (revision 1)");
    assert_eq!(source("LEVEL"), "wharf.yaml: environment ci");

    // A new version runs with the newest configuration; then a second change.
    p.write("catalog/note.txt", "second");
    p.ok(&["deploy", "catalog", "--env", "ci", "--version", "v2"]);
    p.ok(&["config", "set", "catalog", "--env", "ci", "MESSAGE=two"]);
    let answer = get_json(p.port("catalog", "ci", 0));
    assert_eq!(
        (answer["note"].as_str(), answer["message"].as_str()),
        (Some("second"), Some("two"))
    );

    let history = p.json(&["history", "catalog", "--env", "ci"]);
    let newest = &history[0];
    assert_eq!(
        newest["kind"], "config",
        "a configuration roll is a deploy in history"
    );
    assert_eq!(newest["config_revision"], 2);

    // Rolling back brings v1 back with the configuration it ran with.
    p.ok(&["rollback", "catalog", "--env", "ci"]);
    let answer = get_json(p.port("catalog", "ci", 0));
    assert_eq!(
        (answer["note"].as_str(), answer["message"].as_str()),
        (Some("first"), Some("one"))
    );
    let revisions = p.json(&["config", "history", "catalog", "--env", "ci"]);
    assert_eq!(revisions[0]["revision"], 3);
    assert_eq!(revisions[0]["values"]["MESSAGE"], "one");
    assert!(
        revisions[0]["message"]
            .as_str()
            .unwrap()
            .contains("restored by the rollback"),
        "{revisions}"
    );
    assert_eq!(revisions[2]["message"], "first override");

    // Unset: the declared value applies again. Unsetting a key that is not set changes
    // nothing and says so.
    p.ok(&["config", "unset", "catalog", "--env", "ci", "MESSAGE"]);
    assert_eq!(get_json(p.port("catalog", "ci", 0))["message"], "declared");
    let out = p.wharf(&["config", "unset", "catalog", "--env", "ci", "MESSAGE"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("is not set"), "{}", text(&out));
    assert_eq!(
        p.json(&["config", "history", "catalog", "--env", "ci"])
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // An unknown service or environment, a malformed pair or key: refused before
    // anything changes.
    let out = p.wharf(&["config", "set", "catalgo", "--env", "ci", "A=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("catalog"),
        "a suggestion: {}",
        text(&out)
    );
    let out = p.wharf(&["config", "set", "catalog", "--env", "prod", "A=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = p.wharf(&["config", "set", "catalog", "--env", "ci", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = p.wharf(&["config", "set", "catalog", "--env", "ci", "BAD-KEY=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        p.json(&["config", "history", "catalog", "--env", "ci"])
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// An app that reads its configuration over HTTP and watches it: each answer is
/// appended to SEEN_FILE (with a count of requests made), and so is each SIGUSR1.
pub const WATCHER: &str = r#"
import json, os, signal, sys, threading, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = os.environ["SEEN_FILE"]
lock = threading.Lock()

def note(line):
    with lock, open(seen, "a") as f:
        f.write(line + "\n")

signal.signal(signal.SIGUSR1, lambda *_: note("signal USR1"))

def watch():
    url, token = os.environ["WHARF_CONFIG_URL"], os.environ["WHARF_CONFIG_TOKEN"]
    revision, requests = -1, 0
    while True:
        request = urllib.request.Request(
            url + "&wait=%d&timeout=120" % revision,
            headers={"Authorization": "Bearer " + token})
        answer = json.load(urllib.request.urlopen(request, timeout=130))
        requests += 1
        revision = answer["revision"]
        note("revision %d KEY=%s requests=%d" % (revision, answer["values"].get("KEY"), requests))

threading.Thread(target=watch, daemon=True).start()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// A service running [`WATCHER`], reloaded by USR1; `@SEEN@` stands for its file.
pub const WATCHER_SERVICE: &str = r#"
services:
  watcher:
    build: ./watcher
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    on_change: reload
    reload_signal: USR1
    config: { KEY: start, SEEN_FILE: "@SEEN@" }
"#;

#[test]
fn instances_watch_their_configuration_and_reload_on_a_signal() {
    let definition = format!("{WATCHER_SERVICE}environments:\n  ci: {{}}\n");
    let mut p = Project::new(&definition.replace("@SEEN@", "placeholder"), &[]);
    let seen = p.path().join("seen.log");
    p.write(
        "wharf.yaml",
        &definition.replace("@SEEN@", seen.to_str().unwrap()),
    );
    p.write("watcher/app.py", WATCHER);
    p.ok(&["deploy", "watcher", "--env", "ci", "--version", "v1"]);
    let pid = p.instances("watcher", "ci")[0]["pid"].as_u64().unwrap();
    let lines = || std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || lines().contains("revision 0")),
        "{}",
        lines()
    );

    for (n, value) in [(1, "a"), (2, "b"), (3, "c")] {
        let out = p.ok(&[
            "config",
            "set",
            "watcher",
            "--env",
            "ci",
            &format!("KEY={value}"),
        ]);
        assert!(
            stderr(&out).contains("sent USR1 to 1 instance"),
            "{}",
            text(&out)
        );
        let expected = format!("revision {n} KEY={value}");
        assert!(
            wait_until(Duration::from_secs(10), || lines().contains(&expected)),
            "the watcher never saw {expected}:\n{}",
            lines()
        );
    }
    // Each change seen once, in order, one request per change: no busy polling.
    let revisions: Vec<String> = lines()
        .lines()
        .filter(|l| l.starts_with("revision"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        revisions,
        [
            "revision 0 KEY=start requests=1",
            "revision 1 KEY=a requests=2",
            "revision 2 KEY=b requests=3",
            "revision 3 KEY=c requests=4",
        ]
    );
    // Watchers hear of a change before instances are signalled: wait for the last one.
    assert!(
        wait_until(Duration::from_secs(10), || lines()
            .matches("signal USR1")
            .count()
            == 3),
        "{}",
        lines()
    );
    // Reloaded, not restarted.
    assert_eq!(
        p.instances("watcher", "ci")[0]["pid"].as_u64().unwrap(),
        pid
    );

    // The runtime endpoint wants the instance's token.
    let env_of = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env_text = String::from_utf8_lossy(&env_of);
    let url = env_text
        .split('\0')
        .find_map(|v| v.strip_prefix("WHARF_CONFIG_URL="))
        .unwrap()
        .to_owned();
    let client = reqwest::blocking::Client::new();
    let refused = client.get(&url).send().unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let forged = client
        .get(&url)
        .bearer_auth("wr2:ci:watcher:99999999999999:0000")
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let token = env_text
        .split('\0')
        .find_map(|v| v.strip_prefix("WHARF_CONFIG_TOKEN="))
        .unwrap()
        .to_owned();
    let read = |token: &str| client.get(&url).bearer_auth(token).send().unwrap();
    assert_eq!(read(&token).status().as_u16(), 200);
    // A key rotation revokes every runtime token made before it.
    p.ok(&["secret", "rotate-key"]);
    assert_eq!(
        read(&token).status().as_u16(),
        401,
        "the old token outlived the rotation"
    );
}

#[test]
fn secrets_reach_only_their_instances_and_never_appear_in_plaintext() {
    let definition = r#"
services:
  catalog:
    build: ./catalog
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { MESSAGE: hello }
  orders:
    build: ./orders
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  ci: {}
  uat:
    after: ci
"#;
    let mut p = Project::new(definition, &["catalog", "orders"]);
    const SECRET: &str = "pa55-Word-7f3a9c1e";
    // Never from argv: an extra argument is a usage error.
    let out = p.wharf(&[
        "secret",
        "set",
        "catalog",
        "--env",
        "ci",
        "DB_PASSWORD",
        SECRET,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = p.wharf_with(
        &["secret", "set", "catalog", "--env", "ci", "DB_PASSWORD"],
        &[],
        Some(format!("{SECRET}\n").as_bytes()),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = p.wharf_with(
        &["secret", "set", "catalog", "--env", "uat", "DB_PASSWORD"],
        &[],
        Some(b"another-value"),
    );
    assert!(out.status.success(), "{}", text(&out));
    // An empty value is refused.
    let out = p.wharf_with(
        &["secret", "set", "catalog", "--env", "ci", "EMPTY"],
        &[],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    let environ = |p: &mut Project, service: &str| -> String {
        let pid = p.instances(service, "ci")[0]["pid"].as_u64().unwrap();
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .into_owned()
    };
    assert!(environ(&mut p, "catalog").contains(&format!("DB_PASSWORD={SECRET}\0")));
    assert!(
        !environ(&mut p, "orders").contains("DB_PASSWORD"),
        "only its own service gets it"
    );

    // Rotating the master key keeps the secret readable; a redeploy still gets it.
    let rotated = p.json(&["secret", "rotate-key"]);
    assert_eq!(rotated["resealed"], 2);
    p.ok(&[
        "config",
        "set",
        "catalog",
        "--env",
        "ci",
        "MESSAGE=after-rotation",
    ]);
    assert!(environ(&mut p, "catalog").contains(&format!("DB_PASSWORD={SECRET}\0")));

    // Listings show names, and diffs only whether values differ.
    let listed = p.json(&["secret", "list", "catalog", "--env", "ci"]);
    assert_eq!(listed[0]["key"], "DB_PASSWORD");
    let diff = p.json(&["config", "diff", "catalog", "--env", "ci", "--env", "uat"]);
    let secret_row = diff
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "DB_PASSWORD")
        .unwrap();
    assert_eq!(secret_row["note"], "secret: differs");
    assert_eq!(
        secret_row["values"],
        Value::from(vec![Value::Null, Value::Null])
    );

    // The value is nowhere: not in any command's output, not in any file of the state
    // folder (database, logs, agent state), not in the controller's log.
    let mut outputs = String::new();
    for args in [
        vec!["status", "--env", "ci"],
        vec!["history", "catalog", "--env", "ci"],
        vec!["config", "get", "catalog", "--env", "ci"],
        vec!["config", "history", "catalog", "--env", "ci"],
        vec!["secret", "list", "catalog", "--env", "ci"],
        vec!["audit"],
        vec!["logs", "catalog", "--env", "ci"],
    ] {
        outputs.push_str(&text(&p.ok(&args)));
        let mut json = args.clone();
        json.extend(["--output", "json"]);
        if args[0] != "logs" {
            outputs.push_str(&text(&p.ok(&json)));
        }
    }
    assert!(outputs.contains("DB_PASSWORD"));
    assert!(!outputs.contains(SECRET), "a command printed the secret");
    let mut files = 0;
    for entry in walk(&p.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        files += 1;
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret in plaintext",
            entry.display()
        );
    }
    assert!(files > 5, "the state folder was searched");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
