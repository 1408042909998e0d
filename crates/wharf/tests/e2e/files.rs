//! Files rendered into an instance's folder, env files, and health that must last.

use crate::harness::*;

/// Python's own file server, unchanged: it serves the instance's data folder, where
/// wharf rendered `health` and `app.ini`.
const SERVED: &str = r#"
services:
  web:
    build: ./web
    run: ["python3", "-m", "http.server", "{{ port }}", "--bind", "127.0.0.1", "--directory", "{{ data_dir }}"]
    port: http
    health: { http: /health, interval: 100ms }
    env_file: .env
    files:
      health: { content: "ok" }
      app.ini: { template: ./app.ini.tmpl }
environments:
  local: {}
"#;

#[test]
fn files_are_rendered_into_the_instance_folder_from_templates_and_env_files() {
    let mut p = Project::new(SERVED, &["web"]);
    p.write(
        ".env",
        "# greeting\nGREETING='hello {{ not a template }}'\n",
    );
    p.write(
        "app.ini.tmpl",
        "port = {{ port }}\ngreeting = {{ config.GREETING }}\n",
    );
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let port = p.instances("web", "local")[0]["port"].as_u64().unwrap() as u16;
    let ini = get(p.address_port("web", "local"), "/app.ini").expect("app.ini is served");
    assert_eq!(
        ini,
        format!("port = {port}\ngreeting = hello {{{{ not a template }}}}\n"),
        "the template saw the instance's port and the env file's value, taken literally"
    );
    // A changed template is a new definition revision, and the next deploy renders it.
    p.write("app.ini.tmpl", "second = {{ config.GREETING }}\n");
    p.ok(&["deploy", "web", "--env", "local", "--version", "v1"]);
    let again = get(p.address_port("web", "local"), "/app.ini").unwrap();
    assert!(again.starts_with("second = hello"), "{again}");
}

#[test]
fn validate_names_a_file_template_that_uses_an_undefined_name() {
    let mut p = Project::new(SERVED, &["web"]);
    p.write(".env", "GREETING=hi\n");
    p.write("app.ini.tmpl", "port = {{ prot }}\n");
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("wharf.yaml:"), "located: {err}");
    assert!(
        err.contains("file `app.ini`") && err.contains("`prot`"),
        "{err}"
    );
    assert!(err.contains("did you mean `port`"), "{err}");
}

#[test]
fn a_missing_env_file_or_a_bad_line_is_a_located_error() {
    let mut p = Project::new(SERVED, &["web"]);
    p.write("app.ini.tmpl", "x\n");
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot read env file `.env`"),
        "{}",
        text(&out)
    );
    p.write(".env", "A=1\nnot a pair\n");
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains(".env:2: `not a pair` is not `KEY=VALUE`"),
        "{}",
        text(&out)
    );
}

/// Passes its first check, then falls over half a second later.
const FLAKY: &str = r#"
import http.server, os, sys, threading

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        threading.Timer(0.5, lambda: os._exit(3)).start()
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn a_release_that_crashes_after_its_first_check_fails_and_is_refused_downstream() {
    let definition = r#"
services:
  web:
    build: ./web
    run: ["python3", "app.py", "{{ port }}"]
    port: http
    health: { http: /health, interval: 100ms }
environments:
  local: {}
  ci:
    after: local
"#;
    let mut p = Project::new(definition, &["web"]);
    p.write("web/app.py", FLAKY);
    let out = p.wharf(&["deploy", "web", "--env", "local", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("did not stay healthy for 1000ms"),
        "the default min_healthy_time of the first environment caught it: {}",
        text(&out)
    );
    let out = p.wharf(&["deploy", "web", "--env", "ci", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("local"),
        "the gate names where it failed: {}",
        text(&out)
    );
}
