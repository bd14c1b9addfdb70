//! IPC and notification system calls (DESIGN.md §6): the kernel side of
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
//! with at most 4 words and no capability: one frame-to-frame register copy and a direct
//! switch — no run queue, no allocation, one address-space switch ([`fast`]).
//!
//! # Locks
//!
//! One lock ([`IPC`], level `ipc state` in `crate::sync`) guards the per-thread IPC state
//! and, through the key it keeps ([`crate::obj::endpoint::IpcCell`]), every endpoint's
//! queue and notification's word: the links of those queues are in the per-thread state,
//! so the objects need no lock of their own, and one CPU at a time changes any of them.
//! The slow path takes the scheduler lock only after releasing it (inside `sched`), the
//! fast path under it. Capability objects dropped here queue their follow-up work
//! (`obj::pending`), which [`run_pending`] does with no lock held.
//!
//! # The per-thread tables
//! [`State`]'s tables are indexed by thread id and grow on demand, with the ids: a thread's
//! first slow-path IPC operation makes room for its id ([`make_room`]) before it takes
//! the lock; the bigger storage is allocated with no lock held and swapped in under the
//! IPC lock, which moves the entries without allocating. A thread that never used IPC has
//! no state to clear. The fast paths refuse an id beyond the tables (the slow path then
//! makes room), and every other id they meet sits in a queue or a reply slot, so within
//! them. Tables never shrink.
//!
//! # Blocking on more than one CPU
//! A thread that queues itself marks itself blocked ([`sched::prepare_block`]) before it
//! drops the IPC lock, then switches away ([`sched::block`]); a waker on another CPU that
//! finds it in between writes its frame and makes it ready, and it runs once it has
//! switched away (`task::sched`'s module docs). The fast paths block under the scheduler
//! lock they hold ([`sched::Handoff`]).
//!
//! # What a thread holds
//! [`State::blocked_on`] keeps a reference to the endpoint a thread waits on, and to the
//! endpoint of a call it has taken and not answered; nothing else, so an endpoint whose
//! last capability is deleted is freed (and its budget charge returned) once no thread
//! waits on it and no call taken from it is unanswered. A thread waiting on a notification
//! holds no reference: it records the notification's address ([`Waited`]), and the
//! notification's last capability closing wakes every waiter with `PeerDied` before the
//! notification can be freed ([`close_notification`]), so it is freed (and its charge
//! returned) at once.

pub mod fast;

use alloc::sync::Arc;

use crate::Cpu;
use crate::mm::frames;
use crate::obj::capspace::Receipt;
use crate::obj::endpoint::{IpcCell, IpcKey};
use crate::obj::{Endpoint, Notification, Process, kind, pending};
use crate::sync::{Lock, level};
use crate::task::sched;
use crate::task::thread::{self, Event, TrapFrame};
use crate::trace::{self, Kind};
use abi::{Error, Handle, MessageInfo, PAGE_SIZE, Rights};
use alloc::vec::Vec;
use arch_api::{Paging, TrapFrame as _};
use core::sync::atomic::{AtomicUsize, Ordering};
use kcore::ipc::{
    EndpointQueue, Ipc, NotificationState, ReceiveOutcome, SendError, SendOutcome, ThreadId,
};

/// An object's identity in trace records: its address.
#[inline(always)]
fn trace_id<T>(object: *const T) -> u64 {
    object as usize as u64
}

/// What a thread waits on or serves ([`State::blocked_on`]).
enum Blocker {
    Nothing,
    Endpoint(Arc<Endpoint>),
    Notification(Waited),
}

/// The notification a thread waits on, by address, with no reference: meaningful only
/// while the thread is queued on it (`ipc.is_queued`), because a `signal` that dequeues it
/// may leave this behind. While it is queued the notification is alive: a thread queues
/// only through a capability, counted until it has queued, and the work that closes the
/// notification once its last capability is gone unlinks every waiter under the IPC lock
/// before it drops its own reference ([`close_notification`]).
struct Waited(core::ptr::NonNull<Notification>);

impl Waited {
    #[inline(always)]
    fn new(notification: &Notification) -> Self {
        Self(core::ptr::NonNull::from(notification))
    }
}

// SAFETY: an address of a `Sync` object, dereferenced (shared) only under the IPC lock
// while its thread is queued on it (`Waited`'s docs), on whichever CPU holds the lock.
unsafe impl Send for Waited {}

struct State {
    /// Thread ids `0..ipc.capacity()`, like the two tables below (module docs).
    ipc: Ipc,
    /// The key to the endpoints' queues and the notifications' words ([`IpcCell`]): held
    /// by whoever holds this lock.
    key: IpcKey,
    /// Each thread's IPC buffer.
    buffers: Vec<Buffer>,
    /// What each thread waits on or serves: the endpoint (a reference) or notification
    /// (an address, [`Waited`]) it is queued on, to unlink it if it dies; else the
    /// endpoint it took the call it has yet to answer from (the `reply_recv` fast path
    /// finds its endpoint here; only the queue link in `ipc` says whether the thread is
    /// queued there). A thread that neither
    /// waits nor serves holds nothing, so deleting an object's last capability frees it
    /// once no thread waits on it and no call taken from it is unanswered. A receiver
    /// keeps its reference when it takes a call (it serves) and answering with
    /// `reply_recv` on the same endpoint keeps it again (it queues there), so neither fast
    /// path changes a count; `reply`, a plain message received and every wake-up drop it.
    blocked_on: Vec<Blocker>,
    /// With each endpoint `blocked_on` names, set with it: the receipt of the lookup through
    /// which the thread received on it ([`Receipt::NONE`] for a sender, which runs again only
    /// once its reference is released or taken). While its handle still names that
    /// capability, the `reply_recv` fast path needs no lookup.
    receipts: Vec<Receipt>,
}

impl State {
    /// The state machine and the key to the objects' cells, borrowed together.
    #[inline(always)]
    fn split(&mut self) -> (&mut Ipc, &mut IpcKey) {
        (&mut self.ipc, &mut self.key)
    }

    /// What `thread` held (nothing beyond the tables), now nothing: drop it with no lock
    /// held, as it may free what it names, or under the locks where the caller holds
    /// another reference to the same object.
    fn release(&mut self, thread: ThreadId) -> Blocker {
        match self.blocked_on.get_mut(thread) {
            Some(held) => core::mem::replace(held, Blocker::Nothing),
            None => Blocker::Nothing,
        }
    }

    /// `thread` waits on or serves `blocker` from now on; what it held before is returned,
    /// to be dropped with no lock held.
    fn hold(&mut self, thread: ThreadId, blocker: Blocker) -> Blocker {
        core::mem::replace(&mut self.blocked_on[thread], blocker)
    }

    /// [`State::hold`] for a thread the state machine has an entry for (it just queued it),
    /// with no bounds test.
    ///
    /// # Safety
    /// `thread < self.ipc.capacity()`. Every table here is that long: [`make_room`] grows
    /// them together, under this lock, to the same length.
    #[inline(always)]
    unsafe fn hold_served(&mut self, thread: ThreadId, blocker: Blocker) -> Blocker {
        debug_assert_eq!(self.blocked_on.len(), self.ipc.capacity());
        debug_assert!(thread < self.ipc.capacity());
        // SAFETY: `thread < ipc.capacity() == blocked_on.len()` (the contract above).
        core::mem::replace(
            unsafe { self.blocked_on.get_unchecked_mut(thread) },
            blocker,
        )
    }

    /// `thread` queues on `endpoint`, looked up as `receipt` says: [`State::hold`] with a
    /// new reference, unless it holds one to it already (the endpoint of the call it
    /// served), whose receipt is then replaced.
    fn hold_endpoint(
        &mut self,
        thread: ThreadId,
        endpoint: &Arc<Endpoint>,
        receipt: Receipt,
    ) -> Blocker {
        let kept = matches!(
            &self.blocked_on[thread],
            Blocker::Endpoint(held) if Arc::ptr_eq(held, endpoint)
        );
        // SAFETY: `thread < blocked_on.len()`: its entry was just found.
        unsafe { self.set_receipt(thread, receipt) };
        if kept {
            Blocker::Nothing
        } else {
            self.hold(thread, Blocker::Endpoint(endpoint.clone()))
        }
    }

    /// Keep `receipt` with the endpoint `thread`'s `blocked_on` names from now on.
    ///
    /// # Safety
    /// As [`State::receipt`].
    #[inline(always)]
    unsafe fn set_receipt(&mut self, thread: ThreadId, receipt: Receipt) {
        debug_assert_eq!(self.receipts.len(), self.blocked_on.len());
        debug_assert!(thread < self.blocked_on.len());
        // SAFETY: `thread < blocked_on.len() == receipts.len()` (the contract).
        unsafe { *self.receipts.get_unchecked_mut(thread) = receipt };
    }

    /// The receipt kept with the endpoint `thread`'s `blocked_on` names ([`State::receipts`]).
    ///
    /// # Safety
    /// `thread < self.blocked_on.len()`: [`make_room`] grows every table here together, under
    /// this lock, to the same length.
    #[inline(always)]
    unsafe fn receipt(&self, thread: ThreadId) -> Receipt {
        debug_assert_eq!(self.receipts.len(), self.blocked_on.len());
        debug_assert!(thread < self.blocked_on.len());
        // SAFETY: `thread < blocked_on.len() == receipts.len()` (the contract above).
        unsafe { *self.receipts.get_unchecked(thread) }
    }
}

/// A thread's IPC buffer: its user address (0: none) and the frame behind it as last
/// resolved, valid while the process's unmap generation is still `unmaps` (a cache: the
/// page list is searched only after an unmap in that process).
#[derive(Clone, Copy)]
struct Buffer {
    address: u64,
    frame: u64,
    unmaps: u64,
}

impl Buffer {
    const NONE: Buffer = Buffer {
        address: 0,
        frame: 0,
        unmaps: u64::MAX,
    };
}

static IPC: Lock<State> = Lock::new(
    level::IPC,
    State {
        ipc: Ipc::new(),
        // SAFETY: the one key, kept inside the IPC lock for the kernel's life.
        key: unsafe { IpcKey::new() },
        buffers: Vec::new(),
        blocked_on: Vec::new(),
        receipts: Vec::new(),
    },
);

/// Thread ids the tables serve: `ipc.capacity()` as last set under the lock (read with no
/// lock by [`make_room`]).
static CAPACITY: AtomicUsize = AtomicUsize::new(0);

/// The bytes of each allocation the per-thread tables keep (they grow and never shrink),
/// for the invariant checker (test build), which counts them apart from the heap in use.
#[cfg(feature = "testing")]
pub fn table_storage(each: &mut dyn FnMut(usize)) {
    let state = IPC.lock();
    each(state.ipc.storage_bytes());
    each(state.buffers.capacity() * core::mem::size_of::<Buffer>());
    each(state.blocked_on.capacity() * core::mem::size_of::<Blocker>());
    each(state.receipts.capacity() * core::mem::size_of::<Receipt>());
}

/// Make the tables serve thread ids below `count` now (the test build's checker makes
/// room before it takes its baseline): `OutOfMemory` when the heap cannot hold them.
#[cfg(feature = "testing")]
pub fn reserve(count: usize) -> Result<(), Error> {
    make_room(count.saturating_sub(1))
}

/// Make the tables serve thread id `thread` (module docs), with no lock held:
/// `OutOfMemory` when the heap cannot hold them.
fn make_room(thread: ThreadId) -> Result<(), Error> {
    if thread < CAPACITY.load(Ordering::Acquire) {
        return Ok(());
    }
    if thread >= sched::MAX_THREAD_IDS {
        return Err(Error::InvalidArgument);
    }
    // Room for every id the scheduler serves now, so one growth covers many threads.
    let capacity = (thread + 1)
        .max(sched::capacity())
        .next_power_of_two()
        .min(sched::MAX_THREAD_IDS);
    let spare = (|| {
        Ok::<_, alloc::collections::TryReserveError>((
            kcore::ipc::Spare::room(capacity)?,
            kcore::table::room::<Buffer>(capacity)?,
            kcore::table::room::<Blocker>(capacity)?,
            kcore::table::room::<Receipt>(capacity)?,
        ))
    })()
    .map_err(|_| Error::OutOfMemory)?;
    let left_over = {
        let mut state = IPC.lock();
        let (ipc, buffers, blocked_on, receipts) = spare;
        let left_over = (
            state.ipc.grow(ipc, capacity),
            kcore::table::move_into(&mut state.buffers, buffers, capacity, || Buffer::NONE),
            kcore::table::move_into(&mut state.blocked_on, blocked_on, capacity, || {
                Blocker::Nothing
            }),
            kcore::table::move_into(&mut state.receipts, receipts, capacity, || Receipt::NONE),
        );
        CAPACITY.store(state.ipc.capacity(), Ordering::Release);
        left_over
    };
    // The old storage (or the unused spare) is freed with no lock held.
    drop(left_over);
    Ok(())
}

fn status(error: Error) -> u64 {
    u64::from(error.code())
}

/// The endpoint and badge `handle` names, with `required`.
fn endpoint_of(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Result<(Arc<Endpoint>, u64), Error> {
    process
        .caps
        .with::<kind::Endpoint, _>(Handle::from_raw(handle), required, |endpoint| {
            (endpoint.endpoint.clone(), endpoint.badge)
        })
}

/// The kernel address of thread `thread`'s IPC buffer page: `InvalidArgument` when it set
/// none, `BadAddress` when the page is no longer mapped.
fn buffer_of(thread: ThreadId, process: &Process) -> Result<*mut u64, Error> {
    let unmaps = process.unmaps();
    let buffer = IPC
        .lock()
        .buffers
        .get(thread)
        .copied()
        .ok_or(Error::InvalidArgument)?;
    if buffer.address == 0 {
        return Err(Error::InvalidArgument);
    }
    let frame = if buffer.unmaps == unmaps && buffer.frame != 0 {
        buffer.frame
    } else {
        let frame = process
            .anonymous_frame(buffer.address)
            .ok_or(Error::BadAddress)?;
        let mut state = IPC.lock();
        let entry = &mut state.buffers[thread];
        if entry.address == buffer.address {
            entry.frame = frame;
            entry.unmaps = unmaps;
        }
        frame
    };
    Ok(frames::virtual_address(frame) as *mut u64)
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
    let buffer = buffer_of(thread, process)?;
    for index in 0..info.caps() {
        let handle = Handle::from_raw(read_word(buffer, index));
        process.caps.check(handle, Rights::GRANT)?;
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
    let (Ok(from), Ok(to)) = (
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
    thread::count(me, Event::Ipc);
    let process = process.ok_or(Error::InvalidArgument)?;
    make_room(me)?;
    let right = if call { Rights::CALL } else { Rights::WRITE };
    let (endpoint, badge) = endpoint_of(&process, message[0], right)?;
    check_message(me, &process, message[1])?;
    drop(process);
    let (outcome, released) = {
        let mut state = IPC.lock();
        let (ipc, key) = state.split();
        let outcome = ipc.send(endpoint.queue.open(key), me, badge, call);
        let released = match outcome {
            Ok(SendOutcome::Queued) => state.hold_endpoint(me, &endpoint, Receipt::NONE),
            // A receiver that takes a call serves it and keeps its reference; one that
            // takes a plain message drops it.
            Ok(SendOutcome::Delivered { receiver }) if !call => state.release(receiver),
            _ => Blocker::Nothing,
        };
        // Queued, or a call delivered (it awaits the reply): a waker may come as soon as
        // the IPC lock is dropped.
        if matches!(outcome, Ok(SendOutcome::Queued)) || (call && outcome.is_ok()) {
            sched::prepare_block();
        }
        (outcome, released)
    };
    // No lock held: this may free what it names.
    drop(released);
    if trace::on() {
        let id = trace_id(Arc::as_ptr(&endpoint));
        if let Ok(outcome) = outcome {
            trace::event(Kind::Send, me, id, badge);
            if let SendOutcome::Delivered { receiver } = outcome {
                trace::event(Kind::Receive, receiver, id, me as u64);
            }
        }
    }
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
    thread::count(me, Event::Ipc);
    let process = process.ok_or(Error::InvalidArgument)?;
    make_room(me)?;
    let handle = frame.syscall_arguments()[0];
    let (endpoint, receipt) = process.caps.receiver(handle)?;
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
    // References that go (what this thread held, a plain sender's), dropped with no lock
    // held: they may free what they name.
    let released: [Blocker; 2];
    let (caller, outcome, abandoned) = {
        let mut state = IPC.lock();
        let caller = if reply.is_some() {
            state.ipc.reply(me).ok()
        } else {
            None
        };
        let (ipc, key) = state.split();
        let (outcome, abandoned) = ipc
            .receive(endpoint.queue.open(key), me)
            .map_err(|_| Error::InvalidArgument)?;
        released = match outcome {
            ReceiveOutcome::Queued => {
                sched::prepare_block();
                [
                    state.hold_endpoint(me, &endpoint, receipt),
                    Blocker::Nothing,
                ]
            }
            // This thread serves the caller: the caller's reference to the endpoint,
            // taken when it queued, is its own now, with this lookup's receipt.
            ReceiveOutcome::Received {
                sender, call: true, ..
            } => {
                let taken = state.release(sender);
                // SAFETY: `receive` succeeded, so the tables have an entry for `me`.
                unsafe { state.set_receipt(me, receipt) };
                [state.hold(me, taken), Blocker::Nothing]
            }
            ReceiveOutcome::Received {
                sender,
                call: false,
                ..
            } => [state.release(me), state.release(sender)],
        };
        (caller, outcome, abandoned)
    };
    drop(released);
    if trace::on() {
        if let ReceiveOutcome::Received { sender, .. } = outcome {
            trace::event(
                Kind::Receive,
                me,
                trace_id(Arc::as_ptr(&endpoint)),
                sender as u64,
            );
        }
        if let (Some(caller), Some(_)) = (caller, reply) {
            trace::event(Kind::Reply, me, caller as u64, 0);
        }
    }
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
    thread::count(me, Event::Ipc);
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
        // Answered (or its caller dead), this thread serves nothing any more.
        let (caller, released) = {
            let mut state = IPC.lock();
            let caller = state.ipc.reply(me);
            (caller, state.release(me))
        };
        // No lock held: this may free the endpoint the call came through.
        drop(released);
        let caller = caller?;
        trace::event(Kind::Reply, me, caller as u64, 0);
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
    let (me, process) = sched::current_and_process();
    thread::count(me, Event::Notification);
    let process = process.ok_or(Error::InvalidArgument)?;
    let notification = process
        .caps
        .find::<kind::Notification>(handle, Rights::SIGNAL)?;
    drop(process);
    if bits == 0 {
        return Err(Error::InvalidArgument);
    }
    signal_object(&notification, bits);
    Ok(0)
}

/// `wait(notification)`: the result is written by whoever wakes the thread.
pub fn wait(frame: &mut TrapFrame) {
    let handle = frame.syscall_arguments()[0];
    let me = sched::current();
    thread::count(me, Event::Notification);
    let result = (|| {
        let process = sched::current_process().ok_or(Error::InvalidArgument)?;
        make_room(me)?;
        let notification = process
            .caps
            .find::<kind::Notification>(handle, Rights::WAIT)?;
        drop(process);
        let mut state = IPC.lock();
        let (ipc, key) = state.split();
        let pending = ipc
            .wait(notification.state.open(key), me)
            .map_err(|_| Error::InvalidArgument)?;
        if pending.is_none() {
            state.blocked_on[me] = Blocker::Notification(Waited::new(&notification));
            sched::prepare_block();
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
    let notification = process
        .caps
        .find::<kind::Notification>(handle, Rights::WAIT)?;
    drop(process);
    let mut state = IPC.lock();
    let word = notification.state.open(&mut state.key).poll();
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
        if !arch_api::UserRange::is_user_address(address)
            || process.anonymous_frame(address).is_none()
        {
            return Err(Error::BadAddress);
        }
        // Writable? Rewrite its first byte with itself through the checked user copy.
        let mut byte = [0u8; 1];
        Cpu::copy_from_user(&mut byte, address).map_err(|_| Error::BadAddress)?;
        Cpu::copy_to_user(address, &byte).map_err(|_| Error::BadAddress)?;
    }
    make_room(me)?;
    if let Some(buffer) = IPC.lock().buffers.get_mut(me) {
        *buffer = Buffer {
            address,
            ..Buffer::NONE
        };
    }
    Ok(0)
}

/// The last receive-capable capability to `endpoint` is gone: wake everything queued on
/// it with `PeerDied`; later sends fail at once.
pub fn close_endpoint(endpoint: &Endpoint) {
    close_queue(
        &endpoint.queue,
        |queue| queue,
        |thread| wake_with_error(thread, Error::PeerDied),
    );
}

/// The last capability to `notification` is gone: wake every thread waiting on it with
/// `PeerDied` (no thread can signal it through a capability any more, and none can start
/// waiting). Its waiters hold no reference ([`Waited`]): the caller's keeps it alive until
/// the last is unlinked.
pub fn close_notification(notification: &Notification) {
    close_queue(&notification.state, NotificationState::waiters, |thread| {
        sched::wake_with(thread, |frame| {
            frame.set_syscall_results(status(Error::PeerDied), 0)
        })
    });
}

/// Close the queue `queue` finds in `cell` (an endpoint's, or a notification's waiters)
/// and pass every thread that was queued there to `wake`, with no lock held. A batch at a
/// time under the IPC lock (no allocation): no thread joins a closed queue meanwhile.
fn close_queue<T>(
    cell: &IpcCell<T>,
    queue: fn(&mut T) -> &mut EndpointQueue,
    wake: impl Fn(ThreadId),
) {
    const BATCH: usize = 64;
    loop {
        let mut woken = [0usize; BATCH];
        let mut count = 0;
        let more = {
            let mut state = IPC.lock();
            let (ipc, key) = state.split();
            let more = ipc.close_at_most(queue(cell.open(key)), BATCH, |thread| {
                woken[count] = thread;
                count += 1;
            });
            for &thread in &woken[..count] {
                // What a woken thread held names the closed object: a reference to an
                // endpoint the caller still holds (dropping it frees nothing) or a
                // notification's address.
                state.blocked_on[thread] = Blocker::Nothing;
            }
            more
        };
        for &thread in &woken[..count] {
            wake(thread);
        }
        if !more {
            return;
        }
    }
}

/// Thread `thread` is ending: take it out of any queue, wake a caller waiting for its
/// reply with `PeerDied`, and forget its IPC state (the id will be reused).
pub fn thread_exiting(thread: ThreadId) {
    let (caller, blocker) = {
        let mut state = IPC.lock();
        // Beyond the tables: it never used IPC, so there is nothing to forget.
        if thread >= state.blocked_on.len() {
            return;
        }
        let blocker = core::mem::replace(&mut state.blocked_on[thread], Blocker::Nothing);
        let caller = match &blocker {
            Blocker::Endpoint(endpoint) => {
                let (ipc, key) = state.split();
                ipc.exit(thread, Some(endpoint.queue.open(key)))
            }
            Blocker::Notification(waited) if state.ipc.is_queued(thread) => {
                // SAFETY: the thread is queued on the notification it recorded, which is
                // alive while it is (`Waited`), under the IPC lock held here.
                let notification = unsafe { waited.0.as_ref() };
                let (ipc, key) = state.split();
                ipc.exit(thread, Some(notification.state.open(key).waiters()))
            }
            // Queued nowhere (a notification's address left by a `signal` is stale).
            _ => state.ipc.exit(thread, None),
        };
        state.buffers[thread] = Buffer::NONE;
        (caller, blocker)
    };
    drop(blocker);
    if let Some(caller) = caller {
        wake_with_error(caller, Error::PeerDied);
    }
}

/// One thread slot's IPC state as the fuzz scenario's checker reads it: its state, whether
/// it is linked into a queue, and its reply slot.
#[cfg(feature = "testing")]
pub type IpcSnapshot = (kcore::ipc::State, bool, kcore::ipc::ReplySlot);

/// Every thread slot's IPC state and scheduler record, taken together under the IPC lock
/// (then the scheduler's, in the lock order), so the checker compares one moment even while
/// other CPUs run. On the heap: the checker's kernel stack is small.
#[cfg(feature = "testing")]
pub fn snapshot() -> (Vec<IpcSnapshot>, Vec<Option<sched::ThreadSnapshot>>) {
    // Room allocated with no lock held; again if a spawn grew the table meanwhile.
    loop {
        let room = sched::capacity() + 16;
        let mut threads = Vec::with_capacity(room);
        let mut ipc = Vec::with_capacity(room);
        let state = IPC.lock();
        if !sched::snapshot(&mut threads) {
            continue;
        }
        ipc.extend((0..threads.len()).map(|thread| {
            (
                state.ipc.state(thread).unwrap_or(kcore::ipc::State::Idle),
                state.ipc.is_queued(thread),
                state
                    .ipc
                    .reply_slot(thread)
                    .unwrap_or(kcore::ipc::ReplySlot::Empty),
            )
        }));
        return (ipc, threads);
    }
}

/// Signal `bits` on `notification`: the slow `signal` once it has looked the capability
/// up, and the kernel itself (a process's death, an interrupt line, the kernel log), which
/// needs none. Takes the IPC and scheduler locks; no allocation.
pub fn signal_object(notification: &Notification, bits: u64) {
    let woken = {
        let mut state = IPC.lock();
        let (ipc, key) = state.split();
        // The waiter's record of the notification stays, as on the fast path: it holds
        // no reference and is read only while the thread is queued (`Waited`).
        ipc.signal(notification.state.open(key), bits)
    };
    if trace::on() {
        let id = trace_id(notification);
        trace::event_here(Kind::Signal, id, bits);
        if let Some((waiter, word)) = woken {
            trace::event(Kind::Wake, waiter, id, word);
        }
    }
    if let Some((waiter, word)) = woken {
        sched::wake_with(waiter, |frame| frame.set_syscall_results(0, word));
    }
}

/// Do the work objects queued (`obj::pending`): close endpoints whose last receiver went
/// and notifications whose last capability went, signal death notifications. Called with
/// no lock held, from the system-call exit and the timer tick.
pub fn run_pending() {
    while let Some(work) = pending::take() {
        match work {
            pending::Work::Close(endpoint) => close_endpoint(&endpoint),
            pending::Work::CloseNotification(notification) => close_notification(&notification),
            pending::Work::Signal(notification, bits) => signal_object(&notification, bits),
        }
    }
}
