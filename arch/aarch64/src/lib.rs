//! Keel on AArch64: exception vectors, GIC, generic timer, PL011 and power-off, behind the
//! `arch_api::Platform` contract.
//!
//! # Principles
//!
//! - **The device tree is the only source of device facts.** The PL011, the GIC (v2 or v3),
//!   the timer's interrupt and the PSCI conduit all come from the DTB the loader hands over
//!   ([`devicetree`]); nothing is assumed about QEMU `virt` beyond what the DTB says.
//! - **MMIO is never touched through the HHDM.** Limine maps the HHDM as Normal write-back
//!   memory; device registers are mapped again, Device-nGnRE, in a fixed kernel device window
//!   ([`mmu`]), with a MAIR index the loader does not use.
//! - **The kernel runs on `SP_EL1` (`SPSel = 1`).** Limine enters at EL1t; [`boot`] moves the
//!   live stack to `SP_EL1` before the vectors are installed, so `SP_EL0` is free for user
//!   stacks and every exception saves its frame on the interrupted kernel stack.
//! - **One trap frame, one dispatcher.** All sixteen vectors save the same
//!   [`trap::TrapFrame`] and call one Rust function; assembly offsets are compile-time
//!   checked against the struct.
//! - **Never loop on exceptions.** A fault while reporting a fault prints one line and powers
//!   off; a third one halts silently. Semihosting and PSCI calls that the machine does not
//!   implement (undefined instruction) are skipped, not reported, so power-off always ends.
//! - **No FP/SIMD in the kernel.** The crate is built for `aarch64-unknown-none-softfloat`;
//!   the trap path saves only general-purpose and system registers.
//!
//! # Which stack runs what (DESIGN.md §3, AArch64 column)
//!
//! | event | stack |
//! | --- | --- |
//! | system call from user (`SVC` from EL0) | lands on `SP_EL1`, which is the current thread's kernel stack top (the kernel runs with `SPSel = 1`; user SP stays in `SP_EL0` and is saved in the frame) — *user mode arrives with issue 6* |
//! | interrupt or exception from user | same as SVC: `SP_EL1` — *issue 6* |
//! | interrupt or exception in kernel | the interrupted kernel stack (`SP_EL1`); the frame is pushed below the interrupted SP |
//! | debug, SError, "NMI"-like events | no IST exists: entry is meant to check SP against the current stack's bounds and move to a per-CPU overflow stack when it has overflowed — *not yet: issue 6* |
//! | kernel-stack overflow | guard page → abort → overflow stack → report naming the thread — *not yet: issue 6* |
//!
//! Today the only kernel stack is the loader's boot stack (Limine: at least 64 KiB, in
//! bootloader-reclaimable memory), which becomes `SP_EL1` in [`boot`].
//!
//! # Known weak spots
//!
//! - The exception entry does not check the stack pointer: an exception taken with a broken
//!   `SP_EL1` faults again on its first store and recurses down the address space instead of
//!   reaching the report (issue 6 adds bounded kernel stacks and the overflow stack).
//! - Device mappings go into the loader's TTBR1 tables (walked through the HHDM); the kernel's
//!   own page tables (DESIGN.md §4) must carry the device window over.
//! - Boot CPU only: the GICv3 redistributor is looked up for the boot CPU's MPIDR, and only
//!   the timer PPI is enabled; every SPI stays disabled.
//! - Device-tree `reg` values are used untranslated: devices must sit under the root or under
//!   buses whose `ranges` are identity (true on QEMU `virt`).
//! - The backtrace needs frame pointers (`-C force-frame-pointers=yes`, which the kernel's
//!   build requires) and stops at the first record that is unmapped or out of order.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

mod boot;
mod console;
mod devicetree;
mod gic;
mod mmio;
mod mmu;
mod percpu;
mod pl011;
mod power;
mod psci;
mod semihosting;
mod timer;
mod trap;
mod upcall;

use arch_api::{EarlyError, EarlyInfo, ExitCode, FrameSource, Platform};

pub use trap::TrapFrame;

/// The AArch64 platform, as the portable core sees it (`arch::Cpu`).
pub struct Cpu;

impl Platform for Cpu {
    const NAME: &'static str = "aarch64";

    fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        boot::early_init(info, frames)
    }

    fn console_write(bytes: &[u8]) {
        console::write(bytes);
    }

    fn start_timer(hz: u32) -> Result<(), EarlyError> {
        timer::start(hz)
    }

    fn wait_for_interrupt() {
        trap::wait_for_interrupt();
    }

    fn power_off(code: ExitCode) -> ! {
        power::off(code)
    }
}
