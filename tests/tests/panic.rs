//! Scenario `panic`: a deliberate `panic!` in a kernel thread is reported with its message,
//! the thread's name and a frame-pointer backtrace whose frames the xtask names from the
//! kernel ELF's debug info, and the machine powers off with exit code 2. One boot per
//! architecture.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, boot, expect_ending, expect_line, options, selected};

fn panic_report(arch: Arch) {
    if !selected(arch, &format!("panic on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "panic", "test=panic"));
    let (panic, line) = expect_line(&outcome, "KERNEL PANIC: ");
    assert!(
        line.contains("deliberate panic (scenario panic), value 7"),
        "{line:?}"
    );
    let (thread, line) = expect_line(&outcome, "panic in thread ");
    assert!(
        line.starts_with("panic in thread panic-test (id "),
        "{line:?}"
    );
    let (backtrace, _) = expect_line(&outcome, "backtrace");
    assert!(panic < thread && thread < backtrace, "report out of order");
    let frames = outcome.lines[backtrace..]
        .iter()
        .filter(|line| {
            let line = line.trim();
            line.starts_with('#') && line.contains(" 0xffffffff8")
        })
        .count();
    assert!(
        frames >= 2,
        "fewer than two backtrace frames:\n{}",
        outcome.lines.join("\n")
    );
    // The xtask appends `function (file:line)` to each frame, the raw address kept: one
    // frame is the function that panics on purpose, in the kernel's sources.
    let named = outcome.lines[backtrace..].iter().find(|line| {
        let line = line.trim();
        line.starts_with('#') && line.contains(" 0x") && line.contains("::panic_here (")
    });
    let Some(named) = named else {
        panic!(
            "no backtrace frame names panic_here:\n{}",
            outcome.lines.join("\n")
        )
    };
    assert!(named.contains("kernel/src/"), "{named:?}");
    expect_ending(&outcome, &Ending::Exit(2));
}

#[test]
fn panic_x86_64() {
    panic_report(Arch::X86_64);
}

#[test]
fn panic_aarch64() {
    panic_report(Arch::Aarch64);
}
