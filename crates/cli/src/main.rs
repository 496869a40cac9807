//! The `tfaudit` binary: parse arguments, run, turn the outcome into an exit code.

// jemalloc rather than glibc's allocator: a sync's events are allocated by the thread
// that reads pages and freed by the one that stores them, which glibc's arenas handle
// at a cost (a 200,000-event backfill spent 10% of its CPU in malloc and free; with
// jemalloc the whole sync took ×0.92 the CPU, median of 10 pairs in turn).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: two arenas, as glibc's were kept to two.
/// jemalloc's default (four per core, one for each thread that allocates) held a
/// 200,000-event backfill's peak 8 MiB higher, and tfaudit's threads are few.
#[cfg(all(unix, not(target_env = "musl")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"narenas:2\0"[0];

fn main() -> std::process::ExitCode {
    tfaudit_cli::main()
}
