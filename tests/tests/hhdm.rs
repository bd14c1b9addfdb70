//! The higher-half direct map moves: two boots with the loader's default (a randomised
//! HHDM base) use different bases, and the kernel passes its boot test at each; with
//! `randomise_hhdm_base: no` (what `cargo xtask bench` writes) the base is the paging
//! mode's lowest higher-half address.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, Serial, boot, expect_ending, options, selected};

fn kernel_hhdm(arch: Arch, fixed: bool) -> u64 {
    let mut boot_options = options(arch, if fixed { "hhdm-fixed" } else { "hhdm" }, "test=boot");
    boot_options.fixed_hhdm = fixed;
    let outcome = boot(&boot_options);
    let mut serial = Serial::new(&outcome);
    let line = serial.expect("hhdm: 0x");
    let hex = line["hhdm: 0x".len()..].trim();
    let base = u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad hhdm: {line:?}"));
    serial.expect("ok timer ticks");
    expect_ending(&outcome, &Ending::Exit(0));
    if let Some(loader) = xtask::boot::hhdm_base(&outcome.lines) {
        assert_eq!(
            loader,
            format!("{base:#x}"),
            "the loader's and the kernel's HHDM base differ"
        );
    }
    base
}

fn hhdm_moves_between_boots(arch: Arch) {
    if !selected(arch, &format!("hhdm test on {arch}")) {
        return;
    }
    let lowest = match arch {
        Arch::X86_64 => 0xffff_8000_0000_0000,
        Arch::Aarch64 => 0xffff_0000_0000_0000,
    };
    let first = kernel_hhdm(arch, false);
    let second = kernel_hhdm(arch, false);
    for base in [first, second] {
        assert_eq!(base % (1 << 30), 0, "HHDM {base:#x} not 1 GiB-aligned");
        assert!(
            (lowest..lowest + (1 << 45)).contains(&base),
            "HHDM {base:#x} outside the randomisation window"
        );
    }
    assert_ne!(first, second, "two boots used the same HHDM base");
    assert_eq!(kernel_hhdm(arch, true), lowest, "a fixed HHDM moved");
}

#[test]
fn hhdm_x86_64() {
    hhdm_moves_between_boots(Arch::X86_64);
}

#[test]
fn hhdm_aarch64() {
    hhdm_moves_between_boots(Arch::Aarch64);
}
