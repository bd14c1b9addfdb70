//! The legacy 8259 pair: remapped away from the exception vectors, then fully masked.
//!
//! Keel takes interrupts through the local APIC (and later the I/O APIC); the 8259s are
//! only moved to vectors 0x20–0x2F so a spurious IRQ 7/15 cannot look like an exception.

use x86_64::instructions::port::Port;

use crate::trap::vector;

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;

/// ICW1: initialization, ICW4 follows (edge-triggered, cascaded).
const ICW1_INIT_WITH_ICW4: u8 = 0x11;
/// ICW3 (master): a slave on IRQ 2. ICW3 (slave): its cascade identity 2.
const ICW3_MASTER_SLAVE_ON_IRQ2: u8 = 1 << 2;
const ICW3_SLAVE_IDENTITY: u8 = 2;
/// ICW4: 8086 mode.
const ICW4_8086: u8 = 0x01;
/// OCW3: read the in-service register on the next command-port read.
const OCW3_READ_ISR: u8 = 0x0B;
/// OCW2: non-specific end of interrupt.
const OCW2_EOI: u8 = 0x20;

fn write(port: u16, value: u8) {
    // SAFETY: the 8259 ports; reprogramming the pair while every line is masked and
    // interrupts are off (caller) affects nothing else.
    unsafe { Port::<u8>::new(port).write(value) };
    // Old 8259s need a moment between commands; a write to the POST port 0x80 gives it.
    // SAFETY: port 0x80 is the POST diagnostic port, writes to it have no effect.
    unsafe { Port::<u8>::new(0x80).write(0) };
}

/// Remap the pair to `vector::PIC_BASE..+16` and mask every line.
pub fn remap_and_mask() {
    write(MASTER_DATA, 0xFF);
    write(SLAVE_DATA, 0xFF);
    write(MASTER_COMMAND, ICW1_INIT_WITH_ICW4);
    write(SLAVE_COMMAND, ICW1_INIT_WITH_ICW4);
    write(MASTER_DATA, vector::PIC_BASE as u8);
    write(SLAVE_DATA, vector::PIC_BASE as u8 + 8);
    write(MASTER_DATA, ICW3_MASTER_SLAVE_ON_IRQ2);
    write(SLAVE_DATA, ICW3_SLAVE_IDENTITY);
    write(MASTER_DATA, ICW4_8086);
    write(SLAVE_DATA, ICW4_8086);
    write(MASTER_DATA, 0xFF);
    write(SLAVE_DATA, 0xFF);
}

/// Whether legacy IRQ `irq` (0–15) is really in service (else its vector was spurious).
pub fn in_service(irq: u8) -> bool {
    let (command, bit) = if irq < 8 {
        (MASTER_COMMAND, irq)
    } else {
        (SLAVE_COMMAND, irq - 8)
    };
    // SAFETY: OCW3 then a read of the same command port returns the in-service register;
    // it changes no state of the 8259.
    let isr = unsafe {
        Port::<u8>::new(command).write(OCW3_READ_ISR);
        Port::<u8>::new(command).read()
    };
    isr & (1 << bit) != 0
}

/// End of interrupt on the master (for a spurious IRQ 15, which the master saw as IRQ 2).
pub fn end_of_interrupt_master() {
    write(MASTER_COMMAND, OCW2_EOI);
}
