//! Handing memory that start-up used back to the system.
//!
//! glibc's allocator returns freed memory to the kernel only from the top
//! of each heap; what a burst frees in the middle (a config being read,
//! a thousand programs being spawned) stays resident, though unused, until
//! `malloc_trim` releases its pages. musl's allocator unmaps freed groups
//! by itself and has no such call.
//!
//! The code that starting ran (reading the config, spawning every program,
//! setting up both servers and TLS) stays mapped after it ran: the kernel
//! maps it in 64 KiB windows around each page touched, and those pages
//! count as the process's resident memory for as long as it lives.
//! [`release_start_up_pages`] lets go of them; what runs again afterwards
//! is mapped again from the page cache, where the pages stay.
#![allow(unsafe_code)]

/// Releases the pages of freed heap memory to the system (glibc's
/// `malloc_trim`); nothing on other C libraries. Cheap enough to call
/// after a burst of work: once start-up has settled, after a reload.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and touches only the allocator's
    // own arenas, each under its lock; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lets go of the pages of code and read-only data that have run so far:
/// every private mapping of the executable and of the C runtime every
/// Rust program on Linux is linked with (libc, libm, libgcc_s, the
/// loader) that is not writable and holds no page of its own (none
/// written since it was mapped). The pages stay in the kernel's page
/// cache, shared and reclaimable; touching one maps it again (a minor
/// fault). Call it once a burst of work has settled, as with
/// [`release_free_memory`]. Returns the bytes of mappings let go of.
pub fn release_start_up_pages() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    // A replaced executable reads as "PATH (deleted)"; its mappings as PATH.
    let exe = exe.to_string_lossy();
    let exe = exe.trim_end_matches(" (deleted)");
    let linked = |path: &str| {
        path == exe
            || path.rsplit('/').next().is_some_and(|name| {
                ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"]
                    .iter()
                    .any(|lib| name.starts_with(lib))
            })
    };
    let mut released = 0;
    let mut range: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            // A mapping's header: address, permissions, offset, device,
            // inode, then the path of a file's mapping.
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let read_only = perms.starts_with('r') && !perms.contains('w') && perms.ends_with('p');
            range = (read_only && linked(path)).then_some((start, end));
        } else if first == "Anonymous:"
            && let Some((start, end)) = range.take()
            && words.next() == Some("0")
        {
            // SAFETY: the range is a private, read-only mapping of a file
            // with no page of its own, so dropping its pages loses nothing:
            // a page touched again is read from the file, by this thread or
            // any other. It stays that mapping while this runs: the loader
            // mapped the executable and the libraries it was linked with
            // before `main`, and they are never unmapped (a linked library
            // is not unloaded) nor made writable again after relocation.
            let failed = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if failed == 0 {
                released += end - start;
            }
        }
    }
    released
}
