//! The pure logic of `efi-loader`, the UEFI application that boots a Limine-protocol
//! kernel when no Limine binaries are at hand (DESIGN.md §4).
//!
//! Principle: the loader must be indistinguishable from Limine to the kernel except by the
//! Bootloader Info name. Everything that decides *what* the kernel sees — the parsed
//! `limine.conf`, the ELF layout, the requests found, the memory map, the page tables —
//! is computed here, without UEFI and without `unsafe`, and tested on the host. The binary
//! (`main.rs`) only reads files, asks the firmware, copies bytes and jumps.
//!
//! Known weak spots: base revision 0 (no tag) is refused rather than emulated; only the
//! boot volume (`boot():`) is reachable from the configuration; MP starts AArch64
//! secondaries only when the firmware runs at EL1, and does not synchronise x86 MTRRs.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod blake2b;
pub mod config;
pub mod elf;
pub mod fdt;
pub mod hhdm;
pub mod machine;
pub mod memmap;
pub mod mp;
pub mod paging;
pub mod path;
pub mod protocol;
pub mod requests;
pub mod time;

/// The page size of both architectures' tables as the loader builds them.
pub const PAGE_SIZE: u64 = 4096;
/// The size of the region base revisions 1 and 2 direct-map whole.
pub const FOUR_GIB: u64 = 1 << 32;

/// `value` rounded down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// `value` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}
