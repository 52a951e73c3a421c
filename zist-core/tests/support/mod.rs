//! Test helpers: temp folders with scripts and configs, a supervisor that
//! kills every process group it started when the test ends (even by panic),
//! and waits with deadlines.

#![allow(dead_code)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_stream::StreamExt;
use zist_core::{
    Feed, ProcessEvent, ProcessState, ProgramName, ProgramSpec, Supervisor, SupervisorOptions,
};

/// A temporary folder for one test.
pub struct Dir {
    pub tmp: tempfile::TempDir,
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
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes an executable shell script.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.write(rel, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A spec running `sh -c body`, logging into this folder, starting at once.
    pub fn sh(&self, name: &str, body: &str) -> ProgramSpec {
        let mut spec =
            ProgramSpec::new(ProgramName::new(name).unwrap(), "/bin/sh").args(["-c", body]);
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
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    pub fn kill_all(&self) {
        for pgid in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
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

/// Polls `check` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until program `name` is in `state`.
pub async fn wait_state(sup: &Supervisor, name: &str, state: ProcessState, limit: Duration) {
    eventually(limit, &format!("{name} to be {state}"), || {
        sup.info(name).map(|i| i.state == state).unwrap_or(false)
    })
    .await;
}

/// Whether a process (or group, with a negative number) exists.
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

pub const SECS_5: Duration = Duration::from_secs(5);
pub const SECS_10: Duration = Duration::from_secs(10);
