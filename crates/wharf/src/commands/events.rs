//! Showing the progress of deploys, rollbacks and stops.

use wharf_api::{DeployEvent, DeploymentState};
use wharf_core::plan::Step;

use crate::printer::{Printer, Progress, Tone};

/// Describes one step of a plan: `start catalog #0 on laptop (v2)`.
pub fn describe_step(service: &str, step: &Step) -> String {
    let slot = step.slot();
    let at = format!("{service} #{} on {}", slot.instance, slot.node);
    match step {
        Step::Start { to } => format!("start    {at}: {}", to.version),
        // Started beside the old instance, which stops once the new one serves.
        Step::Replace { from, to } if from.slot != to.slot => {
            let what = if from.version == to.version {
                format!("{} with new configuration", to.version)
            } else {
                format!("{} -> {}", from.version, to.version)
            };
            format!(
                "replace  {service} #{} on {}: {what}, started beside it as #{}",
                from.slot.instance, from.slot.node, to.slot.instance
            )
        }
        Step::Replace { from, to } if from.version == to.version => {
            format!("restart  {at}: {} with new configuration", to.version)
        }
        Step::Replace { from, to } => format!("replace  {at}: {} -> {}", from.version, to.version),
        Step::Stop { from } => format!("stop     {at}: {}", from.version),
    }
}

/// Renders events as they arrive.
pub struct EventView<'p> {
    printer: &'p Printer,
    progress: Progress,
}

impl<'p> EventView<'p> {
    pub fn new(printer: &'p Printer) -> Self {
        Self {
            printer,
            progress: printer.progress(),
        }
    }

    pub fn show(&mut self, event: &DeployEvent) {
        let p = self.printer;
        match event {
            DeployEvent::Planned {
                deployment,
                service,
                env,
                version,
                steps,
                unchanged,
            } => {
                let count = |f: fn(&Step) -> bool| steps.iter().filter(|s| f(s)).count();
                let summary = format!(
                    "{} to start, {} to replace, {} to stop, {unchanged} unchanged",
                    count(|s| matches!(s, Step::Start { .. })),
                    count(|s| matches!(s, Step::Replace { .. })),
                    count(|s| matches!(s, Step::Stop { .. })),
                );
                match deployment {
                    Some(id) => self.progress.line(&format!(
                        "deploying {service} {version} to {env} (deployment #{id}): {summary}"
                    )),
                    None => {
                        self.progress
                            .line(&format!("plan for {service} {version} in {env}: {summary}"));
                        if p.json() {
                            p.json_data(event);
                        } else {
                            for step in steps {
                                p.data(&describe_step(service, step));
                            }
                        }
                    }
                }
            }
            DeployEvent::Progress {
                service,
                node,
                instance,
                message,
            } => {
                let text = format!("  {service} #{instance} on {node}: {message}");
                self.progress.status(&text);
                self.progress.line(&text);
            }
            DeployEvent::Traffic {
                service,
                version,
                percent,
                instances,
                of,
            } => {
                self.progress.line(&format!(
                    "  {service}: {percent}% on {version} ({instances} of {of} instances in the rotation)"
                ));
            }
            DeployEvent::Healthy {
                service,
                node,
                instance,
                elapsed_ms,
            } => {
                self.progress.line(&format!(
                    "  {service} #{instance} on {node}: {} after {elapsed_ms}ms",
                    p.paint("healthy", Tone::Good)
                ));
            }
            DeployEvent::Failed {
                service,
                node,
                instance,
                reason,
                ..
            } => {
                self.progress.line(&format!(
                    "  {service} #{instance} on {node}: {} {reason}",
                    p.paint("failed:", Tone::Bad)
                ));
            }
            DeployEvent::RollingBack { .. } => {
                self.progress.line(&p.paint("rolling back", Tone::Warn))
            }
            DeployEvent::Warning { message } => self
                .progress
                .line(&format!("{} {message}", p.paint("warning:", Tone::Warn))),
            DeployEvent::ConfigSaved {
                service,
                env,
                revision,
            } => self.progress.line(&format!(
                "saved configuration revision {revision} of {service} in {env}"
            )),
            DeployEvent::Finished { .. } | DeployEvent::Error { .. } => self.progress.finish(),
        }
    }
}

/// Whether a finished operation succeeded (or was accepted and waits for approval).
pub fn succeeded(event: &DeployEvent) -> bool {
    matches!(
        event,
        DeployEvent::Finished {
            state: DeploymentState::Succeeded
                | DeploymentState::PendingApproval
                | DeploymentState::InProgress,
            ..
        }
    )
}
