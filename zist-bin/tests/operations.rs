//! Operating zistd (docs/reference.md §11) with the real tools: promtool
//! and Prometheus on its /metrics, the Grafana dashboard in `examples/`.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use zist_core::testing::{eventually_blocking, request};

use crate::daemon::{Setup, TOKEN, Zistd, program};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// A zistd with a program that runs and writes, one that ended with status
/// 3, and one that sleeps; returns it once all three are where they stay.
fn fleet(setup: &Setup) -> Zistd {
    let chatty = setup.script("chatty.sh", "while true; do echo line; sleep 0.05; done");
    let ends = setup.script("ends.sh", "exit 3");
    setup.write_config(
        &(program("chatty", &chatty, "")
            + &program("ends", &ends, "Restart = \"never\"")
            + &program("sleeper", Path::new("/bin/sleep"), "Args = \"330\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "the fleet to settle", || {
        let list = zistd.list();
        let state = |name: &str| {
            list.iter()
                .find(|i| i["name"] == name)
                .map(|i| i["state"].clone())
        };
        state("chatty").is_some_and(|s| s == "running")
            && state("sleeper").is_some_and(|s| s == "running")
            && state("ends").is_some_and(|s| s == "exited")
    });
    zistd
}

/// A scrape of zistd's /metrics with the token.
fn scrape(zistd: &Zistd) -> String {
    let addr: SocketAddr = zistd.http().expect("HTTP API").parse().unwrap();
    let r = request(
        addr,
        "GET",
        "/metrics",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    r.body
}

/// The names of the samples in a scrape.
fn sample_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Runs a tool from Debian's `prometheus` package, or says how to get it.
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is not installed: this test needs Debian's prometheus package (apt-get install prometheus; .ci/run installs it)"
    );
    Command::new(name)
}

#[test]
fn promtool_finds_nothing_to_report_in_a_scrape() {
    let setup = Setup::new("");
    let zistd = fleet(&setup);
    let text = scrape(&zistd);
    for name in [
        "zist_process_state",
        "zist_process_restarts_total",
        "zist_process_ready",
        "zist_process_exit_code",
        "zist_process_last_exit_timestamp_seconds",
        "zist_process_log_bytes_total",
        "zist_process_log_lost_bytes_total",
        "zist_build_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            sample_names(&text).iter().any(|n| n == name),
            "no {name} in\n{text}"
        );
    }
    assert!(
        text.contains("zist_process_exit_code{name=\"ends\"} 3"),
        "{text}"
    );
    let path = setup.path("scrape.txt");
    std::fs::write(&path, &text).unwrap();
    let out = tool("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}\non\n{text}",
        out.status
    );
}

/// A Prometheus server of the test's own, ended (by its pid's group) when
/// dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(config: &Path, dir: &Path) -> Self {
        // A free port: the kernel's pick, let go just before Prometheus binds it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = dir.join("prometheus.log");
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("prometheus.err")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            log: dir.join("prometheus.err"),
        }
    }

    /// The result of an instant query, or why there is none.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encoded(expr));
        let r = request(self.addr, "GET", &path, "", b"").map_err(|e| e.to_string())?;
        let body = if r
            .head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            unchunked(&r.body)
        } else {
            r.body
        };
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if json["status"] != "success" {
            return Err(body);
        }
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `expr` has a result; returns it.
    fn eventually(&self, expr: &str, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.query(expr) {
                Ok(result) if !result.is_empty() => return result,
                Ok(_) => last = "an empty result".to_owned(),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("no result for {expr} within {limit:?}: {last}\nPrometheus said:\n{log}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `text` with every byte but letters, digits and `-._~` percent-encoded.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A chunked HTTP/1.1 body, decoded.
fn unchunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Every query of the example dashboard, with its variables filled in as
/// Grafana would for "all programs".
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(EXAMPLES).join("grafana/zist-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["State", "Restarts", "CPU", "Memory", "Log bytes"] {
        assert!(
            titles.iter().any(|t| t.starts_with(wanted)),
            "the dashboard has no {wanted} panel: {titles:?}"
        );
    }
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .replace("$__rate_interval", "10s")
                .replace("$name", ".*")
                .replace("$instance", ".*")
                .replace("$job", "zist")
        })
        .collect()
}

/// The metric names (zist's and zistd's own) an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("zist_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn prometheus_scrapes_zistd_with_the_example_config_and_the_dashboard_queries_answer() {
    let setup = Setup::new("");
    let zistd = fleet(&setup);
    let scraped = sample_names(&scrape(&zistd));

    // The dashboard reads only metrics zistd serves.
    let queries = dashboard_queries();
    assert!(queries.len() >= 6, "{queries:?}");
    for expr in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} reads no zist metric");
        for name in names {
            assert!(scraped.contains(&name), "{expr}: zistd serves no {name}");
        }
    }

    // The example scrape config, pointed at this zistd, its token in a file.
    let token_file = setup.path("zist.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let example = std::fs::read_to_string(Path::new(EXAMPLES).join("prometheus.yml")).unwrap();
    let mut config = example.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_owned()),
        (
            "/etc/prometheus/zist.token",
            token_file.display().to_string(),
        ),
        ("127.0.0.1:7000", zistd.http().unwrap().to_owned()),
    ] {
        assert!(
            config.contains(from),
            "examples/prometheus.yml has no {from}"
        );
        config = config.replace(from, &to);
    }
    let config_path = setup.path("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let prometheus = Prometheus::start(&config_path, &setup.path(""));

    // The target is up, and the series come back.
    let up = prometheus.eventually("up{job=\"zist\"} == 1", Duration::from_secs(30));
    assert_eq!(up.len(), 1, "{up:?}");
    let state = prometheus.eventually(
        "zist_process_state{state=\"running\"} == 1",
        Duration::from_secs(10),
    );
    let mut running: Vec<&str> = state
        .iter()
        .filter_map(|s| s["metric"]["name"].as_str())
        .collect();
    running.sort_unstable();
    assert_eq!(running, ["chatty", "sleeper"], "{state:?}");
    let exit = prometheus.eventually("zist_process_exit_code", Duration::from_secs(10));
    assert!(
        exit.iter()
            .any(|s| s["metric"]["name"] == "ends" && s["value"][1] == "3"),
        "{exit:?}"
    );
    let written = prometheus.eventually(
        "rate(zist_process_log_bytes_total{name=\"chatty\", stream=\"stdout\"}[10s]) > 0",
        Duration::from_secs(20),
    );
    assert_eq!(written.len(), 1, "{written:?}");

    // Every query of the dashboard answers with data.
    for expr in &queries {
        prometheus.eventually(expr, Duration::from_secs(20));
    }
}

/// Datagrams zistd sends to the socket in its `NOTIFY_SOCKET`, in order.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> Self {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram that `wanted` accepts; returns it.
    fn wait(&mut self, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(text.clone());
                if wanted(&text) {
                    return text;
                }
            }
        }
        panic!("no {what} within {limit:?}; zistd sent {:?}", self.seen);
    }

    /// What arrived since the last call, without waiting for more.
    fn count(&self, text: &str) -> usize {
        self.seen.iter().filter(|t| *t == text).count()
    }
}

#[test]
fn under_systemd_zistd_tells_ready_status_reload_watchdog_and_stopping() {
    let setup = Setup::new("");
    let env_file = setup.path("program.env");
    let dumps = setup.script(
        "dumps.sh",
        &format!("env > {}\nexec sleep 331", env_file.display()),
    );
    setup.write_config(
        &(program("dumps", &dumps, "")
            + &program("sleeper", Path::new("/bin/sleep"), "Args = \"332\"")),
    );
    let socket_path = setup.path("notify.sock");
    let mut notify = NotifySocket::bind(&socket_path);
    let mut zistd = Zistd::start_env(
        &setup.conf(),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let limit = Duration::from_secs(10);
    notify.wait("READY=1", limit, |t| t == "READY=1");
    notify.wait("the status with both running", limit, |t| {
        t == "STATUS=2 programs, 2 running"
    });

    // The watchdog, at half of WATCHDOG_USEC: about 10 in a second.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        notify.wait("WATCHDOG=1", limit, |t| t == "WATCHDOG=1");
    }
    assert!(notify.count("WATCHDOG=1") >= 5, "{:?}", notify.seen);

    // Programs do not see what systemd meant for zistd.
    eventually_blocking(limit, "the program's environment", || {
        std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains("PATH="))
    });
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_USEC"),
        "{env}"
    );

    // A reload: RELOADING=1 with the monotonic clock, then READY=1.
    kill_zistd(&zistd, Signal::SIGHUP);
    let reloading = notify.wait("RELOADING=1", limit, |t| t.starts_with("RELOADING=1"));
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(usec <= now && now - usec < 10_000_000, "{usec} vs {now}");
    notify.wait("READY=1 after the reload", limit, |t| t == "READY=1");

    // A stop of one program is told in the status.
    assert_eq!(zistd.cl(&["sleeper", "stop"]).code, 0);
    notify.wait("the status with one running", limit, |t| {
        t == "STATUS=2 programs, 1 running"
    });

    kill_zistd(&zistd, Signal::SIGTERM);
    notify.wait("STOPPING=1", limit, |t| t == "STOPPING=1");
    assert_eq!(zistd.wait_exit(limit), Some(0));
}

fn kill_zistd(zistd: &Zistd, signal: Signal) {
    nix::sys::signal::kill(zistd.pid(), signal).unwrap();
}

#[test]
fn console_lines_never_block_a_program_when_nobody_reads_zistd_stdout() {
    let setup = Setup::new("");
    let lines = 100_000;
    let pad = ".".repeat(80);
    let flood = setup.script(
        "flood.sh",
        &format!("exec seq -f 'line %06g {pad}' 1 {lines}"),
    );
    let late = setup.script(
        "late.sh",
        "echo late out; echo late err >&2; exec sleep 330",
    );
    setup.write_config(
        &("Console = true\n".to_owned()
            + &program("flood", &flood, "Restart = \"never\"")
            + &program("late", &late, "Autostart = false")),
    );
    let (mut zistd, resume) = Zistd::start_unread(&setup.conf());
    // 10 MB for a stdout nobody reads: the program still runs to its end,
    // its log file gets every line, and zistd keeps answering.
    eventually_blocking(Duration::from_secs(30), "flood to finish", || {
        zistd.info("flood")["state"] == "exited"
    });
    let info = zistd.info("flood");
    assert_eq!(info["exit_code"], 0, "{info}");
    let file = std::fs::read_to_string(setup.path("logs/flood.out.log")).unwrap();
    assert_eq!(file.lines().count(), lines, "the log file lost lines");
    let dropped = scrape(&zistd)
        .lines()
        .find_map(|l| l.strip_prefix("zist_console_dropped_lines_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("no zist_console_dropped_lines_total");
    assert!(dropped > 0, "nothing dropped for a stdout nobody read");
    // Read again: what was kept comes out as `NAME | line`, whole, in
    // order; then a line says how many were dropped, before the next ones.
    resume.send(()).unwrap();
    let started = zistd.cl(&["late", "start"]);
    assert_eq!(started.code, 0, "{started:?}");
    let seen = zistd.lines_until("late | late ", Duration::from_secs(10));
    let flooded: Vec<&String> = seen.iter().filter(|l| l.starts_with("flood | ")).collect();
    assert_eq!(
        flooded.first().map(|l| l.as_str()),
        Some(format!("flood | line 000001 {pad}").as_str())
    );
    let mut expect = 1;
    for line in &flooded {
        assert_eq!(
            line.len(),
            "flood | line 000001 ".len() + pad.len(),
            "{line}"
        );
        let n: usize = line["flood | line ".len()..][..6].parse().unwrap();
        assert!(n >= expect, "out of order: {line} after {}", expect - 1);
        expect = n + 1;
    }
    let notices: Vec<&String> = seen.iter().filter(|l| l.starts_with("[zist] ")).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let counted: u64 = notices[0]
        .strip_prefix("[zist] ")
        .and_then(|l| l.strip_suffix(" lines dropped: stdout was not read"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", notices[0]));
    assert!(counted >= dropped, "{counted} < {dropped}");
    // stdout and stderr alike, each line whole (their order is the pipes').
    let mut rest = vec![
        seen.last().unwrap().clone(),
        zistd.wait_line("late | late ", Duration::from_secs(10)),
    ];
    rest.sort();
    assert_eq!(rest, ["late | late err", "late | late out"]);
}

/// A tmpfs mounted for a test, unmounted when dropped (lazily if still busy).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.0).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes 4 KiB blocks to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = [b'f'; 4096];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            return;
        }
    }
}

#[test]
fn a_full_log_disk_loses_whole_lines_says_so_in_the_file_and_resumes() {
    let setup = Setup::new("");
    // Dropped after zistd (declared first), so its files are closed by then.
    let disk = Tmpfs::mount(&setup.path("disk"), "4m");
    let pad = "x".repeat(80);
    // About 1 MB/s: the disk fills when the test says, not before.
    let writer = setup.script(
        "writer.sh",
        &format!(
            "i=0; while :; do for _ in 1 2 3 4 5 6 7 8 9 10; do i=$((i+1)); printf 'line %08d {pad}\\n' $i; done; sleep 0.001; done"
        ),
    );
    let log = disk.0.join("writer.log");
    setup.write_config(&program(
        "writer",
        &writer,
        &format!("Logfile = \"{}\"\nLogMaxBytes = 0", log.display()),
    ));
    let mut zistd = setup.start();
    let line_len = format!("line 00000001 {pad}\n").len() as u64;
    let lost = |zistd: &mut Zistd| {
        zistd.info("writer")["log"]["stdout"]["lost"]
            .as_u64()
            .unwrap()
    };
    eventually_blocking(Duration::from_secs(10), "lines in the log", || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 100 * line_len)
            && zistd.info("writer")["state"] == "running"
    });
    let pid = zistd.info("writer")["pid"].clone();
    // The disk fills: output is lost (and counted), the program runs on.
    let filler = disk.0.join("filler");
    fill(&filler);
    eventually_blocking(Duration::from_secs(10), "bytes lost", || {
        lost(&mut zistd) > 1000 * line_len
    });
    let info = zistd.info("writer");
    assert!(info["state"] == "running" && info["pid"] == pid, "{info}");
    std::fs::remove_file(&filler).unwrap();
    eventually_blocking(Duration::from_secs(10), "the log to resume", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.find("[zist] ")
            .is_some_and(|at| text[at..].lines().count() > 100)
    });
    assert_eq!(zistd.cl(&["writer", "stop"]).code, 0);
    // Whole lines only; one notice where lines are missing, whose count is
    // exactly the bytes of the lines missing; every other line in order.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut expect = 1;
    // Each notice, with the lines missing where it stands.
    let mut notices: Vec<(String, Option<u64>)> = Vec::new();
    for line in text.lines() {
        if let Some(notice) = line.strip_prefix("[zist] ") {
            notices.push((notice.to_owned(), None));
            continue;
        }
        let n = line
            .strip_prefix("line ")
            .and_then(|l| l.strip_suffix(pad.as_str()))
            .and_then(|n| n.strip_suffix(' '))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("not a whole line: {line:?}"));
        match notices.last_mut() {
            Some((_, missing @ None)) => *missing = Some(n - expect),
            _ => assert_eq!(n, expect, "a line missing with no notice"),
        }
        expect = n + 1;
    }
    assert_eq!(notices.len(), 1, "{notices:?}");
    let (notice, missing_lines) = &notices[0];
    let lost_bytes = missing_lines.unwrap() * line_len;
    assert_eq!(
        notice,
        &format!(
            "{lost_bytes} bytes lost: cannot write {}: No space left on device (os error 28)",
            log.display()
        )
    );
    let info = zistd.info("writer");
    assert_eq!(info["log"]["stdout"]["lost"], lost_bytes, "{info}");
    assert_eq!(
        info["log"]["stdout"]["written"],
        text.len() as u64 - notice.len() as u64 - "[zist] \n".len() as u64,
        "{info}"
    );
    let sample = format!(
        "zist_process_log_lost_bytes_total{{name=\"writer\",stream=\"stdout\"}} {lost_bytes}"
    );
    let scraped = scrape(&zistd);
    assert!(
        scraped.lines().any(|l| l == sample),
        "no {sample} in\n{scraped}"
    );
    // The daemon log says when it was written again.
    let daemon_log = std::fs::read_to_string(setup.path("logs/zistd.log")).unwrap();
    assert!(
        daemon_log.contains(&format!(
            "{}: written again, after {lost_bytes} bytes were lost",
            log.display()
        )),
        "{daemon_log}"
    );
    drop(zistd);
}

#[test]
fn a_fast_stream_onto_a_full_disk_counts_every_byte_it_could_not_write() {
    let setup = Setup::new("");
    // Dropped after zistd (declared first), so its files are closed by then.
    let disk = Tmpfs::mount(&setup.path("disk"), "4m");
    // 14.9 MB in 4 KiB writes: spliced from the pipe into the file, until
    // the disk is full mid-splice.
    let writer = setup.script("seq.sh", "exec seq 1 2000000");
    let log = disk.0.join("seq.log");
    setup.write_config(&program(
        "seq",
        &writer,
        &format!(
            "Logfile = \"{}\"\nLogMaxBytes = 0\nRestart = \"never\"",
            log.display()
        ),
    ));
    let mut zistd = setup.start();
    let expected: String = (1..=2_000_000).map(|i| format!("{i}\n")).collect();
    let counted = |zistd: &mut Zistd| {
        let info = zistd.info("seq");
        let stdout = &info["log"]["stdout"];
        (stdout["written"].as_u64(), stdout["lost"].as_u64())
    };
    // Every byte is in the file or counted lost, none twice.
    eventually_blocking(
        Duration::from_secs(10),
        "every byte accounted for",
        || matches!(counted(&mut zistd), (Some(w), Some(l)) if w + l == expected.len() as u64),
    );
    let (written, _) = counted(&mut zistd);
    let text = std::fs::read(&log).unwrap();
    assert_eq!(written, Some(text.len() as u64));
    assert!(
        text.len() > 1_000_000,
        "only {} bytes in the file",
        text.len()
    );
    assert!(
        expected.as_bytes().starts_with(&text),
        "the file is not the output's start: bytes doubled or reordered"
    );
    drop(zistd);
}
