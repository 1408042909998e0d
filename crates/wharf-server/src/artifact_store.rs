//! The controller's artifact files: `<state>/artifacts/<hex>.tar.gz`, written atomically
//! and only after their digest has been checked. Controllers sharing a store keep each
//! archive in it too, so whichever leads serves every artifact (its folder is a cache).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_store::Store;

use wharf_artifact::ArtifactDigest;

use crate::error::ServerError;

pub struct ArtifactStore {
    dir: PathBuf,
    /// The store the controllers share, when they do.
    shared: Option<Arc<dyn Store>>,
}

impl ArtifactStore {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, shared: None })
    }

    /// Keeps archives in `store` too when several controllers share it.
    pub fn shared_through(mut self, store: Arc<dyn Store>) -> Self {
        if store.shares_files() {
            self.shared = Some(store);
        }
        self
    }

    fn shared_name(digest: &ArtifactDigest) -> String {
        format!("artifacts/{}", digest.hex())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &ArtifactDigest) -> PathBuf {
        self.dir.join(format!("{}.tar.gz", digest.hex()))
    }

    /// Verifies `bytes` against `claimed` and stores them.
    pub fn put(&self, claimed: &str, bytes: &[u8]) -> Result<ArtifactDigest, ServerError> {
        let claimed: ArtifactDigest = claimed.parse().map_err(ServerError::bad_request)?;
        let actual = ArtifactDigest::of(bytes);
        if actual != claimed {
            return Err(ServerError::bad_request(format!(
                "upload is corrupt: its digest is {actual}, not {claimed}"
            ))
            .hint("build and upload again"));
        }
        if let Some(store) = &self.shared {
            // Kept for every controller before it is acknowledged.
            store.put_shared_file(&Self::shared_name(&actual), bytes)?;
        }
        self.write(&actual, bytes)?;
        Ok(actual)
    }

    fn write(&self, actual: &ArtifactDigest, bytes: &[u8]) -> Result<(), ServerError> {
        let path = self.path(actual);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{}.partial", actual.hex()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            ServerError::internal(format!("cannot store artifact `{}`: {e}", path.display()))
        })
    }

    /// The archive bytes of a digest.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, ServerError> {
        let digest: ArtifactDigest = digest.parse().map_err(ServerError::bad_request)?;
        if let Ok(bytes) = std::fs::read(self.path(&digest)) {
            return Ok(bytes);
        }
        let missing = || ServerError::not_found(format!("no artifact with digest {digest}"));
        let store = self.shared.as_ref().ok_or_else(missing)?;
        let bytes = store
            .shared_file(&Self::shared_name(&digest))?
            .ok_or_else(missing)?;
        if ArtifactDigest::of(&bytes) != digest {
            return Err(ServerError::internal(format!(
                "the copy of artifact {digest} in the database is corrupt"
            )));
        }
        // Cached here for the next time; serving does not wait on it succeeding.
        let _ = self.write(&digest, &bytes);
        Ok(bytes)
    }
}
