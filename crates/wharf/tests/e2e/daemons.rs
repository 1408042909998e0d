//! Debian's nginx and redis-server as their packages ship them: no wrapper script, two
//! environments on one machine at once, each with its own configuration and data.

use std::io::Write;
use std::time::Duration;

use crate::harness::*;

/// Whether Debian's `package` put `path` here; a skip with the reason, or (under CI,
/// where scripts/test installs it) a failure.
pub fn installed(path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{path} is missing (scripts/test installs Debian's {package} as root)"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping: {path} is missing (apt-get install {package})");
    }
    false
}

/// nginx reads the configuration wharf renders into its folder; every path it writes
/// is in that folder too, so two environments never share one.
const NGINX: &str = r#"
services:
  front:
    build: ./front
    run: ["/usr/sbin/nginx", "-e", "stderr", "-c", "{{ data_dir }}/nginx.conf", "-g", "daemon off;"]
    port: http
    health: { http: /health, interval: 100ms }
    on_change: reload
    reload_signal: HUP
    config: { GREETING: hello }
    files:
      nginx.conf: { template: ./nginx.conf.tmpl }
environments:
  local: {}
  ci: {}
"#;

const NGINX_CONF: &str = r#"worker_processes 1;
pid {{ data_dir }}/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {{ data_dir }}/body;
  proxy_temp_path {{ data_dir }}/proxy;
  fastcgi_temp_path {{ data_dir }}/fastcgi;
  uwsgi_temp_path {{ data_dir }}/uwsgi;
  scgi_temp_path {{ data_dir }}/scgi;
  server {
    listen 127.0.0.1:{{ port }};
    location = /health { return 200 "ok\n"; }
    location / { return 200 "{{ config.GREETING }} from {{ env }}\n"; }
  }
}
"#;

#[test]
fn nginx_runs_from_a_rendered_file_in_two_environments_and_reloads_a_change() {
    if !installed("/usr/sbin/nginx", "nginx") {
        return;
    }
    let mut p = Project::new(NGINX, &["front"]);
    p.write("nginx.conf.tmpl", NGINX_CONF);
    for env in ["local", "ci"] {
        p.ok(&["deploy", "front", "--env", env, "--version", "v1"]);
    }
    let local = p.address_port("front", "local");
    let ci = p.address_port("front", "ci");
    assert_eq!(get(local, "/").as_deref(), Some("hello from local\n"));
    assert_eq!(get(ci, "/").as_deref(), Some("hello from ci\n"));

    // A configuration change re-renders nginx.conf and sends HUP: the same nginx
    // serves the new text, and the other environment is untouched.
    let pid = p.instances("front", "ci")[0]["pid"].as_u64();
    let out = p.ok(&["config", "set", "front", "--env", "ci", "GREETING=bonjour"]);
    assert!(
        stderr(&out).contains("sent HUP to 1 instance"),
        "{}",
        text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(ci, "/").as_deref()
            == Some("bonjour from ci\n")),
        "nginx never served the re-rendered file: {:?}",
        get(ci, "/")
    );
    assert_eq!(
        p.instances("front", "ci")[0]["pid"].as_u64(),
        pid,
        "reloaded, not replaced"
    );
    assert_eq!(get(local, "/").as_deref(), Some("hello from local\n"));
}

/// redis keeps its dump in the instance's own folder.
const REDIS: &str = r#"
services:
  cache:
    build: ./cache
    run: ["/usr/bin/redis-server", "--port", "{{ port }}", "--bind", "127.0.0.1", "--dir", "{{ data_dir }}", "--save", "", "--appendonly", "no"]
    port: redis
    protocol: tcp
    health: { tcp: true, interval: 100ms }
environments:
  local: {}
  ci: {}
"#;

/// Sends one command to redis and reads its answer: a status line, or a bulk string's
/// value.
fn redis(port: u16, command: &str) -> Result<String, String> {
    use std::io::BufRead;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(format!("{command}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(tcp);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.starts_with('$') && !line.starts_with("$-1") {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
    }
    Ok(line.trim_end().to_owned())
}

#[test]
fn redis_in_two_environments_keeps_each_ones_data_across_a_kill() {
    if !installed("/usr/bin/redis-server", "redis-server") {
        return;
    }
    let mut p = Project::new(REDIS, &["cache"]);
    for env in ["local", "ci"] {
        p.ok(&["deploy", "cache", "--env", env, "--version", "v1"]);
    }
    let local = p.address_port("cache", "local");
    let ci = p.address_port("cache", "ci");
    assert_eq!(redis(local, "SET owner local").as_deref(), Ok("+OK"));
    assert_eq!(redis(ci, "SET owner ci").as_deref(), Ok("+OK"));
    for port in [local, ci] {
        assert_eq!(redis(port, "SAVE").as_deref(), Ok("+OK"));
    }
    // Killed outright, ci's redis comes back (supervised) with ci's own dump.
    let pid = p.instances("cache", "ci")[0]["pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(20), || {
            p.instances("cache", "ci")[0]["pid"].as_i64() != Some(pid.into())
                && redis(ci, "GET owner").is_ok()
        }),
        "ci's redis was not restarted"
    );
    assert_eq!(
        redis(ci, "GET owner").as_deref(),
        Ok("ci"),
        "ci came back with its own dump"
    );
    assert_eq!(redis(local, "GET owner").as_deref(), Ok("local"));
}
