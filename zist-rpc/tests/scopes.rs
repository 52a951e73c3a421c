//! Scopes (docs/reference.md §10): every method in exactly one scope, a
//! call outside the token's scope refused with -32007 before it runs, over
//! HTTP and WebSocket; and the Host and Origin rules.

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use serde_json::{Value, json};
use zist_core::testing::request;
use zist_core::{
    Access, NamedToken, ProcessState, ProgramName, ProgramSpec, Scope, ShutdownMode, Supervisor,
    SupervisorOptions, Token,
};
use zist_rpc::{NoDaemon, ServeOptions, rpc_module, serve};

const ADMIN: &str = "admin-token-1";
const OPERATE: &str = "ci-token-2";
const READ: &str = "dash-token-3";

/// The spec's table: the scope of every method.
fn expected(method: &str) -> Option<Scope> {
    Some(match method {
        "daemon.status" | "daemon.log" | "process.list" | "process.list_stats" | "process.info"
        | "process.stats" | "process.logs" | "process.follow" | "process.unfollow"
        | "events.subscribe" | "events.unsubscribe" => Scope::Read,
        "process.start"
        | "process.stop"
        | "process.restart"
        | "process.signal"
        | "process.detach"
        | "process.scale"
        | "process.start_all"
        | "process.stop_all"
        | "process.restart_all" => Scope::Operate,
        "process.add" | "process.remove" | "process.adopt" | "daemon.reload"
        | "daemon.shutdown" | "daemon.upgrade" | "daemon.clear_log" => Scope::Admin,
        _ => return None,
    })
}

fn access() -> Access {
    Access::new(
        ADMIN,
        &[
            NamedToken {
                name: "ci".into(),
                token: Token::new(OPERATE),
                scope: Scope::Operate,
            },
            NamedToken {
                name: "dashboard".into(),
                token: Token::new(READ),
                scope: Scope::Read,
            },
        ],
    )
}

/// One call by `token`: the JSON answer.
fn call(addr: std::net::SocketAddr, token: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let headers = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let answer = request(addr, "POST", "/", &headers, body.as_bytes()).unwrap();
    serde_json::from_str(&answer.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_is_in_one_scope_and_a_call_outside_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.path().join("logs"),
        ..SupervisorOptions::default()
    });
    let mut spec = ProgramSpec::new(ProgramName::new("web").unwrap(), "/bin/sleep").args(["300"]);
    spec.start_secs = Duration::from_millis(50);
    let pid = sup.register(spec).await.unwrap().pid.unwrap();
    zist_core::testing::wait_state(&sup, "web", ProcessState::Running, Duration::from_secs(5))
        .await;
    let module = rpc_module(sup.clone(), Arc::new(NoDaemon(sup.clone())));
    let methods: Vec<String> = module.method_names().map(str::to_owned).collect();
    let (addr, handle) = serve(
        "127.0.0.1:0".parse().unwrap(),
        access(),
        module,
        ServeOptions::default(),
    )
    .await
    .unwrap();

    assert!(methods.len() > 25, "{methods:?}");
    for method in &methods {
        let scope = expected(method).unwrap_or_else(|| panic!("{method} is in no scope"));
        assert_eq!(zist_core::access::rpc_scope(method), scope, "{method}");
        // Every token below the scope is refused, and nothing runs.
        for (token, has) in [(READ, Scope::Read), (OPERATE, Scope::Operate)] {
            if has >= scope {
                continue;
            }
            let params = json!({"name": "web", "signal": "KILL", "instances": 2, "pid": pid,
                "spec": {"Name": "new", "Path": "/bin/sleep"}, "mode": "stop"});
            let answer = call(addr, token, method, params);
            assert_eq!(
                answer["error"]["code"], -32007,
                "{method} by {has}: {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(
                message,
                format!("this token (scope {has}) may not call {method}"),
                "{answer}"
            );
        }
    }
    let web = sup.info("web").unwrap();
    assert_eq!((web.state, web.pid), (ProcessState::Running, Some(pid)));
    assert_eq!(sup.list().len(), 1, "nothing was added, removed or adopted");

    // Within the scope, the call runs (here: on a program that is not there).
    let answer = call(addr, OPERATE, "process.stop", json!({"name": "nope"}));
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    let answer = call(addr, READ, "process.info", json!({"name": "web"}));
    assert_eq!(answer["result"]["pid"], pid, "{answer}");
    // A batch: the refused call answers -32007 where it stands; the rest run.
    let body = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "process.stop", "params": {"name": "web"}},
        {"jsonrpc": "2.0", "id": 2, "method": "daemon.status"},
    ])
    .to_string();
    let headers = format!("Authorization: Bearer {READ}\r\nContent-Type: application/json\r\n");
    let answer = request(addr, "POST", "/", &headers, body.as_bytes()).unwrap();
    let answers: Vec<Value> = serde_json::from_str(&answer.body).unwrap();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["error"]["code"], -32007, "{answers:?}");
    assert!(by_id(2)["result"].is_object(), "{answers:?}");
    assert_eq!(sup.info("web").unwrap().state, ProcessState::Running);

    // Over WebSocket too.
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {READ}").parse().unwrap());
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .set_headers(headers)
        .build(format!("ws://{addr}"))
        .await
        .unwrap();
    let refused = ws
        .request::<Value, _>("process.stop", rpc_params!["web"])
        .await
        .unwrap_err();
    match &refused {
        jsonrpsee::core::ClientError::Call(e) => assert_eq!(e.code(), -32007, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sup.info("web").unwrap().state, ProcessState::Running);

    handle.stop().unwrap();
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_or_a_cross_site_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.path().join("logs"),
        ..SupervisorOptions::default()
    });
    let module = rpc_module(sup.clone(), Arc::new(NoDaemon(sup.clone())));
    let options = ServeOptions {
        allowed_hosts: vec!["zist.example.com".into()],
        ..ServeOptions::default()
    };
    let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), access(), module, options)
        .await
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).to_string();
    let ask = |extra: &str| {
        // `request` sends Host: <address>; these headers come on top.
        let headers =
            format!("Authorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n{extra}");
        request(addr, "POST", "/", &headers, body.as_bytes()).unwrap()
    };
    assert_eq!(ask("").status, 200);
    assert_eq!(ask("Origin: http://127.0.0.1\r\n").status, 403);
    assert_eq!(ask(&format!("Origin: http://{addr}\r\n")).status, 200);
    assert_eq!(ask("Origin: https://evil.example\r\n").status, 403);
    for (host, status) in [
        ("evil.example", 403),
        ("zist.example.com:9876", 200),
        ("localhost", 200),
        ("[::1]:9876", 200),
    ] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "Host {host}: {answer}"
        );
        assert!(
            !answer
                .to_ascii_lowercase()
                .contains("access-control-allow-origin")
        );
    }
    handle.stop().unwrap();
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_never_keeps_an_authorised_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.path().join("logs"),
        ..SupervisorOptions::default()
    });
    let module = rpc_module(sup.clone(), Arc::new(NoDaemon(sup.clone())));
    let options = ServeOptions::default();
    let flood_size = 2 * options.max_connections as usize;
    let (addr, handle) = serve("127.0.0.1:0".parse().unwrap(), access(), module, options)
        .await
        .unwrap();
    // Twice the cap, idle, each one the server closes replaced at once.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let flood = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let open = |_| {
                let stream = std::net::TcpStream::connect(addr).ok()?;
                stream.set_nonblocking(true).ok()?;
                Some(stream)
            };
            let mut held: Vec<std::net::TcpStream> = (0..flood_size).filter_map(open).collect();
            let _ = ready_tx.send(());
            let mut replaced = 0;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    let mut byte = [0u8; 1];
                    let closed = match slot.read(&mut byte) {
                        Ok(0) => true,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        Ok(_) => false,
                    };
                    if closed && let Some(fresh) = open(0) {
                        *slot = fresh;
                        replaced += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (held.len(), replaced)
        })
    };
    // The flood is in place (and the server at its cap) before the calls.
    tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the flood never got in place");
    for i in 0..40 {
        let answer =
            tokio::task::spawn_blocking(move || call(addr, READ, "daemon.status", json!([])))
                .await
                .unwrap();
        assert!(answer["result"].is_object(), "call {i}: {answer}");
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (held, replaced) = flood.join().unwrap();
    assert_eq!(held, flood_size);
    assert!(
        replaced > 0,
        "the server never closed one: was the cap reached?"
    );
    handle.stop().unwrap();
    sup.shutdown(ShutdownMode::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_authorization_headers_get_an_answer_and_the_server_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.path().join("logs"),
        ..SupervisorOptions::default()
    });
    let module = rpc_module(sup.clone(), Arc::new(NoDaemon(sup.clone())));
    let (addr, handle) = serve(
        "127.0.0.1:0".parse().unwrap(),
        access(),
        module,
        ServeOptions::default(),
    )
    .await
    .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.status"}).to_string();
    let huge = "x".repeat(60_000);
    let cases: Vec<Vec<u8>> = vec![
        b"Authorization: \r\n".to_vec(),
        format!("Authorization: Bearer {READ}\r\nAuthorization: Bearer nope\r\n").into_bytes(),
        format!("Authorization: Bearer nope\r\nAuthorization: Bearer {ADMIN}\r\n").into_bytes(),
        b"Authorization: Bearer \xff\xfe\xc3\x28\r\n".to_vec(),
        format!("Authorization: Bearer {huge}\r\n").into_bytes(),
        format!("Authorization: {huge}\r\nX-{huge}: y\r\n").into_bytes(),
    ];
    for headers in cases {
        let answer = tokio::task::spawn_blocking({
            let body = body.clone();
            move || {
                use std::io::{Read, Write};
                let mut raw = format!(
                    "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
                )
                .into_bytes();
                raw.extend_from_slice(&headers);
                raw.extend_from_slice(
                    format!(
                        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let _ = stream.write_all(&raw);
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
                String::from_utf8_lossy(&answer).into_owned()
            }
        })
        .await
        .unwrap();
        // An answer (200 for the first token given, 401, 431), or a closed
        // connection for a head too large: never a crash.
        assert!(
            answer.is_empty()
                || [
                    "HTTP/1.1 200",
                    "HTTP/1.1 401",
                    "HTTP/1.1 431",
                    "HTTP/1.1 400"
                ]
                .iter()
                .any(|s| answer.starts_with(s)),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    let fine = call(addr, READ, "daemon.status", json!([]));
    assert!(fine["result"].is_object(), "{fine}");
    handle.stop().unwrap();
    sup.shutdown(ShutdownMode::Stop).await;
}
