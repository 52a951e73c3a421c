//! A program's lifecycle: one state, one pure transition function.
//!
//! [`Lifecycle`] is where a program is; each variant carries only what is
//! true in that state (a `Stopped` program has no child; a `Backoff` one has
//! only the time of its next try), and [`ProcessState`] is derived from it.
//! [`History`] holds the facts that outlive a state: restarts, failed starts
//! in a row, the last exit, the last spawn.
//!
//! [`step`] takes the current lifecycle and history, one [`Event`] (a
//! control asked through the API, the child's exit, a timer, the result of
//! an effect) and the time, and returns the next lifecycle with the
//! [`Effect`]s the actor must perform: spawn, signal, reap, detach, answer
//! the caller. It performs nothing itself, so every pair of state and event
//! is tested in this file without a process. Effects whose result matters
//! (a spawn, the preparation of a detach) come back as events.
//!
//! The child is a type parameter: the actor runs the same function on real
//! processes and, in its own tests, on fake ones.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::spawn::SpawnError;
use crate::state::{AfterExit, ExitKind, ProcessState, RestartRules, after_exit, next_spawn_at};
use crate::wire::ShutdownMode;

/// What the lifecycle needs to know of a child.
pub(crate) trait HasPid {
    /// The child's process id.
    fn pid(&self) -> i32;
}

/// What a stop leads to once the process group is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterStop {
    /// Stay stopped, and answer the stop.
    Stay,
    /// Spawn again (a restart), and answer with the spawn's result.
    Start,
    /// End the actor (shutdown, or every handle dropped).
    End,
    /// A failed start (its Ready check did not pass in time): the restart
    /// rules apply as to an exit within StartSecs.
    FailedStart,
    /// A crash (its Alive check failed): the restart rules apply as to an
    /// exit nobody asked for.
    Crash,
}

/// Where a program is in its life, with the data valid there.
#[derive(Debug)]
pub(crate) enum Lifecycle<C> {
    /// Never started, or stopped on request.
    Stopped,
    /// To start once the programs in its `After` run; `on` says which one
    /// it waits for (`waiting for db`).
    Waiting { on: Arc<str> },
    /// Spawned at `since`, not yet up for StartSecs.
    Starting { child: C, since: Instant },
    /// Up for at least StartSecs.
    Running { child: C, since: Instant },
    /// Waiting to spawn again at `until`; `reason` says why it exited.
    Backoff { until: Instant, reason: Arc<str> },
    /// The stop signal was sent; SIGKILL follows at `kill_at` (`None` once sent).
    Stopping {
        child: C,
        since: Instant,
        kill_at: Option<Instant>,
        then: AfterStop,
    },
    /// Ended, and not to be restarted; `reason` says how it ended.
    Exited { reason: Arc<str> },
    /// Cannot be started (or failed to start too often); `reason` says why.
    Fatal { reason: Arc<str> },
    /// Let go: runs on unsupervised since `since`.
    Detached { pid: i32, since: Instant },
}

impl<C: HasPid> Lifecycle<C> {
    /// The state as the API names it.
    pub(crate) fn state(&self) -> ProcessState {
        match self {
            Self::Stopped => ProcessState::Stopped,
            Self::Waiting { .. } => ProcessState::Waiting,
            Self::Starting { .. } => ProcessState::Starting,
            Self::Running { .. } => ProcessState::Running,
            Self::Backoff { .. } => ProcessState::Backoff,
            Self::Stopping { .. } => ProcessState::Stopping,
            Self::Exited { .. } => ProcessState::Exited,
            Self::Fatal { .. } => ProcessState::Fatal,
            Self::Detached { .. } => ProcessState::Detached,
        }
    }

    /// The pid of the process this state has, supervised or detached.
    pub(crate) fn pid(&self) -> Option<i32> {
        match self {
            Self::Starting { child, .. }
            | Self::Running { child, .. }
            | Self::Stopping { child, .. } => Some(child.pid()),
            Self::Detached { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Since when the process of this state has been up.
    pub(crate) fn since(&self) -> Option<Instant> {
        match self {
            Self::Starting { since, .. }
            | Self::Running { since, .. }
            | Self::Stopping { since, .. }
            | Self::Detached { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// Why the program cannot be started, when it is `fatal`.
    pub(crate) fn reason(&self) -> Option<&Arc<str>> {
        match self {
            Self::Fatal { reason } => Some(reason),
            _ => None,
        }
    }

    /// Why the program is in this state, when the state alone does not
    /// say: how its process ended, for `backoff`, `exited` and `fatal`.
    pub(crate) fn why(&self) -> Option<&Arc<str>> {
        match self {
            Self::Fatal { reason }
            | Self::Backoff { reason, .. }
            | Self::Exited { reason }
            | Self::Waiting { on: reason } => Some(reason),
            _ => None,
        }
    }

    /// The supervised child, in the states that have one.
    pub(crate) fn child_mut(&mut self) -> Option<&mut C> {
        match self {
            Self::Starting { child, .. }
            | Self::Running { child, .. }
            | Self::Stopping { child, .. } => Some(child),
            _ => None,
        }
    }

    /// The moment a timer of this state is due, and which timer it is.
    pub(crate) fn timer(&self, rules: &Rules) -> Option<(Instant, Timer)> {
        match self {
            Self::Starting { since, .. } => Some(match rules.ready_timeout {
                // With a Ready check, StartSecs is not used: the check's
                // Timeout is the whole wait.
                Some(timeout) => (deadline(*since, timeout), Timer::ReadyTimeout),
                None => (deadline(*since, rules.restart.start_secs), Timer::Up),
            }),
            Self::Backoff { until, .. } => Some((*until, Timer::Retry)),
            Self::Stopping {
                kill_at: Some(at), ..
            } => Some((*at, Timer::Kill)),
            _ => None,
        }
    }
}

/// The timer of a state (small: an idle actor holds one while it waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// StartSecs after the spawn.
    Up,
    /// The end of a backoff wait.
    Retry,
    /// StopTimeout after the stop signal.
    Kill,
    /// The Ready check's Timeout after the spawn.
    ReadyTimeout,
}

impl Timer {
    /// The event this timer brings when it is due.
    pub(crate) fn event<C>(self) -> Event<C> {
        match self {
            Self::Up => Event::UpDue,
            Self::Retry => Event::RetryDue,
            Self::Kill => Event::KillDue,
            Self::ReadyTimeout => Event::ReadyTimeout,
        }
    }
}

/// `from + wait`, or a moment far enough away to mean never when that
/// does not fit in an [`Instant`].
pub(crate) fn deadline(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(from)
}

/// What outlives a state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// Restarts zist made after exits nobody asked for.
    pub restarts: u32,
    /// Failed starts in a row.
    pub failures: u32,
    /// How the last process ended.
    pub last_exit: Option<ExitKind>,
    /// When it ended (wall clock), for `exited_at`.
    pub last_exit_wall: Option<SystemTime>,
    /// When the last process was spawned.
    pub last_spawn: Option<Instant>,
    /// The wall-clock time of that spawn, for `started_at`.
    pub last_spawn_wall: Option<SystemTime>,
}

impl History {
    /// The last process ended, `now`.
    fn exited(&mut self, exit: ExitKind, now: Now) {
        self.last_exit = Some(exit);
        self.last_exit_wall = Some(now.wall);
    }
}

/// Something that happened to a program.
#[derive(Debug)]
pub(crate) enum Event<C> {
    /// `start` was asked.
    Start,
    /// `start` was asked, but a program in `After` does not run: wait
    /// for it (this says which).
    Wait(Arc<str>),
    /// Every program in `After` runs now.
    DepsMet,
    /// `stop` was asked.
    Stop,
    /// `restart` was asked.
    Restart,
    /// `detach` was asked.
    Detach,
    /// A signal was asked for the main process.
    Signal(Signal),
    /// The supervisor ends: stop or detach, then end.
    Shutdown(ShutdownMode),
    /// A [`Effect::Spawn`] made this child.
    Spawned(C),
    /// A [`Effect::Spawn`] failed.
    SpawnFailed(Arc<SpawnError>),
    /// The relays for a detach are ready.
    DetachReady { ending: bool },
    /// The relays for a detach could not be prepared.
    DetachRefused { reason: String, ending: bool },
    /// The main process ended; `stop_sent` when a stop signal had reached it
    /// (a bulk stop sent before the actor's own stop).
    Exited { exit: ExitKind, stop_sent: bool },
    /// The process recorded by an earlier life of the supervisor ended
    /// while nobody watched (docs/reference.md §8.3).
    Vanished,
    /// StartSecs have passed since the spawn.
    UpDue,
    /// The Ready check passed.
    Ready,
    /// The Ready check did not pass within its Timeout.
    ReadyTimeout,
    /// The Alive check failed `Failures` times in a row.
    Unhealthy,
    /// The backoff wait is over.
    RetryDue,
    /// StopTimeout has passed since the stop signal.
    KillDue,
}

/// The answer to the control being applied.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Applied.
    Done,
    /// Start refused: a process already exists, in this state.
    AlreadyRunning(ProcessState),
    /// No supervised process to act on; the state it is in.
    NotRunning(ProcessState),
    /// The spawn failed.
    SpawnFailed(Arc<SpawnError>),
    /// The detach failed; the program is still supervised.
    DetachFailed(String),
}

/// What the actor must do after a step.
#[derive(Debug)]
pub(crate) enum Effect<C> {
    /// Spawn the program, answering with [`Event::Spawned`] or
    /// [`Event::SpawnFailed`]; `fresh` prepares arguments, environment and
    /// user anew (a start asked through the API) instead of reusing them.
    Spawn { fresh: bool },
    /// Send StopSignal to the process group.
    SignalStop,
    /// Send SIGKILL to the process group.
    Kill,
    /// Send this signal to the main process, answering with the result.
    Signal(Signal),
    /// The main process has ended: end what is left of its group (after
    /// `grace_until` for a stop, at once for a crash) and drain its output.
    Reap { child: C, grace_until: Instant },
    /// Prepare the output relays of a detach, answering with
    /// [`Event::DetachReady`] or [`Event::DetachRefused`].
    PrepareDetach { ending: bool },
    /// Hand the child's output to the relays and let it go.
    Release { child: C, ending: bool },
    /// Answer the control being applied.
    Answer(Outcome),
    /// End the actor.
    End,
}

/// The settings of a program that the lifecycle uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub restart: RestartRules,
    pub stop_timeout: Duration,
    /// The Ready check's Timeout, when the program has one.
    pub ready_timeout: Option<Duration>,
}

/// The current time, both clocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

/// The next lifecycle and what to do.
pub(crate) type Step<C> = (Lifecycle<C>, Vec<Effect<C>>);

/// Decides what follows `event` in `state`. Pure: it only computes.
pub(crate) fn step<C: HasPid>(
    state: Lifecycle<C>,
    history: &mut History,
    event: Event<C>,
    rules: &Rules,
    now: Now,
) -> Step<C> {
    use Lifecycle as L;
    let current = state.state();
    match (state, event) {
        // Controls.
        (s @ (L::Starting { .. } | L::Running { .. } | L::Stopping { .. }), Event::Start) => {
            (s, vec![Effect::Answer(Outcome::AlreadyRunning(current))])
        }
        (s, Event::Start) => {
            history.failures = 0;
            (s, vec![Effect::Spawn { fresh: true }])
        }
        (s @ (L::Starting { .. } | L::Running { .. } | L::Stopping { .. }), Event::Wait(_)) => {
            (s, vec![Effect::Answer(Outcome::AlreadyRunning(current))])
        }
        // Its process, when it has one, is let go (a backoff's retry too).
        (_, Event::Wait(on)) => (L::Waiting { on }, vec![Effect::Answer(Outcome::Done)]),
        (L::Waiting { .. }, Event::DepsMet) => {
            history.failures = 0;
            (L::Stopped, vec![Effect::Spawn { fresh: true }])
        }
        (s, Event::DepsMet) => (s, Vec::new()),
        (s, Event::Stop) => stop(s, AfterStop::Stay, rules, now),
        (s, Event::Restart) => {
            history.failures = 0;
            stop(s, AfterStop::Start, rules, now)
        }
        (s @ (L::Starting { .. } | L::Running { .. }), Event::Detach) => {
            (s, vec![Effect::PrepareDetach { ending: false }])
        }
        (s, Event::Detach) => (s, vec![Effect::Answer(Outcome::NotRunning(current))]),
        (s @ (L::Starting { .. } | L::Running { .. } | L::Stopping { .. }), Event::Signal(sig)) => {
            (s, vec![Effect::Signal(sig)])
        }
        (s, Event::Signal(_)) => (s, vec![Effect::Answer(Outcome::NotRunning(current))]),
        (s @ (L::Starting { .. } | L::Running { .. }), Event::Shutdown(ShutdownMode::Detach)) => {
            (s, vec![Effect::PrepareDetach { ending: true }])
        }
        (s, Event::Shutdown(_)) => stop(s, AfterStop::End, rules, now),

        // Results of effects.
        (s, Event::Spawned(child)) => {
            if matches!(s, L::Backoff { .. }) {
                history.restarts = history.restarts.saturating_add(1);
            }
            history.last_spawn = Some(now.mono);
            history.last_spawn_wall = Some(now.wall);
            // The last exit stays until the next one (docs/reference.md §3.3).
            let since = now.mono;
            (
                L::Starting { child, since },
                vec![Effect::Answer(Outcome::Done)],
            )
        }
        (_, Event::SpawnFailed(error)) => {
            history.last_spawn = Some(now.mono);
            (
                L::Fatal {
                    reason: error.to_string().into(),
                },
                vec![Effect::Answer(Outcome::SpawnFailed(error))],
            )
        }
        (
            L::Starting { child, since } | L::Running { child, since },
            Event::DetachReady { ending },
        ) => {
            let pid = child.pid();
            let mut effects = vec![
                Effect::Release { child, ending },
                Effect::Answer(Outcome::Done),
            ];
            if ending {
                effects.push(Effect::End);
            }
            (L::Detached { pid, since }, effects)
        }
        // The process left in between: nothing to detach.
        (s, Event::DetachReady { ending: true }) => stop(s, AfterStop::End, rules, now),
        (s, Event::DetachReady { ending: false }) => {
            (s, vec![Effect::Answer(Outcome::NotRunning(current))])
        }
        (s, Event::DetachRefused { ending: true, .. }) => stop(s, AfterStop::End, rules, now),
        (s, Event::DetachRefused { reason, .. }) => {
            (s, vec![Effect::Answer(Outcome::DetachFailed(reason))])
        }

        // The process.
        (
            L::Starting { child, since } | L::Running { child, since },
            Event::Exited { exit, stop_sent },
        ) => {
            history.exited(exit, now);
            if stop_sent {
                // A bulk stop reached it before its Stop control: a stop, never a crash.
                let grace_until = deadline(now.mono, rules.stop_timeout);
                return (L::Stopped, vec![Effect::Reap { child, grace_until }]);
            }
            let uptime = now.mono.saturating_duration_since(since);
            let reap = Effect::Reap {
                child,
                grace_until: now.mono,
            };
            after_crash(history, exit, uptime, rules, now, Some(reap))
        }
        (L::Stopped, Event::Vanished) => {
            // It ran (a supervisor that recorded it saw it start), for how
            // long nobody knows: an exit of unknown status, not a failed start.
            history.exited(ExitKind::Unknown, now);
            after_crash(history, ExitKind::Unknown, Duration::MAX, rules, now, None)
        }
        (s, Event::Vanished) => (s, Vec::new()),
        (
            L::Stopping {
                child,
                kill_at,
                then,
                ..
            },
            Event::Exited { exit, .. },
        ) => {
            history.exited(exit, now);
            let grace_until = kill_at.unwrap_or(now.mono);
            let reap = Effect::Reap { child, grace_until };
            match then {
                AfterStop::FailedStart => {
                    after_crash(history, exit, Duration::ZERO, rules, now, Some(reap))
                }
                AfterStop::Crash => {
                    after_crash(history, exit, Duration::MAX, rules, now, Some(reap))
                }
                then => {
                    let mut effects = vec![reap];
                    effects.extend(after_stop(then));
                    (L::Stopped, effects)
                }
            }
        }
        (s, Event::Exited { .. }) => (s, Vec::new()),

        // Timers.
        (L::Starting { child, since }, Event::UpDue | Event::Ready) => {
            history.failures = 0;
            (L::Running { child, since }, Vec::new())
        }
        (s @ L::Starting { .. }, Event::ReadyTimeout) => {
            stop(s, AfterStop::FailedStart, rules, now)
        }
        (s @ L::Running { .. }, Event::Unhealthy) => stop(s, AfterStop::Crash, rules, now),
        // A check's word about a state already left.
        (s, Event::Ready | Event::ReadyTimeout | Event::Unhealthy) => (s, Vec::new()),
        (s @ L::Backoff { .. }, Event::RetryDue) => (s, vec![Effect::Spawn { fresh: false }]),
        (
            L::Stopping {
                child,
                since,
                kill_at: Some(_),
                then,
            },
            Event::KillDue,
        ) => (
            L::Stopping {
                child,
                since,
                kill_at: None,
                then,
            },
            vec![Effect::Kill],
        ),
        // A timer of a state already left.
        (s, Event::UpDue | Event::RetryDue | Event::KillDue) => (s, Vec::new()),
    }
}

/// A stop in `state`, then `then`.
fn stop<C: HasPid>(state: Lifecycle<C>, then: AfterStop, rules: &Rules, now: Now) -> Step<C> {
    match state {
        Lifecycle::Starting { child, since } | Lifecycle::Running { child, since } => (
            Lifecycle::Stopping {
                child,
                since,
                kill_at: Some(deadline(now.mono, rules.stop_timeout)),
                then,
            },
            vec![Effect::SignalStop],
        ),
        // Already stopping: only what follows changes (a shutdown during a restart).
        Lifecycle::Stopping {
            child,
            since,
            kill_at,
            then: before,
        } => {
            let then = if then == AfterStop::End || before == AfterStop::End {
                AfterStop::End
            } else {
                then
            };
            (
                Lifecycle::Stopping {
                    child,
                    since,
                    kill_at,
                    then,
                },
                Vec::new(),
            )
        }
        // Stop of a program with no process is not an error, and changes
        // nothing but a pending retry or wait.
        Lifecycle::Backoff { .. } | Lifecycle::Waiting { .. } => {
            (Lifecycle::Stopped, after_stop(then))
        }
        other => (other, after_stop(then)),
    }
}

/// What follows a finished stop.
fn after_stop<C>(then: AfterStop) -> Vec<Effect<C>> {
    match then {
        AfterStop::Stay => vec![Effect::Answer(Outcome::Done)],
        AfterStop::Start => vec![Effect::Spawn { fresh: true }],
        AfterStop::End => vec![Effect::Answer(Outcome::Done), Effect::End],
        // Nobody waits for these: the restart rules follow the exit.
        AfterStop::FailedStart | AfterStop::Crash => Vec::new(),
    }
}

/// Follows the restart rules after an exit that nobody asked for.
fn after_crash<C: HasPid>(
    history: &mut History,
    exit: ExitKind,
    uptime: Duration,
    rules: &Rules,
    now: Now,
    reap: Option<Effect<C>>,
) -> Step<C> {
    match after_exit(&rules.restart, exit, uptime, history.failures) {
        AfterExit::Restart { delay, failures } => {
            history.failures = failures;
            let last = history.last_spawn.unwrap_or(now.mono);
            let until = next_spawn_at(now.mono, delay, last);
            let mut effects: Vec<_> = reap.into_iter().collect();
            if until <= now.mono {
                effects.push(Effect::Spawn { fresh: false });
            }
            let reason = if failures > 0 {
                format!(
                    "{exit} within StartSecs ({:?}), failed start {failures} of {}; retrying",
                    rules.restart.start_secs,
                    rules.restart.max_restarts.saturating_add(1)
                )
            } else {
                format!("{exit}; not expected, restarting")
            };
            (
                Lifecycle::Backoff {
                    until,
                    reason: reason.into(),
                },
                effects,
            )
        }
        AfterExit::Exited => (
            Lifecycle::Exited {
                reason: format!(
                    "{exit}; Restart = {:?} does not restart it",
                    rules.restart.policy.as_str()
                )
                .into(),
            },
            reap.into_iter().collect(),
        ),
        AfterExit::Fatal { failures } => {
            history.failures = failures;
            let reason = format!(
                "exited {failures} times in a row within StartSecs ({:?}): {exit}; start it again when fixed",
                rules.restart.start_secs
            );
            (
                Lifecycle::Fatal {
                    reason: reason.into(),
                },
                reap.into_iter().collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    //! The transition table: one row per state and event, no process.

    use super::*;
    use crate::spec::RestartPolicy;

    #[derive(Debug, PartialEq)]
    struct Kid(i32);

    impl HasPid for Kid {
        fn pid(&self) -> i32 {
            self.0
        }
    }

    const T0: Duration = Duration::from_secs(1000);

    fn rules(policy: RestartPolicy) -> Rules {
        Rules {
            restart: RestartRules {
                policy,
                start_secs: Duration::from_secs(1),
                max_restarts: 2,
                restart_delay: Duration::from_millis(100),
            },
            stop_timeout: Duration::from_secs(10),
            ready_timeout: None,
        }
    }

    /// A clock `at` after a fixed origin.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }
        fn at(&self, after: Duration) -> Now {
            Now {
                mono: self.0 + after,
                wall: SystemTime::UNIX_EPOCH + after,
            }
        }
        fn instant(&self, after: Duration) -> Instant {
            self.0 + after
        }
    }

    /// A process running since the clock's origin.
    fn running(c: &Clock, pid: i32) -> Lifecycle<Kid> {
        Lifecycle::Running {
            child: Kid(pid),
            since: c.instant(Duration::ZERO),
        }
    }

    /// The main process ended.
    fn ended(exit: ExitKind, stop_sent: bool) -> Event<Kid> {
        Event::Exited { exit, stop_sent }
    }

    /// Every state, built at T0 (live ones with pid 7, spawned at 0).
    fn state(name: &str, c: &Clock) -> Lifecycle<Kid> {
        let since = c.instant(Duration::ZERO);
        match name {
            "stopped" => Lifecycle::Stopped,
            "starting" => Lifecycle::Starting {
                child: Kid(7),
                since: c.instant(T0 - Duration::from_millis(10)),
            },
            "running" => Lifecycle::Running {
                child: Kid(7),
                since,
            },
            "backoff" => Lifecycle::Backoff {
                until: c.instant(T0 + Duration::from_secs(1)),
                reason: "exit status 1".into(),
            },
            "stopping" => Lifecycle::Stopping {
                child: Kid(7),
                since,
                kill_at: Some(c.instant(T0 + Duration::from_secs(10))),
                then: AfterStop::Stay,
            },
            "exited" => Lifecycle::Exited {
                reason: "exit status 0".into(),
            },
            "fatal" => Lifecycle::Fatal {
                reason: "broken".into(),
            },
            "detached" => Lifecycle::Detached { pid: 7, since },
            "waiting" => Lifecycle::Waiting {
                on: "waiting for db".into(),
            },
            other => panic!("no state {other}"),
        }
    }

    const STATES: [&str; 9] = [
        "stopped", "starting", "running", "backoff", "stopping", "exited", "fatal", "detached",
        "waiting",
    ];

    fn event(name: &str) -> Event<Kid> {
        match name {
            "start" => Event::Start,
            "wait" => Event::Wait("waiting for db".into()),
            "deps-met" => Event::DepsMet,
            "stop" => Event::Stop,
            "restart" => Event::Restart,
            "detach" => Event::Detach,
            "signal" => Event::Signal(Signal::SIGHUP),
            "shutdown-stop" => Event::Shutdown(ShutdownMode::Stop),
            "shutdown-detach" => Event::Shutdown(ShutdownMode::Detach),
            "spawned" => Event::Spawned(Kid(8)),
            "spawn-failed" => Event::SpawnFailed(Arc::new(SpawnError::Missing("/x".into()))),
            "detach-ready" => Event::DetachReady { ending: false },
            "detach-refused" => Event::DetachRefused {
                reason: "no cat".into(),
                ending: false,
            },
            "crash" => Event::Exited {
                exit: ExitKind::Code(1),
                stop_sent: false,
            },
            "exit-after-bulk-stop" => Event::Exited {
                exit: ExitKind::Signal(15),
                stop_sent: true,
            },
            "up-due" => Event::UpDue,
            "ready" => Event::Ready,
            "ready-timeout" => Event::ReadyTimeout,
            "unhealthy" => Event::Unhealthy,
            "retry-due" => Event::RetryDue,
            "kill-due" => Event::KillDue,
            "vanished" => Event::Vanished,
            other => panic!("no event {other}"),
        }
    }

    /// Effects in a few words, for the table.
    fn words(effects: &[Effect<Kid>]) -> String {
        let word = |e: &Effect<Kid>| match e {
            Effect::Spawn { fresh: true } => "spawn fresh".to_owned(),
            Effect::Spawn { fresh: false } => "spawn".to_owned(),
            Effect::SignalStop => "signal stop".to_owned(),
            Effect::Kill => "kill".to_owned(),
            Effect::Signal(s) => format!("signal {s}"),
            Effect::Reap { child, .. } => format!("reap {}", child.0),
            Effect::PrepareDetach { ending } => format!("prepare detach{}", end(*ending)),
            Effect::Release { child, .. } => format!("release {}", child.0),
            Effect::Answer(Outcome::Done) => "ok".to_owned(),
            Effect::Answer(Outcome::AlreadyRunning(s)) => format!("err already {s}"),
            Effect::Answer(Outcome::NotRunning(s)) => format!("err not running {s}"),
            Effect::Answer(Outcome::SpawnFailed(r)) => format!("err spawn {r}"),
            Effect::Answer(Outcome::DetachFailed(r)) => format!("err detach {r}"),
            Effect::End => "end".to_owned(),
        };
        fn end(ending: bool) -> &'static str {
            if ending { " then end" } else { "" }
        }
        effects.iter().map(word).collect::<Vec<_>>().join(", ")
    }

    /// Runs one row at T0 under `always`: (state, effects).
    fn run(from: &str, ev: &str) -> (String, String) {
        let c = Clock::new();
        let mut history = History {
            last_spawn: Some(c.instant(T0 - Duration::from_secs(5))),
            ..History::default()
        };
        let (next, effects) = step(
            state(from, &c),
            &mut history,
            event(ev),
            &rules(RestartPolicy::Always),
            c.at(T0),
        );
        (next.state().to_string(), words(&effects))
    }

    /// The whole table: every control in every state, every result, exit
    /// and timer. Each row: state, event, next state, effects.
    #[rustfmt::skip]
    const TABLE: &[(&str, &str, &str, &str)] = &[
        // start: spawns unless a process exists.
        ("stopped", "start", "stopped", "spawn fresh"),
        ("starting", "start", "starting", "err already starting"),
        ("running", "start", "running", "err already running"),
        ("backoff", "start", "backoff", "spawn fresh"),
        ("stopping", "start", "stopping", "err already stopping"),
        ("exited", "start", "exited", "spawn fresh"),
        ("fatal", "start", "fatal", "spawn fresh"),
        ("detached", "start", "detached", "spawn fresh"),
        ("waiting", "start", "waiting", "spawn fresh"),
        // start while a program in After does not run: waiting, answered
        // at once; a process, or a pending retry, is not touched.
        ("stopped", "wait", "waiting", "ok"),
        ("starting", "wait", "starting", "err already starting"),
        ("running", "wait", "running", "err already running"),
        ("backoff", "wait", "waiting", "ok"),
        ("stopping", "wait", "stopping", "err already stopping"),
        ("exited", "wait", "waiting", "ok"),
        ("fatal", "wait", "waiting", "ok"),
        ("detached", "wait", "waiting", "ok"),
        ("waiting", "wait", "waiting", "ok"),
        // Every program in After runs: the wait ends in a spawn.
        ("waiting", "deps-met", "stopped", "spawn fresh"),
        ("stopped", "deps-met", "stopped", ""),
        ("running", "deps-met", "running", ""),
        // stop: signals a live process; elsewhere done at once.
        ("stopped", "stop", "stopped", "ok"),
        ("starting", "stop", "stopping", "signal stop"),
        ("running", "stop", "stopping", "signal stop"),
        ("backoff", "stop", "stopped", "ok"),
        ("stopping", "stop", "stopping", ""),
        ("exited", "stop", "exited", "ok"),
        ("fatal", "stop", "fatal", "ok"),
        ("detached", "stop", "detached", "ok"),
        ("waiting", "stop", "stopped", "ok"),
        // restart: a stop, then a fresh spawn.
        ("stopped", "restart", "stopped", "spawn fresh"),
        ("starting", "restart", "stopping", "signal stop"),
        ("running", "restart", "stopping", "signal stop"),
        ("backoff", "restart", "stopped", "spawn fresh"),
        ("stopping", "restart", "stopping", ""),
        ("exited", "restart", "exited", "spawn fresh"),
        ("fatal", "restart", "fatal", "spawn fresh"),
        ("detached", "restart", "detached", "spawn fresh"),
        ("waiting", "restart", "stopped", "spawn fresh"),
        // detach: only a starting or running process.
        ("stopped", "detach", "stopped", "err not running stopped"),
        ("starting", "detach", "starting", "prepare detach"),
        ("running", "detach", "running", "prepare detach"),
        ("backoff", "detach", "backoff", "err not running backoff"),
        ("stopping", "detach", "stopping", "err not running stopping"),
        ("exited", "detach", "exited", "err not running exited"),
        ("fatal", "detach", "fatal", "err not running fatal"),
        ("detached", "detach", "detached", "err not running detached"),
        ("waiting", "detach", "waiting", "err not running waiting"),
        // signal: to a supervised process only.
        ("stopped", "signal", "stopped", "err not running stopped"),
        ("starting", "signal", "starting", "signal SIGHUP"),
        ("running", "signal", "running", "signal SIGHUP"),
        ("backoff", "signal", "backoff", "err not running backoff"),
        ("stopping", "signal", "stopping", "signal SIGHUP"),
        ("exited", "signal", "exited", "err not running exited"),
        ("fatal", "signal", "fatal", "err not running fatal"),
        ("detached", "signal", "detached", "err not running detached"),
        ("waiting", "signal", "waiting", "err not running waiting"),
        // shutdown, stopping: stop, then end.
        ("stopped", "shutdown-stop", "stopped", "ok, end"),
        ("starting", "shutdown-stop", "stopping", "signal stop"),
        ("running", "shutdown-stop", "stopping", "signal stop"),
        ("backoff", "shutdown-stop", "stopped", "ok, end"),
        ("stopping", "shutdown-stop", "stopping", ""),
        ("exited", "shutdown-stop", "exited", "ok, end"),
        ("fatal", "shutdown-stop", "fatal", "ok, end"),
        ("detached", "shutdown-stop", "detached", "ok, end"),
        ("waiting", "shutdown-stop", "stopped", "ok, end"),
        // shutdown, detaching: detach what runs, stop a pending retry, then end.
        ("stopped", "shutdown-detach", "stopped", "ok, end"),
        ("starting", "shutdown-detach", "starting", "prepare detach then end"),
        ("running", "shutdown-detach", "running", "prepare detach then end"),
        ("backoff", "shutdown-detach", "stopped", "ok, end"),
        ("stopping", "shutdown-detach", "stopping", ""),
        ("exited", "shutdown-detach", "exited", "ok, end"),
        ("fatal", "shutdown-detach", "fatal", "ok, end"),
        ("detached", "shutdown-detach", "detached", "ok, end"),
        ("waiting", "shutdown-detach", "stopped", "ok, end"),
        // spawned: starting, answered.
        ("stopped", "spawned", "starting", "ok"),
        ("backoff", "spawned", "starting", "ok"),
        ("exited", "spawned", "starting", "ok"),
        ("fatal", "spawned", "starting", "ok"),
        ("detached", "spawned", "starting", "ok"),
        // spawn failed: fatal with the reason, answered.
        ("stopped", "spawn-failed", "fatal", "err spawn executable /x does not exist"),
        ("backoff", "spawn-failed", "fatal", "err spawn executable /x does not exist"),
        ("fatal", "spawn-failed", "fatal", "err spawn executable /x does not exist"),
        // detach prepared: released; refused: still supervised.
        ("starting", "detach-ready", "detached", "release 7, ok"),
        ("running", "detach-ready", "detached", "release 7, ok"),
        ("stopped", "detach-ready", "stopped", "err not running stopped"),
        ("running", "detach-refused", "running", "err detach no cat"),
        // exits: a crash follows the restart rules (a run of 10 ms is a
        // failed start; a long one restarts at once, 5 s after the last
        // spawn); a stop's exit is reaped.
        ("starting", "crash", "backoff", "reap 7"),
        ("running", "crash", "backoff", "reap 7"),
        ("stopping", "crash", "stopped", "reap 7, ok"),
        ("running", "exit-after-bulk-stop", "stopped", "reap 7"),
        ("stopped", "crash", "stopped", ""),
        ("backoff", "crash", "backoff", ""),
        ("exited", "crash", "exited", ""),
        ("fatal", "crash", "fatal", ""),
        ("detached", "crash", "detached", ""),
        // timers.
        ("starting", "up-due", "running", ""),
        ("backoff", "retry-due", "backoff", "spawn"),
        ("stopping", "kill-due", "stopping", "kill"),
        ("running", "up-due", "running", ""),
        ("stopped", "retry-due", "stopped", ""),
        ("running", "kill-due", "running", ""),
        // A recorded process that ended while zistd was down: an exit of
        // unknown status, and the restart policy applies.
        ("stopped", "vanished", "backoff", ""),
        ("running", "vanished", "running", ""),
        // Checks: Ready ends `starting`; its Timeout is a failed start
        // (the group is stopped first); Alive failing restarts a running one.
        ("starting", "ready", "running", ""),
        ("running", "ready", "running", ""),
        ("starting", "ready-timeout", "stopping", "signal stop"),
        ("backoff", "ready-timeout", "backoff", ""),
        ("running", "unhealthy", "stopping", "signal stop"),
        ("starting", "unhealthy", "starting", ""),
        ("stopped", "unhealthy", "stopped", ""),
    ];

    #[test]
    fn the_transition_table() {
        let mut wrong = Vec::new();
        for &(from, ev, to, effects) in TABLE {
            let got = run(from, ev);
            if got != (to.to_owned(), effects.to_owned()) {
                wrong.push(format!(
                    "{from} + {ev}: expected {to} [{effects}], got {} [{}]",
                    got.0, got.1
                ));
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_control_in_every_state_is_in_the_table() {
        let controls = [
            "start",
            "wait",
            "stop",
            "restart",
            "detach",
            "signal",
            "shutdown-stop",
            "shutdown-detach",
        ];
        for s in STATES {
            for c in controls {
                assert!(
                    TABLE.iter().any(|r| r.0 == s && r.1 == c),
                    "no row for {s} + {c}"
                );
            }
        }
    }

    #[test]
    fn a_ready_timeout_is_a_failed_start_and_an_unhealthy_program_is_restarted_and_counted() {
        let c = Clock::new();
        let mut r = rules(RestartPolicy::Always);
        r.ready_timeout = Some(Duration::from_secs(60));
        let mut h = History::default();
        let (s, _) = step(Lifecycle::Stopped, &mut h, Event::Start, &r, c.at(T0));
        let (s, _) = step(s, &mut h, Event::Spawned(Kid(1)), &r, c.at(T0));
        let (at, due) = s.timer(&r).expect("the ready timeout");
        assert_eq!(
            (at, due),
            (c.instant(T0 + Duration::from_secs(60)), Timer::ReadyTimeout)
        );
        let late = T0 + Duration::from_secs(60);
        let (s, effects) = step(s, &mut h, due.event(), &r, c.at(late));
        assert_eq!(
            (s.state(), words(&effects)),
            (ProcessState::Stopping, "signal stop".into())
        );
        let (s, _) = step(s, &mut h, ended(ExitKind::Signal(15), true), &r, c.at(late));
        assert_eq!(s.state(), ProcessState::Backoff);
        assert_eq!(h.failures, 1, "a failed start, however long it waited");
        let (s, _) = step(
            s,
            &mut h,
            Event::RetryDue,
            &r,
            c.at(late + Duration::from_secs(1)),
        );
        let (s, _) = step(
            s,
            &mut h,
            Event::Spawned(Kid(2)),
            &r,
            c.at(late + Duration::from_secs(1)),
        );
        let (s, _) = step(
            s,
            &mut h,
            Event::Ready,
            &r,
            c.at(late + Duration::from_secs(2)),
        );
        assert_eq!((s.state(), h.failures), (ProcessState::Running, 0));
        let t = late + Duration::from_secs(100);
        let (s, effects) = step(s, &mut h, Event::Unhealthy, &r, c.at(t));
        assert_eq!(
            (s.state(), words(&effects)),
            (ProcessState::Stopping, "signal stop".into())
        );
        let (s, _) = step(s, &mut h, ended(ExitKind::Signal(15), true), &r, c.at(t));
        assert_eq!(s.state(), ProcessState::Backoff);
        assert_eq!(
            h.failures, 0,
            "a crash after a good run, not a failed start"
        );
        let t = t + Duration::from_secs(1);
        let (s, effects) = step(s, &mut h, Event::RetryDue, &r, c.at(t));
        assert_eq!(words(&effects), "spawn");
        let (_, _) = step(s, &mut h, Event::Spawned(Kid(3)), &r, c.at(t));
        assert_eq!(h.restarts, 2, "both restarts are counted");
    }

    #[test]
    fn a_restart_after_a_crash_is_counted_and_a_start_is_not() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History::default();
        let (s, _) = step(Lifecycle::Stopped, &mut h, Event::Start, &r, c.at(T0));
        let (s, _) = step(s, &mut h, Event::Spawned(Kid(1)), &r, c.at(T0));
        assert_eq!(h.restarts, 0);
        let crash = ended(ExitKind::Code(3), false);
        let later = T0 + Duration::from_secs(5);
        let (s, effects) = step(s, &mut h, crash, &r, c.at(later));
        assert_eq!(words(&effects), "reap 1");
        assert_eq!(h.last_exit, Some(ExitKind::Code(3)));
        let (at, due) = s.timer(&r).expect("a retry timer");
        assert_eq!(at, c.instant(later + r.restart.restart_delay));
        let (s, effects) = step(s, &mut h, due.event(), &r, c.at(later));
        assert_eq!(words(&effects), "spawn");
        let (s, _) = step(s, &mut h, Event::Spawned(Kid(2)), &r, c.at(later));
        assert_eq!(
            (s.state(), s.pid(), h.restarts),
            (ProcessState::Starting, Some(2), 1)
        );
    }

    #[test]
    fn failed_starts_back_off_then_turn_fatal_with_a_reason() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History {
            last_spawn: Some(c.instant(T0)),
            ..History::default()
        };
        let mut s = Lifecycle::Starting {
            child: Kid(1),
            since: c.instant(T0),
        };
        let mut waits = Vec::new();
        let mut t = T0;
        for pid in 2.. {
            t += Duration::from_millis(10);
            let crash = ended(ExitKind::Code(1), false);
            let (next, _) = step(s, &mut h, crash, &r, c.at(t));
            match next {
                Lifecycle::Backoff { until, .. } => {
                    waits.push(until.duration_since(c.instant(t)).as_millis());
                    t = until.duration_since(c.instant(Duration::ZERO));
                    let (b, effects) = step(next, &mut h, Event::RetryDue, &r, c.at(t));
                    assert_eq!(words(&effects), "spawn");
                    (s, _) = step(b, &mut h, Event::Spawned(Kid(pid)), &r, c.at(t));
                }
                Lifecycle::Fatal { reason } => {
                    assert!(reason.contains("3 times in a row"), "{reason}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // RestartDelay, doubled after each failed start.
        assert_eq!(waits, vec![100, 200]);
        assert_eq!((h.failures, h.restarts), (3, 2));
    }

    #[test]
    fn policies_decide_whether_an_exit_ends_the_program() {
        let c = Clock::new();
        let clean = ExitKind::Code(0);
        for (policy, exit, to) in [
            (
                RestartPolicy::Never,
                ExitKind::Code(1),
                ProcessState::Exited,
            ),
            (RestartPolicy::OnFailure, clean, ProcessState::Exited),
            (
                RestartPolicy::OnFailure,
                ExitKind::Signal(9),
                ProcessState::Backoff,
            ),
            (RestartPolicy::Always, clean, ProcessState::Backoff),
        ] {
            let mut h = History::default();
            let running = running(&c, 1);
            let crash = ended(exit, false);
            let (s, _) = step(running, &mut h, crash, &rules(policy), c.at(T0));
            assert_eq!(s.state(), to, "{policy:?} after {exit:?}");
        }
    }

    #[test]
    fn a_stop_kills_after_stop_timeout_and_ends_stopped_with_the_exit() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History::default();
        let running = running(&c, 4);
        let (s, _) = step(running, &mut h, Event::Stop, &r, c.at(T0));
        let (at, due) = s.timer(&r).expect("a kill timer");
        assert_eq!(at, c.instant(T0 + r.stop_timeout));
        let (s, effects) = step(s, &mut h, due.event(), &r, c.at(T0 + r.stop_timeout));
        assert_eq!(words(&effects), "kill");
        assert!(s.timer(&r).is_none());
        let killed = ended(ExitKind::Signal(9), true);
        let (s, effects) = step(s, &mut h, killed, &r, c.at(T0 + r.stop_timeout));
        assert_eq!(words(&effects), "reap 4, ok");
        assert_eq!(
            (s.state(), h.last_exit),
            (ProcessState::Stopped, Some(ExitKind::Signal(9)))
        );
    }

    #[test]
    fn a_restart_spawns_fresh_once_the_old_process_is_reaped() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History {
            failures: 2,
            ..History::default()
        };
        let running = running(&c, 4);
        let (s, _) = step(running, &mut h, Event::Restart, &r, c.at(T0));
        assert_eq!(h.failures, 0);
        let exit = ended(ExitKind::Signal(15), true);
        let (s, effects) = step(s, &mut h, exit, &r, c.at(T0));
        assert_eq!(
            (s.state(), words(&effects)),
            (ProcessState::Stopped, "reap 4, spawn fresh".into())
        );
        let (s, effects) = step(s, &mut h, Event::Spawned(Kid(5)), &r, c.at(T0));
        assert_eq!(
            (s.pid(), words(&effects), h.restarts),
            (Some(5), "ok".into(), 0)
        );
    }

    #[test]
    fn a_shutdown_during_a_restart_ends_instead_of_spawning() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History::default();
        let stopping = Lifecycle::Stopping {
            child: Kid(4),
            since: c.instant(Duration::ZERO),
            kill_at: None,
            then: AfterStop::Start,
        };
        let (s, _) = step(
            stopping,
            &mut h,
            Event::Shutdown(ShutdownMode::Stop),
            &r,
            c.at(T0),
        );
        let exit = ended(ExitKind::Signal(9), true);
        let (_, effects) = step(s, &mut h, exit, &r, c.at(T0));
        assert_eq!(words(&effects), "reap 4, ok, end");
    }

    #[test]
    fn a_refused_detach_at_shutdown_stops_instead() {
        let c = Clock::new();
        let r = rules(RestartPolicy::Always);
        let mut h = History::default();
        let running = running(&c, 4);
        let refused = Event::DetachRefused {
            reason: "no cat".into(),
            ending: true,
        };
        let (s, effects) = step(running, &mut h, refused, &r, c.at(T0));
        assert_eq!(
            (s.state(), words(&effects)),
            (ProcessState::Stopping, "signal stop".into())
        );
    }

    #[test]
    fn huge_durations_never_overflow_a_deadline() {
        let c = Clock::new();
        let mut r = rules(RestartPolicy::Always);
        r.stop_timeout = Duration::MAX;
        r.restart.start_secs = Duration::MAX;
        let mut h = History::default();
        let (s, _) = step(
            Lifecycle::Stopped,
            &mut h,
            Event::Spawned(Kid(1)),
            &r,
            c.at(T0),
        );
        let (up_at, _) = s.timer(&r).unwrap();
        assert!(up_at > c.instant(T0 + Duration::from_secs(86_400 * 365)));
        let (s, _) = step(s, &mut h, Event::Stop, &r, c.at(T0));
        assert!(s.timer(&r).is_some());
    }
}
