//! The `tfaudit` binary: parse arguments, run, turn the outcome into an exit code.

fn main() -> std::process::ExitCode {
    // glibc gives each thread that allocates its own heap arena, up to eight per core;
    // two are plenty for tfaudit and keep a long-running service smaller. Set before
    // any thread starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tunable, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tfaudit_cli::main()
}
