//! Resource limits and usage through Linux control groups, v2 or v1, whichever the host
//! offers and lets us write. Each instance gets its own group named after its tag.

use std::fs;
use std::path::{Path, PathBuf};

use wharf_driver::{Limits, Usage};

/// The scheduler period CPU quotas are expressed in.
const PERIOD_USEC: u64 = 100_000;

#[derive(Debug, Clone)]
pub enum Cgroups {
    /// The unified hierarchy: one folder per group.
    V2 { root: PathBuf },
    /// Separate hierarchies for `cpu`, `cpuacct` (which may be the same) and `memory`.
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        memory: PathBuf,
    },
    /// No writable hierarchy; the reason is shown to the user at deploy time.
    Unavailable(String),
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

impl Cgroups {
    /// Finds the hierarchy and makes wharf's parent group in it.
    pub fn detect(base: &Path) -> Self {
        if base.join("cgroup.controllers").exists() {
            let root = base.join("wharf");
            let made = fs::create_dir_all(&root)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    // Children may only use the controllers their parent hands down.
                    let _ = write(&base.join("cgroup.subtree_control"), "+cpu +memory");
                    write(&root.join("cgroup.subtree_control"), "+cpu +memory")
                });
            return match made {
                Ok(()) => Cgroups::V2 { root },
                Err(e) => Cgroups::Unavailable(format!(
                    "cgroup v2 at `{}` is not writable ({e})",
                    base.display()
                )),
            };
        }
        let (cpu, memory) = (
            base.join("cpu").join("wharf"),
            base.join("memory").join("wharf"),
        );
        // `cpuacct` is mounted with `cpu` on some hosts and on its own on others.
        let cpuacct =
            if base.join("cpu").join("cpuacct.usage").exists() || !base.join("cpuacct").exists() {
                cpu.clone()
            } else {
                base.join("cpuacct").join("wharf")
            };
        match fs::create_dir_all(&cpu)
            .and_then(|_| fs::create_dir_all(&memory))
            .and_then(|_| fs::create_dir_all(&cpuacct))
        {
            Ok(()) => Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            },
            Err(e) => Cgroups::Unavailable(format!(
                "no writable cgroup v1 or v2 hierarchy under `{}` ({e})",
                base.display()
            )),
        }
    }

    fn folders(&self, group: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V2 { root } => vec![root.join(group)],
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => vec![cpu.join(group), cpuacct.join(group), memory.join(group)],
            Cgroups::Unavailable(_) => vec![],
        }
    }

    /// Puts `pid` in a group of its own with `limits`.
    pub fn confine(&self, group: &str, pid: u32, limits: Limits) -> Result<(), String> {
        let quota = |m: u64| {
            if m == 0 {
                None
            } else {
                Some(m * PERIOD_USEC / 1000)
            }
        };
        match self {
            Cgroups::Unavailable(reason) => return Err(reason.clone()),
            Cgroups::V2 { root } => {
                let dir = root.join(group);
                fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let cpu = quota(limits.cpu_millis)
                    .map(|q| format!("{q} {PERIOD_USEC}"))
                    .unwrap_or_else(|| format!("max {PERIOD_USEC}"));
                write(&dir.join("cpu.max"), &cpu)?;
                let memory = if limits.memory_bytes == 0 {
                    "max".to_owned()
                } else {
                    limits.memory_bytes.to_string()
                };
                write(&dir.join("memory.max"), &memory)?;
                write(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
            Cgroups::V1 {
                cpu,
                cpuacct,
                memory,
            } => {
                let (cpu_dir, acct_dir, memory_dir) =
                    (cpu.join(group), cpuacct.join(group), memory.join(group));
                for dir in [&cpu_dir, &acct_dir, &memory_dir] {
                    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                write(&cpu_dir.join("cpu.cfs_period_us"), &PERIOD_USEC.to_string())?;
                let q = quota(limits.cpu_millis)
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "-1".into());
                write(&cpu_dir.join("cpu.cfs_quota_us"), &q)?;
                if limits.memory_bytes > 0 {
                    write(
                        &memory_dir.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                }
                write(&cpu_dir.join("cgroup.procs"), &pid.to_string())?;
                if acct_dir != cpu_dir {
                    write(&acct_dir.join("cgroup.procs"), &pid.to_string())?;
                }
                write(&memory_dir.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// CPU time and memory of a group, including every process in it.
    pub fn usage(&self, group: &str) -> Option<Usage> {
        match self {
            Cgroups::V2 { root } => {
                let dir = root.join(group);
                let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let cpu_usec = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                let memory_bytes = fs::read_to_string(dir.join("memory.current"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some(Usage {
                    cpu_usec,
                    memory_bytes,
                })
            }
            Cgroups::V1 {
                cpuacct, memory, ..
            } => {
                let nanos: u64 = fs::read_to_string(cpuacct.join(group).join("cpuacct.usage"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let memory_bytes =
                    fs::read_to_string(memory.join(group).join("memory.usage_in_bytes"))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?;
                Some(Usage {
                    cpu_usec: nanos / 1000,
                    memory_bytes,
                })
            }
            Cgroups::Unavailable(_) => None,
        }
    }

    /// Whether the kernel killed a process of the group for going over its memory limit.
    pub fn oom_killed(&self, group: &str) -> bool {
        let events = match self {
            Cgroups::V2 { root } => root.join(group).join("memory.events"),
            Cgroups::V1 { memory, .. } => memory.join(group).join("memory.oom_control"),
            Cgroups::Unavailable(_) => return false,
        };
        fs::read_to_string(events).is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    }

    /// Removes a group once its processes are gone.
    pub fn remove(&self, group: &str) {
        for dir in self.folders(group) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A group name from an instance tag (no slashes or colons).
pub fn group_name(tag: &str) -> String {
    tag.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_single_folder_names() {
        assert_eq!(group_name("ab12:prod/api/web-1/0"), "ab12_prod_api_web-1_0");
    }

    #[test]
    fn v1_limits_are_written_as_quota_and_bytes() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("cpu")).unwrap();
        std::fs::create_dir_all(base.path().join("memory")).unwrap();
        let cgroups = Cgroups::detect(base.path());
        assert!(matches!(cgroups, Cgroups::V1 { .. }));
        cgroups
            .confine(
                "g",
                42,
                Limits {
                    cpu_millis: 500,
                    memory_bytes: 64 << 20,
                },
            )
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(base.path().join(p)).unwrap();
        assert_eq!(read("cpu/wharf/g/cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read("memory/wharf/g/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("memory/wharf/g/cgroup.procs"), "42");
    }

    #[test]
    fn v2_limits_are_written_as_max_files() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let cgroups = Cgroups::detect(base.path());
        cgroups
            .confine(
                "g",
                7,
                Limits {
                    cpu_millis: 250,
                    memory_bytes: 0,
                },
            )
            .unwrap();
        let read = |p: &str| std::fs::read_to_string(base.path().join(p)).unwrap();
        assert_eq!(read("wharf/g/cpu.max"), "25000 100000");
        assert_eq!(read("wharf/g/memory.max"), "max");
    }

    #[test]
    fn an_unwritable_hierarchy_explains_itself() {
        let cgroups = Cgroups::detect(Path::new("/proc/no-such-cgroup-root"));
        let Cgroups::Unavailable(reason) = cgroups else {
            panic!("detected a hierarchy in /proc")
        };
        assert!(reason.contains("no writable cgroup"), "{reason}");
    }
}
