//! Upcalls: the named functions an arch crate calls into the core (DESIGN.md §2).
//!
//! Each arch crate declares these in its `upcall` module as `extern "Rust"`; they are
//! defined here, once, with unmangled names so the linker joins the two.

use core::sync::atomic::{AtomicU64, Ordering};

use arch_api::{TrapCause, TrapFrame as _};

use crate::thread::TrapFrame;
use crate::{irq, process, sched, syscall};

/// Timer interrupts taken since the timer was started.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Called by the arch crate's timer interrupt handler, with interrupts masked, after EOI.
/// May switch threads (preemption).
#[unsafe(no_mangle)]
pub fn keel_timer_tick() {
    let now = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    sched::timer_tick(now);
    // A user thread killed while it was preempted ends before it runs user code again.
    sched::exit_if_killed();
}

/// Called by the arch crate for every device interrupt that is not the timer, with
/// interrupts masked, after end-of-interrupt (and after masking the line when it was
/// enabled with mask-on-delivery). May switch threads (a woken driver).
#[unsafe(no_mangle)]
pub fn keel_irq(line: u32) {
    irq::deliver(line);
}

/// Timer ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Every trap the arch crate does not finish itself: system calls and exceptions from user
/// mode. Interrupts are masked; `frame` lies at the top of the current thread's kernel
/// stack. A fault kills the current thread (never returns); a system call returns with
/// its results in `frame`.
#[unsafe(no_mangle)]
pub fn keel_trap(frame: &mut TrapFrame) {
    match frame.cause() {
        TrapCause::Syscall => {
            syscall::dispatch(frame);
            // A thread killed during the call (by itself or while it was blocked) ends here.
            sched::exit_if_killed();
        }
        // Device interrupts go to the capability holder bound to the line (issue 8).
        TrapCause::Irq(line) => {
            crate::irq_caps::deliver(line);
        }
        cause if frame.is_from_user() => process::kill_current(frame, cause),
        cause => panic!(
            "kernel trap sent to the core: {} at ip {:#x}",
            process::Describe(cause),
            frame.instruction_pointer()
        ),
    }
}

/// A system call, straight from the arch crate's system-call entry (no trap demultiplexing
/// on the way): interrupts masked, `frame` at the top of the current thread's kernel
/// stack, holding at least the number and argument registers. Returns with the results in
/// `frame`; may switch threads inside, or end the thread and never return.
#[unsafe(no_mangle)]
pub extern "C" fn keel_syscall(frame: &mut TrapFrame) {
    syscall::enter(frame);
}

/// The name of thread `thread`, for the arch crate's fatal reports. Never blocks (the
/// report may come from inside the scheduler).
#[unsafe(no_mangle)]
pub fn keel_thread_name(thread: usize) -> &'static str {
    if thread == 0 {
        return "(boot)";
    }
    sched::name_of(thread).unwrap_or("(unknown thread)")
}
