//! Address spaces: kernel pages in the shared TTBR1 tables, one TTBR0 root per user address
//! space tagged with an ASID, and the user-memory copies (`arch_api::Paging`).
//!
//! # Principles
//!
//! - **Attributes are copied, not assumed.** Normal memory uses the MAIR index and
//!   shareability the loader gave the kernel's own data (read back with `AT S1E1R` and
//!   PAR_EL1), so a kernel-stack page and its HHDM alias never have mismatched attributes.
//! - **Barriers after every table write** (Arm ARM D8.2, "Ordering of translation table
//!   updates"): `dsb ishst` before the walker may see a new entry; on removal `dsb ishst`,
//!   `tlbi`, `dsb ish`, `isb`. New tables are zeroed before they are linked.
//! - **User pages**: EL0 access bits, always PXN, UXN unless executable, W^X refused, nG so
//!   the TLB tags them with the space's ASID; every address outside the user half
//!   ([`UserRange`]: page 0, and everything at or above `USER_END`) is refused.
//! - **ASIDs** are 16-bit when ID_AA64MMFR0_EL1.ASIDBits says so (TCR_EL1.AS set), else
//!   8-bit. ASID 0 belongs to the empty root TTBR0 holds when no user space is active.
//!   ASIDs are handed out by generation (below), so any number of spaces can live.
//! - **Every invalidation is broadcast** to the inner-shareable domain (`tlbi vae1is`,
//!   `aside1is`, `vmalle1is`, each after `dsb ishst` and followed by `dsb ish` + `isb`), so
//!   when unmap, protect or destroy returns no CPU holds the old translation. No IPI is
//!   needed for that; only [`destroy`] asks the CPUs that have the space active (each
//!   CPU's active slot, `arch_api::tlb::ActiveSpaces`: one store per activation, no mask
//!   to update) to switch TTBR0 to the empty root first ([`Request::Leave`]), so no CPU
//!   can walk the tables once they are freed.
//! - **User copies** run through `LDTR`/`STTR` (unprivileged loads and stores): they are
//!   checked with EL0's permissions, so PAN stays on even inside the copies, a read-only
//!   user page cannot be written by `copy_to_user`, and a fault resumes through the
//!   exception-fixup table ([`crate::trap::fixup`]) as [`UserAccessFault`].
//!
//! The walks themselves are the portable `arch_api::pagetable` walker, over [`Format`]
//! (this architecture's descriptors) and [`HhdmTables`] (tables reached through the HHDM,
//! cleaned for the walker by [`Hhdm`]); [`switch_to_kernel_tables`] switches to the
//! kernel's own TTBR1 hierarchy, built by `arch_api::kernel_tables`.
//!
//! # ASID generations
//! A space's `context` is its ASID generation and ASID; [`activate`] keeps the ASID while
//! the generation is current and otherwise re-gets one, rolling the generation over (and
//! flushing every TLB with `tlbi vmalle1is`) when none is free: `arch_api::asid`, which
//! also states when an ASID may be reused. [`destroy`] frees its space's ASID after every
//! CPU left the space and its entries were dropped everywhere (`tlbi aside1is`).

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::asm::barrier;
use arch_api::{
    EarlyError, FrameSource, KERNEL_STACK_REGION, KernelLayout, KernelTablesReport, MapError,
    PAGE_SIZE, PageFlags, UserAccessFault, UserRange,
};
use spin::Mutex;

use arch_api::asid::{Generations, TAG_MASK as ASID_MASK};
use arch_api::cache::{CacheType, line_span};
use arch_api::kernel_tables;
use arch_api::pagetable::{self, EntryFormat, HhdmAccess, KeptTable, Pruned, Walker};
use arch_api::tlb::{self, ActiveSpaces, CpuMask, Mailboxes, Request, SpaceCpus, SwitchHandle};

use crate::sysreg::{self, masked};

/// Output-address bits [47:12] of a descriptor.
const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
/// Valid + table (levels 0–2) or page (level 3).
const TABLE_OR_PAGE: u64 = 0b11;
const VALID: u64 = 1;
/// A block descriptor (levels 1 and 2).
const BLOCK: u64 = 0b01;
const ATTR_INDEX_SHIFT: u64 = 2;
/// AP[1]: EL0 may access.
const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only (at every level that may access).
const AP_READ_ONLY: u64 = 1 << 7;
const SH_SHIFT: u64 = 8;
/// Access flag, set so the first access does not fault.
const AF: u64 = 1 << 10;
/// Not global: the TLB entry is tagged with the ASID.
const NG: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
/// The lowest address translated through TTBR1 (T1SZ = 16).
const KERNEL_HALF: u64 = 0xffff_0000_0000_0000;

/// TCR_EL1 fields Keel sets for the TTBR0 half.
const TCR_T0SZ_MASK: u64 = 0x3f;
const TCR_EPD0: u64 = 1 << 7;
const TCR_TG0_MASK: u64 = 0b11 << 14;
const TCR_A1: u64 = 1 << 22;
const TCR_AS: u64 = 1 << 36;

/// Facts fixed by [`init`].
static HHDM: AtomicU64 = AtomicU64::new(0);
/// The low attribute bits of a normal-memory page: AttrIndx and SH.
static NORMAL_ATTRIBUTES: AtomicU64 = AtomicU64::new(0);
/// The low attribute bits of a device page: AttrIndx.
static DEVICE_ATTRIBUTES: AtomicU64 = AtomicU64::new(0);
/// Whether the table walker snoops the data cache (TCR_EL1.IRGN0/1 cacheable).
static WALKS_CACHEABLE: AtomicBool = AtomicBool::new(true);
/// The empty TTBR0 root (ASID 0) used when no user space is active.
static EMPTY_ROOT: AtomicU64 = AtomicU64::new(0);
/// Whether ASIDs are 16-bit.
static WIDE_ASIDS: AtomicBool = AtomicBool::new(false);

/// Serializes writes to the shared kernel tables. Taken only with IRQs masked
/// ([`masked`]), so a preempted holder cannot leave another thread spinning.
static KERNEL_TABLES: Mutex<()> = Mutex::new(());
/// The ASIDs, by generation (`arch_api::asid`).
static ASIDS: Generations = Generations::new();
/// A test's cap on the ASIDs handed out (0: the CPU's).
static ASID_LIMIT: AtomicUsize = AtomicUsize::new(0);
/// The space each CPU has active.
static ACTIVE: ActiveSpaces = ActiveSpaces::new();
/// The TLB requests between CPUs.
static MAILBOXES: Mailboxes = Mailboxes::new();

/// The highest ASID handed out: the CPU's, or a test's lower cap.
fn asid_limit() -> u64 {
    let cap = ASID_LIMIT.load(Ordering::Relaxed) as u64;
    let hardware = max_asid() as u64;
    if cap == 0 {
        hardware
    } else {
        cap.min(hardware)
    }
}

/// Cap the ASIDs handed out at `limit` (`None`: the CPU's; `arch_api::asid` never goes
/// below twice the CPUs the kernel can have, so a rollover always leaves free ones).
#[cfg(feature = "testing")]
pub fn limit_asids(limit: Option<u32>) {
    ASID_LIMIT.store(limit.map_or(0, |limit| limit as usize), Ordering::Relaxed);
}

/// How many ASID generations rolled over since boot.
#[cfg(feature = "testing")]
pub fn asid_rollovers() -> u64 {
    ASIDS.rollovers()
}

/// Read the loader's attributes, configure TTBR0 walks with ASIDs and point TTBR0 at an
/// empty root. Boot only, before any user space exists.
pub fn init(
    hhdm_offset: u64,
    device_attr_index: u64,
    frames: &mut dyn FrameSource,
) -> Result<(), &'static str> {
    HHDM.store(hhdm_offset, Ordering::Relaxed);
    DEVICE_ATTRIBUTES.store(device_attr_index << ATTR_INDEX_SHIFT, Ordering::Relaxed);

    // The attributes the loader gave this very static (kernel .data: normal write-back).
    let par = translate(core::ptr::from_ref(&HHDM) as u64).ok_or("kernel data is not mapped")?;
    let attribute = par >> 56;
    let shareability = (par >> 7) & 0b11;
    let mair = sysreg::read!("mair_el1");
    let index = (0..8)
        .find(|index| (mair >> (index * 8)) & 0xff == attribute)
        .ok_or("the kernel's memory type is in no MAIR_EL1 entry")?;
    NORMAL_ATTRIBUTES.store(
        (index << ATTR_INDEX_SHIFT) | (shareability << SH_SHIFT),
        Ordering::Relaxed,
    );

    let mut tcr = sysreg::read!("tcr_el1");
    WALKS_CACHEABLE.store(
        (tcr >> 8) & 0b11 != 0 && (tcr >> 24) & 0b11 != 0,
        Ordering::Relaxed,
    );
    let asid_bits = (sysreg::read!("id_aa64mmfr0_el1") >> 4) & 0xf;
    let wide = asid_bits == 0b0010;
    WIDE_ASIDS.store(wide, Ordering::Relaxed);

    let root = frames
        .alloc_zeroed_frame()
        .ok_or("no frame for the empty TTBR0 root")?;
    clean(hhdm_offset + root, PAGE_SIZE);
    EMPTY_ROOT.store(root, Ordering::Relaxed);
    barrier::dsb(barrier::ISHST);
    // The loader promises nothing in TTBR0 (its identity map is gone): point it at the empty
    // root before changing how TTBR0 walks, so no walk uses a half-changed configuration.
    sysreg::write!("ttbr0_el1", root);
    // 48-bit, 4 KiB granule, walks enabled, the ASID taken from TTBR0; the cacheability
    // and shareability of walks stay as the loader set them.
    tcr &= !(TCR_T0SZ_MASK | TCR_EPD0 | TCR_TG0_MASK | TCR_A1 | TCR_AS);
    tcr |= 16;
    if wide {
        tcr |= TCR_AS;
    }
    sysreg::write!("tcr_el1", tcr);
    // The ASID width changed meaning: drop every cached translation.
    flush_all();
    Ok(())
}

/// The empty TTBR0 root (ASID 0), for a CPU with no user space active.
pub fn empty_root() -> u64 {
    EMPTY_ROOT.load(Ordering::Relaxed)
}

/// The highest ASID this CPU supports.
fn max_asid() -> usize {
    if WIDE_ASIDS.load(Ordering::Relaxed) {
        0xffff
    } else {
        0xff
    }
}

/// Translate `address` for an EL1 read (`AT S1E1R`); PAR_EL1 on success.
pub fn translate(address: u64) -> Option<u64> {
    // SAFETY: AT only asks the MMU to translate and writes PAR_EL1, which nothing else
    // holds across this call (interrupt handlers run AT only in fatal reports).
    unsafe { core::arch::asm!("at s1e1r, {}", in(reg) address, options(nostack, preserves_flags)) };
    barrier::isb(barrier::SY);
    let par = sysreg::read!("par_el1");
    (par & 1 == 0).then_some(par)
}

/// Clean `[virt, virt + length)` to the point of coherency when the walker does not snoop
/// the data cache.
fn clean(virt: u64, length: u64) {
    if WALKS_CACHEABLE.load(Ordering::Relaxed) {
        return;
    }
    let line = 4u64 << ((sysreg::read!("ctr_el0") >> 16) & 0xf);
    let mut address = virt & !(line - 1);
    while address < virt + length {
        // SAFETY: cleaning a mapped line only writes dirty data back.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) address, options(nostack)) };
        address += line;
    }
}

/// Make `[virt, virt + length)`, written through the kernel's mapping, what instruction
/// fetch sees through every mapping (Arm ARM B2.4.4): clean each data-cache line to the
/// point of unification, `dsb ish`, invalidate each instruction-cache line, `dsb ish`,
/// `isb`. Line sizes and what the CPU needs come from CTR_EL0 (IDC / DIC skip a step; an
/// instruction cache that is not PIPT is invalidated whole, since another alias may hold
/// the lines). `ic ivau` and `ic ialluis` reach every CPU of the inner-shareable domain.
pub fn sync_instructions(virt: u64, length: u64) {
    let cache = CacheType::from_ctr(sysreg::read!("ctr_el0"));
    if !cache.data_clean_not_needed {
        let span = line_span(virt, length, cache.data_line);
        let mut line = span.start;
        while line < span.end {
            // SAFETY: cleaning a mapped line only writes dirty data back; `virt` is a
            // kernel address the caller just wrote through.
            unsafe { core::arch::asm!("dc cvau, {}", in(reg) line, options(nostack)) };
            let Some(next) = line.checked_add(cache.data_line) else {
                break;
            };
            line = next;
        }
    }
    barrier::dsb(barrier::ISH);
    if !cache.instruction_invalidate_not_needed {
        if cache.instruction_cache_pipt {
            let span = line_span(virt, length, cache.instruction_line);
            let mut line = span.start;
            while line < span.end {
                // SAFETY: invalidating instruction-cache lines only costs refetches.
                unsafe { core::arch::asm!("ic ivau, {}", in(reg) line, options(nostack)) };
                let Some(next) = line.checked_add(cache.instruction_line) else {
                    break;
                };
                line = next;
            }
        } else {
            // SAFETY: as above, for the whole cache.
            unsafe { core::arch::asm!("ic ialluis", options(nostack)) };
        }
        barrier::dsb(barrier::ISH);
    }
    barrier::isb(barrier::SY);
}

/// The AArch64 entry encoding for the portable walker (Arm ARM D8.3): table descriptors
/// `0b11` at levels 0–2, blocks `0b01`, pages `0b11`; AF always set; kernel leaves UXN
/// (and PXN unless executable), user leaves nG + AP[1] + PXN (and UXN unless executable);
/// memory attributes as [`init`] found them.
pub struct Format;

impl EntryFormat for Format {
    fn is_present(&self, entry: u64) -> bool {
        entry & VALID != 0
    }

    fn is_table(&self, entry: u64, level: u8) -> bool {
        level == pagetable::ROOT_LEVEL || entry & TABLE_OR_PAGE == TABLE_OR_PAGE
    }

    fn address(&self, entry: u64) -> u64 {
        entry & ADDRESS
    }

    fn table_entry(&self, table: u64, _user: bool) -> u64 {
        // APTable/XNTable stay 0: the leaf decides.
        table | TABLE_OR_PAGE
    }

    fn table_entry_for_user(&self, entry: u64, _user: bool) -> u64 {
        entry
    }

    fn leaf_entry(&self, physical: u64, flags: PageFlags, level: u8) -> u64 {
        let kind = if level == 0 { TABLE_OR_PAGE } else { BLOCK };
        let mut descriptor = (physical & ADDRESS) | kind | AF | memory_attributes(flags);
        if flags.user {
            descriptor |= NG | AP_EL0 | PXN;
            if !flags.executable || flags.device {
                descriptor |= UXN;
            }
        } else {
            descriptor |= UXN;
            if !flags.executable || flags.device {
                descriptor |= PXN;
            }
        }
        if !flags.writable {
            descriptor |= AP_READ_ONLY;
        }
        descriptor
    }

    fn leaf_flags(&self, entry: u64, _level: u8) -> PageFlags {
        let user = entry & AP_EL0 != 0;
        let never = if user { UXN } else { PXN };
        let index_bits = entry & (0b111 << ATTR_INDEX_SHIFT);
        PageFlags {
            writable: entry & AP_READ_ONLY == 0,
            executable: entry & never == 0,
            user,
            device: index_bits
                == DEVICE_ATTRIBUTES.load(Ordering::Relaxed) & (0b111 << ATTR_INDEX_SHIFT),
        }
    }

    fn address_fits(&self, physical: u64) -> bool {
        physical & !ADDRESS == 0
    }

    fn count_shift(&self) -> u32 {
        // Bits [11:2] of a table descriptor are ignored (Arm ARM D8.3.1, 48-bit addresses,
        // no hardware-managed table flags).
        2
    }
}

/// The AArch64 side of [`pagetable::HhdmTables`]: entries read and written through the
/// HHDM, each write (and each new table) cleaned to the point of coherency when the walker
/// does not snoop the caches, and new tables' zeroes made visible (`dsb ishst`) before
/// they can be linked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hhdm;

impl HhdmAccess for Hhdm {
    #[inline(always)]
    fn offset(&self) -> u64 {
        HHDM.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn read(&self, address: u64) -> u64 {
        // SAFETY: `HhdmTables` passes the HHDM address of an entry of a translation table
        // (a root this module or the loader made, or an address taken from a table
        // descriptor), in RAM the HHDM maps, 8-aligned; reading it has no side effect.
        unsafe { (address as *const u64).read_volatile() }
    }

    #[inline(always)]
    fn write(&self, address: u64, value: u64) {
        // SAFETY: as in `read`; callers hold the lock of the tables they change (the
        // kernel-table mutex or `&mut AddressSpace`) and order the write with barriers.
        unsafe { (address as *mut u64).write_volatile(value) };
        clean(address, 8);
    }

    fn publish_table(&self, address: u64) {
        clean(address, PAGE_SIZE);
        // The zeroes must be visible to the walker before the table is linked.
        barrier::dsb(barrier::ISHST);
    }
}

/// Translation tables in RAM, reached through the HHDM ([`Hhdm`]).
pub type HhdmTables<'a> = pagetable::HhdmTables<'a, Hhdm>;

fn memory_attributes(flags: PageFlags) -> u64 {
    if flags.device {
        DEVICE_ATTRIBUTES.load(Ordering::Relaxed)
    } else {
        NORMAL_ATTRIBUTES.load(Ordering::Relaxed)
    }
}

/// TTBR1's root table (the kernel's own after `switch_to_kernel_tables`).
fn kernel_root() -> u64 {
    sysreg::read!("ttbr1_el1") & ADDRESS
}

pub fn map_kernel(
    virt: u64,
    phys: u64,
    flags: PageFlags,
    frames: &mut dyn FrameSource,
) -> Result<(), MapError> {
    if virt < KERNEL_HALF || flags.user {
        return Err(MapError::BadAddress);
    }
    masked(|| {
        let _tables = KERNEL_TABLES.lock();
        let mut memory = HhdmTables::growing(frames);
        Walker::new(&mut memory, &Format, kernel_root()).map(virt, phys, flags, 0, true)?;
        // An invalid entry is never cached in a TLB, so no invalidation: make the entry
        // visible to the walker and resynchronize.
        barrier::dsb(barrier::ISHST);
        barrier::isb(barrier::SY);
        Ok(())
    })
}

pub fn unmap_kernel(virt: u64) -> Result<u64, MapError> {
    if virt < KERNEL_HALF || !virt.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::BadAddress);
    }
    masked(|| {
        let _tables = KERNEL_TABLES.lock();
        let mut memory = HhdmTables::fixed();
        let frame = Walker::new(&mut memory, &Format, kernel_root()).unmap(virt)?;
        barrier::dsb(barrier::ISHST);
        // TLBI VAAE1IS: this VA, every ASID (kernel entries are global); VA[55:12] in [43:0].
        let operand = (virt >> 12) & ((1 << 44) - 1);
        // SAFETY: invalidating TLB entries only costs refills.
        unsafe {
            core::arch::asm!("tlbi vaae1is, {}", in(reg) operand, options(nostack, preserves_flags))
        };
        barrier::dsb(barrier::ISH);
        barrier::isb(barrier::SY);
        Ok(frame)
    })
}

/// Build the kernel's own TTBR1 tables ([`arch_api::kernel_tables::build`]: the image by
/// section, the HHDM, the pages Keel mapped in the kernel-stack region and the device
/// window) and switch to them. Both hierarchies map the running code and stack to the same
/// frames with the same memory type, so the switch is one TTBR1 write followed by a full
/// invalidation of this VMID's TLB entries (kernel entries are global).
pub fn switch_to_kernel_tables(
    layout: &KernelLayout,
    direct_map: &[(u64, u64)],
    frames: &mut dyn FrameSource,
) -> Result<KernelTablesReport, EarlyError> {
    let loader_root = kernel_root();
    let stack_marker = 0u8;
    let here = switch_to_kernel_tables as fn(_, _, _) -> _ as usize as u64;
    masked(|| {
        let _tables = KERNEL_TABLES.lock();
        let report = kernel_tables::build(
            &mut HhdmTables::growing(frames),
            &Format,
            loader_root,
            layout,
            direct_map,
            &[
                KERNEL_STACK_REGION,
                crate::mmu::WINDOW_BASE..crate::mmu::WINDOW_BASE + crate::mmu::WINDOW_SIZE,
            ],
            &[here, core::ptr::from_ref(&stack_marker) as u64],
        )?;
        // Every table write is complete before the walker may use the new root.
        barrier::dsb(barrier::ISH);
        sysreg::write!("ttbr1_el1", report.kernel_root);
        // Drop every cached translation of the old tables (global kernel entries too).
        flush_all();
        Ok(report)
    })
}

/// What the active tables map at the kernel address `virt`.
pub fn lookup_kernel(virt: u64) -> Option<pagetable::Translation> {
    if virt < KERNEL_HALF {
        return None;
    }
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &Format, kernel_root()).lookup(virt)
}

/// What `space` maps at the user address `virt`.
pub fn lookup_user(space: &AddressSpace, virt: u64) -> Option<pagetable::Translation> {
    if !UserRange::is_user_address(virt) {
        return None;
    }
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &Format, space.root).lookup(virt)
}

/// The active kernel root (TTBR1_EL1).
pub fn active_kernel_root() -> u64 {
    kernel_root()
}

/// One user address space: its TTBR0 root table, ASID context and active CPUs.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
    /// The CPUs it is active on and its generation and ASID (`SpaceCpus::context`; module
    /// docs, "ASID generations"; 0 until first activated), at a fixed address.
    cpus: Box<SpaceCpus>,
    /// The emptied last-level table left linked (`pagetable::KeptTable`).
    kept: KeptTable,
}

impl AddressSpace {
    /// The ASID CPUs running this space use (or used last: a space whose generation is
    /// old has no entries left under a number another space got since).
    fn asid(&self) -> u64 {
        self.cpus.context().load(Ordering::Relaxed) & ASID_MASK
    }

    /// The CPUs this space is active on (the CPUs whose active slot names it).
    pub fn active_cpus(&self) -> CpuMask {
        ACTIVE.holders(&self.cpus)
    }

    /// Its record's address, as requests name it.
    fn id(&self) -> usize {
        core::ptr::from_ref::<SpaceCpus>(&self.cpus) as usize
    }
}

/// A new, empty user address space; its ASID comes with its first activation.
pub fn new_address_space(frames: &mut dyn FrameSource) -> Result<AddressSpace, MapError> {
    let root = frames.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
    let Some(cpus) = SpaceCpus::boxed() else {
        frames.free_frame(root);
        return Err(MapError::OutOfMemory);
    };
    clean(HHDM.load(Ordering::Relaxed) + root, PAGE_SIZE);
    barrier::dsb(barrier::ISHST);
    Ok(AddressSpace {
        root,
        cpus,
        kept: KeptTable::default(),
    })
}

fn check_user_page(virt: u64) -> Result<(), MapError> {
    UserRange::page(virt)
        .map(|_| ())
        .ok_or(MapError::BadAddress)
}

pub fn map_user(
    space: &mut AddressSpace,
    virt: u64,
    phys: u64,
    flags: PageFlags,
    frames: &mut dyn FrameSource,
) -> Result<(), MapError> {
    check_user_page(virt)?;
    let flags = PageFlags {
        user: true,
        ..flags
    };
    let mut memory = HhdmTables::growing(frames);
    Walker::new(&mut memory, &Format, space.root).map(virt, phys, flags, 0, true)?;
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
    Ok(())
}

/// `tlbi vae1is` of `virt` in `asid`: every CPU of the inner-shareable domain (ASID in
/// [63:48], VA[55:12] in [43:0]). The caller orders it after its table writes
/// (`dsb ishst`) and waits for it (`dsb ish`).
#[inline(always)]
fn tlbi_page(asid: u64, virt: u64) {
    let operand = (asid << 48) | ((virt >> 12) & ((1 << 44) - 1));
    // SAFETY: invalidating TLB entries only costs refills.
    unsafe {
        core::arch::asm!("tlbi vae1is, {}", in(reg) operand, options(nostack, preserves_flags))
    };
}

/// Unmap one user page; when this returns no CPU translates it (the broadcast `tlbi
/// vae1is` completed, `dsb ish`). Tables the unmap prunes go back to `frames` once no walk
/// through them can be cached (`tlbi vae1is` drops the cached entries of every level used
/// to translate the address, Arm ARM D8.13).
pub fn unmap_user(
    space: &mut AddressSpace,
    virt: u64,
    frames: &mut dyn FrameSource,
) -> Result<u64, MapError> {
    check_user_page(virt)?;
    let mut memory = HhdmTables::fixed();
    let mut pruned = Pruned::default();
    let frame = Walker::new(&mut memory, &Format, space.root).unmap_counted(
        virt,
        &mut space.kept,
        &mut pruned,
    )?;
    barrier::dsb(barrier::ISHST);
    let asid = space.asid();
    tlbi_page(asid, virt);
    if !pruned.tables().is_empty() {
        tlbi_page(asid, pruned.address);
    }
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    for &table in pruned.tables() {
        frames.free_frame(table);
    }
    Ok(frame)
}

/// Change one user page's permissions and drop its old translation on every CPU
/// (break-before-make is not needed: only permissions change, Arm ARM D8.16.1).
pub fn protect_user(space: &mut AddressSpace, virt: u64, flags: PageFlags) -> Result<(), MapError> {
    check_user_page(virt)?;
    let flags = PageFlags {
        user: true,
        ..flags
    };
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &Format, space.root).protect(virt, flags)?;
    barrier::dsb(barrier::ISHST);
    tlbi_page(space.asid(), virt);
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    Ok(())
}

/// Make `space` the current user half on this CPU (TTBR0 with its ASID, re-got when its
/// generation is old), moving this CPU's bit to its mask. Called with IRQs masked, as all
/// kernel code runs (the ASID lock may be taken).
#[inline(always)]
pub fn activate(space: &AddressSpace) {
    // SAFETY: the handle is used at once, while `space` is borrowed.
    unsafe { activate_handle(switch_handle(space)) };
}

/// `space`'s switch handle: its root and record (active CPUs, ASID context).
#[inline]
pub fn switch_handle(space: &AddressSpace) -> SwitchHandle {
    SwitchHandle::new(space.root, 0, &space.cpus)
}

/// [`activate`] through a switch handle.
///
/// # Safety
/// The space `handle` was taken from is not destroyed before this returns.
#[inline(always)]
pub unsafe fn activate_handle(handle: SwitchHandle) {
    // SAFETY: the caller's contract, and the index is this CPU's.
    unsafe { activate_handle_on(handle, cpu_index()) };
}

/// [`activate_handle`] on this CPU, whose index `cpu` is.
///
/// # Safety
/// As [`activate_handle`]; `cpu` is the index of the CPU that runs this.
#[inline(always)]
pub unsafe fn activate_handle_on(handle: SwitchHandle, cpu: u32) {
    debug_assert_eq!(cpu, cpu_index());
    // SAFETY: the space is alive until this returns (the caller's contract).
    let cpus = unsafe { handle.cpus() };
    ACTIVE.record(cpu, cpus);
    let context = ASIDS.activate(cpu, cpus.context(), asid_limit, flush_all);
    // The write is followed by an ISB (`sysreg::write`).
    sysreg::write!("ttbr0_el1", handle.root | ((context & ASID_MASK) << 48));
}

/// This CPU's dense index through TPIDR_EL1 (no check of the register: kernel code runs
/// with it pointing at this CPU's block).
#[inline(always)]
fn cpu_index() -> u32 {
    crate::percpu::this().id.load(Ordering::Relaxed)
}

/// Point this CPU's TTBR0 at the empty root (ASID 0) and leave `space`.
fn leave(cpu: u32, space: &SpaceCpus) {
    sysreg::write!("ttbr0_el1", EMPTY_ROOT.load(Ordering::Relaxed));
    ACTIVE.leave(cpu, space);
}

/// Answer the TLB requests other CPUs sent this one (one load when there are none).
#[inline]
pub fn service_requests() {
    let cpu = cpu_index();
    if MAILBOXES.has_work(cpu) {
        MAILBOXES.service(cpu, |request| handle(cpu, request));
    }
}

/// Carry out one request: only [`Request::Leave`] is ever sent here (invalidations are
/// broadcast by the sender's own `tlbi … is`).
fn handle(cpu: u32, request: Request) {
    if let Request::Leave { space } = request
        && ACTIVE.active_on(cpu) == space
    {
        // SAFETY: `space` is the address of the live record the sender holds (it waits
        // for this answer), and it is the one this CPU's slot names.
        let record = unsafe { &*(space as *const SpaceCpus) };
        leave(cpu, record);
    }
}

/// Free every page-table frame of `space` through `free` once no CPU has it active (this
/// CPU leaves it; every other CPU in its mask is asked to, [`Request::Leave`], and
/// answers first), then drop its ASID's entries everywhere (`tlbi aside1is`) and free the
/// ASID.
pub fn destroy(space: AddressSpace, free: &mut dyn FnMut(u64)) {
    let cpu = cpu_index();
    if ACTIVE.is_active(cpu, &space.cpus) {
        leave(cpu, &space.cpus);
    }
    let others = ACTIVE.holders(&space.cpus) & !tlb::bit(cpu);
    if others != 0 {
        let _ = MAILBOXES.send(
            cpu,
            others,
            Request::Leave { space: space.id() },
            |target| {
                crate::smp::send_ipi(
                    arch_api::IpiTarget::Cpu(target),
                    arch_api::Ipi::TlbShootdown,
                );
            },
            |request| handle(cpu, request),
            |target| {
                crate::percpu::online_block(target).is_none_or(|block| block.ipi.snapshot().stopped)
            },
        );
    }
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &Format, space.root).free_tables(0..pagetable::ENTRIES, true, free);
    barrier::dsb(barrier::ISHST);
    let context = space.cpus.context().load(Ordering::Relaxed);
    // TLBI ASIDE1IS: everything tagged with this ASID, before the ASID can be reused.
    let operand = (context & ASID_MASK) << 48;
    // SAFETY: invalidating TLB entries only costs refills.
    unsafe {
        core::arch::asm!("tlbi aside1is, {}", in(reg) operand, options(nostack, preserves_flags))
    };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    masked(|| ASIDS.release(context));
}

/// Drop every cached translation of this CPU's inner-shareable domain.
fn flush_all() {
    barrier::dsb(barrier::ISHST);
    // SAFETY: invalidating TLB entries only costs refills.
    unsafe { core::arch::asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

pub fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), UserAccessFault> {
    if destination.is_empty() {
        return Ok(());
    }
    if UserRange::new(source, destination.len() as u64).is_none() {
        return Err(UserAccessFault);
    }
    // SAFETY: the destination is a live kernel slice of that length; the source is in the
    // user half and read only with LDTR (EL0 permissions), whose faults the fixup table
    // turns into a non-zero return.
    let failed = unsafe {
        crate::trap::fixup::keel_copy_from_user(destination.as_mut_ptr(), source, destination.len())
    };
    if failed == 0 {
        Ok(())
    } else {
        Err(UserAccessFault)
    }
}

pub fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), UserAccessFault> {
    if source.is_empty() {
        return Ok(());
    }
    if UserRange::new(destination, source.len() as u64).is_none() {
        return Err(UserAccessFault);
    }
    // SAFETY: as in `copy_from_user`, with STTR for the user stores.
    let failed = unsafe {
        crate::trap::fixup::keel_copy_to_user(destination, source.as_ptr(), source.len())
    };
    if failed == 0 {
        Ok(())
    } else {
        Err(UserAccessFault)
    }
}
