//! The NMI storm test hook: asynchronous NMIs at a high rate, to hit every instruction of
//! the entry and exit paths — in particular the windows between `SYSCALL` and `SWAPGS` and
//! between `SWAPGS` and `SYSRET`, where GS holds the user's base in ring 0. The NMI handler
//! (`trap::dispatch`) checks on every hit that it runs with this CPU's per-CPU block in GS
//! base and counts the hits ([`counts`]).
//!
//! Source: PIT channel 0 as a rate generator (≈20 kHz), its IRQ 0 routed through the I/O
//! APIC (ISA IRQ 0 = GSI 2 on PC-compatible machines) with delivery mode NMI, edge
//! triggered — no EOI, no acknowledgement, so NMIs keep coming whatever the CPU runs. The
//! 8259 pair stays masked.
//!
//! The I/O APIC and the PIT's line (ISA IRQ 0, GSI 2 on QEMU through the MADT's override)
//! come from [`crate::ioapic`]; while the storm runs it owns that line's redirection entry
//! behind the interrupt API's back. Test use only.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::ioapic;

/// The PIT's ISA IRQ.
const PIT_IRQ: usize = 0;
/// Redirection entry bits: delivery mode NMI (0b100 << 8), masked (bit 16); physical
/// destination, edge triggered, active high are all 0.
const DELIVERY_NMI: u32 = 0b100 << 8;
const MASKED: u32 = 1 << 16;

/// PIT channel 0: divisor for ≈19.9 kHz (1.193182 MHz / 60).
const PIT_DIVISOR: u16 = 60;

/// Start (`true`) or stop the storm. Returns `false` when there is no I/O APIC.
pub fn storm(run: bool) -> bool {
    let Some(gsi) = ioapic::isa_gsi(PIT_IRQ).filter(|&gsi| gsi < ioapic::line_count()) else {
        return false;
    };
    const PIT_CONTROL: u16 = 0x43;
    const PIT_CHANNEL0: u16 = 0x40;
    /// Channel 0, low byte then high byte, mode 2 (rate generator), binary.
    const CHANNEL0_RATE: u8 = 0b0011_0100;
    /// Channel 0, mode 0 (interrupt on terminal count) without a count: output stays low.
    const CHANNEL0_STOP: u8 = 0b0011_0000;
    let apic_id = u32::from(crate::apic::id());
    if run {
        ioapic::write_raw_entry(gsi, DELIVERY_NMI, apic_id << 24);
        // SAFETY: ports 0x40/0x43 are the PIT's channel 0 on every PC-compatible machine;
        // channel 0 drives nothing but IRQ 0, which the 8259 pair has masked.
        unsafe {
            Port::<u8>::new(PIT_CONTROL).write(CHANNEL0_RATE);
            Port::<u8>::new(PIT_CHANNEL0).write(PIT_DIVISOR as u8);
            Port::<u8>::new(PIT_CHANNEL0).write((PIT_DIVISOR >> 8) as u8);
        }
    } else {
        ioapic::write_raw_entry(gsi, DELIVERY_NMI | MASKED, 0);
        // SAFETY: as above.
        unsafe { Port::<u8>::new(PIT_CONTROL).write(CHANNEL0_STOP) };
    }
    true
}

static WINDOW_HITS: AtomicU64 = AtomicU64::new(0);

/// Count an NMI that arrived on a ring-0 instruction running with the user's GS base
/// (`trap::syscall::is_user_gs_window`).
pub fn count_window_hit() {
    WINDOW_HITS.fetch_add(1, Ordering::Relaxed);
}

/// NMIs that arrived inside the system-call path's user-GS windows (evidence that the
/// storm exercised the paranoid entry's GS decision there).
pub fn window_hits() -> u64 {
    WINDOW_HITS.load(Ordering::Relaxed)
}

/// NMIs taken on this CPU, and how many of them found a wrong GS base.
pub fn counts() -> (u64, u64) {
    crate::percpu::nmi_counts()
}
