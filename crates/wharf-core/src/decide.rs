//! The controller's decisions as pure functions over a snapshot, table-tested like
//! Nomad's `scheduler/`: which deployment runs now, what a definition revision changes
//! (and so who may make it), the pipeline gate and the approval rules. The controller
//! gathers the facts from its store and carries out what these decide.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::lifecycle::{DeploymentKind, DeploymentState};
use crate::model::{Definition, Environment, Node};

/// What the decisions need to know of one past deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentFacts {
    pub id: i64,
    pub kind: DeploymentKind,
    pub state: DeploymentState,
    /// When it started running (for a held deployment: when it was approved).
    pub started_at: i64,
}

/// Which deployment of a service in an environment runs now: the one that most
/// recently started and succeeded, unless that one stopped the service. With
/// `with_rollout`, a deployment in progress counts too (its new instances read their
/// configuration while it waits for them to be healthy).
///
/// Deployments are ordered by when they started, not by id: a held deployment
/// approved late runs after newer ones that finished meanwhile.
pub fn running_now(history: &[DeploymentFacts], with_rollout: bool) -> Option<DeploymentFacts> {
    let latest = history
        .iter()
        .filter(|d| {
            d.state == DeploymentState::Succeeded
                || (with_rollout && d.state == DeploymentState::InProgress)
        })
        .max_by_key(|d| (d.started_at, d.id))?;
    (latest.kind != DeploymentKind::Stop).then_some(*latest)
}

/// What a new revision of the definition changes, per environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionChange {
    /// Environments added, removed, or whose policy changed: pipeline order (`after`),
    /// `approval`, `hosts`, nodes (what runs where, how many, which driver) or pools.
    pub policy: BTreeSet<String>,
    /// Environments whose declared configuration (environment or node layer) changed.
    pub config: BTreeSet<String>,
    /// Services added, removed or changed (build, run, health, ports, ...).
    pub services: BTreeSet<String>,
}

impl RevisionChange {
    pub fn is_empty(&self) -> bool {
        self.policy.is_empty() && self.config.is_empty() && self.services.is_empty()
    }
}

/// Compares two revisions of the definition (`None`: nothing applied yet, so every
/// environment and service is new).
pub fn revision_change(old: Option<&Definition>, new: &Definition) -> RevisionChange {
    let mut change = RevisionChange::default();
    let empty = Definition {
        services: Default::default(),
        environments: Default::default(),
        pipeline: Vec::new(),
    };
    let old = old.unwrap_or(&empty);
    let envs: BTreeSet<&String> = old
        .environments
        .keys()
        .chain(new.environments.keys())
        .collect();
    for name in envs {
        match (old.environments.get(name), new.environments.get(name)) {
            (Some(a), Some(b)) => {
                if policy_of(a) != policy_of(b) {
                    change.policy.insert(name.clone());
                }
                if config_of(a) != config_of(b) {
                    change.config.insert(name.clone());
                }
            }
            _ => {
                change.policy.insert(name.clone());
            }
        }
    }
    let services: BTreeSet<&String> = old.services.keys().chain(new.services.keys()).collect();
    for name in services {
        if old.services.get(name) != new.services.get(name) {
            change.services.insert(name.clone());
        }
    }
    change
}

/// A node's name, what it runs (and how many) and its driver.
type NodePolicy<'a> = (
    &'a str,
    &'a [(String, u32)],
    Option<crate::model::DriverKind>,
);

/// The parts of an environment that decide what may run where and who must agree.
#[derive(PartialEq)]
struct Policy<'a> {
    after: &'a Option<String>,
    approval: Option<Duration>,
    hosts: &'a Option<crate::model::HostsSpec>,
    nodes: Vec<NodePolicy<'a>>,
    pools: &'a std::collections::BTreeMap<String, crate::model::Pool>,
    resume_interrupted: bool,
}

fn policy_of(env: &Environment) -> Policy<'_> {
    Policy {
        after: &env.after,
        approval: env.approval,
        hosts: &env.hosts,
        nodes: env
            .nodes
            .iter()
            .map(|n: &Node| (n.name.as_str(), n.services.as_slice(), n.driver))
            .collect(),
        pools: &env.pools,
        resume_interrupted: env.resume_interrupted,
    }
}

type ConfigLayers<'a> = (
    &'a std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    Vec<&'a std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
);

fn config_of(env: &Environment) -> ConfigLayers<'_> {
    (&env.config, env.nodes.iter().map(|n| &n.config).collect())
}

/// What the pipeline gate decides of a deploy or promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The first environment, or the version was healthy in the one before.
    Open,
    /// Never healthy in `previous`, deployed anyway with `--force` (recorded).
    Forced { previous: String },
    /// Never healthy in `previous`; refused.
    Closed { previous: String },
}

/// The pipeline rule: a version reaches an environment only after it was healthy in
/// the environment before it. `previous` comes from the controller's stored definition.
pub fn pipeline_gate(previous: Option<&str>, healthy_there: bool, force: bool) -> Gate {
    match previous {
        None => Gate::Open,
        Some(_) if healthy_there => Gate::Open,
        Some(previous) if force => Gate::Forced {
            previous: previous.to_owned(),
        },
        Some(previous) => Gate::Closed {
            previous: previous.to_owned(),
        },
    }
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalRefusal {
    /// Nobody may approve their own deployment (four eyes).
    OwnDeployment,
    /// It is no longer waiting: approved, rejected or run meanwhile.
    NotHeld(DeploymentState),
    /// Its approval time ran out.
    Expired,
}

/// Whether `approver` may approve a deployment held since `held_since` by `author`,
/// at `now`, when approvals may take `window`.
pub fn may_approve(
    state: DeploymentState,
    author: &str,
    approver: &str,
    held_since: i64,
    window: Option<Duration>,
    now: i64,
) -> Result<(), ApprovalRefusal> {
    if !state.can_be_approved() {
        return Err(ApprovalRefusal::NotHeld(state));
    }
    if is_expired(held_since, window, now) {
        return Err(ApprovalRefusal::Expired);
    }
    if author == approver {
        return Err(ApprovalRefusal::OwnDeployment);
    }
    Ok(())
}

/// Whether a deployment held since `held_since` has run out of approval time.
pub fn is_expired(held_since: i64, window: Option<Duration>, now: i64) -> bool {
    window.is_some_and(|w| now > held_since.saturating_add(w.as_millis() as i64))
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackRefusal {
    /// The version asked for never ran to success here; `known` are those that did.
    NeverRan { known: Vec<String> },
    /// No version other than the current one ever ran to success here.
    NothingEarlier,
}

/// The deployment a rollback returns to: the given version's newest successful run, or
/// by default the newest successful run of a version other than the current one.
/// `history` pairs each deployment with its version; stops never count.
pub fn rollback_target(
    history: &[(DeploymentFacts, &str)],
    current: Option<&str>,
    wanted: Option<&str>,
) -> Result<i64, RollbackRefusal> {
    let mut ran: Vec<&(DeploymentFacts, &str)> = history
        .iter()
        .filter(|(d, _)| d.state.can_be_rollback_target() && d.kind != DeploymentKind::Stop)
        .collect();
    ran.sort_by_key(|(d, _)| std::cmp::Reverse((d.started_at, d.id)));
    match wanted {
        Some(version) => ran
            .iter()
            .find(|(_, v)| *v == version)
            .map(|(d, _)| d.id)
            .ok_or_else(|| {
                let mut known: Vec<String> = Vec::new();
                for (_, v) in &ran {
                    if !known.iter().any(|k| k == v) {
                        known.push((*v).to_owned());
                    }
                }
                RollbackRefusal::NeverRan { known }
            }),
        None => ran
            .iter()
            .find(|(_, v)| Some(*v) != current)
            .map(|(d, _)| d.id)
            .ok_or(RollbackRefusal::NothingEarlier),
    }
}

/// What a rollout did to one instance slot, in the order it did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Started an instance where none was.
    Started,
    /// Replaced the instance there (`had_previous`: one ran before and can come back).
    Replaced { had_previous: bool },
    /// Stopped an instance no longer wanted.
    Stopped,
}

/// How to undo one step of a failed rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// Stop the new instance; nothing comes back.
    Stop,
    /// Stop the new instance and start the previous one again.
    StopAndRestore,
    /// Start the stopped instance again.
    Restore,
}

/// The undo plan of a failed rollout: every step undone, newest first (so a slot
/// touched twice ends as it was before the first), as indexes into `done`.
pub fn undo_order(done: &[Done]) -> Vec<(usize, Undo)> {
    done.iter()
        .enumerate()
        .rev()
        .map(|(i, step)| {
            let undo = match step {
                Done::Started
                | Done::Replaced {
                    had_previous: false,
                } => Undo::Stop,
                Done::Replaced { had_previous: true } => Undo::StopAndRestore,
                Done::Stopped => Undo::Restore,
            };
            (i, undo)
        })
        .collect()
}

/// Whether an instance counts as healthy for a rollout's `min_healthy_time`: running its
/// first process (no restart since it started) with no failing check.
pub fn is_steady(
    state: crate::lifecycle::InstanceState,
    health: crate::lifecycle::Health,
    restarts: u32,
) -> bool {
    state == crate::lifecycle::InstanceState::Running
        && health != crate::lifecycle::Health::Unhealthy
        && restarts == 0
}

/// Whether the reconciler counts an observed instance as healthy (so it is left alone
/// when it already runs what is wanted): running, no failing check, and on a host that
/// still takes instances (a drained host's instances are replaced elsewhere).
pub fn counts_as_healthy(
    state: crate::lifecycle::InstanceState,
    health: crate::lifecycle::Health,
    host_takes_instances: bool,
) -> bool {
    state == crate::lifecycle::InstanceState::Running
        && health != crate::lifecycle::Health::Unhealthy
        && host_takes_instances
}

/// The services a reschedule deploys again: those with an instance on a host that no
/// longer takes instances, each once, sorted. `running` pairs service and node.
pub fn services_to_move(running: &[(&str, &str)], unusable: &[&str]) -> Vec<String> {
    let mut services: Vec<String> = running
        .iter()
        .filter(|(_, node)| unusable.contains(node))
        .map(|(service, _)| (*service).to_owned())
        .collect();
    services.sort();
    services.dedup();
    services
}

/// How the controller finishes a deployment it found interrupted at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Deploy again what ran before it: that deployment's artifact, spec and
    /// configuration (as a failed deploy's rollback would).
    RollBackTo(i64),
    /// Deploy its own spec and version again, so every instance ends on it.
    Resume(i64),
    /// Nothing ran before it, or it was a stop: stop every instance of the service.
    StopAll,
    /// A later deployment (this one) already decided what runs: nothing to do.
    Superseded(i64),
}

/// The rule for an interrupted deployment, over the service's history in that
/// environment (which includes `interrupted`): by default back to the deployment that
/// ran before it; with `resume` (the environment's `recovery: resume`) forward to it.
/// A stop is always finished, and a deployment newer than it wins.
pub fn recovery(
    interrupted: &DeploymentFacts,
    history: &[DeploymentFacts],
    resume: bool,
) -> Resolution {
    let newer = history
        .iter()
        .filter(|d| {
            (d.started_at, d.id) > (interrupted.started_at, interrupted.id)
                && (d.state == DeploymentState::Succeeded || d.state == DeploymentState::InProgress)
        })
        .max_by_key(|d| (d.started_at, d.id));
    if let Some(newer) = newer {
        return Resolution::Superseded(newer.id);
    }
    match interrupted.kind {
        DeploymentKind::Stop => return Resolution::StopAll,
        DeploymentKind::Definition => return Resolution::Superseded(0),
        _ if resume => return Resolution::Resume(interrupted.id),
        _ => {}
    }
    let before: Vec<DeploymentFacts> = history
        .iter()
        .filter(|d| (d.started_at, d.id) < (interrupted.started_at, interrupted.id))
        .copied()
        .collect();
    match running_now(&before, false) {
        Some(previous) => Resolution::RollBackTo(previous.id),
        None => Resolution::StopAll,
    }
}

/// Why the instances of a running deployment differ from its set, if they do: an
/// instance missing, one not wanted, or one on another version. `wanted` are the
/// instance numbers of the deployment's slots; `observed` pairs each running
/// instance's number with its version. Health is not compared: an unhealthy instance
/// is its agent's to restart, and a reconcile must not churn a crash-looping service.
pub fn reconcile_reason(wanted: &[u32], version: &str, observed: &[(u32, &str)]) -> Option<String> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !observed.iter().any(|(i, _)| i == *w))
        .map(|w| format!("#{w}"))
        .collect();
    if !missing.is_empty() {
        return Some(format!("instance {} was missing", missing.join(", ")));
    }
    if let Some((i, _)) = observed.iter().find(|(i, _)| !wanted.contains(i)) {
        return Some(format!("instance #{i} is not wanted"));
    }
    observed
        .iter()
        .find(|(_, v)| *v != version)
        .map(|(i, v)| format!("instance #{i} ran `{v}`, not `{version}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeploymentKind::*;
    use DeploymentState::*;

    fn d(
        id: i64,
        kind: DeploymentKind,
        state: DeploymentState,
        started_at: i64,
    ) -> DeploymentFacts {
        DeploymentFacts {
            id,
            kind,
            state,
            started_at,
        }
    }

    #[test]
    fn which_deployment_runs_now() {
        let table: Vec<(&str, Vec<DeploymentFacts>, bool, Option<i64>)> = vec![
            ("nothing ever ran", vec![], false, None),
            (
                "the newest success",
                vec![d(1, Deploy, Succeeded, 10), d(2, Deploy, Succeeded, 20)],
                false,
                Some(2),
            ),
            (
                "failures and rejections do not count",
                vec![
                    d(1, Deploy, Succeeded, 10),
                    d(2, Deploy, RolledBack, 20),
                    d(3, Deploy, Rejected, 30),
                    d(4, Deploy, PendingApproval, 40),
                ],
                false,
                Some(1),
            ),
            (
                "a stop means nothing runs",
                vec![d(1, Deploy, Succeeded, 10), d(2, Stop, Succeeded, 20)],
                false,
                None,
            ),
            (
                "an older held deployment approved after a stop runs",
                vec![
                    d(1, Deploy, Succeeded, 10),
                    d(3, Stop, Succeeded, 30),
                    d(2, Deploy, Succeeded, 40),
                ],
                false,
                Some(2),
            ),
            (
                "a rollout counts only when asked",
                vec![d(1, Deploy, Succeeded, 10), d(2, Config, InProgress, 20)],
                false,
                Some(1),
            ),
            (
                "a rollout in progress",
                vec![d(1, Deploy, Succeeded, 10), d(2, Config, InProgress, 20)],
                true,
                Some(2),
            ),
        ];
        for (what, history, with_rollout, expected) in table {
            assert_eq!(
                running_now(&history, with_rollout).map(|d| d.id),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn the_pipeline_gate() {
        assert_eq!(pipeline_gate(None, false, false), Gate::Open);
        assert_eq!(pipeline_gate(Some("ci"), true, false), Gate::Open);
        assert_eq!(
            pipeline_gate(Some("ci"), false, true),
            Gate::Forced {
                previous: "ci".into()
            }
        );
        assert_eq!(
            pipeline_gate(Some("ci"), false, false),
            Gate::Closed {
                previous: "ci".into()
            }
        );
    }

    #[test]
    fn approval_rules() {
        let hour = Some(Duration::from_secs(3600));
        let table = [
            (PendingApproval, "ann", "bob", 0, hour, 1000, Ok(())),
            (
                PendingApproval,
                "ann",
                "ann",
                0,
                hour,
                1000,
                Err(ApprovalRefusal::OwnDeployment),
            ),
            (
                Rejected,
                "ann",
                "bob",
                0,
                hour,
                1000,
                Err(ApprovalRefusal::NotHeld(Rejected)),
            ),
            (
                InProgress,
                "ann",
                "bob",
                0,
                hour,
                1000,
                Err(ApprovalRefusal::NotHeld(InProgress)),
            ),
            (
                PendingApproval,
                "ann",
                "bob",
                0,
                hour,
                3_600_001,
                Err(ApprovalRefusal::Expired),
            ),
            (PendingApproval, "ann", "bob", 0, None, i64::MAX, Ok(())),
        ];
        for (state, author, approver, since, window, now, expected) in table {
            assert_eq!(
                may_approve(state, author, approver, since, window, now),
                expected,
                "{state:?} {author} {approver} {now}"
            );
        }
    }

    fn definition(text: &str) -> crate::model::Definition {
        crate::load(text, "wharf.yaml", &crate::AnyFolder).unwrap()
    }

    const BASE: &str = r#"
services:
  web: { build: ./web, run: ["python3", "app.py"], port: http }
environments:
  ci: { config: { web: { LEVEL: debug } } }
  production: { after: ci, approval: required, nodes: [{ name: a, services: [{ name: web, instances: 2 }] }] }
"#;

    #[test]
    fn what_a_revision_changes() {
        let base = definition(BASE);
        let first = revision_change(None, &base);
        assert_eq!(
            first.policy.iter().collect::<Vec<_>>(),
            ["ci", "production"]
        );
        assert!(revision_change(Some(&base), &base).is_empty());

        let table = [
            (
                "approval dropped",
                BASE.replace("approval: required, ", ""),
                &["production"][..],
                &[][..],
                &[][..],
            ),
            (
                "scaled",
                BASE.replace("instances: 2", "instances: 3"),
                &["production"],
                &[],
                &[],
            ),
            (
                "pipeline reordered",
                BASE.replace("after: ci, ", ""),
                &["production"],
                &[],
                &[],
            ),
            (
                "config changed",
                BASE.replace("debug", "info"),
                &[],
                &["ci"],
                &[],
            ),
            (
                "service changed",
                BASE.replace("app.py", "main.py"),
                &[],
                &[],
                &["web"],
            ),
        ];
        for (what, text, policy, config, services) in table {
            let change = revision_change(Some(&base), &definition(&text));
            assert_eq!(change.policy.iter().collect::<Vec<_>>(), policy, "{what}");
            assert_eq!(change.config.iter().collect::<Vec<_>>(), config, "{what}");
            assert_eq!(
                change.services.iter().collect::<Vec<_>>(),
                services,
                "{what}"
            );
        }
    }

    #[test]
    fn the_rollback_target() {
        let ran = |id, version, state, at| (d(id, Deploy, state, at), version);
        let history = [
            ran(1, "v1", Succeeded, 10),
            ran(2, "v2", Succeeded, 20),
            ran(3, "v3", RolledBack, 30),
            ran(4, "v3", Interrupted, 40),
            (d(5, Stop, Succeeded, 50), "v2"),
            ran(6, "v2", Succeeded, 60),
        ];
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Result<i64, RollbackRefusal>,
        );
        let table: [Row; 4] = [
            ("the one before the current", Some("v2"), None, Ok(1)),
            (
                "a version asked for: its newest run",
                Some("v1"),
                Some("v2"),
                Ok(6),
            ),
            (
                "an interrupted or rolled-back version never ran",
                Some("v2"),
                Some("v3"),
                Err(RollbackRefusal::NeverRan {
                    known: vec!["v2".into(), "v1".into()],
                }),
            ),
            ("nothing runs now: the newest run", None, None, Ok(6)),
        ];
        for (what, current, wanted, expected) in table {
            assert_eq!(
                rollback_target(&history, current, wanted),
                expected,
                "{what}"
            );
        }
        assert_eq!(
            rollback_target(&[ran(1, "v1", Succeeded, 1)], Some("v1"), None),
            Err(RollbackRefusal::NothingEarlier)
        );
    }

    #[test]
    fn a_failed_rollout_is_undone_newest_first() {
        let done = [
            Done::Replaced { had_previous: true },
            Done::Started,
            Done::Stopped,
            Done::Replaced {
                had_previous: false,
            },
        ];
        assert_eq!(
            undo_order(&done),
            [
                (3, Undo::Stop),
                (2, Undo::Restore),
                (1, Undo::Stop),
                (0, Undo::StopAndRestore),
            ]
        );
        assert!(undo_order(&[]).is_empty());
    }

    #[test]
    fn which_instances_are_steady() {
        use crate::lifecycle::{Health, InstanceState};
        let table = [
            (InstanceState::Running, Health::Healthy, 0, true),
            (InstanceState::Running, Health::Unknown, 0, true),
            (InstanceState::Running, Health::Unhealthy, 0, false),
            (InstanceState::Running, Health::Healthy, 1, false),
            (InstanceState::Restarting, Health::Healthy, 0, false),
            (InstanceState::Starting, Health::Unknown, 0, false),
        ];
        for (state, health, restarts, steady) in table {
            assert_eq!(
                is_steady(state, health, restarts),
                steady,
                "{state:?} {health:?} {restarts}"
            );
        }
    }

    #[test]
    fn which_instances_the_reconciler_counts_as_healthy() {
        use crate::lifecycle::{Health, InstanceState};
        let table = [
            (InstanceState::Running, Health::Healthy, true, true),
            (InstanceState::Running, Health::Unknown, true, true),
            (InstanceState::Running, Health::Healthy, false, false),
            (InstanceState::Running, Health::Unhealthy, true, false),
            (InstanceState::Restarting, Health::Healthy, true, false),
        ];
        for (state, health, takes, healthy) in table {
            assert_eq!(
                counts_as_healthy(state, health, takes),
                healthy,
                "{state:?} {health:?} {takes}"
            );
        }
    }

    #[test]
    fn which_services_a_reschedule_moves() {
        let running = [("web", "a"), ("web", "b"), ("db", "b"), ("cache", "c")];
        assert_eq!(services_to_move(&running, &["b"]), ["db", "web"]);
        assert!(services_to_move(&running, &[]).is_empty());
        assert_eq!(services_to_move(&running, &["c", "z"]), ["cache"]);
    }

    fn facts(id: i64, kind: DeploymentKind, state: DeploymentState) -> DeploymentFacts {
        DeploymentFacts {
            id,
            kind,
            state,
            started_at: id * 10,
        }
    }

    #[test]
    fn an_interrupted_deploy_is_finished_by_the_documented_rule() {
        let v1 = facts(1, Deploy, Succeeded);
        let failed = facts(2, Deploy, RolledBack);
        let cut = |kind| facts(3, kind, Interrupted);
        let table: &[(&str, Vec<DeploymentFacts>, DeploymentKind, bool, Resolution)] = &[
            (
                "back to what ran before",
                vec![v1, failed],
                Deploy,
                false,
                Resolution::RollBackTo(1),
            ),
            (
                "resume where asked",
                vec![v1],
                Deploy,
                true,
                Resolution::Resume(3),
            ),
            (
                "a first deploy stops",
                vec![],
                Deploy,
                false,
                Resolution::StopAll,
            ),
            (
                "after a stop nothing runs",
                vec![v1, facts(2, Stop, Succeeded)],
                Promote,
                false,
                Resolution::StopAll,
            ),
            (
                "a stop is finished",
                vec![v1],
                Stop,
                true,
                Resolution::StopAll,
            ),
            (
                "an interrupted config roll goes back",
                vec![v1],
                Config,
                false,
                Resolution::RollBackTo(1),
            ),
            (
                "a newer deploy wins",
                vec![v1, facts(4, Deploy, Succeeded)],
                Deploy,
                false,
                Resolution::Superseded(4),
            ),
            (
                "one in progress wins",
                vec![v1, facts(4, Deploy, InProgress)],
                Deploy,
                false,
                Resolution::Superseded(4),
            ),
            (
                "held definitions run nothing",
                vec![v1],
                Definition,
                false,
                Resolution::Superseded(0),
            ),
        ];
        for (why, before, kind, resume, want) in table {
            let interrupted = cut(*kind);
            let mut history = before.clone();
            history.push(interrupted);
            assert_eq!(recovery(&interrupted, &history, *resume), *want, "{why}");
        }
    }

    #[test]
    fn reconcile_names_what_differs_from_the_running_set() {
        type Observed<'a> = &'a [(u32, &'a str)];
        let table: &[(Observed, Option<&str>)] = &[
            (&[(0, "v1"), (1, "v1"), (2, "v1")], None),
            (&[(0, "v1"), (2, "v1")], Some("instance #1 was missing")),
            (&[], Some("instance #0, #1, #2 was missing")),
            (
                &[(0, "v1"), (1, "v1"), (2, "v1"), (3, "v1")],
                Some("instance #3 is not wanted"),
            ),
            (
                &[(0, "v2"), (1, "v1"), (2, "v1")],
                Some("instance #0 ran `v2`, not `v1`"),
            ),
        ];
        for (observed, want) in table {
            assert_eq!(
                reconcile_reason(&[0, 1, 2], "v1", observed).as_deref(),
                *want,
                "{observed:?}"
            );
        }
    }
}
