//! Capture of a live process's output (docs/reference.md §8.4): its stdout
//! and stderr are pointed at pipes zist reads, while it runs.
//!
//! zist makes two FIFOs in a fresh folder, opens their read ends, and then,
//! as the process's tracer (`PTRACE_SEIZE` and `PTRACE_INTERRUPT`), makes
//! the process itself run a few system calls: map a page, open the FIFOs
//! for writing, `dup3` them onto descriptors 1 and 2, close the spares and
//! unmap the page. The system call instruction it jumps to is one of the
//! vDSO's (present in every process, never written to), so no code of the
//! process is changed, and its other threads run on untouched. A write of
//! the process lands either in the old file or in the pipe, never in both
//! and never nowhere. Its registers are put back as they were, with a
//! system call it was blocked in set to run again, and it is let go.
//!
//! Whatever fails, the process is left running as it was: the injected
//! calls are undone as far as they went, the registers restored, and the
//! tracer's thread ends (which detaches it, whatever state it is in).
//! Only the thread that attaches may trace, so a capture runs on a thread
//! of its own from start to end.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long the process may take to stop for the tracer.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// The read ends of the pipes the process now writes to, and how long it
/// was paused.
#[derive(Debug)]
pub(crate) struct Captured {
    pub stdout: OwnedFd,
    /// `None` when only stdout could be moved (said in `partial`).
    pub stderr: Option<OwnedFd>,
    pub paused: Duration,
    /// Why stderr was not captured, when it was not.
    pub partial: Option<String>,
}

/// Points `pid`'s stdout and stderr at new pipes; the error says why not,
/// for a person. `uid`/`gid` own the FIFOs, so that the process may open them.
pub(crate) fn capture(pid: i32, uid: u32, gid: u32) -> Result<Captured, String> {
    let (fifos, paths) = Fifos::make(pid, uid, gid)?;
    // The tracer must be one thread from attach to detach; when it ends,
    // the kernel lets the process go whatever happened.
    let traced = std::thread::Builder::new()
        .name("zist-capture".into())
        .spawn(move || inject(Pid::from_raw(pid), &paths))
        .map_err(|e| format!("cannot start the tracer thread: {e}"))?
        .join()
        .map_err(|_| "the tracer thread panicked".to_owned())??;
    let [stdout, stderr] = fifos.read_ends;
    Ok(Captured {
        stdout,
        stderr: traced.stderr_moved.then_some(stderr),
        paused: traced.paused,
        partial: traced.partial,
    })
}

/// Two FIFOs in a folder of their own, with their read ends open; the
/// folder is removed when this is dropped (the process holds what it opened).
struct Fifos {
    read_ends: [OwnedFd; 2],
    _folder: Folder,
}

/// A folder removed, with the FIFOs in it, when dropped.
struct Folder(PathBuf);

impl Folder {
    fn path(&self, stream: u8) -> PathBuf {
        self.0.join(stream.to_string())
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        for stream in [1, 2] {
            let _ = std::fs::remove_file(self.path(stream));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Fifos {
    fn make(pid: i32, uid: u32, gid: u32) -> Result<(Self, [PathBuf; 2]), String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!(
            "zist-capture.{}.{pid}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let folder = Folder(dir);
        let open = |stream: u8| -> Result<OwnedFd, String> {
            let path = folder.path(stream);
            nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
                .map_err(|e| format!("cannot create the FIFO {}: {e}", path.display()))?;
            // Owned by the process's user, who may then open it (no one else may).
            let _ = nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            );
            // Non-blocking: there is no writer yet.
            nix::fcntl::open(
                &path,
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("cannot open the FIFO {}: {e}", path.display()))
        };
        let read_ends = [open(1)?, open(2)?];
        // The process, maybe of another user, may pass through to its FIFOs only.
        let _ = std::fs::set_permissions(&folder.0, std::fs::Permissions::from_mode(0o711));
        let paths = [folder.path(1), folder.path(2)];
        Ok((
            Self {
                read_ends,
                _folder: folder,
            },
            paths,
        ))
    }
}

/// What the injected calls achieved.
struct Traced {
    paused: Duration,
    stderr_moved: bool,
    partial: Option<String>,
}

/// The registers of the architecture, as ptrace gives them.
type Regs = libc::user_regs_struct;

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::Regs;

    /// `syscall`.
    pub const INSTRUCTION: &[u8] = &[0x0f, 0x05];
    /// Any byte offset will do: the CPU decodes from where it jumps.
    pub const ALIGN: usize = 1;

    pub fn prepare(regs: &mut Regs, at: u64, nr: i64, args: [u64; 6]) {
        regs.rip = at;
        regs.rax = nr as u64;
        // Not in a system call: the kernel's restart logic leaves these alone.
        regs.orig_rax = u64::MAX;
        [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9] = args;
    }

    pub fn result(regs: &Regs) -> i64 {
        regs.rax as i64
    }

    /// The registers to put back: a system call the process was blocked in
    /// (interrupted by the tracer's stop) runs again, as the kernel itself
    /// would have arranged had no tracer stepped in.
    pub fn restored(saved: &Regs) -> Regs {
        let mut regs = *saved;
        let error = -(saved.rax as i64);
        if (saved.orig_rax as i64) >= 0 {
            match error {
                // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
                512..=514 => {
                    regs.rax = saved.orig_rax;
                    regs.rip -= 2;
                }
                // ERESTART_RESTARTBLOCK: the kernel's restart_syscall.
                516 => {
                    regs.rax = libc::SYS_restart_syscall as u64;
                    regs.rip -= 2;
                }
                _ => {}
            }
        }
        regs.orig_rax = u64::MAX;
        regs
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::Regs;

    /// `svc #0`.
    pub const INSTRUCTION: &[u8] = &[0x01, 0x00, 0x00, 0xd4];
    pub const ALIGN: usize = 4;

    pub fn prepare(regs: &mut Regs, at: u64, nr: i64, args: [u64; 6]) {
        regs.pc = at;
        regs.regs[8] = nr as u64;
        regs.regs[..6].copy_from_slice(&args);
    }

    pub fn result(regs: &Regs) -> i64 {
        regs.regs[0] as i64
    }

    /// On arm64 the kernel has already set an interrupted system call to
    /// run again when the tracer's stop happens (pc back on `svc`, x0 its
    /// first argument): the saved registers are right as they are.
    pub fn restored(saved: &Regs) -> Regs {
        *saved
    }
}

/// Attaches, injects, restores and detaches; runs on the tracer's thread.
fn inject(pid: Pid, paths: &[PathBuf; 2]) -> Result<Traced, String> {
    let syscall_at = find_instruction(pid)?;
    ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACESYSGOOD)
        .map_err(|e| format!("cannot trace it: {e}"))?;
    crate::reaper::claim(pid.as_raw());
    let result = traced(pid, syscall_at, paths);
    crate::reaper::release(pid.as_raw());
    result
}

/// The part of [`inject`] that runs while attached.
fn traced(pid: Pid, syscall_at: u64, paths: &[PathBuf; 2]) -> Result<Traced, String> {
    ptrace::interrupt(pid).map_err(|e| format!("cannot stop it: {e}"))?;
    let mut tracee = Tracee {
        pid,
        syscall_at,
        signals: Vec::new(),
    };
    tracee.wait_for_stop()?;
    let stopped = Instant::now();
    let saved = ptrace::getregs(pid).map_err(|e| format!("cannot read its registers: {e}"))?;
    let outcome = tracee.redirect(&saved, paths);
    let restored = ptrace::setregs(pid, arch::restored(&saved));
    let paused = stopped.elapsed();
    let first = tracee.signals.first().copied();
    let detached = ptrace::detach(pid, first);
    // Signals that arrived while it was stopped, beyond the one given back.
    for &signal in tracee.signals.iter().skip(1) {
        let _ = nix::sys::signal::kill(pid, signal);
    }
    restored.map_err(|e| format!("cannot restore its registers: {e}"))?;
    detached.map_err(|e| format!("cannot let it go: {e}"))?;
    let (stderr_moved, partial) = outcome?;
    Ok(Traced {
        paused,
        stderr_moved,
        partial,
    })
}

/// A stopped tracee.
struct Tracee {
    pid: Pid,
    syscall_at: u64,
    /// Signals that arrived while it was traced: given back when it is let go.
    signals: Vec<Signal>,
}

impl Tracee {
    /// Waits for the stop that `PTRACE_INTERRUPT` asked for.
    fn wait_for_stop(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::PtraceEvent(_, _, _)) => return Ok(()),
                Ok(WaitStatus::Stopped(_, signal)) => {
                    // A signal on its way in: keep it for later, and stop again.
                    self.keep(signal);
                    ptrace::cont(self.pid, None).map_err(|e| format!("cannot resume it: {e}"))?;
                    ptrace::interrupt(self.pid).map_err(|e| format!("cannot stop it: {e}"))?;
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                    return Err("it ended".into());
                }
                Ok(_) => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "it did not stop within {} ms (uninterruptible sleep?)",
                            STOP_WAIT.as_millis()
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(format!("cannot wait for it to stop: {e}")),
            }
        }
    }

    fn keep(&mut self, signal: Signal) {
        if signal != Signal::SIGSTOP && signal != Signal::SIGTRAP {
            self.signals.push(signal);
        }
    }

    /// Makes the process run system call `nr`; its result (negative: -errno).
    fn call(&mut self, saved: &Regs, nr: i64, args: [u64; 6]) -> Result<i64, String> {
        let mut regs = *saved;
        arch::prepare(&mut regs, self.syscall_at, nr, args);
        ptrace::setregs(self.pid, regs).map_err(|e| format!("cannot set its registers: {e}"))?;
        // Two stops: entering the call, and leaving it.
        for _ in 0..2 {
            ptrace::syscall(self.pid, None).map_err(|e| format!("cannot resume it: {e}"))?;
            loop {
                match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::PtraceSyscall(_)) => break,
                    Ok(WaitStatus::Stopped(_, signal)) => {
                        self.keep(signal);
                        ptrace::syscall(self.pid, None)
                            .map_err(|e| format!("cannot resume it: {e}"))?;
                    }
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                        return Err("it ended during the capture".into());
                    }
                    Ok(WaitStatus::PtraceEvent(..)) => {
                        ptrace::syscall(self.pid, None)
                            .map_err(|e| format!("cannot resume it: {e}"))?;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("cannot wait for it: {e}")),
                }
            }
        }
        let regs =
            ptrace::getregs(self.pid).map_err(|e| format!("cannot read its registers: {e}"))?;
        Ok(arch::result(&regs))
    }

    /// The redirection proper; whether stderr moved too, and why not.
    fn redirect(
        &mut self,
        saved: &Regs,
        paths: &[PathBuf; 2],
    ) -> Result<(bool, Option<String>), String> {
        let page = 4096u64;
        let mapped = self.call(
            saved,
            libc::SYS_mmap,
            [
                0,
                page,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        if (-4095..0).contains(&mapped) {
            return Err(format!("it could not map a page: {}", errno(mapped)));
        }
        let page_at = mapped as u64;
        let result = self.open_and_move(saved, page_at, paths);
        let _ = self.call(saved, libc::SYS_munmap, [page_at, page, 0, 0, 0, 0]);
        result
    }

    fn open_and_move(
        &mut self,
        saved: &Regs,
        page_at: u64,
        paths: &[PathBuf; 2],
    ) -> Result<(bool, Option<String>), String> {
        let mut at = page_at;
        let mut addresses = [0u64; 2];
        for (slot, path) in addresses.iter_mut().zip(paths) {
            let text = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| "a FIFO path holds a NUL byte".to_owned())?;
            write_memory(self.pid, at, text.as_bytes_with_nul())?;
            *slot = at;
            at += (text.as_bytes_with_nul().len() as u64).next_multiple_of(8);
        }
        let flags = (libc::O_WRONLY | libc::O_CLOEXEC) as u64;
        let cwd = libc::AT_FDCWD as i64 as u64;
        let out = self.call(saved, libc::SYS_openat, [cwd, addresses[0], flags, 0, 0, 0])?;
        if out < 0 {
            return Err(format!("it could not open zist's pipe: {}", errno(out)));
        }
        let err = self.call(saved, libc::SYS_openat, [cwd, addresses[1], flags, 0, 0, 0])?;
        if err < 0 {
            let _ = self.call(saved, libc::SYS_close, [out as u64, 0, 0, 0, 0, 0]);
            return Err(format!("it could not open zist's pipe: {}", errno(err)));
        }
        let moved_out = self.call(saved, libc::SYS_dup3, [out as u64, 1, 0, 0, 0, 0]);
        let moved_err = match moved_out {
            Ok(r) if r >= 0 => self.call(saved, libc::SYS_dup3, [err as u64, 2, 0, 0, 0, 0]),
            _ => Ok(-1),
        };
        let _ = self.call(saved, libc::SYS_close, [out as u64, 0, 0, 0, 0, 0]);
        let _ = self.call(saved, libc::SYS_close, [err as u64, 0, 0, 0, 0, 0]);
        match (moved_out?, moved_err?) {
            (o, _) if o < 0 => Err(format!("it could not move its stdout: {}", errno(o))),
            (_, e) if e < 0 => Ok((
                false,
                Some(format!("its stderr could not be moved: {}", errno(e))),
            )),
            _ => Ok((true, None)),
        }
    }
}

fn errno(result: i64) -> nix::errno::Errno {
    nix::errno::Errno::from_raw((-result) as i32)
}

/// Writes `bytes` into the process's memory at `at` (8-byte aligned).
fn write_memory(pid: Pid, at: u64, bytes: &[u8]) -> Result<(), String> {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let address = (at + 8 * i as u64) as ptrace::AddressType;
        ptrace::write(pid, address, i64::from_ne_bytes(word) as libc::c_long)
            .map_err(|e| format!("cannot write into its memory: {e}"))?;
    }
    Ok(())
}

/// The address of a system call instruction in the process's vDSO.
fn find_instruction(pid: Pid) -> Result<u64, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read its memory map: {e}"))?;
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with("[vdso]"))
        .find_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .ok_or("it has no vDSO to borrow a system call instruction from")?;
    let mut code = vec![0u8; (end - start) as usize];
    let mut mem = File::open(Path::new(&format!("/proc/{pid}/mem")))
        .map_err(|e| format!("cannot read its memory: {e}"))?;
    mem.seek(SeekFrom::Start(start))
        .and_then(|_| mem.read_exact(&mut code))
        .map_err(|e| format!("cannot read its vDSO: {e}"))?;
    let found = (0..code.len().saturating_sub(arch::INSTRUCTION.len()))
        .step_by(arch::ALIGN)
        .find(|&i| code[i..].starts_with(arch::INSTRUCTION))
        .ok_or("its vDSO holds no system call instruction")?;
    Ok(start + found as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Kills the child when the test ends, however it ends.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn read_available(fd: &OwnedFd, into: &mut Vec<u8>) {
        let mut file = File::from(fd.try_clone().expect("dup"));
        let mut buf = [0u8; 4096];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_printing_loop_moves_to_the_pipe_without_losing_or_repeating_a_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = dir.path().join("old.log");
        let file = File::create(&old).expect("log file");
        let child = Command::new("/bin/sh")
            .args([
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i; echo e$i >&2; sleep 0.005; done",
            ])
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("sh");
        let child = Reaped(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&old)
            .unwrap_or_default()
            .lines()
            .count()
            < 20
        {
            assert!(Instant::now() < deadline, "the loop never printed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = child.0.id() as i32;
        let captured = capture(pid, 0, 0).expect("capture");
        assert!(captured.partial.is_none(), "{:?}", captured.partial);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let stderr = captured.stderr.as_ref().expect("stderr moved");
        while out.iter().filter(|&&b| b == b'\n').count() < 30 {
            assert!(Instant::now() < deadline, "nothing came through the pipe");
            read_available(&captured.stdout, &mut out);
            read_available(stderr, &mut err);
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = std::fs::read_to_string(&old).expect("old file");
        let mut numbers: Vec<u64> = before
            .lines()
            .filter(|l| !l.starts_with('e'))
            .map(|l| l.parse().expect("a number"))
            .collect();
        let moved = String::from_utf8(out).expect("text");
        numbers.extend(moved.lines().map(|l| l.parse::<u64>().expect("a number")));
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "every number once, in order");
        assert!(
            String::from_utf8_lossy(&err)
                .lines()
                .all(|l| l.starts_with('e'))
        );
    }

    #[test]
    fn a_process_blocked_in_a_sleep_sleeps_on_and_ends_normally() {
        let child = Command::new("/bin/sh")
            .args(["-c", "sleep 0.4; echo after"])
            .stdout(Stdio::null())
            .spawn()
            .expect("sh");
        let mut child = Reaped(child);
        std::thread::sleep(Duration::from_millis(100));
        let captured = capture(child.0.id() as i32, 0, 0).expect("capture");
        let status = child.0.wait().expect("wait");
        assert!(status.success(), "{status:?}");
        let mut out = Vec::new();
        read_available(&captured.stdout, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "after\n");
    }

    #[test]
    fn a_process_that_does_not_exist_is_an_error_and_leaves_no_folder() {
        let pid = i32::MAX - 1;
        let err = capture(pid, 0, 0).expect_err("no such process");
        assert!(err.contains("memory map"), "{err}");
        let prefix = format!("zist-capture.{}.{pid}.", std::process::id());
        let left = std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        assert!(!left, "the FIFO folder is removed");
    }
}
