//! Load runs of zist-core through its public API, measured from outside the
//! library: wall clocks, `/proc/self/status` and `getrusage`.
//!
//! ```text
//! cargo run --release -p zist-benches --bin core-load -- all
//! cargo run --release -p zist-benches --bin core-load -- start --programs 1000
//! ```
//!
//! Scenarios: `start` (N programs registered and started until all are
//! running), `idle` (RSS and CPU of N idle programs over 10 s), `stop` (stop
//! N until all are gone), `restart` (kill -9 to the new pid, 50 times),
//! `throughput` (a child writing 4 KiB blocks flat out, into its log file
//! through zist, against the same child writing straight to a file). Every
//! process started is stopped at the end, by its process group.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::resource::UsageWho;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_stream::StreamExt;
use zist_core::{
    Feed, ProcessState, ProgramName, ProgramSpec, RestartPolicy, ShutdownMode, Supervisor,
    SupervisorOptions,
};

const BLOCK: usize = 4096;

fn cpu_seconds() -> f64 {
    zist_benches::cpu_seconds(UsageWho::RUSAGE_SELF)
}

fn children_cpu_seconds() -> f64 {
    zist_benches::cpu_seconds(UsageWho::RUSAGE_CHILDREN)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn spec(dir: &Path, name: &str, path: &str, args: &[&str]) -> ProgramSpec {
    let name = ProgramName::new(name).expect("benchmark names are valid");
    let mut spec = ProgramSpec::new(name, path).args(args.iter().copied());
    spec.start_secs = Duration::ZERO;
    spec.restart_delay = Duration::ZERO;
    spec.logfile = Some(dir.join(format!("{}.out.log", spec.name)));
    spec.err_logfile = Some(dir.join(format!("{}.err.log", spec.name)));
    spec
}

struct Row {
    what: String,
    value: String,
    target: &'static str,
}

fn report(rows: &[Row]) {
    println!("\n| scenario | result | target |\n|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.what, r.value, r.target);
    }
}

async fn wait_all(sup: &Supervisor, state: ProcessState, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if sup.list().iter().all(|i| i.state == state) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The machine's floor, no supervisor (see [`zist_benches::spawn_floor`]).
fn floor(n: usize, rows: &mut Vec<Row>) {
    let (threads, spawned, reaped) = zist_benches::spawn_floor(n, false);
    rows.push(Row {
        what: format!(
            "floor, no supervisor: {n} bare spawns from {threads} threads / kill -9 and reap them"
        ),
        value: format!(
            "{:.3} s / {:.1} ms",
            spawned.as_secs_f64(),
            reaped.as_secs_f64() * 1000.0
        ),
        target: "",
    });
}

/// start, idle and stop with `n` programs; one supervisor for the three.
async fn start_idle_stop(dir: &Path, n: usize, idle_secs: u64, rows: &mut Vec<Row>) {
    let base_rss = rss_bytes();
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.to_owned(),
        ..SupervisorOptions::default()
    });
    let mut events = sup.events();
    let t0 = Instant::now();
    for i in 0..n {
        let mut s = spec(dir, &format!("idle{i}"), "/bin/sleep", &["3600"]);
        s.autostart = false;
        sup.register(s).await.expect("register");
    }
    sup.start_all().await;
    // Wait on the events, as a user would, rather than poll the list.
    let mut running = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while running < n {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Feed::Item(ev))) if ev.to == ProcessState::Running => running += 1,
            Ok(Some(Feed::Gap(_))) => {
                // Fell behind the events: fall back to the list.
                wait_all(&sup, ProcessState::Running, Duration::from_secs(60)).await;
                break;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let start = t0.elapsed();
    let ok = sup.list().iter().all(|i| i.state == ProcessState::Running);
    assert!(ok, "not all {n} programs reached running");
    rows.push(Row {
        what: format!("start {n} programs until all running"),
        value: format!("{:.3} s", start.as_secs_f64()),
        target: if n == 1000 { "≤ 0.5 s" } else { "" },
    });

    if idle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // As zistd does once started: the code that starting ran is let go.
        zist_core::memory::release_start_up_pages();
        let cpu0 = cpu_seconds();
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let cpu = cpu_seconds() - cpu0;
        let rss = rss_bytes();
        rows.push(Row {
            what: format!(
                "RSS with {n} idle programs (whole process; growth over the empty runtime)"
            ),
            value: format!(
                "{:.1} MiB ({:.1} MiB)",
                rss as f64 / 1048576.0,
                rss.saturating_sub(base_rss) as f64 / 1048576.0
            ),
            target: if n == 1000 { "≤ 10 MiB" } else { "" },
        });
        rows.push(Row {
            what: format!("CPU while {n} programs idle, per {idle_secs} s"),
            value: format!("{cpu:.3} CPU-s"),
            target: "no CPU (no polling)",
        });
    }

    let pids: Vec<i32> = sup.list().iter().filter_map(|i| i.pid).collect();
    let t0 = Instant::now();
    let cpu_before = cpu_seconds();
    let children_before = children_cpu_seconds();
    sup.stop_all().await;
    let stop = t0.elapsed();
    let zist_cpu = cpu_seconds() - cpu_before;
    let children_cpu = children_cpu_seconds() - children_before;
    let left = pids
        .iter()
        .filter(|p| kill(Pid::from_raw(**p), None).is_ok())
        .count();
    rows.push(Row {
        what: format!("stop {n} programs until all gone"),
        value: format!(
            "{:.1} ms ({left} left); CPU meanwhile: zist {zist_cpu:.3} s, children (whole life) {children_cpu:.3} s",
            stop.as_secs_f64() * 1000.0
        ),
        target: if n == 1000 { "≤ 100 ms" } else { "" },
    });
    sup.shutdown(ShutdownMode::Stop).await;
}

async fn restart_latency(dir: &Path, rounds: usize, rows: &mut Vec<Row>) {
    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.to_owned(),
        ..SupervisorOptions::default()
    });
    let mut events = sup.events();
    let mut s = spec(dir, "victim", "/bin/sleep", &["3600"]);
    s.restart = RestartPolicy::Always;
    let mut pid = sup.register(s).await.expect("register").pid.expect("pid");
    let mut lat = Vec::with_capacity(rounds);
    let mut noticed = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Spawns of one program are at least 100 ms apart by design.
        tokio::time::sleep(Duration::from_millis(120)).await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
        let t0 = Instant::now();
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(Feed::Item(ev))) if ev.to == ProcessState::Backoff => {
                    noticed.push(t0.elapsed());
                }
                Ok(Some(Feed::Item(ev))) if ev.to == ProcessState::Starting => {
                    lat.push(t0.elapsed());
                    pid = ev.pid.expect("a starting process has a pid");
                    break;
                }
                Ok(Some(_)) => {}
                _ => panic!("no restart within 5 s"),
            }
        }
    }
    rows.push(Row {
        what: format!("restart after kill -9, RestartDelay 0s ({rounds} kills)"),
        value: format!(
            "p50 {:.2} ms, p95 {:.2} ms (exit noticed after p50 {:.2} ms, the rest is spawning)",
            zist_benches::percentile_ms(&mut lat, 50),
            zist_benches::percentile_ms(&mut lat, 95),
            zist_benches::percentile_ms(&mut noticed, 50)
        ),
        target: "median ≤ 2 ms",
    });
    sup.shutdown(ShutdownMode::Stop).await;
}

async fn throughput(dir: &Path, bytes: u64, rows: &mut Vec<Row>) {
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_str().expect("utf-8 path");
    let total = bytes.to_string();

    // Baseline: the same writer straight into a file.
    let direct = dir.join("direct.log");
    let file = std::fs::File::create(&direct).expect("baseline file");
    zist_benches::warm_memory(bytes);
    let t0 = Instant::now();
    let status = std::process::Command::new(exe)
        .args(["writer", &total])
        .stdout(file)
        .process_group(0)
        .status()
        .expect("baseline writer");
    let base = t0.elapsed();
    assert!(status.success());
    let _ = std::fs::remove_file(&direct);

    let sup = Supervisor::new(SupervisorOptions {
        log_dir: dir.to_owned(),
        ..SupervisorOptions::default()
    });
    let mut s = spec(dir, "writer", exe, &["writer", &total]);
    s.restart = RestartPolicy::Never;
    s.log_max_bytes = 0;
    let out = s.logfile.clone().expect("set above");
    zist_benches::warm_memory(bytes);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    sup.register(s).await.expect("register writer");
    let ok = wait_all(&sup, ProcessState::Exited, Duration::from_secs(120)).await;
    let took = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert!(ok, "writer did not finish");
    let got = std::fs::metadata(&out).map_or(0, |m| m.len());
    let gb = bytes as f64 / 1e9;
    rows.push(Row {
        what: format!("4 KiB blocks into the log file, {:.1} GB", gb),
        value: format!(
            "{:.2} GB/s through zist ({:.2} GB/s straight to a file), {:.2} CPU-s of zist per GB, {} bytes lost",
            gb / took.as_secs_f64(),
            gb / base.as_secs_f64(),
            cpu / gb,
            bytes.saturating_sub(got)
        ),
        target: "≥ 1 GB/s, ≤ 1 CPU-s/GB",
    });
    let _ = std::fs::remove_file(&out);

    // The same through zist into /dev/null: zist's own cost (pipe, framing,
    // tail) without the kernel's copy into the page cache.
    let mut s = spec(dir, "writer-null", exe, &["writer", &total]);
    s.restart = RestartPolicy::Never;
    s.log_max_bytes = 0;
    s.logfile = Some(PathBuf::from("/dev/null"));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    sup.register(s).await.expect("register writer");
    let ok = wait_until(
        &sup,
        "writer-null",
        ProcessState::Exited,
        Duration::from_secs(120),
    )
    .await;
    let took = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert!(ok, "writer did not finish");
    rows.push(Row {
        what: format!("the same into /dev/null (zist's own cost), {gb:.1} GB"),
        value: format!(
            "{:.2} GB/s, {:.2} CPU-s of zist per GB",
            gb / took.as_secs_f64(),
            cpu / gb
        ),
        target: "",
    });
    sup.shutdown(ShutdownMode::Stop).await;
}

async fn wait_until(sup: &Supervisor, name: &str, state: ProcessState, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if sup.info(name).is_ok_and(|i| i.state == state) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// The child of the throughput run: writes `total` bytes of text in 4 KiB blocks.
fn writer(total: u64) {
    let mut block = Vec::with_capacity(BLOCK);
    while block.len() < BLOCK {
        block.extend_from_slice(
            b"2026-11-27T10:00:00Z INFO request served in 1.3 ms path=/api/v1/items status=200\n",
        );
    }
    block.truncate(BLOCK - 1);
    block.push(b'\n');
    zist_benches::write_blocks(&block, total);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("writer") {
        writer(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1 << 30));
        return;
    }
    let scenario = args.first().cloned().unwrap_or_else(|| "all".to_owned());
    let programs = zist_benches::programs_flag(&args, 1000);
    let dir = PathBuf::from(std::env::var("ZIST_BENCH_DIR").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("zist-core-load-{}", std::process::id()))
            .display()
            .to_string()
    }));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    runtime.block_on(async {
        match scenario.as_str() {
            "start" | "stop" => {
                floor(programs, &mut rows);
                start_idle_stop(&dir, programs, 0, &mut rows).await
            }
            "idle" => start_idle_stop(&dir, programs, 10, &mut rows).await,
            "restart" => restart_latency(&dir, 50, &mut rows).await,
            "throughput" => throughput(&dir, 1 << 30, &mut rows).await,
            "all" => {
                floor(programs, &mut rows);
                start_idle_stop(&dir, programs, 10, &mut rows).await;
                restart_latency(&dir, 50, &mut rows).await;
                throughput(&dir, 1 << 30, &mut rows).await;
            }
            other => {
                eprintln!(
                    "unknown scenario {other:?}; use all, start, idle, stop, restart or throughput"
                );
                std::process::exit(2);
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "zist-core load run, {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    report(&rows);
}
