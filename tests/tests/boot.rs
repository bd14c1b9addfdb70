//! The boot test (DESIGN.md §8, scenario `boot`): one boot per architecture that asserts
//! every banner line `kernel/src/boot.rs` prints, in order, then the timer check and exit
//! code 0.
#![forbid(unsafe_code)]

use tests::{Arch, Ending, Serial, boot, expect_ending, number_after, options, selected};

fn boot_prints_banner_and_powers_off(arch: Arch) {
    if !selected(arch, &format!("boot test on {arch}")) {
        return;
    }
    let outcome = boot(&options(arch, "boot", "test=boot"));
    let mut serial = Serial::new(&outcome);

    serial.expect(&format!("Keel {} {arch}", env!("CARGO_PKG_VERSION")));
    let line = serial.expect("bootloader: ");
    let words: Vec<&str> = line["bootloader: ".len()..].split_whitespace().collect();
    assert!(
        words.len() >= 2,
        "bootloader line lacks a name and a version: {line:?}"
    );

    let line = serial.expect("hhdm: 0x");
    let hex = line["hhdm: 0x".len()..].trim();
    assert!(
        !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "hhdm is not a hex address: {line:?}"
    );

    // Keel asks for 4-level paging and nothing else; the loader answers the request.
    assert_eq!(serial.expect("paging: ").trim_end(), "paging: 4-level");

    let line = serial.expect("memory: ");
    let mib = number_after(line, "memory:").unwrap_or_else(|| panic!("no MiB in {line:?}"));
    let regions = number_after(line, "usable in").unwrap_or_else(|| panic!("no regions: {line:?}"));
    assert!(
        line.contains(" MiB usable in ") && line.contains(" regions"),
        "{line:?}"
    );
    // QEMU runs with 256 MiB; the firmware keeps some of it.
    assert!(
        (64..=256).contains(&mib),
        "implausible usable memory: {line:?}"
    );
    assert!(regions > 0, "{line:?}");

    assert_eq!(serial.expect("cmdline: ").trim_end(), "cmdline: test=boot");
    let modules = xtask::compile::USER_PROGRAMS.len();
    assert_eq!(
        serial.expect("modules: ").trim_end(),
        format!("modules: {modules}")
    );
    let line = serial.expect("module: ");
    assert!(
        line.contains("init"),
        "the init module is not listed: {line:?}"
    );

    serial.expect("ok timer ticks");
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn boot_x86_64() {
    boot_prints_banner_and_powers_off(Arch::X86_64);
}

#[test]
fn boot_aarch64() {
    boot_prints_banner_and_powers_off(Arch::Aarch64);
}
