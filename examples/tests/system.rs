//! The system example (`examples/system.toml`) loads and comes up in
//! order: the database, then both web instances on their held socket,
//! then the workers.

use std::time::Duration;

use zist_core::testing::{Dir, Sup, wait_state};
use zist_core::{Config, ListenAddress, ProcessState, ShutdownMode, Supervisor, SupervisorOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_example_starts_in_order() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("system.toml");
    let mut config = Config::load(&file).unwrap();
    let names: Vec<&str> = config.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["db", "web", "worker"]);
    // The built server, and a free port instead of 8080.
    let dir = Dir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for spec in &mut config.programs {
        if spec.name.as_str() == "web" {
            assert_eq!(spec.listen.len(), 1);
            spec.path = env!("CARGO_BIN_EXE_listen-server").into();
            spec.listen = vec![ListenAddress::Tcp(port)];
            spec.alive = None;
        }
        for file in [&mut spec.logfile, &mut spec.err_logfile] {
            let name = file.as_ref().unwrap().file_name().unwrap().to_owned();
            *file = Some(dir.join("logs").join(name));
        }
    }
    let options = SupervisorOptions {
        log_dir: dir.join("logs"),
        ..SupervisorOptions::default()
    };
    let sup = Sup::wrap(Supervisor::start_config(options, &config).await);
    assert_eq!(sup.info("web:0").unwrap().state, ProcessState::Waiting);
    for name in ["db", "web:0", "web:1", "worker:0", "worker:1", "worker:2"] {
        wait_state(&sup, name, ProcessState::Running, Duration::from_secs(20)).await;
    }
    sup.track_all();
    let answer = zist_core::testing::request(port, "GET", "/", "", b"").unwrap();
    assert!(answer.body.starts_with("served by pid "), "{}", answer.body);
    let line = sup
        .logs("worker:2", zist_core::LogStream::Stdout, 1)
        .unwrap();
    assert!(
        line[0].starts_with("worker 2 (ZIST_INSTANCE=2): job"),
        "{line:?}"
    );
    sup.shutdown(ShutdownMode::Stop).await;
}
