//! The GIC distributor's register block, common to GICv2 and GICv3 (the first 4 KiB; GICv3
//! adds `GICD_IROUTER<n>` at 0x6000, [`Routing`]). `GICD_ITARGETSR` and `GICD_SGIR` are
//! GICv2's (GICv3 with affinity routing ignores them), `GICD_IGRPMODR` GICv3's.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    pub Distributor {
        (0x000 => pub ctlr: ReadWrite<u32>),
        (0x004 => pub typer: ReadOnly<u32>),
        (0x008 => _reserved0),
        (0x080 => pub igroupr: [ReadWrite<u32>; 32]),
        (0x100 => pub isenabler: [ReadWrite<u32>; 32]),
        (0x180 => pub icenabler: [ReadWrite<u32>; 32]),
        (0x200 => pub ispendr: [ReadWrite<u32>; 32]),
        (0x280 => pub icpendr: [ReadWrite<u32>; 32]),
        (0x300 => _reserved2),
        (0x380 => pub icactiver: [ReadWrite<u32>; 32]),
        (0x400 => pub ipriorityr: [ReadWrite<u8>; 1024]),
        (0x800 => pub itargetsr: [ReadWrite<u8>; 1024]),
        (0xc00 => pub icfgr: [ReadWrite<u32>; 64]),
        (0xd00 => pub igrpmodr: [ReadWrite<u32>; 32]),
        (0xd80 => _reserved4),
        (0xf00 => pub sgir: WriteOnly<u32>),
        (0xf04 => _reserved5),
        (0x1000 => @END),
    }
}

register_structs! {
    /// GICv3's `GICD_IROUTER<n>`, 0x6000 into the distributor: one per INTID (32–1019).
    pub Routing {
        (0x0000 => pub irouter: [ReadWrite<u64>; 1020]),
        (0x1fe0 => @END),
    }
}

/// Offset of [`Routing`] from the distributor's base.
pub const ROUTING_OFFSET: usize = 0x6000;

/// GICD_CTLR.RWP (GICv3): a write to CTLR or ICENABLER is still taking effect. Reads as 0
/// on GICv2, where the bit is reserved.
const CTLR_RWP: u32 = 1 << 31;
/// GICD_TYPER.ITLinesNumber: the distributor supports 32 * (N + 1) interrupt IDs.
const TYPER_IT_LINES: u32 = 0x1f;
/// Polls before a register write that never completes is reported.
pub const POLL_LIMIT: u32 = 10_000_000;

impl Distributor {
    /// How many 32-bit words of enable/pending/active bits this distributor implements.
    pub fn words(&self) -> usize {
        ((self.typer.get() & TYPER_IT_LINES) as usize + 1).min(32)
    }

    /// Disable, unpend and deactivate every shared interrupt (IDs 32 and up), so only what
    /// the kernel enables later can fire.
    pub fn quiesce_shared(&self) {
        for word in 1..self.words() {
            self.icenabler[word].set(u32::MAX);
            self.icpendr[word].set(u32::MAX);
            self.icactiver[word].set(u32::MAX);
        }
    }

    /// Wait until a CTLR/ICENABLER write has taken effect.
    pub fn wait_for_writes(&self) -> bool {
        (0..POLL_LIMIT).any(|_| self.ctlr.get() & CTLR_RWP == 0)
    }

    /// Words of [`Distributor::words`] as interrupt IDs: lines `0..line_count()` exist.
    pub fn line_count(&self) -> u32 {
        (self.words() as u32 * 32).min(super::FIRST_SPECIAL)
    }

    /// Set the configuration bits of `intid` in GICD_ICFGR/GICR_ICFGR form: `true` = edge.
    pub fn configure_bits(register: &ReadWrite<u32>, intid: u32, edge: bool) {
        let shift = (intid % 16) * 2 + 1;
        let value = register.get() & !(1 << shift);
        register.set(value | (u32::from(edge) << shift));
    }
}
