//! Scenario `kernel` (DESIGN.md §8): the in-kernel suite — traps provoked in kernel mode,
//! timer interrupts while idle, kernel threads keeping separate stacks across blocking and
//! preemption, the frame allocator, kernel stacks and the heap. One boot per architecture.
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

/// Every test the suite must report as passed, by the start of its `ok` line.
const EXPECTED: &[&str] = &[
    "ok trap breakpoint",
    "ok trap undefined instruction",
    "ok trap divide error",
    "ok trap kernel page fault recovered",
    "ok timer interrupts counted while idle",
    "ok frame allocator counts return exactly",
    "ok kernel stack freed and reused",
    "ok heap allocations freed",
    "ok two kernel threads keep separate stacks across block and preemption",
    "ok dead thread's kernel stack reused",
    "ok user mappings refuse W+X, page 0 and kernel addresses",
    "ok 1000 user address spaces created, populated and destroyed",
    "ok user page protected read-only: copy_to_user refused, W+X refused, lookup agrees",
    "ok kernel access to user memory faults",
    "ok malformed user images are refused",
    "ok kernel runs on its own page tables, not the loader's",
    "ok kernel image mapped per section: text RX, rodata R+NX, data RW+NX; HHDM RW+NX",
    "ok writing kernel .rodata faults (recovered through the fixup table)",
    "ok writing kernel .text faults (recovered through the fixup table)",
    "ok writing kernel .data goes through",
    "ok bootloader-reclaimable memory returned to the frame allocator",
    "ok device memory mapped uncached into a user space; RAM, overlaps, kernel and wrapping ranges refused",
];

fn kernel_suite(arch: Arch) {
    if !selected(arch, &format!("kernel suite on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "kernel", "test=kernel"));
    expect_no_failed_test(&outcome);
    let (_, reclaimed) = expect_line(&outcome, "mm: reclaimed ");
    let frames = tests::number_after(reclaimed, "mm: reclaimed ").expect("a frame count");
    assert!(frames > 0, "{reclaimed:?}");
    for expected in EXPECTED {
        let (_, line) = expect_line(&outcome, expected);
        assert!(line.starts_with("ok "), "{line:?}");
    }
    let (_, divide) = expect_line(&outcome, "ok trap divide error");
    if arch == Arch::Aarch64 {
        assert!(divide.contains("not applicable"), "{divide:?}");
    }
    let summary = outcome
        .lines
        .iter()
        .find(|line| line.contains(" passed, ") && line.trim_end().ends_with(" failed"))
        .expect("no summary line");
    assert_eq!(
        summary.trim(),
        format!("{} passed, 0 failed", EXPECTED.len())
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn kernel_suite_x86_64() {
    kernel_suite(Arch::X86_64);
}

#[test]
fn kernel_suite_aarch64() {
    kernel_suite(Arch::Aarch64);
}
