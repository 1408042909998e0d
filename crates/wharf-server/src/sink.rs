//! Turns what the agent observes into instance rows in the store.

use std::sync::Arc;

use wharf_agent::{InstancePlan, InstanceStatus, StatusSink};
use wharf_store::{InstanceRecord, Store};

/// Writes every observation of the agent to the store.
pub struct StoreSink(pub Arc<dyn Store>);

/// The instance row of what an agent observed.
pub fn record(plan: &InstancePlan, status: &InstanceStatus) -> InstanceRecord {
    InstanceRecord {
        env: plan.key.env.clone(),
        service: plan.key.service.clone(),
        node: plan.key.node.clone(),
        instance: plan.key.instance,
        version: plan.version.clone(),
        digest: plan.digest.clone(),
        config_digest: plan.config_digest.clone(),
        deployment_id: plan.deployment_id,
        pid: status.pid,
        port: plan.port,
        state: status.state,
        health: status.health,
        restarts: status.restarts,
        started_at: status.started_at,
        cpu_millis: status.cpu_millis,
        memory_bytes: status.memory_bytes,
    }
}

impl StatusSink for StoreSink {
    fn instance_changed(&self, plan: &InstancePlan, status: &InstanceStatus) {
        if let Err(e) = self.0.put_instance(&record(plan, status)) {
            tracing::error!(instance = %plan.key, "cannot record instance status: {e}");
        }
    }
}
