//! Health probes: an HTTP GET answered 2xx, a TCP connect, or a command exiting 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_core::model::Probe;

/// How much of a health answer is read before the check closes its connection.
const MAX_ANSWER: usize = 1 << 20;
/// How long the rest of an answer may pause before the check stops reading it.
const ANSWER_IDLE: Duration = Duration::from_millis(100);
/// How long the rest of an answer is read at most (an endpoint that streams is judged
/// by its status line).
const ANSWER_LIMIT: Duration = Duration::from_millis(500);

/// Longest a single probe may take.
/// Consecutive check results of a running instance, so one slow answer does not take
/// it out of the rotation and one lucky answer does not put it back (HAProxy's `rise`
/// and `fall`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Streak {
    passes: u32,
    fails: u32,
    /// The health the last result left: when something else changed it since (the
    /// start-up wait marking the instance healthy), the run starts over.
    seen: Option<wharf_core::lifecycle::Health>,
}

impl Streak {
    /// Records a check; returns the health the instance now has when it changes. An
    /// instance of unknown health (just restarted or adopted) takes the first result.
    pub fn record(
        &mut self,
        passed: bool,
        now: wharf_core::lifecycle::Health,
        rise: u32,
        fall: u32,
    ) -> Option<wharf_core::lifecycle::Health> {
        use wharf_core::lifecycle::Health;
        if self.seen != Some(now) {
            (self.passes, self.fails) = (0, 0);
        }
        let unknown = now == Health::Unknown;
        let next = if passed {
            self.passes = self.passes.saturating_add(1);
            self.fails = 0;
            (now != Health::Healthy && (unknown || self.passes >= rise)).then_some(Health::Healthy)
        } else {
            self.fails = self.fails.saturating_add(1);
            self.passes = 0;
            (now != Health::Unhealthy && (unknown || self.fails >= fall))
                .then_some(Health::Unhealthy)
        };
        self.seen = Some(next.unwrap_or(now));
        next
    }
}

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one probe; the error says what failed, in words for the user.
pub async fn probe(
    probe: &Probe,
    port: Option<u16>,
    workdir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, run(probe, port, workdir, env)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {}s",
            describe(probe, port),
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// The probe in words: `GET http://127.0.0.1:8080/health`.
pub fn describe(probe: &Probe, port: Option<u16>) -> String {
    let port = port.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    match probe {
        Probe::Http { path } => format!("GET http://127.0.0.1:{port}{path}"),
        Probe::Tcp => format!("TCP connect to 127.0.0.1:{port}"),
        Probe::Command { argv } => format!("health command `{}`", argv.join(" ")),
    }
}

async fn run(
    probe: &Probe,
    port: Option<u16>,
    workdir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    let connect = || async {
        let port = port.ok_or("the service has no port")?;
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("{}: {e}", describe(probe, Some(port))))
    };
    match probe {
        Probe::Tcp => connect().await.map(|_| ()),
        Probe::Http { path } => {
            let mut stream = connect().await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wharf-health\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let mut read = 0;
            while read < 12 {
                let n = stream
                    .read(&mut head[read..])
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            // The rest of the answer is read too (up to a bound), so the connection
            // closes cleanly: closing with unread data resets it, and the instance logs
            // a reset connection for every check.
            let mut rest = [0u8; 4096];
            let mut left = MAX_ANSWER;
            let deadline = tokio::time::Instant::now() + ANSWER_LIMIT;
            // A server that keeps the connection open despite `Connection: close` is
            // let go once it sends nothing for a moment.
            while left > 0 {
                let until = (tokio::time::Instant::now() + ANSWER_IDLE).min(deadline);
                match tokio::time::timeout_at(until, stream.read(&mut rest)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => left = left.saturating_sub(n),
                }
            }
            let line = String::from_utf8_lossy(&head[..read]);
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok());
            match status {
                Some(code) if (200..300).contains(&code) => Ok(()),
                Some(code) => Err(format!("{} answered {code}", describe(probe, port))),
                None => Err(format!("{} gave no HTTP answer", describe(probe, port))),
            }
        }
        Probe::Command { argv } => {
            // `{{ data_dir }}` is the instance's folder, which only the agent knows; the
            // command runs on the host, which reaches its peers on loopback.
            let dir = env.get("WHARF_DATA_DIR").map(String::as_str);
            let argv: Vec<String> = argv
                .iter()
                .map(|a| match dir {
                    Some(dir) => a.replace(wharf_core::template::DATA_DIR_PLACEHOLDER, dir),
                    None => a.clone(),
                })
                .map(|a| a.replace(wharf_core::template::HOST_PLACEHOLDER, "127.0.0.1"))
                .collect();
            let Some((program, args)) = argv.split_first() else {
                return Err("the health check command is empty".into());
            };
            let status = tokio::process::Command::new(program)
                .args(args)
                .current_dir(workdir)
                .envs(env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run {}: {e}", describe(probe, port)))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{} failed ({status})", describe(probe, port)))
            }
        }
    }
}

#[cfg(test)]
mod streak_tests {
    use super::Streak;
    use wharf_core::lifecycle::Health::{self, *};

    /// Feeds results to a streak starting at `start`, returning the health after each.
    fn run(start: Health, results: &[bool]) -> Vec<Health> {
        let mut streak = Streak::default();
        let mut health = start;
        results
            .iter()
            .map(|&passed| {
                if let Some(next) = streak.record(passed, health, 2, 2) {
                    health = next;
                }
                health
            })
            .collect()
    }

    #[test]
    fn a_health_set_elsewhere_starts_the_run_over() {
        let mut streak = Streak::default();
        // Failures while starting make it unhealthy; the start-up wait then finds it
        // healthy: one failure more does not take it out.
        assert_eq!(streak.record(false, Unknown, 2, 2), Some(Unhealthy));
        assert_eq!(streak.record(false, Unhealthy, 2, 2), None);
        assert_eq!(streak.record(false, Healthy, 2, 2), None);
        assert_eq!(streak.record(false, Healthy, 2, 2), Some(Unhealthy));
    }

    #[test]
    fn health_changes_after_two_results_in_a_row() {
        let table: &[(Health, &[bool], &[Health])] = &[
            (Healthy, &[false], &[Healthy]),
            (Healthy, &[false, false], &[Healthy, Unhealthy]),
            (Healthy, &[false, true, false], &[Healthy, Healthy, Healthy]),
            (Unhealthy, &[true], &[Unhealthy]),
            (Unhealthy, &[true, true], &[Unhealthy, Healthy]),
            (Unknown, &[true], &[Healthy]),
            (Unknown, &[false], &[Unhealthy]),
            (
                Healthy,
                &[false, false, true, false, true, true],
                &[Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy],
            ),
        ];
        for (start, results, expected) in table {
            assert_eq!(&run(*start, results), expected, "{start:?} {results:?}");
        }
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;

    /// A server that answers in two writes, then reads: a check that closed before the
    /// whole answer came makes that read fail with a reset.
    #[tokio::test]
    async fn an_http_check_reads_the_whole_answer_and_closes_cleanly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await.unwrap();
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            let written = tcp.write_all(&[b'x'; 4000]).await;
            // A check that went away before the rest came has reset the connection by
            // the time the server writes again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = tcp.write_all(b"\r\n").await;
            (written.is_ok(), again.is_ok())
        });
        let probe = Probe::Http {
            path: "/health".into(),
        };
        probe_ok(&probe, port).await;
        let (written, clean) = server.await.unwrap();
        assert!(
            written && clean,
            "the check's connection ended with a reset"
        );
    }

    async fn probe_ok(probe: &Probe, port: u16) {
        let env = BTreeMap::new();
        super::probe(probe, Some(port), Path::new("."), &env)
            .await
            .unwrap();
    }
}
