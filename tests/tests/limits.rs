//! Scenario `limits`, booted with 2 GiB: no fixed per-process limit, only memory budgets
//! (user/testsuite/src/limits.rs). One process maps and touches 1 GiB, unmaps it and
//! ends, and every frame comes back; a capability table grows to 5000 capabilities and
//! back, the budget with it; a budget too small for the table's next growth, or for one
//! more thread, gets `OutOfMemory` and the process keeps running; one process runs 40
//! threads; a process spawning recursively until its budget is spent does not keep
//! another process from creating a thread. One boot per architecture.
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

const EXPECTED: &[&str] = &[
    "ok limits: one process maps and touches 1 GiB (several calls), unmaps it and ends, and every frame and budget byte comes back",
    "ok limits: a capability table grows to 5000 capabilities charged to the budget, the last ones work, and deleting them gives the slots and the budget back",
    "ok limits: a process whose budget cannot pay for its table's next growth gets OutOfMemory and keeps running",
    "ok limits: one process runs 40 threads (more than 16), and their charges come back when they end",
    "ok limits: a process with a small budget gets OutOfMemory from thread_create and keeps running",
    "ok limits: a process spawning recursively until its budget is spent does not stop another process from creating a thread",
    "ok limits: every frame is back once the processes ended",
];

fn limits(arch: Arch) {
    if !selected(arch, &format!("limits on {arch}")) {
        return;
    }
    let mut options = options(arch, "limits", "test=limits");
    options.qemu.mem = "2G".to_owned();
    let outcome = boot(&options);
    expect_no_failed_test(&outcome);
    for expected in EXPECTED {
        let (_, line) = expect_line(&outcome, expected);
        assert_eq!(line.trim_end(), *expected);
    }
    assert_eq!(
        tests::summary_line(&outcome),
        format!("{} passed, 0 failed", EXPECTED.len())
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn limits_x86_64() {
    limits(Arch::X86_64);
}

#[test]
fn limits_aarch64() {
    limits(Arch::Aarch64);
}
