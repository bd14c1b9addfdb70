//! The kernel's own page tables (DESIGN.md §4): built right after the frame
//! allocator from the linker script's section symbols and the memory map, then switched
//! to; the loader's tables are never used again (and their memory is reclaimed later with
//! the rest of the bootloader-reclaimable memory, [`super::reclaim`]).

use crate::sync::{Lock, level};
use arch_api::{KernelLayout, KernelTables, KernelTablesReport};

use super::frames::KernelFrames;
use crate::{Cpu, boot};

/// The most HHDM ranges kept (Limine reports at most 256 memory-map entries).
const MAX_RANGES: usize = 256;

/// What the switch did, for the self-check and the kernel suite.
static REPORT: Lock<Option<KernelTablesReport>> = Lock::new(level::TABLES_REPORT, None);

/// The image's sections, from `kernel/linker-<arch>.ld` (which keeps `.got` inside the
/// data section, before `__data_end`).
pub fn layout(hhdm_offset: u64) -> KernelLayout {
    unsafe extern "C" {
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __data_start: u8;
        static __data_end: u8;
    }
    let address = |symbol: *const u8| symbol as u64;
    KernelLayout {
        text: address(&raw const __text_start)..address(&raw const __text_end),
        rodata: address(&raw const __rodata_start)..address(&raw const __rodata_end),
        data: address(&raw const __data_start)..address(&raw const __data_end),
        hhdm_offset,
    }
}

/// Build the kernel's tables and switch to them. Boot only, after the frame allocator.
pub fn switch(hhdm_offset: u64) -> Result<KernelTablesReport, &'static str> {
    let mut ranges = [(0u64, 0u64); MAX_RANGES];
    let regions = boot::memory_regions().ok_or("no memory map")?;
    let count = kcore::memory::direct_map(regions, &mut ranges)
        .ok_or("the memory map has too many entries or a wrapping one")?;
    let report =
        Cpu::switch_to_kernel_tables(&layout(hhdm_offset), &ranges[..count], &mut KernelFrames)
            .map_err(|error| match error {
                arch_api::EarlyError::Unsupported(why) => why,
                arch_api::EarlyError::OutOfMemory => "out of frames for page tables",
                _ => "the architecture refused",
            })?;
    *REPORT.lock() = Some(report);
    Ok(report)
}

/// What the switch did (`None` before it).
pub fn report() -> Option<KernelTablesReport> {
    *REPORT.lock()
}
