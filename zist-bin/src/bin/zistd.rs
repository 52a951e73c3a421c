//! zistd, the zist daemon: runs the programs of a config and serves the JSON-RPC API (docs/reference.md §6.1).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use zist_core::upgrade::{Handover, UpgradeReport};
use zist_core::{Config, ShutdownMode, Supervisor};
use zist_rpc::{DaemonControl, ServeOptions, rpc_module, serve_on};

/// Where `zistd install` writes by default.
const DEFAULT_PREFIX: &str = "/etc/zist";

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
    /// Also print every line of every program on stdout as `NAME | line`
    /// (the daemon key Console).
    #[arg(long)]
    console: bool,
    /// Resume from the handover an upgrade in place left (set by zistd itself).
    #[arg(long, hide = true)]
    upgrade_from: Option<PathBuf>,
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
        #[arg(long, default_value = DEFAULT_PREFIX)]
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
    // The system install keeps its state where state belongs
    // (docs/reference.md §8); another prefix keeps it beside its config.
    let state_dir = if prefix == Path::new(DEFAULT_PREFIX) {
        "/var/lib/zist"
    } else {
        "state"
    };
    let text = format!(
        "# zistd config; programs go in conf.d/, one per *.toml file.\nConfdir = \"conf.d\"\nWeb = true\nProtocol = \"http\"\nHTTPPort = 7000\nRPCPort = 9876\nBind = \"127.0.0.1\"\nToken = \"{token}\"\nLogDir = \"logs\"\nStateDir = \"{state_dir}\"\n"
    );
    let written = std::fs::create_dir_all(prefix.join("conf.d")).and_then(|()| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf)?;
        file.write_all(text.as_bytes())
    });
    if let Err(e) = written {
        return fail(&format!("cannot write {}: {e}", conf.display()));
    }
    println!(
        "wrote {} (token inside, mode 0600) and {}/",
        conf.display(),
        prefix.join("conf.d").display()
    );
    // The systemd unit: with the system's units for the default prefix,
    // beside the config otherwise (to link or copy where wanted).
    let unit = if prefix == Path::new(DEFAULT_PREFIX) {
        PathBuf::from("/etc/systemd/system/zistd.service")
    } else {
        prefix.join("zistd.service")
    };
    if unit.exists() {
        println!("kept {} (it exists already)", unit.display());
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/zistd"));
    let conf = std::path::absolute(&conf).unwrap_or(conf);
    let written = unit
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&unit, unit_file(&exe, &conf)));
    match written {
        Ok(()) => {
            println!("wrote {}", unit.display());
            if prefix == Path::new(DEFAULT_PREFIX) {
                println!("start it with: systemctl daemon-reload && systemctl enable --now zistd");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot write {}: {e}", unit.display())),
    }
}

/// The systemd unit that runs `exe` on `conf` (docs/reference.md §11).
fn unit_file(exe: &Path, conf: &Path) -> String {
    format!(
        "[Unit]
Description=zist process supervisor
After=network.target

[Service]
# zistd says READY=1 once it listens, and RELOADING=1/READY=1 around a reload.
Type=notify
ExecStart=\"{exe}\" -c \"{conf}\"
ExecReload=/bin/kill -HUP $MAINPID
# Only zistd is signalled: its programs are stopped by zistd on a stop, and
# re-adopted by the next zistd after a crash or a `systemctl kill`.
KillMode=process
Restart=on-failure
# zistd sends WATCHDOG=1 every 15 s.
WatchdogSec=30s
# Time for every program's StopTimeout at a stop.
TimeoutStopSec=120s
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
",
        exe = exe.display(),
        conf = conf.display(),
    )
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
    fn new(path: &Path, no_symlink: bool) -> Self {
        let file = path
            .parent()
            .map_or(Ok(()), zist_core::logs::make_dir)
            .and_then(|()| zist_core::logs::open_append(path, no_symlink));
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
        // Never blocks: a stdout nobody reads drops lines, counted.
        zist_core::console::stdout().write(buf);
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
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DaemonLog {
    type Writer = DaemonLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Why the daemon's main loop ends.
enum Exit {
    Shutdown(ShutdownMode),
    /// Replace this executable with the new one (checked already).
    Upgrade,
}

/// What the RPC server may ask of this daemon.
struct Daemon {
    log: DaemonLog,
    exit: mpsc::UnboundedSender<Exit>,
    config_file: PathBuf,
}

impl Daemon {
    /// Checks the executable an upgrade would switch to.
    fn check_upgrade(&self) -> zist_core::Result<UpgradeReport> {
        let exe = zist_core::upgrade::started_from().map_err(|e| {
            zist_core::Error::UpgradeRefused(format!(
                "cannot tell where zistd was started from: {e}"
            ))
        })?;
        zist_core::upgrade::check_new_executable(&exe, &self.config_file)
    }
}

impl DaemonControl for Daemon {
    fn log(&self, lines: usize) -> Vec<String> {
        self.log.last(lines)
    }
    fn clear_log(&self) {
        self.log.clear();
    }
    fn request_exit(&self, mode: ShutdownMode) {
        let _ = self.exit.send(Exit::Shutdown(mode));
    }
    fn upgrade(&self) -> zist_core::Result<UpgradeReport> {
        let report = self.check_upgrade()?;
        tracing::info!(from = %report.from, to = %report.to, "upgrading in place");
        let _ = self.exit.send(Exit::Upgrade);
        Ok(report)
    }
}

/// Hands every program and socket over and execs the executable zistd was
/// started from, with the same arguments; returns only on failure.
async fn upgrade(
    supervisor: &Supervisor,
    kept: Vec<(&str, std::io::Result<std::net::TcpListener>)>,
) -> std::io::Error {
    let mut handover = supervisor.freeze().await;
    for (name, socket) in &kept {
        match socket {
            Ok(socket) => {
                if let Err(e) = handover.add_listener(name, socket) {
                    return e;
                }
            }
            Err(e) => return std::io::Error::new(e.kind(), e.to_string()),
        }
    }
    let exe = match zist_core::upgrade::started_from() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let Some(dir) = supervisor.state_dir() else {
        return std::io::Error::other("no StateDir to hand over through");
    };
    let path = Handover::path_in(&dir);
    let mut command = std::process::Command::new(exe);
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--upgrade-from" {
            args.next();
        } else {
            command.arg(arg);
        }
    }
    command.arg("--upgrade-from").arg(&path);
    tracing::info!("zistd {} hands over", zist_core::VERSION);
    zist_core::console::stdout().flush(std::time::Duration::from_secs(1));
    handover.exec(&path, command)
}

/// Keeps systemd's status line (`systemctl status`) current: programs and
/// how many run, after each burst of changes; and sends `WATCHDOG=1` at
/// half of `WATCHDOG_USEC`, from the runtime, so a stuck zistd starves it.
fn tell_systemd(systemd: Arc<zist_core::systemd::Systemd>, supervisor: Supervisor) {
    use tokio_stream::StreamExt;
    if let Some(every) = zist_core::systemd::Systemd::watchdog_every() {
        let systemd = systemd.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                systemd.watchdog();
            }
        });
    }
    tokio::spawn(async move {
        let mut events = supervisor.events();
        let mut said = String::new();
        loop {
            let status = format!(
                "{} programs, {} running",
                supervisor.len(),
                supervisor.running()
            );
            if status != said {
                systemd.status(&status);
                said = status;
            }
            if events.next().await.is_none() {
                return;
            }
            // A burst of changes (a start of everything) is told once.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            while let Ok(Some(_)) =
                tokio::time::timeout(std::time::Duration::ZERO, events.next()).await
            {}
        }
    });
}

fn run(cli: Cli) -> ExitCode {
    let mut config = match Config::load(&cli.config) {
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
    config.daemon.console |= cli.console;
    let code = runtime.block_on(serve_daemon(config, tls, cli.upgrade_from));
    // What waits for stdout goes out first (unless nobody reads it).
    zist_core::console::stdout().flush(std::time::Duration::from_secs(1));
    code
}

async fn serve_daemon(
    mut config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
    upgrade_from: Option<PathBuf>,
) -> ExitCode {
    // In LogDir (the default), no symlink is followed; a path given elsewhere
    // (DaemonLog = "/dev/stdout") is opened as given.
    let log = DaemonLog::new(
        &config.daemon.daemon_log,
        config.daemon.daemon_log.starts_with(&config.daemon.log_dir),
    );
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
    let mut handover = upgrade_from.and_then(|path| match Handover::load(&path) {
        Ok(handover) => {
            tracing::info!(from = %handover.from, programs = handover.len(), "resuming after an upgrade in place");
            Some(handover)
        }
        Err(e) => {
            tracing::error!("cannot read the upgrade handover {}: {e}; starting as new", path.display());
            None
        }
    });
    let listeners = handover
        .as_mut()
        .map(|h| (h.take_listener("rpc"), h.take_listener("http")));
    // Handlers before any program starts: a signal sent while they start
    // (Ctrl-C, a service manager's stop) is handled once they have, never
    // left to its default action, which would end zistd and leave them
    // running.
    let (mut term, mut int, mut quit, mut hup, mut usr2) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(t), Ok(i), Ok(q), Ok(h), Ok(u)) => (t, i, q, h, u),
        _ => return fail("cannot install signal handlers"),
    };
    let supervisor = Supervisor::resume_config(options, &config, handover).await;
    // Each program keeps its own spec now; a reload reads the file anew.
    let programs = std::mem::take(&mut config.programs).len();
    zist_core::memory::release_free_memory();
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let daemon = Arc::new(Daemon {
        log,
        exit: exit_tx,
        config_file: config.daemon.file.clone(),
    });
    let (rpc_listener, http_listener) = listeners.unwrap_or((None, None));
    // The tokens only ever go to the servers' gates; they are never logged.
    let access = config.daemon.access();
    let allowed_hosts = config.daemon.allowed_hosts.clone();
    let module = rpc_module(supervisor.clone(), daemon.clone());
    let rpc_addr = config.daemon.rpc_addr();
    let http_tls = tls.clone();
    // Both servers count the clients they took, so an upgrade answers them all first.
    let in_flight = zist_core::net::InFlight::default();
    let options = ServeOptions {
        tls,
        in_flight: in_flight.clone(),
        allowed_hosts: allowed_hosts.clone(),
        ..ServeOptions::default()
    };
    let rpc_socket = match rpc_listener.map_or_else(|| std::net::TcpListener::bind(rpc_addr), Ok) {
        Ok(socket) => socket,
        Err(e) => {
            supervisor.shutdown(ShutdownMode::Stop).await;
            return fail(&format!("cannot listen for JSON-RPC on {rpc_addr}: {e}"));
        }
    };
    // Kept for an upgrade: the next executable serves the same socket.
    let mut kept = vec![("rpc", rpc_socket.try_clone())];
    let (rpc_bound, server) = match serve_on(rpc_socket, access.clone(), module, options) {
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
            in_flight: in_flight.clone(),
            allowed_hosts,
            ..zist_http::HttpOptions::default()
        };
        let socket = http_listener.map_or_else(|| std::net::TcpListener::bind(http_addr), Ok);
        let served = socket.and_then(|socket| {
            kept.push(("http", socket.try_clone()));
            zist_http::serve_on(socket, access.clone(), supervisor.clone(), options, stopped)
        });
        match served {
            Ok(bound) => Some(bound),
            Err(e) => {
                supervisor.shutdown(ShutdownMode::Stop).await;
                return fail(&format!("cannot listen for HTTP on {http_addr}: {e}"));
            }
        }
    } else {
        None
    };
    // The local socket (docs/reference.md §10): never a reason not to start.
    let _local = config.daemon.socket.as_ref().and_then(|path| {
        let options = ServeOptions {
            in_flight: in_flight.clone(),
            ..ServeOptions::default()
        };
        let module = rpc_module(supervisor.clone(), daemon.clone());
        match zist_rpc::serve_unix(path, config.daemon.socket_group.as_deref(), module, options) {
            Ok(served) => {
                tracing::info!("JSON-RPC on the local socket {}", path.display());
                Some(served)
            }
            Err(e) => {
                tracing::warn!("no local socket at {}: {e}", path.display());
                None
            }
        }
    });
    zist_core::upgrade::unblock_signals();
    tracing::info!(rpc = %rpc_bound, http = ?http_bound, programs, "zistd {} started", zist_core::VERSION);
    {
        // The keys in docs/reference.md §6.1's order; `http` is null without the HTTP API.
        let http = http_bound.map_or(serde_json::Value::Null, |a| {
            serde_json::Value::String(a.to_string())
        });
        let ready = format!(
            "READY {{\"pid\": {}, \"rpc\": {}, \"http\": {http}}}\n",
            std::process::id(),
            serde_json::Value::String(rpc_bound.to_string())
        );
        // Through the console, in order with the log lines; never dropped.
        zist_core::console::stdout().write_always(ready.as_bytes());
    }
    // Under systemd (Type=notify): READY=1 now, STATUS= on changes, the
    // watchdog (docs/reference.md §11).
    let systemd = zist_core::systemd::Systemd::from_env().map(Arc::new);
    if let Some(systemd) = &systemd {
        systemd.ready();
        tell_systemd(systemd.clone(), supervisor.clone());
    }
    release_start_up_pages_soon();
    release_after_serving(in_flight.clone());
    let mode = loop {
        tokio::select! {
            _ = term.recv() => break ShutdownMode::Stop,
            _ = int.recv() => break ShutdownMode::Stop,
            _ = quit.recv() => break ShutdownMode::Stop,
            _ = hup.recv() => {
                if let Some(systemd) = &systemd {
                    systemd.reloading();
                }
                match supervisor.reload_config().await {
                    Ok(report) => tracing::info!(?report, "reloaded on SIGHUP"),
                    Err(e) => tracing::warn!("{e}"),
                }
                release_start_up_pages_soon();
                if let Some(systemd) = &systemd {
                    systemd.ready();
                }
            }
            _ = usr2.recv() => {
                let control = daemon.clone();
                match tokio::task::spawn_blocking(move || control.upgrade()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("SIGUSR2: {e}"),
                    Err(e) => tracing::error!("SIGUSR2: {e}"),
                }
            }
            Some(exit) = exit_rx.recv() => match exit {
                Exit::Shutdown(mode) => break mode,
                Exit::Upgrade => {
                    // Stop taking connections (the sockets stay open: clients
                    // wait in their queue for the new executable); answers
                    // under way, the upgrade's own among them, still go out.
                    let _ = server.stop();
                    let _ = http_stop.send(());
                    // Every client taken is answered first (bounded: a
                    // client that connected and says nothing is not waited for).
                    if !in_flight.settled(std::time::Duration::from_secs(2)).await {
                        tracing::warn!("{} clients still unanswered at the upgrade", in_flight.count());
                    }
                    // The next executable, same pid (MAINPID), says READY=1.
                    if let Some(systemd) = &systemd {
                        systemd.reloading();
                    }
                    let error = upgrade(&supervisor, kept).await;
                    // The programs were handed over and still run: the next
                    // zistd on this StateDir adopts them.
                    return fail(&format!("the upgrade failed after the hand-over: {error}; start zistd again to adopt the programs"));
                }
            },
        }
    };
    tracing::info!(?mode, "shutting down");
    if let Some(systemd) = &systemd {
        systemd.stopping();
    }
    supervisor.shutdown(mode).await;
    // Stop taking connections; answers already under way (daemon.shutdown's
    // own `true`) still go out.
    let _ = server.stop();
    let _ = http_stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server.stopped()).await;
    tracing::info!("zistd exits");
    ExitCode::SUCCESS
}

/// How long the servers take no connection before zistd gives back what
/// serving used: 2.5 dashboard refreshes.
const SERVING_SETTLES: std::time::Duration = std::time::Duration::from_secs(5);

/// Gives back, each time the servers have been serving and then take no
/// connection for [`SERVING_SETTLES`], the memory serving left behind: the
/// code of the paths that answered (read again from the page cache when
/// they next run) and the heap the answers freed. A thousand programs'
/// listings answered to 50 clients at once leave about 3 MiB of code and
/// 2 MiB of heap.
fn release_after_serving(in_flight: zist_core::net::InFlight) {
    tokio::spawn(async move {
        loop {
            in_flight.served_then_quiet(SERVING_SETTLES).await;
            let began = std::time::Instant::now();
            zist_core::memory::release_free_memory();
            let bytes = zist_core::memory::release_start_up_pages();
            tracing::debug!(bytes, took = ?began.elapsed(), "serving settled: code pages and freed heap let go");
        }
    });
}

/// A second from now, once the programs started have settled, lets go of
/// the code that starting ran (README: Library use, Performance): zistd
/// maps no file but its executable and C runtime.
fn release_start_up_pages_soon() {
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        // About a millisecond, once: not worth a blocking thread of its own.
        let began = std::time::Instant::now();
        let bytes = zist_core::memory::release_start_up_pages();
        tracing::info!(bytes, took = ?began.elapsed(), "start-up code pages let go");
    });
}
