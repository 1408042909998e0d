//! A service's page: per environment (in pipeline order), its instances per host with
//! their health, figures and traffic share, its stable address, its deploy history,
//! what each configuration revision changed, its logs (live), and the buttons the
//! viewer's grants allow: deploy a registered version, promote, roll back, move a
//! rollout, approve or reject.

use maud::{Markup, html};

use crate::config_diff::KeyChange;
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
    pub actions: Actions,
    /// Its latest blue-green or canary rollout, while it runs.
    pub rollout: Option<RolloutRow>,
    /// Deployments waiting for approval.
    pub pending: Vec<PendingRow>,
    /// Configuration revisions, newest first.
    pub config: Vec<ConfigRevisionRow>,
    pub logs: LogView,
}

/// What the viewer may do in an environment, and with what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    /// Deploy, promote, roll back and move rollouts (the `deploy` grant).
    pub can_deploy: bool,
    /// Approve and reject (the `approve` grant).
    pub can_approve: bool,
    /// The service's registered versions, newest first.
    pub versions: Vec<String>,
    /// The environment before this one in the pipeline, to promote from.
    pub promote_from: Option<String>,
    /// Whether an earlier version ran here to roll back to.
    pub can_roll_back: bool,
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
    /// Percent of the service's requests its address sends this instance, during a
    /// rollout.
    pub share: Option<u8>,
    /// Requests the service's address sent it, when measured.
    pub requests: Option<u64>,
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

/// A rollout in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutRow {
    pub strategy: String,
    pub phase: String,
    pub version: String,
    pub stable_version: String,
    /// Percent of requests to the new version.
    pub weight: u8,
    /// The canary step (1-based) of how many; 0 of 0 for blue-green.
    pub step: usize,
    pub steps: usize,
}

/// A deployment waiting for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingRow {
    pub id: i64,
    pub version: String,
    pub user: String,
}

/// One configuration revision and what it changed from the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigRevisionRow {
    pub revision: i64,
    pub user: String,
    pub at: String,
    pub message: String,
    /// `active`, `held` or `rejected`.
    pub state: String,
    pub changes: Vec<KeyChange>,
}

/// The service's last log lines in an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    pub text: String,
    /// Whether the page can follow them live (instances on the controller's machine).
    pub live: bool,
}

fn figure(value: Option<u64>, show: impl Fn(u64) -> String) -> String {
    value.map_or_else(|| "—".to_owned(), show)
}

/// A button posting to `/ui/services/{service}/{env}/{action}` with the form token.
fn action_form(viewer: &Viewer, service: &str, env: &str, action: &str, label: &str) -> Markup {
    html! {
        form.action method="post" action={ "/ui/services/" (service) "/" (env) "/" (action) } {
            input type="hidden" name="csrf" value=(viewer.csrf);
            button type="submit" { (label) }
        }
    }
}

fn actions(viewer: &Viewer, service: &str, section: &EnvSection) -> Markup {
    let env = section.env.as_str();
    let a = &section.actions;
    html! {
        @if a.can_deploy {
            div.actions role="group" aria-label={ "Change " (service) " in " (env) } {
                @if !a.versions.is_empty() {
                    form.action method="post" action={ "/ui/services/" (service) "/" (env) "/deploy" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for={ "version-" (env) } { "Version " }
                        select #{ "version-" (env) } name="version" {
                            @for v in &a.versions { option value=(v) { (v) } }
                        }
                        " "
                        button type="submit" { "Deploy to " (env) }
                    }
                }
                @if let Some(from) = &a.promote_from {
                    (action_form(viewer, service, env, "promote", &format!("Promote from {from}")))
                }
                @if a.can_roll_back {
                    (action_form(viewer, service, env, "rollback", "Roll back"))
                }
                @if section.rollout.is_some() {
                    (action_form(viewer, service, env, "rollout-promote", "Rollout: next step"))
                    (action_form(viewer, service, env, "rollout-abort", "Rollout: abort"))
                }
            }
        }
    }
}

fn pending(viewer: &Viewer, section: &EnvSection) -> Markup {
    html! {
        @for d in &section.pending {
            div.pending {
                span.badge { "#" (d.id) " waits for approval: " (d.version) " by " (d.user) }
                @if section.actions.can_approve {
                    form.decide method="post" action={ "/ui/deployments/" (d.id) "/approve" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Approve #" (d.id) }
                    }
                    form.decide method="post" action={ "/ui/deployments/" (d.id) "/reject" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Reject #" (d.id) }
                    }
                }
            }
        }
    }
}

fn instances(service: &str, section: &EnvSection) -> Markup {
    let shares = section.instances.iter().any(|i| i.share.is_some());
    html! {
        @if let Some(r) = &section.rollout {
            p.rollout {
                (r.strategy) " rollout, " (r.phase) ": " strong { (r.version) } " takes "
                (r.weight) "% of requests, " (r.stable_version) " the rest"
                @if r.steps > 0 { " (step " (r.step) " of " (r.steps) ")" }
            }
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
                    th scope="col" { "port" } th scope="col" { "requests" }
                    @if shares { th scope="col" { "traffic share" } }
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
                            td { (figure(i.requests, |n| n.to_string())) }
                            @if shares { td { (i.share.map_or_else(|| "—".to_owned(), |s| format!("{s}%"))) } }
                        }
                    }
                }
            }
        }
    }
}

fn history(service: &str, section: &EnvSection) -> Markup {
    let env = section.env.as_str();
    html! {
        @if !section.history.is_empty() {
            table.history {
                caption { "History of " (service) " in " (env) ", newest first" }
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
                            td {
                                @if d.config_revision > 0 {
                                    a href={ "#config-" (env) "-" (d.config_revision) } { "rev " (d.config_revision) }
                                } @else { "—" }
                            }
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

fn config(section: &EnvSection) -> Markup {
    let env = section.env.as_str();
    html! {
        @if !section.config.is_empty() {
            details.config {
                summary { "Configuration revisions (" (section.config.len()) ")" }
                ol.revisions reversed {
                    @for r in &section.config {
                        li #{ "config-" (env) "-" (r.revision) } {
                            strong { "rev " (r.revision) } " by " (r.user) " at " (r.at)
                            @if r.state != "active" { " (" (r.state) ")" }
                            @if !r.message.is_empty() { ": " (r.message) }
                            @if r.changes.is_empty() {
                                " — no change"
                            } @else {
                                ul.diff {
                                    @for change in &r.changes {
                                        @match change {
                                            KeyChange::Added { key, value } => li.added { "+ " code { (key) "=" (value) } },
                                            KeyChange::Changed { key, from, to } => li.changed { "~ " code { (key) } ": " code { (from) } " → " code { (to) } },
                                            KeyChange::Removed { key, was } => li.removed { "− " code { (key) "=" (was) } },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn logs(service: &str, section: &EnvSection) -> Markup {
    let env = section.env.as_str();
    html! {
        @if !section.instances.is_empty() {
            details.logs open {
                summary { "Logs" @if section.logs.live { " (live)" } }
                @if section.logs.live {
                    pre.log #{ "logs-" (env) } tabindex="0"
                        data-follow={ "/ui/services/" (service) "/" (env) "/logs" } { (section.logs.text) }
                } @else {
                    pre.log #{ "logs-" (env) } tabindex="0" { (section.logs.text) }
                }
            }
        }
    }
}

/// The service page; `notice` says what the last action did.
pub fn service_page(
    viewer: &Viewer,
    service: &str,
    envs: &[EnvSection],
    notice: Option<&str>,
) -> String {
    page(
        service,
        Some(viewer),
        html! {
            h1 { (service) }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
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
                    (pending(viewer, section))
                    (actions(viewer, service, section))
                    (instances(service, section))
                    (history(service, section))
                    (config(section))
                    (logs(service, section))
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer() -> Viewer {
        Viewer {
            name: "ann".into(),
            open: false,
            csrf: "t0k".into(),
        }
    }

    fn section() -> EnvSection {
        EnvSection {
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
                share: None,
                requests: Some(42),
            }],
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
            ..EnvSection::default()
        }
    }

    #[test]
    fn a_service_shows_its_instances_and_history_per_environment() {
        let html = service_page(&viewer(), "catalog", &[section()], None);
        for expected in [
            "<h1>catalog</h1>",
            "http://127.0.0.1:4100",
            "web-1",
            "0.25",
            "30.0 MiB",
            "<td>42</td>",
            r##"<a href="#config-ci-3">rev 3</a>"##,
            "ann, approved by bob",
            "succeeded",
        ] {
            assert!(html.contains(expected), "{expected}: {html}");
        }
    }

    #[test]
    fn buttons_appear_only_with_the_grant_for_them_and_carry_the_form_token() {
        let mut s = section();
        s.actions = Actions {
            can_deploy: false,
            can_approve: false,
            versions: vec!["v2".into(), "v1".into()],
            promote_from: Some("dev".into()),
            can_roll_back: true,
        };
        s.rollout = Some(RolloutRow::default());
        s.pending = vec![PendingRow {
            id: 9,
            version: "v3".into(),
            user: "cat".into(),
        }];
        let read_only = service_page(&viewer(), "catalog", &[s.clone()], None);
        assert!(read_only.contains("#9 waits for approval: v3 by cat"));
        for hidden in [
            "/deploy",
            "/promote",
            "/rollback",
            "/rollout-",
            "/approve",
            "/reject",
        ] {
            assert!(
                !read_only.contains(hidden),
                "{hidden} shown without a grant"
            );
        }
        s.actions.can_deploy = true;
        s.actions.can_approve = true;
        let html = service_page(&viewer(), "catalog", &[s], None);
        for shown in [
            r#"action="/ui/services/catalog/ci/deploy""#,
            r#"<option value="v1">v1</option>"#,
            "Promote from dev",
            r#"action="/ui/services/catalog/ci/rollback""#,
            r#"action="/ui/services/catalog/ci/rollout-promote""#,
            r#"action="/ui/services/catalog/ci/rollout-abort""#,
            r#"action="/ui/deployments/9/approve""#,
            r#"action="/ui/deployments/9/reject""#,
        ] {
            assert!(html.contains(shown), "{shown}: {html}");
        }
        let forms = html.matches("<form").count();
        // Every form posts its token (the sign-out form in the header too).
        assert_eq!(html.matches(r#"name="csrf" value="t0k""#).count(), forms);
    }

    #[test]
    fn a_rollout_shows_each_instances_share_and_a_revision_what_it_changed() {
        let mut s = section();
        s.rollout = Some(RolloutRow {
            strategy: "canary".into(),
            phase: "paused".into(),
            version: "v2".into(),
            stable_version: "v1".into(),
            weight: 20,
            step: 1,
            steps: 3,
        });
        s.instances[0].share = Some(20);
        s.config = vec![ConfigRevisionRow {
            revision: 3,
            user: "ann".into(),
            at: "2026-12-07 01:00:00".into(),
            message: "slower".into(),
            state: "active".into(),
            changes: vec![
                KeyChange::Changed {
                    key: "DELAY".into(),
                    from: "1".into(),
                    to: "2".into(),
                },
                KeyChange::Removed {
                    key: "OLD".into(),
                    was: "x".into(),
                },
            ],
        }];
        s.logs = LogView {
            text: "started <b>\n".into(),
            live: true,
        };
        let html = service_page(&viewer(), "catalog", &[s], Some("deploying v2"));
        for expected in [
            "takes 20% of requests, v1 the rest (step 1 of 3)",
            "<td>20%</td>",
            r#"id="config-ci-3""#,
            "<code>DELAY</code>: <code>1</code> → <code>2</code>",
            "− <code>OLD=x</code>",
            r#"data-follow="/ui/services/catalog/ci/logs""#,
            "started &lt;b&gt;",
            "deploying v2",
        ] {
            assert!(html.contains(expected), "{expected}: {html}");
        }
    }
}
