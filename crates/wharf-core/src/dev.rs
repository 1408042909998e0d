//! `wharf dev`: where it may run, and what a change to a service's folder does.
//!
//! The dev loop runs services straight from their folders, so it runs only where that is
//! meant: the first environment of the pipeline, or one marked `dev: true`; never where
//! deploys wait for approval, nor where `dev: false` says so. What a saved file does is
//! the service's `dev:` (restart through the traffic switch, or a signal; a build first
//! when the change matches `rebuild`).

use crate::definition::{Checker, key};
use crate::model::{Definition, RELOAD_SIGNALS};
use crate::raw::{RawDev, RawDevChange};
use crate::yaml::PathSegment;

/// The version name of what `wharf dev` runs.
pub const DEV_VERSION: &str = "dev";

/// The artifact digest of a service run straight from `folder` by `wharf dev`: the
/// folder itself, so every replay of the deployment (a reconcile, a recovery, a restart)
/// runs from it again. Only the controller's own machine runs these.
pub fn source_digest(folder: &std::path::Path) -> String {
    format!("dev:{}", hex::encode(folder.as_os_str().as_encoded_bytes()))
}

/// The folder a [`source_digest`] names; `None` for an artifact's digest.
pub fn source_of(digest: &str) -> Option<std::path::PathBuf> {
    let bytes = hex::decode(digest.strip_prefix("dev:")?).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let path = std::path::PathBuf::from(text);
    path.is_absolute().then_some(path)
}

/// A service's `dev:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevSettings {
    pub on_change: DevChange,
    /// Globs (relative to the service's folder) whose change runs the build first.
    pub rebuild: Vec<String>,
}

/// What a change to a service's folder does to its running instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DevChange {
    /// New instances from the changed folder replace the old through the traffic
    /// switch (the old keep serving until the new are healthy).
    #[default]
    Restart,
    /// The instances are sent this signal (`HUP`, ...) and reread their files.
    Signal(String),
    /// The changed files reach the running instances and nothing else happens: the
    /// service reads them itself (a static site, templates read per request). A process
    /// runs from the folder, so it sees them at once; a container gets them copied in.
    Sync,
}

/// Why `wharf dev` may not run in an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevRefusal {
    #[error("there is no environment `{0}`")]
    NoEnvironment(String),
    #[error("`{env}` has `dev: false`")]
    MarkedOff { env: String },
    #[error("deploys to `{env}` wait for approval; a dev version would skip it")]
    Approval { env: String },
    #[error(
        "`{env}` comes after `{after}` in the pipeline; only its first environment (`{first}`) or one with `dev: true` runs `wharf dev`"
    )]
    NotFirst {
        env: String,
        after: String,
        first: String,
    },
    #[error(
        "`{env}` is not the pipeline's first environment (`{first}` is); only that one or one with `dev: true` runs `wharf dev`"
    )]
    NotThePipelinesFirst { env: String, first: String },
}

impl DevRefusal {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::NotFirst { first, env, .. } | Self::NotThePipelinesFirst { first, env } => {
                Some(format!(
                    "`wharf dev --env {first}`, or mark `{env}` with `dev: true`; a version goes on with `wharf build` and `wharf deploy`"
                ))
            }
            Self::Approval { .. } | Self::MarkedOff { .. } => Some(
                "build and deploy a version (`wharf build`, `wharf deploy`) to this environment"
                    .into(),
            ),
            Self::NoEnvironment(_) => None,
        }
    }
}

/// Whether `wharf dev` may run in `env` of `def`.
pub fn dev_allowed(def: &Definition, env: &str) -> Result<(), DevRefusal> {
    let environment = def
        .environments
        .get(env)
        .ok_or_else(|| DevRefusal::NoEnvironment(env.to_owned()))?;
    if environment.approval.is_some() {
        return Err(DevRefusal::Approval {
            env: env.to_owned(),
        });
    }
    match environment.dev {
        Some(true) => Ok(()),
        Some(false) => Err(DevRefusal::MarkedOff {
            env: env.to_owned(),
        }),
        None => {
            let first = def.pipeline.first().cloned().unwrap_or_default();
            match &environment.after {
                None if first == env => Ok(()),
                // Another chain's first environment: not this pipeline's start.
                None => Err(DevRefusal::NotThePipelinesFirst {
                    env: env.to_owned(),
                    first,
                }),
                Some(after) => Err(DevRefusal::NotFirst {
                    env: env.to_owned(),
                    after: after.clone(),
                    first,
                }),
            }
        }
    }
}

/// The environment `wharf dev` runs in when none is named: the pipeline's first one
/// it may run in.
pub fn default_dev_environment(def: &Definition) -> Option<&str> {
    def.pipeline
        .iter()
        .map(String::as_str)
        .find(|env| dev_allowed(def, env).is_ok())
}

/// Whether a change of `changed` (paths relative to the service's folder, `/`
/// separated) needs the build to run first.
pub fn needs_rebuild(settings: &DevSettings, changed: &[&str]) -> bool {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in &settings.rebuild {
        // Checked when the definition was read.
        if let Ok(glob) = globset::Glob::new(pattern) {
            builder.add(glob);
        }
    }
    let Ok(set) = builder.build() else {
        return false;
    };
    changed.iter().any(|path| set.is_match(path))
}

/// A service's `dev:`, every problem reported at its place.
pub(crate) fn check(
    checker: &mut Checker<'_>,
    raw: Option<&RawDev>,
    at: &[PathSegment],
) -> DevSettings {
    let Some(raw) = raw else {
        return DevSettings::default();
    };
    let place = |rest: &[PathSegment]| [at, rest].concat();
    let on_change = match &raw.on_change {
        None => DevChange::Restart,
        Some(RawDevChange::Word(word)) if word == "restart" => DevChange::Restart,
        Some(RawDevChange::Word(word)) if word == "sync" => DevChange::Sync,
        Some(RawDevChange::Word(word)) => {
            checker.report(
                &place(&[key("on_change")]),
                format!("`on_change: {word}` is not something `wharf dev` does"),
                Some(
                    "`on_change: restart` (the default), `on_change: sync` or `on_change: { signal: HUP }`"
                        .into(),
                ),
            );
            DevChange::Restart
        }
        Some(RawDevChange::Signal { signal }) => {
            let upper = signal.to_ascii_uppercase();
            let signal = upper.trim_start_matches("SIG").to_owned();
            if !RELOAD_SIGNALS.contains(&signal.as_str()) {
                checker.report(
                    &place(&[key("on_change"), key("signal")]),
                    format!("`{signal}` is not a signal `wharf dev` sends"),
                    Some(format!("use one of {}", RELOAD_SIGNALS.join(", "))),
                );
            }
            DevChange::Signal(signal)
        }
    };
    for (i, pattern) in raw.rebuild.iter().enumerate() {
        if let Err(e) = globset::Glob::new(pattern) {
            checker.report(
                &place(&[key("rebuild"), PathSegment::Index(i)]),
                format!("`{pattern}` is not a glob: {}", e.kind()),
                Some("as `src/**` or `Cargo.toml`, relative to the service's folder".into()),
            );
        }
    }
    DevSettings {
        on_change,
        rebuild: raw.rebuild.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::{DevChange, DevSettings, needs_rebuild, source_digest, source_of};

    #[test]
    fn a_dev_digest_names_its_folder_and_nothing_else_does() {
        let folder = std::path::Path::new("/home/me/shop/web");
        assert_eq!(source_of(&source_digest(folder)).as_deref(), Some(folder));
        for digest in [
            "sha256:00ff",
            "dev:zz",
            "dev:",
            &source_digest(std::path::Path::new("relative/web")),
        ] {
            assert_eq!(source_of(digest), None, "{digest}");
        }
    }

    #[test]
    fn a_change_rebuilds_only_when_it_matches() {
        let settings = DevSettings {
            on_change: DevChange::Restart,
            rebuild: vec!["Cargo.toml".into(), "src/**".into()],
        };
        for (changed, expected) in [
            (vec!["src/main.rs"], true),
            (vec!["src/deep/mod.rs"], true),
            (vec!["Cargo.toml"], true),
            (vec!["static/index.html"], false),
            (vec!["README.md", "src/lib.rs"], true),
            (vec![], false),
        ] {
            assert_eq!(needs_rebuild(&settings, &changed), expected, "{changed:?}");
        }
        assert!(!needs_rebuild(&DevSettings::default(), &["src/main.rs"]));
    }
}
