//! Test support shared by every crate's tests (feature `testing`): temp
//! folders with scripts, a supervisor that kills every process group it
//! started when a test ends (even by panic), waits with deadlines, and a
//! raw HTTP/1.1 client bounded in time.
//!
//! Nothing here mocks the operating system: tests run real processes on
//! real files and sockets, and only end processes they started, by group.

#![allow(missing_docs, clippy::missing_panics_doc)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_stream::StreamExt;

use crate::{
    Feed, ProcessEvent, ProcessState, ProgramName, ProgramSpec, Supervisor, SupervisorOptions,
};

/// A temporary folder for one test, removed when dropped.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    pub fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Writes a file, making its folders.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes an executable shell script.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.write(rel, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// A spec running `sh -c body`, logging into this folder, starting at once.
    pub fn sh(&self, name: &str, body: &str) -> ProgramSpec {
        let mut spec = ProgramSpec::new(ProgramName::new(name).expect("a valid name"), "/bin/sh")
            .args(["-c", body]);
        spec.logfile = Some(self.join(&format!("logs/{name}.out.log")));
        spec.err_logfile = Some(self.join(&format!("logs/{name}.err.log")));
        spec.start_secs = Duration::from_millis(200);
        spec.stop_timeout = Duration::from_secs(3);
        spec
    }
}

/// Process groups to kill when the test ends, however it ends.
#[derive(Clone, Default)]
pub struct Groups(Arc<Mutex<HashSet<i32>>>);

impl Groups {
    pub fn add(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pgid);
    }

    pub fn kill_all(&self) {
        for pgid in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
    }
}

/// A supervisor whose programs' groups are all killed when it is dropped.
pub struct Sup {
    pub sup: Supervisor,
    pub groups: Groups,
}

impl Sup {
    pub fn new(dir: &Dir) -> Self {
        Self::wrap(Supervisor::new(SupervisorOptions {
            log_dir: dir.join("logs"),
            ..SupervisorOptions::default()
        }))
    }

    /// Watches `sup`'s events and remembers every pid it spawns.
    pub fn wrap(sup: Supervisor) -> Self {
        let groups = Groups::default();
        let mut events = sup.events();
        let seen = groups.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let Feed::Item(ProcessEvent { pid: Some(pid), .. }) = ev {
                    seen.add(pid);
                }
            }
        });
        let this = Self { sup, groups };
        this.track_all();
        this
    }

    /// Registers and starts `spec`; returns its pid, whose group is killed at the end.
    pub async fn run(&self, spec: ProgramSpec) -> i32 {
        let info = self.sup.register(spec).await.expect("register and start");
        let pid = info.pid.expect("a started program has a pid");
        self.groups.add(pid);
        pid
    }

    /// Records the pids currently known, so they are killed at the end.
    pub fn track_all(&self) {
        for info in self.sup.list() {
            if let Some(pid) = info.pid {
                self.groups.add(pid);
            }
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        self.track_all();
        self.groups.kill_all();
    }
}

impl std::ops::Deref for Sup {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

/// Polls `check` until it is true; panics naming `what` once `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    eventually_async(limit, what, async || check()).await;
}

/// [`eventually`] with a check that awaits (an API call, say).
pub async fn eventually_async(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for tests without a runtime.
pub fn eventually_blocking(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until program `name` is in `state`.
pub async fn wait_state(sup: &Supervisor, name: &str, state: ProcessState, limit: Duration) {
    eventually(limit, &format!("{name} to be {state}"), || {
        sup.info(name).map(|i| i.state == state).unwrap_or(false)
    })
    .await;
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// Every process below `pid` (its children, theirs, ...), from `/proc`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut tree = crate::adopt::tree(pid);
    tree.retain(|&p| p != pid);
    tree
}

/// Whether a process group has a member.
pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// An answer read whole by [`request`].
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body as sent (lossy UTF-8; chunks not decoded).
    pub body: String,
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to
/// its end; connect and read are bounded in time. `headers` are whole lines
/// ending in `\r\n`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    // A server may answer (413, 401) before it reads the whole body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            let how = read
                .err()
                .map_or("end of stream".to_owned(), |e| e.to_string());
            std::io::Error::other(format!("no HTTP status line in {text:?} ({how})"))
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
