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
            "{} is missing: run `cargo build --release --bin zistd --bin zistcl` first",
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

/// Sends `request` `n` times over one keep-alive connection to `addr`,
/// reading each answer (Content-Length framed) to its last byte; returns
/// the time of each.
pub fn keep_alive_latencies(addr: &str, request: &str, n: usize) -> Vec<Duration> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut samples = Vec::with_capacity(n);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(request.as_bytes()).expect("write");
        let mut got = 0;
        let total = loop {
            if got == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            got += stream.read(&mut buf[got..]).expect("read");
            let head_end = buf[..got].windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                break end + 4 + length;
            }
        };
        if buf.len() < total {
            buf.resize(total, 0);
        }
        while got < total {
            got += stream.read(&mut buf[got..total]).expect("read");
        }
        samples.push(t.elapsed());
    }
    samples
}
