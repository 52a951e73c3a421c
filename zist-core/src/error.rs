//! The one error type of zist-core; every message says what to do.

use crate::config::ConfigErrors;

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
    #[error("could not start program `{name}`: {reason}")]
    Spawn {
        /// The program.
        name: String,
        /// Why, in words.
        reason: String,
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
    /// An argument was not valid (a signal name, a stream, ...).
    #[error("{0}")]
    Invalid(String),
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
}

impl Error {
    /// The JSON-RPC application error code of SPEC §4.
    pub fn rpc_code(&self) -> i32 {
        match self {
            Self::NoSuchProcess { .. } => -32001,
            Self::AlreadyRunning { .. } | Self::AlreadyExists { .. } => -32002,
            Self::NotRunning { .. } => -32003,
            Self::Spawn { .. } | Self::Detach { .. } => -32004,
            Self::Config(_) | Self::Invalid(_) => -32005,
            Self::ShuttingDown => -32006,
        }
    }
}

/// Results of zist-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
