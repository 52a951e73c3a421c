//! `Listen` and rolling restarts with a real socket-activated server
//! (`listen-server`, taking its socket through the `listenfd` crate, as a
//! program written for systemd would): a client calling in a loop sees no
//! failed request while both instances are replaced.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zist_core::testing::{Dir, Sup, alive, wait_state};
use zist_core::{
    Acted, Check, ListenAddress, ProcessState, ProgramName, ProgramSpec, ShutdownMode,
};

/// A free port on 127.0.0.1.
fn free_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

fn server(dir: &Dir, name: &str, address: std::net::SocketAddr) -> ProgramSpec {
    let mut spec = ProgramSpec::new(
        ProgramName::new(name).unwrap(),
        env!("CARGO_BIN_EXE_listen-server"),
    );
    spec.listen = vec![ListenAddress::Tcp(address)];
    spec.logfile = Some(dir.join(&format!("logs/{name}-{{instance}}.out.log")));
    spec.err_logfile = Some(dir.join(&format!("logs/{name}-{{instance}}.err.log")));
    spec.stop_timeout = Duration::from_secs(5);
    // Ready once it has taken the socket (a Tcp check would pass at once:
    // the held socket accepts into its backlog before any process does).
    spec.ready = Some(Check {
        probe: zist_core::Probe::Line(zist_core::LinePattern::new("^listening on ").unwrap()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
        failures: 3,
        watchdog: None,
    });
    spec
}

/// One request; the pid that answered.
fn get(address: std::net::SocketAddr) -> Result<u32, String> {
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    answer
        .starts_with("HTTP/1.1 200 OK")
        .then(|| answer.rsplit("served by pid ").next()?.trim().parse().ok())
        .flatten()
        .ok_or_else(|| format!("bad answer: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_on_a_held_socket_fails_no_request() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let address = free_port();
    let mut spec = server(&dir, "web", address);
    spec.instances = Some(2);
    let infos = match sup.register_each(spec).await.unwrap() {
        Acted::Each(infos) => infos,
        other => panic!("{other:?}"),
    };
    sup.track_all();
    for info in &infos {
        wait_state(
            &sup,
            &info.name,
            ProcessState::Running,
            Duration::from_secs(10),
        )
        .await;
    }
    let old: Vec<u32> = ["web:0", "web:1"]
        .iter()
        .map(|n| sup.info(n).unwrap().pid.unwrap() as u32)
        .collect();

    // A client calling in a loop, from before the restart to after it.
    let running = Arc::new(AtomicBool::new(true));
    let client = {
        let running = running.clone();
        std::thread::spawn(move || {
            let (mut served, mut failed) = (Vec::new(), Vec::new());
            while running.load(Ordering::Relaxed) {
                match get(address) {
                    Ok(pid) => served.push(pid),
                    Err(e) => failed.push(e),
                }
            }
            (served, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rolled = match sup.restart_rolling("web").await.unwrap() {
        Acted::Each(infos) => infos,
        other => panic!("{other:?}"),
    };
    sup.track_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.store(false, Ordering::Relaxed);
    let (served, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        served.len() + failed.len(),
        &failed[..failed.len().min(5)]
    );
    let new: Vec<u32> = rolled.iter().map(|i| i.pid.unwrap() as u32).collect();
    assert!(rolled.iter().all(|i| i.state == ProcessState::Running));
    assert!(
        old.iter().all(|pid| !new.contains(pid)),
        "both replaced: {old:?} -> {new:?}"
    );
    // Requests were served before and after: by old processes and new ones.
    assert!(served.iter().any(|pid| old.contains(pid)), "{served:?}");
    assert!(served.iter().any(|pid| new.contains(pid)), "{served:?}");
    assert!(old.iter().all(|&pid| !alive(pid as i32)));
    sup.shutdown(ShutdownMode::Stop).await;
    // The socket closes with its program (once its actors have let go).
    zist_core::testing::eventually(Duration::from_secs(5), "the socket to close", || {
        std::net::TcpStream::connect(address).is_err()
    })
    .await;
}

#[tokio::test]
async fn a_socket_that_cannot_be_opened_is_an_error_naming_its_address() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let error = sup
        .register(server(&dir, "web", address))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("program `web` cannot listen on {address}: ")),
        "{error}"
    );
    assert!(sup.list().is_empty());

    // A Unix socket: made when registered, removed with the program.
    let path = dir.join("app.sock");
    let mut spec = ProgramSpec::new(ProgramName::new("unix").unwrap(), "/bin/sleep").args(["300"]);
    spec.listen = vec![ListenAddress::Unix(path.clone())];
    spec.autostart = false;
    sup.register(spec).await.unwrap();
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    sup.remove("unix").await.unwrap();
    assert!(!path.exists());
    sup.shutdown(ShutdownMode::Stop).await;
}
