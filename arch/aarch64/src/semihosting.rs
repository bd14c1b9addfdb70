//! Arm semihosting: the console before the UART is known, and the way QEMU learns the
//! kernel's exit code.
//!
//! A semihosting call is `hlt #0xf000` with the operation in `w0` and a parameter (usually a
//! pointer to a block) in `x1` (Arm "Semihosting for AArch32 and AArch64", §2). QEMU answers
//! it when started with `-semihosting-config enable=on`; otherwise the `hlt` is an undefined
//! instruction. The trap dispatcher recognises that case ([`INSTRUCTION`]), marks semihosting
//! unavailable and skips the call, so every function here simply returns when semihosting is
//! off.

use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::ExitCode;

/// The encoding of `hlt #0xf000` (HLT: `0xd4400000 | imm16 << 5`).
pub const INSTRUCTION: u32 = 0xd440_0000 | (0xf000 << 5);

/// `SYS_WRITEC`: write the byte `x1` points to.
const SYS_WRITEC: u64 = 0x03;
/// `SYS_WRITE0`: write the NUL-terminated string `x1` points to.
const SYS_WRITE0: u64 = 0x04;
/// `SYS_EXIT`: on AArch64 `x1` points to `[reason, subcode]`.
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: with this reason QEMU exits with status `subcode`.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Set once a semihosting call trapped as an undefined instruction.
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Called by the trap dispatcher when a semihosting call turned out to be undefined.
pub fn mark_unavailable() {
    UNAVAILABLE.store(true, Ordering::Relaxed);
}

fn available() -> bool {
    !UNAVAILABLE.load(Ordering::Relaxed)
}

/// One semihosting call. Returns `x0` (all ones when the call was skipped as undefined).
fn call(operation: u64, parameter: *const u8) -> u64 {
    let result;
    // SAFETY: the semihosting host reads (never writes, for the operations used here) the
    // memory `parameter` points to, which the callers keep alive for the call; with
    // semihosting disabled the instruction traps and the dispatcher skips it, setting x0.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") operation => result,
            in("x1") parameter,
            options(nostack, readonly),
        );
    }
    result
}

/// Write bytes to the host's console. NUL bytes are written one by one with `SYS_WRITEC`.
pub fn write(bytes: &[u8]) {
    let mut buffer = [0u8; 64];
    let mut filled = 0;
    for &byte in bytes {
        if !available() {
            return;
        }
        if byte == 0 {
            flush(&mut buffer, &mut filled);
            call(SYS_WRITEC, &byte);
            continue;
        }
        buffer[filled] = byte;
        filled += 1;
        if filled == buffer.len() - 1 {
            flush(&mut buffer, &mut filled);
        }
    }
    flush(&mut buffer, &mut filled);
}

fn flush(buffer: &mut [u8; 64], filled: &mut usize) {
    if *filled == 0 || !available() {
        *filled = 0;
        return;
    }
    buffer[*filled] = 0;
    call(SYS_WRITE0, buffer.as_ptr());
    *filled = 0;
}

/// Ask the host to exit with `code`. Returns only when semihosting is unavailable.
pub fn exit(code: ExitCode) {
    if !available() {
        return;
    }
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    call(SYS_EXIT, block.as_ptr().cast());
}
