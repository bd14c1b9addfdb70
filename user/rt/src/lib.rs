//! `rt`: the user runtime every Keel program links — its entry point ([`entry!`]), the
//! system-call wrappers over `abi`, printing through `debug_write`, and the panic handler.
//!
//! Principles: the trap instruction (`syscall` / `svc #0`) appears once, in [`raw`]; every
//! wrapper turns the kernel's two result registers into `Result<u64, abi::Error>`. The
//! only other assembly is in [`fault`] (instructions the test suite executes on purpose to
//! check that the kernel kills a faulting thread) and [`counter`] (the one instruction
//! that reads the benchmarks' instruction counter).
//!
//! Capabilities, IPC and notifications are in [`ipc`]; processes, threads, priorities,
//! interrupt lines and devices in [`proc`].
//!
//! The global allocator is [`heap`]: a buddy allocator over memory mapped on demand with
//! `memory_map` (a program uses it by naming `extern crate alloc`).
//!
//! Weak spot: printing goes through the kernel's debug log (which the console server
//! prints as one of its clients), not straight to the console server.
#![no_std]

pub mod counter;
pub mod fault;
pub mod fpu;
pub mod heap;
pub mod ipc;
pub mod print;
pub mod proc;
mod raw;
pub mod registers;
pub mod service;
pub mod sync;
pub mod system;

extern crate alloc;

use abi::{Error, Syscall};

/// A system call's results as a `Result`: the first register is `0` or an error code.
#[inline]
fn result((status, value): (u64, u64)) -> Result<u64, Error> {
    if status == 0 {
        return Ok(value);
    }
    Err(error(status))
}

/// The error a non-zero status names, marked cold: the compiler keeps it off the path of a
/// successful call, which then costs its caller one test and branch.
#[cold]
fn error(status: u64) -> Error {
    // why: the kernel returns only codes of `abi::Error`; anything else is reported as
    // `InvalidArgument` rather than trusted.
    u32::try_from(status)
        .ok()
        .and_then(Error::from_code)
        .unwrap_or(Error::InvalidArgument)
}

/// Any system call by number, with six arguments (for tests of bad numbers).
pub fn syscall(number: u64, arguments: [u64; 6]) -> Result<u64, Error> {
    result(raw::syscall(number, arguments))
}

/// Any system call by number, with the two result registers as the kernel left them (the
/// fuzzer checks that the status is a code of `abi::Error`).
pub fn syscall_registers(number: u64, arguments: [u64; 6]) -> (u64, u64) {
    raw::syscall(number, arguments)
}

/// Any IPC call by number, with the result registers as the kernel left them.
pub fn ipc_registers(number: u64, handle: u64, info: u64, words: [u64; 4]) -> raw::IpcRegisters {
    raw::ipc(number, handle, info, words)
}

pub use raw::IpcRegisters;

/// The null system call: enters the kernel and comes back with 0.
#[inline]
pub fn null() -> Result<u64, Error> {
    result(raw::syscall2(Syscall::Null.number(), 0, 0))
}

/// Print `text` as one line of the kernel log. Returns the bytes written.
pub fn debug_write(text: &[u8]) -> Result<u64, Error> {
    debug_write_raw(text.as_ptr() as u64, text.len() as u64)
}

/// `debug_write` with an arbitrary pointer and length (for tests of bad arguments).
pub fn debug_write_raw(pointer: u64, length: u64) -> Result<u64, Error> {
    syscall(Syscall::DebugWrite.number(), [pointer, length, 0, 0, 0, 0])
}

/// Let other threads of the same priority run.
#[inline]
pub fn yield_now() -> Result<u64, Error> {
    result(raw::syscall2(Syscall::Yield.number(), 0, 0))
}

/// Map `length` bytes of zeroed memory at `address` (`flags`: [`abi::MAP_WRITE`] or
/// [`abi::MAP_EXECUTE`], or 0 for read-only).
pub fn memory_map(address: u64, length: u64, flags: u64) -> Result<u64, Error> {
    syscall(
        Syscall::MemoryMap.number(),
        [address, length, flags, 0, 0, 0],
    )
}

/// Unmap memory made by [`memory_map`].
pub fn memory_unmap(address: u64, length: u64) -> Result<u64, Error> {
    syscall(Syscall::MemoryUnmap.number(), [address, length, 0, 0, 0, 0])
}

/// Test-only: block `ticks` timer ticks inside the kernel with a pattern from `seed` on
/// this thread's kernel stack; the value says whether the pattern held (see
/// [`abi::Syscall::TestSleep`]).
pub fn test_sleep(ticks: u64, seed: u64) -> Result<u64, Error> {
    syscall(Syscall::TestSleep.number(), [ticks, seed, 0, 0, 0, 0])
}

/// Read one of the kernel's benchmark counters (`abi::BenchCounter`).
pub fn bench_counter(which: abi::BenchCounter) -> Result<u64, Error> {
    syscall(
        Syscall::BenchCounter.number(),
        [which as u64, 0, 0, 0, 0, 0],
    )
}

/// `bench_counter` with a raw selector (e.g. `abi::bench::LOCK_COUNTS + level`).
pub fn bench_counter_raw(which: u64) -> Result<u64, Error> {
    syscall(Syscall::BenchCounter.number(), [which, 0, 0, 0, 0, 0])
}

/// End the calling thread with `code`.
pub fn exit(code: i64) -> ! {
    // why: the code travels as the register's bits; the kernel reads it back as `i64`.
    let _ = syscall(Syscall::Exit.number(), [code as u64, 0, 0, 0, 0, 0]);
    // The kernel never returns from `exit`; if it did, do not run on.
    loop {
        core::hint::spin_loop();
    }
}

/// Define the program's entry point: `entry!(main)` with `fn main(argument: u64) -> i64`;
/// the returned value becomes the `exit` code.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Entry point named by `ENTRY(_start)` in `user/user.ld`; the kernel passes one
        /// argument.
        #[unsafe(no_mangle)]
        extern "C" fn _start(argument: u64) -> ! {
            let code: i64 = $main(argument);
            $crate::exit(code)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("user panic: {}", info.message());
    exit(-1)
}
