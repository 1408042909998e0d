//! `wharf init`: a commented wharf.yaml written from the service folders it finds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::Global;
use crate::failure::Failure;
use crate::printer::Printer;

/// What a folder holds, as far as a first wharf.yaml is concerned.
#[derive(Debug, PartialEq)]
enum Kind {
    Python { entry: String },
    Rust { binary: String },
    Node { entry: Option<String> },
    Go,
    Dockerfile { exposed: Option<u16> },
}

pub fn init(global: &Global, printer: &Printer, force: bool) -> anyhow::Result<ExitCode> {
    let target = global
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("wharf.yaml"));
    if target.exists() && !force {
        return Err(Failure::operation(format!(
            "{} already exists; nothing was written",
            target.display()
        ))
        .hint("`wharf init --force` replaces it")
        .into());
    }
    let root = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let found = services_in(&root);
    if found.is_empty() {
        return Err(Failure::operation(format!(
            "found no service in {} or the folders in it",
            root.display()
        ))
        .hint("a service folder holds requirements.txt, pyproject.toml or app.py (Python), Cargo.toml (Rust), package.json (Node), go.mod (Go) or a Dockerfile")
        .into());
    }
    let text = render(&found);
    // What init writes must validate: a failure here is wharf's bug, not the user's.
    if let Err(e) = wharf_core::load(&text, &target.display().to_string(), &NoFiles) {
        return Err(Failure::operation(format!(
            "the wharf.yaml init made does not validate:\n{e}"
        ))
        .into());
    }
    std::fs::write(&target, &text)
        .map_err(|e| Failure::operation(format!("cannot write {}: {e}", target.display())))?;
    let names: Vec<&str> = found.iter().map(|(name, _, _)| name.as_str()).collect();
    printer.info(&format!(
        "wrote {} with {} service(s): {}\nnext: `wharf validate`, then `wharf deploy --env local`",
        target.display(),
        names.len(),
        names.join(", ")
    ));
    Ok(ExitCode::SUCCESS)
}

/// No env files or templates exist yet for a fresh definition.
struct NoFiles;

impl wharf_core::definition::FolderCheck for NoFiles {
    fn is_folder(&self, _: &str) -> bool {
        true
    }
}

/// The services of `root`: itself, when it is one, and each folder in it that is one,
/// as (name, folder relative to root, kind).
fn services_in(root: &Path) -> Vec<(String, String, Kind)> {
    let mut found = Vec::new();
    if let Some(kind) = kind_of(root) {
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into());
        found.push((service_name(&name), ".".to_owned(), kind));
        return found;
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                !n.to_string_lossy().starts_with('.') && n != "target" && n != "node_modules"
            })
        })
        .collect();
    folders.sort();
    for folder in folders {
        if let Some(kind) = kind_of(&folder) {
            let dir = folder
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            found.push((service_name(&dir), format!("./{dir}"), kind));
        }
    }
    found
}

fn kind_of(folder: &Path) -> Option<Kind> {
    let has = |name: &str| folder.join(name).is_file();
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).unwrap_or_default();
    if has("Dockerfile") {
        let exposed = read("Dockerfile").lines().find_map(|l| {
            let rest = l.trim().strip_prefix("EXPOSE ")?;
            rest.split_whitespace()
                .next()?
                .split('/')
                .next()?
                .parse()
                .ok()
        });
        return Some(Kind::Dockerfile { exposed });
    }
    if has("Cargo.toml") {
        let manifest = read("Cargo.toml");
        let binary = manifest
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| {
                let value = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "app".into());
        return Some(Kind::Rust { binary });
    }
    if has("go.mod") {
        return Some(Kind::Go);
    }
    if has("package.json") {
        let manifest: serde_json::Value =
            serde_json::from_str(&read("package.json")).unwrap_or_default();
        let entry = manifest["main"].as_str().map(str::to_owned);
        return Some(Kind::Node { entry });
    }
    let entry = ["app.py", "main.py", "server.py"]
        .into_iter()
        .find(|f| has(f));
    if let Some(entry) = entry {
        return Some(Kind::Python {
            entry: entry.into(),
        });
    }
    if has("requirements.txt") || has("pyproject.toml") {
        return Some(Kind::Python {
            entry: "app.py".into(),
        });
    }
    None
}

/// A folder name as a service name: lowercase letters, digits and `-`.
fn service_name(folder: &str) -> String {
    let mut name: String = folder
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "svc-");
    }
    name
}

fn render(found: &[(String, String, Kind)]) -> String {
    let mut out = String::from(
        "# wharf.yaml, written by `wharf init`: the services it found and one environment.\n\
         # The full schema: docs/wharf-yaml.md (or `wharf schema`).\n\
         services:\n",
    );
    for (name, dir, kind) in found {
        let _ = writeln!(out, "  {name}:");
        match kind {
            Kind::Python { entry } => {
                let _ = writeln!(
                    out,
                    "    build: {dir}                # the folder is packed as it is"
                );
                let _ = writeln!(out, "    run: [\"python3\", \"{entry}\"]");
            }
            Kind::Rust { binary } => {
                let _ = writeln!(out, "    build:");
                let _ = writeln!(out, "      context: {dir}");
                let _ = writeln!(out, "      command: [\"cargo\", \"build\", \"--release\"]");
                let _ = writeln!(out, "      output: target/release    # what is packed");
                let _ = writeln!(out, "    run: [\"./{binary}\"]");
            }
            Kind::Go => {
                let _ = writeln!(out, "    build:");
                let _ = writeln!(out, "      context: {dir}");
                let _ = writeln!(
                    out,
                    "      command: [\"go\", \"build\", \"-o\", \"bin/{name}\", \".\"]"
                );
                let _ = writeln!(out, "      output: bin");
                let _ = writeln!(out, "    run: [\"./{name}\"]");
            }
            Kind::Node { entry } => {
                let _ = writeln!(out, "    build: {dir}");
                match entry {
                    Some(entry) => {
                        let _ = writeln!(out, "    run: [\"node\", \"{entry}\"]");
                    }
                    None => {
                        let _ = writeln!(out, "    run: [\"npm\", \"start\"]");
                    }
                }
            }
            Kind::Dockerfile { exposed } => {
                let _ = writeln!(
                    out,
                    "    # build it first: docker build -t {name}:latest {dir}"
                );
                let _ = writeln!(out, "    image: {name}:latest");
                if let Some(port) = exposed {
                    let _ = writeln!(
                        out,
                        "    # the image listens on its own port; each instance gets a host port for it"
                    );
                    let _ = writeln!(out, "    port: {{ name: http, container: {port} }}");
                    let _ = writeln!(out, "    health: {{ http: / }}");
                    let _ = writeln!(out, "    # config: {{ KEY: value }}");
                    continue;
                }
            }
        }
        let _ = writeln!(
            out,
            "    port: http                 # wharf picks a port: PORT and {{{{ port }}}}"
        );
        let _ = writeln!(
            out,
            "    # health: {{ http: /health }} # what a deploy waits for"
        );
        let _ = writeln!(
            out,
            "    # config: {{ KEY: value }}    # environment variables (templates)"
        );
    }
    out.push_str(
        "environments:\n  local: {}\n  # ci:\n  #   after: local             # a version reaches ci only after local\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_become_service_names() {
        assert_eq!(service_name("My_App"), "my-app");
        assert_eq!(service_name("2fa"), "svc-2fa");
    }

    #[test]
    fn every_kind_renders_a_definition_that_validates() {
        let found = vec![
            (
                "api".into(),
                "./api".into(),
                Kind::Python {
                    entry: "app.py".into(),
                },
            ),
            (
                "worker".into(),
                "./worker".into(),
                Kind::Rust {
                    binary: "worker".into(),
                },
            ),
            ("web".into(), "./web".into(), Kind::Node { entry: None }),
            ("gw".into(), "./gw".into(), Kind::Go),
            (
                "box".into(),
                "./box".into(),
                Kind::Dockerfile { exposed: Some(80) },
            ),
            (
                "raw".into(),
                "./raw".into(),
                Kind::Dockerfile { exposed: None },
            ),
        ];
        let text = render(&found);
        wharf_core::load(&text, "wharf.yaml", &NoFiles).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
}
