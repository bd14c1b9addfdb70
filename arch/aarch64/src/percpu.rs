//! The per-CPU block, reached in O(1) through TPIDR_EL1 (DESIGN.md §2).
//!
//! Today it holds only what the boot CPU knows about itself; issue 6 adds the current
//! thread, the kernel stack top for the next user entry and the user-SP scratch slot.

use aarch64_cpu::registers::{MPIDR_EL1, Readable, TPIDR_EL1, Writeable};
use spin::Once;

#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// Keel's CPU number (0 = the boot CPU).
    pub id: u32,
    /// This CPU's MPIDR_EL1 (affinity), as the GIC and PSCI name CPUs.
    pub mpidr: u64,
}

static BOOT_CPU: Once<PerCpu> = Once::new();

/// Create the boot CPU's block and point TPIDR_EL1 at it.
pub fn init_boot_cpu() {
    let block = BOOT_CPU.call_once(|| PerCpu {
        id: 0,
        mpidr: MPIDR_EL1.get(),
    });
    TPIDR_EL1.set(core::ptr::from_ref(block) as u64);
}

/// This CPU's block, if it has one.
pub fn current() -> Option<&'static PerCpu> {
    let block = TPIDR_EL1.get() as *const PerCpu;
    let boot = BOOT_CPU.get()?;
    // Only blocks this module made are dereferenced: a corrupted TPIDR_EL1 must not turn
    // a fault report into a second fault.
    core::ptr::eq(block, boot).then_some(boot)
}
