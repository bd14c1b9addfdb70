//! User processes: an address space built from a checked ELF image (a boot module), a
//! user stack, and the threads running in it (DESIGN.md §7, issues 7 and 8).
//!
//! Loading never trusts the image: [`kcore::elf::parse`] checks it completely before
//! anything is mapped, and every mapping failure unwinds what was mapped, so a malformed
//! module is an error, never a crash.
//!
//! Weak spots: a process's frames are kept in a `Vec`; the
//! address space is destroyed only once another one (the kernel-only one) is active.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};

use abi::Error;
use arch_api::{
    PAGE_SIZE, PageFlags, Paging, Threads, TrapCause, TrapFrame as _, USER_END, USER_START,
};
use kcore::elf::{self, ElfError};
use spin::Mutex;

use crate::Cpu;
use crate::memory::frames::{self, KernelFrames};
use crate::sched;
use crate::thread::{Start, TrapFrame};

pub type AddressSpace = <Cpu as Paging>::AddressSpace;

/// The machine number user ELF images must carry.
pub const MACHINE: u16 = if matches!(<Cpu as arch_api::Platform>::NAME.as_bytes(), b"x86_64") {
    elf::MACHINE_X86_64
} else {
    elf::MACHINE_AARCH64
};

/// The user stack: 64 KiB ending one page below the top of the user half (that page stays
/// unmapped).
pub const USER_STACK_TOP: u64 = USER_END - PAGE_SIZE;
pub const USER_STACK_SIZE: u64 = 64 * 1024;

/// Pages of user memory one process may hold — image, stack and `memory_map` together
/// (16 MiB), so no process can exhaust the kernel's frames.
pub const QUOTA_PAGES: usize = 4096;

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
    /// Its id (issue 9: `ps`, `kill <pid>`): unique for the life of the kernel, from 1.
    pub id: u64,
    /// `None` once the process is torn down.
    pub space: Mutex<Option<AddressSpace>>,
    /// Every user mapping (freed with the process); its length is the process's memory use,
    /// bounded by [`QUOTA_PAGES`].
    frames: Mutex<Vec<UserPage>>,
    threads: AtomicUsize,
    /// 0 running, 1 exited, 2 faulted.
    ending_kind: AtomicU32,
    exit_code: AtomicI64,
    fault: Mutex<Option<TrapCause>>,
    /// Its capabilities and object quota (issue 8).
    pub caps: crate::object::CapSpace,
    /// Issue 8 process control: ended by `process_kill`.
    killed: core::sync::atomic::AtomicBool,
    /// The notification and bits signalled when the last thread is gone.
    death: Mutex<Option<(Arc<crate::object::Notification>, u64)>>,
    /// The charge against the creator's object quota (`process_spawn`).
    charge: Mutex<Option<crate::object::Charge>>,
}

// SAFETY: the address space is reached only under its lock, and the kernel runs on one CPU
// with interrupts masked; the arch's page-table root is plain data.
unsafe impl Send for Process {}
// SAFETY: as above: every field is behind a lock or atomic.
unsafe impl Sync for Process {}

/// A fresh process id.
fn next_id() -> u64 {
    static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a process could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    NoModule,
    Elf(ElfError),
    OutOfMemory,
    Map(arch_api::MapError),
    Thread(sched::SpawnError),
}

impl Process {
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
        let mut list = self.frames.lock();
        let wanted = usize::try_from(pages).map_err(|_| Error::OutOfMemory)?;
        if list.len().saturating_add(wanted) > QUOTA_PAGES {
            return Err(Error::OutOfMemory);
        }
        let end = address + pages * PAGE_SIZE;
        if list
            .iter()
            .any(|user_page| (address..end).contains(&user_page.page))
        {
            return Err(Error::InvalidArgument);
        }
        let first_new = list.len();
        let mut page = address;
        let mut result = Ok(());
        while page < end {
            let Some(frame) = frames::allocate_zeroed() else {
                result = Err(Error::OutOfMemory);
                break;
            };
            if let Err(error) = Cpu::map_user(space, page, frame, flags, &mut KernelFrames) {
                let _ = frames::free(frame);
                result = Err(match error {
                    arch_api::MapError::OutOfMemory => Error::OutOfMemory,
                    arch_api::MapError::BadAddress => Error::BadAddress,
                    _ => Error::InvalidArgument,
                });
                break;
            }
            list.push(UserPage {
                page,
                frame,
                anonymous: true,
                device: false,
            });
            page += PAGE_SIZE;
        }
        if result.is_err() {
            for user_page in list.drain(first_new..) {
                let _ = Cpu::unmap_user(space, user_page.page);
                let _ = frames::free(user_page.frame);
            }
        }
        result
    }

    /// Unmap `pages` pages from `address`, each of which `map_anonymous` made, and free
    /// them. Nothing changes when one is not such a page.
    pub fn unmap_anonymous(&self, address: u64, pages: u64) -> Result<(), Error> {
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(Error::InvalidArgument)?;
        let mut list = self.frames.lock();
        let end = address + pages * PAGE_SIZE;
        let in_range = |user_page: &UserPage| (address..end).contains(&user_page.page);
        let found = list
            .iter()
            .filter(|user_page| in_range(user_page) && user_page.anonymous)
            .count();
        if u64::try_from(found).ok() != Some(pages) {
            return Err(Error::InvalidArgument);
        }
        let mut index = 0;
        while index < list.len() {
            if in_range(&list[index]) {
                let user_page = list.swap_remove(index);
                let _ = Cpu::unmap_user(space, user_page.page);
                crate::bench::count_tlb_flush();
                let _ = frames::free(user_page.frame);
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
    /// already has or is misaligned (`InvalidArgument`), or exceeds the quota
    /// (`OutOfMemory`). All or nothing. Device pages count towards [`QUOTA_PAGES`] (their
    /// page tables are the process's) and are unmapped, never freed, with the process.
    pub fn map_device(
        &self,
        address: u64,
        physical: u64,
        pages: u64,
        writable: bool,
    ) -> Result<(), Error> {
        let length = pages.checked_mul(PAGE_SIZE).ok_or(Error::BadAddress)?;
        let end = address.checked_add(length).ok_or(Error::BadAddress)?;
        if pages == 0 || !address.is_multiple_of(PAGE_SIZE) || !physical.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidArgument);
        }
        if address < USER_START || end > USER_END {
            return Err(Error::BadAddress);
        }
        let regions = crate::boot::memory_regions().ok_or(Error::PermissionDenied)?;
        if kcore::memory::overlaps_memory(regions, physical, length) {
            return Err(Error::PermissionDenied);
        }
        let mut space = self.space.lock();
        let space = space.as_mut().ok_or(Error::InvalidArgument)?;
        let mut list = self.frames.lock();
        let wanted = usize::try_from(pages).map_err(|_| Error::OutOfMemory)?;
        if list.len().saturating_add(wanted) > QUOTA_PAGES {
            return Err(Error::OutOfMemory);
        }
        if list
            .iter()
            .any(|user_page| (address..end).contains(&user_page.page))
        {
            return Err(Error::InvalidArgument);
        }
        let flags = PageFlags {
            writable,
            executable: false,
            user: true,
            device: true,
        };
        let first_new = list.len();
        let mut result = Ok(());
        for index in 0..pages {
            let (page, frame) = (address + index * PAGE_SIZE, physical + index * PAGE_SIZE);
            if let Err(error) = Cpu::map_user(space, page, frame, flags, &mut KernelFrames) {
                result = Err(match error {
                    arch_api::MapError::OutOfMemory => Error::OutOfMemory,
                    _ => Error::InvalidArgument,
                });
                break;
            }
            list.push(UserPage {
                page,
                frame,
                anonymous: false,
                device: true,
            });
        }
        if result.is_err() {
            for user_page in list.drain(first_new..) {
                let _ = Cpu::unmap_user(space, user_page.page);
            }
        }
        result
    }

    /// A process with an empty address space and no thread (for in-kernel tests of its
    /// memory calls); [`Process::release_unstarted`] tears it down.
    pub fn new_unstarted(name: &'static str) -> Result<Arc<Self>, LoadError> {
        let space = Cpu::new_address_space(&mut KernelFrames).map_err(LoadError::Map)?;
        Ok(Arc::new(Process {
            name,
            id: next_id(),
            space: Mutex::new(Some(space)),
            frames: Mutex::new(Vec::new()),
            threads: AtomicUsize::new(0),
            ending_kind: AtomicU32::new(0),
            exit_code: AtomicI64::new(0),
            fault: Mutex::new(None),
            caps: crate::object::CapSpace::new(),
            killed: core::sync::atomic::AtomicBool::new(false),
            death: Mutex::new(None),
            charge: Mutex::new(None),
        }))
    }

    /// Tear down a process no thread ever ran in (see [`Process::new_unstarted`]).
    pub fn release_unstarted(&self) {
        if self.threads.load(Ordering::Acquire) == 0 {
            self.teardown();
        }
    }

    /// One of its threads was freed. The last one tears the address space down and
    /// signals the death notification.
    pub fn thread_exited(&self) {
        if self.threads.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.teardown();
            let death = self.death.lock().take();
            if let Some((notification, bits)) = death {
                crate::ipc::signal_object(&notification, bits);
            }
        }
    }

    /// Threads not yet freed.
    /// User pages mapped (its memory use, `mem`).
    pub fn pages(&self) -> usize {
        self.frames.lock().len()
    }

    pub fn live_threads(&self) -> usize {
        self.threads.load(Ordering::Acquire)
    }

    /// Count one more thread (before it is spawned; undo with [`Process::thread_exited`]).
    pub fn add_thread(&self) {
        self.threads.fetch_add(1, Ordering::AcqRel);
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

    /// `process_kill`: every thread ends before it runs user code again.
    pub fn kill(self: &Arc<Self>) {
        if self.live_threads() > 0 {
            self.killed.store(true, Ordering::Release);
            sched::kill_process(self);
        }
    }

    /// Signal `bits` on `notification` when the last thread is gone (now if it is).
    pub fn bind_death(&self, notification: Arc<crate::object::Notification>, bits: u64) {
        if self.live_threads() == 0 {
            crate::ipc::signal_object(&notification, bits);
            return;
        }
        let old = self.death.lock().replace((notification, bits));
        drop(old);
    }

    /// Keep `charge` for as long as the process object lives.
    pub fn set_charge(&self, charge: crate::object::Charge) {
        *self.charge.lock() = Some(charge);
    }

    /// The frame behind `page` if `memory_map` made it (an IPC buffer candidate).
    pub fn anonymous_frame(&self, page: u64) -> Option<u64> {
        self.frames
            .lock()
            .iter()
            .find(|user_page| user_page.page == page && user_page.anonymous)
            .map(|user_page| user_page.frame)
    }

    fn teardown(&self) {
        // Capabilities first: dropping them may close endpoints and wake other threads.
        self.caps.clear();
        // Nothing may run on this address space any more; make sure the CPU is not still
        // walking its tables before they are freed.
        activate_kernel_only();
        let Some(mut space) = self.space.lock().take() else {
            return;
        };
        let user_frames = core::mem::take(&mut *self.frames.lock());
        for user_page in &user_frames {
            let _ = Cpu::unmap_user(&mut space, user_page.page);
            if !user_page.device {
                let _ = frames::free(user_page.frame);
            }
        }
        Cpu::destroy(space, &mut |table| {
            let _ = frames::free(table);
        });
    }
}

/// An address space with no user mapping, active whenever no process is (so a dead
/// process's tables can be freed).
static KERNEL_ONLY: Mutex<Option<AddressSpace>> = Mutex::new(None);

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

/// Load the boot module `module` and start one thread in it at its entry point with
/// `argument`. Returns the process (to watch its ending).
pub fn spawn_from_module(module: &'static str, argument: u64) -> Result<Arc<Process>, LoadError> {
    let file = crate::boot::module(module).ok_or(LoadError::NoModule)?;
    spawn_from_image(module, file, argument)
}

/// Check `file` as an executable, load it into a new process named `name`, and start one
/// thread at its entry point with `argument`. A malformed image is an error; nothing is
/// left allocated when one is returned.
pub fn spawn_from_image(
    name: &'static str,
    file: &[u8],
    argument: u64,
) -> Result<Arc<Process>, LoadError> {
    spawn_at(name, file, argument, sched::NORMAL).map(|(process, _)| process)
}

/// [`spawn_from_image`] with the first thread at `priority`; also returns that thread's id.
/// The thread is ready but cannot run before the caller next blocks or yields (the
/// kernel is not preempted), so the caller can still fill the capability table.
pub fn spawn_at(
    name: &'static str,
    file: &[u8],
    argument: u64,
    priority: kcore::runqueue::Priority,
) -> Result<(Arc<Process>, usize), LoadError> {
    let module = name;
    let image = elf::parse(file, MACHINE, USER_START..USER_END).map_err(LoadError::Elf)?;
    let space = Cpu::new_address_space(&mut KernelFrames).map_err(LoadError::Map)?;
    let process = Arc::new(Process {
        name: module,
        id: next_id(),
        space: Mutex::new(Some(space)),
        frames: Mutex::new(Vec::new()),
        threads: AtomicUsize::new(0),
        ending_kind: AtomicU32::new(0),
        exit_code: AtomicI64::new(0),
        fault: Mutex::new(None),
        caps: crate::object::CapSpace::new(),
        killed: core::sync::atomic::AtomicBool::new(false),
        death: Mutex::new(None),
        charge: Mutex::new(None),
    });
    if let Err(error) = populate(&process, file, &image) {
        process.teardown();
        return Err(error);
    }
    process.threads.fetch_add(1, Ordering::AcqRel);
    let start = Start::User {
        entry: image.entry,
        stack: USER_STACK_TOP,
        argument,
    };
    match sched::spawn(module, priority, start, Some(process.clone()), true) {
        Ok(thread) => Ok((process, thread)),
        Err(error) => {
            process.threads.fetch_sub(1, Ordering::AcqRel);
            process.teardown();
            Err(LoadError::Thread(error))
        }
    }
}

/// Map the image's segments and the user stack.
fn populate(process: &Process, file: &[u8], image: &elf::Image) -> Result<(), LoadError> {
    for segment in image.segments() {
        let flags = PageFlags {
            writable: segment.writable,
            executable: segment.executable,
            user: true,
            device: false,
        };
        for page in segment.pages().step_by(PAGE_SIZE as usize) {
            let physical = map_zeroed(process, page, flags)?;
            if let Some((offset, range)) = segment.file_bytes_in_page(page) {
                let bytes = &file[range];
                let target = frames::virtual_address(physical) + offset as u64;
                // SAFETY: the frame was just allocated for this page (nothing else uses
                // it); `offset + bytes.len() <= PAGE_SIZE` by `file_bytes_in_page`; the HHDM
                // maps it writable.
                unsafe {
                    core::ptr::copy_nonoverlapping(bytes.as_ptr(), target as *mut u8, bytes.len());
                }
            }
        }
    }
    let stack_flags = PageFlags {
        writable: true,
        executable: false,
        user: true,
        device: false,
    };
    let mut page = USER_STACK_TOP - USER_STACK_SIZE;
    while page < USER_STACK_TOP {
        map_zeroed(process, page, stack_flags)?;
        page += PAGE_SIZE;
    }
    Ok(())
}

/// Map a fresh zeroed frame at `page`; returns its physical address.
fn map_zeroed(process: &Process, page: u64, flags: PageFlags) -> Result<u64, LoadError> {
    let physical = frames::allocate_zeroed().ok_or(LoadError::OutOfMemory)?;
    let mapped = match process.space.lock().as_mut() {
        Some(space) => Cpu::map_user(space, page, physical, flags, &mut KernelFrames),
        None => Err(arch_api::MapError::NotMapped),
    };
    if let Err(error) = mapped {
        let _ = frames::free(physical);
        return Err(LoadError::Map(error));
    }
    let mut list = process.frames.lock();
    if list.len() >= QUOTA_PAGES {
        drop(list);
        if let Some(space) = process.space.lock().as_mut() {
            let _ = Cpu::unmap_user(space, page);
        }
        let _ = frames::free(physical);
        return Err(LoadError::OutOfMemory);
    }
    list.push(UserPage {
        page,
        frame: physical,
        anonymous: false,
        device: false,
    });
    Ok(physical)
}

/// The first entry of a user thread into user mode (on its own kernel stack; its address
/// space is already active).
pub fn enter_user(entry: u64, stack: u64, argument: u64) -> ! {
    let kernel_stack = sched::current_stack().expect("a user thread has a kernel stack");
    let frame = (kernel_stack.top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the frame slot is the top of this thread's own kernel stack, which is mapped,
    // suitably aligned (the stack top is page-aligned and the frame size a multiple of 16)
    // and not used by anything above this function's own frame, which lies lower.
    unsafe { frame.write(TrapFrame::new_user(entry, stack, argument)) };
    crate::bench::mark_user_entry();
    // SAFETY: the frame lies at the top of the current thread's kernel stack, was made by
    // `new_user`, and the scheduler activated the thread's address space before switching
    // to it.
    unsafe { Cpu::enter_user(frame) }
}

/// A trap from user mode that is not a system call: report it, record it, and end the
/// thread. Never returns.
pub fn kill_current(frame: &TrapFrame, cause: TrapCause) -> ! {
    crate::bench::mark_fault();
    let thread = sched::current();
    let process = sched::current_process();
    let name = process.as_ref().map_or("(kernel)", |process| process.name);
    crate::println!(
        "keel: user fault in process {name} (thread {thread}): {} at ip {:#x}; thread killed",
        Describe(cause),
        frame.instruction_pointer(),
    );
    if let Some(process) = &process {
        process.record_fault(cause);
    }
    drop(process);
    sched::exit_current()
}

/// A trap cause in words, for reports.
pub struct Describe(pub TrapCause);

impl core::fmt::Display for Describe {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            TrapCause::PageFault { addr, access, .. } => {
                let access = match access {
                    arch_api::Access::Read => "read",
                    arch_api::Access::Write => "write",
                    arch_api::Access::Execute => "execute",
                };
                write!(out, "page fault ({access}) at {addr:#x}")
            }
            TrapCause::Breakpoint => write!(out, "breakpoint"),
            TrapCause::Undefined => write!(out, "undefined instruction"),
            TrapCause::Alignment => write!(out, "alignment fault"),
            TrapCause::Arithmetic => write!(out, "arithmetic fault"),
            TrapCause::FpuUnavailable => write!(out, "FPU unavailable"),
            TrapCause::GeneralProtection => {
                write!(
                    out,
                    "general protection (privileged instruction or bad address)"
                )
            }
            TrapCause::Syscall => write!(out, "system call"),
            TrapCause::Irq(line) => write!(out, "interrupt {line}"),
            TrapCause::Other(code) => write!(out, "exception {code:#x}"),
        }
    }
}
