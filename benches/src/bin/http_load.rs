//! Load runs of zistd's HTTP API, measured from outside: a real zistd
//! (release build) with N idle programs and one chatty one, API v1 timed
//! over raw keep-alive HTTP, 100 log followers over Server-Sent Events, and
//! the dashboard's first render in headless Chromium.
//!
//! ```text
//! cargo build --release --bin zistd --bin zistcl
//! cargo run --release -p zist-benches --bin http-load -- [--programs 1000]
//! ```

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zist_benches::{Daemon, percentile_ms, usage};

const TOKEN: &str = "http-load-token";
const FOLLOWERS: usize = 100;

/// The chatty program: numbered 100-byte lines, 200 at a time, ~15 000/s.
const CHATTY: &str = "i=0; while :; do seq -f 'chatty %010g ...........................................................................' $i $((i+199)); i=$((i+200)); sleep 0.01; done";

/// `GET path` with the token on a fresh connection: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `n` GETs of `path` over one keep-alive connection: (p50, p95) in ms.
fn timed_get(http: &str, path: &str, n: usize) -> (f64, f64) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let mut lat = zist_benches::keep_alive_latencies(http, &request, n);
    (percentile_ms(&mut lat, 50), percentile_ms(&mut lat, 95))
}

/// The sequence number of the chatty program's last line.
fn chatty_count(addr: &str) -> u64 {
    let (_, body) = get(addr, "/api/v1/processes/chatty/logs/stdout?lines=1");
    let lines: Vec<String> = serde_json::from_str(&body).unwrap_or_default();
    lines
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Lines per second the chatty program wrote over `window`, and zistd's
/// (min, max) RSS sampled every 250 ms meanwhile.
fn observe(http: &str, pid: u32, window: Duration) -> (f64, (u64, u64), f64) {
    let (cpu0, _) = usage(pid);
    let c0 = chatty_count(http);
    let t0 = Instant::now();
    let (mut low, mut high) = (u64::MAX, 0);
    while t0.elapsed() < window {
        let (_, rss) = usage(pid);
        low = low.min(rss);
        high = high.max(rss);
        std::thread::sleep(Duration::from_millis(250));
    }
    let c1 = chatty_count(http);
    let (cpu1, _) = usage(pid);
    (
        (c1 - c0) as f64 / t0.elapsed().as_secs_f64(),
        (low, high),
        cpu1 - cpu0,
    )
}

/// Opens a follower of the chatty program's stdout; when `read`, counts the
/// lines it gets and the lines it was told it missed, until `stop`.
fn follower(
    http: String,
    read: bool,
    stop: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(&http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/v1/processes/chatty/logs/stdout?follow=true HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .expect("write");
        let mut buf = vec![0u8; 1 << 16];
        let mut carry = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if !read {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => break,
            };
            carry.extend_from_slice(&buf[..n]);
            // Count whole lines only; a line split across reads waits.
            let end = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in carry[..end].split(|&b| b == b'\n') {
                let data = line.strip_prefix(b"data:").unwrap_or(b"");
                let data = data.strip_prefix(b" ").unwrap_or(data);
                if let Some(gap) = data.strip_prefix(b"{\"skipped\":") {
                    let n: u64 = String::from_utf8_lossy(gap)
                        .trim_end_matches('}')
                        .parse()
                        .unwrap_or(0);
                    skipped.fetch_add(n, Ordering::Relaxed);
                } else {
                    // A JSON array of lines: count them.
                    let n = memchr::memmem::find_iter(data, b"\"chatty ").count();
                    lines.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            carry.drain(..end);
        }
    })
}

/// 100 followers for `window`: chatty's rate, zistd's RSS range and CPU,
/// and the lines they got and were told they missed.
fn followers(
    http: &str,
    pid: u32,
    read: bool,
    window: Duration,
) -> (f64, (u64, u64), f64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..FOLLOWERS)
        .map(|_| {
            follower(
                http.to_owned(),
                read,
                stop.clone(),
                lines.clone(),
                skipped.clone(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (rate, rss, cpu) = observe(http, pid, window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (
        rate,
        rss,
        cpu,
        lines.load(Ordering::Relaxed),
        skipped.load(Ordering::Relaxed),
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1048576.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let programs = zist_benches::programs_flag(&args, 1000);
    let mut conf = format!("Token = \"{TOKEN}\"\nRPCPort = 0\nHTTPPort = 0\nLogDir = \"logs\"\n");
    for i in 0..programs {
        conf.push_str(&format!(
            "[[Program]]\nName = \"p{i}\"\nPath = \"/bin/sleep\"\nArgs = \"3600\"\nStartSecs = 0\n"
        ));
    }
    conf.push_str(&format!(
        "[[Program]]\nName = \"chatty\"\nPath = \"/bin/sh\"\nArgs = [\"-c\", \"{}\"]\nStartSecs = 0\nLogMaxBytes = \"4GB\"\n",
        CHATTY.replace('\\', "\\\\").replace('"', "\\\"")
    ));
    let daemon = Daemon::launch(&conf);
    let http = daemon.http.clone().expect("the HTTP API is on");
    let pid = daemon.pid;
    let total = programs + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(&http, "/api/v1/processes");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && list.len() == total && list.iter().all(|i| i["state"] == "running") {
            break;
        }
        assert!(Instant::now() < deadline, "programs did not all start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    let only_dashboard = args.iter().any(|a| a == "--dashboard-only");

    if !only_dashboard {
        api_and_streams(&http, pid, total, &mut rows);
    }
    if !args.iter().any(|a| a == "--no-dashboard") {
        dashboard(&http, total, &mut rows);
    }
    let (_, rss) = usage(pid);
    rows.push((
        "zistd RSS at the end".to_owned(),
        format!("{} MiB", mib(rss)),
        "",
    ));
    drop(daemon);
    println!(
        "zistd HTTP load run, {} cores\n\n| scenario | result | target |\n|---|---|---|",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (what, value, target) in rows {
        println!("| {what} | {value} | {target} |");
    }
}

/// API v1 latency and the log followers.
fn api_and_streams(
    http: &str,
    pid: u32,
    total: usize,
    rows: &mut Vec<(String, String, &'static str)>,
) {
    let http = http.to_owned();
    let (p50, p95) = timed_get(&http, "/api/v1/processes", 200);
    rows.push((
        format!("GET /api/v1/processes with {total} programs, raw HTTP keep-alive, 200 calls"),
        format!("p50 {p50:.2} ms, p95 {p95:.2} ms"),
        "p50 ≤ 5 ms",
    ));
    // The first scrape samples every program for the first time.
    let first = Instant::now();
    let (status, _) = get(&http, "/metrics");
    assert_eq!(status, 200, "GET /metrics");
    let first = first.elapsed().as_secs_f64() * 1e3;
    let (p50, p95) = timed_get(&http, "/metrics", 20);
    rows.push((
        format!(
            "GET /metrics with {total} programs (one process-table scan), first, then 20 calls"
        ),
        format!("first {first:.1} ms; p50 {p50:.1} ms, p95 {p95:.1} ms"),
        "p50 ≤ 20 ms",
    ));

    let window = Duration::from_secs(10);
    let (alone, (low, high), cpu) = observe(&http, pid, window);
    rows.push((
        "chatty program, no followers: its rate; zistd RSS min-max; zistd CPU per 10 s".to_owned(),
        format!(
            "{alone:.0} lines/s; {}-{} MiB; {cpu:.2} CPU-s",
            mib(low),
            mib(high)
        ),
        "",
    ));
    let effect = |rate: f64, (low, high): (u64, u64), cpu: f64| {
        format!(
            "{rate:.0} lines/s ({:.0}% of alone); {}-{} MiB; {cpu:.2} CPU-s",
            rate * 100.0 / alone,
            mib(low),
            mib(high)
        )
    };
    let (rate, rss, cpu, got, skipped) = followers(&http, pid, true, window);
    rows.push((
        format!("{FOLLOWERS} SSE followers reading: chatty's rate; zistd RSS min-max; zistd CPU per 10 s"),
        effect(rate, rss, cpu),
        "memory flat, child never slowed",
    ));
    rows.push((
        format!("{FOLLOWERS} SSE followers reading: lines delivered, lines reported skipped"),
        format!("{got} delivered, {skipped} skipped"),
        "",
    ));
    let (rate, rss, cpu, _, _) = followers(&http, pid, false, window);
    rows.push((
        format!("{FOLLOWERS} SSE followers that never read: chatty's rate; zistd RSS min-max; CPU"),
        effect(rate, rss, cpu),
        "memory flat, child never slowed",
    ));
}

/// The dashboard's first render, in headless Chromium.
fn dashboard(http: &str, total: usize, rows: &mut Vec<(String, String, &'static str)>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (renders, steady) = runtime.block_on(first_renders(http, total, 5));
    let (mut rows_ms, mut stats_ms): (Vec<Duration>, Vec<Duration>) = renders.into_iter().unzip();
    rows.push((
        format!("dashboard in headless Chromium, {total} programs: navigation to every row drawn (5 loads)"),
        format!("median {:.0} ms", percentile_ms(&mut rows_ms, 50)),
        "≤ 1 s",
    ));
    rows.push((
        format!("dashboard, {total} programs: navigation to every CPU/memory cell filled"),
        format!("median {:.0} ms", percentile_ms(&mut stats_ms, 50)),
        "",
    ));
    rows.push((
        format!(
            "dashboard, {total} programs, live for 10 s: tasks over 50 ms; worst timer lateness"
        ),
        format!(
            "{:.0} ({:.0} ms in all); {:.0} ms",
            steady.0, steady.1, steady.2
        ),
        "stays responsive",
    ));
}

/// Loads the dashboard `n` times; for each, the time from navigation start
/// to every row drawn, and to every memory cell filled (page clock).
async fn first_renders(
    http: &str,
    total: usize,
    n: usize,
) -> (Vec<(Duration, Duration)>, (f64, f64, f64)) {
    let browser = zist_benches::browser::Browser::start().await;
    let client = &browser.client;
    let url = format!("http://{http}/");
    zist_benches::browser::sign_in(client, &url, TOKEN).await;
    let wait = r#"
        const [want, done] = [arguments[0], arguments[arguments.length - 1]];
        let drawn = null;
        function check() {
          const rows = document.querySelectorAll('#rows .row');
          if (drawn === null && rows.length >= want && !document.getElementById('app').hidden) {
            // The frame after the next one starts once the rows are painted.
            requestAnimationFrame(() => requestAnimationFrame(() => {
              drawn = performance.now();
              check();
            }));
            return;
          }
          if (drawn !== null) {
            const mem = document.querySelectorAll('#rows .mem');
            if ([...mem].every((c) => c.textContent !== '')) {
              const nav = performance.getEntriesByType('navigation')[0];
              const list = performance.getEntriesByType('resource')
                .find((e) => e.name.endsWith('/api/v1/processes'));
              const marks = Object.fromEntries(performance.getEntriesByType('mark')
                .map((m) => [m.name, Math.round(m.startTime)]));
              requestAnimationFrame(() => requestAnimationFrame(() => done([drawn, performance.now(),
                nav.domContentLoadedEventEnd, list ? list.responseEnd : 0, marks])));
              return;
            }
          }
          setTimeout(check, 5);
        }
        check();
    "#;
    let mut out = Vec::new();
    for _ in 0..n {
        client.goto(&url).await.expect("the dashboard");
        let times = client
            .execute_async(wait, vec![serde_json::json!(total)])
            .await
            .expect("the dashboard rendered");
        let ms = |i: usize| Duration::from_secs_f64(times[i].as_f64().unwrap_or(0.0) / 1000.0);
        out.push((ms(0), ms(1)));
        eprintln!(
            "dashboard load: DOMContentLoaded {:.0} ms, list fetched {:.0} ms, rows drawn {:.0} ms, stats filled {:.0} ms; marks {}",
            ms(2).as_secs_f64() * 1000.0,
            ms(3).as_secs_f64() * 1000.0,
            ms(0).as_secs_f64() * 1000.0,
            ms(1).as_secs_f64() * 1000.0,
            times[4]
        );
    }
    // Then 10 s of live updates (stats every 2 s, uptimes every second,
    // events): long tasks, and how late a 100 ms timer fires at worst.
    let steady = r#"
        const done = arguments[arguments.length - 1];
        let count = 0, total = 0, worst = 0;
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) { count++; total += e.duration; }
        }).observe({ type: 'longtask' });
        let due = performance.now() + 100;
        const end = performance.now() + 10000;
        function tick() {
          worst = Math.max(worst, performance.now() - due);
          if (performance.now() > end) { done([count, total, worst]); return; }
          due = performance.now() + 100;
          setTimeout(tick, 100);
        }
        setTimeout(tick, 100);
    "#;
    zist_benches::browser::allow(client, Duration::from_secs(60)).await;
    let lag = client
        .execute_async(steady, vec![])
        .await
        .expect("the dashboard stayed up");
    let at = |i: usize| lag[i].as_f64().unwrap_or(0.0);
    browser
        .screenshot(&std::env::temp_dir().join("zist-dashboard-1000.png"))
        .await;
    browser.close().await;
    (out, (at(0), at(1), at(2)))
}
