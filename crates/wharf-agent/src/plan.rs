//! Where the agent sends what it observes. The plan and status types are part of the
//! agent protocol and live in `wharf-api`.

pub use wharf_api::agent::{InstancePlan, InstanceStatus, Reload};

/// Where the agent sends what it observes.
pub trait StatusSink: Send + Sync {
    fn instance_changed(&self, plan: &InstancePlan, status: &InstanceStatus);
}

/// A sink that drops reports, for callers that only poll [`crate::Agent::statuses`].
pub struct NoSink;

impl StatusSink for NoSink {
    fn instance_changed(&self, _: &InstancePlan, _: &InstanceStatus) {}
}
