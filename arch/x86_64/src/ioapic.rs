//! Device interrupts through the I/O APIC(s): found in the ACPI MADT, mapped uncached into
//! the device window, one vector per line (a line is a global system interrupt, GSI),
//! delivered to the boot CPU's local APIC, which takes the end-of-interrupt.
//!
//! # Masking
//! A level-triggered line is masked at its redirection entry: the input stays asserted, and
//! the I/O APIC delivers it again once unmasked. An edge-triggered line cannot be masked
//! that way — the 82093AA ignores an edge on a masked pin, so an edge arriving while the
//! driver has not acknowledged the last one would be lost for good. Edge lines are
//! therefore masked *lazily* (as Linux does): the entry stays open, an edge that arrives
//! while the line is masked is latched here (and the entry masked, further edges
//! coalescing into the latched one) without an upcall, and `unmask` re-raises a latched
//! edge as a self-IPI on the line's vector.
//!
//! # State
//! One byte of flags per line, changed only with interrupts masked on the one CPU that
//! runs the kernel (the kernel's invariant), so plain atomic loads and stores suffice; the
//! entry path reads them without a lock.
//!
//! Weak spots: boot CPU only (every line targets its APIC id); at most
//! [`acpi::MAX_IO_APICS`] I/O APICs and [`vector::EXTERNAL_LINES`] lines; lines above that
//! are not routable. The NMI storm ([`crate::nmi`]) borrows the PIT's line behind this
//! module's back while it runs (test only).

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use arch_api::{Delivery, EarlyError, FrameSource, InterruptError};

use crate::acpi::{self, IoApicEntry, LineMode};
use crate::trap::vector;
use crate::{apic, paging, upcall};

/// IOREGSEL and IOWIN offsets in the register window.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// Indirect registers: version (bits 16–23: the highest redirection entry).
const VERSION: u32 = 0x01;
const fn redirection_low(pin: u32) -> u32 {
    0x10 + 2 * pin
}

/// Redirection entry, low word (82093AA §3.2.4): vector in bits 0–7, fixed delivery and
/// physical destination are 0, polarity (1 = active low), trigger (1 = level), mask.
const ACTIVE_LOW: u32 = 1 << 13;
const LEVEL: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;

/// Per-line flags.
const ENABLED: u8 = 1 << 0;
const MASK_ON_DELIVERY: u8 = 1 << 1;
/// Masked as the core sees it (no upcall).
const CORE_MASKED: u8 = 1 << 2;
/// An edge arrived while the line was masked.
const LATCHED: u8 = 1 << 3;
/// The line's mode, from the MADT: level triggered / active low.
const MODE_LEVEL: u8 = 1 << 4;
const MODE_ACTIVE_LOW: u8 = 1 << 5;

const LINES: usize = vector::EXTERNAL_LINES as usize;

struct Chip {
    base: AtomicU64,
    gsi_base: AtomicU32,
    pins: AtomicU32,
}

#[allow(
    clippy::declare_interior_mutable_const,
    reason = "only used to initialize the static arrays below"
)]
const NO_CHIP: Chip = Chip {
    base: AtomicU64::new(0),
    gsi_base: AtomicU32::new(0),
    pins: AtomicU32::new(0),
};
static CHIPS: [Chip; acpi::MAX_IO_APICS] = [NO_CHIP; acpi::MAX_IO_APICS];
static LINE_STATE: [AtomicU8; LINES] = [const { AtomicU8::new(0) }; LINES];
/// Each line's mode as the MADT describes it (`MODE_*` bits), for the self-test's restore.
static FIRMWARE_MODE: [AtomicU8; LINES] = [const { AtomicU8::new(0) }; LINES];
static LINE_COUNT: AtomicU32 = AtomicU32::new(0);
/// GSI of each ISA IRQ (from the MADT's overrides); `u32::MAX` until known.
static ISA_GSI: [AtomicU32; acpi::ISA_IRQS] = [const { AtomicU32::new(u32::MAX) }; acpi::ISA_IRQS];
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// COM1's ISA IRQ.
const COM1_IRQ: usize = 4;

/// What `init` found, for the boot log.
pub struct Found {
    pub chips: usize,
    pub lines: u32,
    pub console_line: Option<u32>,
    /// Why there is no interrupt routing, when there is none.
    pub missing: Option<&'static str>,
}

/// Find the I/O APICs through the ACPI tables at `rsdp`, map them, and mask every
/// redirection entry (each already carrying its line's vector and mode). A machine without
/// ACPI or I/O APIC boots without device interrupts (`line_count` 0).
pub fn init(rsdp: Option<u64>, frames: &mut dyn FrameSource) -> Result<Found, EarlyError> {
    let none = |missing| Found {
        chips: 0,
        lines: 0,
        console_line: None,
        missing: Some(missing),
    };
    let Some(rsdp) = rsdp else {
        return Ok(none("no ACPI RSDP from the loader"));
    };
    let madt = match acpi::read_madt(rsdp) {
        Ok(madt) => madt,
        Err(missing) => return Ok(none(missing)),
    };
    let mut chips = 0;
    let mut lines = 0u32;
    for entry in madt.io_apics.iter().flatten() {
        let IoApicEntry {
            address, gsi_base, ..
        } = *entry;
        let base = paging::map_device(frames, address, 0x20)?;
        let chip = &CHIPS[chips];
        chip.base.store(base, Ordering::Relaxed);
        chip.gsi_base.store(gsi_base, Ordering::Relaxed);
        let pins = ((read(base, VERSION) >> 16) & 0xFF) + 1;
        chip.pins.store(pins, Ordering::Relaxed);
        chips += 1;
        lines = lines.max(gsi_base.saturating_add(pins));
    }
    if chips == 0 {
        return Ok(none("no I/O APIC in the ACPI MADT"));
    }
    let lines = lines.min(vector::EXTERNAL_LINES);
    for (irq, route) in madt.isa.iter().enumerate() {
        ISA_GSI[irq].store(route.gsi, Ordering::Relaxed);
    }
    for line in 0..lines {
        // An ISA IRQ's GSI takes that IRQ's mode; the rest of the first 16 are ISA inputs
        // too; everything above is PCI's.
        let mode = match madt.isa.iter().find(|route| route.gsi == line) {
            Some(route) => route.mode,
            None if line < acpi::ISA_IRQS as u32 => acpi::ISA_DEFAULT,
            None => acpi::PCI_DEFAULT,
        };
        LINE_STATE[line as usize].store(mode_bits(mode), Ordering::Relaxed);
        FIRMWARE_MODE[line as usize].store(mode_bits(mode), Ordering::Relaxed);
        write_entry(line, entry_low(line, MASKED), 0);
    }
    LINE_COUNT.store(lines, Ordering::Relaxed);
    Ok(Found {
        chips,
        lines,
        console_line: console_line(),
        missing: None,
    })
}

fn mode_bits(mode: LineMode) -> u8 {
    (if mode.level { MODE_LEVEL } else { 0 }) | (if mode.active_low { MODE_ACTIVE_LOW } else { 0 })
}

fn read(base: u64, register: u32) -> u32 {
    // SAFETY: `base` maps an I/O APIC's register window uncached (`init`); IOREGSEL then
    // IOWIN is its indirect access protocol. Callers run with interrupts masked on the one
    // CPU the kernel runs on, so no other access interleaves.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

fn write(base: u64, register: u32, value: u32) {
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

/// The chip and pin of `gsi`.
fn locate(gsi: u32) -> Option<(u64, u32)> {
    CHIPS.iter().find_map(|chip| {
        let base = chip.base.load(Ordering::Relaxed);
        let first = chip.gsi_base.load(Ordering::Relaxed);
        let pins = chip.pins.load(Ordering::Relaxed);
        (base != 0 && gsi >= first && gsi - first < pins).then(|| (base, gsi - first))
    })
}

/// Write a redirection entry: the high word (destination) first, so an unmasking low word
/// never meets a stale destination.
fn write_entry(gsi: u32, low: u32, high: u32) -> bool {
    let Some((base, pin)) = locate(gsi) else {
        return false;
    };
    write(base, redirection_low(pin) + 1, high);
    write(base, redirection_low(pin), low);
    true
}

/// The low word of `line`'s entry: its vector and mode, plus `extra` (e.g. [`MASKED`]).
fn entry_low(line: u32, extra: u32) -> u32 {
    let state = LINE_STATE[line as usize].load(Ordering::Relaxed);
    let mut low = vector_of(line) as u32 | extra;
    if state & MODE_LEVEL != 0 {
        low |= LEVEL;
    }
    if state & MODE_ACTIVE_LOW != 0 {
        low |= ACTIVE_LOW;
    }
    low
}

fn set_entry_mask(line: u32, masked: bool) {
    let destination = u32::from(apic::id()) << 24;
    write_entry(
        line,
        entry_low(line, if masked { MASKED } else { 0 }),
        destination,
    );
}

fn vector_of(line: u32) -> u64 {
    vector::EXTERNAL_BASE + u64::from(line)
}

fn check(line: u32) -> Result<usize, InterruptError> {
    match LINE_COUNT.load(Ordering::Relaxed) {
        0 => Err(InterruptError::NoController),
        count if line < count => Ok(line as usize),
        _ => Err(InterruptError::InvalidLine),
    }
}

pub fn line_count() -> u32 {
    LINE_COUNT.load(Ordering::Relaxed)
}

/// The GSI ISA IRQ `irq` arrives on (the MADT's override, else `irq`).
pub fn isa_gsi(irq: usize) -> Option<u32> {
    let gsi = ISA_GSI.get(irq)?.load(Ordering::Relaxed);
    (gsi != u32::MAX).then_some(gsi)
}

/// COM1's line, when it is routable.
pub fn console_line() -> Option<u32> {
    isa_gsi(COM1_IRQ).filter(|&gsi| gsi < line_count())
}

pub fn enable(line: u32, delivery: Delivery) -> Result<(), InterruptError> {
    let index = check(line)?;
    let state = &LINE_STATE[index];
    let mode = state.load(Ordering::Relaxed) & (MODE_LEVEL | MODE_ACTIVE_LOW);
    let on_delivery = match delivery {
        Delivery::MaskUntilUnmask => MASK_ON_DELIVERY,
        Delivery::KeepUnmasked => 0,
    };
    state.store(mode | ENABLED | on_delivery, Ordering::Relaxed);
    set_entry_mask(line, false);
    Ok(())
}

pub fn disable(line: u32) -> Result<(), InterruptError> {
    let index = check(line)?;
    let state = &LINE_STATE[index];
    state.fetch_and(MODE_LEVEL | MODE_ACTIVE_LOW, Ordering::Relaxed);
    set_entry_mask(line, true);
    Ok(())
}

pub fn mask(line: u32) -> Result<(), InterruptError> {
    let index = check(line)?;
    let old = LINE_STATE[index].fetch_or(CORE_MASKED, Ordering::Relaxed);
    // Edge lines stay open at the I/O APIC (lazy masking, module docs).
    if old & MODE_LEVEL != 0 && old & ENABLED != 0 {
        set_entry_mask(line, true);
    }
    Ok(())
}

pub fn unmask(line: u32) -> Result<(), InterruptError> {
    let index = check(line)?;
    let old = LINE_STATE[index].fetch_and(!(CORE_MASKED | LATCHED), Ordering::Relaxed);
    if old & ENABLED == 0 {
        return Ok(());
    }
    set_entry_mask(line, false);
    if old & LATCHED != 0 {
        apic::send_self(vector_of(line));
    }
    Ok(())
}

/// Interrupts that arrived for no enabled line.
pub fn unexpected() -> u64 {
    UNEXPECTED.load(Ordering::Relaxed)
}

/// Count an interrupt on a vector that belongs to no line (and end it if it is in service).
pub fn count_unexpected_vector(vector: u64) {
    UNEXPECTED.fetch_add(1, Ordering::Relaxed);
    if apic::in_service(vector) {
        apic::end_of_interrupt();
    }
}

/// The entry path for vector `EXTERNAL_BASE + line` (interrupts masked): mask if the core
/// asked for it, end the interrupt, then tell the core — in that order, so a level line
/// cannot storm and the upcall may switch threads.
pub fn deliver(line: u32) {
    let Some(state) = LINE_STATE.get(line as usize) else {
        count_unexpected_vector(vector_of(line));
        return;
    };
    let flags = state.load(Ordering::Relaxed);
    if flags & ENABLED == 0 || line >= line_count() {
        if line < line_count() {
            set_entry_mask(line, true);
        }
        count_unexpected_vector(vector_of(line));
        return;
    }
    let level = flags & MODE_LEVEL != 0;
    if flags & CORE_MASKED != 0 {
        // An edge line arrives while masked by design (lazy masking, or a self-IPI): latch
        // it and close the entry until `unmask` re-raises it. A level line should not (its
        // entry is masked before its EOI, and Remote IRR holds it until then): one in
        // flight across a `mask` is dropped — its input re-asserts after the unmask — and
        // counted as unexpected, so a mask that failed shows instead of storming quietly.
        set_entry_mask(line, true);
        if level {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        } else {
            state.fetch_or(LATCHED, Ordering::Relaxed);
        }
        apic::end_of_interrupt();
        return;
    }
    if flags & MASK_ON_DELIVERY != 0 {
        state.fetch_or(CORE_MASKED, Ordering::Relaxed);
        if level {
            set_entry_mask(line, true);
        }
    }
    apic::end_of_interrupt();
    // SAFETY: the kernel defines `keel_irq` (kernel/src/upcall.rs) as a plain function
    // callable from interrupt context with interrupts masked.
    unsafe { upcall::keel_irq(line) };
}

/// Self-test: route a disabled `line` edge (`Some(false)`) or level (`Some(true)`)
/// triggered, active high, or as the MADT says (`None`). Returns whether it is now level.
#[cfg(feature = "testing")]
pub fn set_trigger_for_test(line: u32, level: Option<bool>) -> Option<bool> {
    let index = check(line).ok()?;
    let state = &LINE_STATE[index];
    if state.load(Ordering::Relaxed) & ENABLED != 0 {
        return None;
    }
    let mode = match level {
        None => FIRMWARE_MODE[index].load(Ordering::Relaxed),
        Some(true) => MODE_LEVEL,
        Some(false) => 0,
    };
    state.store(mode, Ordering::Relaxed);
    Some(mode & MODE_LEVEL != 0)
}

/// Raise `line` by software: a self-IPI on its vector.
#[cfg(feature = "testing")]
pub fn raise(line: u32) -> bool {
    if check(line).is_err() {
        return false;
    }
    apic::send_self(vector_of(line));
    true
}

/// Program the redirection entry of `gsi` raw (the NMI storm). Returns `false` when no
/// I/O APIC has that input.
#[cfg(feature = "testing")]
pub fn write_raw_entry(gsi: u32, low: u32, high: u32) -> bool {
    write_entry(gsi, low, high)
}
