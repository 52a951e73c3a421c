//! zist's HTTP API over zist-core (SPEC §5): the seed's routes and API v1's JSON routes.
//!
//! Every handler parses its input, calls one [`Supervisor`] method and maps
//! the result or error. Tokens are compared in constant time and never
//! logged (no request path is logged: the seed routes carry the token in it).
//!
//! Not here yet: Server-Sent Events (log follow, events), `/metrics` and the
//! dashboard.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};
use zist_core::{Error, LogStream, ProcessAction, ProcessInfo, Supervisor};

/// The seed's list entry (SPEC §5.1), kept as the seed had it.
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
            isalive: info.pid.is_some(),
            name: info.name.clone(),
            numrestarts: info.restarts,
            path: info.path.clone(),
            pid: info.pid.unwrap_or(0),
            timealive: info.uptime_secs as u64,
            timestarted: info.started_at.clone().unwrap_or_default(),
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// The HTTP status and code of a zist-core error.
fn from_core(e: Error) -> Response {
    let (status, code) = match &e {
        Error::NoSuchProcess { .. } => (StatusCode::NOT_FOUND, "not_found"),
        Error::AlreadyRunning { .. } | Error::AlreadyExists { .. } => {
            (StatusCode::CONFLICT, "conflict")
        }
        Error::NotRunning { .. } => (StatusCode::CONFLICT, "not_running"),
        Error::Config(_) | Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        Error::Spawn { .. } | Error::Detach { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "spawn_failed")
        }
        Error::ShuttingDown => (StatusCode::INTERNAL_SERVER_ERROR, "shutting_down"),
    };
    error(status, code, e.to_string())
}

fn ok<T: Serialize>(value: &T) -> Response {
    warp::reply::json(value).into_response()
}

fn forbidden(name: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("program `{name}` has Web = false: its stats and logs are not exposed"),
    )
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token",
    )
}

/// What the handlers share.
#[derive(Clone)]
struct State {
    supervisor: Supervisor,
    token: Arc<[u8]>,
}

impl State {
    fn token_is(&self, given: &[u8]) -> bool {
        bool::from(given.ct_eq(&self.token))
    }

    fn bearer_ok(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| self.token_is(t.as_bytes()))
    }

    /// A program by name, or by the pid of its current process (seed routes).
    fn find(&self, key: &str) -> Option<ProcessInfo> {
        if let Ok(info) = self.supervisor.info(key) {
            return Some(info);
        }
        let pid: i32 = key.parse().ok()?;
        self.supervisor
            .list()
            .into_iter()
            .find(|i| i.pid == Some(pid))
    }
}

/// The routes of SPEC §5 implemented so far, for mounting in your own warp server.
pub fn routes(
    supervisor: Supervisor,
    token: &str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let state = State {
        supervisor,
        token: token.as_bytes().into(),
    };
    let with = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let bearer = warp::header::optional::<String>("authorization");
    let lines = warp::query::<std::collections::HashMap<String, String>>();

    let v1 = warp::path!("api" / "v1" / "processes" / ..);
    let list = v1
        .and(warp::path::end())
        .and(warp::get())
        .and(with.clone())
        .and(bearer)
        .then(|state: State, auth: Option<String>| async move {
            if !state.bearer_ok(auth.as_deref()) {
                return unauthorized();
            }
            ok(&state.supervisor.list())
        });
    let info = v1
        .and(warp::path!(String))
        .and(warp::get())
        .and(with.clone())
        .and(bearer)
        .then(
            |name: String, state: State, auth: Option<String>| async move {
                if !state.bearer_ok(auth.as_deref()) {
                    return unauthorized();
                }
                state
                    .supervisor
                    .info(&name)
                    .map_or_else(from_core, |i| ok(&i))
            },
        );
    let action = v1
        .and(warp::path!(String / String))
        .and(warp::post())
        .and(with.clone())
        .and(bearer)
        .then(
            |name: String, action: String, state: State, auth: Option<String>| async move {
                if !state.bearer_ok(auth.as_deref()) {
                    return unauthorized();
                }
                let action: ProcessAction = match action.parse() {
                    Ok(action) => action,
                    Err(e) => return error(StatusCode::NOT_FOUND, "not_found", e),
                };
                state
                    .supervisor
                    .apply(&name, action)
                    .await
                    .map_or_else(from_core, |i| ok(&i))
            },
        );
    let stats = v1
        .and(warp::path!(String / "stats"))
        .and(warp::get())
        .and(with.clone())
        .and(bearer)
        .then(
            |name: String, state: State, auth: Option<String>| async move {
                if !state.bearer_ok(auth.as_deref()) {
                    return unauthorized();
                }
                match state.supervisor.info(&name) {
                    Err(e) => from_core(e),
                    Ok(info) if !info.web => forbidden(&name),
                    Ok(_) => state
                        .supervisor
                        .stats(&name)
                        .await
                        .map_or_else(from_core, |s| ok(&s)),
                }
            },
        );
    let logs = v1
        .and(warp::path!(String / "logs" / String))
        .and(warp::get())
        .and(lines)
        .and(with.clone())
        .and(bearer)
        .then(
            |name: String,
             stream: String,
             query: std::collections::HashMap<String, String>,
             state: State,
             auth: Option<String>| async move {
                if !state.bearer_ok(auth.as_deref()) {
                    return unauthorized();
                }
                let stream: LogStream = match stream.parse() {
                    Ok(s) => s,
                    Err(e) => return error(StatusCode::NOT_FOUND, "not_found", e),
                };
                let lines = match query.get("lines").map(|n| n.parse::<usize>()) {
                    None => 100,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            "`lines` must be a whole number",
                        );
                    }
                };
                if query.contains_key("follow") {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "follow=true (Server-Sent Events) is not available yet",
                    );
                }
                match state.supervisor.info(&name) {
                    Err(e) => from_core(e),
                    Ok(info) if !info.web => forbidden(&name),
                    Ok(_) => state
                        .supervisor
                        .logs(&name, stream, lines)
                        .map_or_else(from_core, |l| ok(&l)),
                }
            },
        );

    let get_or_post = warp::get().or(warp::post()).unify();
    let seed_list = warp::path!(String).and(get_or_post).and(with.clone()).then(
        |token: String, state: State| async move {
            if !state.token_is(token.as_bytes()) {
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
    let seed_action = warp::path!(String / String / String)
        .and(get_or_post)
        .and(with)
        .then(
            |token: String, key: String, action: String, state: State| async move {
                if !state.token_is(token.as_bytes()) {
                    return unauthorized();
                }
                let Some(info) = state.find(&key) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no program with name or pid `{key}`"),
                    );
                };
                let name = info.name.clone();
                let sup = &state.supervisor;
                let act = match action.as_str() {
                    "stats" | "stdout" | "stderr" if !info.web => return forbidden(&name),
                    "stats" => {
                        return match sup.stats(&name).await {
                            Ok(s) => ok(&json!({
                                "cpu": format!("{:.1}", s.cpu_percent),
                                "mem": format!("{:.1}", s.memory_percent),
                            })),
                            Err(e) => from_core(e),
                        };
                    }
                    "stdout" | "stderr" => {
                        let stream: LogStream = action.parse().unwrap_or(LogStream::Stdout);
                        return sup
                            .logs(&name, stream, 100)
                            .map_or_else(from_core, |l| ok(&l));
                    }
                    // The seed's `kill` is a stop.
                    "kill" => ProcessAction::Stop,
                    other => match other.parse() {
                        Ok(action) => action,
                        Err(_) => {
                            return error(
                                StatusCode::NOT_FOUND,
                                "not_found",
                                format!("no seed route `{other}`"),
                            );
                        }
                    },
                };
                sup.apply(&name, act)
                    .await
                    .map_or_else(from_core, |i| ok(&SeedProcess::from(&i)))
            },
        );

    list.or(info)
        .unify()
        .or(action)
        .unify()
        .or(stats)
        .unify()
        .or(logs)
        .unify()
        .or(seed_list)
        .unify()
        .or(seed_action)
        .unify()
}

/// Serves [`routes`] on `addr`; returns the bound address. Stops when `stopped` resolves.
pub async fn serve(
    addr: SocketAddr,
    token: &str,
    supervisor: Supervisor,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let not_found = warp::any().map(|| error(StatusCode::NOT_FOUND, "not_found", "no such route"));
    // Whatever no route takes is a JSON 404.
    let app = routes(supervisor, token).or(not_found).unify();
    tokio::spawn(warp::serve(app).incoming(listener).graceful(stopped).run());
    Ok(bound)
}
