//! The seed routes and API v1: auth, lookups by name and pid, Web = false, errors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use zist_core::{ProcessState, ProgramName, ProgramSpec, Supervisor, SupervisorOptions};

const TOKEN: &str = "http-test-token";

struct Rig {
    addr: SocketAddr,
    sup: Supervisor,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(SupervisorOptions {
            log_dir: dir.path().join("logs"),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = zist_http::serve("127.0.0.1:0".parse().unwrap(), TOKEN, sup.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        Self {
            addr,
            sup,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn add(&self, name: &str, script: &str, web: bool) {
        let mut spec =
            ProgramSpec::new(ProgramName::new(name).unwrap(), "/bin/sh").args(["-c", script]);
        spec.web = web;
        spec.start_secs = Duration::from_millis(50);
        self.sup.register(spec).await.unwrap();
    }

    /// (status, JSON body) of a request, bounded in time.
    async fn call(&self, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let (addr, method, path) = (self.addr, method.to_owned(), path.to_owned());
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(stream, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).unwrap();
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text[9..12].parse().unwrap();
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let body = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
                (Some(a), Some(b)) if b >= a => &body[a..=b],
                _ => "null",
            };
            (status, serde_json::from_str(body).unwrap_or(Value::Null))
        })
        .await
        .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for info in self.sup.list() {
            if let Some(pid) = info.pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_routes_work_as_the_seed_had_them() {
    let rig = Rig::new().await;
    rig.add("app1", "echo hello; sleep 300", true).await;
    rig.add("secret", "sleep 300", false).await;
    let (status, list) = rig.call("GET", &format!("/{TOKEN}"), None).await;
    assert_eq!(status, 200);
    let app = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "app1")
        .unwrap()
        .clone();
    for key in [
        "isalive",
        "name",
        "numrestarts",
        "path",
        "pid",
        "timealive",
        "timestarted",
    ] {
        assert!(app.get(key).is_some(), "missing {key}: {app}");
    }
    assert_eq!(app["isalive"], true);
    let pid = app["pid"].as_i64().unwrap();
    // POST works like GET; wrong token 401.
    assert_eq!(rig.call("POST", &format!("/{TOKEN}"), None).await.0, 200);
    assert_eq!(rig.call("GET", "/wrong", None).await.0, 401);
    // {pid} is the pid or the name.
    for key in [pid.to_string(), "app1".to_owned()] {
        let (status, stats) = rig
            .call("GET", &format!("/{TOKEN}/{key}/stats"), None)
            .await;
        assert_eq!(status, 200, "{stats}");
        assert!(
            stats["cpu"].is_string() && stats["mem"].is_string(),
            "{stats}"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, lines) = rig
            .call("GET", &format!("/{TOKEN}/app1/stdout"), None)
            .await;
        assert_eq!(status, 200);
        if lines == serde_json::json!(["hello"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Web = false: 403 on stats, stdout, stderr; unknown pid 404.
    for route in ["stats", "stdout", "stderr"] {
        let (status, body) = rig
            .call("GET", &format!("/{TOKEN}/secret/{route}"), None)
            .await;
        assert_eq!(status, 403, "{route}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    assert_eq!(
        rig.call("GET", &format!("/{TOKEN}/999999/stats"), None)
            .await
            .0,
        404
    );
    // kill stops, start starts.
    let (status, killed) = rig.call("POST", &format!("/{TOKEN}/app1/kill"), None).await;
    assert_eq!(
        (status, killed["isalive"].clone()),
        (200, Value::Bool(false)),
        "{killed}"
    );
    let (status, started) = rig.call("GET", &format!("/{TOKEN}/app1/start"), None).await;
    assert_eq!(
        (status, started["isalive"].clone()),
        (200, Value::Bool(true)),
        "{started}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_v1_needs_the_bearer_token_and_maps_errors_to_statuses() {
    let rig = Rig::new().await;
    rig.add("svc", "echo one; echo two; sleep 300", true).await;
    rig.add("hidden", "sleep 300", false).await;
    assert_eq!(rig.call("GET", "/api/v1/processes", None).await.0, 401);
    assert_eq!(
        rig.call("GET", "/api/v1/processes", Some("nope")).await.0,
        401
    );
    let (status, list) = rig.call("GET", "/api/v1/processes", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, info) = rig.call("GET", "/api/v1/processes/svc", Some(TOKEN)).await;
    assert_eq!(
        (status, info["state"].clone()),
        (200, serde_json::json!("starting"))
    );
    let (status, err) = rig
        .call("POST", "/api/v1/processes/svc/start", Some(TOKEN))
        .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (409, serde_json::json!("conflict")),
        "{err}"
    );
    let (status, err) = rig.call("GET", "/api/v1/processes/nope", Some(TOKEN)).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, serde_json::json!("not_found"))
    );
    assert_eq!(
        rig.call("GET", "/api/v1/processes/hidden/stats", Some(TOKEN))
            .await
            .0,
        403
    );
    assert_eq!(
        rig.call("GET", "/api/v1/processes/hidden/logs/stdout", Some(TOKEN))
            .await
            .0,
        403
    );
    let (status, stats) = rig
        .call("GET", "/api/v1/processes/svc/stats", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, lines) = rig
            .call(
                "GET",
                "/api/v1/processes/svc/logs/stdout?lines=1",
                Some(TOKEN),
            )
            .await;
        if lines == serde_json::json!(["two"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{lines}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.call(
            "GET",
            "/api/v1/processes/svc/logs/stdout?lines=x",
            Some(TOKEN)
        )
        .await
        .0,
        400
    );
    let (status, stopped) = rig
        .call("POST", "/api/v1/processes/svc/stop", Some(TOKEN))
        .await;
    assert_eq!(
        (status, stopped["state"].clone()),
        (200, serde_json::json!("stopped"))
    );
    assert_eq!(rig.sup.info("svc").unwrap().state, ProcessState::Stopped);
    let (status, body) = rig.call("GET", "/no/such/route/here", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, serde_json::json!("not_found"))
    );
}
