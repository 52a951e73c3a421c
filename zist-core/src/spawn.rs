//! Turning a [`ProgramSpec`] into a running child, and the output relays used by detach.
//!
//! This is the only module with `unsafe`: the `pre_exec` hook that runs in the
//! forked child before `exec`. Everything it needs (user ids, groups, limits)
//! is computed before the fork, so the hook only makes system calls and never
//! allocates.
//!
//! A child starts in a new session (so it leads its own process group, which
//! stop and kill reach as a whole), with an empty signal mask and default
//! signal dispositions, with the file-descriptor limit zist itself started
//! with, with stdin on `/dev/null`, stdout and stderr on pipes read by zist,
//! and with every other descriptor marked close-on-exec, so no socket or pipe
//! of the supervisor leaks into it.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Uid, User};
use tokio::process::{Child, Command};

use crate::spec::ProgramSpec;

/// The `RLIMIT_NOFILE` zist started with, restored in every child.
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

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
}

/// Finds the executable a spec names: a path with a `/` as it is, a bare name on `PATH`.
pub(crate) fn resolve_executable(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<PathBuf, String> {
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
    Err(format!(
        "executable `{}` was not found on PATH ({search})",
        path.display()
    ))
}

/// Whether the spec's executable can be run now; the error says why not.
pub fn check_executable(path: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    resolve_executable(path, env).map(|_| ())
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("executable {} does not exist", path.display()))
        }
        Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
        Ok(m) if m.is_dir() => Err(format!(
            "{} is a directory, not an executable",
            path.display()
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!(
            "{} is not executable; run chmod +x on it",
            path.display()
        )),
        Ok(_) => Ok(()),
    }
}

/// A freshly spawned child with the read ends of its output pipes.
pub(crate) struct Spawned {
    pub child: Child,
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The identity a child switches to, resolved before the fork.
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

fn identity(name: &str) -> Result<(Identity, User), String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
        .ok_or_else(|| format!("user `{name}` does not exist on this machine"))?;
    if !Uid::effective().is_root() && Uid::effective() != user.uid {
        return Err(format!(
            "User = \"{name}\" needs zistd to run as root (it runs as uid {})",
            Uid::effective()
        ));
    }
    let cname = CString::new(name).map_err(|_| format!("user name {name:?} has a NUL byte"))?;
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

/// Spawns the program a spec describes. Errors are worded for a person.
pub(crate) fn spawn(spec: &ProgramSpec) -> Result<Spawned, String> {
    let exe = resolve_executable(&spec.path, &spec.env)?;
    let workdir = match &spec.workingdir {
        Some(dir) => dir.clone(),
        None => exe
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    if !workdir.is_dir() {
        return Err(format!(
            "working directory {} does not exist",
            workdir.display()
        ));
    }
    let (who, user) = match &spec.user {
        Some(name) => {
            let (id, user) = identity(name)?;
            (Some(id), Some(user))
        }
        None => (None, None),
    };
    let (stdout_r, stdout_w) = cloexec_pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let (stderr_r, stderr_w) = cloexec_pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;

    let mut cmd = Command::new(&exe);
    cmd.args(&spec.args)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_w))
        .stderr(Stdio::from(stderr_w))
        .kill_on_drop(false);
    if let Some(user) = &user {
        for (key, value) in [
            ("HOME", user.dir.as_os_str()),
            ("USER", OsStr::new(&user.name)),
            ("LOGNAME", OsStr::new(&user.name)),
        ] {
            cmd.env(key, value);
        }
    }
    cmd.envs(&spec.env);
    let nofile = ORIGINAL_NOFILE.get().copied();
    // SAFETY: the closure runs in the forked child before exec. It only makes
    // async-signal-safe system calls on values computed before the fork
    // (`who`, `nofile`), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            reset_child_process_state()?;
            if let Some((soft, hard)) = nofile
                && libc::setrlimit(
                    libc::RLIMIT_NOFILE,
                    &libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    },
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(id) = &who {
                // Groups first, then the group id, and the user id last: after
                // setuid the process may no longer change the others.
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                    || libc::setgid(id.gid) != 0
                    || libc::setuid(id.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // Dropping the command closes our copies of the pipes' write ends, so the
    // read ends see end-of-file once the program's whole group has exited.
    drop(cmd);
    let pid = child
        .id()
        .ok_or_else(|| "the child exited before zist saw its pid".to_owned())? as i32;
    Ok(Spawned {
        child,
        pid,
        stdout: stdout_r,
        stderr: stderr_r,
    })
}

/// Starts a relay that copies `pipe` into `file` for a detached program.
///
/// The relay is `cat` in its own session: it outlives zist, never gets a
/// signal from it, and ends when the program closes its end of the pipe.
pub(crate) fn spawn_relay(pipe: OwnedFd, file: File) -> io::Result<Child> {
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::from(pipe))
        .stdout(Stdio::from(file))
        .stderr(Stdio::null())
        .current_dir("/")
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec, makes only
    // async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(|| reset_child_process_state());
    }
    let child = cmd.spawn()?;
    drop(cmd);
    Ok(child)
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
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The raw system call, because glibc's wrapper refuses signals 32
        // and 33, which a parent may still have set to ignored. For SIG_DFL
        // with no flags and an empty mask the kernel's struct is all zeros.
        let default_action = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<libc::c_void>(),
                    8usize,
                );
            }
        }
        // Mark every descriptor above stderr close-on-exec. The standard
        // library's own error-report pipe is close-on-exec already, so a
        // failed exec is still reported to the parent.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            let limit = libc::sysconf(libc::_SC_OPEN_MAX).clamp(256, 65536) as libc::c_int;
            for fd in 3..limit {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}
