//! What a program is: its validated name, restart policy, signals and the full [`ProgramSpec`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// A value that does not read as what it should be; the message says what
/// is wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A program name of the wrong length.
    #[error("program name {0:?} must be 1 to 64 characters long")]
    NameLength(String),
    /// A program name with a character outside `[A-Za-z0-9_.-]`.
    #[error("program name {name:?} has {bad:?}; use only letters, digits, '_', '.' and '-'")]
    NameCharacter {
        /// The name.
        name: String,
        /// The first character not allowed.
        bad: char,
    },
    /// `.`, `..` or `all`.
    #[error("program name {0:?} is reserved; choose another name")]
    NameReserved(String),
    /// Not a duration.
    #[error("{0:?} is not a duration; write it like \"500ms\", \"10s\" or \"2m\"")]
    Duration(String),
    /// A duration past [`MAX_DURATION`] or below zero.
    #[error("{0:?} is out of range; use 0s to 24h")]
    DurationRange(String),
    /// Not a size.
    #[error("{0:?} is not a size; write it like \"50MB\" or \"1KiB\"")]
    Size(String),
    /// A size with a unit zist does not know.
    #[error("{0:?} has an unknown size unit; use B, KB, MB or GB (or KiB, MiB, GiB)")]
    SizeUnit(String),
    /// A size past [`MAX_SIZE`].
    #[error("{0:?} is out of range; use 0 (never rotate) to 1TiB")]
    SizeRange(String),
    /// Not a signal name or number.
    #[error("unknown signal {0:?}; use a name such as \"TERM\", \"INT\", \"HUP\", \"USR1\"")]
    Signal(String),
    /// Neither `stdout` nor `stderr`.
    #[error("unknown stream {0:?}; use \"stdout\" or \"stderr\"")]
    Stream(String),
    /// A number of instances out of range.
    #[error("{0} instances: a program runs 1 to 1000")]
    Instances(u32),
    /// Not one of start, stop, restart, detach.
    #[error("no action `{0}`; use start, stop, restart or detach")]
    Action(String),
}

/// The longest duration a program key takes: a day.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// The largest size a program key takes: 1 TiB.
pub const MAX_SIZE: u64 = 1 << 40;

/// A program's unique name: `[A-Za-z0-9_.-]{1,64}`, not `.`, `..` or `all`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ProgramName(String);

impl ProgramName {
    /// Checks `name` and wraps it; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<Self, ValueError> {
        if name.is_empty() || name.len() > 64 {
            return Err(ValueError::NameLength(name.to_owned()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(ValueError::NameCharacter {
                name: name.to_owned(),
                bad,
            });
        }
        if matches!(name, "." | ".." | "all") {
            return Err(ValueError::NameReserved(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of instance `i` of this program: `NAME:i` (the colon,
    /// which no name given by a user holds, is kept for this).
    pub fn instance(&self, i: u32) -> Self {
        Self(format!("{}:{i}", self.base()))
    }

    /// The program's own name: `NAME` of an instance's `NAME:i`.
    pub fn base(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(base, _)| base)
    }

    /// The instance number, for an instance's name.
    pub fn instance_number(&self) -> Option<u32> {
        self.0.split_once(':')?.1.parse().ok()
    }
}

impl fmt::Display for ProgramName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProgramName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for ProgramName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// When a program that exited on its own is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any exit (`Restart = true`, as the seed did).
    Always,
    /// After a non-zero exit code or a death by signal.
    OnFailure,
    /// Never; the program ends in `exited`.
    Never,
}

impl RestartPolicy {
    /// The config spellings, for error messages.
    pub const CHOICES: &'static str = "\"always\", \"on-failure\", \"never\", true or false";

    /// Parses `"always"`, `"on-failure"` or `"never"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "on-failure" => Some(Self::OnFailure),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// `"always"`, `"on-failure"` or `"never"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

/// One of a program's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

impl FromStr for LogStream {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            other => Err(ValueError::Stream(other.to_owned())),
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a signal written `"TERM"`, `"SIGTERM"`, `"term"` or as its number.
pub fn parse_signal(s: &str) -> Result<Signal, ValueError> {
    let upper = s.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| ValueError::Signal(s.to_owned()));
    }
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map_err(|_| ValueError::Signal(s.to_owned()))
}

/// The short name of a signal, `"TERM"` for SIGTERM.
pub fn signal_name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}

/// Everything zist needs to run one program (the keys of a program file, resolved).
///
/// Paths are as the config named them after resolving relative ones against
/// the file's folder; a `Path` without a `/` is looked up on `PATH` when the
/// program is started, so an executable installed later is found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramSpec {
    /// Unique name.
    pub name: ProgramName,
    /// The executable.
    pub path: PathBuf,
    /// Arguments, already split.
    pub args: Vec<String>,
    /// Working directory; `None` means the folder of the executable.
    pub workingdir: Option<PathBuf>,
    /// Extra environment variables on top of the supervisor's own.
    pub env: BTreeMap<String, String>,
    /// Start when the supervisor starts (or when the program is added).
    pub autostart: bool,
    /// What to do after the program exits on its own.
    pub restart: RestartPolicy,
    /// How long a process must stay up to count as started.
    pub start_secs: Duration,
    /// Consecutive failed starts before `fatal`.
    pub max_restarts: u32,
    /// Wait before a restart; doubles with each failed start in a row, capped at 30 s.
    pub restart_delay: Duration,
    /// Signal sent to the process group on stop.
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    /// Run as this user (the supervisor must be root).
    pub user: Option<String>,
    /// stdout log file; `None` means `<log dir>/<name>.out.log`.
    pub logfile: Option<PathBuf>,
    /// stderr log file; `None` means `<log dir>/<name>.err.log`.
    pub err_logfile: Option<PathBuf>,
    /// Rotate a log file when it passes this many bytes (0: never rotate).
    pub log_max_bytes: u64,
    /// Rotated files kept.
    pub log_backups: u32,
    /// Expose stats and logs over the HTTP API.
    pub web: bool,
    /// For a program that daemonizes: the file its daemon writes its pid
    /// to. When the first process exits 0, the process the file names is
    /// adopted as the program (docs/reference.md §8.4).
    pub pid_file: Option<PathBuf>,
    /// Readiness check: `starting` lasts until it passes (StartSecs is not
    /// used); failing for its Timeout is a failed start (docs/reference.md §9).
    pub ready: Option<Check>,
    /// Liveness check: failing `failures` times in a row while `running`
    /// restarts the program.
    pub alive: Option<Check>,
    /// Programs that must be `running` (ready, when they have a Ready
    /// check) before this one starts; stopped after it (docs/reference.md §9).
    pub after: Vec<ProgramName>,
    /// With `Some(n)`, the program runs `n` processes, `NAME:0` to
    /// `NAME:n-1` ([`ProgramSpec::instance`]); `None`: one, named `NAME`.
    pub instances: Option<u32>,
    /// Sockets zist opens once and passes to every process of the program
    /// as fds 3, 4, ... (systemd's `LISTEN_FDS`), kept open across restarts.
    pub listen: Vec<ListenAddress>,
    /// Files of `KEY=VALUE` lines read at each start, under `env` (which wins).
    pub env_files: Vec<PathBuf>,
    /// Each line in the log files starts with its arrival time.
    pub log_timestamps: bool,
}

/// A socket `Listen` names: TCP on an address, or a Unix stream socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// `"127.0.0.1:8080"`, `"[::1]:8080"`.
    Tcp(std::net::SocketAddr),
    /// `"/run/app.sock"`.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Reads `"host:port"` (an IP address) or an absolute path.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            format!("{s:?} is neither an address like \"127.0.0.1:8080\" or \"[::1]:8080\" nor an absolute path")
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "{address}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The largest number of instances a program may have.
pub const MAX_INSTANCES: u32 = 1000;

/// Stands for the instance number in Args, Env values and log paths.
pub const INSTANCE_MARK: &str = "{instance}";

/// A readiness or liveness check (docs/reference.md §9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub probe: Probe,
    /// Between two tries.
    pub interval: Duration,
    /// Ready: the whole wait; Alive: one try.
    pub timeout: Duration,
    /// Alive: failures in a row that restart the program.
    pub failures: u32,
    /// Notify: the longest wait between two `WATCHDOG=1` once running
    /// (`WatchdogSec`, as in systemd); passed as `WATCHDOG_USEC`.
    pub watchdog: Option<Duration>,
}

/// What a check tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// `GET` of an `http://host:port/path` URL answers 2xx.
    Http(String),
    /// A command (split as Args; the program's Env and Workingdir) exits 0.
    Exec(Vec<String>),
    /// A line of the program's stdout or stderr matches (Ready only).
    Line(LinePattern),
    /// The program's process tree sends `READY=1` to `NOTIFY_SOCKET` (Ready only).
    Notify,
}

/// The regular expression of a `Line` check.
#[derive(Clone, Debug)]
pub struct LinePattern(regex_lite::Regex);

impl LinePattern {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        regex_lite::Regex::new(pattern)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `line` matches (anywhere in it, unless anchored).
    pub fn matches(&self, line: &str) -> bool {
        self.0.is_match(line)
    }
}

impl PartialEq for LinePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LinePattern {}

impl std::fmt::Display for Probe {
    /// As a message names it: `tcp 127.0.0.1:5432`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "tcp {address}"),
            Self::Http(url) => write!(f, "http {url}"),
            Self::Exec(words) => write!(f, "exec {}", words.join(" ")),
            Self::Line(pattern) => write!(f, "line /{}/", pattern.as_str()),
            Self::Notify => f.write_str("notify"),
        }
    }
}

impl ProgramSpec {
    /// The spec of instance `i` of this program: named `NAME:i`, with
    /// `ZIST_INSTANCE=i` in its environment and `{instance}` replaced by
    /// `i` in Args, Env values, Logfile and ErrLogfile.
    pub fn instance(&self, i: u32) -> Self {
        let number = i.to_string();
        let fill = |s: &str| s.replace(INSTANCE_MARK, &number);
        let fill_path = |p: &PathBuf| PathBuf::from(fill(&p.to_string_lossy()));
        let mut spec = self.clone();
        spec.name = self.name.instance(i);
        spec.instances = None;
        spec.args = self.args.iter().map(|a| fill(a)).collect();
        spec.env = self.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
        spec.env.insert("ZIST_INSTANCE".to_owned(), number.clone());
        spec.logfile = self.logfile.as_ref().map(fill_path);
        spec.err_logfile = self.err_logfile.as_ref().map(fill_path);
        spec
    }

    /// A spec with the documented defaults for every key but `Name` and `Path`.
    pub fn new(name: ProgramName, path: impl Into<PathBuf>) -> Self {
        Self {
            name,
            path: path.into(),
            args: Vec::new(),
            workingdir: None,
            env: BTreeMap::new(),
            autostart: true,
            restart: RestartPolicy::Always,
            start_secs: Duration::from_secs(1),
            max_restarts: 5,
            restart_delay: Duration::from_millis(100),
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            user: None,
            logfile: None,
            err_logfile: None,
            log_max_bytes: 50 * 1024 * 1024,
            log_backups: 5,
            web: true,
            pid_file: None,
            ready: None,
            alive: None,
            after: Vec::new(),
            instances: None,
            listen: Vec::new(),
            env_files: Vec::new(),
            log_timestamps: false,
        }
    }

    /// Sets the arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}

/// Parses a duration: a string with a unit (`"500ms"`, `"10s"`, `"2m"`) or
/// seconds, from 0 to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let t = s.trim();
    let parsed = match t.parse::<f64>() {
        Ok(secs) if secs.is_nan() => Err(ValueError::Duration(s.to_owned())),
        Ok(secs) => {
            Duration::try_from_secs_f64(secs).map_err(|_| ValueError::DurationRange(s.to_owned()))
        }
        Err(_) => humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => ValueError::DurationRange(s.to_owned()),
            _ => ValueError::Duration(s.to_owned()),
        }),
    };
    parsed.and_then(|d| {
        if d <= MAX_DURATION {
            Ok(d)
        } else {
            Err(ValueError::DurationRange(s.to_owned()))
        }
    })
}

/// Parses a size: a string with a unit (`"50MB"`, `"1KiB"`, `"512B"`) or
/// bytes, from 0 to [`MAX_SIZE`].
///
/// KB, MB and GB are powers of 1024, as supervisord reads them; KiB, MiB and
/// GiB are the same values under their unambiguous names.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(ValueError::SizeUnit(s.to_owned())),
    };
    let value: f64 = number.parse().map_err(|_| ValueError::Size(s.to_owned()))?;
    let bytes = value * factor as f64;
    if bytes.is_finite() && bytes <= MAX_SIZE as f64 {
        Ok(bytes as u64)
    } else {
        Err(ValueError::SizeRange(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(ProgramName::new("app-1.web_x").is_ok());
        assert!(ProgramName::new(&"a".repeat(64)).is_ok());
        for bad in ["", ".", "..", "all", "a b", "é", "x/y"] {
            assert!(ProgramName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ProgramName::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn durations_and_sizes_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_size("50MB"), Ok(50 << 20));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(signal_name(Signal::SIGHUP), "HUP");
    }
}
