//! The process engine: states, process groups, stop, restart rules, the child's environment.

use std::time::{Duration, Instant, SystemTime};

use tokio_stream::StreamExt;
use zist_core::{Error, Feed, LogStream, ProcessState, RestartPolicy, ShutdownMode, Signal};

use crate::support::{Dir, SECS_5, SECS_10, Sup, alive, eventually, group_alive, wait_state};

#[tokio::test]
async fn a_program_starts_runs_and_stops_with_its_whole_group() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // The leader forks a grandchild that would outlive a stop aimed at the leader only.
    let spec = dir.sh("tree", "sleep 300 & echo $! > grandchild.pid; wait");
    let mut spec = spec;
    spec.workingdir = Some(dir.path().to_owned());
    let info = sup.register(spec).await.unwrap();
    assert_eq!(info.state, ProcessState::Starting);
    let pid = info.pid.expect("a pid once spawned");
    sup.groups.add(pid);
    wait_state(&sup, "tree", ProcessState::Running, SECS_5).await;
    let info = sup.info("tree").unwrap();
    assert!(info.started_at.as_deref().is_some_and(|t| t.ends_with('Z')));
    eventually(SECS_5, "grandchild pid file", || {
        dir.join("grandchild.pid").exists()
    })
    .await;
    eventually(SECS_5, "grandchild pid written", || {
        std::fs::read_to_string(dir.join("grandchild.pid"))
            .is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    })
    .await;
    let grandchild: i32 = std::fs::read_to_string(dir.join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));

    let stopped = sup.stop("tree").await.unwrap();
    // stop answers only when the whole group is gone and reaped.
    assert_eq!(stopped.state, ProcessState::Stopped);
    assert_eq!(stopped.pid, None);
    assert!(!group_alive(pid), "the group outlived the stop");
    assert!(!alive(grandchild), "the grandchild outlived the stop");
    // Stopping a stopped program is not an error.
    assert_eq!(sup.stop("tree").await.unwrap().state, ProcessState::Stopped);
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "stubborn",
        "trap '' TERM; echo ready; while true; do sleep 0.05; done",
    );
    spec.stop_timeout = Duration::from_millis(300);
    let pid = sup.run(spec).await;
    eventually(SECS_5, "ready line", || {
        sup.logs("stubborn", LogStream::Stdout, 1).unwrap() == ["ready"]
    })
    .await;
    let t0 = Instant::now();
    let info = sup.stop("stubborn").await.unwrap();
    let took = t0.elapsed();
    assert_eq!(info.state, ProcessState::Stopped);
    assert_eq!(info.exit_signal.as_deref(), Some("KILL"));
    assert!(
        took >= Duration::from_millis(300),
        "killed before StopTimeout: {took:?}"
    );
    assert!(!group_alive(pid));
}

#[tokio::test]
async fn the_stop_signal_is_configurable() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "polite",
        "trap 'echo got INT; exit 0' INT; echo ready; while true; do sleep 0.05; done",
    );
    spec.stop_signal = Signal::SIGINT;
    sup.run(spec).await;
    eventually(SECS_5, "ready", || {
        sup.logs("polite", LogStream::Stdout, 1).unwrap() == ["ready"]
    })
    .await;
    let info = sup.stop("polite").await.unwrap();
    assert_eq!(info.exit_code, Some(0));
    assert_eq!(
        sup.logs("polite", LogStream::Stdout, 1).unwrap(),
        ["got INT"]
    );
}

#[tokio::test]
async fn restart_policies_follow_the_exit() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Each run appends a line, runs past StartSecs, then exits with the given code.
    let run = |name: &str, code: i32, policy: RestartPolicy| {
        let mut spec = dir.sh(
            name,
            &format!("echo run >> {name}.runs; sleep 0.3; exit {code}"),
        );
        spec.workingdir = Some(dir.path().to_owned());
        spec.start_secs = Duration::from_millis(100);
        spec.restart_delay = Duration::ZERO;
        spec.restart = policy;
        spec
    };
    let runs = |name: &str| {
        std::fs::read_to_string(dir.join(&format!("{name}.runs"))).map_or(0, |s| s.lines().count())
    };
    sup.register(run("always0", 0, RestartPolicy::Always))
        .await
        .unwrap();
    sup.register(run("onfail0", 0, RestartPolicy::OnFailure))
        .await
        .unwrap();
    sup.register(run("onfail3", 3, RestartPolicy::OnFailure))
        .await
        .unwrap();
    sup.register(run("never3", 3, RestartPolicy::Never))
        .await
        .unwrap();

    wait_state(&sup, "onfail0", ProcessState::Exited, SECS_5).await;
    wait_state(&sup, "never3", ProcessState::Exited, SECS_5).await;
    eventually(SECS_10, "always0 and onfail3 to run 3 times", || {
        runs("always0") >= 3 && runs("onfail3") >= 3
    })
    .await;
    assert_eq!(sup.info("never3").unwrap().exit_code, Some(3));
    assert_eq!(sup.info("onfail0").unwrap().exit_code, Some(0));
    assert_eq!(runs("onfail0"), 1);
    assert_eq!(runs("never3"), 1);
    assert!(sup.info("always0").unwrap().restarts >= 2);
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn failed_starts_back_off_exponentially_then_turn_fatal() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("crasher", "echo boom >&2; exit 1");
    spec.start_secs = Duration::from_secs(1);
    spec.max_restarts = 3;
    spec.restart_delay = Duration::from_millis(150);
    let mut events = sup.events();
    let t0 = Instant::now();
    sup.register(spec).await.unwrap();
    let mut spawns = Vec::new();
    let mut states = Vec::new();
    let deadline = tokio::time::sleep(SECS_10);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => panic!("never went fatal: {states:?}"),
            Some(Feed::Item(ev)) = events.next() => {
                states.push(ev.to);
                if ev.to == ProcessState::Starting {
                    spawns.push(t0.elapsed());
                }
                if matches!(ev.to, ProcessState::Backoff | ProcessState::Fatal) {
                    // Each change nobody asked for says why.
                    let reason = ev.reason.unwrap_or_default();
                    assert!(reason.contains("exit status 1"), "{reason}");
                }
                if ev.to == ProcessState::Fatal {
                    break;
                }
            }
        }
    }
    // One start and MaxRestarts restarts, the waits doubling: 150, 300, 600 ms.
    assert_eq!(spawns.len(), 4, "{states:?}");
    let gaps: Vec<Duration> = spawns.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, want) in gaps.iter().zip([150u64, 300, 600]) {
        let want = Duration::from_millis(want);
        assert!(
            *gap >= want && *gap < want + Duration::from_millis(400),
            "gaps {gaps:?}"
        );
    }
    let info = sup.info("crasher").unwrap();
    assert_eq!(info.state, ProcessState::Fatal);
    assert_eq!(info.restarts, 3);
    assert!(
        info.error.as_deref().unwrap_or("").contains("in a row"),
        "{info:?}"
    );
    assert_eq!(info.message, info.error, "message takes over error");
    assert_eq!(info.exit_code, Some(1), "the last exit is kept");
    let exited_at = info.exited_at.clone().expect("the last exit has a time");
    let when = humantime::parse_rfc3339(&exited_at).expect("RFC 3339");
    let ago = SystemTime::now().duration_since(when).unwrap_or_default();
    assert!(ago < Duration::from_secs(5), "{exited_at} is {ago:?} ago");
    assert!(
        exited_at.ends_with('Z') && exited_at.contains('.'),
        "{exited_at}"
    );
    assert!(sup.logs("crasher", LogStream::Stderr, 10).unwrap().len() >= 4);
    // A fatal program starts again on request; the last exit's time stays
    // until the next exit.
    let started = sup.start("crasher").await.unwrap();
    assert_eq!(started.state, ProcessState::Starting);
    assert_eq!(started.exited_at.as_deref(), Some(exited_at.as_str()));
    sup.stop("crasher").await.unwrap();
}

#[tokio::test]
async fn a_crash_loop_with_no_delay_does_not_spin() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("spinner", "exit 1");
    spec.start_secs = Duration::ZERO; // every exit counts as a crash after running
    spec.restart_delay = Duration::ZERO;
    sup.register(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let restarts = sup.info("spinner").unwrap().restarts;
    // At most one spawn per 100 ms, whatever the settings.
    assert!((3..=11).contains(&restarts), "{restarts} restarts in 1 s");
    sup.stop("spinner").await.unwrap();
    assert_eq!(sup.info("spinner").unwrap().state, ProcessState::Stopped);
}

#[tokio::test]
async fn api_stop_restart_and_detach_are_never_followed_by_a_policy_restart() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("svc", "sleep 300");
    spec.restart_delay = Duration::ZERO;
    let first = sup.run(spec).await;
    let restarted = sup.restart("svc").await.unwrap();
    let second = restarted.pid.unwrap();
    sup.groups.add(second);
    assert_ne!(first, second);
    assert_eq!(restarted.state, ProcessState::Starting);
    assert!(!alive(first));
    sup.stop("svc").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = sup.info("svc").unwrap();
    assert_eq!(
        (info.state, info.pid, info.restarts),
        (ProcessState::Stopped, None, 0)
    );
}

#[tokio::test]
async fn start_twice_signal_and_unknown_names_are_clear_errors() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let spec = dir.sh(
        "sig",
        "trap 'echo got USR1' USR1; echo ready; while true; do sleep 0.05; done",
    );
    sup.run(spec).await;
    let err = sup.start("sig").await.unwrap_err();
    assert!(matches!(err, Error::AlreadyRunning { .. }), "{err}");
    assert_eq!(err.kind(), zist_core::ErrorKind::Conflict);
    eventually(SECS_5, "ready", || {
        sup.logs("sig", LogStream::Stdout, 1).unwrap() == ["ready"]
    })
    .await;
    sup.signal("sig", Signal::SIGUSR1).await.unwrap();
    eventually(SECS_5, "the trap to run", || {
        sup.logs("sig", LogStream::Stdout, 1).unwrap() == ["got USR1"]
    })
    .await;
    sup.stop("sig").await.unwrap();
    let err = sup.signal("sig", Signal::SIGUSR1).await.unwrap_err();
    assert!(
        matches!(err, Error::NotRunning { .. }) && err.to_string().contains("start it first"),
        "{err}"
    );
    let err = sup.start("nope").await.unwrap_err();
    assert_eq!(err.kind(), zist_core::ErrorKind::NotFound);
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[tokio::test]
async fn a_missing_executable_is_fatal_until_it_appears() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let exe = dir.join("later.sh");
    let mut spec = dir.sh("later", "");
    spec.path = exe.clone();
    spec.args.clear();
    let err = sup.register(spec).await.unwrap_err();
    assert_eq!(err.kind(), zist_core::ErrorKind::SpawnFailed);
    assert!(err.to_string().contains("later.sh"), "{err}");
    let info = sup.info("later").unwrap();
    assert_eq!(info.state, ProcessState::Fatal);
    assert!(info.error.unwrap().contains("does not exist"));
    dir.script("later.sh", "echo here; sleep 300");
    let pid = sup.start("later").await.unwrap().pid.unwrap();
    sup.groups.add(pid);
    eventually(SECS_5, "output", || {
        sup.logs("later", LogStream::Stdout, 1).unwrap() == ["here"]
    })
    .await;
    sup.stop("later").await.unwrap();
}

#[tokio::test]
async fn the_child_gets_its_env_workdir_and_a_clean_process_state() {
    let dir = Dir::new();
    std::fs::create_dir(dir.join("work")).unwrap();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "env",
        "echo \"cwd=$(pwd)\"; echo \"greeting=$GREETING\"; echo \"path_set=${PATH:+yes}\"; \
         ls /proc/self/fd | sort -n | tr '\\n' ' ' | sed 's/^/fds=/'; echo; \
         grep -E '^(SigBlk|SigIgn|Cpus_allowed_list)' /proc/self/status; \
         echo \"sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$\"",
    );
    spec.workingdir = Some(dir.join("work"));
    spec.env.insert("GREETING".into(), "hello".into());
    spec.restart = RestartPolicy::Never;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "env", ProcessState::Exited, SECS_5).await;
    let out = sup.logs("env", LogStream::Stdout, 20).unwrap();
    let text = out.join("\n");
    let line = |key: &str| {
        out.iter()
            .find(|l| l.starts_with(key))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(line("cwd="), format!("cwd={}", dir.join("work").display()));
    assert_eq!(line("greeting="), "greeting=hello");
    assert_eq!(
        line("path_set="),
        "path_set=yes",
        "zistd's own environment is kept"
    );
    // fds: 0, 1, 2 and the one `ls` opens for /proc/self/fd itself.
    let fds_line = line("fds=");
    let fds: Vec<&str> = fds_line["fds=".len()..].split_whitespace().collect();
    assert_eq!(&fds[..3], ["0", "1", "2"], "{text}");
    assert!(fds.len() <= 4, "descriptors leaked into the child: {text}");
    assert!(line("SigBlk:").ends_with("0000000000000000"), "{text}");
    assert!(line("SigIgn:").ends_with("0000000000000000"), "{text}");
    // Spawning pins itself to one CPU for a moment; the program must not stay pinned.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = ours
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap();
    assert_eq!(line("Cpus_allowed_list"), ours, "{text}");
    // The grep ran in the shell's session, whose id is the shell's pid: its own session.
    let sid_line = line("sid=");
    let mut parts = sid_line.split(' ');
    let sid = parts.next().unwrap().trim_start_matches("sid=");
    let pid = parts.next().unwrap().trim_start_matches("pid=");
    assert_eq!(
        sid, pid,
        "the program does not lead its own session: {text}"
    );
}

#[tokio::test]
async fn a_program_runs_as_its_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: User needs root");
        return;
    }
    let dir = Dir::new();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("asuser", "id -u; id -g; echo $HOME; echo $USER");
    spec.user = Some("nobody".into());
    spec.workingdir = Some("/".into());
    spec.restart = RestartPolicy::Never;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "asuser", ProcessState::Exited, SECS_5).await;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = sup.logs("asuser", LogStream::Stdout, 10).unwrap();
    assert_eq!(out[0], nobody.uid.to_string());
    assert_eq!(out[1], nobody.gid.to_string());
    assert_eq!(out[3], "nobody");
    let mut spec = dir.sh("nouser", "true");
    spec.user = Some("no-such-user-zist".into());
    let err = sup.register(spec).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn shutdown_stop_ends_every_program_and_refuses_more_work() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut pids = Vec::new();
    for i in 0..5 {
        let pid = sup.run(dir.sh(&format!("p{i}"), "sleep 300")).await;
        pids.push(pid);
    }
    sup.shutdown(ShutdownMode::Stop).await;
    for pid in pids {
        assert!(!group_alive(pid));
    }
    assert!(matches!(sup.start("p0").await, Err(Error::ShuttingDown)));
}

#[tokio::test]
async fn the_bulk_operations_wait_for_every_program() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    for i in 0..20 {
        let mut spec = dir.sh(&format!("b{i}"), "sleep 300");
        spec.autostart = false;
        sup.register(spec).await.unwrap();
    }
    let started = sup.start_all().await;
    sup.track_all();
    assert!(
        started
            .iter()
            .all(|i| i.state == ProcessState::Starting && i.pid.is_some())
    );
    let restarted = sup.restart_all().await;
    sup.track_all();
    for (a, b) in started.iter().zip(&restarted) {
        assert_ne!(a.pid, b.pid);
        assert!(!alive(a.pid.unwrap()));
    }
    let stopped = sup.stop_all().await;
    assert!(
        stopped
            .iter()
            .all(|i| i.state == ProcessState::Stopped && i.pid.is_none())
    );
    for info in &restarted {
        assert!(!group_alive(info.pid.unwrap()));
    }
}

#[tokio::test]
async fn an_exec_failure_names_the_step_and_the_reason() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Executable bits, but neither a binary nor a script with a #! line.
    let bogus = dir.write("bogus", "\u{7f}not an executable\n");
    std::fs::set_permissions(&bogus, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = dir.sh("bogus", "");
    spec.path = bogus;
    spec.args.clear();
    let err = sup.register(spec).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("exec failed") && text.contains("format"),
        "{text}"
    );
    assert_eq!(sup.info("bogus").unwrap().state, ProcessState::Fatal);
    let mut spec = dir.sh("nodir", "true");
    spec.workingdir = Some(dir.join("missing"));
    let err = sup.register(spec).await.unwrap_err().to_string();
    assert!(
        err.contains("working directory") && err.contains("missing"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bulk_stop_is_never_taken_for_a_crash() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    for i in 0..100 {
        let mut spec = dir.sh(&format!("q{i}"), "sleep 300");
        spec.restart = RestartPolicy::Always;
        spec.restart_delay = Duration::ZERO;
        spec.start_secs = Duration::ZERO;
        spec.autostart = false;
        sup.register(spec).await.unwrap();
    }
    sup.start_all().await;
    sup.track_all();
    // The stop signals go out before the actors hear of the stop: exits that
    // they see first must still end in `stopped`, never in a restart.
    let stopped = sup.stop_all().await;
    assert!(
        stopped.iter().all(|i| i.state == ProcessState::Stopped),
        "{stopped:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for info in sup.list() {
        assert_eq!(
            (info.state, info.restarts, info.pid),
            (ProcessState::Stopped, 0, None),
            "{info:?}"
        );
    }
}

#[tokio::test]
async fn durations_too_long_for_a_timer_never_panic_or_hang_a_program() {
    // A spec built in code skips the loader's ranges: the engine itself
    // must treat a deadline past what a clock holds as "never".
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("forever", "sleep 300");
    spec.start_secs = Duration::MAX;
    spec.stop_timeout = Duration::MAX;
    spec.restart_delay = Duration::MAX;
    let pid = sup.run(spec).await;
    assert_eq!(sup.info("forever").unwrap().state, ProcessState::Starting);
    let stopped = tokio::time::timeout(SECS_10, sup.stop("forever"))
        .await
        .expect("stop answers")
        .unwrap();
    assert_eq!(stopped.state, ProcessState::Stopped);
    assert!(!group_alive(pid));
    // A crash with the longest RestartDelay waits the 30 s cap, in backoff.
    let mut crashing = dir.sh("crashing", "exit 3");
    crashing.restart_delay = Duration::MAX;
    crashing.start_secs = Duration::ZERO;
    sup.run(crashing).await;
    wait_state(&sup, "crashing", ProcessState::Backoff, SECS_5).await;
    let stopped = tokio::time::timeout(SECS_10, sup.stop("crashing"))
        .await
        .expect("stop answers")
        .unwrap();
    assert_eq!(stopped.state, ProcessState::Stopped);
}

fn check(probe: zist_core::Probe, timeout: Duration) -> zist_core::Check {
    zist_core::Check {
        probe,
        interval: Duration::from_millis(50),
        timeout,
        failures: 2,
        watchdog: None,
    }
}

#[tokio::test]
async fn starting_lasts_until_the_ready_check_passes_and_its_timeout_is_a_failed_start() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = port.local_addr().unwrap().to_string();
    drop(port);
    let mut spec = dir.sh("db", "exec sleep 300");
    spec.start_secs = Duration::from_millis(50);
    spec.ready = Some(check(zist_core::Probe::Tcp(address.clone()), SECS_10));
    sup.register(spec).await.unwrap();
    // Past StartSecs, still starting: nothing accepts yet, and it says so.
    eventually(SECS_5, "a message naming the check", || {
        sup.info("db")
            .unwrap()
            .message
            .is_some_and(|m| m.starts_with(&format!("starting: tcp {address} not accepting")))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sup.info("db").unwrap().state, ProcessState::Starting);
    let _listener = std::net::TcpListener::bind(&address).unwrap();
    wait_state(&sup, "db", ProcessState::Running, SECS_5).await;
    assert_eq!(sup.info("db").unwrap().message, None);

    // Never ready within Timeout: a failed start, which says why.
    let mut never = dir.sh("never", "exec sleep 300");
    never.max_restarts = 0;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    never.ready = Some(check(
        zist_core::Probe::Tcp(nowhere),
        Duration::from_millis(400),
    ));
    let pid = sup.register(never).await.unwrap().pid.unwrap();
    wait_state(&sup, "never", ProcessState::Fatal, SECS_10).await;
    let info = sup.info("never").unwrap();
    let message = info.message.unwrap_or_default();
    assert!(
        message.contains("ready check tcp") && message.contains("not accepting"),
        "{message}"
    );
    assert!(!alive(pid), "its group was stopped");
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn a_program_that_fails_its_alive_check_is_restarted_and_the_restart_is_counted() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let healthy = dir.join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let mut spec = dir.sh("app", "exec sleep 300");
    spec.start_secs = Duration::from_millis(50);
    spec.alive = Some(check(
        zist_core::Probe::Exec(vec![
            "test".into(),
            "-e".into(),
            healthy.display().to_string(),
        ]),
        SECS_5,
    ));
    let mut events = sup.events();
    let first = sup.register(spec).await.unwrap().pid.unwrap();
    wait_state(&sup, "app", ProcessState::Running, SECS_5).await;
    // Healthy: left alone for several intervals.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sup.info("app").unwrap().restarts, 0);
    std::fs::remove_file(&healthy).unwrap();
    let reason = loop {
        match tokio::time::timeout(SECS_10, events.next()).await {
            Ok(Some(Feed::Item(ev))) if ev.to == ProcessState::Stopping => break ev.reason,
            Ok(Some(_)) => {}
            other => panic!("no stop: {other:?}"),
        }
    };
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("alive check exec test -e") && reason.contains("2 times in a row"),
        "{reason}"
    );
    std::fs::write(&healthy, "").unwrap();
    eventually(SECS_10, "a new process, counted", || {
        let info = sup.info("app").unwrap();
        info.state == ProcessState::Running && info.pid != Some(first) && info.restarts == 1
    })
    .await;
    assert!(!alive(first));
    sup.shutdown(ShutdownMode::Stop).await;
}

/// A script that waits until the file `name` exists in its folder.
fn wait_for(name: &str) -> String {
    format!("while [ ! -e {name} ]; do sleep 0.02; done")
}

#[tokio::test]
async fn a_line_check_waits_for_a_matching_line_of_either_stream() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let pattern = zist_core::LinePattern::new(r"^listening on \d+$").unwrap();
    let mut spec = dir.sh(
        "app",
        &format!(
            "cd {} && echo booting && echo 'listening on soon' && {} && echo 'listening on 8080' >&2 && exec sleep 300",
            dir.path().display(),
            wait_for("go")
        ),
    );
    spec.start_secs = Duration::from_millis(50);
    spec.ready = Some(check(zist_core::Probe::Line(pattern), SECS_10));
    sup.run(spec).await;
    eventually(SECS_5, "the booting line in the log", || {
        sup.logs("app", zist_core::LogStream::Stdout, 10)
            .unwrap()
            .iter()
            .any(|l| l.contains("listening on soon"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = sup.info("app").unwrap();
    assert_eq!(info.state, ProcessState::Starting, "no line matched yet");
    assert_eq!(
        info.message.as_deref(),
        Some(r"starting: no line matched /^listening on \d+$/ yet")
    );
    std::fs::write(dir.join("go"), "").unwrap();
    wait_state(&sup, "app", ProcessState::Running, SECS_5).await;

    // A line written at once, before anything could read it, still counts.
    let mut quick = dir.sh("quick", "echo ready; exec sleep 300");
    quick.start_secs = Duration::from_secs(300);
    quick.ready = Some(check(
        zist_core::Probe::Line(zist_core::LinePattern::new("ready").unwrap()),
        SECS_10,
    ));
    sup.run(quick).await;
    wait_state(&sup, "quick", ProcessState::Running, SECS_5).await;
    // And again for the process of a restart.
    let restarted = sup.restart("quick").await.unwrap();
    assert_eq!(restarted.state, ProcessState::Starting);
    wait_state(&sup, "quick", ProcessState::Running, SECS_5).await;
    sup.shutdown(ShutdownMode::Stop).await;
}

/// Sends `text` to a notification socket from this test's own process.
fn notify_from_outside(socket: &str, text: &str) {
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.send_to(text.as_bytes(), socket).unwrap();
}

#[tokio::test]
async fn a_notify_check_takes_ready_and_status_from_the_program_only() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "db",
        &format!(
            "cd {} && echo \"socket=$NOTIFY_SOCKET\" && {} && systemd-notify --status='replaying the journal' && {} && systemd-notify --ready && {} && systemd-notify --status='serving 3 clients' && exec sleep 300",
            dir.path().display(),
            wait_for("status"),
            wait_for("ready"),
            wait_for("serving"),
        ),
    );
    spec.start_secs = Duration::from_millis(50);
    spec.ready = Some(check(zist_core::Probe::Notify, SECS_10));
    sup.run(spec).await;
    let mut socket = String::new();
    eventually(SECS_5, "the program to print NOTIFY_SOCKET", || {
        let lines = sup.logs("db", zist_core::LogStream::Stdout, 10).unwrap();
        socket = lines
            .iter()
            .find_map(|l| l.strip_prefix("socket=").map(str::to_owned))
            .unwrap_or_default();
        !socket.is_empty()
    })
    .await;
    let info = sup.info("db").unwrap();
    assert_eq!(info.state, ProcessState::Starting);
    assert_eq!(
        info.message.as_deref(),
        Some("starting: waiting for READY=1")
    );
    // READY=1 from a process outside the program counts for nothing.
    notify_from_outside(&socket, "READY=1");
    std::fs::write(dir.join("status"), "").unwrap();
    eventually(SECS_5, "STATUS as the message", || {
        sup.info("db").unwrap().message.as_deref() == Some("starting: replaying the journal")
    })
    .await;
    assert_eq!(sup.info("db").unwrap().state, ProcessState::Starting);
    std::fs::write(dir.join("ready"), "").unwrap();
    wait_state(&sup, "db", ProcessState::Running, SECS_5).await;
    std::fs::write(dir.join("serving"), "").unwrap();
    eventually(SECS_5, "a new STATUS while running", || {
        sup.info("db").unwrap().message.as_deref() == Some("serving 3 clients")
    })
    .await;
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn a_starved_watchdog_restarts_the_program_and_says_why() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Fed while the file `feed` exists.
    let mut spec = dir.sh(
        "app",
        &format!(
            "cd {} && echo \"period=$WATCHDOG_USEC\" && systemd-notify --ready && while [ -e feed ]; do systemd-notify WATCHDOG=1; sleep 0.05; done; exec sleep 300",
            dir.path().display(),
        ),
    );
    spec.start_secs = Duration::from_millis(50);
    let mut ready = check(zist_core::Probe::Notify, SECS_10);
    ready.watchdog = Some(Duration::from_secs(1));
    spec.ready = Some(ready);
    std::fs::write(dir.join("feed"), "").unwrap();
    let mut events = sup.events();
    let first = sup.run(spec).await;
    wait_state(&sup, "app", ProcessState::Running, SECS_5).await;
    assert!(
        sup.logs("app", zist_core::LogStream::Stdout, 10)
            .unwrap()
            .contains(&"period=1000000".to_owned())
    );
    // Fed (every 50 ms): left alone for several periods.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sup.info("app").unwrap().pid, Some(first));
    std::fs::remove_file(dir.join("feed")).unwrap();
    let reason = loop {
        match tokio::time::timeout(SECS_10, events.next()).await {
            Ok(Some(Feed::Item(ev))) if ev.to == ProcessState::Stopping => break ev.reason,
            Ok(Some(_)) => {}
            other => panic!("no stop: {other:?}"),
        }
    };
    assert_eq!(
        reason.as_deref(),
        Some("watchdog: no WATCHDOG=1 within WatchdogSec (1s); restarting")
    );
    eventually(SECS_10, "a new process, counted", || {
        let info = sup.info("app").unwrap();
        info.state == ProcessState::Running && info.pid != Some(first) && info.restarts == 1
    })
    .await;
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn env_files_are_read_at_each_start_under_env_and_a_bad_one_is_a_failed_start_naming_it() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let file = dir.write(
        "app.env",
        "# settings\n\nexport A=1\nB = 'two # not a comment'\nC=\"say \\\"hi\\\"\\tthere\"  # a comment\nD=plain value # a comment\nE=from-file\n",
    );
    let mut spec = dir.sh("app", "echo \"A=$A|B=$B|C=$C|D=$D|E=$E\"; exec sleep 300");
    spec.env_files = vec![file.clone()];
    spec.env.insert("E".into(), "from-env".into());
    sup.run(spec).await;
    eventually(SECS_5, "the program's line", || {
        !sup.logs("app", LogStream::Stdout, 1).unwrap().is_empty()
    })
    .await;
    assert_eq!(
        sup.logs("app", LogStream::Stdout, 1).unwrap(),
        ["A=1|B=two # not a comment|C=say \"hi\"\tthere|D=plain value|E=from-env"]
    );
    // Read again at the next start.
    std::fs::write(&file, "A=changed\n").unwrap();
    sup.restart("app").await.unwrap();
    eventually(SECS_5, "the new value", || {
        sup.logs("app", LogStream::Stdout, 1)
            .unwrap()
            .first()
            .is_some_and(|l| l.starts_with("A=changed|"))
    })
    .await;

    // A missing file, a bad line: a failed start that names them.
    for (name, text, what) in [
        ("missing", None, "missing.env: No such file".to_owned()),
        (
            "broken",
            Some("A=1\nnot a pair\n"),
            "broken.env:2: no `=`".to_owned(),
        ),
        (
            "quote",
            Some("A='open\n"),
            "quote.env:1: an unclosed single quote".to_owned(),
        ),
    ] {
        let path = dir.join(&format!("{name}.env"));
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let mut spec = dir.sh(name, "exec sleep 300");
        spec.env_files = vec![path];
        let error = sup.register(spec).await.unwrap_err().to_string();
        assert!(error.contains(&what), "{error}");
        let info = sup.info(name).unwrap();
        assert_eq!(info.state, ProcessState::Fatal);
        assert!(info.message.unwrap_or_default().contains(&what));
    }
    sup.shutdown(ShutdownMode::Stop).await;
}
