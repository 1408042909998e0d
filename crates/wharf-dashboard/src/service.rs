//! A service's page: per environment (in pipeline order), its instances per host with
//! their health and figures, its stable address, and its deploy history.

use maud::html;

use crate::layout::{Viewer, page};

/// One environment of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSection {
    pub env: String,
    /// Its stable address, balanced over healthy instances.
    pub address: Option<String>,
    pub instances: Vec<InstanceRow>,
    /// Why it is not converged, if it is not.
    pub warnings: Vec<String>,
    /// Newest first.
    pub history: Vec<HistoryRow>,
}

/// One instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRow {
    /// The host (node) it runs on.
    pub node: String,
    pub instance: u32,
    pub version: String,
    pub state: String,
    pub health: String,
    pub restarts: u32,
    /// Thousandths of a core, and bytes, when measured.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub port: Option<u16>,
}

/// One deployment of the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: i64,
    pub kind: String,
    pub version: String,
    pub user: String,
    /// When it started, as the viewer reads it (UTC).
    pub at: String,
    pub state: String,
    /// The configuration revision it ran with (0: none set).
    pub config_revision: i64,
    pub approved_by: Option<String>,
    pub message: String,
}

fn figure(value: Option<u64>, show: impl Fn(u64) -> String) -> String {
    value.map_or_else(|| "—".to_owned(), show)
}

/// The service page.
pub fn service_page(viewer: &Viewer, service: &str, envs: &[EnvSection]) -> String {
    page(
        service,
        Some(viewer),
        html! {
            h1 { (service) }
            @if envs.is_empty() {
                p { "Nothing of " code { (service) } " runs where you may look." }
            }
            @for section in envs {
                section aria-labelledby={ "env-" (section.env) } {
                    h2 #{ "env-" (section.env) } { (section.env) }
                    @if let Some(address) = &section.address {
                        p { "Address: " code { (address) } }
                    }
                    @for warning in &section.warnings {
                        p.problem { (warning) }
                    }
                    @if section.instances.is_empty() {
                        p { "No instance runs here." }
                    } @else {
                        table.instances {
                            caption { "Instances of " (service) " in " (section.env) }
                            thead { tr {
                                th scope="col" { "host" } th scope="col" { "#" }
                                th scope="col" { "version" } th scope="col" { "state" }
                                th scope="col" { "health" } th scope="col" { "restarts" }
                                th scope="col" { "CPU" } th scope="col" { "memory" }
                                th scope="col" { "port" }
                            } }
                            tbody {
                                @for i in &section.instances {
                                    tr {
                                        td { (i.node) } td { (i.instance) } td { (i.version) }
                                        td { (i.state) } td class={ "health " (i.health) } { (i.health) }
                                        td { (i.restarts) }
                                        td { (figure(i.cpu_millis, |m| format!("{:.2}", m as f64 / 1000.0))) }
                                        td { (figure(i.memory_bytes, |b| format!("{:.1} MiB", b as f64 / 1048576.0))) }
                                        td { (i.port.map_or_else(|| "—".to_owned(), |p| p.to_string())) }
                                    }
                                }
                            }
                        }
                    }
                    @if !section.history.is_empty() {
                        table.history {
                            caption { "History of " (service) " in " (section.env) ", newest first" }
                            thead { tr {
                                th scope="col" { "#" } th scope="col" { "kind" }
                                th scope="col" { "version" } th scope="col" { "config" }
                                th scope="col" { "who" } th scope="col" { "when (UTC)" }
                                th scope="col" { "outcome" }
                            } }
                            tbody {
                                @for d in &section.history {
                                    tr {
                                        td { (d.id) } td { (d.kind) } td { (d.version) }
                                        td { @if d.config_revision > 0 { "rev " (d.config_revision) } @else { "—" } }
                                        td {
                                            (d.user)
                                            @if let Some(approver) = &d.approved_by { ", approved by " (approver) }
                                        }
                                        td { (d.at) }
                                        td title=(d.message) { (d.state) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_shows_its_instances_and_history_per_environment() {
        let viewer = Viewer {
            name: "ann".into(),
            open: false,
            csrf: "t".into(),
        };
        let section = EnvSection {
            env: "ci".into(),
            address: Some("http://127.0.0.1:4100".into()),
            instances: vec![InstanceRow {
                node: "web-1".into(),
                instance: 0,
                version: "v2".into(),
                state: "running".into(),
                health: "healthy".into(),
                restarts: 1,
                cpu_millis: Some(250),
                memory_bytes: Some(30 * 1048576),
                port: Some(4101),
            }],
            warnings: vec![],
            history: vec![HistoryRow {
                id: 7,
                kind: "deploy".into(),
                version: "v2".into(),
                user: "ann".into(),
                at: "2026-12-07 01:00:00".into(),
                state: "succeeded".into(),
                config_revision: 3,
                approved_by: Some("bob".into()),
                message: "all healthy".into(),
            }],
        };
        let html = service_page(&viewer, "catalog", &[section]);
        for expected in [
            "<h1>catalog</h1>",
            "http://127.0.0.1:4100",
            "web-1",
            "0.25",
            "30.0 MiB",
            "rev 3",
            "ann, approved by bob",
            "succeeded",
        ] {
            assert!(html.contains(expected), "{expected}: {html}");
        }
    }
}
