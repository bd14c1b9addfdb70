//! The crash scenarios of DESIGN.md §8, each in its own boot: `stack-overflow` (a kernel
//! thread recursing into its guard page is reported by name, exit 2) and `user-fault` (a
//! user page fault is reported naming the process, and the kernel survives, exit 0). The
//! xtask names the code address of each report from the ELF it belongs to: the recursing
//! kernel function, the faulting instruction of the user program.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, boot, expect_ending, expect_line, options, selected};

fn stack_overflow(arch: Arch) {
    if !selected(arch, &format!("stack-overflow on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "stack-overflow", "test=stack-overflow"));
    let (report, line) = expect_line(&outcome, "kernel stack overflow in thread ");
    assert_eq!(
        line.trim_end(),
        "kernel stack overflow in thread overflow-test"
    );
    // The faulting instruction (x86_64 `rip`, AArch64 `elr`) is in the recursing function.
    assert!(
        outcome.lines[report..]
            .iter()
            .any(|line| line.contains("::recurse (kernel/src/")),
        "no report line names the recursing function:\n{}",
        outcome.lines.join("\n")
    );
    assert!(
        !outcome
            .lines
            .iter()
            .any(|line| line.contains("recursion returned")),
        "the recursion ended without a fault"
    );
    expect_ending(&outcome, &Ending::Exit(2));
}

fn user_fault(arch: Arch) {
    if !selected(arch, &format!("user-fault on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "user-fault", "test=user-fault"));
    let (report, line) = expect_line(&outcome, "keel: user fault in process testsuite");
    assert!(
        line.contains("page fault (read) at 0x100000000000"),
        "{line:?}"
    );
    // The faulting `ip`, named from the user program's ELF: code in the user sources.
    assert!(
        line.contains("[ip: ") && line.contains(" (user/"),
        "{line:?}"
    );
    // The user frames follow the report, named from the same ELF: the faulting function
    // and the testsuite's `main` that called it.
    let (trace, _) = expect_line(&outcome, "user backtrace (innermost first):");
    assert!(trace > report, "the user backtrace comes after the report");
    let frames: Vec<&String> = outcome.lines[trace + 1..]
        .iter()
        .take_while(|line| line.trim_start().starts_with('#'))
        .collect();
    assert!(
        frames.len() >= 2,
        "fewer than two user frames:\n{}",
        outcome.lines.join("\n")
    );
    assert!(
        frames
            .iter()
            .any(|line| line.contains("testsuite::main (user/testsuite/src/main.rs")),
        "no user frame names testsuite::main:\n{}",
        outcome.lines.join("\n")
    );
    let (survived, line) = expect_line(&outcome, "ok kernel survived");
    assert_eq!(line.trim_end(), "ok kernel survived");
    assert!(
        report < survived,
        "the report comes before the survival line"
    );
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn stack_overflow_x86_64() {
    stack_overflow(Arch::X86_64);
}

#[test]
fn stack_overflow_aarch64() {
    stack_overflow(Arch::Aarch64);
}

#[test]
fn user_fault_x86_64() {
    user_fault(Arch::X86_64);
}

#[test]
fn user_fault_aarch64() {
    user_fault(Arch::Aarch64);
}
