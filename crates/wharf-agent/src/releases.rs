//! Unpacked artifacts on this host: each digest is fetched and unpacked once.

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::Mutex;
use wharf_artifact::ArtifactDigest;

use crate::AgentError;

/// Where the agent gets artifact bytes from (the controller's artifact store).
#[async_trait]
pub trait ArtifactSource: Send + Sync {
    async fn fetch(&self, digest: &ArtifactDigest) -> Result<Vec<u8>, String>;
}

/// Reads artifacts from a local folder of `<hex>.tar.gz` files.
pub struct FolderSource(pub PathBuf);

#[async_trait]
impl ArtifactSource for FolderSource {
    async fn fetch(&self, digest: &ArtifactDigest) -> Result<Vec<u8>, String> {
        let path = self.0.join(format!("{}.tar.gz", digest.hex()));
        tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read artifact `{}`: {e}", path.display()))
    }
}

/// The folder of unpacked releases.
pub struct Releases {
    root: PathBuf,
    source: Box<dyn ArtifactSource>,
    unpacking: Mutex<()>,
}

impl Releases {
    pub fn new(root: PathBuf, source: Box<dyn ArtifactSource>) -> Self {
        Self {
            root,
            source,
            unpacking: Mutex::new(()),
        }
    }

    /// The folder holding the unpacked artifact, unpacking it first if needed.
    pub async fn prepare(&self, digest: &str) -> Result<PathBuf, AgentError> {
        let digest: ArtifactDigest = digest.parse().map_err(AgentError::Artifact)?;
        let dest = self.root.join(digest.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        let _one_at_a_time = self.unpacking.lock().await;
        if dest.is_dir() {
            return Ok(dest);
        }
        let bytes = self
            .source
            .fetch(&digest)
            .await
            .map_err(AgentError::Artifact)?;
        let target = dest.clone();
        tokio::task::spawn_blocking(move || {
            wharf_artifact::unpack(&bytes, &digest, &target).map_err(|e| e.to_string())?;
            // Shared by every instance of the digest in every environment: none may
            // change it for the others (data goes to each instance's own folder).
            read_only(&target)
                .map_err(|e| format!("cannot make {} read-only: {e}", target.display()))
        })
        .await
        .map_err(|e| AgentError::Artifact(e.to_string()))?
        .map_err(AgentError::Artifact)?;
        Ok(dest)
    }
}

/// Takes the write bits off every file and folder under `dir` (symbolic links are
/// left as they are, and not followed).
fn read_only(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![dir.to_owned()];
    let mut folders = Vec::new();
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & !0o222;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            folders.push((path, mode));
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    for (path, mode) in folders.into_iter().rev() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
