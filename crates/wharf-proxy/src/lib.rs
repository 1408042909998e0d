//! The traffic layer: a listener per service that balances over the service's healthy
//! instances (power of two choices over least outstanding requests), with a routing
//! table swapped atomically, so moving traffic from one instance to another refuses
//! nothing. HTTP/1.1 is proxied request by request over pooled keep-alive connections
//! to the backends; plain TCP connection by connection.
//!
//! Servers are `serve_*(listener, route, shutdown)`; the agent owns the listeners and
//! replaces the backend set as instances become healthy or leave.

mod accept;
pub mod answer;
mod balance;
mod http;
pub mod ingress;
pub mod mesh;
mod outlier;
mod pool;
mod route;
pub mod stats;
mod target;
mod tcp;
mod websocket;

pub use balance::pick;
pub use http::serve_http;
pub use outlier::Outcome;
pub use route::{Backend, Route, Split, Track};
pub use target::{MeshTarget, Target};
pub use tcp::serve_tcp;

/// How long a request (or connection) waits for a backend when its service has none,
/// before it is refused.
pub const PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an instance may take to start answering a request, unless its route says.
pub const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// At most this many client connections per service address at once; more wait in
/// the listen backlog instead of exhausting the agent's file descriptors.
pub const MAX_CONNECTIONS: usize = 10_000;
