//! Secondary CPUs: the arch side of the boot CPU sending the CPUs the loader parked (the
//! Limine MP feature) to the kernel. A secondary leaves the loader's page tables for the
//! kernel's own and halts with interrupts masked; the scheduler stays on the boot CPU.
//!
//! What the protocol guarantees a secondary at its `goto_address` (PROTOCOL.md, MP
//! feature): the boot CPU's entry state (long mode, the loader's page tables, the
//! protocol's GDT, interrupts off, no IDT promised) on its own stack, with its
//! `limine_mp_info` in RDI. The loader's tables and GDT lie in bootloader-reclaimable
//! memory, which the kernel takes back once the boot path is done, so the CPU switches
//! CR3 to the kernel's root first; the halt loop then needs neither segments nor stack.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::paging;

/// The kernel's root table, recorded on the boot CPU for the secondaries.
static SECONDARY_ROOT: AtomicU64 = AtomicU64::new(0);

/// The Limine MP response's `bsp_lapic_id`.
pub fn bsp_id(response: &limine::response::MpResponse) -> u64 {
    u64::from(response.bsp_lapic_id())
}

/// The hardware id of one CPU of the Limine MP response (its local APIC ID).
pub fn cpu_id(cpu: &limine::mp::Cpu) -> u64 {
    u64::from(cpu.lapic_id)
}

pub fn prepare() {
    SECONDARY_ROOT.store(paging::kernel_root(), Ordering::Release);
}

pub fn enter() {
    let root = SECONDARY_ROOT.load(Ordering::Acquire);
    // SAFETY: `cli` only masks interrupts. The kernel's root maps the kernel image (this
    // code) and the HHDM (this CPU's loader stack) to the same frames as the loader's
    // tables, so execution and the stack carry on across the switch; global kernel entries
    // of the loader's tables map the same frames too.
    unsafe {
        core::arch::asm!("cli", "mov cr3, {}", in(reg) root, options(nostack, preserves_flags));
    }
}

pub fn park() -> ! {
    loop {
        // SAFETY: with interrupts masked, `hlt` stops the CPU until an NMI or INIT; the
        // loop touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
