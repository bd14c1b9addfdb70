//! Upcalls: the named functions an arch crate calls into the core (DESIGN.md §2).
//!
//! Each arch crate declares these in its `upcall` module as `extern "Rust"`; they are
//! defined here, once, with unmangled names so the linker joins the two.

use core::sync::atomic::{AtomicU64, Ordering};

/// Timer interrupts taken since the timer was started.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Called by the arch crate's timer interrupt handler, with interrupts masked.
#[unsafe(no_mangle)]
pub fn keel_timer_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Timer ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}
