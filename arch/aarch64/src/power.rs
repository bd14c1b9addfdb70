//! Power-off: semihosting exit (QEMU exits with the code), else PSCI SYSTEM_OFF, else halt.
//!
//! Each stage is tried at most once, even when power-off is re-entered from a fault inside
//! an earlier stage, so this always ends.

use core::sync::atomic::{AtomicU8, Ordering};

use arch_api::ExitCode;

use crate::{console, psci, semihosting};

/// The next stage to try: 0 semihosting, 1 PSCI, 2 halt.
static STAGE: AtomicU8 = AtomicU8::new(0);

pub fn off(code: ExitCode) -> ! {
    console::drain();
    if STAGE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        semihosting::exit(code);
    }
    if STAGE
        .compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        psci::system_off();
    }
    halt()
}

/// Stop this CPU for good: every exception masked, waiting for an interrupt that is never
/// taken.
pub fn halt() -> ! {
    // SAFETY: masking D, A, I and F only stops exceptions from being taken.
    unsafe { core::arch::asm!("msr daifset, #0xf", options(nomem, nostack)) };
    loop {
        aarch64_cpu::asm::wfi();
    }
}
