//! Resource limits and per-instance metrics with the process driver: a noisy service
//! stays within its CPU and memory limits, and its neighbour keeps passing its checks.

use std::time::Duration;

use crate::harness::*;

const NOISY: &str = r#"
services:
  cpuhog:
    build: ./cpuhog
    run: ["python3", "hog.py"]
    min_healthy_time: 0s   # not what this test is about
    resources: { cpu: 0.2 }
  memhog:
    build: ./memhog
    run: ["python3", "hog.py"]
    min_healthy_time: 0s   # not what this test is about
    resources: { memory: 64Mi }
  quiet:
    build: ./quiet
    run: ["python3", "app.py"]
    min_healthy_time: 0s   # not what this test is about
    port: http
    health: { http: /health }
environments:
  ci: {}
"#;

const CPU_HOG: &str = "import threading\ndef burn():\n    while True:\n        pass\nfor _ in range(2):\n    threading.Thread(target=burn, daemon=True).start()\nburn()\n";
const MEM_HOG: &str = "import time\nhoard = []\nwhile True:\n    hoard.append(bytearray(8 * 1024 * 1024))\n    time.sleep(0.05)\n";

fn limits_enforced() -> bool {
    std::fs::create_dir_all("/sys/fs/cgroup/cpu/wharf").is_ok()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn a_noisy_neighbour_stays_within_its_limits_and_the_quiet_one_stays_healthy() {
    let mut p = Project::alone(NOISY, &["quiet"]);
    p.write("cpuhog/hog.py", CPU_HOG);
    p.write("memhog/hog.py", MEM_HOG);
    let out = p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    if !limits_enforced() {
        assert!(
            std::env::var_os("CI").is_none(),
            "cgroups must be writable in CI"
        );
        assert!(
            stderr(&out).contains("are not enforced on this machine"),
            "{}",
            text(&out)
        );
        return;
    }
    // Give the sampler a few rounds (every 2s).
    std::thread::sleep(Duration::from_secs(7));
    let cpuhog = p.instances("cpuhog", "ci")[0].clone();
    let used = cpuhog["cpu_millis"].as_u64().expect("cpu is measured");
    assert!(
        used <= 300,
        "a 0.2-core limit holds three busy threads to about 200 millicores, measured {used}"
    );
    assert!(used > 0, "and its use is measured: {used}");
    let memhog = p.instances("memhog", "ci")[0].clone();
    assert!(
        memhog["restarts"].as_u64().unwrap() >= 1,
        "the memory hog is killed at its limit and restarted: {memhog}"
    );
    let log = stdout(&p.ok(&["logs", "memhog", "--env", "ci"]));
    assert!(
        log.contains("out of memory"),
        "the kill is named for what it is: {log}"
    );
    let quiet = p.instances("quiet", "ci")[0].clone();
    assert_eq!(quiet["health"], "healthy");
    assert_eq!(quiet["restarts"], 0);
    assert!(get(p.port("quiet", "ci", 0), "/health").is_some());

    // The same figures in `wharf top` and in the Prometheus text at /metrics.
    let top = stdout(&p.ok(&["top", "--env", "ci", "-n", "1"]));
    // Busiest first (which of the hogs is busiest at the moment it samples varies: the
    // memory hog is busy while it restarts).
    let cpu: Vec<f64> = top
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    assert_eq!(cpu.len(), 3, "{top}");
    assert!(cpu.windows(2).all(|w| w[0] >= w[1]), "busiest first: {top}");
    let quiet_row = top.lines().position(|l| l.contains("quiet"));
    let cpuhog_row = top.lines().position(|l| l.contains("cpuhog"));
    assert!(
        cpuhog_row < quiet_row,
        "the CPU hog above the quiet one: {top}"
    );
    let url = p.controller_url();
    let metrics = p
        .http()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("# TYPE wharf_instance_cpu_cores gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wharf_instance_memory_bytes{env="ci",service="quiet""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wharf_instance_restarts_total{env="ci",service="memhog""#),
        "{metrics}"
    );
}
