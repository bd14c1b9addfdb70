//! The benchmarks' instruction counter, read with one instruction.
//!
//! Under QEMU `-icount shift=0` both count guest instructions exactly:
//! - x86_64: `rdtsc` (the TSC advances one per instruction; `rdpmc` is #UD under software
//!   emulation). Works while the kernel leaves CR4.TSD clear.
//! - AArch64: `PMEVCNTR0_EL0`, which the kernel's `bench` scenario programs with event
//!   0x08 (instructions retired) counting EL0 and EL1, and opens to EL0
//!   (`PMUSERENR_EL0.EN|ER`); `PMEVCNTR1_EL0` counts the same event at EL1 only
//!   ([`read_kernel`]). Elsewhere the reads are undefined and kill the thread.
//!
//! Neither is serializing; under emulation that does not matter (each instruction retires
//! before the next starts).

/// The instruction counter now.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn read() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: `rdtsc` only reads the time-stamp counter into `edx:eax`.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    u64::from(high) << 32 | u64::from(low)
}

/// The instruction counter now.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn read() -> u64 {
    let value: u64;
    // SAFETY: reading event counter 0 has no side effect; the kernel enabled EL0 reads.
    unsafe {
        core::arch::asm!("mrs {}, pmevcntr0_el0", out(reg) value,
            options(nomem, nostack, preserves_flags));
    }
    value
}

/// Instructions retired in the kernel only, where the architecture can split them (the
/// AArch64 PMU filters by exception level; x86_64 has no such counter under emulation).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn read_kernel() -> Option<u64> {
    None
}

/// Instructions retired in the kernel only, where the architecture can split them (the
/// AArch64 PMU filters by exception level; x86_64 has no such counter under emulation).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn read_kernel() -> Option<u64> {
    let value: u64;
    // SAFETY: reading event counter 1 has no side effect; the kernel enabled EL0 reads.
    unsafe {
        core::arch::asm!("mrs {}, pmevcntr1_el0", out(reg) value,
            options(nomem, nostack, preserves_flags));
    }
    Some(value)
}
