//! `wharf dev` in containers: a service's own folder changes while it runs, so it is
//! never made into an image. Each container is created from an empty base image and
//! gets the folder's files copied in before it starts, so a container started again
//! (after a crash, a restart, a recovery) has the folder as it is now; a saved file is
//! copied into the running containers the same way. The engine unpacks the archive
//! itself (`PUT /containers/{id}/archive`): the image needs no `tar`.

use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptions, UploadToContainerOptions};
use futures_util::StreamExt;

/// The empty image dev containers start from: the folder becomes their root, as a
/// wharf artifact becomes an artifact image's.
pub const DEV_BASE_IMAGE: &str = "wharf-dev-base:1";

/// The base image, made on first use (an import of an empty archive: nothing is pulled).
pub(crate) async fn base_image(docker: &Docker) -> Result<String, String> {
    if docker.inspect_image(DEV_BASE_IMAGE).await.is_ok() {
        return Ok(DEV_BASE_IMAGE.to_owned());
    }
    let empty = tar::Builder::new(Vec::new())
        .into_inner()
        .map_err(|e| e.to_string())?;
    let (repo, tag) = DEV_BASE_IMAGE
        .split_once(':')
        .unwrap_or((DEV_BASE_IMAGE, ""));
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(empty.into())), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| format!("cannot make the empty image `wharf dev` starts from: {e}"))?;
    }
    Ok(DEV_BASE_IMAGE.to_owned())
}

/// The whole of `root` as a tar archive, links kept as links.
pub(crate) async fn folder_archive(root: &Path) -> Result<Vec<u8>, String> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", &root)
            .and_then(|()| builder.into_inner())
            .map_err(|e| format!("cannot read `{}`: {e}", root.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Where a synced file's new content lands first, inside the container: the engine
/// unpacks a file by removing the old one and writing the new, so a request in between
/// would find it missing or half written. Each file is unpacked here, then linked (a
/// hard link) over the old name, which leaves only the swap of names between them.
pub const SYNC_STAGING: &str = ".wharf-sync";

/// `files` of `root` (relative paths inside it; a folder with what it holds) as a tar
/// archive, each regular file staged under [`SYNC_STAGING`] and linked into place. A
/// path that climbs out of `root`, or is not there, is an error.
pub(crate) async fn files_archive(root: &Path, files: &[PathBuf]) -> Result<Vec<u8>, String> {
    let root = root.to_owned();
    let files = files.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        for relative in &files {
            if relative.as_os_str().is_empty()
                || !relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(format!(
                    "`{}` is not a path inside the folder",
                    relative.display()
                ));
            }
            let path = root.join(relative);
            // A folder on the way that is a link elsewhere would copy what it points at.
            if let Some(parent) = path.parent()
                && !parent.canonicalize().is_ok_and(|p| p.starts_with(&root))
            {
                return Err(format!("`{}` is not inside the folder", relative.display()));
            }
            add(&mut builder, &root, relative)
                .map_err(|e| format!("cannot read `{}`: {e}", relative.display()))?;
        }
        builder.into_inner().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Adds `relative` (a file, a link, or a folder and what it holds) to `builder`.
fn add(builder: &mut tar::Builder<Vec<u8>>, root: &Path, relative: &Path) -> std::io::Result<()> {
    let path = root.join(relative);
    let meta = std::fs::symlink_metadata(&path)?;
    if meta.is_dir() {
        builder.append_path_with_name(&path, relative)?;
        let mut entries: Vec<_> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for name in entries {
            add(builder, root, &relative.join(name))?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        // A link is copied as the link it is.
        return builder.append_path_with_name(&path, relative);
    }
    let staged = Path::new(SYNC_STAGING).join(relative);
    builder.append_path_with_name(&path, &staged)?;
    let mut header = tar::Header::new_gnu();
    // The engine applies these to the inode both names share: the file's own.
    header.set_metadata(&meta);
    header.set_entry_type(tar::EntryType::Link);
    header.set_size(0);
    builder.append_link(&mut header, relative, &staged)
}

/// Unpacks `archive` at the root of container `name` (running or only created).
pub(crate) async fn upload(docker: &Docker, name: &str, archive: Vec<u8>) -> Result<(), String> {
    let options = UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    docker
        .upload_to_container(name, Some(options), bollard::body_full(archive.into()))
        .await
        .map_err(|e| format!("cannot copy files into container `{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn names(archive: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[tokio::test]
    async fn only_the_changed_files_are_packed_and_nothing_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("www/new")).unwrap();
        std::fs::write(root.join("www/index.html"), "hi").unwrap();
        std::fs::write(root.join("www/new/a.css"), "a").unwrap();
        std::fs::write(root.join("other.txt"), "not asked for").unwrap();
        let archive = super::files_archive(
            &root,
            &[PathBuf::from("www/index.html"), PathBuf::from("www/new")],
        )
        .await
        .unwrap();
        assert_eq!(
            names(&archive),
            [
                ".wharf-sync/www/index.html",
                "www/index.html",
                "www/new",
                ".wharf-sync/www/new/a.css",
                "www/new/a.css",
            ],
            "each file staged, then linked into place"
        );
        for bad in ["../etc/passwd", "/etc/passwd", "", "missing.txt"] {
            assert!(
                super::files_archive(&root, &[PathBuf::from(bad)])
                    .await
                    .is_err(),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink("/etc", root.join("elsewhere")).unwrap();
        let err = super::files_archive(&root, &[PathBuf::from("elsewhere/hostname")])
            .await
            .unwrap_err();
        assert!(err.contains("not inside the folder"), "{err}");
    }
}
