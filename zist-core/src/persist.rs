//! What a supervisor remembers across its own restarts (docs/reference.md §8).
//!
//! One file, `<StateDir>/state.json`, holds per program what the user asked
//! for (the intent), the `restarts` counter, the spec of a program added at
//! run time, and the identity of its live process (pid, start time,
//! executable), so that a zistd started again adopts the process instead of
//! starting a second copy.
//!
//! Changes are made in memory and written by one thread of the store's own:
//! it writes the whole file to a temporary name and renames it over the old
//! one, so a crash at any moment leaves the old or the new content, never a
//! torn file. Changes made while a write is under way are written together
//! by the next one, so a burst of a thousand changes costs a few writes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// The file's format version; a file of another version is not read.
const FORMAT: u32 = 1;

/// The least time between two writes: a burst of changes (a thousand
/// programs starting) costs a few writes, not one per change.
const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// What a user last asked of a program through an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Intent {
    /// Started (or restarted): started again after a zistd restart.
    Start,
    /// Stopped: stays stopped, Autostart notwithstanding.
    Stop,
    /// Detached: neither adopted nor started again until asked.
    Detach,
}

/// The identity of a live process: enough to find it again, and never to
/// mistake another process that reuses its pid for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
    /// What `/proc/<pid>/exe` named; empty until the writer has read it.
    pub exe: String,
    /// When it was spawned, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// What is remembered of one program.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    #[serde(default)]
    pub restarts: u32,
    /// The spec of a program added at run time, as program-file keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    /// A program with instances scaled at run time: `[configured, chosen]`;
    /// the chosen number holds while its spec still says `configured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<[u32; 2]>,
}

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub format: u32,
    /// The boot the process records belong to: after a reboot they name nothing.
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub programs: BTreeMap<String, Remembered>,
}

struct Shared {
    saved: Saved,
    /// Bumped by every change; the writer has written up to `written`.
    changed: u64,
    written: u64,
    closed: bool,
}

/// The state file and its writer.
pub(crate) struct Store {
    path: PathBuf,
    shared: Mutex<Shared>,
    wake: Condvar,
}

/// The boot's identity, as the kernel gives it.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl Store {
    /// Opens the store in `dir` (created mode 0700), reading what it holds.
    /// A missing, unreadable or corrupt file is a warning and an empty
    /// state; only a folder that cannot be made or written is an error.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join("state.json");
        let mut saved = read_saved(&path);
        let boot = boot_id();
        if saved.boot_id != boot {
            // After a reboot no recorded process exists any more.
            for program in saved.programs.values_mut() {
                program.process = None;
            }
            saved.boot_id = boot;
        }
        saved.format = FORMAT;
        let store = Arc::new(Self {
            path,
            shared: Mutex::new(Shared {
                saved,
                changed: 0,
                written: 0,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let writer = store.clone();
        std::thread::Builder::new()
            .name("zist-state".into())
            .spawn(move || writer.write_loop())?;
        Ok(store)
    }

    /// The state folder.
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the file held when the store was opened (or has been set since).
    pub(crate) fn get(&self, name: &str) -> Option<Remembered> {
        self.lock().saved.programs.get(name).cloned()
    }

    /// The names of programs added at run time, with their specs.
    pub(crate) fn runtime_programs(&self) -> Vec<(String, serde_json::Value)> {
        self.lock()
            .saved
            .programs
            .iter()
            .filter_map(|(name, p)| Some((name.clone(), p.spec.clone()?)))
            .collect()
    }

    /// Changes what is remembered of `name`; written soon after.
    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut Remembered)) {
        let mut shared = self.lock();
        let entry = shared.saved.programs.entry(name.to_owned()).or_default();
        let before = entry.clone();
        change(entry);
        if *entry != before {
            shared.changed += 1;
            self.wake.notify_all();
        }
    }

    /// Forgets `name` altogether (`process.remove`).
    pub(crate) fn forget(&self, name: &str) {
        let mut shared = self.lock();
        if shared.saved.programs.remove(name).is_some() {
            shared.changed += 1;
            self.wake.notify_all();
        }
    }

    /// Keeps only the programs `keep` accepts.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&str, &Remembered) -> bool) {
        let mut shared = self.lock();
        let before = shared.saved.programs.len();
        shared.saved.programs.retain(|name, p| keep(name, p));
        if shared.saved.programs.len() != before {
            shared.changed += 1;
            self.wake.notify_all();
        }
    }

    /// Waits until every change made so far is in the file.
    pub(crate) fn flush(&self) {
        let mut shared = self.lock();
        let target = shared.changed;
        while shared.written < target && !shared.closed {
            shared = self
                .wake
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes what is left and ends the writer.
    pub(crate) fn close(&self) {
        self.flush();
        self.lock().closed = true;
        self.wake.notify_all();
    }

    fn write_loop(&self) {
        let mut last_write: Option<std::time::Instant> = None;
        let mut shared = self.lock();
        loop {
            while shared.written == shared.changed && !shared.closed {
                shared = self
                    .wake
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if shared.written == shared.changed {
                return;
            }
            if let Some(wait) = last_write.and_then(|at| MIN_GAP.checked_sub(at.elapsed()))
                && !shared.closed
            {
                drop(shared);
                std::thread::sleep(wait);
                shared = self.lock();
            }
            shared = self.read_executables(shared);
            let target = shared.changed;
            if let Err(e) = self.write_file(shared) {
                tracing::warn!(
                    "cannot write the state file {}: {e}; what was asked since may be forgotten by the next zistd",
                    self.path.display()
                );
            }
            last_write = Some(std::time::Instant::now());
            shared = self.lock();
            shared.written = target;
            self.wake.notify_all();
        }
    }

    /// Fills in the executables of new processes, read here rather than on
    /// the spawn path, a few at a time without the lock: this thread's
    /// memory stays a few pages however many programs start at once.
    fn read_executables<'a>(
        &'a self,
        mut shared: MutexGuard<'a, Shared>,
    ) -> MutexGuard<'a, Shared> {
        const BATCH: usize = 32;
        let mut after: Option<String> = None;
        loop {
            let from = match &after {
                Some(name) => Bound::Excluded(name.as_str()),
                None => Bound::Unbounded,
            };
            let unread: Vec<(String, i32)> = shared
                .saved
                .programs
                .range::<str, _>((from, Bound::Unbounded))
                .filter_map(|(name, p)| {
                    let process = p.process.as_ref()?;
                    process.exe.is_empty().then(|| (name.clone(), process.pid))
                })
                .take(BATCH)
                .collect();
            let Some((last, _)) = unread.last() else {
                return shared;
            };
            after = Some(last.clone());
            drop(shared);
            let read: Vec<(String, i32, Option<String>)> = unread
                .into_iter()
                .map(|(name, pid)| (name, pid, exe_of(pid)))
                .collect();
            shared = self.lock();
            for (name, pid, exe) in read {
                if let Some(process) = shared
                    .saved
                    .programs
                    .get_mut(&name)
                    .and_then(|p| p.process.as_mut())
                    .filter(|p| p.pid == pid && p.exe.is_empty())
                    && let Some(exe) = exe
                {
                    process.exe = exe;
                }
            }
        }
    }

    /// Writes what `shared` holds under a temporary name (serialised
    /// straight into the file through a small buffer: a thousand programs'
    /// state is never a second copy in memory), lets go of the lock, then
    /// syncs and renames it over the file.
    fn write_file(&self, shared: MutexGuard<'_, Shared>) -> std::io::Result<()> {
        let temporary = self.path.with_extension("json.new");
        let file = std::fs::File::create(&temporary)?;
        let mut out = std::io::BufWriter::with_capacity(8192, file);
        serde_json::to_writer(&mut out, &shared.saved).map_err(std::io::Error::other)?;
        drop(shared);
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temporary, &self.path)
    }
}

/// Reads the state file; anything wrong with it is a warning and an empty state.
fn read_saved(path: &Path) -> Saved {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
        Err(e) => {
            tracing::warn!(
                "cannot read the state file {}: {e}; starting as new",
                path.display()
            );
            return Saved::default();
        }
    };
    match serde_json::from_slice::<Saved>(&bytes) {
        Ok(saved) if saved.format == FORMAT => saved,
        Ok(saved) => {
            tracing::warn!(
                "the state file {} has format {}, not {FORMAT}; starting as new",
                path.display(),
                saved.format
            );
            Saved::default()
        }
        Err(e) => {
            tracing::warn!(
                "the state file {} is corrupt ({e}); starting as new",
                path.display()
            );
            Saved::default()
        }
    }
}

/// The start time (clock ticks after boot) of process `pid`, from `/proc`.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    stat_of(pid).map(|stat| stat.start_ticks)
}

/// What `/proc/<pid>/stat` says of a process that zist needs.
pub(crate) struct ProcStat {
    /// The state letter (`Z`: a zombie).
    pub state: char,
    pub parent: i32,
    /// The session it is in.
    pub session: i32,
    /// The kernel's flags (`PF_*`; field 9).
    pub flags: u64,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`.
pub(crate) fn stat_of(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    // Fields 5 to 8 (group, session, tty, tty group), then the flags.
    let session = fields.nth(1)?.parse().ok()?;
    let flags = fields.nth(2)?.parse().ok()?;
    let start_ticks = fields.nth(12)?.parse().ok()?;
    Some(ProcStat {
        state,
        parent,
        session,
        flags,
        start_ticks,
    })
}

/// What `/proc/<pid>/exe` names, when readable.
pub(crate) fn exe_of(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The parent pid of process `record.pid` when it is the one `record`
/// describes. A zombie has no executable to read: its start time alone
/// then decides (the pid cannot be reused before it is reaped).
pub(crate) fn matches(record: &ProcessRecord) -> Option<i32> {
    let stat = stat_of(record.pid)?;
    let exe_ok = record.exe.is_empty() || exe_of(record.pid).is_none_or(|exe| exe == record.exe);
    (stat.start_ticks == record.start_ticks && exe_ok).then_some(stat.parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_or_torn_file_is_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for bad in [
            &b"{\"format\": 1, \"programs\": {\"a\": {"[..],
            b"garbage",
            b"",
            b"[]",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_saved(&path).programs.is_empty());
        }
    }

    #[test]
    fn what_is_updated_is_in_the_file_after_a_flush_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.update("web", |p| {
            p.intent = Some(Intent::Stop);
            p.restarts = 3;
        });
        store.close();
        let again = Store::open(dir.path()).unwrap();
        let web = again.get("web").unwrap();
        assert_eq!(web.intent, Some(Intent::Stop));
        assert_eq!(web.restarts, 3);
        again.close();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn this_process_matches_its_own_record_and_not_another_start_time() {
        let pid = std::process::id() as i32;
        let record = ProcessRecord {
            pid,
            start_ticks: start_ticks(pid).unwrap(),
            exe: exe_of(pid).unwrap(),
            started_ms: 0,
        };
        assert_eq!(matches(&record), Some(nix::unistd::getppid().as_raw()));
        let other = ProcessRecord {
            start_ticks: record.start_ticks + 1,
            ..record.clone()
        };
        assert_eq!(matches(&other), None);
    }
}
