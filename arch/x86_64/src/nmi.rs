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
//! Weak spots: the I/O APIC is assumed at its standard address 0xFEC0_0000 with ISA IRQ 0
//! on pin 2 (QEMU's `pc` and `q35` machines; real hardware needs the ACPI MADT), and its
//! identity is checked only by its version register. Test use only.

use core::sync::atomic::{AtomicU64, Ordering};

use arch_api::{EarlyError, FrameSource};
use x86_64::instructions::port::Port;

use crate::paging;

/// The I/O APIC's standard physical address.
const IOAPIC_PHYSICAL: u64 = 0xFEC0_0000;
/// IOREGSEL and IOWIN offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// Indirect registers: version; redirection entry n at 0x10 + 2n (low) and 0x11 + 2n.
const IOAPIC_VERSION: u32 = 0x01;
const fn redirection_low(pin: u32) -> u32 {
    0x10 + 2 * pin
}
/// The pin ISA IRQ 0 (the PIT) arrives on.
const PIT_PIN: u32 = 2;
/// Redirection entry bits: delivery mode NMI (0b100 << 8), masked (bit 16); physical
/// destination, edge triggered, active high are all 0.
const DELIVERY_NMI: u32 = 0b100 << 8;
const MASKED: u32 = 1 << 16;

/// PIT channel 0: divisor for ≈19.9 kHz (1.193182 MHz / 60).
const PIT_DIVISOR: u16 = 60;

static IOAPIC: AtomicU64 = AtomicU64::new(0);

/// Map the I/O APIC (early init; frames for the device window's tables). Leaves every
/// pin as the firmware left it.
pub fn init(frames: &mut dyn FrameSource) -> Result<(), EarlyError> {
    let base = paging::map_device(frames, IOAPIC_PHYSICAL, 0x20)?;
    IOAPIC.store(base, Ordering::Relaxed);
    Ok(())
}

fn ioapic_write(register: u32, value: u32) {
    let base = IOAPIC.load(Ordering::Relaxed);
    // SAFETY: `base` maps the I/O APIC's register window uncached (`init`); IOREGSEL then
    // IOWIN is its indirect access protocol. Callers run with interrupts masked on one CPU.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

fn ioapic_read(register: u32) -> u32 {
    let base = IOAPIC.load(Ordering::Relaxed);
    // SAFETY: as in `ioapic_write`.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

/// Start (`true`) or stop the storm. Returns `false` when there is no I/O APIC.
pub fn storm(run: bool) -> bool {
    if IOAPIC.load(Ordering::Relaxed) == 0 {
        return false;
    }
    // A real I/O APIC has at least 16 redirection entries (bits 16–23: max entry index).
    let version = ioapic_read(IOAPIC_VERSION);
    if (version >> 16) & 0xFF < PIT_PIN {
        return false;
    }
    const PIT_CONTROL: u16 = 0x43;
    const PIT_CHANNEL0: u16 = 0x40;
    /// Channel 0, low byte then high byte, mode 2 (rate generator), binary.
    const CHANNEL0_RATE: u8 = 0b0011_0100;
    /// Channel 0, mode 0 (interrupt on terminal count) without a count: output stays low.
    const CHANNEL0_STOP: u8 = 0b0011_0000;
    let apic_id = u32::from(crate::apic::id());
    if run {
        ioapic_write(redirection_low(PIT_PIN) + 1, apic_id << 24);
        ioapic_write(redirection_low(PIT_PIN), DELIVERY_NMI);
        // SAFETY: ports 0x40/0x43 are the PIT's channel 0 on every PC-compatible machine;
        // channel 0 drives nothing but IRQ 0, which the 8259 pair has masked.
        unsafe {
            Port::<u8>::new(PIT_CONTROL).write(CHANNEL0_RATE);
            Port::<u8>::new(PIT_CHANNEL0).write(PIT_DIVISOR as u8);
            Port::<u8>::new(PIT_CHANNEL0).write((PIT_DIVISOR >> 8) as u8);
        }
    } else {
        ioapic_write(redirection_low(PIT_PIN), DELIVERY_NMI | MASKED);
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
