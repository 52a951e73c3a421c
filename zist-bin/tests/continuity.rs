//! zistd outlives itself (docs/reference.md §8): what users asked, the
//! programs they added and the programs that run survive zistd's restarts,
//! reloads, crashes and upgrades.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};
use zist_core::testing::eventually_blocking;

use crate::daemon::{Setup, alive, cgroup_of, program};

#[test]
fn what_users_ask_survives_a_restart_and_a_reload() {
    let setup = Setup::new("");
    let flaky = setup.script(
        "flaky.sh",
        "if [ -e \"$0.ran\" ]; then exec sleep 300; fi\ntouch \"$0.ran\"\nsleep 0.3\nexit 1",
    );
    let config = |a_args: &str| {
        program(
            "a",
            Path::new("/bin/sleep"),
            &format!("Args = \"{a_args}\""),
        ) + &program(
            "b",
            Path::new("/bin/sleep"),
            "Args = \"301\"\nAutostart = false",
        ) + &program("d", &flaky, "")
    };
    setup.write_config(&config("300"));
    let mut zistd = setup.start();
    assert_eq!(zistd.cl(&["a", "stop"]).code, 0);
    assert_eq!(zistd.cl(&["b", "start"]).code, 0);
    let added = zistd.rpc(
        "process.add",
        json!({"spec": {"Name": "c", "Path": "/bin/sleep", "Args": "302", "StartSecs": "100ms"}}),
    );
    assert_eq!(added["result"]["state"], "starting", "{added}");
    eventually_blocking(Duration::from_secs(10), "d to restart once", || {
        let d = zistd.info("d");
        d["restarts"] == 1 && d["state"] == "running"
    });

    // SIGTERM, then start again: every intent holds.
    kill(zistd.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    let mut zistd = setup.start();
    let state = |zistd: &mut crate::daemon::Zistd, name: &str| zistd.info(name)["state"].clone();
    assert_eq!(
        state(&mut zistd, "a"),
        "stopped",
        "a was stopped through the API"
    );
    eventually_blocking(Duration::from_secs(10), "b and c to run again", || {
        state(&mut zistd, "b") == "running" && state(&mut zistd, "c") == "running"
    });
    assert_eq!(zistd.info("d")["restarts"], 1, "restarts survive a restart");

    // A reload that changes the stopped program keeps it stopped, and
    // keeps the program added at run time.
    setup.write_config(&config("299"));
    kill(zistd.pid(), Signal::SIGHUP).unwrap();
    let report = zistd.cl(&["--json", "reload"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert!(report["removed"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(state(&mut zistd, "a"), "stopped");
    assert_eq!(zistd.info("a")["args"], json!(["299"]));
    assert_eq!(state(&mut zistd, "c"), "running");
    assert_eq!(zistd.info("d")["restarts"], 1, "restarts survive a reload");

    // Removed, it is gone for good.
    let removed = zistd.rpc("process.remove", json!({"name": "c"}));
    assert_eq!(removed["result"], true, "{removed}");
    kill(zistd.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    let mut zistd = setup.start();
    assert!(zistd.list().iter().all(|i| i["name"] != "c"));
}

#[test]
fn a_detached_program_stays_detached_across_a_restart() {
    let setup = Setup::new("");
    setup.write_config(&program("s", Path::new("/bin/sleep"), "Args = \"303\""));
    let mut zistd = setup.start();
    let pid = zistd.info("s")["pid"].as_i64().unwrap() as i32;
    assert_eq!(zistd.cl(&["s", "detach"]).code, 0);
    kill(zistd.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(alive(pid));
    let mut zistd = setup.start();
    let info = zistd.info("s");
    assert_eq!(info["state"], "detached", "{info}");
    assert_eq!(info["pid"].as_i64(), Some(i64::from(pid)), "{info}");
    // Started when asked: a second, supervised copy.
    assert_eq!(zistd.cl(&["s", "start"]).code, 0);
    let new = zistd.info("s")["pid"].as_i64().unwrap() as i32;
    assert_ne!(new, pid);
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

#[test]
fn a_torn_or_garbage_state_file_is_a_warning_and_a_fresh_start() {
    let setup = Setup::new("");
    setup.write_config(&program("s", Path::new("/bin/sleep"), "Args = \"304\""));
    std::fs::create_dir_all(setup.path("state")).unwrap();
    for garbage in [
        "{\"format\": 1, \"programs\": {\"s\": {\"intent\": \"st",
        "\u{0}\u{1}garbage",
    ] {
        std::fs::write(setup.path("state/state.json"), garbage).unwrap();
        let mut zistd = setup.start();
        eventually_blocking(Duration::from_secs(10), "s to run", || {
            zistd.info("s")["state"] == "running"
        });
        let log = zistd.cl(&["log"]);
        assert!(log.stdout.contains("is corrupt"), "{log:?}");
        kill(zistd.pid(), Signal::SIGTERM).unwrap();
        assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    }
}

/// Processes whose parent is `parent`, with their state letter (`Z`: zombie).
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse().ok()) == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

/// The most zombie children `parent` had at any of several looks over `span`.
fn most_zombies(parent: i32, span: Duration) -> usize {
    let end = std::time::Instant::now() + span;
    let mut most = 0;
    while std::time::Instant::now() < end {
        let zombies = children_of(parent).iter().filter(|c| c.1 == 'Z').count();
        most = most.max(zombies);
        std::thread::sleep(Duration::from_millis(100));
    }
    most
}

#[test]
fn orphans_of_programs_reparent_to_zistd_and_are_reaped() {
    let setup = Setup::new("");
    let spawner = setup.script(
        "spawner.sh",
        "while true; do (sleep 0.1 &); sleep 0.1; done",
    );
    setup.write_config(&program("spawner", &spawner, ""));
    let mut zistd = setup.start();
    let pid = zistd.pid().as_raw();
    eventually_blocking(
        Duration::from_secs(10),
        "an orphan to reparent to zistd",
        || {
            children_of(pid).iter().any(|&(child, _)| {
                std::fs::read_to_string(format!("/proc/{child}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
        },
    );
    assert!(
        most_zombies(pid, Duration::from_secs(2)) <= 2,
        "orphans are left as zombies"
    );
    let _ = zistd.list();
}

#[test]
fn as_pid_1_with_the_container_config_zistd_reaps_every_orphan_and_sigterm_ends_it_fast() {
    let setup = Setup::new("");
    // The image's config (examples/Dockerfile), on loopback, with a token
    // and the test's folders; more programs in its Confdir.
    let image_conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/container.toml"
    ))
    .unwrap();
    let mut conf = format!("Token = \"{}\"\n", crate::daemon::TOKEN);
    for line in image_conf.lines() {
        let line = match line.split(" = ").next() {
            Some("Bind") => "Bind = \"127.0.0.1\"".to_owned(),
            Some("RPCPort" | "HTTPPort") => line.replace(|c: char| c.is_ascii_digit(), "") + "0",
            Some("LogDir") => format!("LogDir = \"{}\"", setup.path("logs").display()),
            Some("StateDir") => format!("StateDir = \"{}\"", setup.path("state").display()),
            _ => line.to_owned(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    std::fs::write(setup.conf(), conf).unwrap();
    let spawner = setup.script(
        "spawner.sh",
        "while true; do (sleep 0.1 &); sleep 0.1; done",
    );
    std::fs::create_dir(setup.path("conf.d")).unwrap();
    std::fs::write(
        setup.path("conf.d/spawner.toml"),
        format!("Name = \"spawner\"\nPath = \"{}\"\n", spawner.display()),
    )
    .unwrap();
    std::fs::write(
        setup.path("conf.d/quiet.toml"),
        "Name = \"quiet\"\nPath = \"/bin/sleep\"\nArgs = \"305\"\n",
    )
    .unwrap();
    let mut zistd = crate::daemon::Zistd::start_under(
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        &setup.conf(),
    );
    // Console = true: program lines on zistd's stdout, named.
    zistd.wait_line("hello | hello 1", Duration::from_secs(10));
    eventually_blocking(Duration::from_secs(10), "every program to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    let unshare = zistd.pid().as_raw();
    let init = children_of(unshare)
        .first()
        .map(|c| c.0)
        .expect("unshare's child, zistd");
    assert!(
        most_zombies(init, Duration::from_secs(3)) <= 2,
        "zombies accumulate under zistd as PID 1"
    );
    let asked = std::time::Instant::now();
    kill(nix::unistd::Pid::from_raw(init), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    // zistd stopped its programs itself (the kernel's SIGKILL of a PID
    // namespace would leave no word), and said so on stdout before exiting.
    zistd.wait_line("hello | hello stops", Duration::from_secs(1));
    let log = std::fs::read_to_string(setup.path("logs/hello.out.log")).unwrap();
    assert!(log.ends_with("hello stops\n"), "{log}");
}

/// A program that prints 1, 2, 3, ... one line every 10 ms.
fn counter(setup: &Setup) -> std::path::PathBuf {
    setup.script(
        "counter.sh",
        "i=0\nwhile true; do i=$((i+1)); echo $i; sleep 0.01; done",
    )
}

/// Asserts the log holds 1..=n, each once, in order; returns n.
fn assert_counted(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap();
    let numbers: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i + 1, "line {} of {}", i + 1, log.display());
    }
    numbers.len()
}

fn pid_of(info: &Value) -> i32 {
    info["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {info}")) as i32
}

#[test]
fn after_sigkill_the_next_zistd_adopts_what_runs_and_restarts_what_died() {
    let setup = Setup::new("");
    let counter = counter(&setup);
    setup.write_config(
        &(program("counter", &counter, "")
            + &program("quiet", Path::new("/bin/sleep"), "Args = \"306\"")
            + &program("victim", Path::new("/bin/sleep"), "Args = \"307\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "every program to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    let pids: Vec<i32> = ["counter", "quiet", "victim"]
        .iter()
        .map(|n| pid_of(&zistd.info(n)))
        .collect();
    let started_at = zistd.info("counter")["started_at"].clone();
    kill(zistd.pid(), Signal::SIGKILL).unwrap();
    zistd.wait_exit(Duration::from_secs(10)).unwrap_or_default();
    kill(nix::unistd::Pid::from_raw(pids[2]), Signal::SIGKILL).unwrap();
    // While zistd is down the counter writes on, into the held pipe.
    let log = setup.path("logs/counter.out.log");
    let lines_at_crash = std::fs::read_to_string(&log).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pids[0]), "the counter died with zistd");

    let mut zistd = setup.start();
    let counter_info = zistd.info("counter");
    assert_eq!(pid_of(&counter_info), pids[0], "{counter_info}");
    assert_eq!(counter_info["state"], "running");
    assert_eq!(counter_info["started_at"], started_at);
    assert_eq!(pid_of(&zistd.info("quiet")), pids[1]);
    eventually_blocking(
        Duration::from_secs(10),
        "the victim to be restarted",
        || {
            let v = zistd.info("victim");
            v["state"] == "running" && v["pid"].as_i64() != Some(i64::from(pids[2]))
        },
    );
    assert_eq!(zistd.info("victim")["restarts"], 1);
    // What the counter wrote while zistd was down reaches the log.
    eventually_blocking(
        Duration::from_secs(10),
        "the output written meanwhile",
        || std::fs::read_to_string(&log).unwrap().lines().count() > lines_at_crash + 30,
    );
    // One copy of each program, and stop works on the adopted one. Copies
    // are counted by session: the counter's own forks (each `sleep`, before
    // its exec) show the same command line, in the same session.
    let copies: std::collections::BTreeSet<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .is_ok_and(|c| c.contains(counter.to_str().unwrap()))
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the command name: state, ppid, pgrp, session.
            Some(
                stat.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(3)?
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "a second copy of the counter was started: {copies:?}"
    );
    assert_eq!(zistd.cl(&["counter", "stop"]).code, 0);
    assert!(!alive(pids[0]));
    assert!(assert_counted(&log) > lines_at_crash + 30);
}

#[test]
fn killing_the_holder_kills_no_program_and_zistd_replaces_it() {
    let setup = Setup::new("");
    let counter = counter(&setup);
    setup.write_config(&program("counter", &counter, ""));
    let mut zistd = setup.start();
    let pid = pid_of(&zistd.info("counter"));
    let holder_pid = || -> i32 {
        std::fs::read_to_string(setup.path("state/holder.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let first = holder_pid();
    kill(nix::unistd::Pid::from_raw(first), Signal::SIGKILL).unwrap();
    eventually_blocking(Duration::from_secs(10), "a new holder", || {
        let now = holder_pid();
        now != first && alive(now)
    });
    let log = zistd.cl(&["log"]);
    assert!(log.stdout.contains("the holder process ended"), "{log:?}");
    assert!(alive(pid));
    // The new holder holds the pipes: the counter survives zistd's death too.
    kill(zistd.pid(), Signal::SIGKILL).unwrap();
    zistd.wait_exit(Duration::from_secs(10)).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(pid), "the counter died with zistd");
    let mut zistd = setup.start();
    assert_eq!(pid_of(&zistd.info("counter")), pid);
    assert_eq!(zistd.cl(&["counter", "stop"]).code, 0);
    assert_counted(&setup.path("logs/counter.out.log"));
}

/// Puts a copy of zistd (or `text`, when given) at `path`, atomically, as
/// `cargo install` would.
fn install_zistd(path: &Path, text: Option<&str>) {
    use std::os::unix::fs::PermissionsExt;
    let fresh = path.with_extension("new");
    match text {
        Some(text) => std::fs::write(&fresh, text).unwrap(),
        None => {
            std::fs::copy(crate::daemon::ZISTD, &fresh).unwrap();
        }
    }
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

/// A client that calls `daemon.status` on a new connection in a loop:
/// the longest wait for an answer, and every failure.
struct Caller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, Vec<String>, usize)>,
}

impl Caller {
    fn start(addr: &str) -> Self {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).to_string();
            let headers = format!(
                "Authorization: Bearer {}\r\nContent-Type: application/json\r\n",
                crate::daemon::TOKEN
            );
            let (mut longest, mut failures, mut calls) = (Duration::ZERO, Vec::new(), 0);
            let started = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                match zist_core::testing::request(addr, "POST", "/", &headers, body.as_bytes()) {
                    Ok(r) if r.status == 200 && r.body.contains("\"result\"") => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.push(format!(
                        "{e} at {:?} after {:?}",
                        started.elapsed(),
                        asked.elapsed()
                    )),
                }
                longest = longest.max(asked.elapsed());
                calls += 1;
            }
            (longest, failures, calls)
        });
        Self { stop, thread }
    }

    fn finish(self) -> (Duration, Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn upgrade_in_place_keeps_every_pid_counter_socket_and_line() {
    let setup = Setup::new("");
    let counter = counter(&setup);
    let flaky = setup.script(
        "flaky.sh",
        "if [ -e \"$0.ran\" ]; then exec sleep 300; fi\ntouch \"$0.ran\"\nsleep 0.3\nexit 1",
    );
    setup.write_config(
        &(program("counter", &counter, "")
            + &program("flaky", &flaky, "")
            + &program(
                "idle",
                Path::new("/bin/sleep"),
                "Args = \"308\"\nAutostart = false",
            )),
    );
    let exe = setup.path("zistd");
    install_zistd(&exe, None);
    let mut zistd = crate::daemon::Zistd::start_exe(&exe, &[], &setup.conf());
    eventually_blocking(Duration::from_secs(10), "flaky to restart once", || {
        let f = zistd.info("flaky");
        f["restarts"] == 1 && f["state"] == "running"
    });
    let before = zistd.list();
    let caller = Caller::start(&zistd.rpc.clone());
    let t0 = std::time::Instant::now();
    let mut marks = Vec::new();
    std::thread::sleep(Duration::from_millis(200));

    // A broken new executable is refused, and nothing changes.
    install_zistd(&exe, Some("#!/bin/sh\nexit 3\n"));
    let refused = zistd.rpc("daemon.upgrade", json!([]));
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let out = zistd.cl(&["upgrade"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("refused"), "{out:?}");

    install_zistd(&exe, None);
    marks.push(("upgrade", t0.elapsed()));
    let out = zistd.cl(&["upgrade"]);
    marks.push(("upgraded", t0.elapsed()));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("->"), "{out:?}");
    let ready = zistd.wait_line("READY ", Duration::from_secs(10));
    assert!(
        ready.contains(&format!("\"pid\": {}", zistd.child.id())),
        "{ready}"
    );
    // SIGUSR2 does the same.
    marks.push(("ready", t0.elapsed()));
    kill(zistd.pid(), Signal::SIGUSR2).unwrap();
    zistd.wait_line("READY ", Duration::from_secs(10));
    marks.push(("ready2", t0.elapsed()));
    std::thread::sleep(Duration::from_millis(200));
    let (longest, failures, calls) = caller.finish();
    let log = zistd.cl(&["log"]);
    assert!(
        failures.is_empty(),
        "{failures:?} marks {marks:?} log {}",
        log.stdout
    );
    assert!(calls > 10);
    println!("longest wait for an answer across two upgrades: {longest:?} ({calls} calls)");

    let after = zistd.list();
    for (old, new) in before.iter().zip(&after) {
        for key in ["name", "state", "pid", "started_at", "restarts"] {
            assert_eq!(old[key], new[key], "{key}: {old} / {new}");
        }
    }
    let log = zistd.cl(&["log"]);
    assert!(log.stdout.contains("resuming after an upgrade"), "{log:?}");
    // The tail reaches back across both switches: 1, 2, 3, ... each once.
    let tail = zistd.rpc(
        "process.logs",
        json!({"name": "counter", "stream": "stdout", "lines": 10000}),
    );
    let numbers: Vec<usize> = tail["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(numbers.len() > 50, "{tail}");
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i + 1),
        "{numbers:?}"
    );
    assert_eq!(zistd.cl(&["counter", "stop"]).code, 0);
    assert!(assert_counted(&setup.path("logs/counter.out.log")) > 50);
}

/// The pids whose command line is exactly `words`.
fn pids_running(words: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// Ends the escaped process and removes the test's cgroups, also on failure.
struct Escaped(Vec<i32>, Vec<std::path::PathBuf>);

impl Drop for Escaped {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
        for dir in &self.1 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn stop_ends_a_grandchild_that_left_the_process_group_through_the_cgroup() {
    let setup = Setup::new("");
    let escaper = setup.script("escaper.sh", "setsid sleep 1009 &\nexec sleep 1010");
    setup.write_config(&program("escaper", &escaper, ""));
    let mut zistd = setup.start();
    let main = pid_of(&zistd.info("escaper"));
    let mut escaped = Vec::new();
    eventually_blocking(Duration::from_secs(10), "the escaped grandchild", || {
        escaped = pids_running(&["sleep", "1009"])
            .into_iter()
            .filter(|&p| cgroup_of(p) == cgroup_of(main))
            .collect();
        !escaped.is_empty()
    });
    let dir = cgroup_of(main).unwrap();
    let _guard = Escaped(
        escaped.clone(),
        vec![dir.clone(), dir.parent().unwrap().to_owned()],
    );
    assert!(
        dir.ends_with("escaper")
            && dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("zist."),
        "{}",
        dir.display()
    );
    let log = zistd.cl(&["log"]);
    assert!(log.stdout.contains("a cgroup of its own"), "{log:?}");
    // Stats count it: the program's memory is more than its main process's.
    let stats = zistd.cl(&["--json", "escaper", "stats"]);
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    let main_rss = std::fs::read_to_string(format!("/proc/{main}/statm"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096;
    assert!(
        stats["memory_bytes"].as_u64().unwrap() > main_rss,
        "{stats}"
    );

    assert_eq!(zistd.cl(&["escaper", "stop"]).code, 0);
    for pid in &escaped {
        assert!(!alive(*pid), "the escaped grandchild outlived stop");
    }
    kill(zistd.pid(), Signal::SIGTERM).unwrap();
    assert_eq!(zistd.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!dir.exists(), "the program's cgroup is left behind");
    assert!(
        !dir.parent().unwrap().exists(),
        "zist's cgroup folder is left behind"
    );
}

#[test]
fn a_recorded_pid_with_another_start_time_is_never_adopted_and_an_adopted_program_is_restarted() {
    let setup = Setup::new("");
    setup.write_config(
        &(program("stranger", Path::new("/bin/sleep"), "Args = \"312\"")
            + &program("adopted", Path::new("/bin/sleep"), "Args = \"313\"")),
    );
    let mut zistd = setup.start();
    eventually_blocking(Duration::from_secs(10), "both to run", || {
        zistd.list().iter().all(|i| i["state"] == "running")
    });
    let stranger = pid_of(&zistd.info("stranger"));
    // The next zistd will not know it: ended here, also on failure.
    let _stranger = Escaped(vec![stranger], Vec::new());
    let adopted = pid_of(&zistd.info("adopted"));
    kill(zistd.pid(), Signal::SIGKILL).unwrap();
    zistd.wait_exit(Duration::from_secs(10)).unwrap_or_default();
    // The record now names a process that started at another time: as if
    // the pid had been reused by something zist never ran.
    let path = setup.path("state/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ticks = &mut state["programs"]["stranger"]["process"]["start_ticks"];
    *ticks = json!(ticks.as_u64().unwrap() + 1);
    std::fs::write(&path, state.to_string()).unwrap();

    let mut zistd = setup.start();
    eventually_blocking(
        Duration::from_secs(10),
        "a new copy of the one not adopted",
        || {
            let info = zistd.info("stranger");
            info["state"] == "running" && info["pid"].as_i64() != Some(i64::from(stranger))
        },
    );
    assert!(
        alive(stranger),
        "zist signalled a process it did not recognise"
    );

    // The adopted one is not zistd's child now; its exit is still seen at
    // once and the restart policy applies.
    assert_eq!(pid_of(&zistd.info("adopted")), adopted);
    kill(nix::unistd::Pid::from_raw(adopted), Signal::SIGKILL).unwrap();
    eventually_blocking(
        Duration::from_secs(10),
        "the adopted program restarted",
        || {
            let info = zistd.info("adopted");
            info["state"] == "running"
                && info["pid"].as_i64() != Some(i64::from(adopted))
                && info["restarts"] == 1
        },
    );
}

/// The socket at fd 3 of `pid` (`socket:[inode]`).
fn socket_at_fd_3(pid: i32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap_or_default();
    let link = link.display().to_string();
    assert!(link.starts_with("socket:["), "fd 3 of {pid} is {link:?}");
    link
}

#[test]
fn held_sockets_outlive_an_upgrade_and_a_crash_of_zistd() {
    let setup = Setup::new("");
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    setup.write_config(&program(
        "web",
        Path::new("/bin/sleep"),
        &format!("Args = \"309\"\nInstances = 2\nListen = [\"{address}\"]"),
    ));
    let exe = setup.path("zistd");
    install_zistd(&exe, None);
    let mut zistd = crate::daemon::Zistd::start_exe(&exe, &[], &setup.conf());
    eventually_blocking(Duration::from_secs(10), "both instances to run", || {
        zistd
            .list()
            .iter()
            .filter(|i| i["state"] == "running")
            .count()
            == 2
    });
    let socket = socket_at_fd_3(pid_of(&zistd.info("web:0")));
    assert_eq!(socket_at_fd_3(pid_of(&zistd.info("web:1"))), socket);
    assert!(std::net::TcpStream::connect(address).is_ok());

    // Upgrade in place: the next executable holds the same socket, and
    // passes it to the processes it starts.
    assert_eq!(zistd.cl(&["upgrade"]).code, 0);
    zistd.wait_line("READY ", Duration::from_secs(10));
    assert_eq!(zistd.cl(&["web:0", "restart"]).code, 0);
    assert_eq!(socket_at_fd_3(pid_of(&zistd.info("web:0"))), socket);

    // SIGKILL: the address is still taken (the programs listen on it);
    // the next zistd takes the socket back from the processes it adopts.
    let adopted = pid_of(&zistd.info("web:1"));
    kill(zistd.pid(), Signal::SIGKILL).unwrap();
    zistd.wait_exit(Duration::from_secs(10)).unwrap_or_default();
    assert!(std::net::TcpStream::connect(address).is_ok());
    let mut zistd = crate::daemon::Zistd::start_exe(&exe, &[], &setup.conf());
    assert_eq!(pid_of(&zistd.info("web:1")), adopted);
    assert_eq!(zistd.cl(&["web:1", "restart"]).code, 0);
    let restarted = pid_of(&zistd.info("web:1"));
    assert_ne!(restarted, adopted);
    assert_eq!(socket_at_fd_3(restarted), socket);
    assert_eq!(zistd.cl(&["web", "stop"]).code, 0);
}
