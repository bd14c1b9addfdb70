//! The Arm PL011 UART (Arm DDI 0183), polled: the kernel's serial console.
//!
//! The kernel transmits, and polls for received bytes only in the `echo-input` scenario.
//! Interrupts are masked at the UART (the `console` server owns the
//! device and its IRQ later, DESIGN.md §7), except during the interrupt self-test
//! ([`Pl011::irq_test_begin`] … [`Pl011::irq_test_end`]), which raises the UART's interrupt
//! without external input: through internal loopback (CR.LBE) where the UART has it, else
//! through the transmit interrupt (QEMU 7.2's model ignores LBE and sends the byte out).

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

use crate::mmio::Mmio;

register_bitfields! [u32,
    /// Flag register.
    FR [
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) [],
    ],
    /// Line control register.
    LCR_H [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [EightBits = 0b11],
        /// FIFO enable.
        FEN OFFSET(4) NUMBITS(1) [],
    ],
    /// Control register.
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) [],
    ],
];

register_structs! {
    pub Registers {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x024 => ibrd: ReadWrite<u32>),
        (0x028 => fbrd: ReadWrite<u32>),
        (0x02c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => _reserved2),
        (0x038 => imsc: ReadWrite<u32>),
        (0x03c => _reserved3),
        (0x044 => icr: WriteOnly<u32>),
        (0x048 => @END),
    }
}

/// All interrupt bits of IMSC/ICR.
const ALL_INTERRUPTS: u32 = 0x7ff;
/// Interrupt bits: receive, transmit, receive timeout.
#[cfg(feature = "testing")]
const RECEIVE_INTERRUPTS: u32 = (1 << 4) | (1 << 6);
#[cfg(feature = "testing")]
const TRANSMIT_INTERRUPT: u32 = 1 << 5;
/// CR.LBE: internal loopback.
#[cfg(feature = "testing")]
const CR_LOOPBACK: u32 = 1 << 7;
/// The byte `irq_test_begin` sends to find out whether loopback works: a carriage return,
/// invisible where it leaves the machine.
#[cfg(feature = "testing")]
const PROBE: u8 = b'\r';
/// Bound on the self-test's waits for a looped-back byte.
#[cfg(feature = "testing")]
const RECEIVE_POLLS: u32 = 100_000;
/// The console's line rate; only used when the firmware left the UART unconfigured.
const BAUD: u64 = 115_200;

/// A PL011 mapped with device attributes.
pub struct Pl011 {
    registers: Mmio<Registers>,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the virtual address of a PL011's registers, mapped Device-nGnRE for the
    /// rest of the kernel's life, and only this driver may program it.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees a live device mapping of the register block.
        let registers = unsafe { Mmio::new(base) };
        Self { registers }
    }

    /// Make the UART usable for polled transmission. When the firmware already enabled it
    /// (AAVMF does), its line settings stay; otherwise 8N1 at [`BAUD`] from `clock_hz`.
    pub fn init(&self, clock_hz: Option<u64>) {
        let registers = &self.registers;
        registers.imsc.set(0);
        registers.icr.set(ALL_INTERRUPTS);
        if registers.cr.is_set(CR::UARTEN) && registers.cr.is_set(CR::TXE) {
            return;
        }
        registers.cr.set(0);
        if let Some(clock) = clock_hz {
            // Divisor in 64ths: clock / (16 * baud) * 64 = clock * 4 / baud (PL011 TRM 3.3.6).
            let divisor = clock * 4 / BAUD;
            registers.ibrd.set((divisor >> 6) as u32);
            registers.fbrd.set((divisor & 0x3f) as u32);
        }
        registers
            .lcr_h
            .write(LCR_H::WLEN::EightBits + LCR_H::FEN::SET);
        registers
            .cr
            .write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Write bytes, waiting while the transmit FIFO is full.
    pub fn write(&self, bytes: &[u8]) {
        for &byte in bytes {
            while self.registers.fr.is_set(FR::TXFF) {
                core::hint::spin_loop();
            }
            self.registers.dr.set(u32::from(byte));
        }
    }

    /// The next received byte, if the receive FIFO holds one (error flags in DR's upper
    /// bits are dropped: a framing or overrun error still yields the byte read).
    pub fn read(&self) -> Option<u8> {
        if self.registers.fr.is_set(FR::RXFE) {
            return None;
        }
        // why: DR bits 0..8 are the data; bits 8..12 are error flags.
        Some(self.registers.dr.get() as u8)
    }
}

/// The interrupt self-test's part of the driver.
#[cfg(feature = "testing")]
impl Pl011 {
    /// Interrupt self-test: drain, switch on loopback, and find out with one probe byte
    /// whether it works; then enable only the interrupt a sent byte will raise (receive in
    /// loopback, else transmit). Returns whether loopback works. The control register's
    /// old value is returned for [`Pl011::irq_test_end`].
    pub fn irq_test_begin(&self) -> (bool, u32) {
        let registers = &self.registers;
        self.drain();
        let saved = registers.cr.get();
        registers.imsc.set(0);
        registers.cr.set(saved | CR_LOOPBACK);
        self.drain_receiver();
        self.write(&[PROBE]);
        self.drain();
        let loopback = self.wait_received().is_some();
        self.drain_receiver();
        registers.icr.set(ALL_INTERRUPTS);
        registers.imsc.set(if loopback {
            RECEIVE_INTERRUPTS
        } else {
            TRANSMIT_INTERRUPT
        });
        (loopback, saved)
    }

    /// Clear the interrupt condition a sent byte raised: take the looped-back byte, or
    /// acknowledge the transmit interrupt.
    pub fn irq_test_clear(&self, loopback: bool) -> Option<u8> {
        if loopback {
            let byte = self.wait_received();
            self.registers.icr.set(ALL_INTERRUPTS);
            byte
        } else {
            self.drain();
            self.registers.icr.set(ALL_INTERRUPTS);
            None
        }
    }

    /// Restore the control register, interrupts off and cleared.
    pub fn irq_test_end(&self, saved_control: u32) {
        self.drain();
        self.registers.imsc.set(0);
        self.drain_receiver();
        self.registers.icr.set(ALL_INTERRUPTS);
        self.registers.cr.set(saved_control);
    }

    /// A received byte, waiting a bounded time for one.
    fn wait_received(&self) -> Option<u8> {
        for _ in 0..RECEIVE_POLLS {
            if !self.registers.fr.is_set(FR::RXFE) {
                return Some(self.registers.dr.get() as u8);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Read and drop whatever was received (bounded: the FIFO holds 32).
    fn drain_receiver(&self) {
        for _ in 0..64 {
            if self.registers.fr.is_set(FR::RXFE) {
                return;
            }
            self.registers.dr.get();
        }
    }
}

impl Pl011 {
    /// Wait until the last byte has left the shift register (before powering off).
    pub fn drain(&self) {
        // Bounded: a UART stuck busy must not stop a power-off.
        for _ in 0..1_000_000 {
            if !self.registers.fr.is_set(FR::BUSY) {
                return;
            }
            core::hint::spin_loop();
        }
    }
}
