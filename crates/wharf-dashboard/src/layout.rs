//! The frame every page shares (head, navigation, who is signed in, the open
//! controller's warning) and the sign-in page.

use maud::{DOCTYPE, Markup, html};

/// Where the static files are served.
pub struct Assets;

impl Assets {
    pub const SCRIPT: &'static str = "/ui/live.js";
    pub const STYLE: &'static str = "/ui/style.css";
}

/// Who looks at a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's name, or the user of an open controller.
    pub name: String,
    /// The controller answers without tokens (a development controller): the page says
    /// so.
    pub open: bool,
    /// The form token of every change this viewer makes (sign-out included).
    pub csrf: String,
}

/// A whole page: `title`, the viewer's bar, then `body`.
pub(crate) fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wharf" }
                link rel="stylesheet" href=(Assets::STYLE);
                script src=(Assets::SCRIPT) defer {}
            }
            body {
                header {
                    a.brand href="/" { "wharf" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="main" {
                            a href="/" { "Environments" } " "
                            a href="/ui/hosts" { "Hosts" }
                        }
                        span.who { "signed in as " strong { (viewer.name) } }
                        form.sign-out method="post" action="/ui/sign-out" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if viewer.is_some_and(|v| v.open) {
                    p.open role="note" {
                        "This controller is open: it asks no API token (a development controller, on loopback, answering only the user who started it). Start it with "
                        code { "--auth" } " to require tokens."
                    }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The sign-in form: an API token, posted once and kept in an HttpOnly cookie.
pub fn sign_in_page(problem: Option<&str>) -> String {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/ui/sign-in" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
            p.hint {
                "An admin makes one with " code { "wharf token issue NAME --scope ENV:read" }
                "; on a development controller, " code { "wharf ui" } " prints a sign-in address."
            }
        },
    )
}

/// A page saying what went wrong (escaped, as every page's text is).
pub fn problem_page(message: &str) -> String {
    page(
        "Problem",
        None,
        html! {
            h1 { "Problem" }
            p.problem role="alert" { (message) }
            p { a href="/" { "Back to the environments" } }
        },
    )
}
