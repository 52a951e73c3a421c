//! The process's standard output as a console that never blocks its
//! writers (docs/reference.md §11.2).
//!
//! zistd's own log and, with the daemon key `Console`, every line of every
//! program go to stdout, which is often a pipe to `docker logs`, journald or
//! a terminal. Whoever reads it may stall; a supervisor that waited for it
//! would stop reading its programs' pipes, and the programs would block on
//! their next write. So writers only append to a bounded buffer, and one
//! thread of this process writes that buffer to stdout. When the buffer is
//! full, lines are dropped whole and counted, and the first line accepted
//! again is preceded by `[zist] N lines dropped: stdout was not read`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Bytes that may wait for stdout; past this, lines are dropped. About
/// 20 ms of a program writing 200 MB/s: a reader that keeps up but is not
/// scheduled for a few time slices loses nothing.
const BUFFER: usize = 4 << 20;
/// A buffer larger than this is given back once stdout has been idle for
/// [`IDLE`] (while lines flow, the two buffers are reused).
const KEEP: usize = 64 * 1024;
const IDLE: Duration = Duration::from_secs(1);
/// When woken for less than [`GATHER_BYTES`], the writer first lets lines
/// gather this long: a busy stream then costs a write (and a wake-up of
/// the reader) a millisecond, not one per chunk read from a program.
const GATHER: Duration = Duration::from_millis(1);
const GATHER_BYTES: usize = 256 * 1024;
/// The pipe size asked for when stdout is a pipe: a whole buffer goes in
/// one write, and the reader wakes once for it.
const PIPE: i32 = 1 << 20;
/// How long a writer waits before trying again a stdout that would block.
const RETRY: Duration = Duration::from_millis(10);

/// The console: this process's stdout, written by a thread of its own.
#[derive(Debug)]
pub struct Console {
    state: Mutex<State>,
    /// Wakes the writer when the buffer gets bytes; wakes [`Console::flush`]
    /// when it is written.
    changed: Condvar,
    /// Lines dropped since start.
    dropped_total: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Lines waiting for stdout, whole.
    waiting: Vec<u8>,
    /// The writer took bytes and has not finished writing them.
    writing: bool,
    /// Lines dropped since the last one accepted.
    dropped: u64,
    /// stdout is gone (closed, or an error other than a full pipe):
    /// everything is dropped from now on.
    gone: bool,
    /// The writer thread runs.
    started: bool,
}

/// The process's console.
pub fn stdout() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| Console {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        dropped_total: AtomicU64::new(0),
    })
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lines dropped since start because stdout was not read fast enough
    /// (or was gone).
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Queues `text` (whole lines), or drops it if stdout is behind.
    pub fn write(&'static self, text: &[u8]) {
        self.append(
            |buf| buf.extend_from_slice(text),
            || count_lines(text),
            false,
        );
    }

    /// Queues `text` (whole lines) even when stdout is behind: for the few
    /// lines that must not be lost, such as zistd's READY line.
    pub fn write_always(&'static self, text: &[u8]) {
        self.append(
            |buf| buf.extend_from_slice(text),
            || count_lines(text),
            true,
        );
    }

    /// Queues each line of `head` + `lines` (which ends with a newline) as
    /// `prefix` and the line, or drops them all if stdout is behind.
    pub(crate) fn prefixed(&'static self, prefix: &[u8], head: &[u8], lines: &[u8]) {
        self.append(
            |buf| {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', lines) {
                    buf.extend_from_slice(prefix);
                    if start == 0 {
                        buf.extend_from_slice(head);
                    }
                    buf.extend_from_slice(&lines[start..=end]);
                    start = end + 1;
                }
            },
            || count_lines(lines),
            false,
        );
    }

    fn append(
        &'static self,
        fill: impl FnOnce(&mut Vec<u8>),
        lines: impl FnOnce() -> u64,
        always: bool,
    ) {
        let mut state = self.lock();
        if state.gone || (!always && state.waiting.len() >= BUFFER) {
            let n = lines();
            state.dropped += n;
            self.dropped_total.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let was_empty = state.waiting.is_empty();
        if state.dropped > 0 {
            let notice = format!(
                "[zist] {} lines dropped: stdout was not read\n",
                std::mem::take(&mut state.dropped)
            );
            state.waiting.extend_from_slice(notice.as_bytes());
        }
        fill(&mut state.waiting);
        if !state.started {
            state.started = true;
            let spawned = std::thread::Builder::new()
                .name("zist-console".into())
                .stack_size(64 * 1024)
                .spawn(move || self.run());
            if let Err(e) = spawned {
                // No thread, no console: drop rather than block a writer.
                state.gone = true;
                state.waiting = Vec::new();
                drop(state);
                tracing::warn!("no console: cannot start its thread: {e}");
                return;
            }
        }
        if was_empty {
            self.changed.notify_all();
        }
    }

    /// Waits until everything queued is written, or `timeout` passed (a
    /// stalled reader must not hold up an exit).
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.gone && (state.writing || !state.waiting.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The writer thread: takes what waits and writes it to stdout.
    fn run(&self) {
        enlarge_stdout_pipe();
        let mut spare = Vec::new();
        loop {
            let mut batch = {
                let mut state = self.lock();
                while state.waiting.is_empty() {
                    state.writing = false;
                    self.changed.notify_all();
                    let large = spare.capacity() > KEEP || state.waiting.capacity() > KEEP;
                    if !large {
                        state = self
                            .changed
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    let (next, waited) = self
                        .changed
                        .wait_timeout(state, IDLE)
                        .unwrap_or_else(PoisonError::into_inner);
                    state = next;
                    if waited.timed_out() && state.waiting.is_empty() {
                        // Idle: large buffers go back to the allocator.
                        spare = Vec::new();
                        state.waiting = Vec::new();
                    }
                }
                state.writing = true;
                if state.waiting.len() < GATHER_BYTES {
                    drop(state);
                    std::thread::sleep(GATHER);
                    state = self.lock();
                }
                std::mem::replace(&mut state.waiting, std::mem::take(&mut spare))
            };
            if let Err(e) = write_out(&batch) {
                let mut state = self.lock();
                state.gone = true;
                let lost = count_lines(&batch) + count_lines(&state.waiting);
                state.waiting = Vec::new();
                state.writing = false;
                self.dropped_total.fetch_add(lost, Ordering::Relaxed);
                self.changed.notify_all();
                drop(state);
                // Said in the daemon log (its file and memory; not stdout).
                tracing::warn!("stdout is gone ({e}); console lines are dropped from now on");
                return;
            }
            batch.clear();
            spare = batch;
        }
    }
}

/// Asks for a larger pipe when stdout is one (best effort).
fn enlarge_stdout_pipe() {
    use nix::fcntl::{FcntlArg, fcntl};
    use std::os::fd::AsFd;
    let out = io::stdout();
    let fd = out.as_fd();
    let is_pipe =
        nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    if is_pipe && fcntl(fd, FcntlArg::F_GETPIPE_SZ).is_ok_and(|n| n < PIPE) {
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE));
    }
}

/// Writes all of `bytes` to stdout, waiting out a stdout that would block.
fn write_out(mut bytes: &[u8]) -> io::Result<()> {
    let out = io::stdout();
    let mut out = out.lock();
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(RETRY),
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

fn count_lines(text: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', text).count() as u64
}

/// One program stream's feed into the console: whole lines, each as
/// `NAME | line`.
#[derive(Debug)]
pub(crate) struct Feed {
    prefix: Box<[u8]>,
    /// The line in progress (lines of different programs never mix).
    partial: Vec<u8>,
}

impl Feed {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            prefix: format!("{name} | ").into_bytes().into_boxed_slice(),
            partial: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        match memchr::memrchr(b'\n', chunk) {
            None => self.partial.extend_from_slice(chunk),
            Some(last) => {
                let (whole, rest) = chunk.split_at(last + 1);
                stdout().prefixed(&self.prefix, &self.partial, whole);
                self.partial.clear();
                self.partial.extend_from_slice(rest);
            }
        }
        if self.partial.len() >= crate::logs::MAX_LINE {
            // A line this long goes out in pieces, as followers get it.
            self.finish();
        }
        if self.partial.capacity() > KEEP && self.partial.is_empty() {
            self.partial = Vec::new();
        }
    }

    /// The stream ended: its unfinished line goes out as a line.
    pub(crate) fn finish(&mut self) {
        if !self.partial.is_empty() {
            stdout().prefixed(&self.prefix, &self.partial, b"\n");
            self.partial.clear();
        }
    }
}
