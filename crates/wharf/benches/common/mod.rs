//! Helpers shared by the benchmarks.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// Runs wharf in `dir` against that project's own local controller; returns stdout.
pub fn wharf(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(WHARF)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("WHARF_HOME")
        .env_remove("WHARF_CONTROLLER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wharf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `GET /health` on the port answers 200.
pub fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// The p50 and p99 of some measurements (nearest rank).
pub fn p50_p99(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        values[(((p / 100.0) * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1]
    };
    (at(50.0), at(99.0))
}

/// Stops the local controller of the project in `dir`, if one runs.
pub fn stop_controller(dir: &Path) {
    let file = std::fs::read(dir.join(".wharf/controller.json")).unwrap_or_default();
    if let Some(pid) = serde_json::from_slice::<serde_json::Value>(&file)
        .ok()
        .and_then(|v| v["pid"].as_i64())
    {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}
