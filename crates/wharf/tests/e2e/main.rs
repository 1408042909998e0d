//! End-to-end tests: the real `wharf` binary, a real controller, real processes.

mod harness;

mod lifecycle;
mod definition;
mod recovery;
mod shop;
