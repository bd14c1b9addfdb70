//! The kernel a plain `cargo xtask qemu-*` builds carries no test code (DESIGN.md §9): a
//! scenario on its command line is refused with a message that says why, and the
//! test-only system calls answer `NotSupported` to a user program. The lock-order checker
//! of the test build fires on a lock taken against the order. On both architectures.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, expect_ending, expect_line, options, selected, start};
use xtask::compile::KernelBuild;

const PROMPT: &str = "keel> ";

fn scenario_refused(arch: Arch) {
    if !selected(arch, &format!("plain kernel refuses scenarios on {arch}")) {
        return;
    }
    let mut options = options(arch, "plain-scenario", "test=kernel");
    options.kernel = Some(KernelBuild::Plain);
    let outcome = tests::boot(&options);
    let (_, line) = expect_line(&outcome, "not ok scenario kernel: ");
    assert!(
        line.contains("built without test code"),
        "the refusal does not say why: {line:?}"
    );
    assert!(
        !outcome.lines.iter().any(|line| line.starts_with("ok ")),
        "a plain kernel ran a test:\n{}",
        outcome.lines.join("\n")
    );
    expect_line(&outcome, "0 passed, 1 failed");
    expect_ending(&outcome, &Ending::Exit(1));
}

fn test_calls_not_supported(arch: Arch) {
    if !selected(arch, &format!("plain kernel test-only calls on {arch}")) {
        return;
    }
    let mut options = options(arch, "plain-shell", "");
    options.kernel = Some(KernelBuild::Plain);
    let mut terminal = start(&options);
    terminal.expect_prompt(PROMPT);
    terminal.send_line("spawn testsuite");
    terminal.expect_line("spawn testsuite");
    let line = terminal.expect_line("testsuite: test-only system calls: ");
    assert_eq!(
        line,
        "testsuite: test-only system calls: test_sleep Err(NotSupported), \
         bench_counter Err(NotSupported), irq_test_raise Err(NotSupported)"
    );
    terminal.expect_prompt(PROMPT);
    terminal.send_line("poweroff");
    let outcome = terminal.finish();
    expect_ending(&outcome, &Ending::Exit(0));
}

fn lock_order_checker(arch: Arch) {
    if !selected(arch, &format!("lock-order checker on {arch}")) {
        return;
    }
    let outcome = tests::boot(&options(arch, "lock-order", "test=lock-order"));
    let (_, line) = expect_line(&outcome, "KERNEL PANIC: ");
    assert!(
        line.contains(
            "lock order violated: taking \"test outer\" (level 80) while holding \
             \"test inner\" (level 81)"
        ),
        "{line:?}"
    );
    expect_line(&outcome, "panic in thread lock-order (id ");
    assert!(
        !outcome.lines.iter().any(|line| line.starts_with("not ok")),
        "the scenario went on past the violation:\n{}",
        outcome.lines.join("\n")
    );
    expect_ending(&outcome, &Ending::Exit(2));
}

#[test]
fn plain_kernel_refuses_scenarios_x86_64() {
    scenario_refused(Arch::X86_64);
}

#[test]
fn plain_kernel_refuses_scenarios_aarch64() {
    scenario_refused(Arch::Aarch64);
}

#[test]
fn plain_kernel_test_calls_not_supported_x86_64() {
    test_calls_not_supported(Arch::X86_64);
}

#[test]
fn plain_kernel_test_calls_not_supported_aarch64() {
    test_calls_not_supported(Arch::Aarch64);
}

#[test]
fn lock_order_checker_fires_x86_64() {
    lock_order_checker(Arch::X86_64);
}

#[test]
fn lock_order_checker_fires_aarch64() {
    lock_order_checker(Arch::Aarch64);
}
