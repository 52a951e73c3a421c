//! zistcl, the command-line client of zistd (SPEC §6.2).
//!
//! Exit codes: 0 done, 1 the daemon refused, 2 usage error, 3 cannot
//! connect or not authorised. Errors go to stderr as one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jsonrpsee::core::client::{Error as ClientError, SubscriptionClientT};
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClientBuilder;
use serde::Serialize;
use zist_core::{LogStream, ProcessInfo, ShutdownMode};
use zist_rpc::ZistApiClient;

#[derive(Parser)]
#[command(
    name = "zistcl",
    version,
    about = "Drive zistd: zistcl HOST:PORT TOKEN COMMAND, or zistcl -l COMMAND",
    after_help = "COMMAND:\n  status                    is zistd alive\n  all                       every program (name, state, pid, uptime, restarts)\n  log | log clear           zistd's own log / clear it\n  reload                    reload the config, print what changed\n  kill | kill all           exit zistd leaving programs running / stopping them\n  NAME status|start|stop|restart|detach|stats|stdout|stderr\n  NAME stdout -f | NAME stderr -f   follow live\n  all start|stop|restart    every program\n\nTOKEN `-` is read from ZIST_TOKEN."
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
    address: String,
    token: String,
    https: bool,
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
        let token = config.daemon.token;
        let host = match config.daemon.bind {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let address = std::net::SocketAddr::new(host, config.daemon.rpc_port).to_string();
        let https = config.daemon.protocol == zist_core::Protocol::Https;
        return Ok((
            Target {
                address,
                token,
                https,
            },
            cli.words.clone(),
        ));
    }
    let [address, token, command @ ..] = cli.words.as_slice() else {
        return Err(Failure::Usage(
            "usage: zistcl HOST:PORT TOKEN COMMAND (or zistcl -l COMMAND); see zistcl --help"
                .to_owned(),
        ));
    };
    let token = if token == "-" {
        std::env::var("ZIST_TOKEN")
            .map_err(|_| Failure::Usage("TOKEN is `-` but ZIST_TOKEN is not set".to_owned()))?
    } else {
        token.clone()
    };
    let https = address.starts_with("https://");
    let address = address
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    Ok((
        Target {
            address,
            token,
            https,
        },
        command.to_vec(),
    ))
}

/// With `--cacert`, a TLS client trusting that certificate; otherwise the
/// system's roots (jsonrpsee's default). An untrusted certificate fails the
/// connection (exit 3), never a downgrade.
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
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Failure::Usage(format!("cannot read --cacert {}: {e}", path.display())))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Failure::Usage(format!("--cacert {}: {e}", path.display())))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Usage(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
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

/// Maps a client error to zistcl's exit codes.
fn failure(address: &str, error: ClientError) -> Failure {
    match error {
        ClientError::Call(e) => Failure::Refused(e.message().to_owned()),
        other => {
            let text = other.to_string();
            if text.contains("401") {
                Failure::Connect(format!(
                    "not authorised by zistd at {address}: check the token"
                ))
            } else {
                Failure::Connect(format!(
                    "cannot reach zistd at {address} ({text}); is it running?"
                ))
            }
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let (target, command) = target(&cli)?;
    let mut builder = HttpClientBuilder::default()
        .set_headers(headers(&target.token)?)
        .request_timeout(Duration::from_secs(120));
    if let Some(tls) = client_tls(&cli, &target)? {
        builder = builder.with_custom_cert_store(tls);
    }
    let scheme = if target.https { "https" } else { "http" };
    let client = builder
        .build(format!("{scheme}://{}", target.address))
        .map_err(|e| Failure::Usage(format!("bad address {}: {e}", target.address)))?;
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let json = cli.json;
    let fail = |e| failure(&target.address, e);
    match words.as_slice() {
        ["status"] => {
            let status = client.daemon_status().await.map_err(fail)?;
            print(json, &status, || {
                println!(
                    "zistd {} is alive: pid {}, up {}, {} programs",
                    status.version,
                    status.pid,
                    uptime(status.uptime_secs),
                    status.programs
                )
            });
        }
        ["all"] => {
            let list = client.process_list().await.map_err(fail)?;
            print(json, &list, || table(&list));
        }
        ["all", action @ ("start" | "stop" | "restart")] => {
            let list = match *action {
                "start" => client.process_start_all().await,
                "stop" => client.process_stop_all().await,
                _ => client.process_restart_all().await,
            }
            .map_err(fail)?;
            print(json, &list, || table(&list));
        }
        ["log"] => {
            let lines = client.daemon_log(Some(1000)).await.map_err(fail)?;
            print(json, &lines, || lines.iter().for_each(|l| println!("{l}")));
        }
        ["log", "clear"] => {
            let done = client.daemon_clear_log().await.map_err(fail)?;
            print(json, &done, || println!("zistd's log cleared"));
        }
        ["reload"] => {
            let report = client.daemon_reload().await.map_err(fail)?;
            print(json, &report, || {
                for (what, names) in [
                    ("added", &report.added),
                    ("removed", &report.removed),
                    ("changed", &report.changed),
                    ("unchanged", &report.unchanged),
                ] {
                    println!(
                        "{what:<10} {}",
                        if names.is_empty() {
                            "-".to_owned()
                        } else {
                            names.join(" ")
                        }
                    );
                }
            });
        }
        ["kill"] | ["kill", "all"] => {
            let mode = if words.len() == 2 {
                ShutdownMode::Stop
            } else {
                ShutdownMode::Detach
            };
            let done = client.daemon_shutdown(mode).await.map_err(fail)?;
            print(json, &done, || match mode {
                ShutdownMode::Detach => println!("zistd exits; programs keep running"),
                ShutdownMode::Stop => println!("zistd stops every program and exits"),
            });
        }
        [name, stream @ ("stdout" | "stderr"), "-f"] => {
            let stream: LogStream = stream
                .parse()
                .map_err(|e: zist_core::ValueError| Failure::Usage(e.to_string()))?;
            follow(&cli, &target, name, stream).await?;
        }
        [name, stream @ ("stdout" | "stderr")] => {
            let stream: LogStream = stream
                .parse()
                .map_err(|e: zist_core::ValueError| Failure::Usage(e.to_string()))?;
            let lines = client
                .process_logs((*name).to_owned(), stream, Some(100))
                .await
                .map_err(fail)?;
            print(json, &lines, || lines.iter().for_each(|l| println!("{l}")));
        }
        [name, "stats"] => {
            let stats = client
                .process_stats((*name).to_owned())
                .await
                .map_err(fail)?;
            print(json, &stats, || {
                println!(
                    "{name}: cpu {:.1}%  memory {} ({:.2}%)",
                    stats.cpu_percent,
                    bytes(stats.memory_bytes),
                    stats.memory_percent
                )
            });
        }
        [
            name,
            action @ ("status" | "start" | "stop" | "restart" | "detach"),
        ] => {
            let name = (*name).to_owned();
            let info = match *action {
                "status" => client.process_info(name).await,
                "start" => client.process_start(name).await,
                "stop" => client.process_stop(name).await,
                "restart" => client.process_restart(name).await,
                _ => client.process_detach(name).await,
            }
            .map_err(fail)?;
            print(json, &info, || table(std::slice::from_ref(&info)));
        }
        _ => {
            return Err(Failure::Usage(format!(
                "unknown command `{}`; see zistcl --help",
                command.join(" ")
            )));
        }
    }
    Ok(())
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

/// Prints a program's new lines until zistd or the program goes away, or Ctrl-C.
async fn follow(cli: &Cli, target: &Target, name: &str, stream: LogStream) -> Outcome {
    let scheme = if target.https { "wss" } else { "ws" };
    let mut builder = WsClientBuilder::default().set_headers(headers(&target.token)?);
    if let Some(tls) = client_tls(cli, target)? {
        builder = builder.with_custom_cert_store(tls);
    }
    let ws = builder
        .build(format!("{scheme}://{}", target.address))
        .await
        .map_err(|e| failure(&target.address, e))?;
    let mut lines = ws
        .subscribe::<String, _>(
            "process.follow",
            rpc_params![name, stream],
            "process.unfollow",
        )
        .await
        .map_err(|e| failure(&target.address, e))?;
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
