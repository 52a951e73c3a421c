//! `GET /metrics`: every program's state, pid, restarts, CPU and memory, and
//! zistd's own figures, in the Prometheus text format (OpenMetrics 1.0).
//!
//! Nothing is kept between scrapes: each one reads the supervisor and
//! `/proc/self` afresh, so an idle zistd spends nothing on metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::{Authorized, State, authorized, error};

/// The content type of OpenMetrics text, which Prometheus scrapes natively.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Program {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramStream {
    name: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramState {
    name: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

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
    let text = match render(state).await {
        Ok(text) => text,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics",
                format!("cannot encode the metrics: {e}"),
            );
        }
    };
    warp::reply::with_header(text, "content-type", CONTENT_TYPE).into_response()
}

async fn render(state: &State) -> Result<String, std::fmt::Error> {
    let sup = &state.supervisor;
    let all = sup.exposed().stats_all().await;

    let mut registry = Registry::default();
    let up = Family::<ProgramState, Gauge>::default();
    let pid = Family::<Program, Gauge>::default();
    let restarts = Family::<Program, Counter>::default();
    let ready = Family::<Program, Gauge>::default();
    let exit_code = Family::<Program, Gauge>::default();
    let log_bytes = Family::<ProgramStream, Counter>::default();
    let log_lost = Family::<ProgramStream, Counter>::default();
    let uptime = Family::<Program, FloatGauge>::default();
    let cpu = Family::<Program, FloatGauge>::default();
    let memory = Family::<Program, Gauge>::default();
    for (info, stats) in &all {
        let program = Program {
            name: info.name.clone(),
        };
        up.get_or_create(&ProgramState {
            name: info.name.clone(),
            state: info.state.to_string(),
        })
        .set(1);
        pid.get_or_create(&program)
            .set(i64::from(info.pid.unwrap_or(0)));
        restarts
            .get_or_create(&program)
            .inc_by(u64::from(info.restarts));
        ready
            .get_or_create(&program)
            .set(i64::from(info.state == zist_core::ProcessState::Running));
        if let Some(code) = info.exit_code {
            exit_code.get_or_create(&program).set(i64::from(code));
        }
        // From info: what each stream wrote to its file, and lost.
        for (stream, counts) in [("stdout", info.log.stdout), ("stderr", info.log.stderr)] {
            let labels = ProgramStream {
                name: info.name.clone(),
                stream: stream.to_owned(),
            };
            log_bytes.get_or_create(&labels).inc_by(counts.written);
            log_lost.get_or_create(&labels).inc_by(counts.lost);
        }
        uptime.get_or_create(&program).set(info.uptime_secs);
        // None for Web = false: its CPU and memory are not shown.
        if let Some(stats) = stats {
            cpu.get_or_create(&program).set(stats.cpu_percent);
            memory
                .get_or_create(&program)
                .set(i64::try_from(stats.memory_bytes).unwrap_or(i64::MAX));
        }
    }
    registry.register(
        "zist_process_state",
        "1 for the state each program is in (label state)",
        up,
    );
    registry.register(
        "zist_process_pid",
        "Pid of the program's process, 0 when none runs",
        pid,
    );
    registry.register(
        "zist_process_restarts",
        "Restarts zist made after the program exited on its own",
        restarts,
    );
    registry.register(
        "zist_process_ready",
        "1 while the program is running (ready, with a Ready check), else 0",
        ready,
    );
    registry.register(
        "zist_process_exit_code",
        "Exit status of the program's last exit (programs that exited with one)",
        exit_code,
    );
    registry.register_with_unit(
        "zist_process_log",
        "Bytes of the program's output written to its log file (label stream)",
        Unit::Bytes,
        log_bytes,
    );
    registry.register_with_unit(
        "zist_process_log_lost",
        "Bytes of the program's output that could not be written to its log file",
        Unit::Bytes,
        log_lost,
    );
    registry.register_with_unit(
        "zist_process_uptime",
        "How long the current process has been up",
        Unit::Seconds,
        uptime,
    );
    registry.register(
        "zist_process_cpu_percent",
        "CPU use of the program's process tree, percent of one core (Web = true programs)",
        cpu,
    );
    registry.register_with_unit(
        "zist_process_memory",
        "Resident memory of the program's process tree (Web = true programs)",
        Unit::Bytes,
        memory,
    );
    own_figures(&mut registry, state);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// zistd's own figures: the standard `process_*` metrics, read from
/// `/proc/self` and getrusage, and zist's own.
fn own_figures(registry: &mut Registry, state: &State) {
    let programs = Gauge::<i64>::default();
    programs.set(state.supervisor.len() as i64);
    registry.register("zist_programs", "Programs zist knows", programs);
    let build = Family::<Build, Gauge>::default();
    build
        .get_or_create(&Build {
            version: zist_core::VERSION.to_owned(),
        })
        .set(1);
    registry.register(
        "zist_build_info",
        "zistd's version (label version), always 1",
        build,
    );
    let started = FloatGauge::default();
    let up = state.supervisor.uptime();
    started.set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |now| now.saturating_sub(up).as_secs_f64()),
    );
    registry.register_with_unit(
        "process_start_time",
        "When zistd started, in seconds since the Unix epoch",
        Unit::Seconds,
        started,
    );
    let uptime = FloatGauge::default();
    uptime.set(state.supervisor.uptime().as_secs_f64());
    registry.register_with_unit(
        "zist_uptime",
        "How long the supervisor has been up",
        Unit::Seconds,
        uptime,
    );
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu = Counter::<f64, AtomicU64>::default();
        cpu.inc_by(seconds(usage.user_time()) + seconds(usage.system_time()));
        registry.register_with_unit(
            "process_cpu",
            "CPU time zistd used, user and system",
            Unit::Seconds,
            cpu,
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let Some(kib) = field("VmRSS:") {
            let rss = Gauge::<i64>::default();
            rss.set(kib * 1024);
            registry.register_with_unit(
                "process_resident_memory",
                "Resident memory of zistd",
                Unit::Bytes,
                rss,
            );
        }
        if let Some(n) = field("Threads:") {
            let threads = Gauge::<i64>::default();
            threads.set(n);
            registry.register("process_threads", "Threads of zistd", threads);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open = Gauge::<i64>::default();
        open.set(fds.count() as i64);
        registry.register("process_open_fds", "Open file descriptors of zistd", open);
    }
}
