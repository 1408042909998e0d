//! One task per instance: waits for its process, restarts it with backoff when it exits
//! on its own, re-checks its health now and then, and stops it when asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use wharf_core::lifecycle::{Health, InstanceState};
use wharf_driver::{Driver, Exit, LaunchSpec, Running};

use crate::plan::{InstancePlan, InstanceStatus, StatusSink};
use crate::{health, logs, now_millis};

/// How often a running instance's health and log size are re-checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// First restart delay; doubles on each quick crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An instance that ran this long is considered stable again: its backoff resets.
const STABLE_AFTER: Duration = Duration::from_secs(30);

pub(crate) enum Control {
    Stop {
        grace: Duration,
        done: oneshot::Sender<Exit>,
    },
    Signal {
        signal: String,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// What the next restart starts (the same plan, with its secrets given back).
    Relaunch(Box<LaunchSpec>),
}

pub(crate) struct Supervisor {
    pub plan: InstancePlan,
    pub launch: LaunchSpec,
    pub driver: Arc<dyn Driver>,
    pub sink: Arc<dyn StatusSink>,
    pub status: Arc<watch::Sender<InstanceStatus>>,
    /// Run a health check before waiting (for adopted instances).
    pub check_first: bool,
    /// Where a restart gets its secret values afresh (its runtime configuration token
    /// too, which expires and dies with a key rotation), when this agent has one.
    pub secrets: Option<crate::SecretSource>,
    /// The service addresses, told when this instance joins or leaves the rotation.
    pub traffic: Arc<crate::traffic::Traffic>,
    /// The run of passed or failed checks so far, against `rise` and `fall`.
    pub streak: health::Streak,
    /// Failed checks in a row since the instance was last healthy (against
    /// `unhealthy_after`), and whether it was healthy since it started.
    pub failing: (u32, bool),
}

impl Supervisor {
    fn update(&self, change: impl FnOnce(&mut InstanceStatus)) {
        self.status.send_modify(change);
        let member = crate::rotation_member(&self.plan, &self.status.borrow());
        self.traffic.set(&self.plan.key, member);
        self.sink
            .instance_changed(&self.plan, &self.status.borrow());
    }

    pub(crate) async fn run(
        mut self,
        mut running: Box<dyn Running>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        let mut started = Instant::now();
        let mut ticker = tokio::time::interval(CHECK_EVERY);
        ticker.tick().await;
        let every = self
            .plan
            .health
            .as_ref()
            .map_or(CHECK_EVERY, |h| h.running_interval());
        let mut checks = tokio::time::interval(every);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.tick().await;
        let mut last_sample: Option<(Instant, u64)> = None;
        // Whether the last end was a restart for failed checks (its exit says so).
        let mut liveness_restart = false;
        if self.check_first {
            self.check().await;
        }
        loop {
            let exit = tokio::select! {
                exit = running.wait() => exit,
                Some(command) = control.recv() => match command {
                    Control::Stop { grace, done } => {
                        self.update(|s| s.state = InstanceState::Stopping);
                        let exit = running.stop(grace).await;
                        let _ = done.send(exit);
                        return;
                    }
                    Control::Signal { signal, done } => {
                        let _ = done.send(running.signal(&signal).await);
                        continue;
                    }
                    Control::Relaunch(launch) => {
                        self.launch = *launch;
                        continue;
                    }
                },
                _ = ticker.tick() => {
                    self.rotate_logs();
                    self.sample(&*running, &mut last_sample);
                    continue;
                }
                _ = checks.tick() => {
                    let Some(failed) = self.check().await else {
                        continue;
                    };
                    // Liveness: it served, and has failed its checks since. It leaves the
                    // rotation first (its checks may not have taken it out yet).
                    self.update(|s| s.health = Health::Unhealthy);
                    liveness_restart = true;
                    tracing::warn!(instance = %self.plan.key, "instance failed {failed} health checks in a row; restarting it");
                    logs::mark(
                        &self.launch.log_path,
                        &format!("stopping {}: it failed {failed} health checks in a row", self.plan.version),
                    );
                    let _ = running.stop(self.plan.stop_timeout).await;
                    self.update(|s| {
                        s.last_exit = Some(format!("failed {failed} health checks in a row and was restarted"));
                    });
                    Exit::Unknown
                }
            };
            // It ended on its own: record it, wait out the backoff, start it again.
            if started.elapsed() >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            tracing::warn!(instance = %self.plan.key, %exit, "instance ended; restarting in {backoff:?}");
            let restarted_unhealthy = std::mem::take(&mut liveness_restart);
            self.update(|s| {
                s.state = InstanceState::Restarting;
                s.health = Health::Unhealthy;
                s.pid = None;
                if !restarted_unhealthy {
                    s.last_exit = Some(exit.to_string());
                }
            });
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    Some(control) = control.recv() => match control {
                        Control::Stop { done, .. } => {
                            let _ = done.send(exit);
                            return;
                        }
                        Control::Signal { done, .. } => {
                            let _ = done.send(Err("it is restarting".into()));
                            continue;
                        }
                        Control::Relaunch(launch) => {
                            self.launch = *launch;
                            continue;
                        }
                    },
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                logs::mark(
                    &self.launch.log_path,
                    &format!("restarting {} after it {exit}", self.plan.version),
                );
                if let Some(source) = &self.secrets {
                    for (key, value) in source(&self.plan) {
                        if self.plan.secret_keys.contains(&key) {
                            self.launch.env.insert(key, value);
                        }
                    }
                }
                match self.driver.start(&self.launch).await {
                    Ok(next) => {
                        running = next;
                        break;
                    }
                    Err(e) => tracing::error!(instance = %self.plan.key, "restart failed: {e}"),
                }
            }
            started = Instant::now();
            let pid = running.handle_id();
            self.streak = health::Streak::default();
            self.failing = (0, false);
            self.update(|s| {
                s.state = InstanceState::Running;
                s.health = Health::Unknown;
                s.pid = Some(pid);
                s.restarts += 1;
                s.started_at = now_millis();
            });
        }
    }

    /// Records CPU (the rate since the last sample) and memory in use.
    fn sample(&self, running: &dyn Running, last: &mut Option<(Instant, u64)>) {
        let Some(usage) = running.usage() else { return };
        let now = Instant::now();
        let cpu_millis = last.and_then(|(at, cpu_usec)| {
            let elapsed = now.duration_since(at).as_micros() as u64;
            (elapsed > 0).then(|| usage.cpu_usec.saturating_sub(cpu_usec) * 1000 / elapsed)
        });
        *last = Some((now, usage.cpu_usec));
        self.update(|s| {
            s.cpu_millis = cpu_millis.or(s.cpu_millis);
            s.memory_bytes = Some(usage.memory_bytes);
        });
    }

    /// Output appended directly (no log writer) is rotated here, every few seconds.
    fn rotate_logs(&self) {
        let _ = logs::rotate_if_needed(
            &self.launch.log_path,
            self.plan.logs.max_bytes,
            self.plan.logs.keep,
        );
    }

    /// Runs one check; returns the failures in a row when they call for a restart.
    async fn check(&mut self) -> Option<u32> {
        let check = self.plan.health.clone()?;
        let pid = self.status.borrow().pid;
        let passed = health::probe(
            &check.probe,
            self.plan.port,
            &self.launch.workdir,
            &self.launch.env,
        )
        .await
        .and_then(|()| crate::answered_by_instance(&self.plan, pid))
        .is_ok();
        let now = self.status.borrow().health;
        let (failed, was_healthy) = &mut self.failing;
        *failed = if passed { 0 } else { *failed + 1 };
        *was_healthy |= now == Health::Healthy;
        // Never one that is stopping or being drained: its stop decides.
        let serving = self.status.borrow().state == InstanceState::Running
            && !self.traffic.is_draining(&self.plan.key);
        let restart = (check.unhealthy_after > 0
            && *was_healthy
            && serving
            && *failed >= check.unhealthy_after)
            .then_some(*failed);
        if let Some(health) = self.streak.record(passed, now, check.rise, check.fall)
            && now != health
            && self.status.borrow().state == InstanceState::Running
        {
            self.update(|s| s.health = health);
        }
        restart
    }
}
