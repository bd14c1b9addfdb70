//! Capabilities, IPC and notifications: safe wrappers over the system calls of
//! `abi` numbers 8..=22, with the register convention of [`abi::ipc`].

use abi::{Error, Handle, MessageInfo, ObjectType, PAGE_SIZE, Rights, Syscall};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::raw::{self, IpcRegisters};
use crate::{result, syscall};

/// A message as it arrives: the sender's badge (0 for a reply), its info and words 0..4
/// (words 4.. and capability handles are in the IPC buffer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub badge: u64,
    pub info: MessageInfo,
    pub words: [u64; 4],
}

#[inline]
fn status(registers: &IpcRegisters) -> Result<(), Error> {
    result((registers.status, 0)).map(drop)
}

#[inline]
fn received(registers: IpcRegisters) -> Result<Received, Error> {
    status(&registers)?;
    Ok(Received {
        badge: registers.badge,
        info: MessageInfo::from_delivered(registers.info),
        words: registers.words,
    })
}

/// Any IPC call with a raw `info` word (for tests of bad arguments): the status as a
/// `Result`, then the result registers.
pub fn ipc_raw(call: Syscall, handle: u64, info: u64, words: [u64; 4]) -> Result<Received, Error> {
    let registers = raw::ipc(call.number(), handle, info, words);
    received(registers)
}

/// `send`: block until a receiver takes the message.
#[inline]
pub fn send(endpoint: Handle, info: MessageInfo, words: [u64; 4]) -> Result<(), Error> {
    status(&raw::ipc(
        Syscall::Send.number(),
        endpoint.raw(),
        info.raw(),
        words,
    ))
}

/// `call`: send and wait for the reply.
#[inline]
pub fn call(endpoint: Handle, info: MessageInfo, words: [u64; 4]) -> Result<Received, Error> {
    received(raw::ipc(
        Syscall::Call.number(),
        endpoint.raw(),
        info.raw(),
        words,
    ))
}

/// `recv`: wait for a message.
#[inline]
pub fn recv(endpoint: Handle) -> Result<Received, Error> {
    received(raw::ipc(Syscall::Recv.number(), endpoint.raw(), 0, [0; 4]))
}

/// `reply`: answer the last caller.
#[inline]
pub fn reply(info: MessageInfo, words: [u64; 4]) -> Result<(), Error> {
    status(&raw::ipc(Syscall::Reply.number(), 0, info.raw(), words))
}

/// `reply_recv`: answer the last caller (if any), then wait for the next message.
#[inline]
pub fn reply_recv(endpoint: Handle, info: MessageInfo, words: [u64; 4]) -> Result<Received, Error> {
    received(raw::ipc(
        Syscall::ReplyRecv.number(),
        endpoint.raw(),
        info.raw(),
        words,
    ))
}

fn handle_result(value: Result<u64, Error>) -> Result<Handle, Error> {
    value.map(Handle::from_raw)
}

/// `cap_copy`: a copy with `handle`'s rights intersected with `mask`.
pub fn cap_copy(handle: Handle, mask: Rights) -> Result<Handle, Error> {
    cap_copy_raw(handle, u64::from(mask.bits()))
}

/// `cap_copy` with raw mask bits (for tests of bad arguments).
pub fn cap_copy_raw(handle: Handle, mask: u64) -> Result<Handle, Error> {
    handle_result(syscall(
        Syscall::CapCopy.number(),
        [handle.raw(), mask, 0, 0, 0, 0],
    ))
}

/// `cap_delete`.
pub fn cap_delete(handle: Handle) -> Result<(), Error> {
    syscall(Syscall::CapDelete.number(), [handle.raw(), 0, 0, 0, 0, 0]).map(drop)
}

/// `cap_mint`: a badged copy of an unbadged endpoint capability.
pub fn cap_mint(endpoint: Handle, badge: u64, mask: Rights) -> Result<Handle, Error> {
    handle_result(syscall(
        Syscall::CapMint.number(),
        [endpoint.raw(), badge, u64::from(mask.bits()), 0, 0, 0],
    ))
}

/// `cap_identify`: the object type and the rights.
pub fn cap_identify(handle: Handle) -> Result<(ObjectType, Rights), Error> {
    let value = syscall(Syscall::CapIdentify.number(), [handle.raw(), 0, 0, 0, 0, 0])?;
    // why: the kernel packs the type in bits 0..32 and the rights in bits 32..64.
    let kind = ObjectType::from_number(value as u32).ok_or(Error::InvalidArgument)?;
    Ok((kind, Rights::from_bits_truncate((value >> 32) as u32)))
}

/// `endpoint_create`.
pub fn endpoint_create() -> Result<Handle, Error> {
    handle_result(syscall(Syscall::EndpointCreate.number(), [0; 6]))
}

/// `notification_create`.
pub fn notification_create() -> Result<Handle, Error> {
    handle_result(syscall(Syscall::NotificationCreate.number(), [0; 6]))
}

/// `signal`: OR `bits` into the notification.
#[inline]
pub fn signal(notification: Handle, bits: u64) -> Result<(), Error> {
    crate::result(raw::syscall2(
        Syscall::Signal.number(),
        notification.raw(),
        bits,
    ))
    .map(drop)
}

/// `wait`: block until bits are pending; returns them (cleared).
#[inline]
pub fn wait(notification: Handle) -> Result<u64, Error> {
    crate::result(raw::syscall2(Syscall::Wait.number(), notification.raw(), 0))
}

/// `poll`: the pending bits (cleared), without blocking.
pub fn poll(notification: Handle) -> Result<u64, Error> {
    syscall(Syscall::Poll.number(), [notification.raw(), 0, 0, 0, 0, 0])
}

/// `ipc_buffer_set` with a raw address (0: none).
pub fn ipc_buffer_set(address: u64) -> Result<(), Error> {
    syscall(Syscall::IpcBufferSet.number(), [address, 0, 0, 0, 0, 0]).map(drop)
}

/// This thread's IPC buffer: a page of its own writable memory, registered with the
/// kernel. Words are read and written through atomics (the kernel writes the page while
/// the thread is blocked in IPC).
pub struct IpcBuffer {
    address: u64,
}

impl IpcBuffer {
    /// Map a fresh page at `address` (page-aligned, free) and register it.
    pub fn map(address: u64) -> Result<Self, Error> {
        crate::memory_map(address, PAGE_SIZE, abi::MAP_WRITE)?;
        if let Err(error) = ipc_buffer_set(address) {
            let _ = crate::memory_unmap(address, PAGE_SIZE);
            return Err(error);
        }
        Ok(Self { address })
    }

    fn slot(&self, index: usize) -> &AtomicU64 {
        let index = index % MessageInfo::MAX_WORDS;
        crate::fault::user_word(self.address + 8 * index as u64)
    }

    /// Word `index` (modulo 512).
    pub fn word(&self, index: usize) -> u64 {
        self.slot(index).load(Ordering::Relaxed)
    }

    pub fn set_word(&self, index: usize, value: u64) {
        self.slot(index).store(value, Ordering::Relaxed);
    }

    /// Capability handle `index` (0..4) of the message.
    pub fn cap(&self, index: usize) -> Handle {
        Handle::from_raw(self.word(index % MessageInfo::MAX_CAPS))
    }

    pub fn set_cap(&self, index: usize, handle: Handle) {
        self.set_word(index % MessageInfo::MAX_CAPS, handle.raw());
    }

    pub fn address(&self) -> u64 {
        self.address
    }
}
