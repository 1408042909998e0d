//! The process driver: every instance is a plain process in its own process group, with
//! its output appended to a log file. Instances do not depend on the agent's process:
//! if the agent dies they keep running, and a new agent finds them by the `WHARF_TAG`
//! variable in their environment.

mod cgroups;
mod proc_scan;

pub use cgroups::Cgroups;

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use wharf_driver::{Driver, DriverError, Exit, Found, LaunchSpec, Running, Usage};

/// Variables passed through from the agent's own environment, so programs are found.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// The variable that tags an instance's process with its identity.
pub const TAG_VARIABLE: &str = "WHARF_TAG";

/// Runs instances as local processes.
#[derive(Debug)]
pub struct ProcessDriver {
    /// Only processes whose tag starts with this prefix belong to this agent.
    tag_prefix: String,
    cgroups: Arc<Cgroups>,
    /// The program that writes instances' output to their log files, rotating by size
    /// as it writes (`PROGRAM log-writer`): the wharf binary. Without one, instances
    /// append to their log file directly.
    log_writer: Option<PathBuf>,
}

impl ProcessDriver {
    pub fn new(tag_prefix: impl Into<String>) -> Self {
        Self::with_cgroups(tag_prefix, Cgroups::detect(Path::new("/sys/fs/cgroup")))
    }

    pub fn with_cgroups(tag_prefix: impl Into<String>, cgroups: Cgroups) -> Self {
        Self {
            tag_prefix: tag_prefix.into(),
            cgroups: Arc::new(cgroups),
            log_writer: None,
        }
    }

    /// Sends instances' output through `program log-writer` (see [`ProcessDriver`]).
    pub fn with_log_writer(mut self, program: PathBuf) -> Self {
        self.log_writer = Some(program);
        self
    }

    /// Where an instance's stdout and stderr go: a pipe to its log writer (returned
    /// too, to be started once the instance's process group exists) or the file.
    fn output(&self, spec: &LaunchSpec) -> Result<(Stdio, Stdio, Option<OwnedFd>), DriverError> {
        let log_error = |source| DriverError::Log {
            path: spec.log_path.clone(),
            source,
        };
        if self.log_writer.is_some() {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| log_error(e.into()))?;
            let write_err = write.try_clone().map_err(log_error)?;
            return Ok((Stdio::from(write), Stdio::from(write_err), Some(read)));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(log_error)?;
        let log_err = log.try_clone().map_err(log_error)?;
        Ok((Stdio::from(log), Stdio::from(log_err), None))
    }

    /// Starts an instance's log writer, in a process group of its own: the
    /// signals sent to the instance's group (reloads, the stop's SIGKILL) never reach
    /// it, and it exits once every process of the instance has closed its output,
    /// after writing all of it.
    fn start_log_writer(
        &self,
        program: &Path,
        spec: &LaunchSpec,
        pipe: OwnedFd,
    ) -> Result<(), DriverError> {
        let mut command = Command::new(program);
        command
            .arg("log-writer")
            .arg("--max-bytes")
            .arg(spec.log_max_bytes.max(4096).to_string())
            .arg("--keep")
            .arg(spec.log_keep.max(1).to_string())
            .arg(&spec.log_path)
            .env_clear()
            .stdin(Stdio::from(pipe))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // Dropped, the child is reaped by tokio when it exits.
        command.spawn().map(drop).map_err(|e| DriverError::Start {
            program: program.display().to_string(),
            reason: format!("cannot start the log writer: {e}"),
        })
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn limits_unavailable(&self) -> Option<String> {
        match &*self.cgroups {
            Cgroups::Unavailable(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn Running>, DriverError> {
        // Plans come over the network too: an empty command is an error, never a panic.
        let Some((first, args)) = spec.argv.split_first() else {
            return Err(DriverError::Start {
                program: String::new(),
                reason: "the instance has no command (`run` is empty)".into(),
            });
        };
        let mut command = in_instance(spec, first, args)?;
        let (log, log_err, pipe) = self.output(spec)?;
        command
            .env(TAG_VARIABLE, &spec.tag)
            .stdout(log)
            .stderr(log_err)
            // Its own group, so stopping it stops its children too and signals sent to
            // the agent's group never reach it.
            .process_group(0)
            .kill_on_drop(false);
        let spawned = command.spawn();
        // The command holds the pipe's writing end: closed here, the writer sees the end
        // of the output once the instance's processes are gone.
        drop(command);
        let mut child = spawned.map_err(|e| DriverError::Start {
            program: first.clone(),
            reason: e.to_string(),
        })?;
        let pid = child
            .id()
            .ok_or_else(|| DriverError::Other("process exited before it was watched".into()))?;
        if let (Some(writer), Some(pipe)) = (&self.log_writer, pipe)
            && let Err(e) = self.start_log_writer(writer, spec, pipe)
        {
            let _ = child.start_kill();
            return Err(e);
        }
        // Into its own group before it can fork much; if the host cannot limit, the
        // deploy was already warned (`limits_unavailable`) and the instance runs anyway.
        let group = spec
            .limits
            .any()
            .then(|| cgroups::group_name(&spec.tag))
            .filter(|group| {
                self.cgroups
                    .confine(group, pid, spec.limits)
                    .map_err(
                        |e| tracing::warn!(instance = %spec.key, "cannot limit the instance: {e}"),
                    )
                    .is_ok()
            });
        Ok(Box::new(ChildProcess {
            child,
            pid,
            stop_signal: stop_signal_of(Some(spec)),
            tracked: Tracked {
                group,
                cgroups: self.cgroups.clone(),
            },
        }))
    }

    async fn find_running(&self) -> Vec<Found> {
        let prefix = self.tag_prefix.clone();
        tokio::task::spawn_blocking(move || proc_scan::tagged_processes(TAG_VARIABLE, &prefix))
            .await
            .unwrap_or_default()
    }

    async fn adopt(&self, found: &Found, launch: Option<&LaunchSpec>) -> Option<Box<dyn Running>> {
        proc_scan::is_alive(found.handle_id).then(|| {
            let group = cgroups::group_name(&found.tag);
            let group = self.cgroups.usage(&group).is_some().then_some(group);
            Box::new(AdoptedProcess {
                pid: found.handle_id,
                stop_signal: stop_signal_of(launch),
                tracked: Tracked {
                    group,
                    cgroups: self.cgroups.clone(),
                },
            }) as Box<dyn Running>
        })
    }

    async fn exec(
        &self,
        spec: &LaunchSpec,
        argv: &[String],
        limit: Duration,
    ) -> Result<wharf_driver::ExecOutput, DriverError> {
        let Some((first, args)) = argv.split_first() else {
            return Err(DriverError::Other("no command to run".into()));
        };
        // The instance's environment, without its tag: a command that outlives its
        // limit must not be taken for the instance at the next scan.
        let mut command = in_instance(spec, first, args)?;
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| DriverError::Start {
            program: first.clone(),
            reason: e.to_string(),
        })?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                DriverError::Other(format!(
                    "`{first}` did not finish within {}s and was killed",
                    limit.as_secs()
                ))
            })?
            .map_err(|e| DriverError::Other(e.to_string()))?;
        let cut = |mut bytes: Vec<u8>| {
            bytes.truncate(wharf_driver::EXEC_OUTPUT_MAX);
            bytes
        };
        Ok(wharf_driver::ExecOutput {
            code: output.status.code(),
            stdout: cut(output.stdout),
            stderr: cut(output.stderr),
        })
    }
}

/// `program args` as the instance `spec` runs: its folder, its user, its environment
/// (and the few variables passed through from the agent's), no input.
fn in_instance(spec: &LaunchSpec, program: &str, args: &[String]) -> Result<Command, DriverError> {
    let (cwd, identity) = where_and_who(spec, program)?;
    let mut command = Command::new(resolve_program(program, &spec.workdir));
    if let Some((uid, gid)) = identity {
        command.uid(uid).gid(gid);
    }
    command
        .args(args)
        .current_dir(&cwd)
        .env_clear()
        .envs(
            INHERITED
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&spec.env)
        .stdin(Stdio::null());
    Ok(command)
}

/// Where an instance (or a command run in it) starts, and as whom: refused with the
/// reason when that user cannot be, or cannot reach the folder.
fn where_and_who(
    spec: &LaunchSpec,
    program: &str,
) -> Result<(PathBuf, Option<(u32, u32)>), DriverError> {
    let refused = |reason: String| DriverError::Start {
        program: program.to_owned(),
        reason,
    };
    let cwd = match &spec.working_dir {
        Some(dir) => spec.workdir.join(dir),
        None => spec.workdir.clone(),
    };
    let Some(user) = spec.user.as_deref() else {
        return Ok((cwd, None));
    };
    let (uid, gid) = identity_of(user).map_err(refused)?;
    let me = nix::unistd::geteuid();
    if !me.is_root() && me.as_raw() != uid {
        return Err(refused(format!(
            "running as `{user}` needs an agent that runs as root"
        )));
    }
    // Its data folder is its own to write.
    if let Some(data) = &spec.data_dir {
        let _ = nix::unistd::chown(
            data,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
    if let Some(blocked) = unreachable_for(&cwd, uid, gid) {
        return Err(refused(format!(
            "`{user}` cannot reach {}: {} is closed to it (make it traversable, `chmod o+x`)",
            cwd.display(),
            blocked.display()
        )));
    }
    Ok((cwd, Some((uid, gid))))
}

/// The first folder on the way to `dir` that `uid`/`gid` may not pass through, if any
/// (what would fail the start with a bare "Permission denied").
fn unreachable_for(dir: &Path, uid: u32, gid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut outermost_first: Vec<&Path> = dir.ancestors().collect();
    outermost_first.reverse();
    outermost_first.into_iter().find_map(|folder| {
        let meta = std::fs::metadata(folder).ok()?;
        let mode = meta.mode();
        let passes = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!passes).then(|| folder.to_owned())
    })
}

/// The uid and gid `user:` names: `UID[:GID]` (the gid defaults to the uid's user's
/// group, else the uid), or a user of this host.
fn identity_of(user: &str) -> Result<(u32, u32), String> {
    use nix::unistd::{Uid, User};
    let numeric = |text: &str| text.parse::<u32>().ok();
    if let Some((uid, gid)) = user.split_once(':') {
        return match (numeric(uid), numeric(gid)) {
            (Some(u), Some(g)) => Ok((u, g)),
            _ => Err(format!("`{user}` is not UID:GID")),
        };
    }
    let found = match numeric(user) {
        Some(uid) => User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or((uid, uid), |u| (uid, u.gid.as_raw())),
        None => User::from_name(user)
            .map_err(|e| format!("cannot look up user `{user}`: {e}"))?
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .ok_or_else(|| format!("there is no user `{user}` on this host"))?,
    };
    Ok(found)
}

fn resolve_program(program: &str, workdir: &Path) -> std::path::PathBuf {
    // `./app` and `bin/app` mean files of the artifact; bare names are looked up on PATH.
    if program.contains('/') && !program.starts_with('/') {
        workdir.join(program)
    } else {
        program.into()
    }
}

/// A process this agent started and can `wait` on.
struct ChildProcess {
    child: Child,
    pid: u32,
    /// What a stop sends first.
    stop_signal: Signal,
    tracked: Tracked,
}

/// The control group an instance runs in, if any: its usage, and its removal at the end.
struct Tracked {
    group: Option<String>,
    cgroups: Arc<Cgroups>,
}

impl Tracked {
    fn usage(&self, pid: u32) -> Option<Usage> {
        match &self.group {
            Some(group) => self.cgroups.usage(group),
            None => wharf_driver::process_usage(pid),
        }
    }

    fn oom_killed(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|group| self.cgroups.oom_killed(group))
    }

    fn ended(&self) {
        if let Some(group) = &self.group {
            self.cgroups.remove(group);
        }
    }
}

#[async_trait]
impl Running for ChildProcess {
    fn handle_id(&self) -> u32 {
        self.pid
    }

    async fn signal(&mut self, signal: &str) -> Result<(), String> {
        signal_group(self.pid, signal)
    }

    fn usage(&self) -> Option<Usage> {
        self.tracked.usage(self.pid)
    }

    async fn wait(&mut self) -> Exit {
        let exit = match self.child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(9)) if self.tracked.oom_killed() => Exit::OutOfMemory,
                    (None, Some(signal)) => Exit::Signal(signal),
                    _ => Exit::Unknown,
                }
            }
            Err(_) => Exit::Unknown,
        };
        self.tracked.ended();
        exit
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        terminate_group(self.pid, self.stop_signal);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            kill_group(self.pid);
            return exit;
        }
        kill_group(self.pid);
        self.wait().await
    }
}

/// A process found running from an earlier agent; not our child, so it is polled.
struct AdoptedProcess {
    pid: u32,
    stop_signal: Signal,
    tracked: Tracked,
}

#[async_trait]
impl Running for AdoptedProcess {
    fn handle_id(&self) -> u32 {
        self.pid
    }

    async fn signal(&mut self, signal: &str) -> Result<(), String> {
        signal_group(self.pid, signal)
    }

    fn usage(&self) -> Option<Usage> {
        self.tracked.usage(self.pid)
    }

    fn started_at_millis(&self) -> Option<i64> {
        proc_scan::start_time_millis(self.pid)
    }

    async fn wait(&mut self) -> Exit {
        while proc_scan::is_alive(self.pid) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.tracked.ended();
        Exit::Unknown
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        terminate_group(self.pid, self.stop_signal);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            kill_group(self.pid);
            self.wait().await;
        }
        kill_group(self.pid);
        Exit::Unknown
    }
}

fn terminate_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// The signal a launch asks a stop to send first: SIGTERM unless it names another.
fn stop_signal_of(launch: Option<&LaunchSpec>) -> Signal {
    launch
        .and_then(|l| l.stop_signal.as_deref())
        .and_then(|name| format!("SIG{name}").parse().ok())
        .unwrap_or(Signal::SIGTERM)
}

/// Kills whatever is left of the group (children that ignored SIGTERM).
fn kill_group(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Sends a named signal to an instance's process group.
fn signal_group(pid: u32, name: &str) -> Result<(), String> {
    let signal: Signal = format!("SIG{name}")
        .parse()
        .map_err(|_| format!("unknown signal `{name}`"))?;
    killpg(Pid::from_raw(pid as i32), signal).map_err(|e| format!("cannot send {name}: {e}"))
}
