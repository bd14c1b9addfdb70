//! The x86_64 side of the portable walker (`arch_api::pagetable`): the entry encoding
//! ([`Format`]), HHDM access for [`HhdmTables`], and the switch to the kernel's own page
//! tables ([`switch_to_kernel_tables`]).
//!
//! # The kernel's own tables
//! Built by the portable [`arch_api::kernel_tables::build`]: the image section by section,
//! the HHDM, and the pages Keel itself mapped in the kernel-stack region and in the device
//! window + IST region, copied entry by entry. The root entries of those two regions exist
//! before the switch, so user address spaces (which copy the kernel half's root entries)
//! share them. After the CR3 write, CR4.PGE is toggled to drop global TLB entries too; the
//! loader's tables are never read again.

use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::kernel_tables;
use arch_api::pagetable::{self, EntryFormat, HhdmAccess, Translation, Walker};
use arch_api::{
    EarlyError, FrameSource, KERNEL_STACK_REGION, KernelLayout, KernelTablesReport, PageFlags,
};
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};

use crate::features::{self, Feature};
use crate::paging::{self, entry};

/// Whether kernel leaves carry the global bit (CR4.PGE on).
static GLOBAL_LEAVES: AtomicBool = AtomicBool::new(false);

/// Turn global kernel leaves on (called when CR4.PGE is set).
pub fn set_global_leaves(on: bool) {
    GLOBAL_LEAVES.store(on, Ordering::Relaxed);
}

/// The x86_64 entry encoding (Intel SDM Vol. 3A §4.5). User and kernel tables differ in
/// the U/S bit only; device leaves are PWT + PCD (PAT entry 3, UC, checked at boot).
pub struct Format {
    no_execute: bool,
    global: bool,
}

impl Format {
    /// The encoding for the running CPU (NX if EFER.NXE is on, global kernel leaves with
    /// CR4.PGE).
    pub fn current() -> Self {
        Self {
            no_execute: features::enabled(Feature::NoExecute),
            global: GLOBAL_LEAVES.load(Ordering::Relaxed),
        }
    }
}

impl EntryFormat for Format {
    fn is_present(&self, entry: u64) -> bool {
        entry & entry::PRESENT != 0
    }

    fn is_table(&self, entry: u64, level: u8) -> bool {
        level == pagetable::ROOT_LEVEL || entry & entry::HUGE == 0
    }

    fn address(&self, entry: u64) -> u64 {
        entry & entry::ADDRESS
    }

    fn table_entry(&self, table: u64, user: bool) -> u64 {
        // Intermediate entries grant everything; the leaf decides.
        let mut value = table | entry::PRESENT | entry::WRITABLE;
        if user {
            value |= entry::USER;
        }
        value
    }

    fn table_entry_for_user(&self, entry: u64, user: bool) -> u64 {
        if user { entry | entry::USER } else { entry }
    }

    fn leaf_entry(&self, physical: u64, flags: PageFlags, level: u8) -> u64 {
        let mut value = physical | entry::PRESENT;
        if flags.writable {
            value |= entry::WRITABLE;
        }
        if flags.user {
            value |= entry::USER;
        } else if self.global {
            value |= entry::GLOBAL;
        }
        if !flags.executable && self.no_execute {
            value |= entry::NO_EXECUTE;
        }
        if flags.device {
            value |= entry::WRITE_THROUGH | entry::CACHE_DISABLE;
        }
        if level > 0 {
            value |= entry::HUGE;
        }
        value
    }

    fn leaf_flags(&self, entry: u64, _level: u8) -> PageFlags {
        PageFlags {
            writable: entry & entry::WRITABLE != 0,
            executable: entry & entry::NO_EXECUTE == 0,
            user: entry & entry::USER != 0,
            device: entry & entry::CACHE_DISABLE != 0,
        }
    }

    fn address_fits(&self, physical: u64) -> bool {
        physical & !entry::ADDRESS == 0
    }

    fn count_shift(&self) -> u32 {
        // Bits 52..=61 of a PML4E, PDPTE or PDE that points to a table are ignored.
        52
    }
}

/// The x86_64 side of [`pagetable::HhdmTables`]: entries read and written through the HHDM
/// (the table walker snoops the caches, so nothing more is needed).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hhdm;

impl HhdmAccess for Hhdm {
    #[inline(always)]
    fn offset(&self) -> u64 {
        paging::hhdm_offset().unwrap_or(0)
    }

    #[inline(always)]
    fn read(&self, address: u64) -> u64 {
        // SAFETY: `HhdmTables` passes the HHDM address of an entry of a table the walker
        // reached: a root the callers own (the kernel's, a user space's, the loader's while
        // the kernel still runs on it) or an address from a present entry of one. Page
        // tables are RAM the HHDM maps; the address is 8-aligned.
        unsafe { (address as *const u64).read_volatile() }
    }

    #[inline(always)]
    fn write(&self, address: u64, value: u64) {
        // SAFETY: as in `read`; callers serialize edits of one hierarchy (`&mut` space, or
        // the kernel half on one CPU with interrupts masked) and do the TLB maintenance.
        unsafe { (address as *mut u64).write_volatile(value) };
    }
}

/// Page tables in RAM, reached through the HHDM; new tables come from a frame source.
pub type HhdmTables<'a> = pagetable::HhdmTables<'a, Hhdm>;

/// The regions Keel maps page by page in the kernel half before the switch (copied into
/// the new tables): the kernel-stack region, and the device window with the IST stacks
/// right above it.
fn keel_regions() -> [core::ops::Range<u64>; 2] {
    [
        KERNEL_STACK_REGION,
        paging::DEVICE_WINDOW_BASE..paging::DEVICE_WINDOW_BASE + 2 * paging::DEVICE_WINDOW_SIZE,
    ]
}

/// Build the kernel's own tables ([`arch_api::kernel_tables::build`]) and switch CR3 to
/// them (see the module docs).
pub fn switch_to_kernel_tables(
    layout: &KernelLayout,
    direct_map: &[(u64, u64)],
    frames: &mut dyn FrameSource,
) -> Result<KernelTablesReport, EarlyError> {
    let loader_root = Cr3::read().0.start_address().as_u64();
    if loader_root != paging::kernel_root() {
        return Err(EarlyError::Unsupported(
            "the kernel's tables were built already",
        ));
    }
    // The code running now and its stack must stay mapped to the same frames.
    let stack_marker = 0u8;
    let here = switch_to_kernel_tables as fn(_, _, _) -> _ as usize as u64;
    let report = kernel_tables::build(
        &mut HhdmTables::growing(frames),
        &Format::current(),
        loader_root,
        layout,
        direct_map,
        &keel_regions(),
        &[here, core::ptr::from_ref(&stack_marker) as u64],
    )?;
    // SAFETY: the new root maps the kernel image (this code), the HHDM (the boot stack
    // and every page table), the kernel-stack region and the device window exactly as the
    // loader's did (checked by `build` for the code and stack); interrupts are masked.
    unsafe {
        core::arch::asm!(
            "mov cr3, {}",
            in(reg) report.kernel_root,
            options(nostack, preserves_flags)
        );
    }
    flush_global();
    paging::set_kernel_root(report.kernel_root);
    Ok(report)
}

/// Drop every TLB entry, global ones included, by toggling CR4.PGE (when it is on).
fn flush_global() {
    let flags = Cr4::read();
    if flags.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and setting PGE again only flushes the TLB (SDM §4.10.4.1).
        unsafe {
            Cr4::write(flags - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(flags);
        }
    }
}

/// What the active tables map at `virtual_address`.
pub fn lookup_active(virtual_address: u64) -> Option<Translation> {
    let root = Cr3::read().0.start_address().as_u64();
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &Format::current(), root).lookup(virtual_address)
}

/// The active root table.
pub fn active_root() -> u64 {
    Cr3::read().0.start_address().as_u64()
}
