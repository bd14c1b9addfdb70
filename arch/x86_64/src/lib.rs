//! Keel's x86_64 architecture crate: descriptor tables, trap entry, `SYSCALL`, per-CPU
//! data, context switch and FPU state, address spaces, the local APIC timer and the 16550
//! console, behind the `arch_api` contract (`Platform`, `Threads`, `Paging`,
//! `UserRegisterWrite`, `TrapFrame`; with the feature `testing`, `SelfTest` and
//! `InterruptSelfTest`).
//!
//! # Map
//! - [`trap`]: the IDT and its 256 stubs ([`trap::entry`]), the `SYSCALL` entry
//!   ([`trap::syscall`]), the one [`trap::TrapFrame`], the dispatcher ([`trap::dispatch`]:
//!   what the arch finishes itself and what goes to the core's `keel_trap`), exception
//!   fixups ([`trap::fixup`]: user copies and, with `testing`, the self-test probes),
//!   fatal reports.
//! - [`thread`]: `Context`, `switch`, the new-thread trampoline, `enter_user`, the
//!   register-write validation. [`fpu`]: XSAVE/XSAVEOPT/FXSAVE state.
//! - [`space`]: kernel-half mappings, user address spaces (PCID), `copy_from_user` /
//!   `copy_to_user`. [`paging`]: reading the active tables, the device window.
//! - [`percpu`]: the GS-based per-CPU block, GDT, TSS, IST stacks. [`features`]: CPUID and
//!   CR0/CR4/EFER hardening. [`apic`], [`pic`], [`serial`], [`power`], `nmi` (the NMI
//!   storm, with `testing` only), [`upcall`] (the arch → core calls).
//! - [`acpi`] (the MADT) and [`ioapic`]: device interrupt lines (`Interrupts`), one vector
//!   per I/O APIC input, lazy masking of edge lines.
//!
//! # Principles
//! - One trap frame for every way into the kernel ([`trap::TrapFrame`]): 256 assembly stubs
//!   and the `SYSCALL` entry normalize the hardware's frames and one Rust dispatcher sees
//!   them all. Every offset the assembly uses is a constant checked at compile time.
//! - `SWAPGS` is never assumed: normal vectors decide from the saved CS, the paranoid ones
//!   (NMI, #MC, #DB, #DF) from the GS base itself ([`percpu`] writes the discipline down).
//! - Nothing returns to ring 3 through a path that could fault in ring 0: `SYSRET` only for
//!   frames `SYSCALL` could have made, and a frame with a non-canonical RIP or RSP becomes
//!   the user's own #GP before any return ([`trap::dispatch`]).
//! - The kernel touches user memory only inside the fixup-covered copy, with `stac`/`clac`
//!   around that one instruction when SMAP is on ([`space`]).
//! - Devices are mapped uncached into a fixed kernel device window, never touched through
//!   the HHDM ([`paging`]).
//! - Hardening is on wherever CPUID reports it: NX, WP, SMEP, SMAP, UMIP ([`features`]).
//! - Calls into the core are the named upcalls of [`upcall`]; no function-pointer registry.
//!
//! # Which stack runs what (x86_64 column of DESIGN.md §3)
//! | event | stack |
//! | --- | --- |
//! | system call from user | `SYSCALL` switches no stack: `SWAPGS`, park user RSP in the per-CPU scratch slot, load the current thread's kernel stack top from the per-CPU block, build the same `TrapFrame` at that top ([`trap::syscall`]); `SYSRET` only with a user-half RIP, the user selectors and sane RFLAGS, else `IRETQ` |
//! | interrupt or exception from user | the CPU loads `TSS.RSP0` = the current thread's kernel stack top (written by every `switch` and by `set_kernel_stack`, [`percpu::set_kernel_stack`]); the frame lands at the same place as a system call's |
//! | interrupt or exception in kernel | the interrupted kernel stack |
//! | a new thread's first run | its own kernel stack, below the frame area: `switch` `ret`s into the trampoline, which calls `entry(argument)` ([`thread`]) |
//! | NMI, #DF, #MC, #DB | this CPU's IST stacks 2, 1, 3, 4 ([`percpu::Ist`]); `SWAPGS` decided from the GS base |
//! | kernel-stack overflow | guard page → #PF cannot push → #DF on its IST stack → `kernel stack overflow in thread <name>` (decided by CR2 or RSP in the current stack's guard page), power off with exit code 2 |
//!
//! # Known weak spots
//! - Secondary CPUs are brought up ([`smp`]) but run only their idle loop and IPIs; TLB
//!   maintenance in the paging code is local, a shootdown is the caller's explicit
//!   `tlb_shootdown`. An IST stack overflow hits its guard page but ends in a triple
//!   fault, not a report.
//! - Nested NMIs (an exception inside the NMI handler) are not handled; the NMI handler
//!   only counts (its one user is the storm test).
//! - PCIDs: implemented ([`space`]) but never exercised — QEMU 7.2's TCG does not offer
//!   PCID even with `-cpu max,+pcid`, so every test ran with plain CR3 switches.
//! - Early init (device window, IST stacks) still maps into the loader's tables; the
//!   kernel's own tables ([`tables`]) copy those pages when the core switches to them,
//!   and the loader's tables are not used after that.
//! - The NMI storm assumes the I/O APIC at 0xFEC0_0000 with the PIT on pin 2 (QEMU).
//! - `FpuState` is a fixed 1 KiB (x87 + SSE + AVX = 832 bytes; checked at boot): AVX-512
//!   and later components are never enabled in XCR0.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod acpi;
pub mod apic;
pub mod features;
pub mod fpu;
pub mod ioapic;
#[cfg(feature = "testing")]
pub mod nmi;
pub mod paging;
pub mod percpu;
pub mod pic;
pub mod power;
pub mod serial;
pub mod smp;
pub mod space;
pub mod tables;
pub mod thread;
pub mod trap;
pub mod upcall;

use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::{
    Bench, Delivery, EarlyError, EarlyInfo, ExitCode, FrameSource, InterruptError, Interrupts,
    Platform,
};

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
        paging::record_kernel_root();
        // SAFETY: once, on the boot CPU (the loader enters the kernel there), with interrupts
        // masked, before anything reads %gs. Its APIC ID is recorded once the APIC is up.
        unsafe { percpu::init(0, 0) };
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
        percpu::record_hardware_id(u64::from(apic.id));
        let supervisor_only = kernel_is_supervisor_only(apic.virtual_address);
        if supervisor_only {
            features::harden_supervisor_access(&cpuid);
        }
        let ioapic = ioapic::init(info.rsdp, frames)?;
        space::init(&cpuid, frames)?;
        // SAFETY: once, on the boot CPU, interrupts masked, no exception in progress; the
        // kernel half's device-window PML4 slot (which holds the IST region) is filled.
        unsafe { percpu::install_guarded_ist_stacks(frames)? };
        fpu::init(&cpuid)?;
        // SAFETY: the GDT loaded by `percpu::init` has the selectors STAR names; no user
        // code runs before the core sets a kernel stack (`Threads::set_kernel_stack`).
        unsafe { trap::syscall::init() };
        percpu::mark_online();
        print_summary(&cpuid, &apic, supervisor_only);
        print_interrupt_summary(&ioapic);
        Ok(())
    }

    fn console_write(bytes: &[u8]) {
        serial::write(bytes);
    }

    fn console_read() -> Option<u8> {
        serial::read()
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

    #[inline]
    fn interrupts_enabled() -> bool {
        x86_64::instructions::interrupts::are_enabled()
    }

    fn power_off(code: ExitCode) -> ! {
        power::power_off(code)
    }

    fn backtrace(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        trap::report::backtrace_here(out)
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
        "x86_64: cpu 0: gdt, tss (4 ist stacks with guard pages), idt (256 vectors) loaded; hardening on:{} off:{}; {} physical address bits",
        FeatureList(true),
        FeatureList(false),
        cpuid.physical_address_bits,
    );
    if !supervisor_only && (cpuid.smep || cpuid.smap) {
        arch_println!("x86_64: smep/smap left off: the loader maps kernel memory user-accessible");
    }
    arch_println!(
        "x86_64: fpu state by {}; pcid {}; syscall/sysret on",
        fpu::describe(),
        if space::pcid_enabled() { "on" } else { "off" },
    );
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

fn print_interrupt_summary(found: &ioapic::Found) {
    match found.missing {
        Some(missing) => arch_println!("x86_64: no device interrupts: {missing}"),
        None => arch_println!(
            "x86_64: {} I/O APIC(s), {} lines (vectors {:#x}+), COM1 on line {}; 8259 pair masked",
            found.chips,
            found.lines,
            trap::vector::EXTERNAL_BASE,
            found.console_line.map_or(-1, i64::from),
        ),
    }
}

/// Device interrupts through the I/O APIC ([`ioapic`]).
impl Interrupts for Cpu {
    fn line_count() -> u32 {
        ioapic::line_count()
    }

    fn console_line() -> Option<u32> {
        ioapic::console_line()
    }

    fn enable(line: u32, delivery: Delivery) -> Result<(), InterruptError> {
        ioapic::enable(line, delivery)
    }

    fn disable(line: u32) -> Result<(), InterruptError> {
        ioapic::disable(line)
    }

    fn mask(line: u32) -> Result<(), InterruptError> {
        ioapic::mask(line)
    }

    fn unmask(line: u32) -> Result<(), InterruptError> {
        ioapic::unmask(line)
    }

    fn unexpected_interrupts() -> u64 {
        ioapic::unexpected()
    }
}

/// COM1's internal loopback raises its receive interrupt; self-IPIs raise lines.
#[cfg(feature = "testing")]
impl arch_api::InterruptSelfTest for Cpu {
    fn console_irq_test_begin() -> Option<arch_api::ConsoleIrqSource> {
        serial::loopback_begin();
        Some(arch_api::ConsoleIrqSource::ReceiveLoopback)
    }

    fn console_irq_test_send(byte: u8) {
        serial::loopback_send(byte);
    }

    fn console_irq_test_clear() -> Option<u8> {
        serial::loopback_receive()
    }

    fn console_irq_test_end() {
        serial::loopback_end();
    }

    fn set_trigger_for_test(line: u32, level: Option<bool>) -> Option<bool> {
        ioapic::set_trigger_for_test(line, level)
    }

    fn raise_line(line: u32) -> bool {
        ioapic::raise(line)
    }

    fn raise_unrouted() -> bool {
        apic::send_self(trap::vector::UNASSIGNED_TEST);
        true
    }
}

/// The hardening features that are on (`FeatureList(true)`) or off, space-separated.
struct FeatureList(bool);

/// Benchmarks read the TSC: under QEMU `-icount shift=0` it advances by one per guest
/// instruction (`rdpmc` is #UD under software emulation).
impl Bench for Cpu {
    fn enable_user_instruction_counter() -> bool {
        // User `rdtsc` works while CR4.TSD is clear; the kernel never sets it.
        !x86_64::registers::control::Cr4::read()
            .contains(x86_64::registers::control::Cr4Flags::TIMESTAMP_DISABLE)
    }

    fn instruction_clock() -> u64 {
        // SAFETY: `rdtsc` only reads the time-stamp counter (always allowed in ring 0).
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn instruction_counter() -> u64 {
        Self::instruction_clock()
    }
}

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

/// The console is COM1: ports `0x3F8..=0x3FF`, ISA IRQ 4. Port I/O runs here, on behalf of
/// the core's I/O-port capabilities (the core checks the range and rights).
impl arch_api::Devices for Cpu {
    fn console_device() -> Option<arch_api::ConsoleDevice> {
        Some(arch_api::ConsoleDevice {
            ports: Some((serial::COM1, 8)),
            mmio: None,
            irq: Some(serial::COM1_IRQ),
        })
    }

    fn port_read(port: u16, width: u8) -> Option<u32> {
        use x86_64::instructions::port::PortReadOnly;
        // SAFETY: the core passes only ports of an I/O-port capability (trait contract),
        // i.e. device ports given to user space, none the kernel's memory depends on.
        unsafe {
            match width {
                1 => Some(u32::from(PortReadOnly::<u8>::new(port).read())),
                2 => Some(u32::from(PortReadOnly::<u16>::new(port).read())),
                4 => Some(PortReadOnly::<u32>::new(port).read()),
                _ => None,
            }
        }
    }

    fn port_write(port: u16, width: u8, value: u32) -> bool {
        use x86_64::instructions::port::PortWriteOnly;
        // SAFETY: the core passes only ports of an I/O-port capability (trait contract),
        // i.e. device ports given to user space, none the kernel's memory depends on. The
        // truncations keep the low `width` bytes, as documented.
        unsafe {
            match width {
                1 => PortWriteOnly::<u8>::new(port).write(value as u8),
                2 => PortWriteOnly::<u16>::new(port).write(value as u16),
                4 => PortWriteOnly::<u32>::new(port).write(value),
                _ => return false,
            }
        }
        true
    }
}

impl arch_api::KernelTables for Cpu {
    fn switch_to_kernel_tables(
        layout: &arch_api::KernelLayout,
        direct_map: &[(u64, u64)],
        frames: &mut dyn FrameSource,
    ) -> Result<arch_api::KernelTablesReport, EarlyError> {
        tables::switch_to_kernel_tables(layout, direct_map, frames)
    }

    fn active_kernel_root() -> u64 {
        tables::active_root()
    }

    fn lookup_kernel(virtual_address: u64) -> Option<arch_api::pagetable::Translation> {
        tables::lookup_active(virtual_address)
    }
}

impl arch_api::SecondaryCpus for Cpu {
    fn prepare_secondaries(count: u32, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
        smp::prepare(count, frames)
    }

    fn enter_secondary() {
        smp::enter();
    }

    unsafe fn run_on_stack(top: u64, entry: extern "C" fn(usize) -> !, argument: usize) -> ! {
        // SAFETY: the caller upholds the trait's contract, which is `smp::run_on_stack`'s.
        unsafe { smp::run_on_stack(top, entry, argument) }
    }

    fn init_secondary(index: u32, hardware_id: u64, stack: arch_api::KernelStack) {
        if let Err(problem) = smp::init_secondary(index, hardware_id, stack) {
            arch_println!("x86_64: cpu {index} left parked: {problem}");
            smp::park();
        }
    }

    fn park_secondary() -> ! {
        smp::park()
    }

    #[inline(always)]
    fn cpu_index() -> u32 {
        percpu::index()
    }

    fn hardware_id() -> u64 {
        u64::from(apic::id())
    }

    fn is_online(index: u32) -> bool {
        percpu::is_online(index)
    }

    fn send_ipi(target: arch_api::IpiTarget, ipi: arch_api::Ipi) {
        smp::send_ipi(target, ipi);
    }

    fn ipi_counts(index: u32) -> Option<arch_api::IpiCounts> {
        smp::ipi_counts(index)
    }

    fn tlb_shootdown(target: arch_api::IpiTarget) -> u32 {
        smp::tlb_shootdown(target)
    }

    #[inline]
    fn service_ipi_work() {
        space::service_requests();
    }

    #[inline]
    fn wait_pause() {
        smp::wait_pause();
    }

    fn stop_others() -> u32 {
        smp::stop_others()
    }

    fn stop_self() -> ! {
        smp::stop_self()
    }

    fn start_secondary_timer(hz: u32) -> Result<(), EarlyError> {
        apic::start_secondary_timer(hz)
    }

    fn timer_ticks(index: u32) -> Option<u64> {
        percpu::online_block(index).map(percpu::PerCpu::timer_ticks)
    }
}
