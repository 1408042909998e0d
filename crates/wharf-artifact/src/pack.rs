use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::{ArtifactDigest, ArtifactError};

/// Names never packed: wharf's own state, its master keyring, version-control data.
const ALWAYS_EXCLUDED: &[&str] = &[".wharf", ".git", "__pycache__", "master.keys", WHARF_IGNORE];

/// The file (gitignore syntax) listing what a folder keeps out of its artifacts.
pub const WHARF_IGNORE: &str = ".wharfignore";

/// Files in a folder that mark it as a wharf state folder (a controller's or an
/// agent's), wherever it is: never packed, whatever it is called.
const STATE_MARKERS: &[&str] = &["controller.lock", "state.db", "master.keys"];

/// A packed archive, in memory.
#[derive(Debug, Clone)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub digest: ArtifactDigest,
    /// Packed files whose names suggest secrets (`.env`, `*.pem`, `*.key`, `id_*`),
    /// relative to the folder; the caller warns about those not meant to be there.
    pub likely_secrets: Vec<PathBuf>,
}

/// Whether a file name suggests a secret: `.env` files, keys and certificates' keys.
pub fn looks_secret(name: &str) -> bool {
    name == ".env"
        || name.starts_with(".env.")
        || name.ends_with(".pem")
        || name.ends_with(".key")
        // Private SSH keys (`id_ed25519`), not their `.pub` halves.
        || (name.starts_with("id_") && !name.contains('.'))
}

/// Packs `folder` reproducibly. `exclude` names files (relative to `folder`) to leave out,
/// such as the definition file itself when it lives inside the folder.
pub fn pack(folder: &Path, exclude: &[PathBuf]) -> Result<Packed, ArtifactError> {
    if !folder.is_dir() {
        return Err(ArtifactError::NotAFolder {
            path: folder.to_owned(),
        });
    }
    let mut entries = collect(folder, exclude)?;
    entries.sort();
    let likely_secrets = entries
        .iter()
        .filter(|e| {
            e.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(looks_secret)
                && fs::symlink_metadata(folder.join(e)).is_ok_and(|m| m.is_file())
        })
        .cloned()
        .collect();

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
        likely_secrets,
    })
}

/// Every entry under `root` to pack, relative to it: `.wharfignore` files are
/// honoured (gitignore syntax, in every folder), and wharf's own state never goes in.
fn collect(root: &Path, exclude: &[PathBuf]) -> Result<Vec<PathBuf>, ArtifactError> {
    let owned_root = root.to_owned();
    let excluded: Vec<PathBuf> = exclude.iter().map(|e| root.join(e)).collect();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(WHARF_IGNORE)
        .filter_entry(move |entry| {
            let name = entry.file_name();
            if ALWAYS_EXCLUDED.iter().any(|x| name == *x) {
                return false;
            }
            let path = entry.path();
            if excluded.iter().any(|e| e == path) {
                return false;
            }
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && path != owned_root && STATE_MARKERS.iter().any(|m| path.join(m).exists()))
        })
        .build();
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| ArtifactError::Read {
            path: root.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if entry.depth() == 0 {
            continue;
        }
        if let Ok(relative) = entry.path().strip_prefix(root) {
            out.push(relative.to_owned());
        }
    }
    Ok(out)
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
