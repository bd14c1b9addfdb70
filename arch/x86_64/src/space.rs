//! Address spaces: the kernel half shared by all, a user half per process, and the only
//! way the kernel touches user memory ([`copy_from_user`] / [`copy_to_user`]).
//!
//! # The kernel half
//! Every user root table copies the kernel root's 256 higher-half PML4 entries when it is
//! created, so those entries must never change afterwards: [`init`] fills the PML4 slots
//! of the kernel-stack region and the device window before the first user space exists,
//! and [`map_kernel`] refuses to create any other PML4 entry. Kernel leaves are global
//! (when the CPU has global pages), so `INVLPG` removes them from every PCID's TLB.
//!
//! # PCIDs
//! With PCID, each address space gets a 12-bit tag and `activate` writes CR3 with the
//! no-flush bit, keeping the TLB entries of other spaces. Two live spaces never share a
//! tag: tags 1..=4094 come from a [`TagAllocator`] and go back when the space is
//! destroyed; a space created while all of them are taken gets [`SHARED_PCID`], which is
//! flushed on every activation. Whether a CPU's entries for a space may be stale is one
//! bit per CPU in the space's [`SpaceCpus`] (`arch_api::tlb`, "Stale bits"): a new space is
//! stale on every CPU, so a tag a destroyed space had is flushed by each CPU before it
//! first runs with it again, and a change to a space's tables marks it stale on every CPU
//! that does not flush it at once. Without PCID every CR3 write flushes the (non-global)
//! TLB and no stale bit is kept.
//!
//! # TLB consistency between CPUs
//! Each space's [`SpaceCpus`] (boxed, so its address stays put while the space value
//! moves) records the CPUs it is active on; `activate` moves this CPU's bit
//! ([`ActiveSpaces`]). [`unmap_user`] and [`protect_user`] flush the page here with
//! `INVLPG` when the space is active here, and send every other CPU in the mask a
//! [`Request::Pages`] over the TLB-shootdown IPI, returning only once each answered (its
//! `INVLPG` done); only then are emptied page tables, and the unmapped frame in the
//! caller's hands, free for reuse. [`destroy`] sends [`Request::Leave`]: each CPU that has
//! the space active switches to the kernel's root and leaves the mask, and the tables are
//! freed after every answer. Waiting never deadlocks: see `arch_api::tlb`, "Requests and
//! deadlock freedom". Who writes what: a CPU's bit in a mask and its active slot only by
//! that CPU; a space's tables only by the holder of `&mut AddressSpace` (the core's
//! address-space lock).
//!
//! # User copies
//! The range is checked first (a [`UserRange`]: wholly inside the user half, no wrap), so
//! the copy can only fault on a user page; the `rep movsb` has an exception-fixup entry
//! (`trap::fixup`), and with SMAP on, `stac`/`clac` bracket that one instruction.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::{
    EarlyError, FrameSource, KERNEL_STACK_REGION, MapError, PAGE_SIZE, PageFlags, UserAccessFault,
    UserRange,
};
use x86_64::VirtAddr;
use x86_64::instructions::tlb as cpu_tlb;
use x86_64::registers::control::{Cr3, Cr4, Cr4Flags};

use arch_api::pagetable::{KeptTable, Pruned, Walker};
use arch_api::tags::TagAllocator;
use arch_api::tlb::{self, ActiveSpaces, CpuMask, Mailboxes, Request, SpaceCpus, SwitchHandle};

use crate::features::Cpuid;
use crate::paging::{self, ENTRIES, entry, index, table_at};
use crate::percpu;
use crate::tables::{Format, HhdmTables};
use crate::trap::fixup;

/// First PML4 slot of the kernel half.
const KERNEL_HALF_FIRST_SLOT: usize = ENTRIES / 2;
/// The start of the higher half.
const HIGHER_HALF: u64 = 0xFFFF_8000_0000_0000;
/// CR3 bit 63 with CR4.PCIDE: do not flush the new PCID's TLB entries.
const CR3_NO_FLUSH: u64 = 1 << 63;
/// PCIDs are 12 bits; 0 is the kernel root's, 4095 the shared fallback.
const SHARED_PCID: u16 = 4095;

static PCID_ENABLED: AtomicBool = AtomicBool::new(false);
/// The PCIDs of live spaces.
static PCIDS: spin::Mutex<TagAllocator<64>> =
    spin::Mutex::new(TagAllocator::new(1, SHARED_PCID - 1));

/// The space each CPU has active.
static ACTIVE: ActiveSpaces = ActiveSpaces::new();
/// The TLB requests between CPUs.
static MAILBOXES: Mailboxes = Mailboxes::new();
/// Ranges longer than this many pages are flushed whole (a CR3 reload) rather than page
/// by page.
const MAX_INVLPG_PAGES: u64 = 32;

/// One user address space.
#[derive(Debug)]
pub struct AddressSpace {
    /// Physical address of the PML4.
    root: u64,
    /// Its PCID (0 when PCIDs are off).
    pcid: u16,
    /// The CPUs it is active on and those whose entries may be stale, at a fixed address.
    cpus: Box<SpaceCpus>,
    /// The emptied last-level table left linked (`pagetable::KeptTable`).
    kept: KeptTable,
}

impl AddressSpace {
    /// Physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Its PCID: 0 when it has none, [`SHARED_PCID`] when all were taken.
    pub fn tag(&self) -> u16 {
        self.pcid
    }

    /// The CPUs this space is active on.
    pub fn active_cpus(&self) -> CpuMask {
        self.cpus.active()
    }

    /// Its record's address, as requests name it.
    fn id(&self) -> usize {
        core::ptr::from_ref::<SpaceCpus>(&self.cpus) as usize
    }
}

/// Fill the kernel half's PML4 slots that later mappings need (kernel stacks, device
/// window), turn on global pages, and PCIDs when CPUID has them. Call once, before the
/// first user address space, after `paging::record_kernel_root`.
pub fn init(cpuid: &Cpuid, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
    let root = paging::kernel_root();
    let regions = [
        (KERNEL_STACK_REGION.start, KERNEL_STACK_REGION.end),
        (
            paging::DEVICE_WINDOW_BASE,
            paging::DEVICE_WINDOW_BASE + paging::DEVICE_WINDOW_SIZE,
        ),
    ];
    for (start, end) in regions {
        for slot in index(start, 4)..=index(end - 1, 4) {
            // SAFETY: `root` is the kernel's PML4 (CR3 at boot), reachable through the HHDM.
            let entry_ref = unsafe { &mut (*table_at(root))[slot] };
            if *entry_ref & entry::PRESENT == 0 {
                let frame = frames.alloc_zeroed_frame().ok_or(EarlyError::OutOfMemory)?;
                *entry_ref = frame | entry::PRESENT | entry::WRITABLE;
            }
        }
    }
    if cpuid.global_pages {
        // SAFETY: PGE only lets leaves marked global survive CR3 writes; the loader's
        // mappings are not changed by Keel, so keeping them cached is harmless.
        unsafe { Cr4::update(|flags| flags.insert(Cr4Flags::PAGE_GLOBAL)) };
        crate::tables::set_global_leaves(true);
    }
    // CR4.PCIDE may only be set with CR3[11:0] = 0 (else #GP), and Keel's kernel leaves
    // must be global for PCIDs to be safe.
    let (_, cr3_low) = Cr3::read_raw();
    if cpuid.pcid && cpuid.global_pages && cr3_low == 0 {
        // SAFETY: CPUID reports PCID and CR3[11:0] is 0 (checked), so setting PCIDE keeps
        // running on the same root as PCID 0.
        unsafe { Cr4::update(|flags| flags.insert(Cr4Flags::PCID)) };
        PCID_ENABLED.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether address spaces carry PCIDs.
#[inline(always)]
pub fn pcid_enabled() -> bool {
    PCID_ENABLED.load(Ordering::Relaxed)
}

/// Test build: new spaces take tags from [`PCIDS`] even with PCIDs off (CR3 still gets
/// none: `activate` asks [`pcid_enabled`]), so the kernel suite can check the allocator
/// through real spaces (`SelfTest::force_space_tags`).
#[cfg(feature = "testing")]
static FORCE_TAGS: AtomicBool = AtomicBool::new(false);

#[cfg(feature = "testing")]
pub fn force_tags(on: bool) {
    FORCE_TAGS.store(on, Ordering::Relaxed);
}

/// Whether a new space takes a tag from [`PCIDS`].
fn tags_handed_out() -> bool {
    #[cfg(feature = "testing")]
    if FORCE_TAGS.load(Ordering::Relaxed) {
        return true;
    }
    pcid_enabled()
}

fn is_kernel_address(address: u64) -> bool {
    address >= HIGHER_HALF
}

fn is_page_aligned(address: u64) -> bool {
    address.is_multiple_of(PAGE_SIZE)
}

/// Map one kernel page into the shared kernel half. Never creates a root entry: user
/// spaces copy the kernel half's root entries when they are made, so those are filled by
/// [`init`] and never change afterwards.
pub fn map_kernel(
    virtual_address: u64,
    physical_address: u64,
    flags: PageFlags,
    frames: &mut dyn FrameSource,
) -> Result<(), MapError> {
    if !is_kernel_address(virtual_address) || flags.user {
        return Err(MapError::BadAddress);
    }
    let format = Format::current();
    let mut memory = HhdmTables::growing(frames);
    // Kernel-half edits are serialized by the core (one CPU, interrupts do not map).
    Walker::new(&mut memory, &format, paging::kernel_root()).map(
        virtual_address,
        physical_address,
        flags,
        0,
        false,
    )
}

/// Unmap one kernel page and flush it from every PCID's TLB (kernel leaves are global, and
/// `INVLPG` drops global entries too).
pub fn unmap_kernel(virtual_address: u64) -> Result<u64, MapError> {
    if !is_kernel_address(virtual_address) {
        return Err(MapError::BadAddress);
    }
    let format = Format::current();
    let mut memory = HhdmTables::fixed();
    let frame = Walker::new(&mut memory, &format, paging::kernel_root()).unmap(virtual_address)?;
    cpu_tlb::flush(VirtAddr::new(virtual_address));
    Ok(frame)
}

/// A new user address space: an empty user half and the kernel half's PML4 entries.
pub fn new_address_space(frames: &mut dyn FrameSource) -> Result<AddressSpace, MapError> {
    let root = frames.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
    let kernel = paging::kernel_root();
    // SAFETY: both are PML4 frames reached through the HHDM; `root` is new and private.
    unsafe {
        let source = &*table_at(kernel);
        let target = &mut *table_at(root);
        target[KERNEL_HALF_FIRST_SLOT..].copy_from_slice(&source[KERNEL_HALF_FIRST_SLOT..]);
    }
    let Some(cpus) = SpaceCpus::boxed() else {
        frames.free_frame(root);
        return Err(MapError::OutOfMemory);
    };
    let pcid = if tags_handed_out() {
        // A tag no live space has (stale on every CPU until each flushed it: `SpaceCpus`),
        // or the shared one, flushed on every activation.
        PCIDS.lock().allocate().unwrap_or(SHARED_PCID)
    } else {
        0
    };
    Ok(AddressSpace {
        root,
        pcid,
        cpus,
        kept: KeptTable::default(),
    })
}

fn check_user_page(virtual_address: u64, physical_address: u64) -> Result<(), MapError> {
    if UserRange::page(virtual_address).is_none()
        || !is_page_aligned(physical_address)
        || physical_address & !entry::ADDRESS != 0
    {
        return Err(MapError::BadAddress);
    }
    Ok(())
}

/// Map one user 4 KiB page (always user-accessible; W^X; page 0 and kernel addresses
/// refused).
pub fn map_user(
    space: &mut AddressSpace,
    virtual_address: u64,
    physical_address: u64,
    flags: PageFlags,
    frames: &mut dyn FrameSource,
) -> Result<(), MapError> {
    check_user_page(virtual_address, physical_address)?;
    let flags = PageFlags {
        user: true,
        ..flags
    };
    let format = Format::current();
    let mut memory = HhdmTables::growing(frames);
    // `space.root` is live and `&mut` makes its tables exclusive.
    Walker::new(&mut memory, &format, space.root).map(
        virtual_address,
        physical_address,
        flags,
        0,
        true,
    )
}

fn is_active(space: &AddressSpace) -> bool {
    ACTIVE.is_active(percpu::index(), &space.cpus)
}

/// After a change to one page of `space`'s tables: drop its translation here (when the
/// space is active here) and on every other CPU that has the space active, and return once
/// each did.
#[inline]
fn invalidate_page(space: &AddressSpace, virtual_address: u64) {
    let me = percpu::index();
    let here = ACTIVE.is_active(me, &space.cpus);
    if here {
        cpu_tlb::flush(VirtAddr::new(virtual_address));
    }
    let fresh = if here { tlb::bit(me) } else { 0 };
    let others = space.cpus.changed(pcid_enabled(), fresh) & !tlb::bit(me);
    if others != 0 {
        send(
            me,
            others,
            Request::Pages {
                space: space.id(),
                start: virtual_address,
                pages: 1,
            },
        );
    }
}

/// Send `request` to `targets` and wait for their answers (`arch_api::tlb`).
#[cold]
#[inline(never)]
fn send(me: u32, targets: CpuMask, request: Request) {
    let _ = MAILBOXES.send(
        me,
        targets,
        request,
        |cpu| crate::smp::send_ipi(arch_api::IpiTarget::Cpu(cpu), arch_api::Ipi::TlbShootdown),
        |request| handle(me, request),
        |cpu| {
            !percpu::is_online(cpu)
                || percpu::online_block(cpu).is_none_or(|block| block.ipi().snapshot().stopped)
        },
    );
}

/// Answer the TLB requests other CPUs sent this one (one load when there are none).
#[inline]
pub fn service_requests() {
    let me = percpu::index();
    if MAILBOXES.has_work(me) {
        MAILBOXES.service(me, |request| handle(me, request));
    }
}

/// Carry out one request on this CPU (see [`Request`]).
fn handle(me: u32, request: Request) {
    match request {
        Request::Pages {
            space,
            start,
            pages,
        } if ACTIVE.active_on(me) == space => {
            if pages <= MAX_INVLPG_PAGES {
                for page in 0..pages {
                    cpu_tlb::flush(VirtAddr::new(start + page * PAGE_SIZE));
                }
            } else {
                flush_current();
            }
        }
        Request::Space { space } if ACTIVE.active_on(me) == space => flush_current(),
        Request::Leave { space } if ACTIVE.active_on(me) == space => {
            // SAFETY: the kernel root maps the kernel half; PCID 0 is the kernel root's.
            unsafe { write_cr3(paging::kernel_root()) };
            // SAFETY: `space` is the address of the live record the sender holds (it
            // waits for this answer), and it is the one this CPU's slot names.
            let record = unsafe { &*(space as *const SpaceCpus) };
            ACTIVE.leave(me, record);
        }
        _ => {}
    }
}

/// Drop every non-global translation of the current CR3 (and its PCID).
fn flush_current() {
    let (frame, flags) = Cr3::read_raw();
    let value = frame.start_address().as_u64() | u64::from(flags);
    // SAFETY: the same root and PCID as now; without the no-flush bit the write drops the
    // PCID's non-global entries.
    unsafe { write_cr3(value) };
}

/// Unmap one user page, returning its frame, once no CPU translates it any more. Tables
/// the unmap prunes go back to `frames` after that: `INVLPG` drops every
/// paging-structure-cache entry of the current PCID (Intel SDM 4.10.4.1), and a CPU where
/// the space is not active drops them at its next activation (stale bit or untagged CR3
/// write).
pub fn unmap_user(
    space: &mut AddressSpace,
    virtual_address: u64,
    frames: &mut dyn FrameSource,
) -> Result<u64, MapError> {
    check_user_page(virtual_address, 0)?;
    let format = Format::current();
    let mut memory = HhdmTables::fixed();
    let mut pruned = Pruned::default();
    let frame = Walker::new(&mut memory, &format, space.root).unmap_counted(
        virtual_address,
        &mut space.kept,
        &mut pruned,
    )?;
    invalidate_page(space, virtual_address);
    for &table in pruned.tables() {
        frames.free_frame(table);
    }
    Ok(frame)
}

/// Change one user page's permissions; the old translation is gone from every CPU when
/// this returns.
pub fn protect_user(
    space: &mut AddressSpace,
    virtual_address: u64,
    flags: PageFlags,
) -> Result<(), MapError> {
    check_user_page(virtual_address, 0)?;
    let flags = PageFlags {
        user: true,
        ..flags
    };
    let format = Format::current();
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &format, space.root).protect(virtual_address, flags)?;
    invalidate_page(space, virtual_address);
    Ok(())
}

/// Write CR3.
///
/// # Safety
/// `value` names a PML4 whose kernel half is the kernel's (so the code and stack running
/// now stay mapped), with a PCID only when PCIDs are on.
unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller's duty; a CR3 write has no other effect than the switch/flush.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// `space`'s switch handle: its root, PCID and CPU record.
#[inline]
pub fn switch_handle(space: &AddressSpace) -> SwitchHandle {
    SwitchHandle::new(space.root, space.pcid, &space.cpus)
}

/// Make `space` the current user half on this CPU, moving this CPU's bit to its mask.
#[inline(always)]
pub fn activate(space: &AddressSpace) {
    // SAFETY: the handle is used at once, while `space` is borrowed.
    unsafe { activate_handle(switch_handle(space)) };
}

/// [`activate`] through a switch handle.
///
/// # Safety
/// The space `handle` was taken from is not destroyed before this returns.
#[inline(always)]
pub unsafe fn activate_handle(handle: SwitchHandle) {
    // Address spaces exist only once this CPU's block is set up.
    let me = percpu::running_index();
    // SAFETY: the caller's contract, and `me` is this CPU's index.
    unsafe { activate_handle_on(handle, me) };
}

/// [`activate_handle`] on this CPU, whose index `me` is.
///
/// # Safety
/// As [`activate_handle`]; `me` is the index of the CPU that runs this.
#[inline(always)]
pub unsafe fn activate_handle_on(handle: SwitchHandle, me: u32) {
    debug_assert_eq!(me, percpu::running_index());
    // SAFETY: the space is alive until this returns (the caller's contract).
    let cpus = unsafe { handle.cpus() };
    ACTIVE.activate(me, cpus);
    let mut value = handle.root;
    if pcid_enabled() {
        value |= u64::from(handle.tag);
        if !cpus.take_stale(me) && handle.tag != SHARED_PCID {
            value |= CR3_NO_FLUSH;
        }
    }
    // SAFETY: `handle.root` is the live PML4 of a space that is not destroyed (the caller's
    // contract), whose kernel half was copied from the kernel root (whose kernel-half PML4
    // entries never change); its PCID is set only with PCIDs on.
    unsafe { write_cr3(value) };
}

/// Free every page-table frame of `space` through `free`, once no CPU has it active: this
/// CPU switches to the kernel root if it has, and every other CPU in its mask is asked to
/// ([`Request::Leave`]) and answers before anything is freed.
pub fn destroy(space: AddressSpace, free: &mut dyn FnMut(u64)) {
    let me = percpu::index();
    if is_active(&space) {
        // SAFETY: the kernel root maps the kernel half; PCID 0 is the kernel root's.
        unsafe { write_cr3(paging::kernel_root()) };
        ACTIVE.leave(me, &space.cpus);
    }
    let others = space.cpus.active() & !tlb::bit(me);
    if others != 0 {
        send(me, others, Request::Leave { space: space.id() });
    }
    let format = Format::current();
    let mut memory = HhdmTables::fixed();
    Walker::new(&mut memory, &format, space.root).free_tables(
        0..KERNEL_HALF_FIRST_SLOT,
        true,
        free,
    );
    // Its tag's TLB entries stay behind: every CPU flushes the tag before it first runs
    // with it for the next space that gets it (a new space is stale everywhere).
    if space.pcid != 0 && space.pcid != SHARED_PCID {
        PCIDS.lock().free(space.pcid);
    }
}

/// Copy from user memory; a bad range or an unmapped page is an error, never a fault.
pub fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), UserAccessFault> {
    if destination.is_empty() {
        return Ok(());
    }
    if UserRange::new(source, destination.len() as u64).is_none() {
        return Err(UserAccessFault);
    }
    // SAFETY: the source range is wholly in the user half (checked) and the destination is
    // a kernel slice valid for writes of its length.
    let left = unsafe {
        fixup::copy_user(
            destination.as_mut_ptr(),
            source as *const u8,
            destination.len(),
        )
    };
    if left == 0 {
        Ok(())
    } else {
        Err(UserAccessFault)
    }
}

/// Copy to user memory, with the same checks.
pub fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), UserAccessFault> {
    if source.is_empty() {
        return Ok(());
    }
    if UserRange::new(destination, source.len() as u64).is_none() {
        return Err(UserAccessFault);
    }
    // SAFETY: the destination range is wholly in the user half (checked) and the source is
    // a kernel slice valid for reads of its length.
    let left = unsafe { fixup::copy_user(destination as *mut u8, source.as_ptr(), source.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(UserAccessFault)
    }
}

impl arch_api::Paging for crate::Cpu {
    type AddressSpace = AddressSpace;

    fn map_kernel(
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError> {
        map_kernel(virtual_address, physical_address, flags, frames)
    }

    fn unmap_kernel(virtual_address: u64) -> Result<u64, MapError> {
        unmap_kernel(virtual_address)
    }

    fn new_address_space(frames: &mut dyn FrameSource) -> Result<AddressSpace, MapError> {
        new_address_space(frames)
    }

    fn map_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError> {
        map_user(space, virtual_address, physical_address, flags, frames)
    }

    fn unmap_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        frames: &mut dyn FrameSource,
    ) -> Result<u64, MapError> {
        unmap_user(space, virtual_address, frames)
    }

    fn protect_user(
        space: &mut AddressSpace,
        virtual_address: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        protect_user(space, virtual_address, flags)
    }

    #[inline]
    fn activate(space: &AddressSpace) {
        activate(space);
    }

    type SwitchHandle = SwitchHandle;

    #[inline]
    fn switch_handle(space: &AddressSpace) -> SwitchHandle {
        switch_handle(space)
    }

    #[inline(always)]
    unsafe fn activate_handle(handle: SwitchHandle, cpu: u32) {
        // SAFETY: the caller's contract is `activate_handle_on`'s.
        unsafe { activate_handle_on(handle, cpu) }
    }

    fn active_cpus(space: &AddressSpace) -> CpuMask {
        space.active_cpus()
    }

    fn lookup_user(
        space: &AddressSpace,
        virtual_address: u64,
    ) -> Option<arch_api::pagetable::Translation> {
        if !UserRange::is_user_address(virtual_address) {
            return None;
        }
        let format = Format::current();
        let mut memory = HhdmTables::fixed();
        Walker::new(&mut memory, &format, space.root).lookup(virtual_address)
    }

    fn destroy(space: AddressSpace, free: &mut dyn FnMut(u64)) {
        destroy(space, free);
    }

    #[inline(always)]
    fn sync_instructions(_virtual_address: u64, _length: u64) {
        // Instruction fetch sees every store (self- and cross-modifying code is handled
        // by the CPU; the next user entry is a serializing IRETQ / SYSRET).
    }

    fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), UserAccessFault> {
        copy_from_user(destination, source)
    }

    fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), UserAccessFault> {
        copy_to_user(destination, source)
    }
}
