//! The [`Supervisor`] handle: the registry of programs and every operation on them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use futures_core::Stream;
use nix::sys::signal::Signal;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::logs::{LogHealth, SharedLog};
use crate::program::{Control, Program};
use crate::spec::{LogStream, ProgramSpec};
use crate::stats::Sampler;
use crate::wire::{
    DaemonStatus, Feed, ProcessEvent, ProcessInfo, ProcessStats, ReloadReport, ShutdownMode,
};

/// An action on one program, as frontends name it (`"start"`, `"stop"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessAction {
    /// [`Supervisor::start`].
    Start,
    /// [`Supervisor::stop`].
    Stop,
    /// [`Supervisor::restart`].
    Restart,
    /// [`Supervisor::detach`].
    Detach,
}

impl std::str::FromStr for ProcessAction {
    type Err = crate::spec::ValueError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "start" => Ok(Self::Start),
            "stop" => Ok(Self::Stop),
            "restart" => Ok(Self::Restart),
            "detach" => Ok(Self::Detach),
            other => Err(crate::spec::ValueError::Action(other.to_owned())),
        }
    }
}

/// State changes buffered for each events subscriber before it sees a gap.
pub const EVENT_BUFFER: usize = 1024;

/// Settings of a [`Supervisor`] that are not per program.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// Folder for log files of programs whose spec names none.
    pub log_dir: PathBuf,
    /// The daemon file that [`Supervisor::reload_config`] reads again.
    pub config_file: Option<PathBuf>,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("logs"),
            config_file: None,
        }
    }
}

/// A handle on a set of supervised programs. Cheap to clone and share across tasks.
///
/// Every method works on the programs' actors and returns once the change
/// is applied, so the [`ProcessInfo`] it returns already shows the new
/// state. When the last handle is dropped, each actor stops its program; call
/// [`Supervisor::shutdown`] for a defined end.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    programs: RwLock<BTreeMap<String, Arc<Program>>>,
    events: broadcast::Sender<ProcessEvent>,
    sampler: Arc<Sampler>,
    log_dir: PathBuf,
    config_file: Option<PathBuf>,
    closing: AtomicBool,
    started: Instant,
    reloading: tokio::sync::Mutex<()>,
}

impl Supervisor {
    /// A supervisor with no programs. Raises the open-file soft limit of this
    /// process to its hard limit (children get the original one back).
    pub fn new(options: SupervisorOptions) -> Self {
        crate::spawn::raise_fd_limit();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Inner {
                programs: RwLock::new(BTreeMap::new()),
                events,
                sampler: Arc::new(Sampler::new()),
                log_dir: options.log_dir,
                config_file: options.config_file,
                closing: AtomicBool::new(false),
                started: Instant::now(),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A supervisor running a loaded config: every program registered, the
    /// autostart ones started (all at once). A program that cannot be spawned
    /// is `fatal` with the reason, as the config rules say; it is not an error here.
    pub async fn from_config(config: &Config) -> Self {
        let supervisor = Self::new(SupervisorOptions {
            log_dir: config.daemon.log_dir.clone(),
            config_file: Some(config.daemon.file.clone()),
        });
        let mut starting = Vec::new();
        for spec in &config.programs {
            let autostart = spec.autostart;
            if let Ok(program) = supervisor.add(spec.clone())
                && autostart
            {
                starting.push(program);
            }
        }
        send_all(&starting, Control::Start).await;
        supervisor
    }

    /// The folder for log files of programs whose spec names none.
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.inner.log_dir.clone()
    }

    /// How long this supervisor has existed.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Version, pid, uptime and number of programs (`daemon.status`).
    pub fn status(&self) -> DaemonStatus {
        DaemonStatus {
            version: crate::VERSION.to_owned(),
            pid: std::process::id(),
            uptime_secs: crate::wire::secs(self.uptime()),
            programs: self.len(),
        }
    }

    /// What the network APIs may show: the same programs, with the stats
    /// and logs of those whose spec says `Web = false` withheld.
    pub fn exposed(&self) -> Exposed {
        Exposed(self.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Program>>> {
        self.inner
            .programs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Program>>> {
        self.inner
            .programs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, name: &str) -> Result<Arc<Program>> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchProcess {
                name: name.to_owned(),
            })
    }

    fn add(&self, spec: ProgramSpec) -> Result<Arc<Program>> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let mut programs = self.write();
        let name = spec.name.to_string();
        if programs.contains_key(&name) {
            return Err(Error::AlreadyExists { name });
        }
        let program = Arc::new(Program::launch(
            spec,
            &self.inner.log_dir,
            self.inner.events.clone(),
        ));
        programs.insert(name, program.clone());
        Ok(program)
    }

    /// Adds a program, and starts it if its spec says Autostart.
    ///
    /// A spawn failure leaves the program registered and `fatal`, and is returned.
    pub async fn register(&self, spec: ProgramSpec) -> Result<ProcessInfo> {
        let autostart = spec.autostart;
        let program = self.add(spec)?;
        if autostart {
            program.ask(Control::Start).await
        } else {
            Ok(program.info())
        }
    }

    /// Adds a program from a JSON object with the keys of a program file
    /// (`process.add`), checked by the rules of a program file; errors name
    /// the key. Starts it if its spec says Autostart.
    pub async fn register_json(&self, spec: &serde_json::Value) -> Result<ProcessInfo> {
        let (spec, warnings) =
            crate::config::program_from_json("process.add", spec, &self.inner.log_dir)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        self.register(spec).await
    }

    /// Stops a program and forgets it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let program = self.get(name)?;
        program.shut_down(ShutdownMode::Stop).await;
        self.write().remove(name);
        Ok(())
    }

    /// Starts a program; returns once it is spawned (`starting`).
    pub async fn start(&self, name: &str) -> Result<ProcessInfo> {
        self.get(name)?.ask(Control::Start).await
    }

    /// Stops a program; returns once its whole process group is gone.
    pub async fn stop(&self, name: &str) -> Result<ProcessInfo> {
        self.get(name)?.ask(Control::Stop).await
    }

    /// Stops a program if it runs, then starts it; returns once the new process is spawned.
    pub async fn restart(&self, name: &str) -> Result<ProcessInfo> {
        self.get(name)?.ask(Control::Restart).await
    }

    /// Lets a running program go: it keeps running, and writing to its log
    /// files, after zist lets go of it and after zist exits.
    pub async fn detach(&self, name: &str) -> Result<ProcessInfo> {
        self.get(name)?.ask(Control::Detach).await
    }

    /// Sends a signal to a program's main process.
    pub async fn signal(&self, name: &str, signal: Signal) -> Result<ProcessInfo> {
        self.get(name)?
            .ask(|reply| Control::Signal(signal, reply))
            .await
    }

    /// One program's info.
    pub fn info(&self, name: &str) -> Result<ProcessInfo> {
        Ok(self.get(name)?.info())
    }

    /// A program by name, or by the pid of its current process (the seed's
    /// routes name programs either way).
    pub fn find(&self, key: &str) -> Result<ProcessInfo> {
        match self.info(key) {
            Err(Error::NoSuchProcess { .. }) => {
                let pid: Option<i32> = key.parse().ok();
                let by_pid = pid.and_then(|pid| {
                    let programs = self.read();
                    let found = programs.values().find(|p| p.snapshot().pid == Some(pid));
                    found.map(|p| p.info())
                });
                by_pid.ok_or_else(|| Error::NoSuchProcess {
                    name: key.to_owned(),
                })
            }
            found => found,
        }
    }

    /// How many programs there are (without building their infos).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there is no program.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every program's info, by name.
    pub fn list(&self) -> Vec<ProcessInfo> {
        self.read().values().map(|p| p.info()).collect()
    }

    /// The spec a program runs with.
    pub fn spec(&self, name: &str) -> Result<ProgramSpec> {
        Ok(self.get(name)?.spec.as_ref().clone())
    }

    /// Sends a control to every program first, then waits for every answer,
    /// so all of them act at once.
    async fn all(&self, make: fn(crate::program::Reply) -> Control) -> Vec<ProcessInfo> {
        let programs: Vec<_> = self.read().values().cloned().collect();
        send_all(&programs, make).await;
        self.list()
    }

    /// Applies `action` to program `name`; answers like the matching method.
    pub async fn apply(&self, name: &str, action: ProcessAction) -> Result<ProcessInfo> {
        match action {
            ProcessAction::Start => self.start(name).await,
            ProcessAction::Stop => self.stop(name).await,
            ProcessAction::Restart => self.restart(name).await,
            ProcessAction::Detach => self.detach(name).await,
        }
    }

    /// Starts every program that is not running; returns when each has been spawned.
    pub async fn start_all(&self) -> Vec<ProcessInfo> {
        self.all(Control::Start).await
    }

    /// Stops every program; returns when every process group is gone.
    pub async fn stop_all(&self) -> Vec<ProcessInfo> {
        self.signal_stop_to_all();
        self.all(Control::Stop).await
    }

    /// Sends every live program's stop signal in one loop, before any actor
    /// runs (safe under each program's lease: a leased pid is unreaped), so a
    /// large fleet starts dying together; the actors then wait for their groups.
    fn signal_stop_to_all(&self) {
        for program in self.read().values() {
            program.lease.stop(program.spec.stop_signal);
        }
    }

    /// Restarts every program; returns when each new process is spawned.
    pub async fn restart_all(&self) -> Vec<ProcessInfo> {
        self.all(Control::Restart).await
    }

    /// CPU and memory of a program's process tree; zeros when no process runs.
    pub async fn stats(&self, name: &str) -> Result<ProcessStats> {
        let snap = self.get(name)?.snapshot();
        let pid = match snap.pid {
            Some(pid) if snap.state.is_live() => pid,
            _ => return Ok(ProcessStats::default()),
        };
        let sampler = self.inner.sampler.clone();
        tokio::task::spawn_blocking(move || sampler.measure(pid))
            .await
            .map_err(|e| Error::Sampler(e.to_string()))
    }

    /// Every program's info with the CPU and memory of its process tree
    /// (one scan of the process table for all); zeros for programs with no
    /// process.
    pub async fn stats_all(&self) -> Vec<(ProcessInfo, ProcessStats)> {
        self.stats_where(|_| true)
            .await
            .into_iter()
            .map(|(info, stats)| (info, stats.unwrap_or_default()))
            .collect()
    }

    /// Every program's info, with the stats of those `measure` picks (one
    /// scan of the process table for all of them).
    async fn stats_where(
        &self,
        measure: impl Fn(&ProcessInfo) -> bool,
    ) -> Vec<(ProcessInfo, Option<ProcessStats>)> {
        let list = self.list();
        let live = |info: &ProcessInfo| info.pid.filter(|_| info.state.is_live());
        let pids: Vec<i32> = list
            .iter()
            .filter(|info| measure(info))
            .filter_map(live)
            .collect();
        let sampler = self.inner.sampler.clone();
        let measured = tokio::task::spawn_blocking(move || sampler.measure_many(&pids))
            .await
            .unwrap_or_default();
        let mut measured = measured.into_iter();
        list.into_iter()
            .map(|info| {
                let stats = match live(&info) {
                    _ if !measure(&info) => None,
                    Some(_) => Some(measured.next().unwrap_or_default()),
                    None => Some(ProcessStats::default()),
                };
                (info, stats)
            })
            .collect()
    }

    fn log(&self, name: &str, stream: LogStream) -> Result<SharedLog> {
        let program = self.get(name)?;
        Ok(match stream {
            LogStream::Stdout => program.stdout.clone(),
            LogStream::Stderr => program.stderr.clone(),
        })
    }

    /// The last `lines` lines of a stream, oldest first (invalid UTF-8 replaced).
    pub fn logs(&self, name: &str, stream: LogStream, lines: usize) -> Result<Vec<String>> {
        Ok(self.log(name, stream)?.last(lines))
    }

    /// How writing a stream's log file has gone (bytes, errors, lost bytes).
    pub fn log_health(&self, name: &str, stream: LogStream) -> Result<LogHealth> {
        Ok(self.log(name, stream)?.health())
    }

    /// New lines of a stream from now on. A reader that falls behind gets a
    /// [`Feed::Gap`] and never slows the program.
    pub fn follow(
        &self,
        name: &str,
        stream: LogStream,
    ) -> Result<impl Stream<Item = Feed<String>> + Send + Unpin + 'static> {
        let rx = self.log(name, stream)?.subscribe();
        Ok(BroadcastStream::new(rx).map(|item| match item {
            Ok(line) => Feed::Item(String::from_utf8_lossy(&line).into_owned()),
            Err(BroadcastStreamRecvError::Lagged(n)) => Feed::Gap(n),
        }))
    }

    /// Every state change from now on.
    pub fn events(&self) -> impl Stream<Item = Feed<ProcessEvent>> + Send + Unpin + 'static {
        BroadcastStream::new(self.inner.events.subscribe()).map(|item| match item {
            Ok(event) => Feed::Item(event),
            Err(BroadcastStreamRecvError::Lagged(n)) => Feed::Gap(n),
        })
    }

    /// Applies a newly loaded config: adds new programs (starting the
    /// autostart ones), stops and forgets removed ones, restarts changed ones
    /// with their new spec, and leaves unchanged ones alone.
    ///
    /// The config was checked whole when it was loaded ([`Config::load`]
    /// refuses a config with any error), so a broken config never gets here.
    pub async fn reload(&self, config: &Config) -> Result<ReloadReport> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let current: BTreeMap<String, Arc<Program>> = self.read().clone();
        let mut wanted: BTreeMap<String, &ProgramSpec> = BTreeMap::new();
        for spec in &config.programs {
            wanted.insert(spec.name.to_string(), spec);
        }
        let mut report = ReloadReport::default();
        let mut to_stop = Vec::new();
        let mut to_start = Vec::new();
        for (name, program) in &current {
            match wanted.get(name) {
                None => {
                    report.removed.push(name.clone());
                    to_stop.push(program.clone());
                }
                Some(spec) if **spec == *program.spec => report.unchanged.push(name.clone()),
                Some(spec) => {
                    report.changed.push(name.clone());
                    let was_running = program.snapshot().state.is_active();
                    to_stop.push(program.clone());
                    to_start.push(((*spec).clone(), was_running || spec.autostart));
                }
            }
        }
        for (name, spec) in &wanted {
            if !current.contains_key(name) {
                report.added.push(name.clone());
                to_start.push(((*spec).clone(), spec.autostart));
            }
        }
        send_all(&to_stop, |reply| {
            Control::Shutdown(ShutdownMode::Stop, reply)
        })
        .await;
        {
            let mut programs = self.write();
            for program in &to_stop {
                programs.remove(program.spec.name.as_str());
            }
        }
        let mut starting = Vec::new();
        for (spec, start) in to_start {
            let program = self.add(spec)?;
            if start {
                starting.push(program);
            }
        }
        send_all(&starting, Control::Start).await;
        Ok(report)
    }

    /// Reads the config file this supervisor was made from again and
    /// applies the difference ([`Supervisor::reload`]). A config with
    /// errors changes nothing ([`Error::ConfigRefused`]); its warnings go
    /// to the log.
    pub async fn reload_config(&self) -> Result<ReloadReport> {
        let file = self.inner.config_file.as_ref().ok_or(Error::NoConfigFile)?;
        let config = Config::load(file).map_err(Error::ConfigRefused)?;
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        self.reload(&config).await
    }

    /// Ends supervision: stops or detaches every program, then refuses all
    /// further calls. Returns once every program is stopped or detached.
    pub async fn shutdown(&self, mode: ShutdownMode) {
        self.inner.closing.store(true, Ordering::Release);
        if mode == ShutdownMode::Stop {
            self.signal_stop_to_all();
        }
        let programs: Vec<_> = self.read().values().cloned().collect();
        send_all(&programs, |reply| Control::Shutdown(mode, reply)).await;
        self.write().clear();
    }
}

/// Sends a control to every program first, then waits for every answer, so
/// all of them act at once.
async fn send_all(programs: &[Arc<Program>], make: impl Fn(crate::program::Reply) -> Control) {
    let mut pending = Vec::with_capacity(programs.len());
    for program in programs {
        if let Ok(applied) = program.send(&make).await {
            pending.push(applied);
        }
    }
    for applied in pending {
        let _ = applied.await;
    }
}

/// A [`Supervisor`] as the network APIs see it ([`Supervisor::exposed`]):
/// a program whose spec says `Web = false` has its stats and logs withheld
/// ([`Error::NotExposed`]) and is left out of [`Exposed::stats_all`].
#[derive(Clone)]
pub struct Exposed(Supervisor);

impl Exposed {
    fn check(&self, name: &str) -> Result<()> {
        if self.0.get(name)?.spec.web {
            Ok(())
        } else {
            Err(Error::NotExposed {
                name: name.to_owned(),
            })
        }
    }

    /// [`Supervisor::stats`], for an exposed program.
    pub async fn stats(&self, name: &str) -> Result<ProcessStats> {
        self.check(name)?;
        self.0.stats(name).await
    }

    /// [`Supervisor::logs`], for an exposed program.
    pub fn logs(&self, name: &str, stream: LogStream, lines: usize) -> Result<Vec<String>> {
        self.check(name)?;
        self.0.logs(name, stream, lines)
    }

    /// [`Supervisor::follow`], for an exposed program.
    pub fn follow(
        &self,
        name: &str,
        stream: LogStream,
    ) -> Result<impl Stream<Item = Feed<String>> + Send + Unpin + 'static> {
        self.check(name)?;
        self.0.follow(name, stream)
    }

    /// Every program's info, with its stats when they are exposed
    /// (`None` for a program with `Web = false`).
    pub async fn stats_all(&self) -> Vec<(ProcessInfo, Option<ProcessStats>)> {
        self.0.stats_where(|info| info.web).await
    }
}
