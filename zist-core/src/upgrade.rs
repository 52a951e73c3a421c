//! Upgrade in place (docs/reference.md §8.2): a supervisor hands everything
//! it holds to the next executable in the same process.
//!
//! [`Supervisor::freeze`](crate::Supervisor::freeze) makes every actor stop
//! reading its pipes and end without touching its process, and describes
//! each program exactly: state, timers, counters, exit, the identity of its
//! process and the descriptors of its pipes. The caller adds its listening
//! sockets and calls [`Handover::exec`], which writes the description to a
//! file, lets the descriptors survive exec, and replaces the executable:
//! same pid, so the programs stay its children and the sockets keep their
//! queue of waiting clients. The new executable loads the file
//! ([`Handover::load`]) and resumes every program from it (nothing read
//! twice: what the old one read is in the log files, the rest waits in the
//! pipes).

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::persist::ProcessRecord;

/// One program, as the old executable left it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Frozen {
    pub name: String,
    /// The state's name (`ProcessState::as_str`).
    pub state: String,
    pub process: Option<ProcessRecord>,
    /// Since when the state's process has been up, ms since the epoch.
    pub since_ms: Option<u64>,
    /// Backoff: how long until the next spawn, in ms.
    pub retry_in_ms: Option<u64>,
    /// Stopping: how long until SIGKILL, in ms (`None`: sent already).
    pub kill_in_ms: Option<u64>,
    /// Stopping: what follows (`stay`, `start`, `end`).
    pub then: Option<String>,
    pub reason: Option<String>,
    pub restarts: u32,
    pub failures: u32,
    pub last_exit: Option<crate::state::ExitKind>,
    /// When the last process ended, ms since the epoch.
    #[serde(default)]
    pub last_exit_ms: Option<u64>,
    pub last_spawn_ms: Option<u64>,
    /// The pipes' descriptor numbers, kept open across exec.
    pub fds: [Option<RawFd>; 2],
    #[serde(skip)]
    pub owned: [Option<OwnedFd>; 2],
}

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Serialize, Deserialize)]
struct File {
    version: String,
    programs: Vec<Frozen>,
    listeners: BTreeMap<String, RawFd>,
}

/// Everything a supervisor hands to the next executable.
#[derive(Debug, Default)]
pub struct Handover {
    pub(crate) programs: BTreeMap<String, Frozen>,
    pub(crate) listeners: BTreeMap<String, OwnedFd>,
    /// The version of the executable that wrote it.
    pub from: String,
}

impl Handover {
    /// Adds a listening socket, to be taken again under `name` by the next
    /// executable ([`Handover::take_listener`]).
    pub fn add_listener(&mut self, name: &str, socket: &impl AsFd) -> std::io::Result<()> {
        let dup = socket.as_fd().try_clone_to_owned()?;
        self.listeners.insert(name.to_owned(), dup);
        Ok(())
    }

    /// How many programs it describes.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// Whether it describes no program.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Writes the handover to `path`, lets its descriptors survive exec,
    /// and runs `command` in place of this executable (same pid). Returns
    /// only on failure; the descriptors are then closed again on exec.
    pub fn exec(self, path: &Path, mut command: std::process::Command) -> std::io::Error {
        use std::os::unix::process::CommandExt;
        let mut fds = Vec::new();
        let file = File {
            version: crate::VERSION.to_owned(),
            programs: self
                .programs
                .into_values()
                .map(|mut frozen| {
                    for (i, fd) in frozen.owned.iter_mut().enumerate() {
                        frozen.fds[i] = fd.as_ref().map(AsRawFd::as_raw_fd);
                        if let Some(fd) = fd.take() {
                            fds.push(fd);
                        }
                    }
                    frozen
                })
                .collect(),
            listeners: self
                .listeners
                .iter()
                .map(|(name, fd)| (name.clone(), fd.as_raw_fd()))
                .collect(),
        };
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(path, bytes));
        if let Err(e) = written {
            return e;
        }
        let inherit = |fd: &OwnedFd, on: bool| {
            let flags = if on {
                nix::fcntl::FdFlag::empty()
            } else {
                nix::fcntl::FdFlag::FD_CLOEXEC
            };
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags));
        };
        for fd in fds.iter().chain(self.listeners.values()) {
            inherit(fd, true);
        }
        // Blocked across exec, so a signal that arrives before the next
        // executable has its handlers waits for them ([`unblock_signals`]).
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&daemon_signals()),
            None,
        );
        let error = command.exec();
        unblock_signals();
        for fd in fds.iter().chain(self.listeners.values()) {
            inherit(fd, false);
        }
        let _ = std::fs::remove_file(path);
        error
    }

    /// Reads what the previous executable of this process left at `path`,
    /// taking ownership of the descriptors it names, and removes the file.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        let _ = std::fs::remove_file(path);
        let file: File = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        let mut taken = std::collections::BTreeSet::new();
        // Each number is taken once, and only while open: never a descriptor
        // this process already owns elsewhere (none is open yet but 0-2 and
        // what the file names).
        let mut take = |fd: RawFd| -> Option<OwnedFd> {
            // SAFETY: F_GETFD only asks whether the number is open.
            let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            (fd > 2 && open && taken.insert(fd)).then(|| {
                // SAFETY: the previous executable of this process kept `fd`
                // open across exec for us and named it in the file; it is
                // open, above stdio, and taken only once here.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let _ = nix::fcntl::fcntl(
                    &owned,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
                owned
            })
        };
        let mut listeners = BTreeMap::new();
        for (name, fd) in file.listeners {
            if let Some(owned) = take(fd) {
                listeners.insert(name, owned);
            }
        }
        let mut programs = BTreeMap::new();
        for mut frozen in file.programs {
            for i in 0..2 {
                frozen.owned[i] = frozen.fds[i].and_then(&mut take);
            }
            programs.insert(frozen.name.clone(), frozen);
        }
        Ok(Self {
            programs,
            listeners,
            from: file.version,
        })
    }

    /// The listening socket the previous executable added under `name`.
    pub fn take_listener(&mut self, name: &str) -> Option<std::net::TcpListener> {
        self.listeners.remove(name).map(std::net::TcpListener::from)
    }

    /// Where the handover file of a supervisor with state folder `dir` goes.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("upgrade.json")
    }
}

/// The signals zistd handles.
fn daemon_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    let mut set = nix::sys::signal::SigSet::empty();
    for signal in [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR2] {
        set.add(signal);
    }
    set
}

/// Unblocks the signals an upgrade blocked across exec; call once the
/// handlers are in place (pending ones are handled then).
pub fn unblock_signals() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
        Some(&daemon_signals()),
        None,
    );
}

/// What an upgrade switches between.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The running version.
    pub from: String,
    /// The new executable's version.
    pub to: String,
}

/// The path this process was started from, as it names the executable
/// now (after `cargo install` wrote a new file there, the old one is gone).
pub fn started_from() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Checks the executable an upgrade would switch to: it runs, says its
/// version (`EXE --version`), and accepts the config (`EXE check -c
/// CONFIG`). The error says what failed, with the executable's own words.
pub fn check_new_executable(exe: &Path, config: &Path) -> crate::Result<UpgradeReport> {
    let refused = |what: String| crate::Error::UpgradeRefused(what);
    let run = |args: &[&std::ffi::OsStr]| {
        let mut command = std::process::Command::new(exe);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Claimed under the gate: the orphan reaper leaves its status to us.
        let gate = crate::reaper::spawn_gate();
        let child = command.spawn();
        if let Ok(child) = &child {
            crate::reaper::claim(child.id() as i32);
        }
        drop(gate);
        let child = child.map_err(|e| refused(format!("cannot run {}: {e}", exe.display())))?;
        let pid = child.id() as i32;
        let output = child.wait_with_output();
        crate::reaper::release(pid);
        output.map_err(|e| refused(format!("cannot run {}: {e}", exe.display())))
    };
    let version = run(&["--version".as_ref()])?;
    let text = String::from_utf8_lossy(&version.stdout);
    let to = match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["zistd", to] if version.status.success() => to.to_owned(),
        _ if !version.status.success() => {
            return Err(refused(format!(
                "{} --version failed: {}",
                exe.display(),
                String::from_utf8_lossy(&version.stderr).trim()
            )));
        }
        _ => {
            return Err(refused(format!(
                "{} is not zistd (its --version says {:?})",
                exe.display(),
                text.trim()
            )));
        }
    };
    let check = run(&["check".as_ref(), "-c".as_ref(), config.as_os_str()])?;
    if !check.status.success() {
        return Err(refused(format!(
            "{} rejects the config: {}",
            exe.display(),
            String::from_utf8_lossy(&check.stderr).trim()
        )));
    }
    Ok(UpgradeReport {
        from: crate::VERSION.to_owned(),
        to,
    })
}
