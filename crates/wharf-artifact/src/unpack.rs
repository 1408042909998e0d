use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use crate::pack::link_stays_inside;
use crate::{ArtifactDigest, ArtifactError};

/// How much an artifact may unpack to: generous for real services, small enough that a
/// decompression bomb stops early.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// All files together, in bytes.
    pub total_bytes: u64,
    /// Entries (files, folders, links).
    pub entries: u64,
    /// One file, in bytes.
    pub entry_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            total_bytes: 4 << 30,
            entries: 100_000,
            entry_bytes: 2 << 30,
        }
    }
}

/// Verifies `bytes` against `expected` and unpacks them into `dest`, which must not exist
/// yet, within the default [`UnpackLimits`].
pub fn unpack(bytes: &[u8], expected: &ArtifactDigest, dest: &Path) -> Result<(), ArtifactError> {
    unpack_with(bytes, expected, dest, &UnpackLimits::default())
}

/// Reads an archive through without writing anything, refusing it if unpacking it would
/// pass `limits` or escape its folder: the controller checks uploads so.
pub fn check_limits(bytes: &[u8], limits: &UnpackLimits) -> Result<(), ArtifactError> {
    let corrupt = |e: std::io::Error| ArtifactError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut budget = Budget::new(limits);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        check_path(&path)?;
        budget.entry()?;
        if entry.header().entry_type() == tar::EntryType::Regular {
            let copied = std::io::copy(
                &mut (&mut entry).take(limits.entry_bytes + 1),
                &mut std::io::sink(),
            )
            .map_err(corrupt)?;
            budget.bytes(&path, copied)?;
        }
    }
    Ok(())
}

/// What is left of the limits while an archive is read.
struct Budget<'l> {
    limits: &'l UnpackLimits,
    entries: u64,
    bytes: u64,
}

impl<'l> Budget<'l> {
    fn new(limits: &'l UnpackLimits) -> Self {
        Self {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    fn entry(&mut self) -> Result<(), ArtifactError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(ArtifactError::TooLarge(format!(
                "more than {} entries",
                self.limits.entries
            )));
        }
        Ok(())
    }

    fn bytes(&mut self, path: &Path, size: u64) -> Result<(), ArtifactError> {
        if size > self.limits.entry_bytes {
            return Err(ArtifactError::TooLarge(format!(
                "`{}` is over {} bytes",
                path.display(),
                self.limits.entry_bytes
            )));
        }
        self.bytes += size;
        if self.bytes > self.limits.total_bytes {
            return Err(ArtifactError::TooLarge(format!(
                "its files are over {} bytes together",
                self.limits.total_bytes
            )));
        }
        Ok(())
    }
}

/// Refuses entry paths that are absolute or climb out.
fn check_path(path: &Path) -> Result<(), ArtifactError> {
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ArtifactError::Escapes {
            entry: path.to_string_lossy().into_owned(),
        });
    }
    Ok(())
}

/// Refuses an entry whose path goes through a symlink unpacked before it (a chain of
/// links could otherwise lead out of the folder), or that would replace one.
fn check_not_through_links(into: &Path, path: &Path) -> Result<(), ArtifactError> {
    let mut at = into.to_path_buf();
    for component in path.components() {
        at.push(component);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ArtifactError::Escapes {
                entry: format!(
                    "{} (it goes through the symlink `{}`)",
                    path.display(),
                    at.strip_prefix(into).unwrap_or(&at).display()
                ),
            });
        }
    }
    Ok(())
}

/// Like [`unpack`], with the given limits. The archive is unpacked into a sibling
/// temporary folder and renamed into place, so `dest` either holds the whole artifact or
/// does not exist.
pub fn unpack_with(
    bytes: &[u8],
    expected: &ArtifactDigest,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<(), ArtifactError> {
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
    extract(bytes, staging.path(), limits)?;
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

fn extract(bytes: &[u8], into: &Path, limits: &UnpackLimits) -> Result<(), ArtifactError> {
    let corrupt = |e: std::io::Error| ArtifactError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(GzDecoder::new(bytes));
    let mut budget = Budget::new(limits);
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let name = path.to_string_lossy().into_owned();
        check_path(&path)?;
        budget.entry()?;
        check_not_through_links(into, &path)?;
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
                // Streamed to disk, never whole in memory, and cut off at the limit.
                let mut file = fs::File::create(&target).map_err(write_err)?;
                let copied =
                    std::io::copy(&mut (&mut entry).take(limits.entry_bytes + 1), &mut file)
                        .map_err(corrupt)?;
                budget.bytes(&path, copied)?;
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
