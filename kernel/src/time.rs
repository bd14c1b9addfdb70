//! Time: the timer rate and the count of timer ticks since the timer started.

use core::sync::atomic::{AtomicU64, Ordering};

use arch_api::Platform;

use crate::Cpu;

/// Timer interrupts per second, on every path that starts the timer.
pub const TIMER_HZ: u32 = 100;

/// Timer interrupts taken since the timer was started.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Start the timer at [`TIMER_HZ`].
pub fn start_timer() {
    if let Err(error) = Cpu::start_timer(TIMER_HZ) {
        panic!("cannot start the timer: {error:?}");
    }
}

/// Count one tick; returns the new count.
#[inline(always)]
pub fn tick() -> u64 {
    TICKS.fetch_add(1, Ordering::Relaxed) + 1
}

/// Timer ticks so far.
#[inline(always)]
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}
