use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use wharf_api::ArtifactRecord;
use wharf_artifact::Packed;
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

/// Runs the service's build step, packs its output and registers it with the controller.
/// Without a version, the artifact is named after its content: `dev-<digest>`.
pub async fn build_and_register(
    project: &Project,
    client: &Client,
    printer: &Printer,
    service: &str,
    version: Option<&str>,
) -> anyhow::Result<(ArtifactRecord, bool)> {
    let packed = build_locally(project, printer, service, version).await?;
    let version = version
        .map(str::to_owned)
        .unwrap_or_else(|| dev_version(&packed));
    let size = packed.bytes.len() as u64;
    let digest = packed.digest.to_string();
    let uploaded = client
        .upload_artifact(service, &version, &digest, packed.bytes)
        .await
        .map_err(Failure::from)?;
    let what = if uploaded.created {
        "built"
    } else {
        "already built (same content)"
    };
    printer.info(&format!(
        "{what} {service} {version} {} ({})",
        table::short_digest(&digest),
        table::size(size)
    ));
    Ok((uploaded.artifact, uploaded.created))
}

/// The version name of an unnamed build: its content's digest.
pub fn dev_version(packed: &Packed) -> String {
    format!("dev-{}", &packed.digest.hex()[..12])
}

/// Runs the build step and packs the result, without registering it.
pub async fn build_locally(
    project: &Project,
    printer: &Printer,
    service: &str,
    version: Option<&str>,
) -> anyhow::Result<Packed> {
    let svc = project.definition.service(service).map_err(Failure::from)?;
    if let Some(command) = &svc.build.command {
        let context = project.dir.join(&svc.build.context);
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
    let output = project.dir.join(&svc.build.output);
    if !output.is_dir() {
        return Err(Failure::operation(format!(
            "build output `{}` of `{service}` is not a folder",
            output.display()
        ))
        .into());
    }
    // The definition carries configuration, and configuration is never packed.
    let exclude: Vec<PathBuf> = std::path::absolute(&project.file)
        .ok()
        .and_then(|f| {
            std::path::absolute(&output)
                .ok()
                .and_then(|o| f.strip_prefix(o).ok().map(PathBuf::from))
        })
        .into_iter()
        .collect();
    let packed =
        tokio::task::spawn_blocking(move || wharf_artifact::pack(&output, &exclude)).await??;
    Ok(packed)
}

use std::os::fd::AsFd;
