//! `GET /metrics`: every program's state, pid, restarts, CPU and memory, and
//! zistd's own figures, in Prometheus' text format (version 0.0.4, which
//! `promtool check metrics` accepts without a remark).
//!
//! Nothing is kept between scrapes: each one reads the supervisor and
//! `/proc/self` afresh, so an idle zistd spends nothing on metrics.

use std::fmt::{Display, Write};

use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::{Authorized, State, authorized};

/// Prometheus' text format, which every scraper and `promtool` read.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is to Prometheus.
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric family of the text format: its `# HELP` and `# TYPE`
/// lines, then its samples, written as they come.
struct Family {
    name: &'static str,
    text: String,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &str) -> Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        Self {
            name,
            text: format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
        }
    }

    /// One sample: `name{label="value",...} value`.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Value) {
        self.text.push_str(self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(key);
                self.text.push_str("=\"");
                for c in val.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        value.write(&mut self.text);
        self.text.push('\n');
    }
}

/// A sample's value as the text format spells it.
trait Value {
    fn write(&self, out: &mut String);
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Integers, written as they are.
struct Int<T>(T);

impl<T: Display> Value for Int<T> {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{}", self.0);
    }
}

/// `GET /metrics`.
pub(crate) fn routes(
    state: &State,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    warp::path!("metrics")
        .and(warp::get())
        .and(authorized(state))
        .then(|state: Authorized| async move {
            match state {
                Ok(state) => metrics(&state).await,
                Err(refused) => *refused,
            }
        })
}

async fn metrics(state: &State) -> Response {
    warp::reply::with_header(render(state).await, "content-type", CONTENT_TYPE).into_response()
}

/// Seconds since the Unix epoch of an RFC 3339 time.
fn epoch_secs(rfc3339: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

async fn render(state: &State) -> String {
    let all = state.supervisor.exposed().stats_all().await;
    let mut up = Family::new(
        "zist_process_state",
        Kind::Gauge,
        "1 for the state each program is in (label state)",
    );
    let mut pid = Family::new(
        "zist_process_pid",
        Kind::Gauge,
        "Pid of the program's process, 0 when none runs",
    );
    let mut restarts = Family::new(
        "zist_process_restarts_total",
        Kind::Counter,
        "Restarts zist made after the program exited on its own",
    );
    let mut ready = Family::new(
        "zist_process_ready",
        Kind::Gauge,
        "1 while the program is running (ready, with a Ready check), else 0",
    );
    let mut exit_code = Family::new(
        "zist_process_exit_code",
        Kind::Gauge,
        "Exit status of the program's last exit (programs that exited with one)",
    );
    let mut exited_at = Family::new(
        "zist_process_last_exit_timestamp_seconds",
        Kind::Gauge,
        "When the program's last process ended, in seconds since the Unix epoch",
    );
    let mut log_bytes = Family::new(
        "zist_process_log_bytes_total",
        Kind::Counter,
        "Bytes of the program's output written to its log file (label stream)",
    );
    let mut log_lost = Family::new(
        "zist_process_log_lost_bytes_total",
        Kind::Counter,
        "Bytes of the program's output that could not be written to its log file",
    );
    let mut uptime = Family::new(
        "zist_process_uptime_seconds",
        Kind::Gauge,
        "How long the current process has been up",
    );
    let mut cpu = Family::new(
        "zist_process_cpu_percent",
        Kind::Gauge,
        "CPU use of the program's process tree, percent of one core (Web = true programs)",
    );
    let mut memory = Family::new(
        "zist_process_memory_bytes",
        Kind::Gauge,
        "Resident memory of the program's process tree (Web = true programs)",
    );
    for (info, stats) in &all {
        let name = [("name", info.name.as_str())];
        up.sample(
            &[("name", &info.name), ("state", info.state.as_str())],
            Int(1),
        );
        pid.sample(&name, Int(info.pid.unwrap_or(0)));
        restarts.sample(&name, Int(info.restarts));
        ready.sample(
            &name,
            Int(u8::from(info.state == zist_core::ProcessState::Running)),
        );
        if let Some(code) = info.exit_code {
            exit_code.sample(&name, Int(code));
        }
        if let Some(at) = info.exited_at.as_deref().and_then(epoch_secs) {
            exited_at.sample(&name, at);
        }
        // From info: what each stream wrote to its file, and lost.
        for (stream, counts) in [("stdout", &info.log.stdout), ("stderr", &info.log.stderr)] {
            let labels = [("name", info.name.as_str()), ("stream", stream)];
            log_bytes.sample(&labels, Int(counts.written));
            log_lost.sample(&labels, Int(counts.lost));
        }
        uptime.sample(&name, info.uptime_secs);
        // None for Web = false: its CPU and memory are not shown.
        if let Some(stats) = stats {
            cpu.sample(&name, stats.cpu_percent);
            memory.sample(&name, Int(stats.memory_bytes));
        }
    }
    let mut text = String::new();
    for family in [
        up, pid, restarts, ready, exit_code, exited_at, log_bytes, log_lost, uptime, cpu, memory,
    ] {
        text.push_str(&family.text);
    }
    for family in own_figures(state) {
        text.push_str(&family.text);
    }
    text
}

/// zistd's own figures: the standard `process_*` metrics, read from
/// `/proc/self` and getrusage, and zist's own.
fn own_figures(state: &State) -> Vec<Family> {
    let mut families = Vec::new();
    let mut one = |name, kind, help, value: &dyn Fn(&mut Family)| {
        let mut family = Family::new(name, kind, help);
        value(&mut family);
        families.push(family);
    };
    one("zist_programs", Kind::Gauge, "Programs zist knows", &|f| {
        f.sample(&[], Int(state.supervisor.len()));
    });
    one(
        "zist_build_info",
        Kind::Gauge,
        "zistd's version (label version), always 1",
        &|f| f.sample(&[("version", zist_core::VERSION)], Int(1)),
    );
    one(
        "zist_console_dropped_lines_total",
        Kind::Counter,
        "Lines for zistd's stdout dropped because it was not read fast enough",
        &|f| f.sample(&[], Int(zist_core::console::stdout().dropped())),
    );
    let up = state.supervisor.uptime();
    one(
        "process_start_time_seconds",
        Kind::Gauge,
        "When zistd started, in seconds since the Unix epoch",
        &|f| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            f.sample(
                &[],
                now.map_or(0.0, |now| now.saturating_sub(up).as_secs_f64()),
            );
        },
    );
    one(
        "zist_uptime_seconds",
        Kind::Gauge,
        "How long the supervisor has been up",
        &|f| f.sample(&[], up.as_secs_f64()),
    );
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        one(
            "process_cpu_seconds_total",
            Kind::Counter,
            "CPU time zistd used, user and system",
            &|f| {
                f.sample(
                    &[],
                    seconds(usage.user_time()) + seconds(usage.system_time()),
                )
            },
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(kib) = field("VmRSS:") {
            one(
                "process_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory of zistd",
                &|f| f.sample(&[], Int(kib * 1024)),
            );
        }
        if let Some(n) = field("Threads:") {
            one("process_threads", Kind::Gauge, "Threads of zistd", &|f| {
                f.sample(&[], Int(n));
            });
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open = fds.count();
        one(
            "process_open_fds",
            Kind::Gauge,
            "Open file descriptors of zistd",
            &|f| f.sample(&[], Int(open)),
        );
    }
    families
}
