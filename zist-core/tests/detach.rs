//! Detach: the program runs on, writing to its log files, after zist lets go
//! and after the supervisor and its runtime are gone.

use std::path::Path;
use std::time::Duration;

use zist_core::{
    LogStream, ProcessState, ProgramName, ProgramSpec, ShutdownMode, Supervisor, SupervisorOptions,
};

use crate::support::{Dir, Groups, SECS_10, Sup, alive, eventually, group_alive, wait_state};

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Blocks until `cond` holds or `limit` passes (for tests without a runtime).
fn wait_blocking(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn detach_outlives_the_supervisor(dir: &Dir, spec: ProgramSpec) {
    let groups = Groups::default();
    let name = spec.name.to_string();
    let out = spec.logfile.clone().unwrap();
    let err = spec.err_logfile.clone().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pid = runtime.block_on(async {
        let sup = Supervisor::new(SupervisorOptions {
            log_dir: dir.join("logs"),
            ..SupervisorOptions::default()
        });
        let pid = sup.register(spec).await.unwrap().pid.unwrap();
        groups.add(pid);
        eventually(SECS_10, "first lines", || {
            sup.logs(&name, LogStream::Stdout, 3).unwrap().len() == 3
        })
        .await;
        let info = sup.detach(&name).await.unwrap();
        assert_eq!((info.state, info.pid), (ProcessState::Detached, Some(pid)));
        pid
    });
    // The supervisor, its tasks, its pipes' read ends: all gone with the runtime.
    drop(runtime);
    let before = lines(&out);
    wait_blocking(SECS_10, "stdout to keep growing in the log file", || {
        lines(&out) > before + 5
    });
    wait_blocking(SECS_10, "stderr to keep growing too", || lines(&err) > 5);
    assert!(alive(pid), "the detached program died");
    // Its output relays end with it.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // This test process is the program's parent and its runtime is gone, so
    // nobody may reap it: a zombie counts as ended.
    wait_blocking(SECS_10, "the program to end", || {
        !group_alive(pid) || zombie(pid)
    });
    drop(groups);
}

#[test]
fn a_detached_script_outlives_the_supervisor_and_keeps_logging() {
    let dir = Dir::new();
    let mut spec = dir.sh(
        "script",
        "while true; do echo out; echo err >&2; sleep 0.02; done",
    );
    spec.stop_timeout = Duration::from_secs(1);
    detach_outlives_the_supervisor(&dir, spec);
}

#[test]
fn a_detached_binary_outlives_the_supervisor_and_keeps_logging() {
    let dir = Dir::new();
    let mut spec = dir.sh("binary", "");
    spec.path = "awk".into();
    spec.args = vec![
        "BEGIN { while (1) { print \"out\"; print \"err\" > \"/dev/stderr\"; fflush(); system(\"sleep 0.02\") } }".into(),
    ];
    detach_outlives_the_supervisor(&dir, spec);
}

#[tokio::test]
async fn zist_never_signals_a_detached_program_and_reaps_it_when_it_ends() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let pid = sup
        .run(dir.sh(
            "gone",
            "trap 'exit 7' USR1; while true; do sleep 0.02; done",
        ))
        .await;
    sup.detach("gone").await.unwrap();
    // Stop and shutdown leave it alone.
    let info = sup.stop("gone").await.unwrap();
    assert_eq!(info.state, ProcessState::Detached);
    assert!(
        sup.signal("gone", zist_core::Signal::SIGUSR1)
            .await
            .is_err()
    );
    assert!(alive(pid));
    // When it ends, zist still reaps it: no zombie is left behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    eventually(SECS_10, "the detached child to be reaped", || !alive(pid)).await;
    // A detached program can be started anew; the new process is supervised.
    let fresh = sup.start("gone").await.unwrap();
    sup.groups.add(fresh.pid.unwrap());
    assert_eq!(fresh.state, ProcessState::Starting);
    sup.stop("gone").await.unwrap();
}

#[tokio::test]
async fn shutdown_detach_leaves_every_program_running() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut pids = Vec::new();
    for i in 0..3 {
        let pid = sup
            .run(dir.sh(&format!("d{i}"), "while true; do echo x; sleep 0.05; done"))
            .await;
        pids.push(pid);
    }
    wait_state(&sup, "d0", ProcessState::Running, SECS_10).await;
    sup.shutdown(ShutdownMode::Detach).await;
    for pid in &pids {
        assert!(alive(*pid));
    }
    let out = dir.join("logs/d0.out.log");
    let before = lines(&out);
    eventually(SECS_10, "detached output to keep coming", || {
        lines(&out) > before + 3
    })
    .await;
    let _ = ProgramName::new("x");
}

#[tokio::test]
async fn detach_of_a_stopped_program_is_an_error() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("idle", "sleep 300");
    spec.autostart = false;
    sup.register(spec).await.unwrap();
    let err = sup.detach("idle").await.unwrap_err();
    assert_eq!(err.kind(), zist_core::ErrorKind::NotRunning);
}
