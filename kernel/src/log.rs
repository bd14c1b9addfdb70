//! The kernel log on the serial console.
//!
//! One lock serializes writers, and a whole `println!` is written under it, so kernel log
//! lines never interleave (DESIGN.md §7).
//!
//! Once the user-space console has taken the log (`log_bind`), lines go to a ring instead
//! of the UART and the console prints them as whole lines among its clients'. Printing
//! then only marks the log readable ([`take_readable`]); the system-call exit and the
//! timer tick signal the reader, so a `println!` is safe under any lock.
//!
//! A kernel panic is reported by one CPU ([`claim_panic`]: the first to panic); from then
//! on any other CPU that writes to the UART stops instead ([`Serial`]), so nothing follows
//! the report, even from a CPU the stop IPI has not reached yet.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::Cpu;
use crate::sync::{Lock, deferred, level};
use arch_api::{EarlyError, ExitCode, Platform, SecondaryCpus};

/// Serializes writers; the unit type is the console itself (the arch crate owns the device).
static CONSOLE: Lock<()> = Lock::new(level::CONSOLE, ());

/// The UART, unlocked: for reports that must not wait (a panic may hold the lock). A CPU
/// other than the one reporting a panic stops here instead of writing.
pub struct Serial;

/// The CPU that reports a kernel panic; [`NO_PANIC`] while there is none.
static PANIC_CPU: AtomicU32 = AtomicU32::new(NO_PANIC);
const NO_PANIC: u32 = u32::MAX;

/// What a panicking CPU is to the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicRole {
    /// The first CPU to panic: it reports.
    Reporter,
    /// The reporting CPU panicked again while reporting.
    Nested,
    /// Another CPU reports already: this one must stop without a word.
    Silent,
}

/// Claim the panic report for this CPU (the first caller wins).
pub fn claim_panic() -> PanicRole {
    let me = Cpu::cpu_index();
    match PANIC_CPU.compare_exchange(NO_PANIC, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => PanicRole::Reporter,
        Err(owner) if owner == me => PanicRole::Nested,
        Err(_) => PanicRole::Silent,
    }
}

/// Stop this CPU if another one is reporting a panic.
#[inline]
fn stop_if_silenced() {
    let owner = PANIC_CPU.load(Ordering::Acquire);
    if owner != NO_PANIC && owner != Cpu::cpu_index() {
        Cpu::stop_self();
    }
}

impl Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        stop_if_silenced();
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
    if DEFERRED.load(Ordering::Acquire) {
        {
            let mut ring = LOG.lock();
            let _ = ring.write_fmt(args);
        }
        deferred::raise(deferred::LOG);
        return;
    }
    let _guard = CONSOLE.lock();
    // Serial writes cannot fail.
    let _ = Serial.write_fmt(args);
}

/// Whether log lines go to the ring (the user-space console has taken the log).
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// Whether lines went to the ring since the last call (clears the mark): the caller
/// signals the log reader.
#[inline(always)]
pub fn take_readable() -> bool {
    deferred::take(deferred::LOG)
}
/// Bytes of log the ring holds; older bytes are dropped (and counted) when it is full.
const LOG_BYTES: usize = 8192;

struct LogRing {
    bytes: [u8; LOG_BYTES],
    start: usize,
    length: usize,
    lost: u64,
}

static LOG: Lock<LogRing> = Lock::new(
    level::LOG_RING,
    LogRing {
        bytes: [0; LOG_BYTES],
        start: 0,
        length: 0,
        lost: 0,
    },
);

impl Write for LogRing {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.length == LOG_BYTES {
                self.start = (self.start + 1) % LOG_BYTES;
                self.length -= 1;
                self.lost += 1;
            }
            self.bytes[(self.start + self.length) % LOG_BYTES] = byte;
            self.length += 1;
        }
        Ok(())
    }
}

/// From now on the log goes to the ring ([`take_log`]).
pub fn defer_log() {
    DEFERRED.store(true, Ordering::Release);
}

/// Move up to `out.len()` bytes of deferred log into `out`; returns how many.
pub fn take_log(out: &mut [u8]) -> usize {
    let mut ring = LOG.lock();
    let count = out.len().min(ring.length);
    for (index, place) in out[..count].iter_mut().enumerate() {
        *place = ring.bytes[(ring.start + index) % LOG_BYTES];
    }
    ring.start = (ring.start + count) % LOG_BYTES;
    ring.length -= count;
    count
}

/// Print the log to the UART again, the deferred part first (before power-off, when no
/// console server will drain it).
pub fn undefer_log() {
    DEFERRED.store(false, Ordering::Release);
    let _guard = CONSOLE.lock();
    let mut chunk = [0u8; 256];
    loop {
        let count = take_log(&mut chunk);
        if count == 0 {
            break;
        }
        for line in chunk[..count].split_inclusive(|&byte| byte == b'\n') {
            match line.split_last() {
                Some((b'\n', text)) => {
                    Cpu::console_write(text);
                    Cpu::console_write(b"\r\n");
                }
                _ => Cpu::console_write(line),
            }
        }
    }
}

#[macro_export]
macro_rules! println {
    () => { $crate::log::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::log::print(format_args!("{}\n", format_args!($($arg)*))) };
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
