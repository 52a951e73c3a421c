//! Load runs of zistd, measured from outside: a real zistd (release build)
//! with N programs, driven over HTTP JSON-RPC and with zistcl, its memory and
//! CPU read from /proc.
//!
//! ```text
//! cargo build --release --bin zistd --bin zistcl
//! cargo run --release -p zist-benches --bin rpc-load -- [--programs 1000]
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use zist_rpc::ZistApiClient;

const TOKEN: &str = "rpc-load-token";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let programs = zist_benches::programs_flag(&args, 1000);
    let zistcl = zist_benches::sibling("zistcl");
    let mut conf = format!("Token = \"{TOKEN}\"\nRPCPort = 0\nHTTPPort = 0\nLogDir = \"logs\"\n");
    for i in 0..programs {
        conf.push_str(&format!(
            "[[Program]]\nName = \"p{i}\"\nPath = \"/bin/sleep\"\nArgs = \"3600\"\nStartSecs = 0\n"
        ));
    }
    let mut daemon = zist_benches::Daemon::launch(&conf);
    let (pid, launch, rpc) = (daemon.pid, daemon.launch, daemon.rpc.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    runtime.block_on(async {
        let client = rpc_client(&rpc);
        // Wait until every program runs.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = client.process_list().await.expect("process.list");
            if list
                .iter()
                .all(|i| i.state == zist_core::ProcessState::Running)
            {
                break;
            }
            assert!(Instant::now() < deadline, "programs did not all start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rows.push((
            format!("zistd launch with {programs} programs until READY"),
            format!("{:.3} s", launch.as_secs_f64()),
            "",
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, _) = zist_benches::usage(pid);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu1, rss) = zist_benches::usage(pid);
        rows.push((
            format!("zistd RSS with {programs} idle programs"),
            format!("{:.1} MiB", rss as f64 / 1048576.0),
            "≤ 15 MiB",
        ));
        rows.push((
            "zistd CPU while idle, per 10 s".to_owned(),
            format!("{:.3} CPU-s", cpu1 - cpu0),
            "< 0.05 CPU-s",
        ));

        let mut lat = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let list = client.process_list().await.expect("process.list");
            lat.push(t.elapsed());
            assert_eq!(list.len(), programs);
        }
        rows.push((
            format!(
                "process.list with {programs} programs, typed client (parses every info), 200 calls"
            ),
            format!(
                "p50 {:.2} ms, p95 {:.2} ms",
                zist_benches::percentile_ms(&mut lat, 50),
                zist_benches::percentile_ms(&mut lat, 95)
            ),
            "p50 ≤ 5 ms",
        ));
        // The same call as raw HTTP on one keep-alive connection: the answer's
        // bytes, without a client's JSON decoding.
        let rpc2 = rpc.clone();
        let body = r#"{"jsonrpc":"2.0","method":"process.list","id":1}"#;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {rpc}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut raw = tokio::task::spawn_blocking(move || {
            zist_benches::keep_alive_latencies(&rpc2, &request, 200)
        })
            .await
            .expect("raw client");
        rows.push((
            format!("process.list with {programs} programs, raw HTTP keep-alive, 200 calls"),
            format!(
                "p50 {:.2} ms, p95 {:.2} ms",
                zist_benches::percentile_ms(&mut raw, 50),
                zist_benches::percentile_ms(&mut raw, 95)
            ),
            "p50 ≤ 5 ms",
        ));

        let clients: Vec<HttpClient> = (0..50).map(|_| rpc_client(&rpc)).collect();
        let until = Instant::now() + Duration::from_secs(5);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in clients {
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    c.daemon_status().await.expect("daemon.status");
                    n += 1;
                }
                n
            }));
        }
        let mut calls = 0;
        for task in tasks {
            calls += task.await.expect("client task");
        }
        rows.push((
            "daemon.status, 50 concurrent keep-alive clients".to_owned(),
            format!("{:.0} calls/s", calls as f64 / t.elapsed().as_secs_f64()),
            "≥ 10 000 calls/s",
        ));
    });
    let mut walls = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = Command::new(&zistcl)
            .args([rpc.as_str(), TOKEN, "all"])
            .output()
            .expect("zistcl");
        walls.push(t.elapsed());
        assert!(out.status.success());
    }
    rows.push((
        format!("zistcl all with {programs} programs, wall (10 runs)"),
        format!("p50 {:.1} ms", zist_benches::percentile_ms(&mut walls, 50)),
        "≤ 50 ms",
    ));
    let exit = daemon.terminate();
    rows.push((
        format!("zistd SIGTERM with {programs} programs until exit"),
        format!("{:.0} ms", exit.as_secs_f64() * 1000.0),
        "",
    ));
    println!(
        "zistd load run, {} cores\n\n| scenario | result | target |\n|---|---|---|",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (what, value, target) in rows {
        println!("| {what} | {value} | {target} |");
    }
}

fn rpc_client(rpc: &str) -> HttpClient {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    HttpClientBuilder::default()
        .set_headers(headers)
        .request_timeout(Duration::from_secs(60))
        .build(format!("http://{rpc}"))
        .expect("client")
}
