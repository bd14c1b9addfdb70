//! The kernel log on the serial console.
//!
//! One lock serializes writers, and a whole `println!` is written under it, so kernel log
//! lines never interleave (DESIGN.md §7).

use core::fmt::{self, Write};

use arch_api::{EarlyError, ExitCode, Platform};
use spin::Mutex;

use crate::Cpu;

/// Serializes writers; the unit type is the console itself (the arch crate owns the device).
static CONSOLE: Mutex<()> = Mutex::new(());

struct Serial;

impl Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Serial terminals want CR LF.
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                Cpu::console_write(b"\r\n");
            }
            Cpu::console_write(line.as_bytes());
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE.lock();
    // Serial writes cannot fail.
    let _ = Serial.write_fmt(args);
}

#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Report a panic. Does not take the lock: the panicking code may hold it.
/// Then the thread (by the core's name for it) and a frame-pointer backtrace.
pub fn panic_report(info: &core::panic::PanicInfo<'_>) {
    // One line: the message, then where.
    let _ = write!(Serial, "\nKERNEL PANIC: {}", info.message());
    if let Some(location) = info.location() {
        let _ = write!(Serial, " at {location}");
    }
    let _ = writeln!(Serial);
    let thread = <Cpu as arch_api::Threads>::current_thread();
    let _ = writeln!(
        Serial,
        "panic in thread {} (id {thread})",
        crate::upcall::keel_thread_name(thread)
    );
    let _ = Cpu::backtrace(&mut Serial);
    let _ = writeln!(Serial, "keel: kernel panic; powering off (exit code 2)");
}

/// Early bring-up failed; tell the user what is missing and how to fix it, then stop.
pub fn fatal_early(error: EarlyError) -> ! {
    let _ = match error {
        EarlyError::NoDeviceTree => write!(
            Serial,
            "keel: fatal: the bootloader gave no device tree (Limine DTB response).\n\
             keel: on QEMU `virt`, boot with `-machine virt,acpi=off` so the firmware \
             publishes one (cargo xtask qemu-aarch64 does).\n"
        ),
        EarlyError::MissingDevice(what) => {
            writeln!(
                Serial,
                "keel: fatal: required device missing or malformed: {what}"
            )
        }
        EarlyError::OutOfMemory => writeln!(Serial, "keel: fatal: out of memory during early boot"),
        EarlyError::Unsupported(what) => {
            writeln!(Serial, "keel: fatal: unsupported machine state: {what}")
        }
    };
    Cpu::power_off(ExitCode::Fatal)
}
