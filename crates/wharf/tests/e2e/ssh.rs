//! `provider: ssh`: bare machines (network namespaces, each with a mount namespace of
//! its own over /usr/local/bin and /var/lib/wharf, so nothing of wharf is on them) run
//! Debian's OpenSSH server; `wharf env up` installs, joins and starts an agent on each.
//! Needs root, iproute2 and openssh-server (scripts/test installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_provider::{NetnsProvider, SystemRunner};

use crate::harness::*;

/// One bare machine: its address, its SSH server and that server's host key.
pub struct Machine {
    pub name: String,
    pub address: String,
    pub netns: String,
    /// `ssh-ed25519 AAAA...`
    pub host_key: String,
    sshd: Option<Child>,
}

impl Machine {
    /// Runs `command` in the machine's own view of the filesystem.
    pub fn sh(&self, command: &str) -> std::process::Output {
        let pid = self.sshd.as_ref().map(|c| c.id()).unwrap_or(0);
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-n", "sh", "-c", command])
            .output()
            .unwrap()
    }
}

pub struct Machines {
    provider: NetnsProvider<SystemRunner>,
    pub all: Vec<Machine>,
    pub key: PathBuf,
    /// A stripped copy of wharf, to install.
    pub binary: PathBuf,
}

impl Drop for Machines {
    fn drop(&mut self) {
        // Everything started on a machine (sshd, agents, instances) ends with it.
        for machine in &mut self.all {
            let pids = Command::new("ip")
                .args(["netns", "pids", &machine.netns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(mut sshd) = machine.sshd.take() {
                let _ = sshd.wait();
            }
        }
        let _ = self.provider.down("bare");
    }
}

/// Whether this machine can run SSH machines: root, `ip netns` and sshd.
pub fn ssh_runs_here() -> bool {
    if !crate::netns::runs_here() {
        return false;
    }
    if Path::new("/usr/sbin/sshd").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI has openssh-server (scripts/test installs it)"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "skipping an SSH test: /usr/sbin/sshd is missing (apt-get install openssh-server)"
        );
    }
    false
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", text(&out));
}

/// `names` as bare machines; `with_sshd`: those that run an SSH server.
pub fn machines(p: &Project, names: &[&str], with_sshd: &[&str]) -> Machines {
    let dir = p.path().join("machines");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key));
    std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    let binary = dir.join("wharf");
    run(Command::new("strip").arg("-o").arg(&binary).arg(WHARF));
    std::fs::create_dir_all("/var/lib/wharf").unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let provider = NetnsProvider::new(SystemRunner, &dir);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = provider.up("bare", &names).expect("namespaces");
    let mut all = Vec::new();
    for host in made {
        let home = dir.join(&host.name);
        std::fs::create_dir_all(&home).unwrap();
        let host_key = home.join("ssh_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&host_key));
        let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        let config = home.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress {}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n",
                host.address,
                host_key.display(),
                dir.join("authorized_keys").display(),
                home.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let sshd = with_sshd.contains(&host.name.as_str()).then(|| {
            Command::new("ip")
                .args(["netns", "exec", &host.netns, "unshare", "--mount", "--propagation", "private"])
                .args(["sh", "-c"])
                .arg(format!(
                    "mount -t tmpfs tmpfs /usr/local/bin && mount -t tmpfs tmpfs /var/lib/wharf && exec /usr/sbin/sshd -D -e -f {}",
                    config.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(home.join("sshd.log")).unwrap())
                .spawn()
                .unwrap()
        });
        all.push(Machine {
            name: host.name.clone(),
            address: host.address.clone(),
            netns: host.netns.clone(),
            host_key: public.join(" "),
            sshd,
        });
    }
    for machine in all.iter().filter(|m| m.sshd.is_some()) {
        let addr: std::net::SocketAddr = format!("{}:22", machine.address).parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "sshd of {} listens",
            machine.name
        );
    }
    Machines {
        provider,
        all,
        key,
        binary,
    }
}

/// A definition whose environment `edge` runs a pooled service on `machines`, with the
/// host keys `keys` gives them.
fn definition(m: &Machines, key_of: impl Fn(usize, &Machine) -> String) -> String {
    let hosts: Vec<String> = m
        .all
        .iter()
        .enumerate()
        .map(|(i, machine)| {
            format!(
                "        - {{ name: {}, address: {}, host_key: \"{}\" }}\n",
                machine.name,
                machine.address,
                key_of(i, machine)
            )
        })
        .collect();
    format!(
        r#"
services:
  svc:
    build: ./svc
    run: ["python3", "app.py"]
    port: http
    health: {{ http: /health, timeout: 5s }}
environments:
  edge:
    hosts:
      provider: ssh
      identity_file: {}
      hosts:
{}    pools:
      svc: {{ count: {}, spread: host }}
"#,
        m.key.display(),
        hosts.concat(),
        m.all.len()
    )
}

#[test]
fn bare_machines_are_bootstrapped_in_parallel_and_a_rerun_changes_nothing() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(&p, &["m-1", "m-2", "m-3"], &["m-1", "m-2", "m-3"]);
    p.write(
        "wharf.yaml",
        &definition(&m, |_, machine| machine.host_key.clone()),
    );
    let binary = m.binary.to_str().unwrap().to_owned();
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    for machine in &m.all {
        assert!(
            stderr(&out).contains(&format!(
                "{}: installed wharf, joined, started its agent (supervised process)",
                machine.name
            )),
            "{}",
            text(&out)
        );
    }
    let hosts = p.json(&["hosts", "--env", "edge"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(3), "{hosts}");
    p.ok(&["deploy", "svc", "--env", "edge", "--version", "v1"]);
    let instances = p.instances("svc", "edge");
    let nodes: std::collections::BTreeSet<String> = instances
        .iter()
        .map(|i| i["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(nodes.len(), 3, "one per machine: {instances:?}");

    // Again: every machine is found ready, nothing is uploaded or started.
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    for machine in &m.all {
        assert!(
            stderr(&out).contains(&format!("{}: ready, nothing to do", machine.name)),
            "{}",
            text(&out)
        );
    }
    // The join token is in no file, log or process list on the machines.
    for machine in &m.all {
        let found = machine.sh(
            "grep -rl 'wharf[1][.]' /var/lib/wharf; cat /proc/*/cmdline | tr '\\0' ' ' | grep -c 'wharf[1][.]'",
        );
        assert_eq!(
            String::from_utf8_lossy(&found.stdout).trim(),
            "0",
            "{} keeps no token: {}",
            machine.name,
            text(&found)
        );
    }

    // A new agent binary rolls host by host; the instances keep running, adopted.
    let next = m.binary.with_file_name("wharf-next");
    let mut bytes = std::fs::read(&m.binary).unwrap();
    bytes.extend_from_slice(b"\n# the next build\n");
    std::fs::write(&next, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pids = |p: &mut Project| -> Vec<i64> {
        let mut all: Vec<i64> = p
            .instances("svc", "edge")
            .iter()
            .filter_map(|i| i["pid"].as_i64())
            .collect();
        all.sort();
        all
    };
    let before = pids(&mut p);
    let out = p.ok(&[
        "host",
        "upgrade",
        "--env",
        "edge",
        "--agent-binary",
        next.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("m-2: installed wharf, started its agent"),
        "{}",
        text(&out)
    );
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    for machine in &m.all {
        let installed = machine.sh("sha256sum /usr/local/bin/wharf");
        assert!(
            String::from_utf8_lossy(&installed.stdout).starts_with(&sum),
            "{}",
            machine.name
        );
        // No agent runs the replaced file any more.
        let old = machine.sh("ls -l /proc/$(cat /var/lib/wharf/agent.pid)/exe");
        assert!(
            !String::from_utf8_lossy(&old.stdout).contains("deleted"),
            "{}: {}",
            machine.name,
            text(&old)
        );
    }
    assert!(
        wait_until(Duration::from_secs(15), || {
            let p = &mut p;
            p.instances("svc", "edge")
                .iter()
                .all(|i| i["state"] == "running")
                && pids(p) == before
        }),
        "the same processes, adopted: {before:?} vs {:?}",
        pids(&mut p)
    );

    // With the controller stopped, an agent restarts an instance that dies.
    let controller = p.controller_pid().unwrap();
    let victim = instances[0]["pid"].as_i64().unwrap() as i32;
    let netns = &m
        .all
        .iter()
        .find(|x| Some(x.name.as_str()) == instances[0]["node"].as_str())
        .unwrap()
        .netns;
    let pids_in = |netns: &str| -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", netns])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let pythons = |netns: &str| -> Vec<i32> {
        pids_in(netns)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("app.py"))
            })
            .collect()
    };
    assert!(pythons(netns).contains(&victim), "{:?}", pythons(netns));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    );
    let restarted = wait_until(Duration::from_secs(20), || {
        let now = pythons(netns);
        !now.is_empty() && !now.contains(&victim)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(controller),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert!(restarted, "the agent started it again on its own");
    p.ok(&["down", "--env", "edge"]);
}

#[test]
fn a_wrong_host_key_or_an_unreachable_machine_fails_alone() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    // m-3 has no SSH server; m-1 is given m-2's host key.
    let m = machines(&p, &["m-1", "m-2", "m-3"], &["m-1", "m-2"]);
    let second = m.all[1].host_key.clone();
    p.write(
        "wharf.yaml",
        &definition(&m, |i, machine| {
            if i == 0 {
                second.clone()
            } else {
                machine.host_key.clone()
            }
        }),
    );
    let binary = m.binary.to_str().unwrap().to_owned();
    let out = p.wharf(&["env", "up", "edge", "--agent-binary", &binary]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("m-1: failed: the host key of")
            && err.contains("expected SHA256:")
            && err.contains("offered SHA256:"),
        "{err}"
    );
    assert!(err.contains("m-3: failed: cannot reach"), "{err}");
    assert!(err.contains("m-2: installed wharf, joined"), "{err}");
    assert!(err.contains("2 of 3 machine(s)"), "{err}");
    let installed = m.all[0].sh("test -e /usr/local/bin/wharf && echo yes || echo no");
    assert_eq!(
        String::from_utf8_lossy(&installed.stdout).trim(),
        "no",
        "nothing was sent to m-1"
    );
    let hosts = p.json(&["hosts", "--env", "edge"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
}
