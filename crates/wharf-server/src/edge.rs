//! Checks of every request body at the API's edge, before anything acts on it: names
//! that become paths, labels and lookups keep to a safe character set and length,
//! versions and keys are bounded. Pure functions, so the fuzz targets drive them with
//! whatever bytes they like.

use wharf_api::agent::JoinRequest;
use wharf_api::{
    ApiTokenRequest, ConfigChange, DeployRequest, PromoteRequest, RollbackRequest, StopRequest,
    TokenRequest,
};

use crate::error::ServerError;

/// Definitions larger than this are refused before parsing.
pub const MAX_DEFINITION_BYTES: usize = 8 * 1024 * 1024;

/// How many env files and file templates a definition may refer to.
pub const MAX_DEFINITION_FILES: usize = 1000;

/// Parses and validates a submitted definition; too large or invalid is bad input.
pub fn definition(
    submission: &wharf_api::DefinitionSubmission,
) -> Result<wharf_core::Definition, ServerError> {
    let size = submission.source.len()
        + submission
            .files
            .iter()
            .map(|(p, t)| p.len() + t.len())
            .sum::<usize>();
    if size > MAX_DEFINITION_BYTES {
        return Err(ServerError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the definition and its files are {size} bytes; at most {MAX_DEFINITION_BYTES} are accepted"
            ),
        ));
    }
    if submission.files.len() > MAX_DEFINITION_FILES {
        return Err(ServerError::bad_request(format!(
            "the definition refers to {} files; at most {MAX_DEFINITION_FILES} are accepted",
            submission.files.len()
        )));
    }
    wharf_core::load(
        &submission.source,
        &submission_path(submission),
        &wharf_core::definition::Bundled(&submission.files),
    )
    .map_err(|e| {
        ServerError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            .hint("`wharf validate` shows the same errors before submitting")
    })
}

/// The file name a submission gives, for error locations.
pub fn submission_path(submission: &wharf_api::DefinitionSubmission) -> String {
    let path = submission.path.trim();
    if path.is_empty() || path.len() > 4096 || path.chars().any(char::is_control) {
        "wharf.yaml".to_owned()
    } else {
        path.to_owned()
    }
}

/// The longest service, environment, node or host name (a DNS label).
const MAX_NAME: usize = 63;
/// The longest version name.
const MAX_VERSION: usize = 128;

/// A service, environment or host name: what wharf.yaml allows, checked again here
/// because these names become folder names, log paths and labels.
pub fn name(what: &str, value: &str) -> Result<(), ServerError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_NAME
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ServerError::bad_request(format!(
            "`{}` is not a valid {what} name",
            value.escape_debug()
        ))
        .hint(
            "use up to 63 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        ))
    }
}

/// A version name: printable, no path separators, bounded.
pub fn version(value: &str) -> Result<(), ServerError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_VERSION
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if value == wharf_core::dev::DEV_VERSION {
        return Err(ServerError::bad_request(
            "`dev` names what `wharf dev` runs from a folder, not a built version",
        )
        .hint("choose another version name (`wharf build` without `--version` names it after its content)"));
    }
    if valid {
        Ok(())
    } else {
        Err(ServerError::bad_request(format!(
            "`{}` is not a valid version name",
            value.escape_debug()
        ))
        .hint("use up to 128 letters, digits, `-`, `_`, `.` and `+`"))
    }
}

/// A configuration key: an environment variable name.
pub fn config_key(key: &str) -> Result<(), ServerError> {
    let valid = !key.is_empty()
        && key.len() <= 256
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ServerError::bad_request(format!(
            "`{}` is not a valid configuration key",
            key.escape_debug()
        ))
        .hint("use letters, digits and `_`, not starting with a digit"))
    }
}

pub fn deploy(req: &DeployRequest) -> Result<(), ServerError> {
    name("service", &req.service)?;
    name("environment", &req.env)?;
    version(&req.version)
}

pub fn promote(req: &PromoteRequest) -> Result<(), ServerError> {
    name("service", &req.service)?;
    name("environment", &req.from)?;
    name("environment", &req.to)
}

pub fn rollback(req: &RollbackRequest) -> Result<(), ServerError> {
    name("service", &req.service)?;
    name("environment", &req.env)?;
    req.to.as_deref().map_or(Ok(()), version)
}

/// A service and an environment named in a path or a body.
pub fn names(service: &str, env: &str) -> Result<(), ServerError> {
    name("service", service)?;
    name("environment", env)
}

pub fn stop(req: &StopRequest) -> Result<(), ServerError> {
    name("environment", &req.env)?;
    req.service
        .as_deref()
        .map_or(Ok(()), |s| name("service", s))
}

/// `wharf dev`'s request: a bounded folder path and changed files that are relative
/// paths inside it (no `..`, no root), at most [`wharf_api::DEV_CHANGED_MAX`].
pub fn dev(req: &wharf_api::DevRequest) -> Result<(), ServerError> {
    names(&req.service, &req.env)?;
    if req.folder.len() > 4096 || req.folder.contains('\0') {
        return Err(ServerError::bad_request("the folder is not a path"));
    }
    let changed = req.changed.as_deref().unwrap_or_default();
    if changed.len() > wharf_api::DEV_CHANGED_MAX {
        return Err(ServerError::bad_request(format!(
            "{} changed files named; at most {}",
            changed.len(),
            wharf_api::DEV_CHANGED_MAX
        ))
        .hint("name none: the instances are then replaced"));
    }
    for file in changed {
        let path = std::path::Path::new(file);
        let inside = !file.is_empty()
            && file.len() <= 4096
            && !file.contains('\0')
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(ServerError::bad_request(format!(
                "changed file `{}` is not a relative path inside the folder",
                file.escape_debug()
            )));
        }
    }
    Ok(())
}

/// A command for `wharf exec`: named instance, and a bounded, non-empty argv.
pub fn exec(req: &wharf_api::ExecRequest) -> Result<(), ServerError> {
    name("environment", &req.env)?;
    name("service", &req.service)?;
    const MAX_ARGS: usize = 1024;
    const MAX_BYTES: usize = 256 * 1024;
    let bytes: usize = req.argv.iter().map(String::len).sum();
    if req.argv.first().is_none_or(String::is_empty) {
        return Err(ServerError::bad_request("`wharf exec` needs a command")
            .hint("give it after `--`: wharf exec SERVICE --env ENV -- ls -la"));
    }
    if req.argv.len() > MAX_ARGS || bytes > MAX_BYTES {
        return Err(ServerError::bad_request(format!(
            "the command has {} argument(s) and {bytes} bytes; at most {MAX_ARGS} and {MAX_BYTES}",
            req.argv.len()
        )));
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(ServerError::bad_request(
            "an argument holds a NUL byte, which no program can receive",
        ));
    }
    Ok(())
}

pub fn config_change(change: &ConfigChange) -> Result<(), ServerError> {
    for key in change.set.keys().chain(&change.unset) {
        config_key(key)?;
    }
    Ok(())
}

pub fn join_token(req: &TokenRequest) -> Result<(), ServerError> {
    name("environment", &req.env)?;
    if req.uses == 0 || req.ttl_secs == 0 || req.ttl_secs > 366 * 24 * 3600 {
        return Err(ServerError::bad_request(
            "a join token needs at least one use and a lifetime of at most a year",
        ));
    }
    Ok(())
}

pub fn api_token(req: &ApiTokenRequest) -> Result<(), ServerError> {
    if req.name.is_empty() || req.name.len() > MAX_NAME || req.name.chars().any(char::is_control) {
        return Err(ServerError::bad_request(
            "an API token needs a short printable name",
        ));
    }
    Ok(())
}

/// A join: the host name becomes a node name and a folder on the host.
pub fn join(req: &JoinRequest) -> Result<(), ServerError> {
    let valid = !req.name.is_empty()
        && req.name.len() <= MAX_NAME
        && req
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
        && !req.name.starts_with('.');
    if !valid {
        return Err(ServerError::bad_request(format!(
            "`{}` is not a valid host name",
            req.name.escape_debug()
        )));
    }
    if req.labels.len() > 64
        || req
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_NAME || v.len() > 256 || k.is_empty())
    {
        return Err(ServerError::bad_request(
            "a host has at most 64 labels, each a short key and value",
        ));
    }
    if req.csr.len() > 16 * 1024 {
        return Err(ServerError::bad_request("the signing request is too large"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_become_paths_are_refused() {
        for bad in [
            "",
            "/tmp/x",
            "../up",
            "a/b",
            "Ünï",
            "web\n",
            &"x".repeat(64),
        ] {
            assert!(name("service", bad).is_err(), "{bad:?}");
        }
        for good in ["web", "web-1", "a_b", "0day"] {
            assert!(name("service", good).is_ok(), "{good}");
        }
        assert!(version("build-7").is_ok());
        assert!(version("v1.2.3+git.abc").is_ok());
        assert!(version("../../etc").is_err());
        assert!(config_key("LOG_LEVEL").is_ok());
        assert!(config_key("9LIVES").is_err());
    }
}
