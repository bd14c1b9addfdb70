//! The per-CPU block, reached in O(1) through TPIDR_EL1 (DESIGN.md §2).
//!
//! The exception entry reads it before it may touch the stack (the kernel-stack overflow
//! check in [`crate::trap`]), so the fields the assembly uses sit at fixed, compile-time
//! checked offsets and every field is an atomic word: the block is shared between the
//! vectors, the context switch and ordinary kernel code without `&mut`.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Readable, TPIDR_EL1, Writeable};
use arch_api::KernelStack;

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
    /// The user value of TPIDRRO_EL0 of the running thread. The EL1 entry borrows the
    /// register as a scratch register; every return from an exception writes it back from
    /// here, so EL0 always sees its own value.
    pub user_tpidrro: AtomicU64,
    /// The SP_EL1 at which an overflow was detected (for the report).
    pub overflowed_sp: AtomicU64,
    /// The core's identity of the running thread (0: none).
    pub current_thread: AtomicUsize,
    /// Keel's CPU number (0 = the boot CPU).
    pub id: u32,
}

/// Offsets the vector assembly uses.
pub const STACK_BASE: usize = offset_of!(PerCpu, stack_base);
pub const OVERFLOW_TOP: usize = offset_of!(PerCpu, overflow_top);
pub const SCRATCH: usize = offset_of!(PerCpu, scratch);
pub const USER_TPIDRRO: usize = offset_of!(PerCpu, user_tpidrro);
pub const OVERFLOWED_SP: usize = offset_of!(PerCpu, overflowed_sp);
const _: () = assert!(STACK_BASE == 0 && OVERFLOW_TOP == 16 && SCRATCH == 24);
const _: () = assert!(USER_TPIDRRO == 40 && OVERFLOWED_SP == 48);
const _: () = assert!(size_of::<AtomicU64>() == 8, "ldr/str of a plain word");

/// The boot CPU's overflow stack (16-byte aligned, as SP must be).
#[repr(C, align(16))]
struct OverflowStack([u8; OVERFLOW_STACK_SIZE]);

/// Written only by the CPU (its SP); Rust never reads it.
static mut BOOT_OVERFLOW_STACK: OverflowStack = OverflowStack([0; OVERFLOW_STACK_SIZE]);

static BOOT_CPU: PerCpu = PerCpu {
    stack_base: AtomicU64::new(0),
    stack_top: AtomicU64::new(0),
    overflow_top: AtomicU64::new(0),
    scratch: [AtomicU64::new(0), AtomicU64::new(0)],
    user_tpidrro: AtomicU64::new(0),
    overflowed_sp: AtomicU64::new(0),
    current_thread: AtomicUsize::new(0),
    id: 0,
};

/// Point TPIDR_EL1 at the boot CPU's block. Must run before the vectors are installed: the
/// EL1 entry dereferences TPIDR_EL1 unconditionally.
pub fn init_boot_cpu() {
    let top = (&raw mut BOOT_OVERFLOW_STACK) as u64 + OVERFLOW_STACK_SIZE as u64;
    BOOT_CPU.overflow_top.store(top, Ordering::Relaxed);
    TPIDR_EL1.set(core::ptr::from_ref(&BOOT_CPU) as u64);
}

/// This CPU's block, if it has one.
pub fn current() -> Option<&'static PerCpu> {
    let block = TPIDR_EL1.get() as *const PerCpu;
    // Only blocks this module made are dereferenced: a corrupted TPIDR_EL1 must not turn
    // a fault report into a second fault.
    core::ptr::eq(block, &BOOT_CPU).then_some(&BOOT_CPU)
}

/// This CPU's block, through TPIDR_EL1. Only valid after [`init_boot_cpu`], which
/// `early_init` runs first (a zero TPIDR_EL1 falls back to the boot CPU's block).
#[inline]
pub fn this() -> &'static PerCpu {
    match TPIDR_EL1.get() {
        0 => &BOOT_CPU,
        // SAFETY: TPIDR_EL1 is written only by `init_boot_cpu` (the loader's value is
        // replaced before anything calls this), always with a `&'static PerCpu`.
        block => unsafe { &*(block as *const PerCpu) },
    }
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
