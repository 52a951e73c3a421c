//! Start and stop order (`After`, docs/reference.md §9): waiting, pulled-in
//! dependencies, reverse stops, parallel starts of independent programs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::StreamExt;
use zist_core::{Feed, LinePattern, ProcessState, ProgramName, ProgramSpec, ShutdownMode};

use crate::support::{Dir, SECS_5, SECS_10, Sup, eventually, wait_state};

/// Every state change from now on, in order, as `name:state`.
#[derive(Clone)]
struct Changes(Arc<Mutex<Vec<String>>>);

impl Changes {
    fn watch(sup: &Sup) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut events = sup.events();
        let into = seen.clone();
        tokio::spawn(async move {
            while let Some(Feed::Item(ev)) = events.next().await {
                into.lock().unwrap().push(format!("{}:{}", ev.name, ev.to));
            }
        });
        Self(seen)
    }

    /// Where `change` first happened; panics when it has not.
    fn at(&self, change: &str) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .position(|c| c == change)
            .unwrap_or_else(|| panic!("no {change} in {seen:?}"))
    }

    fn has(&self, change: &str) -> bool {
        self.0.lock().unwrap().iter().any(|c| c == change)
    }
}

/// A program that is ready (a Line check) once the file `name.go` exists
/// in `dir`, and then runs on.
fn gated(dir: &Dir, name: &str, after: &[&str]) -> ProgramSpec {
    let mut spec = dir.sh(
        name,
        &format!(
            "cd {} && while [ ! -e {name}.go ]; do sleep 0.02; done; echo up; exec sleep 300",
            dir.path().display()
        ),
    );
    spec.autostart = false;
    spec.ready = Some(zist_core::Check {
        probe: zist_core::Probe::Line(LinePattern::new("^up$").unwrap()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
        failures: 3,
        watchdog: None,
    });
    spec.after = after.iter().map(|n| ProgramName::new(n).unwrap()).collect();
    spec
}

fn go(dir: &Dir, name: &str) {
    std::fs::write(dir.join(&format!("{name}.go")), "").unwrap();
}

#[tokio::test]
async fn start_all_starts_each_program_once_the_ones_it_comes_after_run() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let changes = Changes::watch(&sup);
    sup.register(gated(&dir, "db", &[])).await.unwrap();
    sup.register(gated(&dir, "cache", &[])).await.unwrap();
    sup.register(gated(&dir, "app", &["db", "cache"]))
        .await
        .unwrap();
    sup.register(gated(&dir, "worker", &["app"])).await.unwrap();
    let infos = sup.start_all().await;
    let state = |name: &str| infos.iter().find(|i| i.name == name).unwrap().state;
    // Independent programs start at once, in parallel.
    assert_eq!(state("db"), ProcessState::Starting);
    assert_eq!(state("cache"), ProcessState::Starting);
    assert_eq!(state("app"), ProcessState::Waiting);
    let app = sup.info("app").unwrap();
    assert_eq!(app.message.as_deref(), Some("waiting for db"));
    assert_eq!(app.pid, None);
    assert_eq!(
        sup.info("worker").unwrap().message.as_deref(),
        Some("waiting for app")
    );

    go(&dir, "db");
    wait_state(&sup, "db", ProcessState::Running, SECS_5).await;
    eventually(SECS_5, "app to wait for cache", || {
        sup.info("app").unwrap().message.as_deref() == Some("waiting for cache")
    })
    .await;
    assert_eq!(sup.info("app").unwrap().state, ProcessState::Waiting);
    go(&dir, "cache");
    wait_state(&sup, "app", ProcessState::Starting, SECS_5).await;
    // Ready, not merely spawned, is what the worker waits for.
    assert_eq!(sup.info("worker").unwrap().state, ProcessState::Waiting);
    go(&dir, "app");
    go(&dir, "worker");
    wait_state(&sup, "worker", ProcessState::Running, SECS_5).await;
    assert!(changes.at("db:running") < changes.at("app:starting"));
    assert!(changes.at("cache:running") < changes.at("app:starting"));
    assert!(changes.at("app:running") < changes.at("worker:starting"));
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn starting_one_program_starts_what_it_comes_after_and_a_dead_dependency_is_named() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // db is not ready until told: worker is seen waiting.
    for name in ["app", "worker"] {
        go(&dir, name);
    }
    sup.register(gated(&dir, "db", &[])).await.unwrap();
    sup.register(gated(&dir, "app", &["db"])).await.unwrap();
    sup.register(gated(&dir, "worker", &["app"])).await.unwrap();
    sup.register(gated(&dir, "unrelated", &[])).await.unwrap();
    let worker = sup.start("worker").await.unwrap();
    assert_eq!(worker.state, ProcessState::Waiting);
    go(&dir, "db");
    wait_state(&sup, "worker", ProcessState::Running, SECS_10).await;
    assert_eq!(sup.info("db").unwrap().state, ProcessState::Running);
    assert_eq!(sup.info("app").unwrap().state, ProcessState::Running);
    assert_eq!(sup.info("unrelated").unwrap().state, ProcessState::Stopped);

    // Stopping one program leaves the programs after it alone.
    sup.stop("db").await.unwrap();
    assert_eq!(sup.info("app").unwrap().state, ProcessState::Running);
    // Starting app again pulls the stopped db in; app waits for it.
    sup.stop("app").await.unwrap();
    sup.stop("db").await.unwrap();
    // Not ready until told, so that app is seen waiting.
    std::fs::remove_file(dir.join("db.go")).unwrap();
    let app = sup.start("app").await.unwrap();
    assert_eq!(app.state, ProcessState::Waiting);
    assert_eq!(sup.info("db").unwrap().state, ProcessState::Starting);
    go(&dir, "db");
    wait_state(&sup, "app", ProcessState::Running, SECS_10).await;
    assert_eq!(sup.info("db").unwrap().state, ProcessState::Running);

    // A dependency that exits and is not restarted: named, with its state.
    let mut oneshot = dir.sh("migrate", "exit 0");
    oneshot.autostart = false;
    oneshot.restart = zist_core::RestartPolicy::Never;
    sup.register(oneshot).await.unwrap();
    let mut after = gated(&dir, "web", &["migrate"]);
    after.autostart = false;
    sup.register(after).await.unwrap();
    sup.start("migrate").await.unwrap();
    wait_state(&sup, "migrate", ProcessState::Exited, SECS_5).await;
    // start_all starts what is not running (migrate again, which exits
    // at once); web waits, and says for what.
    go(&dir, "web");
    sup.start_all().await;
    eventually(SECS_5, "web to name the exited dependency", || {
        sup.info("migrate").unwrap().state == ProcessState::Exited
            && sup.info("web").unwrap().message.as_deref()
                == Some("waiting for migrate, which is exited")
    })
    .await;
    assert_eq!(sup.info("web").unwrap().state, ProcessState::Waiting);
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn stop_all_and_shutdown_stop_in_reverse_order_and_independent_programs_together() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    for name in ["db", "app", "worker", "other"] {
        go(&dir, name);
    }
    sup.register(gated(&dir, "db", &[])).await.unwrap();
    sup.register(gated(&dir, "app", &["db"])).await.unwrap();
    sup.register(gated(&dir, "worker", &["app"])).await.unwrap();
    sup.register(gated(&dir, "other", &[])).await.unwrap();
    sup.start_all().await;
    for name in ["db", "app", "worker", "other"] {
        wait_state(&sup, name, ProcessState::Running, SECS_10).await;
    }
    let changes = Changes::watch(&sup);
    let infos = sup.stop_all().await;
    assert!(infos.iter().all(|i| i.state == ProcessState::Stopped));
    assert!(changes.at("worker:stopped") < changes.at("app:stopping"));
    assert!(changes.at("app:stopped") < changes.at("db:stopping"));
    // Independent of the chain: stopping with its first link.
    assert!(changes.at("other:stopping") < changes.at("worker:stopped"));

    sup.start_all().await;
    for name in ["db", "app", "worker", "other"] {
        wait_state(&sup, name, ProcessState::Running, SECS_10).await;
    }
    let changes = Changes::watch(&sup);
    sup.shutdown(ShutdownMode::Stop).await;
    eventually(SECS_5, "every stop announced", || {
        ["db", "app", "worker", "other"]
            .iter()
            .all(|n| changes.has(&format!("{n}:stopped")))
    })
    .await;
    assert!(changes.at("worker:stopped") < changes.at("app:stopping"));
    assert!(changes.at("app:stopped") < changes.at("db:stopping"));
}

#[tokio::test]
async fn a_program_added_after_an_unknown_one_is_refused() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let error = sup
        .register(gated(&dir, "app", &["db"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`After` names `db`, which is no program"),
        "{error}"
    );
    assert!(sup.info("app").is_err());
}
