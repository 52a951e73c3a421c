//! The accept loop zistd's servers share: connection cap, timeouts for
//! silent, trickling and stalled clients, and TLS, around any hyper service.
//!
//! JSON-RPC (zist-rpc) and the HTTP API (zist-http) both run on it, so a
//! limit learned on one protects the other; it lives here, behind the `net`
//! feature, so that both faces depend on zist-core alone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

/// How a server treats its connections.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a client may stay silent after connecting, take for the TLS
    /// handshake, and take to send a request's headers (also the limit for
    /// an idle keep-alive connection to send its next request).
    pub request_timeout: Duration,
    /// A connection whose reads wait longer than this is closed; `None`
    /// leaves reads unbounded (server-sent streams read nothing for hours).
    pub read_idle: Option<Duration>,
    /// A connection whose writes wait longer than this is closed: a client
    /// that stops reading a stream is dropped, never buffered for.
    pub write_stall: Option<Duration>,
    /// Serve TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counts the open connections, so that a server that stops can wait
    /// until every client it took is answered and its connection closed
    /// (an upgrade in place does).
    pub in_flight: InFlight,
}

/// Accept loops still running and connections open (one answering with a
/// stream counts until its headers are sent). Shared by servers that stop
/// together.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Flights>);

#[derive(Debug, Default)]
struct Flights {
    /// Accept loops running and connections open.
    count: std::sync::atomic::AtomicUsize,
    /// Connections taken since the start.
    taken: std::sync::atomic::AtomicU64,
    /// When the last one was taken: milliseconds on [`clock_ms`].
    last: std::sync::atomic::AtomicU64,
    /// Set while [`InFlight::served_then_quiet`] waits for a connection.
    waiting: std::sync::atomic::AtomicBool,
    taken_now: tokio::sync::Notify,
}

/// One unit of [`InFlight`], given back on drop.
struct Counted(InFlight);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    fn enter(&self) -> Counted {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        Counted(self.clone())
    }

    /// A connection taken: it counts until dropped.
    fn connection(&self) -> Counted {
        let counted = self.enter();
        self.0.last.store(clock_ms(), Ordering::Relaxed);
        // SeqCst with the waiter's store and load: one of the two sees the other.
        self.0.taken.fetch_add(1, Ordering::SeqCst);
        if self.0.waiting.swap(false, Ordering::SeqCst) {
            self.0.taken_now.notify_one();
        }
        counted
    }

    /// How many there are now.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Waits until there is none (after the servers stopped accepting), or
    /// `limit` passes; true when none is left.
    pub async fn settled(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Returns once a connection was taken after this was called, and then
    /// none for `quiet` (connections still open may go on: a follower's
    /// stream, say). Nothing runs while no connection comes: a wait for the
    /// first, then a timer per `quiet` at most while they come. For a host that
    /// gives back what serving used once it is over
    /// ([`crate::memory`]).
    pub async fn served_then_quiet(&self, quiet: Duration) {
        let before = self.0.taken.load(Ordering::SeqCst);
        loop {
            let taken = self.0.taken_now.notified();
            self.0.waiting.store(true, Ordering::SeqCst);
            if self.0.taken.load(Ordering::SeqCst) != before {
                break;
            }
            taken.await;
        }
        loop {
            // One more: `last` is rounded down.
            let due = self.0.last.load(Ordering::Relaxed) + quiet.as_millis() as u64 + 1;
            let now = clock_ms();
            if now >= due {
                return;
            }
            tokio::time::sleep(Duration::from_millis(due - now)).await;
        }
    }
}

/// Milliseconds since this clock was first read.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// What a connection shares with its service: its count in [`InFlight`]
/// while it is open, and whether it has asked anything yet.
struct Tracked {
    count: std::sync::Mutex<Option<Counted>>,
    asked: std::sync::atomic::AtomicBool,
    /// Told when the connection asks for the first time.
    asked_now: tokio::sync::Notify,
}

impl Tracked {
    fn has_asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The connection no longer counts (it closed, or it streams).
    fn release(&self) {
        drop(
            self.count
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }
}

/// A service that marks its connection as having asked, and lets go of
/// the connection's count when it answers with a stream (server-sent
/// events), which never ends on its own. Any other answer keeps counting
/// until the connection closes, after its last byte went out.
#[derive(Clone)]
struct Track<S> {
    inner: S,
    tracked: Arc<Tracked>,
}

impl<S, R, B> tower::Service<R> for Track<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        if !self
            .tracked
            .asked
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // A permit, if nobody waits yet: a stop that comes later sees
            // `asked` instead.
            self.tracked.asked_now.notify_one();
        }
        let answer = self.inner.call(request);
        let tracked = self.tracked.clone();
        Box::pin(async move {
            let response = answer.await?;
            if http_body::Body::size_hint(response.body())
                .exact()
                .is_none()
            {
                tracked.release();
            }
            Ok(response)
        })
    }
}

/// A connection that has not asked anything yet, and how to end it.
struct Unasked {
    tracked: std::sync::Weak<Tracked>,
    evict: Arc<tokio::sync::Notify>,
}

impl Unasked {
    /// Whether the connection is still open and has never asked anything.
    fn idle(&self) -> bool {
        self.tracked.upgrade().is_some_and(|t| !t.has_asked())
    }
}

/// Makes room at the cap: ends the oldest connection that has not asked
/// anything yet (an idle or trickling one), so a flood of them never keeps
/// a client that asks from its answer. True when one was ended.
fn evict_oldest(unasked: &mut std::collections::VecDeque<Unasked>) -> bool {
    while let Some(oldest) = unasked.pop_front() {
        if oldest.idle() {
            oldest.evict.notify_one();
            return true;
        }
    }
    false
}

/// A place for a new connection, and what tracks it while it is open; at
/// the cap, the oldest silent connection is ended to make room
/// (its place comes back as its task ends). `None`: no room.
async fn admit(
    places: &Arc<tokio::sync::Semaphore>,
    unasked: &mut std::collections::VecDeque<Unasked>,
    limits: &Limits,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    Arc<Tracked>,
    Arc<tokio::sync::Notify>,
)> {
    let place = match places.clone().try_acquire_owned() {
        Ok(place) => place,
        Err(_) if evict_oldest(unasked) => {
            tokio::time::timeout(Duration::from_millis(100), places.clone().acquire_owned())
                .await
                .ok()?
                .ok()?
        }
        Err(_) => return None,
    };
    let tracked = Arc::new(Tracked {
        count: std::sync::Mutex::new(Some(limits.in_flight.connection())),
        asked: std::sync::atomic::AtomicBool::new(false),
        asked_now: tokio::sync::Notify::new(),
    });
    let evict = Arc::new(tokio::sync::Notify::new());
    if unasked.len() >= 2 * limits.max_connections {
        unasked.retain(Unasked::idle);
    }
    unasked.push_back(Unasked {
        tracked: Arc::downgrade(&tracked),
        evict: evict.clone(),
    });
    Some((place, tracked, evict))
}

/// Accepts connections on `listener` until `stopped()` resolves, serving
/// each with the service `make_service()` builds for it (HTTP/1.1 with
/// upgrades, so WebSockets work). A connection open at the stop finishes its
/// request and closes. At the cap, the oldest connection that has not
/// asked anything yet makes room for the new one.
pub fn accept_loop<M, S, B, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    make_service: M,
    stopped: F,
) where
    M: Fn() -> S + Send + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tls = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // The loop counts itself until it ends: settled means it took its last client.
    let accepting = limits.in_flight.enter();
    tokio::spawn(async move {
        let _accepting = accepting;
        let stop = stopped();
        tokio::pin!(stop);
        let mut trouble = AcceptTrouble::default();
        let mut unasked = std::collections::VecDeque::<Unasked>::new();
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        trouble.cleared();
                        socket
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: wait, longer each
                        // time, rather than spin or fill the log.
                        let pause = trouble.failed(&e);
                        tokio::select! {
                            () = tokio::time::sleep(pause) => continue,
                            _ = &mut stop => break,
                        }
                    }
                },
                _ = &mut stop => break,
            };
            // Over the limit (and nobody silent to make room): the socket closes here.
            let Some((place, tracked, evict)) = admit(&places, &mut unasked, &limits).await else {
                continue;
            };
            let service = Track {
                inner: make_service(),
                tracked: tracked.clone(),
            };
            let tracked_conn = tracked.clone();
            let stopped_early = stopped();
            let stopped_later = stopped();
            let limits = limits.clone();
            let tls = tls.clone();
            let served = async move {
                let _place = place;
                let _ = socket.set_nodelay(true);
                // A client that connects and says nothing is dropped; after
                // a stop, one taken just before gets a moment to ask.
                let silent = {
                    let readable = socket.readable();
                    let stopped = stopped_early;
                    tokio::pin!(readable, stopped);
                    tokio::select! {
                        ready = tokio::time::timeout(limits.request_timeout, &mut readable) => !matches!(ready, Ok(Ok(()))),
                        () = &mut stopped => !matches!(
                            tokio::time::timeout(STOP_GRACE, &mut readable).await,
                            Ok(Ok(()))
                        ),
                    }
                };
                if silent {
                    return;
                }
                let stopped = stopped_later;
                // The same socket, to reset it should the client stall.
                let fd = std::os::fd::AsFd::as_fd(&socket).try_clone_to_owned().ok();
                let io: Box<dyn Io> = match tls {
                    None => Box::new(socket),
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(limits.request_timeout, acceptor.accept(socket))
                                .await;
                        match handshake {
                            Ok(Ok(stream)) => Box::new(stream),
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                serve_http1(io, fd, service, &limits, &tracked_conn, stopped).await;
            };
            tokio::spawn(async move {
                tokio::select! {
                    () = served => {}
                    () = evict.notified() => {}
                }
                tracked.release();
            });
        }
    });
}

/// Serves one connection over HTTP/1.1 (WebSocket is an upgrade of it)
/// until it ends, or `stopped` resolves and what it is answering is done.
/// The header timeout covers the connection from its first byte and every
/// idle keep-alive; hyper's buffer is kept small: a client that stops
/// reading holds it until the write-stall limit drops the connection.
async fn serve_http1<I, S, B>(
    io: I,
    fd: Option<std::os::fd::OwnedFd>,
    service: S,
    limits: &Limits,
    tracked: &Tracked,
    stopped: impl Future<Output = ()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut io = tokio_io_timeout::TimeoutStream::new(io);
    io.set_read_timeout(limits.read_idle);
    io.set_write_timeout(limits.write_stall);
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .serve_connection(
            hyper_util::rt::TokioIo::new(Box::pin(io)),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .with_upgrades();
    tokio::pin!(connection, stopped);
    let result = match futures_util::future::select(connection, stopped).await {
        futures_util::future::Either::Left((result, _)) => result,
        futures_util::future::Either::Right((_, mut connection)) => {
            // hyper closes a connection it has read nothing from yet at
            // once: one taken just before the stop gets a moment to ask,
            // and its request is answered.
            if !tracked.has_asked() {
                let asked = tokio::time::timeout(STOP_GRACE, tracked.asked_now.notified());
                tokio::pin!(asked);
                tokio::select! {
                    result = &mut connection => {
                        if let Err(e) = result {
                            tracing::debug!("connection ended: {e}");
                        }
                        return;
                    }
                    _ = &mut asked => {}
                }
            }
            connection.as_mut().graceful_shutdown();
            // A stream (SSE, WebSocket) never ends on its own: bounded.
            match tokio::time::timeout(limits.request_timeout, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
        if let Some(socket) = fd.filter(|_| timed_out(&e)) {
            // A client that stopped reading: its unsent bytes are dropped
            // with the connection (a reset), rather than left to the kernel
            // to trickle into a window that may never open again.
            let _ = nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
    }
}

/// Whether a connection ended on a read or write that timed out.
fn timed_out(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// How long a connection taken just before a stop has to send its request.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Failed accepts in a row: how long to wait, and when to say so.
#[derive(Default)]
struct AcceptTrouble {
    in_a_row: u32,
    unreported: u64,
    last_report: Option<std::time::Instant>,
}

impl AcceptTrouble {
    /// The first failure is reported at once, then at most one line a minute.
    const REPORT_EVERY: Duration = Duration::from_secs(60);

    /// Counts a failed accept; returns the pause before the next one
    /// (10 ms, doubling up to 1 s).
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|at| at.elapsed() >= Self::REPORT_EVERY);
        if due {
            tracing::warn!(
                "cannot accept connections: {error} ({} failed accepts since the last report); retrying with backoff",
                self.unreported
            );
            self.unreported = 0;
            self.last_report = Some(std::time::Instant::now());
        }
        Duration::from_millis(10 << self.in_a_row.min(7)).min(Duration::from_secs(1))
    }

    fn cleared(&mut self) {
        self.in_a_row = 0;
    }
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A TLS config from PEM files; the error says which file and what is wrong.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok(Arc::new(config))
}

/// [`accept_loop`] for a Unix socket: each connection is served by the
/// service `make_service(uid)` builds for the peer's uid, as the kernel
/// tells it (`SO_PEERCRED`), so no token is needed there. Connections that
/// have not asked anything yet are ended at the cap, as on TCP.
pub fn accept_unix_loop<M, S, B, F, Fut>(
    listener: tokio::net::UnixListener,
    limits: Limits,
    make_service: M,
    stopped: F,
) where
    M: Fn(u32) -> S + Send + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let stop = stopped();
        tokio::pin!(stop);
        let mut unasked = std::collections::VecDeque::<Unasked>::new();
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let Ok(credentials) = socket.peer_cred() else {
                continue;
            };
            let Some((place, tracked, evict)) = admit(&places, &mut unasked, &limits).await else {
                continue;
            };
            let service = Track {
                inner: make_service(credentials.uid()),
                tracked: tracked.clone(),
            };
            let stopped = stopped();
            let limits = limits.clone();
            let tracked_conn = tracked.clone();
            let served = async move {
                let _place = place;
                // A local socket's unsent bytes go with its last close: no reset needed.
                serve_http1(socket, None, service, &limits, &tracked_conn, stopped).await;
            };
            tokio::spawn(async move {
                tokio::select! {
                    () = served => {}
                    () = evict.notified() => {}
                }
                tracked.release();
            });
        }
    });
}

/// The caller on the local socket with peer `uid`: root and this
/// process's uid are admin; anyone else who could connect (a member of
/// the socket's group) operates.
pub fn local_caller(uid: u32) -> crate::Caller {
    let scope = if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        crate::Scope::Admin
    } else {
        crate::Scope::Operate
    };
    crate::Caller::local(uid, scope)
}

/// Binds the local socket at `path`: mode 0660, group `group` (else this
/// process's), its folder made without access for others. A socket file
/// left by a crash is replaced; one a live server answers on is never taken
/// (`AddrInUse`), nor a file that is not a socket.
pub fn bind_unix(
    path: &std::path::Path,
    group: Option<&str>,
) -> std::io::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a server already answers on {}", path.display()),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    if let Some(folder) = path.parent() {
        crate::logs::make_dir(folder)?;
    }
    let gid = match group {
        Some(group) => Some(
            nix::unistd::Group::from_name(group)
                .map_err(std::io::Error::from)?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("SocketGroup {group:?} is no group of this machine"),
                    )
                })?
                .gid,
        ),
        None => None,
    };
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let file = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::from)?;
        // The group passes through the socket's folder to it (no listing,
        // nothing for others).
        if let Some(folder) = path.parent() {
            nix::unistd::chown(folder, None, Some(gid)).map_err(std::io::Error::from)?;
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o710))?;
        }
    }
    Ok((listener, file))
}

/// A socket file, removed when dropped.
#[derive(Debug)]
pub struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn quiet_is_told_only_after_a_connection_and_then_none_for_the_while() {
        let in_flight = InFlight::default();
        let quiet = Duration::from_millis(300);
        let waiter = in_flight.clone();
        let mut told = tokio::spawn(async move { waiter.served_then_quiet(quiet).await });
        // No connection: never told, however long.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), &mut told)
                .await
                .is_err()
        );
        let first = in_flight.connection();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A second one within the while starts it again (one still open
        // does not hold it up).
        let taken = tokio::time::Instant::now();
        let second = in_flight.connection();
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), &mut told)
            .await
            .expect("told once quiet")
            .unwrap();
        assert!(
            taken.elapsed() >= quiet,
            "told {:?} after the last connection",
            taken.elapsed()
        );
        drop(second);
        assert_eq!(in_flight.count(), 0);
    }

    /// A body of known length whose one chunk comes after a pause, as a
    /// large answer does from a slow writer.
    struct Slow(std::pin::Pin<Box<tokio::time::Sleep>>, bool);

    impl http_body::Body for Slow {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            if self.1 {
                return std::task::Poll::Ready(None);
            }
            std::task::ready!(self.0.as_mut().poll(cx));
            self.1 = true;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
                b"ok",
            )))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(2)
        }
    }

    /// Answers every request with a [`Slow`] body; says when it was asked.
    #[derive(Clone)]
    struct Answer(Arc<std::sync::atomic::AtomicBool>);

    impl tower::Service<http::Request<hyper::body::Incoming>> for Answer {
        type Response = http::Response<Slow>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<hyper::body::Incoming>) -> Self::Future {
            self.0.store(true, std::sync::atomic::Ordering::Release);
            let pause = Box::pin(tokio::time::sleep(Duration::from_millis(300)));
            std::future::ready(Ok(http::Response::new(Slow(pause, false))))
        }
    }

    /// A server that stops (an upgrade in place) counts a client as in
    /// flight until its whole answer went out, not until its service
    /// returned the headers: the next executable must not begin while an
    /// answer is half written.
    #[tokio::test]
    async fn a_stopped_server_is_settled_only_when_every_answer_went_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 8,
            request_timeout: Duration::from_secs(5),
            read_idle: None,
            write_stall: None,
            tls: None,
            in_flight: InFlight::default(),
        };
        let in_flight = limits.in_flight.clone();
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let service = Answer(asked.clone());
        let (stop, stopping) = tokio::sync::watch::channel(false);
        accept_loop(
            listener,
            limits,
            move || service.clone(),
            move || {
                let mut stopping = stopping.clone();
                async move {
                    let _ = stopping.wait_for(|stopped| *stopped).await;
                }
            },
        );
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !asked.load(std::sync::atomic::Ordering::Acquire) {
            assert!(tokio::time::Instant::now() < deadline, "never asked");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send(true).unwrap();
        assert!(
            !in_flight.settled(Duration::from_millis(100)).await,
            "settled with the answer's body still to come"
        );
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
            .await
            .expect("the connection closes after the answer")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("ok"), "{answer:?}");
        assert!(in_flight.settled(Duration::from_secs(5)).await);
    }
}
