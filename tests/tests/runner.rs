//! How the runner reports kernels that fail: an unknown scenario (the kernel's own
//! `not ok` and exit code 1) and a kernel that never powers off (the xtask's timeout).
#![forbid(unsafe_code)]

use std::time::Duration;

use tests::{Arch, Ending, Serial, boot, expect_ending, options, selected};

fn unknown_scenario_fails(arch: Arch) {
    if !selected(arch, &format!("unknown-scenario test on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "unknown-scenario", "test=no-such-scenario"));
    let mut serial = Serial::new(&outcome);
    serial.expect("cmdline: test=no-such-scenario");
    serial.expect("not ok scenario no-such-scenario");
    expect_ending(&outcome, &Ending::Exit(1));
}

/// Without `test=` the kernel idles with the timer running and never powers off; the runner
/// must end that with a timeout, reported as such. The boot itself gets the usual bound;
/// once the banner is out, the kernel gets a short while more.
fn idle_kernel_times_out(arch: Arch) {
    if !selected(arch, &format!("idle-timeout test on {arch}")) {
        return;
    }
    let mut options = options(arch, "idle", "");
    options.qemu.deadline_after = Some(("cmdline:".to_owned(), Duration::from_secs(30)));
    let outcome = boot(&options);
    let mut serial = Serial::new(&outcome);
    serial.expect(&format!("Keel {} {arch}", env!("CARGO_PKG_VERSION")));
    serial.expect("cmdline:");
    let Ending::Timeout(seconds) = outcome.ending.clone() else {
        panic!(
            "expected a timeout, got {:?}; serial:\n{}",
            outcome.ending,
            outcome.lines.join("\n")
        );
    };
    let error = outcome.ending.into_result().unwrap_err();
    assert!(error.is_timeout());
    assert_eq!(error.exit_code(), 124);
    assert_eq!(
        error.to_string(),
        format!("xtask: timeout: the kernel did not power off within {seconds} s")
    );
}

#[test]
fn unknown_scenario_x86_64() {
    unknown_scenario_fails(Arch::X86_64);
}

#[test]
fn unknown_scenario_aarch64() {
    unknown_scenario_fails(Arch::Aarch64);
}

#[test]
fn idle_kernel_times_out_x86_64() {
    idle_kernel_times_out(Arch::X86_64);
}

#[test]
fn idle_kernel_times_out_aarch64() {
    idle_kernel_times_out(Arch::Aarch64);
}
