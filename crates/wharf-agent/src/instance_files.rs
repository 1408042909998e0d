//! The files of `files:` written into an instance's data folder: before every start and
//! before a reload signal, each replaced whole (a reader never sees half a file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Writes `files` (relative path -> text) under `dir`, each text passed through
/// `place` (which fills in the placeholders only the agent can).
pub fn write(
    dir: &Path,
    files: &BTreeMap<String, String>,
    place: &dyn Fn(&str) -> String,
) -> Result<(), String> {
    for (relative, text) in files {
        // The controller checked the names; a name that would leave the folder is refused
        // here again all the same.
        if let Some(problem) = wharf_core::files::instance_file_problem(relative) {
            return Err(format!("file {problem}"));
        }
        let path = dir.join(relative);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        let text = place(text);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = parent.join(format!(".{name}.wharf-new"));
        let written = std::fs::File::create(&temp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        // Readable by the instance's own user, whoever that is inside a container.
        set_mode(&temp, 0o644);
        written
            .and_then(|_| std::fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                format!("cannot write {}: {e}", path.display())
            })?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_in_the_folder_with_its_path_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("nginx.conf".to_owned(), "pid ${D}/nginx.pid;".to_owned()),
            ("conf.d/a.conf".to_owned(), "x".to_owned()),
        ]
        .into_iter()
        .collect();
        let folder = dir.path().display().to_string();
        write(dir.path(), &files, &|t: &str| t.replace("${D}", &folder)).unwrap();
        let conf = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
        assert_eq!(conf, format!("pid {}/nginx.pid;", dir.path().display()));
        assert!(dir.path().join("conf.d/a.conf").is_file());
    }

    #[test]
    fn a_name_leaving_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = [("../escape".to_owned(), "x".to_owned())]
            .into_iter()
            .collect();
        assert!(write(dir.path(), &files, &|t: &str| t.to_owned()).is_err());
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }
}
