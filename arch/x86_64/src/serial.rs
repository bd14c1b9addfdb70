//! The kernel log's 16550 UART at COM1 (I/O ports `0x3F8..=0x3FF`).
//!
//! Polling only: the kernel never takes the UART's interrupt (OUT2 stays low), because the
//! `console` server will own the device and its IRQ through capabilities (DESIGN.md §7);
//! the kernel keeps this path for its own log and for fatal reports. The one exception is
//! the interrupt self-test ([`loopback_begin`] … [`loopback_end`]), which raises the receive
//! interrupt through the UART's internal loopback without any external input.

use x86_64::instructions::port::Port;

/// I/O base of COM1.
pub const COM1: u16 = 0x3F8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

// Register offsets from the base (DLAB = 0 unless noted).
const DATA: u16 = 0; // THR on write; with DLAB = 1 the divisor's low byte
const INTERRUPT_ENABLE: u16 = 1; // with DLAB = 1 the divisor's high byte
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;

/// LCR: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0b0000_0011;
/// LCR: divisor latch access.
const LCR_DLAB: u8 = 0b1000_0000;
/// FCR: enable, clear both FIFOs, receive threshold 14 bytes.
const FCR_ENABLE_CLEAR_14: u8 = 0b1100_0111;
/// MCR: DTR and RTS asserted; OUT2 (the IRQ gate on PCs) left low.
const MCR_DTR_RTS: u8 = 0b0000_0011;
/// LSR: a received byte is waiting in the receive buffer (or FIFO).
const LSR_DATA_READY: u8 = 1 << 0;
/// LSR: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LSR: the transmitter (holding and shift register) is empty.
#[cfg(feature = "testing")]
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;
/// MCR: internal loopback (the transmitter feeds the receiver, nothing leaves the chip).
#[cfg(feature = "testing")]
const MCR_LOOP: u8 = 1 << 4;
/// MCR: OUT2, which gates the UART's interrupt onto the ISA line on PCs.
#[cfg(feature = "testing")]
const MCR_OUT2: u8 = 1 << 3;
/// FCR: enable, clear both FIFOs, receive threshold 1 byte (an interrupt per byte).
#[cfg(feature = "testing")]
const FCR_ENABLE_CLEAR_1: u8 = 0b0000_0111;
/// IER: received-data-available (and receive timeout) interrupt.
#[cfg(feature = "testing")]
const IER_RECEIVE: u8 = 1 << 0;
/// Bound on every wait of the self-test (a missing UART reads 0xFF and never waits).
#[cfg(feature = "testing")]
const POLL_LIMIT: u32 = 1_000_000;
/// 115200 baud from the UART's 1.8432 MHz / 16 clock.
const DIVISOR_115200: u16 = 1;

fn port(offset: u16) -> Port<u8> {
    Port::new(COM1 + offset)
}

/// Program COM1 for 115200 8N1 with FIFOs, interrupts off.
pub fn init() {
    // SAFETY: ports 0x3F8..=0x3FF are COM1 on every PC-compatible machine (and QEMU q35);
    // the kernel is the only user of the UART at this point of boot, and these writes only
    // change its line settings.
    unsafe {
        port(INTERRUPT_ENABLE).write(0);
        port(LINE_CONTROL).write(LCR_DLAB);
        port(DATA).write(DIVISOR_115200 as u8);
        port(INTERRUPT_ENABLE).write((DIVISOR_115200 >> 8) as u8);
        port(LINE_CONTROL).write(LCR_8N1);
        port(FIFO_CONTROL).write(FCR_ENABLE_CLEAR_14);
        port(MODEM_CONTROL).write(MCR_DTR_RTS);
    }
}

/// Send `bytes`, waiting for room before each one. No lock: the core serializes writers,
/// and a fatal report deliberately bypasses that (a byte or two may interleave then).
///
/// Without a UART the status port reads `0xFF` (THR empty), so this never spins forever.
pub fn write(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: reading COM1's line status and writing its transmit register have no
        // effect beyond sending this byte (see `init`).
        unsafe {
            while port(LINE_STATUS).read() & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            port(DATA).write(byte);
        }
    }
}

/// The next received byte, if one is waiting (polled; the UART's interrupt stays off).
///
/// Without a UART the status port reads `0xFF`, so this would return `0xFF` bytes; QEMU
/// q35 always has COM1.
pub fn read() -> Option<u8> {
    // SAFETY: reading COM1's line status and receive register only takes the waiting byte
    // out of the receive FIFO (see `init`); nothing else reads COM1's receive side.
    unsafe {
        if port(LINE_STATUS).read() & LSR_DATA_READY == 0 {
            return None;
        }
        Some(port(DATA).read())
    }
}

/// Wait (bounded) until everything sent has left the transmitter.
#[cfg(feature = "testing")]
fn drain_transmitter() {
    for _ in 0..POLL_LIMIT {
        // SAFETY: reading COM1's line status has no side effect (see `init`).
        if unsafe { port(LINE_STATUS).read() } & LSR_TRANSMITTER_EMPTY != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Read and drop every received byte (bounded).
#[cfg(feature = "testing")]
fn drain_receiver() {
    for _ in 0..64 {
        // SAFETY: reading the line status and the receive buffer only consumes input.
        unsafe {
            if port(LINE_STATUS).read() & LSR_DATA_READY == 0 {
                return;
            }
            port(DATA).read();
        }
    }
}

/// Interrupt self-test: wait for the log to leave the chip, then put the UART in internal
/// loopback (MCR.LOOP, with OUT2) with a one-byte receive threshold and only its receive
/// interrupt enabled. Nothing may write the log until [`loopback_end`]: it would loop back.
#[cfg(feature = "testing")]
pub fn loopback_begin() {
    drain_transmitter();
    // SAFETY: COM1's registers (see `init`); the kernel log is quiet (caller's duty), so
    // switching the UART to loopback loses no output.
    unsafe {
        port(INTERRUPT_ENABLE).write(0);
        port(MODEM_CONTROL).write(MCR_DTR_RTS | MCR_OUT2 | MCR_LOOP);
        port(FIFO_CONTROL).write(FCR_ENABLE_CLEAR_1);
    }
    drain_receiver();
    // SAFETY: as above; enables only the receive interrupt.
    unsafe { port(INTERRUPT_ENABLE).write(IER_RECEIVE) };
}

/// Send one byte in loopback: it comes back as received data.
#[cfg(feature = "testing")]
pub fn loopback_send(byte: u8) {
    write(&[byte]);
}

/// Take the byte received in loopback (clearing the receive interrupt), waiting for it a
/// bounded time; `None` if none arrived.
#[cfg(feature = "testing")]
pub fn loopback_receive() -> Option<u8> {
    for _ in 0..POLL_LIMIT {
        // SAFETY: reading the line status and the receive buffer only consumes input.
        unsafe {
            if port(LINE_STATUS).read() & LSR_DATA_READY != 0 {
                return Some(port(DATA).read());
            }
        }
        core::hint::spin_loop();
    }
    None
}

/// Leave loopback: interrupts off, receiver drained, FIFOs and modem control as `init` set
/// them, so the kernel log works again.
#[cfg(feature = "testing")]
pub fn loopback_end() {
    drain_transmitter();
    // SAFETY: COM1's registers (see `init`); restores `init`'s settings.
    unsafe {
        port(INTERRUPT_ENABLE).write(0);
        port(FIFO_CONTROL).write(FCR_ENABLE_CLEAR_14);
        port(MODEM_CONTROL).write(MCR_DTR_RTS);
    }
    drain_receiver();
}

/// A `core::fmt::Write` sink on the UART that turns `\n` into `\r\n`, for the arch
/// crate's own reports (fatal traps, the early-init summary).
pub struct Writer;

impl core::fmt::Write for Writer {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                write(b"\r\n");
            }
            write(line.as_bytes());
        }
        Ok(())
    }
}

/// `println!` for the arch crate: straight to the UART, without the core's lock. Only for
/// early init (before anyone else prints) and fatal reports.
macro_rules! arch_println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Writer, $($arg)*);
    }};
}
pub(crate) use arch_println;
