//! The hosts page: every host the viewer may read, its state, labels, capacity and
//! instances, with drain and undrain for those who administer its environment.

use maud::html;

use crate::layout::{Viewer, page};

/// One host as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRow {
    pub name: String,
    pub env: String,
    /// `ready`, `draining`, `down`, `lost`, `revoked`.
    pub state: String,
    pub labels: Vec<(String, String)>,
    /// CPU in thousandths of a core, and memory, it offers.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub instances: usize,
    /// Where its agent connected from.
    pub address: String,
    /// The viewer may drain and undrain it (the controller checks again on the post).
    pub can_admin: bool,
}

fn cores(millis: u64) -> String {
    format!("{:.1} cores", millis as f64 / 1000.0)
}

fn memory(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// The hosts page, with what the viewer's last change did, if anything.
pub fn hosts_page(viewer: &Viewer, hosts: &[HostRow], notice: Option<&str>) -> String {
    page(
        "Hosts",
        Some(viewer),
        html! {
            h1 { "Hosts" }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
            @if hosts.is_empty() {
                p { "No host has joined: instances run on the controller's own machine. "
                    code { "wharf env up ENV" } " or " code { "wharf agent" } " adds hosts." }
            } @else {
                table.hosts {
                    caption { "Hosts that joined, by environment" }
                    thead { tr {
                        th scope="col" { "host" } th scope="col" { "environment" }
                        th scope="col" { "state" } th scope="col" { "labels" }
                        th scope="col" { "capacity" } th scope="col" { "instances" }
                        th scope="col" { "address" } th scope="col" { span.visually-hidden { "actions" } }
                    } }
                    tbody {
                        @for host in hosts {
                            tr id={ "host-" (host.env) "@" (host.name) } {
                                th scope="row" { (host.name) }
                                td { (host.env) }
                                td class={ "state " (host.state) } { (host.state) }
                                td { @for (k, v) in &host.labels { code { (k) "=" (v) } " " } }
                                td { (cores(host.cpu_millis)) ", " (memory(host.memory_bytes)) }
                                td { (host.instances) }
                                td { (host.address) }
                                td {
                                    @if host.can_admin && host.state != "revoked" {
                                        @let action = if host.state == "draining" { "undrain" } else { "drain" };
                                        form method="post" action={ "/ui/hosts/" (host.env) "/" (host.name) "/" (action) } {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            button type="submit" { (action) " " (host.name) }
                                        }
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
    fn hosts_show_their_figures_and_only_admins_get_the_button() {
        let viewer = Viewer {
            name: "ann".into(),
            open: false,
            csrf: "t0k".into(),
        };
        let mut host = HostRow {
            name: "node-1".into(),
            env: "staging".into(),
            state: "ready".into(),
            labels: vec![("zone".into(), "a".into())],
            cpu_millis: 2000,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            instances: 3,
            address: "10.0.0.2".into(),
            can_admin: false,
        };
        let html = hosts_page(&viewer, std::slice::from_ref(&host), None);
        assert!(html.contains("2.0 cores, 4.0 GiB"), "{html}");
        assert!(html.contains("zone=a"));
        assert!(!html.contains("/ui/hosts/staging/node-1/drain"));
        host.can_admin = true;
        let html = hosts_page(&viewer, std::slice::from_ref(&host), None);
        assert!(
            html.contains(r#"action="/ui/hosts/staging/node-1/drain""#),
            "{html}"
        );
        host.state = "draining".into();
        let html = hosts_page(&viewer, std::slice::from_ref(&host), None);
        assert!(html.contains(r#"action="/ui/hosts/staging/node-1/undrain""#));
        host.state = "revoked".into();
        let html = hosts_page(&viewer, &[host], None);
        assert!(
            !html.contains("/ui/hosts/staging/node-1/"),
            "a revoked host stays revoked"
        );
    }
}
