//! What the process must be told before its first thread starts when it runs the local model:
//! how many threads candle may use, and how much freed memory glibc's allocator may keep.
//!
//! A forward pass allocates tens of megabytes of activations and frees them when it ends. With
//! glibc's defaults each thread that allocates may get an arena of its own (up to eight per
//! core), each keeping the peak it reached, and the heap is trimmed only once 2 × the largest
//! freed block lies free at its top. Two arenas and a fixed mmap threshold of 32 MiB (which
//! also fixes the trim threshold at 128 KiB) keep the daemon under 400 MiB on 2,000 items of
//! 400 characters. A lower threshold is no good: every activation then comes from `mmap` and
//! is faulted in page by page on each pass (measured with 1 MiB: 25 items/s instead of 39).
//! An operator's own `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` wins over these.

use super::resolve_threads;

/// Sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` (unless already set) to the local
/// model's thread count, so candle's GEMM split and its element-wise pool use the same cores
/// as the embedder's pool; and bounds the memory glibc keeps between passes (see the module).
///
/// # Safety
/// Changing the environment is only sound while no other thread runs: call this first thing
/// in `main`, before any runtime or pool starts.
pub unsafe fn prepare_process(threads: usize) {
    let threads = resolve_threads(threads).to_string();
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: the caller guarantees no other thread is running.
            unsafe { std::env::set_var(var, &threads) };
        }
    }
    bound_allocator_cache();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_allocator_cache() {
    /// glibc arenas when the local model runs: the lane and candle's pools share them.
    const ARENAS: i32 = 2;
    /// Blocks at least this large come from `mmap` (glibc's largest allowed value on 64 bits).
    const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes glibc's allocator parameters; it is called before any
        // other thread starts.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above. A fixed threshold also stops glibc from raising it.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_allocator_cache() {}
