//! The generic timer: the EL1 virtual timer (CNTV), periodic by re-arming `CNTV_TVAL_EL0`
//! in the interrupt handler. Every CPU has its own CNTV and timer PPI; all tick at the
//! same rate (the boot CPU's ticks go to the core, a secondary's are only counted in its
//! per-CPU block).
//!
//! Why CNTV rather than CNTP is written down at [`crate::devicetree::TimerDescription`].
//! TVAL is a signed 32-bit down-counter relative to "now", so re-arming it in the handler
//! gives one tick per period plus interrupt latency; the core counts ticks, not time.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTV_CTL_EL0, CNTV_TVAL_EL0, Readable, Writeable};
use arch_api::EarlyError;
use spin::Once;

use crate::devicetree::TimerDescription;
use crate::gic;

/// The timer's wiring, from the device tree.
static DESCRIPTION: Once<TimerDescription> = Once::new();
/// Counter ticks per timer period; 0 while the timer is stopped.
static INTERVAL: AtomicU64 = AtomicU64::new(0);
/// The interrupt ID the handler recognises (0: none yet).
static INTID: AtomicU32 = AtomicU32::new(0);

/// Remember the timer's wiring (early init).
pub fn describe(description: TimerDescription) {
    DESCRIPTION.call_once(|| description);
}

/// The counter frequency: CNTFRQ_EL0, which firmware programs, else the device tree's
/// `clock-frequency` (for firmware that does not).
pub fn frequency() -> u64 {
    match CNTFRQ_EL0.get() {
        0 => DESCRIPTION
            .get()
            .and_then(|timer| timer.clock_frequency)
            .unwrap_or(0),
        hz => hz,
    }
}

/// Start ticking at `hz` on this CPU (the boot CPU, or a secondary: CNTV and the timer's
/// PPI are per CPU, the period the same on all). Interrupts stay masked at the CPU until
/// the caller waits for one.
pub fn start(hz: u32) -> Result<(), EarlyError> {
    let timer = DESCRIPTION
        .get()
        .ok_or(EarlyError::MissingDevice("timer (early init not run)"))?;
    let gic = gic::get().ok_or(EarlyError::MissingDevice("GIC (early init not run)"))?;
    let frequency = frequency();
    if frequency == 0 {
        return Err(EarlyError::MissingDevice(
            "timer frequency (CNTFRQ_EL0 is 0)",
        ));
    }
    let interval = frequency / u64::from(hz.max(1));
    if interval == 0 || interval > u64::from(i32::MAX as u32) {
        return Err(EarlyError::Unsupported(
            "timer rate out of range for CNTV_TVAL_EL0",
        ));
    }
    INTERVAL.store(interval, Ordering::Relaxed);
    INTID.store(timer.intid, Ordering::Relaxed);
    gic.enable_ppi(timer.intid, timer.trigger);
    CNTV_TVAL_EL0.set(interval);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    Ok(())
}

/// Whether `intid` is the timer's interrupt.
pub fn is_timer(intid: u32) -> bool {
    intid != 0 && intid == INTID.load(Ordering::Relaxed)
}

/// Re-arm for the next period; this also clears the (level) interrupt condition.
pub fn rearm() {
    match INTERVAL.load(Ordering::Relaxed) {
        // Not started: mask the output so a stray condition cannot storm.
        0 => CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET),
        interval => CNTV_TVAL_EL0.set(interval),
    }
}
