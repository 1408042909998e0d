//! The environments by services matrix, as Octopus Deploy's dashboard: environments
//! across in pipeline order, services down, each cell what runs there.

use maud::{Markup, html};
use serde::Serialize;

use crate::layout::{Viewer, page};

/// What the matrix shows: the environments in pipeline order, the services, and a cell
/// for each pair the viewer may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matrix {
    pub environments: Vec<String>,
    pub services: Vec<String>,
    /// One per service and environment that has something to show.
    pub cells: Vec<Cell>,
}

/// One service in one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub service: String,
    pub env: String,
    /// The versions running (usually one; several during a rollout).
    pub versions: Vec<String>,
    pub healthy: usize,
    /// How many instances the controller's definition asks for.
    pub desired: Option<usize>,
    /// The previous environment of the pipeline and how many configuration keys differ
    /// from it, when both run the service.
    pub drift: Option<(String, usize)>,
    /// Deploys waiting for approval here, by id.
    pub waiting: Vec<i64>,
    /// The viewer may approve or reject them (the controller checks again on the post).
    pub can_approve: bool,
}

impl Matrix {
    /// Every service in every environment, row by row: the cells given, and empty ones
    /// where nothing runs.
    pub fn grid(&self) -> Vec<Cell> {
        let mut grid = Vec::with_capacity(self.services.len() * self.environments.len());
        for service in &self.services {
            for env in &self.environments {
                let cell = self
                    .cells
                    .iter()
                    .find(|c| &c.service == service && &c.env == env)
                    .cloned()
                    .unwrap_or_else(|| Cell {
                        service: service.clone(),
                        env: env.clone(),
                        ..Cell::default()
                    });
                grid.push(cell);
            }
        }
        grid
    }
}

impl Cell {
    /// The cell's state, as a class name the style sheet colours and a word a reader
    /// without colour reads.
    pub fn state(&self) -> (&'static str, &'static str) {
        match (self.versions.is_empty(), self.desired) {
            (true, _) => ("empty", "not deployed"),
            (false, Some(desired)) if self.healthy < desired => ("degraded", "degraded"),
            _ if self.versions.len() > 1 => ("rolling", "rolling"),
            _ => ("healthy", "healthy"),
        }
    }
}

/// The HTML id of a cell (names are checked names: no spaces, no `@`).
pub fn cell_id(service: &str, env: &str) -> String {
    format!("cell-{service}@{env}")
}

/// What the event stream sends when a cell changes: the element to replace and its
/// new class and contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellUpdate {
    pub id: String,
    pub class: String,
    pub html: String,
    /// A digest of `class` and `html`, also on the rendered cell (`data-v`): the page
    /// leaves a cell that already shows it alone, so a button is not replaced under a
    /// pointer for nothing.
    pub v: String,
}

/// FNV-1a: a digest to tell two renderings apart, not a secret.
fn digest(class: &str, html: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in class.bytes().chain([0]).chain(html.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The update that makes a loaded page's cell show `cell` to `viewer`.
pub fn cell_update(viewer: &Viewer, cell: &Cell) -> CellUpdate {
    let class = format!("cell {}", cell.state().0);
    let html = cell_contents(viewer, cell).into_string();
    CellUpdate {
        id: cell_id(&cell.service, &cell.env),
        v: digest(&class, &html),
        class,
        html,
    }
}

fn cell_contents(viewer: &Viewer, cell: &Cell) -> Markup {
    let (_, word) = cell.state();
    html! {
        @if cell.versions.is_empty() {
            span.none { "—" }
        } @else {
            span.version { (cell.versions.join(", ")) }
            span.count {
                (cell.healthy) "/" (cell.desired.map_or_else(|| "?".to_owned(), |d| d.to_string()))
                " " (word)
            }
        }
        @if let Some((previous, keys)) = &cell.drift && *keys > 0 {
            span.drift title={ "configuration keys that differ from " (previous) } {
                (keys) " key" @if *keys != 1 { "s" } " ≠ " (previous)
            }
        }
        @for id in &cell.waiting {
            span.badge { "#" (id) " awaits approval" }
            @if cell.can_approve {
                form.decide method="post" action={ "/ui/deployments/" (id) "/approve" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" { "Approve #" (id) }
                }
                form.decide method="post" action={ "/ui/deployments/" (id) "/reject" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" { "Reject #" (id) }
                }
            }
        }
    }
}

/// The matrix page, with what the viewer's last change did, if anything.
pub fn matrix_page(viewer: &Viewer, matrix: &Matrix, notice: Option<&str>) -> String {
    let grid = matrix.grid();
    let width = matrix.environments.len().max(1);
    page(
        "Environments",
        Some(viewer),
        html! {
            h1 { "Environments" }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
            p.live #live aria-live="polite" { "as loaded" }
            @if matrix.services.is_empty() {
                p { "No service is deployed yet: " code { "wharf deploy SERVICE --env ENV" } "." }
            } @else {
                table.matrix {
                    caption { "Each service's version in each environment, in pipeline order" }
                    thead {
                        tr {
                            th scope="col" { "service" }
                            @for env in &matrix.environments { th scope="col" { (env) } }
                        }
                    }
                    tbody {
                        @for (service, row) in matrix.services.iter().zip(grid.chunks(width)) {
                            tr {
                                th scope="row" { a href={ "/ui/services/" (service) } { (service) } }
                                @for cell in row {
                                    @let update = cell_update(viewer, cell);
                                    td id=(update.id) class=(update.class) data-v=(update.v) {
                                        (maud::PreEscaped(update.html))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(open: bool) -> Viewer {
        Viewer {
            name: "ann".into(),
            open,
            csrf: "token123".into(),
        }
    }

    fn shop() -> Matrix {
        Matrix {
            environments: vec!["ci".into(), "production".into()],
            services: vec!["catalog".into(), "orders".into()],
            cells: vec![
                Cell {
                    service: "catalog".into(),
                    env: "ci".into(),
                    versions: vec!["build-7".into()],
                    healthy: 2,
                    desired: Some(2),
                    ..Cell::default()
                },
                Cell {
                    service: "catalog".into(),
                    env: "production".into(),
                    versions: vec!["build-6".into()],
                    healthy: 1,
                    desired: Some(3),
                    drift: Some(("ci".into(), 2)),
                    waiting: vec![12],
                    can_approve: false,
                },
            ],
        }
    }

    #[test]
    fn the_matrix_puts_environments_across_and_services_down() {
        let html = matrix_page(&viewer(false), &shop(), None);
        let ci = html.find(">ci</th>").unwrap();
        let production = html.find(">production</th>").unwrap();
        assert!(ci < production, "pipeline order");
        assert!(html.find(">catalog</a>").unwrap() < html.find(">orders</a>").unwrap());
        assert!(html.contains(r#"id="cell-catalog@ci" class="cell healthy""#));
        assert!(html.contains("2/2 healthy"));
        assert!(html.contains(r#"id="cell-catalog@production" class="cell degraded""#));
        assert!(html.contains("1/3 degraded"));
        assert!(html.contains("2 keys ≠ ci"));
        assert!(html.contains("#12 awaits approval"));
        assert!(!html.contains("Approve #12"), "no button without the grant");
        assert!(html.contains(r#"id="cell-orders@ci" class="cell empty""#));
        assert!(!html.contains("This controller is open"));
        assert!(html.len() < 100 * 1024);
    }

    #[test]
    fn a_viewer_who_may_approve_gets_buttons_carrying_its_form_token() {
        let mut matrix = shop();
        matrix.cells[1].can_approve = true;
        let html = matrix_page(&viewer(false), &matrix, Some("approved #12"));
        assert!(
            html.contains(r#"action="/ui/deployments/12/approve""#),
            "{html}"
        );
        assert!(html.contains(r#"action="/ui/deployments/12/reject""#));
        assert!(html.contains(r#"name="csrf" value="token123""#));
        assert!(html.contains("approved #12"));
    }

    #[test]
    fn an_open_controller_says_so_and_names_are_escaped() {
        let mut matrix = shop();
        matrix.services.push("<script>".into());
        let html = matrix_page(&viewer(true), &matrix, None);
        assert!(html.contains("This controller is open"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            !html.contains("<script>\n") && html.matches("<script").count() == 1,
            "the only script is the page's own file: {html}"
        );
    }

    #[test]
    fn an_update_carries_the_cell_as_the_page_renders_it() {
        let cell = shop().cells[1].clone();
        let update = cell_update(&viewer(false), &cell);
        assert_eq!(update.id, "cell-catalog@production");
        assert_eq!(update.class, "cell degraded");
        let page = matrix_page(&viewer(false), &shop(), None);
        assert!(page.contains(&update.html), "{}", update.html);
        assert!(page.contains(&format!(r#"data-v="{}""#, update.v)));
        let mut other = cell.clone();
        other.healthy = 3;
        assert_ne!(cell_update(&viewer(false), &other).v, update.v);
    }
}
