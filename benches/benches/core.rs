//! Micro-benchmarks of zist-core's hot parts: line framing, the in-memory
//! tail, the restart decision and the stats sampler. Run with
//! `cargo bench -p zist-benches`.

use std::time::Duration;

use bytes::Bytes;
use zist_core::RestartPolicy;
use zist_core::logs::{LineFramer, LogTail};
use zist_core::state::{ExitKind, RestartRules, after_exit};

fn main() {
    divan::main();
}

fn text_chunk(line_len: usize, total: usize) -> Bytes {
    let mut line = vec![b'x'; line_len - 1];
    line.push(b'\n');
    Bytes::from(
        line.iter()
            .copied()
            .cycle()
            .take(total)
            .collect::<Vec<u8>>(),
    )
}

/// Framing a 64 KiB read into lines of 100 bytes, 4 KiB, and no newline at all.
#[divan::bench(args = [100, 4096, 0])]
fn frame_64k(bencher: divan::Bencher, line_len: usize) {
    let chunk = if line_len == 0 {
        Bytes::from(vec![0u8; 64 * 1024])
    } else {
        text_chunk(line_len, 64 * 1024)
    };
    bencher
        .counter(divan::counter::BytesCount::new(chunk.len()))
        .bench_local(|| {
            let mut framer = LineFramer::default();
            let mut n = 0usize;
            framer.feed(divan::black_box(chunk.clone()), |line| n += line.len());
            n
        });
}

/// Pushing lines into a full tail (each push evicts).
#[divan::bench]
fn tail_push_full(bencher: divan::Bencher) {
    let mut tail = LogTail::default();
    let line = Bytes::from(vec![b'y'; 100]);
    for _ in 0..20_000 {
        tail.push(line.clone());
    }
    bencher.bench_local(|| tail.push(divan::black_box(line.clone())));
}

/// Reading the last 100 lines of a full tail (the API's default).
#[divan::bench]
fn tail_last_100(bencher: divan::Bencher) {
    let mut tail = LogTail::default();
    for i in 0..20_000 {
        tail.push(Bytes::from(format!(
            "line number {i} with some text after it"
        )));
    }
    bencher.bench_local(|| divan::black_box(&tail).last(100));
}

/// The pure restart decision.
#[divan::bench]
fn restart_decision(bencher: divan::Bencher) {
    let rules = RestartRules {
        policy: RestartPolicy::Always,
        start_secs: Duration::from_secs(1),
        max_restarts: 5,
        restart_delay: Duration::from_millis(100),
    };
    bencher.bench_local(|| {
        after_exit(
            divan::black_box(&rules),
            ExitKind::Code(1),
            Duration::from_millis(10),
            divan::black_box(2),
        )
    });
}

/// A stats call answered from the last scan (within 100 ms of it).
#[divan::bench]
fn stats_cached(bencher: divan::Bencher) {
    let sampler = zist_core::stats::Sampler::new();
    let me = std::process::id() as i32;
    sampler.measure(me);
    bencher.bench_local(|| sampler.measure(divan::black_box(me)));
}

/// One scan of the whole process table (what a stats call costs when the
/// last scan is older than 100 ms), with this machine's processes.
#[divan::bench]
fn stats_scan(bencher: divan::Bencher) {
    let sampler = zist_core::stats::Sampler::new();
    sampler.rescan();
    bencher.bench_local(|| sampler.rescan());
}
