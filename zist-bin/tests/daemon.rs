//! zistd and zistcl as users run them: real binaries, real configs, real processes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use zist_core::testing::{eventually_blocking, request};

pub(crate) const TOKEN: &str = "daemon-test-token-9f2c";
pub(crate) const ZISTD: &str = env!("CARGO_BIN_EXE_zistd");
pub(crate) const ZISTCL: &str = env!("CARGO_BIN_EXE_zistcl");

/// A temp folder with a config; runs zistd on it.
pub(crate) struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) fn new(programs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let setup = Self { dir };
        setup.write_config(programs);
        setup
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn conf(&self) -> PathBuf {
        self.path("conf.toml")
    }

    pub(crate) fn write_config(&self, programs: &str) {
        let text = format!(
            "Token = \"{TOKEN}\"\nRPCPort = 0\nHTTPPort = 0\nLogDir = \"logs\"\n{programs}"
        );
        std::fs::write(self.conf(), text).unwrap();
    }

    pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    pub(crate) fn start(&self) -> Zistd {
        Zistd::start(&self.conf())
    }
}

/// The cgroup v2 folder process `pid` is in.
pub(crate) fn cgroup_of(pid: i32) -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        after
            .starts_with("cgroup2 ")
            .then(|| before.split_ascii_whitespace().nth(4).map(str::to_owned))?
    })?;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(&mount).join(path.trim_start_matches('/')))
}

impl Drop for Setup {
    /// Ends what a zistd killed in the test left behind: the holder, and
    /// every program process its state file names.
    fn drop(&mut self) {
        let state = self.path("state");
        if let Ok(state) = std::fs::read_to_string(state.join("state.json"))
            && let Ok(state) = serde_json::from_str::<Value>(&state)
            && let Some(programs) = state["programs"].as_object()
        {
            let pids: Vec<i32> = programs
                .values()
                .filter_map(|p| p["process"]["pid"].as_i64())
                .map(|pid| pid as i32)
                .collect();
            end_left_programs(&pids);
        }
        if let Ok(pid) = std::fs::read_to_string(state.join("holder.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Kills the process groups of programs a killed zistd left (each leads
/// its own), then removes their cgroups once empty.
fn end_left_programs(pids: &[i32]) {
    let mut cgroups = Vec::new();
    for &pid in pids {
        cgroups.extend(cgroup_of(pid).filter(|d| d.to_string_lossy().contains("/zist.")));
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for dir in &cgroups {
        let _ = eventually_try(|| std::fs::remove_dir(dir).is_ok() || !dir.exists());
    }
    // zistd's own folder, with the (empty) ones it made for programs that
    // had not started when it was killed.
    let parents: std::collections::BTreeSet<_> =
        cgroups.iter().filter_map(|d| d.parent()).collect();
    for parent in parents {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let _ = std::fs::remove_dir(parent);
    }
}

/// Polls `done` for up to 2 s; whether it came true.
fn eventually_try(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running zistd in its own process group; on drop it gets SIGTERM (which
/// stops every program), then SIGKILL if it has not exited in time, and every
/// program pid seen is killed by its group.
pub(crate) struct Zistd {
    pub(crate) child: Child,
    pub(crate) rpc: String,
    /// The HTTP API's address, when Web = true.
    pub(crate) http: Option<String>,
    lines: mpsc::Receiver<String>,
    /// Lines printed before READY, not looked at yet.
    early: std::collections::VecDeque<String>,
    pub(crate) seen: Vec<i32>,
}

impl Zistd {
    pub(crate) fn start(conf: &Path) -> Self {
        Self::start_under(&[], conf)
    }

    /// Starts zistd under a wrapper command (`prlimit --nofile=64:64`, ...).
    pub(crate) fn start_under(wrapper: &[&str], conf: &Path) -> Self {
        Self::start_exe(Path::new(ZISTD), wrapper, conf)
    }

    /// Starts the zistd executable at `exe` (a copy, for upgrades).
    pub(crate) fn start_exe(exe: &Path, wrapper: &[&str], conf: &Path) -> Self {
        Self::start_with(exe, wrapper, conf, &[])
    }

    /// Starts zistd with `env` added to its environment.
    pub(crate) fn start_env(conf: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(Path::new(ZISTD), &[], conf, env)
    }

    /// Starts zistd whose stdout nobody reads after its READY line, until
    /// the sender returned is used or dropped.
    pub(crate) fn start_unread(conf: &Path) -> (Self, mpsc::Sender<()>) {
        let (resume, stalled) = mpsc::channel();
        let zistd = Self::start_full(Path::new(ZISTD), &[], conf, &[], Some(stalled));
        (zistd, resume)
    }

    fn start_with(exe: &Path, wrapper: &[&str], conf: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_full(exe, wrapper, conf, env, None)
    }

    fn start_full(
        exe: &Path,
        wrapper: &[&str],
        conf: &Path,
        env: &[(&str, &str)],
        stalled: Option<mpsc::Receiver<()>>,
    ) -> Self {
        let mut command = match wrapper {
            [] => Command::new(exe),
            [first, rest @ ..] => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
        };
        let mut child = command
            .envs(env.iter().copied())
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ready = line.starts_with("READY ");
                if tx.send(line).is_err() {
                    break;
                }
                if ready && let Some(stalled) = &stalled {
                    // Until resumed (or the sender is dropped).
                    let _ = stalled.recv();
                }
            }
        });
        let mut this = Self {
            child,
            rpc: String::new(),
            http: None,
            lines,
            early: Default::default(),
            seen: Vec::new(),
        };
        let mut early = this.lines_until("READY ", Duration::from_secs(20));
        let ready = early.pop().unwrap();
        this.early = early.into();
        let json: Value = serde_json::from_str(&ready["READY ".len()..]).unwrap();
        // zistd's own pid, or 1 when a wrapper made it a namespace's init.
        assert!(
            json["pid"].as_u64() == Some(u64::from(this.child.id())) || json["pid"] == 1,
            "{ready}"
        );
        // The HTTP API listens on loopback too (or is off: null).
        assert!(
            json["http"].is_null()
                || json["http"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{ready}"
        );
        this.rpc = json["rpc"].as_str().unwrap().to_owned();
        this.http = json["http"].as_str().map(str::to_owned);
        assert!(
            this.rpc.starts_with("127.0.0.1:"),
            "not on loopback: {ready}"
        );
        this
    }

    /// Waits for a stdout line starting with `prefix`.
    pub(crate) fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let mut lines = self.lines_until(prefix, limit);
        lines.pop().unwrap()
    }

    /// The stdout lines up to the first that starts with `prefix`, that one included.
    pub(crate) fn lines_until(&mut self, prefix: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = match self.early.pop_front() {
                Some(line) => Ok(line),
                None => self.lines.recv_timeout(left),
            };
            match next {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "zistd printed no line starting with {prefix:?} within {limit:?}; the last lines: {:?}",
                    &seen[seen.len().saturating_sub(5)..]
                ),
            }
        }
    }

    pub(crate) fn cl(&mut self, args: &[&str]) -> Output {
        let mut full = vec![self.rpc.as_str(), TOKEN];
        full.extend_from_slice(args);
        let out = zistcl(&full, &[]);
        if let Ok(list) = serde_json::from_str::<Vec<Value>>(&out.stdout) {
            self.seen.extend(
                list.iter()
                    .filter_map(|i| i["pid"].as_i64())
                    .map(|p| p as i32),
            );
        }
        out
    }

    /// Calls a JSON-RPC method; the whole response.
    pub(crate) fn rpc(&self, method: &str, params: Value) -> Value {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = request(
            self.rpc.parse().unwrap(),
            "POST",
            "/",
            &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
            body.to_string().as_bytes(),
        )
        .unwrap();
        serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
    }

    /// One program's info, by name.
    pub(crate) fn info(&mut self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no program {name}"))
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The HTTP API's address, when Web = true.
    pub(crate) fn http(&self) -> Option<&str> {
        self.http.as_deref()
    }

    pub(crate) fn list(&mut self) -> Vec<Value> {
        let out = self.cl(&["--json", "all"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Zistd {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        for program in &self.seen {
            let _ = killpg(Pid::from_raw(*program), Signal::SIGKILL);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs zistcl, bounded in time.
pub(crate) fn zistcl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(ZISTCL)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("zistcl {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

pub(crate) use zist_core::testing::descendants;

pub(crate) fn program(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "\n[[Program]]\nName = \"{name}\"\nPath = \"{}\"\nStartSecs = \"100ms\"\n{extra}\n",
        path.display()
    )
}

#[test]
fn a_bad_config_prints_every_problem_and_exits_1() {
    let setup = Setup::new("[[Program]]\nName = \"a b\"\nPath = \"/bin/true\"\nRestrat = true\n");
    std::fs::create_dir_all(setup.path("conf.d")).unwrap();
    std::fs::write(
        setup.path("conf.d/x.toml"),
        "Name = \"x\"\nPath = \"/bin/true\"\nStopSignal = \"NOPE\"\n",
    )
    .unwrap();
    let out = Command::new(ZISTD)
        .arg("-c")
        .arg(setup.conf())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("conf.toml:6:") && stderr.contains("program name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("conf.toml:8:") && stderr.contains("`Restart`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("x.toml:3:") && stderr.contains("StopSignal"),
        "{stderr}"
    );
    // `check` prints the same and exits 1; a good config passes.
    let check = Command::new(ZISTD)
        .args(["check", "-c"])
        .arg(setup.conf())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let good = Setup::new("");
    let check = Command::new(ZISTD)
        .args(["check", "-c"])
        .arg(good.conf())
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // No token: a start-up error that says what to do.
    std::fs::write(good.conf(), "RPCPort = 0\n").unwrap();
    let out = Command::new(ZISTD)
        .arg("-c")
        .arg(good.conf())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zistd generate"));
}

#[test]
fn generate_and_install_make_a_working_config() {
    let out = Command::new(ZISTD).arg("generate").output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 43, "32 bytes in URL-safe base64: {token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let other = Command::new(ZISTD).arg("generate").output().unwrap();
    assert_ne!(String::from_utf8_lossy(&other.stdout).trim(), token);
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("etc");
    let out = Command::new(ZISTD)
        .args(["install", "--prefix"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = prefix.join("conf.toml");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(prefix.join("conf.d").is_dir());
    let check = Command::new(ZISTD)
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0));
    // The systemd unit, beside the config for a prefix of one's own.
    let unit = std::fs::read_to_string(prefix.join("zistd.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=process",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line} in\n{unit}");
    }
    let exec = format!(
        "ExecStart=\"{}\" -c \"{}\"",
        std::fs::canonicalize(ZISTD).unwrap().display(),
        conf.display()
    );
    assert!(unit.lines().any(|l| l == exec), "no {exec} in\n{unit}");
    // Installing over an existing config is refused.
    let again = Command::new(ZISTD)
        .args(["install", "--prefix"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn zistcl_drives_a_real_zistd() {
    let setup = Setup::new("");
    let ticker = setup.script(
        "ticker.sh",
        "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done",
    );
    setup.write_config(
        &(program("ticker", &ticker, "")
            + &program(
                "idle",
                Path::new("/bin/sleep"),
                "Args = \"300\"\nAutostart = false",
            )),
    );
    let mut zistd = setup.start();
    let status = zistd.cl(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("is alive") && status.stdout.contains("2 programs"),
        "{status:?}"
    );
    let list = zistd.list();
    assert_eq!(list.len(), 2);
    let table = zistd.cl(&["all"]);
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert!(
        table.stdout.contains("ticker") && table.stdout.contains("idle"),
        "{table:?}"
    );
    let started = zistd.cl(&["--json", "idle", "start"]);
    let info: Value = serde_json::from_str(&started.stdout).unwrap();
    zistd.seen.push(info["pid"].as_i64().unwrap() as i32);
    assert_eq!(info["state"], "starting");
    // Exit codes: refused 1, usage 2, unauthorised 3.
    assert_eq!(zistd.cl(&["idle", "start"]).code, 1);
    let missing = zistd.cl(&["nope", "stop"]);
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
    assert_eq!(zistd.cl(&["frobnicate"]).code, 2);
    let rpc = zistd.rpc.clone();
    let wrong = zistcl(&[&rpc, "wrong-token", "status"], &[]);
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(wrong.stderr.contains("token"), "{wrong:?}");
    // TOKEN `-` comes from ZIST_TOKEN.
    let env = zistcl(&[&rpc, "-", "status"], &[("ZIST_TOKEN", TOKEN)]);
    assert_eq!(env.code, 0, "{env:?}");
    // Logs and follow.
    eventually_blocking(Duration::from_secs(10), "ticks in the log", || {
        zistd.cl(&["ticker", "stdout"]).stdout.contains("tick 3")
    });
    let stats = zistd.cl(&["--json", "ticker", "stats"]);
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0);
    let stopped = zistd.cl(&["--json", "all", "stop"]);
    let stopped: Vec<Value> = serde_json::from_str(&stopped.stdout).unwrap();
    assert!(
        stopped.iter().all(|i| i["state"] == "stopped"),
        "{stopped:?}"
    );
}

#[test]
fn sigterm_stops_every_program_and_exits_0() {
    let setup = Setup::new("");
    setup.write_config(&program(
        "sleeper",
        Path::new("/bin/sleep"),
        "Args = \"300\"",
    ));
    let mut zistd = setup.start();
    let pid = zistd.list()[0]["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    kill(Pid::from_raw(zistd.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!alive(pid), "a program outlived zistd's SIGTERM");
}

#[test]
fn sighup_and_reload_apply_the_new_config() {
    let setup = Setup::new("");
    setup.write_config(&program("one", Path::new("/bin/sleep"), "Args = \"300\""));
    let mut zistd = setup.start();
    assert_eq!(zistd.list().len(), 1);
    setup.write_config(
        &(program("one", Path::new("/bin/sleep"), "Args = \"300\"")
            + &program("two", Path::new("/bin/sleep"), "Args = \"301\"")),
    );
    kill(Pid::from_raw(zistd.child.id() as i32), Signal::SIGHUP).unwrap();
    eventually_blocking(
        Duration::from_secs(10),
        "SIGHUP to add the new program",
        || zistd.list().len() == 2,
    );
    // `reload` reports the difference; a broken config changes nothing.
    setup.write_config(&program("two", Path::new("/bin/sleep"), "Args = \"301\""));
    let report = zistd.cl(&["--json", "reload"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["removed"], serde_json::json!(["one"]));
    assert_eq!(report["unchanged"], serde_json::json!(["two"]));
    std::fs::write(
        setup.conf(),
        format!("Token = \"{TOKEN}\"\nRPCPort = 0\n[[Program]]\nNme = \"x\"\n"),
    )
    .unwrap();
    let refused = zistd.cl(&["reload"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("nothing changed"), "{refused:?}");
    assert_eq!(zistd.list().len(), 1);
}

#[test]
fn kill_leaves_programs_running_for_the_next_zistd_and_kill_all_stops_them() {
    let setup = Setup::new("");
    let ticker = setup.script("ticker.sh", "while true; do echo tick; sleep 0.05; done");
    setup.write_config(&program("ticker", &ticker, ""));
    let mut zistd = setup.start();
    let pid = zistd.list()[0]["pid"].as_i64().unwrap() as i32;
    let out = zistd.cl(&["kill"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(alive(pid), "kill must leave the program running");
    let log = setup.path("logs/ticker.out.log");
    let before = std::fs::read_to_string(&log).unwrap().lines().count();

    // The next zistd on the same StateDir adopts it: same pid, one copy,
    // and what it wrote meanwhile (held in its pipe) reaches the log.
    let mut zistd = setup.start();
    let info = &zistd.list()[0];
    assert_eq!(info["pid"].as_i64(), Some(i64::from(pid)), "{info}");
    // Adopted; `starting` until it has been up StartSecs.
    assert!(
        info["state"] == "running" || info["state"] == "starting",
        "{info}"
    );
    eventually_blocking(
        Duration::from_secs(10),
        "the adopted program's output",
        || std::fs::read_to_string(&log).unwrap().lines().count() >= before + 5,
    );
    assert_eq!(zistd.cl(&["kill", "all"]).code, 0);
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!alive(pid), "kill all must stop the program");
}

#[test]
fn the_daemon_log_is_readable_and_never_holds_the_token() {
    let setup = Setup::new("");
    setup.write_config(&program("p", Path::new("/bin/sleep"), "Args = \"300\""));
    let mut zistd = setup.start();
    let log = zistd.cl(&["log"]);
    assert!(log.stdout.contains("started"), "{log:?}");
    zistd.cl(&["frobnicate"]);
    assert_eq!(zistd.cl(&["log", "clear"]).code, 0);
    // The seed routes carry the token in the path: good, failing and
    // unknown requests alike leave no trace of it.
    let http = zistd.http.clone().expect("Web = true serves the HTTP API");
    for path in [
        format!("/{TOKEN}"),
        format!("/{TOKEN}/p/stats"),
        format!("/{TOKEN}/nope/kill"),
        format!("/{TOKEN}/p/frobnicate"),
        format!("/{TOKEN}x/p/stdout"),
    ] {
        let response = request(http.parse().unwrap(), "GET", &path, "", b"");
        assert!(response.is_ok(), "{path}: {response:?}");
    }
    kill(Pid::from_raw(zistd.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    let file = std::fs::read_to_string(setup.path("logs/zistd.log")).unwrap();
    assert!(
        file.contains("started") && file.contains("shutting down"),
        "{file}"
    );
    assert!(!file.contains(TOKEN), "the token reached the daemon log");
    let early: Vec<String> = zistd.early.drain(..).collect();
    let printed: Vec<String> = early.into_iter().chain(zistd.lines.try_iter()).collect();
    assert!(!printed.is_empty());
    assert!(
        !printed.iter().any(|l| l.contains(TOKEN)),
        "the token reached stdout"
    );
}

/// kB of file pages resident in `pid` (its code and read-only data).
fn resident_file_kb(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("RssFile in /proc/PID/status")
}

#[test]
fn zistd_lets_go_of_its_start_up_code_and_of_serving_s_and_serves_on() {
    let setup = Setup::new("");
    setup.write_config(
        &(program("a", Path::new("/bin/sleep"), "Args = \"300\"")
            + &program("b", Path::new("/bin/sleep"), "Args = \"300\"")),
    );
    let mut zistd = setup.start();
    let pid = zistd.pid();
    // Started: config read, programs spawned, both servers and the page set up.
    let started = resident_file_kb(pid);
    let log = setup.path("logs/zistd.log");
    eventually_blocking(Duration::from_secs(10), "the start-up pages let go", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("start-up code pages let go"))
    });
    let settled = resident_file_kb(pid);
    assert!(
        settled * 2 < started,
        "file pages resident: {started} kB started, {settled} kB after letting go"
    );
    // What runs afterwards is read back in: every interface still answers.
    let pids: Vec<Value> = zistd.list().iter().map(|p| p["pid"].clone()).collect();
    assert!(pids.iter().all(Value::is_i64), "{pids:?}");
    let http = zistd
        .http()
        .expect("Web = true serves the HTTP API")
        .to_owned();
    let page = request(http.parse().unwrap(), "GET", "/", "", b"").unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(zistd.cl(&["a", "restart"]).code, 0);
    eventually_blocking(Duration::from_secs(10), "a to run again", || {
        let after: Vec<Value> = zistd.list().iter().map(|p| p["pid"].clone()).collect();
        after[0].is_i64() && after[0] != pids[0] && after[1] == pids[1]
    });
    // Serving brought code back in; once the servers have been quiet a
    // while, it is let go again.
    let served = resident_file_kb(pid);
    let what = format!("serving's pages let go ({served} kB resident after serving)");
    eventually_blocking(Duration::from_secs(30), &what, || {
        resident_file_kb(pid) * 4 < served * 3
    });
    let page = request(http.parse().unwrap(), "GET", "/", "", b"").unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Ends, when dropped, each program whose pid a file lists (one per
/// line), and its cgroup.
struct KillListed(PathBuf);

impl KillListed {
    fn pids(&self) -> Vec<Pid> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok().map(Pid::from_raw))
            .collect()
    }
}

impl Drop for KillListed {
    fn drop(&mut self) {
        let pids: Vec<i32> = self.pids().into_iter().map(Pid::as_raw).collect();
        end_left_programs(&pids);
    }
}

#[test]
fn sigterm_while_programs_start_stops_them_all_and_zistd_exits_0() {
    let setup = Setup::new("");
    let pids = setup.path("pids");
    let starter = setup.script(
        "starter.sh",
        &format!("echo $$ >> {}\nexec sleep 300", pids.display()),
    );
    let programs: String = (0..300)
        .map(|i| program(&format!("p{i}"), &starter, ""))
        .collect();
    setup.write_config(&programs);
    let listed = KillListed(pids.clone());
    let mut zistd = Command::new(ZISTD)
        .arg("-c")
        .arg(setup.conf())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Pid::from_raw(zistd.id() as i32);
    // Programs are starting: the first has run.
    eventually_blocking(Duration::from_secs(20), "a first program", || {
        !listed.pids().is_empty()
    });
    kill(group, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = zistd.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = zistd.wait();
            panic!("zistd did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let left: Vec<Pid> = listed
        .pids()
        .into_iter()
        .filter(|&pid| kill(pid, None).is_ok())
        .collect();
    assert!(left.is_empty(), "programs left running: {left:?}");
    // Nothing is left to hold: the holder has gone too.
    eventually_blocking(Duration::from_secs(10), "the holder to quit", || {
        std::os::unix::net::UnixStream::connect(setup.path("state/holder.sock")).is_err()
    });
}

#[test]
fn follow_prints_new_lines_live() {
    let setup = Setup::new("");
    let ticker = setup.script(
        "ticker.sh",
        "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done",
    );
    setup.write_config(&program("ticker", &ticker, ""));
    let zistd = setup.start();
    let mut follower = Command::new(ZISTCL)
        .args([zistd.rpc.as_str(), TOKEN, "ticker", "stdout", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let a = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a first followed line");
    let b = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a second followed line");
    let _ = follower.kill();
    let _ = follower.wait();
    let n = |l: &str| l.trim_start_matches("tick ").parse::<u64>().unwrap();
    assert_eq!(n(&b), n(&a) + 1);
}

/// (status, body) of `GET path` with the test token over TLS, trusting only `cacert`.
fn https_get(addr: &str, path: &str, cacert: &Path) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cacert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    // A server may close without close_notify; what came before counts.
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn https_serves_with_the_configured_certificate_and_refuses_untrusted_ones() {
    let setup = Setup::new("");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    std::fs::write(setup.path("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(setup.path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let tls = "Protocol = \"https\"\nCertFile = \"cert.pem\"\nKeyFile = \"key.pem\"\n";
    setup.write_config(&format!(
        "{tls}{}",
        program("p", Path::new("/bin/sleep"), "Args = \"300\"")
    ));
    let mut zistd = setup.start();
    let url = format!("https://{}", zistd.rpc);
    let cacert = setup.path("cert.pem");
    let cacert = cacert.to_str().unwrap();
    let ok = zistcl(&["--cacert", cacert, &url, TOKEN, "--json", "all"], &[]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let list: Vec<Value> = serde_json::from_str(&ok.stdout).unwrap();
    zistd.seen.extend(
        list.iter()
            .filter_map(|i| i["pid"].as_i64())
            .map(|p| p as i32),
    );
    assert_eq!(list.len(), 1);
    // Not trusted: exit 3, no silent downgrade.
    let untrusted = zistcl(&[&url, TOKEN, "status"], &[]);
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
    // Following works over wss with the same trust.
    let mut follower = Command::new(ZISTCL)
        .args(["--cacert", cacert, &url, TOKEN, "p", "stdout", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        follower.try_wait().unwrap().is_none(),
        "follow over wss ended at once"
    );
    let _ = follower.kill();
    let _ = follower.wait();
    let plain = zistcl(&[&zistd.rpc.clone(), TOKEN, "status"], &[]);
    assert_eq!(
        plain.code, 3,
        "plain http against https must fail: {plain:?}"
    );
    // The HTTP API speaks https too, with the same certificate, and never
    // answers plain HTTP.
    let http = zistd.http.clone().expect("Web = true serves the HTTP API");
    let (status, body) = https_get(&http, "/api/v1/processes", &setup.path("cert.pem"));
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "p");
    let plain = request(http.parse().unwrap(), "GET", "/api/v1/processes", "", b"");
    assert!(!plain.as_ref().is_ok_and(|r| r.status == 200), "{plain:?}");
    drop(zistd);

    // A missing certificate is a start-up error, never a fallback to http.
    std::fs::remove_file(setup.path("cert.pem")).unwrap();
    let out = Command::new(ZISTD)
        .arg("-c")
        .arg(setup.conf())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cert.pem"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
}

#[test]
fn zistcl_l_reads_port_and_token_from_the_local_config() {
    let setup = Setup::new("");
    // -l needs the real port in the config: take a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!("Token = \"{TOKEN}\"\nRPCPort = {port}\nHTTPPort = 0\nLogDir = \"logs\"\n");
    std::fs::write(setup.conf(), text).unwrap();
    let _zistd = setup.start();
    let conf = setup.conf();
    let out = zistcl(&["-l", "-c", conf.to_str().unwrap(), "status"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("is alive"), "{out:?}");
}

#[test]
fn zistcl_reads_addresses_strictly_and_says_what_answered() {
    let setup = Setup::new("");
    let zistd = setup.start();
    let port = zistd.rpc.rsplit_once(':').unwrap().1.to_owned();
    // A bare port means this machine.
    let out = zistcl(&[&port, TOKEN, "status"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    // A host without a port, or a port that is not one: usage, exit 2, the form shown.
    for bad in [
        "localhost",
        "127.0.0.1",
        "127.0.0.1:",
        "host:99999",
        "a b:80",
        "0",
    ] {
        let out = zistcl(&[bad, TOKEN, "status"], &[]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stderr.contains("HOST:PORT"), "{bad}: {out:?}");
    }
    // The wrong token: not authorised, from the HTTP status.
    let out = zistcl(&[&zistd.rpc, "wrong-token", "status"], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not authorised"), "{out:?}");
    // The HTTP API's port answers, but it is not the JSON-RPC port.
    let http = zistd.http.clone().unwrap();
    let out = zistcl(&[&http, TOKEN, "status"], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("not zistd's JSON-RPC port") && !out.stderr.contains("is it running"),
        "{out:?}"
    );
    // Nothing listening: is it running?
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = zistcl(&[&free, TOKEN, "status"], &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("is it running"), "{out:?}");
}

/// A self-signed certificate for `names`, marked CA:TRUE as `openssl req
/// -x509` makes it: (certificate PEM, key PEM).
fn self_signed_ca(names: &[&str]) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn cacert_trusts_the_servers_own_self_signed_ca_certificate_and_says_why_not() {
    let setup = Setup::new("");
    let (cert, key) = self_signed_ca(&["127.0.0.1"]);
    std::fs::write(setup.path("cert.pem"), cert).unwrap();
    std::fs::write(setup.path("key.pem"), key).unwrap();
    let (other, _) = self_signed_ca(&["127.0.0.1"]);
    std::fs::write(setup.path("other.pem"), other).unwrap();
    let (elsewhere, elsewhere_key) = self_signed_ca(&["example.com"]);
    std::fs::write(setup.path("elsewhere.pem"), elsewhere).unwrap();
    std::fs::write(setup.path("elsewhere-key.pem"), elsewhere_key).unwrap();
    let serve_with = |cert: &str, key: &str| {
        let tls = format!("Protocol = \"https\"\nCertFile = \"{cert}\"\nKeyFile = \"{key}\"\n");
        setup.write_config(&tls);
        setup.start()
    };
    let zistd = serve_with("cert.pem", "key.pem");
    let url = format!("https://{}", zistd.rpc);
    let path = |f: &str| setup.path(f).to_str().unwrap().to_owned();
    let out = zistcl(&["--cacert", &path("cert.pem"), &url, TOKEN, "status"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = zistcl(
        &["--cacert", &path("other.pem"), &url, TOKEN, "status"],
        &[],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("unknown issuer"), "{out:?}");
    drop(zistd);
    // A certificate made out to another name.
    let zistd = serve_with("elsewhere.pem", "elsewhere-key.pem");
    let url = format!("https://{}", zistd.rpc);
    let out = zistcl(
        &["--cacert", &path("elsewhere.pem"), &url, TOKEN, "status"],
        &[],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("name mismatch"), "{out:?}");
}

#[test]
fn check_reports_what_would_fail_at_start() {
    let setup = Setup::new("");
    let plain = setup.path("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    setup.write_config(&format!(
        "{}{}",
        program("plain", &plain, ""),
        program(
            "nowhere",
            Path::new("/bin/sleep"),
            "Workingdir = \"missing\""
        )
    ));
    let out = Command::new(ZISTD)
        .args(["check", "-c"])
        .arg(setup.conf())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not executable"), "{stderr}");
    assert!(stderr.contains("missing is not a folder"), "{stderr}");
}

#[test]
fn a_low_descriptor_limit_leaves_the_api_answering_and_says_why_programs_are_fatal() {
    let programs: String = (0..40)
        .map(|i| {
            program(
                &format!("p{i:02}"),
                Path::new("/bin/sleep"),
                "Args = \"300\"",
            )
        })
        .collect();
    let setup = Setup::new(&programs);
    let mut zistd = Zistd::start_under(&["prlimit", "--nofile=64:64"], &setup.conf());
    // Wait until the programs that run have written (and so opened their
    // log files).
    let written = || {
        std::fs::read_dir(setup.path("logs")).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .count()
        })
    };
    eventually_blocking(
        Duration::from_secs(20),
        "a program to write its lines",
        || written() > 0,
    );
    std::thread::sleep(Duration::from_millis(300));
    let list = zistd.list();
    assert_eq!(list.len(), 40);
    let fatal: Vec<&Value> = list.iter().filter(|i| i["state"] == "fatal").collect();
    let running = list.iter().filter(|i| i["pid"].is_i64()).count();
    assert!(
        running > 0,
        "nothing started under 64 descriptors: {list:?}"
    );
    assert!(
        !fatal.is_empty(),
        "40 programs cannot fit in 64 descriptors: {list:?}"
    );
    for info in &fatal {
        let why = info["error"].as_str().unwrap_or_default();
        assert!(why.contains("file descriptors"), "{info}");
    }
    // The API keeps answering, call after call.
    for _ in 0..30 {
        assert_eq!(zistd.cl(&["status"]).code, 0);
    }
    let log = zistd.cl(&["log"]).stdout;
    assert!(log.contains("room for about"), "{log}");
    assert!(
        log.lines().filter(|l| l.contains("cannot accept")).count() <= 1,
        "{log}"
    );
    // Stopping them all still works.
    assert_eq!(zistd.cl(&["all", "stop"]).code, 0);
}
