//! The dashboard's server time at 100 services by 4 environments, state reads
//! included: a real controller runs 400 instances (one `sleep` each), and its pages
//! are asked for again and again by a signed-in client on loopback.
//!
//! Run with `cargo bench -p wharf --bench dashboard` (WHARF_BENCH_RUNS sets the number
//! of requests per page, default 200). It reports the time to the whole answer as the
//! client sees it, and the controller's own `Server-Timing` (reading state, rendering).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{p50_p99, stop_controller, wharf};

use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SERVICES: usize = 100;
const ENVS: [&str; 4] = ["dev", "ci", "staging", "production"];

fn definition() -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..SERVICES {
        let _ = write!(
            yaml,
            "  s{i:03}:\n    build: ./app\n    run: [sleep, infinity]\n    min_healthy_time: 0s\n"
        );
    }
    yaml.push_str("environments:\n  dev: {}\n  ci: { after: dev }\n  staging: { after: ci }\n  production: { after: staging }\n");
    yaml
}

/// The `read` and `render` durations of a `Server-Timing` header, in ms.
fn server_timing(value: &str) -> (f64, f64) {
    let part = |name: &str| {
        value
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name)?.strip_prefix(";dur="))
            .and_then(|d| d.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (part("read"), part("render"))
}

fn main() {
    let runs: usize = std::env::var("WHARF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/README"), "sleeps\n").unwrap();
    std::fs::write(dir.join("wharf.yaml"), definition()).unwrap();
    let begun = Instant::now();
    for env in ENVS {
        wharf(dir, &["deploy", "--env", env, "--version", "v1", "--quiet"]);
    }
    eprintln!(
        "{} instances running after {:.0?}",
        SERVICES * ENVS.len(),
        begun.elapsed()
    );

    let address = wharf(dir, &["ui"]).trim().to_owned();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let signed = http.get(&address).send().unwrap();
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let base = address.split("/ui/").next().unwrap().to_owned();

    println!(
        "| page | runs | size | total p50 | total p99 | read p50 | read p99 | render p50 | render p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, path) in [
        ("matrix (100 × 4)", "/"),
        ("a service (4 environments)", "/ui/services/s042"),
        ("hosts", "/ui/hosts"),
    ] {
        let (mut total, mut read, mut render) = (Vec::new(), Vec::new(), Vec::new());
        let mut size = 0;
        for _ in 0..runs {
            let asked = Instant::now();
            let answer = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            let timing = answer.headers()["server-timing"]
                .to_str()
                .unwrap()
                .to_owned();
            size = answer.bytes().unwrap().len();
            total.push(asked.elapsed().as_secs_f64() * 1000.0);
            let (r, w) = server_timing(&timing);
            read.push(r);
            render.push(w);
        }
        let (t50, t99) = p50_p99(total);
        let (r50, r99) = p50_p99(read);
        let (w50, w99) = p50_p99(render);
        println!(
            "| {name} | {runs} | {:.0} KB | {t50:.1} ms | {t99:.1} ms | {r50:.1} ms | {r99:.1} ms | {w50:.2} ms | {w99:.2} ms |",
            size as f64 / 1024.0
        );
    }
    for env in ENVS {
        wharf(dir, &["down", "--env", env, "--quiet"]);
    }
    stop_controller(dir);
}
