//! Finding and loading the definition file, and where the project's state lives.

use std::path::{Path, PathBuf};

use wharf_core::{Definition, FolderCheck};

use crate::cli::Global;
use crate::failure::Failure;

pub const DEFINITION_FILE: &str = "wharf.yaml";

/// A loaded, validated definition and where it came from.
pub struct Project {
    /// The definition file.
    pub file: PathBuf,
    /// The folder holding it; build paths are relative to it.
    pub dir: PathBuf,
    pub definition: Definition,
    /// The file's text, as the controller is sent it.
    pub text: String,
    /// The files it refers to (env files, file templates), sent with it: path as
    /// written -> text.
    pub files: std::collections::BTreeMap<String, String>,
}

/// The definition file: `-f`, else wharf.yaml in the current folder or a parent.
pub fn find_file(global: &Global) -> Result<PathBuf, Failure> {
    if let Some(file) = &global.file {
        if !file.is_file() {
            return Err(Failure::input(format!(
                "definition file `{}` does not exist",
                file.display()
            )));
        }
        return Ok(file.clone());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::input(format!("cannot read the current folder: {e}")))?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(DEFINITION_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Failure::input(format!(
        "no {DEFINITION_FILE} in `{}` or any parent folder",
        cwd.display()
    ))
    .hint("run wharf inside a project, or pass the file with `-f path/to/wharf.yaml`"))
}

/// The definition's folder on disk; remembers each file it was asked to read, so the
/// controller is sent exactly those.
struct DiskFolders<'a> {
    dir: &'a Path,
    read: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

/// The largest env file or template read.
const MAX_REFERRED_FILE: u64 = 1024 * 1024;

impl FolderCheck for DiskFolders<'_> {
    fn is_folder(&self, relative: &str) -> bool {
        self.dir.join(relative).is_dir()
    }

    fn read_file(&self, relative: &str) -> Result<String, String> {
        let path = self.dir.join(relative);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if size > MAX_REFERRED_FILE {
            return Err(format!(
                "{} is {size} bytes; at most {MAX_REFERRED_FILE} are read",
                path.display()
            ));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.read
            .borrow_mut()
            .insert(relative.to_owned(), text.clone());
        Ok(text)
    }
}

/// Finds, reads and validates the definition.
pub fn load(global: &Global) -> anyhow::Result<Project> {
    let file = find_file(global)?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Failure::input(format!("cannot read `{}`: {e}", file.display())))?;
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let shown = display_path(&file);
    let folders = DiskFolders {
        dir: &dir,
        read: Default::default(),
    };
    let definition = wharf_core::load(&text, &shown, &folders)?;
    let files = folders.read.into_inner();
    Ok(Project {
        file,
        dir,
        definition,
        text,
        files,
    })
}

/// The path as the user should read it: relative to the current folder when inside it.
pub fn display_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| absolute.strip_prefix(cwd).ok().map(Path::to_owned))
    {
        Some(relative) if !relative.as_os_str().is_empty() => relative.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// Where the local controller keeps state: WHARF_HOME, else `.wharf/` beside wharf.yaml.
pub fn state_dir(global: &Global) -> Result<PathBuf, Failure> {
    if let Some(home) = std::env::var_os("WHARF_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let file = find_file(global).map_err(|e| e.hint("wharf keeps a project's state beside its wharf.yaml; set WHARF_HOME to keep it elsewhere"))?;
    Ok(state_dir_of(&file))
}

/// The local controller's state folder of the project whose definition is `file`.
pub fn state_dir_of(file: &Path) -> PathBuf {
    if let Some(home) = std::env::var_os("WHARF_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    dir.join(".wharf")
}
