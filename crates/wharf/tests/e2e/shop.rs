//! The demo of README command 1: the shop comes up in `local` and its services talk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

struct Shop {
    home: tempfile::TempDir,
    file: PathBuf,
}

impl Shop {
    fn wharf(&self, args: &[&str]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Command::new(WHARF)
            .arg("--file")
            .arg(&self.file)
            .args(args)
            .env("WHARF_HOME", self.home.path())
            // Its own target folder: the one of this test run is locked while it runs.
            .env("CARGO_TARGET_DIR", root.join("target/shop-e2e"))
            .env("NO_COLOR", "1")
            .env_remove("WHARF_CONTROLLER")
            .output()
            .unwrap()
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.wharf(&["down", "--env", "local"]);
        let file = std::fs::read(self.home.path().join("controller.json")).unwrap_or_default();
        if let Some(pid) = serde_json::from_slice::<Value>(&file)
            .ok()
            .and_then(|v| v["pid"].as_i64())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

#[test]
fn the_shop_comes_up_in_local_and_orders_reaches_its_peers() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/wharf.yaml");
    let shop = Shop {
        home: tempfile::tempdir().unwrap(),
        file,
    };
    let out = shop.wharf(&["deploy", "--env", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = shop.wharf(&["status", "--env", "local"]);
    let table = stdout(&out);
    for service in ["catalog", "inventory", "orders"] {
        assert!(table.contains(service), "{table}");
    }
    assert!(
        table.contains("http://127.0.0.1:"),
        "the URLs to open are printed: {table}"
    );
    let status: Value = serde_json::from_slice(
        &shop
            .wharf(&["status", "--env", "local", "-o", "json"])
            .stdout,
    )
    .unwrap();
    let port = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "orders")
        .unwrap()["instances"][0]["port"]
        .as_u64()
        .unwrap();
    let quote: Value = serde_json::from_str(&get(port as u16, "/").unwrap()).unwrap();
    assert_eq!(
        quote["greeting"], "hello from your laptop",
        "local config reached catalog, and orders reached catalog"
    );
    assert_eq!(
        quote["lines"][0]["in_stock"], 12,
        "orders reached the Rust inventory service"
    );
}
