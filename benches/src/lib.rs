//! Helpers shared by zist's load runs (and the dashboard's browser test):
//! flags, percentiles, a zistd launched from outside, /proc readings, raw
//! HTTP timings and a headless Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub mod browser;

/// The value after `--programs` in `args`, or `default`.
pub fn programs_flag(args: &[String], default: usize) -> usize {
    args.iter()
        .position(|a| a == "--programs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `p`-th percentile of `samples` in milliseconds (sorts them).
pub fn percentile_ms(samples: &mut [Duration], p: usize) -> f64 {
    samples.sort();
    let index = (samples.len() * p / 100).min(samples.len().saturating_sub(1));
    samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A binary built beside this one (`cargo build --release --bin NAME`);
/// exits with a hint when it is missing.
pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name(name);
    if !path.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --bin {name}` first",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// (CPU seconds, RSS bytes) of a process, from /proc.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (ticks as f64 / hz, rss)
}

/// A release zistd on a config of its own, in its own process group: SIGTERM
/// on drop (it stops every program), then SIGKILL to the group if it lingers.
pub struct Daemon {
    child: Child,
    /// zistd's pid.
    pub pid: u32,
    /// The JSON-RPC address from the READY line.
    pub rpc: String,
    /// The HTTP API's address from the READY line, if served.
    pub http: Option<String>,
    /// From spawn to the READY line.
    pub launch: Duration,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes `config` (daemon keys and programs) into a temp folder and
    /// starts zistd on it; returns once zistd printed READY.
    pub fn launch(config: &str) -> Self {
        let zistd = sibling("zistd");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf_path = dir.path().join("conf.toml");
        std::fs::write(&conf_path, config).expect("config");
        let t0 = Instant::now();
        let mut child = Command::new(&zistd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("zistd");
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("READY ") => break line,
                Some(_) => {}
                None => panic!("zistd exited before READY"),
            }
        };
        let launch = t0.elapsed();
        // Keep draining zistd's stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let json: serde_json::Value =
            serde_json::from_str(&ready["READY ".len()..]).expect("READY json");
        Self {
            child,
            pid,
            rpc: json["rpc"].as_str().expect("rpc address").to_owned(),
            http: json["http"].as_str().map(str::to_owned),
            launch,
            _dir: dir,
        }
    }

    /// The folder zistd's config is in (LogDir = "logs" is under it).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        t.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// CPU seconds (user and system) of this process (`RUSAGE_SELF`) or of
/// its reaped children (`RUSAGE_CHILDREN`).
pub fn cpu_seconds(who: nix::sys::resource::UsageWho) -> f64 {
    let usage = nix::sys::resource::getrusage(who).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

/// A log writer for the load runs: `total` bytes to stdout, `block`
/// repeated (the last one cut short), one write(2) per block, as fast as
/// stdout takes them. Exits 1 if stdout fails.
pub fn write_blocks(block: &[u8], total: u64) {
    let stdout = std::io::stdout();
    let mut left = total;
    while left > 0 {
        let mut piece = &block[..left.min(block.len() as u64) as usize];
        while !piece.is_empty() {
            match nix::unistd::write(&stdout, piece) {
                Ok(written) => {
                    piece = &piece[written..];
                    left -= written as u64;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("writer: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Writes `bytes` into a scratch file and deletes it, so the next
/// measurement finds that much memory just freed, as a machine that has
/// been writing finds it. (A VM whose balloon reports free memory to its
/// host loses pages to the host about 2 s after they are freed; the first
/// touch of such a page costs a fault in the host, and logging ran 2–4×
/// slower for the side that met them, the writer straight into a file
/// too; which side met them depended on how long it took to start.)
pub fn warm_memory(bytes: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("warm")).expect("the warm-up file");
    let block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        std::io::Write::write_all(&mut file, &block[..n]).expect("the warm-up file");
        left -= n as u64;
    }
}

/// The machine's floor for starting and stopping `n` programs, with no
/// supervisor: `n` bare spawns of `/bin/sleep 3600` (the standard library's
/// posix_spawn, each in its own process group) from one thread per core,
/// then kill -9 and reap them all. With `pipes`, each child's stdout and
/// stderr are pipes (held open, never read), as a supervisor that keeps
/// logs must make them. Returns (threads, spawn time, kill and reap time).
pub fn spawn_floor(n: usize, pipes: bool) -> (usize, Duration, Duration) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads);
    let t0 = Instant::now();
    let children: Vec<Child> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    (0..per)
                        .map_while(|_| {
                            let mut command = Command::new("/bin/sleep");
                            command.arg("3600").process_group(0);
                            if pipes {
                                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                            }
                            command.spawn().ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let spawned = t0.elapsed();
    let complete = children.len() == per * threads;
    let t0 = Instant::now();
    for child in &children {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    }
    for mut child in children {
        let _ = child.wait();
    }
    let reaped = t0.elapsed();
    assert!(complete, "a bare spawn of /bin/sleep failed");
    (threads, spawned, reaped)
}

/// One HTTP/1.1 keep-alive connection that sends whole requests and reads
/// each answer to its last byte (framed by Content-Length, or by the
/// server closing), connecting again when the server closed it.
pub struct KeepAlive {
    addr: String,
    stream: Option<Box<dyn Duplex>>,
    buf: Vec<u8>,
}

/// A connection both ways: TCP, or a Unix socket.
trait Duplex: Read + Write + Send {}

impl<T: Read + Write + Send> Duplex for T {}

impl KeepAlive {
    /// A connection to `addr` (`HOST:PORT`, or `unix:PATH`), made on the first exchange.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            stream: None,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Sends `request` and reads its answer whole; returns the status code.
    /// A connection the server closes after answering is made again next time.
    pub fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream: Box<dyn Duplex> = match self.addr.strip_prefix("unix:") {
                    Some(path) => {
                        let stream = std::os::unix::net::UnixStream::connect(path)?;
                        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                        Box::new(stream)
                    }
                    None => {
                        let stream = std::net::TcpStream::connect(&self.addr)?;
                        stream.set_nodelay(true)?;
                        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                        Box::new(stream)
                    }
                };
                self.stream.insert(stream)
            }
        };
        let answer = write_and_read(stream, request, &mut self.buf);
        match answer {
            Ok((status, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Reads what the server sent next onto `buf`; `Ok(0)` when it closed.
fn read_more(stream: &mut (impl Read + ?Sized), buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 1 << 16];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads more onto `buf`; the server closing first is an error.
fn read_more_or_eof(stream: &mut (impl Read + ?Sized), buf: &mut Vec<u8>) -> std::io::Result<()> {
    match read_more(stream, buf)? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )),
        _ => Ok(()),
    }
}

/// Writes `request`, then reads one answer into `buf`: (status, whether the
/// connection stays open).
fn write_and_read(
    stream: &mut (impl Read + Write + ?Sized),
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    stream.write_all(request)?;
    buf.clear();
    let head_end = loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            break end;
        }
        read_more_or_eof(stream, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let keep = header("connection:").is_none_or(|v| v != "close")
        && (head.starts_with("http/1.1")
            || header("connection:").is_some_and(|v| v == "keep-alive"));
    let mut body = buf.split_off(head_end + 4);
    if header("transfer-encoding:").is_some() {
        // Neither daemon measured sends one for an API answer.
        return Err(std::io::Error::other("a transfer-encoded answer: not read"));
    }
    if let Some(length) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < length {
            read_more_or_eof(stream, &mut body)?;
        }
    } else {
        // No framing: the body ends with the connection.
        while read_more(stream, &mut body)? > 0 {}
        return Ok((status, false));
    }
    *buf = body;
    Ok((status, keep))
}

/// Sends `request` `n` times over one keep-alive connection to `addr`,
/// reading each answer to its last byte; returns the time of each.
pub fn keep_alive_latencies(addr: &str, request: &str, n: usize) -> Vec<Duration> {
    let mut connection = KeepAlive::new(addr);
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let status = connection.exchange(request.as_bytes()).expect("an answer");
            assert_eq!(status, 200, "{request}");
            t.elapsed()
        })
        .collect()
}
