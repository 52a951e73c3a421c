//! The one error type of zist-core; every message says what to do.
//!
//! Each error has an [`ErrorKind`] that no protocol owns: zist-rpc maps
//! kinds to JSON-RPC codes and zist-http to HTTP statuses, each in one
//! place, so one code always means one thing.

use std::sync::Arc;

use crate::config::ConfigErrors;
use crate::spawn::SpawnError;
use crate::spec::ValueError;

/// What can go wrong when asking the supervisor for something.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No program has this name.
    #[error("no program named `{name}`; list the programs to see their names")]
    NoSuchProcess {
        /// The name asked for.
        name: String,
    },
    /// The program is already running (or starting, or stopping).
    #[error("program `{name}` is already {state}; stop it first or use restart")]
    AlreadyRunning {
        /// The program.
        name: String,
        /// Its state.
        state: crate::ProcessState,
    },
    /// The program has no process to act on.
    #[error("program `{name}` is not running (it is {state}); start it first")]
    NotRunning {
        /// The program.
        name: String,
        /// Its state.
        state: crate::ProcessState,
    },
    /// The program could not be spawned.
    #[error("could not start program `{name}`: {source}")]
    Spawn {
        /// The program.
        name: String,
        /// Why.
        source: Arc<SpawnError>,
    },
    /// A program spec or config was refused; the errors say what and where.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A program with this name is already registered.
    #[error("a program named `{name}` already exists; remove it first or choose another name")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// A value that does not read (a signal name, a stream, a program name, ...).
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A signal could not be sent.
    #[error("cannot send {signal} to `{name}`: {source}")]
    Signal {
        /// The program.
        name: String,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// Why.
        source: nix::Error,
    },
    /// The program's spec says `Web = false`: its stats and logs are not
    /// shown over the network APIs.
    #[error("program `{name}` has Web = false: its stats and logs are not exposed")]
    NotExposed {
        /// The program.
        name: String,
    },
    /// A reload read a config with errors; nothing changed.
    #[error("config refused, nothing changed:\n{0}")]
    ConfigRefused(ConfigErrors),
    /// A reload was asked of a supervisor that was not made from a config file.
    #[error("this supervisor has no config file to reload")]
    NoConfigFile,
    /// The supervisor is shutting down and takes no more work.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// Detach could not hand the output to a relay.
    #[error("could not detach `{name}`: {reason}; the program is still supervised")]
    Detach {
        /// The program.
        name: String,
        /// Why, in words.
        reason: String,
    },
    /// Measuring a program failed inside zist.
    #[error("the stats sampler failed: {0}")]
    Sampler(String),
    /// An upgrade in place was refused; nothing changed.
    #[error("upgrade refused, nothing changed: {0}")]
    UpgradeRefused(String),

    /// `process.adopt`: no live process has this pid.
    #[error("no process has pid {pid}")]
    NoSuchPid {
        /// The pid asked for.
        pid: i32,
    },

    /// `process.adopt`: the process may not be adopted.
    #[error("cannot adopt pid {pid}: {reason}")]
    AdoptRefused {
        /// The pid asked for.
        pid: i32,
        /// Why, for a person.
        reason: String,
    },

    /// A program with instances was named where one process is meant
    /// (info, stats, logs, follow): name one of its instances.
    #[error("program `{name}` has {} instances, name one of them: {}", instances.len(), instances.join(", "))]
    Instances {
        /// The program.
        name: String,
        /// Its instances' names.
        instances: Vec<String>,
    },

    /// An instance was named where only its program may be (remove):
    /// the number of instances is changed with `scale`.
    #[error("`{name}` is an instance of `{program}`; scale `{program}` instead")]
    IsInstance {
        /// The instance.
        name: String,
        /// Its program.
        program: String,
    },

    /// `process.scale` of a program without `Instances`.
    #[error(
        "program `{name}` has no Instances key, so it runs one process named `{name}`; give it `Instances` to scale it"
    )]
    NotScalable {
        /// The program.
        name: String,
    },

    /// A rolling restart stopped at an instance whose new process did not
    /// come up; the instances after it keep their old processes.
    #[error(
        "rolling restart stopped at `{name}`: {reason}; the instances after it were not restarted"
    )]
    RollingStopped {
        /// The instance.
        name: String,
        /// Why, for a person.
        reason: String,
    },

    /// A socket of `Listen` could not be opened.
    #[error("program `{name}` cannot listen on {address}: {source}")]
    Listen {
        /// The program.
        name: String,
        /// The address, as `Listen` gave it.
        address: String,
        /// Why.
        source: std::io::Error,
    },

    /// `process.adopt`: a program already supervises the process.
    #[error("pid {pid} is already supervised as program `{name}`")]
    AlreadySupervised {
        /// The pid asked for.
        pid: i32,
        /// The program that has it.
        name: String,
    },
}

/// What kind of failure an [`Error`] is, for protocols to map to their codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Nothing has that name.
    NotFound,
    /// It exists or runs already.
    Conflict,
    /// No process to act on.
    NotRunning,
    /// Starting or detaching failed.
    SpawnFailed,
    /// The request or config is not valid; nothing changed.
    Invalid,
    /// The rules forbid it (for example `Web = false`).
    NotAllowed,
    /// The supervisor is shutting down.
    Unavailable,
    /// zist itself failed.
    Internal,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchProcess { .. } | Self::NoSuchPid { .. } | Self::Instances { .. } => {
                ErrorKind::NotFound
            }
            Self::RollingStopped { .. } | Self::Listen { .. } => ErrorKind::SpawnFailed,
            Self::IsInstance { .. } | Self::NotScalable { .. } => ErrorKind::Invalid,
            Self::AlreadyRunning { .. }
            | Self::AlreadyExists { .. }
            | Self::AlreadySupervised { .. } => ErrorKind::Conflict,
            Self::NotRunning { .. } => ErrorKind::NotRunning,
            Self::Spawn { .. } | Self::Detach { .. } => ErrorKind::SpawnFailed,
            Self::Config(_) | Self::ConfigRefused(_) | Self::Value(_) | Self::NoConfigFile => {
                ErrorKind::Invalid
            }
            Self::Signal { .. } | Self::UpgradeRefused(_) | Self::AdoptRefused { .. } => {
                ErrorKind::Invalid
            }
            Self::NotExposed { .. } => ErrorKind::NotAllowed,
            Self::ShuttingDown => ErrorKind::Unavailable,
            Self::Sampler(_) => ErrorKind::Internal,
        }
    }
}

/// Results of zist-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
