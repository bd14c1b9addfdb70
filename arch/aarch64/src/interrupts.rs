//! Device interrupt lines (`arch_api::Interrupts`): a line is a GIC shared peripheral
//! interrupt, named by its INTID (32–1019); SGIs and PPIs (the timer's included) are never
//! lines.
//!
//! Masking is the distributor's enable bit: a disabled interrupt keeps its pending state
//! (a level input stays asserted, an edge is latched, IHI 0048B §3.2.4), so unmasking
//! delivers what arrived meanwhile — no software latching is needed here.
//!
//! Per-line flags change only with interrupts masked on the one CPU the kernel runs on;
//! the entry path reads them without a lock. The trigger of a line comes from the device
//! tree where Keel read it (the console UART), else level (the `virt` machine's default
//! for its devices).

#[cfg(feature = "testing")]
use core::sync::atomic::AtomicU32;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arch_api::{Delivery, InterruptError};
use spin::Once;

use crate::devicetree::Trigger;
use crate::gic::{self, Acknowledged, FIRST_SPECIAL, Gic};
use crate::upcall;

const ENABLED: u8 = 1 << 0;
const MASK_ON_DELIVERY: u8 = 1 << 1;

/// First INTID that is a device line.
const FIRST_LINE: u32 = 32;

static LINE_STATE: [AtomicU8; FIRST_SPECIAL as usize] =
    [const { AtomicU8::new(0) }; FIRST_SPECIAL as usize];
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
/// The console UART's line and trigger, from the device tree.
static CONSOLE: Once<(u32, Trigger)> = Once::new();
/// A line the self-test enables behind the core's back (0: none yet).
#[cfg(feature = "testing")]
static UNROUTED_TEST_LINE: AtomicU32 = AtomicU32::new(0);

/// Remember the console UART's interrupt (early init).
pub fn describe_console(interrupt: Option<(u32, Trigger)>) {
    if let Some(interrupt) = interrupt {
        CONSOLE.call_once(|| interrupt);
    }
}

fn controller() -> Result<&'static Gic, InterruptError> {
    gic::get().ok_or(InterruptError::NoController)
}

pub fn line_count() -> u32 {
    gic::get().map_or(0, Gic::line_count)
}

pub fn console_line() -> Option<u32> {
    CONSOLE
        .get()
        .map(|&(line, _)| line)
        .filter(|&line| line >= FIRST_LINE && line < line_count())
}

/// The GIC and the line's state, when `line` is a device line.
fn check(line: u32) -> Result<(&'static Gic, &'static AtomicU8), InterruptError> {
    let gic = controller()?;
    if !(FIRST_LINE..gic.line_count()).contains(&line) {
        return Err(InterruptError::InvalidLine);
    }
    Ok((gic, &LINE_STATE[line as usize]))
}

/// The self-test's trigger override: line (0: none) and 1 = level, 0 = edge.
#[cfg(feature = "testing")]
static TEST_TRIGGER_LINE: AtomicU32 = AtomicU32::new(0);
#[cfg(feature = "testing")]
static TEST_TRIGGER_LEVEL: AtomicU8 = AtomicU8::new(0);

fn trigger_of(line: u32) -> Trigger {
    #[cfg(feature = "testing")]
    if line == TEST_TRIGGER_LINE.load(Ordering::Relaxed) {
        return match TEST_TRIGGER_LEVEL.load(Ordering::Relaxed) {
            0 => Trigger::Edge,
            _ => Trigger::Level,
        };
    }
    match CONSOLE.get() {
        Some(&(console, trigger)) if console == line => trigger,
        _ => Trigger::Level,
    }
}

/// Self-test: route a disabled `line` edge (`Some(false)`) or level (`Some(true)`)
/// triggered, or as the device tree says (`None`), from its next enable on. Returns whether
/// it is now level.
#[cfg(feature = "testing")]
pub fn set_trigger_for_test(line: u32, level: Option<bool>) -> Option<bool> {
    let (_, state) = check(line).ok()?;
    if state.load(Ordering::Relaxed) & ENABLED != 0 {
        return None;
    }
    match level {
        None => TEST_TRIGGER_LINE.store(0, Ordering::Relaxed),
        Some(level) => {
            TEST_TRIGGER_LEVEL.store(u8::from(level), Ordering::Relaxed);
            TEST_TRIGGER_LINE.store(line, Ordering::Relaxed);
        }
    }
    Some(trigger_of(line) == Trigger::Level)
}

pub fn enable(line: u32, delivery: Delivery) -> Result<(), InterruptError> {
    let (gic, state) = check(line)?;
    let on_delivery = match delivery {
        Delivery::MaskUntilUnmask => MASK_ON_DELIVERY,
        Delivery::KeepUnmasked => 0,
    };
    state.store(ENABLED | on_delivery, Ordering::Relaxed);
    gic.enable_spi(line, trigger_of(line));
    Ok(())
}

pub fn disable(line: u32) -> Result<(), InterruptError> {
    let (gic, state) = check(line)?;
    state.store(0, Ordering::Relaxed);
    gic.disable(line);
    Ok(())
}

pub fn mask(line: u32) -> Result<(), InterruptError> {
    let (gic, _) = check(line)?;
    gic.disable(line);
    Ok(())
}

pub fn unmask(line: u32) -> Result<(), InterruptError> {
    let (gic, state) = check(line)?;
    if state.load(Ordering::Relaxed) & ENABLED != 0 {
        gic.reenable(line);
    }
    Ok(())
}

pub fn unexpected() -> u64 {
    UNEXPECTED.load(Ordering::Relaxed)
}

/// An acknowledged interrupt that is not the timer's: mask it if the core asked, end it,
/// then tell the core — in that order, so a level line cannot storm and the upcall may
/// switch threads. Anything the core did not enable is disabled and counted.
pub fn deliver(gic: &Gic, acknowledged: Acknowledged) {
    let line = acknowledged.intid;
    let flags = match LINE_STATE.get(line as usize) {
        Some(state) if line >= FIRST_LINE => state.load(Ordering::Relaxed),
        _ => 0,
    };
    if flags & ENABLED == 0 {
        gic.disable(line);
        gic.end(acknowledged);
        UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if flags & MASK_ON_DELIVERY != 0 {
        gic.disable(line);
    }
    gic.end(acknowledged);
    // SAFETY: `keel_irq` is the core's safe Rust function of that signature
    // (kernel/src/upcall.rs); called with interrupts masked, as it expects.
    unsafe { upcall::keel_irq(line) };
}

/// Make an enabled `line` pending at the distributor.
#[cfg(feature = "testing")]
pub fn raise(line: u32) -> bool {
    match check(line) {
        Ok((gic, _)) => {
            gic.set_pending(line);
            true
        }
        Err(_) => false,
    }
}

/// Enable, behind the core's back, the highest SPI nobody enabled and make it pending:
/// the entry must count it and disable it again.
#[cfg(feature = "testing")]
pub fn raise_unrouted() -> bool {
    let Ok(gic) = controller() else {
        return false;
    };
    let chosen = match UNROUTED_TEST_LINE.load(Ordering::Relaxed) {
        0 => (FIRST_LINE..gic.line_count())
            .rev()
            .find(|&line| LINE_STATE[line as usize].load(Ordering::Relaxed) & ENABLED == 0),
        line => Some(line),
    };
    let Some(line) = chosen else {
        return false;
    };
    UNROUTED_TEST_LINE.store(line, Ordering::Relaxed);
    gic.enable_spi(line, Trigger::Level);
    gic.set_pending(line);
    true
}

/// The console self-test's state: whether the PL011 loops back, and its saved CR.
#[cfg(feature = "testing")]
static LOOPBACK: AtomicU8 = AtomicU8::new(0);
#[cfg(feature = "testing")]
static SAVED_CONTROL: AtomicU32 = AtomicU32::new(0);

/// Begin the console interrupt self-test (see `arch_api::InterruptSelfTest`).
#[cfg(feature = "testing")]
pub fn console_test_begin() -> Option<arch_api::ConsoleIrqSource> {
    let (loopback, saved) = crate::console::with_uart(|uart| uart.irq_test_begin())?;
    LOOPBACK.store(u8::from(loopback), Ordering::Relaxed);
    SAVED_CONTROL.store(saved, Ordering::Relaxed);
    Some(if loopback {
        arch_api::ConsoleIrqSource::ReceiveLoopback
    } else {
        arch_api::ConsoleIrqSource::TransmitDone
    })
}

/// Part of the console interrupt self-test.
#[cfg(feature = "testing")]
pub fn console_test_send(byte: u8) {
    crate::console::write(&[byte]);
}

/// Part of the console interrupt self-test.
#[cfg(feature = "testing")]
pub fn console_test_clear() -> Option<u8> {
    let loopback = LOOPBACK.load(Ordering::Relaxed) != 0;
    crate::console::with_uart(|uart| uart.irq_test_clear(loopback)).flatten()
}

/// Part of the console interrupt self-test.
#[cfg(feature = "testing")]
pub fn console_test_end() {
    let saved = SAVED_CONTROL.load(Ordering::Relaxed);
    crate::console::with_uart(|uart| uart.irq_test_end(saved));
}
