//! CPU and memory of a program's process tree, sampled on demand (no polling while idle).
//!
//! A program's tree is its session: zist starts every program as a session
//! leader, and everything it forks stays in that session unless it leaves on
//! purpose. One scan of the process table serves every call for
//! [`SCAN_REUSE`]; CPU percent is the CPU time used between two samples,
//! per wall-clock second, in percent of one core. The first call for a
//! process has no earlier sample, so it takes two, [`FIRST_WINDOW`] apart:
//! the number is meaningful from the first call on.
//!
//! The scan reads one file per process, `/proc/PID/stat` (CPU time,
//! resident pages, session), rather than a general process library's
//! several: with 1000 programs it is what a scrape of /metrics costs.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sysinfo::System;

use crate::wire::ProcessStats;

/// A scan of the process table younger than this is reused.
pub const SCAN_REUSE: Duration = Duration::from_millis(100);
/// The window of the first CPU measurement of a process.
pub const FIRST_WINDOW: Duration = Duration::from_millis(250);
/// An earlier sample older than this is not used for a CPU delta.
const STALE: Duration = Duration::from_secs(60);

struct Previous {
    at: Instant,
    cpu_ms: u64,
    percent: f64,
}

struct Scan {
    at: Instant,
    /// Session id -> (CPU milliseconds, resident bytes), summed.
    sessions: HashMap<i32, (u64, u64)>,
    /// Each process: CPU milliseconds, resident bytes, session.
    processes: HashMap<i32, (u64, u64, i32)>,
}

struct SamplerState {
    total_memory: u64,
    scan: Option<Scan>,
    previous: HashMap<i32, Previous>,
}

/// Samples process trees; one is shared by every stats call of a supervisor.
pub struct Sampler {
    state: Mutex<Option<SamplerState>>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler with no scan yet.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    /// Measures the session led by `pid`. Blocking: call it off the async workers.
    pub fn measure(&self, pid: i32) -> ProcessStats {
        self.measure_in(pid, &[])
    }

    /// Measures the session led by `pid` and the processes `members` names
    /// that left it (the rest of the program's cgroup). Blocking.
    pub fn measure_in(&self, pid: i32, members: &[i32]) -> ProcessStats {
        let first = self.try_measure(pid, members);
        match first {
            Some(stats) => stats,
            None => {
                std::thread::sleep(FIRST_WINDOW);
                self.try_measure(pid, members).unwrap_or_default()
            }
        }
    }

    /// Measures many sessions with one scan (and one first window for all
    /// that have no earlier sample). Blocking: call it off the async workers.
    pub fn measure_many(&self, pids: &[i32]) -> Vec<ProcessStats> {
        let with: Vec<(i32, Vec<i32>)> = pids.iter().map(|&p| (p, Vec::new())).collect();
        self.measure_many_in(&with)
    }

    /// [`Sampler::measure_many`], each session with its members (see
    /// [`Sampler::measure_in`]).
    pub fn measure_many_in(&self, pids: &[(i32, Vec<i32>)]) -> Vec<ProcessStats> {
        let mut out: Vec<Option<ProcessStats>> = pids
            .iter()
            .map(|(pid, members)| self.try_measure(*pid, members))
            .collect();
        if out.iter().any(Option::is_none) {
            std::thread::sleep(FIRST_WINDOW);
            for (slot, (pid, members)) in out.iter_mut().zip(pids) {
                if slot.is_none() {
                    *slot = Some(self.try_measure(*pid, members).unwrap_or_default());
                }
            }
        }
        out.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Scans the process table now, whatever the age of the last scan
    /// (what a call costs once [`SCAN_REUSE`] has passed).
    pub fn rescan(&self) {
        if let Some(state) = self.lock().as_mut() {
            state.rescan(Instant::now());
            return;
        }
        // The first call sets up the sampler, and scans.
        let _ = self.try_measure(0, &[]);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SamplerState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when this is the first sample of `pid` and a second must follow.
    fn try_measure(&self, pid: i32, members: &[i32]) -> Option<ProcessStats> {
        let mut guard = self.lock();
        let state = match guard.as_mut() {
            Some(state) => state,
            None => {
                let mut system = match System::new() {
                    Ok(system) => system,
                    Err(e) => {
                        tracing::warn!("cannot read process statistics: {e}");
                        return Some(ProcessStats::default());
                    }
                };
                system.refresh_memory();
                let total_memory = system.total_memory();
                guard.insert(SamplerState {
                    total_memory,
                    scan: None,
                    previous: HashMap::new(),
                })
            }
        };
        let now = Instant::now();
        if state.scan.as_ref().is_none_or(|s| now - s.at >= SCAN_REUSE) {
            state.rescan(now);
        }
        let scan_at = state.scan.as_ref().map_or(now, |s| s.at);
        let (cpu_ms, rss) = state
            .scan
            .as_ref()
            .map(|s| {
                let (mut cpu, mut memory) = s.sessions.get(&pid).copied().unwrap_or((0, 0));
                // Members that left the session (setsid): counted too.
                for member in members {
                    if let Some(&(c, m, sid)) = s.processes.get(member)
                        && sid != pid
                    {
                        cpu += c;
                        memory += m;
                    }
                }
                (cpu, memory)
            })
            .unwrap_or((0, 0));
        let memory_percent = if state.total_memory > 0 {
            rss as f64 * 100.0 / state.total_memory as f64
        } else {
            0.0
        };
        let percent = match state.previous.get(&pid) {
            Some(p) if scan_at - p.at < SCAN_REUSE => p.percent,
            Some(p) if scan_at - p.at < STALE => {
                let wall_ms = (scan_at - p.at).as_secs_f64() * 1000.0;
                let percent = cpu_ms.saturating_sub(p.cpu_ms) as f64 * 100.0 / wall_ms;
                state.previous.insert(
                    pid,
                    Previous {
                        at: scan_at,
                        cpu_ms,
                        percent,
                    },
                );
                percent
            }
            _ => {
                state.previous.insert(
                    pid,
                    Previous {
                        at: scan_at,
                        cpu_ms,
                        percent: 0.0,
                    },
                );
                return None;
            }
        };
        Some(ProcessStats {
            cpu_percent: percent,
            memory_bytes: rss,
            memory_percent,
        })
    }
}

impl SamplerState {
    fn rescan(&mut self, now: Instant) {
        let mut sessions: HashMap<i32, (u64, u64)> = HashMap::new();
        let mut processes =
            HashMap::with_capacity(self.scan.as_ref().map_or(0, |s| s.processes.len()));
        for_each_process(|pid, cpu, memory, sid| {
            let entry = sessions.entry(sid).or_default();
            entry.0 += cpu;
            entry.1 += memory;
            processes.insert(pid, (cpu, memory, sid));
        });
        // Samples of programs that are gone would only grow the map (an
        // adopted process may lead no session: its pid is kept while it lives).
        self.previous
            .retain(|pid, _| sessions.contains_key(pid) || processes.contains_key(pid));
        self.scan = Some(Scan {
            at: now,
            sessions,
            processes,
        });
    }
}

/// Calls `each(pid, cpu_ms, rss_bytes, session)` for every process in
/// `/proc` (threads are not listed there).
fn for_each_process(mut each: impl FnMut(i32, u64, u64, i32)) {
    use std::io::Read;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|&p| p > 0)
        .unwrap_or(4096) as u64;
    // A stat line is a few hundred bytes; the name in it at most 64.
    let mut buf = [0u8; 1024];
    let mut path = String::with_capacity(32);
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        path.clear();
        path.push_str("/proc/");
        path.push_str(name.to_str().unwrap_or_default());
        path.push_str("/stat");
        // Gone since the listing: skipped.
        let Ok(n) = std::fs::File::open(&path).and_then(|mut f| f.read(&mut buf)) else {
            continue;
        };
        if let Some((cpu_ticks, rss_pages, sid)) = parse_stat(&buf[..n]) {
            each(pid, cpu_ticks * 1000 / ticks, rss_pages * page, sid);
        }
    }
}

/// utime + stime (clock ticks), resident pages and session of a
/// `/proc/PID/stat` line. The name, in parentheses, may hold anything:
/// the fields are counted from the last `)`.
fn parse_stat(line: &[u8]) -> Option<(u64, u64, i32)> {
    let after = &line[memchr::memrchr(b')', line)? + 1..];
    let text = std::str::from_utf8(after).ok()?;
    // Fields from 3 (state) on: session is field 6, utime 14, stime 15, rss 24.
    let mut fields = text.split_ascii_whitespace();
    let mut field = |n: usize| fields.nth(n);
    let session = field(3)?.parse().ok()?;
    let utime: u64 = field(7)?.parse().ok()?;
    let stime: u64 = field(0)?.parse().ok()?;
    let rss: i64 = field(8)?.parse().ok()?;
    Some((utime + stime, rss.max(0) as u64, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_its_last_parenthesis() {
        let line = b"4242 (a) b) (c) S 1 4242 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 123 4096000 321 18446744073709551615\n";
        assert_eq!(parse_stat(line), Some((300, 321, 4240)));
        assert_eq!(parse_stat(b"12 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"no parenthesis"), None);
    }

    #[test]
    fn the_scan_finds_this_process_in_its_session() {
        let me = std::process::id() as i32;
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        let mut found = None;
        for_each_process(|pid, cpu, rss, session| {
            if pid == me {
                found = Some((cpu, rss, session));
            }
        });
        let (_, rss, session) = found.expect("this process in /proc");
        assert_eq!(session, sid);
        // Resident: at least the test harness's own pages.
        assert!(rss > 1 << 20, "{rss}");
    }
}
