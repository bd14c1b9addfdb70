//! The kernel and user suites on other CPU models : `--cpu max` turns on SMAP
//! (x86_64) and PAN + SVE (AArch64), so the kernel's own access to user memory must fault
//! and an EL0 SVE instruction must follow the written policy; AArch64 also runs on a
//! Cortex-A53 with GICv2 (both suites, the device-interrupt tests checked by name there), and
//! the user suite on the default CPU with GICv2.
//! One boot per case.
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, options, selected,
};

fn no_failures(outcome: &tests::Outcome) {
    expect_no_failed_test(outcome);
    let summary = tests::summary_line(outcome);
    assert!(summary.ends_with(" passed, 0 failed"), "{summary:?}");
    expect_ending(outcome, &Ending::Exit(0));
}

fn kernel_suite_on_cpu_max(arch: Arch) {
    if !selected(arch, &format!("kernel suite with --cpu max on {arch}")) {
        return;
    }
    let mut options = options(arch, "kernel-cpu-max", "test=kernel");
    options.qemu.cpu = Some("max".to_owned());
    let outcome = boot(&options);
    let (_, line) = expect_line(&outcome, "ok kernel access to user memory faults");
    assert_eq!(
        line.trim_end(),
        "ok kernel access to user memory faults outside copy_from_user",
        "PAN/SMAP must be on with --cpu max"
    );
    no_failures(&outcome);
}

#[test]
fn kernel_suite_cpu_max_x86_64() {
    kernel_suite_on_cpu_max(Arch::X86_64);
}

#[test]
fn kernel_suite_cpu_max_aarch64() {
    kernel_suite_on_cpu_max(Arch::Aarch64);
}

#[test]
fn user_suite_cpu_max_aarch64_sve_policy() {
    if !selected(Arch::Aarch64, "user suite with --cpu max on aarch64") {
        return;
    }
    let mut options = options(Arch::Aarch64, "user-cpu-max", "test=user");
    options.qemu.cpu = Some("max".to_owned());
    let outcome = boot(&options);
    let (report, _) = expect_line(&outcome, "SVE not supported");
    let (_, fpu) = expect_line(&outcome, "ok user FPU state survives preemption");
    assert!(fpu.contains("upper vector halves too"), "{fpu:?}");
    let (ok, line) = expect_line(&outcome, "ok user SVE instruction ends the thread");
    assert!(line.contains("(SVE not supported)"), "{line:?}");
    assert!(report < ok, "the report comes before the result");
    no_failures(&outcome);
}

/// x86_64 `--cpu max` has AVX (and SMAP): the FPU-preemption test must check a ymm upper
/// half there, and the whole user suite pass.
#[test]
fn user_suite_cpu_max_x86_64_avx() {
    if !selected(Arch::X86_64, "user suite with --cpu max on x86_64") {
        return;
    }
    let mut options = options(Arch::X86_64, "user-cpu-max", "test=user");
    options.qemu.cpu = Some("max".to_owned());
    let outcome = boot(&options);
    let (_, line) = expect_line(&outcome, "ok user FPU state survives preemption");
    assert!(line.contains("upper vector halves too"), "{line:?}");
    no_failures(&outcome);
}

#[test]
fn user_suite_cortex_a53_gic2_aarch64() {
    if !selected(Arch::Aarch64, "user suite on cortex-a53 with GICv2") {
        return;
    }
    let mut options = options(Arch::Aarch64, "user-a53-gic2", "test=user");
    options.qemu.cpu = Some("cortex-a53".to_owned());
    options.qemu.gic = 2;
    let outcome = boot(&options);
    no_failures(&outcome);
}

#[test]
fn kernel_suite_cortex_a53_gic2_aarch64() {
    if !selected(Arch::Aarch64, "kernel suite on cortex-a53 with GICv2") {
        return;
    }
    let mut options = options(Arch::Aarch64, "kernel-a53-gic2", "test=kernel");
    options.qemu.cpu = Some("cortex-a53".to_owned());
    options.qemu.gic = 2;
    let outcome = boot(&options);
    // The GICv2 driver routes, masks and unmasks the PL011's SPI too.
    for trigger in ["edge", "level"] {
        expect_line(
            &outcome,
            &format!("ok irq {trigger}-triggered console UART interrupt arrives on line 33"),
        );
        expect_line(
            &outcome,
            &format!(
                "ok irq masked {trigger}-triggered line does not deliver, unmask delivers the pending interrupt"
            ),
        );
    }
    expect_line(
        &outcome,
        "ok irq unrouted and unclaimed interrupts are counted, not fatal",
    );
    no_failures(&outcome);
}

/// The default CPU (Cortex-A72) with GICv2: both interrupt-controller drivers run both
/// suites somewhere.
#[test]
fn user_suite_gic2_aarch64() {
    if !selected(Arch::Aarch64, "user suite with GICv2") {
        return;
    }
    let mut options = options(Arch::Aarch64, "user-gic2", "test=user");
    options.qemu.gic = 2;
    let outcome = boot(&options);
    no_failures(&outcome);
}
