//! Secondary CPUs: the arch side of the boot CPU sending the CPUs the loader parked (the
//! Limine MP feature) to the kernel. A secondary takes over the boot CPU's translation
//! state (the kernel's TTBR1 tables and the MAIR and TCR that go with them) and waits with
//! DAIF masked; the scheduler stays on the boot CPU.
//!
//! What the protocol guarantees a secondary at its `goto_address` (PROTOCOL.md, MP
//! feature): the boot CPU's entry state (EL1, MMU on with the loader's tables, DAIF
//! masked) on its own stack, with its `limine_mp_info` in X0. The loader's tables lie in
//! bootloader-reclaimable memory, which the kernel takes back once the boot path is done,
//! so the CPU switches to the kernel's and stops walking TTBR0 (TCR_EL1.EPD0) before
//! parking; the wait loop touches no memory.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sysreg;

/// TCR_EL1.EPD0: no table walks through TTBR0 (the lower half stays unmapped).
const TCR_EPD0: u64 = 1 << 7;
/// The affinity fields of MPIDR_EL1 (the Limine MP response's `mpidr` values).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// The boot CPU's MAIR_EL1, TCR_EL1 and TTBR1_EL1, recorded for the secondaries.
static SECONDARY_MAIR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_TCR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_TTBR1: AtomicU64 = AtomicU64::new(0);

/// The Limine MP response's `bsp_mpidr`.
pub fn bsp_id(response: &limine::response::MpResponse) -> u64 {
    response.bsp_mpidr() & MPIDR_AFFINITY
}

/// The hardware id of one CPU of the Limine MP response (its MPIDR affinity).
pub fn cpu_id(cpu: &limine::mp::Cpu) -> u64 {
    cpu.mpidr & MPIDR_AFFINITY
}

pub fn prepare() {
    SECONDARY_MAIR.store(sysreg::read!("mair_el1"), Ordering::Relaxed);
    SECONDARY_TCR.store(sysreg::read!("tcr_el1"), Ordering::Relaxed);
    SECONDARY_TTBR1.store(sysreg::read!("ttbr1_el1"), Ordering::Release);
}

pub fn enter() {
    let ttbr1 = SECONDARY_TTBR1.load(Ordering::Acquire);
    let mair = SECONDARY_MAIR.load(Ordering::Relaxed);
    let tcr = SECONDARY_TCR.load(Ordering::Relaxed) | TCR_EPD0;
    // SAFETY: DAIF is masked first. The kernel's TTBR1 tables map the kernel image (this
    // code) and the HHDM (this CPU's loader stack) to the same frames, as normal memory
    // under the boot CPU's MAIR index for normal memory, which is the loader's; the TCR is
    // the boot CPU's, whose TTBR1 half is the loader's too (48 bits, 4 KiB granule). The
    // barriers order the table switch and drop every translation of the loader's tables.
    unsafe {
        core::arch::asm!(
            "msr daifset, #0xf",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr1_el1, {ttbr1}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            mair = in(reg) mair,
            tcr = in(reg) tcr,
            ttbr1 = in(reg) ttbr1,
            options(nostack, preserves_flags),
        );
    }
}

pub fn park() -> ! {
    loop {
        // SAFETY: with DAIF masked, `wfe` only waits for an event; the loop touches no
        // memory.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}
