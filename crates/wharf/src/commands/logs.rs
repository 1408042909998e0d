use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;

/// What of the logs to show.
pub struct View {
    pub follow: bool,
    pub instance: Option<u32>,
    pub lines: usize,
    pub since: Option<std::time::Duration>,
}

/// The most lines a follow resumed on the next leader shows of what was written while
/// it moved.
const RESUMED_LINES: usize = 10_000;

/// How far before the last line shown a follow resumed on the next leader starts.
const RESUME_OVERLAP_MS: i64 = 2_000;

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

pub async fn logs(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
    view: View,
) -> anyhow::Result<ExitCode> {
    let View {
        follow,
        instance,
        lines,
        since,
    } = view;
    let since = since.map(|ago| now_millis() - ago.as_millis() as i64);
    let mut client = crate::connect::controller(global, printer).await?;
    // With `-o json`, one JSON object per line of output (JSON Lines), as it comes.
    let mut partial = String::new();
    let json = printer.json();
    let as_json = |line: &str| {
        serde_json::json!({ "service": service, "env": env, "line": line }).to_string()
    };
    let mut asked = (lines, since);
    // Until when (by this machine's clock) the follow has shown what was written.
    let mut shown_until = now_millis();
    loop {
        let outcome = client
            .logs(env, service, instance, follow, asked, |text| {
                shown_until = now_millis();
                if !json {
                    return printer.stream(text);
                }
                partial.push_str(text);
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    printer.data(&as_json(line.trim_end_matches(['\n', '\r'])));
                }
            })
            .await;
        // A follow ends only when its controller goes: with several controllers, it
        // goes on at the next leader, from the moment the last one stopped answering.
        let resumable = matches!(
            outcome,
            Ok(()) | Err(wharf_client::ClientError::Unreachable { .. })
        );
        if !(follow && resumable && crate::connect::several_controllers(global)) {
            outcome.map_err(Failure::from)?;
            break;
        }
        printer.info("the controller stopped answering; following the logs on the next leader");
        client = crate::connect::controller(global, printer).await?;
        // A little earlier than that: lines the last leader had not passed on yet, or
        // stamped by a host's clock a little behind, show twice rather than not at all.
        partial.clear();
        asked = (RESUMED_LINES, Some(shown_until - RESUME_OVERLAP_MS));
    }
    if json && !partial.is_empty() {
        printer.data(&as_json(&partial));
    }
    Ok(ExitCode::SUCCESS)
}
