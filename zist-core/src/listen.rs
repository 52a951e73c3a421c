//! Sockets zist holds for a program (`Listen`, docs/reference.md §9).
//!
//! They are opened once, when the program is registered, and kept open by
//! zistd across every restart of the program (and reused by a reload that
//! keeps the same addresses): clients connect to the kernel's backlog,
//! which never closes while a process of the program is restarted. Each
//! spawn passes them to the process at fds 3, 4, ... with `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES`, as systemd's socket activation does.

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
}

impl Sockets {
    /// Binds and listens on every address; the error names the one that failed.
    pub(crate) fn open(
        addresses: &[ListenAddress],
    ) -> Result<Self, (ListenAddress, std::io::Error)> {
        let mut fds = Vec::with_capacity(addresses.len());
        for address in addresses {
            let fd = bind(address).map_err(|e| (address.clone(), e))?;
            fds.push(fd);
        }
        Ok(Self {
            addresses: addresses.to_vec(),
            fds,
        })
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
        for address in &self.addresses {
            if let ListenAddress::Unix(path) = address {
                let _ = std::fs::remove_file(path);
            }
        }
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
