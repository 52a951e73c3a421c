//! The holder: one small process that keeps every program's output pipes
//! open while zistd is down (docs/reference.md §8.3).
//!
//! A program whose output pipe has no reader dies of SIGPIPE at its next
//! write. zistd hands the holder a copy of the read end of each program's
//! stdout and stderr pipes (over a Unix socket, `SCM_RIGHTS`); the holder
//! only keeps them, and reads nothing. When zistd dies, the pipes keep a
//! reader: a program writes on until its pipe is full, then waits, and
//! loses nothing. The next zistd connects, takes copies of the pipes back
//! and reads what waited in them.
//!
//! The holder is zistd's own executable started again with [`ENV`] set (a
//! binary that runs a supervisor with a holder calls [`run_if_asked`] first
//! thing in `main`). It runs in a session of its own, so signals for
//! zistd's group never reach it; it exits when told to (zistd's clean
//! shutdown), or when zistd is gone and it holds nothing. If it dies, zistd
//! notices at once (its socket closes), logs it, starts another and hands
//! it every pipe again; the programs never notice.
//!
//! Messages are datagrams of one line each: `hold NAME STREAM` with one
//! descriptor, `pair NAME` with stdout's and stderr's (one message a
//! spawn), `drop NAME`, `list` (answered by `fd NAME STREAM` with one
//! descriptor each, then `end`), `quit`. A holder outlives upgrades of
//! zistd, so messages are only ever added, never changed.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept, bind, connect, listen, recvmsg, sendmsg, socket,
};

/// Set in the environment of the process that is to be the holder.
pub const ENV: &str = "ZIST_HOLDER";

/// Runs the holder and exits, when this process was started as one;
/// returns at once otherwise. A binary that runs a [`crate::Supervisor`]
/// with [`crate::SupervisorOptions::holder`] calls it first thing in `main`.
pub fn run_if_asked() {
    if std::env::var_os(ENV).is_some() {
        std::process::exit(serve());
    }
}

/// Pipes taken back from a holder: per program, its stdout and stderr.
pub(crate) type Held = HashMap<String, [Option<OwnedFd>; 2]>;

/// Receives one message and the descriptors that came with it.
fn receive(sock: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in our
            // table for this message; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// Sends one message with `fds`.
fn send(sock: RawFd, text: &str, fds: &[RawFd], flags: MsgFlags) -> nix::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock, &[IoSlice::new(text.as_bytes())], cmsgs, flags, None).map(|_| ())
}

/// The holder's own loop: serve one zistd at a time, keep the pipes.
fn serve() -> i32 {
    // The listening socket is this process's stdin.
    // SAFETY: zistd started the holder with the listening socket as
    // descriptor 0, which nothing else in this process uses.
    let listener = unsafe { OwnedFd::from_raw_fd(0) };
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let mut held: HashMap<(String, u8), OwnedFd> = HashMap::new();
    crate::memory::release_start_up_pages();
    loop {
        let conn = match accept(listener.as_fd()) {
            Ok(conn) => conn,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        };
        let mut buf = [0u8; 256];
        loop {
            let (n, mut fds) = match receive(conn.as_raw_fd(), &mut buf) {
                Ok((0, _)) => break, // zistd is gone
                Ok(got) => got,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let words: Vec<&str> = text.split(' ').collect();
            match words[..] {
                ["hold", name, stream] => {
                    if let (Some(fd), Ok(stream)) = (fds.pop(), stream.parse::<u8>()) {
                        held.insert((name.to_owned(), stream), fd);
                    }
                }
                ["pair", name] if fds.len() == 2 => {
                    let err = fds.pop();
                    let out = fds.pop();
                    for (stream, fd) in [(0u8, out), (1, err)] {
                        if let Some(fd) = fd {
                            held.insert((name.to_owned(), stream), fd);
                        }
                    }
                }
                ["drop", name] => held.retain(|(held_name, _), _| held_name != name),
                ["list"] => {
                    for ((name, stream), fd) in &held {
                        let line = format!("fd {name} {stream}");
                        let _ = send(
                            conn.as_raw_fd(),
                            &line,
                            &[fd.as_raw_fd()],
                            MsgFlags::empty(),
                        );
                    }
                    let _ = send(conn.as_raw_fd(), "end", &[], MsgFlags::empty());
                }
                ["quit"] => return 0,
                _ => {}
            }
        }
        if held.is_empty() {
            return 0;
        }
    }
}

/// zistd's side: the link to its holder.
pub(crate) struct Holder {
    dir: PathBuf,
    link: Mutex<Option<OwnedFd>>,
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("holder.sock")
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn connect_to(path: &Path) -> io::Result<OwnedFd> {
    let sock = seqpacket()?;
    connect(sock.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(sock)
}

impl Holder {
    /// Connects to the holder a previous zistd left in `dir` and takes
    /// back copies of the pipes it holds, or starts a new holder.
    /// `take_back`: false after an upgrade, whose pipes came across exec.
    pub(crate) fn open(dir: &Path, take_back: bool) -> io::Result<(Arc<Self>, Held)> {
        let path = socket_path(dir);
        let (link, held) = match connect_to(&path) {
            Ok(link) => {
                let held = if take_back { list(&link)? } else { Held::new() };
                (link, held)
            }
            Err(_) => (start(dir)?, Held::new()),
        };
        Ok((
            Arc::new(Self {
                dir: dir.to_owned(),
                link: Mutex::new(Some(link)),
            }),
            held,
        ))
    }

    fn link(&self) -> MutexGuard<'_, Option<OwnedFd>> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one line with `fds`; never waits on a holder that does not read.
    fn tell(&self, line: &str, fds: &[RawFd]) {
        let link = self.link();
        let Some(link) = link.as_ref() else { return };
        if let Err(e) = send(link.as_raw_fd(), line, fds, MsgFlags::MSG_DONTWAIT) {
            tracing::warn!("cannot reach the holder process ({e}): `{line}` not done");
        }
    }

    /// Hands the holder a copy of a program's pipe (stream 0: stdout, 1:
    /// stderr); `fd` must be open (the kernel copies it as it is sent).
    pub(crate) fn hold(&self, name: &str, stream: usize, fd: RawFd) {
        self.tell(&format!("hold {name} {stream}"), &[fd]);
    }

    /// Hands the holder copies of a program's stdout and stderr pipes in
    /// one message; both must be open.
    pub(crate) fn hold_pair(&self, name: &str, out: RawFd, err: RawFd) {
        self.tell(&format!("pair {name}"), &[out, err]);
    }

    /// The holder lets go of a program's pipes.
    pub(crate) fn forget(&self, name: &str) {
        self.tell(&format!("drop {name}"), &[]);
    }

    /// Ends the holder (zistd stops every program: nothing is left to hold).
    pub(crate) fn quit(&self) {
        self.tell("quit", &[]);
        *self.link() = None;
    }

    /// Watches the holder; when it dies, starts another and calls
    /// `replaced`, which hands it every pipe again.
    pub(crate) fn watch(self: &Arc<Self>, replaced: impl Fn() + Send + 'static) {
        let holder = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let watched = {
                    let Some(holder) = holder.upgrade() else {
                        return;
                    };
                    let link = holder.link();
                    match link.as_ref().map(|l| l.try_clone()) {
                        Some(Ok(fd)) => fd,
                        _ => return,
                    }
                };
                // SAFETY: the descriptor is moved into the AsyncFd, so it stays
                // open and the same until the AsyncFd is dropped.
                let registered = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        watched,
                        tokio::io::Interest::READABLE,
                    )
                };
                let Ok(watched) = registered else {
                    return;
                };
                // The holder never speaks unasked: readable means it is gone.
                let _ = watched.readable().await;
                let Some(holder) = holder.upgrade() else {
                    return;
                };
                if holder.link().is_none() {
                    return; // told to quit
                }
                tracing::warn!("the holder process ended; starting another");
                match start(&holder.dir) {
                    Ok(link) => {
                        *holder.link() = Some(link);
                        replaced();
                    }
                    Err(e) => {
                        tracing::error!(
                            "cannot start a holder process: {e}; programs die of SIGPIPE if zistd does"
                        );
                        *holder.link() = None;
                        return;
                    }
                }
            }
        });
    }
}

/// Takes copies of every pipe the holder at `link` holds.
fn list(link: &OwnedFd) -> io::Result<Held> {
    nix::sys::socket::setsockopt(
        link,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    send(link.as_raw_fd(), "list", &[], MsgFlags::empty())?;
    let mut held = Held::new();
    let mut buf = [0u8; 256];
    loop {
        let (n, mut fds) = receive(link.as_raw_fd(), &mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        match text.split(' ').collect::<Vec<_>>()[..] {
            ["end"] | [""] => break,
            ["fd", name, stream] => {
                if let (Some(fd), Ok(stream @ 0..=1)) = (fds.pop(), stream.parse::<usize>()) {
                    held.entry(name.to_owned()).or_default()[stream] = Some(fd);
                }
            }
            _ => {}
        }
    }
    nix::sys::socket::setsockopt(
        link,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 0),
    )?;
    Ok(held)
}

/// Starts a holder listening in `dir`; returns the link to it.
fn start(dir: &Path) -> io::Result<OwnedFd> {
    let path = socket_path(dir);
    let _ = std::fs::remove_file(&path);
    let listener = seqpacket()?;
    bind(listener.as_raw_fd(), &UnixAddr::new(&path)?)?;
    listen(&listener, Backlog::new(4).unwrap_or(Backlog::MAXCONN))?;
    let exe = std::env::current_exe()?;
    let pid = crate::spawn::spawn_holder(&exe, listener, ENV)?;
    let _ = std::fs::write(dir.join("holder.pid"), format!("{pid}\n"));
    connect_to(&path)
}
