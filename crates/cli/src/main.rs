//! The `tfaudit` binary: parse arguments, run, turn the outcome into an exit code.

fn main() -> std::process::ExitCode {
    tfaudit_cli::main()
}
