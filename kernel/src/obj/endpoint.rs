//! Endpoints and notifications: the objects IPC works on. Their waiter state lives here
//! (in [`IpcCell`]s, which only the holder of the IPC lock opens); what the IPC layer does
//! with it lives in `ipc/`.
//!
//! Endpoints count their receive-capable (`READ`) capabilities ([`EndpointCap`]): when the
//! last one goes, the endpoint is queued to be closed ([`super::pending`]) and the IPC
//! layer wakes its waiting senders with `PeerDied`: the definition of "the server is
//! dead".
//!
//! Notifications count their capabilities ([`NotificationCap`]): when the last one goes,
//! the notification is queued to be closed and the IPC layer wakes its waiters with
//! `PeerDied` (nobody can signal them through a capability any more). So a waiter needs no
//! reference of its own: a thread waits only through a capability (counted while it
//! queues), and the closing work holds a reference until it has unlinked every waiter. The
//! kernel's own bindings (an interrupt line, a death notification, the log target) hold
//! the notification, not a capability: they may signal it after it closed, which only sets
//! bits nobody waits for.

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use kcore::ipc::{EndpointQueue, NotificationState};

use super::Charge;
use crate::stats::Live;

/// What the IPC layer changes only under its one lock (`ipc state` in `crate::sync`): an
/// endpoint's queue, a notification's word and waiters. The links of those queues live in
/// the IPC layer's per-thread table under that same lock, so a lock of the object's own
/// would guard nothing the IPC lock does not: the cell is opened instead with the one
/// [`IpcKey`], which the IPC lock keeps. Holding the key mutably proves the lock is held
/// and that no other cell is open.
pub struct IpcCell<T>(UnsafeCell<T>);

// SAFETY: the value is reached only through `IpcCell::open`, which needs the one `IpcKey`
// mutably borrowed, so one CPU at a time (the holder of the IPC lock) reaches it, and `T`
// may move between CPUs (`Send`).
unsafe impl<T: Send> Sync for IpcCell<T> {}

impl<T> IpcCell<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// The value, for as long as `key` stays borrowed.
    #[inline(always)]
    pub fn open<'a>(&'a self, key: &'a mut IpcKey) -> &'a mut T {
        let _ = key;
        // SAFETY: there is one `IpcKey` (its constructor's contract), borrowed mutably
        // here for as long as the result lives: no other reference to any cell's value
        // exists meanwhile, on this CPU or another.
        unsafe { &mut *self.0.get() }
    }
}

/// The key to every [`IpcCell`]: one exists, kept inside the IPC lock.
pub struct IpcKey(());

impl IpcKey {
    /// The key.
    ///
    /// # Safety
    /// Called once in the kernel's life, for the key the IPC lock keeps (no second key may
    /// exist, or two CPUs could open the same cell).
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

/// A synchronous IPC endpoint: the threads waiting on it (its queue is changed by the IPC
/// layer only) and a count of receive-capable capabilities.
pub struct Endpoint {
    pub queue: IpcCell<EndpointQueue>,
    receivers: AtomicUsize,
    _charge: Option<Charge>,
}

impl Endpoint {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        crate::stats::live_add(Live::Endpoint);
        Arc::new(Self {
            queue: IpcCell::new(EndpointQueue::new()),
            receivers: AtomicUsize::new(0),
            _charge: charge,
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        crate::stats::live_sub(Live::Endpoint);
    }
}

/// An endpoint capability's object: the endpoint, the badge it delivers (0: unbadged),
/// and whether it counts as a receiver (holds `READ`).
pub struct EndpointCap {
    pub endpoint: Arc<Endpoint>,
    pub badge: u64,
    receiver: bool,
}

impl EndpointCap {
    /// A capability object for `endpoint`; counts as a receiver until restricted.
    pub fn new(endpoint: Arc<Endpoint>, badge: u64) -> Self {
        endpoint.receivers.fetch_add(1, Ordering::AcqRel);
        Self {
            endpoint,
            badge,
            receiver: true,
        }
    }

    pub(super) fn stop_counting(&mut self) {
        if core::mem::replace(&mut self.receiver, false) {
            self.release();
        }
    }

    fn release(&self) {
        if self.endpoint.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            super::pending::close(self.endpoint.clone());
        }
    }
}

impl Clone for EndpointCap {
    fn clone(&self) -> Self {
        if self.receiver {
            self.endpoint.receivers.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            endpoint: self.endpoint.clone(),
            badge: self.badge,
            receiver: self.receiver,
        }
    }
}

impl Drop for EndpointCap {
    fn drop(&mut self) {
        if self.receiver {
            self.release();
        }
    }
}

/// A notification: a word of bits and its waiters (changed by the IPC layer only), and a
/// count of its capabilities.
pub struct Notification {
    pub state: IpcCell<NotificationState>,
    capabilities: AtomicUsize,
    _charge: Option<Charge>,
}

impl Notification {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        crate::stats::live_add(Live::Notification);
        Arc::new(Self {
            state: IpcCell::new(NotificationState::new()),
            capabilities: AtomicUsize::new(0),
            _charge: charge,
        })
    }
}

/// A notification capability's object: the notification, counted as one of its
/// capabilities for as long as this lives (clones included).
pub struct NotificationCap {
    notification: Arc<Notification>,
}

impl NotificationCap {
    pub fn new(notification: Arc<Notification>) -> Self {
        notification.capabilities.fetch_add(1, Ordering::AcqRel);
        Self { notification }
    }

    /// The notification, for a binding that holds it without being a capability.
    pub fn object(&self) -> &Arc<Notification> {
        &self.notification
    }
}

impl core::ops::Deref for NotificationCap {
    type Target = Notification;

    #[inline(always)]
    fn deref(&self) -> &Notification {
        &self.notification
    }
}

impl Clone for NotificationCap {
    fn clone(&self) -> Self {
        Self::new(self.notification.clone())
    }
}

impl Drop for NotificationCap {
    fn drop(&mut self) {
        if self
            .notification
            .capabilities
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            super::pending::close_notification(self.notification.clone());
        }
    }
}

impl Drop for Notification {
    fn drop(&mut self) {
        crate::stats::live_sub(Live::Notification);
    }
}
