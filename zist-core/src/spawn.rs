//! Turning a [`ProgramSpec`] into a running child, and the output relays used by detach.
//!
//! This is the only module with `unsafe`: the code a new child runs between
//! its creation and `exec` (a `clone` in the manner of `posix_spawn` for
//! programs, a `pre_exec` hook for the detach relays). Everything it needs
//! (arguments, environment, user ids, groups, limits) is computed before, so
//! the child only makes raw system calls and never allocates.
//!
//! A child starts in a new session (so it leads its own process group, which
//! stop and kill reach as a whole), with an empty signal mask and default
//! signal dispositions, with the file-descriptor limit zist itself started
//! with, with stdin on `/dev/null`, stdout and stderr on pipes read by zist,
//! and with every other descriptor marked close-on-exec, so no socket or pipe
//! of the supervisor leaks into it.

// The one module of zist with unsafe code: spawning a child between
// clone and exec, and the pidfd it returns. Each block says why it is sound.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use crate::spec::ProgramSpec;
use crate::state::ExitKind;

/// The `RLIMIT_NOFILE` zist started with, restored in every child.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// Descriptors a spawn leaves free for everything else zist does (API
/// connections, log files, the stats sampler): a spawn that would eat into
/// them is refused, so the APIs keep answering when the limit is reached.
pub const RESERVED_DESCRIPTORS: u64 = 16;
/// Descriptors zist holds per program at most: two output pipes, a pidfd
/// and two log files.
pub const DESCRIPTORS_PER_PROGRAM: u64 = 5;

/// zist's open-file limit (the soft one, raised to the hard one at start).
pub fn descriptor_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// About how many programs fit under the open-file limit, besides the
/// descriptors this process holds now and the reserve.
pub fn program_room() -> u64 {
    raise_fd_limit();
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    descriptor_limit().saturating_sub(open + RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_PROGRAM
}

/// Raises this process's open-file soft limit to its hard limit, once.
///
/// A supervisor holds a few descriptors per program; children get the
/// original limit back, since some programs misbehave with a huge one.
pub(crate) fn raise_fd_limit() {
    ORIGINAL_NOFILE.get_or_init(|| {
        let original = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        if original.0 < original.1
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, original.1, original.1)
        {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
        original
    });
    spawn_slots();
}

/// Low descriptor numbers reserved for handing stdio to new children.
///
/// A child shares the supervisor's descriptor table at first (CLONE_FILES),
/// then takes a private copy of only the descriptors below [`SpawnSlots::limit`]
/// (`close_range` with `CLOSE_RANGE_UNSHARE`). Its stdio sources sit in a slot
/// below that limit, so the copy is a few entries however many programs the
/// supervisor holds open, and exec has nothing to close. Without the slots
/// every spawn would copy and then close the whole table: O(programs) each.
struct SpawnSlots {
    free: Mutex<Vec<[OwnedFd; 3]>>,
    limit: libc::c_int,
    devnull: OwnedFd,
}

/// Slot triples, so this many spawns can run at once on the fast path.
const SLOT_TRIPLES: usize = 4;

static SLOTS: OnceLock<Option<SpawnSlots>> = OnceLock::new();

/// Reserves the spawn slots while descriptor numbers are still low. `None`
/// on kernels without `CLOSE_RANGE_UNSHARE` (before 5.9): spawns then copy
/// the whole table.
fn spawn_slots() -> Option<&'static SpawnSlots> {
    SLOTS
        .get_or_init(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
            let mut numbers = release.split(|c: char| !c.is_ascii_digit());
            let major: u32 = numbers.next()?.parse().ok()?;
            let minor: u32 = numbers.next()?.parse().ok()?;
            if (major, minor) < (5, 9) {
                return None;
            }
            let devnull: OwnedFd = File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .ok()?
                .into();
            let mut free = Vec::with_capacity(SLOT_TRIPLES);
            let mut limit = devnull.as_raw_fd();
            for _ in 0..SLOT_TRIPLES {
                let triple = [
                    devnull.try_clone().ok()?,
                    devnull.try_clone().ok()?,
                    devnull.try_clone().ok()?,
                ];
                limit = triple
                    .iter()
                    .map(AsRawFd::as_raw_fd)
                    .fold(limit, libc::c_int::max);
                free.push(triple);
            }
            Some(SpawnSlots {
                free: Mutex::new(free),
                limit: limit + 1,
                devnull,
            })
        })
        .as_ref()
}

/// A slot triple lent to one spawn; dropping it points the slots back at
/// /dev/null, which also closes our copies of the child's pipe ends.
struct LentSlots {
    slots: &'static SpawnSlots,
    triple: Option<[OwnedFd; 3]>,
}

impl LentSlots {
    fn take(sources: [&OwnedFd; 3]) -> Option<Self> {
        let slots = spawn_slots()?;
        let triple = slots
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        let mut lent = Self {
            slots,
            triple: Some(triple),
        };
        let triple = lent.triple.as_mut()?;
        for (slot, source) in triple.iter_mut().zip(sources) {
            // Close-on-exec, so no other process spawned meanwhile inherits it.
            if nix::unistd::dup3(source, slot, nix::fcntl::OFlag::O_CLOEXEC).is_err() {
                return None; // dropping `lent` resets the slots
            }
        }
        Some(lent)
    }

    fn raw(&self) -> [libc::c_int; 3] {
        self.triple.as_ref().map_or([-1; 3], |t| {
            [t[0].as_raw_fd(), t[1].as_raw_fd(), t[2].as_raw_fd()]
        })
    }
}

impl Drop for LentSlots {
    fn drop(&mut self) {
        if let Some(mut triple) = self.triple.take() {
            for slot in &mut triple {
                if let Err(e) =
                    nix::unistd::dup3(&self.slots.devnull, slot, nix::fcntl::OFlag::O_CLOEXEC)
                {
                    // The slot may still hold a pipe end: retire it rather than reuse it.
                    tracing::warn!("cannot reset a spawn slot: {e}");
                    return;
                }
            }
            self.slots
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(triple);
        }
    }
}

/// A step of a child's start between clone and exec, as the child reports
/// the one that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum SpawnStep {
    /// The exec itself.
    Exec = 0,
    /// Making the child a session (and process group) leader.
    Setsid = 1,
    /// Pointing fds 0, 1 and 2 at /dev/null and the output pipes.
    Stdio = 2,
    /// Changing to the working directory.
    Chdir = 3,
    /// Restoring the open-file limit.
    FileLimit = 4,
    /// Setting the supplementary groups.
    Groups = 5,
    /// Setting the group id.
    Gid = 6,
    /// Setting the user id.
    Uid = 7,
    /// Making a private descriptor table.
    Unshare = 8,
    /// Restoring the CPU affinity.
    Affinity = 9,
    /// Joining the program's cgroup.
    Cgroup = 10,
    /// Placing the held sockets at fds 3, 4, ...
    Sockets = 11,
}

impl SpawnStep {
    const ALL: [Self; 12] = [
        Self::Exec,
        Self::Setsid,
        Self::Stdio,
        Self::Chdir,
        Self::FileLimit,
        Self::Groups,
        Self::Gid,
        Self::Uid,
        Self::Unshare,
        Self::Affinity,
        Self::Cgroup,
        Self::Sockets,
    ];

    fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|step| *step as i32 == code)
    }
}

impl std::fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exec => "exec",
            Self::Setsid => "setsid",
            Self::Stdio => "redirecting stdio",
            Self::Chdir => "changing to the working directory",
            Self::FileLimit => "setting the open-file limit",
            Self::Groups => "setting the supplementary groups",
            Self::Gid => "setting the group id",
            Self::Uid => "setting the user id",
            Self::Unshare => "making a private descriptor table",
            Self::Affinity => "restoring the CPU affinity",
            Self::Cgroup => "joining the program's cgroup",
            Self::Sockets => "placing the listening sockets at fds 3 and up",
        })
    }
}

/// Why a program could not be started; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The executable does not exist.
    #[error("executable {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A bare name that no folder of PATH holds.
    #[error("executable `{}` was not found on PATH ({search})", .name.display())]
    NotOnPath {
        /// The name.
        name: PathBuf,
        /// The PATH searched.
        search: String,
    },
    /// The path names a folder.
    #[error("{} is a directory, not an executable", .0.display())]
    Directory(PathBuf),
    /// The file has no execute permission.
    #[error("{} is not executable; run chmod +x on it", .0.display())]
    NotExecutable(PathBuf),
    /// The file starts neither with `#!` nor as an ELF binary.
    #[error("{} is not a program the kernel can run: it has no #! line and is not ELF", .0.display())]
    NotAProgram(PathBuf),
    /// The file could not be looked at.
    #[error("cannot look at {}: {source}", .path.display())]
    Inspect {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The working directory is not a folder.
    #[error("working directory {} does not exist", .0.display())]
    WorkingDir(PathBuf),
    /// An argument, variable or path with a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// The user database could not be read.
    #[error("cannot look up user `{user}`: {source}")]
    UserLookup {
        /// The user.
        user: String,
        /// Why.
        source: nix::Error,
    },
    /// No such user.
    #[error("user `{0}` does not exist on this machine")]
    NoSuchUser(String),
    /// Running as another user needs root.
    #[error("User = \"{user}\" needs zistd to run as root (it runs as uid {uid})")]
    NeedsRoot {
        /// The user asked for.
        user: String,
        /// zist's own uid.
        uid: u32,
    },
    /// An `EnvFile` is missing or has a line that does not read.
    #[error("EnvFile {}{}: {reason}", .path.display(), .line.map(|n| format!(":{n}")).unwrap_or_default())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The line, 1-based, when one is at fault.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// Too few descriptors are left under the open-file limit.
    #[error(
        "too few file descriptors are left under the open-file limit ({limit}); raise it (ulimit -n, LimitNOFILE=) or run fewer programs"
    )]
    Descriptors {
        /// The limit.
        limit: u64,
    },
    /// Setting up the child failed before it was created.
    #[error("cannot {what}: {source}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The child failed at one step between clone and exec.
    #[error("cannot start {}: {step} failed: {source}", .exe.display())]
    Step {
        /// The executable.
        exe: PathBuf,
        /// The step.
        step: SpawnStep,
        /// The error the step got.
        source: io::Error,
    },
}

/// Finds the executable a spec names: a path with a `/` as it is, a bare name on `PATH`.
pub(crate) fn resolve_executable(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<PathBuf, SpawnError> {
    if path.as_os_str().as_bytes().contains(&b'/') {
        return check_file(path).map(|()| path.to_owned());
    }
    let search = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(path);
        if check_file(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotOnPath {
        name: path.to_owned(),
        search,
    })
}

/// Whether the spec's executable can be run now; the error says why not.
/// Beyond what a spawn checks, the file must start as a program the kernel
/// runs (`#!` or ELF), or exec would fail with "Exec format error".
pub fn check_executable(path: &Path, env: &BTreeMap<String, String>) -> Result<(), SpawnError> {
    let exe = resolve_executable(path, env)?;
    let mut head = Vec::with_capacity(4);
    let read =
        File::open(&exe).and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, 4), &mut head));
    match read {
        Ok(_) if head.starts_with(b"#!") || head == b"\x7fELF" => Ok(()),
        // Unreadable (execute-only, say): exec may still work.
        Err(_) => Ok(()),
        Ok(_) => Err(SpawnError::NotAProgram(exe)),
    }
}

fn check_file(path: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError::Missing(path.to_owned())),
        Err(source) => Err(SpawnError::Inspect {
            path: path.to_owned(),
            source,
        }),
        Ok(m) if m.is_dir() => Err(SpawnError::Directory(path.to_owned())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err(SpawnError::NotExecutable(path.to_owned()))
        }
        Ok(_) => Ok(()),
    }
}

/// A supervised child process: its pid and a pidfd that becomes readable when it exits.
///
/// The child is reaped only through [`Process::wait`] or [`Process::try_wait`]
/// (`waitpid` on its own pid, never `-1`), so until then its pid cannot be
/// reused and signalling it by pid is safe.
pub(crate) struct Process {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    exit: Option<ExitKind>,
    lease: Arc<Lease>,
    /// Ours to reap: spawned by this process (or before an exec of it).
    /// An adopted process that is not is seen to end through its pidfd,
    /// without an exit status.
    child: bool,
}

/// A program's live, unreaped process, shared by its actor and the supervisor.
///
/// The actor reaps only while holding the lease, so a group signalled under
/// it has an unreaped leader, whose id cannot have been reused. This lets
/// the supervisor send a bulk stop to every group in one loop, instead of
/// waiting for a thousand actors to be scheduled while the first dying
/// programs take the CPUs.
#[derive(Debug, Default)]
pub(crate) struct Lease(Mutex<LeaseState>);

#[derive(Debug, Default)]
struct LeaseState {
    pid: Option<i32>,
    /// The process leads no process group of its own (adopted): signals
    /// go to it and its descendants one by one.
    alone: bool,
    /// The process leads no session (adopted): stats walk its tree.
    outside: bool,
    /// When the stop signal was sent, while a stop is under way.
    stop_sent: Option<std::time::Instant>,
}

impl Lease {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `signal` (then SIGCONT) to the process group, unless a stop was
    /// already sent; returns when it was sent. Not running is not an error.
    pub(crate) fn stop(&self, signal: nix::sys::signal::Signal) -> Option<std::time::Instant> {
        let mut state = self.lock();
        if let Some(at) = state.stop_sent {
            return Some(at);
        }
        let pid = state.pid?;
        signal_led(pid, state.alone, signal);
        signal_led(pid, state.alone, nix::sys::signal::Signal::SIGCONT);
        let at = std::time::Instant::now();
        state.stop_sent = Some(at);
        Some(at)
    }

    /// Notes a stop signal sent before this process's upgrade, without sending it again.
    pub(crate) fn stop_was_sent(&self) {
        self.lock().stop_sent = Some(std::time::Instant::now());
    }

    /// Whether the live process leads no process group of its own.
    pub(crate) fn alone(&self) -> bool {
        self.lock().alone
    }

    /// Whether the live process leads no session of its own.
    pub(crate) fn outside(&self) -> bool {
        self.lock().outside
    }

    /// Sends `signal` to what the live process leads: its group, or (when
    /// it leads none) it and each of its descendants.
    pub(crate) fn signal_all(&self, signal: nix::sys::signal::Signal) {
        let state = self.lock();
        if let Some(pid) = state.pid {
            signal_led(pid, state.alone, signal);
        }
    }

    /// The live process's pid, if any.
    pub(crate) fn current(&self) -> Option<i32> {
        self.lock().pid
    }

    /// Whether a stop was sent and not yet finished.
    pub(crate) fn stopping(&self) -> bool {
        self.lock().stop_sent.is_some()
    }

    /// Marks the stop as finished.
    pub(crate) fn stop_done(&self) {
        self.lock().stop_sent = None;
    }

    /// Sends `signal` to the main process, if it is live.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) -> Option<nix::Result<()>> {
        let state = self.lock();
        state
            .pid
            .map(|pid| nix::sys::signal::kill(Pid::from_raw(pid), signal))
    }
}

impl Process {
    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Reaps the process if it has exited; the status is kept for later calls.
    pub(crate) fn try_wait(&mut self) -> Option<ExitKind> {
        if self.exit.is_none() {
            // Reap only under the lease: nobody signals a reaped pid.
            let mut lease = self.lease.lock();
            self.exit = if self.child {
                match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => Some(ExitKind::Code(code)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => Some(ExitKind::Signal(sig as i32)),
                    Ok(_) => None,
                    // Someone else reaped it (an embedding program's waitpid(-1)).
                    Err(_) => Some(ExitKind::Unknown),
                }
            } else {
                pidfd_says_exited(self.pidfd.get_ref()).then_some(ExitKind::Unknown)
            };
            if self.child && self.exit.is_some() {
                crate::reaper::release(self.pid);
            }
            // A detached process's late reaping must not forget a newer one.
            if self.exit.is_some() && lease.pid == Some(self.pid) {
                lease.pid = None;
            }
        }
        self.exit
    }

    /// Lets the process go without reaping it here: the lease forgets it, so
    /// no bulk stop reaches it (detach).
    pub(crate) fn release(&self) {
        let mut lease = self.lease.lock();
        if lease.pid == Some(self.pid) {
            lease.pid = None;
            lease.stop_sent = None;
        }
    }

    /// Waits until the process exits and reaps it. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> ExitKind {
        loop {
            if let Some(exit) = self.try_wait() {
                return exit;
            }
            match self.pidfd.readable().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    // Cannot happen for a pidfd; fall back to polling rather than spin.
                    tracing::warn!("cannot wait on a pidfd: {e}");
                    // Boxed: every idle actor's wait would hold a timer.
                    Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50))).await;
                }
            }
        }
    }
}

/// Sends `signal` to what `pid` leads: its process group, or (`alone`:
/// it leads none) it and each of its descendants.
fn signal_led(pid: i32, alone: bool, signal: nix::sys::signal::Signal) {
    if alone {
        for member in crate::adopt::tree(pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(member), signal);
        }
    } else {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), signal);
    }
}

/// Whether the process a pidfd refers to has ended (the pidfd is readable).
fn pidfd_says_exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes only the one pollfd we pass, and waits not at all.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Opens a pidfd on `pid`.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel made this descriptor for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of descriptor `fd` of process `pid` (`pidfd_getfd`, Linux 5.6;
/// the same permission as ptrace), close-on-exec.
pub(crate) fn copy_fd_of(pid: i32, fd: RawFd) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: pidfd_getfd takes a pidfd, a number in the other process and
    // flags (0), and returns a new descriptor of ours or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel made this descriptor for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// Takes hold of a running process that `record` describes: one this
/// supervisor's earlier life started (docs/reference.md §8.3). Refused when
/// the pid now names another process (its start time or executable differ),
/// so pid reuse never makes zist adopt or signal a stranger.
pub(crate) fn adopt(
    record: &crate::persist::ProcessRecord,
    lease: &Arc<Lease>,
) -> io::Result<Process> {
    let pid = record.pid;
    let pidfd = pidfd_open(pid)?;
    // Checked after the pidfd is open: if the pid still has the recorded
    // start time now, the pidfd refers to that very process.
    let Some(parent) = crate::persist::matches(record) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the pid now names another process",
        ));
    };
    let child = parent == std::process::id() as i32;
    if child {
        crate::reaper::claim(pid);
    }
    // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays
    // open and the same until the AsyncFd is dropped, as registration requires.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    {
        let mut state = lease.lock();
        state.pid = Some(pid);
        state.stop_sent = None;
        state.alone =
            nix::unistd::getpgid(Some(Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() != pid);
        state.outside =
            nix::unistd::getsid(Some(Pid::from_raw(pid))).is_ok_and(|s| s.as_raw() != pid);
    }
    Ok(Process {
        pid,
        pidfd,
        exit: None,
        lease: lease.clone(),
        child,
    })
}

/// A freshly spawned child with the read ends of its output pipes.
pub(crate) struct Spawned {
    pub process: Process,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The identity a child switches to, resolved before the clone.
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// The user a program runs as, by name or by numeric uid (a uid without
/// an entry in the user database runs with the group of the same number).
pub(crate) fn lookup_user(name: &str) -> Result<User, SpawnError> {
    let found = match name.parse::<libc::uid_t>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map(|user| {
            Some(user.unwrap_or_else(|| User {
                name: name.to_owned(),
                passwd: CString::default(),
                uid: Uid::from_raw(uid),
                gid: Gid::from_raw(uid),
                gecos: CString::default(),
                dir: PathBuf::from("/"),
                shell: PathBuf::from("/bin/sh"),
            }))
        }),
        Err(_) => User::from_name(name),
    };
    found
        .map_err(|source| SpawnError::UserLookup {
            user: name.to_owned(),
            source,
        })?
        .ok_or_else(|| SpawnError::NoSuchUser(name.to_owned()))
}

/// Whether a program could run as `user` now; the error says why not.
pub(crate) fn check_user(user: &str) -> Result<(), SpawnError> {
    lookup_user(user).map(|_| ())
}

fn identity(name: &str) -> Result<(Identity, User), SpawnError> {
    let user = lookup_user(name)?;
    if !Uid::effective().is_root() && Uid::effective() != user.uid {
        return Err(SpawnError::NeedsRoot {
            user: name.to_owned(),
            uid: Uid::effective().as_raw(),
        });
    }
    let cname = cstring("the user name", user.name.as_bytes())?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .unwrap_or_else(|_| vec![user.gid])
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    Ok((
        Identity {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        },
        user,
    ))
}

fn cstring(what: &'static str, bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Nul(what))
}

/// Everything the child needs between clone and exec, prepared by the parent.
/// The child only reads it, except `failure`, where it reports what went wrong.
struct ChildPlan<'a> {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    workdir: CString,
    /// Source descriptors for 0, 1, 2; all >= 3, so the dups cannot collide.
    stdio: [libc::c_int; 3],
    /// With spawn slots: the child shares our table, then keeps only the
    /// descriptors below this number.
    unshare_below: Option<libc::c_int>,
    nofile: Option<libc::rlimit>,
    /// The CPU mask the child gets back before exec; the clone itself runs
    /// pinned to the spawning thread's CPU (see `clone_child`).
    affinity: Option<libc::cpu_set_t>,
    identity: Option<&'a Identity>,
    /// The `cgroup.procs` file of the program's cgroup, to join.
    cgroup_procs: Option<&'a std::ffi::CStr>,
    /// Sockets to place at fds 3, 4, ...; each numbered at or above
    /// `3 + listen.len()`, so no placement overwrites one still to place.
    listen: &'a [libc::c_int],
    /// `LISTEN_PID=` followed by room for the child's pid, which the
    /// child writes in (its environment points at it).
    listen_pid: *mut u8,
    /// `step << 16 | errno` of the first failing step, 0 when exec was reached.
    failure: AtomicI32,
}

/// Returns a descriptor equal to `fd` but numbered 3 or above.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // try_clone duplicates with F_DUPFD_CLOEXEC at 3 or above.
    fd.try_clone()
}

/// What every spawn of one spec has in common, built once and reused by
/// restarts: the arguments and the whole environment as C strings, and the
/// user to switch to (looked up in the user database once).
pub(crate) struct Prepared {
    args: Vec<CString>,
    /// Shared by every program that adds nothing to the environment.
    env: Arc<[CString]>,
    identity: Option<Identity>,
}

/// The supervisor's own environment as C strings, read once.
static BASE_ENV: OnceLock<Arc<[CString]>> = OnceLock::new();

fn env_block(env: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Arc<[CString]>, SpawnError> {
    env.into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend_from_slice(&v);
            cstring("an environment variable", &k)
        })
        .collect()
}

/// The supervisor's environment, without what systemd meant for it alone
/// (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS`, ...).
fn own_environment() -> BTreeMap<Vec<u8>, Vec<u8>> {
    std::env::vars_os()
        .filter(|(k, _)| !crate::systemd::SERVICE_ONLY_ENV.iter().any(|own| k == own))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

impl Prepared {
    /// Prepares `spec`; the environment is the supervisor's own plus the
    /// spec's, plus `extra` (what zist tells the program: `NOTIFY_SOCKET`, ...).
    pub(crate) fn new(spec: &ProgramSpec, extra: &[(&str, String)]) -> Result<Self, SpawnError> {
        let (identity, user) = match &spec.user {
            Some(name) => {
                let (id, user) = identity(name)?;
                (Some(id), Some(user))
            }
            None => (None, None),
        };
        let mut args = vec![cstring(
            "the executable path",
            spec.path.as_os_str().as_bytes(),
        )?];
        for arg in &spec.args {
            args.push(cstring("an argument", arg.as_bytes())?);
        }
        let env = match &user {
            None if spec.env.is_empty() && extra.is_empty() && spec.env_files.is_empty() => {
                match BASE_ENV.get() {
                    Some(env) => env.clone(),
                    None => {
                        let env = env_block(own_environment())?;
                        BASE_ENV.get_or_init(|| env).clone()
                    }
                }
            }
            _ => {
                let mut env = own_environment();
                if let Some(user) = &user {
                    env.insert(b"HOME".to_vec(), user.dir.as_os_str().as_bytes().to_vec());
                    env.insert(b"USER".to_vec(), user.name.as_bytes().to_vec());
                    env.insert(b"LOGNAME".to_vec(), user.name.as_bytes().to_vec());
                }
                // EnvFile under Env: Env wins.
                for path in &spec.env_files {
                    for (k, v) in read_env_file(path)? {
                        env.insert(k.into_bytes(), v.into_bytes());
                    }
                }
                for (k, v) in &spec.env {
                    env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
                }
                for (k, v) in extra {
                    env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
                }
                if extra.iter().any(|(k, _)| *k == "LISTEN_FDS") {
                    // The child's own pid is set at each spawn.
                    env.remove(b"LISTEN_PID".as_slice());
                }
                env_block(env)?
            }
        };
        Ok(Self {
            args,
            env,
            identity,
        })
    }
}

/// The `KEY=VALUE` pairs of an `EnvFile`: `#` comments and blank lines
/// skipped, an optional `export `, values bare (a ` #` starts a comment),
/// in single quotes (taken as they are) or in double quotes (`\"`, `\\`,
/// `\n`, `\t` and `\$` read as in a shell). Nothing is expanded.
pub(crate) fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, SpawnError> {
    let fail = |line: Option<usize>, reason: String| SpawnError::EnvFile {
        path: path.to_owned(),
        line,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(None, e.to_string()))?;
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = Some(n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(fail(at, "no `=`: write KEY=VALUE".into()));
        };
        let key = key.trim();
        let valid = key
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if key.is_empty() || !valid {
            return Err(fail(at, format!("{key:?} is not a variable name")));
        }
        let rest = rest.trim_start();
        let (value, after) = match rest.chars().next() {
            Some('\'') => {
                let inner = &rest[1..];
                let end = inner
                    .find('\'')
                    .ok_or_else(|| fail(at, "an unclosed single quote".into()))?;
                (inner[..end].to_owned(), &inner[end + 1..])
            }
            Some('"') => {
                let mut value = String::new();
                let mut chars = rest[1..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = Some(i + 2);
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, 't')) => value.push('\t'),
                            Some((_, c @ ('"' | '\\' | '$' | '`'))) => value.push(c),
                            Some((_, c)) => {
                                value.push('\\');
                                value.push(c);
                            }
                            None => break,
                        },
                        c => value.push(c),
                    }
                }
                let end = end.ok_or_else(|| fail(at, "an unclosed double quote".into()))?;
                (value, &rest[end..])
            }
            _ => {
                let bare = match rest.find(" #") {
                    Some(i) => &rest[..i],
                    None => rest,
                };
                (bare.trim_end().to_owned(), "")
            }
        };
        let after = after.trim();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(fail(at, format!("{after:?} after the quoted value")));
        }
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// The folder a program runs in: its Workingdir, else the folder of its
/// executable (`exe`, resolved on PATH).
pub(crate) fn working_dir(spec: &ProgramSpec, exe: &Path) -> PathBuf {
    match &spec.workingdir {
        Some(dir) => dir.clone(),
        None => exe
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/")),
    }
}

/// Spawns the program a spec describes. Errors are worded for a person.
///
/// The child is created with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`,
/// the way `posix_spawn` works: no page tables are copied, the calling thread
/// waits only until the child has called exec, and spawns on other threads
/// run in parallel. Between clone and exec the child makes raw system calls
/// only (no allocation, no locks, no glibc wrapper that acts on the parent's
/// threads), on values prepared here.
pub(crate) fn spawn(
    spec: &ProgramSpec,
    prepared: &Prepared,
    lease: &Arc<Lease>,
    cgroup: Option<&std::ffi::CStr>,
    listen: &[std::os::fd::BorrowedFd<'_>],
) -> Result<Spawned, SpawnError> {
    let exe = resolve_executable(&spec.path, &spec.env)?;
    let workdir = working_dir(spec, &exe);
    if !workdir.is_dir() {
        return Err(SpawnError::WorkingDir(workdir));
    }
    let path = cstring("the executable path", exe.as_os_str().as_bytes())?;

    let io_err = |what: &'static str, source: io::Error| match source.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => SpawnError::Descriptors {
            limit: descriptor_limit(),
        },
        _ => SpawnError::Setup { what, source },
    };
    let own_stdin;
    let stdin = match spawn_slots() {
        Some(slots) => &slots.devnull,
        None => {
            let devnull = File::open("/dev/null").map_err(|e| io_err("open /dev/null", e))?;
            own_stdin = above_stdio(devnull.into()).map_err(|e| io_err("set up stdin", e))?;
            &own_stdin
        }
    };
    let (stdout_r, stdout_w) = cloexec_pipe().map_err(|e| io_err("make a pipe", e))?;
    let (stderr_r, stderr_w) = cloexec_pipe().map_err(|e| io_err("make a pipe", e))?;
    // Descriptors are numbered lowest free first: the last one made shows
    // how close the table is to the limit. A pidfd comes next, and the log
    // files live programs (this one too) will open on their first write.
    let limit = descriptor_limit();
    let needed = 1 + crate::logs::unopened_files() + RESERVED_DESCRIPTORS;
    if stderr_w.as_raw_fd() as u64 + needed >= limit {
        return Err(SpawnError::Descriptors { limit });
    }
    let stdout_w = above_stdio(stdout_w).map_err(|e| io_err("set up stdout", e))?;
    let stderr_w = above_stdio(stderr_w).map_err(|e| io_err("set up stderr", e))?;

    // With sockets to pass, the child copies the whole table (no shared
    // table and slots): they are at numbers of zistd's own.
    let lent = match listen {
        [] => LentSlots::take([stdin, &stdout_w, &stderr_w]),
        _ => None,
    };
    // Copies numbered above every fd the sockets go to (closed after the spawn).
    let above = 3 + listen.len() as libc::c_int;
    let placed = listen
        .iter()
        .map(|fd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))
                .map(|raw| {
                    // SAFETY: fcntl just made this descriptor, and nothing else owns it.
                    unsafe { OwnedFd::from_raw_fd(raw) }
                })
                .map_err(|e| io_err("copy a listening socket", e.into()))
        })
        .collect::<Result<Vec<OwnedFd>, SpawnError>>()?;
    let placed_raw: Vec<libc::c_int> = placed.iter().map(AsRawFd::as_raw_fd).collect();
    let mut listen_pid = *b"LISTEN_PID=\0\0\0\0\0\0\0\0\0\0\0\0";
    let null_terminated = |strings: &[CString]| {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let mut envp = null_terminated(&prepared.env);
    if !listen.is_empty() {
        envp.insert(envp.len() - 1, listen_pid.as_ptr().cast());
    }
    let plan = ChildPlan {
        argv: null_terminated(&prepared.args),
        envp,
        listen: &placed_raw,
        listen_pid: listen_pid.as_mut_ptr(),
        path,
        workdir: cstring("the working directory", workdir.as_os_str().as_bytes())?,
        stdio: match &lent {
            Some(lent) => lent.raw(),
            None => [
                stdin.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
            ],
        },
        unshare_below: lent.as_ref().map(|l| l.slots.limit),
        nofile: ORIGINAL_NOFILE.get().map(|&(soft, hard)| libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        }),
        identity: prepared.identity.as_ref(),
        cgroup_procs: cgroup,
        affinity: None,
        failure: AtomicI32::new(0),
    };

    let mut plan = plan;
    // Created and claimed under the gate: the orphan reaper never takes a
    // program's exit status from its actor.
    let gate = crate::reaper::spawn_gate();
    let cloned = clone_child(&mut plan);
    if let Ok((pid, _)) = &cloned {
        crate::reaper::claim(*pid);
    }
    drop(gate);
    // Our copies of the child's ends close here (the slots go back to
    // /dev/null), so the read ends see end-of-file once the program's whole
    // group has exited.
    drop((lent, stdout_w, stderr_w, placed));
    let (pid, pidfd) = cloned.map_err(|e| io_err("create a process", e))?;
    let failure = plan.failure.load(Ordering::Acquire);
    if failure != 0 {
        // The child reported a failure and exited; reap it now.
        let _ = waitpid(Pid::from_raw(pid), None);
        crate::reaper::release(pid);
        return Err(SpawnError::Step {
            step: SpawnStep::from_code(failure >> 16).unwrap_or(SpawnStep::Exec),
            source: io::Error::from_raw_os_error(failure & 0xffff),
            exe,
        });
    }
    // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays
    // open and the same until the AsyncFd is dropped, as registration requires.
    let pidfd = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
        Ok(pidfd) => pidfd,
        Err(e) => {
            // Never leave a child that nobody watches.
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            crate::reaper::release(pid);
            return Err(io_err("watch the new process", e.into_parts().1));
        }
    };
    {
        let mut state = lease.lock();
        state.pid = Some(pid);
        state.stop_sent = None;
        state.alone = false;
        state.outside = false;
    }
    Ok(Spawned {
        process: Process {
            pid,
            pidfd,
            exit: None,
            lease: lease.clone(),
            child: true,
        },
        stdout: stdout_r,
        stderr: stderr_r,
    })
}

/// Size of the stack the child runs on until exec.
const CHILD_STACK: usize = 64 * 1024;

/// Clones the child that runs [`child_main`]; returns its pid and pidfd.
fn clone_child(plan: &mut ChildPlan<'_>) -> io::Result<(i32, OwnedFd)> {
    // The parent sleeps until the child execs, so the child is best run on
    // this CPU; left to itself the scheduler often wakes an idle CPU for it,
    // which costs far more than the exec on a virtual machine. The child
    // inherits a mask of this one CPU and restores the full one before exec.
    let mut original: libc::cpu_set_t = unsafe_zeroed_cpuset();
    let set_size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: sched_getaffinity and sched_getcpu only write the values we pass.
    let here = unsafe {
        if libc::sched_getaffinity(0, set_size, &mut original) == 0 {
            libc::sched_getcpu()
        } else {
            -1
        }
    };
    let pinned = here >= 0 && {
        let mut one = unsafe_zeroed_cpuset();
        // SAFETY: CPU_SET writes a bit of the set we own; sched_setaffinity reads it.
        unsafe {
            libc::CPU_SET(here as usize, &mut one);
            libc::sched_setaffinity(0, set_size, &one) == 0
        }
    };
    if pinned {
        plan.affinity = Some(original);
    }
    let result = clone_pinned(plan);
    // SAFETY: restores this thread's mask saved above.
    if pinned && unsafe { libc::sched_setaffinity(0, set_size, &original) } != 0 {
        tracing::warn!(
            "cannot restore a worker thread's CPU mask: {}",
            io::Error::last_os_error()
        );
    }
    result
}

fn unsafe_zeroed_cpuset() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    unsafe { std::mem::zeroed() }
}

fn clone_pinned(plan: &ChildPlan<'_>) -> io::Result<(i32, OwnedFd)> {
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down: start at its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let mut pidfd: libc::c_int = -1;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if plan.unshare_below.is_some() {
        flags |= libc::CLONE_FILES;
    }
    // Block every signal in this thread around the clone, so no handler of
    // ours ever runs in the child, which shares our memory until exec.
    let mut all: libc::sigset_t = unsafe_zeroed_sigset();
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
    // SAFETY: sigfillset and pthread_sigmask write only the sets we pass.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs `child_main` on its own stack, shares memory
    // with this thread, which the kernel suspends (CLONE_VFORK) until the
    // child execs or exits; `plan` and `stack` outlive that. With CLONE_PIDFD
    // the kernel stores the pidfd in `pidfd` (the parent-tid argument).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            plan as *const ChildPlan<'_> as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's signal mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: the kernel created this descriptor for us and nothing else owns it.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array; all zeros is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The child between clone and exec. Raw system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` the parent keeps alive until we exec
    // or exit; we only read it, and write its atomic `failure`.
    let plan = unsafe { &*(arg as *const ChildPlan<'_>) };
    let fail = |step: SpawnStep| -> libc::c_int {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        plan.failure
            .store(((step as i32) << 16) | (errno & 0xffff), Ordering::Release);
        // SAFETY: ends this child at once, without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call is a raw system call on values prepared by the parent.
    unsafe {
        reset_signal_dispositions();
        if libc::syscall(libc::SYS_setsid) < 0 {
            return fail(SpawnStep::Setsid);
        }
        // Until here the child shares our descriptor table and must not touch it.
        if let Some(limit) = plan.unshare_below
            && libc::syscall(
                libc::SYS_close_range,
                limit as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) < 0
        {
            return fail(SpawnStep::Unshare);
        }
        if let Some(procs) = plan.cgroup_procs {
            // Writing 0 moves the writer: everything it starts stays inside.
            let fd = libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                procs.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return fail(SpawnStep::Cgroup);
            }
            let zero = b"0";
            let written = libc::syscall(libc::SYS_write, fd, zero.as_ptr(), 1usize);
            libc::syscall(libc::SYS_close, fd);
            if written != 1 {
                return fail(SpawnStep::Cgroup);
            }
        }
        for (target, &source) in plan.stdio.iter().enumerate() {
            // dup3, not dup2 (which arm64 lacks): the sources are at 3 or
            // above, never equal to their target.
            if libc::syscall(libc::SYS_dup3, source, target as libc::c_int, 0) < 0 {
                return fail(SpawnStep::Stdio);
            }
        }
        // The held sockets at 3, 4, ... (their sources are above them all),
        // inherited across exec, and this process's pid in LISTEN_PID.
        for (i, &source) in plan.listen.iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, source, 3 + i as libc::c_int, 0) < 0 {
                return fail(SpawnStep::Sockets);
            }
        }
        if !plan.listen.is_empty() {
            write_pid(
                plan.listen_pid.add(b"LISTEN_PID=".len()),
                libc::syscall(libc::SYS_getpid),
            );
        }
        if libc::syscall(libc::SYS_chdir, plan.workdir.as_ptr()) < 0 {
            return fail(SpawnStep::Chdir);
        }
        if let Some(limit) = &plan.nofile
            && libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                limit as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>(),
            ) < 0
        {
            return fail(SpawnStep::FileLimit);
        }
        if let Some(id) = plan.identity {
            // Groups first, then the group id, the user id last: after it
            // the process may no longer change the others.
            if libc::syscall(libc::SYS_setgroups, id.groups.len(), id.groups.as_ptr()) < 0 {
                return fail(SpawnStep::Groups);
            }
            if libc::syscall(libc::SYS_setresgid, id.gid, id.gid, id.gid) < 0 {
                return fail(SpawnStep::Gid);
            }
            if libc::syscall(libc::SYS_setresuid, id.uid, id.uid, id.uid) < 0 {
                return fail(SpawnStep::Uid);
            }
        }
        close_other_descriptors_on_exec(3 + plan.listen.len() as u32);
        // Never leave a program pinned to one CPU.
        if let Some(mask) = &plan.affinity
            && libc::syscall(
                libc::SYS_sched_setaffinity,
                0,
                std::mem::size_of::<libc::cpu_set_t>(),
                mask as *const libc::cpu_set_t,
            ) < 0
        {
            return fail(SpawnStep::Affinity);
        }
        let empty = unsafe_zeroed_sigset();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        libc::syscall(
            libc::SYS_execve,
            plan.path.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        fail(SpawnStep::Exec)
    }
}

/// Starts a relay that copies `pipe` into `file` for a detached program.
///
/// The relay is `cat` in its own session: it outlives zist, never gets a
/// signal from it, and ends when the program closes its end of the pipe.
pub(crate) fn spawn_relay(pipe: OwnedFd, file: File) -> io::Result<Child> {
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::from(pipe)).stdout(Stdio::from(file));
    spawn_in_own_session(cmd)
}

/// Spawns `cmd` in a session of its own with clean signal state, stderr to
/// /dev/null and `/` as its folder, claimed from the orphan reaper (its
/// owner reaps it).
fn spawn_in_own_session(mut cmd: Command) -> io::Result<Child> {
    cmd.stderr(Stdio::null())
        .current_dir("/")
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec, makes only
    // async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(|| reset_child_process_state());
    }
    let gate = crate::reaper::spawn_gate();
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        crate::reaper::claim(pid as i32);
    }
    drop(gate);
    Ok(child)
}

/// Starts the holder process (see `holder.rs`): `exe` with `env` set, in
/// a session of its own, `listener` as its stdin. Reaped in the background
/// when it ends while this process lives; returns its pid.
pub(crate) fn spawn_holder(exe: &Path, listener: OwnedFd, env: &str) -> io::Result<u32> {
    let mut cmd = Command::new(exe);
    cmd.env(env, "1")
        .stdin(Stdio::from(listener))
        .stdout(Stdio::null());
    let mut child = spawn_in_own_session(cmd)?;
    let pid = child.id().unwrap_or(0);
    tokio::spawn(async move {
        let _ = child.wait().await;
        crate::reaper::release(pid as i32);
    });
    Ok(pid)
}

/// New session, clean signal state, no inherited descriptors beyond 0-2.
///
/// # Safety
/// Must only be called in a forked child before exec (it is async-signal-safe).
unsafe fn reset_child_process_state() -> io::Result<()> {
    // SAFETY: plain system calls on integers and stack values; no allocation,
    // no locks, as required between fork and exec.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        reset_signal_dispositions();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        close_other_descriptors_on_exec(3);
    }
    Ok(())
}

/// Sets every signal's disposition to the default.
///
/// # Safety
/// Only for a child between clone or fork and exec.
unsafe fn reset_signal_dispositions() {
    // The raw system call, because glibc's wrapper refuses signals 32 and
    // 33, which a parent may still have set to ignored. For SIG_DFL with no
    // flags and an empty mask the kernel's struct is all zeros.
    let default_action = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: a raw system call reading a stack value.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<libc::c_void>(),
                    8usize,
                );
            }
        }
    }
}

/// Writes `pid` in decimal, then a NUL, at `at` (at most 21 bytes).
///
/// # Safety
/// `at` must have room for 21 bytes; for a child between clone and exec
/// (no allocation).
unsafe fn write_pid(at: *mut u8, pid: libc::c_long) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut rest = pid.unsigned_abs();
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 || n == digits.len() {
            break;
        }
    }
    // SAFETY: the caller gives room for n <= 20 digits and the NUL.
    unsafe {
        for k in 0..n {
            *at.add(k) = digits[n - 1 - k];
        }
        *at.add(n) = 0;
    }
}

/// Marks every descriptor from `from` on (3: every one above stderr) close-on-exec.
///
/// # Safety
/// Only for a child between clone or fork and exec.
unsafe fn close_other_descriptors_on_exec(from: u32) {
    // Close-on-exec rather than closed: a failed exec can still report back.
    // SAFETY: raw system calls on integers.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            from,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            for fd in from as libc::c_int..65536 {
                libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}
