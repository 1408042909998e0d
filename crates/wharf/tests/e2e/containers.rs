//! `driver: docker`: services that are images run as containers, through the same deploy.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const IMAGE_SERVICE: &str = r#"
services:
  inv:
    image: IMAGE
    run: ["/usr/local/bin/shop-inventory"]
    port: http
    health: { http: /health, timeout: 5s }
    resources: { cpu: 0.5, memory: 64Mi }
    config: { BIND_ADDR: 0.0.0.0, LOW_STOCK_THRESHOLD: "{{ env }}-threshold" }
environments:
  ci: {}
"#;

pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A tag no other test of this run uses: tests run side by side and remove their images.
fn unique_tag() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// An image made here, never pulled: the shop's inventory binary and its libraries.
pub fn local_image(dir: &Path) -> String {
    import_image(
        dir,
        &inventory_binary(),
        "/usr/local/bin/shop-inventory",
        "inventory",
    )
}

/// An image holding only a shell (the host's `sh` and the libraries it links).
fn shell_image(dir: &Path) -> String {
    let shell = std::fs::canonicalize("/bin/sh").unwrap();
    import_image(dir, &shell, "/bin/sh", "shell")
}

/// Imports an image whose root filesystem is one program (at `to`) and the libraries
/// it links, tagged `wharf-e2e-NAME:<unique>`.
pub(crate) fn import_image(dir: &Path, program: &Path, to: &str, name: &str) -> String {
    let rootfs = dir.join(format!("{name}-rootfs"));
    let place = |from: &Path, to: &str| {
        let dest = rootfs.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, dest).unwrap();
    };
    place(program, to);
    let ldd = Command::new("ldd").arg(program).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        place(Path::new(lib), lib);
    }
    let tar = dir.join(format!("{name}.tar"));
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let tag = format!("wharf-e2e-{name}:{}", unique_tag());
    assert!(
        Command::new("docker")
            .arg("import")
            .arg(&tar)
            .arg(&tag)
            .output()
            .unwrap()
            .status
            .success()
    );
    tag
}

pub(crate) struct Image(pub(crate) String);

/// Whether docker and a static busybox are here to make scratch images from (CI has
/// both); a test without them skips, saying why.
pub(crate) fn busybox_ready() -> bool {
    if crate::docker::docker_answers() && Path::new("/bin/busybox").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI has docker and /bin/busybox (scripts/test installs busybox-static)"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping: needs docker and /bin/busybox (apt-get install busybox-static)");
    }
    false
}

/// A scratch image holding only the static busybox, at /bin/busybox.
pub(crate) fn busybox_image(dir: &Path) -> Image {
    Image(import_image(
        dir,
        Path::new("/bin/busybox"),
        "/bin/busybox",
        "busybox",
    ))
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn an_image_service_runs_as_a_limited_container_is_adopted_and_rolls_back() {
    if !crate::docker::docker_answers() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let image = Image(local_image(p.path()));
    p.write("wharf.yaml", &IMAGE_SERVICE.replace("IMAGE", &image.0));

    p.ok(&["deploy", "inv", "--env", "ci", "--version", "v1"]);
    let port = p.port("inv", "ci", 0);
    let answer: serde_json::Value =
        serde_json::from_str(&get(port, "/").expect("the published port answers")).unwrap();
    assert_eq!(
        answer["low_stock_threshold"], "ci-threshold",
        "configuration reaches the container"
    );
    let container = docker(&["ps", "-q", "--filter", "label=wharf.service=inv"]);
    assert!(!container.is_empty());
    let limits = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
        &container,
    ]);
    assert_eq!(
        limits, "500000000 67108864",
        "limits are the container's; no restart policy: restarts are wharf's"
    );
    let measured = wait_until(Duration::from_secs(10), || {
        p.instances("inv", "ci")[0]["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0)
    });
    assert!(
        measured,
        "a container's memory shows in status: {:?}",
        p.instances("inv", "ci")
    );
    // The configuration is also there as files, mounted read-only.
    let mounts = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Source}}>{{.Destination}}:{{.RW}}\n{{end}}",
        &container,
    ]);
    let (source, _) = mounts
        .lines()
        .find_map(|m| {
            m.split_once('>')
                .filter(|(_, rest)| *rest == "/run/wharf/config:false")
        })
        .unwrap_or_else(|| panic!("no configuration mount: {mounts}"));
    // And its data folder, writable, at the path WHARF_DATA_DIR names.
    assert!(
        mounts
            .lines()
            .any(|m| m.contains("/data/ci/inv/0>") && m.ends_with(":true")),
        "{mounts}"
    );
    let source = Path::new(source);
    assert_eq!(
        std::fs::read_to_string(source.join("LOW_STOCK_THRESHOLD")).unwrap(),
        "ci-threshold"
    );
    assert!(
        std::fs::read_to_string(source.join("config.env"))
            .unwrap()
            .contains("WHARF_ENV=ci\n")
    );
    let log = stdout(&p.ok(&["logs", "inv", "--env", "ci"]));
    assert!(log.contains("inventory: listening on 0.0.0.0"), "{log}");

    // A missing image is a clear error that changes nothing.
    let broken = IMAGE_SERVICE.replace("IMAGE", "wharf-no-such-image:1");
    p.write("wharf.yaml", &broken);
    let out = p.wharf(&["deploy", "inv", "--env", "ci", "--version", "v9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is not on this host"),
        "{}",
        text(&out)
    );

    // A version whose command fails is rolled back; v1 keeps answering.
    p.write(
        "wharf.yaml",
        &IMAGE_SERVICE.replace("IMAGE", &image.0).replace(
            "/usr/local/bin/shop-inventory",
            "/usr/local/bin/nothing-here",
        ),
    );
    let out = p.wharf(&["deploy", "inv", "--env", "ci", "--version", "v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("the previous version was restored"),
        "{}",
        text(&out)
    );
    assert!(wait_until(Duration::from_secs(10), || get(
        p.port("inv", "ci", 0),
        "/health"
    )
    .is_some()));

    // A controller restart adopts the container by its labels.
    let before = docker(&["ps", "-q", "--filter", "label=wharf.service=inv"]);
    let started = p.instances("inv", "ci")[0]["started_at"].as_i64().unwrap();
    let controller = p.controller_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(controller)));
    let instance = &p.instances("inv", "ci")[0];
    assert_eq!(instance["restarts"], 0, "{instance}");
    assert!(
        (instance["started_at"].as_i64().unwrap() - started).abs() < 1000,
        "its uptime goes on: {instance}"
    );
    assert_eq!(
        docker(&["ps", "-q", "--filter", "label=wharf.service=inv"]),
        before,
        "the same container"
    );

    p.ok(&["stop", "inv", "--env", "ci"]);
    assert!(
        docker(&["ps", "-aq", "--filter", "label=wharf.service=inv"]).is_empty(),
        "stopping removes the container"
    );
}

/// A statically linked build of the shop's inventory: it runs in an image with nothing else.
fn static_inventory() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/static-e2e");
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "shop-inventory",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(built.success());
    target.join("x86_64-unknown-linux-gnu/release/shop-inventory")
}

const FOLDER_SERVICE: &str = r#"
services:
  folder:
    build: ./inv
    run: ["./shop-inventory"]
    port: http
    health: { http: /health, timeout: 5s }
    config: { BIND_ADDR: 0.0.0.0 }
environments:
  ci:
    nodes:
      # The node chooses the driver: this folder runs as a container here.
      - { name: box, services: [folder], driver: docker }
"#;

#[test]
fn a_wharf_artifact_becomes_a_local_image() {
    if !crate::docker::docker_answers() {
        return;
    }
    let mut p = Project::new(FOLDER_SERVICE, &[]);
    std::fs::create_dir_all(p.path().join("inv")).unwrap();
    std::fs::copy(static_inventory(), p.path().join("inv/shop-inventory")).unwrap();
    p.ok(&["deploy", "folder", "--env", "ci", "--version", "v1"]);
    let digest = p.instances("folder", "ci")[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")[..12]
        .to_owned();
    let image = Image(format!("wharf-artifact:{digest}"));
    assert!(
        get(p.port("folder", "ci", 0), "/health").is_some(),
        "the container built from the artifact answers"
    );
    assert!(
        !docker(&["image", "inspect", "--format", "{{.Id}}", &image.0]).is_empty(),
        "the image is local, named by the digest"
    );

    // Retention keeps the current image and the previous one.
    for version in ["v2", "v3"] {
        p.write("inv/VERSION", version);
        p.ok(&["deploy", "folder", "--env", "ci", "--version", version]);
    }
    let kept = docker(&["images", "-q", "--filter", "label=wharf.service=folder"]);
    assert_eq!(
        kept.lines().count(),
        2,
        "v3 and v2 are kept, v1 is gone: {kept}"
    );
    assert!(
        docker(&["images", "-q", &image.0]).is_empty(),
        "the v1 image was removed"
    );
    p.ok(&["stop", "folder", "--env", "ci"]);
    for id in kept.lines() {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }
}

#[test]
fn docker_failure_paths_say_what_is_wrong_and_change_nothing() {
    if !crate::docker::docker_answers() {
        return;
    }
    // The port is taken: the container cannot publish it.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    // A service name of its own: the other container tests run alongside.
    let definition = FOLDER_SERVICE
        .replace("port: http", &format!("port: {port}"))
        .replace("folder", "taken");
    let mut p = Project::new(&definition, &[]);
    std::fs::create_dir_all(p.path().join("inv")).unwrap();
    std::fs::copy(static_inventory(), p.path().join("inv/shop-inventory")).unwrap();
    let out = p.wharf(&["deploy", "taken", "--env", "ci", "--version", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&port.to_string()),
        "the taken port is named: {}",
        text(&out)
    );
    assert!(p.instances("taken", "ci").is_empty(), "nothing runs");
    assert!(
        docker(&["ps", "-aq", "--filter", "label=wharf.service=taken"]).is_empty(),
        "no container is left"
    );
    drop(squatter);

    // The daemon is down (here: unreachable): a clear error before anything changes.
    let mut q = Project::new(&IMAGE_SERVICE.replace("IMAGE", "anything:1"), &[]);
    let out = Command::new(WHARF)
        .args(["deploy", "inv", "--env", "ci", "--version", "v1"])
        .current_dir(q.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot reach the Docker engine"),
        "{}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("is the Docker engine running?"),
        "{}",
        text(&out)
    );
    assert!(
        q.json(&["artifacts"]).as_array().unwrap().is_empty(),
        "nothing was registered"
    );
    let images: Vec<String> = docker(&["images", "-q", "--filter", "label=wharf.service=taken"])
        .lines()
        .map(str::to_owned)
        .collect();
    for id in images {
        let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
    }
}

const NOISY_CONTAINERS: &str = r#"
services:
  cpuhog:
    image: SHELL
    run: ["/bin/sh", "-c", "for i in 1 2 3; do (while :; do :; done) & done; wait"]
    resources: { cpu: 0.2 }
  memhog:
    image: SHELL
    # Doubles a string, pausing between doublings: past 32Mi in a few seconds.
    run: ["/bin/sh", "-c", "s=xxxxxxxxxxxxxxxx; while :; do i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; s=$s$s; done"]
    min_healthy_time: 0s   # killed at its limit again and again, as the test wants
    resources: { memory: 32Mi }
  quiet:
    image: INVENTORY
    run: ["/usr/local/bin/shop-inventory"]
    port: http
    health: { http: /health }
    config: { BIND_ADDR: 0.0.0.0 }
environments:
  ci: {}
"#;

#[test]
fn a_noisy_container_stays_within_its_limits_and_its_neighbour_stays_healthy() {
    if !crate::docker::docker_answers() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let shell = Image(shell_image(p.path()));
    let inventory = Image(local_image(p.path()));
    p.write(
        "wharf.yaml",
        &NOISY_CONTAINERS
            .replace("SHELL", &shell.0)
            .replace("INVENTORY", &inventory.0),
    );
    p.ok(&["deploy", "--env", "ci", "--version", "v1"]);
    // The sampler reads every 2s; give it a few rounds under load.
    std::thread::sleep(Duration::from_secs(7));
    let cpuhog = p.instances("cpuhog", "ci")[0].clone();
    let used = cpuhog["cpu_millis"].as_u64().expect("cpu is measured");
    assert!(
        used > 100 && used <= 300,
        "three busy shells in a 0.2-core container use about 200 millicores, all of them counted: {used}"
    );
    let memhog = p.instances("memhog", "ci")[0].clone();
    assert!(
        memhog["restarts"].as_u64().unwrap() >= 1,
        "the memory hog is killed at its limit and wharf restarts it: {memhog}"
    );
    let log = stdout(&p.ok(&["logs", "memhog", "--env", "ci"]));
    assert!(
        log.contains("out of memory"),
        "the kill is named for what it is: {log}"
    );
    let quiet = p.instances("quiet", "ci")[0].clone();
    assert_eq!(quiet["health"], "healthy");
    assert_eq!(quiet["restarts"], 0);
    let begun = std::time::Instant::now();
    assert!(get(p.port("quiet", "ci", 0), "/health").is_some());
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "the neighbour answers promptly"
    );
    p.ok(&["down", "--env", "ci"]);
}

/// A third-party style image: a static busybox whose httpd listens on its own fixed
/// port (8080) and serves the files wharf renders into the instance's folder.
const BUSYBOX_SERVICE: &str = r#"
services:
  site:
    image: IMAGE
    entrypoint: ["/bin/busybox"]
    run: ["sh", "-c", "/bin/busybox httpd -p 8081 -h {{ data_dir }} && exec /bin/busybox httpd -f -p 8080 -h {{ data_dir }}"]
    port: { name: http, container: 8080 }
    ports: [{ name: admin, container: 8081 }]
    health: { http: /health, interval: 100ms }
    resources: { memory: 32Mi }
    files:
      health: { content: "ok" }
      index.html: { content: "hello from {{ env }}" }
environments:
  local: {}
  ci: {}
"#;

#[test]
fn a_stock_image_on_its_own_port_is_published_on_each_instances_port() {
    if !busybox_ready() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let image = busybox_image(p.path());
    p.write("wharf.yaml", &BUSYBOX_SERVICE.replace("IMAGE", &image.0));
    // Both environments at once on one machine: the same container port, two host ports.
    for env in ["local", "ci"] {
        p.ok(&["deploy", "site", "--env", env, "--version", "v1"]);
    }
    let local = p.port("site", "local", 0);
    let ci = p.port("site", "ci", 0);
    assert_ne!(local, ci);
    assert_eq!(
        get(local, "/index.html").as_deref(),
        Some("hello from local")
    );
    assert_eq!(get(ci, "/index.html").as_deref(), Some("hello from ci"));
    let address = p.address_port("site", "ci");
    assert_eq!(
        get(address, "/index.html").as_deref(),
        Some("hello from ci")
    );
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=wharf.service=site",
        "--filter",
        "label=wharf.env=ci",
    ]);
    let inspected = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{range $k, $v := .HostConfig.PortBindings}}{{$k}}>{{(index $v 0).HostPort}}{{end}}",
        &container,
    ]);
    let admin: u16 = stdout(&p.ok(&[
        "exec",
        "site",
        "--env",
        "ci",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo $PORT_ADMIN",
    ]))
    .trim()
    .parse()
    .unwrap_or(0);
    assert_eq!(admin, 8081, "inside, the admin port is the container's own");
    let bindings = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{range $k, $v := .HostConfig.PortBindings}}{{$k}}>{{(index $v 0).HostPort}} {{end}}",
        &container,
    ]);
    let admin_host: u16 = bindings
        .split_whitespace()
        .find_map(|b| b.strip_prefix("8081/tcp>"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("8081 is not published: {bindings}"));
    assert_eq!(
        get(admin_host, "/index.html").as_deref(),
        Some("hello from ci"),
        "the second port is published on a host port of its own"
    );
    assert!(
        inspected.starts_with("33554432 ") && inspected.contains(&format!("8080/tcp>{ci}")),
        "{inspected}"
    );
    // `exec` runs inside the container, with its environment.
    let out = p.ok(&[
        "exec",
        "site",
        "--env",
        "ci",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo $PORT",
    ]);
    assert_eq!(stdout(&out), "8080\n", "{}", text(&out));
    p.ok(&["down", "--env", "local"]);
    p.ok(&["down", "--env", "ci"]);
}

/// Each start appends its environment to a file in its volume, which httpd serves.
const VOLUME_SERVICE: &str = r#"
services:
  site:
    image: IMAGE
    entrypoint: ["/bin/busybox"]
    run: ["sh", "-c", "echo $WHARF_ENV >> /store/runs && exec /bin/busybox httpd -f -p 8080 -h /store"]
    port: { name: http, container: 8080 }
    health: { tcp: true, interval: 100ms }
    volumes: [/store]
environments:
  local: {}
  ci:
    volumes: { site: { /store: HOST } }
"#;

#[test]
fn a_containers_volume_outlives_it_per_environment_and_slot_until_purged() {
    if !busybox_ready() {
        return;
    }
    let mut p = Project::new("services: {}\n", &[]);
    let image = busybox_image(p.path());
    let host = p.path().join("ci-store");
    p.write(
        "wharf.yaml",
        &VOLUME_SERVICE
            .replace("IMAGE", &image.0)
            .replace("HOST", host.to_str().unwrap()),
    );
    for env in ["local", "ci"] {
        p.ok(&["deploy", "site", "--env", env, "--version", "v1"]);
        p.ok(&["restart", "site", "--env", env]);
    }
    let runs = |p: &mut Project, env: &str| get(p.address_port("site", env), "/runs");
    assert_eq!(
        runs(&mut p, "local").as_deref(),
        Some("local\nlocal\n"),
        "kept across containers"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("0/runs")).unwrap(),
        "ci\nci\n",
        "ci's volume is the folder its environment names"
    );
    let named = docker(&["volume", "ls", "-q", "--filter", "name=wharf.local.site."]);
    assert_eq!(named, "wharf.local.site.0.store");
    let out = p.ok(&["down", "--env", "local", "--purge", "--yes"]);
    assert!(stderr(&out).contains("1 volume(s)"), "{}", text(&out));
    assert!(docker(&["volume", "ls", "-q", "--filter", "name=wharf.local.site."]).is_empty());
    p.ok(&["down", "--env", "ci"]);
    // A process has no volumes; said where.
    p.write(
        "wharf.yaml",
        "services:\n  web:\n    build: .\n    run: [x]\n    volumes: [/data]\nenvironments:\n  local: {}\n",
    );
    let out = p.wharf(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("does not run a container"),
        "{}",
        text(&out)
    );
}
