//! Several production controllers on one PostgreSQL (the one `scripts/test` starts,
//! named by WHARF_TEST_POSTGRES), each test on a database of its own: one leads, the
//! others name it, a killed or paused leader is replaced within seconds, its late
//! writes are refused, and instances on agents never restart because of it.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::fleet::AgentProcess;
use crate::harness::*;

const FLEET: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  fleet:
    nodes:
      - name: web
        count: 2
        services: [svc]
"#;

/// The test server's address, or None (saying why) where there is none outside CI.
#[allow(clippy::print_stderr)]
fn postgres_server() -> Option<String> {
    match std::env::var("WHARF_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but WHARF_TEST_POSTGRES is not: ./scripts/test starts PostgreSQL")
        }
        _ => {
            eprintln!(
                "skipped: WHARF_TEST_POSTGRES names no PostgreSQL server (./scripts/test starts one)"
            );
            None
        }
    }
}

/// A new database on a server (its password, when not the environment's); its address.
fn new_database(server: &str, password: Option<&str>, name: &str) -> String {
    let mut psql = Command::new("psql");
    if let Some(password) = password {
        psql.env("PGPASSWORD", password);
    }
    let out = psql
        .args([server, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{}", text(&out));
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Controller {
    child: Option<Child>,
    api: u16,
    agent: u16,
    dir: PathBuf,
    /// Its own way to the database (through a [`Partition`]), when not the shared one.
    store: Option<String>,
}

impl Controller {
    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// Controllers sharing one database, the agents of environment `fleet`, and a project.
struct Cluster {
    project: Project,
    database: String,
    /// The database's password, when not the environment's PGPASSWORD.
    password: Option<String>,
    controllers: Vec<Controller>,
    agents: Vec<AgentProcess>,
}

impl Cluster {
    fn new(controllers: usize, name: &str) -> Option<Self> {
        Some(Self::on(&postgres_server()?, None, controllers, name))
    }

    /// Controllers on a database made on `server`.
    fn on(server: &str, password: Option<&str>, controllers: usize, name: &str) -> Self {
        Self::of(
            Project::new(FLEET, &["svc"]),
            server,
            password,
            controllers,
            name,
        )
    }

    /// Controllers of `project` on a database made on `server`.
    fn of(
        project: Project,
        server: &str,
        password: Option<&str>,
        controllers: usize,
        name: &str,
    ) -> Self {
        let database = new_database(server, password, &format!("{name}_{}", std::process::id()));
        let controllers = (0..controllers)
            .map(|n| Controller {
                child: None,
                api: free_port(),
                agent: free_port(),
                dir: project.path().join(format!("controller-{n}")),
                store: None,
            })
            .collect();
        let mut cluster = Self {
            project,
            database,
            password: password.map(str::to_owned),
            controllers,
            agents: Vec::new(),
        };
        // The first makes the master keyring the others are given.
        cluster.start(0);
        assert!(
            cluster.wait_leader(Duration::from_secs(20)).is_some(),
            "{}",
            cluster.controllers[0].log()
        );
        for n in 1..cluster.controllers.len() {
            cluster.start(n);
        }
        cluster
    }

    fn start(&mut self, n: usize) {
        let keys = self.project.path().join("master.keys");
        let c = &mut self.controllers[n];
        let store = c.store.clone().unwrap_or_else(|| self.database.clone());
        std::fs::create_dir_all(&c.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.dir.join("server.log"))
            .unwrap();
        let mut command = Command::new(WHARF);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        let child = command
            .args(["server", "--listen"])
            .arg(format!("127.0.0.1:{}", c.api))
            .arg("--agent-listen")
            .arg(format!("127.0.0.1:{}", c.agent))
            .arg("--state-dir")
            .arg(&c.dir)
            .arg("--master-key-file")
            .arg(&keys)
            .args(["--store", &store])
            .env("WHARF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        c.child = Some(child);
    }

    fn signal(&mut self, n: usize, signal: Signal) {
        if let Some(pid) = self.controllers[n].pid() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    fn kill(&mut self, n: usize) {
        self.signal(n, Signal::SIGKILL);
        if let Some(mut child) = self.controllers[n].child.take() {
            let _ = child.wait();
        }
    }

    /// Which controller answers as the leader now.
    fn leader(&self) -> Option<usize> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(500))
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

    /// Controller `n`'s answer to a health check: its status and body.
    fn answer(&self, n: usize) -> Option<(u16, Value)> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let answer = http
            .get(format!(
                "http://127.0.0.1:{}/v1/health",
                self.controllers[n].api
            ))
            .send()
            .ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json().unwrap_or(Value::Null)))
    }

    fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let mut found = None;
        wait_until(limit, || {
            found = self.leader();
            found.is_some()
        });
        found
    }

    fn controllers_list(&self) -> String {
        let urls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| format!("http://127.0.0.1:{}", c.api))
            .collect();
        urls.join(",")
    }

    fn agent_list(&self) -> String {
        let urls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| format!("https://127.0.0.1:{}", c.agent))
            .collect();
        urls.join(",")
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.controllers[0].dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Runs the CLI against the controllers, given all of them.
    fn wharf(&mut self, args: &[&str]) -> Output {
        let (list, token) = (self.controllers_list(), self.admin_token());
        let out = self.project.wharf_with(
            args,
            &[("WHARF_CONTROLLER", &list), ("WHARF_TOKEN", &token)],
            None,
        );
        self.project.forget_envs();
        out
    }

    fn ok(&mut self, args: &[&str]) -> Output {
        let out = self.wharf(args);
        assert!(
            out.status.success(),
            "`wharf {}` failed:\n{}",
            args.join(" "),
            text(&out)
        );
        out
    }

    fn json(&mut self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_slice(&self.ok(&all).stdout).unwrap()
    }

    /// Joins `count` agents to `fleet`, each given every controller's agent address.
    fn join_agents(&mut self, count: usize) {
        let out = self.ok(&[
            "token",
            "create",
            "--env",
            "fleet",
            "--uses",
            &count.to_string(),
        ]);
        let token = stdout(&out).trim().to_owned();
        for n in 1..=count {
            let name = format!("web-{n}");
            let dir = self.project.path().join(format!("agent-{name}"));
            let child = Command::new(WHARF)
                .args(["agent", "--controller", &self.agent_list(), "--name", &name])
                .arg("--state-dir")
                .arg(&dir)
                .env("WHARF_JOIN_TOKEN", &token)
                .env("WHARF_LOG", "info")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(self.project.path().join(format!("agent-{name}.log")))
                        .unwrap(),
                )
                .spawn()
                .unwrap();
            self.agents.push(AgentProcess { child, name });
        }
        let joined = wait_until(Duration::from_secs(20), || self.hosts_ready() == count);
        assert!(joined, "agents did not join");
    }

    fn hosts_ready(&mut self) -> usize {
        let out = self.wharf(&["hosts", "--output", "json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .map_or(0, |hosts| {
                hosts.iter().filter(|h| h["state"] == "ready").count()
            })
    }

    /// The pids of `svc`'s running instances, by instance.
    fn pids(&mut self) -> Vec<(u64, i64)> {
        let status = self.json(&["status", "--env", "fleet"]);
        let mut pids: Vec<(u64, i64)> = status["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["state"] == "running")
            .map(|i| {
                (
                    i["instance"].as_u64().unwrap_or(0),
                    i["pid"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        pids.sort();
        pids
    }

    fn history(&mut self) -> Vec<Value> {
        self.json(&["history", "svc", "--env", "fleet"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.wharf(&["down", "--env", "fleet"]);
        self.agents.clear();
        for n in 0..self.controllers.len() {
            self.signal(n, Signal::SIGCONT);
            self.kill(n);
        }
    }
}

#[test]
fn followers_name_the_leader_and_the_cli_finds_it() {
    let Some(mut cluster) = Cluster::new(2, "names") else {
        return;
    };
    // The second answers once it has started following.
    let follower_url = format!("http://127.0.0.1:{}/v1/status", cluster.controllers[1].api);
    let mut answer = None;
    wait_until(Duration::from_secs(10), || {
        answer = reqwest::blocking::get(&follower_url).ok();
        answer.as_ref().is_some_and(|a| a.status().as_u16() != 503)
    });
    let answer = answer.expect("the follower answers");
    assert_eq!(answer.status().as_u16(), 421);
    let leader = format!("http://127.0.0.1:{}", cluster.controllers[0].api);
    assert_eq!(answer.headers()["wharf-leader"].to_str().unwrap(), leader);
    let body: Value = answer.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains(&leader), "{body}");
    // The CLI, given the follower first, ends up at the leader.
    let follower_first = format!(
        "http://127.0.0.1:{},http://127.0.0.1:{}",
        cluster.controllers[1].api, cluster.controllers[0].api
    );
    let token = cluster.admin_token();
    let out = cluster.project.wharf_with(
        &["hosts"],
        &[
            ("WHARF_CONTROLLER", &follower_first),
            ("WHARF_TOKEN", &token),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_password_in_the_store_address_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(WHARF)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://ann:hunter2@127.0.0.1:1/wharf",
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("PGPASSWORD"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

#[test]
fn a_killed_leader_is_replaced_and_its_deploy_ends_without_restarting_instances() {
    let Some(mut cluster) = Cluster::new(3, "failover") else {
        return;
    };
    cluster.join_agents(2);
    cluster.ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let before = cluster.pids();
    assert_eq!(before.len(), 2, "{before:?}");

    // A failover with nothing deploying: no instance restarts.
    let first = cluster.leader().unwrap();
    let killed_at = Instant::now();
    cluster.kill(first);
    let second = cluster
        .wait_leader(Duration::from_secs(10))
        .expect("a new leader");
    assert_ne!(first, second);
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(20), || cluster
        .hosts_ready()
        == 2));
    assert_eq!(
        cluster.pids(),
        before,
        "no instance restarted for the failover"
    );
    cluster.start(first);

    // A failover in the middle of a deploy: it ends finished or rolled back.
    cluster.project.write("svc/note.txt", "v2");
    let list = cluster.controllers_list();
    let token = cluster.admin_token();
    let deploying = Command::new(WHARF)
        .args(["deploy", "svc", "--env", "fleet", "--version", "v2"])
        .current_dir(cluster.project.path())
        .env("WHARF_CONTROLLER", &list)
        .env("WHARF_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_until(Duration::from_secs(30), || {
        cluster
            .history()
            .first()
            .is_some_and(|d| d["version"] == "v2")
    });
    assert!(started, "{:?}", cluster.history());
    cluster.kill(second);
    // The CLI follows the deploy to the next leader and says how it ended.
    let said = deploying.wait_with_output().unwrap();
    let third = cluster
        .wait_leader(Duration::from_secs(10))
        .expect("a new leader");
    let settled = wait_until(Duration::from_secs(60), || {
        cluster.history().first().is_some_and(|d| {
            d["state"] == "succeeded"
                || d["state"] == "rolled_back"
                || d["state"] == "failed"
                || (d["state"] == "interrupted" && !d["resolved_by"].is_null())
        })
    });
    assert!(
        settled,
        "the deploy was left half done: {:?}",
        cluster.history().first()
    );
    let last = cluster.history()[0].clone();
    // Carried through (resumed, or done before the kill), or rolled back to v1.
    let finished = last["state"] == "succeeded" && last["version"] == "v2";
    let cli = text(&said);
    assert_eq!(said.status.success(), finished, "{cli}\n{last}");
    if !said.status.success() {
        assert!(cli.contains("did not finish"), "{cli}");
    }
    // What runs is whole: both instances running the same version.
    assert!(wait_until(Duration::from_secs(30), || {
        let status = cluster.json(&["status", "--env", "fleet"]);
        let instances = status["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        instances.len() == 2
            && instances.iter().all(|i| i["state"] == "running")
            && instances
                .windows(2)
                .all(|w| w[0]["version"] == w[1]["version"])
    }));
    // And the new leader serves deploys.
    cluster.project.write("svc/note.txt", "v3");
    cluster.ok(&["deploy", "svc", "--env", "fleet", "--version", "v3"]);
    assert_eq!(cluster.history()[0]["state"], "succeeded");
    assert!(
        cluster.controllers[third]
            .log()
            .contains("leading the controllers")
    );
}

#[test]
fn a_paused_leader_past_its_lease_writes_nothing_and_steps_down() {
    let Some(mut cluster) = Cluster::new(2, "fence") else {
        return;
    };
    let first = cluster.leader().unwrap();
    cluster.signal(first, Signal::SIGSTOP);
    // The other takes over once the paused one's lease runs out.
    let second = cluster
        .wait_leader(Duration::from_secs(15))
        .expect("a new leader");
    assert_ne!(first, second);
    cluster.ok(&["token", "create", "--env", "fleet"]);
    let audit_before = cluster.json(&["audit"]);
    cluster.signal(first, Signal::SIGCONT);
    // It finds its lease gone and exits rather than act as the leader.
    let exited = wait_until(Duration::from_secs(10), || {
        cluster.controllers[first]
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    });
    assert!(
        exited,
        "the deposed leader kept running:\n{}",
        cluster.controllers[first].log()
    );
    let status = cluster.controllers[first]
        .child
        .take()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        cluster.controllers[first]
            .log()
            .contains("no longer the leader")
    );
    assert_eq!(
        cluster.json(&["audit"]),
        audit_before,
        "the deposed leader wrote nothing"
    );
    assert_eq!(cluster.leader(), Some(second));
}

/// A PostgreSQL of the test's own (`scripts/postgres-temp`), to restart under its
/// controllers without disturbing the other tests' server; stopped when dropped.
struct OwnPostgres {
    url: String,
    password: String,
    dir: String,
}

impl OwnPostgres {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres-temp")
    }

    fn start() -> Option<Self> {
        postgres_server()?;
        let out = Command::new(Self::script()).arg("start").output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let said = stdout(&out);
        let var = |name: &str| {
            said.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap()
                .to_owned()
        };
        Some(Self {
            url: var("WHARF_TEST_POSTGRES"),
            password: var("PGPASSWORD"),
            dir: var("WHARF_PG_DIR"),
        })
    }

    fn restart(&self) {
        let out = Command::new(Self::script())
            .args(["restart", &self.dir])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["stop", &self.dir])
            .output();
    }
}

#[test]
fn the_database_restarted_under_the_controllers_loses_nothing_and_restarts_no_instance() {
    let Some(postgres) = OwnPostgres::start() else {
        return;
    };
    let mut cluster = Cluster::on(&postgres.url, Some(&postgres.password), 2, "restarted");
    cluster.join_agents(2);
    cluster.ok(&["deploy", "svc", "--env", "fleet", "--version", "v1"]);
    let before = cluster.pids();
    postgres.restart();
    // A controller leads again (the same one, or the other if the first could not
    // renew in time and stepped down), with every record, and serves deploys.
    assert!(cluster.wait_leader(Duration::from_secs(20)).is_some());
    assert!(wait_until(Duration::from_secs(20), || cluster
        .hosts_ready()
        == 2));
    assert_eq!(cluster.pids(), before, "no instance restarted");
    assert_eq!(cluster.history()[0]["version"], "v1");
    cluster.project.write("svc/note.txt", "v2");
    let deployed = wait_until(Duration::from_secs(30), || {
        cluster
            .wharf(&["deploy", "svc", "--env", "fleet", "--version", "v2"])
            .status
            .success()
    });
    assert!(deployed, "{:?}", cluster.history());
    drop(cluster);
}

/// A way to the database that can be cut as a network partition would: once cut,
/// nothing more passes either way (connections stay open, unanswered), until healed.
struct Partition {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    fn to(server: &str) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let target = server
            .split_once('@')
            .map_or(server, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let cut = flag.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buffer = [0u8; 16384];
                        loop {
                            if cut.load(Ordering::SeqCst) {
                                // Unread bytes wait in the kernel: the peer hears nothing.
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                            match from.read(&mut buffer) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buffer[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Self { port, cut }
    }

    /// The database's address through this way.
    fn address(&self, database: &str) -> String {
        let (scheme_user, rest) = database.split_once('@').unwrap();
        let (_, name) = rest.split_once('/').unwrap();
        format!("{scheme_user}@127.0.0.1:{}/{name}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_follower_cut_off_from_the_database_never_leads_and_follows_again_once_healed() {
    let Some(server) = postgres_server() else {
        return;
    };
    let mut cluster = Cluster::on(&server, None, 2, "partition");
    let partition = Partition::to(&server);
    let cut_off = cluster.controllers.len();
    cluster.controllers.push(Controller {
        child: None,
        api: free_port(),
        agent: free_port(),
        dir: cluster.project.path().join("controller-cut"),
        store: Some(partition.address(&cluster.database)),
    });
    cluster.start(cut_off);
    let names_leader = |cluster: &Cluster, leader: usize| {
        cluster.answer(cut_off).is_some_and(|(status, body)| {
            status == 421
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&cluster.controllers[leader].api.to_string()))
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || names_leader(&cluster, 0)),
        "{}",
        cluster.controllers[cut_off].log()
    );

    partition.set_cut(true);
    let mut said = None;
    let told = wait_until(Duration::from_secs(30), || {
        said = cluster.answer(cut_off);
        said.as_ref().is_some_and(|(status, _)| *status == 503)
    });
    assert!(told, "{said:?}");
    let (_, body) = said.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the database"),
        "{body}"
    );
    // The CLI, given every controller, still reaches the leader and writes.
    cluster.ok(&["config", "set", "svc", "--env", "fleet", "A=1"]);

    // The leader dies: the follower that reaches the database takes over, the one cut
    // off does not (it cannot campaign), and says so rather than naming anyone.
    cluster.kill(0);
    let mut leader = None;
    wait_until(Duration::from_secs(10), || {
        leader = cluster.leader();
        leader.is_some()
    });
    assert_eq!(leader, Some(1), "{}", cluster.controllers[1].log());
    cluster.ok(&["config", "set", "svc", "--env", "fleet", "A=2"]);
    assert_eq!(cluster.answer(cut_off).map(|(s, _)| s), Some(503));

    partition.set_cut(false);
    assert!(
        wait_until(Duration::from_secs(30), || names_leader(&cluster, 1)),
        "{}",
        cluster.controllers[cut_off].log()
    );
    assert!(
        cluster.controllers[cut_off]
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none()),
        "the follower cut off kept running"
    );
    let config = cluster.json(&["config", "get", "svc", "--env", "fleet"]);
    assert!(config.to_string().contains("\"2\""), "{config}");
}

#[test]
fn an_instance_watching_its_configuration_follows_the_controllers_through_a_failover() {
    let Some(server) = postgres_server() else {
        return;
    };
    let definition = format!(
        "{}environments:\n  fleet:\n    nodes:\n      - name: web\n        count: 1\n        services: [watcher]\n",
        crate::config::WATCHER_SERVICE
    );
    let project = Project::new(&definition.replace("@SEEN@", "placeholder"), &[]);
    let seen = project.path().join("seen.log");
    project.write(
        "wharf.yaml",
        &definition.replace("@SEEN@", seen.to_str().unwrap()),
    );
    project.write("watcher/app.py", crate::config::WATCHER);
    let mut cluster = Cluster::of(project, &server, None, 2, "watch");
    cluster.join_agents(1);
    cluster.ok(&["deploy", "watcher", "--env", "fleet", "--version", "v1"]);
    let lines = || std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || lines().contains("KEY=start")),
        "{}",
        lines()
    );
    let pid =
        cluster.json(&["status", "--env", "fleet"])["services"][0]["instances"][0]["pid"].as_i64();
    // Its read waits at the leader (a long poll) when the leader dies.
    cluster.kill(0);
    assert_eq!(cluster.wait_leader(Duration::from_secs(10)), Some(1));
    cluster.ok(&["config", "set", "watcher", "--env", "fleet", "KEY=after"]);
    // The same watch (one thread, which stops at its first failed read) sees the change.
    assert!(
        wait_until(Duration::from_secs(30), || lines().contains("KEY=after")),
        "the watch did not follow the new leader:\n{}\nagent: {}",
        lines(),
        std::fs::read_to_string(cluster.project.path().join("agent-web-1.log")).unwrap_or_default()
    );
    let now =
        cluster.json(&["status", "--env", "fleet"])["services"][0]["instances"][0]["pid"].as_i64();
    assert_eq!(now, pid, "the instance was not restarted");
    // The new leader stops it too (and nothing is left running after the test).
    cluster.ok(&["down", "--env", "fleet"]);
    let pid = pid.expect("the watcher runs");
    assert!(
        wait_until(Duration::from_secs(20), || !std::path::Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "`wharf down` on the new leader did not stop the watcher (pid {pid})"
    );
}

#[test]
fn logs_followed_through_a_failover_go_on_at_the_next_leader() {
    let Some(server) = postgres_server() else {
        return;
    };
    let mut cluster = Cluster::of(
        Project::new(crate::fleet::TICKER, &["ticker"]),
        &server,
        None,
        2,
        "logs",
    );
    cluster.join_agents(1);
    cluster.ok(&["deploy", "ticker", "--env", "fleet", "--version", "v1"]);
    let output = cluster.project.path().join("followed.log");
    let (list, token) = (cluster.controllers_list(), cluster.admin_token());
    let mut follow = crate::fleet::follow_ticker(
        cluster.project.path(),
        &[("WHARF_CONTROLLER", &list), ("WHARF_TOKEN", &token)],
    );
    let seen = || crate::fleet::ticks(&std::fs::read_to_string(&output).unwrap_or_default());
    assert!(
        wait_until(Duration::from_secs(20), || !seen().is_empty()),
        "no ticks followed"
    );
    cluster.kill(0);
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(cluster.wait_leader(Duration::from_secs(10)), Some(1));
    // Ticks said after the leader died reach the same `wharf logs --follow`.
    let went_on = wait_until(Duration::from_secs(30), || {
        seen().iter().any(|t| *t > killed_at + 1_000)
    });
    let said = std::fs::read_to_string(cluster.project.path().join("follow.err")).unwrap();
    let still_following = follow.try_wait().unwrap().is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        went_on && still_following,
        "the follow did not go on at the next leader:\n{said}"
    );
    assert!(
        said.contains("following the logs on the next leader"),
        "{said}"
    );
    cluster.ok(&["down", "--env", "fleet"]);
}

/// A CA and, signed by it, a certificate for 127.0.0.1 with its key, as PEM.
fn database_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test database CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Turns TLS on in `postgres` with a certificate its new CA signed; the CA's PEM file.
fn database_tls(postgres: &OwnPostgres) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (ca, cert, key) = database_certificate();
    let dir = PathBuf::from(&postgres.dir);
    let owner = std::fs::metadata(&dir).unwrap();
    for (name, pem) in [("server.crt", &cert), ("server.key", &key)] {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let sql = format!(
        "ALTER SYSTEM SET ssl_cert_file = '{0}/server.crt'; ALTER SYSTEM SET ssl_key_file = '{0}/server.key'; ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
        dir.display()
    );
    for statement in sql.split_inclusive(';') {
        let out = Command::new("psql")
            .env("PGPASSWORD", &postgres.password)
            .args([postgres.url.as_str(), "-q", "-c", statement])
            .output()
            .unwrap();
        assert!(out.status.success(), "{statement}: {}", text(&out));
    }
    ca_file
}

/// Starts a controller on `store`, trusting `ca` for the database; its child and log.
fn controller_on(
    store: &str,
    password: &str,
    ca: &std::path::Path,
    dir: &std::path::Path,
) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    Command::new(WHARF)
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir)
        .args(["--store", store])
        .env("PGPASSWORD", password)
        .env("PGSSLROOTCERT", ca)
        .env("WHARF_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn with_sslmode_require_the_controller_talks_tls_to_the_database_and_checks_its_certificate() {
    let Some(postgres) = OwnPostgres::start() else {
        return;
    };
    let ca = database_tls(&postgres);
    let database = new_database(&postgres.url, Some(&postgres.password), "tls");
    let store = format!("{database}?sslmode=require");
    let project = Project::new(FLEET, &[]);
    let mut server = controller_on(&store, &postgres.password, &ca, &project.path().join("c"));
    let token = project.path().join("c/admin.token");
    let led = wait_until(Duration::from_secs(20), || token.exists());
    let log = || std::fs::read_to_string(project.path().join("c/server.log")).unwrap_or_default();
    assert!(led, "{}", log());
    // Every connection of the controller's is encrypted.
    let out = Command::new("psql")
        .env("PGPASSWORD", &postgres.password)
        .args([
            postgres.url.as_str(),
            "-Atc",
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'wharf'",
        ])
        .output()
        .unwrap();
    let seen = stdout(&out);
    assert!(
        !seen.trim().is_empty() && seen.lines().all(|l| l == "t"),
        "connections' TLS: {seen:?} ({})",
        text(&out)
    );
    let _ = server.kill();
    let _ = server.wait();

    // A certificate the given CA did not sign is refused, and the message says why.
    let (other_ca, _, _) = database_certificate();
    let wrong = project.path().join("other-ca.pem");
    std::fs::write(&wrong, other_ca).unwrap();
    let refused = controller_on(
        &store,
        &postgres.password,
        &wrong,
        &project.path().join("d"),
    )
    .wait_with_output()
    .unwrap();
    let said = std::fs::read_to_string(project.path().join("d/server.log")).unwrap();
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("certificate"), "{said}");
}
