//! One supervised program: a cheap handle and the actor task that owns its process.
//!
//! The actor is the only code that touches the child. It keeps the
//! program's [`Lifecycle`] and [`History`], turns each control, exit and
//! timer into an [`Event`], lets the pure [`step`] decide, and performs the
//! [`Effect`]s through a [`Host`]: spawning, signalling the group (always
//! before reaping it, so a pid is never reused under a signal), reaping,
//! detaching. After every step it publishes a [`Snapshot`] derived from the
//! lifecycle, then answers the caller, so an answer already shows the new
//! state. A control is answered once applied: a stop once the whole process
//! group is gone; controls that arrive meanwhile wait in the mailbox.
//!
//! [`Host`] is the seam between the decisions and the operating system: the
//! daemon runs [`Os`], and the actor's own tests run a fake child.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
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

use crate::cgroup::ProgramCgroup;
use crate::error::{Error, Result};
use crate::holder::Holder;
use crate::lifecycle::{
    AfterStop, Effect, Event, HasPid, History, Lifecycle, Now, Outcome, Rules, Timer, step,
};
use crate::logs::{PumpEnd, RotatingFile, SharedLog, pump};
use crate::persist::{ProcessRecord, Store};
use crate::spawn::{self, Process, SpawnError};
use crate::spec::{ProgramSpec, signal_name};
use crate::state::{ExitKind, ProcessState, RestartRules};
use crate::upgrade::{Frozen, epoch_ms};
use crate::wire::{ProcessEvent, ProcessInfo, ShutdownMode, rfc3339, rfc3339_millis, secs};

/// How long a stop waits, after SIGKILL, for the last members of a group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long a stop waits for the output pumps to drain what the group wrote.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What the API sees of a program between two steps: derived from the
/// actor's lifecycle and history after every step, and written nowhere else.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub state: ProcessState,
    pub pid: Option<i32>,
    /// When the current (or last) process started, in RFC 3339 (formatted once per spawn).
    pub started_at: Option<Arc<str>>,
    /// Since when the process of this state has been up.
    pub since: Option<Instant>,
    pub restarts: u32,
    pub exit: Option<ExitKind>,
    /// When the last process ended, in RFC 3339 (formatted once per exit).
    pub exited_at: Option<Arc<str>>,
    pub error: Option<Arc<str>>,
    pub message: Option<Arc<str>>,
}

impl Snapshot {
    const NEW: Self = Self {
        state: ProcessState::Stopped,
        pid: None,
        started_at: None,
        since: None,
        restarts: 0,
        exit: None,
        exited_at: None,
        error: None,
        message: None,
    };
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
    /// A new holder process: hand it the pipes again (no answer).
    Rehold,
    /// Hand the program over to the next executable and end (upgrade).
    Freeze(oneshot::Sender<Frozen>),
    /// The programs it comes after (no answer).
    Deps(Box<Deps>),
}

/// How a program finds the state of another by name (its registry).
pub(crate) type Lookup = Arc<dyn Fn(&str) -> Option<ProcessState> + Send + Sync>;

/// The programs a program comes after (`After`), and how to see them.
pub(crate) struct Deps {
    after: Vec<Arc<str>>,
    lookup: Lookup,
}

impl Deps {
    /// What it waits for, when a program it comes after does not run.
    fn blocker(&self) -> Option<Arc<str>> {
        self.after.iter().find_map(|dep| {
            let on = match (self.lookup)(dep) {
                Some(ProcessState::Running) => return None,
                Some(
                    state @ (ProcessState::Stopped
                    | ProcessState::Exited
                    | ProcessState::Fatal
                    | ProcessState::Detached),
                ) => format!("waiting for {dep}, which is {state}"),
                Some(_) => format!("waiting for {dep}"),
                None => format!("waiting for {dep}, which is no program"),
            };
            Some(on.into())
        })
    }

    /// Waits until every program it comes after runs (`None`), or until it
    /// waits for something else than `now` (`Some(what)`).
    async fn changed(
        &self,
        mut events: broadcast::Receiver<ProcessEvent>,
        now: Option<Arc<str>>,
    ) -> Option<Arc<str>> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let blocker = self.blocker();
            if blocker != now {
                return blocker;
            }
            // Only a change of one of them (or of one of its instances) matters.
            let base = |name: &str| name.split(':').next().unwrap_or_default().to_owned();
            loop {
                match events.recv().await {
                    Ok(ev) if self.after.iter().any(|d| **d == base(&ev.name)) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return std::future::pending().await,
                }
            }
        }
    }
}

impl Control {
    /// The lifecycle event this control is, and whom to answer; `None`
    /// for a control the actor carries out itself.
    fn into_event<C>(self) -> Option<(Event<C>, Reply)> {
        Some(match self {
            Self::Start(reply) => (Event::Start, reply),
            Self::Stop(reply) => (Event::Stop, reply),
            Self::Restart(reply) => (Event::Restart, reply),
            Self::Detach(reply) => (Event::Detach, reply),
            Self::Signal(signal, reply) => (Event::Signal(signal), reply),
            Self::Shutdown(mode, reply) => (Event::Shutdown(mode), reply),
            Self::Rehold | Self::Freeze(_) | Self::Deps(_) => return None,
        })
    }
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
    /// The program's cgroup, for stats.
    pub cgroup: Option<Arc<ProgramCgroup>>,
}

/// What the programs of one supervisor share.
pub(crate) struct Home<'a> {
    pub log_dir: &'a std::path::Path,
    pub events: &'a broadcast::Sender<ProcessEvent>,
    pub store: Option<&'a Arc<Store>>,
    pub holder: Option<&'a Arc<Holder>>,
    pub cgroup_root: Option<&'a std::path::Path>,
    /// Program lines also go to stdout (the daemon key `Console`).
    pub console: bool,
}

impl Program {
    /// Starts the actor for `spec`; it does nothing until told to start,
    /// unless `resume` hands it a process an earlier life of the supervisor
    /// ran (adopted if it still runs, else restarted by its policy).
    pub(crate) fn launch(
        spec: ProgramSpec,
        home: &Home<'_>,
        resume: Resume,
        lookup: Option<Lookup>,
        sockets: Option<Arc<crate::listen::Sockets>>,
    ) -> Self {
        let Home {
            log_dir,
            events,
            store,
            holder,
            cgroup_root,
            console,
        } = *home;
        let (events, store, holder) = (events.clone(), store.cloned(), holder.cloned());
        let spec = Arc::new(spec);
        let file = |own: &Option<std::path::PathBuf>, suffix: &str| {
            let path = own
                .clone()
                .unwrap_or_else(|| log_dir.join(format!("{}.{suffix}.log", spec.name)));
            // A file in LogDir is zist's to place: no symlink there is followed.
            let in_log_dir = path.starts_with(log_dir);
            let file = RotatingFile::new(path, spec.log_max_bytes, spec.log_backups);
            let log = SharedLog::new(if in_log_dir { file.no_symlinks() } else { file });
            let log = if spec.log_timestamps {
                log.with_timestamps()
            } else {
                log
            };
            if console {
                log.with_console(spec.name.as_str())
            } else {
                log
            }
        };
        let logs = [file(&spec.logfile, "out"), file(&spec.err_logfile, "err")];
        let lease = Arc::new(spawn::Lease::default());
        let cgroup = cgroup_root
            .and_then(|root| ProgramCgroup::for_program(root, spec.name.as_str()))
            .map(Arc::new);
        let checks = Checks::of(&spec, &logs, store.as_deref().map(Store::dir));
        let mut extra_env = checks.as_deref().map(Checks::env).unwrap_or_default();
        if let Some(sockets) = &sockets {
            // systemd's socket activation; LISTEN_PID is set at each spawn.
            let count = sockets.addresses().len();
            extra_env.push(("LISTEN_FDS", count.to_string()));
            extra_env.push(("LISTEN_FDNAMES", vec![spec.name.base(); count].join(":")));
        }
        let mut host = Os {
            sockets,
            extra_env,
            spec: spec.clone(),
            lease: lease.clone(),
            logs: logs.clone(),
            prepared: None,
            relay_files: None,
            holder,
            cgroup: cgroup.clone(),
        };
        let begin = host.resume(resume);
        let deps = lookup
            .filter(|_| !spec.after.is_empty())
            .map(|lookup| Deps {
                after: spec.after.iter().map(|n| n.as_str().into()).collect(),
                lookup,
            });
        let mut program = Self::with_host(spec, host, lease, logs, events, store, begin, checks);
        program.deps(deps);
        program.cgroup = cgroup;
        program
    }

    /// Gives the actor the programs it comes after (before its first control).
    fn deps(&mut self, deps: Option<Deps>) {
        if let Some(deps) = deps {
            self.post(Control::Deps(Box::new(deps)));
        }
    }

    /// The state alone, cheaper than a snapshot.
    pub(crate) fn state(&self) -> ProcessState {
        read(&self.snapshot).state
    }

    /// Starts an actor that acts through `host`, from `begin`.
    #[allow(clippy::too_many_arguments)]
    fn with_host<H: Host>(
        spec: Arc<ProgramSpec>,
        host: H,
        lease: Arc<spawn::Lease>,
        [stdout, stderr]: [SharedLog; 2],
        events: broadcast::Sender<ProcessEvent>,
        store: Option<Arc<Store>>,
        begin: Begin<H::Child>,
        checks: Option<Arc<Checks>>,
    ) -> Self {
        let mailbox = Arc::new(Mailbox::default());
        let snapshot = Arc::new(RwLock::new(Snapshot::NEW));
        let mut actor = Actor {
            rules: Rules {
                restart: RestartRules {
                    policy: spec.restart,
                    start_secs: spec.start_secs,
                    max_restarts: spec.max_restarts,
                    restart_delay: spec.restart_delay,
                },
                stop_timeout: spec.stop_timeout,
                ready_timeout: spec.ready.as_ref().map(|c| c.timeout),
            },
            name: spec.name.as_str().into(),
            host,
            mailbox: mailbox.clone(),
            publish: snapshot.clone(),
            events,
            life: begin.life,
            history: begin.history,
            caller: None,
            started_at: None,
            exited_at: None,
            store,
            recorded: Recorded::default(),
            frozen: false,
            note: None,
            checks,
            deps: None,
        };
        if begin.stored {
            actor.recorded = Recorded {
                pid: actor.life.pid(),
                restarts: actor.history.restarts,
                running: actor.life.state() == ProcessState::Running,
            };
        }
        if let (Some(note), Some(pid)) = (begin.note, actor.life.pid()) {
            actor.note = Some((Some(pid), note));
        }
        let mut actor = Box::new(actor);
        // What it resumes is visible before the first control.
        // Resumed as it was: not a change to log.
        actor.publish(ProcessState::Stopped, None, true);
        match begin.first {
            Some(first) => drop(tokio::spawn(actor.run_after(first))),
            None => drop(tokio::spawn(actor.run())),
        }
        Self {
            path: spec.path.display().to_string().into(),
            spec,
            lease,
            mailbox,
            snapshot,
            stdout,
            stderr,
            cgroup: None,
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

    /// Asks the actor to hand the program over for an upgrade (then it
    /// ends); the receiver resolves with the description.
    pub(crate) fn freeze(&self) -> Option<oneshot::Receiver<Frozen>> {
        let (tx, rx) = oneshot::channel();
        self.mailbox.post(Control::Freeze(tx)).ok()?;
        Some(rx)
    }

    /// Posts a control that needs no answer.
    pub(crate) fn post(&self, control: Control) {
        let _ = self.mailbox.post(control);
    }

    /// Tells the actor to stop or detach its process and end; resolves when it has.
    #[cfg(test)]
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
        ProcessInfo {
            name: spec.name.to_string(),
            state: snap.state,
            pid: snap.pid,
            path: self.path.to_string(),
            args: spec.args.clone(),
            restarts: snap.restarts,
            started_at: snap.started_at.as_deref().map(str::to_owned),
            exited_at: snap.exited_at.as_deref().map(str::to_owned),
            uptime_secs: snap.since.map_or(0.0, |t| secs(t.elapsed())),
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
            message: snap.message.as_deref().map(str::to_owned),
            log: crate::wire::LogCounts {
                stdout: self.stdout.counts(),
                stderr: self.stderr.counts(),
            },
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.mailbox.orphaned.store(true, Ordering::Release);
        self.mailbox.ready.notify_one();
    }
}

/// What the actor does to the operating system: every effect of a step
/// that touches a process.
pub(crate) trait Host: Send + 'static {
    /// A supervised child.
    type Child: HasPid + Send + 'static;
    /// Spawns the program; `fresh` prepares its arguments, environment and
    /// user anew. The error says why, for a person.
    fn spawn(&mut self, fresh: bool) -> Result<Self::Child, SpawnError>;
    /// Resolves when the child has ended (cancel-safe; the exit is kept).
    fn wait(child: &mut Self::Child) -> impl Future<Output = ExitKind> + Send;
    /// Whether a stop signal has reached the child (a bulk stop, before the actor's own).
    fn stop_sent(&self) -> bool;
    /// Sends StopSignal to the child's group.
    fn signal_stop(&self);
    /// Sends SIGKILL to the group led by `pid`.
    fn kill(&self, pid: i32);
    /// Sends `signal` to the main process; `None` when there is none.
    fn signal(&self, signal: Signal) -> Option<nix::Result<()>>;
    /// The child has ended: ends what is left of its group (after
    /// `grace_until`) and lets its output drain.
    fn reap(&mut self, child: Self::Child, grace_until: Instant)
    -> impl Future<Output = ()> + Send;
    /// Prepares what a detach needs; nothing is let go yet.
    /// `ending`: the supervisor is shutting down and leaving programs for
    /// the next one to adopt.
    fn prepare_detach(&mut self, ending: bool) -> Result<(), String>;
    /// Hands the child's output to what `prepare_detach` made and lets it go.
    fn release(&mut self, child: Self::Child, ending: bool) -> impl Future<Output = ()> + Send;
    /// Hands the holder (a new one) the child's pipes again.
    fn rehold(&self, child: &Self::Child);
    /// The program daemonizes (PidFile) and `child`, the process it
    /// started with, has exited 0: waits (until `until`) for the file to
    /// name the daemon, and puts the daemon in the child's place. `None`
    /// when there is nothing to follow; the error says why, for a person.
    fn follow(
        &mut self,
        child: &mut Self::Child,
        until: Instant,
    ) -> impl Future<Output = Option<Result<i32, String>>> + Send;
    /// Stops reading the child's pipes and lets it go untouched, for the
    /// next executable of this process; returns the pipes.
    fn freeze(&mut self, child: Self::Child) -> impl Future<Output = [Option<OwnedFd>; 2]> + Send;
}

/// One output pump of a live process.
struct Pump {
    handoff: oneshot::Sender<()>,
    task: JoinHandle<PumpEnd>,
    /// The pipe's descriptor: the pump keeps it open while this pump exists.
    fd: std::os::fd::RawFd,
    /// 0: stdout, 1: stderr.
    stream: usize,
}

/// A real child: its process and the pumps reading its output.
pub(crate) struct Child {
    process: Process,
    pumps: Vec<Pump>,
    /// The start time (clock ticks after boot) of the process zist
    /// spawned, while it is not yet followed to its daemon (PidFile).
    launcher: Option<u64>,
}

impl HasPid for Child {
    fn pid(&self) -> i32 {
        self.process.pid()
    }
}

/// The operating system, as a program's actor uses it.
struct Os {
    spec: Arc<ProgramSpec>,
    lease: Arc<spawn::Lease>,
    logs: [SharedLog; 2],
    /// Arguments, environment and user, reused by restarts; rebuilt on a
    /// start or restart asked through the API.
    prepared: Option<Arc<spawn::Prepared>>,
    /// The log files a detach's relays will write, once prepared.
    relay_files: Option<Vec<std::fs::File>>,
    /// Keeps the pipes open while the supervisor is down (`holder.rs`).
    holder: Option<Arc<Holder>>,
    /// The program's own cgroup, where the machine allows one.
    cgroup: Option<Arc<ProgramCgroup>>,
    /// What zist adds to the program's environment (its checks' sockets).
    extra_env: Vec<(&'static str, String)>,
    /// The sockets it holds for the program (`Listen`), passed at fds 3, 4, ...
    sockets: Option<Arc<crate::listen::Sockets>>,
}

impl Host for Os {
    type Child = Child;

    fn spawn(&mut self, fresh: bool) -> Result<Child, SpawnError> {
        if fresh {
            self.prepared = None;
        }
        // The log files open on the first write; until then the spawn
        // checks count them as descriptors to leave free.
        self.logs.iter().for_each(SharedLog::expect_open);
        let spawned = self.spawn_child();
        if spawned.is_err() {
            self.logs.iter().for_each(SharedLog::no_longer_expected);
        }
        spawned.inspect_err(|reason| tracing::warn!(program = %self.spec.name, "{reason}"))
    }

    fn wait(child: &mut Child) -> impl Future<Output = ExitKind> + Send {
        child.process.wait()
    }

    fn stop_sent(&self) -> bool {
        self.lease.stopping()
    }

    fn signal_stop(&self) {
        // Its group, or an adopted process and its descendants one by one.
        self.lease.stop(self.spec.stop_signal);
        if let (Some(cgroup), Some(pid)) = (&self.cgroup, self.lease.current()) {
            // Processes that left the group (setsid, a double fork) too.
            cgroup.signal_escaped(self.spec.stop_signal, pid);
        }
    }

    fn kill(&self, pid: i32) {
        if self.lease.alone() {
            self.lease.signal_all(Signal::SIGKILL);
        } else {
            // The leader is unreaped (the actor holds it), so the id is still its group's.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal_escaped(Signal::SIGKILL, pid);
        }
    }

    fn signal(&self, signal: Signal) -> Option<nix::Result<()>> {
        // Under the lease, so the pid cannot have been reaped and reused.
        self.lease.signal(signal)
    }

    fn rehold(&self, child: &Child) {
        self.hold(child);
    }

    async fn follow(&mut self, child: &mut Child, until: Instant) -> Option<Result<i32, String>> {
        let path = self.spec.pid_file.clone()?;
        let launched = child.launcher?;
        let launcher = child.process.pid();
        let mut why = format!("PidFile {} was not written", path.display());
        loop {
            match daemon_named(&path, launcher, launched) {
                Ok(record) => match spawn::adopt(&record, &self.lease) {
                    Ok(process) => {
                        let pid = record.pid;
                        child.process = process;
                        child.launcher = None;
                        tracing::info!(program = %self.spec.name, "daemonized: following pid {pid}, named by {}", path.display());
                        return Some(Ok(pid));
                    }
                    Err(e) => {
                        why = format!("PidFile {} names pid {}: {e}", path.display(), record.pid)
                    }
                },
                Err(Some(reason)) => why = reason,
                Err(None) => {}
            }
            if Instant::now() >= until {
                return Some(Err(why));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn freeze(&mut self, child: Child) -> [Option<OwnedFd>; 2] {
        let Child { process, pumps, .. } = child;
        let mut fds = [None, None];
        for (slot, pump) in fds.iter_mut().zip(pumps) {
            let _ = pump.handoff.send(());
            if let Ok(PumpEnd::HandedOff(rx)) = pump.task.await {
                *slot = rx.into_nonblocking_fd().ok();
            }
        }
        // The lease forgets it: no bulk stop reaches it from here on.
        process.release();
        fds
    }

    async fn reap(&mut self, child: Child, grace_until: Instant) {
        let pgid = Pid::from_raw(child.process.pid());
        if !wait_group_gone(pgid, grace_until).await {
            clear_group(pgid).await;
        }
        if let Some(cgroup) = &self.cgroup {
            // What escaped the group ends with the program.
            cgroup.clear().await;
        }
        drain(child.pumps).await;
        if let Some(holder) = &self.holder {
            holder.forget(self.spec.name.as_str());
        }
        self.logs.iter().for_each(SharedLog::no_longer_expected);
        self.lease.stop_done();
    }

    fn prepare_detach(&mut self, ending: bool) -> Result<(), String> {
        if ending && self.holder.is_some() {
            // Left to the next supervisor: the holder keeps the pipes.
            return Ok(());
        }
        spawn::resolve_executable(std::path::Path::new("cat"), &Default::default())
            .map_err(|e| format!("the output relay needs `cat`: {e}"))?;
        let files = self
            .logs
            .iter()
            .map(SharedLog::append_handle)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("cannot open the log files: {e}"))?;
        self.relay_files = Some(files);
        Ok(())
    }

    /// Lets the process go: its output is handed to relays that outlive zist,
    /// and zist never signals it again. The child is still reaped in the background.
    async fn release(&mut self, child: Child, ending: bool) {
        let Child { process, pumps, .. } = child;
        self.logs.iter().for_each(SharedLog::no_longer_expected);
        if ending && self.holder.is_some() {
            // What the program writes from now on waits in its pipes, which
            // the holder keeps open, for the next supervisor to read.
            for pump in pumps {
                let _ = pump.handoff.send(());
                let _ = pump.task.await;
            }
            process.release();
            return;
        }
        if let Some(holder) = &self.holder {
            holder.forget(self.spec.name.as_str());
        }
        let mut files: Vec<Option<std::fs::File>> = self
            .relay_files
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(Some)
            .collect();
        let mut relays = Vec::new();
        for pump in pumps {
            let (Some(file), Some(log)) = (
                files.get_mut(pump.stream).and_then(Option::take),
                self.logs.get(pump.stream),
            ) else {
                continue;
            };
            let _ = pump.handoff.send(());
            let Ok(PumpEnd::HandedOff(rx)) = pump.task.await else {
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
                let pid = relay.id();
                let _ = relay.wait().await;
                if let Some(pid) = pid {
                    crate::reaper::release(pid as i32);
                }
            }
        });
    }
}

impl Os {
    /// Hands each of `child`'s pipes to the holder.
    fn hold(&self, child: &Child) {
        if let Some(holder) = &self.holder {
            // The pumps keep the descriptors open while `child` exists.
            match &child.pumps[..] {
                [out, err] => holder.hold_pair(self.spec.name.as_str(), out.fd, err.fd),
                pumps => {
                    for pump in pumps {
                        holder.hold(self.spec.name.as_str(), pump.stream, pump.fd);
                    }
                }
            }
        }
    }

    /// Where the actor begins, from what an earlier life of the supervisor left.
    fn resume(&mut self, resume: Resume) -> Begin<Child> {
        let name = &self.spec.name;
        match resume {
            Resume::Fresh { restarts } => Begin::fresh(restarts),
            Resume::Frozen(frozen) => self.thaw(*frozen),
            Resume::Adopt {
                record,
                pipes,
                note,
            } => {
                let mut begin = Begin::fresh(0);
                let (wall, since) = instant_of(record.started_ms);
                begin.history.last_spawn_wall = Some(wall);
                begin.history.last_spawn = Some(since);
                match spawn::adopt(&record, &self.lease) {
                    Ok(process) => {
                        if let Some(cgroup) = self.cgroup.clone() {
                            // Its descendants to come stay inside, and a stop ends
                            // them all. Off the answer's path: moving a running
                            // process waits for an RCU grace period (~10 ms).
                            let pid = record.pid;
                            drop(tokio::task::spawn_blocking(move || {
                                cgroup.join(&crate::adopt::tree(pid));
                            }));
                        }
                        let child = Child {
                            process,
                            pumps: self.pumps(pipes),
                            launcher: None,
                        };
                        self.hold(&child);
                        tracing::info!(program = %name, pid = record.pid, "adopted pid {}{}", record.pid, note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default());
                        begin.stored = true;
                        begin.note = note.map(Into::into);
                        begin.life = Lifecycle::Running { child, since };
                    }
                    Err(e) => {
                        // Left stopped: the supervisor takes the program back.
                        tracing::info!(program = %name, pid = record.pid, "the process to adopt is gone ({e})");
                    }
                }
                begin
            }
            Resume::Detached { restarts, record } => {
                let mut begin = Begin::fresh(restarts);
                if let Some(record) = record {
                    let (wall, since) = instant_of(record.started_ms);
                    begin.history.last_spawn_wall = Some(wall);
                    begin.life = Lifecycle::Detached {
                        pid: record.pid,
                        since,
                    };
                }
                begin
            }
            Resume::Process {
                restarts,
                record,
                pipes,
            } => {
                let mut begin = Begin::fresh(restarts);
                let (wall, since) = instant_of(record.started_ms);
                begin.history.last_spawn_wall = Some(wall);
                begin.history.last_spawn = Some(since);
                match spawn::adopt(&record, &self.lease) {
                    Ok(process) => {
                        let pumps = self.resumed_pumps(pipes);
                        if pumps.is_empty() {
                            tracing::warn!(program = %name, pid = record.pid, "adopted the running process; its output pipes were lost with the holder, so its output is not captured until it is restarted");
                        } else {
                            tracing::info!(program = %name, pid = record.pid, "adopted the running process");
                        }
                        let child = Child {
                            process,
                            pumps,
                            launcher: None,
                        };
                        begin.stored = true;
                        begin.life = if since.elapsed() >= self.spec.start_secs {
                            Lifecycle::Running { child, since }
                        } else {
                            Lifecycle::Starting { child, since }
                        };
                    }
                    Err(e) => {
                        if let Some(holder) = &self.holder {
                            holder.forget(name.as_str());
                        }
                        tracing::info!(program = %name, pid = record.pid, "the process ended while zistd was down ({e})");
                        begin.first = Some(Event::Vanished);
                    }
                }
                begin
            }
        }
    }

    /// Where the actor begins after an upgrade: where the old one was.
    fn thaw(&mut self, mut frozen: Frozen) -> Begin<Child> {
        let mut begin = Begin::fresh(frozen.restarts);
        let history = &mut begin.history;
        history.failures = frozen.failures;
        history.last_exit = frozen.last_exit;
        history.last_exit_wall = frozen.last_exit_ms.map(|ms| instant_of(ms).0);
        if let Some(ms) = frozen.last_spawn_ms {
            let (wall, mono) = instant_of(ms);
            history.last_spawn_wall = Some(wall);
            history.last_spawn = Some(mono);
        }
        let since = frozen
            .since_ms
            .map_or_else(Instant::now, |ms| instant_of(ms).1);
        let pipes = std::mem::take(&mut frozen.owned);
        let adopted = match &frozen.process {
            Some(record)
                if matches!(frozen.state.as_str(), "starting" | "running" | "stopping") =>
            {
                match spawn::adopt(record, &self.lease) {
                    Ok(process) => {
                        begin.stored = true;
                        Some(Child {
                            process,
                            pumps: self.resumed_pumps(pipes),
                            // A launcher caught mid-way by an upgrade is not followed.
                            launcher: None,
                        })
                    }
                    Err(e) => {
                        tracing::info!(program = %self.spec.name, pid = record.pid, "the process ended during the upgrade ({e})");
                        begin.first = Some(Event::Vanished);
                        None
                    }
                }
            }
            _ => None,
        };
        begin.life = match (frozen.state.as_str(), adopted) {
            ("starting", Some(child)) => Lifecycle::Starting { child, since },
            ("running", Some(child)) => Lifecycle::Running { child, since },
            ("stopping", Some(child)) => {
                self.lease.stop_was_sent();
                Lifecycle::Stopping {
                    child,
                    since,
                    kill_at: frozen
                        .kill_in_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms)),
                    then: match frozen.then.as_deref() {
                        Some("start") => AfterStop::Start,
                        Some("end") => AfterStop::End,
                        Some("failed-start") => AfterStop::FailedStart,
                        Some("crash") => AfterStop::Crash,
                        _ => AfterStop::Stay,
                    },
                }
            }
            ("backoff", _) => Lifecycle::Backoff {
                until: Instant::now() + Duration::from_millis(frozen.retry_in_ms.unwrap_or(0)),
                reason: frozen.reason.clone().unwrap_or_default().into(),
            },
            ("waiting", _) => Lifecycle::Waiting {
                on: frozen.reason.clone().unwrap_or_default().into(),
            },
            ("exited", _) => Lifecycle::Exited {
                reason: frozen.reason.clone().unwrap_or_default().into(),
            },
            ("fatal", _) => Lifecycle::Fatal {
                reason: frozen.reason.unwrap_or_default().into(),
            },
            ("detached", _) => match &frozen.process {
                Some(record) => Lifecycle::Detached {
                    pid: record.pid,
                    since,
                },
                None => Lifecycle::Stopped,
            },
            _ => Lifecycle::Stopped,
        };
        begin
    }

    /// Spawns the child and starts the pumps of its output.
    fn spawn_child(&mut self) -> Result<Child, SpawnError> {
        if !self.spec.env_files.is_empty() {
            // EnvFile is read at each start.
            self.prepared = None;
        }
        let prepared = match &self.prepared {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(spawn::Prepared::new(&self.spec, &self.extra_env)?);
                self.prepared = Some(p.clone());
                p
            }
        };
        let cgroup = self.cgroup.as_ref().map(|c| c.procs.as_c_str());
        let listen = self
            .sockets
            .as_deref()
            .map(crate::listen::Sockets::fds)
            .unwrap_or_default();
        let spawned = spawn::spawn(&self.spec, &prepared, &self.lease, cgroup, &listen)?;
        let pumps = self.pumps([Some(spawned.stdout), Some(spawned.stderr)]);
        if pumps.len() < 2 {
            // A pipe could not be watched: never leave a child nobody reads.
            let mut process = spawned.process;
            let _ = killpg(Pid::from_raw(process.pid()), Signal::SIGKILL);
            drop(pumps);
            tokio::spawn(async move { process.wait().await });
            return Err(SpawnError::Setup {
                what: "watch the output pipe",
                source: std::io::Error::last_os_error(),
            });
        }
        let launcher = match &self.spec.pid_file {
            Some(_) => crate::persist::start_ticks(spawned.process.pid()),
            None => None,
        };
        let child = Child {
            process: spawned.process,
            pumps,
            launcher,
        };
        self.hold(&child);
        Ok(child)
    }

    /// The pumps of an adopted process, whose streams continue the log files.
    fn resumed_pumps(&self, pipes: [Option<std::os::fd::OwnedFd>; 2]) -> Vec<Pump> {
        self.logs.iter().for_each(SharedLog::resumed);
        self.pumps(pipes)
    }

    /// Starts a pump on each pipe given, into the stream's log.
    fn pumps(&self, pipes: [Option<std::os::fd::OwnedFd>; 2]) -> Vec<Pump> {
        let mut pumps = Vec::with_capacity(2);
        for (stream, (fd, log)) in pipes.into_iter().zip(&self.logs).enumerate() {
            let Some(fd) = fd else { continue };
            let rx = match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(program = %self.spec.name, "cannot watch an output pipe: {e}");
                    continue;
                }
            };
            let (handoff, handoff_rx) = oneshot::channel();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&rx);
            let task = tokio::spawn(pump(rx, log.clone(), handoff_rx));
            pumps.push(Pump {
                handoff,
                task,
                fd,
                stream,
            });
        }
        pumps
    }
}

/// The daemon a pid file names, when it names a live process that started
/// after the program's own (a stale file from an earlier run names
/// another); `Err(Some(why))` when it names something else, `Err(None)`
/// while it is missing or empty.
fn daemon_named(
    path: &std::path::Path,
    launcher: i32,
    launched: u64,
) -> Result<ProcessRecord, Option<String>> {
    let text = std::fs::read_to_string(path).map_err(|_| None)?;
    let word = text.split_whitespace().next().ok_or(None)?;
    let at = path.display();
    let pid: i32 = word
        .parse()
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| Some(format!("PidFile {at} holds {word:?}, not a pid")))?;
    if pid == launcher {
        return Err(Some(format!("PidFile {at} names the process that exited")));
    }
    let stat = crate::persist::stat_of(pid)
        .filter(|s| s.state != 'Z')
        .ok_or_else(|| {
            Some(format!(
                "PidFile {at} names pid {pid}, which is not running"
            ))
        })?;
    if stat.start_ticks < launched {
        return Err(Some(format!(
            "PidFile {at} names pid {pid}, which started before the program (a stale file?)"
        )));
    }
    Ok(ProcessRecord {
        pid,
        start_ticks: stat.start_ticks,
        exe: crate::persist::exe_of(pid).unwrap_or_default(),
        started_ms: crate::adopt::started_ms(stat.start_ticks),
    })
}

/// What woke an actor.
enum Woke {
    Control(Option<Control>),
    Freeze(oneshot::Sender<Frozen>),
    Exited(ExitKind),
    Due(Timer),
    /// A check's verdict: ready, or unhealthy.
    Checked(Checked),
    /// What a waiting program waits for now (`None`: nothing).
    Deps(Option<Arc<str>>),
}

/// What a check loop ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    Ready,
    /// The Alive check failed `Failures` times in a row.
    Unhealthy,
    /// The watchdog was not fed in time, or the program triggered it.
    Starved,
}

/// A Line check's view of the program's output.
struct Lines {
    logs: [SharedLog; 2],
    /// The subscriptions made before a spawn, so that no line of the new
    /// process is missed; kept while the check's future comes and goes.
    armed: tokio::sync::Mutex<Option<[broadcast::Receiver<bytes::Bytes>; 2]>>,
}

/// A program's Ready and Alive checks, and what their tries need.
struct Checks {
    ready: Option<crate::spec::Check>,
    alive: Option<crate::spec::Check>,
    context: crate::check::Context,
    /// The last try's failure, for the message of a timeout or a restart.
    last: Mutex<Option<String>>,
    /// Alive failures in a row for the current process.
    failed: std::sync::atomic::AtomicU32,
    /// Line: the output to watch.
    lines: Option<Lines>,
    /// Notify: the program's socket.
    notify: Option<crate::notify::NotifySocket>,
    /// The last `STATUS=` the current process sent: its `message` while it runs.
    status: Mutex<Option<Arc<str>>>,
    /// When the watchdog was last fed (or the process became ready).
    fed: Mutex<Instant>,
}

impl Checks {
    fn of(
        spec: &ProgramSpec,
        logs: &[SharedLog; 2],
        state_dir: Option<&std::path::Path>,
    ) -> Option<Arc<Self>> {
        if spec.ready.is_none() && spec.alive.is_none() {
            return None;
        }
        let probe = spec.ready.as_ref().map(|c| &c.probe);
        Some(Arc::new(Self {
            lines: matches!(probe, Some(crate::spec::Probe::Line(_))).then(|| Lines {
                logs: logs.clone(),
                armed: tokio::sync::Mutex::new(None),
            }),
            notify: matches!(probe, Some(crate::spec::Probe::Notify)).then(|| {
                crate::notify::NotifySocket::bind(
                    spec.name.as_str(),
                    state_dir,
                    spec.user.as_deref(),
                )
            }),
            status: Mutex::new(None),
            fed: Mutex::new(Instant::now()),
            ready: spec.ready.clone(),
            alive: spec.alive.clone(),
            context: crate::check::Context {
                env: spec.env.clone(),
                // Where the program runs (a bare Path is looked up on PATH).
                workingdir: Some(spawn::working_dir(
                    spec,
                    &spawn::resolve_executable(&spec.path, &spec.env)
                        .unwrap_or_else(|_| spec.path.clone()),
                )),
            },
            last: Mutex::new(None),
            failed: std::sync::atomic::AtomicU32::new(0),
        }))
    }

    fn last(&self) -> String {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "no try finished".into())
    }

    fn set_last(&self, why: String) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// What the program's environment gains: the notification socket,
    /// and the watchdog's period, as systemd sets them.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(socket) = &self.notify {
            env.push(("NOTIFY_SOCKET", socket.path().display().to_string()));
            if let Some(watchdog) = self.ready.as_ref().and_then(|c| c.watchdog) {
                env.push(("WATCHDOG_USEC", watchdog.as_micros().to_string()));
            }
        }
        env
    }

    /// The last `STATUS=` of the current process.
    fn status(&self) -> Option<Arc<str>> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Before a spawn: watch the output from its first byte, forget what
    /// earlier processes said.
    fn arm(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(lines) = &self.lines
            && let Ok(mut armed) = lines.armed.try_lock()
        {
            *armed = Some(lines.logs.clone().map(|log| log.subscribe()));
        }
        if let Some(socket) = &self.notify {
            socket.drain();
        }
    }

    /// Waits for a line of either stream that matches `pattern`.
    async fn line(
        &self,
        lines: &Lines,
        pattern: &crate::spec::LinePattern,
        snapshot: &RwLock<Snapshot>,
    ) -> Checked {
        use tokio::sync::broadcast::error::RecvError;
        let waiting = format!("no line matched /{}/ yet", pattern.as_str());
        write(snapshot).message = Some(format!("starting: {waiting}").into());
        self.set_last(waiting);
        let mut armed = lines.armed.lock().await;
        let [out, err] = armed.get_or_insert_with(|| lines.logs.clone().map(|log| log.subscribe()));
        let mut open = [true, true];
        loop {
            let (stream, got) = tokio::select! {
                got = out.recv(), if open[0] => (0, got),
                got = err.recv(), if open[1] => (1, got),
                else => std::future::pending().await,
            };
            match got {
                Ok(line) => {
                    let text = String::from_utf8_lossy(&line);
                    if pattern.matches(text.trim_end_matches(['\n', '\r'])) {
                        *armed = None;
                        return Checked::Ready;
                    }
                }
                // Lines were skipped while zistd was busy; read on.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => open[stream] = false,
            }
        }
    }

    /// Keeps a `STATUS=` of the current process, and shows it as its
    /// message (after `prefix`).
    fn said(&self, status: String, snapshot: &RwLock<Snapshot>, prefix: &str) {
        write(snapshot).message = Some(format!("{prefix}{status}").into());
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(status.into());
    }

    /// The watchdog was fed (or the process became ready) now.
    fn fed(&self) {
        *self.fed.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Waits for `READY=1`; `STATUS=` becomes the message meanwhile.
    async fn notified_ready(
        &self,
        socket: &crate::notify::NotifySocket,
        main: Option<i32>,
        snapshot: &RwLock<Snapshot>,
    ) -> Checked {
        if self.status().is_none() {
            write(snapshot).message = Some("starting: waiting for READY=1".into());
        }
        self.set_last("no READY=1 received".into());
        loop {
            match socket.recv(main).await {
                Ok(notice) => {
                    if let Some(status) = notice.status {
                        self.set_last(format!("no READY=1 received (last STATUS: {status})"));
                        self.said(status, snapshot, "starting: ");
                    }
                    if notice.ready {
                        self.fed();
                        return Checked::Ready;
                    }
                }
                Err(why) => {
                    write(snapshot).message = Some(format!("starting: {why}").into());
                    self.set_last(why);
                    return std::future::pending().await;
                }
            }
        }
    }

    /// While running: takes `STATUS=` as the message and feeds the
    /// watchdog; ends when the watchdog starves.
    async fn notified_running(
        &self,
        socket: &crate::notify::NotifySocket,
        main: Option<i32>,
        snapshot: &RwLock<Snapshot>,
    ) -> Checked {
        let watchdog = self.ready.as_ref().and_then(|c| c.watchdog);
        loop {
            let next = socket.recv(main);
            let got = match watchdog {
                Some(period) => {
                    let due = *self.fed.lock().unwrap_or_else(PoisonError::into_inner) + period;
                    match timeout_at(due.into(), next).await {
                        Ok(got) => got,
                        Err(_) => {
                            self.set_last(format!("no WATCHDOG=1 within WatchdogSec ({period:?})"));
                            return Checked::Starved;
                        }
                    }
                }
                None => next.await,
            };
            match got {
                Ok(notice) => {
                    if let Some(status) = notice.status {
                        self.said(status, snapshot, "");
                    }
                    if notice.watchdog {
                        self.fed();
                    }
                    if notice.trigger {
                        self.set_last("the program sent WATCHDOG=trigger".into());
                        return Checked::Starved;
                    }
                }
                // Told while starting; nothing to wait for.
                Err(_) => return std::future::pending().await,
            }
        }
    }

    /// What a running program's checks wait for: the Alive check's
    /// failures, or a starved watchdog.
    async fn running(&self, main: Option<i32>, snapshot: &RwLock<Snapshot>) -> Checked {
        let alive = async {
            match &self.alive {
                Some(alive) => self.alive(alive).await,
                None => std::future::pending().await,
            }
        };
        let notified = async {
            match &self.notify {
                Some(socket) => self.notified_running(socket, main, snapshot).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            checked = alive => checked,
            checked = notified => checked,
        }
    }

    /// Tries the Ready check until it passes: at once, then with pauses of
    /// a tenth of the wait so far, from 10 ms up to Interval (a program
    /// that is ready in a moment is seen so in a moment, and a chain of
    /// them adds little to its waits); each failure becomes its message.
    async fn ready(
        &self,
        check: &crate::spec::Check,
        main: Option<i32>,
        snapshot: &RwLock<Snapshot>,
    ) -> Checked {
        match (&check.probe, &self.lines, &self.notify) {
            (crate::spec::Probe::Line(pattern), Some(lines), _) => {
                return self.line(lines, pattern, snapshot).await;
            }
            (crate::spec::Probe::Notify, _, Some(socket)) => {
                return self.notified_ready(socket, main, snapshot).await;
            }
            _ => {}
        }
        // One try never outlasts the whole wait, nor waits much past Interval.
        let per_try = check
            .timeout
            .min(check.interval.max(Duration::from_secs(1)));
        let began = Instant::now();
        loop {
            match crate::check::try_once(&check.probe, per_try, &self.context).await {
                Ok(()) => return Checked::Ready,
                Err(why) => {
                    write(snapshot).message =
                        Some(format!("starting: {} {why}", check.probe).into());
                    *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                }
            }
            // A tenth of the wait so far: readiness is seen at most 10 %
            // (and 10 ms) after it comes, however long it takes.
            let pause = (began.elapsed() / 10)
                .max(Duration::from_millis(10))
                .min(check.interval);
            tokio::time::sleep(pause).await;
        }
    }

    /// Tries the Alive check every Interval; `Failures` failures in a row end it.
    async fn alive(&self, check: &crate::spec::Check) -> Checked {
        use std::sync::atomic::Ordering::Relaxed;
        loop {
            tokio::time::sleep(check.interval).await;
            match crate::check::try_once(&check.probe, check.timeout, &self.context).await {
                Ok(()) => self.failed.store(0, Relaxed),
                Err(why) => {
                    *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                    if self.failed.fetch_add(1, Relaxed) + 1 >= check.failures {
                        return Checked::Unhealthy;
                    }
                }
            }
        }
    }
}

/// The actor of one program.
struct Actor<H: Host> {
    name: Arc<str>,
    host: H,
    rules: Rules,
    mailbox: Arc<Mailbox>,
    publish: Arc<RwLock<Snapshot>>,
    events: broadcast::Sender<ProcessEvent>,
    life: Lifecycle<H::Child>,
    history: History,
    /// The caller of the control being applied, answered by its step's
    /// [`Effect::Answer`]. While one waits, the mailbox is not read.
    caller: Option<Reply>,
    /// The last spawn's wall-clock time, formatted once.
    started_at: Option<(SystemTime, Arc<str>)>,
    /// The last exit's wall-clock time, formatted once.
    exited_at: Option<(SystemTime, Arc<str>)>,
    /// Where the process and `restarts` are remembered across restarts of
    /// the supervisor, if anywhere.
    store: Option<Arc<Store>>,
    /// What was last written to the store.
    recorded: Recorded,
    /// Handed over to the next executable: the actor ends.
    frozen: bool,
    /// A note on one process (by pid; `None`: until the next process),
    /// shown as `message` while it is current.
    note: Option<(Option<i32>, Arc<str>)>,
    /// Its Ready and Alive checks, when it has any.
    checks: Option<Arc<Checks>>,
    /// The programs it comes after, when it has any.
    deps: Option<Box<Deps>>,
}

/// What an actor last wrote to the store.
#[derive(Default, PartialEq, Eq)]
struct Recorded {
    pid: Option<i32>,
    restarts: u32,
    running: bool,
}

/// What an earlier life of the supervisor left of a program (docs/reference.md §8).
pub(crate) enum Resume {
    /// Nothing: stopped, until told to start.
    Fresh { restarts: u32 },
    /// A process it ran: adopted when it still runs, else restarted by the
    /// policy; with its output pipes when the holder kept them.
    Process {
        restarts: u32,
        record: ProcessRecord,
        pipes: [Option<std::os::fd::OwnedFd>; 2],
    },
    /// Handed over by the previous executable of this process (upgrade):
    /// resumed exactly where it was.
    Frozen(Box<Frozen>),
    /// A process zist did not start (`process.adopt`), with the pipes its
    /// output now goes to when it was captured, and what to say when not.
    Adopt {
        record: ProcessRecord,
        pipes: [Option<std::os::fd::OwnedFd>; 2],
        note: Option<String>,
    },
    /// Detached on request: stays detached, neither adopted nor started.
    Detached {
        restarts: u32,
        record: Option<ProcessRecord>,
    },
}

/// Where an actor begins.
pub(crate) struct Begin<C> {
    life: Lifecycle<C>,
    history: History,
    /// An event to step on before anything else.
    first: Option<Event<C>>,
    /// The store holds this process already (adopted): not written again.
    stored: bool,
    /// What to say of the process it begins with, while that process runs.
    note: Option<Arc<str>>,
}

impl<C> Begin<C> {
    fn fresh(restarts: u32) -> Self {
        Self {
            life: Lifecycle::Stopped,
            history: History {
                restarts,
                ..History::default()
            },
            first: None,
            stored: false,
            note: None,
        }
    }
}

/// A wall-clock time in milliseconds since the Unix epoch, and the monotonic
/// instant that corresponds to it now.
fn instant_of(ms: u64) -> (SystemTime, Instant) {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let ago = SystemTime::now().duration_since(wall).unwrap_or_default();
    let now = Instant::now();
    (wall, now.checked_sub(ago).unwrap_or(now))
}

/// The current time, from tokio's clock (so a test can pause it).
fn now() -> Now {
    Now {
        mono: tokio::time::Instant::now().into_std(),
        wall: SystemTime::now(),
    }
}

impl<H: Host> Actor<H> {
    /// Runs until the program's end. Boxed: an async fn's argument is
    /// stored in its future twice over, and the actor is large.
    /// Steps on `first`, then runs (a program that resumes with an event).
    async fn run_after(mut self: Box<Self>, first: Event<H::Child>) {
        if Box::pin(self.apply(first)).await {
            self.mailbox.close();
            return;
        }
        Box::pin(self.run()).await;
    }

    async fn run(mut self: Box<Self>) {
        loop {
            let Some(event) = self.next_event().await else {
                if self.frozen {
                    break;
                }
                continue;
            };
            // Boxed: an idle actor then holds only what waiting needs.
            if Box::pin(self.apply(event)).await {
                break;
            }
        }
        self.mailbox.close();
    }

    /// Waits for what happens next: a control (unless one is being
    /// applied), the child's exit, or the state's timer.
    async fn next_event(&mut self) -> Option<Event<H::Child>> {
        let timer = self.life.timer(&self.rules);
        let listening = self.caller.is_none();
        let mailbox = &self.mailbox;
        let control = async {
            if listening {
                mailbox.recv().await
            } else {
                std::future::pending().await
            }
        };
        let state = self.life.state();
        let checks = self.checks.clone();
        let snapshot = self.publish.clone();
        let main = self.life.pid();
        let waiting_on = match &self.life {
            Lifecycle::Waiting { on } => Some(on.clone()),
            _ => None,
        };
        let events = &self.events;
        // The rare waits are boxed when there is one: an idle actor's wait
        // then holds a pointer for each, not its largest state.
        let deps = async {
            match (waiting_on, &self.deps) {
                (Some(on), Some(deps)) => {
                    Box::pin(deps.changed(events.subscribe(), Some(on))).await
                }
                _ => std::future::pending().await,
            }
        };
        let exited = async {
            match self.life.child_mut() {
                Some(child) => H::wait(child).await,
                None => std::future::pending().await,
            }
        };
        let due = async {
            match timer {
                Some((at, timer)) => {
                    Box::pin(sleep_until(tokio::time::Instant::from_std(at))).await;
                    timer
                }
                None => std::future::pending().await,
            }
        };
        let checking = async move {
            match (state, checks.as_deref()) {
                (ProcessState::Starting, Some(c)) if let Some(ready) = &c.ready => {
                    Box::pin(c.ready(ready, main, &snapshot)).await
                }
                (ProcessState::Running, Some(c)) => Box::pin(c.running(main, &snapshot)).await,
                _ => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            control = control => match control {
                Some(Control::Freeze(reply)) => Woke::Freeze(reply),
                control => Woke::Control(control),
            },
            exit = exited => Woke::Exited(exit),
            timer = due => Woke::Due(timer),
            checked = checking => Woke::Checked(checked),
            blocker = deps => Woke::Deps(blocker),
        };
        Some(match woke {
            Woke::Control(Some(Control::Deps(deps))) => {
                self.deps = Some(deps);
                return None;
            }
            Woke::Control(Some(control)) => match control.into_event() {
                Some((event, reply)) => {
                    self.caller = Some(reply);
                    match (event, self.deps.as_ref().and_then(|d| d.blocker())) {
                        (Event::Start, Some(on)) => Event::Wait(on),
                        (event, _) => event,
                    }
                }
                None => {
                    if let Some(child) = self.life.child_mut() {
                        self.host.rehold(child);
                    }
                    return None;
                }
            },
            Woke::Freeze(reply) => {
                // Boxed: rare, and it would size every idle actor's wait.
                let frozen = Box::pin(self.freeze()).await;
                let _ = reply.send(frozen);
                self.frozen = true;
                return None;
            }
            // Every handle is gone: stop and end.
            Woke::Control(None) => Event::Shutdown(ShutdownMode::Stop),
            Woke::Exited(exit) => {
                if exit == ExitKind::Code(0) && !self.host.stop_sent() {
                    // Boxed: rare, and it would size every idle actor's wait.
                    if Box::pin(self.follow()).await {
                        return None;
                    }
                }
                Event::Exited {
                    exit,
                    stop_sent: self.host.stop_sent(),
                }
            }
            Woke::Due(Timer::ReadyTimeout) => {
                if let Some(checks) = &self.checks
                    && let Some(ready) = &checks.ready
                {
                    let why = format!(
                        "ready check {} did not pass within {:?}: {}",
                        ready.probe,
                        ready.timeout,
                        checks.last()
                    );
                    self.note = Some((self.life.pid(), why.into()));
                }
                Event::ReadyTimeout
            }
            Woke::Due(timer) => timer.event(),
            Woke::Checked(Checked::Ready) => Event::Ready,
            Woke::Checked(Checked::Unhealthy) => {
                if let Some(checks) = &self.checks
                    && let Some(alive) = &checks.alive
                {
                    checks.failed.store(0, std::sync::atomic::Ordering::Relaxed);
                    let why = format!(
                        "alive check {} failed {} times in a row: {}; restarting",
                        alive.probe,
                        alive.failures,
                        checks.last()
                    );
                    self.note = Some((self.life.pid(), why.into()));
                }
                Event::Unhealthy
            }
            Woke::Deps(None) => Event::DepsMet,
            Woke::Deps(Some(on)) => Event::Wait(on),
            Woke::Checked(Checked::Starved) => {
                if let Some(checks) = &self.checks {
                    let why = format!("watchdog: {}; restarting", checks.last());
                    self.note = Some((self.life.pid(), why.into()));
                }
                Event::Unhealthy
            }
        })
    }

    /// A program that daemonizes (PidFile): its first process has exited
    /// 0, and the daemon the file names takes its place. True when it did;
    /// false leaves the exit to the lifecycle (a failed start, with why).
    async fn follow(&mut self) -> bool {
        let spawned = self.history.last_spawn;
        let start_secs = self.rules.restart.start_secs;
        let state = self.life.state();
        let Some(child) = self.life.child_mut() else {
            return false;
        };
        let until = spawned
            .map_or_else(Instant::now, |at| at + start_secs)
            .max(Instant::now() + Duration::from_secs(1));
        match self.host.follow(child, until).await {
            None => false,
            Some(Ok(_)) => {
                self.publish(state, None, false);
                true
            }
            Some(Err(why)) => {
                tracing::warn!(program = %self.name, "{why}");
                self.note = Some((None, why.into()));
                false
            }
        }
    }

    /// Steps on `event` and on the events its effects bring; true when the actor ends.
    async fn apply(&mut self, event: Event<H::Child>) -> bool {
        // A control's caller waits: what follows was asked for.
        let asked = self.caller.is_some();
        let mut queue = VecDeque::from([event]);
        let mut end = false;
        while let Some(event) = queue.pop_front() {
            let before = self.life.state();
            let before_pid = self.life.pid();
            let life = std::mem::replace(&mut self.life, Lifecycle::Stopped);
            let (life, effects) = step(life, &mut self.history, event, &self.rules, now());
            self.life = life;
            let mut answers = Vec::new();
            for effect in effects {
                match effect {
                    Effect::Spawn { fresh } => queue.push_back(match self.spawn(fresh) {
                        Ok(child) => Event::Spawned(child),
                        Err(error) => Event::SpawnFailed(Arc::new(error)),
                    }),
                    Effect::SignalStop => self.host.signal_stop(),
                    Effect::Kill => {
                        if let Some(pid) = self.life.pid() {
                            self.host.kill(pid);
                        }
                    }
                    Effect::Signal(sig) => answers.push(match self.host.signal(sig) {
                        Some(Ok(())) => Ok(()),
                        Some(Err(source)) => Err(Error::Signal {
                            name: self.name.to_string(),
                            signal: sig,
                            source,
                        }),
                        None => self.answer(Outcome::NotRunning(self.life.state())),
                    }),
                    // Boxed, as the release below: rare, and large futures
                    // that would otherwise size every idle actor.
                    Effect::Reap { child, grace_until } => {
                        Box::pin(self.host.reap(child, grace_until)).await;
                    }
                    Effect::PrepareDetach { ending } => {
                        queue.push_back(match self.host.prepare_detach(ending) {
                            Ok(()) => Event::DetachReady { ending },
                            Err(reason) => Event::DetachRefused { reason, ending },
                        });
                    }
                    Effect::Release { child, ending } => {
                        Box::pin(self.host.release(child, ending)).await;
                    }
                    Effect::Answer(outcome) => answers.push(self.answer(outcome)),
                    Effect::End => end = true,
                }
            }
            self.publish(before, before_pid, asked);
            for answer in answers {
                if let Some(caller) = self.caller.take() {
                    let _ = caller.send(answer);
                }
            }
        }
        end
    }

    /// Spawns the program, its checks armed first.
    fn spawn(&mut self, fresh: bool) -> Result<H::Child, SpawnError> {
        if let Some(checks) = &self.checks {
            checks.arm();
        }
        self.host.spawn(fresh)
    }

    /// Describes the program for the next executable and lets its process
    /// go untouched (upgrade in place).
    async fn freeze(&mut self) -> Frozen {
        let life = std::mem::replace(&mut self.life, Lifecycle::Stopped);
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let wall_ms = |at: Instant| epoch_ms(now_wall - now.saturating_duration_since(at));
        let record = |pid: i32| {
            Some(ProcessRecord {
                pid,
                start_ticks: crate::persist::start_ticks(pid)?,
                exe: crate::persist::exe_of(pid).unwrap_or_default(),
                started_ms: self.history.last_spawn_wall.map_or(0, epoch_ms),
            })
        };
        let mut frozen = Frozen {
            name: self.name.to_string(),
            state: life.state().as_str().to_owned(),
            process: None,
            since_ms: life.since().map(wall_ms),
            retry_in_ms: None,
            kill_in_ms: None,
            then: None,
            reason: life.why().map(|r| r.to_string()),
            restarts: self.history.restarts,
            failures: self.history.failures,
            last_exit: self.history.last_exit,
            last_exit_ms: self.history.last_exit_wall.map(epoch_ms),
            last_spawn_ms: self.history.last_spawn_wall.map(epoch_ms),
            fds: [None, None],
            owned: [None, None],
        };
        match life {
            Lifecycle::Starting { child, .. } | Lifecycle::Running { child, .. } => {
                frozen.process = record(child.pid());
                frozen.owned = self.host.freeze(child).await;
            }
            Lifecycle::Stopping {
                child,
                kill_at,
                then,
                ..
            } => {
                frozen.process = record(child.pid());
                frozen.kill_in_ms =
                    kill_at.map(|at| at.saturating_duration_since(now).as_millis() as u64);
                frozen.then = Some(
                    match then {
                        AfterStop::Stay => "stay",
                        AfterStop::Start => "start",
                        AfterStop::End => "end",
                        AfterStop::FailedStart => "failed-start",
                        AfterStop::Crash => "crash",
                    }
                    .to_owned(),
                );
                frozen.owned = self.host.freeze(child).await;
            }
            Lifecycle::Backoff { until, .. } => {
                frozen.retry_in_ms = Some(until.saturating_duration_since(now).as_millis() as u64);
            }
            Lifecycle::Detached { pid, .. } => frozen.process = record(pid),
            _ => {}
        }
        frozen
    }

    /// Writes the live process and `restarts` to the store when they
    /// changed; the executable is read again once the process counts as
    /// running (a wrapper script has exec'd its program by then).
    fn record(&mut self, state: ProcessState) {
        let Some(store) = &self.store else { return };
        let now = Recorded {
            pid: self.life.pid(),
            restarts: self.history.restarts,
            running: state == ProcessState::Running,
        };
        if now == self.recorded {
            return;
        }
        let restarts = now.restarts;
        if now.pid != self.recorded.pid {
            // The start time now, while the child is unreaped; the executable
            // is read by the store's writer, off this path.
            let process = now.pid.and_then(|pid| {
                Some(ProcessRecord {
                    pid,
                    start_ticks: crate::persist::start_ticks(pid)?,
                    exe: String::new(),
                    started_ms: self.history.last_spawn_wall.map_or(0, epoch_ms),
                })
            });
            store.update(&self.name, |r| {
                r.restarts = restarts;
                r.process = process;
            });
        } else {
            let refresh = now.running && !self.recorded.running;
            store.update(&self.name, |r| {
                r.restarts = restarts;
                if refresh && let Some(process) = &mut r.process {
                    // Up for StartSecs: a wrapper has exec'd its program by now.
                    process.exe.clear();
                }
            });
        }
        self.recorded = now;
    }

    /// The caller's answer for `outcome`.
    fn answer(&self, outcome: Outcome) -> Result<()> {
        let name = || self.name.to_string();
        Err(match outcome {
            Outcome::Done => return Ok(()),
            Outcome::AlreadyRunning(state) => Error::AlreadyRunning {
                name: name(),
                state,
            },
            Outcome::NotRunning(state) => Error::NotRunning {
                name: name(),
                state,
            },
            Outcome::SpawnFailed(source) => Error::Spawn {
                name: name(),
                source,
            },
            Outcome::DetachFailed(reason) => Error::Detach {
                name: name(),
                reason,
            },
        })
    }

    /// Derives the snapshot from the lifecycle and history, and announces
    /// a change of state.
    /// A change nobody asked for (`asked` false) is a line in the daemon
    /// log, as supervisord writes `exited: app (exit status 1; not expected)`.
    fn publish(&mut self, before: ProcessState, before_pid: Option<i32>, asked: bool) {
        let state = self.life.state();
        if let Some(wall) = self.history.last_spawn_wall
            && self.started_at.as_ref().is_none_or(|(at, _)| *at != wall)
        {
            self.started_at = Some((wall, rfc3339(wall).into()));
        }
        if let Some(wall) = self.history.last_exit_wall
            && self.exited_at.as_ref().is_none_or(|(at, _)| *at != wall)
        {
            self.exited_at = Some((wall, rfc3339_millis(wall).into()));
        }
        let pid = self.life.pid();
        if self.note.as_ref().is_some_and(|(of, _)| {
            // A note stays through the stop and the backoff that follow it,
            // until another process runs.
            pid.is_some() && pid != *of
        }) {
            self.note = None;
        }
        let error = self.life.reason().cloned();
        let message = self
            .note
            .as_ref()
            .map(|(_, note)| note.clone())
            .or_else(|| self.life.why().cloned())
            .or_else(|| {
                // What the program said of itself (Notify's STATUS=).
                matches!(state, ProcessState::Starting | ProcessState::Running)
                    .then(|| self.checks.as_ref()?.status())
                    .flatten()
            });
        *write(&self.publish) = Snapshot {
            state,
            pid,
            started_at: self.started_at.as_ref().map(|(_, s)| s.clone()),
            since: self.life.since(),
            restarts: self.history.restarts,
            exit: self.history.last_exit,
            exited_at: self.exited_at.as_ref().map(|(_, s)| s.clone()),
            error,
            message: message.clone(),
        };
        self.record(state);
        if before != state {
            if !asked {
                self.log_change(state, pid.or(before_pid), message.as_deref());
            }
            let _ = self.events.send(ProcessEvent {
                name: self.name.to_string(),
                from: before,
                to: state,
                pid,
                at: rfc3339_millis(SystemTime::now()),
                reason: message.as_deref().map(str::to_owned),
            });
        }
    }

    /// The daemon log's line for a change of state nobody asked for.
    fn log_change(&self, state: ProcessState, pid: Option<i32>, why: Option<&str>) {
        let name = &self.name;
        let pid = pid.map_or_else(|| "no process".to_owned(), |p| format!("pid {p}"));
        match (state, why) {
            (ProcessState::Stopped, _) => {}
            (ProcessState::Backoff | ProcessState::Exited | ProcessState::Fatal, why) => {
                tracing::warn!(
                    "{state}: {name} ({pid}; {})",
                    why.unwrap_or("no reason known")
                );
            }
            // A check stopping it: said with why.
            (ProcessState::Stopping, Some(why)) => {
                tracing::warn!("{state}: {name} ({pid}; {why})");
            }
            // Starting and running again after a restart are the quiet
            // consequences of the lines above (a thousand at a start).
            _ => {}
        }
    }
}

/// Whether any process is left in the group.
fn group_exists(pgid: Pid) -> bool {
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Polls until the group is empty or `deadline` passes; true when it is empty.
async fn wait_group_gone(pgid: Pid, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if crate::reaper::running() {
            // Members that are zombies of zistd count until reaped.
            crate::reaper::reap_orphans();
        }
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

#[cfg(test)]
mod tests {
    //! The actor on fake children, with tokio's clock paused: what the
    //! actor itself decides (timers, waiting callers, answers), in
    //! microseconds. What only a real process shows is in tests/.

    use std::collections::HashMap;

    use tokio::sync::watch;
    use tokio::time::Instant as TokioInstant;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::BroadcastStream;

    use super::*;
    use crate::spec::ProgramName;

    /// A fake child: it ends when the test, or a signal it obeys, says so.
    struct FakeChild {
        pid: i32,
        exit: watch::Receiver<Option<ExitKind>>,
    }

    impl HasPid for FakeChild {
        fn pid(&self) -> i32 {
            self.pid
        }
    }

    /// What the fake children do, and what the actor did to them.
    #[derive(Default)]
    struct World {
        did: Vec<String>,
        exits: HashMap<i32, watch::Sender<Option<ExitKind>>>,
        spawned: i32,
        live: Option<i32>,
        /// Every child exits at once with this.
        exit_at_once: Option<ExitKind>,
        /// Children end on the stop signal (else only on SIGKILL).
        obey_stop: bool,
        detach_refused: Option<String>,
    }

    impl World {
        fn end(&mut self, pid: i32, exit: ExitKind) {
            if let Some(tx) = self.exits.get(&pid) {
                let _ = tx.send(Some(exit));
            }
        }
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<World>>);

    impl Fake {
        fn world(&self) -> std::sync::MutexGuard<'_, World> {
            self.0.lock().unwrap()
        }
        fn did(&self) -> Vec<String> {
            self.world().did.clone()
        }
    }

    impl Host for Fake {
        type Child = FakeChild;

        fn spawn(&mut self, fresh: bool) -> Result<FakeChild, SpawnError> {
            let mut w = self.world();
            w.spawned += 1;
            let pid = 100 + w.spawned;
            w.did
                .push(format!("spawn {pid}{}", if fresh { " fresh" } else { "" }));
            let (tx, exit) = watch::channel(w.exit_at_once);
            w.exits.insert(pid, tx);
            w.live = Some(pid);
            Ok(FakeChild { pid, exit })
        }

        async fn wait(child: &mut FakeChild) -> ExitKind {
            loop {
                if let Some(exit) = *child.exit.borrow_and_update() {
                    return exit;
                }
                if child.exit.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }

        fn stop_sent(&self) -> bool {
            false
        }

        fn signal_stop(&self) {
            let mut w = self.world();
            w.did.push("stop signal".into());
            if let (true, Some(pid)) = (w.obey_stop, w.live) {
                w.end(pid, ExitKind::Signal(15));
            }
        }

        fn kill(&self, pid: i32) {
            let mut w = self.world();
            w.did.push(format!("kill {pid}"));
            w.end(pid, ExitKind::Signal(9));
        }

        fn signal(&self, signal: Signal) -> Option<nix::Result<()>> {
            let mut w = self.world();
            w.did.push(format!("signal {signal}"));
            w.live.map(|_| Ok(()))
        }

        async fn reap(&mut self, child: FakeChild, _grace_until: Instant) {
            let mut w = self.world();
            w.did.push(format!("reap {}", child.pid));
            w.live = None;
        }

        fn prepare_detach(&mut self, _ending: bool) -> Result<(), String> {
            match self.world().detach_refused.clone() {
                Some(reason) => Err(reason),
                None => Ok(()),
            }
        }

        fn rehold(&self, _child: &FakeChild) {}

        async fn follow(
            &mut self,
            _child: &mut FakeChild,
            _until: Instant,
        ) -> Option<Result<i32, String>> {
            None
        }

        async fn freeze(&mut self, _child: FakeChild) -> [Option<OwnedFd>; 2] {
            [None, None]
        }

        async fn release(&mut self, child: FakeChild, _ending: bool) {
            let mut w = self.world();
            w.did.push(format!("release {}", child.pid));
            w.live = None;
        }
    }

    /// A program on fake children: StartSecs 1 s, RestartDelay 100 ms,
    /// MaxRestarts 2, StopTimeout 10 s.
    fn program(fake: &Fake) -> (Program, broadcast::Receiver<ProcessEvent>) {
        let mut spec = ProgramSpec::new(ProgramName::new("fake").unwrap(), "/nonexistent/fake");
        spec.start_secs = Duration::from_secs(1);
        spec.restart_delay = Duration::from_millis(100);
        spec.max_restarts = 2;
        spec.stop_timeout = Duration::from_secs(10);
        let log = || SharedLog::new(RotatingFile::new("/nonexistent/log".into(), 0, 0));
        let (events, rx) = broadcast::channel(64);
        let program = Program::with_host(
            Arc::new(spec),
            fake.clone(),
            Arc::new(spawn::Lease::default()),
            [log(), log()],
            events,
            None,
            Begin::fresh(0),
            None,
        );
        (program, rx)
    }

    /// The state changes from now on, each with the paused clock's time since `t0`.
    fn changes(
        rx: broadcast::Receiver<ProcessEvent>,
        t0: TokioInstant,
    ) -> impl tokio_stream::Stream<Item = (ProcessState, Duration)> + Unpin {
        BroadcastStream::new(rx).map(move |e| (e.unwrap().to, t0.elapsed()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_turns_running_after_start_secs_and_a_second_start_is_refused() {
        let fake = Fake::default();
        let (program, rx) = program(&fake);
        let t0 = TokioInstant::now();
        let mut changes = changes(rx, t0);
        let info = program.ask(Control::Start).await.unwrap();
        assert_eq!((info.state, info.pid), (ProcessState::Starting, Some(101)));
        let again = program.ask(Control::Start).await.unwrap_err();
        assert!(matches!(
            again,
            Error::AlreadyRunning {
                state: ProcessState::Starting,
                ..
            }
        ));
        assert_eq!(changes.next().await.unwrap().0, ProcessState::Starting);
        assert_eq!(
            changes.next().await.unwrap(),
            (ProcessState::Running, Duration::from_secs(1))
        );
        assert_eq!(fake.did(), ["spawn 101 fresh"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_starts_back_off_doubling_then_turn_fatal() {
        let fake = Fake::default();
        fake.world().exit_at_once = Some(ExitKind::Code(1));
        let (program, rx) = program(&fake);
        let t0 = TokioInstant::now();
        let changes = changes(rx, t0);
        program.ask(Control::Start).await.unwrap();
        let seen: Vec<_> = changes.take(6).collect().await;
        let ms = Duration::from_millis;
        use ProcessState::{Backoff, Fatal, Starting};
        assert_eq!(
            seen,
            [
                (Starting, ms(0)),
                (Backoff, ms(0)),
                (Starting, ms(100)),
                (Backoff, ms(100)),
                (Starting, ms(300)),
                (Fatal, ms(300)),
            ]
        );
        let info = program.info();
        assert_eq!((info.restarts, info.exit_code), (2, Some(1)));
        assert!(info.error.unwrap().contains("3 times in a row"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_that_is_ignored_kills_after_stop_timeout_and_answers_once_reaped() {
        let fake = Fake::default();
        let (program, _rx) = program(&fake);
        program.ask(Control::Start).await.unwrap();
        let t0 = TokioInstant::now();
        let info = program.ask(Control::Stop).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(
            (info.state, info.pid, info.exit_signal.as_deref()),
            (ProcessState::Stopped, None, Some("KILL"))
        );
        assert_eq!(
            fake.did(),
            ["spawn 101 fresh", "stop signal", "kill 101", "reap 101"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn controls_sent_during_a_stop_wait_for_it() {
        let fake = Fake::default();
        let (program, _rx) = program(&fake);
        let program = Arc::new(program);
        program.ask(Control::Start).await.unwrap();
        let stopping = tokio::spawn({
            let program = program.clone();
            async move { program.ask(Control::Stop).await }
        });
        tokio::task::yield_now().await;
        // Sent while the stop waits out StopTimeout; applied after it.
        let started = program.ask(Control::Start).await.unwrap();
        assert_eq!(
            (started.state, started.pid),
            (ProcessState::Starting, Some(102))
        );
        assert_eq!(
            stopping.await.unwrap().unwrap().state,
            ProcessState::Starting
        );
        assert_eq!(
            fake.did(),
            [
                "spawn 101 fresh",
                "stop signal",
                "kill 101",
                "reap 101",
                "spawn 102 fresh"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_detach_leaves_the_program_supervised() {
        let fake = Fake::default();
        fake.world().detach_refused = Some("no relay".into());
        fake.world().obey_stop = true;
        let (program, _rx) = program(&fake);
        program.ask(Control::Start).await.unwrap();
        let err = program.ask(Control::Detach).await.unwrap_err();
        assert!(
            matches!(&err, Error::Detach { reason, .. } if reason == "no relay"),
            "{err}"
        );
        assert_eq!(program.info().state, ProcessState::Starting);
        // A detaching shutdown that cannot detach stops instead.
        program.shut_down(ShutdownMode::Detach).await;
        assert_eq!(fake.did(), ["spawn 101 fresh", "stop signal", "reap 101"]);
        assert_eq!(program.info().state, ProcessState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detach_releases_the_child_and_signals_are_refused_after() {
        let fake = Fake::default();
        let (program, _rx) = program(&fake);
        program.ask(Control::Start).await.unwrap();
        program
            .ask(|r| Control::Signal(Signal::SIGHUP, r))
            .await
            .unwrap();
        let info = program.ask(Control::Detach).await.unwrap();
        assert_eq!((info.state, info.pid), (ProcessState::Detached, Some(101)));
        let err = program
            .ask(|r| Control::Signal(Signal::SIGHUP, r))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::NotRunning {
                state: ProcessState::Detached,
                ..
            }
        ));
        assert_eq!(
            fake.did(),
            ["spawn 101 fresh", "signal SIGHUP", "release 101"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_handle_stops_the_program() {
        let fake = Fake::default();
        fake.world().obey_stop = true;
        let (program, mut rx) = program(&fake);
        program.ask(Control::Start).await.unwrap();
        drop(program);
        loop {
            if rx.recv().await.unwrap().to == ProcessState::Stopped {
                break;
            }
        }
        assert_eq!(fake.did(), ["spawn 101 fresh", "stop signal", "reap 101"]);
    }
}
