//! A production-like fleet on one machine: hosts are network namespaces with their own
//! addresses (`provider: netns`), and single hosts are killed and cut off to test
//! failure modes. Needs root and iproute2: skipped with a reason elsewhere, failing in CI.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const STAGING: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
    resources: { cpu: 0.1, memory: 32Mi }
    max_parallel: 1
    min_healthy_time: 300ms
environments:
  staging:
    hosts: { provider: netns, count: 3, prefix: node }
    pools:
      svc: { count: 3, max_per_host: 2 }
"#;

/// The fleet tests run one after another: each runs 3 hosts' agents and checks timings
/// (hosts going down within seconds) that three fleets at once on two cores, beside the
/// rest of the suite, would miss.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static FLEETS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FLEETS.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn runs_here() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if root && ip {
        return true;
    }
    let why = if root {
        "iproute2 (`ip netns`) is missing"
    } else {
        "it needs root"
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "network-namespace tests cannot run in CI: {why}"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping a network-namespace test: {why}");
    }
    false
}

/// Removes the environment's namespaces however the test ends.
struct Staging(Project);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.0.wharf(&["env", "down", "staging"]);
    }
}

fn healthy(p: &mut Project) -> Vec<serde_json::Value> {
    p.instances("svc", "staging")
        .into_iter()
        .filter(|i| i["state"] == "running" && i["health"] == "healthy")
        .collect()
}

/// Instance processes (not agents) in this project's namespaces.
fn instance_processes(p: &Project) -> usize {
    let record: serde_json::Value = match std::fs::read(p.state_dir().join("netns.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => return 0,
    };
    let mut count = 0;
    for host in record["hosts"].as_object().unwrap().values() {
        let out = Command::new("ip")
            .args(["netns", "pids", host["netns"].as_str().unwrap()])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("app.py") {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn a_netns_fleet_rolls_survives_a_killed_and_a_partitioned_host_and_goes_away() {
    if !runs_here() {
        return;
    }
    let _one_fleet_at_a_time = one_at_a_time();
    let mut staging = Staging(Project::new(STAGING, &["svc"]));
    let p = &mut staging.0;
    p.ok(&["env", "up", "staging"]);
    let hosts = p.json(&["hosts", "--env", "staging"]);
    assert_eq!(hosts.as_array().unwrap().len(), 3);
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["address"].as_str().unwrap().starts_with("10.231.")),
        "{hosts}"
    );
    // Adding a host is one more up: nothing is made twice.
    p.ok(&["env", "up", "staging"]);

    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v1"]);
    assert_eq!(healthy(p).len(), 3);

    // A rolling upgrade keeps count - max_parallel instances healthy throughout.
    p.write("svc/note.txt", "v2");
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (dir, watching) = (p.path().to_owned(), watching.clone());
        std::thread::spawn(move || {
            let mut lowest = usize::MAX;
            while watching.load(Ordering::Relaxed) {
                let out = Command::new(WHARF)
                    .args(["status", "--env", "staging", "-o", "json"])
                    .current_dir(&dir)
                    .output()
                    .unwrap();
                let status: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let up = status["services"].as_array().map(|s| {
                    s.iter()
                        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                        .filter(|i| i["health"] == "healthy" && i["state"] == "running")
                        .count()
                });
                lowest = lowest.min(up.unwrap_or(0));
            }
            lowest
        })
    };
    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v2"]);
    watching.store(false, Ordering::Relaxed);
    let lowest = watcher.join().unwrap();
    assert!(
        lowest >= 2,
        "at least count - max_parallel stayed healthy, saw {lowest}"
    );
    assert_eq!(healthy(p).len(), 3);

    // Kill a host: its instance moves to the others within a bounded time.
    let victim = healthy(p)[0]["node"].as_str().unwrap().to_owned();
    let killed_at = Instant::now();
    p.ok(&["host", "kill", &victim]);
    let moved = wait_until(Duration::from_secs(30), || {
        let up = healthy(p);
        up.len() == 3 && up.iter().all(|i| i["node"] != victim.as_str())
    });
    assert!(moved, "{:?}", p.instances("svc", "staging"));
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "netns: instances of a killed host healthy elsewhere after {:?}",
            killed_at.elapsed()
        );
    }
    p.ok(&["host", "start", &victim]);
    assert!(wait_until(Duration::from_secs(20), || p
        .json(&["hosts", "--env", "staging"])
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["state"] == "ready")));

    // Cut a host off: its instances move; once it heals, exactly three run.
    let cut = healthy(p)
        .iter()
        .map(|i| i["node"].as_str().unwrap().to_owned())
        .find(|n| *n != victim)
        .unwrap();
    p.ok(&["host", "partition", &cut]);
    assert!(wait_until(Duration::from_secs(30), || {
        let up = healthy(p);
        up.len() == 3 && up.iter().all(|i| i["node"] != cut.as_str())
    }));
    assert!(
        instance_processes(p) > 3,
        "the cut-off host still runs its instance"
    );
    p.ok(&["host", "heal", &cut]);
    assert!(
        wait_until(Duration::from_secs(20), || instance_processes(p) == 3),
        "converged back to exactly three: {}",
        instance_processes(p)
    );

    // Down removes everything it made.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("netns.json")).unwrap()).unwrap();
    let made: Vec<String> = record["hosts"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h["netns"].as_str().unwrap().to_owned())
        .collect();
    let bridge = record["bridge"].as_str().unwrap().to_owned();
    p.ok(&["env", "down", "staging"]);
    assert_eq!(instance_processes(p), 0);
    assert!(!p.state_dir().join("netns.json").exists());
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        made.iter().all(|n| !namespaces.contains(n.as_str())),
        "{namespaces}"
    );
    let links = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(!links.status.success(), "the bridge `{bridge}` is gone");
    assert!(
        p.json(&["hosts", "--env", "staging"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// A version that fails on one host only: the rollout gets past the first batch.
const FAILS_ON_NODE_2: &str = "import os, sys, runpy\nif os.environ.get('WHARF_NODE') == 'node-2':\n    print('boom on node-2', file=sys.stderr)\n    sys.exit(5)\nrunpy.run_path('real.py', run_name='__main__')\n";

const EXPLICIT: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s }
environments:
  staging:
    hosts: { provider: netns }
    nodes:
      - name: node
        count: 3
        services: [svc]
"#;

fn agent_pid(p: &Project, host: &str) -> i32 {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("netns.json")).unwrap()).unwrap();
    record["hosts"][format!("staging/{host}")]["agent_pid"]
        .as_i64()
        .unwrap() as i32
}

#[test]
fn on_separate_hosts_a_late_failure_rolls_back_and_restarts_lose_nothing() {
    if !runs_here() {
        return;
    }
    let _one_fleet_at_a_time = one_at_a_time();
    let mut staging = Staging(Project::new(EXPLICIT, &["svc"]));
    let p = &mut staging.0;
    p.ok(&["env", "up", "staging"]);
    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v1"]);

    // v2 fails on node-2 only: node-1's completed batch is rolled back too.
    std::fs::rename(p.path().join("svc/app.py"), p.path().join("svc/real.py")).unwrap();
    p.write("svc/app.py", FAILS_ON_NODE_2);
    let out = p.wharf(&["deploy", "svc", "--env", "staging", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("boom on node-2"), "{}", text(&out));
    let instances = p.instances("svc", "staging");
    assert!(
        instances
            .iter()
            .all(|i| i["version"] == "v1" && i["health"] == "healthy"),
        "{instances:?}"
    );

    // An agent restart adopts its instance instead of restarting it.
    let before: Vec<serde_json::Value> = p
        .instances("svc", "staging")
        .iter()
        .map(|i| i["pid"].clone())
        .collect();
    let agent = agent_pid(p, "node-3");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(agent)));
    p.ok(&["host", "start", "node-3"]);
    // The controller restarts too; nothing is lost and agents reconnect.
    let controller = p.controller_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    let steady = wait_until(Duration::from_secs(20), || {
        let hosts = p.json(&["hosts", "--env", "staging"]);
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "ready")
            && healthy(p).len() == 3
    });
    assert!(steady, "{:?}", p.instances("svc", "staging"));
    let after: Vec<serde_json::Value> = p
        .instances("svc", "staging")
        .iter()
        .map(|i| i["pid"].clone())
        .collect();
    assert_eq!(before, after, "no instance was restarted");

    // A revoked host's agent is refused and stops.
    p.ok(&["host", "revoke", "node-1"]);
    let revoked = agent_pid(p, "node-1");
    assert!(
        wait_until(Duration::from_secs(10), || !alive(revoked)),
        "the revoked agent stops"
    );
}

const SPREAD: &str = r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: { http: /health, timeout: 5s, interval: 500ms }
    resources: { cpu: 0.1, memory: 32Mi }
environments:
  staging:
    hosts: { provider: netns, count: 3, prefix: node }
    pools:
      svc: { count: 2, max_per_host: 1 }
    ingress:
      listen: 0.0.0.0:18080
      routes: [{ path: /, service: svc }]
"#;

/// Clients on one host of the environment (inside its namespace), sending requests to
/// the service's address on that host's loopback, one connection per request, until
/// stopped: (sent, failures).
struct HostLoad {
    running: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl HostLoad {
    fn start(netns: &[String], port: u16) -> HostLoad {
        Self::start_on(netns, port, "/", 1)
    }

    /// `clients` clients per host, each asking for `path`.
    fn start_on(netns: &[String], port: u16, path: &'static str, clients: usize) -> HostLoad {
        let running = Arc::new(AtomicBool::new(true));
        let threads = netns
            .iter()
            .flat_map(|ns| std::iter::repeat_n(ns, clients))
            .map(|ns| {
                let (ns, running) = (ns.clone(), running.clone());
                std::thread::spawn(move || {
                    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    let (mut sent, mut failed) = (0, Vec::new());
                    while running.load(Ordering::Relaxed) {
                        sent += 1;
                        if let Err(e) = get_on_loopback(port, path) {
                            failed.push(format!("{ns}: {e}"));
                        }
                    }
                    (sent, failed)
                })
            })
            .collect();
        HostLoad { running, threads }
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::Relaxed);
        let (mut sent, mut failed) = (0, Vec::new());
        for t in self.threads {
            let (s, f) = t.join().unwrap();
            sent += s;
            failed.extend(f);
        }
        (sent, failed)
    }
}

/// One GET of `path` on 127.0.0.1:`port` in this thread's namespace: Ok if it answered
/// 200.
fn get_on_loopback(port: u16, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(answer.lines().next().unwrap_or("no answer").to_owned())
    }
}

/// Each host's node name and namespace.
fn host_namespaces(p: &Project) -> Vec<(String, String)> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("netns.json")).unwrap()).unwrap();
    record["hosts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(node, h)| (node.clone(), h["netns"].as_str().unwrap().to_owned()))
        .collect()
}

fn namespaces(p: &Project) -> Vec<String> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.state_dir().join("netns.json")).unwrap()).unwrap();
    record["hosts"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h["netns"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[allow(clippy::print_stderr)]
fn every_host_serves_the_address_over_all_hosts_and_twenty_rollouts_fail_none() {
    if !runs_here() {
        return;
    }
    let _one_fleet_at_a_time = one_at_a_time();
    let mut staging = Staging(Project::new(SPREAD, &["svc"]));
    let p = &mut staging.0;
    // `/slow` answers after a second: requests in flight through the mesh meet restarts.
    p.write("svc/app.py", crate::traffic::SLOW_APP);
    p.ok(&["env", "up", "staging"]);
    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v0"]);
    let port = p.address_port("svc", "staging");
    let hosts = namespaces(p);
    assert_eq!(hosts.len(), 3);
    // Two instances on three hosts: one host has none, and still answers at the address.
    let nodes: std::collections::BTreeSet<String> = p
        .instances("svc", "staging")
        .iter()
        .map(|i| i["node"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes.len(), 2, "one instance per host");
    let everywhere = wait_until(Duration::from_secs(5), || {
        hosts.iter().all(|ns| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                get_on_loopback(port, "/").is_ok()
            })
            .join()
            .unwrap()
        })
    });
    assert!(
        everywhere,
        "every host answers at 127.0.0.1:{port}, the one without an instance too"
    );
    // The entry listens on every host's own address, reached from outside the hosts.
    let addresses: Vec<String> = p
        .json(&["hosts", "--env", "staging"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["address"].as_str().unwrap().to_owned())
        .collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for address in &addresses {
        let url = format!("http://{address}:18080/");
        let served = wait_until(Duration::from_secs(5), || {
            http.get(&url).send().is_ok_and(|r| r.status().is_success())
        });
        assert!(served, "the ingress answers at {url}");
    }

    let load = HostLoad::start(&hosts, port);
    for n in 1..=20 {
        p.ok(&[
            "deploy",
            "svc",
            "--env",
            "staging",
            "--version",
            &format!("v{n}"),
        ]);
    }
    // The agent of the host without an instance restarts (as for an upgrade): its
    // address and ingress refuse nothing meanwhile (their sockets are held).
    let serving: Vec<String> = p
        .instances("svc", "staging")
        .iter()
        .map(|i| i["node"].as_str().unwrap().to_owned())
        .collect();
    let spare = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|h| !serving.iter().any(|s| s == h))
        .unwrap();
    for host in [spare, spare] {
        let agent = agent_pid(p, host);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(wait_until(Duration::from_secs(10), || !alive(agent)));
        p.ok(&["host", "start", host]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(
        p.state_dir()
            .join("hosts/staging")
            .join(spare)
            .join("agent.log"),
    )
    .unwrap();
    assert!(
        log.contains("agent started") && !log.contains("cannot listen"),
        "the restarted agent took its held sockets back: {log}"
    );
    // A host with an instance: its restarted agent adopts the instance and takes the
    // held socket of its address back rather than binding one of its own; the other
    // hosts stop sending it traffic through the mesh before it goes, so what they had
    // in flight there is answered.
    let busy = serving[0].clone();
    let others: Vec<String> = host_namespaces(p)
        .into_iter()
        .filter(|(node, _)| *node != busy)
        .map(|(_, ns)| ns)
        .collect();
    let slow = HostLoad::start_on(&others, port, "/slow", 4);
    std::thread::sleep(Duration::from_millis(1500));
    let agent = agent_pid(p, &busy);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(agent)));
    p.ok(&["host", "start", &busy]);
    let log_of = |host: &str| {
        std::fs::read_to_string(
            p.state_dir()
                .join("hosts/staging")
                .join(host)
                .join("agent.log"),
        )
        .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || log_of(&busy)
            .matches("agent started")
            .count()
            == 2),
        "{}",
        log_of(&busy)
    );
    assert!(
        !log_of(&busy).contains("cannot listen"),
        "{}",
        log_of(&busy)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (slow_sent, slow_failed) = slow.stop();
    let (sent, failed) = load.stop();
    eprintln!(
        "netns: {sent} requests from 3 hosts through the address during 20 rollouts of a 2-instance service and 3 agent restarts (one of a host with an instance), {} failed; {slow_sent} one-second requests from the other hosts while the busy host's agent restarted, {} failed",
        failed.len(),
        slow_failed.len()
    );
    assert!(slow_failed.is_empty(), "of {slow_sent}: {slow_failed:?}");
    assert!(sent > 100, "the clients kept sending: {sent}");
    assert!(failed.is_empty(), "of {sent}: {failed:?}");
    let now = p.instances("svc", "staging");
    assert!(
        now.len() == 2 && now.iter().all(|i| i["version"] == "v20"),
        "every rollout replaced the instances: {now:?}"
    );
}

/// The body of GET `/` on 127.0.0.1:`port` inside namespace `ns`.
fn body_in(ns: &str, port: u16) -> Option<String> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).ok()?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .join()
    .ok()
    .flatten()
}

/// Whether the next `n` answers on every host come from `version`.
fn every_host_answers(hosts: &[String], port: u16, version: &str, n: usize) -> bool {
    let wanted = format!("\"version\": \"{version}\"");
    hosts
        .iter()
        .all(|ns| (0..n).all(|_| body_in(ns, port).is_some_and(|b| b.contains(&wanted))))
}

#[test]
#[allow(clippy::print_stderr)]
fn a_blue_green_rollout_switches_every_host_at_once_and_fails_no_request() {
    if !runs_here() {
        return;
    }
    let _one_fleet_at_a_time = one_at_a_time();
    let definition = SPREAD.replace(
        "    resources: { cpu: 0.1, memory: 32Mi }\n",
        "    resources: { cpu: 0.1, memory: 32Mi }\n    rollout: { strategy: blue-green, scale_down_delay: 1h }\n",
    );
    let mut staging = Staging(Project::new(&definition, &["svc"]));
    let p = &mut staging.0;
    p.ok(&["env", "up", "staging"]);
    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v0"]);
    let port = p.address_port("svc", "staging");
    let hosts = namespaces(p);
    assert!(wait_until(Duration::from_secs(10), || every_host_answers(
        &hosts, port, "v0", 1
    )));
    let load = HostLoad::start(&hosts, port);

    p.ok(&["deploy", "svc", "--env", "staging", "--version", "v1"]);
    let status = p.json(&["rollout", "status", "svc", "--env", "staging"]);
    let preview: u16 = status["preview"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || every_host_answers(
            &hosts, preview, "v1", 2
        )),
        "every host's preview address reaches the new set"
    );
    assert!(
        every_host_answers(&hosts, port, "v0", 5),
        "the address stays on the old set"
    );

    let begun = Instant::now();
    p.ok(&["rollout", "promote", "svc", "--env", "staging"]);
    assert!(wait_until(Duration::from_secs(10), || every_host_answers(
        &hosts, port, "v1", 3
    )));
    let switched = begun.elapsed();
    let begun = Instant::now();
    p.ok(&["rollout", "abort", "svc", "--env", "staging"]);
    assert!(wait_until(Duration::from_secs(10), || every_host_answers(
        &hosts, port, "v0", 3
    )));
    let back = begun.elapsed();
    assert!(wait_until(Duration::from_secs(20), || p
        .instances("svc", "staging")
        .iter()
        .all(|i| i["version"] == "v0")));
    let (sent, failed) = load.stop();
    eprintln!(
        "netns blue-green: every host on the new set {} ms after `promote` began, back on the old {} ms after `abort` began (each including the CLI's run); {sent} requests from 3 hosts, {} failed",
        switched.as_millis(),
        back.as_millis(),
        failed.len()
    );
    assert!(failed.is_empty(), "of {sent}: {failed:?}");
}
