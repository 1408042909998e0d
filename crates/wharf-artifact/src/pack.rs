use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::{ArtifactDigest, ArtifactError};

/// Folder names never packed: wharf's own state and version-control data.
const ALWAYS_EXCLUDED: &[&str] = &[".wharf", ".git", "__pycache__"];

/// A packed archive, in memory.
#[derive(Debug, Clone)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub digest: ArtifactDigest,
}

/// Packs `folder` reproducibly. `exclude` names files (relative to `folder`) to leave out,
/// such as the definition file itself when it lives inside the folder.
pub fn pack(folder: &Path, exclude: &[PathBuf]) -> Result<Packed, ArtifactError> {
    if !folder.is_dir() {
        return Err(ArtifactError::NotAFolder {
            path: folder.to_owned(),
        });
    }
    let mut entries = Vec::new();
    collect(folder, Path::new(""), exclude, &mut entries)?;
    entries.sort();

    let writer = HashingWriter {
        inner: Vec::new(),
        hasher: Sha256::new(),
    };
    // mtime 0 and no file name in the gzip header keep the bytes reproducible.
    let gz = GzBuilder::new().mtime(0).write(writer, Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for relative in &entries {
        append(&mut tar, folder, relative)?;
    }
    let write_err = |source| ArtifactError::Write {
        path: PathBuf::from("<archive>"),
        source,
    };
    let gz = tar.into_inner().map_err(write_err)?;
    let writer = gz.finish().map_err(write_err)?;
    Ok(Packed {
        bytes: writer.inner,
        digest: ArtifactDigest::from_hasher(writer.hasher),
    })
}

fn collect(
    root: &Path,
    relative: &Path,
    exclude: &[PathBuf],
    out: &mut Vec<PathBuf>,
) -> Result<(), ArtifactError> {
    let dir = root.join(relative);
    let read_err = |source| ArtifactError::Read {
        path: dir.clone(),
        source,
    };
    for entry in fs::read_dir(&dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let child = relative.join(&name);
        if ALWAYS_EXCLUDED.iter().any(|x| name == *x) || exclude.contains(&child) {
            continue;
        }
        let kind = entry.file_type().map_err(read_err)?;
        out.push(child.clone());
        if kind.is_dir() {
            collect(root, &child, exclude, out)?;
        }
    }
    Ok(())
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    relative: &Path,
) -> Result<(), ArtifactError> {
    let path = root.join(relative);
    let read_err = |source| ArtifactError::Read {
        path: path.clone(),
        source,
    };
    let write_err = |source| ArtifactError::Write {
        path: path.clone(),
        source,
    };
    let meta = fs::symlink_metadata(&path).map_err(read_err)?;
    let entry = relative.to_string_lossy().into_owned();
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path).map_err(read_err)?;
        if !link_stays_inside(relative, &target) {
            return Err(ArtifactError::Escapes {
                entry: format!("{entry} -> {}", target.display()),
            });
        }
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        tar.append_link(&mut header, relative, &target)
            .map_err(write_err)
    } else if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        tar.append_data(&mut header, relative, io::empty())
            .map_err(write_err)
    } else if meta.is_file() {
        let executable = meta.permissions().mode() & 0o111 != 0;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_size(meta.len());
        let file = fs::File::open(&path).map_err(read_err)?;
        tar.append_data(&mut header, relative, file)
            .map_err(write_err)
    } else {
        Err(ArtifactError::UnsupportedEntry {
            entry,
            kind: "special file".into(),
        })
    }
}

/// Whether a symlink at `entry` pointing to `target` resolves inside the artifact.
pub(crate) fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

struct HashingWriter {
    inner: Vec<u8>,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.inner.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
