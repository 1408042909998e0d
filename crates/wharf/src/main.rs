//! The `wharf` binary: parse the command line, run the command, map the outcome to an
//! exit code. Everything else lives in library crates.

mod cli;
mod commands;
mod connect;
mod failure;
mod printer;
mod project;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
