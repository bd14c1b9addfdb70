//! Work an object leaves for the layers above it.
//!
//! Objects are dropped wherever their last reference goes: under a capability table's
//! lock, in the scheduler while it frees a dead thread, inside a process teardown. What
//! such a drop must set in motion needs the IPC layer and the scheduler, which lie above
//! this one, so it is queued here instead, and [`take`] hands it to the IPC layer
//! (`ipc::run_pending`), which the system-call exit and the timer tick call. A queued
//! item is done before the thread that queued it returns to user mode, or at the next
//! timer tick when no thread of that system call is left.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{Endpoint, Notification};
use crate::sync::{Lock, deferred, level};

/// One piece of deferred work.
pub enum Work {
    /// The last receive-capable capability to this endpoint is gone.
    Close(Arc<Endpoint>),
    /// The last capability to this notification is gone.
    CloseNotification(Arc<Notification>),
    /// Signal these bits (a process died; its death notification).
    Signal(Arc<Notification>, u64),
}

/// The queue; [`deferred::PENDING`] is raised while it may hold work (checked without the
/// lock on every system-call exit, together with the other deferred flags).
static QUEUE: Lock<VecDeque<Work>> = Lock::new(level::PENDING, VecDeque::new());
/// Charged objects alive ([`promise`]): each may queue one piece of work when it ends.
static PROMISED: AtomicUsize = AtomicUsize::new(0);
/// Room kept for work of objects no process is charged for (the kernel's own, init's).
const UNCHARGED_ROOM: usize = 64;

/// Make room in the queue for the work one more charged object may leave, so that
/// queueing it does not allocate; `Err` when the heap cannot grow. Undone by
/// [`release_promise`].
pub fn promise() -> Result<(), ()> {
    let promised = PROMISED.fetch_add(1, Ordering::AcqRel) + 1;
    let mut queue = QUEUE.lock();
    let wanted = promised + UNCHARGED_ROOM;
    if queue.capacity() < wanted {
        let additional = wanted.saturating_sub(queue.len());
        if queue.try_reserve(additional).is_err() {
            drop(queue);
            PROMISED.fetch_sub(1, Ordering::AcqRel);
            return Err(());
        }
    }
    Ok(())
}

/// A charged object is gone (its work, if any, is queued already).
pub fn release_promise() {
    PROMISED.fetch_sub(1, Ordering::AcqRel);
}

fn push(work: Work) {
    QUEUE.lock().push_back(work);
    deferred::raise(deferred::PENDING);
}

/// Queue `endpoint` to be closed.
pub fn close(endpoint: Arc<Endpoint>) {
    push(Work::Close(endpoint));
}

/// Queue `notification` to be closed (its waiters woken with `PeerDied`).
pub fn close_notification(notification: Arc<Notification>) {
    push(Work::CloseNotification(notification));
}

/// Queue a signal of `bits` on `notification`.
pub fn signal(notification: Arc<Notification>, bits: u64) {
    push(Work::Signal(notification, bits));
}

/// Whether work may be queued (one load).
#[inline(always)]
pub fn any() -> bool {
    deferred::is_raised(deferred::PENDING)
}

/// The oldest queued work, if any (the lock is released before the caller does it).
pub fn take() -> Option<Work> {
    let mut queue = QUEUE.lock();
    let work = queue.pop_front();
    if queue.is_empty() {
        deferred::clear(deferred::PENDING);
    }
    work
}

/// Make room for `entries` items queued at once. The queue keeps what it grew to; the
/// invariant checker (test build) grows it before its baseline, so that growth is not
/// counted as heap in use by the run.
#[cfg(feature = "testing")]
pub fn reserve(entries: usize) {
    let mut queue = QUEUE.lock();
    let wanted = entries.saturating_sub(queue.len());
    queue.reserve(wanted);
}

/// The bytes of the queue's storage (its room, kept once grown), for the invariant checker
/// (test build), which counts them apart from the heap in use.
#[cfg(feature = "testing")]
pub fn queue_storage(each: &mut dyn FnMut(usize)) {
    let capacity = QUEUE.lock().capacity();
    each(capacity * core::mem::size_of::<Work>());
}
