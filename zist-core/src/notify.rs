//! The Notify check (docs/reference.md §9): systemd's readiness protocol.
//!
//! A program with `Ready = { Notify = true }` finds a datagram socket's
//! path in `NOTIFY_SOCKET` and sends it lines such as `READY=1`,
//! `STATUS=loading 3 of 7` or `WATCHDOG=1`, as it would under systemd
//! (`sd_notify(3)`). Each program has a socket of its own, with a path that
//! depends only on the state folder and the program's name, so a zistd that
//! comes after an upgrade or a crash binds it again and the program's
//! notifications keep arriving.
//!
//! Who may send: the socket file is the program's user's alone (mode 0600,
//! owned by that user), and the kernel tells the sender's credentials with
//! every datagram (`SO_PASSCRED`). A message counts when its sender is
//! root or the program's user and, when the sender still runs, it is one
//! of the program's processes (its session, or a descendant of its main
//! process, as systemd's `NotifyAccess=all` accepts the unit's processes).

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The longest path a Unix socket address holds (with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One program's notification socket, removed when dropped.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    path: PathBuf,
    socket: Result<UnixDatagram, String>,
    /// The uid whose messages count (besides root's).
    uid: u32,
}

/// What one datagram said, from whom.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Notice {
    /// `READY=1`.
    pub ready: bool,
    /// `STATUS=...`.
    pub status: Option<String>,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the program asks to be treated as hung.
    pub trigger: bool,
}

impl NotifySocket {
    /// Binds the socket of program `name` in `state_dir`'s `notify` folder
    /// (else in a folder of this zistd's own in the temporary folder) and
    /// hands it to `user` (the program's User; else zistd's own). A failure
    /// is kept and told by every receive, as the reason the check fails.
    pub(crate) fn bind(name: &str, state_dir: Option<&Path>, user: Option<&str>) -> Self {
        let (uid, gid) = match user.map(crate::spawn::lookup_user) {
            Some(Ok(user)) => (user.uid.as_raw(), user.gid.as_raw()),
            // The spawn says why; nobody but root may send meanwhile.
            Some(Err(_)) => (0, 0),
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        let path = socket_path(name, state_dir);
        let socket = bind_at(&path, uid, gid);
        if let Err(why) = &socket {
            tracing::warn!(program = %name, "{why}");
        }
        Self { path, socket, uid }
    }

    /// The path the program finds in `NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Drops what earlier processes sent and nobody read (before a spawn).
    pub(crate) fn drain(&self) {
        if let Ok(socket) = &self.socket {
            let mut buf = [0u8; 64];
            while socket.try_recv(&mut buf).is_ok() {}
        }
    }

    /// The next message that counts from the program whose main process is
    /// `main`; messages from others are dropped. Cancel-safe.
    pub(crate) async fn recv(&self, main: Option<i32>) -> Result<Notice, String> {
        let socket = self.socket.as_ref().map_err(Clone::clone)?;
        loop {
            let (text, pid, uid) = socket
                .async_io(Interest::READABLE, || receive(socket.as_raw_fd()))
                .await
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            if uid != 0 && uid != self.uid {
                tracing::debug!(pid, uid, "a notification from another user, ignored");
                continue;
            }
            if let Some(main) = main
                && !of_program(pid, main)
            {
                tracing::debug!(pid, "a notification from outside the program, ignored");
                continue;
            }
            return Ok(parse(&text));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if self.socket.is_ok() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where program `name`'s socket goes: `<state>/notify/<name>`, or, with no
/// state folder (or one too deep for a socket's address), a folder of this
/// zistd's own in the temporary folder.
fn socket_path(name: &str, state_dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = state_dir {
        let path = std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_owned())
            .join("notify")
            .join(name);
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            return path;
        }
    }
    std::env::temp_dir()
        .join(format!("zist-notify.{}", std::process::id()))
        .join(name)
}

fn bind_at(path: &Path, uid: u32, gid: u32) -> Result<UnixDatagram, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |what: &str, e: std::io::Error| {
        format!(
            "cannot {what} the notification socket {}: {e}",
            path.display()
        )
    };
    if let Some(folder) = path.parent() {
        // Others may pass through to a socket whose owner they are, no more.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(folder)
            .map_err(|e| failed("make the folder of", e))?;
    }
    // A socket left by an earlier zistd (upgrade, crash) is bound again.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed("replace", e)),
    }
    let socket = UnixDatagram::bind(path).map_err(|e| failed("bind", e))?;
    setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| failed("set up", e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed("set the mode of", e))?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| failed("hand over", e.into()))?;
    Ok(socket)
}

/// Reads one datagram with its sender's credentials.
fn receive(fd: std::os::fd::RawFd) -> std::io::Result<(String, i32, u32)> {
    let mut buf = [0u8; 4096];
    // Credentials, and room for descriptors: `sd_notify_barrier` (as
    // `systemd-notify` uses) sends one and waits until it is closed.
    let mut space = nix::cmsg_space!(nix::libc::ucred, [std::os::fd::RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut sender = (0, u32::MAX);
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(creds) => sender = (creds.pid(), creds.uid()),
            ControlMessageOwned::ScmRights(fds) => {
                // Ours now (the kernel made them); closing one ends a barrier.
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    let len = msg.bytes;
    Ok((
        String::from_utf8_lossy(&buf[..len]).into_owned(),
        sender.0,
        sender.1,
    ))
}

/// Whether `pid` is one of the processes of the program whose main process
/// is `main`: in its session, or descended from it. A sender that has
/// already exited counts (`systemd-notify` is gone by the time its message
/// is read); the socket's owner and the credentials still vouch for it.
fn of_program(pid: i32, main: i32) -> bool {
    if pid == main {
        return true;
    }
    let Some(stat) = crate::persist::stat_of(pid) else {
        return true;
    };
    if stat.session == main {
        return true;
    }
    let mut parent = stat.parent;
    for _ in 0..64 {
        if parent == main {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        match crate::persist::stat_of(parent) {
            Some(stat) => parent = stat.parent,
            None => return false,
        }
    }
    false
}

/// The fields of a notification (`KEY=VALUE` lines); unknown ones are ignored.
fn parse(text: &str) -> Notice {
    let mut notice = Notice::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => notice.ready = true,
            Some(("STATUS", status)) => notice.status = Some(status.to_owned()),
            Some(("WATCHDOG", "1")) => notice.watchdog = true,
            Some(("WATCHDOG", "trigger")) => notice.trigger = true,
            _ => {}
        }
    }
    notice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_the_rest_ignored() {
        let notice = parse("READY=1\nSTATUS=serving on :8080\nMAINPID=7\nWATCHDOG=1\n");
        assert_eq!(
            notice,
            Notice {
                ready: true,
                status: Some("serving on :8080".into()),
                watchdog: true,
                trigger: false,
            }
        );
        assert_eq!(parse("READY=0\nBOGUS"), Notice::default());
        assert!(parse("WATCHDOG=trigger").trigger);
    }

    #[test]
    fn a_deep_state_folder_falls_back_to_the_temporary_one() {
        let deep = PathBuf::from("/").join("x".repeat(120));
        let path = socket_path("web", Some(&deep));
        assert!(path.starts_with(std::env::temp_dir()), "{path:?}");
        let near = socket_path("web", Some(Path::new("/var/lib/zist")));
        assert_eq!(near, Path::new("/var/lib/zist/notify/web"));
    }
}
