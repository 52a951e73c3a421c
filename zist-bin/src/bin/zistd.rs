//! zistd, the zist daemon: runs the programs of a config and serves the JSON-RPC API (docs/reference.md §6.1).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use zist_core::{Config, ShutdownMode, Supervisor};
use zist_rpc::{DaemonControl, ServeOptions, rpc_module, serve};

/// zistd's own log lines kept for `daemon.log`.
const LOG_LINES: usize = 10_000;

#[derive(Parser)]
#[command(name = "zistd", version, about = "The zist process supervisor daemon")]
struct Cli {
    /// The daemon config file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "/etc/zist/conf.toml"
    )]
    config: PathBuf,
    /// PEM certificate for Protocol = "https" (overrides CertFile).
    #[arg(long)]
    certfile: Option<PathBuf>,
    /// PEM key for Protocol = "https" (overrides KeyFile).
    #[arg(long)]
    keyfile: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random token (32 bytes, URL-safe base64).
    Generate,
    /// Write DIR/conf.toml (with a fresh token, mode 0600) and DIR/conf.d/.
    Install {
        /// Where to install.
        #[arg(long, default_value = "/etc/zist")]
        prefix: PathBuf,
    },
    /// Validate the config, print every problem, exit 1 if there is any error.
    Check,
}

fn main() -> ExitCode {
    // The holder of programs' pipes is this executable, started again.
    zist_core::holder::run_if_asked();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate) => match new_token() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("cannot read random bytes: {e}")),
        },
        Some(Command::Install { prefix }) => install(&prefix),
        Some(Command::Check) => check(&cli.config),
        None => run(cli),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("zistd: {message}");
    ExitCode::FAILURE
}

fn new_token() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn install(prefix: &Path) -> ExitCode {
    use std::os::unix::fs::OpenOptionsExt;
    let conf = prefix.join("conf.toml");
    if conf.exists() {
        return fail(&format!(
            "{} exists already; remove it first or choose another --prefix",
            conf.display()
        ));
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot read random bytes: {e}")),
    };
    let text = format!(
        "# zistd config; programs go in conf.d/, one per *.toml file.\nConfdir = \"conf.d\"\nWeb = true\nProtocol = \"http\"\nHTTPPort = 7000\nRPCPort = 9876\nBind = \"127.0.0.1\"\nToken = \"{token}\"\nLogDir = \"logs\"\n"
    );
    let written = std::fs::create_dir_all(prefix.join("conf.d")).and_then(|()| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf)?;
        file.write_all(text.as_bytes())
    });
    match written {
        Ok(()) => {
            println!(
                "wrote {} (token inside, mode 0600) and {}/",
                conf.display(),
                prefix.join("conf.d").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot write {}: {e}", conf.display())),
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok, {} programs", path.display(), config.programs.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            ExitCode::FAILURE
        }
    }
}

/// zistd's own log: every line to stdout, to DaemonLog and to a ring for `daemon.log`.
#[derive(Clone)]
struct DaemonLog {
    ring: Arc<Mutex<VecDeque<String>>>,
    file: Arc<Mutex<Option<std::fs::File>>>,
}

impl DaemonLog {
    fn new(path: &Path) -> Self {
        let file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            });
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "zistd: cannot open DaemonLog {}: {e}; logging to stdout only",
                    path.display()
                );
                None
            }
        };
        Self {
            ring: Arc::new(Mutex::new(VecDeque::new())),
            file: Arc::new(Mutex::new(file)),
        }
    }

    fn last(&self, n: usize) -> Vec<String> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Write for DaemonLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stdout().lock().write_all(buf);
        if let Some(file) = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let _ = file.write_all(buf);
        }
        let text = String::from_utf8_lossy(buf);
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        for line in text.lines() {
            ring.push_back(line.to_owned());
        }
        while ring.len() > LOG_LINES {
            ring.pop_front();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DaemonLog {
    type Writer = DaemonLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What the RPC server may ask of this daemon.
struct Daemon {
    log: DaemonLog,
    exit: mpsc::UnboundedSender<ShutdownMode>,
}

impl DaemonControl for Daemon {
    fn log(&self, lines: usize) -> Vec<String> {
        self.log.last(lines)
    }
    fn clear_log(&self) {
        self.log.clear();
    }
    fn request_exit(&self, mode: ShutdownMode) {
        let _ = self.exit.send(mode);
    }
}

fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            return ExitCode::FAILURE;
        }
    };
    // https: a missing or bad certificate is a start-up error, never a
    // fallback to plain HTTP.
    let tls = match config
        .daemon
        .tls_files(cli.certfile.as_deref(), cli.keyfile.as_deref())
    {
        Ok(None) => None,
        Ok(Some((cert, key))) => match zist_core::net::tls_config(&cert, &key) {
            Ok(tls) => Some(tls),
            Err(e) => return fail(&e),
        },
        Err(issue) => return fail(&issue.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(serve_daemon(config, tls))
}

async fn serve_daemon(config: Config, tls: Option<Arc<rustls::ServerConfig>>) -> ExitCode {
    let log = DaemonLog::new(&config.daemon.daemon_log);
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_target(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let room = zist_core::program_room();
    let limit = zist_core::descriptor_limit();
    if (config.programs.len() as u64) > room {
        tracing::warn!(
            "the open-file limit ({limit}) leaves room for about {room} programs, and the config has {}; the rest will be fatal until the limit is raised (ulimit -n, LimitNOFILE=)",
            config.programs.len()
        );
    } else {
        tracing::info!("open-file limit {limit}: room for about {room} programs");
    }
    let options = zist_core::SupervisorOptions {
        holder: true,
        ..zist_core::SupervisorOptions::for_config(&config)
    };
    let supervisor = Supervisor::start_config(options, &config).await;
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon { log, exit: exit_tx });
    // The token only ever goes to the server's gate; it is never logged.
    let token = config.daemon.token.clone();
    let module = rpc_module(supervisor.clone(), daemon);
    let rpc_addr = config.daemon.rpc_addr();
    let http_tls = tls.clone();
    let options = ServeOptions {
        tls,
        ..ServeOptions::default()
    };
    let (rpc_bound, server) = match serve(rpc_addr, &token, module, options).await {
        Ok(s) => s,
        Err(e) => {
            supervisor.shutdown(ShutdownMode::Stop).await;
            return fail(&format!("cannot listen for JSON-RPC on {rpc_addr}: {e}"));
        }
    };
    // The HTTP API (docs/reference.md §5) when Web = true, over the same protocol.
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_bound = if let Some(http_addr) = config.daemon.http_addr() {
        let stopped = async {
            let _ = http_stopped.await;
        };
        let options = zist_http::HttpOptions {
            tls: http_tls,
            ..zist_http::HttpOptions::default()
        };
        match zist_http::serve(http_addr, &token, supervisor.clone(), options, stopped).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                supervisor.shutdown(ShutdownMode::Stop).await;
                return fail(&format!("cannot listen for HTTP on {http_addr}: {e}"));
            }
        }
    } else {
        None
    };
    tracing::info!(rpc = %rpc_bound, http = ?http_bound, programs = config.programs.len(), "zistd {} started", zist_core::VERSION);
    {
        let mut out = std::io::stdout().lock();
        // The keys in docs/reference.md §6.1's order; `http` is null without the HTTP API.
        let http = http_bound.map_or(serde_json::Value::Null, |a| {
            serde_json::Value::String(a.to_string())
        });
        let _ = writeln!(
            out,
            "READY {{\"pid\": {}, \"rpc\": {}, \"http\": {http}}}",
            std::process::id(),
            serde_json::Value::String(rpc_bound.to_string())
        );
        let _ = out.flush();
    }
    let (mut term, mut int, mut quit, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(q), Ok(h)) => (t, i, q, h),
        _ => {
            supervisor.shutdown(ShutdownMode::Stop).await;
            return fail("cannot install signal handlers");
        }
    };
    let mode = loop {
        tokio::select! {
            _ = term.recv() => break ShutdownMode::Stop,
            _ = int.recv() => break ShutdownMode::Stop,
            _ = quit.recv() => break ShutdownMode::Stop,
            _ = hup.recv() => match supervisor.reload_config().await {
                Ok(report) => tracing::info!(?report, "reloaded on SIGHUP"),
                Err(e) => tracing::warn!("{e}"),
            },
            Some(mode) = exit_rx.recv() => break mode,
        }
    };
    tracing::info!(?mode, "shutting down");
    supervisor.shutdown(mode).await;
    // Stop taking connections; answers already under way (daemon.shutdown's
    // own `true`) still go out.
    let _ = server.stop();
    let _ = http_stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server.stopped()).await;
    tracing::info!("zistd exits");
    ExitCode::SUCCESS
}
