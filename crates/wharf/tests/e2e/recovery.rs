//! Controller crashes and restarts, and separate projects on one machine.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::*;

const SLOW: &str = r#"
services:
  steady:
    build: ./steady
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health }
  slow:
    build: ./slow
    run: ["sh", "-c", "sleep 2 && exec python3 app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health, timeout: 20s }
environments:
  ci: {}
"#;

#[test]
fn a_controller_killed_mid_deploy_loses_nothing() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let steady_pid = p.instances("steady", "ci")[0]["pid"].clone();
    p.ok(&["build", "slow", "--version", "v1"]);

    let mut deploy = std::process::Command::new(WHARF)
        .args(["deploy", "slow", "--env", "ci", "--version", "v1"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What the CLI prints, as it prints it.
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (printed, pipe) = (printed.clone(), deploy.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = printed.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    // Kill the controller while the slow instance is still starting (and once the CLI
    // has the deployment's number: it names it when the controller goes away).
    let controller = p.controller_pid().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !p
        .instances("slow", "ci")
        .is_empty()
        && printed.lock().unwrap().contains("(deployment #")));
    kill(Pid::from_raw(controller), Signal::SIGKILL).unwrap();
    // The CLI says plainly what happened and where to look, and exits 1.
    let status = deploy.wait().unwrap();
    reader.join().unwrap();
    let said = printed.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("stopped answering during deployment #"),
        "{said}"
    );
    assert!(said.contains("wharf deployments show"), "{said}");
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));

    // The next command starts a new controller on the same state, which resolves the
    // interrupted deploy: nothing of `slow` ran before it, so what it started is
    // stopped, as a failed first deploy's would be.
    let id = p
        .json(&["history", "slow", "--env", "ci"])
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["state"] == "interrupted")
        .expect("the deploy is recorded as interrupted")["id"]
        .as_i64()
        .unwrap();
    assert_ne!(p.controller_pid(), Some(controller));
    let id = id.to_string();
    assert!(wait_until(Duration::from_secs(10), || p.json(&[
        "deployments",
        "show",
        &id
    ])["resolved_by"]
        .is_i64()));
    let shown = stdout(&p.ok(&["deployments", "show", &id]));
    assert!(shown.contains("interrupted"), "{shown}");
    assert!(
        shown.contains("its instances were stopped by deployment #"),
        "{shown}"
    );
    assert!(p.instances("slow", "ci").is_empty());
    // Other services' instances are found again, not restarted.
    let steady = &p.instances("steady", "ci")[0];
    assert_eq!(steady["pid"], steady_pid);
    assert_eq!(steady["restarts"], 0);
    let port = p.port("steady", "ci", 0);
    assert!(get(port, "/health").is_some());
    // And the service can be deployed again: the lock did not survive the crash.
    p.ok(&["deploy", "slow", "--env", "ci", "--version", "v1"]);
}

#[test]
fn a_killed_local_controller_comes_back_by_itself_and_restarts_an_instance_that_died() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let address = p.address_port("steady", "ci");
    let steady = |p: &Project| -> Vec<i32> {
        p.tagged_processes()
            .into_iter()
            .filter(|(_, tag)| tag.starts_with("ci/steady/"))
            .map(|(pid, _)| pid)
            .collect()
    };
    let before = steady(&p);
    assert_eq!(before.len(), 1, "{before:?}");
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(before[0]), Signal::SIGKILL).unwrap();
    // No command runs: the controller is started again by itself, and restarts the
    // instance that died while it was down; the address answers again.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let now = steady(&p);
            p.controller_pid()
                .is_some_and(|c| c != controller && alive(c))
                && !now.is_empty()
                && !now.contains(&before[0])
                && get(address, "/health").is_some()
        }),
        "controller {:?}, instances {:?}",
        p.controller_pid(),
        steady(&p)
    );
    // `wharf server stop` stops it for good: its supervisor is gone with it.
    let supervisor: i32 = std::fs::read_to_string(p.state_dir().join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let restarted = p.controller_pid().unwrap();
    p.ok(&["server", "stop"]);
    assert!(!alive(supervisor) && !alive(restarted));
    assert!(!steady(&p).is_empty(), "instances keep running");
}

#[test]
fn two_projects_get_their_own_controllers_and_state() {
    let mut a = Project::new(SLOW, &["steady", "slow"]);
    let mut b = Project::new(SLOW, &["steady", "slow"]);
    a.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    b.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    assert_ne!(a.controller_pid(), b.controller_pid());
    assert_ne!(a.port("steady", "ci", 0), b.port("steady", "ci", 0));
    a.ok(&["down", "--env", "ci"]);
    assert_eq!(b.instances("steady", "ci").len(), 1, "b is untouched by a");
}

#[test]
fn a_controller_restart_adopts_running_instances() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let pid = p.instances("steady", "ci")[0]["pid"].clone();
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    let port = p.port("steady", "ci", 0);
    assert_eq!(p.instances("steady", "ci")[0]["pid"], pid);
    assert!(get(port, "/health").is_some());
}

#[test]
fn a_second_deploy_of_the_same_service_is_refused_and_told_who_holds_the_lock() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["build", "slow", "--version", "v1"]);
    p.ok(&["build", "steady", "--version", "v1"]);
    let mut first = std::process::Command::new(WHARF)
        .args(["deploy", "slow", "--env", "ci", "--version", "v1"])
        .current_dir(p.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !p
        .instances("slow", "ci")
        .is_empty()));
    // A configuration change the lock refuses saves nothing.
    let out = p.wharf(&["config", "set", "slow", "--env", "ci", "A=1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is being deployed by"),
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains("saved"), "{}", text(&out));
    assert!(
        p.json(&["config", "history", "slow", "--env", "ci"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = p.wharf(&["deploy", "slow", "--env", "ci", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is being deployed by"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("--wait-lock"), "{}", text(&out));
    // Another service deploys meanwhile.
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    // With --wait-lock, a deploy queues behind the running one instead.
    let queued = p.ok(&[
        "deploy",
        "slow",
        "--env",
        "ci",
        "--version",
        "v1",
        "--wait-lock=1m",
    ]);
    assert!(
        stderr(&queued).contains("waiting for it"),
        "{}",
        text(&queued)
    );
    assert!(first.wait().unwrap().success());
    let history = p.json(&["history", "slow", "--env", "ci"]);
    assert_eq!(history[0]["state"], "succeeded", "{history}");
    assert_eq!(history[1]["state"], "succeeded", "{history}");
}

const THREE: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health }
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 3 }]
"#;

#[test]
fn an_instance_lost_while_the_controller_was_down_is_started_again_without_a_deploy() {
    let mut p = Project::alone(THREE, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let lost = p
        .instances("web", "ci")
        .into_iter()
        .find(|i| i["instance"] == 1)
        .unwrap();
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    // The host loses the instance: its process and the agent's record of it.
    let pid = lost["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(-pid), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    let record = find_file(&p.state_dir().join("agent"), "ci--web--local--1.json")
        .expect("the agent keeps a record of each instance");
    std::fs::remove_file(record).unwrap();

    // Without any deploy, the controller notices and starts it again.
    assert!(wait_until(Duration::from_secs(20), || {
        let all = p.instances("web", "ci");
        all.len() == 3 && all.iter().all(|i| i["health"] == "healthy")
    }));
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(history[0]["kind"], "reconcile", "{history}");
    assert!(
        history[0]["message"]
            .as_str()
            .unwrap()
            .contains("instance #1 was missing"),
        "{history}"
    );
    assert_eq!(history[0]["version"], "v1");
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// What a fake controller received, and the pid it claimed to be.
fn fake_controller(address: &str, claimed_pid: u32) -> std::sync::mpsc::Receiver<Vec<u8>> {
    use std::io::{Read, Write};
    // As a squatter would: SO_REUSEADDR, so the dead controller's connections in
    // TIME_WAIT do not keep it off the port.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    // A killed process's last threads may hold its sockets a moment after it shows as
    // dead: wait for the port.
    let bind = || {
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.set_reuseaddr(true).ok()?;
            socket.bind(address.parse().ok()?).ok()?;
            socket.listen(16).ok()?.into_std().ok()
        })
    };
    let mut listener = None;
    assert!(wait_until(Duration::from_secs(5), || {
        listener = bind();
        listener.is_some()
    }));
    let listener = listener.unwrap();
    listener.set_nonblocking(false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut got = vec![0u8; 64 * 1024];
            let n = stream.read(&mut got).unwrap_or(0);
            got.truncate(n);
            // It answers everything as a controller would, naming a pid to signal.
            let body = format!(
                r#"{{"status":"ok","proof":"00","version":"0","state_dir":"/","pid":{claimed_pid},"build":"other"}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn a_program_on_the_dead_controllers_port_gets_no_token_no_secret_and_no_signal() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let address = p.controller_url().trim_start_matches("http://").to_owned();
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    // Another local program takes the port and pretends to be the controller.
    let mut decoy = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let received = fake_controller(&address, decoy.id());

    let out = p.wharf_with(
        &["secret", "set", "steady", "--env", "ci", "API_KEY"],
        &[("WHARF_TOKEN", "wharf_abc_supersecrettoken")],
        Some(b"hunter2\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("cannot prove"), "{}", text(&out));
    assert!(stderr(&out).contains("nothing was sent"), "{}", text(&out));
    let mut all = Vec::new();
    while let Ok(bytes) = received.recv_timeout(Duration::from_millis(300)) {
        all.extend(bytes);
    }
    let all = String::from_utf8_lossy(&all).to_lowercase();
    assert!(
        all.contains("get /v1/health?challenge="),
        "it was asked to prove itself: {all}"
    );
    for leaked in [
        "hunter2",
        "supersecrettoken",
        "authorization",
        "x-wharf-local-key",
    ] {
        assert!(!all.contains(leaked), "the fake received {leaked}: {all}");
    }
    // The pid it named was never signalled.
    assert!(decoy.try_wait().unwrap().is_none(), "the decoy is alive");
    let _ = decoy.kill();
    // The fake keeps the port, so `wharf down` cannot clean up: stop the instances here.
    for (pid, _) in p.tagged_processes() {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
}

#[test]
fn the_open_local_controller_answers_only_its_owner() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let url = p.controller_url();
    // Without the key from the owner-only state folder: refused, and told why.
    let stranger = reqwest::blocking::Client::new();
    let answer = stranger
        .get(format!("{url}/v1/status?env=ci"))
        .header("x-wharf-user", "approver")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(
        answer
            .text()
            .unwrap()
            .contains("answers only the user who started it")
    );
    let deploy = stranger
        .post(format!("{url}/v1/deployments"))
        .json(&serde_json::json!({"service": "steady", "env": "ci", "version": "v1"}))
        .send()
        .unwrap();
    assert_eq!(deploy.status(), 401);
    // Liveness is public, and tells nothing about the controller.
    let health: serde_json::Value = stranger
        .get(format!("{url}/v1/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    // The state folder and the file holding the key are the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(p.state_dir()),
        0o711,
        "others pass through, never list"
    );
    assert_eq!(mode(p.state_dir().join("controller.json")), 0o600);
    // The owner's client is served.
    assert_eq!(
        p.http()
            .get(format!("{url}/v1/status?env=ci"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn stopping_a_service_whose_instances_are_all_gone_keeps_it_stopped() {
    let mut p = Project::new(THREE, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    for i in p_instances_offline(&p) {
        let _ = std::fs::remove_file(i);
    }
    for (pid, _) in p.tagged_processes() {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    let out = p.ok(&["stop", "web", "--env", "ci"]);
    assert!(!stderr(&out).contains("error"), "{}", text(&out));
    let history = p.json(&["history", "web", "--env", "ci"]);
    assert_eq!(
        history[0]["kind"], "stop",
        "the stop is recorded: {history}"
    );
    // The reconcile (every 5 s) does not bring it back.
    assert!(!wait_until(Duration::from_secs(7), || !p
        .instances("web", "ci")
        .is_empty()));
}

/// The agent's instance records of a project, found while its controller is down.
fn p_instances_offline(p: &Project) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(p.state_dir().join("agent/instances"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

const RELOADED: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health }
    on_change: reload
    # The test app ignores WINCH (a HUP would end it): the reload leaves it running.
    reload_signal: WINCH
environments:
  ci:
    nodes:
      - name: local
        services: [{ name: web, instances: 2 }]
"#;

#[test]
fn a_reconcile_keeps_a_configuration_change_that_was_reloaded_in_place() {
    let mut p = Project::new(RELOADED, &["web"]);
    p.ok(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    // Reloaded in place: no deployment records it.
    p.ok(&["config", "set", "web", "--env", "ci", "MESSAGE=kept"]);
    let controller = p.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    let (lost, _) = p
        .tagged_processes()
        .into_iter()
        .find(|(_, tag)| tag == "ci/web/local/1")
        .expect("instance #1 runs");
    kill(Pid::from_raw(-lost), Signal::SIGKILL).unwrap();
    let record = find_file(&p.state_dir().join("agent"), "ci--web--local--1.json").unwrap();
    std::fs::remove_file(record).unwrap();

    // The reconcile brings #1 back with the newest configuration, not the one the
    // last deployment recorded.
    assert!(wait_until(Duration::from_secs(20), || {
        let all = p.instances("web", "ci");
        all.len() == 2 && all.iter().all(|i| i["health"] == "healthy")
    }));
    let port = p.port("web", "ci", 1);
    assert_eq!(get_json(port)["message"], "kept");
    let got = p.json(&["config", "get", "web", "--env", "ci"]);
    let message = got["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "MESSAGE")
        .cloned();
    assert_eq!(message.unwrap()["value"], "kept", "{got}");
    let revisions = p.json(&["config", "history", "web", "--env", "ci"]);
    assert_eq!(
        revisions.as_array().unwrap().len(),
        1,
        "nothing restored: {revisions}"
    );
}

#[test]
fn the_owner_may_name_the_local_controller_by_its_address() {
    let mut p = Project::new(SLOW, &["steady", "slow"]);
    p.ok(&["deploy", "steady", "--env", "ci", "--version", "v1"]);
    let url = p.controller_url();
    let out = p.ok(&["--controller", &url, "status", "--env", "ci"]);
    assert!(stdout(&out).contains("steady"), "{}", text(&out));
}
