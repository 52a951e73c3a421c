//! zistcl, the command-line client of zistd (docs/reference.md §6.2).
//!
//! Exit codes: 0 done, 1 the daemon refused, 2 usage error, 3 cannot
//! connect or not authorised. Errors go to stderr as one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use std::sync::Arc;

use jsonrpsee::core::client::Error as ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::WsClientBuilder;
use serde::Serialize;
use zist_core::{Acted, LogStream, ProcessInfo, ShutdownMode};
use zist_rpc::ZistApiClient;

#[derive(Parser)]
#[command(
    name = "zistcl",
    version,
    about = "Drive zistd: zistcl HOST:PORT TOKEN COMMAND, or zistcl -l COMMAND",
    after_help = "COMMAND:\n  status                    is zistd alive\n  all                       every program (name, state, pid, uptime, restarts)\n  log | log clear           zistd's own log / clear it\n  reload                    reload the config, print what changed\n  kill | kill all           exit zistd leaving programs running / stopping them\n  upgrade                   replace zistd with the executable now at its path\n  adopt PID [NAME]          take over a running process zist did not start\n  NAME status|start|stop|restart|detach|stats|stdout|stderr\n  NAME stdout -f | NAME stderr -f   follow live\n  NAME restart --rolling    instances one at a time, each once the one before runs\n  NAME scale N              run N instances of a program with Instances\n  all start|stop|restart    every program\n\nTOKEN `-` is read from ZIST_TOKEN."
)]
struct Cli {
    /// Use the local zistd: port and token from conf.toml.
    #[arg(short = 'l', long = "local")]
    local: bool,
    /// The conf.toml for -l.
    #[arg(short = 'c', long = "config", default_value = "/etc/zist/conf.toml")]
    config: PathBuf,
    /// Print the raw JSON result instead of a table.
    #[arg(long)]
    json: bool,
    /// Trust this CA certificate for https.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// HOST:PORT TOKEN COMMAND..., or with -l only COMMAND...
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    words: Vec<String>,
}

/// Why zistcl stops, with its exit code.
enum Failure {
    Refused(String),
    Usage(String),
    Connect(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (code, message) = match self {
            Self::Refused(m) => (1, m),
            Self::Usage(m) => (2, m),
            Self::Connect(m) => (3, m),
        };
        eprintln!("zistcl: {message}");
        ExitCode::from(code)
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // `--json` may also come after HOST:PORT TOKEN, among the command words.
    if cli.words.iter().any(|w| w == "--json") {
        cli.json = true;
        cli.words.retain(|w| w != "--json");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::Connect(format!("cannot start: {e}")).exit(),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

/// Where zistd is and its token.
struct Target {
    /// `HOST:PORT`, or the socket's path.
    address: String,
    token: String,
    https: bool,
    /// zistd's local socket, when that is the way in (no token).
    unix: Option<std::path::PathBuf>,
}

impl Target {
    /// zistd's local socket at `path`.
    fn local(path: std::path::PathBuf) -> Self {
        Self {
            address: path.display().to_string(),
            token: String::new(),
            https: false,
            unix: Some(path),
        }
    }
}

/// The way zistcl's calls travel: zistd's TCP port, or its local socket.
#[derive(Clone)]
enum Transport {
    Tcp(Box<jsonrpsee::http_client::transport::HttpBackend>),
    Unix(std::sync::Arc<std::path::Path>),
}

/// Puts [`Transport::Unix`] in place of the TCP transport when a socket is given.
struct TransportLayer(Option<std::sync::Arc<std::path::Path>>);

impl tower::Layer<jsonrpsee::http_client::transport::HttpBackend> for TransportLayer {
    type Service = Transport;

    fn layer(&self, tcp: jsonrpsee::http_client::transport::HttpBackend) -> Transport {
        match &self.0 {
            Some(path) => Transport::Unix(path.clone()),
            None => Transport::Tcp(Box::new(tcp)),
        }
    }
}

type TransportError = jsonrpsee::http_client::transport::Error;

impl tower::Service<jsonrpsee::http_client::HttpRequest> for Transport {
    type Response = jsonrpsee::http_client::HttpResponse<hyper::body::Incoming>;
    type Error = TransportError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, TransportError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TransportError>> {
        match self {
            Self::Tcp(tcp) => tcp.poll_ready(cx),
            Self::Unix(_) => std::task::Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: jsonrpsee::http_client::HttpRequest) -> Self::Future {
        let path = match self {
            Self::Tcp(tcp) => return tcp.call(request),
            Self::Unix(path) => path.clone(),
        };
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::Http(jsonrpsee::core::http_helpers::HttpError::Stream(e))
        };
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&*path)
                .await
                .map_err(|e| failed(e.into()))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| failed(e.into()))?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|e| failed(e.into()))
        })
    }
}

/// The client zistcl calls zistd with, over either transport.
type Client = HttpClient<
    jsonrpsee::core::middleware::layer::RpcLogger<jsonrpsee::http_client::RpcService<Transport>>,
>;

/// Reads `HOST:PORT`, `https://HOST:PORT` or a bare `PORT` (this machine).
/// Anything else is a usage error: zistcl never guesses a host or a port.
fn address(text: &str) -> Result<(String, bool), Failure> {
    let https = text.starts_with("https://");
    let bare = text
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let wrong = || {
        Failure::Usage(format!(
            "`{text}` is not HOST:PORT; write it like 127.0.0.1:9876 (or just the port, 9876, for this machine)"
        ))
    };
    if let Ok(port) = bare.parse::<u16>() {
        return match port {
            0 => Err(wrong()),
            port => Ok((format!("127.0.0.1:{port}"), https)),
        };
    }
    let (host, port) = bare.rsplit_once(':').ok_or_else(wrong)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 && host_ok => Ok((format!("{host}:{port}"), https)),
        _ => Err(wrong()),
    }
}

fn target(cli: &Cli) -> Result<(Target, Vec<String>), Failure> {
    if cli.local {
        let config = zist_core::Config::load(&cli.config).map_err(|e| {
            Failure::Usage(format!(
                "cannot read {}: {}",
                cli.config.display(),
                e.0.first().map_or(String::new(), ToString::to_string)
            ))
        })?;
        let host = match config.daemon.bind {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        // The local socket when it answers (no token needed), else TCP.
        if let Some(socket) = config
            .daemon
            .socket
            .filter(|s| std::os::unix::net::UnixStream::connect(s).is_ok())
        {
            return Ok((Target::local(socket), cli.words.clone()));
        }
        let target = Target {
            address: std::net::SocketAddr::new(host, config.daemon.rpc_port).to_string(),
            token: config.daemon.token,
            https: config.daemon.protocol == zist_core::Protocol::Https,
            unix: None,
        };
        return Ok((target, cli.words.clone()));
    }
    if let [first, command @ ..] = cli.words.as_slice()
        && let Some(path) = first.strip_prefix("unix:")
    {
        return Ok((Target::local(path.into()), command.to_vec()));
    }
    let [address_text, token, command @ ..] = cli.words.as_slice() else {
        return Err(Failure::Usage(
            "usage: zistcl HOST:PORT TOKEN COMMAND (or zistcl -l COMMAND); see zistcl --help"
                .to_owned(),
        ));
    };
    let (address, https) = address(address_text)?;
    let token = if token == "-" {
        std::env::var("ZIST_TOKEN")
            .map_err(|_| Failure::Usage("TOKEN is `-` but ZIST_TOKEN is not set".to_owned()))?
    } else {
        token.clone()
    };
    Ok((
        Target {
            address,
            token,
            https,
            unix: None,
        },
        command.to_vec(),
    ))
}

/// Trusts the certificates of `--cacert` as issuers, as the system's roots
/// are, and also as the server's own certificate when it is one of them
/// (a self-signed certificate made with `openssl req -x509` carries
/// CA:TRUE, which a certificate check refuses for a server), as curl does.
/// The validity period and the name are checked either way.
#[derive(Debug)]
struct CaCert {
    roots: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for CaCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // Validity is checked before the CA flag: reaching this means
            // the certificate is in date, and only its CA:TRUE was refused.
            Err(Error::InvalidCertificate(CertificateError::Other(_)))
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            // A CA certificate presented by the server that is not one of
            // ours: nothing we trust vouches for it.
            Err(Error::InvalidCertificate(CertificateError::Other(_))) => {
                Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

/// With `--cacert`, a TLS client trusting those certificates; otherwise
/// the system's roots (jsonrpsee's default). An untrusted certificate fails
/// the connection (exit 3), never a downgrade.
fn client_tls(cli: &Cli, target: &Target) -> Result<Option<rustls::ClientConfig>, Failure> {
    let Some(path) = &cli.cacert else {
        return Ok(None);
    };
    if !target.https {
        return Err(Failure::Usage(
            "--cacert goes with https://HOST:PORT".to_owned(),
        ));
    }
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Failure::Usage(format!("cannot read --cacert {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Failure::Usage(format!(
            "--cacert {} holds no PEM certificate",
            path.display()
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| Failure::Usage(format!("--cacert {}: {e}", path.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| Failure::Usage(format!("--cacert {}: {e}", path.display())))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Usage(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaCert {
            roots: verifier,
            pinned: certs,
        }))
        .with_no_client_auth();
    Ok(Some(config))
}

fn headers(token: &str) -> Result<http::HeaderMap, Failure> {
    let mut headers = http::HeaderMap::new();
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Failure::Usage("the token has characters a header cannot carry".to_owned()))?;
    headers.insert(http::header::AUTHORIZATION, value);
    Ok(headers)
}

/// What an HTTP status that is not a JSON-RPC answer means for zistcl.
fn rejected(address: &str, status: u16) -> Failure {
    match status {
        401 => Failure::Connect(format!(
            "not authorised by zistd at {address}: check the token"
        )),
        status => Failure::Connect(format!(
            "something answered at {address} (HTTP {status}), but it is not zistd's JSON-RPC port; use RPCPort from conf.toml"
        )),
    }
}

/// Why a certificate was refused, for a person.
fn certificate_problem(error: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match error {
        C::UnknownIssuer => {
            "unknown issuer: it is not signed by a certificate you trust (give one with --cacert FILE)".to_owned()
        }
        C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "name mismatch: it is not made out to the host you gave".to_owned()
        }
        other => other.to_string(),
    }
}

/// The first error of a type along an error's chain of sources (an I/O
/// error is looked into: it carries what it wraps, not as its source).
fn find_in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Maps a client error to zistcl's exit codes, by what the error is.
fn failure(address: &str, error: ClientError) -> Failure {
    use jsonrpsee::client_transport::ws::WsHandshakeError;
    use jsonrpsee::http_client::transport::Error as HttpError;
    let transport = match &error {
        ClientError::Call(e) => return Failure::Refused(e.message().to_owned()),
        ClientError::ParseError(_) => {
            return Failure::Connect(format!(
                "something answered at {address}, but not in JSON-RPC: it is not zistd's JSON-RPC port; use RPCPort from conf.toml"
            ));
        }
        ClientError::Transport(e) => e.as_ref() as &(dyn std::error::Error + 'static),
        other => {
            return Failure::Connect(format!("lost zistd at {address}: {other}"));
        }
    };
    if let Some(HttpError::Rejected { status_code }) = find_in_chain::<HttpError>(transport) {
        return rejected(address, *status_code);
    }
    if let Some(WsHandshakeError::Rejected { status_code }) =
        find_in_chain::<WsHandshakeError>(transport)
    {
        return rejected(address, *status_code);
    }
    if let Some(rustls::Error::InvalidCertificate(problem)) =
        find_in_chain::<rustls::Error>(transport)
    {
        return Failure::Connect(format!(
            "the certificate of {address} was refused: {}",
            certificate_problem(problem)
        ));
    }
    Failure::Connect(format!(
        "cannot reach zistd at {address} ({error}); is it running?"
    ))
}

/// A command of docs/reference.md §6.2, read from the words after TOKEN.
enum Command<'a> {
    Status,
    List,
    All(&'a str),
    Log,
    LogClear,
    Reload,
    Upgrade,
    Adopt(i32, Option<&'a str>),
    Kill(ShutdownMode),
    Follow(&'a str, LogStream),
    Logs(&'a str, LogStream),
    Stats(&'a str),
    Act(&'a str, &'a str),
    Scale(&'a str, u32),
}

impl<'a> Command<'a> {
    fn parse(words: &[&'a str]) -> Result<Self, Failure> {
        let stream = |s: &str| match s {
            "stderr" => LogStream::Stderr,
            _ => LogStream::Stdout,
        };
        Ok(match *words {
            ["status"] => Self::Status,
            ["all"] => Self::List,
            ["all", action @ ("start" | "stop" | "restart")] => Self::All(action),
            ["log"] => Self::Log,
            ["log", "clear"] => Self::LogClear,
            ["reload"] => Self::Reload,
            ["upgrade"] => Self::Upgrade,
            ["adopt", pid] => Self::Adopt(pid_word(pid)?, None),
            ["adopt", pid, name] => Self::Adopt(pid_word(pid)?, Some(name)),
            ["kill"] => Self::Kill(ShutdownMode::Detach),
            ["kill", "all"] => Self::Kill(ShutdownMode::Stop),
            [name, s @ ("stdout" | "stderr"), "-f"] => Self::Follow(name, stream(s)),
            [name, s @ ("stdout" | "stderr")] => Self::Logs(name, stream(s)),
            [name, "stats"] => Self::Stats(name),
            [name, "restart", "--rolling"] => Self::Act(name, "restart --rolling"),
            [name, "scale", n] => Self::Scale(
                name,
                n.parse().map_err(|_| {
                    Failure::Usage(format!(
                        "`{n}` is not a number of instances; usage: NAME scale N"
                    ))
                })?,
            ),
            [
                name,
                action @ ("status" | "start" | "stop" | "restart" | "detach"),
            ] => Self::Act(name, action),
            _ => {
                return Err(Failure::Usage(format!(
                    "unknown command `{}`; see zistcl --help",
                    words.join(" ")
                )));
            }
        })
    }
}

/// A connection to one zistd, and how to print.
struct Session<'a> {
    cli: &'a Cli,
    target: Target,
    client: Client,
}

impl Session<'_> {
    fn fail(&self) -> impl Fn(ClientError) -> Failure + '_ {
        |e| failure(&self.target.address, e)
    }

    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce()) {
        print(self.cli.json, value, human);
    }
}

async fn run(cli: Cli) -> Outcome {
    let (target, words) = target(&cli)?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = Command::parse(&words)?;
    let headers = match target.unix {
        // No token goes over the local socket: the kernel says who calls.
        Some(_) => http::HeaderMap::new(),
        None => headers(&target.token)?,
    };
    let mut builder = HttpClientBuilder::default()
        .set_headers(headers)
        .request_timeout(Duration::from_secs(120));
    if let Some(tls) = client_tls(&cli, &target)? {
        builder = builder.with_custom_cert_store(tls);
    }
    let scheme = if target.https { "https" } else { "http" };
    let url = match target.unix {
        Some(_) => "http://localhost".to_owned(),
        None => format!("{scheme}://{}", target.address),
    };
    let layer = TransportLayer(target.unix.as_deref().map(std::sync::Arc::from));
    let client = builder
        .set_http_middleware(tower::ServiceBuilder::new().layer(layer))
        .build(url)
        .map_err(|e| Failure::Usage(format!("bad address {}: {e}", target.address)))?;
    let s = Session {
        cli: &cli,
        target,
        client,
    };
    match command {
        Command::Status => status(&s).await,
        Command::List => list(&s).await,
        Command::All(action) => all(&s, action).await,
        Command::Log => log(&s).await,
        Command::LogClear => log_clear(&s).await,
        Command::Reload => reload(&s).await,
        Command::Upgrade => upgrade(&s).await,
        Command::Adopt(pid, name) => adopt(&s, pid, name).await,
        Command::Kill(mode) => kill(&s, mode).await,
        Command::Follow(name, stream) => follow(&s, name, stream).await,
        Command::Logs(name, stream) => logs(&s, name, stream).await,
        Command::Stats(name) => stats(&s, name).await,
        Command::Act(name, action) => act(&s, name, action).await,
        Command::Scale(name, n) => scale(&s, name, n).await,
    }
}

/// `status`: is zistd alive.
async fn status(s: &Session<'_>) -> Outcome {
    let status = s.client.daemon_status().await.map_err(s.fail())?;
    s.print(&status, || {
        println!(
            "zistd {} is alive: pid {}, up {}, {} programs",
            status.version,
            status.pid,
            uptime(status.uptime_secs),
            status.programs
        )
    });
    Ok(())
}

/// `all`: every program, a table.
async fn list(s: &Session<'_>) -> Outcome {
    let list = s.client.process_list().await.map_err(s.fail())?;
    s.print(&list, || table(&list));
    Ok(())
}

/// `all start|stop|restart`.
async fn all(s: &Session<'_>, action: &str) -> Outcome {
    let list = match action {
        "start" => s.client.process_start_all().await,
        "stop" => s.client.process_stop_all().await,
        _ => s.client.process_restart_all().await,
    }
    .map_err(s.fail())?;
    s.print(&list, || table(&list));
    Ok(())
}

/// `log`: zistd's own log.
async fn log(s: &Session<'_>) -> Outcome {
    let lines = s.client.daemon_log(Some(1000)).await.map_err(s.fail())?;
    s.print(&lines, || lines.iter().for_each(|l| println!("{l}")));
    Ok(())
}

/// `log clear`.
async fn log_clear(s: &Session<'_>) -> Outcome {
    let done = s.client.daemon_clear_log().await.map_err(s.fail())?;
    s.print(&done, || println!("zistd's log cleared"));
    Ok(())
}

/// `reload`: what changed.
async fn reload(s: &Session<'_>) -> Outcome {
    let report = s.client.daemon_reload().await.map_err(s.fail())?;
    s.print(&report, || {
        for (what, names) in [
            ("added", &report.added),
            ("removed", &report.removed),
            ("changed", &report.changed),
            ("unchanged", &report.unchanged),
        ] {
            let names = if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(" ")
            };
            println!("{what:<10} {names}");
        }
    });
    Ok(())
}

/// `upgrade`: zistd replaces itself with the executable at the path it was
/// started from; waits until the new one answers, then prints both versions.
async fn upgrade(s: &Session<'_>) -> Outcome {
    let report = s.client.daemon_upgrade().await.map_err(s.fail())?;
    let answered = std::time::Instant::now();
    let deadline = answered + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match s.client.daemon_status().await {
            // The new executable: started after the answer.
            Ok(status)
                if status.version == report.to
                    && status.uptime_secs <= answered.elapsed().as_secs_f64() =>
            {
                break;
            }
            _ if std::time::Instant::now() > deadline => {
                return Err(Failure::Connect(format!(
                    "zistd at {} did not answer as {} within 30 s after the upgrade; see its log",
                    s.target.address, report.to
                )));
            }
            _ => {}
        }
    }
    s.print(&report, || {
        println!("zistd upgraded in place: {} -> {}", report.from, report.to)
    });
    Ok(())
}

/// `kill` (programs keep running) and `kill all` (they are stopped).
async fn kill(s: &Session<'_>, mode: ShutdownMode) -> Outcome {
    let done = s.client.daemon_shutdown(mode).await.map_err(s.fail())?;
    s.print(&done, || match mode {
        ShutdownMode::Detach => println!("zistd exits; programs keep running"),
        ShutdownMode::Stop => println!("zistd stops every program and exits"),
    });
    Ok(())
}

/// `NAME stdout|stderr`: the last lines.
async fn logs(s: &Session<'_>, name: &str, stream: LogStream) -> Outcome {
    let lines = s
        .client
        .process_logs(name.to_owned(), stream, Some(zist_core::DEFAULT_LINES))
        .await
        .map_err(s.fail())?;
    s.print(&lines, || lines.iter().for_each(|l| println!("{l}")));
    Ok(())
}

/// `NAME stats`.
async fn stats(s: &Session<'_>, name: &str) -> Outcome {
    let stats = s
        .client
        .process_stats(name.to_owned())
        .await
        .map_err(s.fail())?;
    s.print(&stats, || {
        println!(
            "{name}: cpu {:.1}%  memory {} ({:.2}%)",
            stats.cpu_percent,
            bytes(stats.memory_bytes),
            stats.memory_percent
        )
    });
    Ok(())
}

/// `NAME status|start|stop|restart|detach`, `NAME restart --rolling`: the
/// program's row, or its instances' rows.
async fn act(s: &Session<'_>, name: &str, action: &str) -> Outcome {
    let name = name.to_owned();
    let acted = match action {
        "status" => s.client.process_info(name).await.map(Acted::One),
        "start" => s.client.process_start(name).await,
        "stop" => s.client.process_stop(name).await,
        "restart" => s.client.process_restart(name, None).await,
        "restart --rolling" => s.client.process_restart(name, Some(true)).await,
        _ => s.client.process_detach(name).await,
    }
    .map_err(s.fail())?;
    s.print(&acted, || rows(acted.infos()));
    Ok(())
}

/// Programs' rows, and under them the `message` of each that has one.
fn rows(infos: &[ProcessInfo]) {
    table(infos);
    for info in infos {
        if let Some(message) = &info.message {
            if infos.len() == 1 {
                println!("{message}");
            } else {
                println!("{}: {message}", info.name);
            }
        }
    }
}

/// `NAME scale N`.
async fn scale(s: &Session<'_>, name: &str, n: u32) -> Outcome {
    let infos = s
        .client
        .process_scale(name.to_owned(), n)
        .await
        .map_err(s.fail())?;
    s.print(&infos, || rows(&infos));
    Ok(())
}

/// A pid as the command line gives it.
fn pid_word(word: &str) -> Result<i32, Failure> {
    word.parse::<i32>()
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| Failure::Usage(format!("`{word}` is not a pid; usage: adopt PID [NAME]")))
}

/// `adopt PID [NAME]`: zist takes over a process it did not start.
async fn adopt(s: &Session<'_>, pid: i32, name: Option<&str>) -> Outcome {
    let info = s
        .client
        .process_adopt(pid, name.map(str::to_owned), None, None)
        .await
        .map_err(s.fail())?;
    s.print(&info, || {
        table(std::slice::from_ref(&info));
        if let Some(message) = &info.message {
            println!("{message}");
        }
    });
    Ok(())
}

/// `NAME stdout|stderr -f`: new lines until zistd or the program goes away, or Ctrl-C.
async fn follow(s: &Session<'_>, name: &str, stream: LogStream) -> Outcome {
    let target = &s.target;
    if target.unix.is_some() {
        return Err(Failure::Usage(
            "following a log goes over TCP: zistcl HOST:PORT TOKEN NAME stdout -f".to_owned(),
        ));
    }
    let scheme = if target.https { "wss" } else { "ws" };
    let mut builder = WsClientBuilder::default().set_headers(headers(&target.token)?);
    if let Some(tls) = client_tls(s.cli, target)? {
        builder = builder.with_custom_cert_store(tls);
    }
    let ws = builder
        .build(format!("{scheme}://{}", target.address))
        .await
        .map_err(s.fail())?;
    let mut lines = ws
        .process_follow(name.to_owned(), stream)
        .await
        .map_err(s.fail())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            line = lines.next() => match line {
                Some(Ok(line)) => println!("{line}"),
                Some(Err(e)) => return Err(Failure::Connect(format!("the stream broke: {e}"))),
                None => return Ok(()),
            },
        }
    }
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("zistcl: cannot print the result: {e}"),
        }
    } else {
        human();
    }
}

fn uptime(secs: f64) -> String {
    let s = secs as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h}:{m:02}:{s:02}")
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A table like `supervisorctl status`.
fn table(list: &[ProcessInfo]) {
    let width = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<9} {:>7}  {:>11}  {:>8}",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS"
    );
    for info in list {
        let pid = info.pid.map_or("-".to_owned(), |p| p.to_string());
        let up = if info.is_alive() {
            uptime(info.uptime_secs)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<width$}  {:<9} {:>7}  {:>11}  {:>8}",
            info.name,
            info.state.as_str(),
            pid,
            up,
            info.restarts
        );
    }
}
