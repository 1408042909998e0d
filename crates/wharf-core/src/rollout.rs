//! How a rolling upgrade replaces instances: beside the old ones (surge) where the new
//! instance can listen on a port of its own, in place where the service owns a fixed
//! port. Pure functions over the reconciler's plan, like [`crate::plan`].
//!
//! A surged replacement starts the new instance under a fresh instance number (and so a
//! fresh port), waits for its health, moves traffic to it and only then drains and stops
//! the old one: nothing serving is stopped before its successor serves. Instance numbers
//! therefore change across surged rollouts; [`number_slots`] keeps every desired slot on
//! the number its node already runs, so a deploy that changes nothing replaces nothing.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Slot, Step};

/// How a service's rollouts run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(flatten)]
    pub limits: Limits,
    /// Rolling, blue-green or canary (specs stored before strategies roll).
    #[serde(default)]
    pub strategy: crate::strategy::Strategy,
    /// The fixed port of the preview address, for the strategies that have one.
    #[serde(default)]
    pub preview_port: Option<u16>,
    /// How long a stopping instance may take to answer what it was sent.
    #[serde(with = "crate::model::millis")]
    pub drain_timeout: Duration,
    /// How long a request waits for an instance while none serves.
    #[serde(with = "crate::model::millis")]
    pub pause_timeout: Duration,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            strategy: Default::default(),
            preview_port: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            pause_timeout: DEFAULT_PAUSE_TIMEOUT,
        }
    }
}

pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How far a rollout may go above and below the instance count, as in Kubernetes
/// Deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// New instances started beside the old ones at once.
    pub max_surge: u32,
    /// Instances replaced in place (stopped, then started) at once.
    pub max_unavailable: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

impl Limits {
    /// What applies to a service: one that owns a fixed port cannot run two instances
    /// on it, so it is replaced in place (at least one at a time).
    pub fn effective(self, surge_possible: bool) -> Limits {
        if surge_possible {
            self
        } else {
            Limits {
                max_surge: 0,
                max_unavailable: self.max_unavailable.max(self.max_surge).max(1),
            }
        }
    }
}

/// The instance numbers the desired slots get: each slot keeps its number when its node
/// runs an instance under it; otherwise it takes the number of an instance its node runs
/// that no other slot keeps (lowest first), so an instance started by a surged rollout
/// under a new number still counts as that slot's. `desired` and `observed` are
/// (node, number) pairs; the result is in the order of `desired`.
pub fn number_slots(desired: &[Slot], observed: &[Slot]) -> Vec<u32> {
    // Sets, not scans: a pool of 10,000 instances compares every slot with every other.
    let running: HashSet<&Slot> = observed.iter().collect();
    let wanted: HashSet<&Slot> = desired.iter().collect();
    let mut numbers: Vec<Option<u32>> = desired
        .iter()
        .map(|d| running.contains(d).then_some(d.instance))
        .collect();
    // The spare instances of each node, lowest number first.
    let mut spare: BTreeMap<&str, VecDeque<u32>> = BTreeMap::new();
    let mut unclaimed: Vec<&Slot> = observed.iter().filter(|o| !wanted.contains(o)).collect();
    unclaimed.sort();
    for o in unclaimed {
        spare
            .entry(o.node.as_str())
            .or_default()
            .push_back(o.instance);
    }
    for (i, want) in desired.iter().enumerate() {
        if numbers[i].is_some() {
            continue;
        }
        if let Some(n) = spare
            .get_mut(want.node.as_str())
            .and_then(VecDeque::pop_front)
        {
            numbers[i] = Some(n);
        }
    }
    // A slot left without a running instance keeps its own number unless another node
    // runs an instance under it (two instances of one number would share a view).
    let mut used = Used::new(
        numbers
            .iter()
            .flatten()
            .copied()
            .chain(observed.iter().map(|o| o.instance)),
    );
    for (i, want) in desired.iter().enumerate() {
        if numbers[i].is_none() {
            let n = if used.contains(want.instance) {
                used.fresh()
            } else {
                used.insert(want.instance);
                want.instance
            };
            numbers[i] = Some(n);
        }
    }
    numbers.into_iter().map(|n| n.unwrap_or_default()).collect()
}

/// Instance numbers in use, handing out the lowest free one. Numbers are only ever
/// added, so the lowest free one only moves up: each is found once, not by a scan.
struct Used {
    taken: HashSet<u32>,
    lowest_free: u32,
}

impl Used {
    fn new(numbers: impl IntoIterator<Item = u32>) -> Self {
        Self {
            taken: numbers.into_iter().collect(),
            lowest_free: 0,
        }
    }

    fn contains(&self, n: u32) -> bool {
        self.taken.contains(&n)
    }

    fn insert(&mut self, n: u32) {
        self.taken.insert(n);
    }

    /// The lowest number not in use, now in use.
    fn fresh(&mut self) -> u32 {
        while self.taken.contains(&self.lowest_free) {
            self.lowest_free = self.lowest_free.saturating_add(1);
        }
        let n = self.lowest_free;
        self.taken.insert(n);
        n
    }
}

/// Re-batches the replacements of `plan` under `limits`. Of each batch, up to
/// `max_surge` replacements are surged (their `to` slot gets a fresh number, not in
/// `taken`) and up to `max_unavailable` are in place; new slots still start first and
/// surplus instances still stop last. The caller renders the surged slots under their
/// new numbers.
pub fn roll(plan: Plan, limits: Limits, taken: &[u32]) -> Plan {
    let mut used = Used::new(
        taken
            .iter()
            .copied()
            .chain(plan.steps().map(|s| s.slot().instance))
            .chain(plan.unchanged.iter().map(|s| s.instance)),
    );
    let mut starts = Vec::new();
    let mut replaces = Vec::new();
    let mut stops = Vec::new();
    for step in plan.batches.into_iter().flatten() {
        match step {
            Step::Start { .. } => starts.push(step),
            Step::Replace { .. } => replaces.push(step),
            Step::Stop { .. } => stops.push(step),
        }
    }
    let mut batches = Vec::new();
    if !starts.is_empty() {
        batches.push(starts);
    }
    let per_batch = (limits.max_surge + limits.max_unavailable).max(1) as usize;
    for chunk in replaces.chunks(per_batch) {
        let batch = chunk
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, step)| match step {
                Step::Replace { from, mut to } if (i as u32) < limits.max_surge => {
                    to.slot.instance = used.fresh();
                    Step::Replace { from, to }
                }
                other => other,
            })
            .collect();
        batches.push(batch);
    }
    if !stops.is_empty() {
        batches.push(stops);
    }
    Plan {
        batches,
        unchanged: plan.unchanged,
    }
}

/// Whether a replacement starts its instance beside the old one.
pub fn is_surged(step: &Step) -> bool {
    matches!(step, Step::Replace { from, to } if from.slot != to.slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DesiredInstance, ObservedInstance, plan};

    fn slot(node: &str, n: u32) -> Slot {
        Slot {
            node: node.into(),
            instance: n,
        }
    }

    fn want(n: u32, v: &str) -> DesiredInstance {
        DesiredInstance {
            slot: slot("a", n),
            version: v.into(),
            digest: v.into(),
            config_digest: "c".into(),
        }
    }

    fn seen(n: u32, v: &str) -> ObservedInstance {
        ObservedInstance {
            slot: slot("a", n),
            version: v.into(),
            digest: v.into(),
            config_digest: "c".into(),
            healthy: true,
        }
    }

    #[test]
    fn a_large_pool_moving_hosts_gets_distinct_numbers() {
        // 10,000 instances leave 1,000 hosts for 1,000 others: every new slot needs a
        // number no running instance has.
        let observed: Vec<Slot> = (0..10_000)
            .map(|n| slot(&format!("old-{}", n % 1000), n))
            .collect();
        let desired: Vec<Slot> = (0..10_000)
            .map(|n| slot(&format!("new-{}", n % 1000), n))
            .collect();
        let numbers = number_slots(&desired, &observed);
        let distinct: HashSet<u32> = numbers.iter().copied().collect();
        assert_eq!(distinct.len(), 10_000);
        assert!(
            numbers.iter().all(|n| *n >= 10_000),
            "none shares a running number"
        );
    }

    #[test]
    fn slots_keep_the_numbers_their_nodes_run() {
        type Case = (&'static str, Vec<Slot>, Vec<Slot>, Vec<u32>);
        let table: Vec<Case> = vec![
            (
                "nothing runs",
                vec![slot("a", 0), slot("a", 1)],
                vec![],
                vec![0, 1],
            ),
            (
                "same numbers",
                vec![slot("a", 0), slot("a", 1)],
                vec![slot("a", 0), slot("a", 1)],
                vec![0, 1],
            ),
            (
                "after a surged rollout",
                vec![slot("a", 0), slot("a", 1)],
                vec![slot("a", 2), slot("a", 3)],
                vec![2, 3],
            ),
            (
                "half surged",
                vec![slot("a", 0), slot("a", 1)],
                vec![slot("a", 1), slot("a", 2)],
                vec![2, 1],
            ),
            (
                "scaled up after a surge",
                vec![slot("a", 0), slot("a", 1), slot("a", 2)],
                vec![slot("a", 2), slot("a", 3)],
                vec![3, 1, 2],
            ),
            (
                "another node's number is not taken",
                vec![slot("a", 0), slot("b", 1)],
                vec![slot("a", 1)],
                vec![1, 0],
            ),
        ];
        for (case, desired, observed, expected) in table {
            assert_eq!(number_slots(&desired, &observed), expected, "{case}");
        }
    }

    #[test]
    fn numbers_are_never_shared() {
        let desired: Vec<Slot> = (0..4)
            .map(|n| slot(if n % 2 == 0 { "a" } else { "b" }, n))
            .collect();
        let observed = vec![slot("b", 0), slot("a", 5), slot("a", 1)];
        let mut numbers = number_slots(&desired, &observed);
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), 4);
    }

    #[test]
    fn surged_replacements_start_under_fresh_numbers_one_batch_each() {
        let desired: Vec<_> = (0..3).map(|n| want(n, "v2")).collect();
        let observed: Vec<_> = (0..3).map(|n| seen(n, "v1")).collect();
        let rolled = roll(plan(&desired, &observed, 1), Limits::default(), &[0, 1, 2]);
        let moves: Vec<Vec<(u32, u32)>> = rolled
            .batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|s| match s {
                        Step::Replace { from, to } => (from.slot.instance, to.slot.instance),
                        _ => panic!("only replacements"),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(moves, vec![vec![(0, 3)], vec![(1, 4)], vec![(2, 5)]]);
        assert!(rolled.steps().all(is_surged));
    }

    #[test]
    fn limits_mix_surged_and_in_place_replacements() {
        let desired: Vec<_> = (0..4).map(|n| want(n, "v2")).collect();
        let observed: Vec<_> = (0..4).map(|n| seen(n, "v1")).collect();
        let limits = Limits {
            max_surge: 1,
            max_unavailable: 1,
        };
        let rolled = roll(plan(&desired, &observed, 1), limits, &[0, 1, 2, 3]);
        let shape: Vec<Vec<bool>> = rolled
            .batches
            .iter()
            .map(|b| b.iter().map(is_surged).collect())
            .collect();
        assert_eq!(shape, vec![vec![true, false], vec![true, false]]);
    }

    #[test]
    fn a_fixed_port_is_replaced_in_place() {
        let table = [
            (
                Limits::default(),
                Limits {
                    max_surge: 0,
                    max_unavailable: 1,
                },
            ),
            (
                Limits {
                    max_surge: 3,
                    max_unavailable: 0,
                },
                Limits {
                    max_surge: 0,
                    max_unavailable: 3,
                },
            ),
            (
                Limits {
                    max_surge: 0,
                    max_unavailable: 2,
                },
                Limits {
                    max_surge: 0,
                    max_unavailable: 2,
                },
            ),
        ];
        for (given, expected) in table {
            assert_eq!(given.effective(false), expected);
            assert_eq!(given.effective(true), given);
        }
        let rolled = roll(
            plan(&[want(0, "v2")], &[seen(0, "v1")], 1),
            Limits::default().effective(false),
            &[0],
        );
        assert!(!rolled.steps().any(is_surged));
    }

    #[test]
    fn starts_come_first_and_stops_last() {
        let desired = vec![want(0, "v2"), want(2, "v2")];
        let observed = vec![seen(0, "v1"), seen(1, "v1")];
        let rolled = roll(plan(&desired, &observed, 1), Limits::default(), &[0, 1]);
        let kinds: Vec<&str> = rolled
            .batches
            .iter()
            .map(|b| match &b[0] {
                Step::Start { .. } => "start",
                Step::Replace { .. } => "replace",
                Step::Stop { .. } => "stop",
            })
            .collect();
        assert_eq!(kinds, vec!["start", "replace", "stop"]);
        let Step::Replace { to, .. } = &rolled.batches[1][0] else {
            unreachable!()
        };
        assert_eq!(to.slot.instance, 3, "0, 1 run and 2 starts: 3 is fresh");
    }
}
