//! Blue-green and canary rollouts: the new set runs beside the old one and the share of
//! traffic it takes (its weight) moves by steps, on a timer, by `wharf rollout promote`
//! or back to nothing by an abort (by hand, or when the proxies measure the new set
//! doing worse than the old). Pure decisions over a rollout's progress, as in
//! [`crate::decide`]; the controller stores the progress before it acts on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a new version takes over from the running one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Strategy {
    /// A few instances at a time, each new one in the rotation once healthy.
    #[default]
    Rolling,
    /// The whole new set beside the old, reachable only at the preview address until
    /// promoted; then all traffic at once, the old set kept for `scale_down_delay`.
    BlueGreen {
        #[serde(with = "crate::model::millis")]
        scale_down_delay: Duration,
    },
    /// The whole new set beside the old, taking each step's weight of the traffic.
    Canary {
        steps: Vec<CanaryStep>,
        pin: Pin,
        analysis: Analysis,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::BlueGreen { .. } => "blue-green",
            Self::Canary { .. } => "canary",
        }
    }

    /// Whether the new set runs beside the old one under a traffic split.
    pub fn splits(&self) -> bool {
        !matches!(self, Self::Rolling)
    }

    fn steps(&self) -> &[CanaryStep] {
        match self {
            Self::Canary { steps, .. } => steps,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStep {
    /// Percent of requests to the new set, 1 to 100.
    pub weight: u8,
    /// How long the step lasts; none: until promoted.
    pub pause_ms: Option<u64>,
}

pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);
pub const DEFAULT_PIN_HEADER: &str = "x-wharf-canary";
pub const DEFAULT_PIN_COOKIE: &str = "wharf_canary";

/// The header and cookie whose value `always` sends a request to the new set and
/// `never` to the old one (the names nginx's ingress uses for its canaries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub header: String,
    pub cookie: String,
}

impl Default for Pin {
    fn default() -> Self {
        Self {
            header: DEFAULT_PIN_HEADER.into(),
            cookie: DEFAULT_PIN_COOKIE.into(),
        }
    }
}

/// When a canary is aborted by what the proxies measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// Basis points (1/100 of a percent) the new set's 5xx rate may exceed the old's by.
    pub max_error_increase_bp: u32,
    pub max_p99_increase_ms: u64,
    /// Requests the new set must have answered in the step before it is judged.
    pub min_requests: u64,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            max_error_increase_bp: 500,
            max_p99_increase_ms: 500,
            min_requests: 20,
        }
    }
}

/// What a set of instances answered during a step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    /// The p99 latency, when anything was answered.
    pub p99_ms: Option<f64>,
}

impl Measured {
    fn error_bp(&self) -> u64 {
        (self.errors * 10_000)
            .checked_div(self.requests)
            .unwrap_or(0)
    }
}

/// Why the new set fails its analysis, if it does.
pub fn verdict(analysis: &Analysis, stable: &Measured, canary: &Measured) -> Option<String> {
    if canary.requests < analysis.min_requests.max(1) {
        return None;
    }
    let (theirs, ours) = (stable.error_bp(), canary.error_bp());
    if ours > theirs + u64::from(analysis.max_error_increase_bp) {
        return Some(format!(
            "the new version answered {:.1}% of {} requests with 5xx, the old one {:.1}% (at most {:.1} points more are allowed)",
            ours as f64 / 100.0,
            canary.requests,
            theirs as f64 / 100.0,
            f64::from(analysis.max_error_increase_bp) / 100.0
        ));
    }
    // Latency is only compared with a stable set that answered enough to have a p99 (a
    // step of weight 100 leaves it none); errors are compared with none at all.
    let stable_measured = stable.requests >= analysis.min_requests.max(1);
    if let (Some(ours), Some(theirs)) = (canary.p99_ms, stable.p99_ms.filter(|_| stable_measured))
        && ours > theirs + analysis.max_p99_increase_ms as f64
    {
        return Some(format!(
            "the new version's p99 latency is {ours} ms, the old one's {theirs} ms (at most {} ms more is allowed)",
            analysis.max_p99_increase_ms
        ));
    }
    None
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The new set is starting (no traffic yet); a crash here rolls the deploy back.
    Starting,
    /// The new set serves its step's weight (blue-green: only its preview address).
    Paused,
    /// Blue-green: all traffic on the new set, the old one kept until `scale_down_at`.
    Promoted,
    Succeeded,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::Succeeded => "succeeded",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Starting,
            Self::Paused,
            Self::Promoted,
            Self::Succeeded,
            Self::Aborted,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    /// Still going: both sets run.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Paused | Self::Promoted)
    }
}

/// A rollout's progress, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// The canary step it is at (0 for blue-green).
    pub step: usize,
    /// Percent of the address's requests that go to the new set.
    pub weight: u8,
    /// When the step (or the promotion) began, in ms since the epoch.
    pub since: i64,
}

/// The progress once the new set is healthy: blue-green waits at its preview address,
/// a canary takes its first step.
pub fn begin(strategy: &Strategy, now: i64) -> Progress {
    Progress {
        phase: Phase::Paused,
        step: 0,
        weight: strategy.steps().first().map_or(0, |s| s.weight),
        since: now,
    }
}

/// What someone asked of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Blue-green: switch all traffic (again: scale the old set down now). Canary: the
    /// next step, or with `full` every step at once.
    Promote {
        full: bool,
    },
    Abort,
}

/// What the controller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Wait,
    /// Store this progress and give the new set its weight.
    Move(Progress),
    /// All traffic to the new set, the old set drained and stopped: done.
    Finish,
    /// All traffic back to the old set, the new set drained and stopped.
    Abort,
}

/// Why a command cannot apply now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Finished(Phase),
    StillStarting,
}

/// Whether `command` applies to a rollout at `phase`.
pub fn may(command: Command, phase: Phase) -> Result<(), Refusal> {
    match (command, phase) {
        (_, Phase::Succeeded | Phase::Aborted) => Err(Refusal::Finished(phase)),
        // The deploy still starting the new set decides: it rolls a failing start back.
        (_, Phase::Starting) => Err(Refusal::StillStarting),
        _ => Ok(()),
    }
}

/// The rule: an abort (asked, or a canary failing its analysis while it takes traffic)
/// wins; a promotion moves a step (blue-green: switches all, then scales down); a step
/// whose pause is over moves to the next; past the last step, or once a promoted
/// blue-green's delay is over, the rollout finishes.
pub fn next(
    strategy: &Strategy,
    at: &Progress,
    now: i64,
    command: Option<Command>,
    failing: bool,
) -> Next {
    if at.phase == Phase::Starting || !at.phase.is_active() {
        return Next::Wait;
    }
    if command == Some(Command::Abort) || (failing && matches!(strategy, Strategy::Canary { .. })) {
        return Next::Abort;
    }
    let elapsed = u64::try_from(now.saturating_sub(at.since)).unwrap_or(0);
    match strategy {
        Strategy::Rolling => Next::Finish,
        Strategy::BlueGreen { scale_down_delay } => match (at.phase, command) {
            (Phase::Paused, Some(Command::Promote { full: false })) => Next::Move(Progress {
                phase: Phase::Promoted,
                step: 0,
                weight: 100,
                since: now,
            }),
            (Phase::Paused, Some(Command::Promote { full: true })) => Next::Finish,
            (Phase::Promoted, Some(Command::Promote { .. })) => Next::Finish,
            (Phase::Promoted, _) if elapsed >= scale_down_delay.as_millis() as u64 => Next::Finish,
            _ => Next::Wait,
        },
        Strategy::Canary { steps, .. } => {
            let step_over = steps
                .get(at.step)
                .and_then(|s| s.pause_ms)
                .is_some_and(|pause| elapsed >= pause);
            match command {
                Some(Command::Promote { full: true }) => Next::Finish,
                Some(Command::Promote { full: false }) => step_after(steps, at.step, now),
                _ if step_over => step_after(steps, at.step, now),
                _ => Next::Wait,
            }
        }
    }
}

fn step_after(steps: &[CanaryStep], step: usize, now: i64) -> Next {
    match steps.get(step + 1) {
        Some(s) => Next::Move(Progress {
            phase: Phase::Paused,
            step: step + 1,
            weight: s.weight,
            since: now,
        }),
        None => Next::Finish,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Strategy {
        Strategy::Canary {
            steps: vec![
                CanaryStep {
                    weight: 10,
                    pause_ms: Some(1000),
                },
                CanaryStep {
                    weight: 50,
                    pause_ms: None,
                },
            ],
            pin: Pin::default(),
            analysis: Analysis::default(),
        }
    }

    fn blue_green() -> Strategy {
        Strategy::BlueGreen {
            scale_down_delay: Duration::from_millis(500),
        }
    }

    fn at(phase: Phase, step: usize, weight: u8, since: i64) -> Progress {
        Progress {
            phase,
            step,
            weight,
            since,
        }
    }

    const PROMOTE: Option<Command> = Some(Command::Promote { full: false });
    const FULL: Option<Command> = Some(Command::Promote { full: true });
    const ABORT: Option<Command> = Some(Command::Abort);

    #[test]
    fn rollouts_begin_at_the_preview_or_the_first_step() {
        assert_eq!(begin(&blue_green(), 7), at(Phase::Paused, 0, 0, 7));
        assert_eq!(begin(&canary(), 7), at(Phase::Paused, 0, 10, 7));
    }

    #[test]
    fn the_rule_over_strategies_commands_and_time() {
        type Case = (
            &'static str,
            Strategy,
            Progress,
            i64,
            Option<Command>,
            bool,
            Next,
        );
        let paused = at(Phase::Paused, 0, 0, 0);
        let promoted = at(Phase::Promoted, 0, 100, 0);
        let first = at(Phase::Paused, 0, 10, 0);
        let second = at(Phase::Paused, 1, 50, 0);
        let table: Vec<Case> = vec![
            (
                "bg waits",
                blue_green(),
                paused,
                10_000,
                None,
                false,
                Next::Wait,
            ),
            (
                "bg promote switches all",
                blue_green(),
                paused,
                5,
                PROMOTE,
                false,
                Next::Move(at(Phase::Promoted, 0, 100, 5)),
            ),
            (
                "bg full promote scales down at once",
                blue_green(),
                paused,
                5,
                FULL,
                false,
                Next::Finish,
            ),
            (
                "bg keeps the old set for the delay",
                blue_green(),
                promoted,
                499,
                None,
                false,
                Next::Wait,
            ),
            (
                "bg scales down after the delay",
                blue_green(),
                promoted,
                500,
                None,
                false,
                Next::Finish,
            ),
            (
                "bg promoted again scales down now",
                blue_green(),
                promoted,
                1,
                PROMOTE,
                false,
                Next::Finish,
            ),
            (
                "bg abort after promotion",
                blue_green(),
                promoted,
                1,
                ABORT,
                false,
                Next::Abort,
            ),
            (
                "bg is not judged",
                blue_green(),
                promoted,
                1,
                None,
                true,
                Next::Wait,
            ),
            (
                "canary step held",
                canary(),
                first,
                999,
                None,
                false,
                Next::Wait,
            ),
            (
                "canary step over",
                canary(),
                first,
                1000,
                None,
                false,
                Next::Move(at(Phase::Paused, 1, 50, 1000)),
            ),
            (
                "canary promote skips the pause",
                canary(),
                first,
                3,
                PROMOTE,
                false,
                Next::Move(at(Phase::Paused, 1, 50, 3)),
            ),
            (
                "canary step without pause waits",
                canary(),
                second,
                1 << 40,
                None,
                false,
                Next::Wait,
            ),
            (
                "canary last promote finishes",
                canary(),
                second,
                3,
                PROMOTE,
                false,
                Next::Finish,
            ),
            (
                "canary full promote",
                canary(),
                first,
                3,
                FULL,
                false,
                Next::Finish,
            ),
            (
                "canary failing aborts",
                canary(),
                first,
                3,
                None,
                true,
                Next::Abort,
            ),
            (
                "failing beats a promotion",
                canary(),
                first,
                3,
                PROMOTE,
                true,
                Next::Abort,
            ),
            (
                "starting waits",
                canary(),
                at(Phase::Starting, 0, 0, 0),
                5,
                PROMOTE,
                false,
                Next::Wait,
            ),
            (
                "finished waits",
                canary(),
                at(Phase::Aborted, 0, 0, 0),
                5,
                ABORT,
                false,
                Next::Wait,
            ),
        ];
        for (case, strategy, progress, now, command, failing, want) in table {
            assert_eq!(
                next(&strategy, &progress, now, command, failing),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn commands_refused_by_phase() {
        let promote = Command::Promote { full: false };
        assert_eq!(may(promote, Phase::Paused), Ok(()));
        assert_eq!(may(Command::Abort, Phase::Promoted), Ok(()));
        assert_eq!(
            may(Command::Abort, Phase::Starting),
            Err(Refusal::StillStarting)
        );
        assert_eq!(may(promote, Phase::Starting), Err(Refusal::StillStarting));
        assert_eq!(
            may(Command::Abort, Phase::Succeeded),
            Err(Refusal::Finished(Phase::Succeeded))
        );
    }

    #[test]
    fn the_analysis_compares_with_the_stable_set() {
        let a = Analysis::default();
        let m = |requests, errors, p99| Measured {
            requests,
            errors,
            p99_ms: Some(p99),
        };
        type Case = (&'static str, Measured, Measured, bool);
        let table: Vec<Case> = vec![
            (
                "too few requests to judge",
                m(100, 0, 1.0),
                m(19, 19, 1.0),
                false,
            ),
            ("as good as stable", m(100, 1, 5.0), m(50, 0, 5.0), false),
            (
                "errors within the margin",
                m(100, 0, 5.0),
                m(100, 5, 5.0),
                false,
            ),
            ("errors beyond it", m(100, 0, 5.0), m(100, 6, 5.0), true),
            (
                "stable failing too",
                m(100, 50, 5.0),
                m(100, 50, 5.0),
                false,
            ),
            (
                "slower beyond the margin",
                m(100, 0, 5.0),
                m(100, 0, 1000.0),
                true,
            ),
            ("slower within it", m(100, 0, 5.0), m(100, 0, 500.0), false),
            (
                "stable answered nothing, canary erring",
                Measured::default(),
                m(100, 10, 5.0),
                true,
            ),
            (
                "stable answered nothing, canary slow",
                Measured::default(),
                m(100, 0, 900.0),
                false,
            ),
            (
                "stable answered too little for a p99",
                m(3, 0, 1.0),
                m(100, 0, 900.0),
                false,
            ),
        ];
        for (case, stable, canary, fails) in table {
            assert_eq!(verdict(&a, &stable, &canary).is_some(), fails, "{case}");
        }
    }
}
