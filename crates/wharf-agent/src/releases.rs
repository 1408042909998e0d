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
        tokio::task::spawn_blocking(move || wharf_artifact::unpack(&bytes, &digest, &target))
            .await
            .map_err(|e| AgentError::Artifact(e.to_string()))?
            .map_err(|e| AgentError::Artifact(e.to_string()))?;
        Ok(dest)
    }
}
