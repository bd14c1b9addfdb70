//! Keel: a capability-based microkernel.
//!
//! This crate is the portable core. It is entered through the Limine boot protocol
//! ([`boot`]), brings the architecture up through the `arch-api` contract (`arch::Cpu`),
//! and starts `init`, the root task (or, in a kernel built with the `testing` feature, the
//! scenario `test=<name>` on the command line selects, DESIGN.md §8).
//!
//! # Layers
//! The folders are the layers (DESIGN.md §9); each imports only from the rows below it,
//! and `cargo xtask lint` checks that:
//!
//! | layer | modules | holds |
//! | --- | --- | --- |
//! | top | `main.rs`, [`upcall`], [`testing`] (test build) | entry points, scenarios and suites |
//! | system calls | [`syscall`] | decoding, one module per call family |
//! | services | [`proc`] over [`irq`] over [`ipc`] | spawn/exit/kill, interrupt bindings, message passing |
//! | tasks | [`task`] | threads, the scheduler, the start trampoline |
//! | objects | [`obj`] | kernel objects, capability spaces, process records |
//! | base | [`mm`] over [`boot`], [`stats`], [`trace`] over [`log`], [`time`], [`hwirq`] over [`sync`] | memory, boot info, counters, the trace ring, the kernel log, ticks, device lines, locks |
//!
//! Locks follow the same order ([`sync`] has the table). Nothing called under a lock
//! calls up: the last capability to an endpoint or a notification queues it to be closed
//! and a dead process queues its death notification ([`obj::pending`]), and the kernel log
//! only marks itself readable ([`log`]); the system-call exit and the timer tick
//! ([`upcall`]) do the work from the top.
//!
//! Boot order: arch early init (with [`boot::early_frames`]), [`mm`] (frame allocator, the
//! kernel's own page tables, heap), banner, the secondary CPUs ([`boot::smp`], each in
//! [`secondary_idle`] with its per-CPU state), then `init` (or the scenario) in the first
//! thread; reclaimable loader memory goes to the frame allocator once that thread runs off
//! the boot stack.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod boot;
mod hwirq;
mod ipc;
mod irq;
mod log;
mod mm;
mod obj;
mod proc;
mod stats;
mod sync;
mod syscall;
mod task;
#[cfg(feature = "testing")]
mod testing;
mod time;
mod trace;
mod upcall;

use core::fmt::Write as _;

use arch_api::{EarlyInfo, ExitCode, Platform};

/// The architecture this kernel was built for.
type Cpu = arch::Cpu;

/// The kernel's entry point, named by `ENTRY(kmain)` in the linker script. The loader jumps
/// here on the boot CPU, on a stack of at least the size the Stack Size request asked for.
#[unsafe(no_mangle)]
extern "C" fn kmain() -> ! {
    stats::mark_kernel_entry();
    let Some(early) = boot::early() else {
        // Without a supported base revision or an HHDM nothing the loader said can be
        // trusted, and without the device tree there may be no console: say what we can.
        Cpu::power_off(ExitCode::Fatal);
    };
    let mut frames = boot::early_frames::EarlyFrames::new(early.memory, early.hhdm_offset);
    let info = EarlyInfo {
        hhdm_offset: early.hhdm_offset,
        device_tree: early.device_tree,
        rsdp: early.rsdp,
    };
    if let Err(error) = Cpu::early_init(&info, &mut frames) {
        log::fatal_early(error);
    }
    EARLY_INIT_DONE.store(true, core::sync::atomic::Ordering::Release);
    mm::init(&early, frames.used());
    let boot = boot::collect(&early);
    if boot.cmdline.get("trace") == Some("on") {
        trace::enable();
        if trace::on() {
            syscall::instrument_fast_paths();
        }
    }
    boot.print_banner();
    mm::print_summary();
    boot::smp::start_secondaries(
        &mut mm::frames::KernelFrames,
        &mut || mm::stacks::allocate().ok(),
        secondary_idle,
    );
    match boot.cmdline.scenario() {
        None if boot::module("init").is_some() => task::run_first("boot", proc::init::run, 0),
        None => idle(),
        Some(scenario) => run_scenario(&boot, scenario),
    }
}

#[cfg(feature = "testing")]
fn run_scenario(boot: &boot::BootInfo, scenario: &str) -> ! {
    testing::run(boot, scenario)
}

/// A kernel without the `testing` feature has no scenario: say so and fail.
#[cfg(not(feature = "testing"))]
fn run_scenario(_: &boot::BootInfo, scenario: &str) -> ! {
    println!(
        "not ok scenario {scenario}: this kernel was built without test code (the `testing` \
         feature); `cargo xtask test`, `cargo xtask bench` and `--cmdline test=...` boots \
         build it in"
    );
    println!("0 passed, 1 failed");
    trace::power_off(ExitCode::TestFailed)
}

/// No scenario and no `init` module: keep the timer ticking and idle until the user quits
/// QEMU.
fn idle() -> ! {
    time::start_timer();
    println!(
        "keel: no init module and no test scenario; idling with the timer at {} Hz",
        time::TIMER_HZ
    );
    let minute = u64::from(time::TIMER_HZ) * 60;
    let mut next_report = minute;
    loop {
        Cpu::wait_for_interrupt();
        let ticks = time::ticks();
        if ticks >= next_report {
            println!("keel: uptime {} s, idle", ticks / u64::from(time::TIMER_HZ));
            next_report += minute;
        }
    }
}

/// An online secondary CPU, on its own kernel stack, for good: start its local timer, then
/// wait for interrupts with interrupts enabled (the arch handles IPIs: TLB flushed and
/// acknowledged, stop) until the scheduler exists, and join it: from then on the CPU runs
/// threads, its idle thread running [`secondary_idle_thread`].
extern "C" fn secondary_idle(index: usize) -> ! {
    time::start_secondary_timer();
    loop {
        Cpu::wait_for_interrupt();
        #[cfg(feature = "testing")]
        testing::smp::on_wake(index);
        if task::sched::initialized() && !task::sched::start_secondary(secondary_idle_thread) {
            println!(
                "keel: cpu {index}: no memory for its idle thread; it stays out of the scheduler"
            );
            loop {
                Cpu::wait_for_interrupt();
            }
        }
    }
}

/// A secondary CPU's idle thread: halt until an interrupt, then run what became ready.
fn secondary_idle_thread(_index: usize) {
    loop {
        Cpu::wait_for_interrupt();
        #[cfg(feature = "testing")]
        testing::smp::on_wake(_index);
        task::sched::idle_step();
    }
}

/// Set once `Platform::early_init` has returned on the boot CPU.
static EARLY_INIT_DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The panic report. The first CPU to panic reports; it stops every other CPU first (stop
/// IPIs, and `log::Serial` stops a CPU that writes meanwhile), so nothing follows the
/// report and a second panicking CPU stops without a word.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use arch_api::SecondaryCpus;
    match log::claim_panic() {
        log::PanicRole::Reporter => {}
        log::PanicRole::Silent => Cpu::stop_self(),
        log::PanicRole::Nested => {
            let _ = writeln!(log::Serial, "\nKERNEL PANIC while reporting a panic");
            Cpu::power_off(ExitCode::Fatal)
        }
    }
    let still_running = Cpu::stop_others();
    // The report takes no lock: the panicking code may hold one.
    let mut out = log::Serial;
    let _ = write!(out, "\nKERNEL PANIC: {}", info.message());
    if let Some(location) = info.location() {
        let _ = write!(out, " at {location}");
    }
    let _ = writeln!(out);
    // The running thread is known once the boot CPU's per-CPU block is set up (early init).
    let thread = if EARLY_INIT_DONE.load(core::sync::atomic::Ordering::Acquire) {
        <Cpu as arch_api::Threads>::current_thread()
    } else {
        0
    };
    let cpu = Cpu::cpu_index();
    let name = match (thread, cpu) {
        (0, 1..) => "(secondary idle)",
        _ => upcall::keel_thread_name(thread),
    };
    let _ = writeln!(out, "panic in thread {name} (id {thread}) on cpu {cpu}");
    if still_running != 0 {
        let _ = writeln!(out, "({still_running} other CPUs did not stop)");
    }
    let _ = Cpu::backtrace(&mut out);
    #[cfg(feature = "testing")]
    testing::fuzz::report_panic(&mut out);
    let _ = writeln!(out, "keel: kernel panic; powering off (exit code 2)");
    trace::power_off(ExitCode::Fatal)
}
