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
    let since = since.map(|ago| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(ago).as_millis() as i64
    });
    let client = crate::connect::controller(global, printer).await?;
    // With `-o json`, one JSON object per line of output (JSON Lines), as it comes.
    let mut partial = String::new();
    let json = printer.json();
    let as_json = |line: &str| {
        serde_json::json!({ "service": service, "env": env, "line": line }).to_string()
    };
    client
        .logs(env, service, instance, follow, (lines, since), |text| {
            if !json {
                return printer.stream(text);
            }
            partial.push_str(text);
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                printer.data(&as_json(line.trim_end_matches(['\n', '\r'])));
            }
        })
        .await
        .map_err(Failure::from)?;
    if json && !partial.is_empty() {
        printer.data(&as_json(&partial));
    }
    Ok(ExitCode::SUCCESS)
}
