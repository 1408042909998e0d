//! The docker driver: each instance is a container on the host's Docker engine
//! (`/var/run/docker.sock` or `DOCKER_HOST`), created from an image pinned by id. wharf
//! owns restarts (the container has no restart policy), health checks and logs (the
//! container's output is appended to the instance's log file); containers carry labels
//! naming their instance, by which a restarted agent finds them again.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;

mod gateway;
mod source;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
pub use source::DEV_BASE_IMAGE;
use wharf_driver::{Driver, DriverError, Exit, Found, LaunchSpec, Running};

/// The label holding an instance's tag.
pub const TAG_LABEL: &str = "wharf.tag";
/// The label naming the service of a container or of an image wharf made.
pub const SERVICE_LABEL: &str = "wharf.service";
/// Where a container finds its configuration as files: one file per key, and all of
/// them in `config.env`.
pub const CONFIG_MOUNT: &str = "/run/wharf/config";

/// The label recording when wharf made an image (Unix nanoseconds, zero-padded).
pub const CREATED_LABEL: &str = "wharf.created";

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Artifact images kept per service: the current version and the previous one.
pub const RETAINED_IMAGES: usize = 2;

pub struct DockerDriver {
    docker: Docker,
    tag_prefix: String,
}

/// The container name of an instance tag (Docker names allow `[a-zA-Z0-9_.-]`).
pub fn container_name(tag: &str) -> String {
    let safe: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("wharf-{safe}")
}

fn failed(program: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::Start {
        program: program.to_owned(),
        reason: e.to_string(),
    }
}

impl DockerDriver {
    /// A driver for the engine at `DOCKER_HOST` or the local socket. Connecting is lazy:
    /// a daemon that is down shows up as a clear error when an instance starts.
    pub fn connect(tag_prefix: impl Into<String>) -> Result<Self, String> {
        let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
        Ok(Self {
            docker,
            tag_prefix: tag_prefix.into(),
        })
    }

    /// An image made from an unpacked wharf artifact: the folder becomes the image's root
    /// filesystem (as `FROM scratch` would), so it suits self-contained programs such as
    /// statically linked binaries. Tagged by the artifact's digest (the folder's name), it
    /// is made once per digest.
    async fn artifact_image(
        &self,
        folder: &std::path::Path,
        service: &str,
    ) -> Result<String, DriverError> {
        let digest = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tag: String = digest.chars().take(12).collect();
        let image = format!("wharf-artifact:{tag}");
        if self.docker.inspect_image(&image).await.is_ok() {
            return Ok(image);
        }
        let root = folder.to_owned();
        let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &root)?;
            builder.into_inner()
        })
        .await
        .map_err(|e| failed(&image, e))?
        .map_err(|e| failed(&image, format!("cannot pack `{}`: {e}", folder.display())))?;
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some("wharf-artifact".into()),
            tag: Some(tag),
            // The engine's creation time has one-second steps; this orders quick builds.
            changes: vec![format!(
                "LABEL {SERVICE_LABEL}={service} {CREATED_LABEL}={:020}",
                now_nanos()
            )],
            ..Default::default()
        };
        let mut progress =
            self.docker
                .create_image(Some(options), Some(bollard::body_full(tar.into())), None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| {
                failed(
                    &image,
                    format!("cannot import the artifact as an image: {e}"),
                )
            })?;
        }
        self.retain(service).await;
        Ok(image)
    }

    /// Keeps the [`RETAINED_IMAGES`] newest artifact images of a service (the current
    /// version and the one before, for a fast rollback) and removes older ones. An image
    /// still in use is left alone.
    /// Pulls a pinned image the host lacks, with the service's registry credentials,
    /// and insists on getting exactly the pinned image.
    async fn pull(&self, pinned: &str, pull: &wharf_driver::ImagePull) -> Result<(), DriverError> {
        use futures_util::StreamExt;
        let credentials = pull
            .username
            .as_ref()
            .map(|username| bollard::auth::DockerCredentials {
                username: Some(username.clone()),
                password: pull.password.clone(),
                serveraddress: registry_of(&pull.reference),
                ..Default::default()
            });
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(pull.reference.clone()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                let hint = if pull.username.is_some() {
                    "check the service's secrets WHARF_REGISTRY_USERNAME and WHARF_REGISTRY_PASSWORD"
                } else {
                    "a private registry needs the secrets WHARF_REGISTRY_USERNAME and WHARF_REGISTRY_PASSWORD (`wharf secret set`); or load the image on this host"
                };
                return Err(failed(
                    &pull.reference,
                    format!(
                        "the image is not on this host and wharf cannot pull it: {} ({hint})",
                        pull_error(e)
                    ),
                ));
            }
        }
        let pulled = self
            .docker
            .inspect_image(&pull.reference)
            .await
            .map_err(|e| failed(&pull.reference, e))?
            .id
            .unwrap_or_default();
        if pulled != pinned {
            return Err(failed(
                &pull.reference,
                format!(
                    "the registry now has another image under this name ({pulled}), not the one that was built ({pinned}); refusing it"
                ),
            ));
        }
        Ok(())
    }

    async fn retain(&self, service: &str) {
        let filters = [(
            "label".to_owned(),
            vec![format!("{SERVICE_LABEL}={service}")],
        )]
        .into_iter()
        .collect();
        let options = ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let Ok(mut images) = self.docker.list_images(Some(options)).await else {
            return;
        };
        images.sort_by_key(|i| {
            std::cmp::Reverse((
                i.labels.get(CREATED_LABEL).cloned().unwrap_or_default(),
                i.created,
            ))
        });
        for old in images.into_iter().skip(RETAINED_IMAGES) {
            if let Err(e) = self
                .docker
                .remove_image(&old.id, None::<RemoveImageOptions>, None)
                .await
            {
                tracing::debug!("keeping image {}: {e}", old.id);
            }
        }
    }

    async fn running(&self, name: &str) -> Option<Box<dyn Running>> {
        let inspect = self.docker.inspect_container(name, None).await.ok()?;
        let state = inspect.state?;
        if state.running != Some(true) {
            return None;
        }
        let pid = state.pid.unwrap_or(0).max(0) as u32;
        let started_at = state.started_at.as_deref().and_then(unix_millis);
        Some(Box::new(Container {
            docker: self.docker.clone(),
            name: name.to_owned(),
            pid,
            started_at,
        }))
    }
}

/// The id of a local image and its size; the image is never pulled.
pub async fn image_id(reference: &str) -> Result<(String, u64), String> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
    let image = docker.inspect_image(reference).await.map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => format!(
            "image `{reference}` is not on this host: `wharf build` pins the image it finds here (pull, build or load it first)"
        ),
        other => format!("cannot inspect image `{reference}`: {other}"),
    })?;
    let id = image
        .id
        .ok_or_else(|| format!("image `{reference}` has no id"))?;
    Ok((id, image.size.unwrap_or(0).max(0) as u64))
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn Running>, DriverError> {
        let image = match &spec.image {
            Some(image) => image.clone(),
            // `wharf dev`: the folder is copied in below, as it is now.
            None if spec.from_source => source::base_image(&self.docker)
                .await
                .map_err(|e| failed(source::DEV_BASE_IMAGE, e))?,
            None => {
                self.artifact_image(&spec.workdir, &spec.key.service)
                    .await?
            }
        };
        let name = container_name(&spec.tag);
        // A container of an earlier run of this instance is in the way: it is over.
        let _ = remove(&self.docker, &name).await;
        let port = spec.env.get("PORT").cloned();
        // With `port: { container: N }` the container listens on its own N, published on
        // the instance's port; inside, PORT says N.
        let inside = spec
            .container_port
            .map(|n| n.to_string())
            .or_else(|| port.clone());
        let mut spec_env = spec.env.clone();
        if let (Some(inside), Some(_)) = (&inside, &port) {
            spec_env.insert("PORT".into(), inside.clone());
        }
        // Every other port the same way: (the container's port, the host's).
        let mut others: Vec<(String, String)> = Vec::new();
        for (variable, host, container) in &spec.extra_ports {
            let inside = container.unwrap_or(*host).to_string();
            spec_env.insert(variable.clone(), inside.clone());
            others.push((format!("{inside}/tcp"), host.to_string()));
        }
        // No WHARF_TAG in the environment: that marks processes of the process driver,
        // which would otherwise claim the container's process as its own.
        let env: Vec<String> = spec_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels: HashMap<String, String> = [
            (TAG_LABEL.to_owned(), spec.tag.clone()),
            (SERVICE_LABEL.to_owned(), spec.key.service.clone()),
            ("wharf.env".to_owned(), spec.key.env.clone()),
            ("wharf.instance".to_owned(), spec.key.instance.to_string()),
            (
                "wharf.version".to_owned(),
                spec.env.get("WHARF_VERSION").cloned().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .collect();
        let published = port
            .as_ref()
            .and(inside.as_ref())
            .map(|p| format!("{p}/tcp"));
        let config_dir = write_config_files(spec)
            .map_err(|e| failed(&image, format!("cannot write the configuration files: {e}")))?;
        let mut binds = vec![format!("{}:{CONFIG_MOUNT}:ro", config_dir.display())];
        // The instance's data folder, at the path `WHARF_DATA_DIR` names.
        if let Some(data) = &spec.data_dir {
            binds.push(format!("{0}:{0}", data.display()));
        }
        // Its volumes: named ones are made by the engine on first use.
        for (source, inside) in &spec.volumes {
            binds.push(format!("{source}:{inside}"));
        }
        let host_config = HostConfig {
            binds: Some(binds),
            port_bindings: {
                let bindings: HashMap<String, Option<Vec<PortBinding>>> = published
                    .iter()
                    .map(|key| (key.clone(), port.clone()))
                    .chain(
                        others
                            .iter()
                            .map(|(key, host)| (key.clone(), Some(host.clone()))),
                    )
                    .map(|(key, host)| {
                        let binding = PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: host,
                        };
                        (key, Some(vec![binding]))
                    })
                    .collect();
                (!bindings.is_empty()).then_some(bindings)
            },
            nano_cpus: (spec.limits.cpu_millis > 0)
                .then(|| (spec.limits.cpu_millis * 1_000_000) as i64),
            memory: (spec.limits.memory_bytes > 0).then_some(spec.limits.memory_bytes as i64),
            // An init process as PID 1 passes SIGTERM on, so `stop` is graceful even for
            // programs that install no signal handler (PID 1 ignores unhandled signals).
            init: Some(true),
            // A name for the host the container runs on (its bridge gateway), where the
            // agent's service addresses and configuration gateway also listen.
            extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: (!spec.argv.is_empty()).then(|| spec.argv.clone()),
            // `entrypoint: []` clears the image's (the engine wants `[""]` for that).
            entrypoint: spec.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    vec![String::new()]
                } else {
                    e.clone()
                }
            }),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: {
                let exposed: Vec<String> = published
                    .into_iter()
                    .chain(others.iter().map(|(key, _)| key.clone()))
                    .collect();
                (!exposed.is_empty()).then_some(exposed)
            },
            host_config: Some(host_config),
            // `docker stop` sends it first (the image's own when none is given).
            stop_signal: spec.stop_signal.as_ref().map(|s| format!("SIG{s}")),
            working_dir: spec.working_dir.as_ref().map(|d| d.display().to_string()),
            user: spec.user.clone(),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let mut created = self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await;
        // The host lacks the image: pull it (only then, so a start costs no extra call).
        if let (
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }),
            Some(pull),
            Some(pinned),
        ) = (&created, &spec.pull, &spec.image)
        {
            self.pull(pinned, pull).await?;
            created = self.docker.create_container(Some(options), body).await;
        }
        created.map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => failed(
                    &image,
                    "the image is not on this host (build or load it here, or give its registry credentials as secrets)",
                ),
                other => failed(&image, other),
            })?;
        if spec.from_source {
            let copied = match source::folder_archive(&spec.workdir).await {
                Ok(archive) => source::upload(&self.docker, &name, archive).await,
                Err(e) => Err(e),
            };
            if let Err(e) = copied {
                let _ = remove(&self.docker, &name).await;
                return Err(failed(&image, e));
            }
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            let _ = remove(&self.docker, &name).await;
            return Err(failed(&image, e));
        }
        pump_logs(self.docker.clone(), name.clone(), spec.log_path.clone());
        let pid = self
            .docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|i| i.state?.pid)
            .unwrap_or(0)
            .max(0) as u32;
        Ok(Box::new(Container {
            docker: self.docker.clone(),
            name,
            pid,
            started_at: None,
        }))
    }

    async fn copy_in(
        &self,
        spec: &LaunchSpec,
        files: &[std::path::PathBuf],
    ) -> Result<(), DriverError> {
        if !spec.from_source {
            return Err(DriverError::Other(
                "only containers of `wharf dev` take files; a release's are its image's".into(),
            ));
        }
        let archive = source::files_archive(&spec.workdir, files)
            .await
            .map_err(DriverError::Other)?;
        source::upload(&self.docker, &container_name(&spec.tag), archive)
            .await
            .map_err(DriverError::Other)
    }

    async fn find_running(&self) -> Vec<Found> {
        let filters = [("label".to_owned(), vec![TAG_LABEL.to_owned()])]
            .into_iter()
            .collect();
        let options = ListContainersOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return Vec::new();
        };
        containers
            .into_iter()
            .filter_map(|c| {
                let tag = c.labels?.get(TAG_LABEL)?.clone();
                tag.starts_with(&self.tag_prefix)
                    .then_some(Found { tag, handle_id: 0 })
            })
            .collect()
    }

    async fn adopt(&self, found: &Found, launch: Option<&LaunchSpec>) -> Option<Box<dyn Running>> {
        let name = container_name(&found.tag);
        let running = self.running(&name).await?;
        if let Some(launch) = launch {
            // Only what is new: the log file already holds what came before.
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i32)
                .unwrap_or(0);
            pump_logs_since(self.docker.clone(), name, launch.log_path.clone(), since);
        }
        Some(running)
    }

    async fn host_address(&self) -> Option<std::net::IpAddr> {
        let bridge = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| tracing::debug!("cannot read the engine's bridge network: {e}"))
            .ok()?;
        gateway::bridge_gateway(&bridge)
    }

    async fn remove_volumes(&self, prefix: &str) -> Result<usize, DriverError> {
        let failed = |e: bollard::errors::Error| DriverError::Other(format!("docker volumes: {e}"));
        let listed = self
            .docker
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .map_err(failed)?;
        let mut removed = 0;
        for volume in listed.volumes.unwrap_or_default() {
            if volume.name.starts_with(prefix) {
                self.docker
                    .remove_volume(
                        &volume.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await
                    .map_err(failed)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn exec(
        &self,
        spec: &LaunchSpec,
        argv: &[String],
        limit: Duration,
    ) -> Result<wharf_driver::ExecOutput, DriverError> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let name = container_name(&spec.tag);
        let failed = |e: bollard::errors::Error| DriverError::Other(format!("docker exec: {e}"));
        // The container's own environment, user and working directory apply.
        let created = self
            .docker
            .create_exec(
                &name,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(failed)?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let collect = async {
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(failed)?
            {
                while let Some(chunk) = output.next().await {
                    let (into, bytes) = match chunk.map_err(failed)? {
                        LogOutput::StdOut { message } => (&mut stdout, message),
                        LogOutput::StdErr { message } => (&mut stderr, message),
                        _ => continue,
                    };
                    let room = wharf_driver::EXEC_OUTPUT_MAX.saturating_sub(into.len());
                    into.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            Ok::<(), DriverError>(())
        };
        tokio::time::timeout(limit, collect).await.map_err(|_| {
            DriverError::Other(format!(
                "the command did not finish within {}s (it may still run in the container)",
                limit.as_secs()
            ))
        })??;
        let inspected = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(failed)?;
        Ok(wharf_driver::ExecOutput {
            code: inspected.exit_code.map(|c| c as i32),
            stdout,
            stderr,
        })
    }
}

/// The registry host of a reference (`registry.example.com/a/b:t`), if it names one.
fn registry_of(reference: &str) -> Option<String> {
    let first = reference.split('/').next()?;
    (reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then(|| first.to_owned())
}

/// The engine's message of a failed pull, without its plumbing.
fn pull_error(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        bollard::errors::Error::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

/// Writes an instance's rendered configuration as files beside its log (owner-only):
/// `KEY` holding the value, and `config.env` with `KEY=value` lines.
fn write_config_files(spec: &LaunchSpec) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = spec.log_path.with_extension("config");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let write = |name: &str, text: &str| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(name))?;
        file.write_all(text.as_bytes())
    };
    let mut all = String::new();
    // Secrets stay off the disk: containers get them as environment variables only.
    for (key, value) in spec
        .env
        .iter()
        .filter(|(k, _)| !spec.secret_keys.contains(k))
    {
        // Only names that are safe as file names become files; all are in config.env.
        if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            write(key, value)?;
        }
        all.push_str(&format!("{key}={value}\n"));
    }
    write("config.env", &all)?;
    Ok(dir)
}

/// Removes a container, running or not.
async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
}

/// Appends a container's output to the instance's log file while it runs.
fn pump_logs(docker: Docker, name: String, path: std::path::PathBuf) {
    pump_logs_since(docker, name, path, 0);
}

/// Like [`pump_logs`], from `since` (Unix seconds; 0 for everything).
fn pump_logs_since(docker: Docker, name: String, path: std::path::PathBuf, since: i32) {
    tokio::spawn(async move {
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            since,
            ..Default::default()
        };
        let mut stream = docker.logs(&name, Some(options));
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        else {
            return;
        };
        let mut times = wharf_driver::log_times::TimeIndex::default();
        while let Some(Ok(chunk)) = stream.next().await {
            let offset = file.metadata().map(|m| m.len()).unwrap_or(0);
            times.before_write(&path, offset);
            let _ = file.write_all(&chunk.into_bytes());
        }
    });
}

struct Container {
    docker: Docker,
    name: String,
    pid: u32,
    /// When the container started (Unix milliseconds), as the engine says.
    started_at: Option<i64>,
}

/// Unix milliseconds of an RFC 3339 time such as the engine's `StartedAt`.
fn unix_millis(rfc3339: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z')).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

#[async_trait]
impl Running for Container {
    fn handle_id(&self) -> u32 {
        self.pid
    }

    async fn signal(&mut self, signal: &str) -> Result<(), String> {
        let options = bollard::query_parameters::KillContainerOptions {
            signal: format!("SIG{signal}"),
        };
        self.docker
            .kill_container(&self.name, Some(options))
            .await
            .map_err(|e| format!("cannot send {signal} to container `{}`: {e}", self.name))
    }

    fn started_at_millis(&self) -> Option<i64> {
        self.started_at
    }

    /// The container's main process, seen from the host.
    fn usage(&self) -> Option<wharf_driver::Usage> {
        // The container's whole control group; its main process alone where the group
        // cannot be read.
        (self.pid > 0)
            .then(|| {
                wharf_driver::cgroup_usage(self.pid)
                    .or_else(|| wharf_driver::process_usage(self.pid))
            })
            .flatten()
    }

    async fn wait(&mut self) -> Exit {
        let mut stream = self
            .docker
            .wait_container(&self.name, None::<WaitContainerOptions>);
        let exit = match stream.next().await {
            Some(Ok(r)) => Exit::Code(r.status_code as i32),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                Exit::Code(code as i32)
            }
            _ => Exit::Unknown,
        };
        // The engine knows whether the kernel killed it for its memory limit.
        let oom_killed = self
            .docker
            .inspect_container(&self.name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|state| state.oom_killed)
            .unwrap_or(false);
        let exit = if oom_killed { Exit::OutOfMemory } else { exit };
        // Its output is in the instance's log already; a restart makes a new container.
        let _ = remove(&self.docker, &self.name).await;
        exit
    }

    async fn stop(&mut self, grace: Duration) -> Exit {
        let options = StopContainerOptions {
            t: Some(grace.as_secs().max(1) as i32),
            ..Default::default()
        };
        let _ = self.docker.stop_container(&self.name, Some(options)).await;
        let exit = tokio::time::timeout(Duration::from_secs(5), self.wait())
            .await
            .unwrap_or(Exit::Unknown);
        let _ = remove(&self.docker, &self.name).await;
        exit
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn engine_times_and_names() {
        assert_eq!(super::unix_millis("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            super::container_name("ab:prod/api/web-1/0"),
            "wharf-ab_prod_api_web-1_0"
        );
    }
}
