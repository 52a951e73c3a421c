//! The Supervisor API: stats, events, reload, register/remove, config start-up.

use std::time::Duration;

use tokio_stream::StreamExt;
use zist_core::{Config, Error, Feed, LogStream, ProcessState, Supervisor};

use crate::support::{Dir, SECS_5, SECS_10, Sup, alive, eventually, group_alive, wait_state};

#[tokio::test]
async fn stats_are_meaningful_on_the_first_call_and_cover_the_tree() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // The leader only waits; a grandchild burns CPU and holds 40 MB.
    let spec = dir.sh(
        "busy",
        "awk 'BEGIN { s = \"x\"; while (length(s) < 40000000) s = s s; while (1) { i++ } }' & wait",
    );
    sup.run(spec).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = sup.stats("busy").await.unwrap();
    assert!(stats.cpu_percent > 20.0, "first call: {stats:?}");
    assert!(stats.cpu_percent < 250.0, "{stats:?}");
    assert!(stats.memory_bytes > 40_000_000, "{stats:?}");
    assert!(stats.memory_percent > 0.0 && stats.memory_percent < 100.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = sup.stats("busy").await.unwrap();
    assert!(again.cpu_percent > 20.0, "second call: {again:?}");
    // All programs in one scan: the new one gets its first window too.
    sup.run(dir.sh("calm", "sleep 300")).await;
    let all = sup.stats_all().await;
    let names: Vec<&str> = all.iter().map(|(i, _)| i.name.as_str()).collect();
    assert_eq!(names, ["busy", "calm"]);
    assert!(all[0].1.cpu_percent > 20.0, "{all:?}");
    assert!(all[0].1.memory_bytes > 40_000_000, "{all:?}");
    assert!(all[1].1.cpu_percent < 20.0, "{all:?}");
    assert!(all[1].1.memory_bytes > 0, "{all:?}");
    sup.stop("busy").await.unwrap();
    let idle = sup.stats("busy").await.unwrap();
    assert_eq!((idle.cpu_percent, idle.memory_bytes), (0.0, 0));
    assert_eq!(sup.stats_all().await[0].1.memory_bytes, 0);
}

#[tokio::test]
async fn events_tell_every_state_change_with_pids() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut events = sup.events();
    let mut spec = dir.sh("ev", "sleep 300");
    spec.start_secs = Duration::from_millis(50);
    let pid = sup.run(spec).await;
    wait_state(&sup, "ev", ProcessState::Running, SECS_5).await;
    sup.stop("ev").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(SECS_5, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Feed::Item(ev) => seen.push(ev),
            Feed::Gap(n) => panic!("gap of {n}"),
        }
    }
    let steps: Vec<_> = seen.iter().map(|e| (e.from, e.to)).collect();
    use ProcessState::*;
    assert_eq!(
        steps,
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    assert_eq!(seen[0].pid, Some(pid));
    assert_eq!(seen[3].pid, None);
    assert!(seen.iter().all(|e| e.name == "ev" && e.at.ends_with('Z')));
}

fn write_config(dir: &Dir, programs: &[(&str, &str, bool)]) -> std::path::PathBuf {
    let mut text = String::from("Token = \"t\"\n");
    for (name, body, autostart) in programs {
        text.push_str(&format!(
            "[[Program]]\nName = \"{name}\"\nPath = \"/bin/sh\"\nArgs = [\"-c\", \"{body}\"]\nAutostart = {autostart}\nStartSecs = \"100ms\"\n"
        ));
    }
    dir.write("conf.toml", &text)
}

#[tokio::test]
async fn a_config_starts_its_autostart_programs_and_reload_applies_the_difference() {
    let dir = Dir::new();
    let file = write_config(
        &dir,
        &[
            ("keep", "sleep 300", true),
            ("change", "sleep 300", true),
            ("drop", "sleep 300", true),
            ("lazy", "sleep 300", false),
        ],
    );
    let config = Config::load(&file).unwrap();
    let sup = Sup::wrap(Supervisor::from_config(&config).await);
    let pid = |name: &str| sup.info(name).unwrap().pid;
    let (keep, change, dropped) = (
        pid("keep").unwrap(),
        pid("change").unwrap(),
        pid("drop").unwrap(),
    );
    assert_eq!(sup.info("lazy").unwrap().state, ProcessState::Stopped);
    assert!(dir.join("logs").is_dir() || !dir.join("logs").exists());

    let file = write_config(
        &dir,
        &[
            ("keep", "sleep 300", true),
            ("change", "sleep 301", true),
            ("lazy", "sleep 300", false),
            ("new", "sleep 300", true),
        ],
    );
    let report = sup.reload(&Config::load(&file).unwrap()).await.unwrap();
    sup.track_all();
    assert_eq!(report.added, ["new"]);
    assert_eq!(report.removed, ["drop"]);
    assert_eq!(report.changed, ["change"]);
    assert_eq!(report.unchanged, ["keep", "lazy"]);
    assert_eq!(pid("keep"), Some(keep), "an unchanged program was touched");
    let changed = sup.info("change").unwrap();
    assert_ne!(changed.pid, Some(change));
    assert_eq!(changed.args, ["-c", "sleep 301"]);
    assert!(!alive(change) && !group_alive(dropped));
    assert!(matches!(sup.info("drop"), Err(Error::NoSuchProcess { .. })));
    assert!(sup.info("new").unwrap().pid.is_some());
    assert_eq!(sup.info("lazy").unwrap().state, ProcessState::Stopped);

    // A broken config is refused whole at load time; nothing changes.
    let broken = dir.write(
        "conf.toml",
        "Token = \"t\"\n[[Program]]\nName = \"keep\"\nPth = \"x\"\n",
    );
    let errors = Config::load(&broken).unwrap_err();
    assert!(errors.to_string().contains("`Path`"), "{errors}");
    assert_eq!(pid("keep"), Some(keep));
    sup.shutdown(zist_core::ShutdownMode::Stop).await;
}

#[tokio::test]
async fn register_twice_and_remove() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let pid = sup.run(dir.sh("once", "sleep 300")).await;
    let err = sup.register(dir.sh("once", "sleep 300")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    sup.remove("once").await.unwrap();
    assert!(!group_alive(pid));
    assert!(sup.list().is_empty());
    assert!(matches!(
        sup.logs("once", LogStream::Stdout, 1),
        Err(Error::NoSuchProcess { .. })
    ));
}

#[tokio::test]
async fn dropping_every_handle_stops_the_programs() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let pid = sup.run(dir.sh("orphan", "sleep 300")).await;
    let groups = sup.groups.clone();
    drop(sup);
    eventually(SECS_10, "the program to be stopped", || !group_alive(pid)).await;
    drop(groups);
}
