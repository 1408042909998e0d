//! Reproducibility, integrity and path-traversal safety of artifacts.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use wharf_artifact::{
    ArtifactDigest, ArtifactError, UnpackLimits, check_limits, pack, unpack, unpack_with,
};

fn write(root: &Path, rel: &str, body: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
}

#[test]
fn same_files_give_the_same_digest_whatever_their_mtimes_and_creation_order() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (rel, body) in [
        ("app.py", "print(1)"),
        ("lib/util.py", "x = 1"),
        ("static/index.html", "<p>"),
    ] {
        write(a.path(), rel, body);
    }
    for (rel, body) in [
        ("static/index.html", "<p>"),
        ("lib/util.py", "x = 1"),
        ("app.py", "print(1)"),
    ] {
        write(b.path(), rel, body);
    }
    let old = SystemTime::now() - Duration::from_secs(86_400 * 400);
    fs::File::options()
        .write(true)
        .open(b.path().join("app.py"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        pack(a.path(), &[]).unwrap().digest,
        pack(b.path(), &[]).unwrap().digest
    );

    write(b.path(), "app.py", "print(2)");
    assert_ne!(
        pack(a.path(), &[]).unwrap().digest,
        pack(b.path(), &[]).unwrap().digest
    );
}

#[test]
fn the_executable_bit_survives_and_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "run.sh", "#!/bin/sh\n");
    let plain = pack(dir.path(), &[]).unwrap();
    fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let exec = pack(dir.path(), &[]).unwrap();
    assert_ne!(plain.digest, exec.digest);
    let out = tempfile::tempdir().unwrap();
    unpack(&exec.bytes, &exec.digest, &out.path().join("x")).unwrap();
    let mode = fs::metadata(out.path().join("x/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
}

#[test]
fn roundtrip_and_excluded_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", "hi");
    write(dir.path(), "wharf.yaml", "secret: config");
    write(dir.path(), ".wharf/state.db", "state");
    symlink("app.py", dir.path().join("main.py")).unwrap();
    let packed = pack(dir.path(), &["wharf.yaml".into()]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("unpacked");
    unpack(&packed.bytes, &packed.digest, &dest).unwrap();
    assert_eq!(fs::read_to_string(dest.join("main.py")).unwrap(), "hi");
    assert!(
        !dest.join("wharf.yaml").exists(),
        "configuration is never packed"
    );
    assert!(!dest.join(".wharf").exists());
}

#[test]
fn links_pointing_outside_are_refused_when_packing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", "hi");
    symlink("../../etc/passwd", dir.path().join("evil")).unwrap();
    assert!(matches!(
        pack(dir.path(), &[]),
        Err(ArtifactError::Escapes { .. })
    ));
    fs::remove_file(dir.path().join("evil")).unwrap();
    symlink("/etc/passwd", dir.path().join("evil")).unwrap();
    assert!(matches!(
        pack(dir.path(), &[]),
        Err(ArtifactError::Escapes { .. })
    ));
}

/// Builds an archive by hand, as an attacker would, with raw header paths.
fn hostile_archive(path: &str, link: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    {
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
    }
    header.set_mode(0o644);
    match link {
        Some(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_link_name(target).unwrap();
            header.set_size(0);
        }
        None => header.set_size(4),
    }
    header.set_cksum();
    let data: &[u8] = if link.is_some() { b"" } else { b"evil" };
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn archives_escaping_the_folder_are_refused_when_unpacking() {
    let out = tempfile::tempdir().unwrap();
    for (path, link) in [
        ("../escape.txt", None),
        ("/tmp/abs.txt", None),
        ("ok/../../x", None),
        ("link", Some("../../outside")),
        ("abs", Some("/etc")),
    ] {
        let bytes = hostile_archive(path, link);
        let digest = ArtifactDigest::of(&bytes);
        let dest = out.path().join("dest");
        let err = unpack(&bytes, &digest, &dest).unwrap_err();
        assert!(
            matches!(err, ArtifactError::Escapes { .. }),
            "{path}: {err}"
        );
        assert!(!dest.exists(), "nothing is left behind for {path}");
    }
    assert!(!out.path().join("escape.txt").exists());
}

#[test]
fn a_digest_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", "1");
    let packed = pack(dir.path(), &[]).unwrap();
    let wrong = ArtifactDigest::of(b"other");
    let out = tempfile::tempdir().unwrap();
    let err = unpack(&packed.bytes, &wrong, &out.path().join("d")).unwrap_err();
    assert!(matches!(err, ArtifactError::DigestMismatch { .. }));
}

/// The paths an archive holds.
fn listing(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn wharfignore_is_honoured_and_state_folders_and_keys_are_always_left_out() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", "print(1)");
    write(dir.path(), ".wharfignore", "*.log\n.venv/\n");
    write(dir.path(), "debug.log", "noise");
    write(dir.path(), ".venv/bin/python", "");
    write(dir.path(), "lib/.wharfignore", "scratch.txt\n");
    write(dir.path(), "lib/scratch.txt", "");
    write(dir.path(), "lib/util.py", "x = 1");
    // A controller's state folder under another name (WHARF_HOME inside the project).
    write(dir.path(), "state/state.db", "db");
    write(dir.path(), "state/pki/ca.key", "secret");
    write(dir.path(), ".git/config", "");
    write(dir.path(), "master.keys", "keys");
    let packed = pack(dir.path(), &[]).unwrap();
    assert_eq!(listing(&packed.bytes), ["app.py", "lib", "lib/util.py"]);

    // What was ignored does not change the digest.
    write(dir.path(), "other.log", "more noise");
    write(dir.path(), "state/state.db", "changed");
    assert_eq!(pack(dir.path(), &[]).unwrap().digest, packed.digest);
}

#[test]
fn likely_secrets_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", "");
    write(dir.path(), ".env", "PASSWORD=x");
    write(dir.path(), "certs/server.pem", "");
    write(dir.path(), "id_ed25519", "");
    write(dir.path(), "id_ed25519.pub", "");
    let packed = pack(dir.path(), &[]).unwrap();
    let found: Vec<String> = packed
        .likely_secrets
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(found, [".env", "certs/server.pem", "id_ed25519"]);
}

/// An archive of several raw entries: (path, symlink target or file bytes).
fn hostile_entries(entries: &[(&str, Result<&str, &[u8]>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, what) in entries {
        let mut header = tar::Header::new_gnu();
        {
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
        }
        header.set_mode(0o644);
        let data: &[u8] = match what {
            Ok(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_link_name(target).unwrap();
                b""
            }
            Err(bytes) => bytes,
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_chain_of_symlinks_cannot_lead_a_file_out() {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("release").join("dest");
    // Each link looks inside on its own; through each other they climb out.
    let bytes = hostile_entries(&[
        ("x/y", Ok("..")),
        ("x/y/z", Ok("..")),
        ("x/y/z/pwned", Err(b"evil")),
    ]);
    let err = unpack(&bytes, &ArtifactDigest::of(&bytes), &dest).unwrap_err();
    assert!(matches!(err, ArtifactError::Escapes { .. }), "{err}");
    assert!(
        err.to_string().contains("goes through the symlink"),
        "{err}"
    );
    assert!(!out.path().join("pwned").exists());
    assert!(!out.path().join("release/pwned").exists());
    assert!(!dest.exists());
}

#[test]
fn decompression_bombs_stop_at_the_limits() {
    let out = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let big = hostile_entries(&[("big.bin", Err(zeros.as_slice()))]);
    assert!(big.len() < 64 * 1024, "it compresses well");
    let limits = UnpackLimits {
        total_bytes: 8 * 1024 * 1024,
        entries: 10,
        entry_bytes: 1024 * 1024,
    };
    let dest = out.path().join("a");
    let err = unpack_with(&big, &ArtifactDigest::of(&big), &dest, &limits).unwrap_err();
    assert!(matches!(err, ArtifactError::TooLarge(_)), "{err}");
    assert!(!dest.exists());
    assert!(matches!(
        check_limits(&big, &limits),
        Err(ArtifactError::TooLarge(_))
    ));

    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let many: Vec<(&str, Result<&str, &[u8]>)> =
        names.iter().map(|n| (n.as_str(), Err(&b"x"[..]))).collect();
    let many = hostile_entries(&many);
    let err = check_limits(&many, &limits).unwrap_err();
    assert!(err.to_string().contains("more than 10 entries"), "{err}");
    // Within the limits all is well.
    assert!(check_limits(&many, &UnpackLimits::default()).is_ok());
}
