//! The [`Supervisor`] handle: the registry of programs and every operation on them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use futures_core::Stream;
use nix::sys::signal::Signal;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::holder::{Held, Holder};
use crate::logs::{LogHealth, SharedLog};
use crate::persist::{Intent, Remembered, Store};
use crate::program::{Control, Program, Resume};
use crate::spec::{LogStream, ProgramSpec};
use crate::state::{ExitKind, ProcessState};
use crate::stats::Sampler;
use crate::upgrade::{Frozen, Handover};
use crate::wire::{
    Acted, AdoptRequest, DaemonStatus, Feed, ProcessEvent, ProcessInfo, ProcessStats, ReloadReport,
    ShutdownMode,
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
    /// [`Supervisor::signal`].
    Signal(Signal),
}

/// The instances of program `name` in a registry, in the order of their
/// names (`NAME:0`, `NAME:1`, ... as strings sort; see [`by_number`]).
fn instances_in<'m>(
    programs: &'m BTreeMap<String, Arc<Program>>,
    name: &str,
) -> impl Iterator<Item = &'m Arc<Program>> {
    // `;` follows `:`: the range holds exactly the names `NAME:...`.
    programs
        .range(format!("{name}:")..format!("{name};"))
        .map(|(_, program)| program)
}

/// Programs sorted by instance number (`NAME:2` before `NAME:10`).
fn by_number(mut programs: Vec<Arc<Program>>) -> Vec<Arc<Program>> {
    programs.sort_by_key(|p| p.spec.name.instance_number());
    programs
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
    /// Where what users ask, programs added at run time, `restarts` and
    /// the identity of every live process are remembered, so that a
    /// supervisor started again on the same folder resumes them
    /// (docs/reference.md §8). `None`: nothing outlives this supervisor.
    pub state_dir: Option<PathBuf>,
    /// Make this process a child subreaper and reap the orphans of every
    /// program (docs/reference.md §8.5). Orphans are reaped anyway when this
    /// process is PID 1. Off by default: an embedding program may reap its
    /// own children.
    pub subreaper: bool,
    /// Keep every program's output pipes open in a holder process while
    /// this supervisor is down, so that a program never dies of SIGPIPE
    /// because the supervisor did, and its output waits for the next one
    /// (docs/reference.md §8.3). Needs `state_dir`, and a `main` that calls
    /// [`crate::holder::run_if_asked`] first (the holder is this executable).
    pub holder: bool,
    /// Run each program in a cgroup of its own where the machine allows it
    /// (a writable cgroup v2 hierarchy): a stop then ends every process of
    /// the program, also those that left its process group, and stats read
    /// the cgroup (docs/reference.md §8.5). Else process groups, said once
    /// in the log.
    pub cgroups: bool,
    /// Every line of every program's stdout and stderr also goes to this
    /// process's stdout as `NAME | line`, through [`crate::console`]: a
    /// stalled reader never blocks a program (docs/reference.md §11.2).
    pub console: bool,
}

impl SupervisorOptions {
    /// The options a config gives: its LogDir, file and StateDir; a
    /// subreaper; no holder.
    pub fn for_config(config: &Config) -> Self {
        Self {
            log_dir: config.daemon.log_dir.clone(),
            config_file: Some(config.daemon.file.clone()),
            state_dir: Some(config.daemon.state_dir.clone()),
            subreaper: true,
            holder: false,
            cgroups: config.daemon.cgroups,
            console: config.daemon.console,
        }
    }
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("logs"),
            config_file: None,
            state_dir: None,
            subreaper: false,
            holder: false,
            cgroups: false,
            console: false,
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
    /// The processes of each measured program outside its session (its
    /// cgroup's, or an adopted process's descendants), by program pid:
    /// read once per scan of the process table, as the scan is reused.
    members: Arc<Mutex<Members>>,
    /// CPU and memory over the last minutes, while someone looks.
    history: crate::history::History,
    log_dir: PathBuf,
    config_file: Option<PathBuf>,
    closing: AtomicBool,
    started: Instant,
    reloading: tokio::sync::Mutex<()>,
    store: Option<Arc<Store>>,
    /// Programs added at run time: kept by reloads, which only manage the
    /// config's programs.
    runtime: Mutex<BTreeSet<String>>,
    holder: Option<Arc<Holder>>,
    /// Pipes the holder kept for programs not yet resumed.
    held: Mutex<Held>,
    /// Programs handed over by an upgrade, not yet resumed.
    frozen: Mutex<BTreeMap<String, Frozen>>,
    /// Where programs' cgroups go, when they run in cgroups.
    cgroup_root: Option<PathBuf>,
    /// Program lines also go to stdout (the daemon key `Console`).
    console: bool,
    /// Programs with `Instances`, by name: each instance is a program of
    /// its own in `programs` (`NAME:i`).
    groups: Mutex<BTreeMap<String, Group>>,
    /// The sockets held for programs with `Listen`, by program name (the
    /// instances of one program share them).
    sockets: Mutex<BTreeMap<String, Arc<crate::listen::Sockets>>>,
    /// Sockets an upgrade handed over, not yet taken by their programs.
    handed: Mutex<BTreeMap<String, OwnedFd>>,
}

/// A program with `Instances`.
struct Group {
    /// Its spec, as given (`{instance}` not yet replaced).
    template: ProgramSpec,
    /// How many instances run now (scale may have changed the spec's number).
    count: u32,
}

impl Supervisor {
    /// A supervisor with no programs. Raises the open-file soft limit of this
    /// process to its hard limit (children get the original one back).
    pub fn new(options: SupervisorOptions) -> Self {
        let reap = options.subreaper || crate::reaper::is_init();
        let supervisor = Self::build(options, false);
        if reap {
            crate::reaper::start();
        }
        supervisor
    }

    fn build(options: SupervisorOptions, upgrading: bool) -> Self {
        crate::spawn::raise_fd_limit();
        let cgroup_root = options.cgroups.then(|| {
            let key = options.state_dir.as_ref().unwrap_or(&options.log_dir);
            crate::cgroup::init(&std::path::absolute(key).unwrap_or_else(|_| key.clone()))
        });
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        if options.subreaper
            && let Err(e) = crate::reaper::become_subreaper()
        {
            tracing::warn!(
                "cannot become a child subreaper ({e}); orphans of programs go to PID 1"
            );
        }
        let store = options.state_dir.as_deref().and_then(|dir| {
            Store::open(dir)
                .inspect_err(|e| {
                    tracing::warn!(
                        "cannot use the state folder {}: {e}; what is asked now will not outlive this zistd",
                        dir.display()
                    )
                })
                .ok()
        });
        let (holder, held) = match (&store, options.holder, options.state_dir.as_deref()) {
            (Some(_), true, Some(dir)) => match Holder::open(dir, !upgrading) {
                Ok((holder, held)) => (Some(holder), held),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the holder process ({e}); programs die of SIGPIPE if zistd does"
                    );
                    (None, Held::new())
                }
            },
            _ => (None, Held::new()),
        };
        Self {
            inner: Arc::new(Inner {
                programs: RwLock::new(BTreeMap::new()),
                events,
                sampler: Arc::new(Sampler::new()),
                members: Arc::default(),
                history: crate::history::History::default(),
                log_dir: options.log_dir,
                config_file: options.config_file,
                closing: AtomicBool::new(false),
                started: Instant::now(),
                reloading: tokio::sync::Mutex::new(()),
                store,
                runtime: Mutex::new(BTreeSet::new()),
                holder,
                held: Mutex::new(held),
                frozen: Mutex::new(BTreeMap::new()),
                cgroup_root: cgroup_root.flatten(),
                console: options.console,
                groups: Mutex::new(BTreeMap::new()),
                sockets: Mutex::new(BTreeMap::new()),
                handed: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// A supervisor running a loaded config: every program registered, the
    /// autostart ones started (all at once). A program that cannot be spawned
    /// is `fatal` with the reason, as the config rules say; it is not an error here.
    ///
    /// With the config's StateDir it resumes what an earlier zistd left
    /// there (docs/reference.md §8): programs added at run time come back,
    /// a process that still runs is adopted rather than started again, and
    /// a program's recorded intent decides whether it starts (Autostart
    /// decides only for a program with none).
    pub async fn from_config(config: &Config) -> Self {
        Self::start_config(SupervisorOptions::for_config(config), config).await
    }

    /// [`Supervisor::from_config`] with other options (zistd's holder, ...).
    pub async fn start_config(options: SupervisorOptions, config: &Config) -> Self {
        Self::resume_config(options, config, None).await
    }

    /// [`Supervisor::start_config`] in a process whose previous executable
    /// handed its programs over ([`Supervisor::freeze`], upgrade in place):
    /// each program the handover names resumes exactly where it was (same
    /// process, state, timers, counters), reading on from its pipes.
    pub async fn resume_config(
        options: SupervisorOptions,
        config: &Config,
        handover: Option<Handover>,
    ) -> Self {
        let reap = options.subreaper || crate::reaper::is_init();
        let supervisor = Self::build(options, handover.is_some());
        if let Some(handover) = handover {
            *supervisor.frozen() = handover.programs;
            // The sockets the previous executable held for programs.
            *supervisor
                .inner
                .handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = handover.listeners;
        }
        let mut specs: Vec<(ProgramSpec, bool)> =
            config.programs.iter().map(|s| (s.clone(), false)).collect();
        if let Some(store) = &supervisor.inner.store {
            let named: BTreeSet<&str> = config.programs.iter().map(|s| s.name.as_str()).collect();
            for (name, json) in store.runtime_programs() {
                if named.contains(name.as_str()) {
                    // A config file now names it: the file wins.
                    store.update(&name, |r| r.spec = None);
                    continue;
                }
                match crate::config::program_from_json(
                    "the state file",
                    &json,
                    &config.daemon.log_dir,
                ) {
                    Ok((spec, _)) if spec.name.as_str() == name => specs.push((spec, true)),
                    Ok(_) | Err(_) => {
                        tracing::warn!(
                            "the state file's spec of program {name} does not load; it is forgotten"
                        );
                        store.forget(&name);
                    }
                }
            }
        }
        // A program with instances stands for one program per instance.
        let mut known = BTreeSet::new();
        let mut units = Vec::new();
        for (spec, runtime) in specs {
            known.insert(spec.name.to_string());
            if runtime {
                supervisor.runtime().insert(spec.name.to_string());
            }
            for unit in supervisor.expand(spec) {
                known.insert(unit.name.to_string());
                units.push((unit, runtime));
            }
        }
        if let Some(store) = &supervisor.inner.store {
            store.retain(|name, _| known.contains(name));
        }
        let mut starting = Vec::new();
        for (spec, runtime) in units {
            let (resume, start) = supervisor.resume(&spec);
            let name = spec.name.to_string();
            match supervisor.add(spec, resume) {
                Ok(program) => {
                    if runtime {
                        supervisor.runtime().insert(name);
                    }
                    if start {
                        starting.push(program);
                    }
                }
                Err(e) => tracing::error!(program = %name, "{e}"),
            }
        }
        // Programs the handover named but the config no longer does: let go.
        supervisor.frozen().clear();
        supervisor
            .inner
            .handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if reap {
            // After the resume: a program that ended during an upgrade is
            // its actor's to reap, not an orphan.
            crate::reaper::start();
        }
        if let Some(holder) = &supervisor.inner.holder {
            // Pipes of programs that are no more.
            let left: Vec<String> = supervisor.held().drain().map(|(name, _)| name).collect();
            for name in left {
                holder.forget(&name);
            }
            let weak = Arc::downgrade(&supervisor.inner);
            holder.watch(move || {
                if let Some(inner) = weak.upgrade() {
                    let programs = inner
                        .programs
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    for program in programs.values() {
                        program.post(Control::Rehold);
                    }
                }
            });
        }
        send_all(&starting, Control::Start).await;
        // What reading the config and starting every program freed.
        crate::memory::release_free_memory();
        supervisor
    }

    fn frozen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Frozen>> {
        self.inner
            .frozen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands every program over to the next executable of this process
    /// (upgrade in place, docs/reference.md §8.2): each actor stops reading
    /// its pipes and ends without touching its process, and what it was
    /// doing is described in the [`Handover`]. The supervisor then refuses
    /// every call. Pass the handover to [`Handover::exec`].
    pub async fn freeze(&self) -> Handover {
        self.inner.closing.store(true, Ordering::Release);
        let programs: Vec<_> = self.read().values().cloned().collect();
        let mut frozen = BTreeMap::new();
        // All asked first, so they hand over at once.
        let asked: Vec<_> = programs.iter().filter_map(|p| p.freeze()).collect();
        for answer in asked {
            if let Ok(program) = answer.await {
                frozen.insert(program.name.clone(), program);
            }
        }
        self.write().clear();
        if let Some(store) = &self.inner.store {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        }
        let mut handover = Handover {
            programs: frozen,
            from: crate::VERSION.to_owned(),
            ..Handover::default()
        };
        // The held sockets go on: their clients wait in them meanwhile.
        let held = std::mem::take(
            &mut *self
                .inner
                .sockets
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (base, sockets) in &held {
            for (address, fd) in sockets.addresses().iter().zip(sockets.fds()) {
                let _ = handover.add_listener(&crate::listen::handover_name(base, address), &fd);
            }
        }
        // Not removed from the disk by their drop: the next executable keeps them.
        held.values().for_each(|sockets| sockets.keep());
        handover
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How a program resumes what the store remembers of it, and whether
    /// it is to be started.
    fn resume(&self, spec: &ProgramSpec) -> (Resume, bool) {
        if let Some(frozen) = self.frozen().remove(spec.name.as_str()) {
            // The handover's pipes are the ones to read; the holder's copies go.
            drop(self.held().remove(spec.name.as_str()));
            return (Resume::Frozen(Box::new(frozen)), false);
        }
        let remembered = self
            .inner
            .store
            .as_ref()
            .and_then(|store| store.get(spec.name.as_str()));
        let Some(remembered) = remembered else {
            return (Resume::Fresh { restarts: 0 }, spec.autostart);
        };
        let restarts = remembered.restarts;
        match (remembered.intent, remembered.process) {
            (Some(Intent::Detach), record) => (Resume::Detached { restarts, record }, false),
            (_, Some(record)) => {
                let pipes = self.held().remove(spec.name.as_str()).unwrap_or_default();
                (
                    Resume::Process {
                        restarts,
                        record,
                        pipes,
                    },
                    false,
                )
            }
            (Some(Intent::Start), None) => (Resume::Fresh { restarts }, true),
            (Some(Intent::Stop), None) => (Resume::Fresh { restarts }, false),
            (None, None) => (Resume::Fresh { restarts }, spec.autostart),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The specs of the programs `spec` stands for: itself, or one per
    /// instance, as many as its `Instances` say, or as a scale chose while
    /// `Instances` still says what it said then; the group is recorded.
    fn expand(&self, spec: ProgramSpec) -> Vec<ProgramSpec> {
        let Some(configured) = spec.instances else {
            return vec![spec];
        };
        let name = spec.name.to_string();
        let scaled = self
            .inner
            .store
            .as_ref()
            .and_then(|store| store.get(&name))
            .and_then(|r| r.scale);
        let count = match scaled {
            Some([then, chosen]) if then == configured => chosen,
            Some(_) => {
                // The spec changed its number: that one holds now.
                if let Some(store) = &self.inner.store {
                    store.update(&name, |r| r.scale = None);
                }
                configured
            }
            None => configured,
        };
        let units = (0..count).map(|i| spec.instance(i)).collect();
        self.groups().insert(
            name,
            Group {
                template: spec,
                count,
            },
        );
        units
    }

    /// The instances of program `name`, by number; `None` when it has no
    /// `Instances` (or does not exist).
    fn instances(&self, name: &str) -> Option<Vec<Arc<Program>>> {
        if !self.groups().contains_key(name) {
            return None;
        }
        Some(by_number(
            instances_in(&self.read(), name).cloned().collect(),
        ))
    }

    fn runtime(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers what a user asked of `name`.
    fn intend(&self, name: &str, intent: Intent) {
        if let Some(store) = &self.inner.store {
            store.update(name, |r| r.intent = Some(intent));
        }
    }

    /// The state folder, when what is asked outlives this supervisor.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.inner.store.as_ref().map(|s| s.dir().to_owned())
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
        if let Some(program) = self.read().get(name) {
            return Ok(program.clone());
        }
        Err(match self.instances(name) {
            Some(instances) => Error::Instances {
                name: name.to_owned(),
                instances: instances.iter().map(|p| p.spec.name.to_string()).collect(),
            },
            None => Error::NoSuchProcess {
                name: name.to_owned(),
            },
        })
    }

    /// The sockets of `spec`'s `Listen`: those held for its program when
    /// they are for the same addresses (its other instances, the program
    /// before a reload), else opened now.
    fn sockets_for(&self, spec: &ProgramSpec) -> Result<Option<Arc<crate::listen::Sockets>>> {
        if spec.listen.is_empty() {
            return Ok(None);
        }
        let base = spec.name.base();
        let mut held = self
            .inner
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sockets) = held.get(base)
            && sockets.addresses() == spec.listen.as_slice()
        {
            return Ok(Some(sockets.clone()));
        }
        // Other addresses: the old sockets close first (one may be reused).
        held.remove(base);
        let handed: Vec<Option<OwnedFd>> = {
            let mut handed = self
                .inner
                .handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            spec.listen
                .iter()
                .map(|a| handed.remove(&crate::listen::handover_name(base, a)))
                .collect()
        };
        // What an upgrade handed over; what runs programs of an earlier
        // zistd that died holds (the address is theirs); or new ones.
        let running = || self.recorded_pids(base);
        let sockets = crate::listen::Sockets::open(&spec.listen, handed, running)
            .map(Arc::new)
            .map_err(|(address, source)| Error::Listen {
                name: base.to_owned(),
                address: address.to_string(),
                source,
            })?;
        held.insert(base.to_owned(), sockets.clone());
        Ok(Some(sockets))
    }

    /// The live processes the store records for program `base` (or its
    /// instances): an earlier zistd's, adopted next.
    fn recorded_pids(&self, base: &str) -> Vec<i32> {
        let Some(store) = &self.inner.store else {
            return Vec::new();
        };
        let mut names = vec![base.to_owned()];
        if let Some(group) = self.groups().get(base) {
            names.extend((0..group.count).map(|i| format!("{base}:{i}")));
        }
        names
            .iter()
            .filter_map(|name| store.get(name)?.process)
            .filter(|record| crate::persist::matches(record).is_some())
            .map(|record| record.pid)
            .collect()
    }

    /// Closes the sockets of programs no longer registered.
    fn release_sockets(&self) {
        let programs = self.read();
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|base, _| {
                programs.contains_key(base) || instances_in(&programs, base).next().is_some()
            });
    }

    /// How a program sees the others' states (for `After`).
    fn lookup(&self) -> crate::program::Lookup {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |name: &str| {
            let inner = inner.upgrade()?;
            let programs = inner
                .programs
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(program) = programs.get(name) {
                return Some(program.state());
            }
            // A program with instances runs when every instance does.
            let mut any = false;
            for state in instances_in(&programs, name).map(|p| p.state()) {
                if state != ProcessState::Running {
                    return Some(state);
                }
                any = true;
            }
            any.then_some(ProcessState::Running)
        })
    }

    fn add(&self, spec: ProgramSpec, resume: Resume) -> Result<Arc<Program>> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let lookup = (!spec.after.is_empty()).then(|| self.lookup());
        let name = spec.name.to_string();
        if self.read().contains_key(&name) {
            return Err(Error::AlreadyExists { name });
        }
        let sockets = self.sockets_for(&spec)?;
        let mut programs = self.write();
        if programs.contains_key(&name) {
            return Err(Error::AlreadyExists { name });
        }
        let home = crate::program::Home {
            log_dir: &self.inner.log_dir,
            events: &self.inner.events,
            store: self.inner.store.as_ref(),
            holder: self.inner.holder.as_ref(),
            cgroup_root: self.inner.cgroup_root.as_deref(),
            console: self.inner.console,
        };
        let program = Arc::new(Program::launch(spec, &home, resume, lookup, sockets));
        programs.insert(name, program.clone());
        Ok(program)
    }

    /// Adds a program, and starts it if its spec says Autostart. It is kept
    /// across reloads (which manage the config's programs) and, with a
    /// state folder, across restarts of the supervisor, until removed.
    ///
    /// A spawn failure leaves the program registered and `fatal`, and is returned.
    ///
    /// For a spec with `Instances`, every instance is registered, and the
    /// info of instance 0 is returned ([`Supervisor::register_each`] returns all).
    pub async fn register(&self, spec: ProgramSpec) -> Result<ProcessInfo> {
        match self.register_each(spec).await? {
            Acted::One(info) => Ok(info),
            Acted::Each(infos) => infos.into_iter().next().ok_or(Error::ShuttingDown),
        }
    }

    /// [`Supervisor::register`], answering with every instance's info for
    /// a spec with `Instances`.
    pub async fn register_each(&self, spec: ProgramSpec) -> Result<Acted> {
        let unknown: Vec<String> = {
            let groups: BTreeSet<String> = self.groups().keys().cloned().collect();
            let programs = self.read();
            spec.after
                .iter()
                .map(|n| n.as_str())
                .filter(|n| !programs.contains_key(*n) && !groups.contains(*n))
                .map(str::to_owned)
                .collect()
        };
        if let Some(first) = unknown.first() {
            return Err(Error::Config(crate::ConfigErrors(vec![
                crate::ConfigIssue {
                    file: PathBuf::from(spec.name.as_str()),
                    line: None,
                    message: format!("`After` names `{first}`, which is no program; add it first"),
                },
            ])));
        }
        let autostart = spec.autostart;
        let name = spec.name.to_string();
        let group = spec.instances.is_some();
        if self.read().contains_key(&name) || self.groups().contains_key(&name) {
            return Err(Error::AlreadyExists { name });
        }
        let json = crate::config::program_to_json(&spec);
        if let Some(store) = &self.inner.store {
            store.update(&name, |r| {
                *r = Remembered {
                    spec: Some(json),
                    ..Remembered::default()
                }
            });
        }
        let mut added = Vec::new();
        for unit in self.expand(spec) {
            match self.add(unit, Resume::Fresh { restarts: 0 }) {
                Ok(program) => added.push(program),
                Err(e) => {
                    send_all(&added, |reply| Control::Shutdown(ShutdownMode::Stop, reply)).await;
                    self.forget(&added);
                    self.groups().remove(&name);
                    if let Some(store) = &self.inner.store
                        && !matches!(e, Error::AlreadyExists { .. })
                    {
                        store.forget(&name);
                    }
                    return Err(e);
                }
            }
        }
        self.runtime().insert(name.clone());
        for program in &added {
            self.runtime().insert(program.spec.name.to_string());
        }
        match added.as_slice() {
            [program] if !group => Ok(Acted::One(if autostart {
                program.ask(Control::Start).await?
            } else {
                program.info()
            })),
            _ => {
                if autostart {
                    send_all(&added, Control::Start).await;
                }
                Ok(Acted::Each(added.iter().map(|p| p.info()).collect()))
            }
        }
    }

    /// Adds a program from a JSON object with the keys of a program file
    /// (`process.add`), checked by the rules of a program file; errors name
    /// the key. Starts it if its spec says Autostart.
    pub async fn register_json(&self, spec: &serde_json::Value) -> Result<Acted> {
        let (spec, warnings) =
            crate::config::program_from_json("process.add", spec, &self.inner.log_dir)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        self.register_each(spec).await
    }

    /// Takes over a running process that zist did not start
    /// (docs/reference.md §8.4): it becomes a program added at run time,
    /// `running` with its pid and real start time, its spec the process's
    /// command line, working directory, environment and user (with
    /// `Restart = "always"`), overridden by `request.spec`. Unless
    /// `capture` is false, its stdout and stderr are moved into the
    /// program's logs while it runs; when that cannot be done, `message`
    /// says why, and output is captured from its next restart on.
    ///
    /// Refused: a pid that names no process ([`Error::NoSuchPid`]), pid 1,
    /// this process and its ancestors, a kernel thread
    /// ([`Error::AdoptRefused`]), a process a program already has
    /// ([`Error::AlreadySupervised`]).
    pub async fn adopt(&self, request: AdoptRequest) -> Result<ProcessInfo> {
        let pid = request.pid;
        let supervised = self.read().iter().find_map(|(name, program)| {
            let snap = program.snapshot();
            (snap.pid == Some(pid) && snap.state != ProcessState::Detached).then(|| name.clone())
        });
        if let Some(name) = supervised {
            return Err(Error::AlreadySupervised { pid, name });
        }
        let found = tokio::task::spawn_blocking(move || crate::adopt::inspect(pid))
            .await
            .map_err(|e| Error::Sampler(e.to_string()))??;
        let name = match request.name {
            Some(name) => name,
            None => crate::adopt::program_name(&found.exe_name, |n| self.read().contains_key(n)),
        };
        let mut keys = found.spec;
        keys.insert("Name".into(), serde_json::Value::String(name.clone()));
        let json = crate::adopt::merged(pid, keys, request.spec.as_ref())?;
        let (spec, warnings) =
            crate::config::program_from_json("process.adopt", &json, &self.inner.log_dir)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        if spec.instances.is_some() {
            return Err(Error::AdoptRefused {
                pid,
                reason: "an adopted process is one process; `Instances` does not apply".into(),
            });
        }
        if self.read().contains_key(&name) || self.groups().contains_key(&name) {
            return Err(Error::AlreadyExists { name });
        }
        let (pipes, note) = if request.capture.unwrap_or(true) {
            let (uid, gid) = (found.uid, found.gid);
            let captured =
                tokio::task::spawn_blocking(move || crate::capture::capture(pid, uid, gid))
                    .await
                    .map_err(|e| Error::Sampler(e.to_string()))?;
            match captured {
                Ok(captured) => {
                    tracing::info!(
                        program = %name,
                        "captured the output of pid {pid}; it was paused {} µs",
                        captured.paused.as_micros()
                    );
                    (
                        [Some(captured.stdout), captured.stderr],
                        captured.partial.map(|why| {
                            format!("adopted; {why}; stderr is captured from its next restart on")
                        }),
                    )
                }
                Err(why) => (
                    [None, None],
                    Some(format!(
                        "adopted; output is not captured ({why}); it is captured from its next restart on"
                    )),
                ),
            }
        } else {
            (
                [None, None],
                Some("adopted without capture; output is captured from its next restart on".into()),
            )
        };
        let json = crate::config::program_to_json(&spec);
        if let Some(store) = &self.inner.store {
            let record = found.record.clone();
            store.update(&name, |r| {
                *r = Remembered {
                    intent: Some(Intent::Start),
                    spec: Some(json),
                    process: Some(record),
                    restarts: 0,
                    scale: None,
                }
            });
        }
        let program = self.add(
            spec,
            Resume::Adopt {
                record: found.record,
                pipes,
                note,
            },
        )?;
        if program.snapshot().pid != Some(pid) {
            // It ended, or exec'd another program, while being looked at.
            self.write().remove(&name);
            if let Some(store) = &self.inner.store {
                store.forget(&name);
            }
            return Err(Error::AdoptRefused {
                pid,
                reason: "it ended or ran another executable while being adopted".into(),
            });
        }
        self.runtime().insert(name);
        Ok(program.info())
    }

    /// Stops a program and forgets it.
    ///
    /// A program with instances goes with all of them; one instance alone
    /// is not removed ([`Error::IsInstance`]: scale its program instead).
    pub async fn remove(&self, name: &str) -> Result<()> {
        let programs = match self.instances(name) {
            Some(instances) => instances,
            None => {
                let program = self.get(name)?;
                if program.spec.name.instance_number().is_some() {
                    return Err(Error::IsInstance {
                        name: name.to_owned(),
                        program: program.spec.name.base().to_owned(),
                    });
                }
                vec![program]
            }
        };
        send_all(&programs, |reply| {
            Control::Shutdown(ShutdownMode::Stop, reply)
        })
        .await;
        // Their cgroups are empty now (removed only when empty).
        self.forget(&programs);
        self.groups().remove(name);
        self.runtime().remove(name);
        if let Some(store) = &self.inner.store {
            store.forget(name);
        }
        Ok(())
    }

    /// Starts a program; returns once it is spawned (`starting`).
    ///
    /// Remembered: with a state folder, the program starts again when the
    /// supervisor does, Autostart notwithstanding.
    ///
    /// The programs in its `After` (and in theirs) that are stopped,
    /// exited or fatal start too; it is `waiting` until they run.
    pub async fn start(&self, name: &str) -> Result<ProcessInfo> {
        let program = self.get(name)?;
        let pulled = self.pulled_in(&program);
        for dep in &pulled {
            self.intend(dep.spec.name.as_str(), Intent::Start);
        }
        // Each answers for itself in its own state; this one waits for them.
        send_all(&pulled, Control::Start).await;
        self.intend(name, Intent::Start);
        program.ask(Control::Start).await
    }

    /// The programs `program` comes after, directly or not, that do not
    /// run and would not start by themselves.
    fn pulled_in(&self, program: &Program) -> Vec<Arc<Program>> {
        if program.spec.after.is_empty() {
            return Vec::new();
        }
        let programs = self.read();
        let mut seen = BTreeSet::new();
        let mut next: Vec<&str> = program.spec.after.iter().map(|n| n.as_str()).collect();
        let mut pulled = Vec::new();
        while let Some(name) = next.pop() {
            if !seen.insert(name) {
                continue;
            }
            let named: Vec<&Arc<Program>> = match programs.get(name) {
                Some(dep) => vec![dep],
                None => instances_in(&programs, name).collect(),
            };
            if let Some(first) = named.first() {
                next.extend(first.spec.after.iter().map(|n| n.as_str()));
            }
            for dep in named {
                if matches!(
                    dep.state(),
                    ProcessState::Stopped | ProcessState::Exited | ProcessState::Fatal
                ) {
                    pulled.push(dep.clone());
                }
            }
        }
        pulled
    }

    /// Stops a program; returns once its whole process group is gone.
    ///
    /// Remembered: with a state folder, the program stays stopped when the
    /// supervisor starts again, and when a reload changes its spec.
    pub async fn stop(&self, name: &str) -> Result<ProcessInfo> {
        let program = self.get(name)?;
        self.intend(name, Intent::Stop);
        program.ask(Control::Stop).await
    }

    /// Stops a program if it runs, then starts it; returns once the new process is spawned.
    pub async fn restart(&self, name: &str) -> Result<ProcessInfo> {
        let program = self.get(name)?;
        self.intend(name, Intent::Start);
        program.ask(Control::Restart).await
    }

    /// Lets a running program go: it keeps running, and writing to its log
    /// files, after zist lets go of it and after zist exits. Remembered:
    /// a supervisor started again leaves it alone until it is started.
    pub async fn detach(&self, name: &str) -> Result<ProcessInfo> {
        let info = self.get(name)?.ask(Control::Detach).await?;
        self.intend(name, Intent::Detach);
        Ok(info)
    }

    /// Sends a signal to a program's main process.
    pub async fn signal(&self, name: &str, signal: Signal) -> Result<ProcessInfo> {
        self.get(name)?
            .ask(|reply| Control::Signal(signal, reply))
            .await
    }

    /// One program's info.
    pub fn info(&self, name: &str) -> Result<ProcessInfo> {
        let program = self.get(name)?;
        let mut info = program.info();
        // One program's info also says where its logs go.
        info.log.stdout.file = Some(program.stdout.file_path());
        info.log.stderr.file = Some(program.stderr.file_path());
        Ok(info)
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

    /// Readiness for orchestrators (`/readyz`, docs/reference.md §11):
    /// `(ready, not_ready)` over the programs meant to run, which are all
    /// but those `stopped` (never started, or stopped on request) and
    /// `detached`. Ready: `running`, or `exited` with status 0 (a one-shot
    /// that did its work).
    pub fn readiness(&self) -> (usize, usize) {
        let (mut ready, mut not_ready) = (0, 0);
        for program in self.read().values() {
            let snapshot = program.snapshot();
            match snapshot.state {
                ProcessState::Stopped | ProcessState::Detached => {}
                ProcessState::Running => ready += 1,
                ProcessState::Exited if snapshot.exit == Some(ExitKind::Code(0)) => ready += 1,
                _ => not_ready += 1,
            }
        }
        (ready, not_ready)
    }

    /// How many programs are `running` now.
    pub fn running(&self) -> usize {
        self.read()
            .values()
            .filter(|p| p.snapshot().state == ProcessState::Running)
            .count()
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
    async fn all(
        &self,
        intent: Intent,
        make: fn(crate::program::Reply) -> Control,
    ) -> Vec<ProcessInfo> {
        let programs: Vec<_> = self.read().values().cloned().collect();
        for program in &programs {
            self.intend(program.spec.name.as_str(), intent);
        }
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
            ProcessAction::Signal(signal) => self.signal(name, signal).await,
        }
    }

    /// Applies `action` to `name`: one program (or one instance,
    /// `NAME:i`), or, for a program with instances, every instance at once
    /// (then each instance's info, by number, whatever each one answered:
    /// its state says it).
    pub async fn act(&self, name: &str, action: ProcessAction) -> Result<Acted> {
        let Some(instances) = self.instances(name) else {
            return Ok(Acted::One(self.apply(name, action).await?));
        };
        let intent = match action {
            ProcessAction::Start | ProcessAction::Restart => Some(Intent::Start),
            ProcessAction::Stop => Some(Intent::Stop),
            ProcessAction::Detach => Some(Intent::Detach),
            ProcessAction::Signal(_) => None,
        };
        for program in &instances {
            if let Some(intent) = intent {
                self.intend(program.spec.name.as_str(), intent);
            }
        }
        if action == ProcessAction::Start
            && let Some(first) = instances.first()
        {
            let pulled = self.pulled_in(first);
            for dep in &pulled {
                self.intend(dep.spec.name.as_str(), Intent::Start);
            }
            send_all(&pulled, Control::Start).await;
        }
        match action {
            ProcessAction::Start => send_all(&instances, Control::Start).await,
            ProcessAction::Stop => send_all(&instances, Control::Stop).await,
            ProcessAction::Restart => send_all(&instances, Control::Restart).await,
            ProcessAction::Detach => send_all(&instances, Control::Detach).await,
            ProcessAction::Signal(signal) => {
                send_all(&instances, |reply| Control::Signal(signal, reply)).await
            }
        }
        Ok(Acted::Each(instances.iter().map(|p| p.info()).collect()))
    }

    /// Restarts the instances of `name` one at a time, each once the one
    /// before is `running` again, so that all but one serve at every
    /// moment (for a program without instances, a restart that answers
    /// once it runs). Stops at an instance whose new process does not come
    /// up ([`Error::RollingStopped`]); the ones after it keep their old
    /// processes.
    pub async fn restart_rolling(&self, name: &str) -> Result<Acted> {
        let (programs, each) = match self.instances(name) {
            Some(instances) => (instances, true),
            None => (vec![self.get(name)?], false),
        };
        for program in &programs {
            let instance = program.spec.name.to_string();
            let mut events = self.inner.events.subscribe();
            self.intend(&instance, Intent::Start);
            program
                .ask(Control::Restart)
                .await
                .map_err(|e| Error::RollingStopped {
                    name: instance.clone(),
                    reason: e.to_string(),
                })?;
            loop {
                let state = program.state();
                match state {
                    ProcessState::Running => break,
                    ProcessState::Starting | ProcessState::Waiting => {}
                    state => {
                        let why = program.info().message.unwrap_or_default();
                        return Err(Error::RollingStopped {
                            name: instance,
                            reason: format!("its new process is {state} ({why})"),
                        });
                    }
                }
                // The next change of this instance (a lag: look again).
                loop {
                    match events.recv().await {
                        Ok(ev) if ev.name == instance => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(Error::ShuttingDown);
                        }
                    }
                }
            }
        }
        let mut infos: Vec<ProcessInfo> = programs.iter().map(|p| p.info()).collect();
        Ok(match infos.pop() {
            Some(info) if !each => Acted::One(info),
            last => {
                infos.extend(last);
                Acted::Each(infos)
            }
        })
    }

    /// Changes the number of instances of `name` at run time: new ones
    /// are started, the highest-numbered ones stopped and forgotten. The
    /// number is remembered (with a state folder, across restarts of the
    /// supervisor) until the program's spec gives another one.
    pub async fn scale(&self, name: &str, instances: u32) -> Result<Vec<ProcessInfo>> {
        if !(1..=crate::spec::MAX_INSTANCES).contains(&instances) {
            return Err(Error::Value(crate::spec::ValueError::Instances(instances)));
        }
        // One change of the registry at a time (reloads, other scales).
        let _one_at_a_time = self.inner.reloading.lock().await;
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let (template, count) = match self.groups().get(name) {
            Some(group) => (group.template.clone(), group.count),
            None => {
                self.get(name)?;
                return Err(Error::NotScalable {
                    name: name.to_owned(),
                });
            }
        };
        let runtime = self.runtime().contains(name);
        let mut added = Vec::new();
        for i in count..instances {
            let spec = template.instance(i);
            let instance = spec.name.to_string();
            if runtime {
                self.runtime().insert(instance.clone());
            }
            self.intend(&instance, Intent::Start);
            added.push(self.add(spec, Resume::Fresh { restarts: 0 })?);
        }
        let removed: Vec<Arc<Program>> = {
            let programs = self.read();
            (instances..count)
                .filter_map(|i| programs.get(&format!("{name}:{i}")).cloned())
                .collect()
        };
        send_all(&removed, |reply| {
            Control::Shutdown(ShutdownMode::Stop, reply)
        })
        .await;
        self.forget(&removed);
        if let Some(group) = self.groups().get_mut(name) {
            group.count = instances;
        }
        if let Some(store) = &self.inner.store {
            let configured = template.instances.unwrap_or(1);
            store.update(name, |r| r.scale = Some([configured, instances]));
        }
        send_all(&added, Control::Start).await;
        Ok(self
            .instances(name)
            .unwrap_or_default()
            .iter()
            .map(|p| p.info())
            .collect())
    }

    /// Takes stopped programs out of the registry, their cgroups and what
    /// the store remembers of them.
    fn forget(&self, programs: &[Arc<Program>]) {
        let mut registry = self.write();
        for program in programs {
            let name = program.spec.name.as_str();
            registry.remove(name);
            self.runtime().remove(name);
            if let Some(cgroup) = &program.cgroup {
                cgroup.remove();
            }
            if let Some(store) = &self.inner.store {
                store.forget(name);
            }
        }
        drop(registry);
        self.release_sockets();
    }

    /// Starts every program that is not running; returns when each has been spawned.
    pub async fn start_all(&self) -> Vec<ProcessInfo> {
        self.all(Intent::Start, Control::Start).await
    }

    /// Stops every program; returns when every process group is gone.
    ///
    /// A program stops before the programs in its `After` (reverse order).
    pub async fn stop_all(&self) -> Vec<ProcessInfo> {
        let programs: Vec<_> = self.read().values().cloned().collect();
        for program in &programs {
            self.intend(program.spec.name.as_str(), Intent::Stop);
        }
        in_stop_order(programs, Control::Stop).await;
        self.list()
    }

    /// Restarts every program; returns when each new process is spawned.
    pub async fn restart_all(&self) -> Vec<ProcessInfo> {
        self.all(Intent::Start, Control::Restart).await
    }

    /// CPU and memory of a program's process tree; zeros when no process runs.
    pub async fn stats(&self, name: &str) -> Result<ProcessStats> {
        let program = self.get(name)?;
        let snap = program.snapshot();
        let pid = match snap.pid {
            Some(pid) if snap.state.is_live() => pid,
            _ => return Ok(ProcessStats::default()),
        };
        let sampler = self.inner.sampler.clone();
        let cgroup = program.cgroup.clone();
        let outside = program.lease.outside();
        tokio::task::spawn_blocking(move || {
            let members = members(cgroup.as_deref(), outside, pid);
            sampler.measure_in(pid, &members)
        })
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
        type Measured = (i32, Option<Arc<crate::cgroup::ProgramCgroup>>, bool);
        let cgroups: Vec<Measured> = {
            let programs = self.read();
            list.iter()
                .filter(|info| measure(info))
                .filter_map(|info| {
                    let pid = live(info)?;
                    let program = programs.get(&info.name);
                    Some((
                        pid,
                        program.and_then(|p| p.cgroup.clone()),
                        program.is_some_and(|p| p.lease.outside()),
                    ))
                })
                .collect()
        };
        let sampler = self.inner.sampler.clone();
        let cache = self.inner.members.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let pids: Vec<(i32, Vec<i32>)> = {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                let fresh = cache
                    .at
                    .is_some_and(|at| at.elapsed() < crate::stats::SCAN_REUSE);
                if !fresh {
                    // A new scan with the new members: both then serve
                    // the calls of the same window (the members' time
                    // taken first, so they are never the younger).
                    cache.at = Some(Instant::now());
                    sampler.rescan();
                    cache.by_pid.clear();
                }
                cgroups
                    .into_iter()
                    .map(|(pid, cgroup, outside)| {
                        let found = cache.by_pid.entry(pid).or_insert_with(|| {
                            let mut found = members(cgroup.as_deref(), outside, pid);
                            found.retain(|&p| p != pid);
                            found
                        });
                        (pid, found.clone())
                    })
                    .collect()
            };
            sampler.measure_many_in(&pids)
        })
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
    /// What users asked is kept (docs/reference.md §8.1): a changed program
    /// that was stopped stays stopped (its new spec applies at its next
    /// start), `restarts` carry over, and programs added at run time are
    /// neither removed nor changed, unless the config now names them (the
    /// file wins).
    ///
    /// The config was checked whole when it was loaded ([`Config::load`]
    /// refuses a config with any error), so a broken config never gets here.
    pub async fn reload(&self, config: &Config) -> Result<ReloadReport> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let current: BTreeMap<String, Arc<Program>> = self.read().clone();
        // A program with instances stands for one program per instance.
        let mut wanted: BTreeMap<String, ProgramSpec> = BTreeMap::new();
        let mut templates = BTreeSet::new();
        for spec in &config.programs {
            let name = spec.name.to_string();
            if self.runtime().remove(&name)
                && let Some(store) = &self.inner.store
            {
                // The file takes it over.
                store.update(&name, |r| r.spec = None);
            }
            templates.insert(name);
            for unit in self.expand(spec.clone()) {
                wanted.insert(unit.name.to_string(), unit);
            }
        }
        {
            let runtime = self.runtime().clone();
            let gone: Vec<String> = self
                .groups()
                .keys()
                .filter(|name| !templates.contains(*name) && !runtime.contains(*name))
                .cloned()
                .collect();
            for name in gone {
                self.groups().remove(&name);
                if let Some(store) = &self.inner.store {
                    store.forget(&name);
                }
            }
        }
        let mut report = ReloadReport::default();
        let mut to_stop = Vec::new();
        let mut to_start = Vec::new();
        for (name, program) in &current {
            let runtime = self.runtime().contains(name);
            match wanted.get(name) {
                None if runtime => report.unchanged.push(name.clone()),
                None => {
                    report.removed.push(name.clone());
                    to_stop.push(program.clone());
                }
                Some(spec) => {
                    if runtime {
                        // The file takes it over.
                        self.runtime().remove(name);
                        if let Some(store) = &self.inner.store {
                            store.update(name, |r| r.spec = None);
                        }
                    }
                    if *spec == *program.spec {
                        report.unchanged.push(name.clone());
                        continue;
                    }
                    report.changed.push(name.clone());
                    let snapshot = program.snapshot();
                    let stopped_on_request = snapshot.state == crate::ProcessState::Stopped
                        || snapshot.state == crate::ProcessState::Detached;
                    let start =
                        snapshot.state.is_active() || (spec.autostart && !stopped_on_request);
                    to_stop.push(program.clone());
                    to_start.push((spec.clone(), start, snapshot.restarts));
                }
            }
        }
        for (name, spec) in &wanted {
            if !current.contains_key(name) {
                report.added.push(name.clone());
                to_start.push((spec.clone(), spec.autostart, 0));
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
        // A changed program keeps its cgroup; a removed one's goes.
        for program in &to_stop {
            if report
                .removed
                .iter()
                .any(|n| n == program.spec.name.as_str())
                && let Some(cgroup) = &program.cgroup
            {
                cgroup.remove();
            }
        }
        if let Some(store) = &self.inner.store {
            for name in &report.removed {
                store.forget(name);
            }
        }
        let mut starting = Vec::new();
        for (spec, start, restarts) in to_start {
            let program = self.add(spec, Resume::Fresh { restarts })?;
            if start {
                starting.push(program);
            }
        }
        // Sockets of removed programs, or of old addresses, close now.
        self.release_sockets();
        send_all(&starting, Control::Start).await;
        crate::memory::release_free_memory();
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
        let programs: Vec<_> = self.read().values().cloned().collect();
        match mode {
            ShutdownMode::Stop => {
                in_stop_order(programs, |reply| {
                    Control::Shutdown(ShutdownMode::Stop, reply)
                })
                .await;
            }
            ShutdownMode::Detach => {
                send_all(&programs, |reply| Control::Shutdown(mode, reply)).await;
            }
        }
        self.write().clear();
        self.release_sockets();
        if let (Some(holder), ShutdownMode::Stop) = (&self.inner.holder, mode) {
            holder.quit();
        }
        if let (Some(root), ShutdownMode::Stop) = (&self.inner.cgroup_root, mode) {
            crate::cgroup::remove_root(root);
        }
        if let Some(store) = &self.inner.store {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

/// Sends a control to every program first, then waits for every answer, so
/// all of them act at once.
/// The processes a program's stats count besides its session: its cgroup's
/// members, or the tree of an adopted process that leads no session.
impl Supervisor {
    /// Every `Web = true` program's CPU and memory over the last
    /// [`crate::history::SPAN`], one sample each [`crate::history::EVERY`]:
    /// what has been sampled since someone first asked (this call, or
    /// [`Supervisor::want_history`]). Sampling stops, and the history is
    /// forgotten, once nobody has asked for [`crate::history::IDLE`].
    pub fn history(&self) -> BTreeMap<String, crate::history::Series> {
        self.want_history();
        self.inner.history.series()
    }

    /// Someone looks at stats: keep (or start) sampling the history.
    pub fn want_history(&self) {
        if !self.inner.history.asked() {
            return;
        }
        // The sampler holds the supervisor weakly: it never keeps it alive.
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::history::EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let supervisor = Supervisor { inner };
                if supervisor.inner.closing.load(Ordering::Acquire)
                    || !supervisor.inner.history.still_wanted()
                {
                    return;
                }
                let rows = supervisor.exposed().stats_all().await;
                supervisor
                    .inner
                    .history
                    .record(rows.into_iter().filter_map(|(info, stats)| {
                        let stats = stats?;
                        let live = info.state.is_live() && info.pid.is_some();
                        Some((
                            info.name,
                            live.then_some((stats.cpu_percent, stats.memory_bytes)),
                        ))
                    }));
            }
        });
    }
}

/// See [`Inner::members`].
#[derive(Debug, Default)]
struct Members {
    at: Option<Instant>,
    by_pid: std::collections::HashMap<i32, Vec<i32>>,
}

fn members(cgroup: Option<&crate::cgroup::ProgramCgroup>, outside: bool, pid: i32) -> Vec<i32> {
    match cgroup {
        Some(cgroup) => cgroup.pids(),
        None if outside => crate::adopt::tree(pid),
        None => Vec::new(),
    }
}

/// Sends a stop (`make`) to every program, each once the programs that
/// come after it have stopped; programs that do not depend on each other
/// stop at once. The stop signals of programs that nothing comes after go
/// out first, in one loop, before any actor runs (safe under each
/// program's lease: a leased pid is unreaped), so a large fleet starts
/// dying together.
async fn in_stop_order(
    programs: Vec<Arc<Program>>,
    make: impl Fn(crate::program::Reply) -> Control + Copy + Send + 'static,
) {
    let index: BTreeMap<&str, usize> = programs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.spec.name.as_str(), i))
        .collect();
    let mut instances: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, program) in programs.iter().enumerate() {
        if program.spec.name.instance_number().is_some() {
            instances
                .entry(program.spec.name.base())
                .or_default()
                .push(i);
        }
    }
    // dependents[i]: the programs that come after program i.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); programs.len()];
    for (i, program) in programs.iter().enumerate() {
        for dep in &program.spec.after {
            let named = match index.get(dep.as_str()) {
                Some(&d) => std::slice::from_ref(&d).to_vec(),
                None => instances.get(dep.as_str()).cloned().unwrap_or_default(),
            };
            for d in named {
                dependents[d].push(i);
            }
        }
    }
    for (program, after_it) in programs.iter().zip(&dependents) {
        if after_it.is_empty() {
            program.lease.stop(program.spec.stop_signal);
        }
    }
    if dependents.iter().all(Vec::is_empty) {
        return send_all(&programs, make).await;
    }
    let (dones, waits): (Vec<_>, Vec<_>) = programs
        .iter()
        .map(|_| tokio::sync::watch::channel(false))
        .unzip();
    let mut tasks = tokio::task::JoinSet::new();
    for ((program, done), after_it) in programs.iter().cloned().zip(dones).zip(&dependents) {
        let mut first: Vec<_> = after_it.iter().map(|&j| waits[j].clone()).collect();
        tasks.spawn(async move {
            for wait in &mut first {
                // An ended task (its sender dropped) counts as done.
                let _ = wait.wait_for(|done| *done).await;
            }
            if let Ok(applied) = program.send(make).await {
                let _ = applied.await;
            }
            let _ = done.send(true);
        });
    }
    while tasks.join_next().await.is_some() {}
}

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

    /// An exposed program's spec as the keys of a program file, with the
    /// names of its `Env` only (values may be secrets): what the
    /// dashboard's program panel shows.
    pub fn spec_view(&self, name: &str) -> Result<serde_json::Value> {
        self.check(name)?;
        let spec = self.0.spec(name)?;
        let mut json = crate::config::program_to_json(&spec);
        if let Some(object) = json.as_object_mut() {
            let keys: Vec<&String> = spec.env.keys().collect();
            object.insert("Env".to_owned(), serde_json::json!(keys));
        }
        Ok(json)
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
