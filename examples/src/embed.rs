//! A Rust service that supervises two programs with zist-core, without zistd.
//!
//! Run it with `cargo run -p zist-examples --bin embed`. It starts a ticking
//! logger and a small service, prints their state and stats, streams the
//! logger's output for a few seconds, then stops both and exits (Ctrl-C
//! stops them at once). Logs go to `examples/logs/`.

use std::time::Duration;

use tokio_stream::StreamExt;
use zist_core::{
    Feed, LogStream, ProgramName, ProgramSpec, RestartPolicy, ShutdownMode, Supervisor,
    SupervisorOptions,
};

fn program(name: &str, script: &str) -> zist_core::Result<ProgramSpec> {
    let name = ProgramName::new(name)?;
    let mut spec = ProgramSpec::new(name, "/bin/sh").args(["-c", script]);
    spec.start_secs = Duration::from_millis(500);
    spec.restart = RestartPolicy::Always;
    Ok(spec)
}

fn print_table(supervisor: &Supervisor) {
    println!(
        "{:<8} {:<9} {:>7} {:>8} {:>8}",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS"
    );
    for info in supervisor.list() {
        let pid = info.pid.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "{:<8} {:<9} {:>7} {:>7.1}s {:>8}",
            info.name, info.state, pid, info.uptime_secs, info.restarts
        );
    }
}

async fn demo(supervisor: &Supervisor) -> zist_core::Result<()> {
    supervisor
        .register(program(
            "ticker",
            "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.5; done",
        )?)
        .await?;
    supervisor
        .register(program(
            "service",
            "echo 'service up' >&2; while true; do sleep 1; done",
        )?)
        .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    print_table(supervisor);
    for name in ["ticker", "service"] {
        let stats = supervisor.stats(name).await?;
        println!(
            "{name}: cpu {:.1}%  rss {} KiB ({:.3}% of memory)",
            stats.cpu_percent,
            stats.memory_bytes / 1024,
            stats.memory_percent
        );
    }
    println!(
        "service stderr: {:?}",
        supervisor.logs("service", LogStream::Stderr, 5)?
    );
    println!("following ticker for 3 s:");
    let mut lines = supervisor.follow("ticker", LogStream::Stdout)?;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(item)) = tokio::time::timeout_at(until, lines.next()).await {
        match item {
            Feed::Item(line) => println!("  ticker | {line}"),
            Feed::Gap(n) => println!("  ticker | ... {n} lines skipped ..."),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let log_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("logs");
    let supervisor = Supervisor::new(SupervisorOptions {
        log_dir,
        ..SupervisorOptions::default()
    });
    let outcome = tokio::select! {
        r = demo(&supervisor) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    supervisor.shutdown(ShutdownMode::Stop).await;
    println!("stopped every program; logs are in examples/logs/");
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
