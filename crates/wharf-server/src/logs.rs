//! Serving instance logs: the last lines, and following them as they grow.

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

/// An instance's log on another host, read through its agent.
pub struct RemoteLog {
    pub prefix: String,
    pub key: wharf_driver::InstanceKey,
    pub link: std::sync::Arc<dyn crate::fleet::AgentLink>,
}

/// How often a followed log on another host is read.
const REMOTE_POLL: Duration = Duration::from_millis(500);

/// The last lines, then whatever is appended, until the client goes away: of the logs
/// on this machine, and of those on other hosts.
pub fn follow(
    sources: Vec<LogSource>,
    remote: Vec<RemoteLog>,
    lines: usize,
    since: Option<i64>,
) -> Body {
    // From where the files end now, so the snapshot and what follows it overlap
    // rather than leave a gap.
    let rest = appended(sources.clone());
    let first = snapshot(&sources, lines, since);
    let here = stream::once(std::future::ready(first)).chain(rest).boxed();
    let mut all = vec![here];
    all.extend(
        remote
            .into_iter()
            .map(|log| followed_remotely(log, lines, since).boxed()),
    );
    Body::from_stream(stream::select_all(all).map(Ok::<_, std::io::Error>))
}

/// One log on another host: its last lines, then what its agent finds appended each
/// time it is asked. A read that fails says so in the stream, and the log is asked
/// again from where it was.
fn followed_remotely(
    log: RemoteLog,
    lines: usize,
    since: Option<i64>,
) -> impl Stream<Item = String> + Send {
    stream::unfold((log, None::<u64>), move |(log, mut offset)| async move {
        loop {
            if offset.is_some() {
                tokio::time::sleep(REMOTE_POLL).await;
            }
            match log.link.follow_log(&log.key, lines, since, offset).await {
                Ok((text, next)) => {
                    offset = Some(next);
                    if !text.is_empty() {
                        return Some((prefixed(&log.prefix, &text), (log, offset)));
                    }
                }
                Err(e) => {
                    let said = format!("{}{}{e} ---\n", log.prefix, wharf_agent::logs::MARKER);
                    tokio::time::sleep(REMOTE_POLL).await;
                    return Some((said, (log, offset)));
                }
            }
        }
    })
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
    prefixed(
        &source.prefix,
        &wharf_agent::logs::read_appended(&source.path, offset),
    )
}
