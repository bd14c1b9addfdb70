//! Upcalls: the named functions an arch crate calls into the core (DESIGN.md §2).
//!
//! Each arch crate declares these in its `upcall` module as `extern "Rust"`; they are
//! defined here, once, with unmangled names so the linker joins the two. This is the top
//! layer: the timer tick and the system-call exit are where work deferred by lower
//! layers is done (`obj::pending`, the kernel log's reader).

use arch_api::{TrapCause, TrapFrame as _};

use crate::task::sched;
use crate::task::thread::TrapFrame;
use crate::trace::{self, Kind};
use crate::{Cpu, hwirq, irq, log, proc, syscall, time};

/// Called by the arch crate's timer interrupt handler, with interrupts masked, after EOI.
/// May switch threads (preemption).
#[unsafe(no_mangle)]
pub fn keel_timer_tick() {
    use arch_api::SecondaryCpus;
    trace::event_here(Kind::IrqEnter, trace::TIMER_LINE, 0);
    // The boot CPU's tick is the kernel's clock; every CPU's tick drives its scheduler.
    let now = if Cpu::cpu_index() == 0 {
        time::tick()
    } else {
        time::ticks()
    };
    sched::timer_tick(now);
    if crate::sync::deferred::any() {
        syscall::run_deferred();
    }
    trace::event_here(Kind::IrqExit, trace::TIMER_LINE, 0);
    // A user thread killed while it was preempted ends before it runs user code again.
    proc::exit_if_killed();
}

/// Called by the arch crate for a reschedule IPI, with interrupts masked, after its end of
/// interrupt: another CPU queued a thread here, changed the running thread's affinity, or
/// killed it. May switch threads.
#[unsafe(no_mangle)]
pub fn keel_reschedule() {
    sched::reschedule_interrupt();
    // A user thread killed from another CPU ends before it runs user code again.
    proc::exit_if_killed();
}

/// Called by the arch crate for every device interrupt that is not the timer, with
/// interrupts masked, after end-of-interrupt (and after masking the line when it was
/// enabled with mask-on-delivery). May switch threads (a woken driver).
#[unsafe(no_mangle)]
pub fn keel_irq(line: u32) {
    trace::event_here(Kind::IrqEnter, u64::from(line), 0);
    hwirq::deliver(line);
    trace::event_here(Kind::IrqExit, u64::from(line), 0);
}

/// Every trap the arch crate does not finish itself: exceptions from user mode (system
/// calls arrive through [`keel_syscall`]). Interrupts are masked; `frame` lies at the top
/// of the current thread's kernel stack. A fault kills the current thread (never returns).
#[unsafe(no_mangle)]
pub fn keel_trap(frame: &mut TrapFrame) {
    match frame.cause() {
        TrapCause::Syscall => {
            syscall::dispatch(frame);
            syscall::finish();
        }
        TrapCause::Irq(line) => {
            trace::event_here(Kind::IrqEnter, u64::from(line), 0);
            irq::deliver(line);
            trace::event_here(Kind::IrqExit, u64::from(line), 0);
        }
        cause if frame.is_from_user() => proc::kill_current(frame, cause),
        cause => panic!(
            "kernel trap sent to the core: {} at ip {:#x}",
            proc::Describe(cause),
            frame.instruction_pointer()
        ),
    }
}

// The system-call table, `KEEL_SYSCALLS`, is an upcall too: it is defined in `syscall`
// (`crate::syscall::KEEL_SYSCALLS`), which writes it (`syscall::instrument_fast_paths`).

/// A system call whose number is not below `arch_api::SYSCALL_TABLE_LEN` (the process,
/// system and test calls, and every number that names no call), from the arch crate's
/// system-call entry as [`KEEL_SYSCALLS`]' handlers are: decoded by `syscall::dispatch`.
/// Returns with the results in `frame`; may switch threads inside, or end the thread and
/// never return.
#[unsafe(no_mangle)]
pub extern "C" fn keel_syscall(frame: &mut TrapFrame) {
    syscall::general(frame);
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

/// A fatal report (kernel fault, kernel-stack overflow) is about to start on this CPU: as
/// for a panic (`main.rs`), the first CPU to report stops the others first, and a CPU that
/// comes second stops without a word. Takes no lock.
#[unsafe(no_mangle)]
pub fn keel_fatal_begin() {
    use arch_api::SecondaryCpus;
    match log::claim_panic() {
        log::PanicRole::Reporter => {
            Cpu::stop_others();
        }
        log::PanicRole::Nested => {}
        log::PanicRole::Silent => Cpu::stop_self(),
    }
}
