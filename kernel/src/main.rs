//! Keel: a capability-based microkernel.
//!
//! This crate is the portable core. It is entered through the Limine boot protocol
//! ([`boot`]), brings the architecture up through the `arch-api` contract (`arch::Cpu`), and
//! runs the scenario the command line selects (`test=<name>`, DESIGN.md §8) or idles with
//! the timer running.
//!
//! Principles: the core never names a register or a `cfg(target_arch)`; everything the
//! hardware does goes through [`arch_api::Platform`]. Pure logic lives in `kcore`, where the
//! host can test it.
//!
//! Boot order: arch early init (with [`early_frames`]), [`memory`] (frame allocator, heap),
//! banner, then the scenario; scenarios other than `boot` start the scheduler ([`sched`])
//! and run in kernel threads, user programs in processes loaded from boot modules
//! ([`process`]); system calls arrive through [`upcall::keel_trap`] ([`syscall`]).
//!
//! Memory order (issue 7): the frame allocator, then the kernel's own page tables
//! ([`memory::kernel_tables`], the loader's are never used again), then the heap;
//! bootloader-reclaimable memory goes to the frame allocator when the first thread runs
//! (off the boot stack, with everything kept copied out of the Limine responses).
//!
//! Known weak spots: one CPU; the frames the early frame source handed out are kept
//! forever (a few of them are page tables the loader's hierarchy held for Keel's regions,
//! orphaned by the switch).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod bench;
mod boot;
mod console;
mod early_frames;
mod ipc;
mod irq;
mod irq_caps;
mod ktest;
mod ktest_irq;
mod memory;
mod object;
mod process;
mod procsys;
mod scenario;
mod sched;
mod syscall;
mod thread;
mod upcall;

use arch_api::{EarlyInfo, ExitCode, Platform};

/// The architecture this kernel was built for.
type Cpu = arch::Cpu;

/// The kernel's entry point, named by `ENTRY(kmain)` in the linker script. The loader jumps
/// here on the boot CPU, on a stack of at least the size the Stack Size request asked for.
#[unsafe(no_mangle)]
extern "C" fn kmain() -> ! {
    bench::mark_kernel_entry();
    let Some(early) = boot::early() else {
        // Without a supported base revision or an HHDM nothing the loader said can be
        // trusted, and without the device tree there may be no console: say what we can.
        Cpu::power_off(ExitCode::Fatal);
    };
    let mut frames = early_frames::EarlyFrames::new(early.memory, early.hhdm_offset);
    let info = EarlyInfo {
        hhdm_offset: early.hhdm_offset,
        device_tree: early.device_tree,
        rsdp: early.rsdp,
    };
    if let Err(error) = Cpu::early_init(&info, &mut frames) {
        console::fatal_early(error);
    }
    memory::init(&early, frames.used());
    let boot = boot::collect(&early);
    boot.print_banner();
    memory::print_summary();
    scenario::run(&boot)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::panic_report(info);
    Cpu::power_off(ExitCode::Fatal)
}
