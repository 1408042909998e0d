//! `provider: ssh`: bare machines (network namespaces, each with a mount namespace of
//! its own over /usr/local/bin and /var/lib/wharf, so nothing of wharf is on them) run
//! Debian's OpenSSH server; `wharf env up` installs, joins and starts an agent on each.
//! Needs root, iproute2 and openssh-server (scripts/test installs it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::machines::{Machine, Machines, machines};

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

/// A definition whose environment `edge` runs a pooled service on `machines`, with the
/// host keys `keys` gives them.
fn definition(m: &Machines, key_of: impl Fn(usize, &Machine) -> String) -> String {
    let all: Vec<usize> = (0..m.all.len()).collect();
    definition_of(m, &all, "", key_of)
}

/// [`definition`] with only the machines `listed`, `settings` (as `user: deploy\n`)
/// among the hosts' keys.
fn definition_of(
    m: &Machines,
    listed: &[usize],
    settings: &str,
    key_of: impl Fn(usize, &Machine) -> String,
) -> String {
    let hosts: Vec<String> = m
        .all
        .iter()
        .enumerate()
        .filter(|(i, _)| listed.contains(i))
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
{}      hosts:
{}    pools:
      svc: {{ count: {}, spread: host }}
"#,
        m.key.display(),
        settings
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>(),
        hosts.concat(),
        listed.len()
    )
}

#[test]
fn bare_machines_are_bootstrapped_in_parallel_and_a_rerun_changes_nothing() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(
        p.path(),
        WHARF,
        &["m-1", "m-2", "m-3"],
        &["m-1", "m-2", "m-3"],
    );
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
    let m = machines(p.path(), WHARF, &["m-1", "m-2", "m-3"], &["m-1", "m-2"]);
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

#[test]
fn machines_behind_a_jump_host_are_bootstrapped_through_it() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(p.path(), WHARF, &["bastion", "m-1"], &["bastion", "m-1"]);
    let (bastion, inner) = (&m.all[0], &m.all[1]);
    let definition = |port: &str| {
        format!(
            r#"
services: {{}}
environments:
  edge:
    hosts:
      provider: ssh
      identity_file: {}
      controller: https://{}:{port}
      jump: {{ address: {}, host_key: "{}" }}
      hosts:
        - {{ name: m-1, address: {}, host_key: "{}" }}
"#,
            m.key.display(),
            m.gateway,
            bastion.address,
            bastion.host_key,
            inner.address,
            inner.host_key
        )
    };
    // The controller starts for a definition with SSH hosts (its agent port beyond
    // loopback); then the hosts are told that port.
    p.write("wharf.yaml", &definition("1"));
    p.ok(&["status"]);
    let port = crate::fleet::agent_url(&p)
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    p.write("wharf.yaml", &definition(&port));
    let binary = m.binary.to_str().unwrap().to_owned();
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    assert!(
        stderr(&out).contains("m-1: installed wharf, joined"),
        "{}",
        text(&out)
    );
    // m-1's SSH server saw the connection come from the bastion, not from here.
    let log = std::fs::read_to_string(p.path().join("machines/m-1/sshd.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("from {}", bastion.address)),
        "m-1 was reached through the bastion: {log}"
    );
    let installed = bastion.sh("test -e /usr/local/bin/wharf && echo yes || echo no");
    assert_eq!(
        String::from_utf8_lossy(&installed.stdout).trim(),
        "no",
        "the bastion gets nothing"
    );
}

#[test]
fn a_removed_host_keeps_no_binary_agent_or_valid_certificate() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(p.path(), WHARF, &["m-1", "m-2"], &["m-1", "m-2"]);
    p.write(
        "wharf.yaml",
        &definition(&m, |_, machine| machine.host_key.clone()),
    );
    let binary = m.binary.to_str().unwrap().to_owned();
    p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    p.ok(&["deploy", "svc", "--env", "edge", "--version", "v1"]);
    let supervisor = m.all[0].sh("cat /var/lib/wharf/agent.pid");
    let supervisor = String::from_utf8_lossy(&supervisor.stdout)
        .trim()
        .to_owned();
    assert!(!supervisor.is_empty());

    let out = p.ok(&["host", "remove", "m-1", "--env", "edge"]);
    assert!(
        stderr(&out).contains("revoked the certificate of `m-1`"),
        "{}",
        text(&out)
    );
    // Its instance moved to m-2.
    let instances = p.instances("svc", "edge");
    assert!(
        instances
            .iter()
            .all(|i| i["node"] == "m-2" && i["state"] == "running"),
        "{instances:?}"
    );
    let left = m.all[0].sh(
        "ls /usr/local/bin/wharf /var/lib/wharf/agent /var/lib/wharf/agent.pid 2>/dev/null | wc -l",
    );
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "nothing of wharf is left"
    );
    assert!(
        !Path::new(&format!("/proc/{supervisor}")).exists(),
        "its agent no longer runs"
    );
    let hosts = p.json(&["hosts", "--env", "edge"]);
    let m1 = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "m-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(m1["state"], "revoked", "{hosts}");
}

#[test]
fn a_host_added_by_command_is_a_definition_revision_and_is_bootstrapped() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(p.path(), WHARF, &["m-1", "m-2"], &["m-1", "m-2"]);
    let text_of = |m: &Machines, comment: &str| {
        format!(
            "# {comment}\n{}",
            definition_of(m, &[0], "", |_, machine| machine.host_key.clone())
        )
    };
    p.write("wharf.yaml", &text_of(&m, "one machine"));
    let binary = m.binary.to_str().unwrap().to_owned();
    p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    let second = &m.all[1];
    let target = format!("root@{}:22", second.address);
    let out = p.ok(&[
        "host",
        "add",
        "m-2",
        "--env",
        "edge",
        "--ssh",
        &target,
        "--host-key",
        &second.host_key,
        "--agent-binary",
        &binary,
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("added `m-2` to `edge` as definition revision")
            && err.contains("m-2: installed wharf, joined, started its agent"),
        "{}",
        text(&out)
    );
    let hosts = p.json(&["hosts", "--env", "edge"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{hosts}");
    let history = p.json(&["definition", "history"]);
    assert!(
        history[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("wharf host add m-2 --env edge --ssh root@")),
        "{history}"
    );

    // Refused, and nothing changes: the same name, the same machine, a bad target.
    let revisions = history.as_array().map(Vec::len);
    let taken = p.wharf(&["host", "add", "m-2", "--env", "edge", "--ssh", &target]);
    assert_eq!(taken.status.code(), Some(1), "{}", text(&taken));
    assert!(
        stderr(&taken).contains("already has a host `m-2`"),
        "{}",
        text(&taken)
    );
    let again = p.wharf(&["host", "add", "m-9", "--env", "edge", "--ssh", &target]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        stderr(&again).contains("host `m-2` of `edge` already is"),
        "{}",
        text(&again)
    );
    let bad = p.wharf(&["host", "add", "m-3", "--env", "edge", "--ssh", "root@"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        stderr(&bad).contains("USER@ADDRESS[:PORT]"),
        "{}",
        text(&bad)
    );
    let history = p.json(&["definition", "history"]);
    assert_eq!(history.as_array().map(Vec::len), revisions, "{history}");

    // A changed wharf.yaml applied keeps the machine that was added.
    p.write("wharf.yaml", &text_of(&m, "edited"));
    p.ok(&["apply"]);
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    assert!(
        stderr(&out).contains("m-2: ready, nothing to do"),
        "{}",
        text(&out)
    );

    // Removed, it leaves the definition as well.
    let out = p.ok(&["host", "remove", "m-2", "--env", "edge"]);
    assert!(
        stderr(&out).contains("no longer lists `m-2`"),
        "{}",
        text(&out)
    );
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    assert!(!stderr(&out).contains("m-2:"), "{}", text(&out));
}

#[test]
fn a_login_that_is_not_root_bootstraps_through_passwordless_sudo_only() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(p.path(), WHARF, &["m-1"], &["m-1"]);
    let machine = &m.all[0];
    machine.add_user("asker", 1501, "asker ALL=(ALL) ALL");
    machine.add_user("deploy", 1500, "deploy ALL=(ALL) NOPASSWD:ALL");
    let binary = m.binary.to_str().unwrap().to_owned();
    let key = |_: usize, machine: &Machine| machine.host_key.clone();

    p.write("wharf.yaml", &definition_of(&m, &[0], "user: asker\n", key));
    let out = p.wharf(&["env", "up", "edge", "--agent-binary", &binary]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("`asker` is not root and `sudo -n` refused"),
        "{}",
        text(&out)
    );
    let installed = machine.sh("test -e /usr/local/bin/wharf && echo yes || echo no");
    assert_eq!(String::from_utf8_lossy(&installed.stdout).trim(), "no");

    p.write(
        "wharf.yaml",
        &definition_of(&m, &[0], "user: deploy\n", key),
    );
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    assert!(
        stderr(&out).contains("m-1: installed wharf, joined, started its agent"),
        "{}",
        text(&out)
    );
    // The agent runs as root (it starts instances as their users), under the
    // supervisor sudo started.
    let uid = machine.sh("awk '/^Uid:/ { print $2 }' /proc/$(cat /var/lib/wharf/agent.pid)/status");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "{}",
        text(&uid)
    );
    p.ok(&["deploy", "svc", "--env", "edge", "--version", "v1"]);
    let log = std::fs::read_to_string(machine.home.join("sshd.log")).unwrap_or_default();
    assert!(log.contains("Accepted publickey for deploy"), "{log}");
    // What root installed is seen through sudo: a re-run finds it ready.
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    assert!(
        stderr(&out).contains("m-1: ready, nothing to do"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_read_only_or_full_usr_local_fails_its_machine_alone_and_a_rerun_completes_it() {
    if !ssh_runs_here() {
        return;
    }
    let _fleet = crate::netns::one_at_a_time();
    let mut p = Project::new("services: {}\n", &["svc"]);
    let m = machines(
        p.path(),
        WHARF,
        &["m-1", "m-2", "m-3"],
        &["m-1", "m-2", "m-3"],
    );
    p.write(
        "wharf.yaml",
        &definition(&m, |_, machine| machine.host_key.clone()),
    );
    let (read_only, full) = (&m.all[0], &m.all[1]);
    let out = read_only.sh("mount -o remount,ro /usr/local/bin");
    assert!(out.status.success(), "{}", text(&out));
    let out = full.sh("mount -o remount,size=1m /usr/local/bin");
    assert!(out.status.success(), "{}", text(&out));
    let binary = m.binary.to_str().unwrap().to_owned();
    let out = p.wharf(&["env", "up", "edge", "--agent-binary", &binary]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("m-1: failed: cannot install /usr/local/bin/wharf")
            && err.contains("Read-only file system"),
        "{err}"
    );
    assert!(
        err.contains("m-2: failed: cannot install /usr/local/bin/wharf")
            && err.contains("No space left on device"),
        "{err}"
    );
    assert!(err.contains("m-3: installed wharf, joined"), "{err}");
    // The full disk keeps no half-written binary.
    let left = full.sh("ls /usr/local/bin | wc -l");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "{}",
        text(&left)
    );

    // Fixed, the next run completes them and leaves the done one as it is.
    read_only.sh("mount -o remount,rw /usr/local/bin");
    full.sh("mount -o remount,size=512m /usr/local/bin");
    let out = p.ok(&["env", "up", "edge", "--agent-binary", &binary]);
    let err = stderr(&out);
    assert!(
        err.contains("m-1: installed wharf, joined")
            && err.contains("m-2: installed wharf, joined")
            && err.contains("m-3: ready, nothing to do"),
        "{err}"
    );
    let hosts = p.json(&["hosts", "--env", "edge"]);
    assert_eq!(hosts.as_array().map(Vec::len), Some(3), "{hosts}");
}
