//! The `docker` provider: each host is a container on the local Docker engine, on a
//! network of its own, running a wharf agent. No registry is needed: the image is made
//! here with `docker import` from a root filesystem holding the wharf binary and the
//! shared libraries it links, so the instances it runs are programs of that kind too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ProjectId, ProviderError, RecordFile, Runner};

/// One container host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHost {
    pub env: String,
    pub name: String,
    pub container: String,
    pub address: String,
}

/// What the provider made, so `down` removes exactly it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRecord {
    pub network: String,
    pub subnet: String,
    pub image: String,
    pub hosts: BTreeMap<String, ContainerHost>,
}

impl DockerRecord {
    /// Where containers reach this machine (the network's gateway).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }
}

pub struct DockerProvider<R: Runner> {
    runner: R,
    file: RecordFile,
    id: ProjectId,
}

impl<R: Runner> DockerProvider<R> {
    pub fn new(runner: R, state_dir: &Path) -> Self {
        Self {
            runner,
            file: RecordFile(state_dir.join("docker.json")),
            id: ProjectId::of(state_dir),
        }
    }

    pub fn record(&self) -> Result<DockerRecord, ProviderError> {
        self.file.load()
    }

    fn save(&self, record: &DockerRecord) -> Result<(), ProviderError> {
        self.file.save(record)
    }

    fn docker(&self, args: &[&str]) -> Result<String, ProviderError> {
        let mut argv = vec!["docker"];
        argv.extend_from_slice(args);
        self.runner.run(&argv)
    }

    /// Makes the image and network (once) and a container record per new name. The
    /// containers themselves start with [`DockerProvider::start_agent`].
    pub fn up(
        &self,
        env: &str,
        names: &[String],
        rootfs_tar: &Path,
    ) -> Result<Vec<ContainerHost>, ProviderError> {
        let mut record = self.record()?;
        if record.network.is_empty() {
            record.network = format!("wharf-{}", self.id);
            record.subnet = self.id.subnet("10.232");
            record.image = format!("wharf-host:{}", self.id);
            self.docker(&["import", &rootfs_tar.to_string_lossy(), &record.image])?;
            self.save(&record)?;
            self.docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{}.0/24", record.subnet),
                "--gateway",
                &record.gateway(),
                &record.network,
            ])?;
            self.save(&record)?;
        }
        let mut made = Vec::new();
        for name in names {
            let key = format!("{env}/{name}");
            if record.hosts.contains_key(&key) {
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
                        reason: "no free address left".into(),
                    })?;
            let host = ContainerHost {
                env: env.to_owned(),
                name: name.clone(),
                container: format!("wharf-{}-{env}-{name}", self.id),
                address: format!("{}.{octet}", record.subnet),
            };
            record.hosts.insert(key, host.clone());
            self.save(&record)?;
            made.push(host);
        }
        Ok(made)
    }

    /// Creates and starts a host's container running its agent.
    pub fn start_agent(
        &self,
        host: &ContainerHost,
        controller: &str,
        token: Option<&str>,
    ) -> Result<(), ProviderError> {
        let record = self.record()?;
        // The token goes through an owner-only file, never through argv.
        let env_file = self
            .file
            .0
            .with_file_name(format!(".{}.env", host.container));
        let secret = format!("WHARF_JOIN_TOKEN={}\n", token.unwrap_or(""));
        write_owner_only(&env_file, &secret).map_err(|e| self.file.error(e))?;
        let labels = format!("provider=docker,env={}", host.env);
        let env_path = env_file.to_string_lossy().into_owned();
        let started = self.docker(&[
            "run",
            "-d",
            "--name",
            &host.container,
            "--hostname",
            &host.name,
            "--network",
            &record.network,
            "--ip",
            &host.address,
            "--label",
            "wharf.provider=docker",
            "--env-file",
            &env_path,
            &record.image,
            "/usr/local/bin/wharf",
            "agent",
            "--controller",
            controller,
            "--name",
            &host.name,
            "--labels",
            &labels,
            "--state-dir",
            "/var/lib/wharf-agent",
        ]);
        let _ = std::fs::remove_file(&env_file);
        started.map(|_| ())
    }

    pub fn host(&self, env: Option<&str>, name: &str) -> Result<ContainerHost, ProviderError> {
        let record = self.record()?;
        let found = record
            .hosts
            .values()
            .find(|h| h.name == name && env.is_none_or(|e| e == h.env))
            .cloned();
        found.ok_or_else(|| ProviderError::UnknownHost(name.into()))
    }

    /// `stop`, `start`, `kill`, `partition` or `heal` a container host.
    pub fn inject(&self, host: &ContainerHost, action: &str) -> Result<(), ProviderError> {
        let record = self.record()?;
        let result = match action {
            "stop" => self.docker(&["stop", "-t", "5", &host.container]),
            "start" => self.docker(&["start", &host.container]),
            "kill" => self.docker(&["kill", &host.container]),
            "partition" => {
                self.docker(&["network", "disconnect", &record.network, &host.container])
            }
            "heal" => self.docker(&[
                "network",
                "connect",
                "--ip",
                &host.address,
                &record.network,
                &host.container,
            ]),
            other => {
                return Err(ProviderError::Command {
                    command: other.into(),
                    reason: "unknown action".into(),
                });
            }
        };
        result.map(|_| ())
    }

    /// Removes the environment's containers, and the network and image once no host is left.
    pub fn down(&self, env: &str) -> Result<Vec<String>, ProviderError> {
        let mut record = self.record()?;
        let mut removed = Vec::new();
        for (key, host) in record.hosts.clone() {
            if host.env != env {
                continue;
            }
            let _ = self.docker(&["rm", "-f", "-v", &host.container]);
            record.hosts.remove(&key);
            removed.push(host.name);
            self.save(&record)?;
        }
        if record.hosts.is_empty() && !record.network.is_empty() {
            let _ = self.docker(&["network", "rm", &record.network]);
            let _ = self.docker(&["rmi", &record.image]);
            self.file.remove();
        }
        Ok(removed)
    }
}

/// Writes a root filesystem for the host image as a tar file: the wharf binary at
/// /usr/local/bin/wharf and the shared libraries it loads (as `ldd` lists them).
pub fn write_rootfs(
    runner: &dyn Runner,
    wharf: &Path,
    out: &Path,
    extra: &[PathBuf],
) -> Result<(), ProviderError> {
    let staging = out.with_extension("rootfs");
    let _ = std::fs::remove_dir_all(&staging);
    let io = |e: std::io::Error| ProviderError::State {
        path: staging.display().to_string(),
        reason: e.to_string(),
    };
    let copy = |from: &Path, to: &Path| -> Result<(), ProviderError> {
        let target = staging.join(to.strip_prefix("/").unwrap_or(to));
        std::fs::create_dir_all(target.parent().expect("paths have parents")).map_err(io)?;
        std::fs::copy(from, &target).map_err(io)?;
        Ok(())
    };
    copy(wharf, Path::new("/usr/local/bin/wharf"))?;
    let mut binaries = vec![wharf.to_path_buf()];
    binaries.extend(extra.iter().cloned());
    for binary in &binaries {
        for line in runner.run(&["ldd", &binary.to_string_lossy()])?.lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
            let path = line
                .split("=>")
                .last()
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or("");
            if path.starts_with('/') {
                copy(Path::new(path), Path::new(path))?;
            }
        }
    }
    for dir in ["tmp", "var/lib/wharf-agent", "etc"] {
        std::fs::create_dir_all(staging.join(dir)).map_err(io)?;
    }
    runner.run(&[
        "tar",
        "-C",
        &staging.to_string_lossy(),
        "-cf",
        &out.to_string_lossy(),
        ".",
    ])?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}
