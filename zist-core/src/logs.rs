//! A program's output: the pipe pump, line framing, the in-memory tail, live
//! followers and the rotating log files.
//!
//! Every byte read from a child's pipe is written unchanged to its log file
//! (so invalid UTF-8 and binary output are kept exactly), then kept as read
//! in the in-memory tail (cut into lines only when asked) and, while someone
//! follows, cut into lines for the followers. A line longer than
//! [`MAX_LINE`] is cut into pieces, so memory stays bounded whatever the child
//! writes. Followers get lines through a broadcast channel: one that falls
//! behind sees a gap marker, and never slows the child. Write errors on the
//! log file (full or vanished disk) are counted and reported, and the pump
//! goes on reading, so the child never blocks on a full pipe.
//!
//! While nothing else needs the bytes (no follower, console or timestamps),
//! a pump splices them from the pipe into the file when there are many at
//! once, a backlog past a full read or a hot stream's timed read
//! (`RotatingFile::splice_in`), through a relay pipe so the writer is not
//! held up by the copy (`Relay`): no copy through zist's memory, and the
//! tail is the file's end, read back when asked.
//!
//! A pump reads on readiness, which for a program that writes each line
//! with its own system call means a wake-up, two reads and a file write per
//! line. Such a stream turns hot (many small reads in a short time): its
//! pipe is then taken off the poller, enlarged to 1 MiB, and read whole
//! every millisecond, until it calms down.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, oneshot};

/// Longest line kept whole; longer ones are cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes of recent lines kept in memory per stream.
pub const TAIL_BYTES: usize = 1 << 20;
/// Most lines kept in memory per stream.
pub const TAIL_LINES: usize = 10_000;
/// Lines of a stream given when the caller does not say how many.
pub const DEFAULT_LINES: usize = 100;
/// Lines buffered for each follower before it sees a gap.
pub const FOLLOW_BUFFER: usize = 4096;
const READ_SIZE: usize = 64 * 1024;
const SMALL_READ: usize = 4 * 1024;
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Reads smaller than this are gathered into one buffer in the tail.
const GATHER: usize = 4 * 1024;

/// The most recent output of one stream: at least the last [`TAIL_BYTES`]
/// bytes (at most one read more), kept as read and cut into lines only when
/// asked, so a chatty program costs the tail nothing per line. Lines longer
/// than [`MAX_LINE`] are cut into pieces, as for followers; at most
/// [`TAIL_LINES`] lines are given.
#[derive(Debug, Default)]
pub struct LogTail {
    /// Reads, oldest first; then `open`, where small reads are gathered.
    chunks: VecDeque<Bytes>,
    open: BytesMut,
    bytes: usize,
    /// Bytes since the last newline in the whole stream.
    line_len: usize,
    /// Length of the line the last newline ended.
    last_line_len: usize,
    /// The oldest bytes held start somewhere inside a line.
    cut_front: bool,
}

impl LogTail {
    /// Appends bytes as read from the program.
    pub fn push_raw(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if let Some(end) = memchr::memrchr(b'\n', &chunk) {
            self.last_line_len = match memchr::memrchr(b'\n', &chunk[..end]) {
                Some(before) => end - before - 1,
                None => self.line_len + end,
            };
            self.line_len = chunk.len() - end - 1;
        } else {
            self.line_len += chunk.len();
        }
        self.bytes += chunk.len();
        if chunk.len() < GATHER {
            if self.open.len() + chunk.len() > GATHER {
                self.seal();
            }
            self.open.extend_from_slice(&chunk);
        } else {
            self.seal();
            self.chunks.push_back(chunk);
        }
        while let Some(front) = self.chunks.front() {
            if self.bytes - front.len() < TAIL_BYTES {
                break;
            }
            self.bytes -= front.len();
            self.chunks.pop_front();
            self.cut_front = true;
        }
    }

    /// Appends a whole line (its newline is added).
    pub fn push(&mut self, line: Bytes) {
        let mut whole = BytesMut::with_capacity(line.len() + 1);
        whole.extend_from_slice(&line);
        whole.extend_from_slice(b"\n");
        self.push_raw(whole.freeze());
    }

    /// Puts `older` (the bytes just before everything held) in front.
    fn prepend(&mut self, older: Bytes) {
        let mut fresh = LogTail::default();
        fresh.push_raw(older);
        self.seal();
        for chunk in std::mem::take(&mut self.chunks) {
            fresh.push_raw(chunk);
        }
        *self = fresh;
    }

    /// Ends the unfinished last line (at the end of the stream).
    pub fn finish(&mut self) {
        if self.unfinished() > 0 {
            self.push_raw(Bytes::from_static(b"\n"));
        }
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.chunks.push_back(self.open.split().freeze());
        }
    }

    /// Bytes of the last line not yet given as a line or a full piece.
    fn unfinished(&self) -> usize {
        self.line_len % MAX_LINE
    }

    /// The last `n` lines (at most [`TAIL_LINES`]), oldest first, as lossy UTF-8.
    pub fn last(&self, n: usize) -> Vec<String> {
        let n = n.min(TAIL_LINES);
        if n == 0 {
            return Vec::new();
        }
        let parts: Vec<&[u8]> = self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.open[..]))
            .collect();
        // What is complete ends before the unfinished part of the last line.
        let mut skip_end = self.unfinished().min(self.bytes);
        let mut from = parts.len();
        let mut newlines = 0;
        let mut gathered = 0;
        // Whole parts from the back, until they hold more than n newlines.
        while from > 0 && newlines <= n {
            from -= 1;
            let part = parts[from];
            let usable = part.len().saturating_sub(skip_end);
            skip_end -= part.len() - usable;
            newlines += memchr::memchr_iter(b'\n', &part[..usable]).count();
            gathered += usable;
        }
        let mut region = Vec::with_capacity(gathered);
        for part in &parts[from..] {
            let room = gathered - region.len();
            region.extend_from_slice(&part[..part.len().min(room)]);
        }
        let from_ring_start = from == 0;
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut segments: Vec<&[u8]> = region.split(|&b| b == b'\n').collect();
        let current = segments.pop().unwrap_or_default();
        for (i, segment) in segments.iter().enumerate() {
            // The oldest segment may have lost its beginning, or be one of
            // the lines beyond what was asked: only whole lines count, but
            // for the last finished line, whose length is known, which
            // keeps its full pieces.
            if i == 0 && (!from_ring_start || self.cut_front) {
                if segments.len() == 1 && current.is_empty() && from_ring_start {
                    let lost = self.last_line_len.saturating_sub(segment.len());
                    let skip = (MAX_LINE - lost % MAX_LINE) % MAX_LINE;
                    lines.extend(segment[skip.min(segment.len())..].chunks(MAX_LINE));
                }
                continue;
            }
            if segment.is_empty() {
                lines.push(segment);
            }
            lines.extend(segment.chunks(MAX_LINE));
        }
        // The unfinished line's full pieces, counted back from its end.
        let starts_inside = segments.is_empty() && self.cut_front;
        let mut pieces: Vec<&[u8]> = current.rchunks(MAX_LINE).collect();
        pieces.reverse();
        if starts_inside && pieces.first().is_some_and(|p| p.len() < MAX_LINE) {
            pieces.remove(0);
        }
        lines.extend(pieces);
        let skip = lines.len().saturating_sub(n);
        lines[skip..]
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// The unfinished part of the last line (what a framer would hold).
    fn unfinished_bytes(&self) -> Vec<u8> {
        let mut want = self.unfinished().min(self.bytes);
        let mut out = Vec::with_capacity(want);
        let parts = self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.open[..]));
        let mut rev: Vec<&[u8]> = Vec::new();
        for part in parts.rev() {
            if want == 0 {
                break;
            }
            let take = part.len().min(want);
            rev.push(&part[part.len() - take..]);
            want -= take;
        }
        for piece in rev.iter().rev() {
            out.extend_from_slice(piece);
        }
        out
    }

    /// Number of lines held (at most [`TAIL_LINES`]).
    pub fn len(&self) -> usize {
        self.last(TAIL_LINES).len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineFramer {
    partial: BytesMut,
}

impl LineFramer {
    /// A framer in the middle of a line that began with `partial`.
    fn primed(partial: &[u8]) -> Self {
        Self {
            partial: BytesMut::from(partial),
        }
    }

    /// Feeds a chunk and calls `emit` with every line it completes (newline removed).
    pub fn feed(&mut self, mut chunk: Bytes, mut emit: impl FnMut(Bytes)) {
        while !chunk.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &chunk[..chunk.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    let head = chunk.split_to(i + 1);
                    let body = head.slice(..i);
                    if self.partial.is_empty() {
                        emit(body);
                    } else {
                        self.partial.extend_from_slice(&body);
                        emit(self.partial.split().freeze());
                    }
                }
                None if chunk.len() >= room => {
                    let head = chunk.split_to(room);
                    self.partial.extend_from_slice(&head);
                    emit(self.partial.split().freeze());
                }
                None => {
                    self.partial.extend_from_slice(&chunk);
                    chunk.clear();
                }
            }
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            // An idle program keeps no buffer.
            self.partial = BytesMut::new();
        }
    }

    /// Emits the unfinished last line, if any (at end of stream).
    pub fn finish(&mut self, mut emit: impl FnMut(Bytes)) {
        if !self.partial.is_empty() {
            emit(std::mem::take(&mut self.partial).freeze());
        }
    }
}

/// How logging to one file is going.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogHealth {
    /// Bytes written to log files.
    pub bytes_written: u64,
    /// Bytes that could not be written (they are still in the in-memory tail).
    pub bytes_lost: u64,
    /// Write or open errors seen.
    pub errors: u64,
    /// The most recent error.
    pub last_error: Option<String>,
}

/// A log file rotated by close, rename, reopen (never copy-truncate).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
    file: Option<File>,
    size: u64,
    failed_at: Option<Instant>,
    health: LogHealth,
    /// Output lost since the file last took a write, said in the file
    /// when writing resumes.
    loss: Option<Loss>,
    /// Counted in [`unopened_files`]: a live program will open this file.
    counted: bool,
    /// Opened without following a symlink (a file zist places itself, in LogDir).
    no_symlink: bool,
    /// The open file's entry among this process's open log files.
    inode: Option<Inode>,
    /// The open file appends (`O_APPEND`). Off once bytes are spliced in
    /// (splice refuses an appending file): each write then goes to the
    /// file's end found just before it, under the file's [`Inode`] lock.
    appending: bool,
    /// splice(2) into this file failed as unsupported: it is not tried again.
    no_splice: bool,
    /// The file ends inside a line; `None`: not known (bytes were spliced
    /// in, or the file was there before), read from the file when needed.
    ends_mid_line: Option<bool>,
}

/// Log files this process has open, by device and inode.
static OPEN_LOGS: Mutex<Vec<((u64, u64), Inode)>> = Mutex::new(Vec::new());

/// One log file open in this process, shared by the streams writing it
/// (stdout and stderr into one file): its lock is held by each write into
/// a file that does not append, and around each write of one that does,
/// so a write at the end found under it lands after every other.
type Inode = Arc<Mutex<()>>;

fn turn(inode: &Inode) -> MutexGuard<'_, ()> {
    inode.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Log files of live programs not opened yet (they open on first write).
static UNOPENED: AtomicU64 = AtomicU64::new(0);

/// How many log files live programs may still open: descriptors a spawn
/// must leave free besides its own.
pub(crate) fn unopened_files() -> u64 {
    UNOPENED.load(Ordering::Relaxed)
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        // A program forgotten while live no longer counts as one to open.
        self.uncount();
        self.close();
    }
}

impl RotatingFile {
    /// A file at `path`, opened on first write, rotated past `max_bytes` (0: never).
    pub fn new(path: PathBuf, max_bytes: u64, backups: u32) -> Self {
        Self {
            path,
            max_bytes,
            backups,
            file: None,
            size: 0,
            failed_at: None,
            health: LogHealth::default(),
            loss: None,
            counted: false,
            no_symlink: false,
            inode: None,
            appending: true,
            no_splice: false,
            ends_mid_line: None,
        }
    }

    /// Opens the file without following a symlink at its path: for files
    /// zist places in its LogDir, where a link planted by another user
    /// must not send a program's output (or zist's appends) elsewhere.
    pub fn no_symlinks(mut self) -> Self {
        self.no_symlink = true;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How writing has gone so far.
    pub fn health(&self) -> &LogHealth {
        &self.health
    }

    /// Writes `data`, rotating on line boundaries when the file passes its size.
    /// Errors are counted, never returned: the caller keeps reading the pipe.
    ///
    /// Output that could not be written is lost to the file, whole lines
    /// of it: a line cut by the error is taken back out of the file, and
    /// the file resumes with the next whole line, after one line that
    /// says what was lost: `[zist] N bytes lost: <reason>`.
    pub fn write(&mut self, mut data: &[u8]) {
        if self.loss.is_some() {
            match self.resume(data) {
                Some(rest) => data = rest,
                None => return,
            }
        }
        while !data.is_empty() {
            if self.file.is_none() && !self.open() {
                self.lose(0, data);
                return;
            }
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            let take = if self.max_bytes == 0 || data.len() <= room {
                data.len()
            } else if let Some(i) = memchr::memrchr(b'\n', &data[..room]) {
                i + 1
            } else if let Some(i) = memchr::memchr(b'\n', &data[..data.len().min(MAX_LINE)])
                .filter(|_| self.size > 0 && self.ends_mid_line())
            {
                // The file ends inside a line whose rest does not fit: it
                // is finished here, past the size, so no line is cut in
                // two (unless it is longer than MAX_LINE).
                i + 1
            } else if self.size > 0 {
                // The next line does not fit: start a new file for it. If
                // rotating fails, append here rather than lose the line.
                if self.rotate() {
                    continue;
                }
                data.len()
            } else {
                // One line longer than the whole file size: keep what we can whole.
                memchr::memrchr(b'\n', data).map_or(data.len(), |i| i + 1)
            };
            let Some(file) = self.file.as_mut() else {
                self.lose(0, data);
                return;
            };
            let inode = self.inode.clone();
            let guard = inode.as_ref().map(turn);
            let (written, error) = match self.appending {
                true => write_counted(file, &data[..take]),
                false => match io::Seek::seek(file, io::SeekFrom::End(0)) {
                    Ok(end) => {
                        self.size = end;
                        write_counted(file, &data[..take])
                    }
                    Err(e) => (0, Some(e)),
                },
            };
            drop(guard);
            self.size += written as u64;
            self.health.bytes_written += written as u64;
            if written > 0 {
                self.ends_mid_line = Some(data[written - 1] != b'\n');
            }
            if let Some(e) = error {
                // The start of a line cut here is lost with the rest of it.
                let taken_back = self.take_back_cut_line();
                self.health.bytes_written = self.health.bytes_written.saturating_sub(taken_back);
                self.fail(format!("cannot write {}: {e}", self.path.display()));
                self.lose(taken_back, &data[written..]);
                return;
            }
            data = &data[take..];
        }
    }

    /// Writing again after a loss: skips the rest of a line whose start
    /// was lost, and writes the line that says what was lost; what is
    /// left of `data` to write, or `None` if the file still takes nothing.
    fn resume<'d>(&mut self, data: &'d [u8]) -> Option<&'d [u8]> {
        let loss = self.loss.as_mut()?;
        let data = if loss.mid_line {
            let Some(end) = memchr::memchr(b'\n', data) else {
                self.lose(0, data);
                return None;
            };
            loss.bytes += end as u64 + 1;
            self.health.bytes_lost += end as u64 + 1;
            loss.mid_line = false;
            &data[end + 1..]
        } else {
            data
        };
        if self.file.is_none() && !self.open() {
            self.lose(0, data);
            return None;
        }
        let loss = self.loss.take()?;
        let notice = format!(
            "{}[zist] {} bytes lost: {}\n",
            if loss.cut_in_file { "\n" } else { "" },
            loss.bytes,
            loss.reason
        );
        let file = self.file.as_mut()?;
        let (written, error) = write_counted(file, notice.as_bytes());
        self.size += written as u64;
        if let Some(e) = error {
            // A notice cut short is taken back too; the loss waits.
            self.loss = Some(loss);
            self.take_back_cut_line();
            self.fail(format!("cannot write {}: {e}", self.path.display()));
            self.lose(0, data);
            return None;
        }
        tracing::info!(
            "{}: written again, after {} bytes were lost ({})",
            self.path.display(),
            loss.bytes,
            loss.reason
        );
        Some(data)
    }

    /// Truncates the file to its last whole line after a write that
    /// failed mid-line; the bytes taken back. If that cannot be done, the
    /// loss notes that the file ends inside a line.
    fn take_back_cut_line(&mut self) -> u64 {
        use std::os::unix::fs::FileExt;
        let Some(file) = self.file.as_ref() else {
            return 0;
        };
        let len = file.metadata().map_or(self.size, |m| m.len());
        let from = len.saturating_sub(MAX_LINE as u64);
        let mut end = vec![0; (len - from) as usize];
        let read = {
            open_read(&self.path, self.no_symlink).and_then(|f| f.read_exact_at(&mut end, from))
        };
        let cut = match (read, memchr::memrchr(b'\n', &end)) {
            (Ok(()), _) if end.last().is_none_or(|&b| b == b'\n') => return 0,
            (Ok(()), Some(i)) => (end.len() - i - 1) as u64,
            (Ok(()), None) if from == 0 => len,
            _ => 0,
        };
        if cut > 0 && file.set_len(len - cut).is_ok() {
            self.size = len - cut;
            self.ends_mid_line = Some(false);
            return cut;
        }
        let loss = self.loss.get_or_insert_with(Loss::default);
        loss.cut_in_file = true;
        0
    }

    /// Counts `taken_back` bytes removed from the file and `rest` as lost.
    fn lose(&mut self, taken_back: u64, rest: &[u8]) {
        let n = taken_back + rest.len() as u64;
        if n == 0 {
            return;
        }
        self.health.bytes_lost += n;
        let reason = self
            .health
            .last_error
            .clone()
            .unwrap_or_else(|| "the log file cannot be written".to_owned());
        let loss = self.loss.get_or_insert_with(Loss::default);
        loss.bytes += n;
        loss.reason = reason;
        loss.mid_line = match rest.last() {
            Some(&b) => b != b'\n',
            None => true,
        };
    }

    /// A second handle on the file, opened for appending (for a detach relay).
    pub fn append_handle(&mut self) -> io::Result<File> {
        if let Some(dir) = self.path.parent() {
            make_dir(dir)?;
        }
        open_append(&self.path, self.no_symlink)
    }

    fn fail(&mut self, message: String) {
        if self.health.errors == 0 || self.health.errors.is_power_of_two() {
            tracing::warn!(errors = self.health.errors + 1, "{message}");
        }
        self.health.errors += 1;
        self.health.last_error = Some(message);
        self.close();
        self.failed_at = Some(Instant::now());
    }

    /// Whether the file ends inside a line (read from its last byte when not known).
    fn ends_mid_line(&mut self) -> bool {
        use std::os::unix::fs::FileExt;
        if let Some(known) = self.ends_mid_line {
            return known;
        }
        let mut last = [b'\n'];
        let known = open_read(&self.path, self.no_symlink).is_ok_and(|f| {
            let len = f.metadata().map_or(0, |m| m.len());
            len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
        });
        self.ends_mid_line = Some(known);
        known
    }

    /// Counts the newly opened `file` among this process's open log files.
    fn register(&mut self, file: &File) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = file.metadata() else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        let mut open = OPEN_LOGS.lock().unwrap_or_else(PoisonError::into_inner);
        let inode = match open.iter().find(|(k, _)| *k == key) {
            Some((_, inode)) => inode.clone(),
            None => {
                let inode = Inode::default();
                open.push((key, inode.clone()));
                inode
            }
        };
        self.inode = Some(inode);
    }

    /// Closes the file (if open) and uncounts it.
    fn close(&mut self) {
        self.file = None;
        let Some(inode) = self.inode.take() else {
            return;
        };
        let mut open = OPEN_LOGS.lock().unwrap_or_else(PoisonError::into_inner);
        // The last stream to close it: the list's is the only other.
        if Arc::strong_count(&inode) == 2 {
            open.retain(|(_, other)| !Arc::ptr_eq(other, &inode));
        }
    }

    /// Moves bytes from a pipe straight into the file with splice(2): no
    /// copy through zist's memory. `step` splices up to the given length
    /// from the pipe into the file at its position, and says how much it
    /// moved (0 at the end of the stream). Steps run until `budget` bytes
    /// moved, the pipe is empty (`WouldBlock`) or the stream ends.
    ///
    /// Declined (`None`, nothing moved) when the bytes must pass through
    /// zist instead: the file is not open yet, is in a loss, is within
    /// [`MAX_LINE`] of its size (rotation cuts at a line, which needs the
    /// bytes: a burst stops that far before the size, so the line it may
    /// cut is finished by the copy path in the same file), or does not
    /// take splice. The burst holds the file's [`Inode`] lock and starts at
    /// the file's end: another stream writing the same file waits for it. A write error after some bytes moved ends the burst;
    /// the next one is declined and the copy path takes the loss as it
    /// always does (a cut line taken back, a notice when writing resumes).
    pub(crate) fn splice_in(
        &mut self,
        mut budget: usize,
        mut step: impl FnMut(&File, usize) -> io::Result<usize>,
    ) -> Option<Spliced> {
        // A file not open yet (a stream's first bytes, the first after a
        // rotation) is opened by the copy path, and only for bytes: a
        // stream that ends without writing leaves no file.
        if self.no_splice || self.loss.is_some() || self.file.is_none() {
            return None;
        }
        // A spliced stream's tail is read back from the file and its first
        // backup: they must hold the TAIL_BYTES the API promises (SPEC
        // §3.2), so small files without a backup keep the tail in memory.
        if self.max_bytes != 0 && (self.backups == 0 || self.max_bytes < TAIL_BYTES as u64) {
            return None;
        }
        if self.max_bytes != 0 {
            let room = self.max_bytes.saturating_sub(self.size);
            budget = budget.min(room.saturating_sub(MAX_LINE as u64) as usize);
            if budget == 0 {
                return None;
            }
        }
        let inode = self.inode.clone()?;
        let guard = turn(&inode);
        let file = self.file.as_ref()?;
        if self.appending {
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            let cleared = fcntl(file, FcntlArg::F_GETFL).and_then(|flags| {
                let flags = OFlag::from_bits_truncate(flags) - OFlag::O_APPEND;
                fcntl(file, FcntlArg::F_SETFL(flags))
            });
            if cleared.is_err() {
                self.no_splice = true;
                return None;
            }
            self.appending = false;
        }
        // Wherever the file ends now: another stream may have written it,
        // or it may have been truncated by hand.
        let Ok(end) = io::Seek::seek(&mut &*file, io::SeekFrom::End(0)) else {
            return None;
        };
        self.size = end;
        let mut moved = 0;
        let outcome = loop {
            if moved >= budget {
                break Spliced::Moved(moved);
            }
            let want = budget - moved;
            match step(file, want) {
                Ok(0) => break Spliced::Ended(moved),
                // Drained, and the writer trickles: what it adds now waits
                // for the next burst (splicing on would race it line by
                // line). A writer of big blocks is followed while it writes.
                Ok(n) if n < want && n < KEEP_SPLICING => break Spliced::Moved(moved + n),
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Spliced::Moved(moved),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The error is said (and counted) by the copy path, which
                // the next burst takes.
                Err(_) if moved > 0 => break Spliced::Moved(moved),
                Err(e) => {
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EXDEV)
                    ) {
                        self.no_splice = true;
                    }
                    return None;
                }
            }
        };
        drop(guard);
        let n = match outcome {
            Spliced::Moved(n) | Spliced::Ended(n) => n,
        };
        self.size += n as u64;
        self.health.bytes_written += n as u64;
        if n > 0 {
            self.ends_mid_line = None;
        }
        Some(outcome)
    }

    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            UNOPENED.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn open(&mut self) -> bool {
        if self.failed_at.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return false;
        }
        let opened = self
            .path
            .parent()
            .map_or(Ok(()), make_dir)
            .and_then(|()| open_append(&self.path, self.no_symlink))
            .and_then(|f| f.metadata().map(|m| (f, m.len())));
        match opened {
            Ok((f, len)) => {
                self.uncount();
                self.register(&f);
                self.file = Some(f);
                self.appending = true;
                self.ends_mid_line = (len == 0).then_some(false);
                self.size = len;
                self.failed_at = None;
                true
            }
            Err(e) => {
                self.fail(format!("cannot open {}: {e}", self.path.display()));
                false
            }
        }
    }

    /// Closes, renames and forgets the file; false when renaming failed.
    fn rotate(&mut self) -> bool {
        self.close();
        self.size = 0;
        let numbered = |n: u32| {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        let result = if self.backups == 0 {
            std::fs::remove_file(&self.path)
        } else {
            (1..self.backups)
                .rev()
                .map(|n| (numbered(n), numbered(n + 1)))
                .filter(|(from, _)| from.exists())
                .try_for_each(|(from, to)| std::fs::rename(from, to))
                .and_then(|()| std::fs::rename(&self.path, numbered(1)))
        };
        if let Err(e) = result {
            self.fail(format!("cannot rotate {}: {e}", self.path.display()));
            // Reopen the unrotated file at once rather than pause.
            self.failed_at = None;
            self.open();
            return false;
        }
        true
    }
}

/// A splice that drained the pipe but moved at least this much is followed
/// by another in the same burst: the writer writes in big blocks.
const KEEP_SPLICING: usize = 64 * 1024;

/// What a splice burst did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spliced {
    /// This many bytes went into the file; the pipe is empty or the budget spent.
    Moved(usize),
    /// This many bytes went into the file, then the stream ended.
    Ended(usize),
}

/// Output a log file did not get.
#[derive(Debug, Default)]
struct Loss {
    /// Bytes lost.
    bytes: u64,
    /// Why (the last error).
    reason: String,
    /// The lost bytes end inside a line: its rest is lost too.
    mid_line: bool,
    /// The file ends inside a line that could not be taken back.
    cut_in_file: bool,
}

/// Writes `data` to `file`; how many bytes were written, and the error
/// that stopped it before the end.
fn write_counted(file: &mut File, data: &[u8]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < data.len() {
        match file.write(&data[written..]) {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

/// Opens `path` for appending, created mode 0640; with `no_symlink`, a
/// symlink at `path` is an error (`O_NOFOLLOW`), never followed.
pub fn open_append(path: &Path, no_symlink: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).append(true).mode(0o640);
    if no_symlink {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Opens the log at `path` for reading; with `no_symlink`, a symlink at
/// `path` is an error, as for [`open_append`].
fn open_read(path: &Path, no_symlink: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.read(true);
    if no_symlink {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Makes `dir` and its missing parents without access for others (0750).
pub fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Everything zist keeps of one stream of one program.
#[derive(Debug)]
pub(crate) struct StreamLog {
    file: RotatingFile,
    tail: LogTail,
    /// Cuts lines for followers, only while there are some.
    framer: Option<LineFramer>,
    follow: Option<broadcast::Sender<Bytes>>,
    /// The log file's length when this supervisor took the stream over
    /// from an earlier one (upgrade, crash): the tail starts with the file's
    /// last lines before it, read when first asked for.
    resumed_at: Option<u64>,
    /// `LogTimestamps`: lines in the file start with their arrival time;
    /// `true` inside while the next byte starts a line.
    stamps: Option<bool>,
    /// `Console`: lines also go to the process's stdout as `NAME | line`.
    console: Option<crate::console::Feed>,
    /// Output went straight from the pipe into the file (splice): the
    /// file is the tail, read back from its end when asked, and `tail`
    /// holds nothing.
    tail_in_file: bool,
    /// The stream has ended (its last line, even unfinished, is whole).
    finished: bool,
}

/// A stream's log, shared by the pump that fills it and the API that reads it.
#[derive(Clone, Debug)]
pub(crate) struct SharedLog(Arc<Mutex<StreamLog>>);

impl SharedLog {
    pub(crate) fn new(file: RotatingFile) -> Self {
        Self(Arc::new(Mutex::new(StreamLog {
            file,
            tail: LogTail::default(),
            framer: None,
            follow: None,
            resumed_at: None,
            stamps: None,
            console: None,
            tail_in_file: false,
            finished: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, StreamLog> {
        // A panic while holding the lock leaves the log usable: every update
        // keeps the structures consistent between statements.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Each line written to the file starts with its arrival time
    /// (`LogTimestamps`, RFC 3339 UTC with milliseconds, and a space).
    pub(crate) fn with_timestamps(self) -> Self {
        self.lock().stamps = Some(true);
        self
    }

    /// Each line also goes to the console (stdout) as `name | line`.
    pub(crate) fn with_console(self, name: &str) -> Self {
        self.lock().console = Some(crate::console::Feed::new(name));
        self
    }

    /// Moves what the pipe holds straight into the log file (see
    /// [`RotatingFile::splice_in`]) when nothing else needs the bytes: no
    /// follower, no console, no timestamps. `None`: declined, read the
    /// pipe and [`SharedLog::ingest`] instead.
    pub(crate) fn splice_in(
        &self,
        budget: usize,
        step: impl FnMut(&File, usize) -> io::Result<usize>,
    ) -> Option<Spliced> {
        let mut log = self.lock();
        let followed = log
            .follow
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() > 0);
        if followed || log.stamps.is_some() || log.console.is_some() {
            return None;
        }
        let spliced = log.file.splice_in(budget, step)?;
        if matches!(spliced, Spliced::Moved(n) | Spliced::Ended(n) if n > 0) {
            if !log.tail_in_file {
                // Everything held is in the file, but bytes lost to it,
                // which the tail no longer shows.
                log.tail_in_file = true;
                log.tail = LogTail::default();
                log.resumed_at = None;
            }
            log.framer = None;
            log.finished = false;
        }
        Some(spliced)
    }

    /// Takes in the bytes a splice step could not put into the file (see
    /// [`splice_step`]): the copy path writes them, or counts them lost.
    fn unstick(&self, stuck: Vec<u8>) {
        if !stuck.is_empty() {
            self.ingest(Bytes::from(stuck));
        }
    }

    /// Takes in a chunk read from the pipe.
    pub(crate) fn ingest(&self, chunk: Bytes) {
        let mut log = self.lock();
        let StreamLog {
            file,
            tail,
            framer,
            follow,
            stamps,
            console,
            tail_in_file,
            resumed_at,
            finished,
        } = &mut *log;
        *finished = false;
        if let Some(console) = console {
            console.feed(&chunk);
        }
        let followed = follow.as_ref().filter(|tx| tx.receiver_count() > 0);
        if followed.is_some() && framer.is_none() {
            // A framer that starts now picks up the line in progress
            // (read before this chunk goes into the file).
            let unfinished = if *tail_in_file {
                let mut from_file = LogTail::default();
                from_file.push_raw(read_end(&file.path, file.no_symlink, MAX_LINE));
                from_file.unfinished_bytes()
            } else {
                tail.unfinished_bytes()
            };
            *framer = Some(LineFramer::primed(&unfinished));
        }
        let lost_before = file.health().bytes_lost;
        match stamps {
            None => file.write(&chunk),
            Some(line_start) => {
                let stamp = crate::wire::rfc3339_millis(std::time::SystemTime::now());
                file.write(&stamped(&chunk, stamp.as_bytes(), line_start));
            }
        }
        match (followed, framer.as_mut()) {
            (Some(tx), Some(framer)) => framer.feed(chunk.clone(), |line| {
                let _ = tx.send(line);
            }),
            _ => *framer = None,
        }
        if *tail_in_file {
            let lost = file.health().bytes_lost - lost_before;
            if lost == 0 {
                // In the file, which is the tail.
                return;
            }
            // The file lost output: the tail is kept in memory again,
            // after what the file holds.
            *tail_in_file = false;
            *resumed_at = Some(file.size);
            let keep = (lost as usize).min(chunk.len());
            tail.push_raw(chunk.slice(chunk.len() - keep..));
            return;
        }
        tail.push_raw(chunk);
    }

    /// Flushes the unfinished last line at the end of a stream.
    pub(crate) fn finish(&self) {
        let mut log = self.lock();
        let StreamLog {
            tail,
            framer,
            follow,
            console,
            ..
        } = &mut *log;
        if let Some(console) = console {
            console.finish();
        }
        if let (Some(framer), Some(tx)) = (framer.as_mut(), follow.as_ref()) {
            framer.finish(|line| {
                let _ = tx.send(line);
            });
        }
        *framer = None;
        tail.finish();
        log.finished = true;
    }

    pub(crate) fn last(&self, n: usize) -> Vec<String> {
        let mut log = self.lock();
        if log.tail_in_file {
            let mut tail = LogTail::default();
            tail.push_raw(read_end(&log.file.path, log.file.no_symlink, TAIL_BYTES));
            if log.finished {
                tail.finish();
            }
            return tail.last(n);
        }
        if let Some(at) = log.resumed_at.take() {
            let older = read_before(&log.file.path, log.file.no_symlink, at);
            log.tail.prepend(older);
        }
        log.tail.last(n)
    }

    /// This stream continues what an earlier supervisor wrote to the log
    /// file: the tail begins with that (read from the file when first asked).
    pub(crate) fn resumed(&self) {
        let mut log = self.lock();
        let len = std::fs::metadata(log.file.path()).map_or(0, |m| m.len());
        log.resumed_at = (len > 0).then_some(len);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        let mut log = self.lock();
        match &log.follow {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FOLLOW_BUFFER);
                log.follow = Some(tx);
                rx
            }
        }
    }

    pub(crate) fn health(&self) -> LogHealth {
        self.lock().file.health().clone()
    }

    /// Bytes written to the file and lost (what info shows; no error text copied).
    pub(crate) fn counts(&self) -> crate::wire::StreamCounts {
        let log = self.lock();
        let health = log.file.health();
        crate::wire::StreamCounts {
            written: health.bytes_written,
            lost: health.bytes_lost,
            file: None,
        }
    }

    /// The log file's path.
    pub(crate) fn file_path(&self) -> String {
        self.lock().file.path().display().to_string()
    }

    pub(crate) fn append_handle(&self) -> io::Result<File> {
        self.lock().file.append_handle()
    }

    /// Counts this stream's file as one a live program will open (see
    /// [`unopened_files`]), unless it is open already.
    pub(crate) fn expect_open(&self) {
        let mut log = self.lock();
        if log.file.file.is_none() && !log.file.counted {
            log.file.counted = true;
            UNOPENED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The program is no longer live: its file, if still unopened, will
    /// not be opened for it.
    pub(crate) fn no_longer_expected(&self) {
        self.lock().file.uncount();
    }
}

/// `chunk` with `stamp` and a space before each line it starts;
/// `line_start` says whether the chunk starts a line, and is left saying
/// whether the next one will.
fn stamped(chunk: &[u8], stamp: &[u8], line_start: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + (stamp.len() + 1) * 4);
    for piece in chunk.split_inclusive(|&b| b == b'\n') {
        if *line_start {
            out.extend_from_slice(stamp);
            out.push(b' ');
        }
        out.extend_from_slice(piece);
        *line_start = piece.ends_with(b"\n");
    }
    out
}

/// The last `max` bytes (at most) of the log at `path`, from its first
/// whole line on, continued from the end of `<path>.1` when the file holds
/// less than that (it was rotated lately).
fn read_end(path: &Path, no_symlink: bool, max: usize) -> Bytes {
    let read = |path: &Path, want: usize| -> Option<(Vec<u8>, bool)> {
        let file = open_read(path, no_symlink).ok()?;
        let len = file.metadata().ok()?.len();
        let (bytes, from) = read_ending(&file, len, want)?;
        Some((bytes, from == 0))
    };
    let Some((newest, whole)) = read(path, max) else {
        return Bytes::new();
    };
    let mut numbered = path.as_os_str().to_owned();
    numbered.push(".1");
    let (mut out, whole) = match (whole && newest.len() < max)
        .then(|| read(Path::new(&numbered), max - newest.len()))
        .flatten()
    {
        Some((mut older, older_whole)) => {
            older.extend_from_slice(&newest);
            (older, older_whole)
        }
        None => (newest, whole),
    };
    if !whole {
        // From the first whole line on; inside a line longer than all of
        // it, from a piece boundary counted back from the end (as the
        // pieces of an unfinished line are).
        let start = memchr::memchr(b'\n', &out).map_or(out.len() % MAX_LINE, |i| i + 1);
        out.drain(..start);
    }
    Bytes::from(out)
}

/// Up to [`TAIL_BYTES`] of the log file at `path` that end at byte `at`
/// (in `<path>.1` if the file was rotated since); with `no_symlink`, a
/// symlink in their place is not read ([`open_read`]).
fn read_before(path: &Path, no_symlink: bool, at: u64) -> Bytes {
    let mut numbered = path.as_os_str().to_owned();
    numbered.push(".1");
    for candidate in [path, Path::new(&numbered)] {
        let Ok(file) = open_read(candidate, no_symlink) else {
            continue;
        };
        if file.metadata().map_or(0, |m| m.len()) < at {
            continue;
        }
        if let Some((bytes, from)) = read_ending(&file, at, TAIL_BYTES) {
            // From the first whole line on.
            let start = if from > 0 {
                memchr::memchr(b'\n', &bytes).map_or(bytes.len(), |i| i + 1)
            } else {
                0
            };
            return Bytes::from(bytes).slice(start..);
        }
    }
    Bytes::new()
}

/// The `want` bytes (fewer at the start of the file) of `file` that end
/// at byte `end`, and where they begin.
fn read_ending(file: &File, end: u64, want: usize) -> Option<(Vec<u8>, u64)> {
    use std::os::unix::fs::FileExt;
    let from = end.saturating_sub(want as u64);
    let mut bytes = vec![0; (end - from) as usize];
    file.read_exact_at(&mut bytes, from).ok()?;
    Some((bytes, from))
}

/// How a burst of reads ended.
enum Burst {
    /// The pipe is empty for now; this many bytes were read.
    Read(usize),
    /// End of stream, or an error reading the pipe: the stream is finished.
    Ended,
}

/// Ends a stream whose pipe failed, saying why in zistd's log.
fn broken(log: &SharedLog, what: &str, e: &io::Error) {
    tracing::warn!("{what}: {e}");
    log.finish();
}

/// Most bytes one turn of a pump reads before it lets other tasks run (a
/// writer faster than the log file would otherwise keep it reading).
const TURN_BYTES: usize = 1 << 20;

/// Reads the pipe until it is empty (or [`TURN_BYTES`] were read), handing
/// the bytes to `log` as read.
fn read_burst(rx: &pipe::Receiver, log: &SharedLog, backlog: bool) -> Burst {
    if backlog {
        // The last burst was big: this one likely is too, so splice it
        // all rather than read its first 68 KiB.
        if let Some(burst) = splice_burst(rx, log, 0) {
            return burst;
        }
    }
    // A short read (a line, or end-of-file) lands on the stack; only a
    // full one gets a heap buffer, so idle and quiet programs hold and
    // churn no large buffer.
    let mut first = [0u8; SMALL_READ];
    let n = match rx.try_read(&mut first) {
        Ok(0) => {
            log.finish();
            return Burst::Ended;
        }
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Burst::Read(0);
        }
        Err(e) => {
            broken(log, "cannot read an output pipe", &e);
            return Burst::Ended;
        }
    };
    if n < SMALL_READ {
        log.ingest(Bytes::copy_from_slice(&first[..n]));
        return Burst::Read(n);
    }
    let mut total = n;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    buf.extend_from_slice(&first);
    loop {
        let before = buf.len();
        match rx.try_read_buf(&mut buf) {
            Ok(0) => {
                if !buf.is_empty() {
                    log.ingest(buf.split().freeze());
                }
                log.finish();
                return Burst::Ended;
            }
            Ok(_) => {
                total += buf.len() - before;
                if buf.capacity() == buf.len() {
                    log.ingest(take_chunk(&mut buf));
                    if total >= TURN_BYTES {
                        return Burst::Read(total);
                    }
                    // A full buffer: the pipe holds a backlog, big enough
                    // to splice the rest of it into the file. (Splicing
                    // each wake's few KiB costs more than reading them.)
                    if let Some(burst) = splice_burst(rx, log, total) {
                        return burst;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                broken(log, "cannot read an output pipe", &e);
                return Burst::Ended;
            }
        }
    }
    if !buf.is_empty() {
        log.ingest(take_chunk(&mut buf));
    }
    Burst::Read(total)
}

/// The rest of a burst that has read `read` bytes, spliced from the
/// registered pipe into the file (readiness is cleared when it is
/// empty); `None` when the log declines, and the pipe is to be read.
fn splice_burst(rx: &pipe::Receiver, log: &SharedLog, read: usize) -> Option<Burst> {
    let mut stuck = Vec::new();
    let spliced = log.splice_in(TURN_BYTES - read, |file, len| {
        rx.try_io(|| splice_step(rx, file, len, &mut stuck))
    });
    log.unstick(stuck);
    Some(match spliced? {
        Spliced::Moved(n) => Burst::Read(read + n),
        Spliced::Ended(_) => {
            log.finish();
            Burst::Ended
        }
    })
}

/// One step of up to `len` bytes from `pipe` into `file` at its position,
/// through this thread's [`Relay`] (straight, when there is none).
///
/// Bytes the relay took from the pipe but could not put into the file (a
/// write error) are read back into `stuck`, for the copy path to write or
/// count as lost ([`SharedLog::unstick`]); the step then says how much did
/// go into the file, or the error when nothing did, and each later step
/// fails, so nothing from the pipe overtakes them.
fn splice_step(
    pipe: impl std::os::fd::AsFd,
    file: &File,
    len: usize,
    stuck: &mut Vec<u8>,
) -> io::Result<usize> {
    if !stuck.is_empty() {
        return Err(io::Error::other("bytes wait in the relay"));
    }
    RELAY.with_borrow_mut(|relay| {
        if relay.is_none() {
            *relay = Relay::new();
        }
        let Some(relay) = relay else {
            return splice_once(pipe, file, len);
        };
        let taken = splice_once(pipe, &relay.sink, len)?;
        let mut put = 0;
        while put < taken {
            match splice_once(&relay.source, file, taken - put) {
                Ok(0) => {
                    relay.take_back(taken - put, stuck);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => put += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    relay.take_back(taken - put, stuck);
                    return if put > 0 { Ok(put) } else { Err(e) };
                }
            }
        }
        Ok(taken)
    })
}

/// One splice(2) of up to `len` bytes from `from` to `to`, without waiting
/// on a pipe.
fn splice_once(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    use nix::fcntl::{SpliceFFlags, splice};
    splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
    )
    .map_err(io::Error::from)
}

thread_local! {
    /// This thread's relay, made when it first splices; `None` after
    /// that failed (the thread then splices straight).
    static RELAY: std::cell::RefCell<Option<Relay>> = const { std::cell::RefCell::new(None) };
}

/// A pipe between a program's pipe and its log file, empty between steps.
///
/// splice(2) from a pipe into a file copies the bytes while it holds the
/// pipe's lock, and the writer's own copy into the pipe takes that lock
/// too: the two copies take turns. Splicing from pipe to pipe moves page
/// references without copying, so a step first empties the program's pipe
/// into the relay, and the copy into the file then runs while the writer
/// fills its pipe again. (64 KiB writes, one writer, this machine: 1.7 GB/s
/// straight, 3.0–3.5 GB/s through a relay, at half the CPU per GB.)
struct Relay {
    /// The read end.
    source: std::os::fd::OwnedFd,
    /// The write end.
    sink: std::os::fd::OwnedFd,
}

impl Relay {
    fn new() -> Option<Self> {
        use nix::fcntl::OFlag;
        let (source, sink) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
        // A whole turn in one step; refused (the user's pipe pages are
        // spent), a step moves what the default 64 KiB holds.
        let _ = enlarge_pipe(&source);
        Some(Self { source, sink })
    }

    /// Reads the `left` bytes the file did not take into `stuck`, so the
    /// relay is empty again.
    fn take_back(&self, left: usize, stuck: &mut Vec<u8>) {
        let start = stuck.len();
        stuck.resize(start + left, 0);
        let mut got = 0;
        while got < left {
            match nix::unistd::read(&self.source, &mut stuck[start + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        stuck.truncate(start + got);
    }
}

/// A burst smaller than this counts toward making a stream hot.
const HOT_SMALL: usize = 16 * 1024;
/// A stream is hot after this many small bursts within [`HOT_WINDOW`]
/// (3 200 wake-ups a second).
const HOT_BURSTS: u32 = 32;
const HOT_WINDOW: Duration = Duration::from_millis(10);
/// How long a hot pump lets its pipe fill between reads.
const HOT_PAUSE: Duration = Duration::from_millis(1);
/// The pipe size a hot pump asks for: what a writer of 500 MB/s puts in
/// it during a pause (a pause is at most 2 ms with tokio's timer).
const HOT_PIPE: usize = 1 << 20;
/// A pipe this close to [`HOT_PIPE`] is full: small writes leave the end
/// of some pages unused.
const PIPE_SLACK: usize = HOT_PIPE / 16;
/// A pause that gathered less than this means the stream calmed down (a
/// few lines a millisecond at most: few enough to read on readiness).
const HOT_COOLED: usize = 256;
/// A hot spell ends after this many pauses in a row filled the pipe.
const OUTRUN_PAUSES: u32 = 3;
/// How long a stream whose writer outran a hot spell is followed on
/// readiness before it may turn hot again.
const OUTRUN_RESPITE: Duration = Duration::from_secs(1);

/// Tells whether a stream is hot: many small bursts in a short time, as a
/// program that writes each line with its own system call makes.
#[derive(Debug)]
struct Heat {
    since: Instant,
    small: u32,
}

impl Heat {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            small: 0,
        }
    }

    /// A stream whose writer outran a hot spell's pauses: it is not made
    /// hot again for [`OUTRUN_RESPITE`].
    fn outrun() -> Self {
        Self {
            since: Instant::now() + OUTRUN_RESPITE,
            small: 0,
        }
    }

    /// Counts a burst of `n` bytes; true once the stream is hot.
    fn hot_after(&mut self, n: usize) -> bool {
        if n >= HOT_SMALL {
            // The pump is behind and reads whole pipes: already cheap.
            self.small = 0;
            return false;
        }
        let now = Instant::now();
        if now < self.since {
            return false;
        }
        if now.duration_since(self.since) > HOT_WINDOW {
            self.since = now;
            self.small = 0;
        }
        self.small += 1;
        self.small >= HOT_BURSTS
    }
}

/// How a hot spell of a pump ended.
enum Hot {
    /// The stream calmed down: the pipe, registered for readiness again.
    Cooled(pipe::Receiver),
    /// Detach asked for the pipe.
    HandedOff(pipe::Receiver),
    /// The pipe could not be enlarged: the pump must not pause for it.
    Unpausable(pipe::Receiver),
    /// The writer filled the enlarged pipe within a pause: pausing would
    /// hold it up. The pipe, registered for readiness again.
    Outrun(pipe::Receiver),
    /// End of stream, or an error: the stream is finished (the pipe, if still held).
    Ended(Option<std::os::fd::OwnedFd>),
}

/// Reads a hot stream on a timer: the pipe is taken off the readiness
/// poller (a registered pipe wakes zist on every write) and enlarged, then
/// read whole every [`HOT_PAUSE`], so a program that writes each line with
/// its own system call costs a few reads and one file write a millisecond,
/// not a wake-up, two reads and a file write per line. Lines reach the file
/// and followers at most a couple of milliseconds later. A pause that
/// gathered half a pipe is not repeated (the pipe is read again at once), so
/// the writer never waits on a full pipe unless zist itself cannot keep up.
async fn hot_spell(
    rx: pipe::Receiver,
    log: &SharedLog,
    handoff: &mut oneshot::Receiver<()>,
) -> Hot {
    let fd = match rx.into_nonblocking_fd() {
        Ok(fd) => fd,
        Err(e) => {
            broken(log, "cannot take an output pipe off the poller", &e);
            return Hot::Ended(None);
        }
    };
    let enlarged = enlarge_pipe(&fd);
    let back = |fd: std::os::fd::OwnedFd, ok: fn(pipe::Receiver) -> Hot| {
        if let Some(size) = enlarged {
            // Gives back the pipe memory that counts against the user's limit.
            shrink_pipe(&fd, size);
        }
        match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => ok(rx),
            Err(e) => {
                broken(log, "cannot watch an output pipe again", &e);
                Hot::Ended(None)
            }
        }
    };
    if enlarged.is_none() {
        return back(fd, Hot::Unpausable);
    }
    let mut file = File::from(fd);
    // Zeroed once per spell, when first read into; each read's bytes are copied out.
    let mut buf = Vec::new();
    let mut pause = true;
    // Pauses in a row that filled the pipe.
    let mut full = 0;
    loop {
        tokio::select! {
            biased;
            _ = &mut *handoff => return back(file.into(), Hot::HandedOff),
            () = tokio::time::sleep(HOT_PAUSE), if pause => {}
            () = tokio::task::yield_now(), if !pause => {}
        }
        // What the pause gathered, before the splice below follows a
        // writer that goes on writing while the bytes go into the file.
        let gathered = if pause {
            rustix::io::ioctl_fionread(&file).map_or(0, |n| n as usize)
        } else {
            0
        };
        let mut burst = 0;
        let mut stuck = Vec::new();
        let spliced = log.splice_in(TURN_BYTES, |to, len| {
            splice_step(&file, to, len, &mut stuck)
        });
        log.unstick(stuck);
        match spliced {
            Some(Spliced::Ended(_)) => {
                log.finish();
                return Hot::Ended(Some(file.into()));
            }
            Some(Spliced::Moved(n)) => burst = n,
            None => {}
        }
        // Spliced: the pipe is empty, or a turn's worth moved.
        while spliced.is_none() {
            if buf.is_empty() {
                buf = vec![0u8; READ_SIZE];
            }
            match io::Read::read(&mut file, &mut buf) {
                Ok(0) => {
                    log.finish();
                    return Hot::Ended(Some(file.into()));
                }
                Ok(n) => {
                    burst += n;
                    log.ingest(Bytes::copy_from_slice(&buf[..n]));
                    if n < buf.len() || burst >= TURN_BYTES {
                        // Drained (or a turn's worth read): what the writer
                        // adds now waits for the next pause (reading on
                        // would race it line by line).
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    broken(log, "cannot read an output pipe", &e);
                    return Hot::Ended(Some(file.into()));
                }
            }
        }
        // Only a full pause tells: right after a big burst the writer
        // may still be waking from a full pipe.
        if pause && burst < HOT_COOLED {
            return back(file.into(), Hot::Cooled);
        }
        // The writer filled the whole pipe within each of the last pauses
        // (500 MB/s and up), so it waited on it through the rest of them,
        // and would through every one: it is followed on readiness instead,
        // where its bursts are big and spliced. (One full pipe alone may be
        // zist held up, by the page cache's writeback say.)
        if pause {
            full = if gathered + PIPE_SLACK >= HOT_PIPE {
                full + 1
            } else {
                0
            };
            if full == OUTRUN_PAUSES {
                return back(file.into(), Hot::Outrun);
            }
        }
        pause = burst < HOT_PIPE / 2;
    }
}

/// After a burst this large, the next is spliced from its first byte.
const SPLICE_FIRST: usize = 256 * 1024;

/// A burst this large found the pipe full (the default pipe holds 64 KiB).
const BULK: usize = 64 * 1024;

/// A stream that fills its pipe gets a pipe of [`HOT_PIPE`], so the writer
/// goes on writing while zist moves the bytes (with the default 64 KiB,
/// writer and zist take turns, a wake-up each way per 64 KiB); the pipe
/// gets its size back after a small burst. `enlarged` is the size before,
/// while enlarged; the new value returned.
fn bulk_pipe(rx: &pipe::Receiver, burst: usize, enlarged: Option<i32>) -> Option<i32> {
    match enlarged {
        None if burst >= BULK => enlarge_pipe(rx),
        // A wake that found nothing (readiness already taken) says nothing.
        Some(size) if burst > 0 && burst < SMALL_READ => (!shrink_pipe(rx, size)).then_some(size),
        other => other,
    }
}

/// Enlarges `pipe` to [`HOT_PIPE`]: the size it had, when it now holds
/// that much.
fn enlarge_pipe(pipe: impl std::os::fd::AsFd) -> Option<i32> {
    use nix::fcntl::{FcntlArg, fcntl};
    let size = fcntl(&pipe, FcntlArg::F_GETPIPE_SZ).ok()?;
    fcntl(&pipe, FcntlArg::F_SETPIPE_SZ(HOT_PIPE as i32))
        .is_ok_and(|now| now as usize >= HOT_PIPE)
        .then_some(size)
}

/// Gives `pipe` its `size` back; false when refused (more than that is
/// unread: then it stays as it is).
fn shrink_pipe(pipe: impl std::os::fd::AsFd, size: i32) -> bool {
    use nix::fcntl::{FcntlArg, fcntl};
    fcntl(&pipe, FcntlArg::F_SETPIPE_SZ(size)).is_ok()
}

/// How a pump ended.
#[derive(Debug)]
pub(crate) enum PumpEnd {
    /// Detach asked for the pipe: here it is, unread from here on.
    HandedOff(pipe::Receiver),
    /// The stream is finished. The pipe is kept (not closed) until this is
    /// dropped, so its descriptor number stays the pipe's while the child's
    /// owner may still name it.
    Ended(#[allow(dead_code)] Option<std::os::fd::OwnedFd>),
}

/// Reads a pipe until end-of-file, or until `handoff` fires.
pub(crate) async fn pump(
    mut rx: pipe::Receiver,
    log: SharedLog,
    mut handoff: oneshot::Receiver<()>,
) -> PumpEnd {
    let mut heat = Heat::new();
    let mut pausable = true;
    // The pipe's size before it was enlarged for a stream of full pipes.
    let mut enlarged: Option<i32> = None;
    // The last burst's size.
    let mut last = 0;
    loop {
        let burst = tokio::select! {
            biased;
            _ = &mut handoff => return PumpEnd::HandedOff(rx),
            ready = rx.readable() => match ready {
                Ok(()) => read_burst(&rx, &log, last >= SPLICE_FIRST),
                Err(e) => {
                    broken(&log, "cannot wait on an output pipe", &e);
                    Burst::Ended
                }
            },
        };
        if let Burst::Read(n) = burst {
            enlarged = bulk_pipe(&rx, n, enlarged);
            last = n;
        }
        match burst {
            Burst::Ended => return PumpEnd::Ended(rx.into_nonblocking_fd().ok()),
            Burst::Read(n) if pausable && heat.hot_after(n) => {
                // Boxed: only hot pumps pay for the timer and the buffer.
                match Box::pin(hot_spell(rx, &log, &mut handoff)).await {
                    Hot::Cooled(again) => rx = again,
                    Hot::Outrun(again) => {
                        rx = again;
                        heat = Heat::outrun();
                        // The pipe is likely full again: splice it first.
                        last = SPLICE_FIRST;
                        continue;
                    }
                    Hot::Unpausable(again) => {
                        rx = again;
                        pausable = false;
                    }
                    Hot::HandedOff(rx) => return PumpEnd::HandedOff(rx),
                    Hot::Ended(fd) => return PumpEnd::Ended(fd),
                }
                heat = Heat::new();
            }
            Burst::Read(_) => {}
        }
    }
}

/// Takes the filled part of `buf` as a chunk whose memory is not much larger than its data.
fn take_chunk(buf: &mut BytesMut) -> Bytes {
    if buf.len() >= READ_SIZE / 2 {
        let chunk = buf.split().freeze();
        buf.reserve(READ_SIZE);
        chunk
    } else {
        let chunk = Bytes::copy_from_slice(buf);
        buf.clear();
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut framer = LineFramer::default();
        let mut out = Vec::new();
        for c in chunks {
            framer.feed(Bytes::copy_from_slice(c), |l| out.push(l.to_vec()));
        }
        framer.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_joined_across_chunks_and_cut_when_too_long() {
        assert_eq!(
            frame(&[b"a\nb", b"c\n", b"d"]),
            vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]
        );
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = frame(&[&long[..100], &long[100..]]);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 10]
        );
        assert_eq!(frame(&[b"\n\n"]), vec![Vec::<u8>::new(), Vec::new()]);
    }

    #[test]
    fn the_tail_is_bounded_by_bytes_and_lines() {
        let mut tail = LogTail::default();
        for i in 0..TAIL_LINES + 5 {
            tail.push(Bytes::from(i.to_string()));
        }
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last(1), vec![(TAIL_LINES + 4).to_string()]);
        let mut tail = LogTail::default();
        for _ in 0..100 {
            tail.push(Bytes::from(vec![b'y'; MAX_LINE]));
        }
        assert!(tail.bytes <= TAIL_BYTES + MAX_LINE + 1, "{}", tail.bytes);
        // The oldest line held lost its start: only whole ones are given.
        assert!((15..=16).contains(&tail.len()), "{}", tail.len());
        assert!(tail.last(100).iter().all(|l| l.len() == MAX_LINE));
    }

    #[test]
    fn the_tail_cuts_lines_as_a_framer_does_whatever_the_reads() {
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| {
                let mut line = format!("line {i} ").into_bytes();
                line.resize(line.len() + (i * 37) % 200, b'.');
                line.push(b'\n');
                line
            })
            .chain(vec![b'z'; MAX_LINE * 2 + 5])
            .collect();
        let mut framed = Vec::new();
        let mut framer = LineFramer::default();
        framer.feed(Bytes::from(text.clone()), |l| framed.push(l));
        for read in [1, 7, 100, 4095, 4096, 70_000] {
            let mut tail = LogTail::default();
            for piece in text.chunks(read) {
                tail.push_raw(Bytes::copy_from_slice(piece));
            }
            let want: Vec<String> = framed[framed.len() - 500..]
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            assert_eq!(tail.last(500), want, "reads of {read}");
            // The 5 unfinished bytes are no line yet; the end of the stream makes them one.
            tail.finish();
            assert_eq!(tail.last(1), vec!["zzzzz".to_owned()], "reads of {read}");
        }
    }

    #[test]
    fn a_framer_primed_mid_line_gives_whole_lines() {
        let mut tail = LogTail::default();
        tail.push_raw(Bytes::from_static(b"one\ntw"));
        let mut framer = LineFramer::primed(&tail.unfinished_bytes());
        let mut out = Vec::new();
        framer.feed(Bytes::from_static(b"o\nthree\n"), |l| out.push(l));
        assert_eq!(
            out,
            [Bytes::from_static(b"two"), Bytes::from_static(b"three")]
        );
    }

    #[test]
    fn invalid_utf8_is_lossy_in_the_tail() {
        let mut tail = LogTail::default();
        tail.push(Bytes::from_static(b"ok \xff\xfe"));
        assert_eq!(tail.last(1), vec!["ok \u{fffd}\u{fffd}".to_owned()]);
    }

    #[test]
    fn rotation_keeps_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut file = RotatingFile::new(path.clone(), 100, 3);
        let mut written = Vec::new();
        for i in 0..60 {
            let line = format!("line {i:04}\n");
            written.extend_from_slice(line.as_bytes());
            file.write(line.as_bytes());
        }
        let mut read = Vec::new();
        for n in (1..=3).rev() {
            let p = dir.path().join(format!("out.log.{n}"));
            let text = std::fs::read(&p).unwrap();
            assert!(text.len() <= 100 && text.ends_with(b"\n"), "{p:?}");
            read.extend(text);
        }
        read.extend(std::fs::read(&path).unwrap());
        assert!(!dir.path().join("out.log.4").exists());
        // Only the newest files are kept; what is kept is the end of the stream, unchanged.
        assert!(
            written.ends_with(&read),
            "rotated files do not end the stream"
        );
        assert_eq!(file.health().errors, 0);
    }

    #[test]
    fn an_unwritable_log_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let mut file = RotatingFile::new(blocker.join("out.log"), 0, 0);
        file.write(b"hello\n");
        assert_eq!(file.health().errors, 1);
        assert_eq!(file.health().bytes_lost, 6);
        assert!(
            file.health()
                .last_error
                .as_deref()
                .unwrap()
                .contains("cannot open")
        );
    }
}
