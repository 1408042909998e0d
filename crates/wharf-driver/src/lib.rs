//! The driver interface. The agent decides *what* runs; a driver knows *how*: plain
//! processes today, containers and remote hosts later. Nothing here knows about process
//! ids in particular beyond an opaque handle id a driver can find its instance by again.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod log_times;

/// Identifies an instance: one slot of one service in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub env: String,
    pub service: String,
    pub node: String,
    pub instance: u32,
}

impl InstanceKey {
    /// A string that names the instance uniquely on a host; drivers tag what they start
    /// with it so a restarted agent can find its instances again.
    pub fn tag(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.env, self.service, self.node, self.instance
        )
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} in `{}` on `{}`",
            self.service, self.instance, self.env, self.node
        )
    }
}

/// Everything a driver needs to start an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub key: InstanceKey,
    /// The unpacked artifact; the command runs here.
    pub workdir: PathBuf,
    pub argv: Vec<String>,
    /// The instance's complete environment (rendered configuration and wharf's variables).
    pub env: BTreeMap<String, String>,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    /// The log is rotated when it reaches this size (0: the driver's default)...
    #[serde(default)]
    pub log_max_bytes: u64,
    /// ...and this many rotated files are kept.
    #[serde(default)]
    pub log_keep: u32,
    /// The value of the `WHARF_TAG` marker the driver attaches to the instance.
    pub tag: String,
    /// CPU (thousandths of a core) and memory (bytes) the instance may use; 0 is no limit.
    #[serde(default)]
    pub limits: Limits,
    /// For image-based drivers: the image to run (an image id).
    #[serde(default)]
    pub image: Option<String>,
    /// Keys of `env` that hold secrets: never written to files by a driver.
    #[serde(default)]
    pub secret_keys: Vec<String>,
    /// The signal a stop sends first (`QUIT`...; default TERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// The instance's own persistent folder (also in `env` as `WHARF_DATA_DIR`), which
    /// an image-based driver mounts at the same path.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// For a container: its own fixed port, published on the instance's `PORT`.
    #[serde(default)]
    pub container_port: Option<u16>,
    /// For an image: the program that runs `argv` instead of the image's ENTRYPOINT.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Where the instance starts, when not `workdir` (a process: relative to
    /// `workdir`; a container: a path inside it).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Who it runs as: a user name or `UID[:GID]`.
    #[serde(default)]
    pub user: Option<String>,
    /// Its other ports, as (variable, host port, the container's own port): a
    /// container gets each published and its variable set to the container's port.
    #[serde(default)]
    pub extra_ports: Vec<(String, u16, Option<u16>)>,
    /// A container's volumes, as (source, path inside): a named volume or a host folder.
    #[serde(default)]
    pub volumes: Vec<(String, String)>,
    /// Where to pull `image` from when the host lacks it (never stored).
    #[serde(skip)]
    pub pull: Option<ImagePull>,
    /// `workdir` is a service's own folder (`wharf dev`), not an unpacked artifact: it
    /// changes while the instance runs, so an image-based driver copies its files into
    /// each container it starts rather than making an image of it.
    #[serde(default)]
    pub from_source: bool,
}

/// A registry pull: the reference (`registry/name:tag`) and its credentials, which come
/// from the service's secrets. The pulled image must be the pinned one.
#[derive(Clone, PartialEq, Eq)]
pub struct ImagePull {
    pub reference: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for ImagePull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagePull")
            .field("reference", &self.reference)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// The secrets holding a service's registry credentials: used for pulls, never given
/// to the instance.
pub const REGISTRY_USERNAME: &str = "WHARF_REGISTRY_USERNAME";
pub const REGISTRY_PASSWORD: &str = "WHARF_REGISTRY_PASSWORD";

/// Resource limits of an instance; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.cpu_millis > 0 || self.memory_bytes > 0
    }
}

/// What an instance uses right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time consumed so far, in microseconds (for a rate, take two readings).
    pub cpu_usec: u64,
    pub memory_bytes: u64,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by the kernel for using more memory than its limit.
    OutOfMemory,
    /// Gone, but the driver could not learn how (an adopted process).
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => write!(f, "was killed by signal {s}"),
            Exit::OutOfMemory => write!(
                f,
                "was killed for using more memory than its limit (out of memory)"
            ),
            Exit::Unknown => write!(f, "exited"),
        }
    }
}

/// An instance found running, left by an earlier agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub tag: String,
    pub handle_id: u32,
}

/// Why a driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start `{program}`: {reason}")]
    Start { program: String, reason: String },
    #[error("cannot open log file `{path}`: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A started instance the agent can watch and stop.
#[async_trait]
pub trait Running: Send + Sync {
    /// The driver's id for it (a process id for the process driver).
    fn handle_id(&self) -> u32;
    /// What the instance uses now, if the driver can tell.
    fn usage(&self) -> Option<Usage> {
        None
    }
    /// When the instance started, in Unix milliseconds, if the driver can tell (it
    /// matters for adopted instances, which started before the agent did).
    fn started_at_millis(&self) -> Option<i64> {
        None
    }
    /// Resolves when the instance ends. Cancel-safe: dropping the future loses nothing.
    async fn wait(&mut self) -> Exit;
    /// Asks the instance to stop, and forces it after `grace`.
    async fn stop(&mut self, grace: Duration) -> Exit;
    /// Sends the instance a signal by name (`HUP`, `USR1`, ...), for a reload.
    async fn signal(&mut self, signal: &str) -> Result<(), String> {
        Err(format!("this driver cannot send {signal}"))
    }
}

/// Runs instances on this host.
#[async_trait]
pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Why resource limits cannot be enforced on this host, if they cannot.
    fn limits_unavailable(&self) -> Option<String> {
        None
    }
    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn Running>, DriverError>;
    /// Instances this driver started earlier and that still run, found by their tags.
    async fn find_running(&self) -> Vec<Found>;
    /// Takes an instance found by [`Driver::find_running`] under watch again.
    /// `launch` is what the instance was started with, when the agent still knows it
    /// (a driver may need it, for example to keep appending the instance's output to
    /// its log file); orphans found without a plan are adopted only to be stopped.
    async fn adopt(&self, found: &Found, launch: Option<&LaunchSpec>) -> Option<Box<dyn Running>>;
    /// The address at which this driver's instances reach the host they run on, when
    /// that is not loopback (a container on a bridge network: the bridge's gateway);
    /// `None`: they share the host's network.
    async fn host_address(&self) -> Option<std::net::IpAddr> {
        None
    }
    /// Removes the named volumes whose names start with `prefix` (`wharf down
    /// --purge`); how many it removed.
    async fn remove_volumes(&self, prefix: &str) -> Result<usize, DriverError> {
        let _ = prefix;
        Ok(0)
    }

    /// Copies `files` (relative to `spec.workdir`, each an existing file, folder or
    /// link) into the running instance `spec` started, at the same place in its
    /// filesystem (`wharf dev`'s sync). A driver whose instances run from `workdir`
    /// itself, as processes do, has nothing to copy: they already see the files.
    async fn copy_in(&self, spec: &LaunchSpec, files: &[PathBuf]) -> Result<(), DriverError> {
        let _ = (spec, files);
        Ok(())
    }

    /// Runs `argv` once beside the running instance `spec` started: in its environment
    /// and folder, as its user (a container: inside it). Ends it after `limit`.
    async fn exec(
        &self,
        spec: &LaunchSpec,
        argv: &[String],
        limit: std::time::Duration,
    ) -> Result<ExecOutput, DriverError> {
        let _ = (spec, argv, limit);
        Err(DriverError::Other(format!(
            "the {} driver cannot run a command in an instance",
            self.name()
        )))
    }
}

/// How a command run by [`Driver::exec`] ended and what it printed (each stream cut at
/// [`EXEC_OUTPUT_MAX`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None`: a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How much of each output stream of an exec is kept.
pub const EXEC_OUTPUT_MAX: usize = 4 * 1024 * 1024;

/// Usage of the whole control group a process is in (a container: every process in
/// it), read from `/proc/PID/cgroup` and `/sys/fs/cgroup`, v1 or v2.
pub fn cgroup_usage(pid: u32) -> Option<Usage> {
    cgroup_usage_under(std::path::Path::new("/sys/fs/cgroup"), pid)
}

fn cgroup_usage_under(root: &std::path::Path, pid: u32) -> Option<Usage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (mut cpuacct, mut memory, mut unified) = (None, None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            unified = Some(path.to_owned());
        }
        for controller in controllers.split(',') {
            match controller {
                "cpuacct" => cpuacct = Some((controllers.to_owned(), path.to_owned())),
                "memory" => memory = Some((controllers.to_owned(), path.to_owned())),
                _ => {}
            }
        }
    }
    let read = |path: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    // A v1 controller is mounted under its own name or under the joined list.
    let v1_dir = |(controllers, path): &(String, String), name: &str| {
        [controllers.as_str(), name, "cpu,cpuacct"]
            .iter()
            .map(|mount| root.join(mount).join(path.trim_start_matches('/')))
            .find(|dir| dir.is_dir())
    };
    if let (Some(cpu), Some(mem)) = (&cpuacct, &memory) {
        let cpu_dir = v1_dir(cpu, "cpuacct")?;
        let mem_dir = v1_dir(mem, "memory")?;
        return Some(Usage {
            cpu_usec: read(cpu_dir.join("cpuacct.usage"))? / 1000,
            memory_bytes: read(mem_dir.join("memory.usage_in_bytes"))?,
        });
    }
    let dir = root.join(unified?.trim_start_matches('/'));
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    Some(Usage {
        cpu_usec: stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?,
        memory_bytes: read(dir.join("memory.current"))?,
    })
}

/// Usage of a single process from /proc (CPU time and resident memory of that process).
pub fn process_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = clock_ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Usage {
        cpu_usec: ticks * 1_000_000 / per_second,
        memory_bytes: rss_kb * 1024,
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_groups_usage_is_read_where_the_process_is() {
        // A fake /sys/fs/cgroup holding this process's groups, v1 and v2 alike.
        let root = tempfile::tempdir().unwrap();
        let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        for line in groups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                let dir = root.path().join(path);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
                std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
            }
            for c in controllers.split(',') {
                let dir = root.path().join(c).join(path);
                std::fs::create_dir_all(&dir).unwrap();
                match c {
                    "cpuacct" => std::fs::write(dir.join("cpuacct.usage"), "1500000\n").unwrap(),
                    "memory" => {
                        std::fs::write(dir.join("memory.usage_in_bytes"), "4096\n").unwrap()
                    }
                    _ => {}
                }
            }
        }
        let usage = cgroup_usage_under(root.path(), std::process::id()).unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_usec: 1500,
                memory_bytes: 4096
            }
        );
        assert_eq!(cgroup_usage_under(root.path(), u32::MAX), None);
    }
}
