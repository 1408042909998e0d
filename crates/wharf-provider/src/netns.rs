use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ProjectId, ProviderError, RecordFile, Runner};

/// One provisioned host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsHost {
    pub env: String,
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The host side of its veth pair, on the bridge.
    pub veth: String,
    pub address: String,
    /// Its agent's process id, once started.
    pub agent_pid: Option<u32>,
}

/// What the provider made, kept in the state folder so `down` removes exactly it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub bridge: String,
    /// `10.231.N`: the first three octets of the /24 the bridge and hosts live in.
    pub subnet: String,
    /// Hosts by `env/name`.
    pub hosts: BTreeMap<String, NetnsHost>,
}

impl NetworkRecord {
    /// The bridge's address: agents reach the controller there.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }
}

/// Network namespaces as hosts, for one project (one state folder).
pub struct NetnsProvider<R: Runner> {
    runner: R,
    file: RecordFile,
    /// Short, stable id of the project, so two projects' links never clash.
    id: ProjectId,
}

fn key(env: &str, name: &str) -> String {
    format!("{env}/{name}")
}

impl<R: Runner> NetnsProvider<R> {
    pub fn new(runner: R, state_dir: &std::path::Path) -> Self {
        Self {
            runner,
            file: RecordFile(state_dir.join("netns.json")),
            id: ProjectId::of(state_dir),
        }
    }

    pub fn record(&self) -> Result<NetworkRecord, ProviderError> {
        self.file.load()
    }

    fn save(&self, record: &NetworkRecord) -> Result<(), ProviderError> {
        self.file.save(record)
    }

    fn ip(&self, args: &[&str]) -> Result<String, ProviderError> {
        let mut argv = vec!["ip"];
        argv.extend_from_slice(args);
        self.runner.run(&argv)
    }

    /// The project's /24 of 10.231, or the next one no address of this machine is in:
    /// a bridge of another project on the same /24 (or one left behind) would take
    /// its traffic.
    fn free_subnet(&self) -> String {
        let taken = self.ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
        self.id
            .subnets("10.231")
            .find(|s| !taken.contains(&format!(" {s}.")))
            .unwrap_or_else(|| self.id.subnet("10.231"))
    }

    /// Makes the bridge (once) and a namespace for every name not provisioned yet.
    /// Returns the hosts of `env` that are new.
    pub fn up(&self, env: &str, names: &[String]) -> Result<Vec<NetnsHost>, ProviderError> {
        let mut record = self.record()?;
        if record.bridge.is_empty() {
            record.bridge = format!("whb{}", self.id);
            record.subnet = self.free_subnet();
            self.ip(&["link", "add", &record.bridge, "type", "bridge"])?;
            self.save(&record)?;
            self.ip(&[
                "addr",
                "add",
                &format!("{}/24", record.gateway()),
                "dev",
                &record.bridge,
            ])?;
            self.ip(&["link", "set", &record.bridge, "up"])?;
        }
        // Hosts reach each other across the bridge (the mesh between their agents):
        // where Docker set the forwarding policy to DROP and bridged frames pass
        // iptables, that needs a rule. Machines without iptables forward already.
        if self.runner.run(&forwarding("-C", &record.bridge)).is_err() {
            let _ = self.runner.run(&forwarding("-I", &record.bridge));
        }
        let mut made = Vec::new();
        for name in names {
            if record.hosts.contains_key(&key(env, name)) {
                continue;
            }
            let used: Vec<u8> = record
                .hosts
                .values()
                .filter_map(|h| h.address.rsplit('.').next()?.parse().ok())
                .collect();
            let octet =
                (10u8..=250)
                    .find(|o| !used.contains(o))
                    .ok_or_else(|| ProviderError::Command {
                        command: "allocate address".into(),
                        reason: "no free address left in the /24".into(),
                    })?;
            let n = record.hosts.len();
            let host = NetnsHost {
                env: env.to_owned(),
                name: name.clone(),
                netns: format!("wharf-{}-{env}-{name}", self.id),
                veth: format!("whv{}{n:03}", self.id),
                address: format!("{}.{octet}", record.subnet),
                agent_pid: None,
            };
            self.ip(&["netns", "add", &host.netns])?;
            record.hosts.insert(key(env, name), host.clone());
            self.save(&record)?;
            self.ip(&[
                "link",
                "add",
                &host.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ])?;
            self.ip(&["link", "set", &host.veth, "master", &record.bridge])?;
            self.ip(&["link", "set", &host.veth, "up"])?;
            self.ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
            self.ip(&[
                "-n",
                &host.netns,
                "addr",
                "add",
                &format!("{}/24", host.address),
                "dev",
                "eth0",
            ])?;
            self.ip(&["-n", &host.netns, "link", "set", "eth0", "up"])?;
            self.ip(&[
                "-n",
                &host.netns,
                "route",
                "add",
                "default",
                "via",
                &record.gateway(),
            ])?;
            made.push(host);
        }
        Ok(made)
    }

    /// Remembers the agent process of a host.
    pub fn set_agent(&self, env: &str, name: &str, pid: Option<u32>) -> Result<(), ProviderError> {
        let mut record = self.record()?;
        let host = record
            .hosts
            .get_mut(&key(env, name))
            .ok_or_else(|| ProviderError::UnknownHost(name.into()))?;
        host.agent_pid = pid;
        self.save(&record)
    }

    pub fn host(&self, env: Option<&str>, name: &str) -> Result<NetnsHost, ProviderError> {
        let record = self.record()?;
        let mut matching = record
            .hosts
            .values()
            .filter(|h| h.name == name && env.is_none_or(|e| e == h.env));
        matching
            .next()
            .cloned()
            .ok_or_else(|| ProviderError::UnknownHost(name.into()))
    }

    /// Every process in a host's namespace (its agent and instances).
    pub fn pids(&self, host: &NetnsHost) -> Vec<i32> {
        self.ip(&["netns", "pids", &host.netns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Sends `signal` to every process of the host.
    pub fn signal_all(&self, host: &NetnsHost, signal: nix::sys::signal::Signal) {
        for pid in self.pids(host) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Cuts the host off the network (its processes keep running).
    pub fn partition(&self, host: &NetnsHost) -> Result<(), ProviderError> {
        self.ip(&["link", "set", &host.veth, "down"]).map(|_| ())
    }

    pub fn heal(&self, host: &NetnsHost) -> Result<(), ProviderError> {
        self.ip(&["link", "set", &host.veth, "up"]).map(|_| ())
    }

    /// Removes every host of `env` (killing what runs in them), and the bridge when no
    /// host is left. Returns the names removed.
    pub fn down(&self, env: &str) -> Result<Vec<String>, ProviderError> {
        let mut record = self.record()?;
        let mut removed = Vec::new();
        for (k, host) in record.hosts.clone() {
            if host.env != env {
                continue;
            }
            self.signal_all(&host, nix::sys::signal::Signal::SIGKILL);
            // Deleting the namespace deletes its end of the veth pair, and so the pair.
            let _ = self.ip(&["netns", "del", &host.netns]);
            let _ = self.ip(&["link", "del", &host.veth]);
            record.hosts.remove(&k);
            removed.push(host.name);
            self.save(&record)?;
        }
        if record.hosts.is_empty() && !record.bridge.is_empty() {
            let _ = self.runner.run(&forwarding("-D", &record.bridge));
            let _ = self.ip(&["link", "del", &record.bridge]);
            self.file.remove();
        }
        Ok(removed)
    }
}

/// The iptables rule that lets hosts on `bridge` reach each other (`action`: -C checks,
/// -I inserts, -D deletes it).
fn forwarding<'a>(action: &'a str, bridge: &'a str) -> Vec<&'a str> {
    vec![
        "iptables", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingRunner;

    /// Answers `ip -4 -o addr show` with an address on `taken`'s /24.
    struct Taken(String);

    impl crate::Runner for Taken {
        fn run(&self, argv: &[&str]) -> Result<String, crate::ProviderError> {
            Ok(if argv.join(" ") == "ip -4 -o addr show" {
                format!(
                    "7: whbother    inet {}.1/24 brd {}.255 scope global whbother\n",
                    self.0, self.0
                )
            } else {
                String::new()
            })
        }
    }

    #[test]
    fn a_subnet_another_bridge_holds_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let own = NetnsProvider::new(RecordingRunner::default(), dir.path());
        own.up("staging", &["web-1".to_owned()]).unwrap();
        let first = own.record().unwrap().subnet;
        // The same project made again where that /24 is now held by another bridge.
        let provider = NetnsProvider::new(Taken(first.clone()), dir.path());
        std::fs::remove_file(dir.path().join("netns.json")).unwrap();
        let made = provider.up("staging", &["web-1".to_owned()]).unwrap();
        let subnet = provider.record().unwrap().subnet;
        assert_ne!(subnet, first, "{first} is taken");
        assert!(
            made[0].address.starts_with(&format!("{subnet}.")),
            "{made:?}"
        );
    }

    #[test]
    fn up_is_idempotent_and_down_removes_everything_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let provider = NetnsProvider::new(RecordingRunner::default(), dir.path());
        let names = vec!["web-1".to_owned(), "web-2".to_owned()];
        let made = provider.up("staging", &names).unwrap();
        assert_eq!(made.len(), 2);
        assert_ne!(made[0].address, made[1].address);
        assert!(
            made.iter().all(|h| h.veth.len() <= 15),
            "link names fit the kernel's limit"
        );
        assert!(
            provider.up("staging", &names).unwrap().is_empty(),
            "a second up adds nothing"
        );
        let grown = provider
            .up("staging", &["web-1".to_owned(), "web-3".to_owned()])
            .unwrap();
        assert_eq!(grown.len(), 1, "adding a host is one more name");
        let commands = provider.runner.commands.lock().unwrap().clone();
        assert_eq!(
            commands
                .iter()
                .filter(|c| c.contains("type bridge"))
                .count(),
            1
        );

        let removed = provider.down("staging").unwrap();
        assert_eq!(removed.len(), 3);
        assert!(!dir.path().join("netns.json").exists());
        let commands = provider.runner.commands.lock().unwrap().clone();
        assert_eq!(
            commands
                .iter()
                .filter(|c| c.starts_with("ip netns del"))
                .count(),
            3
        );
        assert!(commands.last().unwrap().starts_with("ip link del whb"));
    }
}
