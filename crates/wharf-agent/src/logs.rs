//! Instance log files: rotation by size, and reading the last lines.
//!
//! Instances write to their log file directly (opened for append), so they keep logging
//! while no agent runs. Rotation therefore copies and truncates instead of renaming.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Rotates a log above this size.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated copies kept: `x.log.1` (newest) .. `x.log.3`.
pub const KEPT_ROTATIONS: u32 = 3;

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` if it is larger than `max_bytes`; returns whether it did.
pub fn rotate_if_needed(path: &Path, max_bytes: u64, keep: u32) -> io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= max_bytes {
        return Ok(false);
    }
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    fs::copy(path, rotated(path, 1))?;
    File::options().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Lines wharf writes into an instance's log start with this.
pub const MARKER: &str = "--- wharf: ";

/// Appends a marker line (`--- wharf: started v2 (deployment #3) ---`), so a log that
/// spans several processes shows where each begins.
pub fn mark(path: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut file) = File::options().create(true).append(true).open(path) {
        let _ = writeln!(file, "{MARKER}{text} ---");
    }
}

/// The last `lines` lines written since the last marker.
pub fn tail_of_last_run(path: &Path, lines: usize) -> String {
    let all = tail(path, 1000);
    let run: Vec<&str> = all
        .lines()
        .rev()
        .take_while(|l| !l.starts_with(MARKER))
        .take(lines)
        .collect();
    run.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The last `lines` lines of a log file (empty if it does not exist).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn rotation_keeps_numbered_copies_and_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        for round in 0..4 {
            fs::write(&log, format!("round {round} {}", "x".repeat(100))).unwrap();
            assert!(rotate_if_needed(&log, 50, 3).unwrap());
            assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        }
        assert!(
            fs::read_to_string(rotated(&log, 1))
                .unwrap()
                .starts_with("round 3")
        );
        assert!(
            fs::read_to_string(rotated(&log, 3))
                .unwrap()
                .starts_with("round 1")
        );
        assert!(!rotated(&log, 4).exists());
    }

    #[test]
    fn the_tail_of_the_last_run_stops_at_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        fs::write(&log, "old\n").unwrap();
        mark(&log, "started v2");
        fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"1\n2\n3\n")
            .unwrap();
        assert_eq!(tail_of_last_run(&log, 2), "2\n3");
        assert_eq!(tail_of_last_run(&log, 10), "1\n2\n3");
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&log, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("none"), 2), "");
    }
}
