//! Remote agents: hosts join with tokens, talk mutual TLS, and run what the controller
//! assigns them. The agents here are separate processes on this machine, each with its
//! own state; `netns.rs` repeats the core of this across network namespaces.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;

const FLEET: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { MESSAGE: "hello from {{ node }}" }
environments:
  fleet:
    nodes:
      - name: web
        count: 3
        services: [svc]
"#;

pub struct AgentProcess {
    pub child: Child,
    pub name: String,
}

impl AgentProcess {
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A project whose environment `fleet` runs on three joined agents.
pub struct Fleet {
    pub project: Project,
    pub agents: Vec<AgentProcess>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Stop instances while their agents still run, then the agents.
        let _ = self.project.wharf(&["down", "--env", "fleet"]);
        self.agents.clear();
    }
}

pub fn agent_url(p: &Project) -> String {
    let file: Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("controller.json")).unwrap())
            .unwrap();
    file["agent_url"].as_str().unwrap().to_owned()
}

pub fn token(p: &mut Project, uses: &str) -> String {
    let out = p.ok(&["token", "create", "--env", "fleet", "--uses", uses]);
    stdout(&out).trim().to_owned()
}

pub fn start_agent(p: &Project, name: &str, token: Option<&str>) -> AgentProcess {
    let mut command = Command::new(WHARF);
    command
        .args([
            "agent",
            "--controller",
            &agent_url(p),
            "--name",
            name,
            "--labels",
            "zone=test",
        ])
        .arg("--state-dir")
        .arg(p.path().join(format!("agent-{name}")))
        .env("WHARF_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(p.path().join(format!("agent-{name}.log"))).unwrap());
    match token {
        Some(t) => command.env("WHARF_JOIN_TOKEN", t),
        None => command.env_remove("WHARF_JOIN_TOKEN"),
    };
    AgentProcess {
        child: command.spawn().unwrap(),
        name: name.to_owned(),
    }
}

pub fn hosts(p: &mut Project) -> Vec<Value> {
    p.json(&["hosts"]).as_array().unwrap().clone()
}

fn fleet() -> Fleet {
    let mut project = Project::new(FLEET, &["svc"]);
    let token = token(&mut project, "3");
    assert!(token.starts_with("wharf1."), "{token}");
    let agents = (1..=3)
        .map(|n| start_agent(&project, &format!("web-{n}"), Some(&token)))
        .collect();
    let mut fleet = Fleet { project, agents };
    let joined = wait_until(Duration::from_secs(10), || {
        hosts(&mut fleet.project)
            .iter()
            .filter(|h| h["state"] == "ready")
            .count()
            == 3
    });
    assert!(joined, "{:?}", hosts(&mut fleet.project));
    fleet
}

#[test]
fn three_agents_join_and_a_rollout_rolls_host_by_host_and_back() {
    let mut f = fleet();
    let p = &mut f.project;
    // An interrupted download left half the artifact on web-1: it resumes from there.
    p.ok(&["build", "svc", "--version", "v1"]);
    let artifact = &p.json(&["artifacts", "svc"])[0];
    let hex = artifact["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let bytes = std::fs::read(p.state_dir().join(format!("artifacts/{hex}.tar.gz"))).unwrap();
    let downloads = p.path().join("agent-web-1/downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(
        downloads.join(format!("{hex}.partial")),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    p.ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let log = std::fs::read_to_string(p.state_dir().join("server.log")).unwrap();
    assert!(
        log.contains(&format!(
            "resuming the download of {hex} at byte {}",
            bytes.len() / 2
        )),
        "{log}"
    );
    assert!(!downloads.join(format!("{hex}.partial")).exists());
    for (i, host) in ["web-1", "web-2", "web-3"].iter().enumerate() {
        let answer = get_json(p.port("svc", "fleet", i));
        assert_eq!(answer["message"], format!("hello from {host}"));
    }
    // Their logs stay on their hosts; `wharf logs` asks the agents for them.
    let port = p.port("svc", "fleet", 1);
    let one = stdout(&p.ok(&["logs", "svc", "--env", "fleet", "--instance", "1"]));
    assert!(one.contains(&format!("starting on {port}")), "{one}");
    let all = stdout(&p.ok(&["logs", "svc", "--env", "fleet"]));
    for n in 0..3 {
        assert!(all.contains(&format!("[svc #{n}] starting on")), "{all}");
    }
    // The instances are the agents' children, not the controller's.
    let controller = p.controller_pid().unwrap();
    for instance in p.instances("svc", "fleet") {
        let pid = instance["pid"].as_i64().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: i32 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(ppid, controller, "instance {pid} runs under an agent");
    }
    let hosts = hosts(p);
    assert!(
        hosts
            .iter()
            .all(|h| h["instances"] == 1 && h["labels"]["zone"] == "test"),
        "{hosts:?}"
    );

    // A broken version fails on the first host; the other two never see it.
    p.write("svc/app.py", BROKEN_APP);
    let out = p.wharf(&["deploy", "svc", "--env", "fleet", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("boom: cannot connect to the database"),
        "the remote log tail arrives: {err}"
    );
    assert!(err.contains("the previous version was restored"), "{err}");
    for i in 0..3 {
        assert_eq!(get_json(p.port("svc", "fleet", i))["version"], "v1");
    }
}

#[test]
fn wrong_and_revoked_credentials_get_nothing() {
    let mut f = fleet();
    // A token for another CA, and a made-up token for this one.
    let foreign = format!("wharf1.abc.def.{}", "0".repeat(64));
    let mut stranger = start_agent(&f.project, "web-9", Some(&foreign));
    assert!(!stranger.child.wait().unwrap().success());
    let real = token(&mut f.project, "1");
    let fingerprint = real.rsplit('.').next().unwrap();
    let mut guesser = start_agent(
        &f.project,
        "web-8",
        Some(&format!("wharf1.nope.guess.{fingerprint}")),
    );
    assert!(!guesser.child.wait().unwrap().success());
    let log = std::fs::read_to_string(f.project.path().join("agent-web-8.log")).unwrap();
    assert!(log.contains("join token refused"), "{log}");
    assert_eq!(hosts(&mut f.project).len(), 3, "nobody else joined");

    // A revoked host's agent is refused and stops.
    f.project.ok(&["host", "revoke", "web-3"]);
    let agent = f.agents.iter_mut().find(|a| a.name == "web-3").unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(agent.child.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the revoked agent stops");
    let log = std::fs::read_to_string(f.project.path().join("agent-web-3.log")).unwrap();
    assert!(log.contains("revoked"), "{log}");
    let state = hosts(&mut f.project)
        .into_iter()
        .find(|h| h["name"] == "web-3")
        .unwrap()["state"]
        .clone();
    assert_eq!(state, "revoked");
    // A spent single-use token does not admit a second host.
    let mut first = start_agent(&f.project, "web-7", Some(&real));
    assert!(wait_until(Duration::from_secs(10), || hosts(
        &mut f.project
    )
    .iter()
    .any(|h| h["name"] == "web-7")));
    let mut second = start_agent(&f.project, "web-6", Some(&real));
    assert!(!second.child.wait().unwrap().success());
    first.stop();
    guesser.stop();
    stranger.stop();
}

#[test]
fn an_agent_restart_adopts_and_a_controller_restart_loses_nothing() {
    let mut f = fleet();
    f.project
        .ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let before: Vec<Value> = f
        .project
        .instances("svc", "fleet")
        .iter()
        .map(|i| i["pid"].clone())
        .collect();

    // Restart one agent, without a token: it rejoins with its certificate and adopts.
    let index = f.agents.iter().position(|a| a.name == "web-2").unwrap();
    f.agents[index].stop();
    f.agents[index] = start_agent(&f.project, "web-2", None);
    // Restart the controller.
    let controller = f.project.controller_pid().unwrap();
    kill(Pid::from_raw(controller), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    f.project.ok(&["status"]); // starts it again on the same state
    let reconnected = wait_until(Duration::from_secs(15), || {
        let p = &mut f.project;
        let instances = p.instances("svc", "fleet");
        instances.len() == 3
            && instances.iter().all(|i| i["state"] == "running")
            && hosts(p).iter().all(|h| h["state"] == "ready")
    });
    assert!(reconnected, "{:?}", f.project.instances("svc", "fleet"));
    let after: Vec<Value> = f
        .project
        .instances("svc", "fleet")
        .iter()
        .map(|i| i["pid"].clone())
        .collect();
    assert_eq!(before, after, "no instance was restarted");
    // And the fleet still deploys.
    f.project.write("svc/note.txt", "v2");
    f.project
        .ok(&["deploy", "svc", "--env", "fleet", "--version", "v2"]);
    assert_eq!(get_json(f.project.port("svc", "fleet", 1))["note"], "v2");
}

const POOLED: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    resources: { cpu: 0.1, memory: 64Mi }
  huge:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    resources: { memory: 1000Gi }
environments:
  fleet:
    pools:
      svc: { count: 4, spread: host }
      huge: { count: 2 }
"#;

fn per_host(p: &mut Project) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in p.instances("svc", "fleet") {
        *counts
            .entry(i["node"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn pooled_instances_spread_move_off_a_lost_host_and_converge_when_it_returns() {
    let mut project = Project::new(POOLED, &["svc"]);
    let token = token(&mut project, "3");
    let agents = (1..=3)
        .map(|n| start_agent(&project, &format!("web-{n}"), Some(&token)))
        .collect();
    let mut f = Fleet { project, agents };
    assert!(wait_until(Duration::from_secs(10), || hosts(
        &mut f.project
    )
    .len()
        == 3));

    // Infeasible placements are refused at plan time, naming the instances and why
    // no host takes them.
    let out = f
        .project
        .wharf(&["deploy", "huge", "--env", "fleet", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot place 2 of 2 instance(s) of `huge`"),
        "{err}"
    );
    assert!(
        err.contains("(instances 0, 1)") && err.contains("requests"),
        "{err}"
    );
    assert!(f.project.instances("huge", "fleet").is_empty());

    f.project
        .ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let spread = per_host(&mut f.project);
    assert_eq!(spread.values().sum::<usize>(), 4);
    assert_eq!(spread.len(), 3, "spread over every host: {spread:?}");
    assert!(spread.values().all(|n| *n <= 2), "{spread:?}");

    // Cut one host off: its agent dies, its instances keep running where nobody sees them.
    let victim = spread
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(h, _)| h.clone())
        .unwrap();
    let stranded: Vec<i64> = f
        .project
        .instances("svc", "fleet")
        .iter()
        .filter(|i| i["node"] == victim.as_str())
        .map(|i| i["pid"].as_i64().unwrap())
        .collect();
    let index = f.agents.iter().position(|a| a.name == victim).unwrap();
    kill(
        Pid::from_raw(f.agents[index].child.id() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let _ = f.agents[index].child.wait();
    let cut_at = std::time::Instant::now();
    let moved = wait_until(Duration::from_secs(30), || {
        let p = &mut f.project;
        let instances = p.instances("svc", "fleet");
        instances.len() == 4
            && instances
                .iter()
                .all(|i| i["node"] != victim.as_str() && i["health"] == "healthy")
    });
    assert!(moved, "{:?}", f.project.instances("svc", "fleet"));
    #[allow(clippy::print_stderr)]
    {
        eprintln!("rescheduled off a lost host in {:?}", cut_at.elapsed());
    }
    let history = f.project.json(&["history", "svc", "--env", "fleet"]);
    assert_eq!(history[0]["kind"], "reschedule", "{history}");
    assert!(
        stranded.iter().all(|pid| alive(*pid as i32)),
        "the cut-off host's instances still run"
    );

    // The host comes back: it stops what was moved away, and exactly 4 remain.
    f.agents[index] = start_agent(&f.project, &victim, None);
    let converged = wait_until(Duration::from_secs(20), || {
        stranded.iter().all(|pid| !alive(*pid as i32))
    });
    assert!(converged, "the returning host stopped its stale instances");
    assert_eq!(f.project.instances("svc", "fleet").len(), 4);
    assert!(wait_until(Duration::from_secs(10), || hosts(
        &mut f.project
    )
    .iter()
    .all(|h| h["state"] == "ready")));
}

#[test]
fn a_reload_reaches_instances_on_remote_hosts_once_per_change() {
    let definition = format!(
        "{}environments:\n  fleet:\n    nodes:\n      - {{ name: far, services: [watcher] }}\n",
        crate::config::WATCHER_SERVICE
    );
    let mut project = Project::new("services: {}\n", &[]);
    let seen = project.path().join("seen.log");
    project.write(
        "wharf.yaml",
        &definition.replace("@SEEN@", seen.to_str().unwrap()),
    );
    project.write("watcher/app.py", crate::config::WATCHER);
    let token = token(&mut project, "1");
    let agent = start_agent(&project, "far", Some(&token));
    let mut f = Fleet {
        project,
        agents: vec![agent],
    };
    let p = &mut f.project;
    assert!(wait_until(Duration::from_secs(10), || hosts(p).len() == 1));
    p.ok(&["deploy", "watcher", "--env", "fleet", "--version", "v1"]);
    let pid = p.instances("watcher", "fleet")[0]["pid"].clone();
    let signals = || {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .matches("signal USR1")
            .count()
    };

    let out = p.ok(&["config", "set", "watcher", "--env", "fleet", "KEY=a"]);
    assert!(
        stderr(&out).contains("sent USR1 to 1 instance"),
        "{}",
        text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || signals() == 1),
        "the remote agent signalled its instance: {}",
        signals()
    );

    // A restarted agent does not signal the same change again; the next change, once.
    let index = f.agents.iter().position(|a| a.name == "far").unwrap();
    f.agents[index].stop();
    f.agents[index] = start_agent(&f.project, "far", None);
    let p = &mut f.project;
    assert!(wait_until(Duration::from_secs(10), || hosts(p)
        .iter()
        .all(|h| h["state"] == "ready")));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(signals(), 1);
    p.ok(&["config", "set", "watcher", "--env", "fleet", "KEY=b"]);
    assert!(wait_until(Duration::from_secs(10), || signals() == 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(signals(), 2);
    assert_eq!(
        p.instances("watcher", "fleet")[0]["pid"],
        pid,
        "reloaded, not restarted"
    );

    // After a key rotation the instance's token is revoked; the agent restarts a
    // crashed instance with the fresh one the controller sends with its assignments.
    p.ok(&["secret", "rotate-key"]);
    // The rotation answers the agent's watch at once with fresh tokens; that lands in
    // the agent's memory, which nothing outside shows: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let old = pid.as_i64().unwrap() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-old),
        nix::sys::signal::Signal::SIGKILL,
    );
    // The restarted instance (whatever its pid by now) reads its configuration.
    let reads = |pid: i64| -> Option<u16> {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let environ = String::from_utf8_lossy(&environ).into_owned();
        let var = |name: &str| {
            environ
                .split('\0')
                .find_map(|v| v.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let answer = reqwest::blocking::Client::new()
            .get(var("WHARF_CONFIG_URL")?)
            .bearer_auth(var("WHARF_CONFIG_TOKEN")?)
            .send()
            .ok()?;
        Some(answer.status().as_u16())
    };
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = p.instances("watcher", "fleet")[0]["pid"].as_i64();
            last = now.filter(|pid| *pid != old as i64).and_then(reads);
            last == Some(200)
        }),
        "the restarted instance reads its configuration: {last:?}"
    );
}

#[test]
fn a_failed_join_spends_nothing_and_registers_nothing() {
    let mut project = Project::new(FLEET, &["svc"]);
    let real = token(&mut project, "1");
    let parts: Vec<&str> = real.split('.').collect();
    let http = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let join = |name: &str, csr: &str| {
        http.post(format!("{}/v1/join", agent_url(&project)))
            .json(&serde_json::json!({
                "token_id": parts[1], "secret": parts[2], "name": name,
                "labels": {}, "capacity": { "cpu_millis": 1000, "memory_bytes": 1 }, "csr": csr,
            }))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(join("web-1", "garbage"), 400);
    assert_eq!(join("../web", "garbage"), 400);
    assert!(hosts(&mut project).is_empty(), "no phantom host");
    // The single-use token still admits the real agent.
    let mut agent = start_agent(&project, "web-1", Some(&real));
    assert!(wait_until(Duration::from_secs(10), || hosts(&mut project)
        .iter()
        .any(|h| h["name"] == "web-1" && h["state"] == "ready")));

    // Nobody takes a live host's name over by joining again, and the try spends nothing.
    let another = token(&mut project, "1");
    // Another machine (a state folder of its own) claiming to be web-1.
    let impostor_log = project.path().join("impostor.log");
    let mut impostor = Command::new(WHARF)
        .args([
            "agent",
            "--controller",
            &agent_url(&project),
            "--name",
            "web-1",
        ])
        .arg("--state-dir")
        .arg(project.path().join("agent-impostor"))
        .env("WHARF_JOIN_TOKEN", &another)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&impostor_log).unwrap())
        .spawn()
        .unwrap();
    assert!(!impostor.wait().unwrap().success());
    let log = std::fs::read_to_string(&impostor_log).unwrap();
    assert!(log.contains("already joined"), "{log}");
    let mut second = start_agent(&project, "web-2", Some(&another));
    assert!(wait_until(Duration::from_secs(10), || hosts(&mut project)
        .iter()
        .any(|h| h["name"] == "web-2" && h["state"] == "ready")));
    assert_eq!(hosts(&mut project).len(), 2);
    second.stop();
    agent.stop();
}

#[test]
fn out_of_file_descriptors_the_agent_port_backs_off_quietly() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs prlimit (util-linux)"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: prlimit (util-linux) is not installed");
        }
        return;
    }
    let mut p = Project::new(FLEET, &["svc"]);
    p.ok(&["status"]);
    let pid = p.controller_pid().unwrap();
    let port: u16 = agent_url(&p).rsplit(':').next().unwrap().parse().unwrap();
    // Few descriptors left for the controller: accepting soon fails with EMFILE.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(limited.success());
    let log = p.state_dir().join("server.log");
    let before = std::fs::metadata(&log).unwrap().len();
    let idle: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(!idle.is_empty());
    // A rate, so a span of time: spinning on EMFILE wrote megabytes of warnings here.
    std::thread::sleep(Duration::from_secs(2));
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 20_000, "the log grew by {grown} bytes in 2 s");
    drop(idle);
    // Once the connections are gone (idle TLS handshakes time out), it serves again.
    assert!(wait_until(Duration::from_secs(20), || p
        .wharf(&["status"])
        .status
        .success()));
}

/// `wharf exec`, `wharf logs --since` and `wharf down --purge` reach instances and
/// data on joined hosts through their agents, as they do on the controller's machine.
#[test]
fn exec_logs_since_and_purge_reach_joined_hosts() {
    let mut f = fleet();
    let p = &mut f.project;
    p.ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let out = p.ok(&[
        "exec",
        "svc",
        "--env",
        "fleet",
        "--instance",
        "1",
        "--",
        "sh",
        "-c",
        "echo \"$MESSAGE\"; echo kept > \"$WHARF_DATA_DIR/kept\"",
    ]);
    assert!(stdout(&out).starts_with("hello from web"), "{}", text(&out));
    let kept: Vec<_> = (1..=3)
        .map(|n| {
            p.path()
                .join(format!("agent-web-{n}/data/fleet/svc/1/kept"))
        })
        .filter(|f| f.exists())
        .collect();
    assert_eq!(kept.len(), 1, "written on the host that runs #1");
    // The command's own status is the exit status.
    let out = p.wharf(&["exec", "svc", "--env", "fleet", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let out = p.ok(&["logs", "svc", "--env", "fleet", "--since", "10m"]);
    assert!(stdout(&out).contains("starting on"), "{}", text(&out));
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = stdout(&p.ok(&["logs", "svc", "--env", "fleet", "--since", "1s"]));
            !last.contains("starting on")
        }),
        "only what was written since: {last}"
    );

    let out = p.ok(&["down", "--env", "fleet", "--purge", "--yes"]);
    assert!(
        stderr(&out).contains("removed 3 data folder(s)"),
        "{}",
        text(&out)
    );
    assert!(!kept[0].exists(), "the joined host's data is gone");
}

/// An agent of a version the controller does not work with is refused at once, and
/// told both versions and what to upgrade.
#[test]
fn an_agent_of_an_unsupported_version_is_refused_naming_both() {
    let mut p = Project::new(FLEET, &["svc"]);
    p.ok(&["status"]);
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let ask = |version: Option<&str>| {
        let mut request = client.get(format!("{}/v1/join/ca", agent_url(&p)));
        if let Some(v) = version {
            request = request.header("x-wharf-version", v);
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    };
    let ours = env!("CARGO_PKG_VERSION");
    assert_eq!(ask(Some(ours)).0, 200);
    let (status, body) = ask(Some("99.0.0"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(&format!(
            "agent 99.0.0 is not supported: this controller ({ours}) works with agents"
        )) && body.contains("upgrade the controller first"),
        "{body}"
    );
}

/// A service that says the time, in milliseconds, five times a second.
pub const TICKER: &str = r#"
services:
  ticker:
    build: ./ticker
    run: ["sh", "-c", "while true; do echo tick $(date +%s%3N); sleep 0.2; done"]
environments:
  fleet:
    nodes:
      - name: web
        count: 1
        services: [ticker]
"#;

/// Starts `wharf logs ticker --env fleet --follow` in `project` with `vars`, its output
/// going to `followed.log` there and its messages to `follow.err`.
pub fn follow_ticker(project: &std::path::Path, vars: &[(&str, &str)]) -> Child {
    Command::new(WHARF)
        .args(["logs", "ticker", "--env", "fleet", "--follow"])
        .env_remove("WHARF_CONTROLLER")
        .env_remove("WHARF_HOME")
        .env_remove("WHARF_FILE")
        .env_remove("WHARF_TOKEN")
        .envs(vars.iter().copied())
        .env("NO_COLOR", "1")
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(project.join("followed.log")).unwrap())
        .stderr(std::fs::File::create(project.join("follow.err")).unwrap())
        .spawn()
        .unwrap()
}

/// The times the ticks in `output` name.
pub fn ticks(output: &str) -> Vec<i64> {
    output
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "tick").nth(1))
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn logs_of_an_instance_on_a_joined_host_can_be_followed() {
    let mut project = Project::new(TICKER, &["ticker"]);
    let token = token(&mut project, "1");
    let agent = start_agent(&project, "web", Some(&token));
    // Dropped, it stops the ticker with `wharf down`, then the agent.
    let mut f = Fleet {
        project,
        agents: vec![agent],
    };
    let p = &mut f.project;
    assert!(
        wait_until(Duration::from_secs(10), || hosts(p)
            .iter()
            .any(|h| h["state"] == "ready")),
        "the agent did not join"
    );
    p.ok(&["deploy", "ticker", "--env", "fleet", "--version", "v1"]);
    let output = p.path().join("followed.log");
    let began = now_millis();
    let mut follow = follow_ticker(p.path(), &[]);
    // Ticks said well after the follow began: it follows, not only shows the tail.
    let followed = wait_until(Duration::from_secs(20), || {
        ticks(&std::fs::read_to_string(&output).unwrap_or_default())
            .iter()
            .any(|t| *t > began + 2_000)
    });
    let running = follow.try_wait().unwrap().is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    let said = std::fs::read_to_string(p.path().join("follow.err")).unwrap();
    assert!(followed && running, "not followed: {said}");
}
