//! The kernel suite at two memory sizes: 128 MiB (little room for the frame
//! allocator's storage, the heap and 1,000 address spaces) and 4 GiB (memory above 4 GiB in
//! the map, so the frame allocator must span it). One boot per size and architecture.
#![forbid(unsafe_code)]

use tests::{
    Arch, Ending, boot, expect_ending, expect_line, expect_no_failed_test, number_after, options,
    selected,
};

fn kernel_suite_with_memory(arch: Arch, size: &str, least_usable_mib: u64) {
    if !selected(arch, &format!("kernel suite with --mem {size} on {arch}")) {
        return;
    }
    let mut options = options(arch, &format!("kernel-mem-{size}"), "test=kernel");
    options.qemu.mem = size.to_owned();
    let outcome = boot(&options);
    let (_, memory) = expect_line(&outcome, "memory: ");
    let usable = number_after(memory, "memory: ").expect("usable MiB in the memory line");
    assert!(
        usable >= least_usable_mib,
        "{memory:?}: expected at least {least_usable_mib} MiB usable"
    );
    // Memory above 4 GiB is used (allocated, written and read back) when present.
    let (_, above) = expect_line(&outcome, "mm: above 4 GiB: ");
    let above_mib = number_after(above, "mm: above 4 GiB: ").expect("MiB above 4 GiB");
    if size == "4G" {
        assert!(
            above_mib >= 512,
            "{above:?}: expected memory above 4 GiB in use"
        );
    } else {
        assert_eq!(above_mib, 0, "{above:?}");
    }
    expect_no_failed_test(&outcome);
    let (_, summary) = expect_line(&outcome, " passed, ");
    assert!(summary.trim_end().ends_with(" 0 failed"), "{summary:?}");
    expect_ending(&outcome, &Ending::Exit(0));
}

#[test]
fn kernel_suite_128m_x86_64() {
    kernel_suite_with_memory(Arch::X86_64, "128M", 48);
}

#[test]
fn kernel_suite_128m_aarch64() {
    kernel_suite_with_memory(Arch::Aarch64, "128M", 48);
}

#[test]
fn kernel_suite_4g_x86_64() {
    kernel_suite_with_memory(Arch::X86_64, "4G", 3_900);
}

#[test]
fn kernel_suite_4g_aarch64() {
    kernel_suite_with_memory(Arch::Aarch64, "4G", 3_900);
}
