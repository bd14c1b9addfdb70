//! The per-CPU blocks, one per CPU up to `arch_api::MAX_CPUS`, each reached in O(1)
//! through its CPU's TPIDR_EL1 (DESIGN.md §2), and each CPU's overflow stack.
//!
//! The exception entry reads it before it may touch the stack (the kernel-stack overflow
//! check in [`crate::trap`]), so the fields the assembly uses sit at fixed, compile-time
//! checked offsets and every field is an atomic word: the block is shared between the
//! vectors, the context switch and ordinary kernel code without `&mut`.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Readable, TPIDR_EL1, Writeable};
use arch_api::{IpiCounters, KernelStack, MAX_CPUS};

/// Size of the per-CPU overflow stack the EL1 entry moves to when the interrupted kernel
/// stack has overflowed. It only runs the report.
const OVERFLOW_STACK_SIZE: usize = 16 * 1024;

#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// Lowest usable address of the running thread's kernel stack (0: not known, no check).
    pub stack_base: AtomicU64,
    /// One past the highest address of the running thread's kernel stack.
    pub stack_top: AtomicU64,
    /// Top of this CPU's overflow stack.
    pub overflow_top: AtomicU64,
    /// Two scratch words for the EL1 entry check (it has no free register).
    pub scratch: [AtomicU64; 2],
    /// The SP_EL1 at which an overflow was detected (for the report).
    pub overflowed_sp: AtomicU64,
    /// The core's identity of the running thread (0: none).
    pub current_thread: AtomicUsize,
    /// The core's word for the running thread (`arch_api::Threads::current_record`).
    pub current_record: AtomicUsize,
    /// Keel's dense CPU index (0 = the boot CPU).
    pub id: AtomicU32,
    /// This CPU's GICv2 CPU-interface bit (its `GICD_SGIR` target), once its interface is
    /// up; unused with GICv3.
    pub gic_target: AtomicU32,
    /// The MPIDR_EL1 affinity fields as the MP response reported them.
    pub hardware_id: AtomicU64,
    /// The IPIs this CPU received.
    pub ipi: IpiCounters,
    /// Timer ticks taken on a secondary CPU (the boot CPU's go to the core).
    pub timer_ticks: AtomicU64,
}

/// Offsets the vector assembly uses.
pub const STACK_BASE: usize = offset_of!(PerCpu, stack_base);
pub const OVERFLOW_TOP: usize = offset_of!(PerCpu, overflow_top);
pub const SCRATCH: usize = offset_of!(PerCpu, scratch);
pub const OVERFLOWED_SP: usize = offset_of!(PerCpu, overflowed_sp);
const _: () = assert!(STACK_BASE == 0 && OVERFLOW_TOP == 16 && SCRATCH == 24);
const _: () = assert!(OVERFLOWED_SP == 40);
const _: () = assert!(size_of::<AtomicU64>() == 8, "ldr/str of a plain word");

/// One CPU's overflow stack (16-byte aligned, as SP must be).
#[repr(C, align(16))]
struct OverflowStack(core::cell::UnsafeCell<[u8; OVERFLOW_STACK_SIZE]>);

// SAFETY: an overflow stack is written only by the CPU that owns it (its SP, in the
// report after an overflow); Rust only takes its address.
unsafe impl Sync for OverflowStack {}

/// Every CPU's overflow stack, in `.bss`.
static OVERFLOW_STACKS: [OverflowStack; MAX_CPUS] =
    [const { OverflowStack(core::cell::UnsafeCell::new([0; OVERFLOW_STACK_SIZE])) }; MAX_CPUS];

/// Every CPU's block, by dense index.
static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        stack_base: AtomicU64::new(0),
        stack_top: AtomicU64::new(0),
        overflow_top: AtomicU64::new(0),
        scratch: [AtomicU64::new(0), AtomicU64::new(0)],
        overflowed_sp: AtomicU64::new(0),
        current_thread: AtomicUsize::new(0),
        current_record: AtomicUsize::new(0),
        id: AtomicU32::new(0),
        gic_target: AtomicU32::new(0),
        hardware_id: AtomicU64::new(0),
        ipi: IpiCounters::new(),
        timer_ticks: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Bit `n`: CPU `n` is online (block, vectors and GIC interface set up; it takes IPIs).
static ONLINE: AtomicU32 = AtomicU32::new(0);
const _: () = assert!(MAX_CPUS <= 32, "ONLINE is one bit per CPU");

/// Point TPIDR_EL1 at CPU `index`'s block (with its overflow stack and hardware id), and
/// set TPIDRRO_EL0 to the 0 every thread reads there (whatever the loader left: no
/// context switch writes it, `crate::thread`). Must run before the vectors are installed
/// on that CPU: the EL1 entry dereferences TPIDR_EL1 unconditionally. `index < MAX_CPUS`
/// (callers check).
pub fn init(index: u32, hardware_id: u64) {
    let block = &CPUS[index as usize];
    let top = OVERFLOW_STACKS[index as usize].0.get() as u64 + OVERFLOW_STACK_SIZE as u64;
    block.overflow_top.store(top, Ordering::Relaxed);
    block.id.store(index, Ordering::Relaxed);
    block.hardware_id.store(hardware_id, Ordering::Relaxed);
    TPIDR_EL1.set(core::ptr::from_ref(block) as u64);
    // SAFETY: TPIDRRO_EL0 is read only by EL0 and, as scratch, by the EL1 entry, which is
    // not installed yet on this CPU; the ERET to EL0 synchronizes it.
    unsafe {
        core::arch::asm!(
            "msr tpidrro_el0, xzr",
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Point TPIDR_EL1 at the boot CPU's block.
pub fn init_boot_cpu(hardware_id: u64) {
    init(0, hardware_id);
}

/// This CPU's block, if it has one.
pub fn current() -> Option<&'static PerCpu> {
    let block = TPIDR_EL1.get() as *const PerCpu;
    // Only blocks this module made are dereferenced: a corrupted TPIDR_EL1 must not turn
    // a fault report into a second fault.
    CPUS.iter()
        .find(|candidate| core::ptr::eq(block, *candidate))
}

/// This CPU's block, through TPIDR_EL1: one register read, on every hot path. Only valid
/// once [`init`] ran on this CPU, which early init and the secondary bring-up do first,
/// before they install the vectors; code that may run earlier (the panic report) uses
/// [`current`].
#[inline(always)]
pub fn this() -> &'static PerCpu {
    // SAFETY: TPIDR_EL1 is written only by `init`, always with a `&'static PerCpu`, and
    // callers run after `init` on their CPU (above).
    unsafe { &*(TPIDR_EL1.get() as *const PerCpu) }
}

/// Whether CPU `index` is online.
pub fn is_online(index: u32) -> bool {
    (index as usize) < MAX_CPUS && ONLINE.load(Ordering::Acquire) & (1 << index) != 0
}

/// Mark this CPU online.
pub fn mark_online() {
    ONLINE.fetch_or(1 << this().id.load(Ordering::Relaxed), Ordering::Release);
}

/// The block of CPU `index`, if that CPU is online.
pub fn online_block(index: u32) -> Option<&'static PerCpu> {
    is_online(index).then(|| &CPUS[index as usize])
}

impl PerCpu {
    /// Record the bounds of the kernel stack the CPU runs on now (or will, after the switch
    /// in progress), for the overflow check.
    #[inline]
    pub fn set_stack(&self, stack: KernelStack) {
        // Order: the base is what the entry check reads; a stale top is harmless.
        self.stack_top.store(stack.top, Ordering::Relaxed);
        self.stack_base.store(stack.base, Ordering::Relaxed);
    }

    pub fn stack(&self) -> Option<KernelStack> {
        let base = self.stack_base.load(Ordering::Relaxed);
        (base != 0).then(|| KernelStack {
            base,
            top: self.stack_top.load(Ordering::Relaxed),
        })
    }
}
