//! How far one controller goes: N hollow agents in this process speak the real agent
//! protocol (join with a token, mutual TLS, long-poll assignments, reports) to a real
//! controller over loopback, without running anything (like Kubernetes' kubemark).
//!
//! `cargo bench -p wharf --bench hollow_fleet`; WHARF_BENCH_HOSTS (default 1000) and
//! WHARF_BENCH_INSTANCES (default 10000) set the size. Reports placements per second
//! durably committed, the time to roll a new version across every instance, the
//! controller's peak RSS, and the RSS of one real agent idle and with 100 instances.
//! With WHARF_BENCH_STORE=postgres the controller is a production one on a new database
//! of the PostgreSQL WHARF_TEST_POSTGRES names (PGPASSWORD for its password) instead of
//! the project's own on SQLite.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::WHARF;

use std::collections::BTreeMap;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_api::agent::{AgentReport, Capacity, InstanceStatus, ReportedInstance};
use wharf_api::{Health, InstanceState};
use wharf_client::agent::{AgentClient, JoinToken};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A kilobyte figure of /proc/PID/status (`VmRSS`, `VmHWM`).
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One hollow agent: reports every assigned instance as running and healthy at once.
async fn hollow(url: String, token: JoinToken, name: String) {
    let capacity = Capacity {
        cpu_millis: 64_000,
        memory_bytes: 256 << 30,
    };
    // A join refused for the moment (the controller busy with hundreds of handshakes)
    // is tried again, as a real agent would.
    let mut tries = 0;
    let credentials = loop {
        match wharf_client::agent::join(&url, &token, &name, BTreeMap::new(), capacity.clone())
            .await
        {
            Ok((_, credentials)) => break credentials,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("{name}: join failed ({e:?}), trying again");
                tokio::time::sleep(Duration::from_millis(250 * tries)).await;
            }
            Err(e) => panic!("{name}: join: {e:?}"),
        }
    };
    let client = AgentClient::connect(&url, &credentials)
        .await
        .expect("connect");
    let mut index = 0;
    let mut plans = Vec::new();
    loop {
        let report = AgentReport {
            mesh_port: None,
            traffic: Vec::new(),
            leaving: false,
            instances: plans
                .iter()
                .map(|plan: &wharf_api::agent::InstancePlan| ReportedInstance {
                    plan: plan.into(),
                    status: InstanceStatus {
                        plan_version: plan.version.clone(),
                        key: plan.key.clone(),
                        pid: Some(1),
                        state: InstanceState::Running,
                        health: Health::Healthy,
                        restarts: 0,
                        started_at: 0,
                        last_exit: None,
                        cpu_millis: None,
                        memory_bytes: None,
                    },
                    failure: None,
                })
                .collect(),
        };
        let _ = client.report(&report).await;
        tokio::select! {
            assigned = client.assignments(index) => {
                if let Ok(a) = assigned {
                    index = a.revision;
                    plans = a.plans;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The controller under test: the project's own (SQLite), or a production controller
/// on PostgreSQL, which every command is pointed at.
struct Target {
    /// `WHARF_CONTROLLER` and `WHARF_TOKEN` for a production controller.
    remote: Option<(String, String)>,
    server: Option<Child>,
}

impl Target {
    fn wharf(&self, dir: &std::path::Path, args: &[&str]) -> String {
        let mut command = Command::new(WHARF);
        command
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("WHARF_HOME")
            .env_remove("WHARF_CONTROLLER");
        if let Some((url, token)) = &self.remote {
            command
                .env("WHARF_CONTROLLER", url)
                .env("WHARF_TOKEN", token);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "wharf {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the controller; its pid and agent address.
    fn start(&mut self, dir: &std::path::Path) -> (u32, String) {
        if std::env::var("WHARF_BENCH_STORE").as_deref() != Ok("postgres") {
            self.wharf(dir, &["status"]);
            let file: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(".wharf/controller.json")).unwrap())
                    .unwrap();
            return (
                file["pid"].as_u64().unwrap() as u32,
                file["agent_url"].as_str().unwrap().to_owned(),
            );
        }
        let server = std::env::var("WHARF_TEST_POSTGRES").expect(
            "WHARF_BENCH_STORE=postgres needs WHARF_TEST_POSTGRES (scripts/postgres-temp start)",
        );
        let name = format!("hollow_{}", std::process::id());
        let made = Command::new("psql")
            .args([
                server.as_str(),
                "-q",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()
            .unwrap();
        assert!(made.success());
        let database = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
        let port = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (api, agent) = (port(()), port(()));
        let state = dir.join("controller");
        let child = Command::new(WHARF)
            .args(["server", "--listen", &format!("127.0.0.1:{api}")])
            .args(["--agent-listen", &format!("127.0.0.1:{agent}")])
            .arg("--state-dir")
            .arg(&state)
            .args(["--store", &database])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.server = Some(child);
        let token_file = state.join("admin.token");
        let begun = Instant::now();
        while !token_file.exists() && begun.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        self.remote = Some((format!("http://127.0.0.1:{api}"), token));
        (pid, format!("https://127.0.0.1:{agent}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill").arg(server.id().to_string()).status();
            let _ = server.wait();
        }
    }
}

fn main() {
    let hosts = env_number("WHARF_BENCH_HOSTS", 1000);
    let instances = env_number("WHARF_BENCH_INSTANCES", 10_000);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir_all(dir.join("svc")).unwrap();
    std::fs::write(dir.join("svc/note.txt"), "v1").unwrap();
    std::fs::write(
        dir.join("wharf.yaml"),
        format!(
            "services:\n  svc:\n    build: ./svc\n    run: [sleep, '3600']\n    resources: {{ cpu: 0.01, memory: 1Mi }}\n    max_parallel: {}\n  idle:\n    build: ./svc\n    run: [sleep, '3600']\n\
             environments:\n  scale:\n    pools:\n      svc: {{ count: {instances} }}\n  solo:\n    pools:\n      idle: {{ count: 100 }}\n",
            (instances / 20).max(1)
        ),
    )
    .unwrap();
    let mut target = Target {
        remote: None,
        server: None,
    };
    let (controller_pid, url) = target.start(dir);
    let wharf = |dir: &std::path::Path, args: &[&str]| target.wharf(dir, args);
    let token: JoinToken = wharf(
        dir,
        &[
            "token",
            "create",
            "--env",
            "scale",
            "--uses",
            &hosts.to_string(),
        ],
    )
    .trim()
    .parse()
    .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let joined = Instant::now();
    runtime.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        for n in 0..hosts {
            let (url, token, gate) = (url.clone(), token.clone(), gate.clone());
            let permit = gate.acquire_owned().await.unwrap();
            tokio::spawn(async move {
                drop(permit);
                hollow(url, token, format!("hollow-{n}")).await
            });
        }
    });
    // Wait for every hollow host to be ready.
    loop {
        let listed: serde_json::Value =
            serde_json::from_str(&wharf(dir, &["hosts", "--env", "scale", "-o", "json"])).unwrap();
        if listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "ready")
            .count()
            == hosts
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let join_secs = joined.elapsed().as_secs_f64();
    let peak_joined = memory_kb(controller_pid, "VmHWM:");

    let begun = Instant::now();
    let _guard = runtime.enter();
    wharf(
        dir,
        &[
            "deploy",
            "svc",
            "--env",
            "scale",
            "--version",
            "v1",
            "--quiet",
        ],
    );
    let first = begun.elapsed().as_secs_f64();
    let peak_first = memory_kb(controller_pid, "VmHWM:");
    std::fs::write(dir.join("svc/note.txt"), "v2").unwrap();
    let begun = Instant::now();
    wharf(
        dir,
        &[
            "deploy",
            "svc",
            "--env",
            "scale",
            "--version",
            "v2",
            "--quiet",
        ],
    );
    let rollout = begun.elapsed().as_secs_f64();
    let controller_peak = memory_kb(controller_pid, "VmHWM:");

    // One real agent: idle, then with 100 instances.
    let solo_token = wharf(dir, &["token", "create", "--env", "solo"])
        .trim()
        .to_owned();
    let mut agent: Child = Command::new(WHARF)
        .args([
            "agent",
            "--controller",
            &url,
            "--name",
            "solo-1",
            "--state-dir",
        ])
        .arg(dir.join("solo-agent"))
        .env("WHARF_JOIN_TOKEN", &solo_token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let agent_idle = memory_kb(agent.id(), "VmRSS:");
    wharf(
        dir,
        &[
            "deploy",
            "idle",
            "--env",
            "solo",
            "--version",
            "v1",
            "--quiet",
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let agent_busy = memory_kb(agent.id(), "VmRSS:");
    wharf(dir, &["down", "--env", "solo", "--quiet"]);
    let _ = agent.kill();
    let _ = agent.wait();
    if target.server.is_none() {
        let _ = Command::new("kill")
            .arg(controller_pid.to_string())
            .status();
    }

    println!("| measure | value |");
    println!("|---|---|");
    let store = if target.server.is_some() {
        "PostgreSQL (a production controller)"
    } else {
        "SQLite (the project's controller)"
    };
    println!("| store | {store} |");
    println!("| hosts (hollow agents) | {hosts} (joined in {join_secs:.1} s) |");
    println!("| instances | {instances} |");
    println!(
        "| first deploy: placed, committed and reported healthy | {first:.2} s = {:.0} placements/s |",
        instances as f64 / first
    );
    println!(
        "| rolling v1 -> v2 over every instance (batches of {}) | {rollout:.2} s |",
        (instances / 20).max(1)
    );
    println!(
        "| controller peak RSS | {:.1} MB (after the joins {:.1} MB, after the first deploy {:.1} MB) |",
        controller_peak as f64 / 1024.0,
        peak_joined as f64 / 1024.0,
        peak_first as f64 / 1024.0
    );
    println!(
        "| one real agent, idle | {:.1} MB |",
        agent_idle as f64 / 1024.0
    );
    println!(
        "| one real agent, 100 instances | {:.1} MB |",
        agent_busy as f64 / 1024.0
    );
}
