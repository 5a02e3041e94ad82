//! Handing freed memory back to the system.
//!
//! ONNX Runtime allocates through the C allocator. After an inference its arena
//! frees the activation buffers (arena shrinkage), but glibc keeps what was freed
//! inside its heap, and after a large free it raises its mmap threshold so that
//! later buffers of that size stay in the heap too. Without this an idle
//! service holds about 20 MB more after its start-up inference, and most of
//! what a burst of batches grew stays resident. `malloc_trim` returns those
//! free pages; live allocations (the model's weights) are untouched.
//!
//! Only the main heap's free top goes back that way, though: other threads
//! allocate from arenas of their own, whose free tops `malloc_trim` leaves
//! resident (8.5 MB after the warm-up with ONNX Runtime's arena, 15 MB
//! without it, on the 2-core VM). [`one_heap`] puts every thread on the
//! main heap when ONNX Runtime's CPU arena is off.
//!
//! `malloc_trim` is called at quiet points only: at the end of
//! `OnnxModel::settle` (the warm-up before SERVING, and the batch loop's
//! `release_idle` once a model has had no request for `IDLE_RELEASE_SECS`).
//! glibc locks each arena while it walks it, and the next inference
//! page-faults its buffers in again, so it is never called between requests.

/// Asks the C allocator to return its free pages to the system. Elsewhere
/// than glibc it does nothing: musl's allocator returns large blocks itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed() {
    // SAFETY: malloc_trim takes no pointers and runs under glibc's own arena
    // locks, like any other allocator call; it can be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// See above: no glibc, nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() {}

/// Makes every thread allocate from glibc's main heap (`M_ARENA_MAX` 1), the
/// one heap whose free top [`release_freed`] hands back. Small allocations
/// still come from each thread's cache without a lock. Call it from `main`
/// before any thread starts: a thread keeps the arena it first allocated in.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn one_heap() {
    // SAFETY: mallopt takes two integers and no pointers; it runs before any
    // other thread exists, under glibc's own lock like any allocator call.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// See above: no glibc, nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed block below the mmap threshold stays in the heap until trimmed;
    /// the process's resident size shows whether it went back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_memory_goes_back_to_the_system() {
        fn rss_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        // Many 64 KiB blocks (under glibc's default 128 KiB mmap threshold, so
        // they come from the heap), touched, then all freed but the last, which
        // keeps the heap's top in use so free() alone cannot shrink it.
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 * 1024]).collect();
        let pin = blocks.pop().unwrap();
        drop(blocks);
        let before = rss_kib();
        release_freed();
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "64 MiB freed, but resident size went from {before} KiB to {after} KiB"
        );
        assert_eq!(pin.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 * 1024);
    }
}
