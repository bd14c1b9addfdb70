//! Early bring-up on the boot CPU: exception level and stack, vectors, per-CPU block, the
//! device tree, device mappings, console and interrupt controller. Boot-only code.
//!
//! Order matters: the vectors go in before anything that can fault, so a fault is reported
//! (through semihosting until the PL011 is mapped) rather than landing in the loader's
//! vectors; the PL011 is mapped before the GIC so that GIC trouble is reported on serial.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aarch64_cpu::registers::{CurrentEL, Readable, SPSel};
use arch_api::{EarlyError, EarlyInfo, FrameSource, KERNEL_STACK_REGION};

use crate::console::{self, report};
use crate::mmu::DeviceWindow;
use crate::pl011::Pl011;
use crate::{devicetree, gic, interrupts, paging, percpu, psci, sysreg, thread, timer, trap};

pub fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
    match CurrentEL.read(CurrentEL::EL) {
        1 => {}
        2 => {
            return Err(EarlyError::Unsupported(
                "the kernel was entered at EL2; the Limine protocol enters it at EL1",
            ));
        }
        _ => return Err(EarlyError::Unsupported("the kernel is not running at EL1")),
    }
    use_sp_el1();
    // The EL1 vector entry reads the per-CPU block before anything else.
    percpu::init_boot_cpu(crate::smp::hardware_id());
    trap::install_vectors();
    trap::unmask_serror();
    thread::init_fpu();

    let blob = info.device_tree.ok_or(EarlyError::NoDeviceTree)?;
    let devices = devicetree::parse(blob)?;
    psci::set_method(devices.psci);
    timer::describe(devices.timer);
    interrupts::describe_console(devices.uart_interrupt);

    let mut window = DeviceWindow::new(info.hhdm_offset, devices.memory_top)?;
    let uart = window.map(devices.uart, frames)?;
    CONSOLE_UART.store(devices.uart.base, Ordering::Relaxed);
    CONSOLE_UART_LENGTH.store(devices.uart.size, Ordering::Relaxed);
    CONSOLE_UART_INTID.store(devices.uart_intid.unwrap_or(NO_INTID), Ordering::Relaxed);
    // SAFETY: `uart` was just mapped Device-nGnRE in the device window, which is never
    // unmapped, and the PL011 belongs to the kernel console until user space takes it.
    unsafe {
        Pl011::new(uart).init(devices.uart_clock);
        console::use_uart(uart);
    }
    check_clear_of_hhdm(info.hhdm_offset, devices.memory_top)?;
    paging::init(info.hhdm_offset, window.attr_index(), frames).map_err(EarlyError::Unsupported)?;
    let pan = enable_pan();
    init_cpu_controls();
    let gic = gic::init(&devices.gic, &mut window, frames)?;
    percpu::mark_online();
    report!(
        "aarch64: EL1 on SP_EL1; PL011 at {:#x} (INTID {}); GICv{} ({} INTIDs); timer CNTV \
         (INTID {}) at {} Hz; PSCI {}; MAIR index {} = Device-nGnRE; PAN {}",
        devices.uart.base,
        interrupts::console_line().map_or(-1, i64::from),
        gic.version(),
        gic.line_count(),
        devices.timer.intid,
        timer::frequency(),
        psci::method_name(),
        window.attr_index(),
        if pan { "on" } else { "not implemented" },
    );
    Ok(())
}

/// Limine enters the kernel in EL1t (on SP_EL0). Move the live stack to SP_EL1 and run with
/// SPSel = 1 from here on, so exceptions land on the stack the kernel is using and SP_EL0 is
/// left for user mode (DESIGN.md §3).
fn use_sp_el1() {
    if SPSel.get() & 1 == 1 {
        return;
    }
    // SAFETY: SP keeps its value across the switch (copied into SP_EL1), so the compiler's
    // view of the stack is unchanged; every exception is masked (Limine enters with DAIF
    // set) so none can observe the half-switched state. SP_EL0 is then cleared: nothing
    // may use the old alias.
    unsafe {
        core::arch::asm!(
            "mov {stack}, sp",
            "msr spsel, #1",
            "mov sp, {stack}",
            "msr sp_el0, xzr",
            stack = out(reg) _,
        );
    }
}

/// The kernel-stack region (DESIGN.md §5) must not overlap the HHDM, which real Limine
/// places at a random base.
fn check_clear_of_hhdm(hhdm_offset: u64, memory_top: u64) -> Result<(), EarlyError> {
    let hhdm_end = hhdm_offset
        .saturating_add(4 << 30)
        .saturating_add(memory_top);
    if hhdm_offset < KERNEL_STACK_REGION.end && KERNEL_STACK_REGION.start < hhdm_end {
        return Err(EarlyError::Unsupported(
            "the HHDM overlaps the kernel-stack region 0xffff_fd00_0000_0000 (1 GiB)",
        ));
    }
    Ok(())
}

/// The system-control settings every CPU gets: PAN on where the boot CPU turned it on
/// ([`enable_pan`]), and SCTLR_EL1.UMA = 0: `msr daifset`/`daifclr` at EL0 trap (EL0 never
/// masks interrupts).
pub fn init_cpu_controls() {
    if PAN.load(Ordering::Relaxed) {
        enable_pan();
    }
    sysreg::write!("sctlr_el1", sysreg::read!("sctlr_el1") & !(1 << 9));
}

/// Turn on Privileged Access Never when the CPU has it (ID_AA64MMFR1_EL1.PAN), and keep it
/// on across exceptions (SCTLR_EL1.SPAN = 0: taking an exception to EL1 sets PSTATE.PAN).
/// The kernel then faults on any access to EL0-accessible memory except through the
/// LDTR/STTR of the user copies.
fn enable_pan() -> bool {
    if (sysreg::read!("id_aa64mmfr1_el1") >> 20) & 0xf == 0 {
        return false;
    }
    PAN.store(true, Ordering::Relaxed);
    const SCTLR_SPAN: u64 = 1 << 23;
    // Clearing SPAN only changes what exception entry does to PSTATE.PAN.
    sysreg::write!("sctlr_el1", sysreg::read!("sctlr_el1") & !SCTLR_SPAN);
    // SAFETY: `msr pan, #1` (encoded, as the assembler wants FEAT_PAN named) only forbids
    // EL1 accesses to EL0-accessible memory; the kernel makes those only in the copies.
    unsafe { core::arch::asm!(".inst 0xd500419f | (1 << 8)", options(nomem, nostack)) };
    true
}

/// Whether PAN was turned on at boot.
static PAN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "testing")]
pub fn pan_enabled() -> bool {
    PAN.load(core::sync::atomic::Ordering::Relaxed)
}

/// The console PL011's physical base and length (0: unknown) and INTID ([`NO_INTID`]:
/// none), for the core's device capabilities.
pub static CONSOLE_UART: AtomicU64 = AtomicU64::new(0);
pub static CONSOLE_UART_LENGTH: AtomicU64 = AtomicU64::new(0);
pub static CONSOLE_UART_INTID: AtomicU32 = AtomicU32::new(NO_INTID);
pub const NO_INTID: u32 = u32::MAX;
