//! The IPC fast path.
//!
//! `call` to an endpoint whose first waiting thread is a receiver blocked in the kernel, and
//! `reply_recv` that answers a caller blocked in the kernel and finds no sender waiting,
//! both with a register-only message (at most 4 words, no capability): taken straight from
//! the system-call handlers (`crate::syscall::table`) before any decoding. Under one
//! scheduler lock ([`sched::Handoff`]) it finds the running thread and its process, looks the
//! endpoint up without taking a reference, checks every condition before changing
//! anything, updates the `kcore` state, copies the registers frame to frame and switches
//! to the partner directly (no run queue; the address space only when the partner is in
//! another process; FPU state saved and loaded by `Cpu::switch`). Anything else — a
//! condition not met, any error — returns [`Fast::NotTaken`] having changed nothing, and
//! the slow path ([`super::send`], [`super::reply_recv`]) handles the call and reports the
//! error.
//!
//! Locks, in the order of `crate::sync`: the IPC state, the scheduler (held as
//! [`sched::Handoff`] to the switch), the capability table (for the lookup only; not in
//! `reply_recv`). The endpoint's queue or the notification's word is opened with the key
//! the IPC state keeps, no lock of its own.
//!
//! The endpoint or notification is borrowed, not cloned: it is looked up with the
//! capability table kept locked ([`crate::obj::capspace::CapSpace::pin`]) until the last
//! use, before the switch, so no other CPU can delete the capability (and free the object)
//! meanwhile. `reply_recv` uses the endpoint its thread's `blocked_on` already holds a
//! reference to, and instead of a lookup checks the receipt of the lookup its thread last
//! received through ([`crate::obj::capspace::Receipt`]): the same handle, and no receive
//! capability gone from the table since. The running thread's process is used through a pointer: it
//! lives at least as long as the thread runs.

use alloc::sync::Arc;

use abi::{Handle, MessageInfo, Rights};
use arch_api::TrapFrame as _;

use super::{Blocker, IPC, Waited, trace_id};
use crate::obj::capspace::Pinned;
use crate::obj::{Endpoint, EndpointCap, Notification, NotificationCap, Process, kind};
use crate::task::sched;
use crate::task::thread::{self, Event, TrapFrame};
use crate::trace::{self, Kind};

/// What a fast path did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// Not taken: nothing changed, and the general path handles the call.
    NotTaken,
    /// Taken, and the thread cannot have been killed unseen: it did not block, or it was
    /// switched back to with no kill pending anywhere ([`sched::after_switch`]). A kill
    /// that comes while it runs reaches it by the reschedule IPI that `sched::kill` sends.
    Taken,
    /// Taken, and the thread may have been killed meanwhile: the caller ends it if it was
    /// (`proc::exit_if_killed`) before it returns to user mode.
    TakenCheckKill,
}

impl Fast {
    /// The outcome of a fast path that blocked and returned `check` from the hand-off
    /// ([`sched::Handoff::switch_to_partner`], [`sched::Handoff::block`]).
    #[inline(always)]
    fn resumed(check: bool) -> Self {
        if check {
            Self::TakenCheckKill
        } else {
            Self::Taken
        }
    }
}

/// The endpoint capability `handle` of `process` names, borrowed with `process`'s table
/// locked, if it is an endpoint capability with `required`.
#[inline(always)]
fn endpoint_pinned(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Option<Pinned<'_, EndpointCap>> {
    process
        .caps
        .pin::<kind::Endpoint>(Handle::from_raw(handle), required)
        .ok()
}

/// The running thread's process, as a reference that does not borrow the scheduler: it
/// lives at least as long as the running thread, which outlasts every use here.
#[inline(always)]
fn running_process<'a>(scheduler: &mut sched::Handoff) -> &'a Process {
    let process: *const Process = scheduler.current_process();
    // SAFETY: the running thread holds a reference to its process until it ends, and it
    // cannot end during the system call that uses this.
    unsafe { &*process }
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

/// Whether the `call` / `reply_recv` in `frame` carries a register-only message: the
/// first condition of the fast path, tested by the system-call entry before it enters
/// [`fast_call`] or [`fast_reply_recv`] (which do not test it again).
#[inline(always)]
pub fn fast_candidate(frame: &TrapFrame) -> bool {
    register_only_raw(frame.syscall_arguments()[1])
}

/// `call` on the fast path: taken or not (when taken, the reply is then in `frame`).
/// Only for a [`fast_candidate`].
///
/// # Safety
/// Called by the system call's handler, during the call: `frame` is the calling thread's,
/// and the running thread a user thread ([`sched::lock_for_handoff`]).
#[inline(always)]
pub unsafe fn fast_call<const TRACE: bool>(frame: &mut TrapFrame) -> Fast {
    debug_assert!(fast_candidate(frame));
    let handle = frame.syscall_arguments()[0];
    let early = frame.ipc_early();
    // The lock order: IPC state, then the scheduler (`crate::sync`).
    let mut state = IPC.lock();
    // SAFETY: this runs during a system call (the caller's contract).
    let mut scheduler = unsafe { sched::lock_for_handoff() };
    let me = scheduler.current();
    let process = running_process(&mut scheduler);
    let Some(capability) = endpoint_pinned(process, handle, Rights::CALL) else {
        return Fast::NotTaken;
    };
    let (endpoint, badge): (&Endpoint, u64) = (&capability.endpoint, capability.badge);
    let mut partner = None;
    let (ipc, key) = state.split();
    // The receiver must be a user thread blocked in the kernel, to run it at once.
    let Some(receiver) = ipc.call_fast(endpoint.queue.open(key), me, |receiver| {
        partner = scheduler.blocked_partner(receiver);
        partner.is_some()
    }) else {
        return Fast::NotTaken;
    };
    drop(state);
    if TRACE {
        let id = trace_id(endpoint);
        trace::event(Kind::Send, me, id, badge);
        trace::event(Kind::Receive, receiver, id, me as u64);
    }
    drop(capability);
    // `call_fast` returns a receiver only once `admit` accepted it, with its frame found.
    let Some(partner) = partner else {
        unreachable!("`call_fast` returned a receiver `admit` did not accept");
    };
    debug_assert_eq!(partner.id(), receiver);
    // SAFETY: `blocked_partner` returned the saved user frame of blocked thread `receiver`
    // under the scheduler lock, still held; nothing else touches it (and it is not `frame`:
    // the receiver is blocked, the caller runs).
    unsafe { (*partner.frame()).forward_ipc_message(badge, early, frame) };
    if TRACE {
        thread::count(me, Event::Ipc);
    }
    Fast::resumed(scheduler.switch_to_partner(partner))
}

/// `reply_recv` on the fast path: taken or not (when taken, the next message is then in
/// `frame`). Only for a [`fast_candidate`].
///
/// # Safety
/// Called by the system call's handler, during the call: `frame` is the calling thread's,
/// and the running thread a user thread ([`sched::lock_for_handoff`]).
#[inline(always)]
pub unsafe fn fast_reply_recv<const TRACE: bool>(frame: &mut TrapFrame) -> Fast {
    debug_assert!(fast_candidate(frame));
    let handle = frame.syscall_arguments()[0];
    let early = frame.ipc_early();
    // The lock order: IPC state, then the scheduler (`crate::sync`).
    let mut state = IPC.lock();
    // SAFETY: this runs during a system call (the caller's contract).
    let mut scheduler = unsafe { sched::lock_for_handoff() };
    let me = scheduler.current();
    let process = running_process(&mut scheduler);
    // The thread queues again on the endpoint of the call it answers (the server loop),
    // through the handle it took that call with: its `blocked_on` holds a reference to that
    // endpoint (it serves the call) and the receipt of that lookup. When the handle is the
    // same and no receive capability has left the process's table since, the handle names
    // that capability (`READ` on this endpoint: `CapSpace::still_names`), so no lookup, no
    // table lock, and no reference taken or dropped. The load of the removal count comes
    // after the IPC lock: a removal that closed the endpoint's last receiver before it is
    // seen, and one after it closes the endpoint only after this lock is released.
    let Some(Blocker::Endpoint(last)) = state.blocked_on.get(me) else {
        return Fast::NotTaken;
    };
    // SAFETY: `me < blocked_on.len()` (its entry was just found).
    let receipt = unsafe { state.receipt(me) };
    if !process.caps.still_names(receipt, handle) {
        return Fast::NotTaken;
    }
    let endpoint = Arc::as_ptr(last);
    // SAFETY: `blocked_on[me]` holds a reference to this endpoint (just read), and no
    // other thread changes it while this one runs (others change only the entries of
    // queued threads), under the IPC lock held until the last use below.
    let endpoint = unsafe { &*endpoint };
    let mut partner = None;
    let (ipc, key) = state.split();
    let queue = endpoint.queue.open(key);
    debug_assert!(
        !queue.is_closed(),
        "an endpoint a capability with READ names is open"
    );
    // The caller must be a user thread blocked in the kernel, to run it at once.
    let Some(caller) = ipc.reply_recv_fast(queue, me, |caller| {
        partner = scheduler.blocked_partner(caller);
        partner.is_some()
    }) else {
        return Fast::NotTaken;
    };
    drop(state);
    if TRACE {
        trace::event(Kind::Reply, me, caller as u64, 0);
    }
    // `reply_recv_fast` returns a caller only once `admit` accepted it, with its frame
    // found.
    let Some(partner) = partner else {
        unreachable!("`reply_recv_fast` returned a caller `admit` did not accept");
    };
    debug_assert_eq!(partner.id(), caller);
    // SAFETY: as in `fast_call`: the saved frame of blocked thread `caller`, scheduler lock
    // held.
    unsafe { (*partner.frame()).forward_ipc_message(0, early, frame) };
    if TRACE {
        thread::count(me, Event::Ipc);
    }
    Fast::resumed(scheduler.switch_to_partner(partner))
}

/// The notification capability `handle` of `process` names, borrowed with `process`'s
/// table locked, if it is a notification capability with `required`.
#[inline(always)]
fn notification_pinned(
    process: &Process,
    handle: u64,
    required: Rights,
) -> Option<Pinned<'_, NotificationCap>> {
    process
        .caps
        .pin::<kind::Notification>(Handle::from_raw(handle), required)
        .ok()
}

/// `signal` on the fast path (no reference taken or dropped, one scheduler lock for the
/// lookup and the wake-up): taken or not (when taken, the results are then in `frame`). It
/// never blocks, so a taken `signal` is [`Fast::Taken`].
/// The signaller keeps the CPU; the woken thread is made ready
/// ([`sched::Handoff::make_ready`]: this CPU's next `wait` may run it directly).
///
/// # Safety
/// Called by the system call's handler, during the call: `frame` is the calling thread's,
/// and the running thread a user thread ([`sched::lock_for_handoff`]).
#[inline(always)]
pub unsafe fn fast_signal<const TRACE: bool>(frame: &mut TrapFrame) -> Fast {
    let [handle, bits, ..] = frame.syscall_arguments();
    if bits == 0 {
        return Fast::NotTaken;
    }
    // The lock order: IPC state, then the scheduler (`crate::sync`).
    let mut state = IPC.lock();
    // SAFETY: this runs during a system call (the caller's contract).
    let mut scheduler = unsafe { sched::lock_for_handoff() };
    let process = running_process(&mut scheduler);
    let Some(capability) = notification_pinned(process, handle, Rights::SIGNAL) else {
        return Fast::NotTaken;
    };
    let notification: &Notification = &capability;
    let (ipc, key) = state.split();
    let word = notification.state.open(key);
    // A waiter is woken here only when it is a user thread blocked in `wait`.
    let partner = match word.waiters().first() {
        Some(waiter) => {
            let Some(partner) = scheduler.blocked_partner(waiter) else {
                return Fast::NotTaken;
            };
            Some(partner)
        }
        None => None,
    };
    let woken = ipc.signal(word, bits);
    if TRACE {
        let id = trace_id(notification);
        trace::event_here(Kind::Signal, id, bits);
        if let Some((waiter, value)) = woken {
            trace::event(Kind::Wake, waiter, id, value);
        }
    }
    match (woken, partner) {
        (Some((waiter, value)), Some(partner)) if waiter == partner.id() => {
            // The waiter's record of the notification stays: it holds no reference, and
            // it is read only while the thread is queued (`Waited`).
            debug_assert!(
                matches!(&state.blocked_on[waiter], Blocker::Notification(last) if core::ptr::eq(last.0.as_ptr(), notification))
            );
            drop(state);
            // SAFETY: `blocked_partner` returned the saved user frame of blocked thread
            // `waiter` under the scheduler lock, still held.
            unsafe { (*partner.frame()).set_syscall_results(0, value) };
            scheduler.make_ready(partner);
        }
        // `signal` wakes the queue's head, the thread checked above; nobody waited.
        _ => drop(state),
    }
    if TRACE {
        thread::count(scheduler.current(), Event::Notification);
    }
    drop(capability);
    drop(scheduler);
    frame.set_syscall_results(0, 0);
    Fast::Taken
}

/// `wait` on the fast path (no reference taken: a queued waiter records the notification's
/// address, [`super::Waited`]; one scheduler lock for the lookup and, when nothing is
/// pending, the block through [`sched::Handoff::block`]): taken or not.
///
/// # Safety
/// Called by the system call's handler, during the call: `frame` is the calling thread's,
/// and the running thread a user thread ([`sched::lock_for_handoff`]).
#[inline(always)]
pub unsafe fn fast_wait<const TRACE: bool>(frame: &mut TrapFrame) -> Fast {
    let handle = frame.syscall_arguments()[0];
    // The lock order: IPC state, then the scheduler (`crate::sync`).
    let mut state = IPC.lock();
    // SAFETY: this runs during a system call (the caller's contract).
    let mut scheduler = unsafe { sched::lock_for_handoff() };
    let me = scheduler.current();
    let process = running_process(&mut scheduler);
    let Some(capability) = notification_pinned(process, handle, Rights::WAIT) else {
        return Fast::NotTaken;
    };
    let notification: &Notification = &capability;
    let (ipc, key) = state.split();
    // An error changes nothing: the slow path reports it.
    let Ok(pending) = ipc.wait(notification.state.open(key), me) else {
        return Fast::NotTaken;
    };
    // A queued waiter records what it waits on (to be unlinked if it dies), by address.
    let released = match pending {
        Some(_) => Blocker::Nothing,
        // SAFETY: `wait` succeeded, so the state machine has an entry for `me`.
        None => unsafe { state.hold_served(me, Blocker::Notification(Waited::new(notification))) },
    };
    drop(state);
    drop(capability);
    if TRACE {
        thread::count(me, Event::Notification);
    }
    let check = match pending {
        Some(value) => {
            drop(scheduler);
            frame.set_syscall_results(0, value);
            true
        }
        // The signaller writes the results, then wakes this thread. It blocks under the
        // scheduler lock it holds: a signaller on another CPU, past the IPC lock now, finds
        // it only once it has switched away.
        None => scheduler.block(),
    };
    // What it held before (the endpoint of a call it serves, if any; no lock held now:
    // this may free it). Dropped on each side of the test, so the test is the one the
    // switch back made.
    if check {
        drop(released);
        Fast::TakenCheckKill
    } else {
        drop(released);
        Fast::Taken
    }
}
