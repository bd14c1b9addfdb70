//! Benchmark support (`arch_api::Bench`): the PMU's instructions-retired event
//! for user programs, and the virtual counter as a clock from kernel entry on.
//!
//! Under QEMU `-icount shift=0` event 0x08 counts guest instructions exactly (QEMU offers
//! the event only with `-icount`); `CNTVCT_EL0` advances with the virtual clock, one tick
//! per 16 instructions at QEMU 7.2's 62.5 MHz, good enough for boot-length spans only.

use crate::sysreg::{read, write};

/// PMCR_EL0: E (enable), P (reset event counters).
const PMCR_ENABLE_RESET: u64 = 0b11;
/// PMEVTYPER0_EL0: event 0x08 (INST_RETIRED); P, U, NSK, NSU, NSH all 0 = count EL0 and EL1.
const INST_RETIRED: u64 = 0x08;
/// PMEVTYPER1_EL0: event 0x08 with U set = count EL1 only (the kernel's share).
const INST_RETIRED_EL1: u64 = 0x08 | (1 << 30);
/// PMUSERENR_EL0: EN (EL0 access) and ER (EL0 reads of the event counters).
const USER_ENABLE_READ: u64 = (1 << 0) | (1 << 3);

/// Whether the CPU implements a PMU (ID_AA64DFR0_EL1.PMUVer neither 0 nor 0xf).
fn has_pmu() -> bool {
    let version = (read!("id_aa64dfr0_el1") >> 8) & 0xf;
    version != 0 && version != 0xf
}

/// Configure event counter 0 to count instructions retired at EL0 and EL1, counter 1 at
/// EL1 only, and let EL0 read them.
pub fn enable_user_instruction_counter() -> bool {
    if !has_pmu() {
        return false;
    }
    // SAFETY (each write): the PMU registers only configure counting; no memory, mapping
    // or exception state of the kernel depends on them.
    write!("pmcr_el0", PMCR_ENABLE_RESET);
    write!("pmevtyper0_el0", INST_RETIRED);
    write!("pmevtyper1_el0", INST_RETIRED_EL1);
    write!("pmcntenset_el0", 0b11);
    write!("pmuserenr_el0", USER_ENABLE_READ);
    true
}

/// Event counter 0 (instructions retired at EL0 and EL1, once enabled).
pub fn instruction_counter() -> u64 {
    read!("pmevcntr0_el0")
}

/// The virtual counter in nanoseconds (= instructions under `-icount shift=0`).
pub fn instruction_clock() -> u64 {
    let frequency = read!("cntfrq_el0").max(1);
    let ticks = read!("cntvct_el0");
    // 62.5 MHz gives exactly 16 ns per tick; other frequencies round down.
    ticks.saturating_mul(1_000_000_000 / frequency)
}
