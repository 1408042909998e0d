//! One suite of store tests, run against every [`Store`]: SQLite always, PostgreSQL when
//! `WHARF_TEST_POSTGRES` names a server (README command 2 starts one; under `CI` its
//! absence fails the run).

use crate::*;

/// The cases, each over a fresh, empty store.
mod cases {
    use super::*;

    fn artifact(version: &str, digest: &str) -> ArtifactRecord {
        ArtifactRecord {
            service: "catalog".into(),
            version: version.into(),
            digest: digest.into(),
            size: 10,
            created_at: 1,
        }
    }

    pub fn every_committed_write_moves_the_change_feed_and_a_read_does_not(store: &dyn Store) {
        let mut feed = store.changes().unwrap();
        let seen = *feed.borrow_and_update();
        store.put_artifact(&artifact("v1", "sha256:aa")).unwrap();
        assert!(feed.has_changed().unwrap(), "a write is announced");
        let after_write = *feed.borrow_and_update();
        assert!(after_write > seen);
        store.artifacts(None).unwrap();
        store.artifact("catalog", "v1").unwrap();
        assert!(!feed.has_changed().unwrap(), "reads are not changes");
    }

    pub fn a_serving_rollout_outlives_a_restart_and_takes_commands_once(store: &dyn Store) {
        let rolling = store.begin_deployment(&deployment("ann")).unwrap();
        let row = |phase: &str| RolloutRecord {
            deployment_id: rolling,
            service: "catalog".into(),
            env: "ci".into(),
            phase: phase.into(),
            progress: serde_json::json!({ "weight": 10 }),
            command: None,
            command_by: None,
            updated_at: 1,
        };
        store.put_rollout(&row("paused")).unwrap();
        assert!(
            store.interrupt_unfinished("stopped", 2).unwrap().is_empty(),
            "its deployment stays in progress"
        );
        assert!(
            store
                .command_rollout(rolling, &["paused"], "abort", "bob")
                .unwrap()
        );
        assert!(
            !store
                .command_rollout(rolling, &["promoted"], "abort", "bob")
                .unwrap()
        );
        assert!(
            store
                .command_rollout(rolling, &["paused"], "promote", "cy")
                .unwrap()
        );
        store.put_rollout(&row("paused")).unwrap();
        assert_eq!(
            store.take_rollout_command(rolling).unwrap(),
            Some(("abort".into(), "bob".into())),
            "a progress update keeps the pending command"
        );
        assert_eq!(store.take_rollout_command(rolling).unwrap(), None);
        assert_eq!(store.rollouts_in(&["paused"]).unwrap().len(), 1);
        store.put_rollout(&row("starting")).unwrap();
        assert_eq!(
            store.interrupt_unfinished("stopped", 3).unwrap().len(),
            1,
            "a rollout still starting its new set is interrupted like a deploy"
        );
        assert_eq!(
            store.rollout("ci", "catalog").unwrap().unwrap().phase,
            "starting"
        );
    }

    pub fn deployment(user: &str) -> NewDeployment {
        NewDeployment {
            service: "catalog".into(),
            env: "ci".into(),
            kind: DeploymentKind::Deploy,
            version: "v1".into(),
            digest: "sha256:a".into(),
            config_digest: "c".into(),
            spec: SpecJson::of(&serde_json::json!({})),
            user: user.into(),
            started_at: 1000,
            config_revision: 0,
            forced: false,
            pending_approval: false,
        }
    }

    pub fn config_revisions_count_up_per_service_and_environment(store: &dyn Store) {
        let values = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r1 = store
            .put_config_revision("catalog", "ci", &values(&[("A", "1")]), "ann", 1, "first")
            .unwrap();
        let r2 = store
            .put_config_revision("catalog", "ci", &values(&[("A", "2")]), "bob", 2, "")
            .unwrap();
        let other = store
            .put_config_revision("catalog", "uat", &values(&[]), "ann", 3, "")
            .unwrap();
        assert_eq!((r1.revision, r2.revision, other.revision), (1, 2, 1));
        let newest = store
            .config_revision("catalog", "ci", None)
            .unwrap()
            .unwrap();
        assert_eq!(newest.values, values(&[("A", "2")]));
        assert_eq!(newest.user, "bob");
        let first = store
            .config_revision("catalog", "ci", Some(1))
            .unwrap()
            .unwrap();
        assert_eq!(first.message, "first");
        let all = store.config_revisions("catalog", "ci").unwrap();
        assert_eq!(all.iter().map(|r| r.revision).collect::<Vec<_>>(), [2, 1]);
    }

    pub fn held_deployments_take_the_lock_only_once_approved(store: &dyn Store) {
        let held = store
            .begin_deployment(&NewDeployment {
                pending_approval: true,
                ..deployment("ann")
            })
            .unwrap();
        // A held deployment does not block another deploy...
        let running = store.begin_deployment(&deployment("bob")).unwrap();
        assert_eq!(store.pending_deployments().unwrap().len(), 1);
        // ...but cannot start while another runs.
        let err = store.approve_deployment(held, "carol", 2000).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }));
        store
            .finish_deployment(running, DeploymentState::Succeeded, "", 3000)
            .unwrap();
        store.approve_deployment(held, "carol", 4000).unwrap();
        let approved = store.deployment(held).unwrap().unwrap();
        assert_eq!(approved.state, DeploymentState::InProgress);
        assert_eq!(approved.approved_by.as_deref(), Some("carol"));
        assert!(store.pending_deployments().unwrap().is_empty());
        assert!(store.ran_successfully("catalog", "ci", "sha256:a").unwrap());
        assert!(
            !store
                .ran_successfully("catalog", "uat", "sha256:a")
                .unwrap()
        );
    }

    pub fn a_rejected_deployment_cannot_be_approved_nor_the_reverse(store: &dyn Store) {
        let held = || {
            store
                .begin_deployment(&NewDeployment {
                    pending_approval: true,
                    ..deployment("ann")
                })
                .unwrap()
        };
        let first = held();
        store
            .finish_deployment(first, DeploymentState::Rejected, "no", 2000)
            .unwrap();
        let err = store.approve_deployment(first, "carol", 3000).unwrap_err();
        assert!(
            matches!(&err, StoreError::Transition { state, .. } if state == "rejected"),
            "{err}"
        );
        assert_eq!(
            store.deployment(first).unwrap().unwrap().state,
            DeploymentState::Rejected
        );

        let second = held();
        store.approve_deployment(second, "carol", 3000).unwrap();
        let err = store
            .finish_deployment(second, DeploymentState::Rejected, "no", 4000)
            .unwrap_err();
        assert!(matches!(err, StoreError::Transition { .. }), "{err}");
        // It ends once: a second outcome is refused too.
        store
            .finish_deployment(second, DeploymentState::Succeeded, "", 5000)
            .unwrap();
        assert!(
            store
                .finish_deployment(second, DeploymentState::Failed, "", 6000)
                .is_err()
        );
        assert!(matches!(
            store.approve_deployment(99, "carol", 1),
            Err(StoreError::NoDeployment(99))
        ));
    }

    pub fn a_held_configuration_revision_is_seen_only_once_approved(store: &dyn Store) {
        let values = |v: &str| std::collections::BTreeMap::from([("A".to_owned(), v.to_owned())]);
        store
            .put_config_revision("catalog", "ci", &values("1"), "ann", 1, "")
            .unwrap();
        let current = |store: &dyn Store| {
            store
                .config_revision("catalog", "ci", None)
                .unwrap()
                .unwrap()
                .values["A"]
                .clone()
        };
        let held_deploy = |store: &dyn Store, revision: i64| {
            store
                .begin_deployment(&NewDeployment {
                    kind: DeploymentKind::Config,
                    config_revision: revision,
                    pending_approval: true,
                    ..deployment("ann")
                })
                .unwrap()
        };
        // Held: nobody sees it as current, though it can be read by number.
        let held = store
            .hold_config_revision("catalog", "ci", &values("2"), "ann", 2, "")
            .unwrap();
        let id = held_deploy(store, held.revision);
        assert_eq!(current(store), "1");
        assert_eq!(
            store
                .config_revision("catalog", "ci", Some(2))
                .unwrap()
                .unwrap()
                .state,
            "held"
        );
        store.approve_deployment(id, "bob", 3).unwrap();
        assert_eq!(current(store), "2");

        // Rejected: it never becomes current.
        store
            .finish_deployment(id, DeploymentState::Succeeded, "", 4)
            .unwrap();
        let held = store
            .hold_config_revision("catalog", "ci", &values("3"), "ann", 5, "")
            .unwrap();
        let id = held_deploy(store, held.revision);
        store
            .finish_deployment(id, DeploymentState::Rejected, "no", 6)
            .unwrap();
        assert_eq!(current(store), "2");
        let states: Vec<String> = store
            .config_revisions("catalog", "ci")
            .unwrap()
            .into_iter()
            .map(|r| r.state)
            .collect();
        assert_eq!(states, ["rejected", "active", "active"]);
    }

    pub fn a_held_configuration_revision_replaced_meanwhile_cannot_be_approved(store: &dyn Store) {
        let values = |v: &str| std::collections::BTreeMap::from([("A".to_owned(), v.to_owned())]);
        let held = store
            .hold_config_revision("catalog", "ci", &values("held"), "ann", 1, "")
            .unwrap();
        let id = store
            .begin_deployment(&NewDeployment {
                kind: DeploymentKind::Config,
                config_revision: held.revision,
                pending_approval: true,
                ..deployment("ann")
            })
            .unwrap();
        // A rollback wrote a newer revision meanwhile.
        store
            .put_config_revision("catalog", "ci", &values("restored"), "bob", 2, "")
            .unwrap();
        let err = store.approve_deployment(id, "carol", 3).unwrap_err();
        assert!(matches!(err, StoreError::Superseded { .. }), "{err}");
        let current = store
            .config_revision("catalog", "ci", None)
            .unwrap()
            .unwrap();
        assert_eq!(current.values["A"], "restored");
        assert_eq!(
            store.deployment(id).unwrap().unwrap().state,
            DeploymentState::PendingApproval
        );
    }

    pub fn definition_revisions_count_up(store: &dyn Store) {
        assert!(store.definition(None).unwrap().is_none());
        let record = |source: &str| DefinitionRecord {
            revision: 0,
            digest: format!("d-{source}"),
            path: "wharf.yaml".into(),
            source: source.into(),
            files: Default::default(),
            scale: Default::default(),
            ssh_hosts: Default::default(),
            user: "ann".into(),
            at: 1,
            message: String::new(),
            state: String::new(),
        };
        assert_eq!(store.put_definition(&record("a")).unwrap().revision, 1);
        assert_eq!(store.put_definition(&record("b")).unwrap().revision, 2);
        assert_eq!(store.definition(None).unwrap().unwrap().source, "b");
        assert_eq!(store.definition_in_force().unwrap(), Some(2));
        assert_eq!(store.definition(Some(1)).unwrap().unwrap().source, "a");
        assert!(store.definition(Some(3)).unwrap().is_none());
        assert_eq!(store.definitions().unwrap().len(), 2);
    }

    pub fn secrets_are_versioned_and_api_tokens_revocable(store: &dyn Store) {
        let secret = SecretRecord {
            service: "orders".into(),
            env: "ci".into(),
            key: "DB_PASSWORD".into(),
            key_id: "k1".into(),
            nonce: vec![1; 24],
            ciphertext: vec![2; 40],
            version: 0,
            updated_at: 1,
            updated_by: "ann".into(),
        };
        store.put_secret(&secret).unwrap();
        store.put_secret(&secret).unwrap();
        let stored = store.secrets(Some(("orders", "ci"))).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].version, 2);
        assert!(store.secrets(Some(("orders", "uat"))).unwrap().is_empty());
        assert!(store.remove_secret("orders", "ci", "DB_PASSWORD").unwrap());
        assert!(!store.remove_secret("orders", "ci", "DB_PASSWORD").unwrap());

        let token = ApiTokenRecord {
            id: "t1".into(),
            name: "ci".into(),
            scopes: vec!["ci:deploy".into(), "ci:config".into()],
            created_at: 1,
            created_by: "ann".into(),
            revoked_at: None,
        };
        store.create_api_token(&token, "hash").unwrap();
        let (found, hash) = store.api_token("t1").unwrap().unwrap();
        assert_eq!((found.scopes.len(), hash.as_str()), (2, "hash"));
        assert!(store.revoke_api_token("t1", 5).unwrap());
        assert!(!store.revoke_api_token("t1", 6).unwrap());
        assert_eq!(
            store.api_token("t1").unwrap().unwrap().0.revoked_at,
            Some(5)
        );
        store
            .audit(7, "ci", "deploy", "catalog in ci", "denied")
            .unwrap();
        assert_eq!(store.audit_log(10).unwrap()[0].outcome, "denied");
    }

    pub fn a_version_never_points_at_two_contents(store: &dyn Store) {
        assert_eq!(
            store.put_artifact(&artifact("v1", "sha256:a")).unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_artifact(&artifact("v1", "sha256:a")).unwrap(),
            PutOutcome::AlreadyPresent
        );
        let err = store.put_artifact(&artifact("v1", "sha256:b")).unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { .. }));
        assert_eq!(
            store.artifact("catalog", "v1").unwrap().unwrap().digest,
            "sha256:a"
        );
    }

    pub fn one_deployment_at_a_time_per_service_and_environment(store: &dyn Store) {
        let id = store.begin_deployment(&deployment("alice")).unwrap();
        let err = store.begin_deployment(&deployment("bob")).unwrap_err();
        assert!(err.to_string().contains("being deployed by alice"), "{err}");
        store
            .finish_deployment(id, DeploymentState::Succeeded, "", 2000)
            .unwrap();
        store.begin_deployment(&deployment("bob")).unwrap();
    }

    pub fn a_brief_history_is_the_history_without_specs(store: &dyn Store) {
        let mut first = deployment("alice");
        first.spec = SpecJson::of(&serde_json::json!({ "slots": [1, 2, 3] }));
        let id = store.begin_deployment(&first).unwrap();
        store
            .finish_deployment(id, DeploymentState::Succeeded, "ok", 2000)
            .unwrap();
        store.begin_deployment(&deployment("bob")).unwrap();
        let full = store.history("catalog", "ci").unwrap();
        let brief = store.history_brief("catalog", "ci").unwrap();
        assert_eq!(full.len(), 2);
        assert_eq!(brief.len(), full.len());
        assert_eq!(full[1].spec.field("slots").unwrap()[2], 3);
        for (f, b) in full.iter().zip(&brief) {
            assert_eq!(b.spec, SpecJson::null());
            let without_spec = DeploymentRecord {
                spec: SpecJson::null(),
                ..f.clone()
            };
            assert_eq!(*b, without_spec);
        }
    }

    fn token(id: &str, expires_at: i64, uses: u32) -> JoinTokenRecord {
        JoinTokenRecord {
            id: id.into(),
            env: "prod".into(),
            expires_at,
            uses_left: uses,
            created_at: 0,
            created_by: "me".into(),
        }
    }

    pub fn join_tokens_are_single_use_expiring_and_checked_by_hash(store: &dyn Store) {
        store
            .create_join_token(&token("a", 100, 1), "hash-a")
            .unwrap();
        store
            .create_join_token(&token("b", 10, 1), "hash-b")
            .unwrap();
        assert!(matches!(
            store.redeem_join_token("a", "wrong", 5),
            Err(StoreError::TokenRefused(_))
        ));
        assert_eq!(store.redeem_join_token("a", "hash-a", 5).unwrap(), "prod");
        let again = store.redeem_join_token("a", "hash-a", 5).unwrap_err();
        assert!(again.to_string().contains("used"), "{again}");
        let late = store.redeem_join_token("b", "hash-b", 11).unwrap_err();
        assert!(late.to_string().contains("expired"), "{late}");
        assert!(store.redeem_join_token("zzz", "hash-a", 5).is_err());
    }

    pub fn rejoining_hosts_keep_their_id_and_get_a_new_serial(store: &dyn Store) {
        let new = NewHost {
            name: "web-1".into(),
            env: "prod".into(),
            labels: Default::default(),
            capacity: Capacity::default(),
            address: "10.0.0.2".into(),
            at: 1,
        };
        let first = store.register_host(&new).unwrap();
        let second = store.register_host(&new).unwrap();
        assert_eq!(first.id, second.id);
        assert_ne!(first.cert_serial, second.cert_serial);
        store
            .put_assignment(
                first.id,
                "prod",
                "api",
                "web-1",
                0,
                &serde_json::json!({"x": 1}),
            )
            .unwrap();
        assert_eq!(
            store.assignments(first.id).unwrap(),
            vec![serde_json::json!({"x": 1})]
        );
        store.remove_assignment("prod", "api", "web-1", 0).unwrap();
        assert!(store.assignments(first.id).unwrap().is_empty());
    }

    /// Host `name` joined to `ci` (at 10.0.0.1, at time 1).
    fn joined(store: &dyn Store, name: &str) -> HostRecord {
        store
            .register_host(&NewHost {
                name: name.into(),
                env: "ci".into(),
                labels: Default::default(),
                capacity: Default::default(),
                address: "10.0.0.1".into(),
                at: 1,
            })
            .unwrap()
    }

    fn instance(node: &str, n: u32) -> InstanceRecord {
        InstanceRecord {
            env: "ci".into(),
            service: "catalog".into(),
            node: node.into(),
            instance: n,
            version: "v1".into(),
            digest: "sha256:aa".into(),
            config_digest: "sha256:cc".into(),
            deployment_id: 1,
            pid: Some(4242),
            port: Some(8080),
            state: InstanceState::Running,
            health: Health::Healthy,
            restarts: 2,
            started_at: 7,
            cpu_millis: Some(u64::from(n) * 10),
            memory_bytes: None,
        }
    }

    pub fn instances_round_trip_in_order_and_replace_by_slot(store: &dyn Store) {
        let rows: Vec<_> = (0..300)
            .rev()
            .map(|n| instance(if n % 2 == 0 { "web" } else { "Web" }, n))
            .collect();
        store.put_instances(&rows).unwrap();
        let read = store.instances(Some("ci"), Some("catalog")).unwrap();
        assert_eq!(read.len(), 300);
        assert_eq!(read[0], instance("web", 0));
        assert!(
            read.windows(2)
                .all(|w| (w[0].instance, &w[0].node) <= (w[1].instance, &w[1].node))
        );
        store
            .put_instance(&InstanceRecord {
                version: "v2".into(),
                pid: None,
                ..instance("web", 0)
            })
            .unwrap();
        let again = store.instances(None, None).unwrap();
        assert_eq!(again.len(), 300, "the slot is replaced, not added");
        assert_eq!((again[0].version.as_str(), again[0].pid), ("v2", None));
        store.remove_instance("ci", "catalog", "web", 0).unwrap();
        assert_eq!(store.instances(Some("ci"), None).unwrap().len(), 299);
        store
            .remove_instances(&[("ci", "catalog", "Web", 1), ("ci", "catalog", "web", 2)])
            .unwrap();
        assert_eq!(store.instances(Some("ci"), None).unwrap().len(), 297);
        assert!(store.instances(Some("prod"), None).unwrap().is_empty());
    }

    pub fn observed_instances_are_written_only_while_assigned(store: &dyn Store) {
        let host = joined(store, "web");
        store
            .put_assignments(&[(host.id, ("ci", "catalog", "web", 0), "{}".to_owned())])
            .unwrap();
        store
            .put_observed_instances(&[instance("web", 0), instance("web", 1)])
            .unwrap();
        let rows = store.instances(Some("ci"), None).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.instance).collect::<Vec<_>>(),
            [0],
            "a slot stopped meanwhile stays gone"
        );
    }

    pub fn heartbeats_of_many_hosts_land_together(store: &dyn Store) {
        let join = |name| joined(store, name);
        let (a, b, quiet) = (join("a"), join("b"), join("quiet"));
        let heard = |host_id, at, address: &str| Heartbeat {
            host_id,
            at,
            address: address.into(),
        };
        store
            .touch_hosts(&[heard(a.id, 50, "10.0.0.7"), heard(b.id, 60, "10.0.0.8")])
            .unwrap();
        store.touch_hosts(&[]).unwrap();
        let seen = |id| {
            let h = store.host(id).unwrap().unwrap();
            (h.last_seen, h.address)
        };
        assert_eq!(seen(a.id), (50, "10.0.0.7".to_owned()));
        assert_eq!(seen(b.id), (60, "10.0.0.8".to_owned()));
        assert_eq!(seen(quiet.id), (quiet.last_seen, "10.0.0.1".to_owned()));
    }

    pub fn assignments_and_ports_belong_to_a_slot(store: &dyn Store) {
        let host = store
            .register_host(&NewHost {
                name: "h1".into(),
                env: "ci".into(),
                labels: Default::default(),
                capacity: Default::default(),
                address: "10.0.0.1".into(),
                at: 1,
            })
            .unwrap();
        let plans: Vec<_> = (0..3u32)
            .map(|n| {
                (
                    host.id,
                    ("ci", "catalog", "web", n),
                    serde_json::json!({ "n": n }).to_string(),
                )
            })
            .collect();
        store.put_assignments(&plans).unwrap();
        store
            .put_assignment(
                host.id,
                "ci",
                "catalog",
                "web",
                1,
                &serde_json::json!({ "n": 10 }),
            )
            .unwrap();
        assert_eq!(
            store.assignments(host.id).unwrap(),
            vec![
                serde_json::json!({ "n": 0 }),
                serde_json::json!({ "n": 10 }),
                serde_json::json!({ "n": 2 })
            ]
        );
        store.remove_assignment("ci", "catalog", "web", 0).unwrap();
        assert_eq!(store.assignments(host.id).unwrap().len(), 2);
        store
            .remove_assignments(&[("ci", "catalog", "web", 2), ("ci", "catalog", "web", 7)])
            .unwrap();
        assert_eq!(
            store.assignments(host.id).unwrap(),
            vec![serde_json::json!({ "n": 10 })]
        );
        assert_eq!(
            store.assigned_port("ci", "catalog", "web", 0).unwrap(),
            None
        );
        store.assign_port("ci", "catalog", "web", 0, 9000).unwrap();
        store.assign_port("ci", "catalog", "web", 0, 9001).unwrap();
        assert_eq!(
            store.assigned_port("ci", "catalog", "web", 0).unwrap(),
            Some(9001)
        );
        assert!(store.port_taken(9001).unwrap());
        assert!(!store.port_taken(9000).unwrap());
        store.remove_host(host.id).unwrap();
        assert!(store.assignments(host.id).unwrap().is_empty());
        assert!(store.host(host.id).unwrap().is_none());
    }

    pub fn the_audit_log_reads_newest_first(store: &dyn Store) {
        for n in 0..5 {
            store
                .audit(n, "ann", "deploy", &format!("catalog/{n}"), "ok")
                .unwrap();
        }
        let log = store.audit_log(3).unwrap();
        let targets: Vec<_> = log.iter().map(|a| a.target.as_str()).collect();
        assert_eq!(targets, ["catalog/4", "catalog/3", "catalog/2"]);
    }

    pub fn unfinished_deployments_are_interrupted_once(store: &dyn Store) {
        let id = store.begin_deployment(&deployment("alice")).unwrap();
        let interrupted = store
            .interrupt_unfinished("controller restarted", 5)
            .unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(
            interrupted[0].state,
            DeploymentState::InProgress,
            "as it was"
        );
        let now = store.deployment(id).unwrap().unwrap();
        assert_eq!(now.state, DeploymentState::Interrupted);
        assert_eq!(now.message, "controller restarted");
        assert_eq!(store.unresolved_interruptions().unwrap().len(), 1);
        store.resolve_interruption(id, 0, "nothing to do").unwrap();
        assert!(store.unresolved_interruptions().unwrap().is_empty());
        assert!(store.interrupt_unfinished("again", 6).unwrap().is_empty());
    }
}

/// The cases, run against each store.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::cases::$name(&crate::SqliteStore::in_memory().unwrap())
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(store) = super::pg::fresh() {
                        super::cases::$name(&store)
                    }
                }
            )*
        }
    };
}

suite!(
    every_committed_write_moves_the_change_feed_and_a_read_does_not,
    a_serving_rollout_outlives_a_restart_and_takes_commands_once,
    config_revisions_count_up_per_service_and_environment,
    held_deployments_take_the_lock_only_once_approved,
    a_rejected_deployment_cannot_be_approved_nor_the_reverse,
    a_held_configuration_revision_is_seen_only_once_approved,
    a_held_configuration_revision_replaced_meanwhile_cannot_be_approved,
    definition_revisions_count_up,
    secrets_are_versioned_and_api_tokens_revocable,
    a_version_never_points_at_two_contents,
    one_deployment_at_a_time_per_service_and_environment,
    a_brief_history_is_the_history_without_specs,
    join_tokens_are_single_use_expiring_and_checked_by_hash,
    rejoining_hosts_keep_their_id_and_get_a_new_serial,
    instances_round_trip_in_order_and_replace_by_slot,
    assignments_and_ports_belong_to_a_slot,
    heartbeats_of_many_hosts_land_together,
    observed_instances_are_written_only_while_assigned,
    the_audit_log_reads_newest_first,
    unfinished_deployments_are_interrupted_once,
);

#[test]
fn sqlite_keeps_interrupted_deployments_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = SqliteStore::open(&path)
        .unwrap()
        .begin_deployment(&cases::deployment("alice"))
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store
            .interrupt_unfinished("controller restarted", 5)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.deployment(id).unwrap().unwrap().state,
        DeploymentState::Interrupted
    );
}

/// PostgreSQL databases for tests, one per test, made on the server `WHARF_TEST_POSTGRES`
/// names (its role may create databases; the password, if any, is `PGPASSWORD`).
pub(crate) mod pg {
    use std::time::Duration;

    use crate::PgStore;

    /// The server's address, or None (printing why) where no server was given outside CI.
    #[allow(clippy::print_stderr)]
    pub fn server() -> Option<String> {
        match std::env::var("WHARF_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some() => {
                panic!(
                    "CI is set but WHARF_TEST_POSTGRES is not: run the tests with ./scripts/test, which starts PostgreSQL"
                )
            }
            _ => {
                eprintln!(
                    "skipped: WHARF_TEST_POSTGRES names no PostgreSQL server (./scripts/test starts one)"
                );
                None
            }
        }
    }

    /// The address of a new, empty database on the test server.
    pub fn new_database() -> Option<String> {
        let server = server()?;
        let name = format!("wharf_t_{:016x}", rand_u64());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config: tokio_postgres::Config = server.parse().unwrap();
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        });
        let (base, _) = server.rsplit_once('/').unwrap();
        Some(format!("{base}/{name}"))
    }

    /// A store on a new database, leading it.
    pub fn fresh() -> Option<PgStore> {
        let store = PgStore::connect(&new_database()?).unwrap();
        assert!(
            store
                .campaign("test", "", Duration::from_secs(3600))
                .unwrap()
                .is_some()
        );
        Some(store)
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.finish()
    }
}
