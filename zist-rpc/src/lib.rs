//! zist's JSON-RPC 2.0 API (docs/reference.md §4) over zist-core, on HTTP POST and WebSocket.
//!
//! One trait, [`ZistApiServer`] / [`ZistApiClient`], generated from
//! [`ZistApi`], is what the server implements and what zistcl calls, so
//! the two cannot drift. Each method parses its params, calls one
//! [`Supervisor`] method and maps the result or error.
//!
//! - [`rpc_module`] gives the methods for embedding in your own jsonrpsee server;
//! - [`serve`] runs the server zistd runs: bearer-token check on every HTTP
//!   request and WebSocket handshake (constant time, 401 before any method
//!   runs), a body-size and a batch limit, and connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::server::{
    BatchRequestConfig, Methods, PendingSubscriptionSink, PingConfig, RpcModule, Server,
    ServerConfig, ServerHandle, SubscriptionMessage, stop_channel,
};
use jsonrpsee::types::ErrorObjectOwned;
use serde::Serialize;
use tokio_stream::StreamExt;
pub use zist_core::DaemonStatus;
use zist_core::{
    Acted, AdoptRequest, DEFAULT_LINES, ErrorKind, Feed, LogStream, ProcessAction, ProcessEvent,
    ProcessInfo, ProcessStats, ReloadReport, ShutdownMode, Supervisor,
};

mod auth;

pub use auth::{BearerAuthLayer, ScopeCheck, ScopeLayer};

/// The JSON-RPC API of docs/reference.md §4. Params are by name (by position works too).
#[rpc(server, client)]
pub trait ZistApi {
    /// zistd's version, pid, uptime and program count.
    #[method(name = "daemon.status")]
    async fn daemon_status(&self) -> RpcResult<DaemonStatus>;

    /// The last `lines` lines of zistd's own log (default 100).
    #[method(name = "daemon.log")]
    async fn daemon_log(&self, lines: Option<usize>) -> RpcResult<Vec<String>>;

    /// Clears zistd's in-memory log.
    #[method(name = "daemon.clear_log")]
    async fn daemon_clear_log(&self) -> RpcResult<bool>;

    /// Re-reads the config and applies the difference; a broken config changes nothing.
    #[method(name = "daemon.reload")]
    async fn daemon_reload(&self) -> RpcResult<ReloadReport>;

    /// Answers `true`, then zistd detaches or stops every program and exits.
    #[method(name = "daemon.shutdown")]
    async fn daemon_shutdown(&self, mode: ShutdownMode) -> RpcResult<bool>;

    /// Checks the executable at the path zistd was started from, answers
    /// `{"from", "to"}`, then zistd replaces itself with it, keeping its
    /// pid, its sockets and every program (docs/reference.md §8.2).
    #[method(name = "daemon.upgrade")]
    async fn daemon_upgrade(&self) -> RpcResult<zist_core::upgrade::UpgradeReport>;

    /// Every program's info.
    #[method(name = "process.list")]
    async fn process_list(&self) -> RpcResult<Vec<ProcessInfo>>;

    /// Every program's info with its CPU and memory (one scan of the
    /// process table; no stats for `Web = false` programs): what `zistcl
    /// top` asks at each refresh.
    #[method(name = "process.list_stats")]
    async fn process_list_stats(&self) -> RpcResult<Vec<zist_core::ProcessRow>>;

    /// One program's info.
    #[method(name = "process.info")]
    async fn process_info(&self, name: String) -> RpcResult<ProcessInfo>;

    /// Starts a program (every instance of one with instances: `[info]`);
    /// answers once it is spawned, or waiting.
    #[method(name = "process.start")]
    async fn process_start(&self, name: String) -> RpcResult<Acted>;

    /// Stops a program; answers once its whole group is gone.
    #[method(name = "process.stop")]
    async fn process_stop(&self, name: String) -> RpcResult<Acted>;

    /// Restarts a program; answers once the new process is spawned. With
    /// `rolling`, one instance at a time, each once the one before runs.
    #[method(name = "process.restart")]
    async fn process_restart(&self, name: String, rolling: Option<bool>) -> RpcResult<Acted>;

    /// Lets a program run on unsupervised.
    #[method(name = "process.detach")]
    async fn process_detach(&self, name: String) -> RpcResult<Acted>;

    /// Sends a signal (`"HUP"`, `"USR1"`, ...) to a program's main process.
    #[method(name = "process.signal")]
    async fn process_signal(&self, name: String, signal: String) -> RpcResult<Acted>;

    /// Changes the number of instances of a program with `Instances`.
    #[method(name = "process.scale")]
    async fn process_scale(&self, name: String, instances: u32) -> RpcResult<Vec<ProcessInfo>>;

    /// Starts every program.
    #[method(name = "process.start_all")]
    async fn process_start_all(&self) -> RpcResult<Vec<ProcessInfo>>;

    /// Stops every program.
    #[method(name = "process.stop_all")]
    async fn process_stop_all(&self) -> RpcResult<Vec<ProcessInfo>>;

    /// Restarts every program.
    #[method(name = "process.restart_all")]
    async fn process_restart_all(&self) -> RpcResult<Vec<ProcessInfo>>;

    /// CPU and memory of a program's process tree.
    #[method(name = "process.stats")]
    async fn process_stats(&self, name: String) -> RpcResult<ProcessStats>;

    /// The last `lines` lines (default 100) of a program's stream.
    #[method(name = "process.logs")]
    async fn process_logs(
        &self,
        name: String,
        stream: LogStream,
        lines: Option<usize>,
    ) -> RpcResult<Vec<String>>;

    /// Adds a program from a spec with the keys of a program file.
    #[method(name = "process.add")]
    async fn process_add(&self, spec: serde_json::Value) -> RpcResult<Acted>;

    /// Takes over a running process that zist did not start.
    #[method(name = "process.adopt")]
    async fn process_adopt(
        &self,
        pid: i32,
        name: Option<String>,
        spec: Option<serde_json::Value>,
        capture: Option<bool>,
    ) -> RpcResult<ProcessInfo>;

    /// Stops a program and forgets it.
    #[method(name = "process.remove")]
    async fn process_remove(&self, name: String) -> RpcResult<bool>;

    /// One notification per new line of a program's stream. A reader that
    /// falls behind gets a line `[zist] N lines skipped` instead.
    #[subscription(name = "process.follow" => "process.line", unsubscribe = "process.unfollow", item = String)]
    async fn process_follow(&self, name: String, stream: LogStream) -> SubscriptionResult;

    /// One notification per state change of any program.
    #[subscription(name = "events.subscribe" => "events.event", unsubscribe = "events.unsubscribe", item = ProcessEvent)]
    async fn events_subscribe(&self) -> SubscriptionResult;
}

/// What only the daemon around the supervisor can do: its own log and
/// exiting. Embedders without a daemon can use [`NoDaemon`].
pub trait DaemonControl: Send + Sync + 'static {
    /// The last `lines` lines of the daemon's own log.
    fn log(&self, lines: usize) -> Vec<String>;
    /// Clears the daemon's in-memory log.
    fn clear_log(&self);
    /// Asks the daemon to detach or stop every program and exit, after the
    /// answer to `daemon.shutdown` has gone out.
    fn request_exit(&self, mode: ShutdownMode);
    /// Checks the new executable (blocking: it runs it); when it is fit,
    /// arranges the switch to happen after the answer has gone out.
    fn upgrade(&self) -> zist_core::Result<zist_core::upgrade::UpgradeReport> {
        Err(zist_core::Error::UpgradeRefused(
            "this server is not zistd and cannot replace itself".to_owned(),
        ))
    }
}

/// [`DaemonControl`] for a supervisor embedded without zistd: no own log;
/// shutdown shuts the supervisor down.
pub struct NoDaemon(pub Supervisor);

impl DaemonControl for NoDaemon {
    fn log(&self, _lines: usize) -> Vec<String> {
        Vec::new()
    }
    fn clear_log(&self) {}
    fn request_exit(&self, mode: ShutdownMode) {
        let supervisor = self.0.clone();
        tokio::spawn(async move { supervisor.shutdown(mode).await });
    }
}

/// The JSON-RPC application code of an error kind (the table in
/// docs/reference.md): one code, one meaning.
pub fn rpc_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => -32001,
        ErrorKind::Conflict => -32002,
        ErrorKind::NotRunning => -32003,
        ErrorKind::SpawnFailed => -32004,
        ErrorKind::Invalid => -32005,
        ErrorKind::NotAllowed => -32006,
        ErrorKind::Unavailable => -32010,
        ErrorKind::Internal => -32603,
    }
}

/// The JSON-RPC error for a zist-core error.
pub fn rpc_error(e: impl Into<zist_core::Error>) -> ErrorObjectOwned {
    let e = e.into();
    ErrorObjectOwned::owned(rpc_code(e.kind()), e.to_string(), None::<()>)
}

/// The API served over a [`Supervisor`].
pub struct ZistRpc {
    supervisor: Supervisor,
    daemon: Arc<dyn DaemonControl>,
}

impl ZistRpc {
    /// The API over `supervisor`, with `daemon` for the `daemon.*` methods.
    pub fn new(supervisor: Supervisor, daemon: Arc<dyn DaemonControl>) -> Self {
        Self { supervisor, daemon }
    }

    async fn act(&self, name: &str, action: ProcessAction) -> RpcResult<Acted> {
        self.supervisor.act(name, action).await.map_err(rpc_error)
    }
}

/// The methods, for mounting in your own jsonrpsee server.
pub fn rpc_module(supervisor: Supervisor, daemon: Arc<dyn DaemonControl>) -> RpcModule<ZistRpc> {
    ZistRpc::new(supervisor, daemon).into_rpc()
}

#[async_trait]
impl ZistApiServer for ZistRpc {
    async fn daemon_status(&self) -> RpcResult<DaemonStatus> {
        Ok(self.supervisor.status())
    }

    async fn daemon_log(&self, lines: Option<usize>) -> RpcResult<Vec<String>> {
        Ok(self.daemon.log(lines.unwrap_or(DEFAULT_LINES)))
    }

    async fn daemon_clear_log(&self) -> RpcResult<bool> {
        self.daemon.clear_log();
        Ok(true)
    }

    async fn daemon_reload(&self) -> RpcResult<ReloadReport> {
        self.supervisor.reload_config().await.map_err(rpc_error)
    }

    async fn daemon_shutdown(&self, mode: ShutdownMode) -> RpcResult<bool> {
        self.daemon.request_exit(mode);
        Ok(true)
    }

    async fn daemon_upgrade(&self) -> RpcResult<zist_core::upgrade::UpgradeReport> {
        let daemon = self.daemon.clone();
        tokio::task::spawn_blocking(move || daemon.upgrade())
            .await
            .map_err(|e| rpc_error(zist_core::Error::UpgradeRefused(e.to_string())))?
            .map_err(rpc_error)
    }

    async fn process_list(&self) -> RpcResult<Vec<ProcessInfo>> {
        Ok(self.supervisor.list())
    }

    async fn process_list_stats(&self) -> RpcResult<Vec<zist_core::ProcessRow>> {
        let rows = self.supervisor.exposed().stats_all().await;
        Ok(rows
            .into_iter()
            .map(|(info, stats)| zist_core::ProcessRow { info, stats })
            .collect())
    }

    async fn process_info(&self, name: String) -> RpcResult<ProcessInfo> {
        self.supervisor.info(&name).map_err(rpc_error)
    }

    async fn process_start(&self, name: String) -> RpcResult<Acted> {
        self.act(&name, ProcessAction::Start).await
    }

    async fn process_stop(&self, name: String) -> RpcResult<Acted> {
        self.act(&name, ProcessAction::Stop).await
    }

    async fn process_restart(&self, name: String, rolling: Option<bool>) -> RpcResult<Acted> {
        match rolling {
            Some(true) => self
                .supervisor
                .restart_rolling(&name)
                .await
                .map_err(rpc_error),
            _ => self.act(&name, ProcessAction::Restart).await,
        }
    }

    async fn process_detach(&self, name: String) -> RpcResult<Acted> {
        self.act(&name, ProcessAction::Detach).await
    }

    async fn process_signal(&self, name: String, signal: String) -> RpcResult<Acted> {
        let signal = zist_core::parse_signal(&signal).map_err(rpc_error)?;
        self.act(&name, ProcessAction::Signal(signal)).await
    }

    async fn process_scale(&self, name: String, instances: u32) -> RpcResult<Vec<ProcessInfo>> {
        self.supervisor
            .scale(&name, instances)
            .await
            .map_err(rpc_error)
    }

    async fn process_start_all(&self) -> RpcResult<Vec<ProcessInfo>> {
        Ok(self.supervisor.start_all().await)
    }

    async fn process_stop_all(&self) -> RpcResult<Vec<ProcessInfo>> {
        Ok(self.supervisor.stop_all().await)
    }

    async fn process_restart_all(&self) -> RpcResult<Vec<ProcessInfo>> {
        Ok(self.supervisor.restart_all().await)
    }

    async fn process_stats(&self, name: String) -> RpcResult<ProcessStats> {
        self.supervisor
            .exposed()
            .stats(&name)
            .await
            .map_err(rpc_error)
    }

    async fn process_logs(
        &self,
        name: String,
        stream: LogStream,
        lines: Option<usize>,
    ) -> RpcResult<Vec<String>> {
        self.supervisor
            .exposed()
            .logs(&name, stream, lines.unwrap_or(DEFAULT_LINES))
            .map_err(rpc_error)
    }

    async fn process_add(&self, spec: serde_json::Value) -> RpcResult<Acted> {
        self.supervisor
            .register_json(&spec)
            .await
            .map_err(rpc_error)
    }

    async fn process_adopt(
        &self,
        pid: i32,
        name: Option<String>,
        spec: Option<serde_json::Value>,
        capture: Option<bool>,
    ) -> RpcResult<ProcessInfo> {
        self.supervisor
            .adopt(AdoptRequest {
                pid,
                name,
                spec,
                capture,
            })
            .await
            .map_err(rpc_error)
    }

    async fn process_remove(&self, name: String) -> RpcResult<bool> {
        self.supervisor.remove(&name).await.map_err(rpc_error)?;
        Ok(true)
    }

    async fn process_follow(
        &self,
        pending: PendingSubscriptionSink,
        name: String,
        stream: LogStream,
    ) -> SubscriptionResult {
        let lines = match self.supervisor.exposed().follow(&name, stream) {
            Ok(lines) => lines,
            Err(e) => {
                pending.reject(rpc_error(e)).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        forward(
            sink,
            lines.map(|item| match item {
                Feed::Item(line) => line,
                Feed::Gap(n) => format!("[zist] {n} lines skipped"),
            }),
        )
        .await
    }

    async fn events_subscribe(&self, pending: PendingSubscriptionSink) -> SubscriptionResult {
        let mut events = self.supervisor.events();
        let sink = pending.accept().await?;
        // A gap in events is not representable as an event: skip it, the
        // reader re-reads process.list when it needs the whole picture.
        let events = async_stream_filter(&mut events);
        forward(sink, events).await
    }
}

/// The events of a stream, dropping gap markers.
fn async_stream_filter(
    events: &mut (impl tokio_stream::Stream<Item = Feed<ProcessEvent>> + Unpin),
) -> impl tokio_stream::Stream<Item = ProcessEvent> + Unpin + '_ {
    events.filter_map(|item| match item {
        Feed::Item(event) => Some(event),
        Feed::Gap(n) => {
            tracing::debug!("an events subscriber missed {n} events");
            None
        }
    })
}

/// Sends every item of `items` to `sink` until either ends.
async fn forward<T: Serialize>(
    sink: jsonrpsee::server::SubscriptionSink,
    mut items: impl tokio_stream::Stream<Item = T> + Unpin,
) -> SubscriptionResult {
    loop {
        tokio::select! {
            _ = sink.closed() => return Ok(()),
            item = items.next() => {
                let Some(item) = item else { return Ok(()) };
                let message: SubscriptionMessage = serde_json::value::to_raw_value(&item)?.into();
                if sink.send(message).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Limits of the server zistd runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest request body, in bytes.
    pub max_request_bytes: u32,
    /// Most requests in one batch.
    pub max_batch: u32,
    /// Most connections at once; more are closed at once.
    pub max_connections: u32,
    /// How long a client may take to send a request's headers, and then its
    /// body; a silent or trickling client is cut off after it.
    pub request_timeout: Duration,
    /// A WebSocket that answers no ping for this long is closed.
    pub websocket_idle: Duration,
    /// Serve HTTPS and WSS with this TLS config (see [`zist_core::net::tls_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counts clients taken and not yet answered (see [`zist_core::net::InFlight`]).
    pub in_flight: zist_core::net::InFlight,
    /// Host names served besides IP addresses and `localhost` (`AllowedHosts`).
    pub allowed_hosts: Vec<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_request_bytes: 1 << 20,
            max_batch: 100,
            max_connections: 1000,
            request_timeout: Duration::from_secs(10),
            websocket_idle: Duration::from_secs(60),
            tls: None,
            in_flight: zist_core::net::InFlight::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// jsonrpsee's settings for `options`.
fn server_config(options: &ServeOptions) -> ServerConfig {
    ServerConfig::builder()
        .max_request_body_size(options.max_request_bytes)
        .max_response_body_size(u32::MAX)
        .max_connections(options.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(options.max_batch))
        .enable_ws_ping(
            PingConfig::new()
                .ping_interval(options.websocket_idle / 3)
                .inactive_limit(options.websocket_idle),
        )
        .build()
}

/// The accept loop's limits for `options`.
fn limits(
    options: &ServeOptions,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> zist_core::net::Limits {
    zist_core::net::Limits {
        max_connections: options.max_connections as usize,
        request_timeout: options.request_timeout,
        // Nor may an open connection stay silent for long: an idle
        // keep-alive is dropped, and a WebSocket stays because the pongs to
        // the server's pings are reads.
        read_idle: Some(options.websocket_idle.max(options.request_timeout)),
        write_stall: None,
        tls,
        in_flight: options.in_flight.clone(),
    }
}

/// Runs the JSON-RPC server on `addr` with bearer-token auth; returns its
/// bound address and a handle that stops it.
///
/// The accept loop is zist's own, over jsonrpsee's service: connections over
/// the limit are closed at once, a client gets `request_timeout` to send its
/// headers and again its body, and WebSockets are pinged; so silent or slow
/// clients never hold a place for long or lock others out.
pub async fn serve(
    addr: SocketAddr,
    access: impl Into<zist_core::Access>,
    module: RpcModule<ZistRpc>,
    options: ServeOptions,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener.into_std()?, access, module, options)
}

/// [`serve`] on a socket already listening (one kept across an upgrade in place).
pub fn serve_on(
    listener: std::net::TcpListener,
    access: impl Into<zist_core::Access>,
    module: RpcModule<ZistRpc>,
    options: ServeOptions,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let config = server_config(&options);
    let gate = BearerAuthLayer::new(access, options.max_request_bytes as usize)
        .with_body_timeout(options.request_timeout)
        .with_allowed_hosts(&options.allowed_hosts);
    let services = Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(gate))
        .set_rpc_middleware(
            jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new().layer(ScopeLayer),
        )
        .to_service_builder();
    let methods: Methods = module.into();
    let (stop, handle) = stop_channel();
    let limits = limits(&options, options.tls.clone());
    let make_service = {
        let stop = stop.clone();
        move || services.clone().build(methods.clone(), stop.clone())
    };
    zist_core::net::accept_loop(listener, limits, make_service, move || {
        stop.clone().shutdown()
    });
    Ok((bound, handle))
}

/// Puts the [`Caller`](zist_core::Caller) a transport vouches for into
/// each request's extensions (the local socket's peer), where the gate
/// takes it instead of a token.
#[derive(Clone)]
struct WithCaller<S> {
    inner: S,
    caller: zist_core::Caller,
}

impl<S, B> tower::Service<http::Request<B>> for WithCaller<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.caller.clone());
        self.inner.call(request)
    }
}

/// Runs the JSON-RPC server (HTTP POST and WebSocket at `/`) on the Unix
/// socket `path` (docs/reference.md §10): mode 0660, group `group` (else
/// zistd's own). No token is needed there: the peer's uid decides, root
/// and this process's uid being admin, other members of the group operate.
/// A socket file left by a crash is replaced; one a live server answers on
/// is never taken (`AddrInUse`). The returned guard removes the socket file
/// when dropped.
pub fn serve_unix(
    path: &std::path::Path,
    group: Option<&str>,
    module: RpcModule<ZistRpc>,
    options: ServeOptions,
) -> std::io::Result<(ServerHandle, zist_core::net::SocketFile)> {
    let (listener, file) = zist_core::net::bind_unix(path, group)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let config = server_config(&options);
    // No token opens this door; the callers come from the peer's uid.
    let gate = BearerAuthLayer::new(
        zist_core::Access::default(),
        options.max_request_bytes as usize,
    )
    .with_body_timeout(options.request_timeout);
    let services = Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(gate))
        .set_rpc_middleware(
            jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new().layer(ScopeLayer),
        )
        .to_service_builder();
    let methods: Methods = module.into();
    let (stop, handle) = stop_channel();
    let limits = limits(&options, None);
    let make_service = {
        let stop = stop.clone();
        move |uid: u32| WithCaller {
            inner: services.clone().build(methods.clone(), stop.clone()),
            caller: zist_core::net::local_caller(uid),
        }
    };
    zist_core::net::accept_unix_loop(listener, limits, make_service, move || {
        stop.clone().shutdown()
    });
    Ok((handle, file))
}
