//! The Arm Generic Interrupt Controller, v2 or v3 (whichever the device tree describes).
//!
//! The timer PPI and the shared peripheral interrupts the core enables (device lines,
//! [`crate::interrupts`]) are routed to the boot CPU; everything else the firmware may have
//! left enabled, pending or active is cleared at init. Every online CPU has its CPU
//! interface (GICv3: its redistributor too) enabled with the IPIs' SGIs, INTIDs
//! `0..IPI_SGIS` (`arch_api::Ipi` numbers them), which [`Gic::send_sgi`] raises on
//! another CPU (GICv2 `GICD_SGIR`, GICv3 `ICC_SGI1R_EL1`).

mod distributor;
mod v2;
mod v3;

use arch_api::{EarlyError, FrameSource};
use spin::Once;

use crate::devicetree::{GicDescription, MAX_REDISTRIBUTOR_REGIONS, Trigger};
use crate::mmu::DeviceWindow;

/// Priority of the interrupts Keel enables (lower is more urgent).
const PRIORITY: u8 = 0x80;
/// The CPU interface signals interrupts with a priority below this.
const PRIORITY_MASK: u32 = 0xf0;
/// Interrupt IDs 1020–1023 are special; 1023 means "spurious, nothing pending".
pub(crate) const FIRST_SPECIAL: u32 = 1020;
/// The SGIs the IPIs use: INTID = `arch_api::Ipi` number.
pub(crate) const IPI_SGIS: u32 = arch_api::Ipi::ALL.len() as u32;

/// An acknowledged interrupt, to be passed back to [`Gic::end`].
#[derive(Clone, Copy, Debug)]
pub struct Acknowledged {
    pub intid: u32,
    /// What the end-of-interrupt register wants back.
    raw: u32,
}

pub enum Gic {
    V2(v2::GicV2),
    V3(v3::GicV3),
}

static GIC: Once<Gic> = Once::new();

/// The interrupt controller, once [`init`] succeeded.
pub fn get() -> Option<&'static Gic> {
    GIC.get()
}

/// Map the controller described by the device tree, quiesce it and enable the boot CPU's
/// interface. Returns a one-line description for the boot log.
pub fn init(
    description: &GicDescription,
    window: &mut DeviceWindow,
    frames: &mut dyn FrameSource,
) -> Result<&'static Gic, EarlyError> {
    let gic = match *description {
        GicDescription::V2 {
            distributor,
            cpu_interface,
        } => {
            let distributor = window.map(distributor, frames)?;
            let cpu_interface = window.map(cpu_interface, frames)?;
            // SAFETY: both blocks were just mapped Device-nGnRE in the device window, for
            // good, and this is the only driver.
            let gic = unsafe { v2::GicV2::new(distributor, cpu_interface) };
            let target = gic.init();
            crate::percpu::this()
                .gic_target
                .store(target, core::sync::atomic::Ordering::Relaxed);
            Gic::V2(gic)
        }
        GicDescription::V3 {
            distributor,
            redistributors,
            stride,
        } => {
            let distributor = window.map(distributor, frames)?;
            let mut mapped = [v3::MappedRegion { base: 0, size: 0 }; MAX_REDISTRIBUTOR_REGIONS];
            let mut count = 0;
            for region in redistributors.iter().flatten() {
                mapped[count] = v3::MappedRegion {
                    base: window.map(*region, frames)?,
                    size: region.size as usize,
                };
                count += 1;
            }
            // SAFETY: as above, for the distributor and every redistributor region.
            let gic = unsafe { v3::GicV3::new(distributor, &mapped[..count], stride)? };
            gic.init()?;
            Gic::V3(gic)
        }
    };
    Ok(GIC.call_once(|| gic))
}

impl Gic {
    /// Enable a secondary CPU's interface (and GICv3 redistributor) with the IPIs' SGIs.
    pub fn init_cpu(&self) -> Result<(), EarlyError> {
        match self {
            Gic::V2(gic) => {
                let target = gic.init_cpu();
                crate::percpu::this()
                    .gic_target
                    .store(target, core::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Gic::V3(gic) => gic.init_cpu(),
        }
    }

    /// Raise SGI `intid` on the CPU whose block is `target` (after the caller's memory
    /// writes are visible to it).
    pub fn send_sgi(&self, target: &crate::percpu::PerCpu, intid: u32) {
        use core::sync::atomic::Ordering;
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
        match self {
            Gic::V2(gic) => gic.send_sgi(target.gic_target.load(Ordering::Relaxed), intid),
            Gic::V3(gic) => gic.send_sgi(target.hardware_id.load(Ordering::Relaxed), intid),
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            Gic::V2(_) => 2,
            Gic::V3(_) => 3,
        }
    }

    /// Enable a private peripheral interrupt (16–31) of this CPU.
    pub fn enable_ppi(&self, intid: u32, trigger: Trigger) {
        let edge = trigger == Trigger::Edge;
        match self {
            Gic::V2(gic) => gic.enable_ppi(intid, edge),
            Gic::V3(gic) => gic.enable_ppi(intid, edge),
        }
    }

    /// Configure shared peripheral interrupt `intid` (32 and up) for this CPU and enable it.
    pub fn enable_spi(&self, intid: u32, trigger: Trigger) {
        let edge = trigger == Trigger::Edge;
        match self {
            Gic::V2(gic) => gic.enable_spi(intid, edge),
            Gic::V3(gic) => gic.enable_spi(intid, edge),
        }
    }

    /// Enable an interrupt configured earlier and since [`Gic::disable`]d (unmask).
    pub fn reenable(&self, intid: u32) {
        match self {
            Gic::V2(gic) => gic.reenable(intid),
            Gic::V3(gic) => gic.reenable(intid),
        }
    }

    /// Set shared interrupt `intid` pending at the distributor (self-tests).
    #[cfg(feature = "testing")]
    pub fn set_pending(&self, intid: u32) {
        match self {
            Gic::V2(gic) => gic.set_pending(intid),
            Gic::V3(gic) => gic.set_pending(intid),
        }
    }

    /// Interrupt IDs the distributor implements: `0..line_count()`.
    pub fn line_count(&self) -> u32 {
        match self {
            Gic::V2(gic) => gic.line_count(),
            Gic::V3(gic) => gic.line_count(),
        }
    }

    /// Stop an interrupt from being signalled (an unexpected one, so it cannot storm).
    pub fn disable(&self, intid: u32) {
        match self {
            Gic::V2(gic) => gic.disable(intid),
            Gic::V3(gic) => gic.disable(intid),
        }
    }

    /// Acknowledge the highest-priority pending interrupt; `None` when spurious.
    pub fn acknowledge(&self) -> Option<Acknowledged> {
        match self {
            Gic::V2(gic) => gic.acknowledge(),
            Gic::V3(gic) => gic.acknowledge(),
        }
    }

    /// Signal the end of an acknowledged interrupt.
    pub fn end(&self, acknowledged: Acknowledged) {
        match self {
            Gic::V2(gic) => gic.end(acknowledged),
            Gic::V3(gic) => gic.end(acknowledged),
        }
    }
}
