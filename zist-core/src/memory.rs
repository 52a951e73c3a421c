//! Handing freed heap memory back to the system.
//!
//! glibc's allocator returns freed memory to the kernel only from the top
//! of each heap; what a burst frees in the middle (a config being read,
//! a thousand programs being spawned) stays resident, though unused, until
//! `malloc_trim` releases its pages. musl's allocator unmaps freed groups
//! by itself and has no such call.
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
