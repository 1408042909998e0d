use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use wharf_api::{ArtifactRecord, ImageRegistration};
use wharf_client::Client;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;
use crate::project::{self, Project};
use crate::table;

pub async fn build(
    global: &Global,
    printer: &Printer,
    service: &str,
    version: &str,
) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let client = crate::connect::controller(global, printer).await?;
    let (record, created) =
        build_and_register(&project, &client, printer, service, Some(version)).await?;
    if printer.json() {
        printer.json_data(&serde_json::json!({ "artifact": record, "created": created }));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a build made: a packed archive, or a Docker image pinned by id.
pub struct Built {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// The archive; `None` for an image, which stays in the local Docker engine.
    pub bytes: Option<Vec<u8>>,
}

/// Runs the service's build step, packs its output (or pins its image) and registers it
/// with the controller. Without a version, the artifact is named after its content:
/// `dev-<digest>`.
pub async fn build_and_register(
    project: &Project,
    client: &Client,
    printer: &Printer,
    service: &str,
    version: Option<&str>,
) -> anyhow::Result<(ArtifactRecord, bool)> {
    let built = build_locally(project, printer, service, version).await?;
    let version = version
        .map(str::to_owned)
        .unwrap_or_else(|| dev_version(&built));
    let uploaded = match built.bytes {
        Some(bytes) => {
            client
                .upload_artifact(service, &version, &built.digest, bytes)
                .await
        }
        None => {
            let registration = ImageRegistration {
                service: service.to_owned(),
                version: version.clone(),
                image_id: built.digest.clone(),
                size: built.size,
            };
            client.register_image(&registration).await
        }
    }
    .map_err(Failure::from)?;
    let what = if uploaded.created {
        "built"
    } else {
        "already built (same content)"
    };
    printer.info(&format!(
        "{what} {service} {version} {} ({})",
        table::short_digest(&built.digest),
        table::size(built.size)
    ));
    Ok((uploaded.artifact, uploaded.created))
}

/// The version name of an unnamed build: its content's digest.
pub fn dev_version(built: &Built) -> String {
    format!("dev-{}", table::short_digest(&built.digest))
}

/// Warns of packed files that look like secrets and are not listed in `include:`.
fn warn_of_secrets(
    printer: &Printer,
    service: &str,
    build: &wharf_core::model::Build,
    found: &[PathBuf],
) {
    let meant: Vec<globset::GlobMatcher> = build
        .include
        .iter()
        .filter_map(|p| globset::Glob::new(p).ok())
        .map(|g| g.compile_matcher())
        .collect();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|f| !meant.iter().any(|m| m.is_match(f)))
        .map(|f| format!("`{}`", f.display()))
        .collect();
    if unexpected.is_empty() {
        return;
    }
    printer.info(&format!(
        "{} the artifact of `{service}` holds files that look like secrets: {}; list them in `{}` to keep them out, or in `build: {{ include: [...] }}` if they belong (use `wharf secret set` for real secrets)",
        printer.paint("warning:", crate::printer::Tone::Warn),
        unexpected.join(", "),
        wharf_artifact::WHARF_IGNORE,
    ));
}

/// Runs the build step and packs the result (or looks the image up), registering nothing.
pub async fn build_locally(
    project: &Project,
    printer: &Printer,
    service: &str,
    version: Option<&str>,
) -> anyhow::Result<Built> {
    let svc = project.definition.service(service).map_err(Failure::from)?;
    let Some(build) = &svc.build else {
        let image = svc.image.clone().unwrap_or_default();
        let (digest, size) = wharf_driver_docker::image_id(&image).await.map_err(|e| {
            let hint = if e.starts_with("cannot reach the Docker engine") {
                "is the Docker engine running? wharf talks to DOCKER_HOST, else /var/run/docker.sock"
            } else {
                "wharf pins the image that is on this host; with a registry, pull it here first"
            };
            Failure::operation(e).hint(hint)
        })?;
        return Ok(Built {
            digest,
            size,
            bytes: None,
        });
    };
    if let Some(command) = &build.command {
        let context = project.dir.join(&build.context);
        printer.info(&format!("building {service}: {}", command.join(" ")));
        // The build's own output is a message, not data: it goes to stderr.
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        let status = std::process::Command::new(&command[0])
            .args(&command[1..])
            .current_dir(&context)
            .env("WHARF_SERVICE", service)
            .env("WHARF_VERSION", version.unwrap_or("dev"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr))
            .status()
            .map_err(|e| {
                Failure::operation(format!(
                    "cannot run the build command of `{service}` (`{}`): {e}",
                    command[0]
                ))
            })?;
        if !status.success() {
            return Err(Failure::operation(format!(
                "the build command of `{service}` failed ({status})"
            ))
            .hint("its output is above")
            .into());
        }
    }
    let output = project.dir.join(&build.output);
    if !output.is_dir() {
        return Err(Failure::operation(format!(
            "build output `{}` of `{service}` is not a folder",
            output.display()
        ))
        .into());
    }
    // The definition carries configuration, and configuration is never packed; nor
    // are the controller's state folder and master keyring, wherever they are.
    let inside_output = |path: &std::path::Path| -> Option<PathBuf> {
        let path = std::path::absolute(path).ok()?;
        let output = std::path::absolute(&output).ok()?;
        path.strip_prefix(output).ok().map(PathBuf::from)
    };
    let state_dir = Some(crate::project::state_dir_of(&project.file));
    let key_file = std::env::var_os("WHARF_MASTER_KEY_FILE").map(PathBuf::from);
    let exclude: Vec<PathBuf> = [Some(project.file.clone()), state_dir, key_file]
        .into_iter()
        .flatten()
        .filter_map(|p| inside_output(&p))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let packed =
        tokio::task::spawn_blocking(move || wharf_artifact::pack(&output, &exclude)).await??;
    warn_of_secrets(printer, service, build, &packed.likely_secrets);
    Ok(Built {
        digest: packed.digest.to_string(),
        size: packed.bytes.len() as u64,
        bytes: Some(packed.bytes),
    })
}

use std::os::fd::AsFd;
