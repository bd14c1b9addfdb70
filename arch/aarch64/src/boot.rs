//! Early bring-up on the boot CPU: exception level and stack, vectors, per-CPU block, the
//! device tree, device mappings, console and interrupt controller. Boot-only code.
//!
//! Order matters: the vectors go in before anything that can fault, so a fault is reported
//! (through semihosting until the PL011 is mapped) rather than landing in the loader's
//! vectors; the PL011 is mapped before the GIC so that GIC trouble is reported on serial.

use aarch64_cpu::registers::{CurrentEL, Readable, SPSel};
use arch_api::{EarlyError, EarlyInfo, FrameSource};

use crate::console::{self, report};
use crate::mmu::DeviceWindow;
use crate::pl011::Pl011;
use crate::{devicetree, gic, percpu, psci, timer, trap};

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
    trap::install_vectors();
    trap::unmask_serror();
    percpu::init_boot_cpu();

    let blob = info.device_tree.ok_or(EarlyError::NoDeviceTree)?;
    let devices = devicetree::parse(blob)?;
    psci::set_method(devices.psci);
    timer::describe(devices.timer);

    let mut window = DeviceWindow::new(info.hhdm_offset, devices.memory_top)?;
    let uart = window.map(devices.uart, frames)?;
    // SAFETY: `uart` was just mapped Device-nGnRE in the device window, which is never
    // unmapped, and the PL011 belongs to the kernel console until user space takes it.
    unsafe {
        Pl011::new(uart).init(devices.uart_clock);
        console::use_uart(uart);
    }
    let gic = gic::init(&devices.gic, &mut window, frames)?;
    report!(
        "aarch64: EL1 on SP_EL1; PL011 at {:#x}; GICv{}; timer CNTV (INTID {}) at {} Hz; \
         PSCI {}; MAIR index {} = Device-nGnRE",
        devices.uart.base,
        gic.version(),
        devices.timer.intid,
        timer::frequency(),
        psci::method_name(),
        window.attr_index(),
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
