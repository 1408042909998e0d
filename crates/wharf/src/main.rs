//! The `wharf` binary: parse the command line, run the command, map the outcome to an
//! exit code. Everything else lives in library crates.

mod cli;
mod commands;
mod connect;
mod failure;
mod memory;
mod printer;
mod project;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Command::LogWriter {
        max_bytes,
        keep,
        path,
    } = &cli.command
    {
        return log_writer(path, *max_bytes, *keep);
    }
    if let cli::Command::ListenerHolder { socket } = &cli.command {
        // Signals from the terminal or a stopping agent must not take the sockets away.
        let _ = nix::sys::signal::SigSet::all().thread_block();
        return match wharf_agent::listeners::hold(socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        };
    }
    let printer = printer::Printer::new(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            printer.error(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli, &printer)) {
        Ok(code) => code,
        Err(error) => {
            let (code, text) = failure::report(&error);
            printer.error(&text);
            ExitCode::from(code)
        }
    }
}

/// `wharf log-writer`: one thread, no runtime. Every signal that can be is blocked:
/// the writer stops when the instance's output ends, so nothing the instance wrote
/// last is lost (and a stray signal cannot cut the instance's output off).
fn log_writer(path: &std::path::Path, max_bytes: u64, keep: u32) -> ExitCode {
    let _ = nix::sys::signal::SigSet::all().thread_block();
    match wharf_agent::logs::write_rotating(std::io::stdin().lock(), path, max_bytes, keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
