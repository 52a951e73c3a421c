//! Telling systemd how the supervisor is doing (docs/reference.md §11),
//! as `sd_notify(3)` does: one datagram of `KEY=VALUE` lines to the socket
//! named in `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! Sending never blocks and never fails the caller: systemd that is slow or
//! gone costs a dropped datagram, and a warning once.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The variables systemd sets for the service's main process only; the
/// programs a supervisor starts must not see them (they would speak for it).
pub const SERVICE_ONLY_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The service manager's notification socket.
#[derive(Debug)]
pub struct Systemd {
    socket: UnixDatagram,
    to: SocketAddr,
    warned: AtomicBool,
}

impl Systemd {
    /// The socket `NOTIFY_SOCKET` names, when it is set and usable.
    pub fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let to = match Self::address(name.as_encoded_bytes()) {
            Ok(to) => to,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={}: {e}", name.to_string_lossy());
                return None;
            }
        };
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("cannot make a socket to notify systemd: {e}");
                return None;
            }
        };
        Some(Self {
            socket,
            to,
            warned: AtomicBool::new(false),
        })
    }

    fn address(name: &[u8]) -> io::Result<SocketAddr> {
        match name {
            [b'@', abstract_name @ ..] => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name)
            }
            [b'/', ..] => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor @name",
            )),
        }
    }

    /// Sends `lines` (`READY=1`, `STATUS=...`, one per line) as one datagram.
    pub fn notify(&self, lines: &str) {
        if let Err(e) = self.socket.send_to_addr(lines.as_bytes(), &self.to)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("cannot notify systemd: {e} (said once)");
        }
    }

    /// Up and serving.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// Reloading its configuration (`READY=1` follows when done).
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
        });
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// One line of status for `systemctl status`.
    pub fn status(&self, text: &str) {
        // One line: a newline would start another assignment.
        self.notify(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// Still alive, for the service's `WatchdogSec`.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is
    /// set for this process (`WATCHDOG_PID` unset or this process's pid).
    pub fn watchdog_every() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_arrives_as_one_datagram_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let systemd = Systemd {
            socket: UnixDatagram::unbound().unwrap(),
            to: Systemd::address(path.as_os_str().as_bytes()).unwrap(),
            warned: AtomicBool::new(false),
        };
        let mut buf = [0u8; 256];
        systemd.reloading();
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let (first, usec) = text.split_once('\n').unwrap();
        assert_eq!(first, "RELOADING=1");
        let usec: u64 = usec
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0, "{text}");
        systemd.status("2 programs,\n1 running");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=2 programs, 1 running");
    }

    #[test]
    fn an_address_is_a_path_or_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let path = Systemd::address(b"/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = Systemd::address(b"@zist/notify").unwrap();
        assert_eq!(abstract_name.as_abstract_name(), Some(&b"zist/notify"[..]));
        assert!(Systemd::address(b"relative").is_err());
    }
}
