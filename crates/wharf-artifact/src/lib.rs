//! Artifacts: a folder packed into a reproducible, gzip-compressed tar archive named by the
//! sha256 of its bytes.
//!
//! Reproducible means the same files give the same digest whatever their mtimes, owners
//! or order on disk: entries are sorted, and every header is normalised (mtime 0, uid and
//! gid 0, mode 0644 or 0755). Paths that would escape the unpack folder are refused both
//! when packing and when unpacking, so a hand-made archive cannot write outside.

mod digest;
mod pack;
mod unpack;

pub use digest::ArtifactDigest;
pub use pack::{Packed, WHARF_IGNORE, looks_secret, pack};
pub use unpack::{UnpackLimits, check_limits, unpack, unpack_with};

use std::path::PathBuf;

/// Why an artifact could not be packed, verified or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a folder")]
    NotAFolder { path: PathBuf },
    #[error("entry `{entry}` would escape the artifact folder")]
    Escapes { entry: String },
    #[error("entry `{entry}` is a {kind}; artifacts hold only files, folders and symlinks")]
    UnsupportedEntry { entry: String, kind: String },
    #[error("artifact is corrupt: {0}")]
    Corrupt(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        expected: ArtifactDigest,
        actual: ArtifactDigest,
    },
    /// Unpacking would pass a limit (a decompression bomb, or an artifact far larger
    /// than a service needs).
    #[error("the artifact is too large: {0}")]
    TooLarge(String),
}
