//! Scenario `kernel` (DESIGN.md §8): the in-kernel suite — traps provoked in kernel mode,
//! timer interrupts while idle, kernel threads keeping separate stacks across blocking and
//! preemption, the frame allocator, kernel stacks and the heap, device interrupts (the console
//! UART's line claimed, masked on delivery, unmasked; unrouted and unclaimed interrupts
//! survived). One boot per architecture.
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
    "ok irq invalid and claimed lines are refused",
    "ok irq edge-triggered console UART interrupt arrives on line ",
    "ok irq masked edge-triggered line does not deliver, unmask delivers the pending interrupt",
    "ok irq level-triggered console UART interrupt arrives on line ",
    "ok irq masked level-triggered line does not deliver, unmask delivers the pending interrupt",
    "ok irq unrouted and unclaimed interrupts are counted, not fatal",
    "ok frame allocator counts return exactly",
    "ok memory above 4 GiB is allocated and holds data",
    "ok kernel stack freed and reused",
    "ok heap allocations freed",
    "ok two kernel threads keep separate stacks across block and preemption",
    "ok dead thread's kernel stack reused",
    "ok user mappings refuse W+X, page 0 and kernel addresses",
    "ok 1000 user address spaces created, populated and destroyed",
    "ok address-space tags: ",
    "ok user page protected read-only: copy_to_user refused, W+X refused, lookup agrees",
    "ok kernel access to user memory faults",
    "ok malformed user images are refused",
    "ok process budget is charged for its record, page tables and pages and refuses beyond its limit; executable pages synced for instruction fetch; teardown frees every frame and byte",
    "ok capability table grows from 16 slots charged to the budget (64 bytes a slot), refuses a growth the budget cannot pay with OutOfMemory, keeps every handle, shrinks back as capabilities go, and teardown refunds the rest",
    "ok kernel runs on its own page tables, not the loader's",
    "ok kernel image mapped per section: text RX, rodata R+NX, data RW+NX; HHDM RW+NX",
    "ok writing kernel .rodata faults (recovered through the fixup table)",
    "ok writing kernel .text faults (recovered through the fixup table)",
    "ok writing kernel .data goes through",
    "ok bootloader-reclaimable memory returned to the frame allocator",
    "ok device memory mapped uncached into a user space; RAM, overlaps, kernel and wrapping ranges refused",
];

fn kernel_suite(arch: Arch, cpus: u32) {
    if !selected(arch, &format!("kernel suite on {arch} with {cpus} CPUs")) {
        return;
    }
    let mut options = options(
        arch,
        &format!("kernel-smp{cpus}"),
        &format!("test=kernel cpus={cpus}"),
    );
    options.qemu.smp = cpus;
    let outcome = boot(&options);
    expect_no_failed_test(&outcome);
    // The suite counts the CPUs it found against the number QEMU was given.
    expect_line(
        &outcome,
        &format!("ok cpus: {cpus} found, every one arrived"),
    );
    let (_, reclaimed) = expect_line(&outcome, "mm: reclaimed ");
    let frames = tests::number_after(reclaimed, "mm: reclaimed ").expect("a frame count");
    assert!(frames > 0, "{reclaimed:?}");
    for expected in EXPECTED {
        let (_, line) = expect_line(&outcome, expected);
        assert!(line.starts_with("ok "), "{line:?}");
    }
    // The console UART's line, with the firmware's trigger mode first, then the other: COM1
    // is ISA IRQ 4 (GSI 4 on q35, no override, edge) raised through the 16550's internal
    // loopback; the PL011 of QEMU `virt` is SPI 1 (INTID 33, level) in its device tree, and
    // QEMU 7.2's PL011 has no loopback, so its transmit interrupt is the one raised.
    let (edge, _) = expect_line(&outcome, "ok irq edge-triggered console UART interrupt");
    let (level, _) = expect_line(&outcome, "ok irq level-triggered console UART interrupt");
    for trigger in ["edge", "level"] {
        let (_, uart) = expect_line(
            &outcome,
            &format!("ok irq {trigger}-triggered console UART interrupt arrives on line "),
        );
        match arch {
            Arch::X86_64 => assert!(
                uart.contains("line 4 (receive interrupt, internal loopback)"),
                "{uart:?}"
            ),
            Arch::Aarch64 => assert!(uart.contains("line 33 ("), "{uart:?}"),
        }
    }
    let firmware_first = match arch {
        Arch::X86_64 => edge < level,
        Arch::Aarch64 => level < edge,
    };
    assert!(firmware_first, "the firmware's trigger mode runs first");
    // x86_64 checks its PCID allocator through real spaces, tags forced on where qemu64
    // has no PCIDs; AArch64's ASIDs are generation-checked in the tlb scenario.
    let (_, tags) = expect_line(&outcome, "ok address-space tags: ");
    match arch {
        Arch::X86_64 => assert!(
            tags.contains(
                "5000 spaces made and destroyed while one stayed alive never got its tag"
            ),
            "{tags:?}"
        ),
        Arch::Aarch64 => assert!(tags.contains("not applicable"), "{tags:?}"),
    }
    let (_, divide) = expect_line(&outcome, "ok trap divide error");
    if arch == Arch::Aarch64 {
        assert!(divide.contains("not applicable"), "{divide:?}");
    }
    let summary = tests::summary_line(&outcome);
    assert_eq!(summary, format!("{} passed, 0 failed", EXPECTED.len() + 1));
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn kernel_suite_x86_64() {
    kernel_suite(Arch::X86_64, tests::default_cpus());
}

#[test]
fn kernel_suite_aarch64() {
    kernel_suite(Arch::Aarch64, tests::default_cpus());
}

#[test]
fn kernel_suite_x86_64_smp4() {
    kernel_suite(Arch::X86_64, 4);
}

#[test]
fn kernel_suite_aarch64_smp4() {
    kernel_suite(Arch::Aarch64, 4);
}
