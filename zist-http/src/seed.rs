//! The seed's routes (docs/reference.md §5.1), kept as the seed had them: token in the
//! path, `{pid}` the current pid or the name, GET or POST.

use serde::Serialize;
use serde_json::json;
use warp::reply::Response;
use warp::{Filter, Rejection};
use zist_core::{DEFAULT_LINES, LogStream, ProcessAction, ProcessInfo};

use crate::{State, from_core, not_found, ok, unauthorized, with};

/// The seed's list entry (docs/reference.md §5.1), kept as the seed had it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedProcess {
    /// Whether a process runs (starting, running, stopping or detached).
    pub isalive: bool,
    /// The program's name.
    pub name: String,
    /// Restarts zist made on its own.
    pub numrestarts: u32,
    /// The executable.
    pub path: String,
    /// The current pid, 0 when none.
    pub pid: i32,
    /// Seconds the current process has been up.
    pub timealive: u64,
    /// When it started, RFC 3339, or "" if never.
    pub timestarted: String,
}

impl From<&ProcessInfo> for SeedProcess {
    fn from(info: &ProcessInfo) -> Self {
        Self {
            isalive: info.is_alive(),
            name: info.name.clone(),
            numrestarts: info.restarts,
            path: info.path.clone(),
            pid: info.pid.unwrap_or(0),
            timealive: info.uptime_secs as u64,
            timestarted: info.started_at.clone().unwrap_or_default(),
        }
    }
}

/// `/{token}` and `/{token}/{pid}/{action}`.
pub(crate) fn routes(
    state: &State,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let get_or_post = warp::get().or(warp::post()).unify();
    let list = warp::path!(String).and(get_or_post).and(with(state)).then(
        |token: String, state: State| async move {
            if state.access.caller(token.as_bytes()).is_none() {
                return unauthorized();
            }
            let list: Vec<SeedProcess> = state
                .supervisor
                .list()
                .iter()
                .map(SeedProcess::from)
                .collect();
            ok(&list)
        },
    );
    let action = warp::path!(String / String / String)
        .and(get_or_post)
        .and(with(state))
        .then(
            |token: String, key: String, action: String, state: State| async move {
                let Some(caller) = state.access.caller(token.as_bytes()) else {
                    return unauthorized();
                };
                if caller.scope < zist_core::access::seed_scope(Some(&action)) {
                    return crate::forbidden(caller.refusal(&format!("the seed route {action}")));
                }
                act(&state, &key, &action).await
            },
        );
    list.or(action).unify()
}

async fn act(state: &State, key: &str, action: &str) -> Response {
    let sup = &state.supervisor;
    let info = match sup.find(key) {
        Ok(info) => info,
        Err(e) => return from_core(e),
    };
    let name = info.name.as_str();
    let shown = sup.exposed();
    let act = match action {
        "stats" => {
            return match shown.stats(name).await {
                Ok(s) => ok(&json!({
                    "cpu": format!("{:.1}", s.cpu_percent),
                    "mem": format!("{:.1}", s.memory_percent),
                })),
                Err(e) => from_core(e),
            };
        }
        "stdout" | "stderr" => {
            let stream = if action == "stdout" {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            };
            return shown
                .logs(name, stream, DEFAULT_LINES)
                .map_or_else(from_core, |l| ok(&l));
        }
        // The seed's `kill` is a stop.
        "kill" => ProcessAction::Stop,
        other => match other.parse() {
            Ok(action) => action,
            Err(_) => return not_found(format!("no seed route `{other}`")),
        },
    };
    sup.apply(name, act)
        .await
        .map_or_else(from_core, |i| ok(&SeedProcess::from(&i)))
}
