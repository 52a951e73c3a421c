//! A cgroup per program (docs/reference.md §8.5), where the machine allows it.
//!
//! A process group is escaped by any process that calls `setsid` (a double
//! fork, a daemon): a stop by group misses it. A cgroup is not escaped: a
//! program runs in `<zistd's cgroup>/zist.<id>/<name>`, its child joins it
//! between clone and exec, and so does everything it starts. A stop signals
//! the processes that left the group too, and once the program's group is
//! gone, whatever is left in its cgroup is killed. Stats count every
//! member of the cgroup, also those that left the program's session.
//!
//! The cgroup v2 hierarchy is found in `/proc/self/mountinfo` and this
//! process's place in it in `/proc/self/cgroup`; where there is none, or it
//! is not writable, zist says so once and keeps to process groups.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Whether the machine's answer was said in the log already.
static SAID: OnceLock<()> = OnceLock::new();

/// Where the cgroup v2 hierarchy is mounted, from `mountinfo`'s text.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_ascii_whitespace().next()?;
        let mount_point = before.split_ascii_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// `mountinfo` writes a space as `\040` and so on.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|c| u8::from_str_radix(c, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Sets up a supervisor's cgroup folder, named after `key` (its state
/// folder, so that a zistd started again finds the same one); `None` where
/// the machine has none for it, which the log says once.
pub(crate) fn init(key: &Path) -> Option<PathBuf> {
    match find_root(key) {
        Ok(root) => {
            tracing::info!(
                "each program runs in a cgroup of its own under {}",
                root.display()
            );
            Some(root)
        }
        Err(why) => {
            if SAID.set(()).is_ok() {
                tracing::info!("programs run in process groups, not cgroups: {why}");
            }
            None
        }
    }
}

fn find_root(key: &Path) -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_owned()))
        })
        .ok_or("this process has no place in the cgroup v2 hierarchy")?;
    let base = mount.join(own.trim_start_matches('/'));
    let root = base.join(format!("zist.{:016x}", fnv(key.as_os_str().as_bytes())));
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
    }
    // Writable where it counts: a process can be moved in.
    if std::fs::metadata(root.join("cgroup.procs")).is_err() {
        return Err(format!("{} is not a cgroup", root.display()));
    }
    Ok(root)
}

/// FNV-1a: a stable name for a path.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One program's cgroup.
#[derive(Debug)]
pub(crate) struct ProgramCgroup {
    /// `<its folder>/cgroup.procs`, for the child to join between clone and
    /// exec; the only path kept (a thousand programs, one path each).
    pub procs: CString,
}

impl ProgramCgroup {
    /// The cgroup of program `name` under `root`, created if need be;
    /// `None` when it cannot be made (said in the log).
    pub(crate) fn for_program(root: &Path, name: &str) -> Option<Self> {
        let dir = root.join(name);
        if let Err(e) = std::fs::create_dir(&dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            tracing::warn!(
                program = name,
                "cannot create the cgroup {}: {e}; using its process group",
                dir.display()
            );
            return None;
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).ok()?;
        Some(Self { procs })
    }

    fn procs_path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.procs.as_bytes()))
    }

    /// Its folder.
    fn dir(&self) -> &Path {
        self.procs_path().parent().unwrap_or(Path::new("/"))
    }

    /// Moves running processes in (an adopted process and its
    /// descendants); those that cannot be moved stay where they are.
    pub(crate) fn join(&self, pids: &[i32]) {
        for pid in pids {
            let moved = std::fs::OpenOptions::new()
                .write(true)
                .open(self.procs_path())
                .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
            if let Err(e) = moved {
                tracing::debug!("cannot move pid {pid} into {}: {e}", self.dir().display());
            }
        }
    }

    /// The processes in it.
    pub(crate) fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.procs_path())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Sends `signal` to each process in it that is not in process group
    /// `group` (those got it through the group).
    pub(crate) fn signal_escaped(&self, signal: Signal, group: i32) {
        for pid in self.pids() {
            let pid = Pid::from_raw(pid);
            if nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g.as_raw() != group) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    }

    /// Kills everything left in it and waits (bounded) until it is empty;
    /// false when processes are left.
    pub(crate) async fn clear(&self) -> bool {
        if self.pids().is_empty() {
            return true;
        }
        let killed = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir().join("cgroup.kill"))
            .and_then(|mut f| f.write_all(b"1"));
        if killed.is_err() {
            // Before Linux 5.14: one by one.
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut pause = Duration::from_millis(1);
        loop {
            if crate::reaper::running() {
                crate::reaper::reap_orphans();
            }
            if self.pids().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "processes are left in {} after SIGKILL",
                    self.dir().display()
                );
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Removes it (it must be empty; a failure is left for the next zistd).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir(self.dir());
    }
}

/// Removes the programs' cgroups that are empty, then their folder if it
/// is (zistd's clean end; a program left running keeps its own).
pub(crate) fn remove_root(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo_with_escapes() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let spaced = "41 31 0:38 / /mnt/my\\040cgroups rw shared:9 - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mount(spaced),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(
            cgroup2_mount("32 31 0:29 / /x rw - cgroup cgroup rw,cpu\n"),
            None
        );
    }
}
