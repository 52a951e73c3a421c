//! Adopting a process zist did not start (docs/reference.md §8.4): what is
//! refused, and what is recorded of the process so that a restart runs it
//! again as it was started.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::persist::{ProcessRecord, exe_of, stat_of};

/// `PF_KTHREAD` in `/proc/<pid>/stat`'s flags.
const KERNEL_THREAD: u64 = 0x0020_0000;

/// A live process, as `/proc` shows it.
#[derive(Debug)]
pub(crate) struct Found {
    pub record: ProcessRecord,
    /// Program-file keys that run it again as it was started.
    pub spec: Map<String, Value>,
    /// The executable's file name, for a default program name.
    pub exe_name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks at `pid` and refuses what may not be adopted: a pid that names
/// no process, pid 1, this process and its ancestors, a kernel thread, a
/// thread that is not its process's main one.
pub(crate) fn inspect(pid: i32) -> Result<Found> {
    let gone = || Error::NoSuchPid { pid };
    let refuse = |why: &str| Error::AdoptRefused {
        pid,
        reason: why.to_owned(),
    };
    if pid <= 0 {
        return Err(refuse("a pid is a positive number"));
    }
    if pid == 1 {
        return Err(refuse("it is pid 1, the system's (or container's) init"));
    }
    let stat = stat_of(pid).ok_or_else(gone)?;
    if matches!(stat.state, 'Z' | 'X') {
        return Err(gone());
    }
    if stat.flags & KERNEL_THREAD != 0 {
        return Err(refuse("it is a kernel thread"));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| gone())?;
    let field = |name: &str| -> Option<Vec<u32>> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(
            line[name.len()..]
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect(),
        )
    };
    if let Some(tgid) = field("Tgid:").and_then(|v| v.first().copied())
        && tgid as i32 != pid
    {
        return Err(refuse(&format!(
            "it is a thread of process {tgid}; adopt that"
        )));
    }
    let mut ancestor = std::process::id() as i32;
    while ancestor > 1 {
        if ancestor == pid {
            return Err(refuse(if ancestor == std::process::id() as i32 {
                "it is zistd itself"
            } else {
                "it is an ancestor of zistd"
            }));
        }
        ancestor = stat_of(ancestor).map_or(0, |s| s.parent);
    }
    let uid = field("Uid:").and_then(|v| v.first().copied()).unwrap_or(0);
    let gid = field("Gid:").and_then(|v| v.first().copied()).unwrap_or(0);
    let start_ticks = stat.start_ticks;
    let argv = command_line(pid).ok_or_else(gone)?;
    let exe = exe_of(pid)
        .filter(|e| !e.ends_with(" (deleted)"))
        .or_else(|| argv.first().cloned())
        .ok_or_else(|| refuse("its executable and command line cannot be read"))?;
    let exe_name = std::path::Path::new(&exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adopted".into());
    let mut spec = Map::new();
    spec.insert("Path".into(), json!(exe));
    spec.insert(
        "Args".into(),
        json!(argv.iter().skip(1).cloned().collect::<Vec<_>>()),
    );
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        spec.insert("Workingdir".into(), json!(cwd.to_string_lossy()));
    }
    let env: BTreeMap<String, String> = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter_map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            let (key, value) = pair.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect();
    spec.insert("Env".into(), json!(env));
    if uid != nix::unistd::geteuid().as_raw()
        && let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
    {
        spec.insert("User".into(), json!(user.name));
    }
    spec.insert("Restart".into(), json!("always"));
    Ok(Found {
        record: ProcessRecord {
            pid,
            start_ticks,
            exe: exe_of(pid).unwrap_or_default(),
            started_ms: started_ms(start_ticks),
        },
        spec,
        exe_name,
        uid,
        gid,
    })
}

/// The process's command line. A process in the middle of an exec shows
/// an empty one for a moment: read again a few times before taking that.
fn command_line(pid: i32) -> Option<Vec<String>> {
    let mut tries = 0;
    loop {
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()?
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        tries += 1;
        if !argv.is_empty() || tries == 5 {
            return Some(argv);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// When a process started, in milliseconds since the Unix epoch, from its
/// start time in clock ticks after boot.
pub(crate) fn started_ms(start_ticks: u64) -> u64 {
    // The boot's wall-clock time from the uptime (10 ms steps), not from
    // /proc/stat's btime (whole seconds).
    let now_ms = crate::upgrade::epoch_ms(std::time::SystemTime::now());
    let uptime_ms = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64);
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    now_ms.saturating_sub(uptime_ms) + start_ticks * 1000 / ticks
}

/// A program name from an executable's file name: the characters a name
/// may hold, made unique with `-2`, `-3`, ... against `taken`.
pub(crate) fn program_name(exe_name: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut base: String = exe_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(58)
        .collect();
    if base.is_empty() || base == "." || base == ".." || base == "all" {
        base = format!("adopted-{base}").replace('.', "_");
    }
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .unwrap_or(base)
}

/// `pid` and every process below it (children, found in `/proc`).
pub(crate) fn tree(pid: i32) -> Vec<i32> {
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        next += 1;
        for child in crate::reaper::children_of(parent) {
            if !found.contains(&child) {
                found.push(child);
            }
        }
    }
    found
}

/// Merges `over` into `base`: keys of `over` win.
pub(crate) fn merged(
    pid: i32,
    mut base: Map<String, Value>,
    over: Option<&Value>,
) -> Result<Value> {
    match over {
        None | Some(Value::Null) => {}
        Some(Value::Object(keys)) => {
            for (key, value) in keys {
                base.insert(key.clone(), value.clone());
            }
        }
        Some(_) => {
            return Err(Error::AdoptRefused {
                pid,
                reason: "`spec` must be an object of program-file keys".into(),
            });
        }
    }
    Ok(Value::Object(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_made_unique() {
        let taken = |n: &str| ["sleep", "sleep-2"].contains(&n);
        assert_eq!(program_name("sleep", taken), "sleep-3");
        assert_eq!(program_name("my server", |_| false), "my_server");
        assert_eq!(program_name("all", |_| false), "adopted-all");
    }

    #[test]
    fn refusals_say_why() {
        assert!(matches!(inspect(1), Err(Error::AdoptRefused { .. })));
        let own = std::process::id() as i32;
        let err = inspect(own).expect_err("itself");
        assert!(err.to_string().contains("itself"), "{err}");
        let parent = nix::unistd::getppid().as_raw();
        if parent > 1 {
            let err = inspect(parent).expect_err("an ancestor");
            assert!(err.to_string().contains("ancestor"), "{err}");
        }
        assert!(matches!(
            inspect(i32::MAX - 1),
            Err(Error::NoSuchPid { .. })
        ));
        // kthreadd, the parent of every kernel thread.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            let err = inspect(2).expect_err("a kernel thread");
            assert!(err.to_string().contains("kernel thread"), "{err}");
        }
    }

    #[test]
    fn a_running_process_is_recorded_with_its_command_line_and_real_start() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .current_dir("/tmp")
            .env("ZIST_ADOPT_TEST", "yes")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Until the exec is through, the process shows the parent's or no command line.
        while !exe_of(pid).is_some_and(|e| e.ends_with("/sleep"))
            || std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty())
        {
            assert!(std::time::Instant::now() < deadline, "sleep never ran");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let found = inspect(pid);
        let _ = child.kill();
        let _ = child.wait();
        let found = found.expect("inspect");
        assert_eq!(found.exe_name, "sleep");
        assert_eq!(found.spec["Args"], json!(["30"]));
        assert_eq!(found.spec["Workingdir"], json!("/tmp"));
        assert_eq!(found.spec["Env"]["ZIST_ADOPT_TEST"], json!("yes"));
        assert_eq!(found.spec["Restart"], json!("always"));
        let now = crate::upgrade::epoch_ms(std::time::SystemTime::now());
        let age = now.saturating_sub(found.record.started_ms);
        assert!(age < 10_000, "started {age} ms ago");
    }
}
