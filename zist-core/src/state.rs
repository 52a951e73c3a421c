//! The nine process states and the pure decision of what follows an exit.
//!
//! [`after_exit`] is a plain function from (policy, how the process ended,
//! how long it ran, failures so far) to what happens next; the process actor
//! only carries the decision out. It is tested without any process.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::spec::RestartPolicy;

/// Where a program is in its life (docs/reference.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Never started, or stopped on request.
    Stopped,
    /// To start once the programs in its `After` are running.
    Waiting,
    /// Spawned, not yet up for StartSecs.
    Starting,
    /// Up for at least StartSecs.
    Running,
    /// Exited while starting or crashed; waiting to retry.
    Backoff,
    /// Stop signal sent, waiting for the process group to end.
    Stopping,
    /// Ended and not to be restarted.
    Exited,
    /// Could not be started MaxRestarts times in a row, or cannot be run at all.
    Fatal,
    /// Running on, no longer supervised.
    Detached,
}

impl ProcessState {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Fatal => "fatal",
            Self::Detached => "detached",
        }
    }

    /// Whether a supervised process exists in this state (zist can signal
    /// it and measure it).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }

    /// Whether the program is meant to be running: it runs, starts, stops,
    /// waits to be restarted, or waits for the programs it comes after.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Waiting | Self::Starting | Self::Running | Self::Backoff | Self::Stopping
        )
    }
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// A signal (this number) ended it.
    Signal(i32),
    /// It ended while nobody could see how (zistd was down, or it was not
    /// zistd's child); counted as a failure.
    Unknown,
}

impl std::fmt::Display for ExitKind {
    /// As supervisord words it: `exit status 1`, `killed by SIGKILL`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit status {code}"),
            Self::Signal(number) => match nix::sys::signal::Signal::try_from(*number) {
                Ok(signal) => write!(f, "killed by {}", signal.as_str()),
                Err(_) => write!(f, "killed by signal {number}"),
            },
            Self::Unknown => f.write_str("exit status unknown"),
        }
    }
}

impl ExitKind {
    /// Exit code 0.
    pub fn is_success(self) -> bool {
        self == Self::Code(0)
    }
}

/// The restart settings of a program, as the decision needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartRules {
    /// The policy.
    pub policy: RestartPolicy,
    /// How long a run must last to count as a successful start.
    pub start_secs: Duration,
    /// Consecutive failed starts before `fatal`.
    pub max_restarts: u32,
    /// Base delay before a restart.
    pub restart_delay: Duration,
}

/// The longest wait between restarts.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// Two spawns of one program are never closer than this, so a crash loop cannot spin.
pub const MIN_SPAWN_INTERVAL: Duration = Duration::from_millis(100);

/// What the actor does after a process ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Go to `backoff`, then start again after `delay`.
    Restart {
        /// Wait before the next spawn.
        delay: Duration,
        /// Consecutive failed starts, this one included.
        failures: u32,
    },
    /// Go to `exited`.
    Exited,
    /// Go to `fatal`: too many failed starts in a row.
    Fatal {
        /// Consecutive failed starts.
        failures: u32,
    },
}

impl AfterExit {
    /// The state this decision leads to.
    pub fn state(self) -> ProcessState {
        match self {
            Self::Restart { .. } => ProcessState::Backoff,
            Self::Exited => ProcessState::Exited,
            Self::Fatal { .. } => ProcessState::Fatal,
        }
    }
}

/// Decides what follows an exit that nobody asked for.
///
/// A run shorter than StartSecs is a failed start: failures count up, and
/// the wait doubles with each one (RestartDelay, 2x, 4x, ... capped at
/// [`MAX_RESTART_DELAY`]); MaxRestarts restarts are tried, and the failed
/// start after them makes the program fatal. A longer run resets the count, and a restart waits RestartDelay.
pub fn after_exit(
    rules: &RestartRules,
    exit: ExitKind,
    uptime: Duration,
    failures: u32,
) -> AfterExit {
    let wanted = match rules.policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.is_success(),
        RestartPolicy::Never => false,
    };
    if !wanted {
        return AfterExit::Exited;
    }
    if uptime >= rules.start_secs {
        return AfterExit::Restart {
            delay: rules.restart_delay.min(MAX_RESTART_DELAY),
            failures: 0,
        };
    }
    let failures = failures.saturating_add(1);
    if failures > rules.max_restarts {
        return AfterExit::Fatal { failures };
    }
    let doublings = (failures - 1).min(16);
    let delay = rules
        .restart_delay
        .saturating_mul(1 << doublings)
        .min(MAX_RESTART_DELAY);
    AfterExit::Restart { delay, failures }
}

/// When the next spawn may happen: after `delay`, and never sooner than
/// [`MIN_SPAWN_INTERVAL`] after the previous spawn.
pub fn next_spawn_at(now: Instant, delay: Duration, last_spawn: Instant) -> Instant {
    (now + delay).max(last_spawn + MIN_SPAWN_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(policy: RestartPolicy) -> RestartRules {
        RestartRules {
            policy,
            start_secs: Duration::from_secs(1),
            max_restarts: 3,
            restart_delay: Duration::from_millis(100),
        }
    }

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(10);

    #[test]
    fn policies_decide_which_exits_restart() {
        let crash = ExitKind::Code(2);
        let clean = ExitKind::Code(0);
        let killed = ExitKind::Signal(9);
        let always = rules(RestartPolicy::Always);
        let on_failure = rules(RestartPolicy::OnFailure);
        let never = rules(RestartPolicy::Never);
        let restart = AfterExit::Restart {
            delay: Duration::from_millis(100),
            failures: 0,
        };
        assert_eq!(after_exit(&always, clean, LONG, 0), restart);
        assert_eq!(after_exit(&always, crash, LONG, 0), restart);
        assert_eq!(after_exit(&on_failure, clean, LONG, 0), AfterExit::Exited);
        assert_eq!(after_exit(&on_failure, crash, LONG, 0), restart);
        assert_eq!(after_exit(&on_failure, killed, LONG, 0), restart);
        assert_eq!(after_exit(&never, crash, LONG, 0), AfterExit::Exited);
        assert_eq!(after_exit(&never, crash, SHORT, 0), AfterExit::Exited);
    }

    #[test]
    fn failed_starts_back_off_exponentially_then_go_fatal() {
        let r = rules(RestartPolicy::Always);
        let crash = ExitKind::Code(1);
        let mut failures = 0;
        let mut delays = Vec::new();
        loop {
            match after_exit(&r, crash, SHORT, failures) {
                AfterExit::Restart { delay, failures: f } => {
                    delays.push(delay.as_millis());
                    failures = f;
                }
                AfterExit::Fatal { failures: f } => {
                    assert_eq!(f, 4);
                    break;
                }
                AfterExit::Exited => panic!("a crash under `always` must not be final"),
            }
        }
        assert_eq!(delays, vec![100, 200, 400]);
    }

    #[test]
    fn a_long_run_resets_the_failure_count() {
        let r = rules(RestartPolicy::Always);
        let next = after_exit(&r, ExitKind::Code(1), LONG, 2);
        assert_eq!(
            next,
            AfterExit::Restart {
                delay: Duration::from_millis(100),
                failures: 0
            }
        );
    }

    #[test]
    fn delay_is_capped_and_zero_max_restarts_is_fatal_at_once() {
        let mut r = rules(RestartPolicy::Always);
        r.max_restarts = 100;
        r.restart_delay = Duration::from_secs(20);
        assert_eq!(
            after_exit(&r, ExitKind::Code(1), SHORT, 5),
            AfterExit::Restart {
                delay: MAX_RESTART_DELAY,
                failures: 6
            }
        );
        r.max_restarts = 0;
        assert_eq!(
            after_exit(&r, ExitKind::Code(1), SHORT, 0),
            AfterExit::Fatal { failures: 1 }
        );
    }

    #[test]
    fn spawns_are_spaced_so_a_crash_loop_cannot_spin() {
        let t0 = Instant::now();
        assert_eq!(
            next_spawn_at(t0, Duration::ZERO, t0),
            t0 + MIN_SPAWN_INTERVAL
        );
        let later = t0 + Duration::from_secs(3);
        assert_eq!(next_spawn_at(later, Duration::ZERO, t0), later);
    }
}
