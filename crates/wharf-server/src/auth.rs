//! Who is calling and what they may do. A controller with authentication takes API
//! tokens (`Authorization: Bearer wharf_<id>_<secret>`), each granting actions per
//! environment; a loopback development controller may run open, trusting the user name
//! its CLI sends. Instances read their configuration with a runtime token scoped to
//! their service and environment.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::Controller;
use crate::error::ServerError;

/// The header an open controller takes the caller's user name from.
pub const USER_HEADER: &str = "x-wharf-user";

/// What a call does, as scopes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reading an environment's state: implied by every other action on it.
    Read,
    Deploy,
    Config,
    Secret,
    Approve,
    Admin,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Deploy,
        Action::Config,
        Action::Secret,
        Action::Approve,
        Action::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Deploy => "deploy",
            Action::Config => "config",
            Action::Secret => "secret",
            Action::Approve => "approve",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a scope list written as `ENV:ACTION` (either may be `*`); returns the error
/// to show for the first bad one.
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("a token needs at least one scope, such as `ci:deploy`".into());
    }
    for scope in scopes {
        let Some((env, action)) = scope.split_once(':') else {
            return Err(format!("scope `{scope}` is not `ENV:ACTION`"));
        };
        if env.is_empty() || env.contains(',') {
            return Err(format!("scope `{scope}` names no environment"));
        }
        if action != "*" && !Action::ALL.iter().any(|a| a.as_str() == action) {
            return Err(format!(
                "scope `{scope}`: unknown action `{action}`; actions are read, deploy, config, secret, approve, admin, or *"
            ));
        }
    }
    Ok(())
}

/// The caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user or token name, as history and the audit log show it.
    pub name: String,
    /// The grants of a token; `None` on an open (development) controller.
    scopes: Option<Vec<String>>,
}

impl Caller {
    pub fn open(name: String) -> Self {
        Self { name, scopes: None }
    }

    /// Whether the caller may do `action` in `env` (`*` for controller-wide actions).
    pub fn may(&self, env: &str, action: Action) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        scopes.iter().any(|scope| {
            let (e, a) = scope.split_once(':').unwrap_or((scope, ""));
            // Any grant on an environment lets its holder read it.
            (e == "*" || e == env) && (a == "*" || a == action.as_str() || action == Action::Read)
        })
    }

    /// Whether the caller may do `action` in at least one environment.
    pub fn may_somewhere(&self, action: Action) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        scopes.iter().any(|scope| {
            let (_, a) = scope.split_once(':').unwrap_or((scope, ""));
            a == "*" || a == action.as_str()
        })
    }

    /// The caller an API token (`wharf_<id>_<secret>`) names: known, matching and not
    /// revoked, or refused (401, or 403 for a revoked one).
    pub(crate) fn from_token(c: &Controller, token: &str) -> Result<Caller, ServerError> {
        let unauthorized = |message: &str| {
            ServerError::new(StatusCode::UNAUTHORIZED, message)
                .hint("pass an API token in WHARF_TOKEN; `wharf token issue` makes one")
        };
        let (id, secret) = token
            .strip_prefix("wharf_")
            .and_then(|t| t.split_once('_'))
            .ok_or_else(|| unauthorized("the API token is malformed"))?;
        let (record, hash) = c
            .store
            .api_token(id)?
            .ok_or_else(|| unauthorized("the API token is not known"))?;
        if !wharf_secrets::constant_time_eq(hash.as_bytes(), hash_token_secret(secret).as_bytes()) {
            return Err(unauthorized("the API token is not known"));
        }
        if record.revoked_at.is_some() {
            // Known, but no longer allowed anything.
            return Err(ServerError::new(
                StatusCode::FORBIDDEN,
                format!("the API token `{}` was revoked", record.name),
            )
            .hint("ask an admin for a new token (`wharf token issue`)"));
        }
        Ok(Caller {
            name: record.name,
            scopes: Some(record.scopes),
        })
    }

    /// Whether the caller runs an open controller (no tokens at all).
    pub fn is_open(&self) -> bool {
        self.scopes.is_none()
    }

    /// Refuses with 403 unless the caller may do `action` in `env`.
    pub fn require(&self, env: &str, action: Action) -> Result<(), ServerError> {
        if self.may(env, action) {
            return Ok(());
        }
        let place = if env == "*" {
            String::new()
        } else {
            format!(" in `{env}`")
        };
        Err(ServerError::new(
            StatusCode::FORBIDDEN,
            format!("token `{}` may not {action}{place}", self.name),
        )
        .hint(format!(
            "a token with the scope `{}:{action}` may; `wharf token issue` makes one",
            if env == "*" { "*" } else { env }
        )))
    }
}

/// The hash an API token's secret is kept as (the secret is random, so a plain digest
/// is enough).
pub fn hash_token_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FromRequestParts<Arc<Controller>> for Caller {
    type Rejection = ServerError;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Controller>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // An open controller trusts every caller; a token (say, one meant for another
        // controller, in WHARF_TOKEN) neither helps nor hinders there.
        if !c.auth_required {
            // Open, but only to the user who started it: the key is in its owner-only
            // state folder.
            let key = parts
                .headers
                .get(crate::LOCAL_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !wharf_secrets::constant_time_eq(key.as_bytes(), c.local_key.as_bytes()) {
                return Err(ServerError::new(
                    StatusCode::UNAUTHORIZED,
                    "this controller answers only the user who started it",
                )
                .hint(format!(
                    "run wharf as the owner of `{}` (the CLI reads the key from `controller.json` there), or start a controller with `--auth` and use API tokens",
                    c.state_dir.display()
                )));
            }
            let user = parts
                .headers
                .get(USER_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|u| !u.is_empty())
                .unwrap_or("anonymous");
            return Ok(Caller::open(user.to_owned()));
        }
        let token = bearer.ok_or_else(|| {
            ServerError::new(
                StatusCode::UNAUTHORIZED,
                "this controller needs an API token",
            )
            .hint("pass an API token in WHARF_TOKEN; `wharf token issue` makes one")
        })?;
        let caller = Caller::from_token(c, token)?;
        // Where the environment is in the path, a change it may not make is refused
        // here, before its body is read (a token must not make the controller buffer
        // bodies for environments it has no grant on).
        if let Some((env, action, call, target)) = change_in_path(&parts.method, parts.uri.path()) {
            caller
                .require(env, action)
                .inspect_err(|_| c.record(&caller, call, &target, "denied"))?;
        }
        Ok(caller)
    }
}

/// The environment, action, audit name and target of a change whose environment is in
/// its path: `/v1/secrets/ENV/SERVICE/KEY` (secret) and `/v1/config/ENV/SERVICE`
/// (config).
fn change_in_path<'a>(
    method: &axum::http::Method,
    path: &'a str,
) -> Option<(&'a str, Action, &'static str, String)> {
    if method == axum::http::Method::GET {
        return None;
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let (v1, kind, env) = (segments.next()?, segments.next()?, segments.next()?);
    // `/v1/secrets/rotate-key` names no environment (it needs admin, checked by its
    // handler): only paths that go on to a service are checked here.
    let service = segments.next()?;
    let (action, call) = match (v1, kind, method == axum::http::Method::DELETE) {
        ("v1", "secrets", false) => (Action::Secret, "secret set"),
        ("v1", "secrets", true) => (Action::Secret, "secret unset"),
        ("v1", "config", _) => (Action::Config, "config set"),
        _ => return None,
    };
    let target = match segments.next() {
        Some(key) => format!("{service} in {env}: {key}"),
        None => format!("{service} in {env}"),
    };
    Some((env, action, call, target))
}

/// Makes an API token: the token text (shown once) and the record with its hash.
pub fn new_api_token(
    name: &str,
    scopes: Vec<String>,
    created_by: &str,
) -> std::io::Result<(String, (wharf_store::ApiTokenRecord, String))> {
    let id = crate::random_hex(6)?;
    let secret = crate::random_hex(24)?;
    let record = wharf_store::ApiTokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        scopes,
        created_at: crate::now_millis(),
        created_by: created_by.to_owned(),
        revoked_at: None,
    };
    Ok((
        format!("wharf_{id}_{secret}"),
        (record, hash_token_secret(&secret)),
    ))
}

/// How long a runtime token works; an instance that reads its configuration in the
/// second half of that gets a fresh one with the answer (`x-wharf-config-token`).
pub const RUNTIME_TOKEN_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// The token an instance reads its configuration with: it names the service,
/// environment and expiry, signed with the master keyring's current key, so nothing is
/// stored and a key rotation revokes every token made before it.
pub fn runtime_token(
    keyring: &wharf_secrets::Keyring,
    env: &str,
    service: &str,
    now: i64,
) -> String {
    let claim = format!("{env}:{service}:{}", now + RUNTIME_TOKEN_LIFETIME_MS);
    format!("wr2:{claim}:{}", keyring.mac(&format!("runtime\0{claim}")))
}

/// The (environment, service, expiry) a runtime token is good for, if it is genuine
/// (signed with the current key) and not expired at `now`.
pub fn check_runtime_token(
    keyring: &wharf_secrets::Keyring,
    token: &str,
    now: i64,
) -> Option<(String, String, i64)> {
    let mut parts = token.strip_prefix("wr2:")?.splitn(4, ':');
    let (env, service, expires, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let expires: i64 = expires.parse().ok()?;
    let claim = format!("{env}:{service}:{expires}");
    (now < expires && keyring.verify_mac_current(&format!("runtime\0{claim}"), tag))
        .then(|| (env.to_owned(), service.to_owned(), expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scopes: &[&str]) -> Caller {
        Caller {
            name: "ci".into(),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn scopes_grant_actions_per_environment() {
        let ci = token(&["ci:deploy", "ci:config"]);
        assert!(ci.may("ci", Action::Deploy));
        assert!(ci.may("ci", Action::Config));
        assert!(!ci.may("ci", Action::Secret));
        assert!(!ci.may("production", Action::Deploy));
        assert!(!ci.may("*", Action::Admin));
        let approver = token(&["*:approve"]);
        assert!(approver.may("production", Action::Approve));
        assert!(!approver.may("production", Action::Deploy));
        assert!(token(&["*:*"]).may("*", Action::Admin));
        assert!(Caller::open("dev".into()).may("production", Action::Secret));
        let refused = ci.require("production", Action::Deploy).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.message.contains("`production`"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn scope_lists_are_checked() {
        assert!(check_scopes(&["ci:deploy".into(), "*:approve".into()]).is_ok());
        assert!(check_scopes(&[]).is_err());
        assert!(check_scopes(&["ci".into()]).is_err());
        assert!(check_scopes(&["ci:launch".into()]).is_err());
    }

    #[test]
    fn runtime_tokens_name_their_service_and_cannot_be_forged() {
        let dir = tempfile::tempdir().unwrap();
        let ring = wharf_secrets::Keyring::load_or_create(&dir.path().join("k")).unwrap();
        let t = runtime_token(&ring, "uat", "orders", 1000);
        let expires = 1000 + RUNTIME_TOKEN_LIFETIME_MS;
        assert_eq!(
            check_runtime_token(&ring, &t, 2000),
            Some(("uat".into(), "orders".into(), expires))
        );
        let forged = t.replace("orders", "catalog");
        assert_eq!(check_runtime_token(&ring, &forged, 2000), None);
        let longer = t.replace(&expires.to_string(), &(expires * 2).to_string());
        assert_eq!(
            check_runtime_token(&ring, &longer, 2000),
            None,
            "the expiry is signed"
        );
        assert_eq!(check_runtime_token(&ring, "wr1:uat:orders:00", 2000), None);
    }

    #[test]
    fn runtime_tokens_expire_and_die_with_a_key_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = wharf_secrets::Keyring::load_or_create(&dir.path().join("k")).unwrap();
        let t = runtime_token(&ring, "uat", "orders", 1000);
        let expires = 1000 + RUNTIME_TOKEN_LIFETIME_MS;
        assert!(check_runtime_token(&ring, &t, expires - 1).is_some());
        assert_eq!(check_runtime_token(&ring, &t, expires), None, "expired");
        ring.rotate().unwrap();
        assert_eq!(
            check_runtime_token(&ring, &t, 2000),
            None,
            "revoked by the rotation"
        );
        let renewed = runtime_token(&ring, "uat", "orders", 2000);
        assert!(check_runtime_token(&ring, &renewed, 3000).is_some());
    }
}
