//! The load harness: zist (a release zistd), supervisord (from PyPI, in a
//! private virtualenv this harness makes) and Horust (from crates.io,
//! installed under target/ by this harness) run the same scenarios, in
//! turn, measured from outside: `/proc` for memory, CPU and children, their
//! public APIs (JSON-RPC; XML-RPC) and command-line clients for state,
//! headless Chromium for their web pages, wall clocks for the rest. Horust
//! has no API: it runs the rows measured from outside only (start, idle
//! RSS and CPU, restart after kill -9, stop all by SIGTERM). It prints the
//! medians over the rounds, zist's ratio to each peer, and the machine's
//! own floor for the same work measured in the same run.
//!
//! ```text
//! cargo run --release -p zist-benches --bin load -- all [--rounds 3] [--quick]
//! ```
//!
//! Under `cargo run` it first builds zistd, zistcl and core-load (release);
//! run directly, it uses those built beside it.
//!
//! Scenarios: `all`, or one of `fleet` (the floor, start N, idle, the APIs,
//! the CLI, the web page, stop all), `restart` (kill -9 to the new pid) and
//! `logs` (writers of 100-byte lines, 4 KiB and 64 KiB blocks, one write(2)
//! each, each beside the same writer straight into a file and through a
//! pipe into a file by the smallest relay). `--quick`
//! shrinks the sizes (N = 50/200, 100 MB of logs) to check the harness
//! itself; `--starts 100,1000` picks the start sizes; `--only zist`, `--only
//! supervisord` or `--only horust` runs one side. Every daemon runs in a
//! process group of its own and is stopped (then killed with its programs'
//! groups) when its scenario ends; SIGINT or SIGTERM kills every group the
//! run started.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::UsageWho;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use zist_benches::{percentile_ms, sibling, usage};

const TOKEN: &str = "load-harness-token";
/// The supervisord release measured.
const SUPERVISOR: &str = "supervisor==4.3.0";
/// The Horust release measured (from crates.io).
const HORUST: &str = "0.1.14";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Zist,
    Supervisord,
    /// Horust: no API, so only the rows measured from outside (start, idle
    /// RSS and CPU, restart after kill -9, stop all by SIGTERM).
    Horust,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Zist => "zist",
            Kind::Supervisord => "supervisord",
            Kind::Horust => "horust",
        }
    }
}

/// A program to supervise: its name and command line.
struct Program {
    name: String,
    argv: Vec<String>,
    /// Restart when it exits (false for the log writers, which end).
    restart: bool,
    /// More program-file keys, for zist only (`Ready = { ... }`).
    extra: String,
}

impl Program {
    fn sleeper(name: String) -> Self {
        Self {
            name,
            argv: vec!["/bin/sleep".into(), "3600".into()],
            restart: true,
            extra: String::new(),
        }
    }

    /// This harness listening on `port` (and accepting nothing: the
    /// kernel completes connections into the backlog), until killed.
    fn listener(name: String, port: u16, extra: String) -> Self {
        let exe = std::env::current_exe().expect("own path");
        Self {
            name,
            argv: vec![exe.display().to_string(), "listen".into(), port.to_string()],
            restart: true,
            extra,
        }
    }

    /// A listener that binds its port `delay_ms` after it starts.
    fn slow_listener(name: String, port: u16, delay_ms: u64, extra: String) -> Self {
        let mut program = Self::listener(name, port, extra);
        program.argv.push(delay_ms.to_string());
        program
    }

    /// This harness as a writer of `total` bytes in `chunk`-byte writes.
    /// Writes `total` bytes in `chunk`-byte writes once the file `go`
    /// exists (the harness makes it once the daemon answers: a writer
    /// done before the harness looks would be timed at nothing).
    fn writer(name: &str, chunk: usize, total: u64, go: &Path) -> Self {
        let exe = std::env::current_exe().expect("own path");
        Self {
            name: name.into(),
            argv: vec![
                exe.display().to_string(),
                "writer".into(),
                chunk.to_string(),
                total.to_string(),
                go.display().to_string(),
            ],
            restart: false,
            extra: String::new(),
        }
    }
}

/// A program as a daemon reports it.
#[derive(Debug)]
struct Seen {
    running: bool,
    pid: Option<i32>,
}

/// A running daemon with its programs; stopped on drop.
struct Instance {
    kind: Kind,
    child: Child,
    /// The daemon's API address.
    addr: String,
    /// zistd's HTTP API address.
    http: Option<String>,
    /// From spawn to the API answering.
    spawned: Instant,
    dir: tempfile::TempDir,
    pids: std::collections::BTreeSet<i32>,
    /// With `Console = true`: the lines zistd printed as `NAME | line`,
    /// counted by a reader of its stdout that keeps up.
    console_lines: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// Sends a whole `request` that asks to close on a new connection; the
/// whole answer, read until the server closes.
fn send_once(addr: &str, request: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// `POST path` with `body` on a new connection; the answer's body.
fn post(addr: &str, path: &str, content_type: &str, body: &str) -> std::io::Result<String> {
    let answer = send_once(
        addr,
        &request(addr, path, content_type, body, Connection::Close),
    )?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned())
}

/// Whether a request asks the server to close the connection after answering.
#[derive(Clone, Copy)]
enum Connection {
    Close,
    KeepAlive,
}

fn request(
    addr: &str,
    path: &str,
    content_type: &str,
    body: &str,
    connection: Connection,
) -> String {
    let connection = match connection {
        Connection::Close => "close",
        Connection::KeepAlive => "keep-alive",
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
}

fn rpc_body(method: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":1}}"#)
}

fn xml_body(method: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params></params></methodCall>"
    )
}

/// The text of `<name>key</name><value><TYPE>text</TYPE></value>` in `s`.
fn member<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let at = s.find(&format!("<name>{key}</name>"))?;
    let rest = &s[at..];
    let value = &rest[rest.find("<value>")? + "<value>".len()..];
    let value = value.trim_start();
    let inner = &value[value.find('>')? + 1..];
    Some(&inner[..inner.find('<')?])
}

impl Instance {
    /// Starts the daemon on `programs` and waits until its API answers.
    fn launch(kind: Kind, programs: &[Program], venv: &Path) -> Self {
        Self::launch_with(kind, programs, venv, false)
    }

    /// [`Instance::launch`]; with `console`, zistd runs with `Console =
    /// true` and its stdout is a pipe read as fast as it comes.
    fn launch_with(kind: Kind, programs: &[Program], venv: &Path, console: bool) -> Self {
        Self::launch_from(kind, programs, venv, console, &sibling("zistd"))
    }

    /// [`Instance::launch_with`], zistd being the binary at `zistd`.
    fn launch_from(
        kind: Kind,
        programs: &[Program],
        venv: &Path,
        console: bool,
        zistd: &Path,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.path().join("conf");
        let mut command = match kind {
            Kind::Zist => {
                let mut text = format!(
                    "Token = \"{TOKEN}\"\nRPCPort = {port}\nHTTPPort = {http_port}\nLogDir = \"logs\"\nConsole = {console}\n"
                );
                for p in programs {
                    let args: Vec<String> = p.argv[1..].iter().map(|a| format!("{a:?}")).collect();
                    text.push_str(&format!(
                        "[[Program]]\nName = \"{}\"\nPath = \"{}\"\nArgs = [{}]\nStartSecs = 0\nRestartDelay = \"0s\"\nRestart = {}\nLogMaxBytes = \"100GB\"\n{}",
                        p.name,
                        p.argv[0],
                        args.join(", "),
                        p.restart,
                        p.extra
                    ));
                }
                std::fs::write(&conf, text).expect("zist config");
                let mut c = Command::new(zistd);
                c.arg("-c").arg(&conf);
                c
            }
            Kind::Supervisord => {
                let d = dir.path().display();
                let mut text = format!(
                    "[supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}/logs\nnodaemon=true\nminfds=19000\nminprocs=200\nloglevel=warn\n\n[inet_http_server]\nport={addr}\n\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
                );
                for p in programs {
                    text.push_str(&format!(
                        "[program:{}]\ncommand={}\nstartsecs=0\nautorestart={}\nstdout_logfile={d}/logs/{}.out.log\nstderr_logfile={d}/logs/{}.err.log\nstdout_logfile_maxbytes=0\nstderr_logfile_maxbytes=0\n\n",
                        p.name,
                        p.argv
                            .iter()
                            .map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.clone() })
                            .collect::<Vec<_>>()
                            .join(" "),
                        p.restart,
                        p.name,
                        p.name
                    ));
                }
                std::fs::write(&conf, text).expect("supervisord config");
                let mut c = Command::new(venv.join("bin/supervisord"));
                c.arg("-c").arg(&conf);
                c
            }
            Kind::Horust => {
                // A file per service; output discarded, as the idle
                // sleepers write none.
                let services = dir.path().join("services");
                std::fs::create_dir_all(&services).expect("services dir");
                for p in programs {
                    let command: Vec<String> = p
                        .argv
                        .iter()
                        .map(|a| {
                            if a.contains(' ') {
                                format!("'{a}'")
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    std::fs::write(
                        services.join(format!("{}.toml", p.name)),
                        format!(
                            "command = \"{}\"\nstdout = \"/dev/null\"\nstderr = \"/dev/null\"\n\n[restart]\nstrategy = \"{}\"\nbackoff = \"0s\"\nattempts = 0\n\n[termination]\nwait = \"10s\"\n",
                            command.join(" "),
                            if p.restart { "always" } else { "never" }
                        ),
                    )
                    .expect("a Horust service");
                }
                let mut c = Command::new(horust_bin());
                c.arg("--services-path")
                    .arg(&services)
                    .arg("--uds-folder-path")
                    .arg(dir.path());
                c
            }
        };
        let spawned = Instant::now();
        let mut child = command
            .stdout(if console {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the daemon");
        lock_started().insert(child.id() as i32);
        let console_lines = child.stdout.take().map(|out| {
            let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counted = count.clone();
            std::thread::spawn(move || {
                // Counts `\nwriter | ` as a log collector reads: in big
                // reads, with the end of each kept for one cut in two.
                let mut out = out;
                let needle = b"\nwriter | ";
                let finder = memchr::memmem::Finder::new(needle);
                let mut buf = vec![0u8; 1 << 20];
                let mut kept = 0;
                loop {
                    match out.read(&mut buf[kept..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let filled = kept + n;
                            let found = finder.find_iter(&buf[..filled]).count();
                            counted.fetch_add(found as u64, std::sync::atomic::Ordering::Relaxed);
                            kept = (needle.len() - 1).min(filled);
                            buf.copy_within(filled - kept..filled, 0);
                        }
                    }
                }
            });
            count
        });
        let mut this = Self {
            kind,
            child,
            addr,
            http: (kind == Kind::Zist).then(|| format!("127.0.0.1:{http_port}")),
            spawned,
            dir,
            pids: std::collections::BTreeSet::new(),
            console_lines,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while kind != Kind::Horust && this.call_status().is_err() {
            assert!(
                Instant::now() < deadline && this.child.try_wait().ok().flatten().is_none(),
                "{} did not come up",
                kind.label()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        this
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts zistd again on the same config and state (the last one must
    /// have ended); returns when it was spawned, once its API answers.
    fn relaunch(&mut self) -> Instant {
        let spawned = Instant::now();
        self.child = Command::new(sibling("zistd"))
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("zistd");
        lock_started().insert(self.child.id() as i32);
        self.spawned = spawned;
        while self.call_status().is_err() {
            assert!(
                spawned.elapsed() < Duration::from_secs(60),
                "zistd did not come up again"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        spawned
    }

    /// The HTTP request for an API call: `zist` is the JSON-RPC method,
    /// `supervisord` the XML-RPC one.
    fn request(&self, zist: &str, supervisord: &str, connection: Connection) -> String {
        match self.kind {
            Kind::Horust => unreachable!("Horust has no API"),
            Kind::Zist => request(
                &self.addr,
                "/",
                "application/json",
                &rpc_body(zist),
                connection,
            ),
            Kind::Supervisord => request(
                &self.addr,
                "/RPC2",
                "text/xml",
                &xml_body(supervisord),
                connection,
            ),
        }
    }

    /// Makes an API call (see [`Instance::request`]); the answer's body.
    fn call(&self, zist: &str, supervisord: &str) -> std::io::Result<String> {
        match self.kind {
            Kind::Horust => Err(std::io::Error::other("Horust has no API")),
            Kind::Zist => post(&self.addr, "/", "application/json", &rpc_body(zist)),
            Kind::Supervisord => post(&self.addr, "/RPC2", "text/xml", &xml_body(supervisord)),
        }
    }

    fn list_request(&self) -> String {
        self.request(
            "process.list",
            "supervisor.getAllProcessInfo",
            Connection::Close,
        )
    }

    fn status_request(&self, connection: Connection) -> String {
        self.request("daemon.status", "supervisor.getState", connection)
    }

    fn call_status(&self) -> std::io::Result<String> {
        let body = self.call("daemon.status", "supervisor.getState")?;
        if body.contains("result") || body.contains("statename") {
            Ok(body)
        } else {
            Err(std::io::Error::other(body))
        }
    }

    /// Every program's state, by name (for Horust, which has no API, its
    /// children by pid: running, names unknown).
    fn states(&mut self) -> BTreeMap<String, Seen> {
        let mut out = BTreeMap::new();
        if self.kind == Kind::Horust {
            for pid in children(self.pid()) {
                // Running once it is no longer Horust's fork, but the program.
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.insert(
                    format!("pid {pid}"),
                    Seen {
                        running: !comm.is_empty() && comm.trim_end() != "horust",
                        pid: Some(pid),
                    },
                );
            }
            self.pids.extend(out.values().filter_map(|s| s.pid));
            lock_started().extend(out.values().filter_map(|s| s.pid));
            return out;
        }
        let body = self
            .call("process.list", "supervisor.getAllProcessInfo")
            .unwrap_or_default();
        match self.kind {
            Kind::Zist => {
                let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for info in value["result"].as_array().into_iter().flatten() {
                    out.insert(
                        info["name"].as_str().unwrap_or("").to_owned(),
                        Seen {
                            running: info["state"] == "running",
                            pid: info["pid"].as_i64().map(|p| p as i32),
                        },
                    );
                }
            }
            Kind::Horust => {}
            Kind::Supervisord => {
                for entry in body.split("<struct>").skip(1) {
                    let Some(name) = member(entry, "name") else {
                        continue;
                    };
                    let pid = member(entry, "pid")
                        .and_then(|p| p.parse().ok())
                        .filter(|&p| p > 0);
                    out.insert(
                        name.to_owned(),
                        Seen {
                            running: member(entry, "statename") == Some("RUNNING"),
                            pid,
                        },
                    );
                }
            }
        }
        self.pids.extend(out.values().filter_map(|s| s.pid));
        lock_started().extend(out.values().filter_map(|s| s.pid));
        out
    }

    /// Waits until all `n` programs run; returns the time since spawn.
    /// Until the daemon has `n` children (read from /proc, which costs the
    /// daemon nothing) the API is not asked: listing 1000 programs every
    /// few milliseconds would take CPU from the start being measured.
    fn all_running(&mut self, n: usize) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if children(self.pid()).len() < n {
                assert!(
                    Instant::now() < deadline,
                    "{} never started all",
                    self.kind.label()
                );
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let states = self.states();
            if states.len() == n && states.values().all(|s| s.running) {
                return self.spawned.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{} never ran all",
                self.kind.label()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops every program through the API (Horust, which has none: by
    /// SIGTERM, which stops them all and then Horust); returns once every
    /// process is gone.
    fn stop_all(&mut self) -> Duration {
        let live: Vec<i32> = self.states().values().filter_map(|s| s.pid).collect();
        let t = Instant::now();
        match self.kind {
            Kind::Horust => {
                kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).expect("SIGTERM to Horust")
            }
            _ => {
                self.call("process.stop_all", "supervisor.stopAllProcesses")
                    .expect("stop all");
            }
        }
        while live
            .iter()
            .any(|&p| kill(Pid::from_raw(p), None).is_ok() && !zombie(p))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.elapsed()
    }

    fn log_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.out.log"))
    }
}

/// A zombie is gone but for its parent's wait.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Every daemon and program pid this run started, for the signal handler.
static STARTED: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn lock_started() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<i32>> {
    STARTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On SIGINT or SIGTERM, kills every process group this run started, then
/// exits: an interrupted run leaves nothing behind.
fn clean_up_on_signal() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            for &pid in lock_started().iter() {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            eprintln!("interrupted: every process this run started is killed");
            std::process::exit(130);
        });
    });
}

impl Drop for Instance {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
        // Each program leads its own group under zistd and supervisord.
        for &p in &self.pids {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
            if self.kind == Kind::Horust {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
}

/// Under `cargo run`, builds the binaries this run drives (zistd, zistcl,
/// core-load) in the same profile first, so one command measures the
/// current code and never a stale daemon; run directly, it uses what was
/// built beside it.
fn build_the_daemon() {
    let (Ok(cargo), Ok(manifest)) = (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_DIR"))
    else {
        return;
    };
    let workspace = Path::new(&manifest).join("../Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "zistd",
            "--bin",
            "zistcl",
            "--bin",
            "core-load",
        ])
        .arg("--manifest-path")
        .arg(&workspace)
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("cannot build zistd, zistcl and core-load: see cargo's output above");
        std::process::exit(2);
    }
    // The lean static build (musl) too, for its memory rows, when this machine
    // can make it: the Rust target and musl-gcc (Debian's musl-tools, for
    // ring's C code).
    let musl_ready = Command::new("rustc")
        .args([
            "--print",
            "target-libdir",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|dir| dir.join("self-contained").exists())
        && Command::new("musl-gcc").arg("--version").output().is_ok();
    if !musl_ready {
        eprintln!(
            "no static build: `rustup target add x86_64-unknown-linux-musl` and musl-tools make one"
        );
        return;
    }
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--profile",
            "lean",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .args(["--bin", "zistd", "--bin", "core-load"])
        .arg("--manifest-path")
        .arg(&workspace)
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .stdout(Stdio::null())
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("the static build failed: its rows are skipped");
    }
}

/// The harness's own virtualenv with supervisord, made once under target/.
fn supervisord_venv() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let venv = exe.with_file_name("load-venv");
    if venv.join("bin/supervisord").exists() {
        return venv;
    }
    eprintln!("installing {SUPERVISOR} into {}", venv.display());
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success(), "python3 -m venv failed");
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", SUPERVISOR])
        .status()
        .expect("pip");
    assert!(installed.success(), "pip install {SUPERVISOR} failed");
    venv
}

/// Horust, installed once under target/ with `cargo install` from crates.io.
fn horust_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.with_file_name("load-horust").join("bin/horust")
}

fn install_horust() {
    if horust_bin().exists() {
        return;
    }
    let root = horust_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the install root")
        .to_owned();
    eprintln!("installing Horust {HORUST} into {}", root.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let installed = Command::new(cargo)
        .args([
            "install",
            "--quiet",
            "--locked",
            "horust",
            "--version",
            HORUST,
            "--root",
        ])
        .arg(&root)
        .status()
        .expect("cargo install");
    assert!(installed.success(), "cargo install horust {HORUST} failed");
}

/// One measured value of a scenario, for one daemon in one round.
type Sample = f64;

/// Results by scenario, then by daemon.
#[derive(Default)]
struct Table {
    rows: Vec<(String, &'static str, &'static str)>,
    samples: BTreeMap<(String, &'static str), Vec<Sample>>,
    /// The machine's own cost of what the daemons do, in the order measured.
    floor: Vec<(String, Vec<Sample>)>,
}

fn median(samples: &[Sample]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Table {
    fn add(
        &mut self,
        scenario: &str,
        unit: &'static str,
        target: &'static str,
        kind: Kind,
        v: f64,
    ) {
        eprintln!("  {}: {scenario}: {} {unit}", kind.label(), fmt(v));
        if !self.rows.iter().any(|(s, _, _)| s == scenario) {
            self.rows.push((scenario.to_owned(), unit, target));
        }
        self.samples
            .entry((scenario.to_owned(), kind.label()))
            .or_default()
            .push(v);
    }

    fn add_floor(&mut self, what: &str, v: f64) {
        eprintln!("  floor: {what}: {}", fmt(v));
        match self.floor.iter_mut().find(|(w, _)| w == what) {
            Some((_, samples)) => samples.push(v),
            None => self.floor.push((what.to_owned(), vec![v])),
        }
    }

    fn print(&self, rounds: usize) {
        println!(
            "load run: {rounds} rounds, medians; {} cores\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "| scenario | zist | supervisord | horust | zist/supervisord | zist/horust | target (zist) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (scenario, unit, target) in &self.rows {
            let median = |label: &'static str| {
                self.samples
                    .get(&(scenario.clone(), label))
                    .map(|v| median(v))
            };
            let (z, s, h) = (median("zist"), median("supervisord"), median("horust"));
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{} {unit}", fmt(v)));
            let ratio = |peer: Option<f64>| match (z, peer) {
                (Some(z), Some(p)) if p != 0.0 => format!("{:.2}", z / p),
                _ => "-".to_owned(),
            };
            println!(
                "| {scenario} | {} | {} | {} | {} | {} | {target} |",
                show(z),
                show(s),
                show(h),
                ratio(s),
                ratio(h)
            );
        }
        if !self.floor.is_empty() {
            println!("\nThe machine's floor, no daemon (medians):");
            for (what, samples) in &self.floor {
                println!("- {what}: {}", fmt(median(samples)));
            }
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

struct Sizes {
    /// Which scenarios: `all`, `fleet` (start, idle, API, stop), `restart` or `logs`.
    which: String,
    starts: Vec<usize>,
    n: usize,
    log_bytes: u64,
}

/// The log writer: `total` bytes to stdout, `chunk` bytes (the last one a
/// newline) per write(2).
fn writer(chunk: usize, total: u64) {
    let mut block = vec![b'x'; chunk.max(1)];
    if let Some(last) = block.last_mut() {
        *last = b'\n';
    }
    zist_benches::write_blocks(&block, total);
}

/// The smallest program that takes a pipe into a file: stdin spliced into
/// a second pipe, and from there into the file at `path` (so the copy into
/// the page cache runs while the writer fills stdin again), both pipes at
/// 1 MiB, blocking, no tail, no lines, no rotation. What any capture of a
/// program's output through a pipe costs the kernel at least. Prints its
/// CPU seconds when stdin ends.
fn relay(path: &Path) {
    use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
    use std::os::fd::AsFd;
    let file = std::fs::File::create(path).expect("the relay's file");
    let stdin = std::io::stdin();
    let (source, sink) = nix::unistd::pipe().expect("the relay's pipe");
    for pipe in [stdin.as_fd(), source.as_fd()] {
        let _ = fcntl(pipe, FcntlArg::F_SETPIPE_SZ(1 << 20));
    }
    let step = |from: std::os::fd::BorrowedFd, to: std::os::fd::BorrowedFd, len: usize| loop {
        match splice(from, None, to, None, len, SpliceFFlags::SPLICE_F_MOVE) {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.expect("splice"),
        }
    };
    loop {
        let taken = step(stdin.as_fd(), sink.as_fd(), 1 << 20);
        if taken == 0 {
            break;
        }
        let mut put = 0;
        while put < taken {
            put += step(source.as_fd(), file.as_fd(), taken - put);
        }
    }
    println!("{}", zist_benches::cpu_seconds(UsageWho::RUSAGE_SELF));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("listen") {
        let port = args.get(2).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
        if let Some(ms) = args.get(3).and_then(|d| d.parse::<u64>().ok()) {
            // Not ready at once: the wait a Ready check sees.
            std::thread::sleep(Duration::from_millis(ms));
        }
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
        loop {
            std::thread::park();
        }
    }
    if args.get(1).map(String::as_str) == Some("writer") {
        let number = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
        if let Some(go) = args.get(4) {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !Path::new(go).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        writer(
            number(2).unwrap_or(100) as usize,
            number(3).unwrap_or(1 << 30),
        );
        return;
    }
    if args.get(1).map(String::as_str) == Some("relay") {
        let Some(path) = args.get(2) else {
            eprintln!("usage: load relay FILE");
            std::process::exit(2);
        };
        relay(Path::new(path));
        return;
    }
    clean_up_on_signal();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let which = args.get(1).cloned().unwrap_or_else(|| "all".to_owned());
    if ![
        "all",
        "fleet",
        "restart",
        "logs",
        "continuity",
        "adopt",
        "checks",
        "chain",
        "socket",
    ]
    .contains(&which.as_str())
    {
        eprintln!(
            "unknown scenario {which:?}; use all, fleet, restart, logs, continuity, adopt, checks, chain or socket"
        );
        std::process::exit(2);
    }
    let mut sizes = if args.iter().any(|a| a == "--quick") {
        Sizes {
            which,
            starts: vec![50, 200],
            n: 200,
            log_bytes: 100_000_000,
        }
    } else {
        Sizes {
            which,
            starts: vec![100, 1000, 5000],
            n: 1000,
            log_bytes: 1_000_000_000,
        }
    };
    // `--starts 100,1000` picks the start sizes (supervisord needs minutes for 5000).
    if let Some(list) = args
        .iter()
        .position(|a| a == "--starts")
        .and_then(|i| args.get(i + 1))
    {
        sizes.starts = list.split(',').filter_map(|n| n.parse().ok()).collect();
    }
    let only: Vec<Kind> = match args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        Some(k) if k == "zist" => vec![Kind::Zist],
        Some(k) if k == "supervisord" => vec![Kind::Supervisord],
        Some(k) if k == "horust" => vec![Kind::Horust],
        Some(k) => {
            eprintln!("unknown --only {k:?}; use zist, supervisord or horust");
            std::process::exit(2);
        }
        _ => vec![Kind::Zist, Kind::Supervisord, Kind::Horust],
    };
    build_the_daemon();
    let venv = supervisord_venv();
    let horust_rows = ["all", "fleet", "restart"].contains(&sizes.which.as_str());
    if only.contains(&Kind::Horust) && horust_rows {
        install_horust();
    }
    let mut table = Table::default();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for &kind in &only {
            scenarios(kind, &sizes, &venv, &mut table);
        }
    }
    table.print(rounds);
}

fn sleepers(n: usize) -> Vec<Program> {
    (0..n).map(|i| Program::sleeper(format!("p{i}"))).collect()
}

fn scenarios(kind: Kind, sizes: &Sizes, venv: &Path, table: &mut Table) {
    // Horust has no API: only the fleet's outside rows and the restart.
    let run = |what: &str| {
        (sizes.which == "all" || sizes.which == what)
            && (kind != Kind::Horust || ["fleet", "restart"].contains(&what))
    };
    if run("fleet") {
        fleet(kind, sizes, venv, table);
    }
    if run("restart") {
        restart_latency(kind, venv, table);
    }
    if run("logs") {
        log_throughput(kind, sizes, venv, table);
    }
    if run("continuity") {
        continuity(kind, sizes.n, venv, table);
    }
    if run("adopt") {
        adopt(kind, venv, table);
    }
    if run("checks") {
        checks(kind, sizes.n, venv, table);
    }
    if run("chain") {
        chain(kind, venv, table);
    }
    if run("socket") {
        socket(kind, venv, table);
    }
}

/// `daemon.status` with 50 keep-alive clients over TCP (with a token, its
/// scope checked) and over the local socket (no token, the peer's uid),
/// side by side on one zistd.
fn socket(kind: Kind, venv: &Path, table: &mut Table) {
    if kind != Kind::Zist {
        return;
    }
    let daemon = Instance::launch(kind, &sleepers(100), venv);
    let path = daemon.dir.path().join("state/zistd.sock");
    let tcp = status_rate(
        &daemon.addr,
        &daemon.status_request(Connection::KeepAlive),
        Connection::KeepAlive,
    );
    table.add(
        "status calls/s, 50 keep-alive clients, TCP with a token (scope checked)",
        "calls/s",
        "",
        kind,
        tcp,
    );
    let body = rpc_body("daemon.status");
    let local = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let unix = status_rate(
        &format!("unix:{}", path.display()),
        &local,
        Connection::KeepAlive,
    );
    table.add(
        "status calls/s, 50 keep-alive clients, the local socket (no token)",
        "calls/s",
        "≥ TCP",
        kind,
        unix,
    );
}

/// A chain of 20 programs, each `After` the one before, each ready (a Tcp
/// Ready check on the port it opens) 200 ms after it starts: launch to the
/// last one running, against the sum of the Ready waits (4 s).
fn chain(kind: Kind, venv: &Path, table: &mut Table) {
    const LINKS: usize = 20;
    const WAIT_MS: u64 = 200;
    if kind != Kind::Zist {
        return;
    }
    let ports: Vec<u16> = (0..LINKS)
        .map(|_| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("a port").port()
        })
        .collect();
    let programs: Vec<Program> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let after = if i == 0 {
                String::new()
            } else {
                format!("After = [\"c{}\"]\n", i - 1)
            };
            Program::slow_listener(
                format!("c{i}"),
                port,
                WAIT_MS,
                format!("Ready = {{ Tcp = \"127.0.0.1:{port}\" }}\n{after}"),
            )
        })
        .collect();
    let mut daemon = Instance::launch(kind, &programs, venv);
    let took = daemon.all_running(LINKS);
    let sum = Duration::from_millis(WAIT_MS * LINKS as u64);
    table.add(
        &format!("chain of {LINKS} After links, each ready {WAIT_MS} ms after its start: launch to all running, per sum of Ready waits"),
        "×",
        "≤ 1.2",
        kind,
        took.as_secs_f64() / sum.as_secs_f64(),
    );
}

/// `n` programs that listen on a port each: started without checks, with
/// a Tcp Ready check each (start until all `running`), and with a Tcp
/// Alive check each every 10 s (idle CPU against the fleet without).
fn checks(kind: Kind, n: usize, venv: &Path, table: &mut Table) {
    if kind != Kind::Zist {
        return;
    }
    // Below the ephemeral range, so no outgoing connection (the harness's
    // own API calls, the checks) takes one first; all held at once while
    // they are picked.
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let held: Vec<std::net::TcpListener> = (low.saturating_sub(12_000)..low)
        .filter_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .take(n)
        .collect();
    assert_eq!(held.len(), n, "free ports below {low}");
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("a port").port())
        .collect();
    drop(held);
    let fleet = |extra: &dyn Fn(u16) -> String| -> Vec<Program> {
        ports
            .iter()
            .enumerate()
            .map(|(i, &port)| Program::listener(format!("l{i}"), port, extra(port)))
            .collect()
    };
    let none = |_: u16| String::new();
    let ready = |port: u16| format!("Ready = {{ Tcp = \"127.0.0.1:{port}\" }}\n");
    let alive =
        |port: u16| format!("Alive = {{ Tcp = \"127.0.0.1:{port}\", Interval = \"10s\" }}\n");
    type Extra<'a> = &'a dyn Fn(u16) -> String;
    let cases: [(&str, Extra<'_>, bool); 3] = [
        ("no checks", &none, true),
        ("a Tcp Ready check each", &ready, false),
        ("a Tcp Alive check each every 10 s", &alive, true),
    ];
    for (what, extra, measure_idle) in cases {
        let mut daemon = Instance::launch(kind, &fleet(extra), venv);
        let took = daemon.all_running(n);
        table.add(
            &format!("start {n} listeners, {what}: launch to all running"),
            "s",
            "",
            kind,
            took.as_secs_f64(),
        );
        if measure_idle {
            std::thread::sleep(Duration::from_secs(2));
            let (cpu0, _) = usage(daemon.pid());
            std::thread::sleep(Duration::from_secs(10));
            let (cpu1, _) = usage(daemon.pid());
            table.add(
                &format!("daemon CPU per 10 s, {n} idle listeners, {what}"),
                "CPU-s",
                if what == "no checks" {
                    ""
                } else {
                    "≤ 0.05 above no checks"
                },
                kind,
                cpu1 - cpu0,
            );
        }
    }
}

/// Adopting processes zist did not start (`process.adopt`): the answer's
/// latency without capture and with it, and how long capture pauses the
/// process (zistd's own measure, from its log). supervisord has no
/// equivalent.
fn adopt(kind: Kind, venv: &Path, table: &mut Table) {
    if kind != Kind::Zist {
        return;
    }
    const ROUNDS: usize = 30;
    let daemon = Instance::launch(kind, &[], venv);
    let outside = |script: &str| -> Child {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sh");
        lock_started().insert(child.id() as i32);
        // Adopted once it runs sh, not a copy of this harness.
        let exe = std::env::current_exe().expect("own path");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe) {
            assert!(Instant::now() < deadline, "sh never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    };
    for capture in [false, true] {
        let mut took = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let mut child = outside("i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done");
            let name = format!("a{round}{capture}");
            let body = format!(
                r#"{{"jsonrpc":"2.0","method":"process.adopt","params":{{"pid":{},"name":"{name}","capture":{capture},"spec":{{"Restart":"never"}}}},"id":1}}"#,
                child.id()
            );
            let t = Instant::now();
            let answer = post(&daemon.addr, "/", "application/json", &body).expect("adopt");
            took.push(t.elapsed());
            assert!(answer.contains("\"running\""), "adopt failed: {answer}");
            // Ended and reaped here, by its parent, then forgotten by zistd.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            let remove = format!(
                r#"{{"jsonrpc":"2.0","method":"process.remove","params":{{"name":"{name}"}},"id":1}}"#
            );
            post(&daemon.addr, "/", "application/json", &remove).expect("remove");
        }
        table.add(
            &format!(
                "process.adopt of a printing shell loop, {}, p50 (no supervisord equivalent)",
                if capture {
                    "output captured"
                } else {
                    "capture off"
                }
            ),
            "ms",
            if capture { "" } else { "≤ 50 ms" },
            kind,
            percentile_ms(&mut took, 50),
        );
    }
    // zistd logs how long each capture paused its process.
    let log = post(
        &daemon.addr,
        "/",
        "application/json",
        r#"{"jsonrpc":"2.0","method":"daemon.log","params":{"lines":10000},"id":1}"#,
    )
    .expect("daemon.log");
    let mut paused: Vec<Duration> = log
        .split("it was paused ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    if paused.is_empty() {
        eprintln!("  zistd's log names no capture pause");
        return;
    }
    let longest = paused.iter().max().copied().unwrap_or_default();
    table.add(
        "capture: time the adopted process is paused, p50",
        "ms",
        "≤ 100 ms",
        kind,
        percentile_ms(&mut paused, 50),
    );
    table.add(
        &format!("capture: time the adopted process is paused, longest of {ROUNDS}"),
        "ms",
        "≤ 100 ms",
        kind,
        longest.as_secs_f64() * 1000.0,
    );
}

/// zistd outliving itself with `n` programs: an upgrade in place under a
/// client calling in a loop, a start after SIGKILL that adopts every
/// program, and the holder's memory. supervisord has neither: after its
/// own SIGKILL it starts every program again (its `start N` row).
fn continuity(kind: Kind, n: usize, venv: &Path, table: &mut Table) {
    if kind != Kind::Zist {
        return;
    }
    let mut daemon = Instance::launch(kind, &sleepers(n), venv);
    daemon.all_running(n);
    let before: BTreeMap<String, Option<i32>> = daemon
        .states()
        .into_iter()
        .map(|(k, s)| (k, s.pid))
        .collect();
    let holder = std::fs::read_to_string(daemon.dir.path().join("state/holder.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    if let Some(holder) = holder {
        lock_started().insert(holder as i32);
        let (_, rss) = usage(holder);
        table.add(
            &format!("holder process RSS, {n} programs' pipes held"),
            "MiB",
            "≤ 2 MiB",
            kind,
            rss as f64 / 1048576.0,
        );
    }

    // Upgrade in place to the same executable, a client calling meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (addr, status) = (
            daemon.addr.clone(),
            daemon.status_request(Connection::Close),
        );
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut longest, mut failed) = (Duration::ZERO, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                if send_once(&addr, &status).map_or(true, |a| !a.starts_with(b"HTTP/1.1 200")) {
                    failed += 1;
                }
                longest = longest.max(t.elapsed());
            }
            (longest, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let answer = daemon.call("daemon.upgrade", "").expect("daemon.upgrade");
    assert!(answer.contains("\"to\""), "upgrade refused: {answer}");
    loop {
        let status = daemon.call_status().unwrap_or_default();
        let uptime = serde_json::from_str::<serde_json::Value>(&status)
            .ok()
            .and_then(|v| v["result"]["uptime_secs"].as_f64())
            .unwrap_or(f64::MAX);
        if uptime <= asked.elapsed().as_secs_f64() {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "the upgraded zistd never answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (longest, failed) = caller.join().expect("the caller");
    let after: BTreeMap<String, Option<i32>> = daemon
        .states()
        .into_iter()
        .map(|(k, s)| (k, s.pid))
        .collect();
    let restarted = before
        .iter()
        .filter(|(k, pid)| after.get(*k) != Some(pid))
        .count();
    table.add(
        &format!("upgrade in place, {n} programs: longest wait for an answer (daemon.status in a loop, new connection each)"),
        "ms",
        "≤ 200 ms",
        kind,
        longest.as_secs_f64() * 1000.0,
    );
    table.add(
        &format!("upgrade in place, {n} programs: calls failed + programs restarted"),
        "count",
        "0",
        kind,
        f64::from(failed) + restarted as f64,
    );

    // SIGKILL, then start again on the same StateDir: every program adopted.
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL).expect("kill -9 zistd");
    let _ = daemon.child.wait();
    let t = daemon.relaunch();
    let adopted = loop {
        let states = daemon.states();
        if states.len() == n && states.values().all(|s| s.running) {
            break states;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "zistd never adopted all"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = t.elapsed();
    let same = adopted
        .iter()
        .filter(|(k, s)| before.get(*k) == Some(&s.pid))
        .count();
    assert_eq!(same, n, "programs were started again instead of adopted");
    table.add(
        &format!("start after SIGKILL, {n} programs: spawn to all {n} adopted (same pids)"),
        "s",
        "≤ 0.3 s",
        kind,
        took.as_secs_f64(),
    );
}

/// The machine's floor, then start N, idle, the APIs and stop all.
fn fleet(kind: Kind, sizes: &Sizes, venv: &Path, table: &mut Table) {
    if kind == Kind::Zist {
        for (pipes, how) in [(false, ""), (true, ", stdout and stderr piped")] {
            let (threads, spawned, reaped) = zist_benches::spawn_floor(sizes.n, pipes);
            table.add_floor(
                &format!(
                    "{} bare spawns of /bin/sleep from {threads} threads{how}, s",
                    sizes.n
                ),
                spawned.as_secs_f64(),
            );
            table.add_floor(
                &format!("kill -9 and reap them{how}, ms"),
                reaped.as_secs_f64() * 1000.0,
            );
        }
        for n in [100, sizes.n] {
            library_rss(&sibling("core-load"), "", n, table);
            if let Some(core_load) = static_build("core-load") {
                library_rss(&core_load, ", lean static build (musl)", n, table);
            }
            if let Some(zistd) = static_build("zistd") {
                let mut daemon = Instance::launch_from(kind, &sleepers(n), venv, false, &zistd);
                daemon.all_running(n);
                idle_rss(kind, &daemon, n, ", lean static build (musl)", table);
            }
        }
    }
    for &n in &sizes.starts {
        let mut daemon = Instance::launch(kind, &sleepers(n), venv);
        let took = daemon.all_running(n);
        if n != sizes.n && n <= 1000 {
            idle_rss(kind, &daemon, n, "", table);
        }
        table.add(
            &format!("start {n}: launch to all running"),
            "s",
            match n {
                1000 => "≤ 0.5 s",
                _ => "",
            },
            kind,
            took.as_secs_f64(),
        );
        if n == sizes.n {
            idle_and_api(kind, &mut daemon, n, table);
            if kind != Kind::Horust {
                cli_all(kind, &daemon, n, venv, table);
                web_page(kind, &daemon, n, table);
                // What serving every kind of call brought back in.
                let (_, rss) = usage(daemon.pid());
                table.add(
                    &format!("daemon RSS, {n} programs, after the API, CLI and web page rows"),
                    "MiB",
                    "",
                    kind,
                    rss as f64 / 1048576.0,
                );
                // zistd gives it back once its servers are quiet for 5 s.
                std::thread::sleep(Duration::from_secs(6));
                let (_, rss) = usage(daemon.pid());
                table.add(
                    &format!("daemon RSS, {n} programs, 6 s after those rows"),
                    "MiB",
                    "",
                    kind,
                    rss as f64 / 1048576.0,
                );
            }
            let took = daemon.stop_all();
            table.add(
                &format!("stop all {n}"),
                "ms",
                "≤ 100 ms",
                kind,
                took.as_secs_f64() * 1000.0,
            );
        }
    }
}

/// The daemon's RSS with `n` idle programs, 2 s after all run (the idle
/// row of the largest size waits 12 s and measures CPU too).
fn idle_rss(kind: Kind, daemon: &Instance, n: usize, build: &str, table: &mut Table) {
    std::thread::sleep(Duration::from_secs(2));
    let (_, rss) = usage(daemon.pid());
    table.add(
        &format!("daemon RSS, {n} idle programs{build}"),
        "MiB",
        match n {
            100 => "≤ 5 MiB",
            1000 => "≤ 12 MiB",
            _ => "",
        },
        kind,
        rss as f64 / 1048576.0,
    );
}

/// The lean static build of a binary (the `lean` profile, musl) in this
/// one's target folder (`target/x86_64-unknown-linux-musl/lean/NAME`),
/// when there is one.
fn static_build(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let path = target.join("x86_64-unknown-linux-musl/lean").join(name);
    path.exists().then_some(path)
}

/// The library's RSS with `n` idle programs, in a process that does nothing
/// else: `core-load idle`'s RSS row (whole process).
fn library_rss(core_load: &Path, build: &str, n: usize, table: &mut Table) {
    let out = Command::new(core_load)
        .args(["idle", "--programs", &n.to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("core-load");
    let text = String::from_utf8_lossy(&out.stdout);
    let mib = text
        .lines()
        .find(|l| l.starts_with("| RSS with"))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    match mib {
        Some(mib) => table.add(
            &format!("library (zist-core in a process of its own) RSS, {n} idle programs{build}"),
            "MiB",
            match n {
                100 => "≤ 3 MiB",
                _ => "≤ 10 MiB",
            },
            Kind::Zist,
            mib,
        ),
        None => eprintln!("  core-load gave no RSS row:\n{text}"),
    }
}

fn idle_and_api(kind: Kind, daemon: &mut Instance, n: usize, table: &mut Table) {
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, _) = usage(daemon.pid());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu1, rss) = usage(daemon.pid());
    table.add(
        &format!("daemon RSS, {n} idle programs"),
        "MiB",
        match n {
            1000 => "≤ 12 MiB",
            _ => "",
        },
        kind,
        rss as f64 / 1048576.0,
    );
    table.add(
        &format!("daemon CPU per 10 s, {n} idle programs"),
        "CPU-s",
        "< 0.05",
        kind,
        cpu1 - cpu0,
    );
    if kind == Kind::Horust {
        return;
    }

    let list = daemon.list_request();
    let mut lat = timed(&daemon.addr, &list, 50);
    table.add(
        &format!("list all {n} (process.list / getAllProcessInfo), new connection, p50"),
        "ms",
        "≤ 5 ms",
        kind,
        percentile_ms(&mut lat, 50),
    );

    if let Some(http) = &daemon.http {
        let get = format!(
            "GET /api/v1/processes HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        let mut lat = timed(http, &get, 50);
        table.add(
            &format!("GET /api/v1/processes, {n} programs, new connection, p50 (no supervisord equivalent)"),
            "ms",
            "≤ 5 ms",
            kind,
            percentile_ms(&mut lat, 50),
        );
    }

    for (connection, label) in [
        (Connection::KeepAlive, "keep-alive"),
        (Connection::Close, "new connection each"),
    ] {
        let calls = status_rate(&daemon.addr, &daemon.status_request(connection), connection);
        table.add(
            &format!("status calls/s, 50 clients, {label} (daemon.status / getState)"),
            "calls/s",
            match connection {
                Connection::KeepAlive => "≥ 10 000",
                Connection::Close => "",
            },
            kind,
            calls,
        );
    }
}

/// The command-line client listing every program, wall time from its
/// spawn to its exit: `zistcl ADDR TOKEN all` and `supervisorctl status`.
fn cli_all(kind: Kind, daemon: &Instance, n: usize, venv: &Path, table: &mut Table) {
    let (mut command, runs) = match kind {
        Kind::Zist => {
            let mut c = Command::new(sibling("zistcl"));
            c.args([daemon.addr.as_str(), TOKEN, "all"]);
            (c, 20)
        }
        Kind::Supervisord | Kind::Horust => {
            let mut c = Command::new(venv.join("bin/supervisorctl"));
            c.arg("-s")
                .arg(format!("http://{}", daemon.addr))
                .arg("status");
            (c, 5)
        }
    };
    let mut walls = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = command.output().expect("the command-line client");
        walls.push(t.elapsed());
        let listed = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(listed >= n, "the client listed {listed} of {n} programs");
    }
    table.add(
        &format!("CLI lists all {n} (`zistcl all` / `supervisorctl status`), wall p50"),
        "ms",
        "≤ 50 ms",
        kind,
        percentile_ms(&mut walls, 50),
    );
}

/// The web page that shows every program, in headless Chromium: from
/// navigation start to all `n` rows drawn (zist's dashboard; supervisord's
/// status page, drawn by its server). Median of 3 loads; skipped with a
/// note when Chromium is not installed.
fn web_page(kind: Kind, daemon: &Instance, n: usize, table: &mut Table) {
    if !zist_benches::browser::available() {
        eprintln!("  no chromium/chromedriver: the web page row is skipped");
        return;
    }
    let url = match (kind, &daemon.http) {
        (Kind::Zist, Some(http)) => format!("http://{http}/"),
        _ => format!("http://{}/", daemon.addr),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut loads = runtime.block_on(async {
        let browser = zist_benches::browser::Browser::start().await;
        let client = &browser.client;
        let rows = match kind {
            Kind::Zist => {
                zist_benches::browser::sign_in(client, &url, TOKEN).await;
                "#rows .row"
            }
            Kind::Supervisord | Kind::Horust => "table tbody tr",
        };
        let mut loads = Vec::new();
        for _ in 0..3 {
            loads.push(zist_benches::browser::rows_drawn(client, &url, rows, n).await);
        }
        browser.close().await;
        loads
    });
    table.add(
        &format!("web page with all {n} (zist's dashboard / supervisord's status page): navigation to every row drawn, median of 3"),
        "ms",
        "≤ 1 s",
        kind,
        percentile_ms(&mut loads, 50),
    );
}

/// Calls per second that 50 client threads get through for 5 s.
fn status_rate(addr: &str, status: &str, connection: Connection) -> f64 {
    let until = Instant::now() + Duration::from_secs(5);
    let t = Instant::now();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (status, addr) = (status.to_owned(), addr.to_owned());
            std::thread::spawn(move || {
                let mut calls = 0u64;
                let mut connection_kept = zist_benches::KeepAlive::new(&addr);
                while Instant::now() < until {
                    let answered = match connection {
                        Connection::KeepAlive => connection_kept
                            .exchange(status.as_bytes())
                            .is_ok_and(|code| code == 200),
                        Connection::Close => send_once(&addr, &status).is_ok(),
                    };
                    calls += u64::from(answered);
                }
                calls
            })
        })
        .collect();
    let calls: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    calls as f64 / t.elapsed().as_secs_f64()
}

/// `n` times `request` on a new connection each, read to the end: the times.
fn timed(addr: &str, request: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            send_once(addr, request).expect("an answer");
            t.elapsed()
        })
        .collect()
}

/// The pids of a process's children, from every one of its threads'
/// `/proc/PID/task/TID/children`.
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Time from kill -9 of the program to its new process, 50 times: the new
/// pid is seen as a new child of the daemon in /proc (polled every 50 µs),
/// so the API's round trip is not in the number. Before each kill the
/// daemon's API must report the program running again.
fn restart_latency(kind: Kind, venv: &Path, table: &mut Table) {
    let mut daemon = Instance::launch(kind, &sleepers(1), venv);
    daemon.all_running(1);
    let mut lat = Vec::new();
    let pid = |daemon: &mut Instance| {
        let states = daemon.states();
        let seen = states.values().next()?;
        seen.running.then_some(seen.pid).flatten()
    };
    let mut old = pid(&mut daemon).expect("a pid");
    for _ in 0..50 {
        // zistd's other children (its pipe holder) are not the program.
        let before = children(daemon.pid());
        let t = Instant::now();
        kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill -9");
        let new = loop {
            if let Some(&new) = children(daemon.pid()).iter().find(|p| !before.contains(p)) {
                break new;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no restart");
            std::thread::sleep(Duration::from_micros(50));
        };
        lat.push(t.elapsed());
        // `states` records the new pid for clean-up once the API shows it.
        loop {
            if pid(&mut daemon) == Some(new) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "never running again");
            std::thread::sleep(Duration::from_millis(1));
        }
        old = new;
        // Both daemons refuse to restart too fast forever; keep apart.
        std::thread::sleep(Duration::from_millis(150));
    }
    table.add(
        "restart after kill -9 to the new pid, p50 of 50",
        "ms",
        "≤ 2 ms",
        kind,
        percentile_ms(&mut lat, 50),
    );
    table.add(
        "restart after kill -9 to the new pid, p95",
        "ms",
        "",
        kind,
        percentile_ms(&mut lat, 95),
    );
}

/// The writer straight into a file, no daemon: how fast this machine takes
/// `bytes` into its page cache in `chunk`-byte writes, and at what CPU
/// cost (all of it the writer's own system time, read from
/// `RUSAGE_CHILDREN` as it is reaped); MB/s.
fn log_floor(chunk: usize, bytes: u64, table: &mut Table) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("direct.log");
    let file = std::fs::File::create(&path).expect("the floor's file");
    let exe = std::env::current_exe().expect("own path");
    let t = Instant::now();
    let mut child = Command::new(exe)
        .args(["writer", &chunk.to_string(), &bytes.to_string()])
        .stdout(file)
        .process_group(0)
        .spawn()
        .expect("the writer");
    lock_started().insert(child.id() as i32);
    let reaped_before = zist_benches::cpu_seconds(UsageWho::RUSAGE_CHILDREN);
    let _ = child.wait();
    let took = t.elapsed();
    let cpu = zist_benches::cpu_seconds(UsageWho::RUSAGE_CHILDREN) - reaped_before;
    floor_rows(
        table,
        "the writer straight into a file",
        "the writer",
        chunk,
        bytes,
        took,
        cpu,
    )
}

/// Adds a log floor's rows, `how` moved `bytes` in `chunk`-byte writes in
/// `took`, `who` using `cpu` seconds: its MB/s and CPU-s per GB; MB/s.
fn floor_rows(
    table: &mut Table,
    how: &str,
    who: &str,
    chunk: usize,
    bytes: u64,
    took: Duration,
    cpu: f64,
) -> f64 {
    let gb = bytes as f64 / 1e9;
    let mbps = gb * 1000.0 / took.as_secs_f64();
    table.add_floor(&format!("{how}, {chunk}-byte writes, MB/s"), mbps);
    table.add_floor(
        &format!("the same, {chunk}-byte writes, {who}'s CPU-s per GB"),
        cpu / gb,
    );
    mbps
}

/// The writer through a pipe into a file by [`relay`], no daemon: the
/// least any supervisor that captures output through a pipe can cost (the
/// writer's copy into the pipe, and a second copy from the pipe into the
/// page cache). Adds its MB/s and the relay's CPU-s per GB; MB/s.
fn pipe_floor(chunk: usize, bytes: u64, table: &mut Table) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("own path");
    let t = Instant::now();
    let mut writer = Command::new(&exe)
        .args(["writer", &chunk.to_string(), &bytes.to_string()])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the writer");
    lock_started().insert(writer.id() as i32);
    let pipe = writer.stdout.take().expect("the writer's stdout");
    let relay = Command::new(&exe)
        .arg("relay")
        .arg(dir.path().join("relayed.log"))
        .stdin(pipe)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("the relay");
    lock_started().insert(relay.id() as i32);
    let out = relay.wait_with_output().expect("the relay's output");
    let _ = writer.wait();
    let took = t.elapsed();
    let cpu: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    floor_rows(
        table,
        "the writer through a pipe, spliced into a file by a minimal relay",
        "the relay",
        chunk,
        bytes,
        took,
        cpu,
    )
}

fn log_throughput(kind: Kind, sizes: &Sizes, venv: &Path, table: &mut Table) {
    // One write(2) per line is the costliest way to log: a fifth of the bytes.
    // Targets: MB/s, CPU-s per GB, × the writer straight into a file, bytes lost.
    for (label, chunk, expected, targets, console) in [
        (
            "100-byte lines, one write each",
            100,
            sizes.log_bytes / 5,
            ["", "", "≥ 1.0", "0"],
            false,
        ),
        (
            "100-byte lines, Console on",
            100,
            sizes.log_bytes / 5,
            ["", "≤ 1.5 × off", "", "0"],
            true,
        ),
        (
            "4 KiB blocks",
            4096,
            sizes.log_bytes,
            ["≥ 1000", "≤ 1", "", "0"],
            false,
        ),
        (
            "64 KiB blocks",
            65536,
            sizes.log_bytes,
            ["", "≤ 0.5", "≥ 1.0", "0"],
            false,
        ),
    ] {
        if console && kind != Kind::Zist {
            continue;
        }
        // Each side starts with no dirty pages of the last one: the
        // kernel's writeback of an earlier row would slow this one by a
        // varying amount.
        // Each starts right after memory was freed (see zist_benches::warm_memory).
        nix::unistd::sync();
        zist_benches::warm_memory(expected);
        let floor = log_floor(chunk, expected, table);
        nix::unistd::sync();
        zist_benches::warm_memory(expected);
        let through_pipe = pipe_floor(chunk, expected, table);
        nix::unistd::sync();
        let go_dir = tempfile::tempdir().expect("temp dir");
        let go = go_dir.path().join("go");
        let program = Program::writer("writer", chunk, expected, &go);
        let mut daemon = Instance::launch_with(kind, &[program], venv, console);
        zist_benches::warm_memory(expected);
        std::fs::write(&go, b"").expect("the writer's go file");
        let file = daemon.log_file("writer");
        let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(600);
        // Timed from the first byte in the file: daemon start-up is not logging.
        while size() == 0 {
            assert!(Instant::now() < deadline, "the writer wrote nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (t, first) = (Instant::now(), size());
        let (cpu0, _) = usage(daemon.pid());
        // Until the file is whole, or stops growing for 2 s.
        let mut last = (0, Instant::now());
        loop {
            let now = size();
            if now >= expected {
                break;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            assert!(Instant::now() < deadline, "the writer never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t.elapsed();
        let (cpu1, _) = usage(daemon.pid());
        let got = size();
        let _ = daemon.states();
        let moved = (got - first) as f64;
        table.add(
            &format!("log {label}: MB/s into the file"),
            "MB/s",
            targets[0],
            kind,
            moved / took.as_secs_f64() / 1e6,
        );
        table.add(
            &format!("log {label}: daemon CPU-s per GB"),
            "CPU-s/GB",
            targets[1],
            kind,
            (cpu1 - cpu0) / (moved / 1e9),
        );
        table.add(
            &format!("log {label}: × the writer straight into a file (same run)"),
            "×",
            targets[2],
            kind,
            moved / took.as_secs_f64() / 1e6 / floor,
        );
        table.add(
            &format!(
                "log {label}: × the writer through a pipe into a file by a minimal relay (same run)"
            ),
            "×",
            "",
            kind,
            moved / took.as_secs_f64() / 1e6 / through_pipe,
        );
        table.add(
            &format!("log {label}: bytes lost"),
            "B",
            targets[3],
            kind,
            expected.saturating_sub(got) as f64,
        );
        if let Some(lines) = &daemon.console_lines {
            // The console's last lines may still be on their way.
            let want = expected / chunk as u64;
            let deadline = Instant::now() + Duration::from_secs(10);
            while lines.load(std::sync::atomic::Ordering::Relaxed) < want
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            table.add(
                &format!("log {label}: lines missing on stdout"),
                "lines",
                "0",
                kind,
                want.saturating_sub(lines.load(std::sync::atomic::Ordering::Relaxed)) as f64,
            );
        }
    }
}
