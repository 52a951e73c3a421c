//! Sockets zist holds for a program (`Listen`, docs/reference.md §9).
//!
//! They are opened once, when the program is registered, and kept open by
//! zistd across every restart of the program (and reused by a reload that
//! keeps the same addresses): clients connect to the kernel's backlog,
//! which never closes while a process of the program is restarted. Each
//! spawn passes them to the process at fds 3, 4, ... with `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES`, as systemd's socket activation does.
//!
//! They outlive zistd itself: an upgrade in place hands them to the next
//! executable, and a zistd started after a crash takes them back from the
//! running processes it adopts (which hold them at fds 3, 4, ...) rather
//! than failing to bind an address they still listen on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::spec::ListenAddress;

/// The backlog of each socket: connections wait there while no process
/// accepts (between two instances' restarts, say).
const BACKLOG: i32 = 1024;

/// A program's held sockets, in the order of its `Listen`.
#[derive(Debug)]
pub(crate) struct Sockets {
    addresses: Vec<ListenAddress>,
    fds: Vec<OwnedFd>,
    /// Unix socket files stay on the disk when dropped (handed over).
    keep_files: std::sync::atomic::AtomicBool,
}

/// The name under which an upgrade hands over program `base`'s socket on `address`.
pub(crate) fn handover_name(base: &str, address: &ListenAddress) -> String {
    format!("listen {base} {address}")
}

impl Sockets {
    /// The socket of each address: the one `handed` over for it, else a
    /// new one; when the address is in use, the one a process of
    /// `running()` holds at fds 3 and up (an earlier zistd's program).
    /// The error names the address that failed.
    pub(crate) fn open(
        addresses: &[ListenAddress],
        handed: Vec<Option<OwnedFd>>,
        running: impl Fn() -> Vec<i32>,
    ) -> Result<Self, (ListenAddress, std::io::Error)> {
        let mut fds = Vec::with_capacity(addresses.len());
        let mut handed = handed.into_iter();
        for address in addresses {
            let fd = match handed.next().flatten() {
                Some(fd) => fd,
                None => match bind(address) {
                    Ok(fd) => fd,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        held_by(&running(), address, addresses.len()).ok_or((address.clone(), e))?
                    }
                    Err(e) => return Err((address.clone(), e)),
                },
            };
            fds.push(fd);
        }
        Ok(Self {
            addresses: addresses.to_vec(),
            fds,
            keep_files: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Leaves Unix socket files where they are when dropped (the next
    /// executable holds the sockets).
    pub(crate) fn keep(&self) {
        self.keep_files
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The addresses, as `Listen` gave them.
    pub(crate) fn addresses(&self) -> &[ListenAddress] {
        &self.addresses
    }

    /// The sockets, in order.
    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(AsFd::as_fd).collect()
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        if self.keep_files.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        for address in &self.addresses {
            if let ListenAddress::Unix(path) = address {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The listening socket on `address` that one of `pids` holds at fds 3 to
/// `3 + count` (where zist put it when it spawned the process).
fn held_by(pids: &[i32], address: &ListenAddress, count: usize) -> Option<OwnedFd> {
    pids.iter().find_map(|&pid| {
        (3..3 + count as i32).find_map(|number| {
            let fd = crate::spawn::copy_fd_of(pid, number).ok()?;
            listens_on(&fd, address).then_some(fd)
        })
    })
}

/// Whether `fd` is a socket listening on `address`.
fn listens_on(fd: &OwnedFd, address: &ListenAddress) -> bool {
    use nix::sys::socket::{SockaddrStorage, getsockname, getsockopt, sockopt};
    if !getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        return false;
    }
    let Ok(local) = getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(fd)) else {
        return false;
    };
    match address {
        ListenAddress::Tcp(std::net::SocketAddr::V4(want)) => local
            .as_sockaddr_in()
            .is_some_and(|got| std::net::SocketAddrV4::from(*got) == *want),
        ListenAddress::Tcp(std::net::SocketAddr::V6(want)) => {
            local.as_sockaddr_in6().is_some_and(|got| {
                std::net::SocketAddrV6::from(*got).ip() == want.ip() && got.port() == want.port()
            })
        }
        ListenAddress::Unix(path) => local
            .as_unix_addr()
            .and_then(|got| got.path())
            .is_some_and(|got| got == path.as_path()),
    }
}

fn bind(address: &ListenAddress) -> std::io::Result<OwnedFd> {
    let fd: OwnedFd = match address {
        ListenAddress::Tcp(address) => std::net::TcpListener::bind(address)?.into(),
        ListenAddress::Unix(path) => {
            use std::os::unix::fs::FileTypeExt;
            // A socket left by an earlier zistd is replaced; anything else is not.
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is there",
                    ));
                }
                Err(_) => {}
            }
            std::os::unix::net::UnixListener::bind(path)?.into()
        }
    };
    // A deeper backlog than the standard library's.
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(BACKLOG)?)?;
    Ok(fd)
}
