//! Processes, threads, priorities, interrupt lines and devices: safe wrappers
//! over the system calls of `abi` numbers `0x20..=0x2b` and the test-only `0x41`.

use abi::{Error, Handle, ProcessStatus, Syscall};

use crate::syscall;

fn call(number: Syscall, arguments: [u64; 6]) -> Result<u64, Error> {
    syscall(number.number(), arguments)
}

/// `process_spawn`: a child from the ELF image in the memory capability `image`, its
/// first thread at `priority` with `argument`; `caps` are copied to its slots 1.. in
/// order (slot 0 holds its first thread). The child's memory budget is `budget` bytes out
/// of this process's own (0: `abi::DEFAULT_BUDGET`), back when the child's record is freed.
pub fn process_spawn(
    image: Handle,
    caps: &[Handle],
    priority: u64,
    argument: u64,
    budget: u64,
) -> Result<Handle, Error> {
    process_spawn_raw(
        image.raw(),
        caps.as_ptr() as u64,
        caps.len() as u64,
        priority,
        argument,
        budget,
    )
    .map(Handle::from_raw)
}

/// `process_spawn` with raw arguments (for tests of bad arguments).
pub fn process_spawn_raw(
    image: u64,
    caps_pointer: u64,
    caps_count: u64,
    priority: u64,
    argument: u64,
    budget: u64,
) -> Result<u64, Error> {
    call(
        Syscall::ProcessSpawn,
        [image, caps_pointer, caps_count, priority, argument, budget],
    )
}

/// `process_kill`.
pub fn process_kill(process: Handle) -> Result<(), Error> {
    call(Syscall::ProcessKill, [process.raw(), 0, 0, 0, 0, 0]).map(drop)
}

/// `process_bind_death`: `bits` on `notification` when the process's last thread is gone.
pub fn process_bind_death(process: Handle, notification: Handle, bits: u64) -> Result<(), Error> {
    call(
        Syscall::ProcessBindDeath,
        [process.raw(), notification.raw(), bits, 0, 0, 0],
    )
    .map(drop)
}

/// `process_status`.
pub fn process_status(process: Handle) -> Result<ProcessStatus, Error> {
    let value = call(Syscall::ProcessStatus, [process.raw(), 0, 0, 0, 0, 0])?;
    ProcessStatus::decode(value).ok_or(Error::InvalidArgument)
}

/// `thread_create`: a thread of this process entering `entry(argument)` on the stack
/// whose top is `stack_top` (mapped by the caller, 16-byte aligned).
pub fn thread_create(
    entry: extern "C" fn(u64) -> !,
    stack_top: u64,
    argument: u64,
    priority: u64,
) -> Result<Handle, Error> {
    thread_create_raw(entry as usize as u64, stack_top, argument, priority).map(Handle::from_raw)
}

/// `thread_create` with raw arguments (for tests of bad arguments).
pub fn thread_create_raw(
    entry: u64,
    stack_top: u64,
    argument: u64,
    priority: u64,
) -> Result<u64, Error> {
    call(
        Syscall::ThreadCreate,
        [entry, stack_top, argument, priority, 0, 0],
    )
}

/// `thread_kill`.
pub fn thread_kill(thread: Handle) -> Result<(), Error> {
    call(Syscall::ThreadKill, [thread.raw(), 0, 0, 0, 0, 0]).map(drop)
}

/// `thread_set_priority`.
pub fn thread_set_priority(thread: Handle, priority: u64) -> Result<(), Error> {
    call(
        Syscall::ThreadSetPriority,
        [thread.raw(), priority, 0, 0, 0, 0],
    )
    .map(drop)
}

/// `thread_set_affinity`: the CPUs (bit `i`: CPU index `i`) `thread` may run on;
/// [`Handle::NULL`] names the calling thread.
pub fn thread_set_affinity(thread: Handle, mask: u64) -> Result<(), Error> {
    call(Syscall::ThreadSetAffinity, [thread.raw(), mask, 0, 0, 0, 0]).map(drop)
}

/// `cpu_current`: the index of the CPU running the calling thread.
pub fn cpu_current() -> u64 {
    call(Syscall::CpuCurrent, [0; 6]).unwrap_or(0)
}

/// `irq_bind`: the line signals `bits` on `notification` (and is masked) when it fires.
pub fn irq_bind(irq: Handle, notification: Handle, bits: u64) -> Result<(), Error> {
    call(
        Syscall::IrqBind,
        [irq.raw(), notification.raw(), bits, 0, 0, 0],
    )
    .map(drop)
}

/// `irq_ack`: unmask the line.
pub fn irq_ack(irq: Handle) -> Result<(), Error> {
    call(Syscall::IrqAck, [irq.raw(), 0, 0, 0, 0, 0]).map(drop)
}

/// Test-only `irq_test_raise`: deliver the line as if it fired; whether it signalled.
pub fn irq_test_raise(irq: Handle) -> Result<bool, Error> {
    call(Syscall::IrqTestRaise, [irq.raw(), 0, 0, 0, 0, 0]).map(|value| value != 0)
}

/// `port_in`: `width` (1, 2, 4) bytes from I/O port `port` through the capability.
pub fn port_in(ports: Handle, port: u64, width: u64) -> Result<u32, Error> {
    // why: the kernel returns at most 32 bits.
    call(Syscall::PortIn, [ports.raw(), port, width, 0, 0, 0]).map(|value| value as u32)
}

/// `port_out`: the low `width` bytes of `value` to I/O port `port`.
pub fn port_out(ports: Handle, port: u64, width: u64, value: u64) -> Result<(), Error> {
    call(Syscall::PortOut, [ports.raw(), port, width, value, 0, 0]).map(drop)
}

/// `mmio_map`: map the capability's device range at `address`.
pub fn mmio_map(mmio: Handle, address: u64) -> Result<(), Error> {
    call(Syscall::MmioMap, [mmio.raw(), address, 0, 0, 0, 0]).map(drop)
}

/// A device range mapped by [`Mmio::map`]: 32-bit register access at checked offsets.
pub struct Mmio {
    address: u64,
    length: u64,
}

impl Mmio {
    /// `mmio_map(mmio, address)`; `length` is the capability's range length (the register
    /// accessors check offsets against it).
    pub fn map(mmio: Handle, address: u64, length: u64) -> Result<Self, Error> {
        mmio_map(mmio, address)?;
        Ok(Self { address, length })
    }

    /// The 32-bit register at `offset` (4-byte aligned, inside the range).
    pub fn read32(&self, offset: u64) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.length {
            return None;
        }
        let register = (self.address + offset) as *const u32;
        // SAFETY: `mmio_map` succeeded, so `[address, address + length)` is mapped as
        // device memory in this process for its whole life; the offset is aligned and
        // inside it (checked above); a volatile read is what a device register needs.
        Some(unsafe { core::ptr::read_volatile(register) })
    }
}

impl Mmio {
    /// Write the 32-bit register at `offset` (4-byte aligned, inside the range); `false`
    /// when the offset is not.
    pub fn write32(&self, offset: u64, value: u32) -> bool {
        let in_range =
            offset.is_multiple_of(4) && offset.checked_add(4).is_some_and(|end| end <= self.length);
        if !in_range {
            return false;
        }
        let register = (self.address + offset) as *mut u32;
        // SAFETY: as in `read32`: mapped device memory of this process, aligned offset
        // inside the range, a volatile write as a device register needs.
        unsafe { core::ptr::write_volatile(register, value) };
        true
    }
}

/// `system_info(system, what, index)` into `out`: the words written (`abi::sysinfo`).
pub fn system_info(system: Handle, what: u64, index: u64, out: &mut [u64]) -> Result<usize, Error> {
    let words = out.len().min(abi::sysinfo::WORDS_MAX as usize);
    call(
        Syscall::SystemInfo,
        [
            system.raw(),
            what,
            index,
            out.as_mut_ptr() as u64,
            words as u64,
            0,
        ],
    )
    // why: at most `words`, a usize.
    .map(|count| count as usize)
}

/// `power_off(power, code)`: returns only on an error.
pub fn power_off(power: Handle, code: u64) -> Error {
    match call(Syscall::PowerOff, [power.raw(), code, 0, 0, 0, 0]) {
        Ok(_) => Error::InvalidArgument,
        Err(error) => error,
    }
}

/// `sleep(ticks)`: block 1 to `abi::SLEEP_MAX_TICKS` timer ticks.
pub fn sleep(ticks: u64) -> Result<(), Error> {
    call(Syscall::Sleep, [ticks, 0, 0, 0, 0, 0]).map(drop)
}

/// `process_id(process)`.
pub fn process_id(process: Handle) -> Result<u64, Error> {
    call(Syscall::ProcessId, [process.raw(), 0, 0, 0, 0, 0])
}

/// `log_bind(console, notification, bits)`: take the kernel log (see `abi::Syscall::LogBind`).
pub fn log_bind(console: Handle, notification: Handle, bits: u64) -> Result<(), Error> {
    call(
        Syscall::LogBind,
        [console.raw(), notification.raw(), bits, 0, 0, 0],
    )
    .map(drop)
}

/// `log_read(console, buffer)`: the bytes of kernel log moved into `out`.
pub fn log_read(console: Handle, out: &mut [u8]) -> Result<usize, Error> {
    call(
        Syscall::LogRead,
        [
            console.raw(),
            out.as_mut_ptr() as u64,
            out.len() as u64,
            0,
            0,
            0,
        ],
    )
    // why: at most `out.len()`.
    .map(|count| count as usize)
}
