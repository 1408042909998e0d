use std::process::ExitCode;

use crate::cli::Global;
use crate::printer::Printer;
use crate::project;

pub fn validate(global: &Global, printer: &Printer) -> anyhow::Result<ExitCode> {
    let project = project::load(global)?;
    let def = &project.definition;
    if printer.json() {
        printer.json_data(&serde_json::json!({
            "valid": true,
            "file": project.file,
            "services": def.services.keys().collect::<Vec<_>>(),
            "pipeline": def.pipeline,
        }));
    } else {
        printer.info(&format!(
            "{} is valid: {} service(s), {} environment(s) ({})",
            project::display_path(&project.file),
            def.services.len(),
            def.environments.len(),
            def.pipeline.join(" -> ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn schema(printer: &Printer) -> anyhow::Result<ExitCode> {
    printer.json_data(&wharf_core::raw::json_schema());
    Ok(ExitCode::SUCCESS)
}
