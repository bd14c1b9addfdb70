//! GICv3 (Arm IHI 0069): distributor with affinity routing, this CPU's redistributor, and
//! the CPU interface through the `ICC_*_EL1` system registers.
//!
//! Groups: with system registers, Group 0 is signalled as FIQ and Group 1 as IRQ, so every
//! interrupt Keel uses is made Group 1 (GICR_IGROUPR0 = 1, GICR_IGRPMODR0 = 0: Non-secure
//! Group 1 with two security states, Group 1 with one). GICD_CTLR gets bits 0, 1 and 4, which
//! are EnableGrp0/EnableGrp1/ARE with one security state and EnableGrp1/EnableGrp1A/ARE_NS in
//! the Non-secure view of two.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::MPIDR_EL1;
use arch_api::EarlyError;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

use super::distributor::{Distributor, POLL_LIMIT, ROUTING_OFFSET, Routing};
use super::{Acknowledged, PRIORITY, PRIORITY_MASK};
use crate::devicetree::MAX_REDISTRIBUTOR_REGIONS;
use crate::mmio::Mmio;

register_structs! {
    /// A redistributor's RD_base frame (the control frame).
    pub RedistributorControl {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x08 => typer: ReadOnly<u64>),
        (0x10 => _reserved1),
        (0x14 => waker: ReadWrite<u32>),
        (0x18 => @END),
    }
}

register_structs! {
    /// A redistributor's SGI_base frame: this CPU's SGIs and PPIs.
    pub RedistributorSgi {
        (0x000 => _reserved0),
        (0x080 => igroupr0: ReadWrite<u32>),
        (0x084 => _reserved1),
        (0x100 => isenabler0: ReadWrite<u32>),
        (0x104 => _reserved2),
        (0x180 => icenabler0: ReadWrite<u32>),
        (0x184 => _reserved3),
        (0x280 => icpendr0: ReadWrite<u32>),
        (0x284 => _reserved4),
        (0x380 => icactiver0: ReadWrite<u32>),
        (0x384 => _reserved5),
        (0x400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x420 => _reserved6),
        (0xc00 => icfgr: [ReadWrite<u32>; 2]),
        (0xc08 => _reserved7),
        (0xd00 => igrpmodr0: ReadWrite<u32>),
        (0xd04 => @END),
    }
}

/// Each redistributor has an RD_base frame and an SGI_base frame of 64 KiB each; GICv4 adds
/// two more (VLPI) frames.
const FRAME: usize = 0x1_0000;
const STRIDE_V3: usize = 2 * FRAME;
const STRIDE_V4: usize = 4 * FRAME;
/// GICR_TYPER bits: VLPIS (GICv4 frames present), Last (final redistributor of a region).
const TYPER_VLPIS: u64 = 1 << 1;
const TYPER_LAST: u64 = 1 << 4;
/// GICR_WAKER bits.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// GICR_CTLR.RWP.
const GICR_CTLR_RWP: u32 = 1 << 3;
/// GICD_CTLR bits written (see the module docs).
const GICD_ARE: u32 = 1 << 4;
const GICD_ENABLE_GROUPS: u32 = 0b11;
/// ICC_SRE_EL1: SRE (system-register interface), DFB and DIB (FIQ/IRQ bypass disable).
const ICC_SRE_ENABLE: u64 = 0b111;
/// ICC_CTLR_EL1.EOImode: 0 = an EOI both drops priority and deactivates.
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
/// INTID field of ICC_IAR1_EL1.
const IAR_ID: u64 = 0xff_ffff;

pub struct GicV3 {
    distributor: Mmio<Distributor>,
    routing: Mmio<Routing>,
    /// The boot CPU's affinity in GICD_IROUTER form (Aff3 at bits 39:32, Aff2.Aff1.Aff0
    /// below; Interrupt_Routing_Mode 0: this CPU only).
    affinity: u64,
    /// The boot CPU's redistributor (its PPIs: the timer's).
    control: Mmio<RedistributorControl>,
    sgi: Mmio<RedistributorSgi>,
    /// Every redistributor region, for the secondaries to find their own.
    regions: [MappedRegion; MAX_REDISTRIBUTOR_REGIONS],
    region_count: usize,
    stride: Option<u64>,
}

/// One CPU's redistributor frames.
struct Redistributor {
    control: Mmio<RedistributorControl>,
    sgi: Mmio<RedistributorSgi>,
}

/// A mapped redistributor region: virtual address and size.
#[derive(Clone, Copy)]
pub struct MappedRegion {
    pub base: usize,
    pub size: usize,
}

/// The redistributor of the CPU whose MPIDR is `mpidr`, in `regions`.
///
/// # Safety
/// Every region maps GICv3 redistributor frames with device attributes for good.
unsafe fn find_redistributor(
    regions: &[MappedRegion],
    stride: Option<u64>,
    mpidr: u64,
) -> Option<Redistributor> {
    // GICR_TYPER.Affinity_Value is Aff3.Aff2.Aff1.Aff0, MPIDR has Aff3 at bits [39:32].
    let affinity = ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0x00ff_ffff);
    for region in regions {
        let mut offset = 0;
        while offset + STRIDE_V3 <= region.size {
            // SAFETY: the frame lies inside a mapped redistributor region (loop bound; the
            // caller's duty).
            let control: Mmio<RedistributorControl> = unsafe { Mmio::new(region.base + offset) };
            let typer = control.typer.get();
            if typer >> 32 == affinity {
                // SAFETY: the SGI frame follows the control frame inside the region.
                let sgi = unsafe { Mmio::new(region.base + offset + FRAME) };
                return Some(Redistributor { control, sgi });
            }
            if typer & TYPER_LAST != 0 {
                break;
            }
            offset += match stride {
                Some(stride) if stride != 0 => stride as usize,
                _ if typer & TYPER_VLPIS != 0 => STRIDE_V4,
                _ => STRIDE_V3,
            };
        }
    }
    None
}

impl GicV3 {
    /// Find the boot CPU's redistributor (by MPIDR affinity) in the mapped regions.
    ///
    /// # Safety
    /// `distributor` and every region map GICv3 register blocks with device attributes for
    /// good, and nothing else programs them.
    pub unsafe fn new(
        distributor: usize,
        regions: &[MappedRegion],
        stride: Option<u64>,
    ) -> Result<Self, EarlyError> {
        let mpidr = MPIDR_EL1.get();
        // SAFETY: the caller guarantees the regions' mappings.
        let found = unsafe { find_redistributor(regions, stride, mpidr) };
        let Redistributor { control, sgi } = found.ok_or(EarlyError::MissingDevice(
            "GICv3 redistributor for the boot CPU's MPIDR",
        ))?;
        // SAFETY: the caller guarantees the distributor mapping.
        let distributor_registers = unsafe { Mmio::new(distributor) };
        // SAFETY: GICD_IROUTER lies 0x6000 into the distributor's 64 KiB frame, which the
        // caller mapped whole.
        let routing = unsafe { Mmio::new(distributor + ROUTING_OFFSET) };
        let mut kept = [MappedRegion { base: 0, size: 0 }; MAX_REDISTRIBUTOR_REGIONS];
        let region_count = regions.len().min(MAX_REDISTRIBUTOR_REGIONS);
        kept[..region_count].copy_from_slice(&regions[..region_count]);
        Ok(Self {
            distributor: distributor_registers,
            routing,
            affinity: mpidr & 0xff_00ff_ffff,
            control,
            sgi,
            regions: kept,
            region_count,
            stride,
        })
    }

    /// Quiesce the distributor and this CPU's redistributor, wake the redistributor, and turn
    /// on the system-register CPU interface, with every interrupt still disabled.
    pub fn init(&self) -> Result<(), EarlyError> {
        let distributor = &self.distributor;
        let timeout = EarlyError::MissingDevice("GICv3: register write never completed (RWP)");
        distributor.ctlr.set(0);
        if !distributor.wait_for_writes() {
            return Err(timeout);
        }
        distributor.quiesce_shared();
        // ARE may change only while the groups are disabled (IHI 0069, GICD_CTLR).
        distributor.ctlr.set(GICD_ARE);
        if !distributor.wait_for_writes() {
            return Err(timeout);
        }
        distributor.ctlr.set(GICD_ARE | GICD_ENABLE_GROUPS);
        if !distributor.wait_for_writes() {
            return Err(timeout);
        }
        Self::init_cpu_interface(&self.control, &self.sgi)
    }

    /// Set up a secondary CPU: find its redistributor, then as for the boot CPU.
    pub fn init_cpu(&self) -> Result<(), EarlyError> {
        // SAFETY: the regions are the ones `new` was given, mapped for good (its contract).
        let found = unsafe {
            find_redistributor(
                &self.regions[..self.region_count],
                self.stride,
                MPIDR_EL1.get(),
            )
        };
        let Redistributor { control, sgi } = found.ok_or(EarlyError::MissingDevice(
            "GICv3 redistributor for this CPU's MPIDR",
        ))?;
        Self::init_cpu_interface(&control, &sgi)
    }

    /// Wake this CPU's redistributor, quiesce its SGIs and PPIs, enable the IPIs' SGIs,
    /// and turn on its system-register CPU interface.
    fn init_cpu_interface(
        control: &Mmio<RedistributorControl>,
        sgi: &Mmio<RedistributorSgi>,
    ) -> Result<(), EarlyError> {
        let timeout = EarlyError::MissingDevice("GICv3: register write never completed (RWP)");
        let waker = &control.waker;
        waker.set(waker.get() & !WAKER_PROCESSOR_SLEEP);
        if !(0..POLL_LIMIT).any(|_| waker.get() & WAKER_CHILDREN_ASLEEP == 0) {
            return Err(EarlyError::MissingDevice(
                "GICv3 redistributor does not wake up",
            ));
        }
        sgi.icenabler0.set(u32::MAX);
        if !(0..POLL_LIMIT).any(|_| control.ctlr.get() & GICR_CTLR_RWP == 0) {
            return Err(timeout);
        }
        sgi.icpendr0.set(u32::MAX);
        sgi.icactiver0.set(u32::MAX);
        sgi.igroupr0.set(u32::MAX);
        sgi.igrpmodr0.set(0);
        let sgis = super::IPI_SGIS;
        for intid in 0..sgis {
            sgi.ipriorityr[intid as usize].set(PRIORITY);
        }
        sgi.isenabler0.set((1 << sgis) - 1);

        // SAFETY: enabling the system-register interface only changes how this CPU talks to
        // the GIC; the read-back below checks a higher EL allowed it.
        let sre = unsafe {
            let sre: u64;
            core::arch::asm!("mrs {}, icc_sre_el1", out(reg) sre, options(nomem, nostack));
            core::arch::asm!("msr icc_sre_el1, {}", "isb", in(reg) sre | ICC_SRE_ENABLE, options(nomem, nostack));
            let check: u64;
            core::arch::asm!("mrs {}, icc_sre_el1", out(reg) check, options(nomem, nostack));
            check
        };
        if sre & 1 == 0 {
            return Err(EarlyError::Unsupported(
                "GICv3 system registers are disabled by a higher exception level (ICC_SRE_EL2)",
            ));
        }
        // SAFETY: programming this CPU's interface while PSTATE.I masks every interrupt:
        // priority mask, no binary-point grouping, EOImode 0, then Group 1 on.
        unsafe {
            let ctlr: u64;
            core::arch::asm!("mrs {}, icc_ctlr_el1", out(reg) ctlr, options(nomem, nostack));
            core::arch::asm!(
                "msr icc_pmr_el1, {pmr}",
                "msr icc_bpr1_el1, xzr",
                "msr icc_ctlr_el1, {ctlr}",
                "msr icc_igrpen1_el1, {one}",
                "isb",
                pmr = in(reg) u64::from(PRIORITY_MASK),
                ctlr = in(reg) ctlr & !ICC_CTLR_EOIMODE,
                one = in(reg) 1u64,
                options(nomem, nostack),
            );
        }
        Ok(())
    }

    /// Send SGI `intid` (Group 1) to the CPU whose MPIDR affinity is `mpidr`, through
    /// ICC_SGI1R_EL1: Aff3.Aff2.Aff1 name its cluster, the range selector and target list
    /// its Aff0.
    pub fn send_sgi(&self, mpidr: u64, intid: u32) {
        let aff0 = mpidr & 0xff;
        let aff1 = (mpidr >> 8) & 0xff;
        let aff2 = (mpidr >> 16) & 0xff;
        let aff3 = (mpidr >> 32) & 0xff;
        let value = (aff3 << 48)
            | ((aff0 / 16) << 44)
            | (aff2 << 32)
            | (u64::from(intid & 0xf) << 24)
            | (aff1 << 16)
            | (1 << (aff0 % 16));
        // SAFETY: generating an SGI only makes it pending at the target's redistributor;
        // the barriers order it after the caller's memory writes and before what follows.
        unsafe {
            core::arch::asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value,
                options(nostack));
        }
    }

    /// Enable PPI `intid` in this CPU's redistributor: the boot CPU's, or a secondary's
    /// found by its MPIDR (as `init_cpu` found it).
    pub fn enable_ppi(&self, intid: u32, edge: bool) {
        let mpidr = MPIDR_EL1.get();
        let configure = |sgi: &Mmio<RedistributorSgi>| {
            sgi.ipriorityr[intid as usize].set(PRIORITY);
            Distributor::configure_bits(&sgi.icfgr[1], intid, edge);
            sgi.isenabler0.set(1 << intid);
        };
        if mpidr & 0xff_00ff_ffff == self.affinity {
            configure(&self.sgi);
            return;
        }
        // SAFETY: the regions are the ones `new` was given, mapped for good (its contract).
        let found =
            unsafe { find_redistributor(&self.regions[..self.region_count], self.stride, mpidr) };
        if let Some(redistributor) = found {
            configure(&redistributor.sgi);
        }
    }

    pub fn disable(&self, intid: u32) {
        if intid < 32 {
            self.sgi.icenabler0.set(1 << intid);
        } else {
            self.distributor.icenabler[(intid / 32) as usize].set(1 << (intid % 32));
            // The disable takes effect when RWP clears (bounded: a GIC that never clears
            // it is reported at init, not here).
            let _ = self.distributor.wait_for_writes();
        }
    }

    /// Configure shared interrupt `intid` (Group 1, priority, routed to this CPU, trigger)
    /// and enable it.
    pub fn enable_spi(&self, intid: u32, edge: bool) {
        let distributor = &self.distributor;
        let word = (intid / 32) as usize;
        let bit = 1 << (intid % 32);
        let groups = &distributor.igroupr[word];
        groups.set(groups.get() | bit);
        let modifiers = &distributor.igrpmodr[word];
        modifiers.set(modifiers.get() & !bit);
        distributor.ipriorityr[intid as usize].set(PRIORITY);
        self.routing.irouter[intid as usize].set(self.affinity);
        Distributor::configure_bits(&distributor.icfgr[(intid / 16) as usize], intid, edge);
        distributor.isenabler[word].set(bit);
    }

    /// Let an enabled interrupt be signalled again (after [`GicV3::disable`]).
    pub fn reenable(&self, intid: u32) {
        self.distributor.isenabler[(intid / 32) as usize].set(1 << (intid % 32));
    }

    /// Make `intid` pending, as if its device had signalled it.
    #[cfg(feature = "testing")]
    pub fn set_pending(&self, intid: u32) {
        self.distributor.ispendr[(intid / 32) as usize].set(1 << (intid % 32));
    }

    pub fn line_count(&self) -> u32 {
        self.distributor.line_count()
    }

    pub fn acknowledge(&self) -> Option<Acknowledged> {
        let raw: u64;
        // SAFETY: acknowledging marks the highest-priority pending interrupt active; the
        // caller ends it with `end`.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) raw, options(nostack)) };
        let intid = (raw & IAR_ID) as u32;
        (intid < super::FIRST_SPECIAL).then_some(Acknowledged { intid, raw: intid })
    }

    pub fn end(&self, acknowledged: Acknowledged) {
        // SAFETY: ends the interrupt `acknowledge` returned (priority drop + deactivate).
        unsafe {
            core::arch::asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(acknowledged.raw), options(nostack));
        }
        barrier::isb(barrier::SY);
    }
}
