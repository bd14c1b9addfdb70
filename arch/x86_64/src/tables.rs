//! The x86_64 side of the portable walker (`arch_api::pagetable`): the entry encoding
//! ([`Format`]), page tables reached through the HHDM ([`HhdmTables`]), and the kernel's
//! own page tables ([`switch_to_kernel_tables`], issue 7).
//!
//! # The kernel's own tables
//! Built once, after the frame allocator exists, from what the kernel knows rather than
//! from the loader's layout: the image section by section (text RX, rodata R+NX, data and
//! bss RW+NX; physical addresses read from the loader's tables, since the protocol only
//! guarantees the image is contiguous), the HHDM over the memory-map ranges the core
//! passes (RW+NX, write-back, 2 MiB pages where aligned), and the pages Keel itself mapped
//! in the kernel-stack region and in the device window + IST region, copied entry by entry
//! into new tables. The root entries of those two regions exist before the switch, so user
//! address spaces (which copy the kernel half's root entries) share them. After the CR3
//! write, CR4.PGE is toggled to drop global TLB entries too; the loader's tables are never
//! read again.

use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::pagetable::{self, ENTRIES, EntryFormat, TableMemory, Translation, Walker};
use arch_api::{
    EarlyError, FrameSource, KERNEL_STACK_REGION, KernelLayout, KernelTablesReport, PAGE_SIZE,
    PageFlags,
};
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};

use crate::features::{self, Feature};
use crate::paging::{self, entry, table_at};

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
}

/// Page tables in RAM, reached through the HHDM; new tables come from `frames`.
pub struct HhdmTables<'a> {
    frames: Option<&'a mut dyn FrameSource>,
}

impl<'a> HhdmTables<'a> {
    /// Tables that may grow from `frames`.
    pub fn growing(frames: &'a mut dyn FrameSource) -> Self {
        Self {
            frames: Some(frames),
        }
    }

    /// Tables that are only read, changed or shrunk.
    pub fn fixed() -> Self {
        Self { frames: None }
    }
}

impl TableMemory for HhdmTables<'_> {
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: the walker passes only roots the callers own (the kernel's, a user
        // space's, the loader's while the kernel still runs on it) and addresses taken from
        // their present table entries: page tables in RAM the HHDM maps. `index` < 512.
        unsafe { (*table_at(table))[index % ENTRIES] }
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as in `read`; callers serialize edits of one hierarchy (`&mut` space, or
        // the kernel half on one CPU with interrupts masked) and do the TLB maintenance.
        unsafe { (*table_at(table))[index % ENTRIES] = value };
    }

    fn allocate_table(&mut self) -> Option<u64> {
        // The frame source zeroes the frame through the HHDM (coherent on x86_64).
        self.frames.as_mut()?.alloc_zeroed_frame()
    }
}

/// The regions Keel maps page by page in the kernel half before the switch (copied into
/// the new tables): the kernel-stack region, and the device window with the IST stacks
/// right above it.
fn keel_regions() -> [core::ops::Range<u64>; 2] {
    [
        KERNEL_STACK_REGION,
        paging::DEVICE_WINDOW_BASE..paging::DEVICE_WINDOW_BASE + 2 * paging::DEVICE_WINDOW_SIZE,
    ]
}

fn early(reason: &'static str) -> EarlyError {
    EarlyError::Unsupported(reason)
}

/// Build the kernel's own tables and switch CR3 to them (see the module docs).
pub fn switch_to_kernel_tables(
    layout: &KernelLayout,
    direct_map: &[(u64, u64)],
    frames: &mut dyn FrameSource,
) -> Result<KernelTablesReport, EarlyError> {
    let loader_root = Cr3::read().0.start_address().as_u64();
    if loader_root != paging::kernel_root() {
        return Err(early("the kernel's tables were built already"));
    }
    let format = Format::current();
    let mut counting = Counting {
        frames,
        handed_out: 0,
    };
    let mut memory = HhdmTables::growing(&mut counting);
    let new_root = memory.allocate_table().ok_or(EarlyError::OutOfMemory)?;
    let mut tables = Walker::new(&mut memory, &format, new_root);

    // Keel's own page-mapped regions: their root entries first (shared with every user
    // space), then their pages, entry for entry.
    for region in keel_regions() {
        for slot in pagetable::index(region.start, 3)..=pagetable::index(region.end - 1, 3) {
            if !format.is_present(tables.memory.read(new_root, slot)) {
                let table = tables
                    .memory
                    .allocate_table()
                    .ok_or(EarlyError::OutOfMemory)?;
                tables
                    .memory
                    .write(new_root, slot, format.table_entry(table, false));
            }
        }
        tables
            .copy_pages_from(loader_root, region)
            .map_err(|_| early("cannot copy the kernel's own mappings into its new tables"))?;
    }

    // The image, section by section.
    let text = PageFlags {
        executable: true,
        ..PageFlags::default()
    };
    let rodata = PageFlags::default();
    let data = PageFlags {
        writable: true,
        ..PageFlags::default()
    };
    for (range, flags) in [
        (layout.text.clone(), text),
        (layout.rodata.clone(), rodata),
        (layout.data.clone(), data),
    ] {
        let mut page = range.start & !(PAGE_SIZE - 1);
        while page < range.end {
            let physical = {
                let loader = Walker::new(&mut *tables.memory, &format, loader_root);
                loader
                    .lookup(page)
                    .ok_or(early(
                        "a page of the kernel image is not mapped by the loader",
                    ))?
                    .physical
            };
            tables
                .map(page, physical, flags, 0, true)
                .map_err(|_| early("cannot map the kernel image"))?;
            page += PAGE_SIZE;
        }
    }

    // The HHDM.
    let hhdm = PageFlags {
        writable: true,
        ..PageFlags::default()
    };
    let mut direct_map_bytes = 0;
    for &(base, length) in direct_map {
        let virtual_address = layout
            .hhdm_offset
            .checked_add(base)
            .ok_or(early("the HHDM wraps around"))?;
        tables
            .map_range(virtual_address, base, length, hhdm, true)
            .map_err(|_| early("cannot map the HHDM"))?;
        direct_map_bytes += length;
    }

    // The code running now and its stack must be mapped the same in the new tables.
    let stack_marker = 0u8;
    let here = switch_to_kernel_tables as fn(_, _, _) -> _ as usize as u64;
    for address in [here, core::ptr::from_ref(&stack_marker) as u64] {
        let old = Walker::new(&mut *tables.memory, &format, loader_root).lookup(address);
        let new = tables.lookup(address);
        if old.map(|t| t.physical) != new.map(|t| t.physical) {
            return Err(early(
                "the running code or boot stack would not be mapped by the kernel's tables",
            ));
        }
    }

    // SAFETY: the new root maps the kernel image (this code), the HHDM (the boot stack
    // and every page table), the kernel-stack region and the device window exactly as the
    // loader's did (checked above for the code and stack); interrupts are masked.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) new_root, options(nostack, preserves_flags));
    }
    flush_global();
    paging::set_kernel_root(new_root);
    Ok(KernelTablesReport {
        loader_root,
        kernel_root: new_root,
        table_frames: counting.handed_out,
        direct_map_bytes,
    })
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

/// A frame source that counts what it hands out.
struct Counting<'a> {
    frames: &'a mut dyn FrameSource,
    handed_out: u64,
}

impl FrameSource for Counting<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        let frame = self.frames.alloc_zeroed_frame()?;
        self.handed_out += 1;
        Some(frame)
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
