//! Serving instance logs: the last lines, and following them as they grow.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use futures_util::{Stream, StreamExt, stream};

/// One instance's log file and the prefix its lines get when several are shown.
#[derive(Clone)]
pub struct LogSource {
    pub prefix: String,
    pub path: PathBuf,
}

fn prefixed(prefix: &str, text: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// The last `lines` lines of each source.
pub fn snapshot(sources: &[LogSource], lines: usize, since: Option<i64>) -> String {
    sources
        .iter()
        .map(|s| {
            prefixed(
                &s.prefix,
                &wharf_agent::logs::tail_from(&s.path, lines, since),
            )
        })
        .collect()
}

/// The last lines, then whatever is appended, until the client goes away.
pub fn follow(sources: Vec<LogSource>, lines: usize, since: Option<i64>) -> Body {
    // From where the files end now, so the snapshot and what follows it overlap
    // rather than leave a gap.
    let rest = appended(sources.clone());
    let first = snapshot(&sources, lines, since);
    Body::from_stream(
        stream::once(std::future::ready(first))
            .chain(rest)
            .map(Ok::<_, std::io::Error>),
    )
}

/// What is appended to the sources from now on, a batch of whole lines at a time.
pub fn appended(sources: Vec<LogSource>) -> impl Stream<Item = String> + Send {
    let offsets: Vec<u64> = sources
        .iter()
        .map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
        .collect();
    stream::unfold((sources, offsets), |(sources, mut offsets)| async move {
        loop {
            let mut out = String::new();
            for (source, offset) in sources.iter().zip(offsets.iter_mut()) {
                out.push_str(&read_new(source, offset));
            }
            if !out.is_empty() {
                return Some((out, (sources, offsets)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Reads what was appended since `offset`; starts over when the file was rotated.
fn read_new(source: &LogSource, offset: &mut u64) -> String {
    let Ok(mut file) = std::fs::File::open(&source.path) else {
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
    let _ = file.read_to_end(&mut buf);
    // Only hand out whole lines; the rest waits for its newline.
    let whole = buf
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    *offset += whole as u64;
    prefixed(&source.prefix, &String::from_utf8_lossy(&buf[..whole]))
}
