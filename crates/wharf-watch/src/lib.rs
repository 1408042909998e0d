//! The folder watcher of `wharf dev`: changes under a service's folder, debounced into
//! batches (notify-debouncer-full, which pairs an editor's write-to-temp-then-rename
//! into a change of the file saved), without what `.gitignore`, `.wharfignore` and the
//! defaults (`.git`, `target`, `node_modules`, `__pycache__`) leave out. An overflow of
//! the kernel's event queue is a [`Batch::Rescan`]: the caller compares the folder with
//! what it last synced ([`snapshot`]) rather than trust events that were lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Folders no service's files are in, whatever the ignore files say.
pub const IGNORED_BY_DEFAULT: &[&str] = &[".git", "target", "node_modules", "__pycache__"];

/// The ignore file of wharf's own, beside `.gitignore` (same syntax).
pub const WHARF_IGNORE: &str = ".wharfignore";

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "the system's limit of watched folders (fs.inotify.max_user_watches) is reached while watching {0}"
    )]
    Limit(PathBuf),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("{path}: {message}")]
    IgnoreFile { path: PathBuf, message: String },
}

impl WatchError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Limit(_) => Some(
                "raise it: `sudo sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/ to keep it), or ignore big folders in .wharfignore".into(),
            ),
            Self::IgnoreFile { .. } => Some("fix the pattern on that line".into()),
            Self::Watch { .. } => None,
        }
    }
}

/// What changed since the last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Paths relative to the folder, sorted, once each: written, made or removed.
    Changed(Vec<PathBuf>),
    /// Events were lost: compare the whole folder.
    Rescan,
    /// The watcher failed; what it said.
    Failed(String),
}

/// Which paths of a folder are not the service's files.
pub struct Ignore {
    root: PathBuf,
    rules: Gitignore,
    /// Folders below the root left out besides (a build's output).
    also: Vec<PathBuf>,
}

impl Ignore {
    /// The rules of `root`: its `.gitignore` and `.wharfignore`, and the defaults.
    pub fn for_folder(root: &Path) -> Result<Self, WatchError> {
        let mut builder = GitignoreBuilder::new(root);
        for file in [".gitignore", WHARF_IGNORE] {
            let path = root.join(file);
            if path.is_file()
                && let Some(e) = builder.add(&path)
            {
                return Err(WatchError::IgnoreFile {
                    path,
                    message: e.to_string(),
                });
            }
        }
        let rules = builder.build().map_err(|e| WatchError::IgnoreFile {
            path: root.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            root: root.to_owned(),
            rules,
            also: Vec::new(),
        })
    }

    /// Leaves out `folders` (absolute) as well.
    pub fn and(mut self, folders: &[PathBuf]) -> Self {
        self.also.extend(folders.iter().cloned());
        self
    }

    /// Whether `path` (absolute, or relative to the folder) is left out. A path
    /// outside the folder is.
    pub fn ignored(&self, path: &Path) -> bool {
        let relative = if path.is_absolute() {
            match path.strip_prefix(&self.root) {
                Ok(relative) => relative,
                Err(_) => return true,
            }
        } else {
            path
        };
        if self
            .also
            .iter()
            .any(|a| self.root.join(relative).starts_with(a))
        {
            return true;
        }
        if relative.components().any(|c| {
            IGNORED_BY_DEFAULT
                .iter()
                .any(|d| c.as_os_str() == std::ffi::OsStr::new(d))
        }) {
            return true;
        }
        let is_dir = self.root.join(relative).is_dir();
        self.rules
            .matched_path_or_any_parents(relative, is_dir)
            .is_ignore()
    }
}

/// A folder being watched; dropping it stops the watching.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    batches: tokio::sync::mpsc::UnboundedReceiver<Batch>,
}

impl Watch {
    /// The next batch of changes; `None` once the watcher has stopped.
    pub async fn next(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }
}

/// Watches `root` (recursively), batching changes that come within `debounce` of
/// each other; nothing below the `ignored` folders is reported.
pub fn watch(root: &Path, debounce: Duration, ignored: &[PathBuf]) -> Result<Watch, WatchError> {
    let ignore = Ignore::for_folder(root)?.and(ignored);
    let (send, batches) = tokio::sync::mpsc::unbounded_channel();
    let root_owned = root.to_owned();
    let handler = move |result: DebounceEventResult| {
        let batch = match result {
            Ok(events) if events.iter().any(|e| e.need_rescan()) => Batch::Rescan,
            Ok(events) => {
                let mut paths: Vec<PathBuf> = Vec::new();
                for event in events.iter().filter(|e| !e.kind.is_access()) {
                    for path in event.paths.iter().filter(|p| !ignore.ignored(p)) {
                        if path.is_dir() {
                            // A folder made (or moved in) holds files written before
                            // its own watch was set: they are found by looking.
                            if event.kind.is_create() || event.kind.is_modify() {
                                paths.extend(files_below(path, &ignore));
                            }
                        } else {
                            paths.push(path.clone());
                        }
                    }
                }
                let mut paths: Vec<PathBuf> = paths
                    .iter()
                    .filter_map(|p| p.strip_prefix(&root_owned).ok().map(Path::to_path_buf))
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect();
                paths.sort();
                paths.dedup();
                if paths.is_empty() {
                    return;
                }
                Batch::Changed(paths)
            }
            Err(errors) => Batch::Failed(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let _ = send.send(batch);
    };
    let mut debouncer =
        new_debouncer(debounce, None, handler).map_err(|source| WatchError::Watch {
            path: root.to_owned(),
            source,
        })?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(|source| match source.kind {
            notify::ErrorKind::MaxFilesWatch => WatchError::Limit(root.to_owned()),
            _ => WatchError::Watch {
                path: root.to_owned(),
                source,
            },
        })?;
    Ok(Watch {
        _debouncer: debouncer,
        batches,
    })
}

/// The files below `dir` the rules keep, as absolute paths.
fn files_below(dir: &Path, ignore: &Ignore) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if ignore.ignored(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) => files.push(path),
                Err(_) => {}
            }
        }
    }
    files
}

/// What a file looked like: enough to tell it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// Every file of `root` the ignore rules keep (and not below `ignored`), relative to
/// it, with its stamp.
pub fn snapshot(root: &Path, ignored: &[PathBuf]) -> Result<BTreeMap<PathBuf, Stamp>, WatchError> {
    let ignore = Ignore::for_folder(root)?.and(ignored);
    Ok(files_below(root, &ignore)
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            let relative = path.strip_prefix(root).ok()?.to_owned();
            Some((
                relative,
                Stamp {
                    len: meta.len(),
                    modified: meta.modified().ok(),
                },
            ))
        })
        .collect())
}

/// The paths that differ between two snapshots: changed, added or removed.
pub fn differences(
    before: &BTreeMap<PathBuf, Stamp>,
    after: &BTreeMap<PathBuf, Stamp>,
) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(*stamp))
        .map(|(path, _)| path.clone())
        .chain(
            before
                .keys()
                .filter(|path| !after.contains_key(*path))
                .cloned(),
        )
        .collect();
    changed.sort();
    changed
}
