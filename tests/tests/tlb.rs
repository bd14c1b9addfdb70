//! TLB consistency between CPUs: scenario `tlb` on four CPUs, per architecture. Three
//! secondaries activate a user address space and cache its pages; the boot CPU unmaps,
//! write-protects and destroys, and each secondary's very next access must fault (a stale
//! translation would still read or write). The space's active mask names exactly the CPUs
//! that activated it; a CPU spinning on a kernel lock answers the destroy of the lock's
//! holder; forty spaces each keep their own memory on two CPUs with, on AArch64, the ASIDs
//! capped at 16 so their generations roll over.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, Serial, boot, expect_ending, expect_no_failed_test, options, selected};

fn tlb_scenario(arch: Arch) {
    if !selected(arch, &format!("tlb scenario on {arch}")) {
        return;
    }
    let mut options = options(arch, "tlb", "test=tlb");
    options.qemu.smp = 4;
    let outcome = boot(&options);
    expect_no_failed_test(&outcome);
    let mut serial = Serial::new(&outcome);
    serial.expect("ok tlb 3 secondary CPUs online");
    for cpu in 1..=3 {
        serial.expect(&format!(
            "ok tlb cpu {cpu} reads a user page of a space it activated"
        ));
    }
    serial.expect("ok tlb active mask 0b1110 names exactly the CPUs that activated the space");
    serial.expect(
        "ok tlb cpu 0 enters the mask on activation (0b1111) and leaves it on a switch (0b1110)",
    );
    serial.expect("ok tlb unmap of a page the secondaries have cached returns its frame");
    for cpu in 1..=3 {
        serial.expect(&format!(
            "ok tlb cpu {cpu} faults on the page as soon as the unmap returned"
        ));
    }
    serial.expect("ok tlb secondaries write a writable user page");
    serial.expect("ok tlb protect to read-only");
    for cpu in 1..=3 {
        serial.expect(&format!(
            "ok tlb cpu {cpu} cannot write the page as soon as the protect returned"
        ));
    }
    serial.expect("ok tlb secondaries read a page of the space before its destroy");
    serial.expect("ok tlb destroy of a space active on 0b1110 returns");
    for cpu in 1..=3 {
        serial.expect(&format!(
            "ok tlb cpu {cpu} left the destroyed space before its tables were freed"
        ));
    }
    serial.expect("ok tlb shootdown scenario set up");
    serial.expect("ok tlb cpu 1 spinning on a kernel lock answers the destroy of the lock holder");
    let spaces = serial.expect("ok tlb 40 spaces (");
    match arch {
        Arch::Aarch64 => assert!(
            spaces.contains("a cap of 16 tags,"),
            "the ASIDs were not capped: {spaces:?}"
        ),
        Arch::X86_64 => assert!(spaces.contains("no tag cap"), "{spaces:?}"),
    }
    assert!(
        spaces.ends_with("each see their own memory on cpu 0 and cpu 1"),
        "{spaces:?}"
    );
    serial.expect("23 passed, 0 failed");
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn tlb_x86_64() {
    tlb_scenario(Arch::X86_64);
}

#[test]
fn tlb_aarch64() {
    tlb_scenario(Arch::Aarch64);
}
