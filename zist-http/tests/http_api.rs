//! The seed routes and API v1: auth, lookups by name and pid, Web = false, errors.

use std::time::Duration;

use serde_json::Value;
use zist_core::ProcessState;
use zist_core::testing::eventually_async;

use crate::support::{Rig, TOKEN};

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
    eventually_async(Duration::from_secs(10), "app1's stdout", async || {
        let (status, lines) = rig
            .call("GET", &format!("/{TOKEN}/app1/stdout"), None)
            .await;
        assert_eq!(status, 200);
        lines == serde_json::json!(["hello"])
    })
    .await;
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
    eventually_async(Duration::from_secs(10), "svc's last line", async || {
        let (_, lines) = rig
            .call(
                "GET",
                "/api/v1/processes/svc/logs/stdout?lines=1",
                Some(TOKEN),
            )
            .await;
        lines == serde_json::json!(["two"])
    })
    .await;
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

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let rig = Rig::new().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let header = format!("Authorization: {scheme} {TOKEN}\r\n");
        let (status, _, body) = rig.raw_with("GET", "/api/v1/processes", &header).await;
        assert_eq!(status, 200, "{scheme}: {body}");
        let (status, _, _) = rig.raw_with("GET", "/metrics", &header).await;
        assert_eq!(status, 200, "{scheme} on /metrics");
    }
    let basic = format!("Authorization: Basic {TOKEN}\r\n");
    assert_eq!(
        rig.raw_with("GET", "/api/v1/processes", &basic).await.0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_without_a_token_with_counts_only() {
    let rig = Rig::new().await;
    let (status, body) = rig.call("GET", "/healthz", None).await;
    assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
    // Nothing meant to run yet: ready.
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"ready": 0, "not_ready": 0}))
    );
    // A program whose Ready check passes once a file exists: 503 until it does.
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    rig.add("up", "sleep 300", true).await;
    let mut spec =
        zist_core::ProgramSpec::new(zist_core::ProgramName::new("off").unwrap(), "/bin/sleep");
    spec.autostart = false;
    rig.sup.register(spec).await.unwrap();
    let mut ready_check =
        zist_core::ProgramSpec::new(zist_core::ProgramName::new("gated").unwrap(), "/bin/sh")
            .args(["-c", "exec sleep 300"]);
    ready_check.ready = Some(zist_core::Check {
        probe: zist_core::Probe::Exec(vec!["test".into(), "-e".into(), go.display().to_string()]),
        interval: std::time::Duration::from_millis(50),
        timeout: std::time::Duration::from_secs(30),
        failures: 3,
        watchdog: None,
    });
    rig.sup.register(ready_check).await.unwrap();
    zist_core::testing::wait_state(
        &rig.sup,
        "up",
        zist_core::ProcessState::Running,
        std::time::Duration::from_secs(5),
    )
    .await;
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["not_ready"], 1, "{body}");
    assert!(
        body.as_object()
            .unwrap()
            .keys()
            .all(|k| k == "ready" || k == "not_ready")
    );
    std::fs::write(&go, "").unwrap();
    zist_core::testing::eventually(std::time::Duration::from_secs(10), "readyz 200", || {
        rig.sup.readiness() == (2, 0)
    })
    .await;
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"ready": 2, "not_ready": 0}))
    );
}

#[tokio::test]
async fn the_page_answers_head_and_the_icon_needs_no_token() {
    let rig = Rig::new().await;
    let (status, head, body) = rig.raw("HEAD", "/", None).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(body.is_empty(), "a HEAD answer has no body: {body}");
    for path in ["/favicon.ico", "/favicon.svg"] {
        let (status, head, body) = rig.raw("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: image/svg+xml"),
            "{head}"
        );
        assert!(body.starts_with("<svg"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_sampled_once_asked_and_keeps_web_programs_only() {
    let rig = Rig::new().await;
    rig.add("busy", "while true; do :; done", true).await;
    rig.add("secret", "sleep 300", false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // A sample's CPU is the CPU used since the last reading: one is taken
    // now, and the first sample waits until the loop has run 0.5 s of CPU,
    // so on a busy machine it does not cover only the loop's first
    // milliseconds.
    let pid = loop {
        if let Some(pid) = rig.sup.info("busy").unwrap().pid {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "busy never ran");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let cpu_ticks = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0, |stat| {
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
            fields
                .get(11)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
                + fields
                    .get(12)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
        })
    };
    let (status, _) = rig
        .call("GET", "/api/v1/processes/busy/stats", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    let ticks = cpu_ticks();
    while cpu_ticks() < ticks + 50 {
        assert!(std::time::Instant::now() < deadline, "busy used no CPU");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let series = loop {
        let (status, history) = rig.call("GET", "/api/v1/history", Some(TOKEN)).await;
        assert_eq!(status, 200, "{history}");
        let busy = &history["busy"];
        if busy["cpu_percent"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| !v.is_null()))
        {
            assert!(
                history.get("secret").is_none(),
                "a Web = false program: {history}"
            );
            break busy.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sample in 10 s: {history}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(series["every_secs"], 5, "{series}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = series["start_ms"].as_u64().unwrap();
    assert!(start <= now_ms && now_ms - start < 20_000, "{series}");
    let cpu = series["cpu_percent"][0].as_f64().unwrap();
    assert!(cpu > 20.0, "a busy loop at {cpu}%");
    assert!(series["memory_bytes"][0].as_u64().unwrap() > 0, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_programs_spec_hides_env_values_and_a_signal_can_be_posted() {
    let rig = Rig::new().await;
    let mut spec =
        zist_core::ProgramSpec::new(zist_core::ProgramName::new("hup").unwrap(), "/bin/sh").args([
            "-c",
            "trap 'echo got HUP' HUP; while :; do sleep 0.05; done",
        ]);
    spec.env.insert("API_KEY".into(), "s3cret-value".into());
    spec.start_secs = std::time::Duration::from_millis(50);
    rig.sup.register(spec).await.unwrap();
    rig.add("private", "sleep 300", false).await;
    let (status, head, body) = rig
        .raw("GET", "/api/v1/processes/hup/spec", Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        !body.contains("s3cret-value"),
        "an Env value reached the page: {body}"
    );
    let spec: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(spec["Env"], serde_json::json!(["API_KEY"]));
    assert_eq!(spec["Path"], "/bin/sh");
    assert_eq!(spec["StopSignal"], "TERM");
    let (status, _) = rig
        .call("GET", "/api/v1/processes/private/spec", Some(TOKEN))
        .await;
    assert_eq!(status, 403);
    // POST .../signal {"signal": "HUP"}.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rig.sup.info("hup").unwrap().state != ProcessState::Running {
        assert!(std::time::Instant::now() < deadline, "hup never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let post = |body: &'static str| {
        let addr = rig.addr;
        tokio::task::spawn_blocking(move || {
            zist_core::testing::request(
                addr,
                "POST",
                "/api/v1/processes/hup/signal",
                &format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
                body.as_bytes(),
            )
            .unwrap()
        })
    };
    assert_eq!(post(r#"{"signal": "HUP"}"#).await.unwrap().status, 200);
    while !rig
        .sup
        .logs("hup", zist_core::LogStream::Stdout, 10)
        .unwrap()
        .iter()
        .any(|l| l == "got HUP")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the program never got SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let bad = post(r#"{"signal": "NOPE"}"#).await.unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
}
