//! Early paging: reading the active page tables, and mapping devices into them.
//!
//! Early init runs on the loader's tables (found through CR3 and walked through the
//! HHDM); the core then switches to the kernel's own ([`crate::tables`]), which copy the
//! device window's pages, and everything here keeps working on CR3. Device registers are mapped
//! here, uncached, into a fixed kernel device window — never reached through the HHDM,
//! which maps everything write-back (DESIGN.md §4). [`device_mappings`] lists what was
//! mapped so the kernel's own page tables can carry the same mappings over.
//!
//! Weak spot: `x86_64` 4-level paging only (no LA57); the window is a bump allocator that
//! never unmaps.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use arch_api::pagetable::Walker;
use arch_api::{EarlyError, FrameSource, MapError, PageFlags};
use spin::Mutex;
use x86_64::VirtAddr;
use x86_64::instructions::tlb;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::Msr;

/// The kernel's device window: fixed, above any HHDM Limine places (checked at boot).
pub const DEVICE_WINDOW_BASE: u64 = 0xFFFF_FE00_0000_0000;
/// One GiB of device registers is far more than the kernel will ever map itself (user
/// drivers get their MMIO mapped into their own address spaces).
pub const DEVICE_WINDOW_SIZE: u64 = 1 << 30;

const PAGE_SIZE: u64 = 4096;
pub(crate) const ENTRIES: usize = 512;

/// Page-table entry bits (Intel SDM Vol. 3A, §4.5).
pub(crate) mod entry {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// In a PDPT or PD entry: maps a 1 GiB or 2 MiB page.
    pub const HUGE: u64 = 1 << 7;
    /// In a leaf: survives CR3 writes and PCID changes (kernel pages, with CR4.PGE).
    pub const GLOBAL: u64 = 1 << 8;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Physical address bits 12..51 of the next table or the page.
    pub const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
}

/// `IA32_PAT`; entry n is bits `8n..8n+3`. A 4 KiB PTE with PWT + PCD and PAT = 0 selects
/// entry 3, whose power-up value (kept by OVMF and Limine) is UC.
const PAT_MSR: u32 = 0x277;
const PAT_UNCACHEABLE: u64 = 0x00;

static HHDM_OFFSET: AtomicU64 = AtomicU64::new(0);
static NEXT_DEVICE_PAGE: AtomicU64 = AtomicU64::new(DEVICE_WINDOW_BASE);

/// One device mapping made by [`map_device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMapping {
    pub physical: u64,
    pub virtual_address: u64,
    pub size: u64,
}

const MAX_DEVICE_MAPPINGS: usize = 8;
static DEVICE_MAPPINGS: Mutex<([Option<DeviceMapping>; MAX_DEVICE_MAPPINGS], usize)> =
    Mutex::new(([None; MAX_DEVICE_MAPPINGS], 0));

/// Every device mapping made so far (for the kernel's own page tables, later).
pub fn device_mappings() -> impl Iterator<Item = DeviceMapping> {
    let (mappings, count) = *DEVICE_MAPPINGS.lock();
    mappings.into_iter().take(count).flatten()
}

/// Remember where the HHDM is; everything below reads page tables through it.
pub fn set_hhdm_offset(offset: u64) {
    HHDM_OFFSET.store(offset, Ordering::Relaxed);
}

/// Physical address of the kernel's root table (the loader's PML4, read from CR3 at boot):
/// its higher half is the kernel half every user address space copies.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

/// Remember the active root table as the kernel's (early init, before any user space).
pub fn record_kernel_root() {
    KERNEL_ROOT.store(Cr3::read().0.start_address().as_u64(), Ordering::Relaxed);
}

/// The kernel's own root replaces the loader's (`tables::switch_to_kernel_tables`).
pub fn set_kernel_root(root: u64) {
    KERNEL_ROOT.store(root, Ordering::Relaxed);
}

/// Physical address of the kernel's root table.
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(Ordering::Relaxed)
}

pub(crate) fn hhdm_offset() -> Option<u64> {
    match HHDM_OFFSET.load(Ordering::Relaxed) {
        0 => None,
        offset => Some(offset),
    }
}

/// Refuse a device window that the HHDM could cover. The HHDM maps the first 4 GiB plus
/// every memory-map entry above; no entry can end above the CPU's physical address width,
/// so `[hhdm, hhdm + 4 GiB + 2^MAXPHYADDR)` bounds it without trusting the memory map.
pub fn check_device_window(hhdm_offset: u64, physical_address_bits: u8) -> Result<(), EarlyError> {
    let covered = (4u64 << 30).saturating_add(1u64 << physical_address_bits.min(52));
    let hhdm_end = hhdm_offset.saturating_add(covered);
    // The window, and the guarded IST stacks right above it (`percpu::IST_REGION_BASE`).
    let window_end = DEVICE_WINDOW_BASE + 2 * DEVICE_WINDOW_SIZE;
    if hhdm_offset < window_end && DEVICE_WINDOW_BASE < hhdm_end {
        return Err(EarlyError::Unsupported(
            "the HHDM overlaps the kernel's device window at 0xffff_fe00_0000_0000",
        ));
    }
    Ok(())
}

/// Check that PAT entry 3 is UC, as the device mappings assume.
pub fn check_pat() -> Result<(), EarlyError> {
    // SAFETY: IA32_PAT exists on every x86_64 CPU; reading it has no side effect.
    let pat = unsafe { Msr::new(PAT_MSR).read() };
    if (pat >> 24) & 0x7 != PAT_UNCACHEABLE {
        return Err(EarlyError::Unsupported(
            "PAT entry 3 is not UC (the firmware changed the PAT)",
        ));
    }
    Ok(())
}

/// The page table at physical address `table`, through the HHDM.
///
/// # Safety
/// `table` is the physical address of a page table of the active hierarchy, and the HHDM
/// offset has been set.
pub(crate) unsafe fn table_at(table: u64) -> *mut [u64; ENTRIES] {
    (HHDM_OFFSET.load(Ordering::Relaxed) + table) as *mut [u64; ENTRIES]
}

pub(crate) fn index(virtual_address: u64, level: u32) -> usize {
    ((virtual_address >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// Map `size` bytes of device registers at `physical` into the device window, uncached
/// (PAT entry 3: UC), writable, not executable, supervisor only. Returns the virtual address
/// of `physical` (same offset within the page).
pub fn map_device(
    frames: &mut dyn FrameSource,
    physical: u64,
    size: u64,
) -> Result<u64, EarlyError> {
    if hhdm_offset().is_none() {
        return Err(EarlyError::Unsupported(
            "device mapping before the HHDM offset is known",
        ));
    }
    let first_page = physical & !(PAGE_SIZE - 1);
    let pages = (physical + size)
        .next_multiple_of(PAGE_SIZE)
        .saturating_sub(first_page)
        / PAGE_SIZE;
    let virtual_base = NEXT_DEVICE_PAGE.fetch_add(pages * PAGE_SIZE, Ordering::Relaxed);
    if virtual_base + pages * PAGE_SIZE > DEVICE_WINDOW_BASE + DEVICE_WINDOW_SIZE {
        return Err(EarlyError::Unsupported(
            "the kernel's device window is full",
        ));
    }
    // Writable, never executable, uncached (PWT + PCD: PAT entry 3, UC, checked at boot),
    // supervisor only.
    let flags = PageFlags {
        writable: true,
        device: true,
        ..PageFlags::default()
    };
    for page in 0..pages {
        let virtual_address = virtual_base + page * PAGE_SIZE;
        map_page(
            frames,
            virtual_address,
            first_page + page * PAGE_SIZE,
            flags,
        )?;
        tlb::flush(VirtAddr::new(virtual_address));
    }
    let mut mappings = DEVICE_MAPPINGS.lock();
    let (list, count) = &mut *mappings;
    if let Some(slot) = list.get_mut(*count) {
        *slot = Some(DeviceMapping {
            physical: first_page,
            virtual_address: virtual_base,
            size: pages * PAGE_SIZE,
        });
        *count += 1;
    }
    Ok(virtual_base + (physical - first_page))
}

/// Install one 4 KiB leaf in the kernel root (the loader's before the switch to the
/// kernel's own tables, then the kernel's; never a user space's copy), creating the
/// intermediate tables it needs, through the portable walker.
fn map_page(
    frames: &mut dyn FrameSource,
    virtual_address: u64,
    physical: u64,
    flags: PageFlags,
) -> Result<(), EarlyError> {
    let format = crate::tables::Format::current();
    let mut memory = crate::tables::HhdmTables::growing(frames);
    Walker::new(&mut memory, &format, kernel_root())
        .map(virtual_address, physical, flags, 0, true)
        .map_err(|error| match error {
            MapError::OutOfMemory => EarlyError::OutOfMemory,
            MapError::AlreadyMapped => {
                EarlyError::Unsupported("a page of the kernel's device window is already mapped")
            }
            _ => EarlyError::Unsupported("a device page cannot be mapped in the device window"),
        })
}

/// What the active page tables say about one virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub physical: u64,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
}

/// Walk the active page tables for `virtual_address`. `None` if it is not mapped, or the
/// HHDM offset is not known yet (the tables cannot be read then).
pub fn translate(virtual_address: u64) -> Option<Translation> {
    hhdm_offset()?;
    let canonical = ((virtual_address << 16) as i64 >> 16) as u64;
    if canonical != virtual_address {
        return None;
    }
    let mut table = Cr3::read().0.start_address().as_u64();
    let (mut writable, mut user, mut executable) = (true, true, true);
    for level in (1..=4).rev() {
        // SAFETY: `table` is CR3's root or a table reached from it through present entries;
        // the HHDM maps the loader's page tables.
        let value = unsafe { (*table_at(table))[index(virtual_address, level)] };
        if value & entry::PRESENT == 0 {
            return None;
        }
        writable &= value & entry::WRITABLE != 0;
        user &= value & entry::USER != 0;
        executable &= value & entry::NO_EXECUTE == 0;
        let page_size = 1u64 << (12 + 9 * (level - 1));
        if level == 1 || (level <= 3 && value & entry::HUGE != 0) {
            let base = value & entry::ADDRESS & !(page_size - 1);
            let physical = base + (virtual_address & (page_size - 1));
            return Some(Translation {
                physical,
                writable,
                user,
                executable,
            });
        }
        table = value & entry::ADDRESS;
    }
    None
}

/// Whether `[address, address + length)` is mapped (readable) in the active page tables.
pub fn is_readable(address: u64, length: u64) -> bool {
    let Some(last) = address.checked_add(length.max(1) - 1) else {
        return false;
    };
    let mut page = address & !(PAGE_SIZE - 1);
    while page <= last {
        if translate(page).is_none() {
            return false;
        }
        match page.checked_add(PAGE_SIZE) {
            Some(next) => page = next,
            None => break,
        }
    }
    true
}

/// A one-line description of an address's mapping, for fault reports.
pub fn describe(virtual_address: u64) -> impl fmt::Display {
    struct Description(Option<Translation>);
    impl fmt::Display for Description {
        fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0 {
                None if hhdm_offset().is_none() => write!(out, "page tables not readable yet"),
                None => write!(out, "not mapped"),
                Some(t) => write!(
                    out,
                    "mapped to physical {:#x} ({}, {}, {})",
                    t.physical,
                    if t.writable { "writable" } else { "read-only" },
                    if t.user { "user" } else { "supervisor" },
                    if t.executable {
                        "executable"
                    } else {
                        "no-execute"
                    },
                ),
            }
        }
    }
    Description(translate(virtual_address))
}
