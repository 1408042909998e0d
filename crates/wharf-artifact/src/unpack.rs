use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use crate::pack::link_stays_inside;
use crate::{ArtifactDigest, ArtifactError};

/// Verifies `bytes` against `expected` and unpacks them into `dest`, which must not exist
/// yet. The archive is unpacked into a sibling temporary folder and renamed into place,
/// so `dest` either holds the whole artifact or does not exist.
pub fn unpack(bytes: &[u8], expected: &ArtifactDigest, dest: &Path) -> Result<(), ArtifactError> {
    let actual = ArtifactDigest::of(bytes);
    if &actual != expected {
        return Err(ArtifactError::DigestMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let write_err = |source| ArtifactError::Write {
        path: dest.to_owned(),
        source,
    };
    fs::create_dir_all(parent).map_err(write_err)?;
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(write_err)?;
    extract(bytes, staging.path())?;
    let staged = staging.keep();
    if let Err(source) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        // Another unpacker of the same digest won the race: its copy is identical.
        if dest.is_dir() {
            return Ok(());
        }
        return Err(ArtifactError::Write {
            path: dest.to_owned(),
            source,
        });
    }
    Ok(())
}

fn extract(bytes: &[u8], into: &Path) -> Result<(), ArtifactError> {
    let corrupt = |e: std::io::Error| ArtifactError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let name = path.to_string_lossy().into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ArtifactError::Escapes { entry: name });
        }
        let target = into.join(&path);
        let write_err = |source| ArtifactError::Write {
            path: target.clone(),
            source,
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&target).map_err(write_err)?,
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(write_err)?;
                }
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(corrupt)?;
                fs::write(&target, data).map_err(write_err)?;
                let mode = entry.header().mode().map_err(corrupt)? & 0o755;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(write_err)?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name().map_err(corrupt)?.ok_or_else(|| {
                    ArtifactError::Corrupt(format!("symlink `{name}` has no target"))
                })?;
                if !link_stays_inside(&path, &link) {
                    return Err(ArtifactError::Escapes {
                        entry: format!("{name} -> {}", link.display()),
                    });
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(write_err)?;
                }
                std::os::unix::fs::symlink(&link, &target).map_err(write_err)?;
            }
            other => {
                return Err(ArtifactError::UnsupportedEntry {
                    entry: name,
                    kind: format!("{other:?}").to_lowercase(),
                });
            }
        }
    }
    Ok(())
}
