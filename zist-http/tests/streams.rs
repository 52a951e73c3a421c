//! Server-Sent Events (log follow, state changes) and /metrics.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use zist_core::LogStream;
use zist_core::testing::eventually;
use zist_http::HttpOptions;

use crate::support::{Rig, Said, TOKEN};

const LIMIT: Duration = Duration::from_secs(10);

/// The numbers of the `line N` lines in an event's data (a JSON array).
fn numbers(data: &str) -> Vec<u64> {
    let lines: Vec<String> = serde_json::from_str(data).unwrap();
    lines
        .iter()
        .map(|l| l.trim_start_matches("line ").parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_follow_sends_the_tail_then_every_new_line_with_heartbeats() {
    let rig = Rig::with(HttpOptions {
        heartbeat: Duration::from_millis(200),
        ..HttpOptions::default()
    })
    .await;
    rig.add(
        "counter",
        "i=0; while :; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done",
        true,
    )
    .await;
    rig.add("quiet", "sleep 300", true).await;
    rig.add("hidden", "sleep 300", false).await;
    // Wait until the tail holds 5 lines.
    eventually(LIMIT, "the counter's first 5 lines", || {
        rig.sup.logs("counter", LogStream::Stdout, 5).unwrap().len() >= 5
    })
    .await;

    let (head, mut sse) = rig
        .sse("/api/v1/processes/counter/logs/stdout?follow=true&lines=3")
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    // Three old lines, then new ones: consecutive, none missed (a line
    // written while subscribing may come twice).
    let (_, first) = sse.event(LIMIT).await.expect("the stream ended");
    assert_eq!(numbers(&first).len(), 3, "{first}");
    let mut previous: Option<u64> = None;
    let mut seen = 0;
    while seen < 40 {
        let (name, data) = sse.event(LIMIT).await.expect("the stream ended");
        assert_eq!(name, "message");
        for n in numbers(&data) {
            if let Some(p) = previous {
                assert!(n == p + 1 || n <= p, "after line {p} came line {n}");
            }
            previous = Some(previous.map_or(n, |p| p.max(n)));
            seen += 1;
        }
    }

    // A burst of lines comes as one event.
    rig.add(
        "burst",
        "sleep 0.5; seq 1 500 | sed 's/^/line /'; sleep 300",
        true,
    )
    .await;
    let (_, mut burst) = rig
        .sse("/api/v1/processes/burst/logs/stdout?follow=true")
        .await;
    let mut got = Vec::new();
    let mut events = 0;
    while got.len() < 500 {
        let (_, data) = burst.event(LIMIT).await.expect("the stream ended");
        got.extend(numbers(&data));
        events += 1;
    }
    assert_eq!(got, (1..=500).collect::<Vec<u64>>());
    assert!(events < 50, "500 lines came in {events} events");

    // A program that says nothing still gets heartbeats.
    let (_, mut quiet) = rig
        .sse("/api/v1/processes/quiet/logs/stderr?follow=true")
        .await;
    assert_eq!(quiet.next(LIMIT).await, Some(Said::Comment));
    assert_eq!(quiet.next(LIMIT).await, Some(Said::Comment));

    // The errors of the JSON routes hold for streams too.
    let hidden = rig
        .raw(
            "GET",
            "/api/v1/processes/hidden/logs/stdout?follow=true",
            Some(TOKEN),
        )
        .await;
    assert_eq!(hidden.0, 403);
    let unknown = rig
        .raw(
            "GET",
            "/api/v1/processes/nope/logs/stdout?follow=true",
            Some(TOKEN),
        )
        .await;
    assert_eq!(unknown.0, 404);
    let anonymous = rig
        .raw(
            "GET",
            "/api/v1/processes/counter/logs/stdout?follow=true",
            None,
        )
        .await;
    assert_eq!(anonymous.0, 401);
    let bad = rig
        .raw(
            "GET",
            "/api/v1/processes/counter/logs/stdout?follow=maybe",
            Some(TOKEN),
        )
        .await;
    assert_eq!(bad.0, 400, "{}", bad.2);
}

/// The next `n` line numbers of a follow stream, asserting none is missing.
async fn consecutive(sse: &mut crate::support::Sse, n: usize) -> Vec<u64> {
    let mut got: Vec<u64> = Vec::new();
    while got.len() < n {
        let (name, data) = sse.event(LIMIT).await.expect("the stream ended");
        assert_eq!(name, "message", "{data}");
        got.extend(numbers(&data));
    }
    for pair in got.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{got:?}");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_one_log_each_get_every_line_and_come_and_go() {
    let rig = Rig::new().await;
    rig.add(
        "counter",
        "i=0; while :; do i=$((i+1)); echo \"line $i\"; sleep 0.01; done",
        true,
    )
    .await;
    let path = "/api/v1/processes/counter/logs/stdout?follow=true";
    let (_, mut a) = rig.sse(path).await;
    let (_, mut b) = rig.sse(path).await;
    let from_a = consecutive(&mut a, 50).await;
    let from_b = consecutive(&mut b, 50).await;
    // Both saw the same lines where they overlap.
    let common: Vec<u64> = from_a
        .iter()
        .copied()
        .filter(|n| from_b.contains(n))
        .collect();
    assert!(common.len() >= 40, "{from_a:?} {from_b:?}");
    drop((a, b));
    // Once both left, a new follower still gets lines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, mut c) = rig.sse(path).await;
    let from_c = consecutive(&mut c, 10).await;
    assert!(from_c[0] > from_a[0], "{from_c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_state_changes_as_they_happen() {
    let rig = Rig::new().await;
    rig.add("svc", "sleep 300", true).await;
    assert_eq!(rig.raw("GET", "/api/v1/events", None).await.0, 401);
    let (head, mut sse) = rig.sse("/api/v1/events").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, _) = rig
        .call("POST", "/api/v1/processes/svc/stop", Some(TOKEN))
        .await;
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    while !seen.contains(&"stopped".to_owned()) {
        let (name, data) = sse.event(LIMIT).await.expect("the stream ended");
        assert_eq!(name, "message");
        let event: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(event["name"], "svc", "{event}");
        assert!(event["at"].is_string(), "{event}");
        seen.push(event["to"].as_str().unwrap().to_owned());
    }
    assert!(seen.contains(&"stopping".to_owned()), "{seen:?}");
}

/// Both ends of the loopback connection between `server` and `client`
/// as /proc/net/tcp lists them: local and remote address, state, queues,
/// timers.
fn connection_lines(server: u16, client: u16) -> Vec<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .take(5)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|fields| {
            fields.len() == 5
                && [(server, client), (client, server)]
                    .contains(&(port(&fields[0]).unwrap_or(0), port(&fields[1]).unwrap_or(0)))
        })
        .collect()
}

/// Whether the server's end of the loopback connection from `client` to
/// `server` is ESTABLISHED (state 01).
fn server_side_established(server: u16, client: u16) -> bool {
    let local = format!(":{server:04X}");
    connection_lines(server, client)
        .iter()
        .any(|fields| fields[0].ends_with(&local) && fields[2] == "01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_program_never_waits() {
    let rig = Rig::with(HttpOptions {
        write_stall: Duration::from_millis(500),
        ..HttpOptions::default()
    })
    .await;
    // About 100 MB/s of lines: far more than any socket buffer holds.
    rig.add(
        "chatty",
        "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
        true,
    )
    .await;
    let (head, mut sse) = rig
        .sse_with(
            "/api/v1/processes/chatty/logs/stdout?follow=true",
            Some(4096),
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let written = || {
        rig.sup
            .log_health("chatty", LogStream::Stdout)
            .unwrap()
            .bytes_written
    };
    // The client reads nothing for 2 s; the program writes on regardless.
    let before = written();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = written() - before;
    assert!(
        during > 10_000_000,
        "the program was slowed: {during} bytes in 2 s"
    );
    // The server gives the client up once its writes have stalled for the
    // limit: its end of the connection leaves ESTABLISHED. Reading before
    // that (a busy machine may take longer than 2 s to fill the buffers)
    // would un-stall it.
    let client = sse.reader.get_ref().local_addr().unwrap().port();
    let server = rig.addr.port();
    eventually(LIMIT, "the server to hang up on the client", || {
        !server_side_established(server, client)
    })
    .await;
    // Then the client finds the end (what it had not taken is dropped with
    // a reset), well before the stream would end on its own.
    let mut sink = vec![0u8; 1 << 16];
    let mut received = 0usize;
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sse.reader.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!(
                "the server kept a client that stopped reading; got {received} bytes; the connection in /proc/net/tcp: {:?}",
                connection_lines(server, client)
            ),
        }
    }
    assert_eq!(rig.sup.info("chatty").unwrap().state.as_str(), "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_a_gauge_per_program() {
    let rig = Rig::new().await;
    rig.add("web", "sleep 300", true).await;
    rig.add("private", "sleep 300", false).await;
    eventually(LIMIT, "every program running", || {
        rig.sup.list().iter().all(|i| i.state.as_str() == "running")
    })
    .await;
    assert_eq!(rig.raw("GET", "/metrics", None).await.0, 401);
    let (status, head, body) = rig.raw("GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    // Every family has its help and type, under the name its samples carry.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no type for {name}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("not Prometheus text");
    let value = |metric: &str, name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("name") == Some(name))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{metric} is no gauge"),
            })
    };
    let info = rig.sup.info("web").unwrap();
    assert_eq!(
        value("zist_process_pid", "web"),
        Some(f64::from(info.pid.unwrap()))
    );
    assert_eq!(value("zist_process_restarts_total", "web"), Some(0.0));
    assert_eq!(value("zist_process_ready", "web"), Some(1.0));
    let logged = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "zist_process_log_bytes_total"
                && s.labels.get("name") == Some("web")
                && s.labels.get("stream") == Some("stdout")
        })
        .expect("log bytes of web's stdout");
    assert!(
        matches!(
            logged.value,
            prometheus_parse::Value::Counter(_) | prometheus_parse::Value::Untyped(_)
        ),
        "{logged:?}"
    );
    assert!(value("zist_process_uptime_seconds", "web").unwrap() >= 0.0);
    assert!(value("zist_process_memory_bytes", "web").unwrap() > 0.0);
    assert!(value("zist_process_cpu_percent", "web").unwrap() >= 0.0);
    // Web = false: state, yes; CPU and memory, no.
    assert!(value("zist_process_pid", "private").unwrap() > 0.0);
    assert_eq!(value("zist_process_memory_bytes", "private"), None);
    assert_eq!(value("zist_process_cpu_percent", "private"), None);
    let state = scrape
        .samples
        .iter()
        .find(|s| s.metric == "zist_process_state" && s.labels.get("name") == Some("web"))
        .unwrap();
    assert_eq!(state.labels.get("state"), Some("running"));
    // zistd's own figures.
    let own = |metric: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .unwrap_or_else(|| panic!("no {metric} in\n{body}"))
    };
    for metric in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "zist_programs",
        "zist_uptime_seconds",
        "process_start_time_seconds",
        "zist_build_info",
    ] {
        own(metric);
    }
    assert_eq!(
        own("zist_programs").value,
        prometheus_parse::Value::Gauge(2.0)
    );
    // The dashboard's one call for every program's CPU and memory: Web =
    // false programs are left out, as on every stats route.
    assert_eq!(rig.raw("GET", "/api/v1/stats", None).await.0, 401);
    let (status, all) = rig.call("GET", "/api/v1/stats", Some(TOKEN)).await;
    assert_eq!(status, 200, "{all}");
    assert!(all["web"]["memory_bytes"].as_u64().unwrap() > 0, "{all}");
    assert!(all["web"]["cpu_percent"].is_number(), "{all}");
    assert!(all.get("private").is_none(), "{all}");
}
