//! The kernel console: the PL011 once it is mapped, semihosting before that.
//!
//! No lock and no allocation: the core serializes ordinary writers, and the fatal-trap report
//! must be able to write while anyone holds anything.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::pl011::Pl011;
use crate::semihosting;

/// Virtual address of the PL011's registers in the device window; 0 until mapped.
static UART: AtomicUsize = AtomicUsize::new(0);

/// Switch the console to the PL011 at `base`.
///
/// # Safety
/// As [`Pl011::new`]: `base` maps a PL011 with device attributes for good.
pub unsafe fn use_uart(base: usize) {
    UART.store(base, Ordering::Release);
}

fn uart() -> Option<Pl011> {
    match UART.load(Ordering::Acquire) {
        0 => None,
        // SAFETY: only `use_uart` stores a non-zero value, under its contract.
        base => Some(unsafe { Pl011::new(base) }),
    }
}

/// Run `work` on the PL011, once it is mapped (the interrupt self-test).
#[cfg(feature = "testing")]
pub fn with_uart<R>(work: impl FnOnce(&Pl011) -> R) -> Option<R> {
    uart().map(|uart| work(&uart))
}

/// Write bytes to the console as they are.
pub fn write(bytes: &[u8]) {
    match uart() {
        Some(uart) => uart.write(bytes),
        None => semihosting::write(bytes),
    }
}

/// The next received byte, if one is waiting (polled). `None` before the UART is mapped.
pub fn read() -> Option<u8> {
    uart().and_then(|uart| uart.read())
}

/// Wait for the UART to finish sending (before power-off).
pub fn drain() {
    if let Some(uart) = uart() {
        uart.drain();
    }
}

/// A `fmt::Write` sink for the arch crate's own reports, turning `\n` into CR LF.
pub struct Report;

impl fmt::Write for Report {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                write(b"\r\n");
            }
            write(line.as_bytes());
        }
        Ok(())
    }
}

/// Print a formatted line through [`Report`] (arch-internal diagnostics).
macro_rules! report {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::Report, $($arg)*);
    }};
}
pub(crate) use report;
