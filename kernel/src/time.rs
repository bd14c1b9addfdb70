//! Time: the timer rate and the count of timer ticks since the timer started (the boot
//! CPU's, which drive the scheduler), and the secondary CPUs' local timers.

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

/// Start this secondary CPU's local timer at [`TIMER_HZ`]: its ticks are only counted in
/// its per-CPU block (the scheduler runs on the boot CPU), so a failure is reported and
/// the CPU idles on without it.
pub fn start_secondary_timer() {
    use arch_api::SecondaryCpus;
    if let Err(error) = Cpu::start_secondary_timer(TIMER_HZ) {
        crate::println!(
            "smp: cpu {} has no local timer: {error:?}",
            Cpu::cpu_index()
        );
    }
}

/// The timer ticks CPU `index` has taken: the core's count for the boot CPU, the count
/// in its per-CPU block for a secondary; `None` if it is not online.
pub fn cpu_ticks(index: u32) -> Option<u64> {
    use arch_api::SecondaryCpus;
    match index {
        0 => Some(ticks()),
        _ => Cpu::timer_ticks(index),
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
