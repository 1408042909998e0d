//! Bare machines for the SSH tests and the bootstrap benchmark (which includes this
//! file): network namespaces, each with a mount namespace of its own over
//! /usr/local/bin and /var/lib/wharf (so nothing of wharf is on them), running Debian's
//! OpenSSH server with a host key of their own. Needs root, iproute2 and sshd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_provider::{NetnsProvider, SystemRunner};

/// One bare machine: its address, its SSH server and that server's host key.
pub struct Machine {
    pub name: String,
    pub address: String,
    pub netns: String,
    /// `ssh-ed25519 AAAA...`
    pub host_key: String,
    /// Its folder on this machine (sshd's configuration and log).
    pub home: PathBuf,
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

    /// Gives the machine a login of its own, `user` with `sudoers` as its sudo rule:
    /// its own copies of /etc/passwd, group, shadow and sudoers.d, bind-mounted in its
    /// mount namespace (this machine's files stay as they are).
    pub fn add_user(&self, user: &str, uid: u32, sudoers: &str) {
        let etc = self.home.join("etc");
        std::fs::create_dir_all(etc.join("sudoers.d")).unwrap();
        for file in ["passwd", "group", "shadow"] {
            if !etc.join(file).exists() {
                std::fs::copy(Path::new("/etc").join(file), etc.join(file)).unwrap();
            }
        }
        let append = |file: &str, line: String| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(etc.join(file))
                .unwrap();
            writeln!(f, "{line}").unwrap();
        };
        append("passwd", format!("{user}:x:{uid}:{uid}::/tmp:/bin/sh"));
        append("group", format!("{user}:x:{uid}:"));
        append("shadow", format!("{user}:*:19000:0:99999:7:::"));
        let rule = etc.join("sudoers.d").join(user);
        std::fs::write(&rule, format!("{sudoers}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rule, std::fs::Permissions::from_mode(0o440)).unwrap();
        let mount = ["passwd", "group", "shadow", "sudoers.d"]
            .iter()
            .map(|f| {
                format!(
                    "grep -q ' /etc/{f} ' /proc/self/mountinfo || mount --bind {} /etc/{f}",
                    etc.join(f).display()
                )
            })
            .collect::<Vec<_>>()
            .join(" && ");
        let out = self.sh(&mount);
        assert!(out.status.success(), "{}", text(&out));
    }
}

pub struct Machines {
    provider: NetnsProvider<SystemRunner>,
    pub all: Vec<Machine>,
    pub key: PathBuf,
    /// A stripped copy of wharf, to install.
    pub binary: PathBuf,
    /// This machine's address on the machines' bridge.
    pub gateway: String,
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

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", text(&out));
}

/// `names` as bare machines; `with_sshd`: those that run an SSH server.
pub fn machines(root: &Path, wharf: &str, names: &[&str], with_sshd: &[&str]) -> Machines {
    let dir = root.join("machines");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key));
    std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    let binary = dir.join("wharf");
    run(Command::new("strip").arg("-o").arg(&binary).arg(wharf));
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
            home,
            sshd,
        });
    }
    let gateway = provider.record().expect("the bridge").gateway();
    // Made before anything more can fail: dropped, it takes the machines down.
    let machines = Machines {
        provider,
        all,
        key,
        binary,
        gateway,
    };
    for machine in machines.all.iter().filter(|m| m.sshd.is_some()) {
        let addr: std::net::SocketAddr = format!("{}:22", machine.address).parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "sshd of {} listens: {}",
            machine.name,
            std::fs::read_to_string(machine.home.join("sshd.log")).unwrap_or_default()
        );
    }
    machines
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let begun = Instant::now();
    while begun.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
