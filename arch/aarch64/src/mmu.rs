//! Device mappings: a MAIR index for Device-nGnRE and a kernel window that maps MMIO with it.
//!
//! Limine maps the HHDM (which covers device MMIO below 4 GiB) as Normal write-back memory
//! and leaves device attributes to the kernel (PROTOCOL.md, "Caching", aarch64): `MAIR_EL1`
//! holds at least the entries its mappings use, in an unspecified order. Touching a UART or
//! GIC through a cacheable alias is unpredictable (Arm ARM B2.8, mismatched attributes), so
//! the kernel maps each device again, Device-nGnRE, at [`WINDOW_BASE`] and upwards in the
//! *current* TTBR1 tables (the loader's, reached through the HHDM), allocating missing tables
//! from the core's early frame source; the kernel's own tables copy these pages when the
//! core switches to them (`paging::switch_to_kernel_tables`).
//!
//! The attribute index is chosen so no existing mapping changes meaning: an index that
//! already holds Device-nGnRE, else one no TTBR1 descriptor uses (Limine's entries are all in
//! use by its own mappings, so they stay intact).

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{MAIR_EL1, Readable, TCR_EL1, TTBR1_EL1, Writeable};
use arch_api::{EarlyError, FrameSource};

use crate::devicetree::Region;

/// First virtual address of the kernel's device window (DESIGN.md §5: a fixed kernel region).
pub const WINDOW_BASE: u64 = 0xffff_fe00_0000_0000;
/// Size of the device window.
pub const WINDOW_SIZE: u64 = 1 << 30;
/// A kernel address that is never mapped (the device window's last page: `map` always
/// leaves a guard page above each mapping and never reaches it), for the self-test's
/// kernel page fault.
#[cfg(feature = "testing")]
pub const RESERVED_TEST_ADDRESS: u64 = WINDOW_BASE + WINDOW_SIZE - PAGE;
/// The HHDM covers at least the first 4 GiB (base revision 2), plus RAM above.
const HHDM_MINIMUM: u64 = 4 << 30;

const PAGE: u64 = 4096;
const ENTRIES: u64 = 512;
/// MAIR encoding of Device-nGnRE (Arm ARM D19.2, MAIR_EL1.Attr<n> = 0b0000_0100).
const DEVICE_NGNRE: u64 = 0x04;
/// Output-address bits [47:12] of a descriptor.
const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
/// Descriptor type bits: table (levels 0–2) or page (level 3); `0b01` is a block.
const TABLE_OR_PAGE: u64 = 0b11;
const BLOCK: u64 = 0b01;
const ATTR_INDEX_SHIFT: u64 = 2;
/// Access flag: set, so the first access does not fault.
const AF: u64 = 1 << 10;
/// Privileged and unprivileged execute-never.
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
/// TCR_EL1.DS (52-bit output addresses with 4 KiB granules), which Keel does not support.
const TCR_DS: u64 = 1 << 59;
/// Above this many pages one full TLB invalidation is cheaper than one per page.
const TLBI_PAGE_LIMIT: u64 = 64;

/// The device window: the loader's TTBR1 tables and the next free virtual address.
pub struct DeviceWindow {
    hhdm_offset: u64,
    root: u64,
    next: u64,
    attr_index: u64,
    /// Whether the table walker reads through the data cache (TCR_EL1.IRGN1 != 0); when not,
    /// every table write is cleaned to the point of coherency.
    walks_cacheable: bool,
}

impl DeviceWindow {
    /// Check the paging configuration the loader left, check the window is clear of the
    /// HHDM, and set up a Device-nGnRE MAIR index.
    pub fn new(hhdm_offset: u64, memory_top: u64) -> Result<Self, EarlyError> {
        let tcr = TCR_EL1.get();
        if TCR_EL1.read(TCR_EL1::TG1) != 0b10 || TCR_EL1.read(TCR_EL1::T1SZ) != 16 {
            return Err(EarlyError::Unsupported(
                "TTBR1 paging is not 4 KiB granule, 48-bit (TCR_EL1.TG1/T1SZ)",
            ));
        }
        if tcr & TCR_DS != 0 {
            return Err(EarlyError::Unsupported(
                "TCR_EL1.DS (52-bit addressing) is set",
            ));
        }
        // Conservative: the HHDM spans at most 4 GiB plus everything up to the top of RAM.
        let hhdm_end = hhdm_offset
            .saturating_add(HHDM_MINIMUM)
            .saturating_add(memory_top);
        let window_end = WINDOW_BASE + WINDOW_SIZE;
        if hhdm_offset < window_end && WINDOW_BASE < hhdm_end {
            return Err(EarlyError::Unsupported(
                "the HHDM overlaps the kernel device window 0xffff_fe00_0000_0000 (1 GiB)",
            ));
        }
        let mut window = Self {
            hhdm_offset,
            root: TTBR1_EL1.get() & ADDRESS,
            next: WINDOW_BASE,
            attr_index: 0,
            walks_cacheable: TCR_EL1.read(TCR_EL1::IRGN1) != 0,
        };
        window.attr_index = window.device_attr_index()?;
        Ok(window)
    }

    /// The MAIR index in use for Device-nGnRE.
    pub fn attr_index(&self) -> u64 {
        self.attr_index
    }

    fn device_attr_index(&self) -> Result<u64, EarlyError> {
        let mair = MAIR_EL1.get();
        let attribute = |index: u64| (mair >> (index * 8)) & 0xff;
        if let Some(index) = (0..8).find(|&index| attribute(index) == DEVICE_NGNRE) {
            return Ok(index);
        }
        let used = self.used_attr_indices(self.root, 0);
        let free = |index: &u64| used & (1 << index) == 0;
        // Prefer an unused, never-programmed entry (0x00); else any unused Device entry. An
        // unused Normal-memory entry is left alone: it may be the loader's framebuffer type.
        let index = (0..8)
            .rev()
            .filter(free)
            .find(|&index| attribute(index) == 0)
            .or_else(|| {
                (0..8)
                    .rev()
                    .filter(free)
                    .find(|&index| attribute(index) & 0xf0 == 0)
            })
            .ok_or(EarlyError::Unsupported(
                "no free MAIR_EL1 index for Device-nGnRE",
            ))?;
        let updated = (mair & !(0xff << (index * 8))) | (DEVICE_NGNRE << (index * 8));
        MAIR_EL1.set(updated);
        // No descriptor refers to this index, so no TLB entry can hold its old value; the
        // invalidation is belt and braces, the ISB makes the new MAIR visible.
        barrier::dsb(barrier::ISHST);
        // SAFETY: invalidating TLB entries only costs refills.
        unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
        barrier::dsb(barrier::ISH);
        barrier::isb(barrier::SY);
        Ok(index)
    }

    /// Bitmask of the MAIR indices used by the leaf descriptors under `table` at `level`.
    fn used_attr_indices(&self, table: u64, level: u64) -> u8 {
        let mut used = 0u8;
        for index in 0..ENTRIES {
            let entry = self.read_entry(table, index);
            let kind = entry & TABLE_OR_PAGE;
            let leaf = (level == 3 && kind == TABLE_OR_PAGE) || (level < 3 && kind == BLOCK);
            if leaf {
                used |= 1 << ((entry >> ATTR_INDEX_SHIFT) & 7);
            } else if level < 3 && kind == TABLE_OR_PAGE {
                used |= self.used_attr_indices(entry & ADDRESS, level + 1);
            }
        }
        used
    }

    fn entry_pointer(&self, table: u64, index: u64) -> *mut u64 {
        (self.hhdm_offset + table + index * 8) as *mut u64
    }

    fn read_entry(&self, table: u64, index: u64) -> u64 {
        // SAFETY: `table` is the physical address of a translation table in use (TTBR1's
        // root or an address taken from a table descriptor), which lies in RAM the loader
        // reported and the HHDM maps; reading it has no side effect.
        unsafe { self.entry_pointer(table, index).read_volatile() }
    }

    fn write_entry(&self, table: u64, index: u64, value: u64) {
        let pointer = self.entry_pointer(table, index);
        // SAFETY: as in `read_entry`; the entries written are inside the device window,
        // which nothing else maps (checked by the callers), so no live mapping changes.
        unsafe { pointer.write_volatile(value) };
        self.clean(pointer as u64, 8);
    }

    /// Map `region` with device attributes; returns the virtual address of `region.base`.
    /// Each mapping is followed by an unmapped guard page.
    pub fn map(
        &mut self,
        region: Region,
        frames: &mut dyn FrameSource,
    ) -> Result<usize, EarlyError> {
        let start = region.base & !(PAGE - 1);
        let end = region
            .base
            .checked_add(region.size)
            .map(|end| end.next_multiple_of(PAGE))
            .ok_or(EarlyError::MissingDevice("device region wraps around"))?;
        let length = end - start;
        if self.next + length + PAGE > WINDOW_BASE + WINDOW_SIZE {
            return Err(EarlyError::Unsupported("the kernel device window is full"));
        }
        let virt = self.next;
        for offset in (0..length).step_by(PAGE as usize) {
            self.map_page(virt + offset, start + offset, frames)?;
        }
        self.next = virt + length + PAGE;
        flush_tlb(virt, length / PAGE);
        Ok((virt + (region.base - start)) as usize)
    }

    fn map_page(
        &self,
        virt: u64,
        phys: u64,
        frames: &mut dyn FrameSource,
    ) -> Result<(), EarlyError> {
        // The active TTBR1 root (the loader's during early init; the kernel's own after the
        // switch), never a root remembered from before it.
        let mut table = TTBR1_EL1.get() & ADDRESS;
        for level in 0..3 {
            let index = (virt >> (39 - 9 * level)) & (ENTRIES - 1);
            let entry = self.read_entry(table, index);
            table = match entry & TABLE_OR_PAGE {
                TABLE_OR_PAGE => entry & ADDRESS,
                0 => {
                    let frame = frames.alloc_zeroed_frame().ok_or(EarlyError::OutOfMemory)?;
                    self.clean(self.hhdm_offset + frame, PAGE);
                    // The zeroes must be visible to the walker before the table is linked.
                    barrier::dsb(barrier::ISHST);
                    self.write_entry(table, index, frame | TABLE_OR_PAGE);
                    frame
                }
                _ => {
                    return Err(EarlyError::Unsupported(
                        "the loader maps a block inside the kernel device window",
                    ));
                }
            };
        }
        let index = (virt >> 12) & (ENTRIES - 1);
        if self.read_entry(table, index) & 1 != 0 {
            return Err(EarlyError::Unsupported(
                "a page of the kernel device window is in use",
            ));
        }
        let descriptor = (phys & ADDRESS)
            | TABLE_OR_PAGE
            | (self.attr_index << ATTR_INDEX_SHIFT)
            | AF
            | PXN
            | UXN;
        self.write_entry(table, index, descriptor);
        Ok(())
    }

    /// Clean `[virt, virt + length)` to the point of coherency when the walker does not snoop
    /// the data cache.
    fn clean(&self, virt: u64, length: u64) {
        if self.walks_cacheable {
            return;
        }
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effect.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut address = virt & !(line - 1);
        while address < virt + length {
            // SAFETY: cleaning a line that the kernel maps writes back dirty data only.
            unsafe { core::arch::asm!("dc cvac, {}", in(reg) address, options(nostack)) };
            address += line;
        }
    }
}

/// Make new translations of `[virt, virt + pages * 4 KiB)` visible: order the table writes,
/// drop any cached translation, wait, and resynchronize the instruction stream.
fn flush_tlb(virt: u64, pages: u64) {
    barrier::dsb(barrier::ISHST);
    if pages > TLBI_PAGE_LIMIT {
        // SAFETY: invalidating TLB entries only costs refills.
        unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
    } else {
        for page in 0..pages {
            // TLBI VAAE1IS takes VA[55:12] in bits [43:0].
            let operand = ((virt + page * PAGE) >> 12) & ((1 << 44) - 1);
            // SAFETY: as above.
            unsafe {
                core::arch::asm!("tlbi vaae1is, {}", in(reg) operand, options(nostack, preserves_flags));
            }
        }
    }
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}
