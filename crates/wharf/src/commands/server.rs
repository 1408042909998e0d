use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Global, ServerArgs};
use crate::failure::Failure;
use crate::project;

pub async fn server(
    global: &Global,
    printer: &crate::printer::Printer,
    args: ServerArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(crate::cli::ServerCommand::Stop) = args.command {
        match crate::connect::stop_local(global).await? {
            Some(pid) => printer.info(&format!(
                "stopped the local controller (pid {pid}); instances keep running"
            )),
            None => printer.info("no local controller runs for this project"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.dev {
        return Err(
            Failure::input("only the development controller exists so far")
                .hint("run `wharf server --dev`")
                .into(),
        );
    }
    init_logging();
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => project::state_dir(global)?,
    };
    let state_dir = std::path::absolute(&state_dir)?;
    let shutdown = cancel_on_signal();
    let options = wharf_server::Options {
        listen: args.listen,
        agent_listen: args.agent_listen,
        auth: args.auth,
        master_key_file: args.master_key_file,
    };
    wharf_server::run_dev(&state_dir, options, shutdown)
        .await
        .map_err(|e| match e {
            wharf_server::StartError::NotLoopback(_) => Failure::input(e.to_string()),
            wharf_server::StartError::AlreadyRunning(_) => {
                Failure::operation(e.to_string()).hint("`wharf status` talks to it")
            }
            other => Failure::operation(other.to_string()),
        })?;
    Ok(ExitCode::SUCCESS)
}

/// Logs of long-running processes go to stderr; WHARF_LOG sets the filter.
pub fn init_logging() {
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn cancel_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal as on};
        let (Ok(mut term), Ok(mut int)) =
            (on(SignalKind::terminate()), on(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        signal.cancel();
    });
    shutdown
}

/// glibc gives every thread its own malloc arena, which for a long-running server with
/// many worker threads holds on to memory it no longer uses. Two arenas keep the
/// resident size close to what is live, at no measurable cost here.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before other threads allocate much.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
