//! Instance log files: rotation by size, and reading the last lines.
//!
//! An instance's output goes through a pipe to its log writer ([`write_rotating`], run
//! as `wharf log-writer`, a process of the instance's group that outlives the agent),
//! which rotates the file as it writes, at line boundaries, so no file grows past its
//! limit whatever the write rate. Without a writer (the driver's library default),
//! instances append to the file directly and the supervisor rotates it by copying and
//! truncating every few seconds.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
            wharf_driver::log_times::rename(&from, &rotated(path, n + 1))?;
        }
    }
    fs::copy(path, rotated(path, 1))?;
    File::options().write(true).open(path)?.set_len(0)?;
    wharf_driver::log_times::rename(path, &rotated(path, 1))?;
    Ok(true)
}

/// Copies `input` into the log at `path` until `input` ends, rotating before a write
/// would take the file past `max_bytes`: `path` becomes `path.1` (and so on up to
/// `path.keep`). Each file starts at a line boundary; a single line longer than the
/// limit is cut.
pub fn write_rotating(
    mut input: impl Read,
    path: &Path,
    max_bytes: u64,
    keep: u32,
) -> io::Result<()> {
    let max = max_bytes.max(1) as usize;
    let mut log = Rotating {
        file: open_append(path).ok(),
        path,
        max,
        keep,
        times: Default::default(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    // A line read in two pieces is written whole: the end of what was read waits here
    // for its line end (up to a bound, for output that never ends a line).
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return log.write(&pending);
        }
        // A write that fails (a full disk) loses that output, never the instance: the
        // pipe keeps being read, and the file is opened again for the next lines.
        pending.extend_from_slice(&buf[..n]);
        let complete = match pending.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if pending.len() >= max.min(buf.len()) => pending.len(),
            None => continue,
        };
        let rest = pending.split_off(complete);
        if log.write(&pending).is_err() {
            log.file = open_append(path).ok();
        }
        pending = rest;
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    File::options().create(true).append(true).open(path)
}

/// A log file written through [`write_rotating`].
struct Rotating<'a> {
    /// None while the file cannot be opened (the output is then dropped).
    file: Option<File>,
    path: &'a Path,
    max: usize,
    keep: u32,
    /// When each part was written (`wharf logs --since`).
    times: wharf_driver::log_times::TimeIndex,
}

impl Rotating<'_> {
    /// Writes whole lines (or a cut one), rotating first where they do not fit.
    fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        use std::io::Write;
        while !chunk.is_empty() {
            let Some(file) = self.file.as_mut() else {
                self.file = open_append(self.path).ok();
                return Ok(());
            };
            // The agent appends marker lines to the same file: its size, not a count.
            let size = file.metadata()?.len() as usize;
            self.times.before_write(self.path, size as u64);
            let room = self.max.saturating_sub(size);
            if chunk.len() <= room {
                return file.write_all(chunk);
            }
            // What fits, up to its last line end; an empty file takes a cut line.
            let fits = &chunk[..room];
            let split = match fits.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if size == 0 => room,
                None => 0,
            };
            file.write_all(&chunk[..split])?;
            chunk = &chunk[split..];
            shift(self.path, self.keep)?;
            self.times.restart();
            self.file = Some(open_append(self.path)?);
        }
        Ok(())
    }
}

/// Renames `path` to `path.1`, `path.1` to `path.2` and so on, dropping the oldest;
/// their time indexes go along.
fn shift(path: &Path, keep: u32) -> io::Result<()> {
    use wharf_driver::log_times::rename;
    for n in (1..keep.max(1)).rev() {
        let from = rotated(path, n);
        if from.exists() {
            fs::rename(&from, rotated(path, n + 1))?;
            rename(&from, &rotated(path, n + 1))?;
        }
    }
    fs::rename(path, rotated(path, 1))?;
    rename(path, &rotated(path, 1))
}

/// The last `lines` lines of `path`, only of those written at or after `since` when
/// given (`wharf logs --since`).
pub fn tail_from(path: &Path, lines: usize, since: Option<i64>) -> String {
    match since {
        Some(since) => tail_since(path, lines, since),
        None => tail(path, lines),
    }
}

/// The lines of `path` written at or after `since` (Unix milliseconds), at most the
/// last `lines` of them.
pub fn tail_since(path: &Path, lines: usize, since: i64) -> String {
    let offset = wharf_driver::log_times::offset_since(path, since);
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The most a follow reads of a log at once; the rest comes with the next read.
const APPENDED_MAX: u64 = 1 << 20;

/// The whole lines appended to `path` past `offset`, which moves past them; from the
/// start when the log was rotated (it is shorter than `offset`).
pub fn read_appended(path: &Path, offset: &mut u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || file.seek(SeekFrom::Start(*offset)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = (&mut file).take(APPENDED_MAX).read_to_end(&mut buf);
    // Only whole lines; the rest waits for its newline (or is a line longer than a read).
    let whole = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if buf.len() as u64 == APPENDED_MAX => buf.len(),
        None => 0,
    };
    *offset += whole as u64;
    String::from_utf8_lossy(&buf[..whole]).into_owned()
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

/// What a failed start printed, for its report: the first lines of its last run (where
/// an error at start usually is) and its last lines, runs of one repeated line (a
/// health probe's request logged again and again) collapsed to one with a count.
pub fn report_of_last_run(path: &Path) -> String {
    let all = tail(path, 2000);
    let mut run: Vec<&str> = all
        .lines()
        .rev()
        .take_while(|l| !l.starts_with(MARKER))
        .collect();
    run.reverse();
    summarize(&run, 5, 20)
}

/// `first` lines and `last` lines of `lines`, with repeats collapsed (`line (x 480)`).
pub fn summarize(lines: &[&str], first: usize, last: usize) -> String {
    let mut collapsed: Vec<(String, usize)> = Vec::new();
    for line in lines {
        match collapsed.last_mut() {
            Some((previous, n)) if previous == line => *n += 1,
            _ => collapsed.push(((*line).to_owned(), 1)),
        }
    }
    let shown = |(line, n): &(String, usize)| match n {
        1 => line.clone(),
        n => format!("{line} (x {n})"),
    };
    if collapsed.len() <= first + last + 1 {
        return collapsed.iter().map(shown).collect::<Vec<_>>().join("\n");
    }
    let skipped: usize = collapsed[first..collapsed.len() - last]
        .iter()
        .map(|(_, n)| n)
        .sum();
    let mut out: Vec<String> = collapsed[..first].iter().map(shown).collect();
    out.push(format!("... ({skipped} lines)"));
    out.extend(collapsed[collapsed.len() - last..].iter().map(shown));
    out.join("\n")
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
    // Read from the middle of the file, the first line is partial: drop it.
    let whole = match buf.iter().position(|b| *b == b'\n') {
        Some(i) if start > 0 => &buf[i + 1..],
        _ => &buf[..],
    };
    let text = String::from_utf8_lossy(whole);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_report_keeps_the_first_and_last_lines_and_collapses_repeats() {
        let probe = "GET /health 200";
        let mut lines = vec!["starting", "error: database handshake failed"];
        lines.extend(std::iter::repeat_n(probe, 480));
        lines.extend(["exiting"]);
        assert_eq!(
            summarize(&lines, 5, 20),
            format!("starting\nerror: database handshake failed\n{probe} (x 480)\nexiting")
        );
        let many: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let out = summarize(&many, 2, 3);
        assert_eq!(
            out,
            "line 0\nline 1\n... (35 lines)\nline 37\nline 38\nline 39"
        );
    }

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
    fn a_fast_writer_never_takes_a_file_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        // 20 MB of numbered lines in one go, as fast as a pipe can deliver them.
        let mut input = Vec::new();
        let mut n = 0u64;
        while input.len() < 20 * 1024 * 1024 {
            input.extend_from_slice(
                format!("line {n} {}\n", "x".repeat(n as usize % 200)).as_bytes(),
            );
            n += 1;
        }
        write_rotating(&input[..], &log, 1024 * 1024, 3).unwrap();
        let mut files = vec![log.clone()];
        files.extend((1..=3).map(|i| rotated(&log, i)));
        for file in &files {
            let text = fs::read_to_string(file).unwrap();
            assert!(
                text.len() as u64 <= 1024 * 1024,
                "{}: {}",
                file.display(),
                text.len()
            );
            assert!(
                text.starts_with("line "),
                "{} starts at a line",
                file.display()
            );
            assert!(text.ends_with('\n'), "{} ends at a line", file.display());
        }
        assert!(!rotated(&log, 4).exists(), "only `keep` rotated files");
        let last = fs::read_to_string(&log).unwrap();
        assert!(last.ends_with(&format!(
            "line {} {}\n",
            n - 1,
            "x".repeat((n - 1) as usize % 200)
        )));
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_not_lost_entirely() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let long = format!("{}\nshort\n", "y".repeat(10_000));
        write_rotating(long.as_bytes(), &log, 4096, 5).unwrap();
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            format!("{}\nshort\n", "y".repeat(10_000 - 8192))
        );
        assert_eq!(fs::read_to_string(rotated(&log, 1)).unwrap().len(), 4096);
    }

    #[test]
    fn the_tail_of_a_large_log_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = tail(&log, 100_000);
        assert!(tail.starts_with("line "), "{}", &tail[..20]);
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
