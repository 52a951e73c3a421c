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

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::spec::{
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

/// The daemon file's own keys (SPEC §2.1), with relative paths resolved.
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
    /// The shared secret; zistd refuses to start without it.
    pub token: Option<String>,
    /// Address both servers listen on.
    pub bind: String,
    /// PEM certificate for https.
    pub cert_file: Option<PathBuf>,
    /// PEM key for https.
    pub key_file: Option<PathBuf>,
    /// Default folder for program log files.
    pub log_dir: PathBuf,
    /// zistd's own log.
    pub daemon_log: PathBuf,
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
    "Program",
];

const PROGRAM_KEYS: &[&str] = &[
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
            daemon.read(&file, &table, &base, &mut issues, &mut inline);
            for (index, program) in inline {
                let here = file.at(program.span());
                match program.get_ref() {
                    DeValue::Table(t) => {
                        if let Some(found_one) =
                            read_program(&file, t, here.line, &base, &daemon.log_dir, &mut issues)
                        {
                            found.push(found_one);
                        }
                    }
                    other => issues.error(
                        &here,
                        format!(
                            "[[Program]] entry {} must be a table, not {}",
                            index + 1,
                            other.type_str()
                        ),
                    ),
                }
            }
        }
        found.extend(load_confdir(&daemon, &mut issues));
        let programs = check_unique(found, &mut issues);
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

/// Parses one program file's text (the keys of SPEC §2.2, top level).
///
/// `file` names it in errors and anchors relative paths; `log_dir` is where
/// default log files go. Returns the spec and its warnings.
pub fn parse_program(
    file: &Path,
    text: &str,
    log_dir: &Path,
) -> Result<(ProgramSpec, Vec<ConfigIssue>), ConfigErrors> {
    let mut issues = Issues::default();
    let source = SourceFile::new(file, text);
    let base = folder_of(file);
    let spec = source
        .parse(&mut issues)
        .and_then(|t| read_program(&source, &t, Some(1), &base, log_dir, &mut issues));
    match spec {
        Some((spec, _)) if issues.errors.is_empty() => Ok((spec, issues.warnings)),
        _ => Err(ConfigErrors(issues.errors)),
    }
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

/// Where a value is: the file and line.
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

    fn parse(&self, issues: &mut Issues) -> Option<DeTable<'a>> {
        match DeTable::parse(self.text) {
            Ok(table) => Some(table.into_inner()),
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

/// Walks a table's keys, reporting unknown and repeated ones, and yields the rest canonically.
fn known_entries<'t, 'i>(
    file: &SourceFile<'_>,
    table: &'t DeTable<'i>,
    known: &[&'static str],
    what: &str,
    issues: &mut Issues,
) -> BTreeMap<&'static str, (&'t Spanned<DeValue<'i>>, Located)> {
    let mut out: BTreeMap<&'static str, (&'t Spanned<DeValue<'i>>, Located)> = BTreeMap::new();
    for (key, value) in table.iter() {
        let here = file.at(key.span());
        let written = key.get_ref().as_ref();
        match canonical(written, known) {
            Some(k) => {
                if let Some((_, first)) = out.get(k) {
                    let first_line = first.line.unwrap_or(0);
                    issues.error(
                        &here,
                        format!("`{written}` repeats `{k}` from line {first_line}; keep one"),
                    );
                } else {
                    out.insert(k, (value, here));
                }
            }
            None => issues.error(
                &here,
                format!(
                    "unknown key `{written}` in {what}; the nearest known key is `{}`",
                    nearest(written, known)
                ),
            ),
        }
    }
    out
}

fn kind_of(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn want_str<'v>(
    key: &str,
    v: &'v DeValue<'_>,
    at: &Located,
    issues: &mut Issues,
) -> Option<&'v str> {
    match v {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            issues.error(
                at,
                format!("`{key}` must be a string, not {}", kind_of(other)),
            );
            None
        }
    }
}

fn want_bool(key: &str, v: &DeValue<'_>, at: &Located, issues: &mut Issues) -> Option<bool> {
    match v {
        DeValue::Boolean(b) => Some(*b),
        other => {
            issues.error(
                at,
                format!("`{key}` must be true or false, not {}", kind_of(other)),
            );
            None
        }
    }
}

fn integer_of(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

fn want_uint<T: TryFrom<i128>>(
    key: &str,
    v: &DeValue<'_>,
    at: &Located,
    issues: &mut Issues,
) -> Option<T> {
    match integer_of(v) {
        Some(n) => match T::try_from(n) {
            Ok(x) => Some(x),
            Err(_) => {
                issues.error(at, format!("`{key}` = {n} is out of range"));
                None
            }
        },
        None => {
            issues.error(
                at,
                format!("`{key}` must be a whole number, not {}", kind_of(v)),
            );
            None
        }
    }
}

fn want_duration(
    key: &str,
    v: &DeValue<'_>,
    at: &Located,
    issues: &mut Issues,
) -> Option<std::time::Duration> {
    let parsed = match v {
        DeValue::String(s) => parse_duration(s.as_ref()),
        DeValue::Integer(_) => match integer_of(v) {
            Some(n) if n >= 0 => Ok(std::time::Duration::from_secs(n as u64)),
            _ => Err("a duration cannot be negative".to_owned()),
        },
        DeValue::Float(f) => parse_duration(f.as_str()),
        other => Err(format!(
            "it must be a duration like \"10s\" or a number of seconds, not {}",
            kind_of(other)
        )),
    };
    parsed
        .map_err(|e| issues.error(at, format!("`{key}`: {e}")))
        .ok()
}

fn want_size(key: &str, v: &DeValue<'_>, at: &Located, issues: &mut Issues) -> Option<u64> {
    let parsed = match v {
        DeValue::String(s) => parse_size(s.as_ref()),
        DeValue::Integer(_) => match integer_of(v) {
            Some(n) if n >= 0 => Ok(n as u64),
            _ => Err("a size cannot be negative".to_owned()),
        },
        other => Err(format!(
            "it must be a size like \"50MB\" or a number of bytes, not {}",
            kind_of(other)
        )),
    };
    parsed
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
            token: None,
            bind: "127.0.0.1".to_owned(),
            cert_file: None,
            key_file: None,
            daemon_log: log_dir.join("zistd.log"),
            log_dir,
        }
    }

    fn read<'t, 'i>(
        &mut self,
        file: &SourceFile<'_>,
        table: &'t DeTable<'i>,
        base: &Path,
        issues: &mut Issues,
        programs: &mut Vec<(usize, &'t Spanned<DeValue<'i>>)>,
    ) {
        let entries = known_entries(file, table, DAEMON_KEYS, "the daemon file", issues);
        let mut daemon_log = None;
        for (key, (value, at)) in entries {
            let v = value.get_ref();
            match key {
                "Confdir" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        self.confdir = resolve(base, s);
                        self.confdir_named = true;
                    }
                }
                "Web" => self.web = want_bool(key, v, &at, issues).unwrap_or(self.web),
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
                    self.http_port = want_uint(key, v, &at, issues).unwrap_or(self.http_port)
                }
                "RPCPort" => {
                    self.rpc_port = want_uint(key, v, &at, issues).unwrap_or(self.rpc_port)
                }
                "Token" => {
                    self.token = want_str(key, v, &at, issues)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                }
                "Bind" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        if s.parse::<std::net::IpAddr>().is_ok() {
                            self.bind = s.to_owned();
                        } else {
                            issues.error(
                                &at,
                                format!(
                                    "`Bind` = {s:?} is not an IP address; use \"127.0.0.1\" or \"0.0.0.0\""
                                ),
                            );
                        }
                    }
                }
                "CertFile" => {
                    self.cert_file = want_str(key, v, &at, issues).map(|s| resolve(base, s))
                }
                "KeyFile" => {
                    self.key_file = want_str(key, v, &at, issues).map(|s| resolve(base, s))
                }
                "LogDir" => {
                    if let Some(s) = want_str(key, v, &at, issues) {
                        self.log_dir = resolve(base, s);
                    }
                }
                "DaemonLog" => daemon_log = want_str(key, v, &at, issues).map(|s| resolve(base, s)),
                "Program" => match v {
                    DeValue::Array(items) => programs.extend(items.iter().enumerate()),
                    DeValue::Table(_) => programs.push((0, value)),
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
        self.daemon_log = daemon_log.unwrap_or_else(|| self.log_dir.join("zistd.log"));
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
        if let Some(table) = source.parse(issues)
            && let Some(found_one) =
                read_program(&source, &table, None, &base, &daemon.log_dir, issues)
        {
            out.push(found_one);
        }
    }
    out
}

fn check_unique(found: Vec<(ProgramSpec, Located)>, issues: &mut Issues) -> Vec<ProgramSpec> {
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
        seen.insert(spec.name.clone(), at);
        programs.push(spec);
    }
    programs
}

fn read_program(
    file: &SourceFile<'_>,
    table: &DeTable<'_>,
    line: Option<usize>,
    base: &Path,
    log_dir: &Path,
    issues: &mut Issues,
) -> Option<(ProgramSpec, Located)> {
    let errors_before = issues.errors.len();
    let entries = known_entries(file, table, PROGRAM_KEYS, "a program", issues);
    let top = Located {
        file: file.path.to_owned(),
        line,
    };
    let name = match entries.get("Name") {
        Some((v, at)) => want_str("Name", v.get_ref(), at, issues)
            .and_then(|s| ProgramName::new(s).map_err(|e| issues.error(at, e)).ok()),
        None => {
            issues.error(&top, "program has no `Name`; add Name = \"...\"".to_owned());
            None
        }
    };
    let path = match entries.get("Path") {
        Some((v, at)) => want_str("Path", v.get_ref(), at, issues).and_then(|s| {
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
                &top,
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
    if let Some((_, at)) = entries.get("Path")
        && let Err(why) = crate::spawn::check_executable(&spec.path, &spec.env)
    {
        issues.warning(
            at,
            format!(
                "program `{}`: {why}; it will be fatal until started again after the file appears",
                spec.name
            ),
        );
    }
    let name_at = entries.get("Name").map(|(_, at)| at.clone()).unwrap_or(top);
    Some((spec, name_at))
}

fn apply_program_keys(
    mut spec: ProgramSpec,
    entries: &BTreeMap<&'static str, (&Spanned<DeValue<'_>>, Located)>,
    base: &Path,
    log_dir: &Path,
    issues: &mut Issues,
) -> ProgramSpec {
    for (&key, (value, at)) in entries {
        let v = value.get_ref();
        match key {
            "Args" => match v {
                DeValue::String(s) => match shlex::split(s.as_ref()) {
                    Some(words) => spec.args = words,
                    None => issues.error(
                        at,
                        "`Args` has an unclosed quote or a trailing backslash".to_owned(),
                    ),
                },
                DeValue::Array(items) => {
                    let mut args = Vec::new();
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => args.push(s.as_ref().to_owned()),
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
            "Workingdir" => {
                spec.workingdir = want_str(key, v, at, issues).map(|s| resolve(base, s))
            }
            "Env" => match v {
                DeValue::Table(t) => {
                    for (k, val) in t.iter() {
                        match val.get_ref() {
                            DeValue::String(s) => {
                                spec.env
                                    .insert(k.get_ref().as_ref().to_owned(), s.as_ref().to_owned());
                            }
                            DeValue::Integer(i) => {
                                spec.env
                                    .insert(k.get_ref().as_ref().to_owned(), i.as_str().to_owned());
                            }
                            DeValue::Boolean(b) => {
                                spec.env
                                    .insert(k.get_ref().as_ref().to_owned(), b.to_string());
                            }
                            other => issues.error(
                                at,
                                format!(
                                    "`Env.{}` must be a string, not {}",
                                    k.get_ref().as_ref(),
                                    kind_of(other)
                                ),
                            ),
                        }
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
                DeValue::Boolean(true) => spec.restart = RestartPolicy::Always,
                DeValue::Boolean(false) => spec.restart = RestartPolicy::Never,
                DeValue::String(s) => match RestartPolicy::parse(s.as_ref()) {
                    Some(p) => spec.restart = p,
                    None => issues.error(
                        at,
                        format!(
                            "`Restart` = {:?}; use {}",
                            s.as_ref(),
                            RestartPolicy::CHOICES
                        ),
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
                spec.max_restarts = want_uint(key, v, at, issues).unwrap_or(spec.max_restarts)
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
            "User" => spec.user = want_str(key, v, at, issues).map(str::to_owned),
            "Logfile" => spec.logfile = want_str(key, v, at, issues).map(|s| resolve(base, s)),
            "ErrLogfile" => {
                spec.err_logfile = want_str(key, v, at, issues).map(|s| resolve(base, s))
            }
            "LogMaxBytes" => {
                spec.log_max_bytes = want_size(key, v, at, issues).unwrap_or(spec.log_max_bytes)
            }
            "LogBackups" => {
                spec.log_backups = want_uint(key, v, at, issues).unwrap_or(spec.log_backups)
            }
            "Web" => spec.web = want_bool(key, v, at, issues).unwrap_or(spec.web),
            _ => {}
        }
    }
    if spec.logfile.is_none() {
        spec.logfile = Some(log_dir.join(format!("{}.out.log", spec.name)));
    }
    if spec.err_logfile.is_none() {
        spec.err_logfile = Some(log_dir.join(format!("{}.err.log", spec.name)));
    }
    spec
}
