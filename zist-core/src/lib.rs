#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod access;
mod adopt;
mod capture;
mod cgroup;
mod check;
pub mod config;
pub mod console;
mod error;
pub mod history;
pub mod holder;
mod lifecycle;
mod listen;
pub mod logs;
pub mod memory;
#[cfg(feature = "net")]
pub mod net;
mod notify;
mod persist;
mod program;
mod reaper;
mod spawn;
pub mod spec;
pub mod state;
pub mod stats;
mod supervisor;
pub mod systemd;
#[cfg(feature = "testing")]
pub mod testing;
mod token;
pub mod upgrade;
mod wire;

pub use access::{Access, BrowserGuard, Caller, NamedToken, Scope};
pub use config::{
    Config, ConfigErrors, ConfigIssue, DaemonConfig, Protocol, TokenEntry, program_to_json,
};
pub use error::{Error, ErrorKind, Result};
pub use logs::{DEFAULT_LINES, LogHealth};
pub use nix::sys::signal::Signal;
pub use reaper::{become_subreaper, is_init};
pub use spawn::{
    DESCRIPTORS_PER_PROGRAM, RESERVED_DESCRIPTORS, SpawnError, SpawnStep, check_executable,
    descriptor_limit, program_room,
};
pub use spec::{
    Check, LinePattern, ListenAddress, LogStream, Probe, ProgramName, ProgramSpec, RestartPolicy,
    ValueError, parse_signal,
};
pub use state::ProcessState;
pub use supervisor::{EVENT_BUFFER, Exposed, ProcessAction, Supervisor, SupervisorOptions};
pub use token::Token;
pub use wire::{
    Acted, AdoptRequest, DaemonStatus, Feed, LogCounts, ProcessEvent, ProcessInfo, ProcessRow,
    ProcessStats, ReloadReport, ShutdownMode, StreamCounts,
};

/// The version of zist-core.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
