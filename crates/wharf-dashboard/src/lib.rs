//! wharf's web dashboard, rendered on the server: the pages are functions of view
//! models the controller fills from its own state, so they are tested here without a
//! controller. The live parts are a little hand-written JavaScript (`assets/live.js`)
//! that replaces a cell's HTML when the controller's event stream sends it; without
//! JavaScript every page still reads, as of when it was loaded.

mod config_diff;
mod hosts;
mod layout;
mod matrix;
mod service;

pub use config_diff::{KeyChange, config_diff};
pub use hosts::{HostRow, hosts_page};
pub use layout::{Assets, Viewer, problem_page, sign_in_page};
pub use matrix::{Cell, CellUpdate, Matrix, cell_id, cell_update, matrix_page};
pub use service::{
    Actions, ConfigRevisionRow, EnvSection, HistoryRow, InstanceRow, LogView, PendingRow,
    RolloutRow, service_page,
};

/// The Content-Security-Policy of every page: nothing but this controller's own
/// scripts, styles and event stream; no inline script, no frames, forms only to itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The script of the live parts, served at [`Assets::SCRIPT`].
pub const SCRIPT: &str = include_str!("../assets/live.js");
/// The style sheet, served at [`Assets::STYLE`].
pub const STYLE: &str = include_str!("../assets/style.css");
