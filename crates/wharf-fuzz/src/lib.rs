//! What each fuzz target does with its input. `fuzz/` (cargo-fuzz, nightly) calls these
//! with generated inputs; the test below replays the checked-in corpora through them on
//! every test run, so a crash once found stays fixed.
//!
//! A target must never panic, whatever the bytes: every failure is an `Err`.

use std::sync::OnceLock;

use wharf_api::agent::{AgentReport, Assignments, JoinRequest};
use wharf_api::*;
use wharf_server::edge;

/// A definition: parse and validate it, then resolve every service in every
/// environment and compare it with nothing (as a first revision is).
pub fn definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(definition) = wharf_core::load(text, "wharf.yaml", &wharf_core::AnyFolder) else {
        return;
    };
    for env in definition.environments.keys() {
        for service in definition.services.keys() {
            let _ = definition.deploy_spec(service, env);
            let _ = definition.declared_config(service, env);
        }
    }
    let _ = wharf_core::decide::revision_change(None, &definition);
    let _ = wharf_core::decide::revision_change(Some(&definition), &definition);
}

/// One JSON body of the HTTP API: the first byte picks the route, the rest is the body,
/// read and checked as the controller's edge does.
pub fn api_body(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 9 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<DeployRequest>(body) {
                let _ = edge::deploy(&req);
                if let Some(Ok(definition)) = req.proposed_definition.as_ref().map(edge::definition)
                {
                    let _ = definition.deploy_spec(&req.service, &req.env);
                }
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<PromoteRequest>(body) {
                let _ = edge::promote(&req);
            }
        }
        2 => {
            if let Ok(req) = serde_json::from_slice::<DefinitionSubmission>(body) {
                let _ = edge::definition(&req);
            }
        }
        3 => {
            if let Ok(req) = serde_json::from_slice::<ConfigChange>(body) {
                let _ = edge::config_change(&req);
            }
        }
        4 => {
            if let Ok(req) = serde_json::from_slice::<RollbackRequest>(body) {
                let _ = edge::rollback(&req);
            }
        }
        5 => {
            if let Ok(req) = serde_json::from_slice::<StopRequest>(body) {
                let _ = edge::stop(&req);
            }
        }
        6 => {
            if let Ok(req) = serde_json::from_slice::<TokenRequest>(body) {
                let _ = edge::join_token(&req);
            }
        }
        7 => {
            if let Ok(req) = serde_json::from_slice::<ApiTokenRequest>(body) {
                let _ = edge::api_token(&req);
            }
        }
        _ => {
            let _ = serde_json::from_slice::<ImageRegistration>(body);
        }
    }
}

/// An artifact archive, unpacked as an agent would (small limits, a scratch folder):
/// it must unpack inside its folder or be refused, never write outside nor panic.
pub fn archive(data: &[u8]) {
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    let dest = scratch.path().join("release").join("dest");
    let limits = wharf_artifact::UnpackLimits {
        total_bytes: 1 << 20,
        entries: 256,
        entry_bytes: 256 << 10,
    };
    let digest = wharf_artifact::ArtifactDigest::of(data);
    let _ = wharf_artifact::check_limits(data, &limits);
    let _ = wharf_artifact::unpack_with(data, &digest, &dest, &limits);
    // Nothing lands beside the release folder.
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        beside.iter().all(|n| n == "release"),
        "an archive wrote outside its folder: {beside:?}"
    );
}

/// The controller's certificate authority, made once per process.
fn authority() -> &'static wharf_pki::Authority {
    static AUTHORITY: OnceLock<(tempfile::TempDir, wharf_pki::Authority)> = OnceLock::new();
    let (_, authority) = AUTHORITY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp folder");
        let authority =
            wharf_pki::Authority::load_or_create(dir.path()).expect("a certificate authority");
        (dir, authority)
    });
    authority
}

/// One body of the agent protocol: a join (checked, then its signing request signed as
/// the controller would), a report, or assignments as an agent reads them.
pub fn agent_body(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 3 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<JoinRequest>(body)
                && edge::join(&req).is_ok()
            {
                let _ = authority().sign_agent(&req.csr, 1, 1);
            }
        }
        1 => {
            let _ = serde_json::from_slice::<AgentReport>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<Assignments>(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Feeds every file of `fuzz/corpus/TARGET` to the target.
    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            // A fuzzer running on the same corpus may replace files meanwhile.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            run(&data);
            count += 1;
        }
        count
    }

    #[test]
    fn the_definition_corpus_replays_without_a_panic() {
        assert!(replay("definition", super::definition) > 0);
    }

    #[test]
    fn the_api_corpus_replays_without_a_panic() {
        assert!(replay("api_body", super::api_body) > 0);
    }

    #[test]
    fn the_archive_corpus_replays_without_a_panic() {
        assert!(replay("archive", super::archive) > 0);
    }

    #[test]
    fn the_agent_corpus_replays_without_a_panic() {
        assert!(replay("agent_body", super::agent_body) > 0);
    }
}
