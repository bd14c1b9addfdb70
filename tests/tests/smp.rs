//! Secondary CPUs (DESIGN.md §4): the loader starts them from the Limine MP request and
//! parks them; the kernel sends each to its entry, which counts it and parks it. One boot
//! with four CPUs and one with a single CPU per architecture, scenario `boot`.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, Serial, boot, expect_ending, options, selected};

fn boot_with(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("smp test with {cpus} CPUs on {arch}")) {
        return;
    }
    let mut options = options(arch, &format!("smp-{cpus}"), "test=boot");
    options.qemu.smp = cpus;
    let outcome = boot(&options);
    let mut serial = Serial::new(&outcome);

    let line = serial.expect("cpus: ");
    assert!(
        line.starts_with(&format!("cpus: {cpus} (bsp 0x")),
        "expected {cpus} CPUs and the boot CPU's id: {line:?}"
    );
    let arrived = serial.expect("smp: ");
    assert_eq!(
        arrived.trim_end(),
        format!("smp: {cpus} of {cpus} CPUs arrived"),
        "not every CPU reached the kernel"
    );
    serial.expect("ok timer ticks");
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn smp_four_cpus_x86_64() {
    boot_with(Arch::X86_64, 4);
}

#[test]
fn smp_one_cpu_x86_64() {
    boot_with(Arch::X86_64, 1);
}

#[test]
fn smp_four_cpus_aarch64() {
    boot_with(Arch::Aarch64, 4);
}

#[test]
fn smp_one_cpu_aarch64() {
    boot_with(Arch::Aarch64, 1);
}
