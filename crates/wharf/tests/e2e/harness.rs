//! A throwaway wharf project in a temp folder, driven through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// A small HTTP service in Python: answers /health, and / with what it was given.
pub const APP: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOTE = open("note.txt").read().strip() if os.path.exists("note.txt") else ""

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
        else:
            body = json.dumps({
                "note": NOTE,
                "version": os.environ.get("WHARF_VERSION"),
                "env": os.environ.get("WHARF_ENV"),
                "instance": os.environ.get("WHARF_INSTANCE"),
                "message": os.environ.get("MESSAGE"),
                "level": os.environ.get("LEVEL"),
                "peer": os.environ.get("PEER_URL"),
                "port": os.environ.get("PORT"),
                "path": self.path,
                "forwarded_proto": self.headers.get("X-Forwarded-Proto"),
                "forwarded_host": self.headers.get("X-Forwarded-Host"),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("request " + (fmt % args) + "\n")

print("starting on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// A version of the app that fails at start, as a broken build would.
pub const BROKEN_APP: &str =
    "import sys\nprint('boom: cannot connect to the database', file=sys.stderr)\nsys.exit(3)\n";

pub struct Project {
    pub dir: tempfile::TempDir,
    envs: Vec<String>,
    /// Released after the project is brought down (fields drop after `drop`).
    _turn: Turn,
}

/// Tests that measure traffic under load run alone: on two cores, a neighbour's
/// deploys starve their instances and fail them for the wrong reason. The others run
/// side by side.
struct Turns {
    /// (projects of side-by-side tests alive, a test running alone, tests waiting to)
    state: std::sync::Mutex<(usize, bool, usize)>,
    changed: std::sync::Condvar,
}

static TURNS: Turns = Turns {
    state: std::sync::Mutex::new((0, false, 0)),
    changed: std::sync::Condvar::new(),
};

thread_local! {
    /// Side-by-side projects this test thread holds (a test may make several).
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

enum Turn {
    Shared,
    Alone,
}

impl Turn {
    fn take(alone: bool) -> Self {
        let lock = || TURNS.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lock();
        if alone {
            state.2 += 1;
            while state.1 || state.0 > 0 {
                state = TURNS.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.2 -= 1;
            state.1 = true;
            return Turn::Alone;
        }
        // A thread that holds a turn already never waits (it would wait for itself).
        if HELD.with(|h| h.get()) == 0 {
            while state.1 || state.2 > 0 {
                state = TURNS.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        }
        state.0 += 1;
        HELD.with(|h| h.set(h.get() + 1));
        Turn::Shared
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = TURNS.state.lock().unwrap_or_else(|p| p.into_inner());
        match self {
            Turn::Shared => {
                state.0 -= 1;
                HELD.with(|h| h.set(h.get().saturating_sub(1)));
            }
            Turn::Alone => state.1 = false,
        }
        TURNS.changed.notify_all();
    }
}

impl Project {
    /// A project with `wharf.yaml` and the given service folders, each holding [`APP`].
    pub fn new(definition: &str, services: &[&str]) -> Self {
        Self::with_turn(definition, services, false)
    }

    /// The same, for a test that measures traffic under load: it runs alone.
    pub fn alone(definition: &str, services: &[&str]) -> Self {
        Self::with_turn(definition, services, true)
    }

    fn with_turn(definition: &str, services: &[&str], alone: bool) -> Self {
        let turn = Turn::take(alone);
        let dir = tempfile::Builder::new()
            .prefix("wharf-e2e-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("wharf.yaml"), definition).unwrap();
        for service in services {
            let folder = dir.path().join(service);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("app.py"), APP).unwrap();
        }
        Self {
            dir,
            envs: Vec::new(),
            _turn: turn,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".wharf")
    }

    /// Writes a file of the project.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Runs wharf with extra environment variables and, optionally, standard input.
    pub fn wharf_with(
        &mut self,
        args: &[&str],
        vars: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Output {
        use std::io::Write;
        self.remember_envs(args);
        let mut command = Command::new(WHARF);
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("WHARF_CONTROLLER")
            .env_remove("WHARF_HOME")
            .env_remove("WHARF_FILE")
            .env_remove("WHARF_TOKEN")
            .env("NO_COLOR", "1")
            .envs(vars.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("wharf runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs wharf in the project folder.
    pub fn wharf(&mut self, args: &[&str]) -> Output {
        self.remember_envs(args);
        Command::new(WHARF)
            .args(args)
            .current_dir(self.path())
            .env_remove("WHARF_CONTROLLER")
            .env_remove("WHARF_HOME")
            .env_remove("WHARF_FILE")
            .env_remove("WHARF_TOKEN")
            .env("NO_COLOR", "1")
            .output()
            .expect("wharf runs")
    }

    /// Brings nothing down at the end: the test's own controllers did, and the local
    /// one this would start knows nothing of them.
    pub fn forget_envs(&mut self) {
        self.envs.clear();
    }

    /// Brings `env` down at the end, for what a test ran there without `ok`/`wharf`.
    pub fn remember_env(&mut self, env: &str) {
        if !self.envs.iter().any(|e| e == env) {
            self.envs.push(env.to_owned());
        }
    }

    /// Remembers environments touched, to bring them down at the end.
    fn remember_envs(&mut self, args: &[&str]) {
        if let Some(i) = args.iter().position(|a| *a == "--env") {
            let env = args[i + 1].to_owned();
            if !self.envs.contains(&env) {
                self.envs.push(env);
            }
        }
        for a in args {
            if let Some(env) = a.strip_prefix("environment=") {
                self.envs.push(env.to_owned());
            }
        }
        if let Some(i) = args.iter().position(|a| *a == "--to") {
            self.envs.push(args[i + 1].to_owned());
        }
    }

    /// Runs wharf and insists it succeeds.
    pub fn ok(&mut self, args: &[&str]) -> Output {
        let out = self.wharf(args);
        assert!(
            out.status.success(),
            "`wharf {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        out
    }

    pub fn json(&mut self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ok(&all);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad json from {args:?}: {e}\n{}", text(&out)))
    }

    /// A service's stable address in an environment (`http://127.0.0.1:PORT`).
    pub fn address(&mut self, service: &str, env: &str) -> String {
        let status = self.json(&["status", "--env", env]);
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == service)
            .and_then(|s| s["address"].as_str())
            .unwrap_or_else(|| panic!("`{service}` in `{env}` has no address: {status}"))
            .to_owned()
    }

    /// The port of a service's stable address in an environment.
    pub fn address_port(&mut self, service: &str, env: &str) -> u16 {
        let address = self.address(service, env);
        address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad address {address}"))
    }

    /// Instances of a service in an environment, from `wharf status --output json`.
    pub fn instances(&mut self, service: &str, env: &str) -> Vec<Value> {
        let status = self.json(&["status", "--env", env]);
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["service"] == service)
            .flat_map(|s| s["instances"].as_array().unwrap().clone())
            .collect()
    }

    /// The port of the `rank`-th instance (by number): a rollout that starts new
    /// instances beside the old ones gives them new numbers.
    pub fn port(&mut self, service: &str, env: &str, rank: usize) -> u16 {
        let mut all = self.instances(service, env);
        all.sort_by_key(|i| i["instance"].as_u64());
        let i = all
            .get(rank)
            .unwrap_or_else(|| panic!("no instance at rank {rank} of {service} in {env}: {all:?}"));
        i["port"].as_u64().unwrap() as u16
    }

    /// The pid of the project's controller, if it runs.
    pub fn controller_pid(&self) -> Option<i32> {
        self.controller_file()?["pid"].as_i64().map(|p| p as i32)
    }

    /// The API address of the project's controller, once one runs.
    pub fn controller_url(&self) -> String {
        self.controller_file()
            .and_then(|v| v["url"].as_str().map(str::to_owned))
            .expect("the project's controller runs")
    }

    /// An HTTP client of the project's open controller: it sends the key from the
    /// state folder, as the CLI does.
    pub fn http(&self) -> reqwest::blocking::Client {
        let key = self
            .controller_file()
            .and_then(|v| v["key"].as_str().map(str::to_owned))
            .expect("the project's controller runs");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-wharf-local-key", key.parse().unwrap());
        reqwest::blocking::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// Live processes carrying one of this project's instance tags: pid and tag
    /// (`ENV/SERVICE/NODE/INSTANCE`), children of instances included.
    pub fn tagged_processes(&self) -> Vec<(i32, String)> {
        let id = std::fs::read_to_string(self.state_dir().join("agent/id")).unwrap_or_default();
        let prefix = format!("WHARF_TAG={}:", id.trim());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let tag = environ.split(|b| *b == 0).find_map(|v| {
                String::from_utf8_lossy(v)
                    .strip_prefix(&prefix)
                    .map(str::to_owned)
            });
            if let Some(tag) = tag.filter(|_| alive(pid)) {
                found.push((pid, tag));
            }
        }
        found
    }

    fn controller_file(&self) -> Option<Value> {
        let text = std::fs::read(self.state_dir().join("controller.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for env in std::mem::take(&mut self.envs) {
            // A deploy the test left running (a `wharf dev` left mid-restart) holds the
            // service until it ends: the down is tried again until then.
            wait_until(Duration::from_secs(30), || {
                Command::new(WHARF)
                    .args(["down", "--env", &env])
                    .current_dir(self.path())
                    .output()
                    .map_or(true, |o| {
                        o.status.success()
                            || !String::from_utf8_lossy(&o.stderr).contains("is being deployed")
                    })
            });
        }
        // The supervisor first, or it starts the controller again.
        if let Some(pid) = std::fs::read_to_string(self.state_dir().join("supervisor.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
        if let Some(pid) = self.controller_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            wait_until(Duration::from_secs(5), || !alive(pid));
        }
    }
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

/// stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET http://127.0.0.1:port/path; the body, or None when nothing answers.
pub fn get(port: u16, path: &str) -> Option<String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .ok()?;
    response.text().ok()
}

pub fn get_json(port: u16) -> Value {
    let body = get(port, "/").unwrap_or_else(|| panic!("nothing answers on port {port}"));
    serde_json::from_str(&body).unwrap()
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let begun = Instant::now();
    while begun.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// The shop's Rust service: a binary that runs in the host image (same libraries as wharf).
pub fn inventory_binary() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/docker-e2e");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "shop-inventory",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success());
    target.join("release/shop-inventory")
}

/// The files and folders below `root` a user other than their owner (and not in their
/// group) can read: every folder on the way lets others pass, and the entry lets them
/// read it (a folder: list it).
pub fn readable_by_others(root: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut open = vec![root.to_owned()];
    while let Some(dir) = open.pop() {
        let mode = |p: &Path| {
            std::fs::symlink_metadata(p)
                .map(|m| m.permissions().mode())
                .unwrap_or(0)
        };
        if mode(&dir) & 0o001 == 0 {
            continue;
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if mode(&path) & 0o004 != 0 {
                found.push(path.clone());
            }
            if is_dir {
                open.push(path);
            }
        }
    }
    found
}
