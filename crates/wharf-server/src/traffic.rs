//! Traffic through the service addresses of every host, added up per service and per
//! instance (an instance's figures are what every host's address measured of the
//! requests it sent there).

use std::collections::BTreeMap;

use wharf_api::traffic::{Counts, InstanceTraffic, ServiceTraffic};

use crate::fleet::Fleet;

/// A service's totals, and its counts by (node, instance).
type Sums = (Counts, BTreeMap<(String, u32), Counts>);

pub fn collect(fleet: &Fleet) -> Vec<ServiceTraffic> {
    let mut services: BTreeMap<(String, String), Sums> = BTreeMap::new();
    let plans = fleet.plans_by_port();
    for (reporter, addresses) in fleet.address_counts() {
        for address in addresses {
            let entry = services
                .entry((address.env.clone(), address.service.clone()))
                .or_default();
            entry.0.add(&address.totals);
            for backend in &address.backends {
                let host = backend.host_id.or(reporter);
                let key = (
                    host,
                    address.env.clone(),
                    address.service.clone(),
                    backend.port,
                );
                if let Some(instance) = plans.get(&key) {
                    entry
                        .1
                        .entry(instance.clone())
                        .or_default()
                        .add(&backend.counts);
                }
            }
        }
    }
    services
        .into_iter()
        .map(|((env, service), (totals, instances))| ServiceTraffic {
            env,
            service,
            totals,
            instances: instances
                .into_iter()
                .map(|((node, instance), counts)| InstanceTraffic {
                    node,
                    instance,
                    counts,
                })
                .collect(),
        })
        .collect()
}
