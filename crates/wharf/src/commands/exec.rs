//! `wharf exec SERVICE --env ENV [--instance N] -- COMMAND...`

use std::io::Write;
use std::process::ExitCode;

use wharf_api::ExecRequest;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;

pub async fn exec(
    global: &Global,
    printer: &Printer,
    service: &str,
    env: &str,
    instance: Option<u32>,
    argv: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let client = crate::connect::controller(global, printer).await?;
    let request = ExecRequest {
        env: env.to_owned(),
        service: service.to_owned(),
        instance,
        argv,
    };
    let result = client.exec(&request).await.map_err(Failure::from)?;
    if printer.json() {
        printer.json_data(&result);
    } else {
        // The command's own output, as it printed it, on the same streams.
        printer.stream(&result.stdout);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(result.stderr.as_bytes());
        let _ = err.flush();
    }
    // Its exit status is ours, as with `docker exec` and `kubectl exec`; a signal is a
    // failure.
    Ok(match result.code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            printer.error(&format!(
                "the command was ended by a signal in {}",
                result.instance
            ));
            ExitCode::from(1)
        }
    })
}
