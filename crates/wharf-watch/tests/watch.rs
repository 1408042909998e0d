//! The watcher on real folders: plain writes, an editor's atomic save, ignored paths,
//! and a checkout's worth of files at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wharf_watch::{Batch, Watch, differences, snapshot, watch};

const DEBOUNCE: Duration = Duration::from_millis(20);

/// Every path the watcher reports until `want` are all seen (or 10 s pass).
async fn seen_until(watcher: &mut Watch, want: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want.is_subset(&seen) {
        let batch = tokio::time::timeout_at(deadline, watcher.next()).await;
        match batch {
            Ok(Some(Batch::Changed(paths))) => seen.extend(paths),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("app.py"), "print('v1')\n").unwrap();
    dir
}

#[tokio::test]
async fn a_plain_write_is_one_change_of_that_file() {
    let dir = folder();
    let mut watcher = watch(dir.path(), DEBOUNCE, &[]).unwrap();
    std::fs::write(dir.path().join("app.py"), "print('v2')\n").unwrap();
    let seen = seen_until(&mut watcher, &set(&["app.py"])).await;
    assert_eq!(seen, set(&["app.py"]));
}

#[tokio::test]
async fn an_editors_write_to_temp_then_rename_is_a_change_of_the_saved_file() {
    let dir = folder();
    let mut watcher = watch(dir.path(), DEBOUNCE, &[]).unwrap();
    let temp = dir.path().join(".app.py.swp");
    std::fs::write(&temp, "print('v2')\n").unwrap();
    std::fs::rename(&temp, dir.path().join("app.py")).unwrap();
    let seen = seen_until(&mut watcher, &set(&["app.py"])).await;
    assert!(seen.contains(Path::new("app.py")), "{seen:?}");
}

#[tokio::test]
async fn ignored_paths_are_never_reported() {
    let dir = folder();
    std::fs::write(dir.path().join(".gitignore"), "*.log\n").unwrap();
    std::fs::write(dir.path().join(".wharfignore"), "scratch/\n").unwrap();
    for d in ["node_modules", "__pycache__", "scratch", ".git"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let mut watcher = watch(dir.path(), DEBOUNCE, &[]).unwrap();
    for f in [
        "node_modules/x.js",
        "__pycache__/app.cpython.pyc",
        "scratch/notes",
        ".git/index",
        "debug.log",
    ] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    // Written last: once it is seen, the others had their chance.
    std::fs::write(dir.path().join("src/kept.py"), "x").unwrap();
    let seen = seen_until(&mut watcher, &set(&["src/kept.py"])).await;
    assert_eq!(seen, set(&["src/kept.py"]));
}

#[tokio::test]
async fn five_thousand_files_changed_at_once_are_all_reported() {
    let dir = folder();
    let mut watcher = watch(dir.path(), DEBOUNCE, &[]).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..5000 {
        let rel = format!("src/m{:02}/f{i}.py", i % 50);
        std::fs::create_dir_all(dir.path().join(&rel).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(&rel), format!("{i}\n")).unwrap();
        want.insert(PathBuf::from(rel));
    }
    let seen = seen_until(&mut watcher, &want).await;
    assert!(
        want.is_subset(&seen),
        "{} of 5000 seen",
        want.intersection(&seen).count()
    );
}

#[test]
fn a_snapshot_tells_what_changed_while_nobody_watched() {
    let dir = folder();
    std::fs::write(dir.path().join("src/old.py"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join("target/built"), "x").unwrap();
    let before = snapshot(dir.path(), &[]).unwrap();
    assert!(!before.contains_key(Path::new("target/built")));
    std::fs::write(dir.path().join("app.py"), "print('a longer v2')\n").unwrap();
    std::fs::remove_file(dir.path().join("src/old.py")).unwrap();
    std::fs::write(dir.path().join("src/new.py"), "x").unwrap();
    let after = snapshot(dir.path(), &[]).unwrap();
    assert_eq!(
        differences(&before, &after),
        ["app.py", "src/new.py", "src/old.py"]
            .map(PathBuf::from)
            .to_vec()
    );
}

#[tokio::test]
async fn a_build_output_inside_the_folder_is_left_out() {
    let dir = folder();
    let output = dir.path().join("dist");
    std::fs::create_dir_all(&output).unwrap();
    let mut watcher = watch(dir.path(), DEBOUNCE, std::slice::from_ref(&output)).unwrap();
    std::fs::write(output.join("bundle.js"), "x").unwrap();
    std::fs::write(dir.path().join("src/main.js"), "x").unwrap();
    let seen = seen_until(&mut watcher, &set(&["src/main.js"])).await;
    assert_eq!(seen, set(&["src/main.js"]));
}
