//! Keel's x86_64 architecture crate: descriptor tables, trap entry, per-CPU data, the local
//! APIC timer and the 16550 console, behind the `arch_api::Platform` contract.
//!
//! # Principles
//! - One trap frame for every way into the kernel ([`trap::TrapFrame`]): 256 assembly stubs
//!   normalize the hardware's frames and one Rust dispatcher sees them all. Every offset
//!   the assembly uses is a constant checked against the struct at compile time.
//! - `SWAPGS` is never assumed: normal vectors decide from the saved CS, the paranoid ones
//!   (NMI, #MC, #DB, #DF) from the GS base itself ([`percpu`] writes the discipline down).
//! - Devices are mapped uncached into a fixed kernel device window, never touched through
//!   the HHDM ([`paging`]).
//! - Hardening is on wherever CPUID reports it: NX, WP, SMEP, SMAP, UMIP ([`features`]).
//! - Calls into the core are the named upcalls of [`upcall`]; no function-pointer registry.
//!
//! # Which stack runs what (x86_64 column of DESIGN.md §3)
//! | event | stack |
//! | --- | --- |
//! | system call from user (issue 5) | `SYSCALL` switches no stack: `SWAPGS`, park user RSP in the per-CPU scratch slot, load the current thread's kernel stack top from the per-CPU block, build the same `TrapFrame`; `SYSRET` only with a canonical RCX and sane R11, else `IRETQ` |
//! | interrupt or exception from user | the CPU loads `TSS.RSP0` = the current thread's kernel stack top ([`percpu::set_kernel_stack_top`], on every switch) |
//! | interrupt or exception in kernel | the interrupted kernel stack |
//! | NMI, #DF, #MC, #DB | this CPU's IST stacks 2, 1, 3, 4 ([`percpu::Ist`]); `SWAPGS` decided from the GS base |
//! | kernel-stack overflow | guard page → #PF cannot push → #DF on its IST stack → report, power off |
//!
//! # Known weak spots
//! - The IST stacks are static `.bss` arrays without guard pages (they arrive with the
//!   kernel's own page tables, memory issue); only the boot CPU is brought up.
//! - Every exception is fatal: the report prints and the machine powers off. Recoverable
//!   kernel faults and user faults go to the core with issue 5.
//! - `SYSCALL`/`SYSRET`, context switch, FPU state and user entry are issue 5; the GDT
//!   order, the per-CPU slots and [`trap::entry::TRAP_RETURN`] are already shaped for them,
//!   but the ring-3 halves of the `SWAPGS` decisions have never run.
//! - Nested NMIs (an exception inside the NMI handler) are not handled.
//! - The kernel still runs on the loader's page tables; the device window is added to them.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod apic;
pub mod features;
pub mod paging;
pub mod percpu;
pub mod pic;
pub mod power;
pub mod serial;
pub mod trap;
pub mod upcall;

use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::{EarlyError, EarlyInfo, ExitCode, FrameSource, Platform};

use crate::features::{Cpuid, Feature};
use crate::serial::arch_println;

/// The x86_64 platform, as the core sees it (`arch::Cpu`).
pub struct Cpu;

static EARLY_INIT_DONE: AtomicBool = AtomicBool::new(false);

impl Platform for Cpu {
    const NAME: &'static str = "x86_64";

    fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        if EARLY_INIT_DONE.swap(true, Ordering::Relaxed) {
            return Err(EarlyError::Unsupported("early init ran twice"));
        }
        x86_64::instructions::interrupts::disable();
        serial::init();
        paging::set_hhdm_offset(info.hhdm_offset);
        // SAFETY: once, on the boot CPU (the loader enters the kernel there), with interrupts
        // masked, before anything reads %gs.
        unsafe { percpu::init(0) };
        // SAFETY: once, on the boot CPU, before any CPU loads the IDT; the GDT and TSS just
        // loaded hold the kernel code selector and the IST stacks the gates name.
        unsafe {
            trap::idt::init();
            trap::idt::load();
        }
        let cpuid = Cpuid::read();
        features::harden(&cpuid);
        pic::remap_and_mask();
        paging::check_device_window(info.hhdm_offset, cpuid.physical_address_bits)?;
        paging::check_pat()?;
        let apic = apic::init(frames)?;
        let supervisor_only = kernel_is_supervisor_only(apic.virtual_address);
        if supervisor_only {
            features::harden_supervisor_access(&cpuid);
        }
        print_summary(&cpuid, &apic, supervisor_only);
        Ok(())
    }

    fn console_write(bytes: &[u8]) {
        serial::write(bytes);
    }

    fn start_timer(hz: u32) -> Result<(), EarlyError> {
        let per_tick = apic::start_timer(hz)?;
        arch_println!(
            "x86_64: local APIC timer at {} kHz (calibrated against the PIT), {per_tick} counts per tick at {hz} Hz",
            apic::timer_rate() / 1000,
        );
        Ok(())
    }

    fn wait_for_interrupt() {
        // SAFETY: `sti` takes effect after the next instruction, so an interrupt pending
        // now is taken after `hlt` has started (no lost wake-up); `cli` restores the
        // masked state callers rely on. Not `nomem`: the handlers change memory the caller
        // reads afterwards.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }

    fn power_off(code: ExitCode) -> ! {
        power::power_off(code)
    }
}

/// Whether everything the kernel runs on is mapped supervisor-only, so SMEP and SMAP will
/// not fault on the kernel itself: its code, its data and stack, the page tables, the
/// device window. Real Limine maps nothing user-accessible; a loader that did would make
/// the next instruction fetch fault once SMEP is on.
fn kernel_is_supervisor_only(device_window: u64) -> bool {
    let stack_marker = 0u8;
    let probes = [
        kernel_is_supervisor_only as fn(u64) -> bool as usize as u64,
        core::ptr::from_ref(&EARLY_INIT_DONE) as u64,
        core::ptr::from_ref(&stack_marker) as u64,
        device_window,
    ];
    probes
        .iter()
        .all(|&address| paging::translate(address).is_some_and(|t| !t.user))
}

fn print_summary(cpuid: &Cpuid, apic: &apic::Found, supervisor_only: bool) {
    arch_println!(
        "x86_64: cpu 0: gdt, tss (4 ist stacks), idt (256 vectors) loaded; hardening on:{} off:{}; {} physical address bits",
        FeatureList(true),
        FeatureList(false),
        cpuid.physical_address_bits,
    );
    if !supervisor_only && (cpuid.smep || cpuid.smap) {
        arch_println!("x86_64: smep/smap left off: the loader maps kernel memory user-accessible");
    }
    arch_println!(
        "x86_64: local APIC id {} version {:#x} at physical {:#x}, mapped uncached at {:#x}{}",
        apic.id,
        apic.version,
        apic.physical,
        apic.virtual_address,
        if apic.was_x2apic {
            " (switched from x2APIC mode)"
        } else {
            ""
        },
    );
}

/// The hardening features that are on (`FeatureList(true)`) or off, space-separated.
struct FeatureList(bool);

impl core::fmt::Display for FeatureList {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut any = false;
        for feature in Feature::ALL
            .into_iter()
            .filter(|&f| features::enabled(f) == self.0)
        {
            write!(out, " {}", feature.name())?;
            any = true;
        }
        if !any {
            write!(out, " none")?;
        }
        Ok(())
    }
}
