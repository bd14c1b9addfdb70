//! `thread_write_registers` and the per-architecture facts a caller needs to build a
//! valid [`abi::UserRegisters`] image (which word is the first argument, the flags and FPU
//! control word a fresh thread has) and a few values the kernel must refuse.

use abi::{Error, Syscall, UserRegisters};

/// Replace the user registers of `thread` (0: the calling thread) with `registers`. On
/// success for the calling thread this does not return: execution continues with the new
/// registers.
pub fn write(thread: u64, registers: &UserRegisters) -> Result<u64, Error> {
    let pointer = core::ptr::from_ref(registers) as u64;
    write_raw(thread, pointer, UserRegisters::SIZE as u64)
}

/// `thread_write_registers` with any pointer and length (for tests of bad arguments).
pub fn write_raw(thread: u64, pointer: u64, length: u64) -> Result<u64, Error> {
    crate::syscall(
        Syscall::ThreadWriteRegisters.number(),
        [thread, pointer, length, 0, 0, 0],
    )
}

#[cfg(target_arch = "x86_64")]
mod facts {
    /// `rdi` is the sixth word of `general` (rax rbx rcx rdx rsi rdi …).
    pub const ARGUMENT_INDEX: usize = 5;
    /// IF and the always-one bit 1.
    pub const DEFAULT_FLAGS: u64 = 0x202;
    /// The MXCSR after reset: all exceptions masked.
    pub const DEFAULT_FPU_CONTROL: u64 = 0x1f80;
    /// IOPL 3: would let user code use `cli`/`in`/`out`.
    pub const PRIVILEGED_FLAGS: u64 = DEFAULT_FLAGS | 3 << 12;
    /// MXCSR bit 31 is reserved (`FXRSTOR` of it would fault in the kernel).
    pub const BAD_FPU_CONTROL: u64 = DEFAULT_FPU_CONTROL | 1 << 31;
    /// The default MXCSR with rounding toward zero (RC = 0b11).
    pub const ROUND_TOWARD_ZERO: u64 = DEFAULT_FPU_CONTROL | 0b11 << 13;
}

#[cfg(target_arch = "aarch64")]
mod facts {
    /// `x0` is the first word of `general`.
    pub const ARGUMENT_INDEX: usize = 0;
    /// EL0t with interrupts unmasked: the kernel supplies the mode bits itself.
    pub const DEFAULT_FLAGS: u64 = 0;
    pub const DEFAULT_FPU_CONTROL: u64 = 0;
    /// EL1h with DAIF masked: user code may never choose its mode or mask interrupts.
    pub const PRIVILEGED_FLAGS: u64 = 0x3c5;
    /// FPCR.IOE: a trap enable the kernel does not support.
    pub const BAD_FPU_CONTROL: u64 = 1 << 8;
    /// FPCR with rounding toward zero (RMode = 0b11).
    pub const ROUND_TOWARD_ZERO: u64 = 0b11 << 22;
}

pub use facts::*;

/// An image that starts `entry(argument)` on `stack` with every other register zero.
pub fn starting_at(entry: u64, stack: u64, argument: u64) -> UserRegisters {
    let mut registers = UserRegisters {
        instruction_pointer: entry,
        stack_pointer: stack,
        flags: DEFAULT_FLAGS,
        fpu_control: DEFAULT_FPU_CONTROL,
        ..UserRegisters::default()
    };
    registers.general[ARGUMENT_INDEX] = argument;
    registers
}
