//! How far one controller goes: N hollow agents in this process speak the real agent
//! protocol (join with a token, mutual TLS, long-poll assignments, reports) to a real
//! controller over loopback, without running anything (like Kubernetes' kubemark).
//!
//! `cargo bench -p wharf --bench hollow_fleet`; WHARF_BENCH_HOSTS (default 1000) and
//! WHARF_BENCH_INSTANCES (default 10000) set the size. Reports placements per second
//! durably committed, the time to roll a new version across every instance, the
//! controller's peak RSS, and the RSS of one real agent idle and with 100 instances.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{WHARF, wharf};

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
    wharf(dir, &["status"]);
    let controller_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".wharf/controller.json")).unwrap())
            .unwrap();
    let controller_pid = controller_file["pid"].as_u64().unwrap() as u32;
    let url = controller_file["agent_url"].as_str().unwrap().to_owned();
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
    let _ = Command::new("kill")
        .arg(controller_pid.to_string())
        .status();

    println!("| measure | value |");
    println!("|---|---|");
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
        "| controller peak RSS | {:.1} MB |",
        controller_peak as f64 / 1024.0
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
