//! IPC and notification system calls (issue 8, DESIGN.md §6): the kernel side of
//! [`kcore::ipc`], which decides who meets whom; this module moves the registers, the
//! IPC-buffer words and the capabilities, and blocks and wakes the threads.
//!
//! # How a message moves
//!
//! A thread blocked in IPC is inside a system call, so its user registers sit in its trap
//! frame at the top of its kernel stack. The thread that completes a rendezvous writes the
//! result straight into the other thread's frame ([`arch_api::TrapFrame::set_ipc_message`])
//! and wakes it; the woken thread returns to user mode without touching its frame again.
//! Message words 0..4 travel register to register; words 4.. and capabilities go from
//! the sender's IPC buffer page to the receiver's through the kernel's direct map (both
//! frames resolved through their processes, so an unmapped buffer is an error, never a
//! dangling pointer).
//!
//! # Fast path
//!
//! `call` to an endpoint whose receiver waits, and `reply_recv` that finds no next sender,
//! with at most 4 words and no capability: one frame-to-frame register copy and
//! [`sched::switch_to`] — no run queue, no allocation, one address-space switch.
//!
//! # Locks
//!
//! One lock ([`IPC`]) guards the per-thread IPC state, and under it each endpoint's and
//! notification's own lock guards its queue; the scheduler lock is taken last (inside
//! `sched`). Capability tables are never locked under [`IPC`], and no capability object is
//! dropped under it (dropping the last receiver of an endpoint calls
//! [`close_endpoint`], which takes [`IPC`]).
//!
//! Weak spots: one CPU (the lock order above is not enough for SMP: a thread enqueues
//! itself, drops the lock, then blocks); an IPC buffer's frame is found by a scan of its
//! process's page list on each long message.

use alloc::sync::Arc;

use abi::{Error, Handle, MessageInfo, PAGE_SIZE, Rights};
use arch_api::{Paging, TrapFrame as _};
use kcore::ipc::{Ipc, ReceiveOutcome, SendError, SendOutcome, ThreadId};
use spin::Mutex;

use crate::object::{Endpoint, Notification, Object};
use crate::process::Process;
use crate::sched::{self, MAX_THREADS};
use crate::thread::TrapFrame;
use crate::{Cpu, memory::frames};

/// What a thread is blocked on (to unlink it when it dies).
enum Blocker {
    Nothing,
    Endpoint(Arc<Endpoint>),
    Notification(Arc<Notification>),
}

struct State {
    ipc: Ipc<MAX_THREADS>,
    /// Each thread's IPC buffer (user virtual address, 0: none).
    buffers: [u64; MAX_THREADS],
    /// What each thread last queued on (kept until it queues again or exits; only the
    /// queue link in `ipc` says whether it is still queued there).
    blocked_on: [Blocker; MAX_THREADS],
}

static IPC: Mutex<State> = Mutex::new(State {
    ipc: Ipc::new(),
    buffers: [0; MAX_THREADS],
    blocked_on: [const { Blocker::Nothing }; MAX_THREADS],
});

fn status(error: Error) -> u64 {
    u64::from(error.code())
}

/// The endpoint and badge `handle` names, with `required`.
fn endpoint_of(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Result<(Arc<Endpoint>, u64), Error> {
    process.caps.with(
        Handle::from_raw(handle),
        Rights::NONE,
        |capability| match capability.object() {
            // The type is checked before the rights: a notification used as an endpoint
            // is an InvalidArgument whatever rights it has.
            Object::Endpoint(_) if !capability.rights().contains(required) => {
                Err(Error::PermissionDenied)
            }
            Object::Endpoint(endpoint) => Ok((endpoint.endpoint.clone(), endpoint.badge)),
            _ => Err(Error::InvalidArgument),
        },
    )?
}

fn notification_of(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Result<Arc<Notification>, Error> {
    process.caps.with(
        Handle::from_raw(handle),
        Rights::NONE,
        |capability| match capability.object() {
            Object::Notification(_) if !capability.rights().contains(required) => {
                Err(Error::PermissionDenied)
            }
            Object::Notification(notification) => Ok(notification.clone()),
            _ => Err(Error::InvalidArgument),
        },
    )?
}

/// The kernel address of thread `thread`'s IPC buffer page, if it has a live one.
fn buffer_of(thread: ThreadId, process: &Process) -> Option<*mut u64> {
    let address = IPC.lock().buffers.get(thread).copied()?;
    if address == 0 {
        return None;
    }
    let frame = process.anonymous_frame(address)?;
    Some(frames::virtual_address(frame) as *mut u64)
}

fn read_word(buffer: *mut u64, index: usize) -> u64 {
    debug_assert!(index < (PAGE_SIZE / 8) as usize);
    // SAFETY: `buffer` is the direct-map address of a whole frame that is mapped into a
    // live process as its IPC buffer (just resolved), and `index` is below 512 (callers
    // bound it by `MessageInfo::MAX_WORDS`), so the word lies inside that frame.
    unsafe { buffer.add(index).read_volatile() }
}

fn write_word(buffer: *mut u64, index: usize, value: u64) {
    debug_assert!(index < (PAGE_SIZE / 8) as usize);
    // SAFETY: as in `read_word`.
    unsafe { buffer.add(index).write_volatile(value) }
}

/// Whether a message travels in registers only (the fast path's condition).
#[inline(always)]
fn register_only(info: MessageInfo) -> bool {
    info.words() <= MessageInfo::REGISTER_WORDS && info.caps() == 0
}

/// Check what a sender's message needs before anything changes: a well-formed `info`,
/// an IPC buffer when words beyond 4 or capabilities travel, and `GRANT` on each
/// capability. Returns the info.
fn check_message(thread: ThreadId, process: &Process, info: u64) -> Result<MessageInfo, Error> {
    let info = MessageInfo::from_raw(info).ok_or(Error::InvalidArgument)?;
    if register_only(info) {
        return Ok(info);
    }
    if IPC.lock().buffers[thread] == 0 {
        return Err(Error::InvalidArgument);
    }
    let buffer = buffer_of(thread, process).ok_or(Error::BadAddress)?;
    for index in 0..info.caps() {
        let handle = Handle::from_raw(read_word(buffer, index));
        process.caps.with(handle, Rights::GRANT, |_| ())?;
    }
    Ok(info)
}

/// Move the parts of a message that do not travel in registers — words 4.. and
/// capabilities — from `source`'s IPC buffer to `destination`'s, and return the info the
/// receiver sees (counts of what arrived: without a buffer, only the register words;
/// capabilities that no longer resolve or find no free slot are dropped).
fn move_buffer_parts(source: ThreadId, destination: ThreadId, info: MessageInfo) -> u64 {
    if register_only(info) {
        return info.raw();
    }
    let truncated = MessageInfo::new(
        info.label(),
        info.words().min(MessageInfo::REGISTER_WORDS),
        0,
    )
    .unwrap_or_default()
    .raw();
    let (Some(from_process), Some(to_process)) =
        (sched::process_of(source), sched::process_of(destination))
    else {
        return truncated;
    };
    let (Some(from), Some(to)) = (
        buffer_of(source, &from_process),
        buffer_of(destination, &to_process),
    ) else {
        return truncated;
    };
    for index in MessageInfo::REGISTER_WORDS..info.words() {
        write_word(to, index, read_word(from, index));
    }
    let mut moved = 0;
    for index in 0..info.caps() {
        let handle = Handle::from_raw(read_word(from, index));
        let Ok(capability) = from_process.caps.get(handle, Rights::GRANT) else {
            continue;
        };
        let rights = capability.rights();
        if let Ok(new) = to_process.caps.insert(capability.into_object(), rights) {
            write_word(to, moved, new.raw());
            moved += 1;
        }
    }
    MessageInfo::new(info.label(), info.words(), moved)
        .unwrap_or_default()
        .raw()
}

/// The message registers (handle, info, words 0..4) of blocked thread `thread`.
fn saved_message(thread: ThreadId) -> Option<[u64; 6]> {
    sched::with_saved_user_frame(thread, |frame| frame.syscall_arguments())
}

/// What the receiver of a message from `source` (registers `message`) finds in its
/// result registers (info, words), after the buffer parts moved to `destination`.
#[inline(always)]
fn prepare(source: ThreadId, message: [u64; 6], destination: ThreadId) -> (u64, [u64; 4]) {
    let info = match MessageInfo::from_raw(message[1]) {
        // The fast path: nothing outside the registers (no call, no lookups).
        Some(info) if register_only(info) => info.raw(),
        Some(info) => move_buffer_parts(source, destination, info),
        None => 0,
    };
    (info, [message[2], message[3], message[4], message[5]])
}

/// Wake blocked thread `thread` with `error` as its system call's status.
fn wake_with_error(thread: ThreadId, error: Error) {
    sched::wake_with(thread, |frame| frame.set_status(status(error)));
}

/// Wake blocked thread `thread` with status 0 and its other registers as they are.
fn wake_with_success(thread: ThreadId) {
    sched::wake_with(thread, |frame| frame.set_status(0));
}

/// `send` (`call == false`) and `call`.
pub fn send(frame: &mut TrapFrame, call: bool) {
    if let Err(error) = try_send(frame, call) {
        frame.set_status(status(error));
    }
}

fn try_send(frame: &mut TrapFrame, call: bool) -> Result<(), Error> {
    let message = frame.syscall_arguments();
    let (me, process) = sched::current_and_process();
    let process = process.ok_or(Error::InvalidArgument)?;
    let right = if call { Rights::CALL } else { Rights::WRITE };
    let (endpoint, badge) = endpoint_of(&process, message[0], right)?;
    check_message(me, &process, message[1])?;
    drop(process);
    let outcome = {
        let mut state = IPC.lock();
        let mut queue = endpoint.queue.lock();
        let outcome = state.ipc.send(&mut queue, me, badge, call);
        if outcome == Ok(SendOutcome::Queued) {
            state.blocked_on[me] = Blocker::Endpoint(endpoint.clone());
        }
        outcome
    };
    drop(endpoint);
    match outcome {
        Err(SendError::PeerDied) => Err(Error::PeerDied),
        Err(SendError::BadThread) => Err(Error::InvalidArgument),
        Ok(SendOutcome::Delivered { receiver }) => {
            let (info, words) = prepare(me, message, receiver);
            let write = |frame: &mut TrapFrame| frame.set_ipc_message(0, badge, info, words);
            if call {
                // The fast path: run the receiver now; the reply lands in this frame.
                sched::switch_to(receiver, write);
            } else {
                sched::wake_with(receiver, write);
                frame.set_status(0);
            }
            Ok(())
        }
        Ok(SendOutcome::Queued) => {
            // The receiver (or `close_endpoint`) writes this frame, then wakes us.
            sched::block();
            Ok(())
        }
    }
}

/// `recv`.
pub fn recv(frame: &mut TrapFrame) {
    if let Err(error) = try_receive(frame, None) {
        frame.set_status(status(error));
    }
}

/// `reply_recv`: check the receive side, reply (if a live caller waits), receive.
pub fn reply_recv(frame: &mut TrapFrame) {
    let message = frame.syscall_arguments();
    let result = MessageInfo::from_raw(message[1])
        .ok_or(Error::InvalidArgument)
        .and_then(|_| try_receive(frame, Some(message)));
    if let Err(error) = result {
        frame.set_status(status(error));
    }
}

fn try_receive(frame: &mut TrapFrame, reply: Option<[u64; 6]>) -> Result<(), Error> {
    let (me, process) = sched::current_and_process();
    let process = process.ok_or(Error::InvalidArgument)?;
    let handle = frame.syscall_arguments()[0];
    let (endpoint, _) = endpoint_of(&process, handle, Rights::READ)?;
    // The reply's buffer parts must be valid before anything changes (words > 4 or caps);
    // a register-only reply needs no check (`reply_recv` checked its info). With no live
    // caller to answer, the reply part is skipped.
    let reply = match reply {
        Some(message) if MessageInfo::from_raw(message[1]).is_some_and(register_only) => {
            Some(message)
        }
        Some(message) if IPC.lock().ipc.has_caller(me) => {
            check_message(me, &process, message[1])?;
            Some(message)
        }
        _ => None,
    };
    drop(process);
    let (caller, outcome, abandoned) = {
        let mut state = IPC.lock();
        let caller = if reply.is_some() {
            state.ipc.reply(me).ok()
        } else {
            None
        };
        let mut queue = endpoint.queue.lock();
        let (outcome, abandoned) = state
            .ipc
            .receive(&mut queue, me)
            .map_err(|_| Error::InvalidArgument)?;
        if outcome == ReceiveOutcome::Queued {
            state.blocked_on[me] = Blocker::Endpoint(endpoint.clone());
        }
        (caller, outcome, abandoned)
    };
    drop(endpoint);
    if let Some(abandoned) = abandoned {
        wake_with_error(abandoned, Error::PeerDied);
    }
    // The reply to deliver, if a caller was answered.
    let answer = match (caller, reply) {
        (Some(caller), Some(message)) => Some((caller, prepare(me, message, caller))),
        _ => None,
    };
    let write_reply = |(info, words): (u64, [u64; 4])| {
        move |frame: &mut TrapFrame| frame.set_ipc_message(0, 0, info, words)
    };
    match outcome {
        ReceiveOutcome::Received {
            sender,
            badge,
            call,
        } => {
            let message = saved_message(sender).unwrap_or_default();
            let info = match MessageInfo::from_raw(message[1]) {
                Some(info) => move_buffer_parts(sender, me, info),
                None => 0,
            };
            frame.set_ipc_message(
                0,
                badge,
                info,
                [message[2], message[3], message[4], message[5]],
            );
            if !call {
                wake_with_success(sender);
            }
            if let Some((caller, reply)) = answer {
                sched::wake_with(caller, write_reply(reply));
            }
        }
        ReceiveOutcome::Queued => match answer {
            // The fast path back: run the caller now; the next message lands here.
            Some((caller, reply)) => sched::switch_to(caller, write_reply(reply)),
            None => sched::block(),
        },
    }
    Ok(())
}

/// `reply`.
pub fn reply(frame: &mut TrapFrame) {
    let message = frame.syscall_arguments();
    let me = sched::current();
    let result = (|| {
        let process = sched::current_process().ok_or(Error::InvalidArgument)?;
        MessageInfo::from_raw(message[1]).ok_or(Error::InvalidArgument)?;
        match IPC.lock().ipc.reply_slot(me) {
            Some(kcore::ipc::ReplySlot::Caller(_)) => {}
            Some(kcore::ipc::ReplySlot::CallerDied) => {}
            _ => return Err(Error::InvalidArgument),
        }
        check_message(me, &process, message[1])?;
        drop(process);
        let caller = IPC.lock().ipc.reply(me)?;
        let (info, words) = prepare(me, message, caller);
        sched::wake_with(caller, |frame| frame.set_ipc_message(0, 0, info, words));
        Ok(())
    })();
    match result {
        Ok(()) => frame.set_status(0),
        Err(error) => frame.set_status(status(error)),
    }
}

/// `signal(notification, bits)`.
pub fn signal(handle: u64, bits: u64) -> Result<u64, Error> {
    let process = sched::current_process().ok_or(Error::InvalidArgument)?;
    let notification = notification_of(&process, handle, Rights::SIGNAL)?;
    drop(process);
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    let woken = {
        let mut state = IPC.lock();
        let mut word = notification.state.lock();
        let woken = state.ipc.signal(&mut word, bits);
        if let Some((waiter, _)) = woken {
            state.blocked_on[waiter] = Blocker::Nothing;
        }
        woken
    };
    if let Some((waiter, word)) = woken {
        sched::wake_with(waiter, |frame| frame.set_syscall_results(0, word));
    }
    Ok(0)
}

/// `wait(notification)`: the result is written by whoever wakes the thread.
pub fn wait(frame: &mut TrapFrame) {
    let handle = frame.syscall_arguments()[0];
    let me = sched::current();
    let result = (|| {
        let process = sched::current_process().ok_or(Error::InvalidArgument)?;
        let notification = notification_of(&process, handle, Rights::WAIT)?;
        drop(process);
        let mut state = IPC.lock();
        let mut word = notification.state.lock();
        let pending = state
            .ipc
            .wait(&mut word, me)
            .map_err(|_| Error::InvalidArgument)?;
        if pending.is_none() {
            drop(word);
            state.blocked_on[me] = Blocker::Notification(notification.clone());
        }
        Ok(pending)
    })();
    match result {
        Ok(Some(word)) => frame.set_syscall_results(0, word),
        Ok(None) => sched::block(),
        Err(error) => frame.set_syscall_results(status(error), 0),
    }
}

/// `poll(notification)`.
pub fn poll(handle: u64) -> Result<u64, Error> {
    let process = sched::current_process().ok_or(Error::InvalidArgument)?;
    let notification = notification_of(&process, handle, Rights::WAIT)?;
    drop(process);
    let _state = IPC.lock();
    let word = notification.state.lock().poll();
    Ok(word)
}

/// `ipc_buffer_set(address)`.
pub fn buffer_set(address: u64) -> Result<u64, Error> {
    let me = sched::current();
    if address != 0 {
        if !address.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidArgument);
        }
        let process = sched::current_process().ok_or(Error::InvalidArgument)?;
        if !(arch_api::USER_START..arch_api::USER_END).contains(&address)
            || process.anonymous_frame(address).is_none()
        {
            return Err(Error::BadAddress);
        }
        // Writable? Rewrite its first byte with itself through the checked user copy.
        let mut byte = [0u8; 1];
        Cpu::copy_from_user(&mut byte, address).map_err(|_| Error::BadAddress)?;
        Cpu::copy_to_user(address, &byte).map_err(|_| Error::BadAddress)?;
    }
    IPC.lock().buffers[me] = address;
    Ok(0)
}

/// The last receive-capable capability to `endpoint` is gone: wake everything queued on
/// it with `PeerDied`; later sends fail at once.
pub fn close_endpoint(endpoint: &Endpoint) {
    let mut woken = [0usize; MAX_THREADS];
    let mut count = 0;
    {
        let mut state = IPC.lock();
        let mut queue = endpoint.queue.lock();
        state.ipc.close(&mut queue, |thread| {
            if count < MAX_THREADS {
                woken[count] = thread;
                count += 1;
            }
        });
        drop(queue);
        for &thread in &woken[..count] {
            // Only references to this same endpoint, which the caller still holds: dropping
            // them under the lock frees nothing.
            state.blocked_on[thread] = Blocker::Nothing;
        }
    }
    for &thread in &woken[..count] {
        wake_with_error(thread, Error::PeerDied);
    }
}

/// Thread `thread` is ending: take it out of any queue, wake a caller waiting for its
/// reply with `PeerDied`, and forget its IPC state (the id will be reused).
pub fn thread_exiting(thread: ThreadId) {
    if thread >= MAX_THREADS {
        return;
    }
    let (caller, blocker) = {
        let mut state = IPC.lock();
        let blocker = core::mem::replace(&mut state.blocked_on[thread], Blocker::Nothing);
        let caller = match &blocker {
            Blocker::Endpoint(endpoint) => {
                let mut queue = endpoint.queue.lock();
                state.ipc.exit(thread, Some(&mut queue))
            }
            Blocker::Notification(notification) => {
                let mut word = notification.state.lock();
                state.ipc.exit(thread, Some(word.waiters()))
            }
            Blocker::Nothing => state.ipc.exit(thread, None),
        };
        state.buffers[thread] = 0;
        (caller, blocker)
    };
    drop(blocker);
    if let Some(caller) = caller {
        wake_with_error(caller, Error::PeerDied);
    }
}

/// Signal `bits` on `notification` from the kernel itself (a process's death, an interrupt
/// line, issue 8): as `signal`, without a capability. Takes the IPC and scheduler locks;
/// no allocation.
pub fn signal_object(notification: &Notification, bits: u64) {
    let woken = {
        let mut state = IPC.lock();
        let mut word = notification.state.lock();
        let woken = state.ipc.signal(&mut word, bits);
        if let Some((waiter, _)) = woken {
            state.blocked_on[waiter] = Blocker::Nothing;
        }
        woken
    };
    if let Some((waiter, word)) = woken {
        sched::with_saved_user_frame(waiter, |frame| frame.set_syscall_results(0, word));
        sched::wake(waiter);
    }
}

// ---- The fast path (issue 10) ----
//
// `call` to an endpoint whose first waiting thread is a receiver blocked in the kernel, and
// `reply_recv` that answers a caller blocked in the kernel and finds no sender waiting,
// both with a register-only message (at most 4 words, no capability): taken straight from
// the system-call entry ([`crate::syscall::enter`]) before any decoding. Under one
// scheduler lock ([`sched::Handoff`]) it finds the running thread and its process, looks the
// endpoint up without taking a reference, checks every condition before changing
// anything, updates the `kcore` state, copies the registers frame to frame and switches
// to the partner directly (no run queue; the address space only when the partner is in
// another process; FPU state switched eagerly by `Cpu::switch`). Anything else — a
// condition not met, any error — returns `false` having changed nothing, and the slow path
// ([`send`], [`reply_recv`]) handles the call and reports the error.
//
// The endpoint is used through a plain pointer, not an `Arc` clone: the capability that
// names it stays in the running process's table until this thread runs again, because
// only a system call or a death changes a table, and nothing else runs on the one CPU
// (interrupts masked, no switch before `Handoff::switch`); every use ends before that.

/// The endpoint (as a pointer) and badge capability `handle` of `process` names, if it is
/// an endpoint capability with `required`.
#[inline(always)]
fn endpoint_pointer(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Option<(*const Endpoint, u64)> {
    process
        .caps
        .with(
            Handle::from_raw(handle),
            required,
            |capability| match capability.object() {
                Object::Endpoint(endpoint) => {
                    Some((Arc::as_ptr(&endpoint.endpoint), endpoint.badge))
                }
                _ => None,
            },
        )
        .ok()
        .flatten()
}

/// `raw >> 32` of the largest register-only message info: above the 32-bit label lie
/// the word count (lowest), the capability count and reserved bits, so an info is valid
/// and register-only (at most 4 words, no capability) exactly when `raw >> 32` is at most
/// this.
const REGISTER_ONLY_HIGH: u64 = match MessageInfo::new(u32::MAX, MessageInfo::REGISTER_WORDS, 0) {
    Some(info) => info.raw() >> 32,
    None => 0,
};
const _: () = assert!(REGISTER_ONLY_HIGH == MessageInfo::REGISTER_WORDS as u64);

/// Whether `raw` is a valid, register-only message info (one comparison).
#[inline(always)]
fn register_only_raw(raw: u64) -> bool {
    raw >> 32 <= REGISTER_ONLY_HIGH
}

/// Whether the `call` / `reply_recv` in `frame` carries a register-only message (the
/// first condition of the fast path, tested before it is entered).
#[inline(always)]
pub fn fast_candidate(frame: &TrapFrame) -> bool {
    register_only_raw(frame.syscall_arguments()[1])
}

/// `call` on the fast path: `true` when it was taken (the reply is then in `frame`).
#[inline(always)]
pub fn fast_call(frame: &mut TrapFrame) -> bool {
    let message = frame.syscall_arguments();
    if !register_only_raw(message[1]) {
        return false;
    }
    let Some(mut scheduler) = sched::lock_for_handoff() else {
        return false;
    };
    let me = scheduler.current();
    let Some(process) = scheduler.current_process() else {
        return false;
    };
    let Some((endpoint, badge)) = endpoint_pointer(process, message[0], Rights::CALL) else {
        return false;
    };
    // SAFETY: see the section comment: the capability keeps the endpoint alive until
    // this thread runs again, and every use of `endpoint` ends before the switch.
    let endpoint = unsafe { &*endpoint };
    let mut state = IPC.lock();
    let mut queue = endpoint.queue.lock();
    let mut target = None;
    // The receiver must be a user thread blocked in the kernel, to run it at once.
    let Some(receiver) = state.ipc.call_fast(&mut queue, me, |receiver| {
        target = scheduler.blocked_frame(receiver);
        target.is_some()
    }) else {
        return false;
    };
    drop(queue);
    drop(state);
    if let Some(target) = target {
        // SAFETY: `blocked_frame` returned the saved user frame of blocked thread
        // `receiver` under the scheduler lock, still held; nothing else touches it.
        unsafe {
            (*target).set_ipc_message(
                0,
                badge,
                message[1],
                [message[2], message[3], message[4], message[5]],
            )
        };
    }
    scheduler.switch(receiver);
    true
}

/// `reply_recv` on the fast path: `true` when it was taken (the next message is then in
/// `frame`).
#[inline(always)]
pub fn fast_reply_recv(frame: &mut TrapFrame) -> bool {
    let message = frame.syscall_arguments();
    if !register_only_raw(message[1]) {
        return false;
    }
    let Some(mut scheduler) = sched::lock_for_handoff() else {
        return false;
    };
    let me = scheduler.current();
    let Some(process) = scheduler.current_process() else {
        return false;
    };
    let Some((endpoint, _)) = endpoint_pointer(process, message[0], Rights::READ) else {
        return false;
    };
    let mut state = IPC.lock();
    // The thread queues on the endpoint it last queued on (the server loop): its
    // `blocked_on` already names it, so no reference is taken or dropped here.
    if !matches!(&state.blocked_on[me], Blocker::Endpoint(last) if Arc::as_ptr(last) == endpoint) {
        return false;
    }
    // SAFETY: see the section comment (and `blocked_on` holds a reference too).
    let endpoint = unsafe { &*endpoint };
    let mut queue = endpoint.queue.lock();
    let mut target = None;
    // The caller must be a user thread blocked in the kernel, to run it at once.
    let Some(caller) = state.ipc.reply_recv_fast(&mut queue, me, |caller| {
        target = scheduler.blocked_frame(caller);
        target.is_some()
    }) else {
        return false;
    };
    drop(queue);
    drop(state);
    if let Some(target) = target {
        // SAFETY: as in `fast_call`: the saved frame of blocked thread `caller`, scheduler
        // lock held.
        unsafe {
            (*target).set_ipc_message(
                0,
                0,
                message[1],
                [message[2], message[3], message[4], message[5]],
            )
        };
    }
    scheduler.switch(caller);
    true
}

/// The notification (as a pointer) capability `handle` of `process` names, if it is a
/// notification capability with `required`.
#[inline(always)]
fn notification_pointer(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Option<*const Notification> {
    process
        .caps
        .with(
            Handle::from_raw(handle),
            required,
            |capability| match capability.object() {
                Object::Notification(notification) => Some(Arc::as_ptr(notification)),
                _ => None,
            },
        )
        .ok()
        .flatten()
}

/// `signal` on the fast path (no reference taken, one scheduler lock for the lookup and
/// the wake-up): `true` when it was taken (the results are then in `frame`). The woken
/// thread goes through the run queue; the signaller keeps the CPU.
#[inline(always)]
pub fn fast_signal(frame: &mut TrapFrame) -> bool {
    let [handle, bits, ..] = frame.syscall_arguments();
    if bits == 0 {
        return false;
    }
    let Some(mut scheduler) = sched::lock_for_handoff() else {
        return false;
    };
    let Some(process) = scheduler.current_process() else {
        return false;
    };
    let Some(notification) = notification_pointer(process, handle, Rights::SIGNAL) else {
        return false;
    };
    // SAFETY: as for the endpoint in `fast_call`: the capability keeps the notification
    // alive while this thread runs, and every use ends before this function returns.
    let notification = unsafe { &*notification };
    let mut state = IPC.lock();
    let mut word = notification.state.lock();
    // A waiter is woken here only when it is a user thread blocked in `wait`.
    let target = match word.waiters().first() {
        Some(waiter) => match scheduler.blocked_frame(waiter) {
            Some(target) => Some((waiter, target)),
            None => return false,
        },
        None => None,
    };
    let woken = state.ipc.signal(&mut word, bits);
    let released = match (woken, target) {
        (Some((waiter, value)), Some((expected, target))) if waiter == expected => {
            let released = core::mem::replace(&mut state.blocked_on[waiter], Blocker::Nothing);
            drop(word);
            drop(state);
            // SAFETY: `blocked_frame` returned the saved user frame of blocked thread
            // `waiter` under the scheduler lock, still held.
            unsafe { (*target).set_syscall_results(0, value) };
            scheduler.make_ready(waiter);
            released
        }
        // `signal` wakes the queue's head, the thread checked above; nobody waited.
        _ => Blocker::Nothing,
    };
    drop(scheduler);
    // The waiter's reference to the notification (the capability holds another).
    drop(released);
    frame.set_syscall_results(0, 0);
    true
}

/// `wait` on the fast path (no reference taken unless the thread must record what it
/// waits on, one scheduler lock for the lookup): `true` when it was taken.
#[inline(always)]
pub fn fast_wait(frame: &mut TrapFrame) -> bool {
    let handle = frame.syscall_arguments()[0];
    let Some(mut scheduler) = sched::lock_for_handoff() else {
        return false;
    };
    let me = scheduler.current();
    let Some(process) = scheduler.current_process() else {
        return false;
    };
    let Some(pointer) = notification_pointer(process, handle, Rights::WAIT) else {
        return false;
    };
    // SAFETY: as in `fast_signal`.
    let notification = unsafe { &*pointer };
    let mut state = IPC.lock();
    let mut word = notification.state.lock();
    // An error changes nothing: the slow path reports it.
    let Ok(pending) = state.ipc.wait(&mut word, me) else {
        return false;
    };
    drop(word);
    let released = match pending {
        Some(_) => Blocker::Nothing,
        None if matches!(&state.blocked_on[me], Blocker::Notification(last) if Arc::as_ptr(last) == pointer) => {
            Blocker::Nothing
        }
        None => {
            // SAFETY: `pointer` came from `Arc::as_ptr` of the `Arc` in a capability that is
            // still in the table (see above), so the count is at least one; this makes the
            // reference `blocked_on` owns.
            let waited = unsafe {
                Arc::increment_strong_count(pointer);
                Arc::from_raw(pointer)
            };
            core::mem::replace(&mut state.blocked_on[me], Blocker::Notification(waited))
        }
    };
    drop(state);
    drop(scheduler);
    drop(released);
    match pending {
        Some(value) => frame.set_syscall_results(0, value),
        // The signaller writes the results, then wakes this thread.
        None => sched::block(),
    }
    true
}
