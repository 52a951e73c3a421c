//! zist's HTTP face over zist-core (docs/reference.md §5): the seed's routes, API v1 with
//! Server-Sent Events, `/metrics` and the web dashboard.
//!
//! Every handler parses its input, calls [`Supervisor`] methods and maps the
//! result or error. Tokens are compared in constant time and never logged
//! (no request path is logged: the seed routes carry the token in it).
//!
//! - [`routes`] is a warp filter for mounting in your own server;
//! - [`serve`] runs the server zistd runs, on zist-rpc's accept loop
//!   ([`zist_core::net`]): connection cap, header timeout, TLS, and a write
//!   timeout that drops a client which stops reading a stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};
use zist_core::{Access, BrowserGuard, Error, ErrorKind, Supervisor};

mod api;
mod dashboard;
mod follow;
mod metrics;
mod seed;

pub use seed::SeedProcess;

/// How [`serve`] runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Most connections at once; more are closed at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and an idle
    /// keep-alive connection to send its next request).
    pub request_timeout: Duration,
    /// A client whose socket accepts no bytes for this long (it stopped
    /// reading a stream) is dropped.
    pub write_stall: Duration,
    /// How often an event stream with nothing to say sends a comment line.
    pub heartbeat: Duration,
    /// Serve HTTPS with this config (see `zist_core::net::tls_config`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counts clients taken and not yet answered (see `zist_core::net::InFlight`).
    pub in_flight: zist_core::net::InFlight,
    /// Host names served besides IP addresses and `localhost` (`AllowedHosts`).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            request_timeout: Duration::from_secs(10),
            write_stall: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            tls: None,
            in_flight: zist_core::net::InFlight::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// The HTTP status and code of a zist-core error, by its kind.
fn from_core(e: Error) -> Response {
    let (status, code) = match e.kind() {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::NotRunning => (StatusCode::CONFLICT, "not_running"),
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        ErrorKind::NotAllowed => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorKind::SpawnFailed => (StatusCode::INTERNAL_SERVER_ERROR, "spawn_failed"),
        ErrorKind::Unavailable => (StatusCode::INTERNAL_SERVER_ERROR, "shutting_down"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e.to_string())
}

/// `200 OK` with `value` as JSON.
fn ok<T: Serialize>(value: &T) -> Response {
    let mut body = JsonBody(Vec::with_capacity(1024));
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => {
            let mut reply = Response::new(body.0.into());
            reply.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            reply
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot write the answer as JSON: {e}"),
        ),
    }
}

/// A JSON body being written. serde_json writes every brace, comma, colon
/// and quote as a slice of its own, and most keys and values are a few
/// bytes: pushed here byte by byte rather than copied as a slice, a list
/// of 1000 programs takes 135 000 fewer calls to the C library's `memcpy`,
/// which musl makes with a string instruction whose start-up alone costs
/// more than such a copy.
struct JsonBody(Vec<u8>);

impl std::io::Write for JsonBody {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.len() <= 16 {
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn not_found(what: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", what)
}

fn forbidden(why: impl Into<String>) -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", why)
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
    access: Access,
    heartbeat: Duration,
    hubs: follow::Hubs,
}

/// What a handler gets: the shared state, for a caller whose token allows
/// the route; else the answer to send (401, or 403 with why).
type Authorized = Result<State, Box<Response>>;

/// A filter that gives the shared state to a handler.
fn with(
    state: &State,
) -> impl Filter<Extract = (State,), Error = std::convert::Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// A filter that passes the shared state on when the request carries a
/// token whose scope allows the route (zist-core's table), else the
/// answer: 401 without a known token, 403 outside its scope.
fn authorized(
    state: &State,
) -> impl Filter<Extract = (Authorized,), Error = warp::Rejection> + Clone + use<> {
    with(state)
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .map(
            |state: State,
             method: warp::http::Method,
             path: warp::path::FullPath,
             auth: Option<String>| {
                let Some(caller) = auth.and_then(|h| state.access.caller_bearer(h.as_bytes()))
                else {
                    return Err(Box::new(unauthorized()));
                };
                let reads = method == warp::http::Method::GET || method == warp::http::Method::HEAD;
                if caller.scope < zist_core::access::http_scope(reads, path.as_str()) {
                    let why = caller.refusal(&format!("{method} {}", path.as_str()));
                    return Err(Box::new(forbidden(why)));
                }
                Ok(state)
            },
        )
}

/// The JSON-RPC method an HTTP call is the equivalent of, and its target,
/// for the audit line (never the path itself: a seed route holds the token).
fn audited_call(method: &warp::http::Method, path: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let action = |a: &str| match a {
        "kill" | "stop" => Some("process.stop"),
        "start" => Some("process.start"),
        "restart" => Some("process.restart"),
        "detach" => Some("process.detach"),
        "scale" => Some("process.scale"),
        _ => None,
    };
    match parts[..] {
        ["api", "v1", "adopt"] if method == warp::http::Method::POST => {
            Some(("process.adopt".to_owned(), None))
        }
        ["api", "v1", "processes", name, what] if method == warp::http::Method::POST => {
            Some((action(what)?.to_owned(), Some(name.to_owned())))
        }
        [token, name, what]
            if token != "api"
                && (method == warp::http::Method::GET || method == warp::http::Method::POST) =>
        {
            Some((action(what)?.to_owned(), Some(name.to_owned())))
        }
        _ => None,
    }
}

/// Writes the audit line of an HTTP call outside the read scope, once answered.
fn audit(access: &Access, info: &warp::log::Info<'_>) {
    let Some((method, target)) = audited_call(info.method(), info.path()) else {
        return;
    };
    let caller = info
        .request_headers()
        .get("authorization")
        .and_then(|h| access.caller_bearer(h.as_bytes()))
        .or_else(|| {
            // A seed route: the token is the first path segment.
            let token = info.path().trim_start_matches('/').split('/').next()?;
            access.caller(token.as_bytes())
        });
    let Some(caller) = caller else { return };
    let status = info.status();
    let result = if status.is_success() {
        "ok".to_owned()
    } else {
        format!("error {}", status.as_u16())
    };
    zist_core::access::audit(&caller, &method, target.as_deref(), &result);
}

/// `GET /healthz` and `GET /readyz`, without a token, for orchestrators
/// and load balancers (docs/reference.md §11): counts only, no names.
fn health(
    state: &State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| ok(&json!({"status": "ok"})));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with(state))
        .map(|state: State| {
            let (ready, not_ready) = state.supervisor.readiness();
            let body = json!({"ready": ready, "not_ready": not_ready});
            let status = if not_ready == 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        });
    healthz.or(readyz).unify()
}

/// 403 for what a web page must not do here (the Host and Origin rules of
/// zist-core's [`BrowserGuard`]); rejects (lets the routes answer) otherwise.
fn browser_guard(
    guard: BrowserGuard,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  headers: warp::http::HeaderMap| {
                let guard = guard.clone();
                async move {
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    let action = audited_call(&method, path.as_str()).is_some()
                        && !path.as_str().starts_with("/api/");
                    let refusal = if action {
                        guard.refuse_action(
                            header("host"),
                            header("origin"),
                            header("sec-fetch-site"),
                            header("referer"),
                        )
                    } else {
                        let changes =
                            method != warp::http::Method::GET && method != warp::http::Method::HEAD;
                        guard.refuse(header("host"), header("origin"), changes)
                    };
                    match refusal {
                        Some(why) => Ok(forbidden(why)),
                        None => Err(warp::reject::not_found()),
                    }
                }
            },
        )
}

/// Every route of docs/reference.md §5, for mounting in your own warp server. Whatever
/// none of them takes is rejected (warp's 404), so yours can follow.
pub fn routes(
    supervisor: Supervisor,
    access: Access,
    options: &HttpOptions,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let guard = BrowserGuard::new(&options.allowed_hosts);
    let state = State {
        supervisor,
        access: access.clone(),
        heartbeat: options.heartbeat,
        hubs: follow::Hubs::default(),
    };
    browser_guard(guard)
        .or(health(&state))
        .unify()
        .or(dashboard::routes())
        .unify()
        .or(api::routes(&state))
        .unify()
        .or(metrics::routes(&state))
        .unify()
        .or(seed::routes(&state))
        .unify()
        .with(warp::log::custom(move |info| audit(&access, &info)))
        .map(Reply::into_response)
}

/// Serves [`routes`] on `addr` (any other path is a JSON 404); returns the
/// bound address. Stops accepting when `stopped` resolves; open connections
/// finish their request.
pub async fn serve(
    addr: SocketAddr,
    access: impl Into<Access>,
    supervisor: Supervisor,
    options: HttpOptions,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener.into_std()?, access, supervisor, options, stopped)
}

/// [`serve`] on a socket already listening (one kept across an upgrade in place).
pub fn serve_on(
    listener: std::net::TcpListener,
    access: impl Into<Access>,
    supervisor: Supervisor,
    options: HttpOptions,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let no_route = warp::any().map(|| not_found("no such route"));
    let app = routes(supervisor, access.into(), &options)
        .or(no_route)
        .unify();
    let service = warp::service(app);
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stopped.await;
        let _ = stop.send(true);
    });
    let limits = zist_core::net::Limits {
        max_connections: options.max_connections,
        request_timeout: options.request_timeout,
        // Event streams read nothing for hours; idle keep-alives end by
        // the header timeout instead.
        read_idle: None,
        write_stall: Some(options.write_stall),
        tls: options.tls,
        in_flight: options.in_flight,
    };
    zist_core::net::accept_loop(
        listener,
        limits,
        move || service.clone(),
        move || {
            let mut seen = stop_seen.clone();
            async move {
                let _ = seen.wait_for(|stopped| *stopped).await;
            }
        },
    );
    Ok(bound)
}
