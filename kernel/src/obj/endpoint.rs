//! Endpoints and notifications: the objects IPC works on. Their waiter state lives here
//! (behind their own locks); what the IPC layer does with it lives in `ipc/`.
//!
//! Endpoints count their receive-capable (`READ`) capabilities ([`EndpointCap`]): when the
//! last one goes, the endpoint is queued to be closed ([`super::pending`]) and the IPC
//! layer wakes its waiting senders with `PeerDied`: the definition of "the server is
//! dead".

use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use kcore::ipc::{EndpointQueue, NotificationState};

use super::Charge;
use crate::stats::Live;
use crate::sync::{Lock, level};

/// A synchronous IPC endpoint: the threads waiting on it (its queue is changed by the IPC
/// layer only) and a count of receive-capable capabilities.
pub struct Endpoint {
    pub queue: Lock<EndpointQueue>,
    receivers: AtomicUsize,
    _charge: Option<Charge>,
}

impl Endpoint {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        crate::stats::live_add(Live::Endpoint);
        Arc::new(Self {
            queue: Lock::new(level::ENDPOINT_QUEUE, EndpointQueue::new()),
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

/// A notification: a word of bits and its waiters (under the IPC lock).
pub struct Notification {
    pub state: Lock<NotificationState>,
    _charge: Option<Charge>,
}

impl Notification {
    pub fn new(charge: Option<Charge>) -> Arc<Self> {
        crate::stats::live_add(Live::Notification);
        Arc::new(Self {
            state: Lock::new(level::NOTIFICATION, NotificationState::new()),
            _charge: charge,
        })
    }
}

impl Drop for Notification {
    fn drop(&mut self) {
        crate::stats::live_sub(Live::Notification);
    }
}
