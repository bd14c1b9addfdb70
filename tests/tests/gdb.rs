//! `cargo xtask gdb-<arch> --batch`: a boot under gdb-multiarch stops at the kernel's entry
//! with the kernel's symbols loaded, and gdb's backtrace there names `kmain`. Skipped with a
//! message where gdb-multiarch is missing and cannot be installed (not root).
#![forbid(unsafe_code)]

use std::time::Duration;

use tests::{Arch, note, selected, workspace};
use xtask::gdb::{GdbOptions, split_commands};

fn backtrace_at_entry(arch: Arch) {
    if !selected(arch, &format!("gdb on {arch}")) {
        return;
    }
    let workspace = workspace();
    if let Err(error) = xtask::prereq::ensure_gdb(&workspace) {
        note(format_args!("skipping gdb on {arch}: {error}"));
        return;
    }
    let mut options = GdbOptions::new(arch);
    let boot = tests::options(arch, "gdb", "test=boot");
    options.boot = boot;
    options.batch = Some(split_commands("bt; info symbol $pc"));
    options.timeout = Duration::from_secs(300);
    let outcome = match xtask::gdb::run(&workspace, &options) {
        Ok(outcome) => outcome,
        Err(error) => panic!("could not run gdb: {error}"),
    };
    let output = outcome.output.join("\n");
    assert_eq!(outcome.status, Some(0), "gdb failed:\n{output}");
    // Stopped on the entry's first instruction: the backtrace's frame #0 and `info symbol`
    // name it.
    assert!(
        outcome
            .output
            .iter()
            .any(|line| line.starts_with("#0 ") && line.contains("kmain ()")),
        "no backtrace frame #0 names kmain:\n{output}"
    );
    assert!(
        outcome
            .output
            .iter()
            .any(|line| line.starts_with("kmain in section .text")),
        "info symbol $pc does not name kmain:\n{output}"
    );
}

#[test]
fn gdb_x86_64() {
    backtrace_at_entry(Arch::X86_64);
}

#[test]
fn gdb_aarch64() {
    backtrace_at_entry(Arch::Aarch64);
}
