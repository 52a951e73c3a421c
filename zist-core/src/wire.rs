//! The types every frontend sends over the wire: process info, stats, events, reload reports.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::spec::ProgramName;
use crate::state::ProcessState;

/// What an action on a name answers: the program's info, or, for a
/// program with instances, every instance's (docs/reference.md §9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // an answer, made once per call
pub enum Acted {
    /// One program (or one instance, `NAME:i`).
    One(ProcessInfo),
    /// Every instance of a program, by number.
    Each(Vec<ProcessInfo>),
}

impl Acted {
    /// The info of the one program acted on; `None` for instances.
    pub fn one(self) -> Option<ProcessInfo> {
        match self {
            Self::One(info) => Some(info),
            Self::Each(_) => None,
        }
    }

    /// Every info it holds.
    pub fn infos(&self) -> &[ProcessInfo] {
        match self {
            Self::One(info) => std::slice::from_ref(info),
            Self::Each(infos) => infos,
        }
    }
}

/// What the API tells about one program (docs/reference.md §3.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: ProcessState,
    /// The pid of its process; `None` when no process runs.
    pub pid: Option<i32>,
    /// The executable as configured.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Restarts zist made after the program exited on its own.
    pub restarts: u32,
    /// When the current (or last) process was started, RFC 3339 UTC.
    pub started_at: Option<String>,
    /// Seconds the current process has been up; 0 when none runs.
    pub uptime_secs: f64,
    /// Exit code of the last process, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended the last process (`"KILL"`), if a signal did.
    pub exit_signal: Option<String>,
    /// When the last process ended, RFC 3339 UTC with milliseconds; kept,
    /// as the exit status is, until the next exit.
    #[serde(default)]
    pub exited_at: Option<String>,
    /// Whether the HTTP API may show its stats and logs.
    pub web: bool,
    /// Why the last start failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A short sentence on why the program is in its state, or on what to
    /// know about its process (an adopted one whose output is not
    /// captured); `None` when there is nothing to say.
    #[serde(default)]
    pub message: Option<String>,
    /// Bytes of each stream written to its log file, and lost (docs/reference.md §11).
    #[serde(default)]
    pub log: LogCounts,
}

/// A program's info with its CPU and memory, as `process.list_stats`
/// gives them (`stats` is absent for a program with `Web = false`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRow {
    /// Its info.
    #[serde(flatten)]
    pub info: ProcessInfo,
    /// Its CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ProcessStats>,
}

/// What became of a program's output, per stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCounts {
    /// Standard output.
    pub stdout: StreamCounts,
    /// Standard error.
    pub stderr: StreamCounts,
}

/// Bytes of one stream written to its log file, and lost (a full disk, a
/// file that cannot be opened; they are still in the tail in memory).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    /// Written to the log file.
    pub written: u64,
    /// Not written.
    pub lost: u64,
    /// The log file's path: in the info of one program (`process.info`),
    /// not in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What `process.adopt` asks (docs/reference.md §8.4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The process to take over.
    pub pid: i32,
    /// The program's name; by default the executable's file name, made unique.
    #[serde(default)]
    pub name: Option<String>,
    /// Program-file keys that override what is recorded of the process.
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    /// Whether to move its output into zist's logs now (default true).
    #[serde(default)]
    pub capture: Option<bool>,
}

/// What a supervisor is: `daemon.status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// zist's version.
    pub version: String,
    /// The pid of the process the supervisor runs in.
    pub pid: u32,
    /// Seconds since the supervisor was made.
    pub uptime_secs: f64,
    /// Number of programs.
    pub programs: usize,
}

/// Resource use of a program's whole process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// CPU use in percent of one core, like `top`.
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// Resident memory in percent of the machine's MemTotal (unrounded).
    pub memory_percent: f64,
}

/// A state change of one program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// The program.
    pub name: String,
    /// The state it left.
    pub from: ProcessState,
    /// The state it entered.
    pub to: ProcessState,
    /// Its pid at the change, if a process exists.
    pub pid: Option<i32>,
    /// When, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// Why, when the new state alone does not say (how the process ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Programs that are new.
    pub added: Vec<String>,
    /// Programs that were stopped and forgotten.
    pub removed: Vec<String>,
    /// Programs restarted with a new spec.
    pub changed: Vec<String>,
    /// Programs left alone.
    pub unchanged: Vec<String>,
}

/// One item of a live feed (log lines, events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed<T> {
    /// The next item.
    Item(T),
    /// The reader fell behind and this many items were skipped.
    Gap(u64),
}

/// How [`crate::Supervisor::shutdown`] leaves the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Stop every program (stop rules of docs/reference.md §3.2).
    Stop,
    /// Detach every program: they keep running after the supervisor is gone.
    Detach,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

impl ProcessInfo {
    /// Whether a process of this program exists, supervised or detached
    /// (the seed's `isalive`).
    pub fn is_alive(&self) -> bool {
        self.pid.is_some()
    }

    /// The name as a [`ProgramName`].
    pub fn program_name(&self) -> Option<ProgramName> {
        ProgramName::new(&self.name).ok()
    }
}
