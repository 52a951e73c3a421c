//! Logs: pipes always drained, bounded memory, byte-exact files, rotation, followers.

use std::time::Duration;

use tokio_stream::StreamExt;
use zist_core::{Feed, LogStream, ProcessState, RestartPolicy};

use crate::support::{Dir, SECS_5, SECS_10, Sup, eventually, wait_state};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_chatty_child_is_drained_and_every_byte_reaches_the_file() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "chatty",
        "yes 0123456789abcdef | head -c 30000000; echo done >&2",
    );
    spec.restart = RestartPolicy::Never;
    sup.register(spec).await.unwrap();
    wait_state(
        &sup,
        "chatty",
        ProcessState::Exited,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(sup.info("chatty").unwrap().exit_code, Some(0));
    let out = dir.join("logs/chatty.out.log");
    eventually(SECS_10, "the log file to hold all 30 MB", || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() == 30_000_000)
    })
    .await;
    assert_eq!(sup.logs("chatty", LogStream::Stderr, 5).unwrap(), ["done"]);
    let tail = sup.logs("chatty", LogStream::Stdout, 3).unwrap();
    assert_eq!(tail.len(), 3);
    assert!(
        tail.iter()
            .all(|l| "0123456789abcdef".starts_with(l.as_str())),
        "{tail:?}"
    );
    let health = sup.log_health("chatty", LogStream::Stdout).unwrap();
    assert_eq!(
        (health.bytes_written, health.bytes_lost, health.errors),
        (30_000_000, 0, 0)
    );
}

#[tokio::test]
async fn output_without_newlines_keeps_memory_bounded() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // A whole number of 64 KiB pieces, so every piece the tail gives is whole.
    const PIECE: usize = zist_core::logs::MAX_LINE;
    const TOTAL: usize = 3052 * PIECE;
    let mut spec = dir.sh("blob", &format!("head -c {TOTAL} /dev/zero"));
    spec.restart = RestartPolicy::Never;
    let before = rss_bytes();
    sup.register(spec).await.unwrap();
    wait_state(&sup, "blob", ProcessState::Exited, Duration::from_secs(60)).await;
    // Every byte is kept, across the files the default 50 MB rotation made.
    let files: Vec<std::path::PathBuf> = std::iter::once(dir.join("logs/blob.out.log"))
        .chain((1..=5).map(|n| dir.join(&format!("logs/blob.out.log.{n}"))))
        .collect();
    let total = || {
        files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    eventually(SECS_10, "200 MB in the log files", || {
        total() == TOTAL as u64
    })
    .await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 100 << 20,
        "memory grew by {} MiB for 200 MB of output",
        grown >> 20
    );
    // The tail keeps at least 1 MiB (docs/reference.md §3.2), cut into 64 KiB pieces,
    // and at most one read (at most one piece) more: bounded.
    let tail = sup.logs("blob", LogStream::Stdout, 1000).unwrap();
    let held: usize = tail.iter().map(String::len).sum();
    assert!(tail.iter().all(|l| l.len() == PIECE));
    let kept = zist_core::logs::TAIL_BYTES;
    assert!(
        (kept..=kept + PIECE).contains(&held),
        "tail holds {held} bytes, not between {kept} and {}",
        kept + PIECE
    );
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
}

#[tokio::test]
async fn invalid_utf8_is_exact_in_the_file_and_lossy_in_the_api() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("bytes", r"printf 'ok \377\376 end\nno newline at the end'");
    spec.restart = RestartPolicy::Never;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "bytes", ProcessState::Exited, SECS_10).await;
    let file = dir.join("logs/bytes.out.log");
    eventually(SECS_10, "file written", || {
        std::fs::read(&file).is_ok_and(|b| b.len() == 31)
    })
    .await;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"ok \xff\xfe end\nno newline at the end"
    );
    assert_eq!(
        sup.logs("bytes", LogStream::Stdout, 10).unwrap(),
        ["ok \u{fffd}\u{fffd} end", "no newline at the end"]
    );
}

#[tokio::test]
async fn rotation_under_a_real_writer_loses_and_doubles_nothing() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "rotor",
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done",
    );
    spec.restart = RestartPolicy::Never;
    spec.log_max_bytes = 8 * 1024;
    spec.log_backups = 100;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "rotor", ProcessState::Exited, Duration::from_secs(60)).await;
    let base = dir.join("logs/rotor.out.log");
    let expected: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let read_all = || {
        let mut files = Vec::new();
        for n in (1..=100).rev() {
            let p = std::path::PathBuf::from(format!("{}.{n}", base.display()));
            if let Ok(text) = std::fs::read_to_string(&p) {
                files.push(text);
            }
        }
        files.push(std::fs::read_to_string(&base).unwrap_or_default());
        files
    };
    eventually(SECS_10, "all lines in the files", || {
        read_all().concat().len() == expected.len()
    })
    .await;
    let files = read_all();
    assert!(files.len() > 10, "only {} files: no rotation", files.len());
    for f in &files[..files.len() - 1] {
        assert!(
            f.len() <= 8 * 1024 && f.ends_with('\n'),
            "a rotated file is over size or cuts a line"
        );
    }
    assert_eq!(files.concat(), expected, "lines lost, doubled or reordered");
}

#[tokio::test]
async fn backups_beyond_the_limit_are_dropped() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "few",
        "i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done",
    );
    spec.restart = RestartPolicy::Never;
    spec.log_max_bytes = 4 * 1024;
    spec.log_backups = 2;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "few", ProcessState::Exited, SECS_10).await;
    let base = dir.join("logs/few.out.log");
    eventually(SECS_10, "the last line in the current file", || {
        std::fs::read_to_string(&base).is_ok_and(|t| t.ends_with("line 2999\n"))
    })
    .await;
    let numbered = |n: u32| std::path::PathBuf::from(format!("{}.{n}", base.display()));
    assert!(numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists());
}

#[tokio::test]
async fn followers_get_new_lines_and_a_slow_one_gets_a_gap_not_a_stall() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // The first 100 lines, then, once told, the other 19 900 at full speed.
    let mut spec = dir.sh(
        "talker",
        "read go < go.fifo; i=0; while [ $i -lt 100 ]; do echo \"n $i\"; i=$((i+1)); done; \
         read go < more.fifo; while [ $i -lt 20000 ]; do echo \"n $i\"; i=$((i+1)); done; sleep 300",
    );
    spec.workingdir = Some(dir.path().to_owned());
    for fifo in ["go.fifo", "more.fifo"] {
        nix::unistd::mkfifo(
            &dir.join(fifo),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    sup.run(spec).await;
    let mut fast = sup.follow("talker", LogStream::Stdout).unwrap();
    let mut slow = sup.follow("talker", LogStream::Stdout).unwrap();
    std::fs::write(dir.join("go.fifo"), "go\n").unwrap();
    // A follower that reads gets the lines in order.
    for i in 0..100 {
        let item = tokio::time::timeout(SECS_10, fast.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item, Feed::Item(format!("n {i}")));
    }
    std::fs::write(dir.join("more.fifo"), "go\n").unwrap();
    // The slow one does not read until the program has written everything,
    // which it does without waiting for anyone.
    eventually(SECS_10, "all 20000 lines in the tail", || {
        sup.logs("talker", LogStream::Stdout, 1).unwrap() == ["n 19999"]
    })
    .await;
    let first = tokio::time::timeout(SECS_10, slow.next())
        .await
        .unwrap()
        .unwrap();
    let Feed::Gap(missed) = first else {
        panic!("a slow follower should see a gap first, got {first:?}");
    };
    assert!(missed > 0);
    let next = tokio::time::timeout(SECS_10, slow.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, Feed::Item(ref l) if l.starts_with("n ")),
        "{next:?}"
    );
    sup.stop("talker").await.unwrap();
}

#[tokio::test]
async fn an_unwritable_log_file_is_reported_and_the_program_runs_on() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    std::fs::write(dir.join("not-a-dir"), "").unwrap();
    let mut spec = dir.sh("nolog", "while true; do echo tick; sleep 0.02; done");
    spec.logfile = Some(dir.join("not-a-dir/nolog.out.log"));
    sup.run(spec).await;
    eventually(SECS_10, "ticks in memory", || {
        sup.logs("nolog", LogStream::Stdout, 5).unwrap().len() == 5
    })
    .await;
    let health = sup.log_health("nolog", LogStream::Stdout).unwrap();
    assert!(health.errors >= 1 && health.bytes_lost >= 5, "{health:?}");
    assert!(health.last_error.unwrap().contains("not-a-dir"));
    wait_state(&sup, "nolog", ProcessState::Running, SECS_10).await;
    sup.stop("nolog").await.unwrap();
}

/// The size of the pipe behind a child's stdout, asked through a second
/// read end opened from /proc (never read from).
fn stdout_pipe_size(pid: i32) -> Option<i32> {
    use std::os::unix::fs::OpenOptionsExt;
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(format!("/proc/{pid}/fd/1"))
        .ok()?;
    nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).ok()
}

/// Checks that `text` is the lines `n 0`, `n 1`, ... in order; returns how many.
fn consecutive_lines(text: &str) -> usize {
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("n {i}"), "line {} of the file", i + 1);
        count += 1;
    }
    count
}

#[tokio::test]
async fn a_program_writing_each_line_on_its_own_is_read_on_a_timer_and_loses_nothing() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let stop = dir.join("stop");
    // Each `echo` is a write(2) of its own: the costliest way to log.
    let spec = dir.sh(
        "lines",
        &format!(
            "i=0; while [ ! -e {} ]; do echo \"n $i\"; i=$((i+1)); done; exec sleep 300",
            stop.display()
        ),
    );
    let pid = sup.run(spec).await;
    // A follower gets every line in order, or a gap that says exactly how
    // many it missed.
    let mut follower = sup.follow("lines", LogStream::Stdout).unwrap();
    let mut next: Option<u64> = None;
    for _ in 0..5000 {
        match tokio::time::timeout(SECS_10, follower.next()).await {
            Ok(Some(Feed::Item(line))) => {
                let k: u64 = line
                    .strip_prefix("n ")
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_else(|| panic!("a mangled line: {line:?}"));
                assert!(
                    next.is_none_or(|n| n == k),
                    "expected n {next:?}, got {line}"
                );
                next = Some(k + 1);
            }
            Ok(Some(Feed::Gap(missed))) => next = next.map(|n| n + missed),
            other => panic!("the follower got {other:?}"),
        }
    }
    drop(follower);
    // While it writes flat out, zist reads its pipe on a timer, in a 1 MiB
    // pipe. (A zist too busy to wake often reads in bulk anyway and does
    // not need to: other tests share the cores, hence the long limit.)
    eventually(
        Duration::from_secs(30),
        "the hot stream's pipe to grow to 1 MiB",
        || stdout_pipe_size(pid) == Some(1 << 20),
    )
    .await;
    std::fs::write(&stop, "").unwrap();
    // Quiet again: read on readiness, the pipe back to Linux's default size
    // (for a user within its pipe memory limit), every line read.
    eventually(SECS_10, "the pipe back to 64 KiB", || {
        stdout_pipe_size(pid) == Some(64 * 1024)
    })
    .await;
    let out = dir.join("logs/lines.out.log");
    let count = consecutive_lines(&std::fs::read_to_string(&out).unwrap());
    assert!(count > 5000, "only {count} lines");
    assert_eq!(
        sup.logs("lines", LogStream::Stdout, 1).unwrap(),
        [format!("n {}", count - 1)]
    );
    sup.stop("lines").await.unwrap();
}

#[tokio::test]
async fn a_hot_stream_detached_mid_flight_loses_and_doubles_no_line() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let spec = dir.sh("flood", "i=0; while :; do echo \"n $i\"; i=$((i+1)); done");
    let pid = sup.run(spec).await;
    eventually(
        Duration::from_secs(30),
        "the hot stream's pipe to grow to 1 MiB",
        || stdout_pipe_size(pid) == Some(1 << 20),
    )
    .await;
    sup.detach("flood").await.unwrap();
    let out = dir.join("logs/flood.out.log");
    let size = || std::fs::metadata(&out).map_or(0, |m| m.len());
    let at_detach = size();
    eventually(SECS_10, "the relay to go on appending", || {
        size() > at_detach + 500_000
    })
    .await;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The relay copies what is left in the pipe, then ends.
    let mut last = (size(), std::time::Instant::now());
    eventually(SECS_10, "the file to stop growing", || {
        let now = size();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(300)
    })
    .await;
    let count = consecutive_lines(&std::fs::read_to_string(&out).unwrap());
    assert!(count > 10_000, "only {count} lines");
}

#[tokio::test]
async fn a_symlink_planted_in_log_dir_is_never_followed_and_log_dir_is_not_for_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let target = dir.write("elsewhere.txt", "");
    std::os::unix::fs::symlink(&target, dir.join("logs/planted.out.log")).unwrap();
    let spec = dir.sh("planted", "echo secret output; exec sleep 300");
    sup.run(spec).await;
    eventually(SECS_5, "the failed open to be told", || {
        sup.log_health("planted", zist_core::LogStream::Stdout)
            .unwrap()
            .last_error
            .is_some_and(|e| e.contains("cannot open"))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "",
        "the link was followed"
    );
    // Info tells what was lost.
    let log = sup.info("planted").unwrap().log;
    assert_eq!(log.stdout.written, 0, "{log:?}");
    assert_eq!(log.stdout.lost, "secret output\n".len() as u64, "{log:?}");
    // The output is still kept in memory.
    assert_eq!(
        sup.logs("planted", zist_core::LogStream::Stdout, 1)
            .unwrap(),
        ["secret output"]
    );
    // A folder zist makes for logs has no access for others.
    let mut spec = dir.sh("deep", "echo hi; exec sleep 300");
    spec.logfile = Some(dir.join("logs/new/deep.out.log"));
    sup.run(spec).await;
    eventually(SECS_5, "the new folder", || dir.join("logs/new").is_dir()).await;
    let mode = std::fs::metadata(dir.join("logs/new"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "{mode:o}");
    sup.shutdown(zist_core::ShutdownMode::Stop).await;
}

#[tokio::test]
async fn with_log_timestamps_each_line_in_the_file_starts_with_its_arrival_time() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "stamped",
        "printf 'one\\ntw'; sleep 0.2; printf 'o\\nthree\\n'; exec sleep 300",
    );
    spec.log_timestamps = true;
    sup.run(spec).await;
    let path = dir.join("logs/stamped.out.log");
    eventually(SECS_5, "three lines in the file", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 3)
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once(' ').expect("a stamp, a space, the line"))
        .collect();
    assert_eq!(
        lines.iter().map(|(_, line)| *line).collect::<Vec<_>>(),
        ["one", "two", "three"],
        "{text}"
    );
    for (stamp, _) in &lines {
        // 2026-12-03T19:30:00.123Z
        assert_eq!(stamp.len(), 24, "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }
    // Info counts what reached the file (the stamps included).
    let written = sup.info("stamped").unwrap().log.stdout.written;
    assert_eq!(written, text.len() as u64);
    // The tail in memory holds the lines as written.
    assert_eq!(
        sup.logs("stamped", LogStream::Stdout, 3).unwrap(),
        ["one", "two", "three"]
    );
    sup.shutdown(zist_core::ShutdownMode::Stop).await;
}

/// Every file of a rotated log, oldest first, and the current one.
fn rotated_files(base: &std::path::Path, backups: u32) -> Vec<String> {
    let mut files: Vec<String> = (1..=backups)
        .rev()
        .filter_map(|n| std::fs::read_to_string(format!("{}.{n}", base.display())).ok())
        .collect();
    files.push(std::fs::read_to_string(base).unwrap_or_default());
    files
}

/// Program "fast" runs `seq 1 LAST` once (4 KiB writes, nobody
/// following), its files rotated at 2 MB and `backups` kept, and has
/// exited: the path of its stdout log.
async fn seq_run(dir: &Dir, sup: &Sup, last: u32, backups: u32) -> std::path::PathBuf {
    let mut spec = dir.sh("fast", &format!("seq 1 {last}"));
    spec.restart = RestartPolicy::Never;
    spec.log_max_bytes = 2_000_000;
    spec.log_backups = backups;
    sup.register(spec).await.unwrap();
    wait_state(sup, "fast", ProcessState::Exited, SECS_10).await;
    dir.join("logs/fast.out.log")
}

#[tokio::test]
async fn a_fast_stream_spliced_into_its_file_rotates_on_lines_and_its_tail_reads_back() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // 14.9 MB: bytes go from the pipe straight into the file, rotated
    // every 2 MB.
    let base = seq_run(&dir, &sup, 2_000_000, 20).await;
    let expected: String = (1..=2_000_000).map(|i| format!("{i}\n")).collect();
    eventually(SECS_10, "every line in the files", || {
        rotated_files(&base, 20).concat().len() == expected.len()
    })
    .await;
    let files = rotated_files(&base, 20);
    assert!(files.len() >= 7, "only {} files: no rotation", files.len());
    // A file passes its size by at most the rest of the line it ends with.
    for f in &files[..files.len() - 1] {
        assert!(
            f.len() <= 2_000_000 + 8 && f.ends_with('\n'),
            "a rotated file is over size or cuts a line: {} bytes, ends {:?}",
            f.len(),
            &f[f.len().saturating_sub(10)..]
        );
    }
    assert!(
        files.concat() == expected,
        "lines lost, doubled or reordered"
    );
    let health = sup.log_health("fast", LogStream::Stdout).unwrap();
    assert_eq!(
        (health.bytes_written, health.bytes_lost),
        (expected.len() as u64, 0)
    );
    // The tail: the last lines, whole, even across the last rotation.
    let want: Vec<String> = (1_990_001..=2_000_000).map(|i| i.to_string()).collect();
    assert_eq!(sup.logs("fast", LogStream::Stdout, 10_000).unwrap(), want);
    assert_eq!(
        sup.logs("fast", LogStream::Stdout, 2).unwrap(),
        ["1999999", "2000000"]
    );
}

#[tokio::test]
async fn a_fast_stream_whose_files_cannot_hold_its_tail_keeps_it_whole() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // 4.0 MB with no backup: the file ends with the last ~3 kB, fewer
    // lines than the tail the API promises (SPEC §3.2), so that tail
    // cannot be read back from the file.
    let base = seq_run(&dir, &sup, 587_728, 0).await;
    eventually(SECS_10, "the last line in the file", || {
        std::fs::read_to_string(&base).is_ok_and(|f| f.ends_with("\n587728\n"))
    })
    .await;
    let in_file = std::fs::read_to_string(&base).unwrap().lines().count();
    assert!(
        in_file < 1000,
        "{in_file} lines in the file after its rotation"
    );
    let want: Vec<String> = (577_729..=587_728).map(|i| i.to_string()).collect();
    let got = sup.logs("fast", LogStream::Stdout, 10_000).unwrap();
    assert!(
        got == want,
        "the tail has {} lines, from {:?} to {:?}",
        got.len(),
        got.first(),
        got.last()
    );
}

#[tokio::test]
async fn stdout_and_stderr_into_one_file_overwrite_nothing() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    // Both streams at full speed into one file, stderr followed (so its
    // bytes pass through zist, stdout's may not): each must append, never
    // write over the other's bytes.
    let mut spec = dir.sh(
        "both",
        "read go < go.fifo; seq -f 'e%.0f' 1 2000000 >&2 & seq -f 'o%.0f' 1 2000000; wait",
    );
    spec.workingdir = Some(dir.path().to_owned());
    nix::unistd::mkfifo(
        &dir.join("go.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    spec.restart = RestartPolicy::Never;
    let shared = dir.join("logs/both.log");
    spec.logfile = Some(shared.clone());
    spec.err_logfile = Some(shared.clone());
    sup.run(spec).await;
    let mut follower = sup.follow("both", LogStream::Stderr).unwrap();
    let reader = tokio::spawn(async move { while follower.next().await.is_some() {} });
    std::fs::write(dir.join("go.fifo"), "go\n").unwrap();
    wait_state(&sup, "both", ProcessState::Exited, SECS_10).await;
    reader.abort();
    let line_bytes: usize = (1..=2_000_000).map(|i: u32| i.to_string().len() + 2).sum();
    eventually(SECS_10, "both streams in the file", || {
        std::fs::metadata(&shared).is_ok_and(|m| m.len() as usize >= 2 * line_bytes)
    })
    .await;
    // Reads of two pipes end anywhere, so lines of the two may mix, as
    // in any file two streams append to; but every byte of both is there:
    // a write over the other's bytes would leave the file short.
    let text = std::fs::read(&shared).unwrap();
    assert_eq!(text.len(), 2 * line_bytes, "bytes overwritten or lost");
    let count = |b: u8| text.iter().filter(|&&c| c == b).count();
    assert_eq!(
        (count(b'o'), count(b'e'), count(b'\n')),
        (2_000_000, 2_000_000, 4_000_000)
    );
}

#[tokio::test]
async fn a_follower_that_joins_mid_line_gets_the_whole_line() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh(
        "halves",
        "printf 'first half, '; read go < go.fifo; printf 'second half\\nnext\\n'; sleep 300",
    );
    spec.workingdir = Some(dir.path().to_owned());
    nix::unistd::mkfifo(
        &dir.join("go.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    sup.run(spec).await;
    let out = dir.join("logs/halves.out.log");
    eventually(SECS_10, "the first half in the file", || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() == 12)
    })
    .await;
    let mut follower = sup.follow("halves", LogStream::Stdout).unwrap();
    std::fs::write(dir.join("go.fifo"), "go\n").unwrap();
    for want in ["first half, second half", "next"] {
        let got = tokio::time::timeout(SECS_10, follower.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Feed::Item(want.to_owned()));
    }
    assert_eq!(
        sup.logs("halves", LogStream::Stdout, 5).unwrap(),
        ["first half, second half", "next"]
    );
}

#[tokio::test]
async fn a_program_that_writes_nothing_leaves_no_log_file() {
    let dir = Dir::new();
    let sup = Sup::new(&dir);
    let mut spec = dir.sh("silent", "sleep 0.2");
    spec.restart = RestartPolicy::Never;
    sup.register(spec).await.unwrap();
    wait_state(&sup, "silent", ProcessState::Exited, SECS_10).await;
    // Both streams ended (their pumps saw end-of-file) without a byte.
    assert!(sup.logs("silent", LogStream::Stdout, 5).unwrap().is_empty());
    for stream in ["out", "err"] {
        let path = dir.join(&format!("logs/silent.{stream}.log"));
        assert!(!path.exists(), "{} was made for nothing", path.display());
    }
}
