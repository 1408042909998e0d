//! Placement of pooled instances: which hosts run a service when the definition lets
//! wharf choose. A pure function, like the reconciler: hosts and current placements in,
//! placements (or the reason each instance fits nowhere) out.
//!
//! Feasibility first (the host takes instances, has the free CPU and memory the service
//! requests, is under the per-host limit), then ranking (with `spread: host`, the host
//! running the fewest instances of the service; then the one with the most free
//! memory; then by name, so equal inputs give equal outputs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// CPU (thousandths of a core) and memory (bytes) a service requests or a host has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    fn fits_in(self, free: Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.memory_bytes <= free.memory_bytes
    }

    fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }

    fn add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_bytes: self.memory_bytes + other.memory_bytes,
        }
    }
}

/// How pooled instances are spread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// As evenly over hosts as they allow.
    #[default]
    Host,
    /// Fill the roomiest host first, spread or not.
    None,
}

/// What a pool asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRequest {
    pub count: u32,
    pub resources: Resources,
    pub spread: Spread,
    pub max_per_host: Option<u32>,
}

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    /// Whether it takes new instances (ready, not draining, down or lost).
    pub takes_instances: bool,
    /// Why it does not, for the reasons of an infeasible placement.
    pub state: String,
    pub capacity: Resources,
    /// What other services' instances on it request.
    pub used_by_others: Resources,
}

/// The instances that fit on no host, and why another fits on none, host by host.
/// The reasons are the same for each: once an instance fits nowhere, nothing changes
/// for the ones after it, so they are told once (10,000 instances over 1,000 hosts
/// would otherwise be ten million reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Infeasible {
    pub instances: Vec<u32>,
    pub reasons: Vec<String>,
}

/// Places instances `0..count` of a pool. `current` maps instances to the hosts they run
/// on now; an instance stays where it is while that host still takes instances and the
/// placement stays within limits, so a redeploy moves nothing needlessly.
pub fn place(
    request: &PoolRequest,
    hosts: &[HostView],
    current: &BTreeMap<u32, String>,
) -> Result<BTreeMap<u32, String>, Infeasible> {
    // Per-host tallies by index: this runs for every instance over every host.
    let mut used: Vec<Resources> = hosts.iter().map(|h| h.used_by_others).collect();
    let mut count_on: Vec<u32> = vec![0; hosts.len()];
    let index: BTreeMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let mut placed = BTreeMap::new();
    let limit = request.max_per_host.unwrap_or(u32::MAX);
    let fits = |h: usize, used: &[Resources], count_on: &[u32]| {
        hosts[h].takes_instances
            && count_on[h] < limit
            && request
                .resources
                .fits_in(hosts[h].capacity.saturating_sub(used[h]))
    };

    for (instance, host_name) in current.range(..request.count) {
        let Some(&h) = index.get(host_name.as_str()) else {
            continue;
        };
        if fits(h, &used, &count_on) {
            used[h] = used[h].add(request.resources);
            count_on[h] += 1;
            placed.insert(*instance, host_name.clone());
        }
    }

    let missing: Vec<u32> = (0..request.count)
        .filter(|i| !placed.contains_key(i))
        .collect();
    for (n, &instance) in missing.iter().enumerate() {
        let rank = |h: usize| {
            let spread = if request.spread == Spread::Host {
                count_on[h]
            } else {
                0
            };
            let free_memory = hosts[h]
                .capacity
                .memory_bytes
                .saturating_sub(used[h].memory_bytes);
            (spread, std::cmp::Reverse(free_memory))
        };
        let best = (0..hosts.len())
            .filter(|&h| fits(h, &used, &count_on))
            .min_by_key(|&h| rank(h));
        match best {
            Some(h) => {
                used[h] = used[h].add(request.resources);
                count_on[h] += 1;
                placed.insert(instance, hosts[h].name.clone());
            }
            None => {
                return Err(Infeasible {
                    instances: missing[n..].to_vec(),
                    reasons: why_not(request, hosts, &used, &count_on, limit),
                });
            }
        }
    }
    Ok(placed)
}

/// Why no host takes another instance, host by host.
fn why_not(
    request: &PoolRequest,
    hosts: &[HostView],
    used: &[Resources],
    count_on: &[u32],
    limit: u32,
) -> Vec<String> {
    if hosts.is_empty() {
        return vec!["no host has joined this environment".into()];
    }
    hosts
        .iter()
        .enumerate()
        .map(|(h, host)| {
            let free = host.capacity.saturating_sub(used[h]);
            if !host.takes_instances {
                format!("`{}` is {}", host.name, host.state)
            } else if count_on[h] >= limit {
                format!("`{}` already runs {limit} (max_per_host)", host.name)
            } else {
                format!(
                    "`{}` has {} cpu and {} MiB free, the service requests {} cpu and {} MiB",
                    host.name,
                    cores(free.cpu_millis),
                    free.memory_bytes >> 20,
                    cores(request.resources.cpu_millis),
                    request.resources.memory_bytes >> 20
                )
            }
        })
        .collect()
}

fn cores(millis: u64) -> String {
    format!("{}", millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GIB: u64 = 1 << 30;

    fn host(name: &str, cpu: u64, ready: bool) -> HostView {
        HostView {
            name: name.into(),
            takes_instances: ready,
            state: if ready { "ready".into() } else { "down".into() },
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: 64 * GIB,
            },
            used_by_others: Resources::default(),
        }
    }

    fn pool(count: u32, cpu: u64) -> PoolRequest {
        PoolRequest {
            count,
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: GIB / 4,
            },
            spread: Spread::Host,
            max_per_host: None,
        }
    }

    fn per_host(placed: &BTreeMap<u32, String>) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for h in placed.values() {
            *counts.entry(h.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn six_instances_spread_over_three_hosts_two_each() {
        let hosts = [
            host("a", 4000, true),
            host("b", 4000, true),
            host("c", 4000, true),
        ];
        let placed = place(&pool(6, 500), &hosts, &BTreeMap::new()).unwrap();
        assert_eq!(
            per_host(&placed).values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    #[test]
    fn instances_on_a_down_host_move_and_the_others_stay() {
        let hosts = [
            host("a", 4000, true),
            host("b", 4000, false),
            host("c", 4000, true),
        ];
        let current: BTreeMap<u32, String> = [(0, "a"), (1, "b"), (2, "c")]
            .into_iter()
            .map(|(i, h)| (i, h.to_string()))
            .collect();
        let placed = place(&pool(3, 500), &hosts, &current).unwrap();
        assert_eq!(placed[&0], "a");
        assert_eq!(placed[&2], "c");
        assert_ne!(placed[&1], "b");
    }

    #[test]
    fn an_infeasible_pool_names_the_instances_that_do_not_fit_and_why_per_host() {
        let hosts = [host("a", 1000, true), host("b", 4000, false)];
        let err = place(&pool(3, 600), &hosts, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.instances, [1, 2], "one fits on `a`, two do not");
        assert_eq!(err.reasons.len(), 2, "a reason per host, once");
        let reasons = err.reasons.join("; ");
        assert!(reasons.contains("`b` is down"), "{reasons}");
        assert!(reasons.contains("`a` has 0.4 cpu"), "{reasons}");
        let none = place(&pool(1, 1), &[], &BTreeMap::new()).unwrap_err();
        assert!(none.reasons[0].contains("no host has joined"));
    }

    #[test]
    fn a_large_infeasible_pool_is_told_once_not_per_instance() {
        let hosts: Vec<HostView> = (0..1000)
            .map(|i| host(&format!("h{i}"), 1000, false))
            .collect();
        let err = place(&pool(10_000, 100), &hosts, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.instances.len(), 10_000);
        assert_eq!(err.reasons.len(), 1000);
    }

    #[test]
    fn max_per_host_is_a_hard_limit() {
        let hosts = [host("a", 8000, true), host("b", 8000, true)];
        let request = PoolRequest {
            max_per_host: Some(1),
            ..pool(3, 100)
        };
        let err = place(&request, &hosts, &BTreeMap::new()).unwrap_err();
        assert!(err.reasons.iter().all(|r| r.contains("max_per_host")));
    }

    fn cluster() -> impl Strategy<Value = (Vec<HostView>, PoolRequest)> {
        let hosts = prop::collection::vec((500u64..8000, any::<bool>()), 1..6).prop_map(|hs| {
            hs.into_iter()
                .enumerate()
                .map(|(i, (cpu, ready))| host(&format!("h{i}"), cpu, ready))
                .collect::<Vec<_>>()
        });
        (hosts, 1u32..10, 100u64..1500).prop_map(|(hosts, count, cpu)| (hosts, pool(count, cpu)))
    }

    proptest! {
        #[test]
        fn placements_never_exceed_capacity_or_use_unready_hosts((hosts, request) in cluster()) {
            if let Ok(placed) = place(&request, &hosts, &BTreeMap::new()) {
                prop_assert_eq!(placed.len() as u32, request.count);
                for (name, n) in per_host(&placed) {
                    let h = hosts.iter().find(|h| h.name == name).unwrap();
                    prop_assert!(h.takes_instances);
                    prop_assert!(u64::from(n) * request.resources.cpu_millis <= h.capacity.cpu_millis);
                }
            }
        }

        #[test]
        fn placing_again_moves_nothing((hosts, request) in cluster()) {
            if let Ok(first) = place(&request, &hosts, &BTreeMap::new()) {
                prop_assert_eq!(place(&request, &hosts, &first).unwrap(), first);
            }
        }

        #[test]
        fn with_room_everywhere_spread_is_even(n_hosts in 1usize..6, count in 1u32..20) {
            let hosts: Vec<HostView> = (0..n_hosts).map(|i| host(&format!("h{i}"), 100_000, true)).collect();
            let placed = place(&pool(count, 100), &hosts, &BTreeMap::new()).unwrap();
            let counts = per_host(&placed);
            let max = counts.values().max().copied().unwrap_or(0);
            let min = if counts.len() < n_hosts { 0 } else { counts.values().min().copied().unwrap_or(0) };
            prop_assert!(max - min <= 1, "{:?}", counts);
        }
    }
}
