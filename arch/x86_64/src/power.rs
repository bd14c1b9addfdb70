//! Stopping the machine: QEMU's `isa-debug-exit` device, then a halt loop.

use arch_api::ExitCode;
use x86_64::instructions::port::Port;

/// The port QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04` listens on. QEMU exits
/// with status `(value << 1) | 1`; the xtask turns that back into `value`.
const DEBUG_EXIT_PORT: u16 = 0xF4;

/// Ask QEMU to exit with `code`; on a machine without the device, halt forever.
pub fn power_off(code: ExitCode) -> ! {
    // SAFETY: port 0xF4 is the isa-debug-exit device under QEMU, which the xtask always
    // adds; elsewhere it is unassigned on PC-compatible machines and the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(u32::from(code as u8)) };
    halt_forever()
}

/// Mask interrupts and halt; NMIs may still wake the CPU, so loop.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; nothing is expected to run after it.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
