//! The JSON-RPC server: auth, docs/reference.md §4 conformance, methods, errors, subscriptions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::http_client::HttpClientBuilder;
use jsonrpsee::rpc_params;
use jsonrpsee::server::ServerHandle;
use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::{Value, json};
use zist_core::testing::request;
use zist_core::{
    ProcessState, ProgramName, ProgramSpec, ShutdownMode, Supervisor, SupervisorOptions,
};
use zist_rpc::{NoDaemon, ServeOptions, ZistApiClient, rpc_module, serve};

const TOKEN: &str = "test-token-123";

/// A supervisor with a server in front of it, torn down (programs stopped,
/// groups killed) when dropped.
struct Rig {
    addr: SocketAddr,
    sup: Supervisor,
    handle: ServerHandle,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Self {
        Self::with_options(ServeOptions::default()).await
    }

    async fn with_options(options: ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(SupervisorOptions {
            log_dir: dir.path().join("logs"),
            ..SupervisorOptions::default()
        });
        let module = rpc_module(sup.clone(), Arc::new(NoDaemon(sup.clone())));
        let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), TOKEN, module, options)
            .await
            .unwrap();
        Self {
            addr,
            sup,
            handle,
            _dir: dir,
        }
    }

    async fn add(&self, name: &str, script: &str, autostart: bool) {
        let mut spec =
            ProgramSpec::new(ProgramName::new(name).unwrap(), "/bin/sh").args(["-c", script]);
        spec.autostart = autostart;
        spec.start_secs = Duration::from_millis(50);
        self.sup.register(spec).await.unwrap();
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> jsonrpsee::http_client::HttpClient {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        HttpClientBuilder::default()
            .set_headers(headers)
            .request_timeout(Duration::from_secs(10))
            .build(self.url())
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
        let _ = self.handle.stop();
    }
}

/// A raw HTTP/1.1 POST: (status, body). Bounded in time.
fn post(addr: SocketAddr, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let response = post_bytes(addr, &auth, body.as_bytes());
    // Chunked bodies: keep only the JSON.
    let body = match (response.1.find(['{', '[']), response.1.rfind(['}', ']'])) {
        (Some(a), Some(b)) if b >= a => response.1[a..=b].to_owned(),
        _ => String::new(),
    };
    (response.0, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_token_nothing_runs() {
    let rig = Rig::new().await;
    rig.add("victim", "sleep 300", false).await;
    let stop = r#"{"jsonrpc":"2.0","method":"process.start","params":{"name":"victim"},"id":1}"#;
    for token in [
        None,
        Some("wrong"),
        Some("test-token-12"),
        Some("test-token-1234"),
    ] {
        let (status, _) = tokio::task::spawn_blocking({
            let addr = rig.addr;
            move || post(addr, token, stop)
        })
        .await
        .unwrap();
        assert_eq!(status, 401, "token {token:?}");
    }
    assert_eq!(
        rig.sup.info("victim").unwrap().state,
        ProcessState::Stopped,
        "a method ran without auth"
    );
    // The WebSocket handshake is refused the same way.
    let err = WsClientBuilder::default()
        .build(format!("ws://{}", rig.addr))
        .await
        .map(|_| ())
        .expect_err("a WebSocket without a token must be refused");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_json_rpc_to_the_letter() {
    let rig = Rig::new().await;
    let addr = rig.addr;
    let cases: Vec<(&str, Option<i64>)> = vec![
        (r#"{"jsonrpc":"2.0","method":"daemon.status","id":7}"#, None),
        (
            r#"{"jsonrpc":"2.0","method":"daemon.status","id":"#,
            Some(-32700),
        ),
        (r#"{"foo":"bar"}"#, Some(-32600)),
        (r#"42"#, Some(-32600)),
        (
            r#"{"jsonrpc":"2.0","method":"no.such","id":1}"#,
            Some(-32601),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"process.info","params":{"nom":"x"},"id":1}"#,
            Some(-32602),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"process.info","params":{"name":"x"},"id":1}"#,
            Some(-32001),
        ),
    ];
    for (body, code) in cases {
        let (status, text) = tokio::task::spawn_blocking(move || post(addr, Some(TOKEN), body))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}: {text}");
        let answer = json_of(&text);
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {text}");
        match code {
            None => assert!(answer["result"]["pid"].is_u64(), "{body}: {text}"),
            Some(code) => assert_eq!(answer["error"]["code"], code, "{body}: {text}"),
        }
    }
    // A batch gets an array of answers.
    let batch = r#"[{"jsonrpc":"2.0","method":"daemon.status","id":1},{"jsonrpc":"2.0","method":"process.list","id":2}]"#;
    let (_, text) = tokio::task::spawn_blocking(move || post(addr, Some(TOKEN), batch))
        .await
        .unwrap();
    let answers = json_of(&text);
    assert_eq!(answers.as_array().map(Vec::len), Some(2), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_drives_every_process_method() {
    let rig = Rig::new().await;
    rig.add("svc", "echo hello; echo oops >&2; sleep 300", false)
        .await;
    let client = rig.client();
    let status = client.daemon_status().await.unwrap();
    assert_eq!(status.programs, 1);
    let started = client
        .process_start("svc".into())
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_eq!(started.state, ProcessState::Starting);
    let pid = started.pid.unwrap();
    // Starting a running program is -32002.
    let err = client.process_start("svc".into()).await.unwrap_err();
    assert!(
        err.to_string().contains("-32002") || format!("{err:?}").contains("32002"),
        "{err:?}"
    );
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = client
            .process_logs("svc".into(), zist_core::LogStream::Stdout, Some(10))
            .await
            .unwrap();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines, ["hello"]);
    let stats = client.process_stats("svc".into()).await.unwrap();
    assert!(stats.memory_bytes > 0);
    let signalled = client
        .process_signal("svc".into(), "CONT".into())
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_eq!(signalled.pid, Some(pid));
    let err = client
        .process_signal("svc".into(), "NOPE".into())
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("32005"), "{err:?}");
    let restarted = client
        .process_restart("svc".into(), None)
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_ne!(restarted.pid, Some(pid));
    let stopped = client
        .process_stop("svc".into())
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_eq!((stopped.state, stopped.pid), (ProcessState::Stopped, None));
    // process.add with program-file keys, then remove.
    let added = client
        .process_add(
            json!({"Name": "added", "Path": "/bin/sleep", "Args": "300", "Autostart": false}),
        )
        .await
        .unwrap()
        .one()
        .unwrap();
    assert_eq!(
        (added.name.as_str(), added.state),
        ("added", ProcessState::Stopped)
    );
    let err = client
        .process_add(json!({"Name": "bad", "Pth": "/bin/true"}))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("nearest known key is `Path`"),
        "{err:?}"
    );
    assert!(client.process_remove("added".into()).await.unwrap());
    let all = client.process_start_all().await.unwrap();
    assert!(all.iter().all(|i| i.state == ProcessState::Starting));
    let all = client.process_stop_all().await.unwrap();
    assert!(all.iter().all(|i| i.state == ProcessState::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_stream_events_and_lines_over_websocket() {
    let rig = Rig::new().await;
    rig.add(
        "talker",
        "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done",
        false,
    )
    .await;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let ws = WsClientBuilder::default()
        .set_headers(headers)
        .build(format!("ws://{}", rig.addr))
        .await
        .unwrap();
    let mut events = ws
        .subscribe::<zist_core::ProcessEvent, _>(
            "events.subscribe",
            rpc_params![],
            "events.unsubscribe",
        )
        .await
        .unwrap();
    let info: zist_core::ProcessInfo = ws
        .request("process.start", rpc_params!["talker"])
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.name.as_str(), first.to, first.pid),
        ("talker", ProcessState::Starting, info.pid)
    );
    let mut follow = ws
        .subscribe::<String, _>(
            "process.follow",
            rpc_params!["talker", "stdout"],
            "process.unfollow",
        )
        .await
        .unwrap();
    let a = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let n = |l: &str| l.trim_start_matches("line ").parse::<u64>().unwrap();
    assert_eq!(n(&b), n(&a) + 1, "{a} then {b}");
    rig.sup.shutdown(ShutdownMode::Stop).await;
}

/// A raw POST returning the status and the raw body (which may be empty).
fn post_raw(addr: SocketAddr, body: &str) -> (u16, String) {
    post_bytes(
        addr,
        &format!("Authorization: Bearer {TOKEN}\r\n"),
        body.as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_get_no_body_and_bad_ids_are_invalid_requests() {
    let rig = Rig::new().await;
    rig.add("quiet", "sleep 300", false).await;
    let addr = rig.addr;
    let ask = |body: &'static str| tokio::task::spawn_blocking(move || post_raw(addr, body));
    // A notification runs, and gets no body at all.
    let (status, body) =
        ask(r#"{"jsonrpc":"2.0","method":"process.start","params":{"name":"quiet"}}"#)
            .await
            .unwrap();
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(
        rig.sup.info("quiet").unwrap().state,
        ProcessState::Starting,
        "the notification did not run"
    );
    let (status, body) = ask(r#"[{"jsonrpc":"2.0","method":"daemon.status"},{"jsonrpc":"2.0","method":"daemon.status"}]"#).await.unwrap();
    assert_eq!((status, body.as_str()), (204, ""));
    for (request, id) in [
        (
            r#"{"jsonrpc":"2.0","method":"daemon.status","id":{}}"#,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"daemon.status","params":3,"id":5}"#,
            json!(5),
        ),
        (r#"[]"#, Value::Null),
        (r#""hello""#, Value::Null),
    ] {
        let (status, body) = ask(request).await.unwrap();
        let answer = json_of(&body);
        assert_eq!(
            (
                status,
                answer["error"]["code"].clone(),
                answer["id"].clone()
            ),
            (200, json!(-32600), id),
            "{request}"
        );
    }
    // A body over the limit is refused without being read whole.
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"daemon.status","params":["{}"],"id":1}}"#,
        "x".repeat(2 << 20)
    );
    let (status, _) = tokio::task::spawn_blocking(move || post_raw(addr, &big))
        .await
        .unwrap();
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_clients_never_lock_others_out() {
    let rig = Rig::new().await;
    let addr = rig.addr;
    // 300 connections that say nothing, and 20 that trickle half a request.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut trickling = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le",
        )
        .await
        .unwrap();
        trickling.push(stream);
    }
    let client = rig.client();
    let t0 = std::time::Instant::now();
    for _ in 0..10 {
        let status = tokio::time::timeout(Duration::from_secs(5), client.daemon_status())
            .await
            .expect("a call timed out behind silent clients")
            .unwrap();
        assert_eq!(status.programs, 0);
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop((idle, trickling));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_clients_are_cut_off() {
    let rig = Rig::with_options(ServeOptions {
        request_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    })
    .await;
    let addr = rig.addr;
    let closed_within = |mut stream: tokio::net::TcpStream, limit: Duration| async move {
        let mut buf = [0u8; 1024];
        let t0 = std::time::Instant::now();
        loop {
            match tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut stream, &mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
                Ok(Ok(_)) => continue, // an error response, then the close
                Err(_) => return None,
            }
        }
    };
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a silent client kept its connection"
    );
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(slow, Duration::from_secs(5)).await.is_some(),
        "a trickling body kept its connection"
    );
    // Others are served all along.
    assert_eq!(rig.client().daemon_status().await.unwrap().programs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_application_error_code_is_reachable() {
    let rig = Rig::new().await;
    rig.add("idle", "sleep 300", false).await;
    let mut hidden =
        ProgramSpec::new(ProgramName::new("hidden").unwrap(), "/bin/sleep").args(["300"]);
    hidden.web = false;
    hidden.autostart = false;
    rig.sup.register(hidden).await.unwrap();
    let mut broken = ProgramSpec::new(
        ProgramName::new("broken").unwrap(),
        "/nonexistent/zist-test",
    );
    broken.autostart = false;
    rig.sup.register(broken).await.unwrap();
    let client = rig.client();
    let code = |e: jsonrpsee::core::client::Error| match e {
        jsonrpsee::core::client::Error::Call(obj) => obj.code(),
        other => panic!("not a call error: {other}"),
    };
    assert_eq!(
        code(client.process_info("nope".into()).await.unwrap_err()),
        -32001
    );
    assert_eq!(
        code(client.process_detach("idle".into()).await.unwrap_err()),
        -32003
    );
    assert_eq!(
        code(client.process_start("broken".into()).await.unwrap_err()),
        -32004
    );
    assert_eq!(
        code(client.process_add(json!({"Name": "x"})).await.unwrap_err()),
        -32005
    );
    assert_eq!(
        code(client.process_stats("hidden".into()).await.unwrap_err()),
        -32006
    );
    assert_eq!(
        code(
            client
                .process_logs("hidden".into(), zist_core::LogStream::Stdout, None)
                .await
                .unwrap_err()
        ),
        -32006
    );
    // Without a daemon around it there is no config to reload: -32005, nothing changes.
    assert_eq!(code(client.daemon_reload().await.unwrap_err()), -32005);
    assert!(client.daemon_log(None).await.unwrap().is_empty());
    // Once shutting down, a call is -32010: not -32006, which means "not allowed".
    assert!(client.daemon_shutdown(ShutdownMode::Stop).await.unwrap());
    zist_core::testing::eventually_async(Duration::from_secs(10), "-32010 after shutdown", async || {
        matches!(client.process_info("idle".into()).await, Err(jsonrpsee::core::client::Error::Call(e)) if e.code() == -32010)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_is_refused_whole() {
    let rig = Rig::with_options(ServeOptions {
        max_batch: 3,
        ..ServeOptions::default()
    })
    .await;
    let addr = rig.addr;
    let call = r#"{"jsonrpc":"2.0","method":"daemon.status","id":1}"#;
    let small = format!("[{}]", [call; 3].join(","));
    let big = format!("[{}]", [call; 4].join(","));
    let (_, text) = tokio::task::spawn_blocking(move || post(addr, Some(TOKEN), &small))
        .await
        .unwrap();
    assert_eq!(json_of(&text).as_array().map(Vec::len), Some(3));
    let (_, text) = tokio::task::spawn_blocking(move || post(addr, Some(TOKEN), &big))
        .await
        .unwrap();
    let answer = json_of(&text);
    assert!(
        answer["error"]["code"].as_i64().is_some(),
        "an over-limit batch must be an error: {text}"
    );
}

/// A raw POST with any header lines and a body of any bytes: (status, body).
fn post_bytes(addr: SocketAddr, headers: &str, body: &[u8]) -> (u16, String) {
    let headers = format!("Content-Type: application/json\r\n{headers}");
    let response = request(addr, "POST", "/", &headers, body).expect("an HTTP answer");
    (response.status, response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let rig = Rig::new().await;
    let addr = rig.addr;
    let status = r#"{"jsonrpc":"2.0","method":"daemon.status","id":1}"#;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let headers = format!("Authorization: {scheme} {TOKEN}\r\n");
        let (code, body) =
            tokio::task::spawn_blocking(move || post_bytes(addr, &headers, status.as_bytes()))
                .await
                .unwrap();
        assert_eq!(code, 200, "{scheme}: {body}");
        assert!(json_of(&body)["result"]["pid"].is_u64(), "{scheme}: {body}");
    }
    let (code, _) = tokio::task::spawn_blocking(move || {
        post_bytes(
            addr,
            &format!("Authorization: Basic {TOKEN}\r\n"),
            status.as_bytes(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_ids_run_and_are_echoed_and_garbage_is_a_parse_error() {
    let rig = Rig::new().await;
    rig.add("one", "sleep 300", false).await;
    rig.add("two", "sleep 300", false).await;
    let addr = rig.addr;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let ask = |body: Vec<u8>| {
        let auth = auth.clone();
        tokio::task::spawn_blocking(move || post_bytes(addr, &auth, &body))
    };
    let (status, body) = ask(
        br#"{"jsonrpc":"2.0","method":"process.start","params":{"name":"one"},"id":1.5}"#.to_vec(),
    )
    .await
    .unwrap();
    let answer = json_of(&body);
    assert_eq!((status, answer["id"].clone()), (200, json!(1.5)), "{body}");
    assert_eq!(answer["result"]["state"], "starting", "{body}");
    assert_eq!(rig.sup.info("one").unwrap().state, ProcessState::Starting);
    // In a batch, each element keeps its own id, and none vanishes.
    let (_, body) = ask(
        br#"[{"jsonrpc":"2.0","method":"process.start","params":{"name":"two"},"id":1e3},
            {"jsonrpc":"2.0","method":"daemon.status","id":1.0},
            {"jsonrpc":"2.0","method":"daemon.status","id":2}]"#
            .to_vec(),
    )
    .await
    .unwrap();
    let answers = json_of(&body);
    let ids: Vec<Value> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "{body}");
    for id in [json!(1000.0), json!(1.0), json!(2)] {
        assert!(ids.contains(&id), "no answer with id {id}: {body}");
    }
    assert_eq!(rig.sup.info("two").unwrap().state, ProcessState::Starting);
    // Invalid UTF-8 and every kind of garbage: -32700, always with status 200.
    for garbage in [
        b"{".to_vec(),
        b"hello{{{".to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.status\",\"id\":\"\xff\"}".to_vec(),
        vec![0xc3, 0x28],
    ] {
        let (status, body) = ask(garbage.clone()).await.unwrap();
        let answer = json_of(&body);
        assert_eq!(
            (
                status,
                answer["error"]["code"].clone(),
                answer["id"].clone()
            ),
            (200, json!(-32700), Value::Null),
            "{:?}",
            String::from_utf8_lossy(&garbage)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_with_instances_answers_for_each_and_scales() {
    let rig = Rig::new().await;
    let client = rig.client();
    let added: Value = client
        .request(
            "process.add",
            rpc_params![json!({"Name": "web", "Path": "/bin/sleep", "Args": "300",
                "Instances": 2, "StartSecs": "50ms"})],
        )
        .await
        .unwrap();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("an array of infos")
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&added), ["web:0", "web:1"]);
    let stopped: Value = client
        .request("process.stop", rpc_params!["web"])
        .await
        .unwrap();
    assert_eq!(names(&stopped), ["web:0", "web:1"]);
    assert!(
        stopped
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "stopped")
    );
    // One instance: one info.
    let one: Value = client
        .request("process.start", rpc_params!["web:1"])
        .await
        .unwrap();
    assert_eq!(one["name"], "web:1");
    // What needs one process names the instances.
    let err = client
        .request::<Value, _>("process.info", rpc_params!["web"])
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("32001") && text.contains("web:0, web:1"),
        "{text}"
    );
    let scaled = client.process_scale("web".into(), 3).await.unwrap();
    assert_eq!(scaled.len(), 3);
    assert_eq!(scaled[2].name, "web:2");
    let mut params = jsonrpsee::core::params::ObjectParams::new();
    params.insert("name", "web").unwrap();
    params.insert("rolling", true).unwrap();
    let rolled: Value = client.request("process.restart", params).await.unwrap();
    assert_eq!(names(&rolled), ["web:0", "web:1", "web:2"]);
    assert!(
        rolled
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "running")
    );
    assert!(client.process_remove("web".into()).await.unwrap());
}
