//! Config loading: the daemon file, program files in Confdir and inline `[[Program]]`s.
//!
//! Files are parsed with spans so that every problem names its file and line.
//! Loading never stops at the first problem: it collects all of them, and a
//! config with any error is refused whole ([`ConfigErrors`]). Problems that
//! do not stop zist (a program whose executable does not exist yet) come back
//! as [`Config::warnings`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::spec::{
    Check, INSTANCE_MARK, LinePattern, ListenAddress, MAX_DURATION, MAX_INSTANCES, MAX_SIZE, Probe,
    ProgramName, ProgramSpec, RestartPolicy, parse_duration, parse_signal, parse_size,
};

/// One problem in a config, located as precisely as the file allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem sits on one.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every error found in a config; a config with any is refused whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `Protocol`: how both APIs are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// TLS with `CertFile` and `KeyFile`.
    Https,
}

/// The daemon file's own keys (docs/reference.md §2.1), with relative paths resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    /// The daemon file itself.
    pub file: PathBuf,
    /// Folder of program files.
    pub confdir: PathBuf,
    /// Whether the file named Confdir (a missing default folder is not worth a warning).
    pub confdir_named: bool,
    /// Serve the HTTP API and dashboard.
    pub web: bool,
    /// `http` or `https`.
    pub protocol: Protocol,
    /// HTTP API port (0 picks a free one).
    pub http_port: u16,
    /// JSON-RPC port (0 picks a free one).
    pub rpc_port: u16,
    /// The shared secret (required: a config without one is refused).
    pub token: String,
    /// Address both servers listen on.
    pub bind: std::net::IpAddr,
    /// PEM certificate for https.
    pub cert_file: Option<PathBuf>,
    /// PEM key for https.
    pub key_file: Option<PathBuf>,
    /// Default folder for program log files.
    pub log_dir: PathBuf,
    /// zistd's own log.
    pub daemon_log: PathBuf,
    /// What zistd remembers across its own restarts (docs/reference.md §8).
    pub state_dir: PathBuf,
    /// Run each program in a cgroup of its own where the machine allows it.
    pub cgroups: bool,
    /// Every program line also to zistd's stdout as `NAME | line`.
    pub console: bool,
    /// Tokens with names and scopes (docs/reference.md §10), besides `token`.
    pub tokens: Vec<TokenEntry>,
    /// Host names the servers answer to, besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// The local socket (JSON-RPC without a token, by peer uid); `None`: none.
    pub socket: Option<PathBuf>,
    /// The group that may use the local socket (operate scope); `None`: zistd's own.
    pub socket_group: Option<String>,
}

/// One of `Tokens`: a secret with a name (what audit lines show) and a scope.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// What audit lines call it.
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub scope: crate::access::Scope,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenEntry({}, {}, <secret>)", self.name, self.scope)
    }
}

impl DaemonConfig {
    /// Every token the daemon accepts: `Token` (admin) and `Tokens`.
    pub fn access(&self) -> crate::access::Access {
        let named: Vec<crate::access::NamedToken> = self
            .tokens
            .iter()
            .map(|t| crate::access::NamedToken {
                name: t.name.clone(),
                token: crate::Token::new(&t.token),
                scope: t.scope,
            })
            .collect();
        crate::access::Access::new(&self.token, &named)
    }
}

/// A loaded config: the daemon settings and every program, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The daemon file's settings.
    pub daemon: DaemonConfig,
    /// Programs from the daemon file and Confdir, in a stable order.
    pub programs: Vec<ProgramSpec>,
    /// Problems that do not stop zist, such as a missing executable.
    pub warnings: Vec<ConfigIssue>,
}

const DAEMON_KEYS: &[&str] = &[
    "Confdir",
    "Web",
    "Protocol",
    "HTTPPort",
    "RPCPort",
    "Token",
    "Bind",
    "CertFile",
    "KeyFile",
    "LogDir",
    "DaemonLog",
    "StateDir",
    "Cgroups",
    "Console",
    "Tokens",
    "AllowedHosts",
    "Socket",
    "SocketGroup",
    "Program",
];

/// Every key of a program (reference §2.2), in their canonical spelling.
pub const PROGRAM_KEYS: &[&str] = &[
    "Name",
    "Path",
    "Args",
    "Workingdir",
    "Env",
    "Autostart",
    "Restart",
    "StartSecs",
    "MaxRestarts",
    "RestartDelay",
    "StopSignal",
    "StopTimeout",
    "User",
    "Logfile",
    "ErrLogfile",
    "LogMaxBytes",
    "LogBackups",
    "Web",
    "PidFile",
    "Ready",
    "Alive",
    "After",
    "Instances",
    "Listen",
    "EnvFile",
    "LogTimestamps",
];

impl Config {
    /// Loads the daemon file at `path`, then every `*.toml` in its Confdir.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let mut issues = Issues::default();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigIssue {
                    file: path.to_owned(),
                    line: None,
                    message: format!("cannot read the config file: {e}"),
                }]));
            }
        };
        let base = folder_of(path);
        let mut daemon = DaemonConfig::defaults(path, &base);
        let mut found: Vec<(ProgramSpec, Located)> = Vec::new();
        let file = SourceFile::new(path, &text);
        if let Some(table) = file.parse(&mut issues) {
            let mut inline = Vec::new();
            daemon.read(&table, &base, &mut issues, &mut inline);
            for (index, (program, here)) in inline.into_iter().enumerate() {
                match program {
                    Value::Table(t) => {
                        if let Some(found_one) =
                            read_program(t, &here, &base, &daemon.log_dir, &mut issues)
                        {
                            found.push(found_one);
                        }
                    }
                    other => issues.error(
                        &here,
                        format!(
                            "[[Program]] entry {} must be a table, not {}",
                            index + 1,
                            kind_of(other)
                        ),
                    ),
                }
            }
        }
        found.extend(load_confdir(&daemon, &mut issues));
        let programs = check_unique(found, &mut issues);
        check_order(&programs, &mut issues);
        let programs = programs.into_iter().map(|(spec, _)| spec).collect();
        if issues.errors.is_empty() {
            Ok(Config {
                daemon,
                programs,
                warnings: issues.warnings,
            })
        } else {
            Err(ConfigErrors(issues.errors))
        }
    }
}

/// Reads a program spec from a JSON object with the keys of a program file
/// (as `process.add` takes it), by the same rules as a program file.
///
/// Errors are located at `origin` (for example `process.add`) and name the
/// key; relative paths are resolved against zist's working directory.
pub fn program_from_json(
    origin: &str,
    spec: &serde_json::Value,
    log_dir: &Path,
) -> Result<(ProgramSpec, Vec<ConfigIssue>), ConfigErrors> {
    let mut issues = Issues::default();
    let top = Located {
        file: PathBuf::from(origin),
        line: None,
    };
    let table = match from_json(spec, &top) {
        Value::Table(table) => table,
        other => {
            issues.error(
                &top,
                format!(
                    "the spec must be an object with the keys of a program file, not {}",
                    kind_of(&other)
                ),
            );
            return Err(ConfigErrors(issues.errors));
        }
    };
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    match read_program(&table, &top, &base, log_dir, &mut issues) {
        Some((spec, _)) if issues.errors.is_empty() => Ok((spec, issues.warnings)),
        _ => Err(ConfigErrors(issues.errors)),
    }
}

/// A program spec as a JSON object with the keys of a program file, which
/// [`program_from_json`] reads back into an equal spec (zist keeps programs
/// added at run time this way, docs/reference.md §8.1).
pub fn program_to_json(spec: &ProgramSpec) -> serde_json::Value {
    use serde_json::{Value as J, json};
    let path = |p: &Path| J::String(p.to_string_lossy().into_owned());
    let duration = |d: std::time::Duration| J::String(format!("{}ms", d.as_millis()));
    let mut object = json!({
        "Name": spec.name.as_str(),
        "Path": path(&spec.path),
        "Args": spec.args,
        "Env": spec.env,
        "Autostart": spec.autostart,
        "Restart": spec.restart.as_str(),
        "StartSecs": duration(spec.start_secs),
        "MaxRestarts": spec.max_restarts,
        "RestartDelay": duration(spec.restart_delay),
        "StopSignal": crate::spec::signal_name(spec.stop_signal),
        "StopTimeout": duration(spec.stop_timeout),
        "LogMaxBytes": spec.log_max_bytes,
        "LogBackups": spec.log_backups,
        "Web": spec.web,
        "LogTimestamps": spec.log_timestamps,
    });
    let instances = spec.instances.map(|n| json!(n));
    let optional = [
        ("Workingdir", spec.workingdir.as_deref().map(path)),
        ("User", spec.user.clone().map(J::String)),
        ("Logfile", spec.logfile.as_deref().map(path)),
        ("ErrLogfile", spec.err_logfile.as_deref().map(path)),
        ("PidFile", spec.pid_file.as_deref().map(path)),
        ("Ready", spec.ready.as_ref().map(|c| check_to_json(c, true))),
        ("Instances", instances),
        (
            "EnvFile",
            (!spec.env_files.is_empty()).then(|| {
                json!(
                    spec.env_files
                        .iter()
                        .map(|p| p.to_string_lossy())
                        .collect::<Vec<_>>()
                )
            }),
        ),
        (
            "Listen",
            (!spec.listen.is_empty()).then(|| {
                json!(
                    spec.listen
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                )
            }),
        ),
        (
            "After",
            (!spec.after.is_empty())
                .then(|| json!(spec.after.iter().map(|n| n.as_str()).collect::<Vec<_>>())),
        ),
        (
            "Alive",
            spec.alive.as_ref().map(|c| check_to_json(c, false)),
        ),
    ];
    if let J::Object(map) = &mut object {
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
    }
    object
}

fn folder_of(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    absolute
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Where a value is: the file and line (a JSON spec has no lines: its
/// messages name the key).
#[derive(Clone, Debug)]
struct Located {
    file: PathBuf,
    line: Option<usize>,
}

#[derive(Default)]
struct Issues {
    errors: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
}

impl Issues {
    fn error(&mut self, at: &Located, message: String) {
        self.errors.push(ConfigIssue {
            file: at.file.clone(),
            line: at.line,
            message,
        });
    }
    fn warning(&mut self, at: &Located, message: String) {
        self.warnings.push(ConfigIssue {
            file: at.file.clone(),
            line: at.line,
            message,
        });
    }
}

/// A value as the loader reads it, whether it came from a TOML file or a
/// JSON spec, each part with where it is.
#[derive(Debug)]
enum Value {
    Str(String),
    /// A whole number; `None` when it does not fit in 128 bits.
    Int(Option<i128>),
    Float(f64),
    Bool(bool),
    Date,
    /// JSON's `null`.
    Null,
    Array(Vec<(Value, Located)>),
    Table(Table),
}

/// A table's entries in the order written, each with where its key is.
type Table = Vec<(String, Value, Located)>;

struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
    /// Offsets of the newlines, found once: a line number is a binary
    /// search, not a scan from the top (a config with 5000 programs has
    /// 20 000 keys).
    newlines: Vec<usize>,
}

impl<'a> SourceFile<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let newlines = memchr::memchr_iter(b'\n', text.as_bytes()).collect();
        Self {
            path,
            text,
            newlines,
        }
    }

    fn at(&self, span: std::ops::Range<usize>) -> Located {
        let offset = span.start.min(self.text.len());
        let line = self.newlines.partition_point(|&n| n < offset) + 1;
        Located {
            file: self.path.to_owned(),
            line: Some(line),
        }
    }

    fn parse(&self, issues: &mut Issues) -> Option<Table> {
        match DeTable::parse(self.text) {
            Ok(table) => Some(self.table(table.get_ref())),
            Err(e) => {
                let at = match e.span() {
                    Some(span) => self.at(span),
                    None => Located {
                        file: self.path.to_owned(),
                        line: None,
                    },
                };
                let detail = e.message().trim().to_owned();
                issues.error(&at, format!("TOML syntax error: {detail}"));
                None
            }
        }
    }

    fn table(&self, table: &DeTable<'_>) -> Table {
        table
            .iter()
            .map(|(key, value)| {
                (
                    key.get_ref().as_ref().to_owned(),
                    self.value(value.get_ref()),
                    self.at(key.span()),
                )
            })
            .collect()
    }

    fn value(&self, value: &DeValue<'_>) -> Value {
        match value {
            DeValue::String(s) => Value::Str(s.as_ref().to_owned()),
            DeValue::Integer(i) => Value::Int(i128::from_str_radix(i.as_str(), i.radix()).ok()),
            DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(_) => Value::Date,
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| (self.value(item.get_ref()), self.at(item.span())))
                    .collect(),
            ),
            DeValue::Table(t) => Value::Table(self.table(t)),
        }
    }
}

/// A JSON value as the loader reads it; every part is located at `at`.
fn from_json(value: &serde_json::Value, at: &Located) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(Some(i.into())),
            (_, Some(u), _) => Value::Int(Some(u.into())),
            (_, _, Some(f)) => Value::Float(f),
            _ => Value::Int(None),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| (from_json(item, at), at.clone()))
                .collect(),
        ),
        J::Object(map) => Value::Table(
            map.iter()
                .map(|(k, v)| (k.clone(), from_json(v, at), at.clone()))
                .collect(),
        ),
    }
}

/// Maps a written key to its canonical spelling: exact PascalCase or all-lowercase.
fn canonical(written: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .copied()
        .find(|k| *k == written || k.to_ascii_lowercase() == written)
}

fn nearest(written: &str, known: &[&'static str]) -> &'static str {
    let lower = written.to_ascii_lowercase();
    known
        .iter()
        .copied()
        .min_by_key(|k| strsim::levenshtein(&lower, &k.to_ascii_lowercase()))
        .unwrap_or(known[0])
}

/// A table's known keys by canonical name, each with its value and place.
type Entries<'t> = BTreeMap<&'static str, (&'t Value, Located)>;

/// Walks a table's keys, reporting unknown and repeated ones, and yields the rest canonically.
fn known_entries<'t>(
    table: &'t Table,
    known: &[&'static str],
    what: &str,
    issues: &mut Issues,
) -> Entries<'t> {
    let mut out: Entries<'t> = BTreeMap::new();
    for (written, value, here) in table {
        match canonical(written, known) {
            Some(k) => {
                if let Some((_, first)) = out.get(k) {
                    let first = match first.line {
                        Some(line) => format!(" from line {line}"),
                        None => String::new(),
                    };
                    issues.error(here, format!("`{written}` repeats `{k}`{first}; keep one"));
                } else {
                    out.insert(k, (value, here.clone()));
                }
            }
            None => issues.error(
                here,
                format!(
                    "unknown key `{written}` in {what}; the nearest known key is `{}`",
                    nearest(written, known)
                ),
            ),
        }
    }
    out
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "a string",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Bool(_) => "a boolean",
        Value::Date => "a date",
        Value::Null => "null",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn want_str<'v>(key: &str, v: &'v Value, at: &Located, issues: &mut Issues) -> Option<&'v str> {
    match v {
        Value::Str(s) => Some(s),
        other => {
            issues.error(
                at,
                format!("`{key}` must be a string, not {}", kind_of(other)),
            );
            None
        }
    }
}

/// A string that names a file or folder: not empty.
fn want_path(
    key: &str,
    v: &Value,
    at: &Located,
    base: &Path,
    issues: &mut Issues,
) -> Option<PathBuf> {
    let s = want_str(key, v, at, issues)?;
    if s.is_empty() {
        issues.error(
            at,
            format!("`{key}` is empty; name a path or leave the key out"),
        );
        return None;
    }
    Some(resolve(base, s))
}

fn want_bool(key: &str, v: &Value, at: &Located, issues: &mut Issues) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            issues.error(
                at,
                format!("`{key}` must be true or false, not {}", kind_of(other)),
            );
            None
        }
    }
}

/// A whole number in `range`.
fn want_uint<T: TryFrom<i128> + Into<i128> + Copy>(
    key: &str,
    v: &Value,
    range: std::ops::RangeInclusive<T>,
    at: &Located,
    issues: &mut Issues,
) -> Option<T> {
    let (low, high) = ((*range.start()).into(), (*range.end()).into());
    let out_of_range =
        |n: &dyn fmt::Display| format!("`{key}` = {n} is out of range; use {low} to {high}");
    match v {
        Value::Int(Some(n)) if (low..=high).contains(n) => T::try_from(*n).ok(),
        Value::Int(Some(n)) => {
            issues.error(at, out_of_range(n));
            None
        }
        Value::Int(None) => {
            issues.error(at, out_of_range(&"a number that large"));
            None
        }
        other => {
            issues.error(
                at,
                format!("`{key}` must be a whole number, not {}", kind_of(other)),
            );
            None
        }
    }
}

/// The most rotated log files kept.
pub const MAX_LOG_BACKUPS: u32 = 1000;

/// A check table: exactly one of `Tcp`, `Http`, `Exec`, and `Interval`,
/// `Timeout`, `Failures` (docs/reference.md §9).
fn want_check(key: &str, v: &Value, at: &Located, issues: &mut Issues) -> Option<Check> {
    let Value::Table(entries) = v else {
        issues.error(
            at,
            format!(
                "`{key}` must be a table like {{ Tcp = \"127.0.0.1:5432\" }}, not {}",
                kind_of(v)
            ),
        );
        return None;
    };
    let ready = key == "Ready";
    let mut check = Check {
        probe: Probe::Tcp(String::new()),
        interval: if ready {
            std::time::Duration::from_secs(1)
        } else {
            std::time::Duration::from_secs(10)
        },
        timeout: if ready {
            std::time::Duration::from_secs(60)
        } else {
            std::time::Duration::from_secs(5)
        },
        failures: 3,
        watchdog: None,
    };
    let mut kinds = Vec::new();
    for (name, value, _) in entries {
        let part = format!("{key}.{name}");
        match name.as_str() {
            "Tcp" | "tcp" => {
                if let Some(address) = want_str(&part, value, at, issues) {
                    if address
                        .rsplit_once(':')
                        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
                    {
                        issues.error(
                            at,
                            format!("`{part}` must be \"host:port\", not {address:?}"),
                        );
                    }
                    check.probe = Probe::Tcp(address.to_owned());
                }
                kinds.push("Tcp");
            }
            "Http" | "http" => {
                if let Some(url) = want_str(&part, value, at, issues) {
                    if !url.starts_with("http://") {
                        issues.error(at, format!("`{part}` must be an http:// URL, not {url:?}"));
                    }
                    check.probe = Probe::Http(url.to_owned());
                }
                kinds.push("Http");
            }
            "Exec" | "exec" => {
                match want_str(&part, value, at, issues).map(shlex::split) {
                    Some(Some(words)) if !words.is_empty() => check.probe = Probe::Exec(words),
                    Some(_) => issues.error(at, format!("`{part}` must be a command line")),
                    None => {}
                }
                kinds.push("Exec");
            }
            "Line" | "line" => {
                if !ready {
                    issues.error(at, format!("`{part}`: a Line check is for Ready only (a line that matched once says nothing of liveness)"));
                } else if let Some(pattern) = want_str(&part, value, at, issues) {
                    match LinePattern::new(pattern) {
                        Ok(pattern) => check.probe = Probe::Line(pattern),
                        Err(e) => {
                            issues.error(at, format!("`{part}` is not a regular expression: {e}"))
                        }
                    }
                }
                kinds.push("Line");
            }
            "Notify" | "notify" => {
                if !ready {
                    issues.error(at, format!("`{part}`: a Notify check is for Ready only; for liveness give WatchdogSec in the Ready table"));
                } else {
                    match value {
                        Value::Bool(true) => check.probe = Probe::Notify,
                        other => issues
                            .error(at, format!("`{part}` must be true, not {}", kind_of(other))),
                    }
                }
                kinds.push("Notify");
            }
            "WatchdogSec" | "watchdogsec" if ready => {
                if let Some(d) = want_duration(&part, value, at, issues) {
                    if d.is_zero() {
                        issues.error(at, format!("`{part}` must be more than 0"));
                    } else {
                        check.watchdog = Some(d);
                    }
                }
            }
            "Interval" | "interval" => {
                if let Some(d) = want_duration(&part, value, at, issues) {
                    check.interval = d.max(std::time::Duration::from_millis(10));
                }
            }
            "Timeout" | "timeout" => {
                if let Some(d) = want_duration(&part, value, at, issues) {
                    check.timeout = d;
                }
            }
            "Failures" | "failures" if !ready => {
                if let Some(n) = want_uint(&part, value, 1..=u32::MAX, at, issues) {
                    check.failures = n;
                }
            }
            other => issues.error(
                at,
                format!(
                    "`{key}` has no key `{other}`; it takes {}",
                    if ready {
                        "Tcp, Http, Exec, Line or Notify, Interval, Timeout, WatchdogSec"
                    } else {
                        "Tcp, Http or Exec, Interval, Timeout, Failures"
                    }
                ),
            ),
        }
    }
    if check.watchdog.is_some() && kinds != ["Notify"] {
        issues.error(
            at,
            format!("`{key}.WatchdogSec` needs Notify = true (WATCHDOG=1 comes by notification)"),
        );
    }
    match kinds.len() {
        1 => Some(check),
        0 => {
            issues.error(
                at,
                format!(
                    "`{key}` names no check; give one of {}",
                    if ready {
                        "Tcp, Http, Exec, Line, Notify"
                    } else {
                        "Tcp, Http, Exec"
                    }
                ),
            );
            None
        }
        _ => {
            issues.error(
                at,
                format!("`{key}` names {}; give exactly one", kinds.join(" and ")),
            );
            None
        }
    }
}

/// A check as program-file keys.
fn check_to_json(check: &Check, ready: bool) -> serde_json::Value {
    let millis = |d: std::time::Duration| format!("{}ms", d.as_millis());
    let mut object = serde_json::json!({
        "Interval": millis(check.interval),
        "Timeout": millis(check.timeout),
    });
    if !ready && let serde_json::Value::Object(map) = &mut object {
        map.insert("Failures".to_owned(), serde_json::json!(check.failures));
    }
    let (kind, value) = match &check.probe {
        Probe::Tcp(address) => ("Tcp", serde_json::json!(address)),
        Probe::Http(url) => ("Http", serde_json::json!(url)),
        Probe::Exec(words) => (
            "Exec",
            serde_json::json!(
                shlex::try_join(words.iter().map(String::as_str)).unwrap_or_default()
            ),
        ),
        Probe::Line(pattern) => ("Line", serde_json::json!(pattern.as_str())),
        Probe::Notify => ("Notify", serde_json::json!(true)),
    };
    if let serde_json::Value::Object(map) = &mut object {
        map.insert(kind.to_owned(), value);
        if let Some(watchdog) = check.watchdog {
            map.insert(
                "WatchdogSec".to_owned(),
                serde_json::json!(millis(watchdog)),
            );
        }
    }
    object
}

fn want_duration(
    key: &str,
    v: &Value,
    at: &Located,
    issues: &mut Issues,
) -> Option<std::time::Duration> {
    let parsed = match v {
        Value::Str(s) => parse_duration(s).map_err(|e| e.to_string()),
        Value::Int(Some(n)) if *n < 0 => Err("a duration cannot be negative".to_owned()),
        Value::Int(Some(n)) => {
            Ok(u64::try_from(*n).map_or(std::time::Duration::MAX, std::time::Duration::from_secs))
        }
        Value::Int(None) => Ok(std::time::Duration::MAX),
        Value::Float(f) if *f < 0.0 || f.is_nan() => {
            Err("a duration cannot be negative".to_owned())
        }
        Value::Float(f) => {
            Ok(std::time::Duration::try_from_secs_f64(*f).unwrap_or(std::time::Duration::MAX))
        }
        other => Err(format!(
            "it must be a duration like \"10s\" or a number of seconds, not {}",
            kind_of(other)
        )),
    };
    within(key, parsed, MAX_DURATION, "0s to 24h", at, issues)
}

fn want_size(key: &str, v: &Value, at: &Located, issues: &mut Issues) -> Option<u64> {
    let parsed = match v {
        Value::Str(s) => parse_size(s).map_err(|e| e.to_string()),
        Value::Int(Some(n)) if *n < 0 => Err("a size cannot be negative".to_owned()),
        Value::Int(Some(n)) => Ok(u64::try_from(*n).unwrap_or(u64::MAX)),
        Value::Int(None) => Ok(u64::MAX),
        other => Err(format!(
            "it must be a size like \"50MB\" or a number of bytes, not {}",
            kind_of(other)
        )),
    };
    within(
        key,
        parsed,
        MAX_SIZE,
        "0 (never rotate) to 1TiB",
        at,
        issues,
    )
}

/// A value read for `key`, reported (with its range) when it did not read
/// or passes `max`.
fn within<T: PartialOrd>(
    key: &str,
    parsed: Result<T, String>,
    max: T,
    range: &str,
    at: &Located,
    issues: &mut Issues,
) -> Option<T> {
    let checked = parsed.and_then(|v| {
        if v <= max {
            Ok(v)
        } else {
            Err(format!("it is out of range; use {range}"))
        }
    });
    checked
        .map_err(|e| issues.error(at, format!("`{key}`: {e}")))
        .ok()
}

impl DaemonConfig {
    fn defaults(file: &Path, base: &Path) -> Self {
        let log_dir = base.join("logs");
        Self {
            file: file.to_owned(),
            confdir: base.join("conf.d"),
            confdir_named: false,
            web: true,
            protocol: Protocol::Http,
            http_port: 7000,
            rpc_port: 9876,
            token: String::new(),
            bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            cert_file: None,
            key_file: None,
            daemon_log: log_dir.join("zistd.log"),
            log_dir,
            state_dir: base.join("state"),
            cgroups: true,
            console: false,
            tokens: Vec::new(),
            allowed_hosts: Vec::new(),
            socket: Some(base.join("state").join("zistd.sock")),
            socket_group: None,
        }
    }

    fn read<'t>(
        &mut self,
        table: &'t Table,
        base: &Path,
        issues: &mut Issues,
        programs: &mut Vec<(&'t Value, Located)>,
    ) {
        let entries = known_entries(table, DAEMON_KEYS, "the daemon file", issues);
        let mut daemon_log = None;
        let mut socket_named = false;
        let top = Located {
            file: self.file.clone(),
            line: None,
        };
        for (key, (v, at)) in entries {
            match key {
                "Confdir" => {
                    if let Some(dir) = want_path(key, v, &at, base, issues) {
                        self.confdir = dir;
                        self.confdir_named = true;
                    }
                }
                "Web" => self.web = want_bool(key, v, &at, issues).unwrap_or(self.web),
                "Console" => self.console = want_bool(key, v, &at, issues).unwrap_or(self.console),
                "Protocol" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        match s.to_ascii_lowercase().as_str() {
                            "http" => self.protocol = Protocol::Http,
                            "https" => self.protocol = Protocol::Https,
                            _ => issues.error(
                                &at,
                                format!("`Protocol` = {s:?}; use \"http\" or \"https\""),
                            ),
                        }
                    }
                }
                "HTTPPort" => {
                    self.http_port =
                        want_uint(key, v, 0..=u16::MAX, &at, issues).unwrap_or(self.http_port)
                }
                "RPCPort" => {
                    self.rpc_port =
                        want_uint(key, v, 0..=u16::MAX, &at, issues).unwrap_or(self.rpc_port)
                }
                "Token" => {
                    if let Some(token) = want_str(key, v, &at, issues) {
                        self.token = token.to_owned();
                    }
                }
                "Bind" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        match s.parse() {
                            Ok(ip) => self.bind = ip,
                            Err(_) => issues.error(
                                &at,
                                format!(
                                    "`Bind` = {s:?} is not an IP address; use \"127.0.0.1\" or \"0.0.0.0\""
                                ),
                            ),
                        }
                    }
                }
                "CertFile" => self.cert_file = want_path(key, v, &at, base, issues),
                "KeyFile" => self.key_file = want_path(key, v, &at, base, issues),
                "LogDir" => {
                    if let Some(dir) = want_path(key, v, &at, base, issues) {
                        self.log_dir = dir;
                    }
                }
                "DaemonLog" => daemon_log = want_path(key, v, &at, base, issues),
                "StateDir" => {
                    if let Some(dir) = want_path(key, v, &at, base, issues) {
                        self.state_dir = dir;
                    }
                }
                "Tokens" => self.tokens = want_tokens(key, v, &at, issues),
                "Socket" => {
                    socket_named = true;
                    if let Some(s) = want_str(key, v, &at, issues) {
                        self.socket = (!s.is_empty()).then(|| resolve(base, s));
                    }
                }
                "SocketGroup" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        self.socket_group = Some(s.to_owned());
                    }
                }
                "AllowedHosts" => {
                    self.allowed_hosts =
                        want_list(key, v, &at, issues, "[\"zist.example.com\"]", |s| {
                            if s.is_empty() || s.contains(['/', ' ', ':']) {
                                Err(format!("{s:?} is not a host name"))
                            } else {
                                Ok(s.to_ascii_lowercase())
                            }
                        });
                }
                "Cgroups" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        match s.to_ascii_lowercase().as_str() {
                            "auto" => self.cgroups = true,
                            "off" => self.cgroups = false,
                            _ => issues
                                .error(&at, format!("`Cgroups` = {s:?}; use \"auto\" or \"off\"")),
                        }
                    }
                }
                "Program" => match v {
                    Value::Array(items) => {
                        programs.extend(items.iter().map(|(v, at)| (v, at.clone())))
                    }
                    Value::Table(_) => programs.push((v, at)),
                    other => issues.error(
                        &at,
                        format!(
                            "`Program` must be written [[Program]], not {}",
                            kind_of(other)
                        ),
                    ),
                },
                _ => {}
            }
        }
        if self.token.is_empty() && self.tokens.is_empty() {
            issues.error(
                &top,
                "no Token: run `zistd generate` and add Token = \"<it>\" to this file".to_owned(),
            );
        }
        if !self.token.is_empty() && self.tokens.iter().any(|t| t.token == self.token) {
            issues.error(
                &top,
                "a token of `Tokens` is the same as `Token`; give each its own".to_owned(),
            );
        }
        self.daemon_log = daemon_log.unwrap_or_else(|| self.log_dir.join("zistd.log"));
        if !socket_named {
            self.socket = Some(self.state_dir.join("zistd.sock"));
        }
    }

    /// Where the JSON-RPC server listens.
    pub fn rpc_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.bind, self.rpc_port)
    }

    /// Where the HTTP API listens; `None` when `Web = false` (not served).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.web
            .then(|| std::net::SocketAddr::new(self.bind, self.http_port))
    }

    /// The certificate and key files for https: the flags given to zistd,
    /// else CertFile and KeyFile. `None` for plain http. The error says
    /// what is missing.
    pub fn tls_files(
        &self,
        cert_flag: Option<&Path>,
        key_flag: Option<&Path>,
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigIssue> {
        if self.protocol == Protocol::Http {
            return Ok(None);
        }
        let cert = cert_flag
            .map(Path::to_owned)
            .or_else(|| self.cert_file.clone());
        let key = key_flag
            .map(Path::to_owned)
            .or_else(|| self.key_file.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            _ => Err(ConfigIssue {
                file: self.file.clone(),
                line: None,
                message: "Protocol = \"https\" needs CertFile and KeyFile in the config (or --certfile and --keyfile)".to_owned(),
            }),
        }
    }
}

fn load_confdir(daemon: &DaemonConfig, issues: &mut Issues) -> Vec<(ProgramSpec, Located)> {
    let dir = &daemon.confdir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !daemon.confdir_named {
                return Vec::new();
            }
            issues.warning(
                &Located {
                    file: daemon.file.clone(),
                    line: None,
                },
                format!(
                    "Confdir {} does not exist; no program files were read from it",
                    dir.display()
                ),
            );
            return Vec::new();
        }
        Err(e) => {
            issues.error(
                &Located {
                    file: dir.clone(),
                    line: None,
                },
                format!("cannot read Confdir: {e}"),
            );
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                issues.error(
                    &Located {
                        file: path.clone(),
                        line: None,
                    },
                    format!("cannot read program file: {e}"),
                );
                continue;
            }
        };
        let source = SourceFile::new(&path, &text);
        let base = folder_of(&path);
        let top = Located {
            file: path.clone(),
            line: None,
        };
        if let Some(table) = source.parse(issues)
            && let Some(found_one) = read_program(&table, &top, &base, &daemon.log_dir, issues)
        {
            out.push(found_one);
        }
    }
    out
}

/// The items of an array; else an error that shows `example`.
fn want_array<'v>(
    key: &str,
    v: &'v Value,
    at: &Located,
    issues: &mut Issues,
    example: &str,
) -> Option<&'v [(Value, Located)]> {
    match v {
        Value::Array(items) => Some(items),
        other => {
            issues.error(
                at,
                format!(
                    "`{key}` must be an array like {example}, not {}",
                    kind_of(other)
                ),
            );
            None
        }
    }
}

/// `Tokens = [{ Name = "ci", Token = "...", Scope = "operate" }, ...]`.
fn want_tokens(key: &str, v: &Value, at: &Located, issues: &mut Issues) -> Vec<TokenEntry> {
    let example = "[{ Name = \"ci\", Token = \"...\", Scope = \"operate\" }]";
    let Some(items) = want_array(key, v, at, issues, example) else {
        return Vec::new();
    };
    let mut tokens: Vec<TokenEntry> = Vec::new();
    for (n, (item, _)) in items.iter().enumerate() {
        let which = format!("`{key}` entry {}", n + 1);
        let Value::Table(fields) = item else {
            issues.error(
                at,
                format!(
                    "{which} must be a table like {example}, not {}",
                    kind_of(item)
                ),
            );
            continue;
        };
        let (mut name, mut token, mut scope) = (None, None, None);
        for (field, value, _) in fields {
            let part = format!("{which}: `{field}`");
            match field.as_str() {
                "Name" | "name" => name = want_str(&part, value, at, issues).map(str::to_owned),
                "Token" | "token" => token = want_str(&part, value, at, issues).map(str::to_owned),
                "Scope" | "scope" => {
                    if let Some(s) = want_str(&part, value, at, issues) {
                        match crate::access::Scope::parse(s) {
                            Some(s) => scope = Some(s),
                            None => issues.error(
                                at,
                                format!("{part} is {s:?}; use \"read\", \"operate\" or \"admin\""),
                            ),
                        }
                    }
                }
                other => issues.error(
                    at,
                    format!("{which} has no key `{other}`; it takes Name, Token, Scope"),
                ),
            }
        }
        match (name, token, scope) {
            (Some(name), Some(token), Some(scope)) => {
                if name.is_empty() || token.is_empty() {
                    issues.error(at, format!("{which}: Name and Token must not be empty"));
                } else if tokens.iter().any(|t| t.name == name) {
                    issues.error(at, format!("{which}: the name {name:?} is used twice"));
                } else if tokens.iter().any(|t| t.token == token) {
                    issues.error(
                        at,
                        format!("{which} ({name}): its token is the same as another's"),
                    );
                } else {
                    tokens.push(TokenEntry { name, token, scope });
                }
            }
            _ => issues.error(at, format!("{which} needs Name, Token and Scope")),
        }
    }
    tokens
}

/// An array of strings, each read by `read` (its error says what is
/// wrong); `example` shows the form. A string given twice is an error.
fn want_list<T: PartialEq>(
    key: &str,
    v: &Value,
    at: &Located,
    issues: &mut Issues,
    example: &str,
    read: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let Some(items) = want_array(key, v, at, issues, example) else {
        return Vec::new();
    };
    let mut list: Vec<T> = Vec::new();
    for (item, _) in items {
        match item {
            Value::Str(s) => match read(s) {
                Ok(value) if list.contains(&value) => {
                    issues.error(at, format!("`{key}` names {s:?} twice"));
                }
                Ok(value) => list.push(value),
                Err(e) => issues.error(at, format!("`{key}`: {e}")),
            },
            other => issues.error(
                at,
                format!("`{key}` items must be strings, not {}", kind_of(other)),
            ),
        }
    }
    list
}

/// The order `After` sets: every name it gives is a program of the config,
/// and no program comes after itself, directly or through others.
fn check_order(programs: &[(ProgramSpec, Located)], issues: &mut Issues) {
    let index: BTreeMap<&ProgramName, usize> = programs
        .iter()
        .enumerate()
        .map(|(i, (spec, _))| (&spec.name, i))
        .collect();
    for (spec, at) in programs {
        for dep in &spec.after {
            if !index.contains_key(dep) {
                let known: Vec<&str> = index.keys().map(|n| n.as_str()).collect();
                issues.error(
                    at,
                    format!(
                        "`After` of `{}` names `{dep}`, which is no program of this config{}",
                        spec.name,
                        match known
                            .iter()
                            .min_by_key(|k| strsim::levenshtein(dep.as_str(), k))
                        {
                            Some(near) if strsim::levenshtein(dep.as_str(), near) <= 2 => {
                                format!(" (did you mean `{near}`?)")
                            }
                            _ => String::new(),
                        }
                    ),
                );
            }
        }
    }
    // Depth-first, each cycle told once: 0 unseen, 1 on the path, 2 done.
    let mut mark = vec![0u8; programs.len()];
    for start in 0..programs.len() {
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        if mark[start] != 0 {
            continue;
        }
        mark[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let deps = &programs[node].0.after;
            match deps.get(*next) {
                Some(dep) => {
                    *next += 1;
                    let Some(&to) = index.get(dep) else { continue };
                    match mark[to] {
                        0 => {
                            mark[to] = 1;
                            path.push((to, 0));
                        }
                        1 => {
                            let from = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                            let cycle: Vec<&str> = path[from..]
                                .iter()
                                .map(|&(n, _)| programs[n].0.name.as_str())
                                .chain([programs[to].0.name.as_str()])
                                .collect();
                            issues.error(
                                &programs[node].1,
                                format!(
                                    "`After` makes a cycle, so none of these could start: {}",
                                    cycle.join(" -> ")
                                ),
                            );
                        }
                        _ => {}
                    }
                }
                None => {
                    mark[node] = 2;
                    path.pop();
                }
            }
        }
    }
}

fn check_unique(
    found: Vec<(ProgramSpec, Located)>,
    issues: &mut Issues,
) -> Vec<(ProgramSpec, Located)> {
    let mut seen: BTreeMap<ProgramName, Located> = BTreeMap::new();
    let mut programs = Vec::with_capacity(found.len());
    for (spec, at) in found {
        if let Some(first) = seen.get(&spec.name) {
            let where_first = match first.line {
                Some(l) => format!("{}:{l}", first.file.display()),
                None => first.file.display().to_string(),
            };
            issues.error(
                &at,
                format!(
                    "program name `{}` is already used in {where_first}; names must be unique",
                    spec.name
                ),
            );
            continue;
        }
        seen.insert(spec.name.clone(), at.clone());
        programs.push((spec, at));
    }
    programs
}

/// Reads one program's table; `top` is where the program itself is.
fn read_program(
    table: &Table,
    top: &Located,
    base: &Path,
    log_dir: &Path,
    issues: &mut Issues,
) -> Option<(ProgramSpec, Located)> {
    let errors_before = issues.errors.len();
    let entries = known_entries(table, PROGRAM_KEYS, "a program", issues);
    let name = match entries.get("Name") {
        Some((v, at)) => want_str("Name", v, at, issues).and_then(|s| {
            ProgramName::new(s)
                .map_err(|e| issues.error(at, e.to_string()))
                .ok()
        }),
        None => {
            issues.error(top, "program has no `Name`; add Name = \"...\"".to_owned());
            None
        }
    };
    let path = match entries.get("Path") {
        Some((v, at)) => want_str("Path", v, at, issues).and_then(|s| {
            if s.is_empty() {
                issues.error(at, "`Path` is empty; name the executable".to_owned());
                None
            } else if s.contains('/') {
                Some(resolve(base, s))
            } else {
                Some(PathBuf::from(s))
            }
        }),
        None => {
            issues.error(
                top,
                "program has no `Path`; add Path = \"/path/to/executable\"".to_owned(),
            );
            None
        }
    };
    let (name, path) = match (name, path) {
        (Some(n), Some(p)) => (n, p),
        _ => {
            // Still check the other keys so every problem is reported at once.
            let dummy = ProgramSpec::new(ProgramName::new("x").ok()?, "x");
            apply_program_keys(dummy, &entries, base, log_dir, issues);
            return None;
        }
    };
    let spec = ProgramSpec::new(name, path);
    let spec = apply_program_keys(spec, &entries, base, log_dir, issues);
    if issues.errors.len() > errors_before {
        return None;
    }
    warn_what_start_would_refuse(&spec, &entries, issues);
    let name_at = entries
        .get("Name")
        .map(|(_, at)| at.clone())
        .unwrap_or_else(|| top.clone());
    Some((spec, name_at))
}

/// What would make the program fatal at its start, said now: an executable
/// that is missing or cannot be run, a working directory that is not one,
/// a user that does not exist. Warnings: the file or user may appear later.
fn warn_what_start_would_refuse(spec: &ProgramSpec, entries: &Entries<'_>, issues: &mut Issues) {
    let later = "it will be fatal until started again once that is fixed";
    if let Some((_, at)) = entries.get("Path")
        && let Err(why) = crate::spawn::check_executable(&spec.path, &spec.env)
    {
        issues.warning(at, format!("program `{}`: {why}; {later}", spec.name));
    }
    if let (Some(dir), Some((_, at))) = (&spec.workingdir, entries.get("Workingdir"))
        && !dir.is_dir()
    {
        issues.warning(
            at,
            format!(
                "program `{}`: Workingdir {} is not a folder; {later}",
                spec.name,
                dir.display()
            ),
        );
    }
    if let (Some(user), Some((_, at))) = (&spec.user, entries.get("User"))
        && let Err(why) = crate::spawn::check_user(user)
    {
        issues.warning(at, format!("program `{}`: {why}; {later}", spec.name));
    }
}

/// Checks an environment variable's name: not empty, no `=` and no NUL.
fn env_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("is empty")
    } else if key.contains('=') {
        Some("contains `=`")
    } else if key.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    }
}

fn apply_program_keys(
    mut spec: ProgramSpec,
    entries: &Entries<'_>,
    base: &Path,
    log_dir: &Path,
    issues: &mut Issues,
) -> ProgramSpec {
    for (&key, (v, at)) in entries {
        let v = *v;
        match key {
            "Args" => match v {
                Value::Str(s) => match shlex::split(s) {
                    Some(words) => spec.args = words,
                    None => issues.error(
                        at,
                        "`Args` has an unclosed quote or a trailing backslash".to_owned(),
                    ),
                },
                Value::Array(items) => {
                    let mut args = Vec::new();
                    for (item, _) in items {
                        match item {
                            Value::Str(s) => args.push(s.clone()),
                            other => issues.error(
                                at,
                                format!("`Args` items must be strings, not {}", kind_of(other)),
                            ),
                        }
                    }
                    spec.args = args;
                }
                other => issues.error(
                    at,
                    format!(
                        "`Args` must be a string or an array of strings, not {}",
                        kind_of(other)
                    ),
                ),
            },
            "Workingdir" => spec.workingdir = want_path(key, v, at, base, issues),
            "Env" => match v {
                Value::Table(t) => {
                    for (k, val, _) in t {
                        if let Some(problem) = env_key_problem(k) {
                            issues
                                .error(at, format!("`Env` key {k:?} {problem}; name the variable"));
                            continue;
                        }
                        let value = match val {
                            Value::Str(s) => s.clone(),
                            Value::Int(Some(i)) => i.to_string(),
                            Value::Bool(b) => b.to_string(),
                            other => {
                                issues.error(
                                    at,
                                    format!("`Env.{k}` must be a string, not {}", kind_of(other)),
                                );
                                continue;
                            }
                        };
                        spec.env.insert(k.clone(), value);
                    }
                }
                other => issues.error(
                    at,
                    format!(
                        "`Env` must be a table like {{ KEY = \"value\" }}, not {}",
                        kind_of(other)
                    ),
                ),
            },
            "Autostart" => spec.autostart = want_bool(key, v, at, issues).unwrap_or(spec.autostart),
            "Restart" => match v {
                Value::Bool(true) => spec.restart = RestartPolicy::Always,
                Value::Bool(false) => spec.restart = RestartPolicy::Never,
                Value::Str(s) => match RestartPolicy::parse(s) {
                    Some(p) => spec.restart = p,
                    None => issues.error(
                        at,
                        format!("`Restart` = {s:?}; use {}", RestartPolicy::CHOICES),
                    ),
                },
                other => issues.error(
                    at,
                    format!(
                        "`Restart` must be {}, not {}",
                        RestartPolicy::CHOICES,
                        kind_of(other)
                    ),
                ),
            },
            "StartSecs" => {
                spec.start_secs = want_duration(key, v, at, issues).unwrap_or(spec.start_secs)
            }
            "MaxRestarts" => {
                spec.max_restarts =
                    want_uint(key, v, 0..=u32::MAX, at, issues).unwrap_or(spec.max_restarts)
            }
            "RestartDelay" => {
                spec.restart_delay = want_duration(key, v, at, issues).unwrap_or(spec.restart_delay)
            }
            "StopSignal" => {
                if let Some(s) = want_str(key, v, at, issues) {
                    match parse_signal(s) {
                        Ok(sig) => spec.stop_signal = sig,
                        Err(e) => issues.error(at, format!("`StopSignal`: {e}")),
                    }
                }
            }
            "StopTimeout" => {
                spec.stop_timeout = want_duration(key, v, at, issues).unwrap_or(spec.stop_timeout)
            }
            "User" => {
                if let Some(user) = want_str(key, v, at, issues) {
                    if user.is_empty() {
                        issues.error(
                            at,
                            "`User` is empty; name a user or leave the key out".to_owned(),
                        );
                    } else {
                        spec.user = Some(user.to_owned());
                    }
                }
            }
            "Logfile" => spec.logfile = want_path(key, v, at, base, issues),
            "ErrLogfile" => spec.err_logfile = want_path(key, v, at, base, issues),
            "PidFile" => spec.pid_file = want_path(key, v, at, base, issues),
            "Ready" => spec.ready = want_check(key, v, at, issues),
            "Alive" => spec.alive = want_check(key, v, at, issues),
            "After" => {
                spec.after = want_list(key, v, at, issues, "[\"db\"]", |s| {
                    ProgramName::new(s).map_err(|e| e.to_string())
                });
            }
            "LogTimestamps" => {
                spec.log_timestamps = want_bool(key, v, at, issues).unwrap_or(false);
            }
            "EnvFile" => {
                spec.env_files = match v {
                    Value::Str(_) => want_path(key, v, at, base, issues).into_iter().collect(),
                    _ => want_list(key, v, at, issues, "[\"app.env\"]", |s| {
                        if s.is_empty() {
                            Err("an empty path".to_owned())
                        } else {
                            Ok(resolve(base, s))
                        }
                    }),
                };
            }
            "Listen" => {
                spec.listen = want_list(
                    key,
                    v,
                    at,
                    issues,
                    "[\"127.0.0.1:8080\"]",
                    ListenAddress::parse,
                );
            }
            "Instances" => {
                spec.instances = want_uint(key, v, 1..=MAX_INSTANCES, at, issues);
            }
            "LogMaxBytes" => {
                spec.log_max_bytes = want_size(key, v, at, issues).unwrap_or(spec.log_max_bytes)
            }
            "LogBackups" => {
                spec.log_backups =
                    want_uint(key, v, 0..=MAX_LOG_BACKUPS, at, issues).unwrap_or(spec.log_backups)
            }
            "Web" => spec.web = want_bool(key, v, at, issues).unwrap_or(spec.web),
            _ => {}
        }
    }
    // Each instance logs into files of its own.
    let stem = match spec.instances {
        Some(_) => format!("{}-{INSTANCE_MARK}", spec.name),
        None => spec.name.to_string(),
    };
    if spec.logfile.is_none() {
        spec.logfile = Some(log_dir.join(format!("{stem}.out.log")));
    }
    if spec.err_logfile.is_none() {
        spec.err_logfile = Some(log_dir.join(format!("{stem}.err.log")));
    }
    spec
}
