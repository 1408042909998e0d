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

#[test]
fn restart_replaces_every_instance_and_fails_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let definition = ONE.replace(
        "  ci: {}\n",
        "  ci:\n    nodes:\n      - name: local\n        services: [{ name: web, instances: 2 }]\n",
    );
    let mut p = Project::new(&definition, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let before: Vec<i64> = p
        .instances("web", "ci")
        .iter()
        .map(|i| i["pid"].as_i64().unwrap())
        .collect();
    let address = p.address("web", "ci");
    let (running, sent, failed) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let client = {
        let (running, sent, failed) = (running.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            while running.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if !http
                    .get(&address)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let out = p.ok(&["restart", "web", "--env", "ci"]);
    assert!(
        stderr(&out).contains("restarted web in ci"),
        "{}",
        text(&out)
    );
    running.store(false, Ordering::Relaxed);
    client.join().unwrap();
    let after = p.instances("web", "ci");
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|i| i["version"] == "v1"));
    assert!(
        after
            .iter()
            .all(|i| !before.contains(&i["pid"].as_i64().unwrap())),
        "every instance is new: {before:?} -> {after:?}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {}",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        p.json(&["history", "web", "--env", "ci"])[0]["kind"],
        "restart"
    );
    let out = p.wharf(&["restart", "web", "--env", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn logs_in_json_are_one_object_per_line() {
    let mut p = Project::new(ONE, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let out = p.ok(&["logs", "web", "--env", "ci", "-o", "json"]);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["line"]
            .as_str()
            .is_some_and(|t| t.contains("starting on"))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["service"] == "web" && l["env"] == "ci")
    );
}

/// An app that counts its starts in a file of its data folder, told by a template.
const COUNTING_APP: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

data = sys.argv[1]
assert data == os.environ["WHARF_DATA_DIR"], (data, os.environ["WHARF_DATA_DIR"])
path = os.path.join(data, "starts")
starts = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(starts))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"starts": starts, "data": data, "version": os.environ["WHARF_VERSION"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn each_instance_has_a_data_folder_of_its_own_kept_across_versions() {
    let definition = r#"
services:
  store:
    build: ./store
    run: ["python3", "app.py", "{{ data_dir }}"]
    port: http
    health: { http: /health, interval: 100ms }
environments:
  local: {}
  ci:
    after: local
"#;
    let mut p = Project::new(definition, &["store"]);
    p.write("store/app.py", COUNTING_APP);
    p.ok(&["deploy", "store", "--env", "local", "--version", "v1"]);
    p.ok(&["deploy", "store", "--env", "ci", "--version", "v1"]);
    let local = get_json(p.address_port("store", "local"));
    let ci = get_json(p.address_port("store", "ci"));
    assert_ne!(
        local["data"], ci["data"],
        "never shared between environments"
    );
    assert_eq!(
        (local["starts"].as_u64(), ci["starts"].as_u64()),
        (Some(1), Some(1))
    );
    // A new version (started beside the old one, under a new instance number) finds
    // the folder its slot had.
    p.ok(&["deploy", "store", "--env", "local", "--version", "v2"]);
    let again = get_json(p.address_port("store", "local"));
    assert_eq!(again["version"], "v2");
    assert_eq!(again["data"], local["data"], "{again}");
    assert_eq!(
        again["starts"], 2,
        "it kept what the old version wrote: {again}"
    );
    // `down` keeps data.
    p.ok(&["down", "--env", "local"]);
    p.ok(&["deploy", "store", "--env", "local", "--version", "v2"]);
    assert_eq!(get_json(p.address_port("store", "local"))["starts"], 3);

    // `--purge` removes it, but only once confirmed; no terminal here, so `--yes`.
    let out = p.wharf(&["down", "--env", "local", "--purge"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(
        p.instances("store", "local").len(),
        1,
        "an unconfirmed purge stops nothing"
    );
    let out = p.ok(&["down", "--env", "local", "--purge", "--yes"]);
    assert!(
        stderr(&out).contains("removed 1 data folder(s)"),
        "{}",
        text(&out)
    );
    p.ok(&["deploy", "store", "--env", "local", "--version", "v2"]);
    assert_eq!(
        get_json(p.address_port("store", "local"))["starts"],
        1,
        "a fresh folder"
    );
    assert_eq!(
        get_json(p.address_port("store", "ci"))["starts"],
        1,
        "the other environment's data is untouched"
    );
}

#[test]
fn an_instance_runs_as_its_user_through_a_state_folder_others_cannot_read() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: running as another user needs root");
        }
        return;
    }
    let definition = r#"
services:
  who:
    build: ./who
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, interval: 100ms }
    user: USER
environments:
  local: {}
"#;
    // A folder on the way that the user cannot pass through is named, with the fix.
    use std::os::unix::fs::PermissionsExt;
    let mut p = Project::new(&definition.replace("USER", "nobody"), &["who"]);
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = p.wharf(&["deploy", "who", "--env", "local", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let closed = format!("{} is closed to it", p.path().display());
    assert!(
        stderr(&out).contains("`nobody` cannot reach") && stderr(&out).contains(&closed),
        "{}",
        text(&out)
    );
    // Once it is open, wharf's own state folder is no obstacle.
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    p.ok(&["deploy", "who", "--env", "local", "--version", "v2"]);
    let pid = p.instances("who", "local")[0]["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(uid, nobody.uid.to_string(), "it runs as nobody");
    // Other users reach the instances' release and data folders and nothing else.
    // (What else they can read is `authority::the_state_folder_is_its_owners_alone`.)
    let readable = readable_by_others(&p.state_dir());
    let state = p.state_dir();
    assert!(
        readable
            .iter()
            .any(|p| p.starts_with(state.join("agent/releases"))),
        "the release is: {readable:?}"
    );
    // A user this host lacks is named.
    p.write("wharf.yaml", &definition.replace("USER", "no-such-user"));
    let out = p.wharf(&["deploy", "who", "--env", "local", "--version", "v3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("there is no user `no-such-user`"),
        "{}",
        text(&out)
    );
    p.ok(&["down", "--env", "local"]);
}

#[test]
fn exec_runs_a_command_in_the_instances_environment_and_exits_with_its_status() {
    let definition = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
    config: { GREETING: hello }
environments:
  local: {}
"#;
    let mut p = Project::new(definition, &["web"]);
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let port = p.port("web", "local", 0);
    let out = p.wharf(&[
        "exec",
        "web",
        "--env",
        "local",
        "--",
        "sh",
        "-c",
        "echo $PORT $GREETING; test -f app.py && echo in-release; stat -c %a . app.py; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        stdout(&out),
        format!("{port} hello\nin-release\n555\n444\n"),
        "the release folder, shared by every instance of the version, is read-only"
    );
    assert!(stderr(&out).contains("oops"), "{}", text(&out));

    let out = p.wharf(&[
        "exec",
        "web",
        "--env",
        "local",
        "--instance",
        "7",
        "--",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("no instance #7 of `web` runs in `local`"),
        "{}",
        text(&out)
    );
    let out = p.wharf(&["exec", "web", "--env", "local"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a command is required: {}",
        text(&out)
    );
}

#[test]
fn init_writes_a_definition_from_the_folders_that_validates_and_deploys() {
    let mut p = Project::new("", &["api"]);
    std::fs::remove_file(p.path().join("wharf.yaml")).unwrap();
    p.write(
        "worker/Cargo.toml",
        "[package]\nname = \"queue-worker\"\nversion = \"0.1.0\"\n",
    );
    p.write(
        "web/package.json",
        r#"{ "name": "web", "main": "server.js" }"#,
    );
    p.write("gw/go.mod", "module example.com/gw\n");
    p.write("box/Dockerfile", "FROM scratch\nEXPOSE 8080/tcp\n");
    let out = p.ok(&["init"]);
    assert!(
        stderr(&out).contains("5 service(s): api, box, gw, web, worker"),
        "{}",
        text(&out)
    );
    let written = std::fs::read_to_string(p.path().join("wharf.yaml")).unwrap();
    for expected in [
        "run: [\"python3\", \"app.py\"]",
        "run: [\"./queue-worker\"]",
        "run: [\"node\", \"server.js\"]",
        "port: { name: http, container: 8080 }",
        "# build it first: docker build -t box:latest ./box",
    ] {
        assert!(written.contains(expected), "{expected}:\n{written}");
    }
    p.ok(&["validate"]);
    p.ok(&["deploy", "api", "--env", "local", "--version", "v1"]);
    assert!(get(p.address_port("api", "local"), "/").is_some());

    let again = p.wharf(&["init"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("wharf.yaml")).unwrap(),
        written,
        "left as it was"
    );
}

#[test]
fn scale_is_a_definition_revision_rolled_out_and_kept_until_wharf_yaml_changes() {
    let definition = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    port: http
    health: { http: /, interval: 100ms }
environments:
  local: {}
"#;
    let mut p = Project::new(definition, &["web"]);
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let out = p.ok(&["scale", "web", "--env", "local", "3"]);
    assert!(
        stderr(&out).contains("scaled web in local"),
        "{}",
        text(&out)
    );
    assert_eq!(p.instances("web", "local").len(), 3);
    let history = p.json(&["definition", "history"]);
    assert_eq!(
        history[0]["message"], "wharf scale web --env local 3",
        "{history}"
    );
    // A deploy of the same wharf.yaml keeps the count.
    p.ok(&["deploy", "web", "--env", "local", "--version", "v2"]);
    assert_eq!(p.instances("web", "local").len(), 3);
    // Down to one: the surplus stops.
    p.ok(&["scale", "web", "--env", "local", "1"]);
    assert_eq!(p.instances("web", "local").len(), 1);
    // Zero is a stop, and says so; nothing changes.
    let out = p.wharf(&["scale", "web", "--env", "local", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("wharf stop"), "{}", text(&out));
    assert_eq!(p.instances("web", "local").len(), 1);
}

#[test]
fn a_deploy_in_progress_is_cancelled_and_rolled_back() {
    let definition = r#"
services:
  web:
    build: ./web
    run: RUN
    port: http
    health: { http: /, interval: 100ms, timeout: 120s }
environments:
  local: {}
"#;
    let mut p = Project::new(
        &definition.replace("RUN", r#"["python3", "app.py"]"#),
        &["web"],
    );
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let address = p.address_port("web", "local");
    // v2 never answers: its deploy waits for it (up to two minutes) until cancelled.
    p.write(
        "wharf.yaml",
        &definition.replace(
            "RUN",
            r#"["python3", "-c", "import time; time.sleep(600)"]"#,
        ),
    );
    let deploy = std::process::Command::new(WHARF)
        .args(["deploy", "web", "--env", "local", "--version", "v2"])
        .current_dir(p.path())
        .env_remove("WHARF_CONTROLLER")
        .env_remove("WHARF_HOME")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut id = None;
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            let history = p.json(&["history", "web", "--env", "local"]);
            id = history
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["state"] == "in_progress")
                .and_then(|d| d["id"].as_i64());
            id.is_some()
        }),
        "the deploy never started"
    );
    let id = id.unwrap().to_string();
    let out = p.ok(&["deployments", "cancel", &id]);
    assert!(
        stderr(&out).contains(&format!("deployment #{id} rolled back")),
        "{}",
        text(&out)
    );
    let deployed = deploy.wait_with_output().unwrap();
    assert_eq!(deployed.status.code(), Some(1));
    let err = String::from_utf8_lossy(&deployed.stderr);
    assert!(err.contains("cancelled by"), "{err}");
    assert_eq!(p.instances("web", "local")[0]["version"], "v1");
    assert!(get(address, "/").is_some(), "v1 kept serving");
    // A finished deploy cannot be cancelled.
    let out = p.wharf(&["deployments", "cancel", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is not in progress"),
        "{}",
        text(&out)
    );
}

/// Answers on its port and on its admin port, each saying which it is.
const TWO_PORTS: &str = r#"
import os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def serve(port, answer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = answer.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
threading.Thread(target=serve, args=(int(sys.argv[1]), "admin " + os.environ["PORT_ADMIN"]), daemon=True).start()
serve(int(os.environ["PORT"]), "main")
"#;

#[test]
fn a_second_named_port_is_assigned_per_instance_and_kept() {
    let definition = r#"
services:
  web:
    build: ./web
    run: ["python3", "two.py", "{{ ports.admin }}"]
    port: http
    ports: [admin]
    health: { http: /, interval: 100ms }
environments:
  local: {}
"#;
    let mut p = Project::new(definition, &["web"]);
    p.write("web/two.py", TWO_PORTS);
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let main = p.port("web", "local", 0);
    let admin_of = |p: &mut Project| {
        let log = stdout(&p.ok(&[
            "exec",
            "web",
            "--env",
            "local",
            "--",
            "sh",
            "-c",
            "echo $PORT_ADMIN",
        ]));
        log.trim().parse::<u16>().expect("PORT_ADMIN is a number")
    };
    let admin = admin_of(&mut p);
    assert_ne!(admin, main);
    assert_eq!(
        get(admin, "/").as_deref(),
        Some(format!("admin {admin}").as_str())
    );
    // A typo in its name is caught before anything runs.
    p.write(
        "wharf.yaml",
        &definition.replace("ports.admin", "ports.admn"),
    );
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("admn"), "{}", text(&out));
    p.write("wharf.yaml", definition);
    // Kept across versions, per slot, as the main port is (surged instances get their own).
    p.ok(&["deploy", "web", "--env", "local", "--version", "v2"]);
    p.ok(&["deploy", "web", "--env", "local", "--version", "v3"]);
    assert_eq!(
        admin_of(&mut p),
        admin,
        "the slot's admin port came back with its number"
    );
}

/// Prints a line at start, and one for each request to `/say?WORD`.
const TALKER: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
print("said at start", flush=True)
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if "?" in self.path:
            print("said " + self.path.split("?", 1)[1], flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn logs_since_shows_only_what_was_written_in_that_stretch() {
    let definition = r#"
services:
  talk:
    build: ./talk
    run: ["python3", "talk.py"]
    port: http
    health: { http: /, interval: 100ms }
environments:
  local: {}
"#;
    let mut p = Project::new(definition, &["talk"]);
    p.write("talk/talk.py", TALKER);
    p.ok(&["deploy", "talk", "--env", "local", "--version", "v1"]);
    // The point is time passing: the start line must be older than the window.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let port = p.address_port("talk", "local");
    get(port, "/say?later").expect("it answers");
    let recent = stdout(&p.ok(&["logs", "talk", "--env", "local", "--since", "2s"]));
    assert!(recent.contains("said later"), "{recent}");
    assert!(!recent.contains("said at start"), "{recent}");
    let all = stdout(&p.ok(&["logs", "talk", "--env", "local"]));
    assert!(
        all.contains("said at start") && all.contains("said later"),
        "{all}"
    );
    let out = p.wharf(&["logs", "talk", "--env", "local", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
