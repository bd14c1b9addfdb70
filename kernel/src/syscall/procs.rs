//! Process, thread, interrupt and device system calls (`abi` numbers `0x20..=0x2b` and
//! the test-only `0x41`): processes spawned from memory-region
//! capabilities, thread capabilities, priorities, IRQ lines and device ranges.
//!
//! # Killing
//! A killed thread is marked and, if blocked, made ready; it ends at the next point where
//! it is about to return to user mode with nothing held on its kernel stack
//! ([`crate::proc::exit_if_killed`]: after a system call, after a timer preemption, before its
//! first entry). So it never runs user code again, and its blocking call unwinds normally
//! (IPC state is cleaned by the exit path).
//!
//! # Budgets
//! `process_spawn` carves the child's memory budget out of the caller's before anything is
//! built (`obj::budget`); `thread_create` and a spawn's first thread charge the thread's
//! record and kernel stack to the process's budget (`Process::add_thread`), refunded when
//! the thread is freed (`Process::thread_exited`, from the scheduler's reaping of the
//! thread). That charge is the only per-process bound on threads: a process makes as many
//! as its budget pays for, and one that spends its budget cannot keep another process
//! from making threads. The slot for a new handle is made first (`CapSpace::reserve`: the
//! table may grow, charged to the same budget).
//!
//! # Priorities
//! A thread may give another thread (or a new process) at most its own priority, so a
//! process can never raise itself above what it was given.
//!
//! # I/O ports
//! `port_in` / `port_out` are system calls checked against the capability's range rather
//! than a TSS I/O-permission bitmap: nothing per process to switch on every address-space
//! switch, one uniform check for both directions; the cost, a system call per access, is
//! fine for the slow devices (UART, PIT, CMOS) user drivers use ports for.
//!
//! Weak spot: a process's threads are found by a scan of the thread table when it is
//! killed.

use alloc::sync::Arc;

use abi::{DEFAULT_BUDGET, Error, Handle, MAX_SPAWN_CAPS, PAGE_SIZE, PRIORITY_LEVELS, Rights};
use arch_api::{Devices, UserRange};
use kcore::runqueue::Priority;

use crate::obj::budget::THREAD_RECORD_BYTES;
use crate::obj::{Budget, Object, Process, ThreadRef, kind};
use crate::proc::{self, LoadError};
use crate::task::sched;
use crate::{Cpu, irq};

// A thread's charge (`obj::budget::THREAD_BYTES`) covers its record.
const _: () =
    assert!(core::mem::size_of::<crate::task::thread::Thread>() <= THREAD_RECORD_BYTES as usize);

fn current() -> Result<Arc<Process>, Error> {
    sched::current_process().ok_or(Error::InvalidArgument)
}

/// A requested priority: below [`PRIORITY_LEVELS`] and not above the caller's own.
fn priority(raw: u64) -> Result<Priority, Error> {
    if raw >= PRIORITY_LEVELS {
        return Err(Error::InvalidArgument);
    }
    // why: below PRIORITY_LEVELS (32), so it fits a u8.
    let wanted = Priority::new(raw as u8).ok_or(Error::InvalidArgument)?;
    if wanted > sched::current_priority() {
        return Err(Error::PermissionDenied);
    }
    Ok(wanted)
}

fn load_error(error: LoadError) -> Error {
    match error {
        LoadError::NoModule | LoadError::Elf(_) => Error::InvalidArgument,
        LoadError::Map(arch_api::MapError::OutOfMemory)
        | LoadError::Thread(_)
        | LoadError::Budget => Error::OutOfMemory,
        LoadError::Map(_) => Error::InvalidArgument,
    }
}

/// `process_spawn(memory, caps_pointer, caps_count, priority, argument, budget)`.
pub fn process_spawn(
    memory: u64,
    caps_pointer: u64,
    caps_count: u64,
    priority_raw: u64,
    argument: u64,
    budget: u64,
) -> Result<u64, Error> {
    let parent = current()?;
    let image = parent
        .caps
        .lookup::<kind::Memory>(Handle::from_raw(memory), Rights::READ)?;
    if caps_count > MAX_SPAWN_CAPS {
        return Err(Error::InvalidArgument);
    }
    let priority = priority(priority_raw)?;
    // The listed capabilities, looked up (and rights-checked) before anything is made.
    let mut raw = [0u8; MAX_SPAWN_CAPS as usize * 8];
    // why: caps_count <= MAX_SPAWN_CAPS, checked above.
    let raw = &mut raw[..caps_count as usize * 8];
    if !raw.is_empty() {
        if UserRange::new(caps_pointer, raw.len() as u64).is_none() {
            return Err(Error::BadAddress);
        }
        <Cpu as arch_api::Paging>::copy_from_user(raw, caps_pointer)
            .map_err(|_| Error::BadAddress)?;
    }
    let mut listed = [const { None }; MAX_SPAWN_CAPS as usize];
    for (chunk, slot) in raw.chunks_exact(8).zip(listed.iter_mut()) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let handle = Handle::from_raw(u64::from_le_bytes(word));
        *slot = Some(parent.caps.get(handle, Rights::GRANT)?);
    }
    // Room for the child's handle (the table may grow), before anything is built.
    parent.caps.reserve(1)?;
    // The child's budget, out of the parent's; it comes back when the child's record and
    // whatever else was charged to it are freed.
    let share = if budget == 0 { DEFAULT_BUDGET } else { budget };
    let budget = Budget::carve(parent.budget(), share)?;
    // A whole boot module names its process (`ps`); anything else takes the parent's name.
    let name = crate::boot::module_name_of(image.bytes()).unwrap_or(parent.name);
    let (child, thread) =
        proc::spawn_at(name, image.bytes(), argument, priority, budget).map_err(load_error)?;
    // The child's thread starts once its table is filled.
    let filled = (|| {
        let serial = sched::serial_of(thread).ok_or(Error::OutOfMemory)?;
        child.caps.insert(
            Object::Thread(ThreadRef { id: thread, serial }),
            Rights::CONTROL,
        )?;
        for capability in listed.into_iter().flatten() {
            child.caps.insert_capability(capability)?;
        }
        parent
            .caps
            .insert(Object::Process(child.clone()), Rights::ALL)
    })();
    match filled {
        Ok(handle) => {
            sched::start_thread(thread);
            Ok(handle.raw())
        }
        Err(error) => {
            // Its only thread ends before it runs; the process is torn down with it.
            proc::kill(&child);
            Err(error)
        }
    }
}

/// `process_kill(process)`.
pub fn process_kill(handle: u64) -> Result<u64, Error> {
    let target = current()?
        .caps
        .find::<kind::Process>(handle, Rights::CONTROL)?;
    proc::kill(&target);
    Ok(0)
}

/// `process_bind_death(process, notification, bits)`.
pub fn process_bind_death(handle: u64, notification: u64, bits: u64) -> Result<u64, Error> {
    let caller = current()?;
    let target = caller.caps.find::<kind::Process>(handle, Rights::CONTROL)?;
    let notification = caller
        .caps
        .find::<kind::Notification>(notification, Rights::SIGNAL)?;
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    drop(caller);
    proc::bind_death(&target, notification.object().clone(), bits);
    Ok(0)
}

/// `process_status(process)`.
pub fn process_status(handle: u64) -> Result<u64, Error> {
    let target = current()?
        .caps
        .find::<kind::Process>(handle, Rights::READ)?;
    Ok(target.status().encode())
}

/// `thread_create(entry, stack, argument, priority)`.
pub fn thread_create(
    entry: u64,
    stack: u64,
    argument: u64,
    priority_raw: u64,
) -> Result<u64, Error> {
    let caller = current()?;
    if !UserRange::is_user_address(entry) || !UserRange::is_user_stack_pointer(stack) {
        return Err(Error::BadAddress);
    }
    if !stack.is_multiple_of(16) {
        return Err(Error::InvalidArgument);
    }
    let priority = priority(priority_raw)?;
    // Room for the thread's handle (the table may grow), before the thread is made.
    caller.caps.reserve(1)?;
    // The record and kernel stack, charged to the caller's budget; refunded when the
    // thread is freed (`Process::thread_exited`). The budget is the only bound on a
    // process's threads (besides the system's thread table).
    caller.add_thread()?;
    let start = crate::task::thread::Start::User {
        entry,
        stack,
        argument,
    };
    // Started once its handle is in the table (it could end the thread at once).
    let id = match sched::spawn(caller.name, priority, start, Some(caller.clone()), false) {
        Ok(id) => {
            crate::trace::event(crate::trace::Kind::Spawn, id, caller.id, 0);
            id
        }
        Err(_) => {
            caller.thread_exited();
            return Err(Error::OutOfMemory);
        }
    };
    let serial = sched::serial_of(id).ok_or(Error::OutOfMemory)?;
    let thread = ThreadRef { id, serial };
    match caller.caps.insert(Object::Thread(thread), Rights::ALL) {
        Ok(handle) => {
            sched::start_thread(id);
            Ok(handle.raw())
        }
        Err(error) => {
            sched::kill(id, serial);
            Err(error)
        }
    }
}

/// `thread_kill(thread)`.
pub fn thread_kill(handle: u64) -> Result<u64, Error> {
    let thread = current()?
        .caps
        .find::<kind::Thread>(handle, Rights::CONTROL)?;
    if sched::kill(thread.id, thread.serial) {
        Ok(0)
    } else {
        Err(Error::PeerDied)
    }
}

/// `thread_set_priority(thread, priority)`.
pub fn thread_set_priority(handle: u64, priority_raw: u64) -> Result<u64, Error> {
    let thread = current()?
        .caps
        .find::<kind::Thread>(handle, Rights::CONTROL)?;
    let priority = priority(priority_raw)?;
    if sched::set_priority(thread.id, thread.serial, priority) {
        Ok(0)
    } else {
        Err(Error::PeerDied)
    }
}

/// `thread_set_affinity(thread, mask)`: thread 0 is the caller.
pub fn thread_set_affinity(handle: u64, mask: u64) -> Result<u64, Error> {
    let (id, serial) = if handle == 0 {
        let id = sched::current();
        (id, sched::serial_of(id).ok_or(Error::PeerDied)?)
    } else {
        let thread = current()?
            .caps
            .find::<kind::Thread>(handle, Rights::CONTROL)?;
        (thread.id, thread.serial)
    };
    match sched::set_affinity(id, serial, mask) {
        Ok(()) => Ok(0),
        Err(sched::AffinityError::NoOnlineCpu) => Err(Error::InvalidArgument),
        Err(sched::AffinityError::Ended) => Err(Error::PeerDied),
    }
}

/// `irq_bind(irq, notification, bits)`.
pub fn irq_bind(handle: u64, notification: u64, bits: u64) -> Result<u64, Error> {
    let caller = current()?;
    let line = caller.caps.find::<kind::Irq>(handle, Rights::CONTROL)?;
    let notification = caller
        .caps
        .find::<kind::Notification>(notification, Rights::SIGNAL)?;
    drop(caller);
    irq::bind(line, notification.object().clone(), bits)?;
    Ok(0)
}

/// `irq_ack(irq)`.
pub fn irq_ack(handle: u64) -> Result<u64, Error> {
    let line = current()?.caps.find::<kind::Irq>(handle, Rights::CONTROL)?;
    irq::ack(line)?;
    Ok(0)
}

/// The port and width of a `port_in` / `port_out`, checked against the capability.
fn port_access(handle: u64, port: u64, width: u64, required: Rights) -> Result<(u16, u8), Error> {
    let range = current()?
        .caps
        .lookup::<kind::IoPorts>(Handle::from_raw(handle), required)?;
    if !matches!(width, 1 | 2 | 4) {
        return Err(Error::InvalidArgument);
    }
    let port = u16::try_from(port).map_err(|_| Error::InvalidArgument)?;
    let first = u64::from(range.first);
    let end = first + u64::from(range.count);
    if u64::from(port) < first || u64::from(port) + width > end {
        return Err(Error::PermissionDenied);
    }
    // why: width is 1, 2 or 4.
    Ok((port, width as u8))
}

/// `port_in(ports, port, width)`.
pub fn port_in(handle: u64, port: u64, width: u64) -> Result<u64, Error> {
    let (port, width) = port_access(handle, port, width, Rights::READ)?;
    // The port lies in the range of an I/O-port capability with `READ` the caller holds
    // (checked by `port_access`): the trait's contract.
    let value = Cpu::port_read(port, width).ok_or(Error::InvalidArgument)?;
    Ok(u64::from(value))
}

/// `port_out(ports, port, width, value)`.
pub fn port_out(handle: u64, port: u64, width: u64, value: u64) -> Result<u64, Error> {
    let (port, width) = port_access(handle, port, width, Rights::WRITE)?;
    // why: only the low `width` bytes are written (documented).
    let value = value as u32;
    // The port lies in the range of an I/O-port capability with `WRITE` the caller holds
    // (checked by `port_access`): the trait's contract.
    if Cpu::port_write(port, width, value) {
        Ok(0)
    } else {
        Err(Error::InvalidArgument)
    }
}

/// `mmio_map(mmio, address)`.
pub fn mmio_map(handle: u64, address: u64) -> Result<u64, Error> {
    let caller = current()?;
    // The type before the rights (as every lookup): an I/O-port capability (which never
    // has MAP) is the wrong object, not a missing right.
    let (range, rights) = caller
        .caps
        .lookup_rights::<kind::Mmio>(Handle::from_raw(handle), Rights::MAP)?;
    let writable = rights.contains(Rights::WRITE);
    if !address.is_multiple_of(PAGE_SIZE) {
        return Err(Error::InvalidArgument);
    }
    if UserRange::new(address, range.length).is_none() {
        return Err(Error::BadAddress);
    }
    caller.map_device(address, range.base, range.length / PAGE_SIZE, writable)?;
    Ok(0)
}
