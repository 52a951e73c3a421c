//! Load runs of zistd, measured from outside: a real zistd (release build)
//! with N programs, driven over HTTP JSON-RPC and with zistcl, its memory and
//! CPU read from /proc.
//!
//! ```text
//! cargo build --release --bin zistd --bin zistcl
//! cargo run --release -p zist-benches --bin rpc-load -- [--programs 1000]
//! ```

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use zist_rpc::ZistApiClient;

const TOKEN: &str = "rpc-load-token";

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name(name);
    if !path.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --bin zistd --bin zistcl` first",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

/// (CPU seconds, RSS bytes) of a process, from /proc.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (ticks as f64 / hz, rss)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let programs = zist_benches::programs_flag(&args, 1000);
    let zistd = sibling("zistd");
    let zistcl = sibling("zistcl");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conf = format!("Token = \"{TOKEN}\"\nRPCPort = 0\nLogDir = \"logs\"\n");
    for i in 0..programs {
        conf.push_str(&format!(
            "[[Program]]\nName = \"p{i}\"\nPath = \"/bin/sleep\"\nArgs = \"3600\"\nStartSecs = 0\n"
        ));
    }
    let conf_path = dir.path().join("conf.toml");
    std::fs::write(&conf_path, conf).expect("config");
    let t0 = Instant::now();
    let mut child = Command::new(&zistd)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("zistd");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("READY ") => break line,
            Some(_) => {}
            None => panic!("zistd exited before READY"),
        }
    };
    let launch = t0.elapsed();
    // Keep draining zistd's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let json: serde_json::Value =
        serde_json::from_str(&ready["READY ".len()..]).expect("READY json");
    let rpc = json["rpc"].as_str().expect("rpc address").to_owned();
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
        let (cpu0, _) = usage(pid);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (cpu1, rss) = usage(pid);
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
        let mut raw = tokio::task::spawn_blocking(move || raw_list_latencies(&rpc2, 200))
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
    let t = Instant::now();
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let _ = child.wait();
    rows.push((
        format!("zistd SIGTERM with {programs} programs until exit"),
        format!("{:.0} ms", t.elapsed().as_secs_f64() * 1000.0),
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

/// `n` process.list calls over one keep-alive connection, read to the last byte.
fn raw_list_latencies(rpc: &str, n: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(rpc).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let body = r#"{"jsonrpc":"2.0","method":"process.list","id":1}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {rpc}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut samples = Vec::with_capacity(n);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(request.as_bytes()).expect("write");
        let mut got = 0;
        let total = loop {
            got += stream.read(&mut buf[got..]).expect("read");
            let head_end = buf[..got].windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a content-length");
                break end + 4 + length;
            }
        };
        while got < total {
            got += stream.read(&mut buf[got..]).expect("read");
        }
        samples.push(t.elapsed());
    }
    samples
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
