//! How the service's heap gives memory back to the system. Under glibc's allocator the instance
//! that made 5,000 runtimes stayed at 65-85 MiB where a fresh one over the same runtimes needs
//! ~50: memory freed after the fill's requests and watch events stayed in the allocator, spread
//! over per-thread arenas. One arena and a trim now and then bring it back to the fresh figure.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often free memory is returned: a trim walks the allocator's free lists (milliseconds).
pub const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// Lets glibc's allocator use one arena, unless `MALLOC_ARENA_MAX` says otherwise. By default a
/// thread that meets a busy arena gets one of its own (up to 8 per core), and what is freed in one
/// arena serves only its threads; with one, freed memory is reused by every thread and a trim
/// reaches all of it. The threads mostly wait on sockets, so the shared lock is not contended.
/// Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread is allocating yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Returns the allocator's free pages to the system; whether any were returned. A no-op where
/// the allocator is not glibc's.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases pages of free chunks the allocator owns.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `every` until `shutdown`, off the async workers (a trim holds the arena's lock).
pub async fn keep_trimmed(every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(released, took_ms = started.elapsed().as_secs_f64() * 1e3, "heap trimmed");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn a_trim_returns_pages_freed_between_live_allocations() {
        // 32 MiB in 1 KiB blocks, one in 64 kept: the freed ones lie between live ones, where
        // glibc does not return them by itself (only a free top of the heap is).
        let mut blocks: Vec<Vec<u8>> = (0..32 * 1024).map(|i| vec![i as u8; 1024]).collect();
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 64 == 0
        });
        assert!(trim(), "nothing returned");
        assert_eq!(blocks.len(), 512);
        assert!(blocks.iter().enumerate().all(|(n, b)| b[0] == ((n + 1) * 64 - 1) as u8));
    }
}
