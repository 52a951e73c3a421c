//! Every descendant (docs/reference.md §8.5): zistd as a child subreaper,
//! and the reaping of orphans that reparent to it.
//!
//! An orphan of any program (a grandchild whose parent exited) becomes
//! zistd's child when zistd is a subreaper or PID 1, and must be reaped, or
//! it stays a zombie. But zist's own children (programs, relays, the
//! holder) are reaped by their owners, by pid, and their exit status must
//! not be taken from them. So owners *claim* their pids, and the reaper
//! reaps only unclaimed zombies: it peeks at the next zombie child
//! (`waitid(WNOWAIT)`) and reaps it unless claimed. A claimed zombie is
//! about to be reaped by its owner, which then wakes the reaper to look
//! past it. Spawns hold the gate while they create a child and claim it, so
//! the reaper never sees a fresh child before its claim.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::Notify;

static GATE: RwLock<()> = RwLock::new(());
static CLAIMED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static KICK: Notify = Notify::const_new();
static RUNNING: AtomicBool = AtomicBool::new(false);

fn claimed() -> MutexGuard<'static, Option<HashSet<i32>>> {
    CLAIMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a child is created and claimed.
pub(crate) fn spawn_gate() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// `pid` is reaped by its owner: the reaper leaves it alone.
pub(crate) fn claim(pid: i32) {
    claimed().get_or_insert_with(HashSet::new).insert(pid);
}

/// The owner has reaped `pid`: the reaper may look past where it was.
pub(crate) fn release(pid: i32) {
    if let Some(set) = claimed().as_mut() {
        set.remove(&pid);
    }
    if RUNNING.load(Ordering::Relaxed) {
        KICK.notify_one();
    }
}

/// Reaps every zombie child nobody claimed; returns how many.
pub(crate) fn reap_orphans() -> usize {
    let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
    let mut reaped = 0;
    loop {
        let peek = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peek {
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return reaped, // no zombie now
            },
            Err(_) => return reaped, // no children at all
        };
        if claimed()
            .as_ref()
            .is_some_and(|set| set.contains(&pid.as_raw()))
        {
            // Its owner reaps it and wakes us to look past it. Only if it
            // stays (its owner is gone: an embedder's runtime ended) are
            // the zombies behind it looked for in /proc.
            return reaped
                + if blocked_long(pid.as_raw()) {
                    reap_listed_zombies()
                } else {
                    0
                };
        }
        if matches!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
        ) {
            reaped += 1;
        }
    }
}

/// How long a claimed zombie may hide others before they are looked for in `/proc`.
const STUCK: std::time::Duration = std::time::Duration::from_millis(200);

/// The claimed zombie that hid the others last, and since when.
static BLOCKER: Mutex<Option<(i32, std::time::Instant)>> = Mutex::new(None);

/// Whether claimed zombie `pid` has hidden the others for [`STUCK`]; a
/// yes starts the count again, so a stuck claim costs one scan of `/proc`
/// per [`STUCK`], not one per call (each holds the spawn gate).
fn blocked_long(pid: i32) -> bool {
    let mut blocker = BLOCKER.lock().unwrap_or_else(PoisonError::into_inner);
    let now = std::time::Instant::now();
    match *blocker {
        Some((same, since)) if same == pid && now.duration_since(since) < STUCK => false,
        Some((same, _)) if same == pid => {
            *blocker = Some((pid, now));
            true
        }
        _ => {
            *blocker = Some((pid, now));
            false
        }
    }
}

/// Reaps the unclaimed zombie children listed in `/proc` (for when a
/// claimed zombie hides the others from `waitid`).
fn reap_listed_zombies() -> usize {
    let mut reaped = 0;
    for pid in own_children() {
        let zombie = crate::persist::stat_of(pid).is_some_and(|stat| stat.state == 'Z');
        if zombie
            && !claimed().as_ref().is_some_and(|set| set.contains(&pid))
            && matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
            )
        {
            reaped += 1;
        }
    }
    reaped
}

/// This process's children.
fn own_children() -> Vec<i32> {
    children_of(std::process::id() as i32)
}

/// The children of `pid`, from each of its threads' `children` file.
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// Makes this process a child subreaper: orphans of its descendants
/// reparent to it instead of to PID 1.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// Whether this process is PID 1 of its pid namespace (a container's init).
pub fn is_init() -> bool {
    nix::unistd::getpid() == Pid::from_raw(1)
}

/// Reaps orphans from now on, on every SIGCHLD and after every reap by an
/// owner. Idempotent; needs a tokio runtime.
pub(crate) fn start() {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let mut child_signals =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "cannot watch SIGCHLD ({e}); orphans are reaped only as programs end"
                );
                RUNNING.store(true, Ordering::Release);
                return;
            }
        };
    tokio::spawn(async move {
        loop {
            reap_orphans();
            tokio::select! {
                _ = child_signals.recv() => {}
                () = KICK.notified() => {}
            }
        }
    });
}

/// Whether the reaper runs.
pub(crate) fn running() -> bool {
    RUNNING.load(Ordering::Relaxed)
}
