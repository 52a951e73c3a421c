//! Programs with instances (docs/reference.md §9): names, environment,
//! group actions, scale (remembered), remove, rolling restarts.

use std::time::Duration;

use tokio_stream::StreamExt;
use zist_core::{
    Acted, Config, Error, Feed, ProcessAction, ProcessState, ShutdownMode, Signal, Supervisor,
    SupervisorOptions,
};

use crate::support::{Dir, SECS_5, SECS_10, Sup, alive, eventually, wait_state};

/// A program with `instances` instances that prints its instance number
/// (from Args and from the environment) and sleeps.
fn group(dir: &Dir, name: &str, instances: u32) -> zist_core::ProgramSpec {
    let mut spec = dir.sh(
        name,
        "echo \"arg=$0 env=$ZIST_INSTANCE port=$PORT\"; exec sleep 300",
    );
    // `sh -c BODY ARG0`: $0 is the first argument after the body.
    spec.args.push("{instance}".into());
    spec.env.insert("PORT".into(), "80{instance}".into());
    spec.logfile = Some(dir.join("logs/{instance}.out.log"));
    spec.start_secs = Duration::from_millis(100);
    spec.instances = Some(instances);
    spec
}

fn names(infos: &[zist_core::ProcessInfo]) -> Vec<&str> {
    infos.iter().map(|i| i.name.as_str()).collect()
}

fn each(acted: Acted) -> Vec<zist_core::ProcessInfo> {
    match acted {
        Acted::Each(infos) => infos,
        Acted::One(info) => panic!("one info for a program with instances: {info:?}"),
    }
}

#[tokio::test]
async fn instances_have_their_own_names_environment_and_logs_and_act_together() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let infos = each(sup.register_each(group(&dir, "web", 2)).await.unwrap());
    assert_eq!(names(&infos), ["web:0", "web:1"]);
    // Spawned (and, on a slow machine, maybe up for StartSecs already).
    assert!(infos.iter().all(|i| i.state.is_live() && i.pid.is_some()));
    assert_eq!(names(&sup.list()), ["web:0", "web:1"]);
    for i in 0..2 {
        eventually(SECS_5, "the instance's line in its own log", || {
            std::fs::read_to_string(dir.join(&format!("logs/{i}.out.log")))
                .is_ok_and(|t| t == format!("arg={i} env={i} port=80{i}\n"))
        })
        .await;
    }
    // One process is meant: the instances are named.
    let error = sup.info("web").unwrap_err();
    assert!(matches!(error, Error::Instances { .. }));
    assert_eq!(
        error.to_string(),
        "program `web` has 2 instances, name one of them: web:0, web:1"
    );
    assert!(sup.logs("web", zist_core::LogStream::Stdout, 10).is_err());

    // Actions on the name reach every instance.
    let stopped = each(sup.act("web", ProcessAction::Stop).await.unwrap());
    assert!(stopped.iter().all(|i| i.state == ProcessState::Stopped));
    let started = each(sup.act("web", ProcessAction::Start).await.unwrap());
    assert!(started.iter().all(|i| i.state.is_live()));
    let pids: Vec<i32> = started.iter().filter_map(|i| i.pid).collect();
    assert_eq!(pids.len(), 2);
    // And on one instance, that one only.
    let one = sup.act("web:1", ProcessAction::Stop).await.unwrap();
    assert!(matches!(&one, Acted::One(info) if info.state == ProcessState::Stopped));
    assert_eq!(sup.info("web:0").unwrap().pid, Some(pids[0]));
    let signalled = each(
        sup.act("web", ProcessAction::Signal(Signal::SIGTERM))
            .await
            .unwrap(),
    );
    assert_eq!(signalled.len(), 2);
    eventually(SECS_5, "instance 0 to end on SIGTERM", || !alive(pids[0])).await;

    // An instance is not removed alone; its program goes with all of them.
    let error = sup.remove("web:0").await.unwrap_err().to_string();
    assert_eq!(
        error,
        "`web:0` is an instance of `web`; scale `web` instead"
    );
    sup.remove("web").await.unwrap();
    assert!(sup.list().is_empty());
    assert!(matches!(sup.info("web"), Err(Error::NoSuchProcess { .. })));
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn scale_starts_new_instances_and_forgets_the_highest_numbered() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    sup.register_each(group(&dir, "web", 2)).await.unwrap();
    let up = sup.scale("web", 4).await.unwrap();
    sup.track_all();
    assert_eq!(names(&up), ["web:0", "web:1", "web:2", "web:3"]);
    assert!(up[3].state.is_live() && up[3].pid.is_some());
    for name in ["web:2", "web:3"] {
        wait_state(&sup, name, ProcessState::Running, SECS_5).await;
    }
    let gone: Vec<i32> = ["web:1", "web:2", "web:3"]
        .iter()
        .filter_map(|n| sup.info(n).unwrap().pid)
        .collect();
    let down = sup.scale("web", 1).await.unwrap();
    assert_eq!(names(&down), ["web:0"]);
    assert!(
        gone.iter().all(|&pid| !alive(pid)),
        "scaled-down processes end"
    );
    assert_eq!(names(&sup.list()), ["web:0"]);

    for (n, what) in [
        (0, "0 instances: a program runs 1 to 1000"),
        (1001, "1001 instances"),
    ] {
        let error = sup.scale("web", n).await.unwrap_err().to_string();
        assert!(error.contains(what), "{error}");
    }
    let mut plain = dir.sh("plain", "exec sleep 300");
    plain.autostart = false;
    sup.register(plain).await.unwrap();
    let error = sup.scale("plain", 2).await.unwrap_err().to_string();
    assert!(error.contains("has no Instances key"), "{error}");
    sup.shutdown(ShutdownMode::Stop).await;
}

/// A config with a program `web` of `instances` instances, and a state folder.
fn config_with(dir: &Dir, instances: u32) -> Config {
    let file = dir.write(
        "zist.toml",
        &format!(
            "Token = \"t\"\nLogDir = \"logs\"\nStateDir = \"state\"\n[[Program]]\nName = \"web\"\nPath = \"/bin/sleep\"\nArgs = [\"300\"]\nInstances = {instances}\n"
        ),
    );
    Config::load(&file).unwrap()
}

async fn supervisor_of(dir: &Dir, config: &Config) -> Sup {
    let options = SupervisorOptions {
        log_dir: dir.join("logs"),
        state_dir: Some(dir.join("state")),
        holder: false,
        ..SupervisorOptions::default()
    };
    Sup::wrap(Supervisor::start_config(options, config).await)
}

#[tokio::test]
async fn a_scale_is_remembered_until_the_config_changes_the_number() {
    let dir = Dir::new();
    let config = config_with(&dir, 2);
    let sup = supervisor_of(&dir, &config).await;
    assert_eq!(names(&sup.list()), ["web:0", "web:1"]);
    sup.scale("web", 3).await.unwrap();
    sup.track_all();
    sup.shutdown(ShutdownMode::Stop).await;
    drop(sup);

    let sup = supervisor_of(&dir, &config).await;
    assert_eq!(names(&sup.list()), ["web:0", "web:1", "web:2"]);
    sup.shutdown(ShutdownMode::Stop).await;
    drop(sup);

    // The config says another number now: that one holds.
    let config = config_with(&dir, 1);
    let sup = supervisor_of(&dir, &config).await;
    assert_eq!(names(&sup.list()), ["web:0"]);
    // And a reload that changes it adds instances, by name.
    let report = sup.reload(&config_with(&dir, 2)).await.unwrap();
    sup.track_all();
    assert_eq!(report.added, ["web:1"]);
    assert_eq!(report.unchanged, ["web:0"]);
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn a_rolling_restart_restarts_one_instance_at_a_time_and_stops_at_one_that_fails() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Instances exit at once, failing, while the file `broken` exists.
    let mut spec = dir.sh(
        "web",
        &format!(
            "cd {} && if [ -e broken ]; then exit 3; fi; exec sleep 300",
            dir.path().display()
        ),
    );
    spec.instances = Some(3);
    spec.start_secs = Duration::from_millis(200);
    spec.max_restarts = 0;
    sup.register_each(spec).await.unwrap();
    for i in 0..3 {
        wait_state(&sup, &format!("web:{i}"), ProcessState::Running, SECS_5).await;
    }
    let old: Vec<i32> = (0..3)
        .map(|i| sup.info(&format!("web:{i}")).unwrap().pid.unwrap())
        .collect();
    let mut events = sup.events();
    let rolled = each(sup.restart_rolling("web").await.unwrap());
    sup.track_all();
    assert!(rolled.iter().all(|i| i.state == ProcessState::Running));
    let new: Vec<i32> = rolled.iter().map(|i| i.pid.unwrap()).collect();
    assert!(old.iter().zip(&new).all(|(a, b)| a != b), "{old:?} {new:?}");
    // One at a time: each stops only once the one before runs again.
    let mut order = Vec::new();
    while order.len() < 12 {
        match tokio::time::timeout(SECS_5, events.next()).await {
            Ok(Some(Feed::Item(ev))) => order.push(format!("{}:{}", ev.name, ev.to)),
            other => panic!("{other:?} after {order:?}"),
        }
    }
    assert_eq!(
        order,
        [
            "web:0:stopping",
            "web:0:stopped",
            "web:0:starting",
            "web:0:running",
            "web:1:stopping",
            "web:1:stopped",
            "web:1:starting",
            "web:1:running",
            "web:2:stopping",
            "web:2:stopped",
            "web:2:starting",
            "web:2:running",
        ]
    );

    // A new process that does not come up stops the roll there.
    std::fs::write(dir.join("broken"), "").unwrap();
    let error = sup.restart_rolling("web").await.unwrap_err();
    assert!(matches!(&error, Error::RollingStopped { name, .. } if name == "web:0"));
    assert!(error.to_string().contains("exit status 3"), "{error}");
    assert_eq!(sup.info("web:1").unwrap().pid, Some(new[1]));
    assert_eq!(sup.info("web:2").unwrap().pid, Some(new[2]));
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn after_a_program_with_instances_waits_for_every_instance() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Instance 1 runs only once the file `go` exists.
    let mut pool = dir.sh(
        "pool",
        &format!(
            "cd {} && if [ \"$ZIST_INSTANCE\" = 1 ]; then while [ ! -e go ]; do sleep 0.02; done; fi; exec sleep 300",
            dir.path().display()
        ),
    );
    pool.instances = Some(2);
    pool.autostart = false;
    pool.start_secs = Duration::from_millis(100);
    // Not ready while it waits for `go`: the Exec check looks for the file.
    pool.ready = Some(zist_core::Check {
        probe: zist_core::Probe::Exec(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "[ \"$ZIST_INSTANCE\" = 0 ] || [ -e {} ]",
                dir.join("go").display()
            ),
        ]),
        interval: Duration::from_millis(50),
        timeout: SECS_10,
        failures: 3,
        watchdog: None,
    });
    sup.register_each(pool).await.unwrap();
    let mut app = dir.sh("app", "exec sleep 300");
    app.autostart = false;
    app.after = vec![zist_core::ProgramName::new("pool").unwrap()];
    sup.register(app).await.unwrap();
    // Starting app pulls every instance of pool in.
    let app = sup.start("app").await.unwrap();
    assert_eq!(app.state, ProcessState::Waiting);
    wait_state(&sup, "pool:0", ProcessState::Running, SECS_5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sup.info("app").unwrap().state, ProcessState::Waiting);
    assert_eq!(
        sup.info("app").unwrap().message.as_deref(),
        Some("waiting for pool")
    );
    std::fs::write(dir.join("go"), "").unwrap();
    wait_state(&sup, "app", ProcessState::Running, SECS_5).await;
    sup.shutdown(ShutdownMode::Stop).await;
}
