//! Dashboard sessions, kept by the controller in memory: the browser's cookie holds a
//! random session id and never a credential, so no other page on the same host (which
//! browsers send the controller's cookies to, whatever the port) learns a token or the
//! controller's key. One-time sign-in codes (`wharf ui`) live here too. Both are
//! bounded, and a controller restart signs everyone out.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an address of `wharf ui` signs a browser in.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(120);
/// How long a sign-in lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// At most this many codes wait to be used...
const MAX_CODES: usize = 1_000;
/// ...and this many sessions are kept (the oldest goes first).
const MAX_SESSIONS: usize = 10_000;

/// What a session signs in with, checked again on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// An API token (a controller with `--auth`).
    Token(String),
    /// The user who asked `wharf ui` on an open development controller.
    Open { user: String },
}

#[derive(Default)]
pub(crate) struct Sessions {
    codes: Mutex<HashMap<String, (Instant, Credential)>>,
    live: Mutex<HashMap<String, (Instant, Credential)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops what is older than `lifetime`, then the oldest until there is room for one.
fn make_room(map: &mut HashMap<String, (Instant, Credential)>, lifetime: Duration, max: usize) {
    map.retain(|_, (made, _)| made.elapsed() < lifetime);
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, (made, _))| *made)
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl Sessions {
    /// A one-time code for `credential`; `None` when too many wait already.
    pub(crate) fn issue_code(&self, credential: Credential) -> std::io::Result<Option<String>> {
        let code = crate::random_hex(24)?;
        let mut codes = lock(&self.codes);
        codes.retain(|_, (made, _)| made.elapsed() < CODE_LIFETIME);
        if codes.len() >= MAX_CODES {
            return Ok(None);
        }
        codes.insert(code.clone(), (Instant::now(), credential));
        Ok(Some(code))
    }

    /// The credential of `code`, once, within its lifetime.
    pub(crate) fn redeem_code(&self, code: &str) -> Option<Credential> {
        let (made, credential) = lock(&self.codes).remove(code)?;
        (made.elapsed() < CODE_LIFETIME).then_some(credential)
    }

    /// A new session for `credential`: its id, for the cookie.
    pub(crate) fn open(&self, credential: Credential) -> std::io::Result<String> {
        let id = crate::random_hex(32)?;
        let mut live = lock(&self.live);
        make_room(&mut live, SESSION_LIFETIME, MAX_SESSIONS);
        live.insert(id.clone(), (Instant::now(), credential));
        Ok(id)
    }

    /// What session `id` signs in with, while it lasts.
    pub(crate) fn credential(&self, id: &str) -> Option<Credential> {
        let live = lock(&self.live);
        let (made, credential) = live.get(id)?;
        (made.elapsed() < SESSION_LIFETIME).then(|| credential.clone())
    }

    pub(crate) fn close(&self, id: &str) {
        lock(&self.live).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_signs_in_once_and_a_closed_session_is_gone() {
        let sessions = Sessions::default();
        let ann = Credential::Open { user: "ann".into() };
        let code = sessions.issue_code(ann.clone()).unwrap().unwrap();
        assert_eq!(sessions.redeem_code(&code), Some(ann.clone()));
        assert_eq!(sessions.redeem_code(&code), None, "once");
        let id = sessions.open(ann.clone()).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.credential(&id), Some(ann));
        assert_eq!(sessions.credential("guess"), None);
        sessions.close(&id);
        assert_eq!(sessions.credential(&id), None);
    }

    #[test]
    fn codes_and_sessions_are_bounded() {
        let sessions = Sessions::default();
        let token = Credential::Token("wharf_a_b".into());
        for _ in 0..MAX_CODES {
            assert!(sessions.issue_code(token.clone()).unwrap().is_some());
        }
        assert_eq!(sessions.issue_code(token.clone()).unwrap(), None);
        let mut live = HashMap::new();
        for i in 0..5 {
            live.insert(format!("s{i}"), (Instant::now(), token.clone()));
        }
        make_room(&mut live, SESSION_LIFETIME, 5);
        assert_eq!(live.len(), 4, "room for one more");
    }
}
