//! One supervised program: a cheap handle and the actor task that owns its process.
//!
//! The actor is the only code that touches the child: it spawns it, waits
//! for it, signals its group (always before reaping it, so a pid is never
//! reused under a signal), restarts it by the pure rules of
//! [`crate::state::after_exit`], and publishes a [`Snapshot`] after every
//! change. Controls arrive on a small queue and are answered once applied:
//! a stop is answered when the whole process group is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout_at};

use crate::error::{Error, Result};
use crate::logs::{RotatingFile, SharedLog, pump};
use crate::spawn::{self, Process};
use crate::spec::{ProgramSpec, signal_name};
use crate::state::{AfterExit, ExitKind, ProcessState, RestartRules, after_exit, next_spawn_at};
use crate::wire::{ProcessEvent, ProcessInfo, ShutdownMode, rfc3339, rfc3339_millis, secs};

/// How long a stop waits, after SIGKILL, for the last members of a group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long a stop waits for the output pumps to drain what the group wrote.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What the API sees of a program between two changes.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub state: ProcessState,
    pub pid: Option<i32>,
    /// When the process started, already in RFC 3339 (formatted once per spawn).
    pub started_at: Option<Arc<str>>,
    pub started: Option<Instant>,
    pub restarts: u32,
    pub exit: Option<ExitKind>,
    pub error: Option<Arc<str>>,
}

pub(crate) type Reply = oneshot::Sender<Result<()>>;

/// A request to the actor; kept small, since the queue preallocates slots.
pub(crate) enum Control {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    Detach(Reply),
    Signal(Signal, Reply),
    Shutdown(ShutdownMode, Reply),
}

/// An actor's inbox. Controls are rare, so it is a locked queue and a
/// wake-up, which hold nothing while empty (a channel would preallocate
/// slots for every program).
#[derive(Default)]
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Control>>,
    ready: Notify,
    /// The actor has ended: nothing more is accepted.
    ended: AtomicBool,
    /// Every handle is gone: the actor stops its program and ends.
    orphaned: AtomicBool,
}

impl Mailbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Control>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a control; gives it back when the actor has ended.
    fn post(&self, control: Control) -> Result<(), Control> {
        let mut queue = self.queue();
        if self.ended.load(Ordering::Acquire) {
            return Err(control);
        }
        queue.push_back(control);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The next control; `None` once every handle is gone and the queue is empty.
    async fn recv(&self) -> Option<Control> {
        loop {
            if let Some(control) = self.queue().pop_front() {
                return Some(control);
            }
            if self.orphaned.load(Ordering::Acquire) {
                return None;
            }
            // notify_one keeps a permit when nobody waits, so no post is missed.
            self.ready.notified().await;
        }
    }

    /// Marks the actor ended and drops what is still queued, so every
    /// waiting caller gets an answer (the supervisor is shutting down).
    fn close(&self) {
        let mut queue = self.queue();
        self.ended.store(true, Ordering::Release);
        queue.clear();
    }
}

fn read(snapshot: &RwLock<Snapshot>) -> RwLockReadGuard<'_, Snapshot> {
    snapshot.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(snapshot: &RwLock<Snapshot>) -> RwLockWriteGuard<'_, Snapshot> {
    snapshot.write().unwrap_or_else(PoisonError::into_inner)
}

/// The registry's handle on a program.
pub(crate) struct Program {
    pub spec: Arc<ProgramSpec>,
    /// The executable as shown in info, formatted once.
    path: Arc<str>,
    /// The live process, for bulk stops (see [`spawn::Lease`]).
    pub lease: Arc<spawn::Lease>,
    mailbox: Arc<Mailbox>,
    snapshot: Arc<RwLock<Snapshot>>,
    pub stdout: SharedLog,
    pub stderr: SharedLog,
}

impl Program {
    /// Starts the actor for `spec`; it does nothing until told to start.
    pub(crate) fn launch(
        spec: ProgramSpec,
        log_dir: &std::path::Path,
        events: broadcast::Sender<ProcessEvent>,
    ) -> Self {
        let spec = Arc::new(spec);
        let file = |own: &Option<std::path::PathBuf>, suffix: &str| {
            let path = own
                .clone()
                .unwrap_or_else(|| log_dir.join(format!("{}.{suffix}.log", spec.name)));
            SharedLog::new(RotatingFile::new(
                path,
                spec.log_max_bytes,
                spec.log_backups,
            ))
        };
        let stdout = file(&spec.logfile, "out");
        let stderr = file(&spec.err_logfile, "err");
        let mailbox = Arc::new(Mailbox::default());
        let snapshot = Arc::new(RwLock::new(Snapshot {
            state: ProcessState::Stopped,
            pid: None,
            started_at: None,
            started: None,
            restarts: 0,
            exit: None,
            error: None,
        }));
        let lease = Arc::new(spawn::Lease::default());
        let actor = Actor {
            lease: lease.clone(),
            rules: RestartRules {
                policy: spec.restart,
                start_secs: spec.start_secs,
                max_restarts: spec.max_restarts,
                restart_delay: spec.restart_delay,
            },
            spec: spec.clone(),
            mailbox: mailbox.clone(),
            publish: snapshot.clone(),
            events,
            logs: [stdout.clone(), stderr.clone()],
            run: Run::Idle,
            failures: 0,
            last_spawn: None,
            prepared: None,
        };
        tokio::spawn(actor.run());
        Self {
            path: spec.path.display().to_string().into(),
            spec,
            lease,
            mailbox,
            snapshot,
            stdout,
            stderr,
        }
    }

    /// Sends a control and waits until the actor has applied it.
    pub(crate) async fn ask(&self, make: impl FnOnce(Reply) -> Control) -> Result<ProcessInfo> {
        let applied = self.send(make).await?;
        applied.await.map_err(|_| Error::ShuttingDown)??;
        Ok(self.info())
    }

    /// Sends a control; the receiver resolves once the actor has applied it.
    pub(crate) async fn send(
        &self,
        make: impl FnOnce(Reply) -> Control,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (tx, rx) = oneshot::channel();
        self.mailbox
            .post(make(tx))
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }

    /// Tells the actor to stop or detach its process and end; resolves when it has.
    pub(crate) async fn shut_down(&self, mode: ShutdownMode) {
        if let Ok(done) = self.send(|reply| Control::Shutdown(mode, reply)).await {
            let _ = done.await;
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        read(&self.snapshot).clone()
    }

    pub(crate) fn info(&self) -> ProcessInfo {
        let snap = read(&self.snapshot);
        let spec = &self.spec;
        let running = snap.state.is_live() || snap.state == ProcessState::Detached;
        ProcessInfo {
            name: spec.name.to_string(),
            state: snap.state,
            pid: snap.pid,
            path: self.path.to_string(),
            args: spec.args.clone(),
            restarts: snap.restarts,
            started_at: snap.started_at.as_deref().map(str::to_owned),
            uptime_secs: match snap.started {
                Some(t) if running => secs(t.elapsed()),
                _ => 0.0,
            },
            exit_code: match snap.exit {
                Some(ExitKind::Code(c)) => Some(c),
                _ => None,
            },
            exit_signal: match snap.exit {
                Some(ExitKind::Signal(s)) => Some(
                    Signal::try_from(s)
                        .map_or_else(|_| s.to_string(), |s| signal_name(s).to_owned()),
                ),
                _ => None,
            },
            web: spec.web,
            error: snap.error.as_deref().map(str::to_owned),
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.mailbox.orphaned.store(true, Ordering::Release);
        self.mailbox.ready.notify_one();
    }
}

/// One output pump of a live process.
struct Pump {
    handoff: oneshot::Sender<()>,
    task: JoinHandle<Option<pipe::Receiver>>,
}

struct Live {
    process: Process,
    pid: i32,
    spawned: Instant,
    up: bool,
    pumps: Vec<Pump>,
}

enum Run {
    Idle,
    Live(Box<Live>),
    Waiting(Instant),
}

enum Wake {
    Control(Control),
    Closed,
    Exited(ExitKind),
    Up,
    RetryDue,
}

struct Actor {
    spec: Arc<ProgramSpec>,
    lease: Arc<spawn::Lease>,
    rules: RestartRules,
    mailbox: Arc<Mailbox>,
    publish: Arc<RwLock<Snapshot>>,
    events: broadcast::Sender<ProcessEvent>,
    logs: [SharedLog; 2],
    run: Run,
    failures: u32,
    last_spawn: Option<Instant>,
    /// Arguments, environment and user, reused by restarts; rebuilt on a
    /// start or restart asked through the API.
    prepared: Option<Arc<spawn::Prepared>>,
}

/// Whether any process is left in the group.
fn group_exists(pgid: Pid) -> bool {
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Polls until the group is empty or `deadline` passes; true when it is empty.
async fn wait_group_gone(pgid: Pid, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if !group_exists(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Lets the pumps of an ended group read what it wrote, so that a state
/// after the exit implies its output is in the logs. Bounded: a pipe held
/// open by a process outside the group is read on in the background.
async fn drain(pumps: Vec<Pump>) {
    let deadline = Instant::now() + DRAIN_GRACE;
    for pump in pumps {
        let _ = timeout_at(deadline.into(), pump.task).await;
    }
}

/// Ends every process left in a group whose leader is gone, and waits for them.
async fn clear_group(pgid: Pid) {
    if group_exists(pgid) {
        let _ = killpg(pgid, Signal::SIGKILL);
        if !wait_group_gone(pgid, Instant::now() + KILL_GRACE).await {
            tracing::warn!(
                pgid = pgid.as_raw(),
                "processes of group are left after SIGKILL"
            );
        }
    }
}

impl Actor {
    async fn run(mut self) {
        loop {
            match self.next_wake().await {
                Wake::Control(Control::Shutdown(mode, done)) => {
                    match mode {
                        ShutdownMode::Stop => self.stop().await,
                        ShutdownMode::Detach => {
                            if let Err(e) = self.detach().await {
                                tracing::warn!("{e}; stopping it instead");
                                self.stop().await;
                            }
                        }
                    }
                    self.mailbox.close();
                    let _ = done.send(Ok(()));
                    return;
                }
                Wake::Control(control) => self.handle(control).await,
                Wake::Closed => {
                    self.stop().await;
                    self.mailbox.close();
                    return;
                }
                Wake::Exited(exit) => self.on_exit(exit).await,
                Wake::Up => {
                    if let Run::Live(live) = &mut self.run {
                        live.up = true;
                    }
                    self.failures = 0;
                    self.set(ProcessState::Running, |_| {});
                }
                Wake::RetryDue => {
                    self.run = Run::Idle;
                    if self.spawn_now().is_ok() {
                        write(&self.publish).restarts += 1;
                    }
                }
            }
        }
    }

    async fn next_wake(&mut self) -> Wake {
        let mailbox = &self.mailbox;
        let received = |c: Option<Control>| c.map_or(Wake::Closed, Wake::Control);
        match &mut self.run {
            Run::Idle => received(mailbox.recv().await),
            Run::Waiting(until) => {
                let until = *until;
                tokio::select! {
                    c = mailbox.recv() => received(c),
                    _ = sleep_until(until.into()) => Wake::RetryDue,
                }
            }
            Run::Live(live) => {
                let up_at = live.spawned + self.rules.start_secs;
                let up = live.up;
                tokio::select! {
                    c = mailbox.recv() => received(c),
                    exit = live.process.wait() => Wake::Exited(exit),
                    _ = sleep_until(up_at.into()), if !up => Wake::Up,
                }
            }
        }
    }

    async fn handle(&mut self, control: Control) {
        match control {
            Control::Start(reply) => {
                let result = match self.state() {
                    s @ (ProcessState::Starting
                    | ProcessState::Running
                    | ProcessState::Stopping) => Err(Error::AlreadyRunning {
                        name: self.spec.name.to_string(),
                        state: s,
                    }),
                    _ => {
                        self.failures = 0;
                        self.prepared = None;
                        self.run = Run::Idle;
                        self.spawn_now()
                    }
                };
                let _ = reply.send(result);
            }
            Control::Stop(reply) => {
                self.stop().await;
                let _ = reply.send(Ok(()));
            }
            Control::Restart(reply) => {
                self.stop().await;
                self.failures = 0;
                self.prepared = None;
                let _ = reply.send(self.spawn_now());
            }
            Control::Detach(reply) => {
                let _ = reply.send(self.detach().await);
            }
            Control::Signal(sig, reply) => {
                // Under the lease, so the pid cannot have been reaped and reused.
                let result = match self.lease.signal(sig) {
                    Some(sent) => sent.map_err(|e| {
                        Error::Invalid(format!("cannot send {sig} to `{}`: {e}", self.spec.name))
                    }),
                    None => Err(self.not_running()),
                };
                let _ = reply.send(result);
            }
            Control::Shutdown(..) => unreachable!("handled in run()"),
        }
    }

    fn state(&self) -> ProcessState {
        read(&self.publish).state
    }

    fn not_running(&self) -> Error {
        Error::NotRunning {
            name: self.spec.name.to_string(),
            state: self.state(),
        }
    }

    /// Changes the published state (and more), announcing a state change as an event.
    fn set(&self, state: ProcessState, more: impl FnOnce(&mut Snapshot)) {
        let (from, pid) = {
            let mut snap = write(&self.publish);
            let from = std::mem::replace(&mut snap.state, state);
            more(&mut snap);
            (from, snap.pid)
        };
        if from != state {
            let _ = self.events.send(ProcessEvent {
                name: self.spec.name.to_string(),
                from,
                to: state,
                pid,
                at: rfc3339_millis(SystemTime::now()),
            });
        }
    }

    /// Spawns the process now. On failure the program is fatal with the reason.
    fn spawn_now(&mut self) -> Result<()> {
        let prepared = match &self.prepared {
            Some(p) => Ok(p.clone()),
            None => spawn::Prepared::new(&self.spec).map(Arc::new),
        };
        if let Ok(p) = &prepared {
            self.prepared = Some(p.clone());
        }
        let spawned = prepared
            .and_then(|p| spawn::spawn(&self.spec, &p, &self.lease))
            .and_then(|s| {
                let mut pumps = Vec::with_capacity(2);
                for (fd, log) in [s.stdout, s.stderr].into_iter().zip(&self.logs) {
                    let rx = pipe::Receiver::from_owned_fd(fd)
                        .map_err(|e| format!("cannot watch the output pipe: {e}"))?;
                    let (handoff, handoff_rx) = oneshot::channel();
                    let task = tokio::spawn(pump(rx, log.clone(), handoff_rx));
                    pumps.push(Pump { handoff, task });
                }
                Ok((s.process, pumps))
            });
        let now = Instant::now();
        self.last_spawn = Some(now);
        match spawned {
            Ok((process, pumps)) => {
                let pid = process.pid();
                self.run = Run::Live(Box::new(Live {
                    process,
                    pid,
                    spawned: now,
                    up: false,
                    pumps,
                }));
                self.set(ProcessState::Starting, |s| {
                    s.pid = Some(pid);
                    s.started = Some(now);
                    s.started_at = Some(rfc3339(SystemTime::now()).into());
                    s.exit = None;
                    s.error = None;
                });
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(program = %self.spec.name, "{reason}");
                self.run = Run::Idle;
                self.set(ProcessState::Fatal, |s| {
                    s.pid = None;
                    s.error = Some(reason.as_str().into());
                });
                Err(Error::Spawn {
                    name: self.spec.name.to_string(),
                    reason,
                })
            }
        }
    }

    /// The process ended on its own: clean its group, then follow the restart rules.
    async fn on_exit(&mut self, exit: ExitKind) {
        let Run::Live(live) = std::mem::replace(&mut self.run, Run::Idle) else {
            return;
        };
        if self.lease.stopping() {
            // A bulk stop reached it before its Stop control: a stop, never a crash.
            self.run = Run::Live(live);
            self.stop().await;
            return;
        }
        clear_group(Pid::from_raw(live.pid)).await;
        let uptime = live.spawned.elapsed();
        drain(live.pumps).await;
        let decision = after_exit(&self.rules, exit, uptime, self.failures);
        let record = |s: &mut Snapshot| {
            s.pid = None;
            s.exit = Some(exit);
        };
        match decision {
            AfterExit::Restart { delay, failures } => {
                self.failures = failures;
                self.set(ProcessState::Backoff, record);
                let now = Instant::now();
                let at = next_spawn_at(now, delay, self.last_spawn.unwrap_or(live.spawned));
                if at <= now {
                    if self.spawn_now().is_ok() {
                        write(&self.publish).restarts += 1;
                    }
                } else {
                    self.run = Run::Waiting(at);
                }
            }
            AfterExit::Exited => self.set(ProcessState::Exited, record),
            AfterExit::Fatal { failures } => {
                self.failures = failures;
                let why = format!(
                    "exited {failures} times in a row within StartSecs ({:?}); start it again when fixed",
                    self.rules.start_secs
                );
                self.set(ProcessState::Fatal, |s| {
                    record(s);
                    s.error = Some(why.as_str().into());
                });
            }
        }
    }

    /// Stops the process group (StopSignal, then SIGKILL after StopTimeout) and
    /// returns once the whole group is gone. Not running is not an error.
    async fn stop(&mut self) {
        match std::mem::replace(&mut self.run, Run::Idle) {
            Run::Live(mut live) => {
                self.set(ProcessState::Stopping, |_| {});
                let pgid = Pid::from_raw(live.pid);
                let sent = self
                    .lease
                    .stop(self.spec.stop_signal)
                    .unwrap_or_else(Instant::now);
                let deadline = sent + self.spec.stop_timeout;
                let exit = match timeout_at(deadline.into(), live.process.wait()).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        let _ = killpg(pgid, Signal::SIGKILL);
                        live.process.wait().await
                    }
                };
                if !wait_group_gone(pgid, deadline).await {
                    clear_group(pgid).await;
                }
                drain(live.pumps).await;
                self.lease.stop_done();
                self.set(ProcessState::Stopped, |s| {
                    s.pid = None;
                    s.exit = Some(exit);
                });
            }
            Run::Waiting(_) => self.set(ProcessState::Stopped, |_| {}),
            Run::Idle => {}
        }
    }

    /// Lets the process go: its output is handed to relays that outlive zist,
    /// and zist never signals it again. The child is still reaped in the background.
    async fn detach(&mut self) -> Result<()> {
        let Run::Live(live) = std::mem::replace(&mut self.run, Run::Idle) else {
            return Err(self.not_running());
        };
        let fail = |reason: String| Error::Detach {
            name: self.spec.name.to_string(),
            reason,
        };
        // Everything that can fail is prepared before the pumps let go.
        let prepared = spawn::resolve_executable(std::path::Path::new("cat"), &Default::default())
            .map_err(|e| format!("the output relay needs `cat`: {e}"))
            .and_then(|_| {
                self.logs
                    .iter()
                    .map(SharedLog::append_handle)
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| format!("cannot open the log files: {e}"))
            });
        let files = match prepared {
            Ok(files) => files,
            Err(reason) => {
                self.run = Run::Live(live);
                return Err(fail(reason));
            }
        };
        let Live {
            process,
            pid,
            pumps,
            ..
        } = *live;
        let mut relays = Vec::new();
        for ((pump, file), log) in pumps.into_iter().zip(files).zip(&self.logs) {
            let _ = pump.handoff.send(());
            let Ok(Some(rx)) = pump.task.await else {
                continue; // that stream had already ended
            };
            let relay = rx
                .into_blocking_fd()
                .and_then(|fd| spawn::spawn_relay(fd, file));
            match relay {
                Ok(relay) => relays.push(relay),
                Err(e) => {
                    // The pipe went with the failed relay: the program's next
                    // writes to this stream fail with EPIPE.
                    tracing::error!(program = %self.spec.name, "cannot start an output relay: {e}");
                    log.finish();
                }
            }
        }
        process.release();
        tokio::spawn(async move {
            let mut process = process;
            process.wait().await;
            for mut relay in relays {
                let _ = relay.wait().await;
            }
        });
        self.set(ProcessState::Detached, |s| s.pid = Some(pid));
        Ok(())
    }
}
