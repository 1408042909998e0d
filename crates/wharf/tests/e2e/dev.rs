//! `wharf dev`: services run straight from their folders; a saved file answers once new
//! instances from the folder are healthy, a broken one is shown and the last good code
//! keeps answering.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

const DEV: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s
    port: http
    health: { http: /health, timeout: 10s }
environments:
  local: {}
  production: { after: local }
"#;

/// A `wharf dev` running in the background, and what it printed so far.
struct Dev {
    child: std::process::Child,
    printed: Arc<Mutex<String>>,
}

impl Dev {
    fn start(p: &mut Project, args: &[&str]) -> Self {
        let env = args
            .iter()
            .position(|a| *a == "--env")
            .and_then(|i| args.get(i + 1))
            .unwrap_or(&"local");
        p.remember_env(env);
        let mut child = std::process::Command::new(WHARF)
            .arg("dev")
            .args(args)
            .current_dir(p.path())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let printed = Arc::new(Mutex::new(String::new()));
        let (into, pipe) = (printed.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = into.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self { child, printed }
    }

    fn said(&self) -> String {
        self.printed.lock().unwrap().clone()
    }

    /// Waits until `text` was printed `times` times in all.
    fn wait_for(&self, text: &str, times: usize) -> bool {
        wait_until(Duration::from_secs(60), || {
            self.said().matches(text).count() >= times
        })
    }

    /// Ctrl-C; what it printed in all, and how it ended.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let status = self.child.wait().unwrap();
        // The reader thread gets the last lines once the pipe closes.
        wait_until(Duration::from_secs(2), || {
            self.said().contains("left dev mode")
        });
        (status.code(), self.said())
    }
}

impl Drop for Dev {
    /// Ctrl-C, as a user leaves: a restart under way finishes first, so the project's
    /// `wharf down` afterwards finds no deploy holding the service.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let ended = wait_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn note(port: u16) -> String {
    get(port, "/")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["note"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn saved_files_answer_from_the_folder_and_a_broken_save_keeps_the_last_good_code() {
    let mut p = Project::alone(DEV, &["web"]);
    p.write("web/note.txt", "one");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(
        dev.wait_for("watching `web` in `local`", 1),
        "{}",
        dev.said()
    );
    let address = p.address_port("web", "local");
    assert_eq!(note(address), "one");
    let instances = p.instances("web", "local");
    assert_eq!(instances[0]["version"], "dev", "{instances:?}");

    // Requests flow the whole time: no restart fails one.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut sent, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += 1;
                if get(address, "/").is_none() {
                    failed += 1;
                }
            }
            (sent, failed)
        })
    };

    // A plain write.
    p.write("web/note.txt", "two");
    assert!(
        wait_until(Duration::from_secs(30), || note(address) == "two"),
        "{}",
        dev.said()
    );
    // An editor's save: written to a temporary file, renamed over the file.
    p.write("web/.note.txt.swp", "three");
    std::fs::rename(
        p.path().join("web/.note.txt.swp"),
        p.path().join("web/note.txt"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || note(address) == "three"),
        "{}",
        dev.said()
    );

    // A syntax error: shown inline with the instance's last lines; the last good code
    // answers.
    p.write("web/app.py", &format!("{APP}\ndef broken(:\n"));
    assert!(
        dev.wait_for("did not start from its folder", 1),
        "{}",
        dev.said()
    );
    assert!(dev.said().contains("SyntaxError"), "{}", dev.said());
    assert_eq!(note(address), "three");
    // A crash at start, the same.
    p.write("web/app.py", BROKEN_APP);
    assert!(
        dev.wait_for("did not start from its folder", 2),
        "{}",
        dev.said()
    );
    assert!(
        dev.said().contains("boom: cannot connect to the database"),
        "{}",
        dev.said()
    );
    assert_eq!(note(address), "three");
    // Fixed, it answers again (the loop never stopped).
    p.write("web/note.txt", "four");
    p.write("web/app.py", APP);
    assert!(
        wait_until(Duration::from_secs(30), || note(address) == "four"),
        "{}",
        dev.said()
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = load.join().unwrap();
    assert!(sent > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the restarts"
    );

    let (code, said) = dev.interrupt();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("left dev mode: `web` keeps running the dev version"),
        "{said}"
    );
    assert_eq!(note(address), "four", "it keeps running");
    let history = p.json(&["history", "web", "--env", "local"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["kind"] == "dev"),
        "{history}"
    );
}

#[test]
fn a_change_made_while_dev_was_not_running_is_picked_up_at_start() {
    let mut p = Project::new(DEV, &["web"]);
    p.write("web/note.txt", "before");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let address = p.address_port("web", "local");
    assert_eq!(note(address), "before");
    let (code, said) = dev.interrupt();
    assert_eq!(code, Some(0), "{said}");

    p.write("web/note.txt", "while away");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    assert_eq!(note(address), "while away");
}

#[test]
fn a_checkout_of_five_thousand_files_ends_with_its_final_state_answering() {
    let mut p = Project::new(DEV, &["web"]);
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let address = p.address_port("web", "local");
    for i in 0..5000 {
        p.write(
            &format!("web/pages/p{:02}/page{i}.html", i % 40),
            "<p>x</p>",
        );
    }
    p.write("web/note.txt", "checked out");
    assert!(
        wait_until(Duration::from_secs(60), || note(address) == "checked out"),
        "{}",
        dev.said()
    );
}

#[test]
fn dev_is_refused_where_the_pipeline_does_not_allow_it_and_never_promoted() {
    let mut p = Project::new(DEV, &["web"]);
    let out = p.wharf(&["dev", "web", "--env", "production"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`wharf dev` is refused in `production`")
            && err.contains("comes after `local`"),
        "{err}"
    );
    assert!(p.instances("web", "production").is_empty());

    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let out = p.wharf(&["promote", "web", "--from", "local", "--to", "production"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("a dev version is never promoted"),
        "{}",
        text(&out)
    );
    assert!(p.instances("web", "production").is_empty());
}

#[test]
fn leaving_with_restore_brings_back_the_version_deployed_before() {
    let mut p = Project::new(DEV, &["web"]);
    p.write("web/note.txt", "released");
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let address = p.address_port("web", "local");
    p.write("web/note.txt", "editing");
    let dev = Dev::start(&mut p, &["web", "--restore"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    assert_eq!(note(address), "editing");
    let (code, said) = dev.interrupt();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("left dev mode: `web` runs `v1` again"),
        "{said}"
    );
    assert_eq!(
        note(address),
        "released",
        "v1's artifact, packed before the edit"
    );
    assert_eq!(p.instances("web", "local")[0]["version"], "v1");
}

/// Rereads note.txt on SIGHUP, as a server that reloads its files does.
const RELOADING_APP: &str = r#"
import json, os, signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOTE = [open("note.txt").read().strip()]

def reread(*_):
    NOTE[0] = open("note.txt").read().strip()

signal.signal(signal.SIGHUP, reread)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else json.dumps({"note": NOTE[0], "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn a_service_that_reloads_on_a_signal_is_sent_it_and_keeps_its_process() {
    let definition = DEV.replace(
        "    min_healthy_time: 0s\n",
        "    min_healthy_time: 0s\n    dev: { on_change: { signal: HUP } }\n",
    );
    let mut p = Project::new(&definition, &["web"]);
    p.write("web/app.py", RELOADING_APP);
    p.write("web/note.txt", "one");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let address = p.address_port("web", "local");
    let pid = get_json(address)["pid"].clone();
    assert_eq!(note(address), "one");
    p.write("web/note.txt", "two");
    assert!(
        wait_until(Duration::from_secs(30), || note(address) == "two"),
        "{}",
        dev.said()
    );
    assert_eq!(get_json(address)["pid"], pid, "the same process, signalled");
    assert!(
        dev.said().contains("sent HUP to 1 instance(s)"),
        "{}",
        dev.said()
    );
}

#[test]
fn a_service_with_a_build_runs_from_its_output_rebuilt_on_each_change() {
    let definition = DEV.replace(
        "    build: ./web\n",
        "    build: { context: ./web, command: [\"sh\", \"-c\", \"mkdir -p dist && cp app.py note.txt dist/\"], output: dist }\n",
    );
    let mut p = Project::new(&definition, &["web"]);
    p.write("web/note.txt", "built once");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let address = p.address_port("web", "local");
    assert_eq!(note(address), "built once");
    p.write("web/note.txt", "built twice");
    assert!(
        wait_until(Duration::from_secs(30), || note(address) == "built twice"),
        "{}",
        dev.said()
    );
    // What the build wrote into dist/ is no change of its own: one build, one restart.
    assert!(dev.wait_for("`web` answers from", 2), "{}", dev.said());
    let said = dev.said();
    assert_eq!(said.matches("web: building").count(), 2, "{said}");
    assert!(
        !said
            .lines()
            .any(|l| l.contains("changed") && l.contains("dist")),
        "{said}"
    );
}

#[test]
fn a_restart_of_a_dev_version_runs_from_the_folder_again() {
    let mut p = Project::new(DEV, &["web"]);
    p.write("web/note.txt", "first");
    let dev = Dev::start(&mut p, &["web"]);
    assert!(dev.wait_for("watching `web`", 1), "{}", dev.said());
    let address = p.address_port("web", "local");
    let (code, said) = dev.interrupt();
    assert_eq!(code, Some(0), "{said}");
    p.write("web/note.txt", "restarted");
    p.ok(&["restart", "web", "--env", "local"]);
    assert_eq!(note(address), "restarted");
    let history = p.json(&["history", "web", "--env", "local"]);
    assert_eq!(history[0]["kind"], "restart", "{history}");
    assert_eq!(history[0]["version"], "dev", "{history}");
}

/// A static site in a container: its folder holds only a static busybox (no `tar` on
/// its PATH) serving `www/`, and a saved file is copied into the running container.
const SITE: &str = r#"
services:
  site:
    build: ./site
    driver: docker
    run: ["./busybox", "httpd", "-f", "-p", "{{ port }}", "-h", "/www"]
    min_healthy_time: 0s
    port: http
    health: { http: /, timeout: 10s }
    dev: { on_change: sync }
environments:
  local: {}
"#;

/// The body at `path`, when it answers 200.
fn page(port: u16, path: &str) -> String {
    reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(3))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.text().ok())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The id of the one container running `site`.
fn site_container() -> String {
    crate::containers::docker(&["ps", "-q", "--filter", "label=wharf.service=site"])
}

#[test]
fn a_saved_file_is_copied_into_the_running_container_without_tar_in_it() {
    if !crate::containers::busybox_ready() {
        return;
    }
    let mut p = Project::new(SITE, &[]);
    std::fs::create_dir_all(p.path().join("site")).unwrap();
    std::fs::copy("/bin/busybox", p.path().join("site/busybox")).unwrap();
    p.write("site/www/index.html", "one");
    let dev = Dev::start(&mut p, &["site"]);
    assert!(dev.wait_for("watching `site`", 1), "{}", dev.said());
    let address = p.address_port("site", "local");
    assert_eq!(page(address, "/"), "one");
    let container = site_container();
    assert!(!container.is_empty(), "a container runs the site");
    let tar = std::process::Command::new("docker")
        .args(["exec", &container, "tar", "--help"])
        .output()
        .unwrap();
    // The engine's message comes on either stream, depending on its version.
    assert!(
        !tar.status.success() && text(&tar).contains("executable file not found"),
        "the container has no tar: {tar:?}"
    );

    // A saved file and a new folder reach the same container.
    p.write("site/www/index.html", "two");
    p.write("site/www/new/page.html", "new page");
    let synced = wait_until(Duration::from_secs(30), || {
        page(address, "/") == "two" && page(address, "/new/page.html") == "new page"
    });
    assert!(synced, "{}", dev.said());
    assert_eq!(site_container(), container, "synced, not replaced");
    assert!(dev.said().contains("into 1 container(s)"), "{}", dev.said());

    // A container started again (here, killed and restarted by wharf) has the folder
    // as it is now, not as its image was.
    p.write("site/www/index.html", "three");
    assert!(wait_until(Duration::from_secs(30), || page(address, "/") == "three"));
    crate::containers::docker(&["kill", &container]);
    let restarted = wait_until(Duration::from_secs(30), || {
        let now = site_container();
        !now.is_empty() && now != container && page(address, "/") == "three"
    });
    assert!(restarted, "{}", dev.said());
    assert_eq!(page(address, "/new/page.html"), "new page");

    // A removed file cannot be copied: the container is replaced, and it is gone.
    let before = site_container();
    std::fs::remove_file(p.path().join("site/www/new/page.html")).unwrap();
    let replaced = wait_until(Duration::from_secs(30), || {
        let now = site_container();
        !now.is_empty() && now != before && page(address, "/new/page.html").is_empty()
    });
    assert!(replaced, "{}", dev.said());
    assert_eq!(page(address, "/"), "three");
    let (code, said) = dev.interrupt();
    assert_eq!(code, Some(0), "{said}");
}
