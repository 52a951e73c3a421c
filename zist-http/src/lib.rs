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
use zist_core::{Error, ErrorKind, Supervisor, Token};

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

fn ok<T: Serialize>(value: &T) -> Response {
    warp::reply::json(value).into_response()
}

fn not_found(what: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", what)
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
    token: Token,
    heartbeat: Duration,
    hubs: follow::Hubs,
}

impl State {
    fn token_is(&self, given: &[u8]) -> bool {
        self.token.matches(given)
    }

    fn bearer_ok(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| self.token.matches_bearer(h.as_bytes()))
    }
}

/// A filter that gives the shared state to a handler.
fn with(
    state: &State,
) -> impl Filter<Extract = (State,), Error = std::convert::Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// A filter that passes the shared state on when the request carries the
/// bearer token, and `None` otherwise (the handler answers [`unauthorized`]).
fn authorized(
    state: &State,
) -> impl Filter<Extract = (Option<State>,), Error = warp::Rejection> + Clone + use<> {
    with(state)
        .and(warp::header::optional::<String>("authorization"))
        .map(|state: State, auth: Option<String>| state.bearer_ok(auth.as_deref()).then_some(state))
}

/// Every route of docs/reference.md §5, for mounting in your own warp server. Whatever
/// none of them takes is rejected (warp's 404), so yours can follow.
pub fn routes(
    supervisor: Supervisor,
    token: &str,
    options: &HttpOptions,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<> {
    let state = State {
        supervisor,
        token: Token::new(token),
        heartbeat: options.heartbeat,
        hubs: follow::Hubs::default(),
    };
    dashboard::routes()
        .or(api::routes(&state))
        .unify()
        .or(metrics::routes(&state))
        .unify()
        .or(seed::routes(&state))
        .unify()
}

/// Serves [`routes`] on `addr` (any other path is a JSON 404); returns the
/// bound address. Stops accepting when `stopped` resolves; open connections
/// finish their request.
pub async fn serve(
    addr: SocketAddr,
    token: &str,
    supervisor: Supervisor,
    options: HttpOptions,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener.into_std()?, token, supervisor, options, stopped)
}

/// [`serve`] on a socket already listening (one kept across an upgrade in place).
pub fn serve_on(
    listener: std::net::TcpListener,
    token: &str,
    supervisor: Supervisor,
    options: HttpOptions,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let no_route = warp::any().map(|| not_found("no such route"));
    let app = routes(supervisor, token, &options).or(no_route).unify();
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
