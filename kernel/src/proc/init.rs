//! The start of `init`, the root task of a boot without a test scenario, with its boot
//! capabilities (`abi::init_slots`).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{Rights, init_slots};
use arch_api::Devices;

use crate::Cpu;
use crate::obj::{IrqLine, MemoryRegion, MmioRange, Object, PortRange, Process};

/// Frames the allocator had free when `init` started (what `mem` calls the total).
static TOTAL_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Frames the allocator had free when `init` started.
pub fn total_frames() -> u64 {
    TOTAL_FRAMES.load(Ordering::Relaxed)
}

/// Start `init` from the boot module `init` with the capabilities of `abi::init_slots`
/// and `argument` (0; `abi::INIT_CONTAINMENT` under the containment scenario). Returns the
/// process; `Err` says what was missing.
pub fn start_with(argument: u64) -> Result<Arc<Process>, &'static str> {
    // The loader's memory first (another CPU's first thread may be adding it right now),
    // or `mem` would find more frames free than this total.
    crate::mm::settle_boot_memory();
    TOTAL_FRAMES.store(crate::mm::free_frames(), Ordering::Relaxed);
    // The root budget: every frame free now, less what the kernel keeps.
    let (process, thread) = super::spawn_module_unstarted("init", argument, super::root_budget())
        .map_err(|_| "cannot load module init")?;
    // The new thread has not started (on more than one CPU it could run at once), so these
    // fill slots 0.. of its empty table, in `init_slots` order.
    let installed = install_init_caps(&process);
    crate::task::sched::start_thread(thread);
    if let Err(problem) = installed {
        super::kill(&process);
        return Err(problem);
    }
    Ok(process)
}

fn install_init_caps(init: &Process) -> Result<(), &'static str> {
    let caps = &init.caps;
    let full = "init's capability table is full";
    let slot = caps
        .insert(Object::System, Rights::READ | Rights::GRANT)
        .map_err(|_| full)?;
    debug_assert_eq!(slot.slot(), init_slots::SYSTEM);
    caps.insert(Object::Power, Rights::CONTROL | Rights::GRANT)
        .map_err(|_| full)?;
    let device = Cpu::console_device().ok_or("no console device")?;
    let line = device
        .irq
        .and_then(IrqLine::new)
        .ok_or("the console has no interrupt line")?;
    caps.insert(Object::Irq(line), Rights::CONTROL | Rights::GRANT)
        .map_err(|_| full)?;
    match (device.ports, device.mmio) {
        (Some((first, count)), _) => caps.insert(
            Object::IoPorts(PortRange { first, count }),
            Rights::READ | Rights::WRITE | Rights::GRANT,
        ),
        (None, Some((base, length))) => caps.insert(
            Object::Mmio(MmioRange { base, length }),
            Rights::READ | Rights::WRITE | Rights::MAP | Rights::GRANT,
        ),
        (None, None) => return Err("the console has no registers"),
    }
    .map_err(|_| full)?;
    for (_, _, name) in crate::boot::modules().take(init_slots::MODULES_MAX as usize) {
        let region = MemoryRegion::boot_module(name).ok_or("a boot module vanished")?;
        caps.insert(
            Object::Memory(region),
            Rights::READ | Rights::MAP | Rights::GRANT,
        )
        .map_err(|_| full)?;
    }
    Ok(())
}

/// The body of the boot thread when `init` runs: start it with `argument` (0, or
/// `abi::INIT_CONTAINMENT` under the containment scenario) and watch it; if the root task
/// ends, the system cannot go on, so say so and power off.
pub fn run(argument: usize) {
    let init = match start_with(argument as u64) {
        Ok(init) => init,
        Err(problem) => {
            crate::println!("keel: cannot start init: {problem}");
            crate::trace::power_off(arch_api::ExitCode::Fatal)
        }
    };
    crate::println!("keel: started init (pid {})", init.id);
    loop {
        match init.ending() {
            crate::obj::process::Ending::Running => {
                crate::task::sched::sleep(u64::from(crate::time::TIMER_HZ))
            }
            ending => {
                crate::println!("keel: init ended ({ending:?}); powering off");
                crate::trace::power_off(arch_api::ExitCode::Fatal)
            }
        }
    }
}
