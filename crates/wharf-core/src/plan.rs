//! The reconciler: a pure function from desired and observed instances to a plan.
//!
//! Like Nomad's scheduler, it sees no processes, sockets or clocks: the caller passes a
//! snapshot and executes the plan it gets back. New slots start together in the first
//! batch; instances whose version or configuration changed are replaced in batches of
//! `max_parallel`, so the rest keep serving; surplus instances stop last.

use serde::{Deserialize, Serialize};

/// Identifies an instance position of one service in one environment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Slot {
    pub node: String,
    pub instance: u32,
}

/// What should run in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DesiredInstance {
    pub slot: Slot,
    pub version: String,
    pub digest: String,
    pub config_digest: String,
}

/// What was seen running in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObservedInstance {
    pub slot: Slot,
    pub version: String,
    pub digest: String,
    pub config_digest: String,
    /// Alive and passing its health check.
    pub healthy: bool,
}

impl ObservedInstance {
    fn satisfies(&self, want: &DesiredInstance) -> bool {
        self.healthy && self.digest == want.digest && self.config_digest == want.config_digest
    }
}

/// One action on one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    Start {
        to: DesiredInstance,
    },
    Replace {
        from: ObservedInstance,
        to: DesiredInstance,
    },
    Stop {
        from: ObservedInstance,
    },
}

impl Step {
    pub fn slot(&self) -> &Slot {
        match self {
            Step::Start { to } | Step::Replace { to, .. } => &to.slot,
            Step::Stop { from } => &from.slot,
        }
    }
}

/// Ordered batches of steps; each batch is gated on the health of the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub batches: Vec<Vec<Step>>,
    /// Slots already running what is desired.
    pub unchanged: Vec<Slot>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.batches.iter().all(Vec::is_empty)
    }

    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.batches.iter().flatten()
    }
}

/// Computes the plan that takes `observed` to `desired`.
pub fn plan(desired: &[DesiredInstance], observed: &[ObservedInstance], max_parallel: u32) -> Plan {
    let max_parallel = max_parallel.max(1) as usize;
    let mut starts = Vec::new();
    let mut replaces = Vec::new();
    let mut unchanged = Vec::new();
    // By slot: a pool of 10,000 instances is planned in milliseconds, not seconds.
    let seen_at = by_slot(observed, |o| &o.slot);
    let wanted_at = by_slot(desired, |d| &d.slot);
    for want in desired {
        match seen_at.get(&want.slot).copied() {
            None => starts.push(Step::Start { to: want.clone() }),
            Some(seen) if seen.satisfies(want) => unchanged.push(want.slot.clone()),
            Some(seen) => replaces.push(Step::Replace {
                from: seen.clone(),
                to: want.clone(),
            }),
        }
    }
    let stops: Vec<Step> = observed
        .iter()
        .filter(|o| !wanted_at.contains_key(&o.slot))
        .map(|o| Step::Stop { from: o.clone() })
        .collect();

    let mut batches = Vec::new();
    if !starts.is_empty() {
        batches.push(starts);
    }
    // Unhealthy instances serve nothing, so replacing them first costs no capacity.
    replaces.sort_by_key(|s| matches!(s, Step::Replace { from, .. } if from.healthy));
    for chunk in replaces.chunks(max_parallel) {
        batches.push(chunk.to_vec());
    }
    if !stops.is_empty() {
        batches.push(stops);
    }
    Plan { batches, unchanged }
}

/// Items by their slot (the first, where a slot repeats).
pub fn by_slot<T>(items: &[T], slot: impl Fn(&T) -> &Slot) -> std::collections::HashMap<&Slot, &T> {
    let mut index = std::collections::HashMap::with_capacity(items.len());
    for item in items {
        index.entry(slot(item)).or_insert(item);
    }
    index
}

/// The plan of a restart: every instance already running what is desired is replaced
/// too, by a fresh one (in one batch; the rollout re-batches).
pub fn replacing_unchanged(
    mut plan: Plan,
    desired: &[DesiredInstance],
    observed: &[ObservedInstance],
) -> Plan {
    let (seen_at, wanted_at) = (
        by_slot(observed, |o| &o.slot),
        by_slot(desired, |d| &d.slot),
    );
    let replaces: Vec<Step> = std::mem::take(&mut plan.unchanged)
        .into_iter()
        .filter_map(|slot| {
            let from = (*seen_at.get(&slot)?).clone();
            let to = (*wanted_at.get(&slot)?).clone();
            Some(Step::Replace { from, to })
        })
        .collect();
    if !replaces.is_empty() {
        plan.batches.push(replaces);
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn slot(n: u32) -> Slot {
        Slot {
            node: "laptop".into(),
            instance: n,
        }
    }

    fn want(n: u32, version: &str) -> DesiredInstance {
        DesiredInstance {
            slot: slot(n),
            version: version.into(),
            digest: format!("d-{version}"),
            config_digest: "c".into(),
        }
    }

    fn seen(n: u32, version: &str, healthy: bool) -> ObservedInstance {
        ObservedInstance {
            slot: slot(n),
            version: version.into(),
            digest: format!("d-{version}"),
            config_digest: "c".into(),
            healthy,
        }
    }

    #[test]
    fn first_deploy_starts_everything_in_one_batch() {
        let plan = plan(&[want(0, "v1"), want(1, "v1")], &[], 1);
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0].len(), 2);
    }

    #[test]
    fn upgrade_rolls_in_batches_of_max_parallel() {
        let desired: Vec<_> = (0..5).map(|n| want(n, "v2")).collect();
        let observed: Vec<_> = (0..5).map(|n| seen(n, "v1", true)).collect();
        let plan = plan(&desired, &observed, 2);
        let sizes: Vec<usize> = plan.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn healthy_matching_instances_are_left_alone() {
        let plan = plan(&[want(0, "v1")], &[seen(0, "v1", true)], 1);
        assert!(plan.is_empty());
        assert_eq!(plan.unchanged, vec![slot(0)]);
    }

    #[test]
    fn unhealthy_instances_are_replaced_first() {
        let desired: Vec<_> = (0..3).map(|n| want(n, "v2")).collect();
        let observed = vec![
            seen(0, "v1", true),
            seen(1, "v1", true),
            seen(2, "v1", false),
        ];
        let plan = plan(&desired, &observed, 1);
        assert_eq!(plan.batches[0][0].slot(), &slot(2));
    }

    #[test]
    fn surplus_instances_stop_last() {
        let plan = plan(
            &[want(0, "v2")],
            &[seen(0, "v1", true), seen(1, "v1", true)],
            1,
        );
        let last = plan.batches.last().unwrap();
        assert!(matches!(&last[0], Step::Stop { from } if from.slot == slot(1)));
    }

    /// Applies a plan to an observed state the way an executor would if every step worked.
    fn apply(observed: &[ObservedInstance], plan: &Plan) -> BTreeMap<Slot, (String, String)> {
        let mut state: BTreeMap<Slot, (String, String)> = observed
            .iter()
            .map(|o| (o.slot.clone(), (o.digest.clone(), o.config_digest.clone())))
            .collect();
        for step in plan.steps() {
            match step {
                Step::Start { to } | Step::Replace { to, .. } => {
                    state.insert(
                        to.slot.clone(),
                        (to.digest.clone(), to.config_digest.clone()),
                    );
                }
                Step::Stop { from } => {
                    state.remove(&from.slot);
                }
            }
        }
        state
    }

    fn states() -> impl Strategy<Value = (Vec<DesiredInstance>, Vec<ObservedInstance>, u32)> {
        let desired = prop::collection::btree_map(0u32..8, ("[ab]", "[xy]"), 0..8);
        let observed = prop::collection::btree_map(0u32..8, ("[ab]", "[xy]", any::<bool>()), 0..8);
        (desired, observed, 1u32..4).prop_map(|(d, o, p)| {
            let d = d
                .into_iter()
                .map(|(n, (v, c))| DesiredInstance {
                    slot: slot(n),
                    version: v.clone(),
                    digest: v,
                    config_digest: c,
                })
                .collect();
            let o = o
                .into_iter()
                .map(|(n, (v, c, h))| ObservedInstance {
                    slot: slot(n),
                    version: v.clone(),
                    digest: v,
                    config_digest: c,
                    healthy: h,
                })
                .collect();
            (d, o, p)
        })
    }

    proptest! {
        #[test]
        fn applying_the_plan_reaches_the_desired_state((desired, observed, parallel) in states()) {
            let plan = plan(&desired, &observed, parallel);
            let reached = apply(&observed, &plan);
            let wanted: BTreeMap<Slot, (String, String)> =
                desired.iter().map(|d| (d.slot.clone(), (d.digest.clone(), d.config_digest.clone()))).collect();
            prop_assert_eq!(reached, wanted);
        }

        #[test]
        fn every_slot_is_touched_at_most_once((desired, observed, parallel) in states()) {
            let plan = plan(&desired, &observed, parallel);
            let mut slots: Vec<&Slot> = plan.steps().map(Step::slot).collect();
            let before = slots.len();
            slots.sort();
            slots.dedup();
            prop_assert_eq!(before, slots.len());
        }

        #[test]
        fn replacement_batches_respect_max_parallel((desired, observed, parallel) in states()) {
            let plan = plan(&desired, &observed, parallel);
            for batch in &plan.batches {
                if batch.iter().any(|s| matches!(s, Step::Replace { .. })) {
                    prop_assert!(batch.len() <= parallel as usize);
                }
            }
        }

        #[test]
        fn a_satisfied_state_plans_nothing((desired, _o, parallel) in states()) {
            let observed: Vec<_> = desired.iter().map(|d| ObservedInstance {
                slot: d.slot.clone(), version: d.version.clone(), digest: d.digest.clone(),
                config_digest: d.config_digest.clone(), healthy: true,
            }).collect();
            prop_assert!(plan(&desired, &observed, parallel).is_empty());
        }
    }
}
