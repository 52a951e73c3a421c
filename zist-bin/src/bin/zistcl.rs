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

#[path = "../top.rs"]
mod top;

#[derive(Parser)]
#[command(
    name = "zistcl",
    version,
    about = "Drive zistd: zistcl HOST:PORT TOKEN COMMAND, or zistcl -l COMMAND",
    after_help = "COMMAND:\n  status                    is zistd alive\n  top                       a live full-screen view (q quits)\n  all                       every program (name, state, pid, uptime, restarts)\n  log | log clear           zistd's own log / clear it\n  reload                    reload the config, print what changed\n  kill | kill all           exit zistd leaving programs running / stopping them\n  upgrade                   replace zistd with the executable now at its path\n  adopt PID [NAME]          take over a running process zist did not start\n  add FILE.toml             add a program from a program file\n  NAME status|start|stop|restart|detach|stats|stdout|stderr|info|pid|remove\n  NAME tail [-n N] [-f] [--stderr]   the last lines (10), then follow live\n  NAME stdout -f | NAME stderr -f   follow live\n  NAME signal SIG           send a signal (HUP, USR1, 10, ...)\n  NAME restart --rolling    instances one at a time, each once the one before runs\n  NAME scale N              run N instances of a program with Instances\n  all start|stop|restart    every program\n  all tail -f               every program's lines, as NAME | line\n  completions bash|zsh|fish print shell completions\n  manpage                   print the man page (roff)\n\nNAME may be several names and globs: zistcl -l a b stop, zistcl -l 'web*' restart.\nTOKEN `-` is read from ZIST_TOKEN."
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
    // What needs no zistd: shell completions and the man page.
    match cli.words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["completions", shell] => return completions(shell),
        ["manpage"] => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => Failure::Connect(format!("cannot print the man page: {e}")).exit(),
            };
        }
        _ => {}
    }
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

/// `completions bash|zsh|fish`: the script for the shell, on stdout.
fn completions(shell: &str) -> ExitCode {
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => {
            return Failure::Usage(format!(
                "no completions for `{other}`; use bash, zsh or fish"
            ))
            .exit();
        }
    };
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "zistcl", &mut std::io::stdout());
    ExitCode::SUCCESS
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
    Top,
    List,
    All(&'a str),
    TailAll,
    Log,
    LogClear,
    Reload,
    Upgrade,
    Adopt(i32, Option<&'a str>),
    Add(&'a str),
    Kill(ShutdownMode),
    /// An action on each program named (names and globs).
    Each(Vec<&'a str>, Action<'a>),
}

/// What to do to each program named.
#[derive(Clone, Copy)]
enum Action<'a> {
    /// `status`, `start`, `stop`, `restart`, `detach`, `restart --rolling`.
    Act(&'a str),
    Stats,
    Logs(LogStream),
    Tail {
        lines: usize,
        follow: bool,
        stream: LogStream,
    },
    Pid,
    Signal(&'a str),
    Remove,
    Info,
    Scale(u32),
}

/// The commands that name no program, for "did you mean".
const COMMANDS: &[&str] = &[
    "status", "top", "all", "log", "reload", "upgrade", "adopt", "add", "kill",
];
/// The words that say what to do to the programs named before them.
const ACTIONS: &[&str] = &[
    "status", "start", "stop", "restart", "detach", "stats", "stdout", "stderr", "tail", "pid",
    "signal", "remove", "info", "scale",
];

/// Lines `tail` prints before following, as tail(1) does.
const TAIL_LINES: usize = 10;

impl<'a> Action<'a> {
    /// The action `words` spell (the keyword first), if they spell one.
    fn parse(words: &[&'a str]) -> Result<Option<Self>, Failure> {
        let stream = |s: &str| match s {
            "stderr" => LogStream::Stderr,
            _ => LogStream::Stdout,
        };
        Ok(Some(match *words {
            [a @ ("status" | "start" | "stop" | "restart" | "detach")] => Self::Act(a),
            ["restart", "--rolling"] => Self::Act("restart --rolling"),
            ["stats"] => Self::Stats,
            [s @ ("stdout" | "stderr")] => Self::Logs(stream(s)),
            [s @ ("stdout" | "stderr"), "-f"] => Self::Tail {
                lines: 0,
                follow: true,
                stream: stream(s),
            },
            ["tail", ref flags @ ..] => tail_flags(flags)?,
            ["pid"] => Self::Pid,
            ["signal", sig] => Self::Signal(sig),
            ["remove"] => Self::Remove,
            ["info"] => Self::Info,
            ["scale", n] => Self::Scale(n.parse().map_err(|_| {
                Failure::Usage(format!(
                    "`{n}` is not a number of instances; usage: NAME scale N"
                ))
            })?),
            _ => return Ok(None),
        }))
    }
}

/// `tail [-n N] [-f] [--stderr]`.
fn tail_flags<'a>(flags: &[&str]) -> Result<Action<'a>, Failure> {
    let (mut lines, mut follow, mut stream) = (TAIL_LINES, false, LogStream::Stdout);
    let mut rest = flags.iter();
    while let Some(&flag) = rest.next() {
        match flag {
            "-f" | "--follow" => follow = true,
            "--stderr" => stream = LogStream::Stderr,
            "-n" | "--lines" => {
                let n = rest.next().ok_or_else(|| {
                    Failure::Usage("`-n` needs a number of lines: NAME tail -n 50".to_owned())
                })?;
                lines = n.parse().map_err(|_| {
                    Failure::Usage(format!("`{n}` is not a number of lines: NAME tail -n 50"))
                })?;
            }
            other => {
                return Err(Failure::Usage(format!(
                    "unknown tail option `{other}`; usage: NAME tail [-n N] [-f] [--stderr]"
                )));
            }
        }
    }
    Ok(Action::Tail {
        lines,
        follow,
        stream,
    })
}

/// The word of `choices` nearest `word`, if near enough to be a typo.
fn nearest<'c>(word: &str, choices: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    choices
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl<'a> Command<'a> {
    fn parse(words: &[&'a str]) -> Result<Self, Failure> {
        Ok(match *words {
            ["status"] => Self::Status,
            ["top"] => Self::Top,
            ["all"] => Self::List,
            ["all", action @ ("start" | "stop" | "restart")] => Self::All(action),
            ["all", "tail", "-f"] => Self::TailAll,
            ["log"] => Self::Log,
            ["log", "clear"] => Self::LogClear,
            ["reload"] => Self::Reload,
            ["upgrade"] => Self::Upgrade,
            ["adopt", pid] => Self::Adopt(pid_word(pid)?, None),
            ["adopt", pid, name] => Self::Adopt(pid_word(pid)?, Some(name)),
            ["add", file] => Self::Add(file),
            ["kill"] => Self::Kill(ShutdownMode::Detach),
            ["kill", "all"] => Self::Kill(ShutdownMode::Stop),
            _ => {
                // NAME... ACTION [ARGS]: the last word that starts an action.
                for at in (1..words.len()).rev() {
                    if ACTIONS.contains(&words[at])
                        && let Some(action) = Action::parse(&words[at..])?
                    {
                        return Ok(Self::Each(words[..at].to_vec(), action));
                    }
                }
                return Err(unknown(words));
            }
        })
    }
}

/// A usage error for words that are no command, with the nearest one.
fn unknown(words: &[&str]) -> Failure {
    let said = words.join(" ");
    let guess = match words {
        [] => None,
        [one] => nearest(one, COMMANDS.iter().copied()).map(str::to_owned),
        [names @ .., last] => {
            nearest(last, ACTIONS.iter().copied()).map(|a| format!("{} {a}", names.join(" ")))
        }
    };
    Failure::Usage(match guess {
        Some(guess) => format!("unknown command `{said}`; did you mean `{guess}`?"),
        None => format!("unknown command `{said}`; see zistcl --help"),
    })
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
        Command::Top => top_view(&s).await,
        Command::List => list(&s).await,
        Command::All(action) => all(&s, action).await,
        Command::TailAll => {
            let list = s.client.process_list().await.map_err(s.fail())?;
            let names: Vec<String> = list.into_iter().map(|i| i.name).collect();
            follow(&s, &names, LogStream::Stdout, 0, true).await
        }
        Command::Log => log(&s).await,
        Command::LogClear => log_clear(&s).await,
        Command::Reload => reload(&s).await,
        Command::Upgrade => upgrade(&s).await,
        Command::Adopt(pid, name) => adopt(&s, pid, name).await,
        Command::Add(file) => add(&s, file).await,
        Command::Kill(mode) => kill(&s, mode).await,
        Command::Each(patterns, action) => {
            let names = resolve(&s, &patterns).await?;
            each(&s, &names, action).await
        }
    }
}

/// The program names `patterns` give: a name as it is, a glob (`web*`,
/// `db?`, `[ab]*`) as the names it matches, each once, in order.
async fn resolve(s: &Session<'_>, patterns: &[&str]) -> Result<Vec<String>, Failure> {
    let is_glob = |p: &str| p.contains(['*', '?', '[']);
    if !patterns.iter().any(|p| is_glob(p)) {
        return Ok(patterns.iter().map(|p| (*p).to_owned()).collect());
    }
    let list = s.client.process_list().await.map_err(s.fail())?;
    let mut names: Vec<String> = Vec::new();
    for pattern in patterns {
        if !is_glob(pattern) {
            names.push((*pattern).to_owned());
            continue;
        }
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| Failure::Usage(format!("`{pattern}` is not a pattern: {e}")))?;
        let before = names.len();
        names.extend(
            list.iter()
                .filter(|i| glob.matches(&i.name))
                .map(|i| i.name.clone()),
        );
        if names.len() == before {
            return Err(Failure::Refused(format!("no program matches `{pattern}`")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// Does `action` to each program of `names`, in order; a refusal for one
/// is said and the others still done (exit 1 at the end).
async fn each(s: &Session<'_>, names: &[String], action: Action<'_>) -> Outcome {
    if let Action::Tail {
        lines,
        follow: true,
        stream,
    } = action
    {
        return self::follow(s, names, stream, lines, false).await;
    }
    if let Action::Tail { lines, stream, .. } = action {
        return history(s, names, stream, lines).await;
    }
    let mut infos: Vec<ProcessInfo> = Vec::new();
    let mut values: Vec<serde_json::Value> = Vec::new();
    let mut failed = None;
    for name in names {
        let done = match action {
            Action::Act(verb) => act(s, name, verb).await.map(|acted| {
                values.push(json(&acted));
                infos.extend(acted.infos().iter().cloned());
            }),
            Action::Scale(n) => s.client.process_scale(name.clone(), n).await.map(|scaled| {
                values.push(json(&scaled));
                infos.extend(scaled);
            }),
            Action::Signal(sig) => s
                .client
                .process_signal(name.clone(), sig.to_owned())
                .await
                .map(|acted| {
                    values.push(json(&acted));
                    infos.extend(acted.infos().iter().cloned());
                }),
            Action::Stats => s.client.process_stats(name.clone()).await.map(|stats| {
                values.push(json(&stats));
                if !s.cli.json {
                    println!(
                        "{name}: cpu {:.1}%  memory {} ({:.2}%)",
                        stats.cpu_percent,
                        bytes(stats.memory_bytes),
                        stats.memory_percent
                    );
                }
            }),
            Action::Logs(stream) => s
                .client
                .process_logs(name.clone(), stream, Some(zist_core::DEFAULT_LINES))
                .await
                .map(|lines| {
                    values.push(json(&lines));
                    if !s.cli.json {
                        lines.iter().for_each(|l| println!("{l}"));
                    }
                }),
            Action::Pid => s.client.process_info(name.clone()).await.map(|info| {
                values.push(json(&info.pid));
                match info.pid {
                    Some(pid) if !s.cli.json && names.len() == 1 => println!("{pid}"),
                    Some(pid) if !s.cli.json => println!("{name} {pid}"),
                    _ => {}
                }
                if info.pid.is_none() {
                    failed.get_or_insert(Failure::Refused(format!(
                        "{name} has no process ({})",
                        info.state.as_str()
                    )));
                }
            }),
            Action::Remove => s.client.process_remove(name.clone()).await.map(|done| {
                values.push(json(&done));
                if !s.cli.json {
                    println!("{name} removed");
                }
            }),
            Action::Info => s.client.process_info(name.clone()).await.map(|info| {
                values.push(json(&info));
                if !s.cli.json {
                    describe(&info);
                }
            }),
            Action::Tail { .. } => Ok(()),
        };
        if let Err(e) = done {
            let failure = did_you_mean(s, name, e).await;
            match failed {
                None => failed = Some(failure),
                Some(_) => {
                    let _ = failure.exit();
                }
            }
        }
    }
    if s.cli.json {
        match values.as_slice() {
            [one] => print(true, one, || {}),
            many => print(true, &many, || {}),
        }
    } else if !infos.is_empty() {
        rows(&infos);
    }
    failed.map_or(Ok(()), Err)
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// A failure for `name`; when zistd knows no such program, with the
/// nearest name it knows.
async fn did_you_mean(s: &Session<'_>, name: &str, error: ClientError) -> Failure {
    let unknown = matches!(&error, ClientError::Call(e) if e.code() == -32001);
    let failure = failure(&s.target.address, error);
    let (true, Failure::Refused(message)) = (unknown, &failure) else {
        return failure;
    };
    let Ok(list) = s.client.process_list().await else {
        return failure;
    };
    match nearest(name, list.iter().map(|i| i.name.as_str())) {
        Some(guess) => Failure::Refused(format!("{message}; did you mean `{guess}`?")),
        None => failure,
    }
}

/// `NAME info`: every field, one a line.
fn describe(info: &ProcessInfo) {
    let value = json(info);
    let Some(fields) = value.as_object() else {
        return;
    };
    for (key, value) in fields {
        match value {
            serde_json::Value::Object(streams) if key == "log" => {
                for (stream, counts) in streams {
                    let get = |k: &str| counts.get(k).cloned().unwrap_or_default();
                    println!(
                        "{:<12} {} ({} written, {} lost)",
                        format!("{stream}_log"),
                        get("file").as_str().unwrap_or("-"),
                        bytes(get("written").as_u64().unwrap_or(0)),
                        bytes(get("lost").as_u64().unwrap_or(0)),
                    );
                }
            }
            serde_json::Value::Null => println!("{key:<12} -"),
            serde_json::Value::String(text) => println!("{key:<12} {text}"),
            other => println!("{key:<12} {other}"),
        }
    }
}

/// `add FILE.toml`: a program file's keys, sent as `process.add`.
async fn add(s: &Session<'_>, file: &str) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
    let spec: toml::Table = text
        .parse()
        .map_err(|e| Failure::Usage(format!("{file}: {e}")))?;
    let acted = s.client.process_add(json(&spec)).await.map_err(s.fail())?;
    s.print(&acted, || rows(acted.infos()));
    Ok(())
}

/// The last `lines` lines of each program; with several, each line as
/// `NAME | line`.
async fn history(s: &Session<'_>, names: &[String], stream: LogStream, lines: usize) -> Outcome {
    for name in names {
        let got = match s
            .client
            .process_logs(name.clone(), stream, Some(lines))
            .await
        {
            Ok(got) => got,
            Err(e) => return Err(did_you_mean(s, name, e).await),
        };
        for line in got {
            if names.len() == 1 {
                println!("{line}");
            } else {
                println!("{name} | {line}");
            }
        }
    }
    Ok(())
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

/// `NAME status|start|stop|restart|detach`, `NAME restart --rolling`: the
/// program's info, or its instances'.
async fn act(s: &Session<'_>, name: &str, action: &str) -> Result<Acted, ClientError> {
    let name = name.to_owned();
    match action {
        "status" => s.client.process_info(name).await.map(Acted::One),
        "start" => s.client.process_start(name).await,
        "stop" => s.client.process_stop(name).await,
        "restart" => s.client.process_restart(name, None).await,
        "restart --rolling" => s.client.process_restart(name, Some(true)).await,
        _ => s.client.process_detach(name).await,
    }
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

/// `top`: the live view (see `top.rs`), until `q`, Ctrl-C, SIGTERM,
/// SIGHUP or a lost connection; the terminal is given back each way.
async fn top_view(s: &Session<'_>) -> Outcome {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Failure::Usage("top needs a terminal".to_owned()));
    }
    // Asked before the terminal is taken: a wrong address or token is
    // said as any other command says it.
    let rows = s.client.process_list_stats().await.map_err(s.fail())?;
    let mut terminal = ratatui::try_init()
        .map_err(|e| Failure::Usage(format!("cannot take the terminal: {e}")))?;
    let app = top::App {
        rows,
        ..top::App::default()
    };
    let outcome = top_loop(s, &mut terminal, app).await;
    ratatui::restore();
    outcome
}

async fn top_loop(
    s: &Session<'_>,
    terminal: &mut ratatui::DefaultTerminal,
    mut app: top::App,
) -> Outcome {
    use tokio::signal::unix::{SignalKind, signal};
    let lost =
        |e: ClientError| Failure::Connect(format!("lost zistd at {}: {e}", s.target.address));
    let (tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    top::read_keys(tx);
    let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
    ) else {
        return Err(Failure::Usage("cannot watch signals".to_owned()));
    };
    let mut tick = tokio::time::interval(top::REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        terminal
            .draw(|frame| top::draw(frame, &app))
            .map_err(|e| Failure::Usage(format!("cannot draw: {e}")))?;
        tokio::select! {
            _ = tick.tick() => {
                app.rows = s.client.process_list_stats().await.map_err(lost)?;
                if let Some((name, _)) = &app.log {
                    let name = name.clone();
                    let height = terminal.size().map_or(24, |r| usize::from(r.height));
                    let lines = s.client.process_logs(name.clone(), LogStream::Stdout, Some(height)).await;
                    app.log = Some((name, lines.unwrap_or_default()));
                }
            }
            key = keys.recv() => {
                let Some(key) = key else { return Ok(()) };
                match app.key(key) {
                    top::Ask::Quit => return Ok(()),
                    top::Ask::Act(verb, name) => {
                        app.status = match act(s, &name, verb).await {
                            Ok(_) => format!("{verb} {name}: done"),
                            Err(e) => format!("{verb} {name}: {e}"),
                        };
                        app.rows = s.client.process_list_stats().await.map_err(lost)?;
                    }
                    top::Ask::Follow(name) => {
                        let height = terminal.size().map_or(24, |r| usize::from(r.height));
                        match s.client.process_logs(name.clone(), LogStream::Stdout, Some(height)).await {
                            Ok(lines) => app.log = Some((name, lines)),
                            Err(e) => app.status = format!("{name}: {e}"),
                        }
                    }
                    top::Ask::Nothing => {}
                }
            }
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Whether a program in `state` has stopped for good (nothing restarts it).
fn ended(state: zist_core::ProcessState) -> bool {
    use zist_core::ProcessState as S;
    matches!(state, S::Stopped | S::Exited | S::Fatal | S::Detached)
}

/// How long lines are still taken after the last followed program stopped
/// (its last lines may come after the event).
const LAST_LINES: Duration = Duration::from_millis(300);

/// Follows the programs `names` live: one program's lines as they are,
/// several interleaved as `NAME | line`. Ends when every program followed
/// has stopped (unless `all`: `all tail -f` runs until zistd goes away),
/// when zistd goes away (exit 3), or on Ctrl-C.
async fn follow(
    s: &Session<'_>,
    names: &[String],
    stream: LogStream,
    history: usize,
    all: bool,
) -> Outcome {
    let target = &s.target;
    if target.unix.is_some() {
        return Err(Failure::Usage(
            "following a log goes over TCP: zistcl HOST:PORT TOKEN NAME tail -f".to_owned(),
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
    // Events first: a stop after the check below is still seen.
    let mut events = ws.events_subscribe().await.map_err(s.fail())?;
    let mut lines = tokio_stream::StreamMap::new();
    let mut running = std::collections::BTreeSet::new();
    for name in names {
        let subscription = match ws.process_follow(name.clone(), stream).await {
            Ok(sub) => sub,
            Err(e) => return Err(did_you_mean(s, name, e).await),
        };
        lines.insert(name.clone(), subscription);
        let info = s
            .client
            .process_info(name.clone())
            .await
            .map_err(s.fail())?;
        if !ended(info.state) {
            running.insert(name.clone());
        }
    }
    let prefix = all || names.len() > 1;
    use tokio_stream::StreamExt;
    let show = |name: &str, line: &str| {
        if prefix {
            println!("{name} | {line}");
        } else {
            println!("{line}");
        }
    };
    if history > 0 {
        // Asked on the same connection once following: a line is then in
        // the history, or comes live after it, or both (shown once).
        let mut pasts = Vec::new();
        for name in names {
            let past = ws
                .process_logs(name.clone(), stream, Some(history))
                .await
                .map_err(s.fail())?;
            pasts.push(past);
        }
        // What came live meanwhile (what is still on its way comes after).
        let mut early: std::collections::HashMap<String, Vec<String>> = Default::default();
        let until = tokio::time::Instant::now() + Duration::from_millis(20);
        while let Ok(Some((name, Ok(line)))) = tokio::time::timeout_at(until, lines.next()).await {
            early.entry(name).or_default().push(line);
        }
        for (name, past) in names.iter().zip(pasts) {
            past.iter().for_each(|line| show(name, line));
            let live = early.remove(name).unwrap_or_default();
            let shown = (0..=live.len().min(past.len()))
                .rev()
                .find(|&k| past.ends_with(&live[..k]))
                .unwrap_or(0);
            live[shown..].iter().for_each(|line| show(name, line));
        }
    }
    let mut closing: Option<tokio::time::Instant> = None;
    let said_stopped = |names: &[String]| {
        let which = if names.len() == 1 {
            format!("{} has stopped", names[0])
        } else {
            "every program followed has stopped".to_owned()
        };
        eprintln!("zistcl: {which}");
    };
    if !all && running.is_empty() {
        said_stopped(names);
        return Ok(());
    }
    loop {
        let until =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep_until(until), if closing.is_some() => {
                said_stopped(names);
                return Ok(());
            }
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if !all && lines.contains_key(&event.name) {
                        if ended(event.to) {
                            running.remove(&event.name);
                        } else {
                            running.insert(event.name.clone());
                            closing = None;
                        }
                        if running.is_empty() && closing.is_none() {
                            closing = Some(tokio::time::Instant::now() + LAST_LINES);
                        }
                    }
                }
                _ => return Err(Failure::Connect(format!("zistd at {} went away", target.address))),
            },
            line = lines.next() => match line {
                Some((name, Ok(line))) => {
                    show(&name, &line);
                    if let Some(at) = closing.as_mut() {
                        *at = tokio::time::Instant::now() + LAST_LINES;
                    }
                }
                Some((_, Err(e))) => return Err(Failure::Connect(format!("the stream broke: {e}"))),
                None => return Err(Failure::Connect(format!("zistd at {} went away", target.address))),
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

/// The terminal's width when stdout is one (a pipe gets whole lines).
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    ratatui::crossterm::terminal::size()
        .ok()
        .map(|(columns, _)| usize::from(columns))
}

/// `text` cut to `room` characters, with `…` when cut.
fn cut(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(room.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A table like `supervisorctl status`; a program that does not run also
/// shows its `message` (why), cut to the terminal's width.
fn table(list: &[ProcessInfo]) {
    let width = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    fn says(info: &ProcessInfo) -> Option<&str> {
        info.message
            .as_deref()
            .filter(|_| info.state != zist_core::ProcessState::Running)
    }
    let messages = list.iter().any(|i| says(i).is_some());
    // NAME, STATE, PID, UPTIME, RESTARTS and the spaces between.
    let used = width + 2 + 10 + 7 + 2 + 11 + 2 + 8 + 2;
    let room = terminal_width().map(|w| w.saturating_sub(used).max(10));
    println!(
        "{:<width$}  {:<9} {:>7}  {:>11}  {:>8}{}",
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        if messages { "  MESSAGE" } else { "" }
    );
    for info in list {
        let pid = info.pid.map_or("-".to_owned(), |p| p.to_string());
        let up = if info.is_alive() {
            uptime(info.uptime_secs)
        } else {
            "-".to_owned()
        };
        let message = says(info).map_or(String::new(), |m| {
            format!(
                "  {}",
                room.map_or_else(|| m.to_owned(), |room| cut(m, room))
            )
        });
        println!(
            "{:<width$}  {:<9} {:>7}  {:>11}  {:>8}{message}",
            info.name,
            info.state.as_str(),
            pid,
            up,
            info.restarts
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_cut_to_the_room_left_with_an_ellipsis() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("exactly ten", 11), "exactly ten");
        assert_eq!(
            cut("cannot run /nonexistent: no such file", 12),
            "cannot run …"
        );
        assert_eq!(cut("ünïcödé text", 5).chars().count(), 5);
    }

    #[test]
    fn typos_get_the_nearest_word_and_nonsense_gets_none() {
        assert_eq!(nearest("strat", ACTIONS.iter().copied()), Some("start"));
        assert_eq!(nearest("stauts", COMMANDS.iter().copied()), Some("status"));
        assert_eq!(nearest("zzzzqqq", ACTIONS.iter().copied()), None);
    }
}
