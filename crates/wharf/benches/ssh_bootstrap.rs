//! Bare machine to a ready agent over SSH (`wharf env up` of `provider: ssh`), on
//! network-namespace machines running Debian's sshd over loopback links: one machine,
//! ten at once, and an idempotent re-run of the ten, each over WHARF_BENCH_RUNS
//! (default 5) fresh sets of machines. Needs root, iproute2, openssh-server and strip.
//! `cargo bench -p wharf --bench ssh_bootstrap`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;
// (What only the tests use of it is not used here.)
#[allow(dead_code)]
#[path = "../tests/e2e/machines.rs"]
mod machines;

use std::path::Path;
use std::time::Instant;

use common::{WHARF, p50_p99, stop_controller, wharf};

fn definition(m: &machines::Machines) -> String {
    let hosts: String = m
        .all
        .iter()
        .map(|x| {
            format!(
                "        - {{ name: {}, address: {}, host_key: \"{}\" }}\n",
                x.name, x.address, x.host_key
            )
        })
        .collect();
    format!(
        "services: {{}}\nenvironments:\n  edge:\n    hosts:\n      provider: ssh\n      identity_file: {}\n      hosts:\n{hosts}",
        m.key.display()
    )
}

/// Seconds `wharf env up edge` takes on a fresh project with `count` fresh machines,
/// then (with `again`) a re-run on the same, now ready, machines.
fn bootstrap(count: usize, again: bool) -> (f64, Option<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=count).map(|i| format!("b-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let m = machines::machines(dir.path(), WHARF, &names, &names);
    std::fs::write(dir.path().join("wharf.yaml"), definition(&m)).unwrap();
    wharf(dir.path(), &["status"]); // the controller starts outside the measurement
    let binary = m.binary.to_str().unwrap().to_owned();
    let up = |d: &Path| {
        let begun = Instant::now();
        wharf(d, &["env", "up", "edge", "--agent-binary", &binary]);
        begun.elapsed().as_secs_f64()
    };
    let first = up(dir.path());
    let second = again.then(|| up(dir.path()));
    stop_controller(dir.path());
    drop(m);
    (first, second)
}

fn main() {
    let runnable = nix::unistd::geteuid().is_root()
        && Path::new("/usr/sbin/sshd").exists()
        && Path::new("/usr/bin/strip").exists();
    if !runnable {
        eprintln!(
            "skipping: needs root, /usr/sbin/sshd and strip (apt-get install openssh-server binutils)"
        );
        return;
    }
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (mut one, mut ten, mut rerun) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        one.push(bootstrap(1, false).0);
        let (all, again) = bootstrap(10, true);
        ten.push(all);
        rerun.extend(again);
    }
    let size = std::fs::metadata(WHARF).map(|m| m.len()).unwrap_or(0);
    println!(
        "ssh bootstrap over {runs} run(s) (the binary: {} MB before strip)",
        size / 1_000_000
    );
    for (what, target, values) in [
        ("1 machine", 5.0, one),
        ("10 machines at once", 15.0, ten),
        ("re-run on 10 ready machines", 3.0, rerun),
    ] {
        let (p50, p99) = p50_p99(values);
        println!("  {what}: p50 {p50:.2}s p99 {p99:.2}s (target {target}s)");
    }
}
