//! Adopting processes zist did not start (docs/reference.md §8.4), and
//! programs that daemonize (PidFile).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use zist_core::testing::eventually_blocking;

use crate::daemon::{Setup, TOKEN, alive, program};

/// A process started outside zist, in a process group of its own (as a
/// shell's job is), whose parent (this test) reaps it when it ends, as a
/// shell would; ended with its group and its descendants on drop.
struct Outside {
    pid: i32,
    ended: std::sync::mpsc::Receiver<()>,
    done: bool,
}

impl Outside {
    fn start(script: &str, stdout: &Path, cwd: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(stdout).unwrap();
        let mut child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .current_dir(cwd)
            .env("ZIST_ADOPT_MARK", "outside")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until sh has exec'd, the process is a copy of this test.
        let this = std::env::current_exe().unwrap();
        eventually_blocking(Duration::from_secs(10), "sh to run", || {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e != this)
                && !cmdline(pid).trim().is_empty()
        });
        let (tx, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        Self {
            pid,
            ended,
            done: false,
        }
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it has ended (and is reaped).
    fn ended(&mut self) -> bool {
        self.done = self.done || self.ended.try_recv().is_ok();
        self.done
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if !self.ended() {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.ended.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// The numbers of a log of numbered lines, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// RFC 3339 `...Z` as seconds since the epoch (enough for these tests).
fn epoch_of(rfc3339: &str) -> f64 {
    let out = Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

const LOOP: &str = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done";

#[test]
fn an_adopted_loop_logs_through_zist_without_a_lost_line_and_restarts_from_its_command_line() {
    let setup = Setup::new("");
    let mut zistd = setup.start();
    let old = setup.path("old.log");
    let mut outside = Outside::start(LOOP, &old, &setup.path(""));
    let pid = outside.pid();
    let spawned = SystemTime::now();
    eventually_blocking(Duration::from_secs(10), "the loop to print", || {
        lines_in(&old) >= 100
    });

    let asked = Instant::now();
    let adopted = zistd.rpc("process.adopt", json!({"pid": pid, "name": "loop"}));
    let took = asked.elapsed();
    let info = &adopted["result"];
    assert_eq!(info["state"], "running", "{adopted}");
    assert_eq!(info["pid"], pid, "{adopted}");
    assert!(info["message"].is_null(), "captured: {adopted}");
    let started = epoch_of(info["started_at"].as_str().unwrap());
    let real = spawned
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (started - real).abs() < 1.5,
        "started_at is the real start ({started} vs {real})"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Its output now goes to zist: the old file stops growing, zist's log
    // and tail grow, and together they hold every number once.
    let log = setup.path("logs/loop.out.log");
    eventually_blocking(Duration::from_secs(10), "zist's log to grow", || {
        lines_in(&log) >= 50
    });
    let tail = zistd.rpc("process.logs", json!({"name": "loop", "stream": "stdout"}));
    assert!(
        !tail["result"].as_array().unwrap().is_empty(),
        "the tail holds its lines: {tail}"
    );
    let frozen = lines_in(&old);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines_in(&old), frozen, "the old file no longer grows");
    let mut all = numbers(&std::fs::read_to_string(&old).unwrap());
    all.extend(numbers(&std::fs::read_to_string(&log).unwrap()));
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected, "every number once, in order");

    let stats = zistd.rpc("process.stats", json!({"name": "loop"}));
    assert!(
        stats["result"]["memory_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );

    // kill -9: restarted from its command line, working directory and
    // environment, now as zist's own child with zist's pipes.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    eventually_blocking(Duration::from_secs(5), "the old one to be reaped", || {
        outside.ended()
    });
    let mut new = 0;
    eventually_blocking(Duration::from_secs(10), "a restart", || {
        let info = zistd.info("loop");
        new = info["pid"].as_i64().unwrap_or(0) as i32;
        info["state"] == "running" && new != pid && new != 0 && info["restarts"] == 1
    });
    let environ = std::fs::read(format!("/proc/{new}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("ZIST_ADOPT_MARK=outside"),
        "the recorded environment"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{new}/cwd")).unwrap(),
        setup.path("").canonicalize().unwrap()
    );
    let before = lines_in(&log);
    eventually_blocking(Duration::from_secs(10), "the new one to log", || {
        lines_in(&log) > before + 10
    });

    // Stop ends it and its descendants.
    let children = crate::daemon::descendants(new);
    let stopped = zistd.rpc("process.stop", json!({"name": "loop"}));
    assert_eq!(stopped["result"]["state"], "stopped", "{stopped}");
    assert!(!alive(new));
    for child in children {
        assert!(!alive(child), "descendant {child} ended");
    }
}

#[test]
fn adopt_refuses_what_it_may_not_take_with_the_spec_codes() {
    let setup = Setup::new(&program("s", Path::new("/bin/sleep"), "Args = \"310\""));
    let mut zistd = setup.start();
    let code = |v: &Value| v["error"]["code"].as_i64();
    let me = std::process::id() as i32;
    for (pid, expected, why) in [
        (1, -32005, "pid 1"),
        (zistd.pid().as_raw(), -32005, "zistd itself"),
        (me, -32005, "an ancestor of zistd"),
        (i32::MAX - 7, -32001, "no such pid"),
    ] {
        let answer = zistd.rpc("process.adopt", json!({ "pid": pid }));
        assert_eq!(code(&answer), Some(expected), "{why}: {answer}");
    }
    if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
        let answer = zistd.rpc("process.adopt", json!({"pid": 2}));
        assert_eq!(code(&answer), Some(-32005), "a kernel thread: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("kernel thread")
        );
    }
    let supervised = zistd.info("s")["pid"].as_i64().unwrap();
    let answer = zistd.rpc("process.adopt", json!({ "pid": supervised }));
    assert_eq!(code(&answer), Some(-32002), "{answer}");
    let cl = zistd.cl(&["adopt", "x"]);
    assert_eq!(cl.code, 2, "{cl:?}");
    assert_eq!(zistd.list().len(), 1, "nothing was added");
}

#[test]
fn an_adopted_process_survives_reload_and_crash_and_restarts_after_a_stop_of_zistd() {
    let setup = Setup::new("Web = true\n");
    let mut zistd = setup.start();
    let mut outside = Outside::start(LOOP, &setup.path("old.log"), &setup.path(""));
    let pid = outside.pid();
    // Through the CLI, named after its executable.
    let out = zistd.cl(&["--json", "adopt", &pid.to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let info: Value = serde_json::from_str(&out.stdout).unwrap();
    let name = info["name"].as_str().unwrap().to_owned();
    assert!(name == "dash" || name == "sh" || name == "bash", "{info}");
    assert_eq!(info["pid"], pid);

    // A reload keeps it, untouched.
    kill(zistd.pid(), Signal::SIGHUP).unwrap();
    let report = zistd.cl(&["--json", "reload"]);
    assert_eq!(report.code, 0, "{report:?}");
    assert_eq!(zistd.info(&name)["pid"], pid);

    // SIGKILL, then start again: adopted again, same pid, output still captured.
    kill(zistd.pid(), Signal::SIGKILL).unwrap();
    zistd.wait_exit(Duration::from_secs(5));
    let mut zistd = setup.start();
    let info = zistd.info(&name);
    assert_eq!(info["pid"], pid, "{info}");
    eventually_blocking(Duration::from_secs(5), "running (StartSecs)", || {
        zistd.info(&name)["state"] == "running"
    });
    let log = setup.path(&format!("logs/{name}.out.log"));
    let before = lines_in(&log);
    eventually_blocking(
        Duration::from_secs(10),
        "its output after the crash",
        || lines_in(&log) > before + 10,
    );
    let mut all = numbers(&std::fs::read_to_string(setup.path("old.log")).unwrap());
    all.extend(numbers(&std::fs::read_to_string(&log).unwrap()));
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected, "nothing lost or repeated across the crash");

    // SIGTERM stops it; started again, it runs from its recorded spec.
    kill(zistd.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    eventually_blocking(Duration::from_secs(5), "the stop to end it", || {
        outside.ended()
    });
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "a new copy to run", || {
        let info = zistd.info(&name);
        info["state"] == "running" && info["pid"] != pid
    });

    // Over HTTP too: a second outside process.
    let http = zistd.http().unwrap().to_owned();
    let mut second = Outside::start("exec sleep 311", &setup.path("second.log"), &setup.path(""));
    let body = json!({"pid": second.pid(), "name": "second", "capture": false}).to_string();
    let response = zist_core::testing::request(
        http.parse().unwrap(),
        "POST",
        "/api/v1/adopt",
        &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let info: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(info["state"], "running");
    assert!(
        info["message"].as_str().unwrap().contains("next restart"),
        "{info}"
    );
    let stopped = zistd.rpc("process.stop", json!({"name": "second"}));
    assert_eq!(stopped["result"]["state"], "stopped", "{stopped}");
    eventually_blocking(Duration::from_secs(5), "the stop to end it", || {
        second.ended()
    });
    drop(zistd);
}

#[test]
fn a_process_that_cannot_be_traced_is_adopted_and_says_its_output_is_not_captured() {
    use nix::sys::ptrace;
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let setup = Setup::new("");
    let zistd = setup.start();
    let mut child = Command::new("/bin/sleep")
        .arg("312")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    // A process has one tracer at most: this test takes the place.
    ptrace::seize(pid, ptrace::Options::empty()).unwrap();
    let adopted = zistd.rpc("process.adopt", json!({"pid": pid.as_raw()}));
    // Let it go again: stop it for the tracer, then detach.
    let _ = ptrace::interrupt(pid);
    let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
    let _ = ptrace::detach(pid, None);
    let info = &adopted["result"];
    assert_eq!(info["state"], "running", "{adopted}");
    let message = info["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not captured") && message.contains("next restart"),
        "{adopted}"
    );
    assert!(child.try_wait().unwrap().is_none(), "it runs on as it was");
    // Its parent (this test) reaps it when it ends, as a shell would.
    let (tx, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let name = info["name"].as_str().unwrap();
    let stopped = zistd.rpc("process.stop", json!({ "name": name }));
    assert_eq!(stopped["result"]["state"], "stopped", "{stopped}");
    let status = ended.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_program_that_daemonizes_is_followed_through_its_pid_file() {
    let setup = Setup::new("");
    let launcher = setup.script(
        "launch.sh",
        "setsid sleep 1011 < /dev/null > /dev/null 2>&1 &\necho $! > \"$0.pid\"\nexit 0",
    );
    let pid_file = format!("{}.pid", launcher.display());
    let bare = setup.script(
        "bare.sh",
        "setsid sleep 1012 < /dev/null > /dev/null 2>&1 &\nsleep 0.3\nexit 0",
    );
    setup.write_config(
        &(program(
            "d",
            &launcher,
            &format!("PidFile = \"{pid_file}\"\nRestartDelay = \"0s\""),
        ) + &program("bare", &bare, "RestartDelay = \"0s\"")),
    );
    let mut zistd = setup.start();
    let daemon =
        |zistd: &mut crate::daemon::Zistd| zistd.info("d")["pid"].as_i64().unwrap_or(0) as i32;
    eventually_blocking(Duration::from_secs(10), "the daemon to be followed", || {
        let info = zistd.info("d");
        info["state"] == "running" && cmdline(daemon(&mut zistd)).contains("sleep 1011")
    });
    let first = daemon(&mut zistd);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first.to_string()
    );
    // No restart loop: a second later it is the same daemon.
    std::thread::sleep(Duration::from_millis(1200));
    let info = zistd.info("d");
    assert_eq!(info["pid"], first, "{info}");
    assert_eq!(info["restarts"], 0, "{info}");

    // The daemon's death is the program's: its policy starts it again.
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    eventually_blocking(Duration::from_secs(10), "a new daemon", || {
        let info = zistd.info("d");
        let now = daemon(&mut zistd);
        info["state"] == "running" && now != first && cmdline(now).contains("sleep 1011")
    });
    assert_eq!(zistd.info("d")["restarts"], 1);
    let second = daemon(&mut zistd);
    let stopped = zistd.rpc("process.stop", json!({"name": "d"}));
    assert_eq!(stopped["result"]["state"], "stopped", "{stopped}");
    assert!(!alive(second), "stop reaches the daemon");

    // Without PidFile the launcher's exit ends its daemon with it (its
    // cgroup, or its group): restarted in a loop, it leaks none.
    eventually_blocking(Duration::from_secs(20), "bare to cycle", || {
        zistd.info("bare")["restarts"].as_u64() >= Some(3)
    });
    let daemons = |zistd: &crate::daemon::Zistd| -> Vec<i32> {
        crate::daemon::descendants(zistd.pid().as_raw())
            .into_iter()
            .filter(|&p| cmdline(p).contains("sleep 1012"))
            .collect()
    };
    let running = daemons(&zistd);
    assert!(
        running.len() <= 1,
        "one cycle's daemon at most: {running:?}"
    );
    let stopped = zistd.rpc("process.stop", json!({"name": "bare"}));
    assert_eq!(stopped["result"]["state"], "stopped", "{stopped}");
    let left = daemons(&zistd);
    assert!(left.is_empty(), "daemons left running: {left:?}");
}
