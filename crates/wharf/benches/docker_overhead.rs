//! Docker deploy overhead: `wharf deploy` of a trivial container (to healthy) against
//! `docker run` of the same image plus the same health check by hand, side by side in one
//! run. `cargo bench -p wharf --bench docker_overhead` (WHARF_BENCH_RUNS, default 30).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{WHARF, answers, p50_p99};

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("WHARF_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() {
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The image: the shop's inventory binary and its libraries, imported locally.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    run(
        env!("CARGO"),
        &["build", "--release", "--quiet", "-p", "shop-inventory"],
        &root,
    );
    let binary = root.join("target/release/shop-inventory");
    let rootfs = d.join("rootfs");
    let mut files = vec![binary.to_string_lossy().into_owned()];
    files.extend(
        run("ldd", &[&binary.to_string_lossy()], d)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_owned),
    );
    for f in &files {
        let dest = if *f == files[0] {
            rootfs.join("usr/local/bin/shop-inventory")
        } else {
            rootfs.join(f.trim_start_matches('/'))
        };
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(f, dest).unwrap();
    }
    run(
        "tar",
        &["-C", &rootfs.to_string_lossy(), "-cf", "rootfs.tar", "."],
        d,
    );
    let image = format!("wharf-bench-inventory:{}", std::process::id());
    run("docker", &["import", "rootfs.tar", &image], d);
    std::fs::write(
        d.join("wharf.yaml"),
        format!("services:\n  inv:\n    image: {image}\n    run: [/usr/local/bin/shop-inventory]\n    port: http\n    health: {{ http: /health }}\n    config: {{ BIND_ADDR: 0.0.0.0 }}\nenvironments:\n  bench: {{}}\n"),
    )
    .unwrap();
    run(WHARF, &["build", "inv", "--version", "v1"], d);
    run(
        WHARF,
        &[
            "deploy",
            "inv",
            "--env",
            "bench",
            "--version",
            "v1",
            "--quiet",
        ],
        d,
    );
    run(WHARF, &["down", "--env", "bench", "--quiet"], d);
    let (mut with_wharf, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let begun = Instant::now();
        run(
            WHARF,
            &[
                "deploy",
                "inv",
                "--env",
                "bench",
                "--version",
                "v1",
                "--quiet",
            ],
            d,
        );
        with_wharf.push(begun.elapsed().as_secs_f64() * 1000.0);
        run(WHARF, &["down", "--env", "bench", "--quiet"], d);

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let begun = Instant::now();
        let publish = format!("127.0.0.1:{port}:{port}");
        let id = run(
            "docker",
            &[
                "run",
                "-d",
                "-p",
                &publish,
                "-e",
                &format!("PORT={port}"),
                "-e",
                "BIND_ADDR=0.0.0.0",
                &image,
                "/usr/local/bin/shop-inventory",
            ],
            d,
        );
        while !answers(port) {
            std::thread::sleep(Duration::from_millis(1));
        }
        bare.push(begun.elapsed().as_secs_f64() * 1000.0);
        run("docker", &["rm", "-f", &id], d);
    }
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join(".wharf/controller.json")).unwrap()).unwrap();
    let _ = Command::new("kill").arg(file["pid"].to_string()).status();
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    let (w50, w99) = p50_p99(with_wharf);
    let (b50, b99) = p50_p99(bare);
    println!("| path | runs | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| `wharf deploy` (CLI to healthy) | {runs} | {w50:.1} ms | {w99:.1} ms |");
    println!("| `docker run` + health check by hand | {runs} | {b50:.1} ms | {b99:.1} ms |");
    println!(
        "| wharf overhead | | {:+.1}% | {:+.1}% |",
        (w50 / b50 - 1.0) * 100.0,
        (w99 / b99 - 1.0) * 100.0
    );
}
