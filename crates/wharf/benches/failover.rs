//! Leader kills during deploys: three production controllers on one PostgreSQL, two
//! agents, and `WHARF_BENCH_KILLS` (default 50) rounds of: acknowledge a configuration
//! change (rolled to the instances), start a deploy, `kill -9` the leader at a pseudo-random point of it, and time
//! until a new leader serves a deploy-path call (an authenticated API write through the
//! CLI given all three addresses). Then the round checks that every acknowledged write
//! is still there, that the interrupted deploy ended finished or rolled back (never left
//! in progress or unresolved), that no deployment ran twice, and restarts the killed
//! controller as a follower.
//!
//! Run with `cargo bench -p wharf --bench failover`. It uses the PostgreSQL that
//! WHARF_TEST_POSTGRES names (PGPASSWORD for its password), or starts a throwaway one
//! with `scripts/postgres-temp`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{WHARF, p50_p99};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "-m", "http.server", "{{ port }}", "--bind", "127.0.0.1"]
    port: http
    health: { http: /, timeout: 5s }
    # Each instance proves itself for a second: a deploy lasts long enough to be cut.
    min_healthy_time: 1s
environments:
  fleet:
    nodes:
      - name: web
        count: 2
        services: [svc]
"#;

struct Controller {
    child: Option<Child>,
    api: u16,
    agent: u16,
    dir: PathBuf,
}

struct Bench {
    dir: PathBuf,
    database: String,
    controllers: Vec<Controller>,
    agents: Vec<Child>,
    token: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let begun = Instant::now();
    while begun.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

impl Bench {
    fn start(&mut self, n: usize) {
        let c = &mut self.controllers[n];
        std::fs::create_dir_all(&c.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.join("server.log"))
            .unwrap();
        c.child = Some(
            Command::new(WHARF)
                .args(["server", "--listen", &format!("127.0.0.1:{}", c.api)])
                .args(["--agent-listen", &format!("127.0.0.1:{}", c.agent)])
                .arg("--state-dir")
                .arg(&c.dir)
                .arg("--master-key-file")
                .arg(self.dir.join("master.keys"))
                .args(["--store", &self.database])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.controllers[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn leader(&self) -> Option<usize> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        self.controllers.iter().position(|c| {
            c.child.is_some()
                && http
                    .get(format!("http://127.0.0.1:{}/v1/health", c.api))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
        })
    }

    fn list(&self) -> String {
        let urls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| format!("http://127.0.0.1:{}", c.api))
            .collect();
        urls.join(",")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(WHARF);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("NO_COLOR", "1")
            .env("WHARF_CONTROLLER", self.list())
            .env("WHARF_TOKEN", &self.token);
        command
    }

    fn run(&self, args: &[&str]) -> Option<String> {
        let out = self.command(args).output().unwrap();
        if !out.status.success() && std::env::var_os("WHARF_BENCH_VERBOSE").is_some() {
            eprintln!(
                "wharf {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        self.run(&all)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--env", "fleet"]);
        for agent in &mut self.agents {
            let _ = Command::new("kill").arg(agent.id().to_string()).status();
            let _ = agent.wait();
        }
        for n in 0..self.controllers.len() {
            self.kill(n);
        }
    }
}

/// The PostgreSQL server to use: WHARF_TEST_POSTGRES's, or a throwaway one (stopped
/// when the returned guard drops).
fn server() -> (String, Option<PathBuf>) {
    if let Ok(url) = std::env::var("WHARF_TEST_POSTGRES") {
        return (url, None);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-temp");
    let out = Command::new(&script).arg("start").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_owned()
    };
    // SAFETY: set before any thread of this process reads the environment.
    unsafe { std::env::set_var("PGPASSWORD", var("PGPASSWORD")) };
    (
        var("WHARF_TEST_POSTGRES"),
        Some(PathBuf::from(var("WHARF_PG_DIR"))),
    )
}

fn main() {
    let kills: usize = std::env::var("WHARF_BENCH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let (server, throwaway) = server();
    let name = format!("failover_bench_{}", std::process::id());
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
    let project = tempfile::tempdir().unwrap();
    let dir = project.path().to_owned();
    std::fs::create_dir_all(dir.join("svc")).unwrap();
    std::fs::write(dir.join("svc/index.html"), "v0\n").unwrap();
    std::fs::write(dir.join("wharf.yaml"), DEFINITION).unwrap();
    let controllers = (0..3)
        .map(|n| Controller {
            child: None,
            api: free_port(),
            agent: free_port(),
            dir: dir.join(format!("controller-{n}")),
        })
        .collect();
    let mut b = Bench {
        dir: dir.clone(),
        database,
        controllers,
        agents: Vec::new(),
        token: String::new(),
    };
    b.start(0);
    assert!(wait_until(Duration::from_secs(30), || b.leader().is_some()));
    b.token = std::fs::read_to_string(dir.join("controller-0/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    b.start(1);
    b.start(2);
    let join = b
        .run(&["token", "create", "--env", "fleet", "--uses", "2"])
        .unwrap();
    let agents: Vec<String> = b
        .controllers
        .iter()
        .map(|c| format!("https://127.0.0.1:{}", c.agent))
        .collect();
    for n in 1..=2 {
        let child = Command::new(WHARF)
            .args([
                "agent",
                "--controller",
                &agents.join(","),
                "--name",
                &format!("web-{n}"),
            ])
            .arg("--state-dir")
            .arg(dir.join(format!("agent-{n}")))
            .env("WHARF_JOIN_TOKEN", join.trim())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("agent-{n}.log"))).unwrap())
            .spawn()
            .unwrap();
        b.agents.push(child);
    }
    assert!(wait_until(Duration::from_secs(30), || {
        b.json(&["hosts"])
            .as_array()
            .is_some_and(|h| h.iter().filter(|h| h["state"] == "ready").count() == 2)
    }));
    assert!(
        b.run(&[
            "deploy",
            "svc",
            "--env",
            "fleet",
            "--version",
            "v0",
            "--quiet"
        ])
        .is_some()
    );

    let mut takeover = Vec::new();
    let mut acknowledged = Vec::new();
    let (mut lost, mut unsettled, mut twice) = (0, 0, 0);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut seed: u64 = 0x5eed;
    let begun = Instant::now();
    for round in 1..=kills {
        // An acknowledged write before the kill: it must survive it.
        let key = format!("ROUND={round}");
        if b.run(&["config", "set", "svc", "--env", "fleet", &key, "--quiet"])
            .is_some()
        {
            acknowledged.push(round);
        }
        let version = format!("v{round}");
        std::fs::write(dir.join("svc/index.html"), format!("{version}\n")).unwrap();
        let mut deploy = b
            .command(&[
                "deploy",
                "svc",
                "--env",
                "fleet",
                "--version",
                &version,
                "--quiet",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A pseudo-random point of the deploy: 0 to 2 s after it was accepted.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis((seed >> 33) % 2000);
        wait_until(Duration::from_secs(20), || {
            b.json(&["history", "svc", "--env", "fleet"])[0]["version"] == version.as_str()
        });
        std::thread::sleep(delay);
        let Some(leader) = b.leader() else { continue };
        let killed = Instant::now();
        b.kill(leader);
        let served = wait_until(Duration::from_secs(30), || {
            b.run(&["token", "create", "--env", "fleet", "--ttl", "1m"])
                .is_some()
        });
        takeover.push(if served {
            killed.elapsed().as_secs_f64() * 1000.0
        } else {
            f64::INFINITY
        });
        let _ = deploy.wait();
        // The interrupted deploy ends finished or rolled back.
        let settled = wait_until(Duration::from_secs(60), || {
            let d = &b.json(&["history", "svc", "--env", "fleet"])[0];
            let state = d["state"].as_str().unwrap_or("");
            matches!(state, "succeeded" | "rolled_back" | "failed")
                || (state == "interrupted" && !d["resolved_by"].is_null())
        });
        let history = b.json(&["history", "svc", "--env", "fleet"]);
        let last = &history[0];
        let outcome = match last["state"].as_str().unwrap_or("?") {
            "succeeded" if last["version"] == version.as_str() => "carried through".to_owned(),
            "succeeded" => "rolled back to the version before".to_owned(),
            other => other.to_owned(),
        };
        *outcomes.entry(outcome.clone()).or_default() += 1;
        if !settled {
            unsettled += 1;
        }
        // No deployment of this round's version ran twice (a resumed deploy is the same
        // deployment, finished once; a rollback is its own).
        let ran = history
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["version"] == version.as_str()
                    && d["kind"] == "deploy"
                    && d["state"] == "succeeded"
            })
            .count();
        if ran > 1 {
            twice += 1;
        }
        let config = b.json(&["config", "history", "svc", "--env", "fleet"]);
        let text = config.to_string();
        lost += acknowledged
            .iter()
            .filter(|r| !text.contains(&format!("\"ROUND\":\"{r}\"")))
            .count();
        b.start(leader);
        eprintln!(
            "round {round}: killed controller {leader} {:.0?} into the deploy; served again after {:.0} ms; the deploy was {outcome}",
            delay,
            takeover.last().unwrap(),
        );
    }
    let (p50, p99) = p50_p99(takeover.clone());
    println!(
        "failover: {kills} leader kills during deploys in {:.0?} (3 controllers, one PostgreSQL, 2 agents)",
        begun.elapsed()
    );
    println!(
        "  a new leader serves deploys: p50 {p50:.0} ms, p99 {p99:.0} ms (max {:.0} ms)",
        takeover.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "  acknowledged configuration writes lost: {lost} of {}",
        acknowledged.len()
    );
    println!("  deploys left unsettled: {unsettled}; a version deployed twice: {twice}");
    println!("  how the interrupted deploys ended: {outcomes:?}");
    drop(b);
    if let Some(dir) = throwaway {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-temp");
        let _ = Command::new(script).arg("stop").arg(dir).status();
    }
}
