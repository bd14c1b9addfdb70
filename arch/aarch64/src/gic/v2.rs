//! GICv2 (Arm IHI 0048B): distributor plus the memory-mapped CPU interface.
//!
//! Security: on a GIC without the Security Extensions (QEMU `virt` without EL3) every access
//! is Secure and interrupts reset to Group 0, which the CPU interface signals as IRQ while
//! GICC_CTLR.FIQEn is 0; Keel keeps its interrupts in Group 0 there. With the extensions, the
//! kernel runs Non-secure, its group bits are read-as-one/writes-ignored, and the Non-secure
//! views of GICD_CTLR/GICC_CTLR use bit 0 for Group 1; writing both bits covers both views.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

use super::distributor::Distributor;
use super::{Acknowledged, PRIORITY, PRIORITY_MASK};
use crate::mmio::Mmio;

register_structs! {
    pub CpuInterface {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0c => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    }
}

/// GICD_CTLR / GICC_CTLR: enable Group 0 and Group 1 (Secure or no-security view); bit 0 is
/// the Group 1 enable in the Non-secure view.
const ENABLE_BOTH_GROUPS: u32 = 0b11;
/// GICD_TYPER.SecurityExtn.
const TYPER_SECURITY_EXTENSIONS: u32 = 1 << 10;
/// GICC_IAR.InterruptID.
const IAR_ID: u32 = 0x3ff;

pub struct GicV2 {
    distributor: Mmio<Distributor>,
    cpu: Mmio<CpuInterface>,
    security_extensions: bool,
}

impl GicV2 {
    /// # Safety
    /// The addresses map a GICv2 distributor and CPU interface with device attributes for
    /// good, and nothing else programs them.
    pub unsafe fn new(distributor: usize, cpu_interface: usize) -> Self {
        // SAFETY: the caller guarantees both register blocks are mapped and ours.
        let (distributor, cpu): (Mmio<Distributor>, Mmio<CpuInterface>) =
            unsafe { (Mmio::new(distributor), Mmio::new(cpu_interface)) };
        let security_extensions = distributor.typer.get() & TYPER_SECURITY_EXTENSIONS != 0;
        Self {
            distributor,
            cpu,
            security_extensions,
        }
    }

    /// Quiesce everything the firmware left, then enable the distributor and the boot
    /// CPU's interface with every interrupt but the IPIs' SGIs still disabled.
    pub fn init(&self) -> u32 {
        let distributor = &self.distributor;
        distributor.ctlr.set(0);
        distributor.quiesce_shared();
        distributor.ctlr.set(ENABLE_BOTH_GROUPS);
        self.init_cpu()
    }

    /// Reset this CPU's banked SGIs and PPIs, enable the IPIs' SGIs (`0..sgis`) and this
    /// CPU's interface. Returns this CPU's interface bit (its `GICD_SGIR` target).
    pub fn init_cpu(&self) -> u32 {
        let distributor = &self.distributor;
        // Word 0 is this CPU's banked SGIs and PPIs.
        distributor.icenabler[0].set(u32::MAX);
        distributor.icpendr[0].set(u32::MAX);
        distributor.icactiver[0].set(u32::MAX);
        let sgis = super::IPI_SGIS;
        if !self.security_extensions {
            let groups = &distributor.igroupr[0];
            groups.set(groups.get() & !((1 << sgis) - 1));
        }
        for intid in 0..sgis {
            distributor.ipriorityr[intid as usize].set(PRIORITY);
        }
        distributor.isenabler[0].set((1 << sgis) - 1);
        self.cpu.pmr.set(PRIORITY_MASK);
        self.cpu.bpr.set(0);
        // EOImode 0: a write to GICC_EOIR both drops priority and deactivates.
        self.cpu.ctlr.set(ENABLE_BOTH_GROUPS);
        self.this_cpu_target()
    }

    /// This CPU's interface bit: GICD_ITARGETSR0–7 read back this CPU's own bit (IHI 0048B
    /// §4.3.12); on a uniprocessor GIC they read as zero (and SGIs need no target).
    fn this_cpu_target(&self) -> u32 {
        (0..32)
            .map(|index| self.distributor.itargetsr[index].get())
            .find(|&mask| mask != 0)
            .map_or(1, u32::from)
    }

    /// Send SGI `intid` to the CPU interfaces of `targets` (a bit per interface).
    pub fn send_sgi(&self, targets: u32, intid: u32) {
        // TargetListFilter 0 (the list), CPUTargetList, NSATT 0, SGIINTID.
        self.distributor
            .sgir
            .set(((targets & 0xff) << 16) | (intid & 0xf));
    }

    pub fn enable_ppi(&self, intid: u32, edge: bool) {
        let distributor = &self.distributor;
        if !self.security_extensions {
            let groups = &distributor.igroupr[0];
            groups.set(groups.get() & !(1 << intid));
        }
        distributor.ipriorityr[intid as usize].set(PRIORITY);
        Distributor::configure_bits(&distributor.icfgr[1], intid, edge);
        distributor.isenabler[0].set(1 << intid);
    }

    pub fn disable(&self, intid: u32) {
        self.distributor.icenabler[(intid / 32) as usize].set(1 << (intid % 32));
    }

    /// Configure shared interrupt `intid` (group, priority, this CPU as its target, trigger)
    /// and enable it.
    pub fn enable_spi(&self, intid: u32, edge: bool) {
        let distributor = &self.distributor;
        let word = (intid / 32) as usize;
        let bit = 1 << (intid % 32);
        if !self.security_extensions {
            let groups = &distributor.igroupr[word];
            groups.set(groups.get() & !bit);
        }
        distributor.ipriorityr[intid as usize].set(PRIORITY);
        // On a uniprocessor GIC every target field reads as zero and ignores writes.
        distributor.itargetsr[intid as usize].set(self.this_cpu_target() as u8);
        Distributor::configure_bits(&distributor.icfgr[(intid / 16) as usize], intid, edge);
        distributor.isenabler[word].set(bit);
    }

    /// Let an enabled interrupt be signalled again (after [`GicV2::disable`]).
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
        let raw = self.cpu.iar.get();
        let intid = raw & IAR_ID;
        (intid < super::FIRST_SPECIAL).then_some(Acknowledged { intid, raw })
    }

    pub fn end(&self, acknowledged: Acknowledged) {
        // The whole IAR value goes back (it names the source CPU of an SGI).
        self.cpu.eoir.set(acknowledged.raw);
    }
}
