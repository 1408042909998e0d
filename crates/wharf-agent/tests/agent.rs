//! The agent with the real process driver: start, health, restart with backoff, adoption.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wharf_agent::{Agent, FolderSource, InstancePlan, NoSink};
use wharf_core::lifecycle::InstanceState;
use wharf_core::model::{HealthCheck, Probe};
use wharf_driver::InstanceKey;
use wharf_driver_process::ProcessDriver;

/// Packs a one-file artifact into `store` and returns its digest.
fn artifact(store: &Path, script: &str) -> String {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("run.sh"), script).unwrap();
    let packed = wharf_artifact::pack(src.path(), &[]).unwrap();
    std::fs::create_dir_all(store).unwrap();
    std::fs::write(
        store.join(format!("{}.tar.gz", packed.digest.hex())),
        &packed.bytes,
    )
    .unwrap();
    packed.digest.to_string()
}

fn agent(root: &Path, id: &str) -> Agent {
    // Unique per test run, so instances left by an aborted earlier run are not adopted.
    let id = &format!("{id}-{}", std::process::id());
    let driver = Arc::new(ProcessDriver::new(format!("{id}:")));
    Agent::new(
        id,
        &root.join("agent"),
        driver,
        Box::new(FolderSource(root.join("store"))),
        Arc::new(NoSink),
    )
    .unwrap()
}

fn plan(digest: &str, health: Option<Probe>) -> InstancePlan {
    InstancePlan {
        key: InstanceKey {
            env: "test".into(),
            service: "svc".into(),
            node: "n".into(),
            instance: 0,
        },
        version: "v1".into(),
        digest: digest.into(),
        config_digest: "c".into(),
        deployment_id: 1,
        argv: vec!["sh".into(), "run.sh".into()],
        env: BTreeMap::from([("MARK".to_owned(), "ready".to_owned())]),
        port: None,
        files: Default::default(),
        container_port: None,
        entrypoint: None,
        working_dir: None,
        user: None,
        ports: vec![],
        volumes: vec![],
        health: health.map(|probe| HealthCheck {
            probe,
            timeout: Duration::from_secs(3),
            interval: Duration::from_millis(20),
            fall: 2,
            rise: 2,
            unhealthy_after: 3,
        }),
        stop_timeout: Duration::from_secs(2),
        stop_signal: None,
        data_slot: None,
        resources: Default::default(),
        logs: Default::default(),
        address: None,
        tcp: false,
        drain_timeout: Duration::from_secs(30),
        pause_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(60),
        driver: Default::default(),
        image: false,
        secret_keys: vec![],
        image_ref: None,
        reload: None,
    }
}

#[tokio::test]
async fn a_command_health_check_gates_readiness() {
    let root = tempfile::tempdir().unwrap();
    let digest = artifact(
        &root.path().join("store"),
        "sleep 0.2; echo $MARK > marker; sleep 30\n",
    );
    let agent = agent(root.path(), "a1");
    let probe = Probe::Command {
        argv: vec!["test".into(), "-f".into(), "marker".into()],
    };
    let p = plan(&digest, Some(probe));
    agent.start(p.clone()).await.unwrap();
    agent
        .wait_healthy(&p.key, Duration::from_secs(3))
        .await
        .unwrap();
    agent.stop(&p.key).await.unwrap();
    assert!(agent.statuses().is_empty());
}

#[tokio::test]
async fn a_crashing_instance_fails_its_health_wait_with_its_log() {
    let root = tempfile::tempdir().unwrap();
    let digest = artifact(
        &root.path().join("store"),
        "echo 'cannot bind port' >&2; exit 4\n",
    );
    let agent = agent(root.path(), "a2");
    let p = plan(
        &digest,
        Some(Probe::Command {
            argv: vec!["false".into()],
        }),
    );
    agent.start(p.clone()).await.unwrap();
    let err = agent
        .wait_healthy(&p.key, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        err.reason.contains("exited with status 4"),
        "{}",
        err.reason
    );
    assert!(
        err.log_tail.contains("cannot bind port"),
        "{}",
        err.log_tail
    );
    agent.stop(&p.key).await;
}

#[tokio::test]
async fn an_instance_that_exits_is_restarted_and_counted() {
    let root = tempfile::tempdir().unwrap();
    let digest = artifact(&root.path().join("store"), "sleep 0.1; exit 1\n");
    let agent = agent(root.path(), "a3");
    let p = plan(&digest, None);
    agent.start(p.clone()).await.unwrap();
    let mut restarts = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        restarts = agent.statuses()[0].1.restarts;
        if restarts >= 2 {
            break;
        }
    }
    assert!(restarts >= 2, "restarts: {restarts}");
    agent.stop(&p.key).await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_instead_of_restarting() {
    let root = tempfile::tempdir().unwrap();
    let digest = artifact(&root.path().join("store"), "sleep 30\n");
    let first = agent(root.path(), "a4");
    let p = plan(&digest, None);
    first.start(p.clone()).await.unwrap();
    let pid = first.statuses()[0].1.pid.unwrap();
    let started_at = first.statuses()[0].1.started_at;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.detach(); // the agent goes away; the instance does not

    let second = agent(root.path(), "a4");
    let recovery = second.recover().await;
    assert_eq!(recovery.adopted, vec![p.key.clone()]);
    let (_, status) = &second.statuses()[0];
    assert_eq!(status.pid, Some(pid), "same process, not a new one");
    assert_eq!(status.state, InstanceState::Running);
    assert_eq!(status.restarts, 0);
    assert!(
        (status.started_at - started_at).abs() < 100,
        "uptime continues: {} vs {started_at}",
        status.started_at
    );
    second.stop(&p.key).await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap()
                .contains(") Z")
    );
}

#[tokio::test]
async fn secrets_never_reach_the_disk_and_come_back_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let seen = root.path().join("seen");
    let script = format!(
        "echo \"start $DB_PASSWORD\" >> {}\nsleep 30\n",
        seen.display()
    );
    let digest = artifact(&root.path().join("store"), &script);
    let first = agent(root.path(), "a5");
    let mut p = plan(&digest, None);
    p.env.insert("DB_PASSWORD".into(), "hunter2-secret".into());
    p.secret_keys = vec!["DB_PASSWORD".into()];
    first.start(p.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.detach();
    for file in std::fs::read_dir(root.path().join("agent/instances")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(
            !text.contains("hunter2-secret"),
            "a state file holds the secret"
        );
    }

    // A restarted agent adopts the instance without its secrets; its controller gives
    // them back, so the next restart of the process has them again.
    let second = agent(root.path(), "a5");
    assert_eq!(second.recover().await.adopted, vec![p.key.clone()]);
    assert!(!second.plan(&p.key).unwrap().env.contains_key("DB_PASSWORD"));
    second.resupply(&p).await;
    let pid = second.statuses()[0].1.pid.unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let restarted = wait_for(|| {
        std::fs::read_to_string(&seen)
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    })
    .await;
    assert!(restarted, "the instance was restarted");
    let lines = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        lines, "start hunter2-secret\nstart hunter2-secret\n",
        "the restart had the secret again"
    );
    second.stop(&p.key).await;
}

async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
