//! `cargo xtask`: see the library (`xtask/src/lib.rs`) for what each command does.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    xtask::cli::main()
}
