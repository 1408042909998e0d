//! The controller's artifact files: `<state>/artifacts/<hex>.tar.gz`, written atomically
//! and only after their digest has been checked.

use std::path::{Path, PathBuf};

use wharf_artifact::ArtifactDigest;

use crate::error::ServerError;

pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
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
        let path = self.path(&actual);
        if path.exists() {
            return Ok(actual);
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
        })?;
        Ok(actual)
    }

    /// The archive bytes of a digest.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, ServerError> {
        let digest: ArtifactDigest = digest.parse().map_err(ServerError::bad_request)?;
        std::fs::read(self.path(&digest))
            .map_err(|_| ServerError::not_found(format!("no artifact with digest {digest}")))
    }
}
