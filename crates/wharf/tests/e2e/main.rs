//! End-to-end tests: the real `wharf` binary, a real controller, real processes.

mod harness;

mod authority;
mod config;
mod container_network;
mod containers;
mod crash;
mod daemons;
mod dashboard;
mod definition;
mod dev;
mod docker;
mod engines;
mod files;
mod first_hour;
mod fleet;
mod governance;
mod hostile;
mod ingress;
mod lifecycle;
mod limits;
mod machines;
mod netns;
mod openapi;
mod recovery;
mod redis;
mod registry;
mod replicated;
mod rollouts;
mod service_page;
mod shop;
mod ssh;
mod traffic;
