//! The contract between Keel's portable core and an architecture crate.
//!
//! Both `arch/x86_64` and `arch/aarch64` implement [`Platform`] for a zero-sized type
//! exported as `arch::Cpu`; the kernel says `arch::Cpu::console_write(…)` and never names
//! a register, so the compiler checks that both architectures provide the same surface.
//!
//! Calls in the other direction (arch → core: timer ticks, traps) are the *upcalls*: a small
//! named set of `extern "Rust"` functions declared in each arch crate's `upcall` module and
//! defined in the kernel's `upcall` module. There is no function-pointer registry.
//!
//! Besides the traits, the algorithms both architectures share live here, host-tested, with
//! the architecture supplying only its register- and encoding-specific parts: the page-table
//! walker and HHDM table access ([`pagetable`]), building the kernel's own tables
//! ([`kernel_tables`]), exception fixups ([`fixup`]), the frame-pointer backtrace
//! ([`backtrace`]) and user address ranges ([`UserRange`]).
//!
//! With the cargo feature `testing` (off by default) the contract also holds the hooks only
//! the in-kernel test suite uses: [`SelfTest`] and [`InterruptSelfTest`].
#![no_std]
// No unsafe code here; the only `unsafe` items are the declarations of the `Threads`
// methods whose callers carry duties (allowed where declared).
#![deny(unsafe_code)]

extern crate alloc;

pub mod asid;
pub mod backtrace;
pub mod cache;
pub mod fixup;
pub mod kernel_tables;
pub mod pagetable;
pub mod tags;
pub mod tlb;
mod user;

pub use user::{Pages, UserRange};

/// What the core learned from the boot protocol that an arch crate needs before anything
/// else runs. Built by the kernel's `boot` module from the Limine responses.
#[derive(Clone, Copy, Debug)]
pub struct EarlyInfo<'a> {
    /// Virtual address at which physical address 0 is mapped (the Limine HHDM).
    pub hhdm_offset: u64,
    /// The flattened device tree, if the loader gave one (AArch64 needs it).
    pub device_tree: Option<&'a [u8]>,
    /// The ACPI RSDP's physical address, if the loader gave one.
    pub rsdp: Option<u64>,
}

/// A source of zeroed, 4 KiB-aligned physical frames for early page-table work (device
/// mappings before the real frame allocator exists).
pub trait FrameSource {
    /// A zeroed 4 KiB frame, by physical address, or `None` when memory ran out.
    fn alloc_zeroed_frame(&mut self) -> Option<u64>;

    /// Take back a frame [`FrameSource::alloc_zeroed_frame`] handed out (a page table that
    /// emptied or was never linked). Default: keep it (boot-time sources never free).
    fn free_frame(&mut self, frame: u64) {
        let _ = frame;
    }
}

/// Why early platform bring-up failed. Each variant carries what the user must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyError {
    /// The device tree is required (AArch64) but the loader gave none.
    NoDeviceTree,
    /// A device the kernel cannot run without is missing or malformed.
    MissingDevice(&'static str),
    /// No frame was left for a page table.
    OutOfMemory,
    /// The machine state the loader handed over is one the kernel cannot run in (wrong
    /// exception level, paging configuration, or a kernel address range already in use).
    Unsupported(&'static str),
}

/// How a fatal stop should be reported to whoever runs the machine (QEMU's exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every test passed (or the user asked for power-off).
    Success = 0,
    /// Some test failed.
    TestFailed = 1,
    /// Kernel panic or fatal trap.
    Fatal = 2,
}

/// Portable cause of a trap, decoded by the arch crate (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapCause {
    Syscall,
    Irq(u32),
    PageFault {
        addr: u64,
        access: Access,
        from_user: bool,
    },
    Breakpoint,
    Undefined,
    Alignment,
    Arithmetic,
    FpuUnavailable,
    GeneralProtection,
    Other(u64),
}

/// The access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// One architecture, as the portable core sees it.
pub trait Platform {
    /// The architecture's name as printed in the banner: `x86_64` or `aarch64`.
    const NAME: &'static str;

    /// Bring up what the kernel needs to talk: the serial console, trap vectors (so a fault
    /// is reported instead of resetting the machine), and the per-CPU block of the boot CPU.
    /// Called once, on the boot CPU, before anything is printed.
    fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError>;

    /// Write bytes to the kernel's serial console, waiting for the device (no allocation,
    /// no lock: callers serialize).
    fn console_write(bytes: &[u8]);

    /// One byte received on the kernel's serial console, if one is waiting (polled, never
    /// blocks). Only the `echo-input` scenario reads: the console server owns the receive
    /// path once it exists (DESIGN.md §7).
    fn console_read() -> Option<u8>;

    /// Start the periodic timer interrupt at `hz` ticks per second; each tick calls the
    /// `timer_tick` upcall. Interrupts stay masked until [`Platform::wait_for_interrupt`].
    fn start_timer(hz: u32) -> Result<(), EarlyError>;

    /// Unmask interrupts and halt the CPU until one has been taken.
    fn wait_for_interrupt();

    /// Whether this CPU takes interrupts now (x86_64 RFLAGS.IF; AArch64 PSTATE.I clear).
    /// The kernel runs with them masked except inside [`Platform::wait_for_interrupt`],
    /// which the lock-order checker relies on.
    fn interrupts_enabled() -> bool;

    /// Power the machine off; under QEMU the exit status carries `code`.
    fn power_off(code: ExitCode) -> !;

    /// Write a frame-pointer backtrace of the caller (innermost first, one `#<n> <address>`
    /// line per frame, the kernel being built with frame pointers) to `out`, for the
    /// panic report. Must not allocate, lock, or fault on a corrupt chain.
    fn backtrace(out: &mut dyn core::fmt::Write) -> core::fmt::Result;
}

/// The system-call numbers the arch crates' entries dispatch through the core's table
/// (`KEEL_SYSCALLS`, one handler per number, called as `keel_syscall` is): those below
/// this. The entry sends every other number to `keel_syscall`. The core checks that the
/// calls with fast paths lie below it.
pub const SYSCALL_TABLE_LEN: usize = 21;

/// The most CPUs the kernel brings up: every per-CPU array (per-CPU blocks, descriptor
/// tables, IST and overflow stacks, the lock-order checker's records) has this many slots.
/// A CPU the loader reports beyond it is moved onto the kernel's tables and left parked,
/// with a line in the boot log.
pub const MAX_CPUS: usize = 8;

/// An inter-processor interrupt (DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ipi {
    /// Ask the CPU to look at its run queue: the receiver counts it in its per-CPU block
    /// ([`IpiCounters`]) and calls the core's `keel_reschedule`.
    Reschedule = 0,
    /// Answer the TLB requests waiting in this CPU's mailbox ([`tlb::Mailboxes`]), and
    /// when a [`SecondaryCpus::tlb_shootdown`] is newer than this CPU's last full flush,
    /// drop every TLB entry (global ones included) and acknowledge through the per-CPU
    /// block; both senders wait for the acknowledgement.
    TlbShootdown = 1,
    /// Halt for good with interrupts masked (the panic path). x86_64 delivers it as an NMI,
    /// so it reaches a CPU that runs with interrupts masked too; AArch64 as an SGI, taken
    /// when the CPU next unmasks interrupts.
    Stop = 2,
}

impl Ipi {
    /// Every kind, in the order of their numbers.
    pub const ALL: [Ipi; 3] = [Ipi::Reschedule, Ipi::TlbShootdown, Ipi::Stop];

    /// The kind numbered `number` (its SGI INTID on AArch64, its offset from the first IPI
    /// vector on x86_64).
    pub fn from_number(number: u64) -> Option<Ipi> {
        Self::ALL.into_iter().find(|ipi| *ipi as u64 == number)
    }
}

/// Where an IPI goes: one CPU by its dense index, or every other CPU that is online.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiTarget {
    Cpu(u32),
    AllOthers,
}

/// What a CPU's per-CPU block records about the IPIs it received, shared by both arch
/// crates (each block embeds one). Written only by the CPU that owns the block (in its
/// IPI handler), read by any.
#[derive(Debug, Default)]
pub struct IpiCounters {
    reschedules: core::sync::atomic::AtomicU64,
    /// TLB-shootdown IPIs handled.
    shootdowns: core::sync::atomic::AtomicU64,
    /// The highest shootdown generation this CPU has flushed for.
    tlb_flushed: core::sync::atomic::AtomicU64,
    stopped: core::sync::atomic::AtomicBool,
}

/// A snapshot of one CPU's [`IpiCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpiCounts {
    pub reschedules: u64,
    /// TLB-shootdown IPIs handled.
    pub shootdowns: u64,
    /// The latest TLB-shootdown generation the CPU acknowledged.
    pub tlb_flushed: u64,
    pub stopped: bool,
}

impl IpiCounters {
    pub const fn new() -> Self {
        Self {
            reschedules: core::sync::atomic::AtomicU64::new(0),
            shootdowns: core::sync::atomic::AtomicU64::new(0),
            tlb_flushed: core::sync::atomic::AtomicU64::new(0),
            stopped: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Count one reschedule IPI.
    pub fn count_reschedule(&self) {
        self.reschedules
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// Acknowledge every shootdown up to `generation`: the caller read it from
    /// [`ShootdownGenerations::current`] *before* it flushed its TLB.
    pub fn acknowledge_tlb(&self, generation: u64) {
        self.shootdowns
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        self.tlb_flushed
            .fetch_max(generation, core::sync::atomic::Ordering::Release);
    }

    /// Record that this CPU has stopped (it runs nothing afterwards).
    pub fn mark_stopped(&self) {
        self.stopped
            .store(true, core::sync::atomic::Ordering::Release);
    }

    pub fn snapshot(&self) -> IpiCounts {
        use core::sync::atomic::Ordering;
        IpiCounts {
            reschedules: self.reschedules.load(Ordering::Relaxed),
            shootdowns: self.shootdowns.load(Ordering::Relaxed),
            tlb_flushed: self.tlb_flushed.load(Ordering::Acquire),
            stopped: self.stopped.load(Ordering::Acquire),
        }
    }
}

/// TLB-shootdown generations: a sender takes a new one ([`ShootdownGenerations::next`])
/// after its page-table change and waits until every target acknowledged at least that
/// one; a receiver reads [`ShootdownGenerations::current`] before flushing. A flush that
/// started after the sender's change covers it whatever the order of concurrent
/// shootdowns, so one acknowledgement may serve several senders.
#[derive(Debug, Default)]
pub struct ShootdownGenerations(core::sync::atomic::AtomicU64);

impl ShootdownGenerations {
    pub const fn new() -> Self {
        Self(core::sync::atomic::AtomicU64::new(0))
    }

    /// A new generation for one shootdown (ordered after the caller's table writes).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, core::sync::atomic::Ordering::AcqRel) + 1
    }

    /// The newest generation taken so far (a receiver reads it before flushing).
    pub fn current(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::Acquire)
    }
}

/// How many times a sender polls for an IPI's effect (a shootdown's acknowledgement, a
/// stopped CPU) before giving up on that CPU: far more than an online CPU needs, and still
/// a bound, so a CPU that hangs cannot hang the sender.
pub const IPI_WAIT_POLLS: u64 = 1 << 26;

/// The CPUs `target` names, seen from CPU `me`: online ones only, `me` never included in
/// [`IpiTarget::AllOthers`] (and not read for [`IpiTarget::Cpu`], so a sender to one CPU
/// need not look its own index up). The IPI senders of both arch crates walk this.
pub fn ipi_targets(
    target: IpiTarget,
    me: u32,
    online: impl Fn(u32) -> bool,
) -> impl Iterator<Item = u32> {
    let (first, last, skip) = match target {
        IpiTarget::Cpu(index) => (index, index, None),
        IpiTarget::AllOthers => (0, MAX_CPUS as u32 - 1, Some(me)),
    };
    (first..=last).filter(move |&index| Some(index) != skip && online(index))
}

/// Wait, at most [`IPI_WAIT_POLLS`] polls per CPU, until `done` holds for the counts of
/// every CPU of `targets`; returns how many never got there (a CPU whose counts are gone,
/// i.e. not online, counts as not done).
pub fn wait_for_ipi_effect(
    targets: impl Iterator<Item = u32>,
    counts: impl Fn(u32) -> Option<IpiCounts>,
    done: impl Fn(&IpiCounts) -> bool,
) -> u32 {
    let mut missing = 0;
    for index in targets {
        let mut polls = 0;
        while !counts(index).is_some_and(|counts| done(&counts)) {
            if polls == IPI_WAIT_POLLS {
                missing += 1;
                break;
            }
            polls += 1;
            core::hint::spin_loop();
        }
    }
    missing
}

/// Secondary CPUs (DESIGN.md §4): the loader parks them (the Limine MP feature) and the
/// boot CPU sends each one to the core's entry, which calls, on the secondary,
/// [`enter_secondary`](Self::enter_secondary), [`run_on_stack`](Self::run_on_stack) onto
/// a kernel stack, then [`init_secondary`](Self::init_secondary); a CPU beyond
/// [`MAX_CPUS`] gets [`park_secondary`](Self::park_secondary) instead of the last two.
/// After that the CPU is *online*: it has its per-CPU block (dense index, hardware id),
/// its trap vectors and its interrupt-controller interface, and takes IPIs.
#[allow(
    unsafe_code,
    reason = "declares an `unsafe fn` whose caller carries the duties"
)]
pub trait SecondaryCpus: Platform {
    /// On the boot CPU, before any secondary is released: record the translation and
    /// control state the secondaries take over, and allocate what CPUs `1..count` need
    /// beyond static storage (x86_64: their guarded IST stacks). `count` is at most
    /// [`MAX_CPUS`].
    fn prepare_secondaries(count: u32, frames: &mut dyn FrameSource) -> Result<(), EarlyError>;

    /// First thing on a secondary CPU, still on the loader's stack (which the HHDM maps):
    /// mask interrupts and leave the loader's translation state for the kernel's, so that
    /// nothing the CPU uses afterwards lies in memory the kernel reclaims.
    fn enter_secondary();

    /// Move this CPU onto the kernel stack whose top is `top` and call `entry(argument)`
    /// there (AArch64: on SP_EL1). The loader's stack is never used again.
    ///
    /// # Safety
    /// `top` is the top of a mapped, writable kernel stack nothing else uses; the CPU has
    /// run [`enter_secondary`](Self::enter_secondary).
    unsafe fn run_on_stack(top: u64, entry: extern "C" fn(usize) -> !, argument: usize) -> !;

    /// On secondary CPU `index` (`1..count` of [`prepare_secondaries`]), on `stack`:
    /// its per-CPU block (with `index` and `hardware_id`, as the MP response reports it),
    /// descriptor tables or vectors, control registers as the boot CPU has them, and its
    /// interrupt-controller interface with the IPIs enabled; then it is online.
    /// Interrupts stay masked.
    fn init_secondary(index: u32, hardware_id: u64, stack: KernelStack);

    /// Park this secondary CPU for good: interrupts masked, the CPU halted in a loop that
    /// touches no memory (not even the stack). For CPUs beyond [`MAX_CPUS`].
    fn park_secondary() -> !;

    /// This CPU's dense index (0 = the boot CPU), read through its per-CPU block; 0
    /// before the boot CPU's block exists.
    fn cpu_index() -> u32;

    /// This CPU's hardware id read from the hardware (x86_64: the local APIC ID;
    /// AArch64: the MPIDR_EL1 affinity fields), for comparison with the per-CPU block.
    fn hardware_id() -> u64;

    /// Whether the CPU with `index` is online (the boot CPU is once early init is done).
    fn is_online(index: u32) -> bool;

    /// Send `ipi` (x86_64: the local APIC's ICR; AArch64: a GIC SGI). Targets that are not
    /// online, and this CPU in [`IpiTarget::AllOthers`], are skipped.
    fn send_ipi(target: IpiTarget, ipi: Ipi);

    /// What the CPU with `index` has recorded about IPIs, if it is online.
    fn ipi_counts(index: u32) -> Option<IpiCounts>;

    /// Flush the TLBs of `target` after a page-table change: send [`Ipi::TlbShootdown`]
    /// and wait (at most [`IPI_WAIT_POLLS`] polls per CPU) for each target's
    /// acknowledgement. Returns how many targets did not acknowledge in time (0: all did).
    fn tlb_shootdown(target: IpiTarget) -> u32;

    /// Answer the TLB requests other CPUs sent this one ([`tlb::Mailboxes`]): one load
    /// when there are none. Called between polls by every wait that runs with interrupts
    /// masked and may be waited on by a CPU that is sending this one a request (the kernel's
    /// lock spin path); see [`tlb`], "Requests and deadlock freedom". Takes no lock.
    fn service_ipi_work();

    /// One pause of a wait for another CPU: a spin hint that, under QEMU's single-threaded
    /// TCG (every vCPU in turn on one host thread, as `-icount` runs them), also ends this
    /// vCPU's turn so the CPU waited for runs (x86_64 `pause`, AArch64 `yield`). On
    /// hardware, KVM and multi-threaded TCG only a hint.
    fn wait_pause();

    /// Stop every other online CPU ([`Ipi::Stop`]) and wait (bounded) until each has
    /// recorded that it stopped. Returns how many did not in time.
    fn stop_others() -> u32;

    /// Stop this CPU for good, as an [`Ipi::Stop`] would: interrupts masked, halted.
    fn stop_self() -> !;

    /// On an online secondary CPU: start its local timer (x86_64: the local APIC timer
    /// with the boot CPU's calibration, made in [`prepare_secondaries`]; AArch64: CNTV
    /// with its PPI enabled in this CPU's GIC interface), periodic at `hz`. Its ticks
    /// never reach the core's `timer_tick` upcall (the scheduler runs on the boot CPU
    /// only): the arch counts them in this CPU's per-CPU block ([`timer_ticks`]).
    /// Interrupts stay masked until the CPU next waits for one.
    ///
    /// [`prepare_secondaries`]: Self::prepare_secondaries
    /// [`timer_ticks`]: Self::timer_ticks
    fn start_secondary_timer(hz: u32) -> Result<(), EarlyError>;

    /// The timer ticks counted in the per-CPU block of the CPU with `index`, if it is
    /// online: a secondary's local timer ticks; always 0 for the boot CPU, whose ticks go
    /// to the core.
    fn timer_ticks(index: u32) -> Option<u64>;
}

// ---------------------------------------------------------------------------------------
// Threads, traps and address spaces. Each architecture implements these for the same
// `arch::Cpu`; the core reaches them only through the traits.
// ---------------------------------------------------------------------------------------

/// Size of every thread's kernel stack (DESIGN.md §2). An unmapped guard page lies directly
/// below it.
pub const KERNEL_STACK_SIZE: u64 = 16 * 1024;

/// The page size of every mapping Keel makes.
pub const PAGE_SIZE: u64 = 4096;

/// The fixed kernel region holding kernel stacks (DESIGN.md §5): 1 GiB, each stack
/// preceded by its guard page. Architecture crates refuse to boot when the loader's HHDM
/// overlaps it (real Limine randomizes the HHDM base).
pub const KERNEL_STACK_REGION: core::ops::Range<u64> = 0xffff_fd00_0000_0000..0xffff_fd00_4000_0000;

/// The first user address that may be mapped: page 0 never is (DESIGN.md §5).
pub const USER_START: u64 = PAGE_SIZE;
/// One past the last user address (the top of the lower half on both architectures).
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// Where the kernel image is linked (DESIGN.md §5): every kernel return address lies at or
/// above it.
pub const KERNEL_IMAGE_BASE: u64 = 0xffff_ffff_8000_0000;

/// One thread's kernel stack: usable addresses `[base, top)`; `base - PAGE_SIZE` is the
/// unmapped guard page. Allocated by the core in [`KERNEL_STACK_REGION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelStack {
    pub base: u64,
    pub top: u64,
}

impl KernelStack {
    /// Whether `address` lies on this stack (the guard page excluded).
    pub fn contains(&self, address: u64) -> bool {
        (self.base..self.top).contains(&address)
    }

    /// Whether `address` lies in this stack's guard page.
    pub fn guard_contains(&self, address: u64) -> bool {
        (self.base.wrapping_sub(PAGE_SIZE)..self.base).contains(&address)
    }

    /// Where the thread's user trap frame `F` lives: at the very top of the stack (the
    /// area [`Threads::prepare_context`] leaves free, and where a trap from user mode
    /// lands). Only an address: nothing is read or written.
    pub const fn user_frame<F>(&self) -> *mut F {
        (self.top - size_of::<F>() as u64) as *mut F
    }
}

/// Permissions of one page mapping. The arch crate refuses `writable && executable` for
/// user pages (W^X, DESIGN.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageFlags {
    pub writable: bool,
    pub executable: bool,
    pub user: bool,
    /// Device memory: uncached (x86_64 PAT UC; AArch64 Device-nGnRE).
    pub device: bool,
}

/// Why a mapping request was refused. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame left for a page table.
    OutOfMemory,
    /// The page is already mapped.
    AlreadyMapped,
    /// The page is not mapped.
    NotMapped,
    /// The address is not page-aligned, or not in the half of the address space the call
    /// manages (user calls: `[USER_START, USER_END)`).
    BadAddress,
    /// Writable and executable at once.
    WriteAndExecute,
}

/// A user-memory access failed: the range was not wholly user memory, or a page of it was
/// not mapped with the needed permission. Becomes `abi::Error::BadAddress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserAccessFault;

/// The registers saved on every kernel entry (DESIGN.md §2), as the core sees them. One
/// `#[repr(C)]` layout per architecture at the top of the thread's kernel stack.
pub trait TrapFrame: Sized {
    /// A frame that, returned through with [`Threads::enter_user`], starts user code at
    /// `entry` on `user_stack` with `argument` in the first argument register and interrupts
    /// enabled.
    fn new_user(entry: u64, user_stack: u64, argument: u64) -> Self;
    fn instruction_pointer(&self) -> u64;
    fn set_instruction_pointer(&mut self, address: u64);
    /// The interrupted stack pointer (the user one for a trap from user mode).
    fn stack_pointer(&self) -> u64;
    /// The interrupted frame pointer (`rbp` / `x29`): the head of the frame-record chain a
    /// backtrace walks. Meaningful in a full frame (an exception), not in the partial frame
    /// of a system call.
    fn frame_pointer(&self) -> u64;
    /// Whether the trap came from user mode.
    fn is_from_user(&self) -> bool;
    /// The system-call number (DESIGN.md §6: `rax` / `x8`).
    fn syscall_number(&self) -> u64;
    /// The six system-call arguments (`rdi rsi rdx r10 r8 r9` / `x0`–`x5`).
    fn syscall_arguments(&self) -> [u64; 6];
    /// Set the values the system call returns (`rax`, `rdx` / `x0`, `x1`).
    fn set_syscall_results(&mut self, first: u64, second: u64);
    /// Why the kernel was entered.
    fn cause(&self) -> TrapCause;
    /// IPC (`abi::ipc`): write a delivered message — status, badge, info and
    /// message words 0..4 — into the IPC result registers (x86_64: `rax`, `rdi`, `rsi`,
    /// `rdx r10 r8 r9`; AArch64: `x0`, `x6`, `x1`, `x2`–`x5`). The message arrives in
    /// [`TrapFrame::syscall_arguments`] 1..6 (info, words), in the same registers.
    fn set_ipc_message(&mut self, status: u64, badge: u64, info: u64, words: [u64; 4]);
    /// What the IPC fast path takes of a register-only message when it begins (in
    /// registers until the delivery); the rest [`TrapFrame::forward_ipc_message`] reads from
    /// the sender's frame when it delivers. Each arch picks the split its register file
    /// favours: x86_64 takes nothing early (its few registers would spill the words),
    /// AArch64 the info and the words (read in pairs next to the fast path's first test).
    type IpcEarly: Copy;
    /// The early part of the message in this frame's system-call arguments 1..6.
    fn ipc_early(&self) -> Self::IpcEarly;
    /// Deliver the register-only message of `sender`'s system call (`early`, taken from
    /// it by [`TrapFrame::ipc_early`], and the rest from `sender`) to this frame, as
    /// [`TrapFrame::set_ipc_message`] with status 0 and `badge`.
    fn forward_ipc_message(&mut self, badge: u64, early: Self::IpcEarly, sender: &Self);
    /// Write only the status register (`rax` / `x0`), leaving the message registers as
    /// they are (an IPC error).
    fn set_status(&mut self, status: u64);
}

/// What a context switch does with the FPU/SIMD registers. The rule (DESIGN.md §2):
/// while a thread runs in user mode the registers hold its own state (or the zeros it
/// started with), never another thread's. Kernel code never uses them, so a kernel thread
/// neither needs its own state loaded nor leaves anything to save, and the registers still
/// hold the last user thread's state, already saved, until a user thread's is loaded. The
/// core fills this in: it knows which threads run user code and whose state each CPU's
/// registers hold. (Two pointers, passed in two registers.)
pub struct FpuSwitch<'a, S> {
    /// Where to save the outgoing thread's state: a user thread's record; `None` for a
    /// kernel thread (the registers hold nothing unsaved).
    pub save: Option<&'a mut S>,
    /// The incoming thread's state to load: a user thread's record; `None` for a kernel
    /// thread, or for a user thread whose saved state the registers still hold (saved
    /// here, not changed since anywhere).
    pub load: Option<&'a S>,
}

/// Kernel stacks, context switch, FPU state and the way into user mode.
#[allow(
    unsafe_code,
    reason = "declares `unsafe fn`s whose callers carry the duties"
)]
pub trait Threads: Platform {
    type TrapFrame: TrapFrame;
    /// The kernel context of a thread that is not running: callee-saved registers and its
    /// kernel stack pointer. User registers are never here: they are in the trap frame.
    type Context: Default;
    /// A user thread's FPU/SIMD state, saved when it switches away ([`FpuSwitch`]), never
    /// on the kernel stack.
    type FpuState;

    /// The FPU state a new user thread starts with (default control words, all clear).
    fn initial_fpu_state() -> Self::FpuState;

    /// Lay out a new thread's first context on `stack`: the first [`Threads::switch`] to it
    /// runs `entry(argument)` on that stack, with interrupts masked. The thread's stack
    /// starts below one `TrapFrame` at the very top ([`KernelStack::user_frame`]), which
    /// stays free for the thread's first user frame.
    fn prepare_context(
        stack: KernelStack,
        entry: extern "C" fn(usize) -> !,
        argument: usize,
    ) -> Self::Context;

    /// Save the running thread's kernel context into `from` and resume `to`; returns when
    /// something switches back to `from`. Also does to the FPU/SIMD registers what `fpu`
    /// says, and points the next trap from user mode at `to_stack` (x86_64: `TSS.RSP0` and
    /// the per-CPU stack slot).
    ///
    /// # Safety
    /// Interrupts are masked; `to` was produced by [`Threads::prepare_context`] or saved by
    /// an earlier `switch`, belongs to a thread whose kernel stack is `to_stack`, and no
    /// other CPU runs it; `fpu` keeps DESIGN.md §2's rule (see [`FpuSwitch`]).
    unsafe fn switch(
        from: &mut Self::Context,
        to: &Self::Context,
        fpu: FpuSwitch<'_, Self::FpuState>,
        to_stack: KernelStack,
    );

    /// Point the next trap from user mode at `stack` without switching (the first thread).
    fn set_kernel_stack(stack: KernelStack);

    /// Return to user mode through `frame`.
    ///
    /// # Safety
    /// `frame` lies at the top of the current thread's kernel stack (the arch's layout), was
    /// made by [`TrapFrame::new_user`] or saved by a trap from user mode and validated, and
    /// the thread's address space is active.
    unsafe fn enter_user(frame: *const Self::TrapFrame) -> !;

    /// Record the current thread's identity in the per-CPU block (for reports and
    /// upcalls; `0` means "no thread"), and `record`, a word the core keeps with it (the
    /// address of its own record of the thread), which [`Threads::current_record`] reads
    /// back in one per-CPU load.
    fn set_current_thread(thread: usize, record: usize);
    fn current_thread() -> usize;
    /// The `record` given with the current thread (0 before the first).
    fn current_record() -> usize;

    /// This CPU's dense index, as [`SecondaryCpus::cpu_index`] gives it, for code that runs
    /// on a thread (after the scheduler started on this CPU, so its per-CPU block is set
    /// up): one per-CPU load, no check. The switch paths use it.
    fn running_cpu() -> u32;
}

/// Address spaces: the kernel half shared by all, a user half per process.
pub trait Paging: Platform {
    /// One user address space: its page-table root and whatever the arch needs (ASID/PCID).
    type AddressSpace;

    /// Map one kernel page (kernel stacks, device windows) into the kernel half shared by
    /// every address space.
    fn map_kernel(
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError>;

    /// Unmap one kernel page, returning its frame; flushes the TLB entry.
    fn unmap_kernel(virtual_address: u64) -> Result<u64, MapError>;

    /// A new, empty user address space sharing the kernel half.
    fn new_address_space(frames: &mut dyn FrameSource) -> Result<Self::AddressSpace, MapError>;

    /// Map one user page. Refuses kernel addresses, page 0, and W+X. The page tables it
    /// needs come from `frames`, all before any is linked: a refusal (`OutOfMemory`
    /// included) gives them back and leaves the hierarchy as it was.
    fn map_user(
        space: &mut Self::AddressSpace,
        virtual_address: u64,
        physical_address: u64,
        flags: PageFlags,
        frames: &mut dyn FrameSource,
    ) -> Result<(), MapError>;

    /// Unmap one user page, returning its frame; its translation is gone from every CPU
    /// when this returns (so the frame may be reused).
    /// Page tables the unmap empties are given back to `frames` (after the translations
    /// through them are invalidated), except the last-level table that emptied most
    /// recently, which stays linked for reuse ([`pagetable::KeptTable`]).
    fn unmap_user(
        space: &mut Self::AddressSpace,
        virtual_address: u64,
        frames: &mut dyn FrameSource,
    ) -> Result<u64, MapError>;

    /// Change the permissions of one mapped user page (its frame stays); W+X refused; the
    /// stale TLB entry is flushed.
    fn protect_user(
        space: &mut Self::AddressSpace,
        virtual_address: u64,
        flags: PageFlags,
    ) -> Result<(), MapError>;

    /// Make `space` the current user half, and record this CPU in `space`'s active mask
    /// (and out of the mask of the space it had active, [`tlb::ActiveSpaces`]).
    fn activate(space: &Self::AddressSpace);

    /// What a context switch needs to activate a space, taken once from it
    /// ([`Paging::switch_handle`]) and used without the space's lock: values that never
    /// change while the space lives and the address of its shared record.
    type SwitchHandle: Copy + Send + Sync;

    /// `space`'s switch handle, valid until `space` is destroyed.
    fn switch_handle(space: &Self::AddressSpace) -> Self::SwitchHandle;

    /// [`Paging::activate`] through a switch handle, on CPU `cpu` (the caller's own dense
    /// index, which a switch has at hand).
    ///
    /// # Safety
    /// The space `handle` was taken from is not destroyed before this returns; `cpu` is the
    /// index of the CPU that runs this.
    #[allow(
        unsafe_code,
        reason = "the handle's validity rests on the caller keeping the space alive"
    )]
    unsafe fn activate_handle(handle: Self::SwitchHandle, cpu: u32);

    /// The CPUs `space` is active on now (bit *i*: CPU *i*). [`Paging::unmap_user`],
    /// [`Paging::protect_user`] and [`Paging::destroy`] invalidate the translations of
    /// every one of them before they return.
    fn active_cpus(space: &Self::AddressSpace) -> tlb::CpuMask;

    /// What `space` maps at the user address `virtual_address` (`None` for an address
    /// outside the user half).
    fn lookup_user(
        space: &Self::AddressSpace,
        virtual_address: u64,
    ) -> Option<pagetable::Translation>;

    /// Free every page-table frame of `space` (not the frames its pages map) through `free`,
    /// after every CPU that had `space` active switched away from it and dropped its
    /// translations; its tag (ASID/PCID) is reused only after that.
    fn destroy(space: Self::AddressSpace, free: &mut dyn FnMut(u64));

    /// Make the bytes the kernel wrote at the kernel address `virtual_address` (`length`
    /// bytes, e.g. a user page through the direct map) what instruction fetch sees, through
    /// any mapping of the same memory, before user code runs from them. AArch64: clean the
    /// data cache to the point of unification, invalidate the instruction cache
    /// (`dc cvau`, `dsb ish`, `ic ivau`, `dsb ish`, `isb`, Arm ARM B2.4.4, with the line
    /// sizes of CTR_EL0, [`cache`]). x86_64: nothing (instruction fetch snoops stores).
    fn sync_instructions(virtual_address: u64, length: u64);

    /// Copy from user memory at `source` into `destination`; a range outside the user half,
    /// wrapping, or touching an unmapped or unreadable page fails without a kernel fault
    /// (exception fixup, with SMAP/PAN lifted only inside the copy).
    fn copy_from_user(destination: &mut [u8], source: u64) -> Result<(), UserAccessFault>;

    /// Copy `source` to user memory at `destination`, with the same checks.
    fn copy_to_user(destination: u64, source: &[u8]) -> Result<(), UserAccessFault>;
}

/// A trap the in-kernel test suite asks the arch crate to provoke.
#[cfg(feature = "testing")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvokedTrap {
    /// `int3` / `brk`.
    Breakpoint,
    /// `ud2` / `udf`.
    Undefined,
    /// Integer division by zero. x86_64 only: AArch64 has no divide trap (`provoke`
    /// returns `None` there and the test says "not applicable").
    DivideError,
    /// A kernel load from a reserved, never-mapped test address.
    KernelPageFault,
}

/// Self-test hooks for the in-kernel suite (`test=kernel`). The arch crate executes the
/// instruction under an exception-fixup entry: its trap dispatcher records the cause and
/// resumes at the fixup instead of reporting a fatal trap.
#[cfg(feature = "testing")]
pub trait SelfTest: Platform {
    /// Provoke `trap` in kernel mode and return the cause the dispatcher recorded, or
    /// `None` when the trap does not exist on this architecture (or was not taken).
    fn provoke(trap: ProvokedTrap) -> Option<TrapCause>;

    /// Read the mapped, active user address `address` with an ordinary kernel load (not
    /// through `copy_from_user`) under an exception-fixup entry, and return the cause the
    /// dispatcher recorded: a permission fault when PAN (AArch64) / SMAP (x86_64) is on,
    /// `None` when the load went through; `None` too for an address outside the user half.
    /// The default says "not implemented" by returning `None`, so callers must also ask
    /// [`SelfTest::user_access_protected`].
    fn provoke_user_access(address: u64) -> Option<TrapCause> {
        let _ = address;
        None
    }

    /// Whether the CPU has (and the kernel enabled) PAN / SMAP, so that
    /// [`SelfTest::provoke_user_access`] must fault. Default: `false`.
    fn user_access_protected() -> bool {
        false
    }

    /// Start (`true`) or stop (`false`) an asynchronous NMI storm (x86_64, for the
    /// hostile-entry test: NMIs arrive whatever the CPU runs, user loops and the system-call
    /// entry and exit included). Returns `false` when the arch has none (the default).
    fn nmi_storm(run: bool) -> bool {
        let _ = run;
        false
    }

    /// NMIs taken so far on this CPU, and how many of them ran with a per-CPU base that
    /// was not the kernel's (must stay 0). Default: `(0, 0)`.
    fn nmi_counts() -> (u64, u64) {
        (0, 0)
    }

    /// Store to the kernel address `address` (after loading the same value from it) under
    /// an exception-fixup entry, and return the cause recorded: a write page fault for
    /// read-only memory, `None` when the store went through or `address` is not a mapped
    /// kernel address. For the test that `.rodata` and `.text` are write-protected.
    fn provoke_kernel_write(address: u64) -> Option<TrapCause>;

    /// Use at most `limit` address-space tags (AArch64 ASIDs; `None`: as many as the CPU
    /// has), so a test can exhaust them with a few spaces. Returns `false` when the arch
    /// has no such limit to set (the default; x86_64, whose PCIDs qemu64 lacks).
    fn limit_space_tags(limit: Option<u32>) -> bool {
        let _ = limit;
        false
    }

    /// How many times the address-space tags rolled over to a new generation since boot
    /// (AArch64 ASIDs); `None` where there are no generations (the default).
    fn space_tag_rollovers() -> Option<u64> {
        None
    }

    /// Give new address spaces tags from the allocator even where the CPU does not use
    /// them (x86_64 PCIDs, which qemu64 lacks), so a test can check through real spaces
    /// that two live spaces never share one. Returns `false` where tags are not handed out
    /// that way (the default; AArch64 ASIDs are checked by generation instead).
    fn force_space_tags(on: bool) -> bool {
        let _ = on;
        false
    }

    /// The tag `space` was given (x86_64: its PCID, 0 for none); `None` where
    /// [`SelfTest::force_space_tags`] does not apply (the default).
    fn space_tag(space: &<Self as Paging>::AddressSpace) -> Option<u32>
    where
        Self: Paging,
    {
        let _ = space;
        None
    }
}

/// Benchmark support (`test=bench`): an instruction counter user programs can
/// read, and a clock the core can read from its first instruction. Both count guest
/// instructions only under QEMU `-icount shift=0`. Defaults: nothing available.
pub trait Bench: Platform {
    /// Make the counter `rt::counter` reads usable from user mode (x86_64: `rdtsc`, which
    /// needs CR4.TSD clear; AArch64: PMU event 0x08, instructions retired, in event counter
    /// 0, counting EL0 and EL1, with EL0 read access). Returns whether it is usable.
    fn enable_user_instruction_counter() -> bool {
        false
    }

    /// A free-running count that advances with guest instructions under `-icount shift=0`,
    /// readable from kernel entry on (x86_64: the TSC, exact; AArch64: the virtual counter
    /// scaled to nanoseconds, exact to its 16-instruction tick at 62.5 MHz). Default 0.
    fn instruction_clock() -> u64 {
        0
    }

    /// Whether [`Bench::instruction_clock`] counts nanoseconds (else CPU cycles).
    const INSTRUCTION_CLOCK_IN_NANOSECONDS: bool = false;

    /// The counter user programs read, read in the kernel (exact; valid only after
    /// [`Bench::enable_user_instruction_counter`] returned `true`). Default 0.
    fn instruction_counter() -> u64 {
        0
    }
}

/// A thread's user registers as a register-write system call supplies them (for `init`,
/// debuggers and the hostile-entry tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegisters {
    pub instruction_pointer: u64,
    pub stack_pointer: u64,
    /// x86_64: RFLAGS. AArch64: SPSR_EL1, of which only NZCV and SS may be set.
    pub flags: u64,
    /// General-purpose registers in the architecture's order: AArch64 x0–x30; x86_64
    /// rax rbx rcx rdx rsi rdi rbp r8–r15 (the first 15 entries; the rest must be 0).
    pub general: [u64; 31],
    /// x86_64: MXCSR. AArch64: FPCR.
    pub fpu_control: u64,
    /// x86_64: 0. AArch64: FPSR.
    pub fpu_status: u64,
}

/// Why a register write was refused (becomes `abi::Error::InvalidArgument`); the text
/// names the offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidRegisters(pub &'static str);

/// Writing a thread's user registers, validated the way the CPU would need them to be.
pub trait UserRegisterWrite: Threads {
    /// Check every value the CPU would trust on the way back to user mode (instruction
    /// and stack pointer in the user half, flags limited to what user code may set itself,
    /// reserved FPU control/status bits clear), then write `registers` into `frame` (the
    /// thread's saved user frame) and `fpu`. On `Err` neither is changed.
    fn write_user_registers(
        frame: &mut Self::TrapFrame,
        fpu: &mut Self::FpuState,
        registers: &UserRegisters,
    ) -> Result<(), InvalidRegisters>;
}

/// The console UART as user space receives it through capabilities: its I/O
/// ports (x86_64) or its MMIO range (AArch64), and its interrupt line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleDevice {
    /// `(first port, count)`.
    pub ports: Option<(u16, u16)>,
    /// `(physical base, length)`, both page multiples.
    pub mmio: Option<(u64, u64)>,
    /// The interrupt line (x86_64: ISA IRQ; AArch64: GIC INTID).
    pub irq: Option<u32>,
}

/// Devices handed to user space, and port I/O on behalf of a capability holder.
/// Defaults: no device, no I/O ports.
pub trait Devices: Platform {
    /// The console UART, if the platform knows it.
    fn console_device() -> Option<ConsoleDevice> {
        None
    }

    /// Read `width` bytes (1, 2 or 4) from I/O port `port`; `None` where the architecture
    /// has no I/O ports or the width is not one of those.
    ///
    /// Contract: the core calls this only for a port in the range of an I/O-port
    /// capability the requester holds (a port access can have side effects on its device).
    fn port_read(_port: u16, _width: u8) -> Option<u32> {
        None
    }

    /// Write the low `width` bytes (1, 2 or 4) of `value` to I/O port `port`; `false` where
    /// the architecture has no I/O ports or the width is not one of those. Contract: as for
    /// [`Devices::port_read`].
    fn port_write(_port: u16, _width: u8, _value: u32) -> bool {
        false
    }
}

/// The kernel image's sections, by virtual address (page-aligned, from the linker script's
/// symbols), for the kernel's own page tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `.text`: read + execute.
    pub text: core::ops::Range<u64>,
    /// `.rodata` and the unwind tables: read only, never executed.
    pub rodata: core::ops::Range<u64>,
    /// `.data` and `.bss`: read + write, never executed.
    pub data: core::ops::Range<u64>,
    /// The HHDM base the loader reported (never assumed).
    pub hhdm_offset: u64,
}

/// What switching to the kernel's own page tables did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTablesReport {
    /// The root the loader left active (never used again).
    pub loader_root: u64,
    /// The kernel's root, active from now on.
    pub kernel_root: u64,
    /// Page-table frames the new hierarchy took.
    pub table_frames: u64,
    /// Bytes of physical memory the new HHDM maps.
    pub direct_map_bytes: u64,
}

/// The kernel's own page tables (DESIGN.md §4): built once after the frame allocator
/// exists ([`kernel_tables::build`]), switched to, and the loader's tables never touched
/// again.
pub trait KernelTables: Paging {
    /// Build a new kernel hierarchy — the image with per-section permissions (text RX,
    /// rodata R+NX, data RW+NX), the HHDM over `direct_map` (physical `(base, length)`
    /// ranges, mapped RW+NX write-back at `layout.hhdm_offset`), and the kernel-stack
    /// region and device window as they are mapped now — then switch to it with the TLB
    /// maintenance the architecture needs. Refuses (and keeps running on the loader's
    /// tables) when the running code or stack would not be mapped by the new tables.
    fn switch_to_kernel_tables(
        layout: &KernelLayout,
        direct_map: &[(u64, u64)],
        frames: &mut dyn FrameSource,
    ) -> Result<KernelTablesReport, EarlyError>;

    /// The physical address of the active kernel root (CR3 / TTBR1_EL1).
    fn active_kernel_root() -> u64;

    /// What the active kernel tables map at `virtual_address` (a kernel address).
    fn lookup_kernel(virtual_address: u64) -> Option<pagetable::Translation>;
}

// ---------------------------------------------------------------------------------------
// External device interrupts.
// ---------------------------------------------------------------------------------------

/// Why an interrupt-line request was refused. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptError {
    /// The line does not exist (`line >= line_count()`), or is not an external device line
    /// (AArch64: an SGI or PPI; the timer's line belongs to the kernel).
    InvalidLine,
    /// The interrupt controller was not found at boot.
    NoController,
}

/// What the arch entry does to a line before the `irq` upcall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Mask the line before the upcall (and before end-of-interrupt), so a level-triggered
    /// line cannot storm; it stays masked until [`Interrupts::unmask`]. What the capability
    /// layer uses: the driver's `irq_ack` unmasks.
    MaskUntilUnmask,
    /// Leave the line unmasked: the core silences the device inside the upcall.
    KeepUnmasked,
}

/// External device interrupt lines, routed to the boot CPU (x86_64: the I/O APIC's global
/// system interrupts; AArch64: the GIC's shared peripheral interrupts, by INTID).
///
/// Every external interrupt that is not the timer reaches the core through the `keel_irq`
/// upcall with its line number, interrupts masked, after the arch has sent end-of-interrupt.
/// Lines the core never enabled, and vectors or INTIDs that belong to no line, are counted
/// by the arch and never crash the kernel.
///
/// Masking is *lazy* for edge-triggered lines where the controller would drop an edge that
/// arrives while masked (the x86_64 I/O APIC): the line stays open at the controller, an
/// edge that arrives while it is masked is latched by the arch without an upcall, and
/// [`Interrupts::unmask`] re-raises it. So on both architectures "masked" means: no upcall
/// until unmasked, and what arrived meanwhile is delivered after the unmask.
pub trait Interrupts: Platform {
    /// How many lines exist: valid lines are `0..line_count()` (some of which may still be
    /// refused, e.g. AArch64 INTIDs below 32). 0 when no controller was found.
    fn line_count() -> u32;

    /// The line of the console UART (the kernel log's): x86_64 COM1 (ISA IRQ 4 through the
    /// MADT's interrupt source overrides); AArch64 the PL011's SPI from the device tree.
    fn console_line() -> Option<u32>;

    /// Route `line` to this CPU, unmasked, with the trigger mode the firmware describes
    /// (ACPI MADT / device tree; a line neither describes: x86_64 ISA lines edge,
    /// active high, others level, active low; AArch64 level, active high), and choose
    /// what the entry does on each delivery.
    fn enable(line: u32, delivery: Delivery) -> Result<(), InterruptError>;

    /// Stop routing `line`: masked at the controller, nothing latched.
    fn disable(line: u32) -> Result<(), InterruptError>;

    /// Mask `line`: no `irq` upcall until [`Interrupts::unmask`].
    fn mask(line: u32) -> Result<(), InterruptError>;

    /// Unmask `line`; an interrupt that is pending (level still asserted, or an edge
    /// latched while masked) is delivered once interrupts are enabled at the CPU.
    fn unmask(line: u32) -> Result<(), InterruptError>;

    /// Interrupts that arrived for no enabled line (an INTID or vector the arch does not
    /// route, or a line that was disabled): counted, masked where possible, never fatal.
    fn unexpected_interrupts() -> u64;
}

/// Which condition of the console UART the interrupt self-test raises.
#[cfg(feature = "testing")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleIrqSource {
    /// Internal loopback: the byte sent comes back as received data (16550 MCR.LOOP,
    /// PL011 CR.LBE) and raises the receive interrupt.
    ReceiveLoopback,
    /// The UART has no working loopback (QEMU 7.2's PL011 does not model CR.LBE): the byte
    /// sent goes out on the line, and the transmit interrupt is the one raised.
    TransmitDone,
}

/// Self-test hooks for external interrupts (scenario `kernel`): the console UART raising
/// its interrupt without external input, and software-raised lines. Defaults: unsupported.
/// Between [`InterruptSelfTest::console_irq_test_begin`] and
/// [`InterruptSelfTest::console_irq_test_end`] nothing may write to the kernel log.
#[cfg(feature = "testing")]
pub trait InterruptSelfTest: Interrupts {
    /// Drain the console UART, put it where a byte sent raises its interrupt without
    /// leaving the machine (internal loopback where the UART supports it), and enable only
    /// that interrupt at the UART. `None` when unsupported.
    fn console_irq_test_begin() -> Option<ConsoleIrqSource> {
        None
    }

    /// Send one byte through the console UART.
    fn console_irq_test_send(byte: u8) {
        let _ = byte;
    }

    /// Clear the UART's interrupt condition: read back the byte received in loopback (its
    /// value), or acknowledge the transmit interrupt (`None`).
    fn console_irq_test_clear() -> Option<u8> {
        None
    }

    /// Restore the UART as the kernel log had it (no loopback, its interrupts off).
    fn console_irq_test_end() {}

    /// Route `line` edge-triggered (`Some(false)`), level-triggered, active high
    /// (`Some(true)`), or as the firmware describes (`None`) from its next enable on, so
    /// one device exercises both masking paths. Returns the trigger now in force (`true`:
    /// level), `None` when unsupported.
    fn set_trigger_for_test(line: u32, level: Option<bool>) -> Option<bool> {
        let _ = (line, level);
        None
    }

    /// Raise `line` by software, as the controller would (x86_64: a self-IPI on the line's
    /// vector; AArch64: set it pending at the distributor). `false` when impossible.
    fn raise_line(line: u32) -> bool {
        let _ = line;
        false
    }

    /// Raise an interrupt that belongs to no line (x86_64: a self-IPI on an unassigned
    /// vector; AArch64: an SPI the kernel never enabled, enabled and made pending behind
    /// the core's back). `false` when impossible.
    fn raise_unrouted() -> bool {
        false
    }
}

#[cfg(test)]
mod ipi_tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn kinds_round_trip_through_their_numbers() {
        for ipi in Ipi::ALL {
            assert_eq!(Ipi::from_number(ipi as u64), Some(ipi));
        }
        assert_eq!(Ipi::from_number(Ipi::ALL.len() as u64), None);
    }

    #[test]
    fn targets_are_online_cpus_and_never_the_sender_among_all_others() {
        let online = |index: u32| [0, 1, 3, 5].contains(&index);
        let all: Vec<u32> = ipi_targets(IpiTarget::AllOthers, 1, online).collect();
        assert_eq!(all, [0, 3, 5]);
        let one: Vec<u32> = ipi_targets(IpiTarget::Cpu(3), 1, online).collect();
        assert_eq!(one, [3]);
        assert_eq!(ipi_targets(IpiTarget::Cpu(2), 1, online).count(), 0);
        assert_eq!(
            ipi_targets(IpiTarget::Cpu(MAX_CPUS as u32), 0, |_| true).count(),
            1,
            "the online check, not the sender, decides an out-of-range index"
        );
    }

    #[test]
    fn a_shootdown_waits_for_a_flush_that_started_after_it() {
        let generations = ShootdownGenerations::new();
        let counters = IpiCounters::new();
        // A flush that read the generation before the sender took its own does not count.
        let seen_early = generations.current();
        let mine = generations.next();
        counters.acknowledge_tlb(seen_early);
        let done = |counts: &IpiCounts| counts.tlb_flushed >= mine;
        assert!(!done(&counters.snapshot()));
        counters.acknowledge_tlb(generations.current());
        assert!(done(&counters.snapshot()));
        // An older acknowledgement never lowers a newer one.
        counters.acknowledge_tlb(seen_early);
        assert!(done(&counters.snapshot()));
    }

    #[test]
    fn the_wait_is_bounded_and_counts_who_did_not_answer() {
        let answered = IpiCounters::new();
        answered.mark_stopped();
        let silent = IpiCounters::new();
        let counts = |index: u32| match index {
            0 => Some(answered.snapshot()),
            1 => Some(silent.snapshot()),
            _ => None,
        };
        let missing = wait_for_ipi_effect([0, 1, 2].into_iter(), counts, |c| c.stopped);
        assert_eq!(missing, 2);
    }
}
