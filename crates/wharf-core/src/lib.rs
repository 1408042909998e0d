//! wharf's domain core: the definition model and its validation, configuration layering
//! and templates, and the reconciler. Pure functions only: no I/O, no async, no clock.

pub mod config;
pub mod decide;
pub mod definition;
pub mod dev;
pub mod diagnostic;
pub mod duration;
pub mod files;
pub mod ingress;
pub mod lifecycle;
pub mod model;
pub mod placement;
pub mod plan;
pub mod quantity;
pub mod raw;
pub mod rollout;
pub mod scale;
pub mod skew;
pub mod spec;
pub mod ssh_hosts;
pub mod strategy;
pub mod structure;
pub mod suggest;
pub mod template;
pub mod yaml;

pub use definition::{AnyFolder, FolderCheck, load};
pub use diagnostic::DefinitionErrors;
pub use model::Definition;
