//! The allocator setting training wants, for binaries to apply at start-up.
//!
//! A training step allocates and frees the same few dozen activation-sized buffers (megabytes
//! each) every batch. glibc's malloc serves blocks that large with fresh `mmap`s and hands freed
//! memory back to the kernel, so every step pays a page fault per 4 KiB it touches again: on the
//! VGG-style fixture with BatchNorm that was a third of the step. Keeping freed memory in the
//! process removes those faults. This module only changes allocator thresholds; it never frees
//! or allocates anything itself, and the library never calls it on its own.

/// Asks the C allocator to keep freed memory for reuse instead of returning it to the kernel.
/// A no-op where the allocator is not glibc's.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest allowed mmap threshold on 64-bit targets: blocks below it come from
        // the heap, where freed memory is reused.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread
        // of ours starts and the values are in the ranges glibc documents.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}
