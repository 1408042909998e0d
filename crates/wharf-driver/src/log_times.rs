//! When each part of an instance's log was written, for `wharf logs --since`: beside
//! `NAME.log`, `NAME.log.times` holds `OFFSET MILLIS` lines, one at most every second
//! (at the first write after a quiet second), so finding where "ten minutes ago" starts
//! reads a few bytes per second of output, never the log itself.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The index beside a log file.
pub fn times_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".times");
    PathBuf::from(name)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes a log's index as its writer appends.
#[derive(Debug, Default)]
pub struct TimeIndex {
    last: Option<Instant>,
}

impl TimeIndex {
    /// Call before appending at `offset` of `log`: records the time when a second
    /// passed since the last entry. Failing to index never fails the write.
    pub fn before_write(&mut self, log: &Path, offset: u64) {
        if self
            .last
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        if let Ok(mut file) = File::options()
            .create(true)
            .append(true)
            .open(times_path(log))
        {
            let _ = writeln!(file, "{offset} {}", now_millis());
        }
    }

    /// The log was rotated: the next write starts a new index entry.
    pub fn restart(&mut self) {
        self.last = None;
    }
}

/// Moves a log's index along with the log (`from` to `to`), or drops it.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(times_path(from), times_path(to)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where in `log` what was written at or after `since` (Unix milliseconds) begins:
/// the whole file when it has no index, its end when all of it is older.
pub fn offset_since(log: &Path, since: i64) -> u64 {
    let Ok(text) = fs::read_to_string(times_path(log)) else {
        return 0;
    };
    let entries = text.lines().filter_map(|l| {
        let (offset, at) = l.split_once(' ')?;
        Some((offset.parse::<u64>().ok()?, at.parse::<i64>().ok()?))
    });
    let mut any = false;
    for (offset, at) in entries {
        any = true;
        if at >= since {
            return offset;
        }
    }
    if any {
        fs::metadata(log).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_of_a_time_is_found_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        fs::write(&log, "old\nnew\n").unwrap();
        assert_eq!(offset_since(&log, 0), 0, "no index: everything");
        fs::write(times_path(&log), "0 1000\n4 5000\n").unwrap();
        assert_eq!(offset_since(&log, 500), 0);
        assert_eq!(
            offset_since(&log, 2000),
            4,
            "from the first entry at or after"
        );
        assert_eq!(offset_since(&log, 9000), 8, "nothing that new: the end");
    }

    #[test]
    fn an_entry_is_written_at_most_every_second() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let mut index = TimeIndex::default();
        index.before_write(&log, 0);
        index.before_write(&log, 10);
        let entries = fs::read_to_string(times_path(&log)).unwrap();
        assert_eq!(entries.lines().count(), 1, "{entries}");
        index.restart();
        index.before_write(&log, 0);
        assert_eq!(
            fs::read_to_string(times_path(&log))
                .unwrap()
                .lines()
                .count(),
            2
        );
    }
}
