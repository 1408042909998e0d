//! The process driver against real processes.

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_driver::{Driver, Exit, InstanceKey, LaunchSpec};
use wharf_driver_process::ProcessDriver;

fn spec(dir: &std::path::Path, tag: &str, script: &str) -> LaunchSpec {
    LaunchSpec {
        key: InstanceKey {
            env: "test".into(),
            service: "svc".into(),
            node: "n".into(),
            instance: 0,
        },
        workdir: dir.to_owned(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        log_path: dir.join("out.log"),
        log_max_bytes: 0,
        log_keep: 0,
        tag: tag.into(),
        limits: Default::default(),
        image: None,
        secret_keys: vec![],
        pull: None,
        stop_signal: None,
        data_dir: None,
        container_port: None,
        entrypoint: None,
        working_dir: None,
        user: None,
        extra_ports: vec![],
        volumes: vec![],
        from_source: false,
    }
}

#[tokio::test]
async fn output_goes_to_the_log_with_the_rendered_environment() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new("t1/");
    let mut running = driver
        .start(&spec(
            dir.path(),
            "t1/a",
            "echo $GREETING; echo oops >&2; exit 3",
        ))
        .await
        .unwrap();
    assert_eq!(running.wait().await, Exit::Code(3));
    let log = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
    assert_eq!(log, "hello\noops\n");
}

#[tokio::test]
async fn stop_ends_the_whole_process_group_even_when_sigterm_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new("t2/");
    let script = "trap '' TERM; sleep 60 & echo $! > child.pid; wait";
    let mut running = driver
        .start(&spec(dir.path(), "t2/a", script))
        .await
        .unwrap();
    let pidfile = dir.path().join("child.pid");
    while !pidfile.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let child: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exit = running.stop(Duration::from_millis(200)).await;
    assert_eq!(exit, Exit::Signal(9));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "grandchild survived: {stat}"
    );
}

#[tokio::test]
async fn a_stop_sends_the_stop_signal_first() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new("t9/");
    // Like nginx: QUIT is the graceful stop; TERM would not be.
    let script = "trap 'echo graceful > how; exit 0' QUIT; trap 'echo fast > how; exit 1' TERM; touch ready; while :; do sleep 0.05; done";
    let mut launch = spec(dir.path(), "t9/a", script);
    launch.stop_signal = Some("QUIT".into());
    let mut running = driver.start(&launch).await.unwrap();
    while !dir.path().join("ready").exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = running.stop(Duration::from_secs(5)).await;
    assert_eq!(exit, Exit::Code(0));
    let how = std::fs::read_to_string(dir.path().join("how")).unwrap();
    assert_eq!(how.trim(), "graceful");
}

#[tokio::test]
async fn a_new_driver_finds_and_adopts_running_instances() {
    let dir = tempfile::tempdir().unwrap();
    let first = ProcessDriver::new("t3/");
    let running = first
        .start(&spec(dir.path(), "t3/env/svc/n/0", "sleep 30"))
        .await
        .unwrap();
    let pid = running.handle_id();
    drop(running); // the agent goes away; the process does not

    let second = ProcessDriver::new("t3/");
    let found = second.find_running().await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].tag, "t3/env/svc/n/0");
    assert_eq!(found[0].handle_id, pid);
    assert!(ProcessDriver::new("other/").find_running().await.is_empty());
    let mut adopted = second.adopt(&found[0], None).await.unwrap();
    adopted.stop(Duration::from_secs(2)).await;
    assert!(second.find_running().await.is_empty());
}

#[tokio::test]
async fn an_empty_command_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let driver = ProcessDriver::new("t-empty/");
    let mut empty = spec(dir.path(), "t-empty/a", "");
    empty.argv.clear();
    let err = driver.start(&empty).await.err().expect("refused");
    assert!(err.to_string().contains("no command"), "{err}");
}

#[tokio::test]
async fn an_instance_runs_as_its_user_in_its_working_dir_and_owns_its_data() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let driver = ProcessDriver::new("t9/");
    let mut launch = spec(dir.path(), "t9/a", "id -u > uid; pwd > cwd");
    launch.user = Some("nobody".into());
    launch.working_dir = Some("data".into());
    launch.data_dir = Some(data.clone());
    let mut running = driver.start(&launch).await.unwrap();
    assert_eq!(running.wait().await, Exit::Code(0));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let read = |name: &str| std::fs::read_to_string(data.join(name)).unwrap();
    assert_eq!(read("uid").trim(), nobody.uid.to_string());
    assert_eq!(read("cwd").trim(), data.display().to_string());

    // A folder on the way it cannot pass is named before anything starts.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let Err(e) = driver.start(&launch).await else {
        panic!("started in a folder its user cannot reach");
    };
    assert!(
        e.to_string()
            .contains(&format!("{} is closed to it", dir.path().display())),
        "{e}"
    );
}
