//! The process record: a process's address space and the user pages in it, its
//! capability space, its threads' count and how it ended. Records and memory operations
//! only: starting, killing and ending processes is the process layer's (`proc/`).
//!
//! The address space is destroyed only once another one (the kernel-only one) is active.
//!
//! # The memory budget
//! A process's frames — its user pages, device pages included, and the page tables of its
//! address space, root included — are charged a page each to its memory budget
//! ([`super::budget`]), like its record, its threads and the objects it makes. Tables come
//! from a [`TableFrames`] source that charges each table and refuses one the budget cannot
//! pay for, and go back through it when an unmap empties them (`arch_api::pagetable`,
//! "User hierarchies count their entries"), so mapping and unmapping at ever new addresses
//! neither leaks tables nor passes the budget. A page's charge covers its entry in the
//! page list too.
//!
//! Weak spot: a process's frames are kept in a `Vec`.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use abi::Error;
use arch_api::{
    FrameSource, MapError, PAGE_SIZE, PageFlags, Paging, TrapCause, USER_END, UserRange,
};

use super::budget::{PROCESS_BYTES, THREAD_BYTES};
use super::{Budget, CapSpace, Charge, Notification};
use crate::Cpu;
use crate::mm::frames::{self, KernelFrames};
use crate::sync::{Lock, level};

pub type AddressSpace = <Cpu as Paging>::AddressSpace;

/// The user stack: 64 KiB ending one page below the top of the user half (that page stays
/// unmapped).
pub const USER_STACK_TOP: u64 = USER_END - PAGE_SIZE;
pub const USER_STACK_SIZE: u64 = 64 * 1024;

/// The most pages one `memory_map` maps (`abi::MAP_PAGES_MAX`).
pub const MAP_PAGES_MAX: usize = abi::MAP_PAGES_MAX as usize;

/// One page of a process's user memory.
#[derive(Clone, Copy)]
struct UserPage {
    page: u64,
    frame: u64,
    /// Made by `memory_map` (only those may be unmapped by the process).
    anonymous: bool,
    /// A device page ([`Process::map_device`]): `frame` is MMIO, never freed.
    device: bool,
}

/// What a process's frames are: its user pages and how many page tables map them, each
/// charged a page to `budget`.
struct Memory {
    pages: Vec<UserPage>,
    /// Page-table frames of the address space, root included.
    tables: usize,
    budget: Arc<Budget>,
}

impl Memory {
    /// Frames charged to the budget.
    fn used(&self) -> usize {
        self.pages.len() + self.tables
    }

    /// Charge `wanted` more pages to the budget (their tables are charged as they are
    /// made) and make heap room to list them: `OutOfMemory`, with nothing charged,
    /// otherwise. Pages that end up not listed are the caller's to refund.
    #[inline]
    fn make_room(&mut self, wanted: usize) -> Result<(), Error> {
        self.budget.charge_pages(wanted)?;
        if self.pages.capacity() - self.pages.len() < wanted
            && self.pages.try_reserve(wanted).is_err()
        {
            self.budget.refund_pages(wanted);
            return Err(Error::OutOfMemory);
        }
        Ok(())
    }

    /// Unmap the pages listed from `first` on and drop them from the list (frames freed
    /// unless device memory), refunding them.
    fn forget_from(&mut self, space: &mut AddressSpace, first: usize) {
        while self.pages.len() > first {
            let Some(user_page) = self.pages.pop() else {
                break;
            };
            let _ = Cpu::unmap_user(space, user_page.page, &mut self.table_frames());
            if !user_page.device {
                let _ = frames::free(user_page.frame);
            }
            self.budget.refund_pages(1);
        }
    }

    /// The table source of the address space: each table charged to the budget.
    fn table_frames(&mut self) -> TableFrames<'_> {
        TableFrames {
            tables: &mut self.tables,
            budget: &self.budget,
        }
    }
}

/// Page-table frames for one process's address space, each charged a page to its budget:
/// a table the budget cannot pay for is refused (the map fails with `OutOfMemory`).
pub struct TableFrames<'a> {
    tables: &'a mut usize,
    budget: &'a Budget,
}

impl FrameSource for TableFrames<'_> {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        self.budget.charge_pages(1).ok()?;
        let Some(frame) = frames::allocate_zeroed() else {
            self.budget.refund_pages(1);
            return None;
        };
        *self.tables += 1;
        Some(frame)
    }

    fn free_frame(&mut self, frame: u64) {
        let _ = frames::free(frame);
        *self.tables = self.tables.saturating_sub(1);
        self.budget.refund_pages(1);
    }
}

fn map_error(error: MapError) -> Error {
    match error {
        MapError::OutOfMemory => Error::OutOfMemory,
        MapError::BadAddress => Error::BadAddress,
        _ => Error::InvalidArgument,
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Still running.
    Running,
    /// Its last thread called `exit(code)`.
    Exited(i64),
    /// Its last thread was killed by a fault.
    Faulted(TrapCause),
}

pub struct Process {
    pub name: &'static str,
    /// Its id (`ps`, `kill <pid>`): unique for the life of the kernel, from 1.
    pub id: u64,
    /// `None` once the process is torn down.
    pub space: Lock<Option<AddressSpace>>,
    /// What a context switch to one of its threads activates, without `space`'s lock: valid
    /// while a thread of it is in the scheduler's table (the space is torn down only after
    /// its last thread is freed, [`Process::thread_exited`]).
    switch_handle: <Cpu as Paging>::SwitchHandle,
    /// Every user mapping and the count of page tables (freed with the process): together
    /// the process's frames, charged to its budget.
    frames: Lock<Memory>,
    /// Bumped whenever a page leaves `frames` (before its frame is freed): a frame found by
    /// [`Process::anonymous_frame`] under generation *g* is still this process's while the
    /// generation is *g* (the IPC layer caches buffer frames by it).
    unmaps: AtomicU64,
    threads: AtomicUsize,
    /// 0 running, 1 exited, 2 faulted.
    ending_kind: AtomicU32,
    exit_code: AtomicI64,
    fault: Lock<Option<TrapCause>>,
    /// Its capabilities and its memory budget.
    pub caps: CapSpace,
    /// Ended by `process_kill`.
    killed: AtomicBool,
    /// The notification and bits signalled when the last thread is gone.
    death: Lock<Option<(Arc<Notification>, u64)>>,
    /// The charge of this record and its capability table's first slots to its own budget.
    _charge: Charge,
}

// SAFETY: the address space is reached only under its lock (or, to activate it, through
// its switch handle, whose record is all atomics); the arch's page-table root is plain
// data.
unsafe impl Send for Process {}
// SAFETY: as above: every other field is behind a lock or atomic, or never changes.
unsafe impl Sync for Process {}

/// A fresh process id.
fn next_id() -> u64 {
    static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Process {
    /// A process named `name` with an empty address space, no thread and no capability,
    /// charged (record, capability table's first slots, root table) to `budget`, the
    /// memory budget it is given.
    pub fn new(name: &'static str, budget: Arc<Budget>) -> Result<Arc<Self>, MapError> {
        let charge = Charge::take(&budget, PROCESS_BYTES).map_err(|_| MapError::OutOfMemory)?;
        budget.charge_pages(1).map_err(|_| MapError::OutOfMemory)?;
        let space = match Cpu::new_address_space(&mut KernelFrames) {
            Ok(space) => space,
            Err(error) => {
                budget.refund_pages(1);
                return Err(error);
            }
        };
        crate::stats::live_add(crate::stats::Live::Process);
        let switch_handle = Cpu::switch_handle(&space);
        Ok(Arc::new(Process {
            name,
            id: next_id(),
            space: Lock::new(level::ADDRESS_SPACE, Some(space)),
            switch_handle,
            frames: Lock::new(
                level::PROCESS_PAGES,
                Memory {
                    pages: Vec::new(),
                    tables: 1,
                    budget: budget.clone(),
                },
            ),
            unmaps: AtomicU64::new(0),
            threads: AtomicUsize::new(0),
            ending_kind: AtomicU32::new(0),
            exit_code: AtomicI64::new(0),
            fault: Lock::new(level::PROCESS, None),
            caps: CapSpace::new(budget),
            killed: AtomicBool::new(false),
            death: Lock::new(level::PROCESS, None),
            _charge: charge,
        }))
    }

    /// The ending so far.
    pub fn ending(&self) -> Ending {
        match self.ending_kind.load(Ordering::Acquire) {
            0 => Ending::Running,
            1 => Ending::Exited(self.exit_code.load(Ordering::Relaxed)),
            _ => Ending::Faulted(self.fault.lock().unwrap_or(TrapCause::Other(0))),
        }
    }

    /// Record an `exit(code)` by one of its threads.
    pub fn record_exit(&self, code: i64) {
        self.exit_code.store(code, Ordering::Relaxed);
        self.ending_kind.store(1, Ordering::Release);
    }

    /// Record the fault that killed one of its threads.
    pub fn record_fault(&self, cause: TrapCause) {
        *self.fault.lock() = Some(cause);
        self.ending_kind.store(2, Ordering::Release);
    }

    /// Map `pages` fresh zeroed pages from `address` (checked by the caller: page-aligned,
    /// in the user half). All or nothing.
    pub fn map_anonymous(&self, address: u64, pages: u64, flags: PageFlags) -> Result<(), Error> {
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(Error::InvalidArgument)?;
        let mut memory = self.frames.lock();
        let wanted = usize::try_from(pages).map_err(|_| Error::OutOfMemory)?;
        let end = address + pages * PAGE_SIZE;
        if memory
            .pages
            .iter()
            .any(|user_page| (address..end).contains(&user_page.page))
        {
            return Err(Error::InvalidArgument);
        }
        memory.make_room(wanted)?;
        let first_new = memory.pages.len();
        let mut page = address;
        let mut result = Ok(());
        while page < end {
            let Some(frame) = frames::allocate_zeroed() else {
                result = Err(Error::OutOfMemory);
                break;
            };
            if flags.executable {
                // The zeroes must replace whatever instructions the frame held before.
                frames::sync_instructions(frame, PAGE_SIZE);
            }
            let mapped = Cpu::map_user(space, page, frame, flags, &mut memory.table_frames());
            if let Err(error) = mapped {
                let _ = frames::free(frame);
                result = Err(map_error(error));
                break;
            }
            memory.pages.push(UserPage {
                page,
                frame,
                anonymous: true,
                device: false,
            });
            page += PAGE_SIZE;
        }
        if result.is_err() {
            // The pages charged but never listed, then the listed ones.
            memory
                .budget
                .refund_pages(wanted - (memory.pages.len() - first_new));
            self.unmaps.fetch_add(1, Ordering::AcqRel);
            memory.forget_from(space, first_new);
        }
        result
    }

    /// Unmap `pages` pages from `address`, each of which `map_anonymous` made, and free
    /// them. Nothing changes when one is not such a page.
    pub fn unmap_anonymous(&self, address: u64, pages: u64) -> Result<(), Error> {
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(Error::InvalidArgument)?;
        let mut memory = self.frames.lock();
        if pages == 1 {
            // One page, looked for from the most recently mapped.
            let index = memory
                .pages
                .iter()
                .rposition(|user_page| user_page.page == address)
                .filter(|&index| memory.pages[index].anonymous)
                .ok_or(Error::InvalidArgument)?;
            self.unmaps.fetch_add(1, Ordering::AcqRel);
            let user_page = memory.pages.swap_remove(index);
            let _ = Cpu::unmap_user(space, user_page.page, &mut memory.table_frames());
            crate::stats::count_tlb_flush();
            let _ = frames::free(user_page.frame);
            memory.budget.refund_pages(1);
            return Ok(());
        }
        let end = address + pages * PAGE_SIZE;
        let in_range = |user_page: &UserPage| (address..end).contains(&user_page.page);
        let found = memory
            .pages
            .iter()
            .filter(|user_page| in_range(user_page) && user_page.anonymous)
            .count();
        if u64::try_from(found).ok() != Some(pages) {
            return Err(Error::InvalidArgument);
        }
        self.unmaps.fetch_add(1, Ordering::AcqRel);
        let mut index = 0;
        while index < memory.pages.len() {
            if in_range(&memory.pages[index]) {
                let user_page = memory.pages.swap_remove(index);
                let _ = Cpu::unmap_user(space, user_page.page, &mut memory.table_frames());
                crate::stats::count_tlb_flush();
                let _ = frames::free(user_page.frame);
                memory.budget.refund_pages(1);
            } else {
                index += 1;
            }
        }
        Ok(())
    }

    /// Map `pages` pages of device registers from `physical` at `address`, uncached
    /// (x86_64 PAT UC, AArch64 Device-nGnRE), user-readable (and writable when `writable`),
    /// never executable: for driver
    /// servers holding an MMIO capability (the capability check is the caller's). Refuses
    /// a range that is not wholly in the user half or wraps (`BadAddress`), touches RAM or
    /// firmware memory of the memory map (`PermissionDenied`), overlaps a page the process
    /// already has or is misaligned (`InvalidArgument`), or exceeds the budget
    /// (`OutOfMemory`). All or nothing. Device pages are charged to the budget like the
    /// tables mapping them (their listing and bound), and are unmapped, never freed, with
    /// the process.
    pub fn map_device(
        &self,
        address: u64,
        physical: u64,
        pages: u64,
        writable: bool,
    ) -> Result<(), Error> {
        let length = pages.checked_mul(PAGE_SIZE).ok_or(Error::BadAddress)?;
        if pages == 0 || !address.is_multiple_of(PAGE_SIZE) || !physical.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidArgument);
        }
        let end = UserRange::new(address, length)
            .ok_or(Error::BadAddress)?
            .end();
        let regions = crate::boot::memory_regions().ok_or(Error::PermissionDenied)?;
        if kcore::memory::overlaps_memory(regions, physical, length) {
            return Err(Error::PermissionDenied);
        }
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(Error::InvalidArgument)?;
        let mut memory = self.frames.lock();
        let wanted = usize::try_from(pages).map_err(|_| Error::OutOfMemory)?;
        if memory
            .pages
            .iter()
            .any(|user_page| (address..end).contains(&user_page.page))
        {
            return Err(Error::InvalidArgument);
        }
        memory.make_room(wanted)?;
        let flags = PageFlags {
            writable,
            executable: false,
            user: true,
            device: true,
        };
        let first_new = memory.pages.len();
        let mut result = Ok(());
        for index in 0..pages {
            let (page, frame) = (address + index * PAGE_SIZE, physical + index * PAGE_SIZE);
            let mapped = Cpu::map_user(space, page, frame, flags, &mut memory.table_frames());
            if let Err(error) = mapped {
                result = Err(match error {
                    MapError::OutOfMemory => Error::OutOfMemory,
                    _ => Error::InvalidArgument,
                });
                break;
            }
            memory.pages.push(UserPage {
                page,
                frame,
                anonymous: false,
                device: true,
            });
        }
        if result.is_err() {
            memory
                .budget
                .refund_pages(wanted - (memory.pages.len() - first_new));
            memory.forget_from(space, first_new);
        }
        result
    }

    #[cfg(feature = "testing")]
    /// Tear down a process no thread ever ran in.
    pub fn release_unstarted(&self) {
        if self.threads.load(Ordering::Acquire) == 0 {
            self.teardown();
        }
    }

    /// One of its threads was freed: its record and kernel stack go back to the budget.
    /// The last one tears the address space down and queues the signal of the death
    /// notification ([`super::pending`]).
    pub fn thread_exited(&self) {
        self.caps.budget().refund(THREAD_BYTES);
        if self.threads.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.teardown();
            let death = self.death.lock().take();
            if let Some((notification, bits)) = death {
                super::pending::signal(notification, bits);
            }
        }
    }

    /// Frames it holds: user pages and page tables (`mem`).
    pub fn pages(&self) -> usize {
        self.frames.lock().used()
    }

    /// Its memory budget.
    pub fn budget(&self) -> &Arc<Budget> {
        self.caps.budget()
    }

    /// Threads not yet freed.
    pub fn live_threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    /// Count one more thread and charge its record and kernel stack to the budget
    /// (before it is spawned; undo with [`Process::thread_exited`]), or `OutOfMemory`
    /// when the budget cannot pay for them.
    pub fn add_thread(&self) -> Result<(), Error> {
        self.caps.budget().charge(THREAD_BYTES)?;
        self.threads.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The state `process_status` reports: running while a thread is left.
    pub fn status(&self) -> abi::ProcessStatus {
        if self.live_threads() > 0 {
            return abi::ProcessStatus::Running;
        }
        if self.killed.load(Ordering::Acquire) {
            return abi::ProcessStatus::Killed;
        }
        match self.ending() {
            // No thread and no ending: it never started (spawn failed).
            Ending::Running => abi::ProcessStatus::Killed,
            // why: the status carries the low 32 bits of the code (abi::ProcessStatus).
            Ending::Exited(code) => abi::ProcessStatus::Exited(code as i32),
            Ending::Faulted(_) => abi::ProcessStatus::Faulted,
        }
    }

    /// Mark the process killed (`process_status` reports it); ending its threads is the
    /// caller's.
    pub fn mark_killed(&self) {
        self.killed.store(true, Ordering::Release);
    }

    /// Signal `bits` on `notification` when the last thread is gone. Returns them back
    /// when it is gone already: the caller signals at once.
    pub fn bind_death(
        &self,
        notification: Arc<Notification>,
        bits: u64,
    ) -> Option<(Arc<Notification>, u64)> {
        let mut death = self.death.lock();
        if self.live_threads() == 0 {
            return Some((notification, bits));
        }
        let old = death.replace((notification, bits));
        drop(death);
        drop(old);
        None
    }

    /// The unmap generation (see the field): read it before [`Process::anonymous_frame`].
    #[inline(always)]
    pub fn unmaps(&self) -> u64 {
        self.unmaps.load(Ordering::Acquire)
    }

    /// The frame behind `page` if `memory_map` made it (an IPC buffer candidate).
    pub fn anonymous_frame(&self, page: u64) -> Option<u64> {
        self.frames
            .lock()
            .pages
            .iter()
            .find(|user_page| user_page.page == page && user_page.anonymous)
            .map(|user_page| user_page.frame)
    }

    /// Map a fresh zeroed frame at `page`; returns its physical address.
    pub fn map_zeroed(&self, page: u64, flags: PageFlags) -> Result<u64, MapError> {
        self.map_filled(page, flags, &[], 0)
    }

    /// Map a fresh frame at `page` holding `bytes` from `offset` and zeroes elsewhere
    /// (written once, before the page is mapped); returns its physical address.
    pub fn map_filled(
        &self,
        page: u64,
        flags: PageFlags,
        bytes: &[u8],
        offset: usize,
    ) -> Result<u64, MapError> {
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(MapError::NotMapped)?;
        let mut memory = self.frames.lock();
        memory.make_room(1).map_err(|_| MapError::OutOfMemory)?;
        let Some(physical) = frames::allocate_run(0) else {
            memory.budget.refund_pages(1);
            return Err(MapError::OutOfMemory);
        };
        frames::fill(physical, offset, bytes);
        if let Err(error) = Cpu::map_user(space, page, physical, flags, &mut memory.table_frames())
        {
            let _ = frames::free(physical);
            memory.budget.refund_pages(1);
            return Err(error);
        }
        memory.pages.push(UserPage {
            page,
            frame: physical,
            anonymous: false,
            device: false,
        });
        Ok(physical)
    }

    /// Make this process's address space the current one of CPU `cpu` (the caller's), for
    /// a switch to one of its threads: no lock.
    ///
    /// # Safety
    /// A thread of this process is in the scheduler's table, whose lock the caller holds
    /// (so the space is not torn down meanwhile: [`Process::thread_exited`]); `cpu` is the
    /// index of the CPU that runs this.
    #[inline(always)]
    pub unsafe fn activate_for_switch(&self, cpu: u32) {
        // SAFETY: a thread of this process is in the table (the caller's contract), so its
        // space is not destroyed before this returns; `cpu` is this CPU's (also the
        // caller's contract).
        unsafe { Cpu::activate_handle(self.switch_handle, cpu) };
    }

    /// Make this process's address space the CPU's current one (if it still has one).
    pub fn activate(&self) {
        if let Some(space) = self.space.lock().as_ref() {
            Cpu::activate(space);
        }
    }

    /// Free everything the process holds: capabilities, user pages, page tables.
    pub fn teardown(&self) {
        // Capabilities first: dropping them may queue endpoints to close.
        self.caps.clear();
        // Nothing may run on this address space any more; make sure the CPU is not still
        // walking its tables before they are freed.
        activate_kernel_only();
        let Some(space) = self.space.lock().take() else {
            return;
        };
        self.unmaps.fetch_add(1, Ordering::AcqRel);
        // Destroying the space first makes every CPU that still had it active leave it and
        // drop its translations, so its frames need no unmap and no CPU translates to one
        // once it is free for reuse.
        Cpu::destroy(space, &mut |table| {
            let _ = frames::free(table);
        });
        let mut memory = self.frames.lock();
        let user_pages = core::mem::take(&mut memory.pages);
        memory.budget.refund_pages(user_pages.len() + memory.tables);
        memory.tables = 0;
        drop(memory);
        for user_page in &user_pages {
            if !user_page.device {
                let _ = frames::free(user_page.frame);
            }
        }
        drop(user_pages);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        crate::stats::live_sub(crate::stats::Live::Process);
    }
}

/// An address space with no user mapping, active whenever no process is (so a dead
/// process's tables can be freed).
static KERNEL_ONLY: Lock<Option<AddressSpace>> = Lock::new(level::KERNEL_ONLY, None);

/// Make the kernel-only address space current (no user mapping at all).
pub fn activate_kernel_only() {
    if let Some(kernel_only) = KERNEL_ONLY.lock().as_ref() {
        Cpu::activate(kernel_only);
    }
}

/// Create the kernel-only address space. Called once, after the frame allocator.
pub fn init() {
    match Cpu::new_address_space(&mut KernelFrames) {
        Ok(space) => *KERNEL_ONLY.lock() = Some(space),
        Err(error) => panic!("no kernel-only address space: {error:?}"),
    }
}
