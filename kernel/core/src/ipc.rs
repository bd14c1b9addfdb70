//! The IPC state machine: synchronous endpoints and notifications over plain
//! thread ids, so the host can test every transition; the kernel moves the registers and
//! blocks and wakes the threads this module names.
//!
//! # Model
//!
//! - An [`EndpointQueue`] is one FIFO of waiting threads, all senders or all receivers
//!   (a sender never waits while a receiver does: they would have met). The links live in
//!   [`Ipc`], one per thread id, so no operation allocates and a thread can be unlinked
//!   from the middle.
//! - [`Ipc::send`] meets the first waiting receiver or queues the sender;
//!   [`Ipc::receive`] meets the first waiting sender or queues the receiver. The order
//!   of arrival does not matter (rendezvous in both orders).
//! - A `call` is a send that leaves the caller [`State::AwaitingReply`] and gives the
//!   receiving thread a one-shot reply slot naming the caller (seL4's implicit reply).
//!   [`Ipc::reply`] empties the slot and returns the caller to wake.
//! - Death: [`Ipc::close`] (the endpoint lost its last receive-capable capability)
//!   empties its queue, and the queued threads are woken with `PeerDied`; further sends
//!   fail with `PeerDied` at once. [`Ipc::exit`] forgets a dying thread: a caller waiting
//!   for its reply is returned (to be woken with `PeerDied`), and a server holding the
//!   dying thread's reply slot finds it [`ReplySlot::CallerDied`].
//! - [`NotificationState`]: a word of bits and a FIFO of waiters (the same links).
//!
//! Every operation checks its thread ids; an impossible request (a thread id beyond the
//! table, a thread that is already queued) is an error that changes nothing.

use abi::Error;
use alloc::vec::Vec;

/// A thread, by its index in the kernel's thread table.
pub type ThreadId = usize;

const NONE: u32 = u32::MAX;

/// What a thread is doing as far as IPC is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not blocked in IPC.
    Idle,
    /// Queued on an endpoint with a message; `call` when it wants a reply.
    Sending { badge: u64, call: bool },
    /// Queued on an endpoint, waiting for a message.
    Receiving,
    /// Its call was received by `server`; waits for the reply.
    AwaitingReply { server: ThreadId },
    /// Queued on a notification.
    Waiting,
}

/// A thread's one-shot reply slot: whom its next `reply` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplySlot {
    Empty,
    Caller(ThreadId),
    /// The caller died before the reply.
    CallerDied,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    previous: u32,
    next: u32,
    queued: bool,
}

/// Per-thread IPC state for thread ids `0..capacity`; the table grows with the thread ids
/// ([`Ipc::grow`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipc {
    entries: Vec<Entry>,
}

/// One thread's IPC state (one table of them, so a thread's whole state is one look-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    state: State,
    reply: ReplySlot,
    link: Link,
}

const IDLE: Entry = Entry {
    state: State::Idle,
    reply: ReplySlot::Empty,
    link: UNLINKED,
};

/// The storage of a bigger [`Ipc`], allocated with no lock held.
pub struct Spare {
    entries: Vec<Entry>,
}

impl Spare {
    /// Room for `capacity` thread ids, or the allocator's refusal.
    pub fn room(capacity: usize) -> Result<Self, alloc::collections::TryReserveError> {
        Ok(Self {
            entries: crate::table::room(capacity)?,
        })
    }
}

const UNLINKED: Link = Link {
    previous: NONE,
    next: NONE,
    queued: false,
};

/// Which kind of thread waits in a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Nobody,
    Senders,
    Receivers,
}

/// One endpoint's waiting threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointQueue {
    head: u32,
    tail: u32,
    waiting: Waiting,
    closed: bool,
}

impl Default for EndpointQueue {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointQueue {
    #[inline]
    pub const fn new() -> Self {
        Self {
            head: NONE,
            tail: NONE,
            waiting: Waiting::Nobody,
            closed: false,
        }
    }

    /// Whether [`Ipc::close`] was called: every send fails with `PeerDied`.
    #[inline]
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a receiver waits (the fast path's first test).
    #[inline]
    pub const fn has_receiver(&self) -> bool {
        matches!(self.waiting, Waiting::Receivers)
    }

    /// Whether a sender waits (a receive would meet it at once).
    #[inline]
    pub const fn has_sender(&self) -> bool {
        matches!(self.waiting, Waiting::Senders)
    }

    /// The thread at the head of the queue (the one the next rendezvous meets), if any.
    #[inline]
    pub const fn first(&self) -> Option<ThreadId> {
        match self.head {
            NONE => None,
            head => Some(head as ThreadId),
        }
    }
}

/// What a send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// A receiver was waiting and is now idle with the message: copy it over and wake the
    /// receiver. For a call, the sender now awaits the receiver's reply (block it); for a
    /// send, it goes on.
    Delivered { receiver: ThreadId },
    /// No receiver: the sender is queued; block it.
    Queued,
}

/// What a receive did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// A sender was waiting: copy its message. For a call, the sender now awaits the
    /// receiver's reply (it stays blocked); for a send, wake it.
    Received {
        sender: ThreadId,
        badge: u64,
        call: bool,
    },
    /// No sender: the receiver is queued; block it.
    Queued,
}

/// Why `reply` found nobody to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The thread holds no reply slot (`abi::Error::InvalidArgument`).
    NoCaller,
    /// The caller died meanwhile (`abi::Error::PeerDied`).
    CallerDied,
}

impl From<ReplyError> for Error {
    #[inline]
    fn from(error: ReplyError) -> Self {
        match error {
            ReplyError::NoCaller => Error::InvalidArgument,
            ReplyError::CallerDied => Error::PeerDied,
        }
    }
}

/// The thread id was beyond the table or in the wrong state for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadThread;

impl Default for Ipc {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl Ipc {
    /// The bytes of the one allocation this keeps (the per-thread entries), for leak
    /// checks that count grown tables apart.
    pub fn storage_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry>()
    }

    /// A table serving no thread id yet ([`Ipc::grow`]).
    #[inline]
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Thread ids served (`0..capacity`); every operation refuses the others.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Serve thread ids `0..capacity` from `spare`'s storage; returns the storage to free.
    /// Nothing changes when the table is that long already, `capacity` is above
    /// [`crate::table::MAX_THREAD_IDS`] or `spare` has too little room. No allocation.
    #[inline]
    pub fn grow(&mut self, spare: Spare, capacity: usize) -> Spare {
        if capacity > crate::table::MAX_THREAD_IDS {
            return spare;
        }
        Spare {
            entries: crate::table::move_into(&mut self.entries, spare.entries, capacity, || IDLE),
        }
    }

    #[inline]
    pub fn state(&self, thread: ThreadId) -> Option<State> {
        self.entries.get(thread).map(|entry| entry.state)
    }

    #[inline]
    pub fn reply_slot(&self, thread: ThreadId) -> Option<ReplySlot> {
        self.entries.get(thread).map(|entry| entry.reply)
    }

    /// Whether `thread` is linked into a queue (an endpoint's or a notification's).
    #[inline]
    pub fn is_queued(&self, thread: ThreadId) -> bool {
        self.entries
            .get(thread)
            .is_some_and(|entry| entry.link.queued)
    }

    #[inline]
    fn check_idle(&self, thread: ThreadId) -> Result<u32, BadThread> {
        match self.entries.get(thread) {
            // why: thread < entries.len() <= MAX_THREAD_IDS < u32::MAX (`grow`).
            Some(entry) if entry.state == State::Idle && !entry.link.queued => Ok(thread as u32),
            _ => Err(BadThread),
        }
    }

    /// `sender` sends (a call when `call`) with `badge` on `queue`. `Err(PeerDied)` when
    /// the endpoint is closed.
    #[inline]
    pub fn send(
        &mut self,
        queue: &mut EndpointQueue,
        sender: ThreadId,
        badge: u64,
        call: bool,
    ) -> Result<SendOutcome, SendError> {
        self.check_idle(sender).map_err(|_| SendError::BadThread)?;
        if queue.closed {
            return Err(SendError::PeerDied);
        }
        if queue.waiting == Waiting::Receivers {
            let receiver = self.pop(queue).ok_or(SendError::BadThread)?;
            self.entries[receiver].state = State::Idle;
            if call {
                self.entries[sender].state = State::AwaitingReply { server: receiver };
                self.entries[receiver].reply = ReplySlot::Caller(sender);
            }
            return Ok(SendOutcome::Delivered { receiver });
        }
        self.push(queue, sender, Waiting::Senders);
        self.entries[sender].state = State::Sending { badge, call };
        Ok(SendOutcome::Queued)
    }

    /// `receiver` receives on `queue`. Receiving replaces whatever reply slot it held (an
    /// unanswered caller there is returned as `abandoned`, to be woken with `PeerDied`,
    /// so no caller waits forever on a server that moved on).
    #[inline]
    pub fn receive(
        &mut self,
        queue: &mut EndpointQueue,
        receiver: ThreadId,
    ) -> Result<(ReceiveOutcome, Option<ThreadId>), BadThread> {
        self.check_idle(receiver)?;
        let abandoned = self.take_reply(receiver);
        if queue.waiting == Waiting::Senders {
            let sender = self.pop(queue).ok_or(BadThread)?;
            let State::Sending { badge, call } = self.entries[sender].state else {
                return Err(BadThread);
            };
            if call {
                self.entries[sender].state = State::AwaitingReply { server: receiver };
                self.entries[receiver].reply = ReplySlot::Caller(sender);
            } else {
                self.entries[sender].state = State::Idle;
            }
            return Ok((
                ReceiveOutcome::Received {
                    sender,
                    badge,
                    call,
                },
                abandoned,
            ));
        }
        self.push(queue, receiver, Waiting::Receivers);
        self.entries[receiver].state = State::Receiving;
        Ok((ReceiveOutcome::Queued, abandoned))
    }

    /// The `call` fast path: when the first thread waiting on `queue` is a receiver,
    /// `sender` is idle and `admit(receiver)` accepts it (the kernel checks that it can run
    /// it at once), the same change as `send(queue, sender, _, true)` returning
    /// `Delivered { receiver }`, and the receiver is returned; otherwise `None` and nothing
    /// changed.
    #[inline]
    pub fn call_fast(
        &mut self,
        queue: &mut EndpointQueue,
        sender: ThreadId,
        admit: impl FnOnce(ThreadId) -> bool,
    ) -> Option<ThreadId> {
        if queue.waiting != Waiting::Receivers || queue.closed {
            return None;
        }
        if !self
            .entries
            .get(sender)
            .is_some_and(|entry| entry.state == State::Idle && !entry.link.queued)
        {
            return None;
        }
        let receiver = queue.head as usize;
        if receiver >= self.entries.len() || !admit(receiver) {
            return None;
        }
        self.pop(queue)?;
        self.entries[receiver].state = State::Idle;
        self.entries[sender].state = State::AwaitingReply { server: receiver };
        self.entries[receiver].reply = ReplySlot::Caller(sender);
        Some(receiver)
    }

    /// The `reply_recv` fast path: when `server` is idle with a live caller in its reply
    /// slot, no sender waits on `queue` and `admit(caller)` accepts the caller, the same
    /// change as `reply(server)` then `receive(queue, server)` returning `Queued` with
    /// nothing abandoned, and the caller is returned; otherwise `None` and nothing changed.
    #[inline]
    pub fn reply_recv_fast(
        &mut self,
        queue: &mut EndpointQueue,
        server: ThreadId,
        admit: impl FnOnce(ThreadId) -> bool,
    ) -> Option<ThreadId> {
        if queue.waiting == Waiting::Senders {
            return None;
        }
        if !self
            .entries
            .get(server)
            .is_some_and(|entry| entry.state == State::Idle && !entry.link.queued)
        {
            return None;
        }
        let ReplySlot::Caller(caller) = self.entries[server].reply else {
            return None;
        };
        if !admit(caller) {
            return None;
        }
        self.entries[server].reply = ReplySlot::Empty;
        self.entries[caller].state = State::Idle;
        self.push(queue, server, Waiting::Receivers);
        self.entries[server].state = State::Receiving;
        Some(caller)
    }

    /// Empty `server`'s reply slot; a caller found there is idle again and returned.
    #[inline]
    fn take_reply(&mut self, server: ThreadId) -> Option<ThreadId> {
        let slot = &mut self.entries.get_mut(server)?.reply;
        match core::mem::replace(slot, ReplySlot::Empty) {
            ReplySlot::Caller(caller) => {
                self.entries[caller].state = State::Idle;
                Some(caller)
            }
            _ => None,
        }
    }

    /// `server` replies: its reply slot is emptied and the caller, now idle, returned (copy
    /// the reply into it and wake it).
    #[inline]
    pub fn reply(&mut self, server: ThreadId) -> Result<ThreadId, ReplyError> {
        let slot = &mut self
            .entries
            .get_mut(server)
            .ok_or(ReplyError::NoCaller)?
            .reply;
        match core::mem::replace(slot, ReplySlot::Empty) {
            ReplySlot::Caller(caller) => {
                self.entries[caller].state = State::Idle;
                Ok(caller)
            }
            ReplySlot::CallerDied => Err(ReplyError::CallerDied),
            ReplySlot::Empty => Err(ReplyError::NoCaller),
        }
    }

    /// Whether `server` holds a live caller in its reply slot.
    #[inline]
    pub fn has_caller(&self, server: ThreadId) -> bool {
        matches!(
            self.entries.get(server).map(|entry| entry.reply),
            Some(ReplySlot::Caller(_))
        )
    }

    /// The endpoint lost its last receive-capable capability: every queued thread is
    /// unlinked, made idle and passed to `woken` (to be woken with `PeerDied`), and every
    /// later send fails.
    #[inline]
    pub fn close(&mut self, queue: &mut EndpointQueue, woken: impl FnMut(ThreadId)) {
        self.close_at_most(queue, usize::MAX, woken);
    }

    /// [`Ipc::close`] for at most `most` of the queued threads: the endpoint is closed and
    /// those threads are unlinked and passed to `woken`; whether threads are left queued
    /// (call again, under a later lock, for the next ones: no thread joins a closed queue).
    #[inline]
    pub fn close_at_most(
        &mut self,
        queue: &mut EndpointQueue,
        most: usize,
        mut woken: impl FnMut(ThreadId),
    ) -> bool {
        queue.closed = true;
        for _ in 0..most {
            let Some(thread) = self.pop(queue) else {
                return false;
            };
            self.entries[thread].state = State::Idle;
            woken(thread);
        }
        queue.head != NONE
    }

    /// `thread` dies. `queue` is the queue it waits in, if any (the kernel knows which).
    /// Returns the caller that was waiting for this thread's reply (wake it with
    /// `PeerDied`). Afterwards the id is idle and can be reused.
    #[inline]
    pub fn exit(
        &mut self,
        thread: ThreadId,
        queue: Option<&mut EndpointQueue>,
    ) -> Option<ThreadId> {
        if thread >= self.capacity() {
            return None;
        }
        if let Some(queue) = queue {
            self.unlink(queue, thread);
        }
        if let State::AwaitingReply { server } = self.entries[thread].state
            && self.entries[server].reply == ReplySlot::Caller(thread)
        {
            self.entries[server].reply = ReplySlot::CallerDied;
        }
        self.entries[thread].state = State::Idle;
        self.take_reply(thread)
    }

    // ---- notifications ----

    /// `signal(bits)`: when a thread waits, it is dequeued and returned with the word to
    /// deliver (the word is then 0); else the bits accumulate.
    #[inline]
    pub fn signal(
        &mut self,
        notification: &mut NotificationState,
        bits: u64,
    ) -> Option<(ThreadId, u64)> {
        notification.word |= bits;
        if notification.word == 0 {
            return None;
        }
        let waiter = self.pop(&mut notification.waiters)?;
        self.entries[waiter].state = State::Idle;
        Some((waiter, core::mem::take(&mut notification.word)))
    }

    /// `wait`: `Ok(Some(word))` (cleared) when bits are pending, else `thread` is queued
    /// (`Ok(None)`: block it).
    #[inline]
    pub fn wait(
        &mut self,
        notification: &mut NotificationState,
        thread: ThreadId,
    ) -> Result<Option<u64>, BadThread> {
        self.check_idle(thread)?;
        if notification.word != 0 {
            return Ok(Some(core::mem::take(&mut notification.word)));
        }
        self.push(&mut notification.waiters, thread, Waiting::Receivers);
        self.entries[thread].state = State::Waiting;
        Ok(None)
    }

    // ---- queue links ----

    #[inline(always)]
    fn push(&mut self, queue: &mut EndpointQueue, thread: ThreadId, kind: Waiting) {
        // why: callers checked `thread < N` (so it fits u32) through `check_idle`.
        let index = thread as u32;
        self.entries[thread].link = Link {
            previous: queue.tail,
            next: NONE,
            queued: true,
        };
        match queue.tail {
            NONE => queue.head = index,
            tail => self.entries[tail as usize].link.next = index,
        }
        queue.tail = index;
        queue.waiting = kind;
    }

    /// Take `queue`'s head out of it: [`Ipc::unlink`] of the head written out (it has no
    /// previous thread).
    #[inline(always)]
    fn pop(&mut self, queue: &mut EndpointQueue) -> Option<ThreadId> {
        let thread = queue.head as usize;
        // `NONE` lies past every table (`grow`): this also covers an empty queue.
        let entry = self.entries.get_mut(thread)?;
        let next = entry.link.next;
        entry.link = Link {
            previous: NONE,
            next: NONE,
            queued: false,
        };
        queue.head = next;
        match next {
            NONE => {
                queue.tail = NONE;
                queue.waiting = Waiting::Nobody;
            }
            next => self.entries[next as usize].link.previous = NONE,
        }
        Some(thread)
    }

    #[inline]
    fn unlink(&mut self, queue: &mut EndpointQueue, thread: ThreadId) {
        let Some(link) = self.entries.get(thread).map(|entry| entry.link) else {
            return;
        };
        if !link.queued {
            return;
        }
        match link.previous {
            NONE => queue.head = link.next,
            previous => self.entries[previous as usize].link.next = link.next,
        }
        match link.next {
            NONE => queue.tail = link.previous,
            next => self.entries[next as usize].link.previous = link.previous,
        }
        self.entries[thread].link = Link {
            previous: NONE,
            next: NONE,
            queued: false,
        };
        if queue.head == NONE {
            queue.waiting = Waiting::Nobody;
        }
    }
}

/// Why a send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The endpoint is closed (`abi::Error::PeerDied`).
    PeerDied,
    /// The sender id is beyond the table or already blocked.
    BadThread,
}

/// A notification: a word of pending bits and the threads waiting for one.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotificationState {
    word: u64,
    waiters: EndpointQueue,
}

impl NotificationState {
    #[inline]
    pub const fn new() -> Self {
        Self {
            word: 0,
            waiters: EndpointQueue::new(),
        }
    }

    /// `poll`: the pending bits, cleared.
    #[inline]
    pub fn poll(&mut self) -> u64 {
        core::mem::take(&mut self.word)
    }

    /// The queue a waiting thread sits in (for [`Ipc::exit`]).
    #[inline]
    pub fn waiters(&mut self) -> &mut EndpointQueue {
        &mut self.waiters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table for thread ids `0..8`.
    fn table() -> Ipc {
        sized(8)
    }

    fn sized(capacity: usize) -> Ipc {
        let mut ipc = Ipc::new();
        let _ = ipc.grow(Spare::room(capacity).unwrap(), capacity);
        assert_eq!(ipc.capacity(), capacity);
        ipc
    }

    #[test]
    fn close_in_batches_wakes_everyone_once() {
        let mut ipc = sized(8);
        let mut queue = EndpointQueue::new();
        for thread in 1..6 {
            assert_eq!(
                ipc.send(&mut queue, thread, 0, false),
                Ok(SendOutcome::Queued)
            );
        }
        let mut woken = Vec::new();
        assert!(ipc.close_at_most(&mut queue, 2, |thread| woken.push(thread)));
        assert_eq!(ipc.send(&mut queue, 6, 0, false), Err(SendError::PeerDied));
        assert!(ipc.close_at_most(&mut queue, 2, |thread| woken.push(thread)));
        assert!(!ipc.close_at_most(&mut queue, 2, |thread| woken.push(thread)));
        assert_eq!(woken, [1, 2, 3, 4, 5]);
        assert!((1..6).all(|thread| ipc.state(thread) == Some(State::Idle)));
    }

    #[test]
    fn growing_keeps_queues_and_reply_slots() {
        let mut ipc = sized(2);
        let mut queue = EndpointQueue::new();
        assert_eq!(
            ipc.receive(&mut queue, 1),
            Ok((ReceiveOutcome::Queued, None))
        );
        assert_eq!(ipc.send(&mut queue, 5, 0, true), Err(SendError::BadThread));
        let _ = ipc.grow(Spare::room(8).unwrap(), 8);
        assert_eq!(
            ipc.send(&mut queue, 5, 0, true),
            Ok(SendOutcome::Delivered { receiver: 1 })
        );
        assert_eq!(ipc.reply(1), Ok(5));
        assert_eq!(ipc.state(5), Some(State::Idle));
    }

    #[test]
    fn receiver_first_then_sender() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        assert_eq!(
            ipc.receive(&mut queue, 1),
            Ok((ReceiveOutcome::Queued, None))
        );
        assert_eq!(ipc.state(1), Some(State::Receiving));
        assert!(queue.has_receiver());
        assert_eq!(
            ipc.send(&mut queue, 2, 0, false),
            Ok(SendOutcome::Delivered { receiver: 1 })
        );
        assert_eq!(ipc.state(1), Some(State::Idle));
        assert_eq!(ipc.state(2), Some(State::Idle), "a plain send goes on");
        assert!(!queue.has_receiver());
        assert_eq!(ipc.reply_slot(1), Some(ReplySlot::Empty));
    }

    /// The fast path's peek: `first` is the thread the next rendezvous meets, and
    /// `has_sender`/`has_receiver` say which kind waits.
    #[test]
    fn first_names_the_thread_the_next_rendezvous_meets() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        assert_eq!(queue.first(), None);
        assert!(!queue.has_sender() && !queue.has_receiver());
        assert_eq!(ipc.send(&mut queue, 4, 0, true), Ok(SendOutcome::Queued));
        assert_eq!(ipc.send(&mut queue, 2, 0, true), Ok(SendOutcome::Queued));
        assert!(queue.has_sender() && !queue.has_receiver());
        assert_eq!(queue.first(), Some(4));
        let (outcome, _) = ipc.receive(&mut queue, 1).unwrap();
        assert!(matches!(
            outcome,
            ReceiveOutcome::Received { sender: 4, .. }
        ));
        assert_eq!(queue.first(), Some(2));
        assert_eq!(ipc.exit(2, Some(&mut queue)), None);
        assert_eq!(queue.first(), None);
        assert!(!queue.has_sender());
        assert_eq!(ipc.reply(1), Ok(4));
        assert_eq!(
            ipc.receive(&mut queue, 1),
            Ok((ReceiveOutcome::Queued, None))
        );
        assert!(queue.has_receiver() && !queue.has_sender());
        assert_eq!(queue.first(), Some(1));
        assert_eq!(
            ipc.send(&mut queue, 4, 7, true),
            Ok(SendOutcome::Delivered { receiver: 1 })
        );
        assert_eq!(queue.first(), None);
    }

    /// The fast paths change exactly what the general operations change, and refuse
    /// (changing nothing) whenever those would not meet at once or `admit` says no.
    #[test]
    fn fast_paths_equal_the_general_operations() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        // Two receivers queue (1 then 3); caller 2 meets the first.
        ipc.receive(&mut queue, 1).unwrap();
        ipc.receive(&mut queue, 3).unwrap();
        let (mut slow, mut slow_queue) = (ipc.clone(), queue);
        assert_eq!(
            slow.send(&mut slow_queue, 2, 0, true),
            Ok(SendOutcome::Delivered { receiver: 1 })
        );
        let (before, before_queue) = (ipc.clone(), queue);
        assert_eq!(ipc.call_fast(&mut queue, 2, |_| false), None);
        assert_eq!((&ipc, queue), (&before, before_queue), "refused: no change");
        assert_eq!(
            ipc.call_fast(&mut queue, 2, |receiver| receiver == 1),
            Some(1)
        );
        assert_eq!((&ipc, queue), (&slow, slow_queue));
        // A busy sender (2 awaits a reply) is refused.
        assert_eq!(ipc.call_fast(&mut queue, 2, |_| true), None);
        // Server 1 replies to 2 and waits again, behind 3.
        let (mut slow, mut slow_queue) = (ipc.clone(), queue);
        assert_eq!(slow.reply(1), Ok(2));
        assert_eq!(
            slow.receive(&mut slow_queue, 1),
            Ok((ReceiveOutcome::Queued, None))
        );
        let (before, before_queue) = (ipc.clone(), queue);
        assert_eq!(ipc.reply_recv_fast(&mut queue, 1, |_| false), None);
        assert_eq!((&ipc, queue), (&before, before_queue), "refused: no change");
        assert_eq!(
            ipc.reply_recv_fast(&mut queue, 1, |caller| caller == 2),
            Some(2)
        );
        assert_eq!((&ipc, queue), (&slow, slow_queue));
        assert_eq!(queue.first(), Some(3));
        // No caller to answer: refused.
        let mut other = EndpointQueue::new();
        assert_eq!(ipc.reply_recv_fast(&mut other, 4, |_| true), None);
        // A sender waiting: the receive would meet it, so refused.
        ipc.send(&mut other, 5, 0, true).unwrap();
        ipc.receive(&mut other, 6).unwrap();
        assert_eq!(ipc.state(5), Some(State::AwaitingReply { server: 6 }));
        ipc.send(&mut other, 7, 0, true).unwrap();
        assert_eq!(ipc.reply_recv_fast(&mut other, 6, |_| true), None);
        // A closed endpoint or one with senders: the call is refused.
        assert_eq!(ipc.call_fast(&mut other, 4, |_| true), None);
        ipc.close(&mut other, |_| {});
        assert_eq!(ipc.call_fast(&mut other, 4, |_| true), None);
    }

    #[test]
    fn sender_first_then_receiver_gets_badge() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        assert_eq!(
            ipc.send(&mut queue, 3, 0xbad9e, false),
            Ok(SendOutcome::Queued)
        );
        assert_eq!(
            ipc.state(3),
            Some(State::Sending {
                badge: 0xbad9e,
                call: false
            })
        );
        assert_eq!(
            ipc.receive(&mut queue, 4),
            Ok((
                ReceiveOutcome::Received {
                    sender: 3,
                    badge: 0xbad9e,
                    call: false
                },
                None
            ))
        );
        assert_eq!(ipc.state(3), Some(State::Idle));
        assert_eq!(ipc.state(4), Some(State::Idle));
    }

    #[test]
    fn waiters_are_served_in_order() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        for (sender, badge) in [(1, 10), (2, 20), (3, 30)] {
            assert_eq!(
                ipc.send(&mut queue, sender, badge, true),
                Ok(SendOutcome::Queued)
            );
        }
        for (expected, badge) in [(1, 10), (2, 20), (3, 30)] {
            let (outcome, _) = ipc.receive(&mut queue, 5).unwrap();
            assert_eq!(
                outcome,
                ReceiveOutcome::Received {
                    sender: expected,
                    badge,
                    call: true
                }
            );
            assert_eq!(ipc.reply(5), Ok(expected));
        }
        assert_eq!(
            ipc.receive(&mut queue, 5),
            Ok((ReceiveOutcome::Queued, None))
        );
        // Receivers queue in order too.
        assert_eq!(
            ipc.receive(&mut queue, 6),
            Ok((ReceiveOutcome::Queued, None))
        );
        assert_eq!(
            ipc.send(&mut queue, 1, 0, false),
            Ok(SendOutcome::Delivered { receiver: 5 })
        );
        assert_eq!(
            ipc.send(&mut queue, 1, 0, false),
            Ok(SendOutcome::Delivered { receiver: 6 })
        );
    }

    #[test]
    fn call_and_reply_both_orders() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        // Server waits first.
        ipc.receive(&mut queue, 1).unwrap();
        assert_eq!(
            ipc.send(&mut queue, 2, 7, true),
            Ok(SendOutcome::Delivered { receiver: 1 })
        );
        assert_eq!(ipc.state(2), Some(State::AwaitingReply { server: 1 }));
        assert_eq!(ipc.reply_slot(1), Some(ReplySlot::Caller(2)));
        assert!(ipc.has_caller(1));
        assert_eq!(ipc.reply(1), Ok(2));
        assert_eq!(ipc.state(2), Some(State::Idle));
        assert_eq!(
            ipc.reply(1),
            Err(ReplyError::NoCaller),
            "the slot is one-shot"
        );
        // Client calls first.
        assert_eq!(ipc.send(&mut queue, 2, 7, true), Ok(SendOutcome::Queued));
        let (outcome, _) = ipc.receive(&mut queue, 1).unwrap();
        assert_eq!(
            outcome,
            ReceiveOutcome::Received {
                sender: 2,
                badge: 7,
                call: true
            }
        );
        assert_eq!(ipc.state(2), Some(State::AwaitingReply { server: 1 }));
        assert_eq!(ipc.reply(1), Ok(2));
    }

    #[test]
    fn reply_without_caller_is_refused() {
        let mut ipc = table();
        assert_eq!(ipc.reply(1), Err(ReplyError::NoCaller));
        assert_eq!(ipc.reply(100), Err(ReplyError::NoCaller));
        assert_eq!(Error::from(ReplyError::NoCaller), Error::InvalidArgument);
        assert_eq!(Error::from(ReplyError::CallerDied), Error::PeerDied);
    }

    #[test]
    fn receiving_again_abandons_an_unanswered_caller() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        ipc.send(&mut queue, 2, 0, true).unwrap();
        ipc.receive(&mut queue, 1).unwrap();
        assert_eq!(
            ipc.receive(&mut queue, 1),
            Ok((ReceiveOutcome::Queued, Some(2)))
        );
        assert_eq!(ipc.state(2), Some(State::Idle));
    }

    #[test]
    fn closed_endpoint_wakes_senders_and_refuses_more() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        ipc.send(&mut queue, 1, 0, true).unwrap();
        ipc.send(&mut queue, 2, 0, false).unwrap();
        let mut woken = Vec::new();
        ipc.close(&mut queue, |thread| woken.push(thread));
        assert_eq!(woken, [1, 2]);
        assert_eq!(ipc.state(1), Some(State::Idle));
        assert!(queue.is_closed());
        assert_eq!(ipc.send(&mut queue, 1, 0, true), Err(SendError::PeerDied));
        assert_eq!(
            ipc.state(1),
            Some(State::Idle),
            "a refused send changes nothing"
        );
    }

    #[test]
    fn server_death_wakes_its_caller() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        ipc.receive(&mut queue, 1).unwrap();
        ipc.send(&mut queue, 2, 0, true).unwrap();
        assert_eq!(
            ipc.exit(1, None),
            Some(2),
            "the caller is woken with PeerDied"
        );
        assert_eq!(ipc.state(2), Some(State::Idle));
        assert_eq!(ipc.reply_slot(1), Some(ReplySlot::Empty));
    }

    #[test]
    fn caller_death_leaves_a_dead_reply_slot() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        ipc.receive(&mut queue, 1).unwrap();
        ipc.send(&mut queue, 2, 0, true).unwrap();
        assert_eq!(ipc.exit(2, None), None);
        assert_eq!(ipc.reply(1), Err(ReplyError::CallerDied));
        assert_eq!(ipc.reply(1), Err(ReplyError::NoCaller));
    }

    #[test]
    fn a_queued_thread_that_dies_leaves_the_queue() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        for sender in [1, 2, 3] {
            ipc.send(&mut queue, sender, sender as u64, false).unwrap();
        }
        ipc.exit(2, Some(&mut queue));
        let (first, _) = ipc.receive(&mut queue, 5).unwrap();
        let (second, _) = ipc.receive(&mut queue, 5).unwrap();
        assert!(matches!(first, ReceiveOutcome::Received { sender: 1, .. }));
        assert!(matches!(second, ReceiveOutcome::Received { sender: 3, .. }));
        assert_eq!(
            ipc.receive(&mut queue, 5),
            Ok((ReceiveOutcome::Queued, None))
        );
    }

    #[test]
    fn bad_threads_change_nothing() {
        let mut ipc = table();
        let mut queue = EndpointQueue::new();
        assert_eq!(ipc.send(&mut queue, 8, 0, false), Err(SendError::BadThread));
        assert_eq!(ipc.receive(&mut queue, usize::MAX), Err(BadThread));
        ipc.send(&mut queue, 1, 0, false).unwrap();
        assert_eq!(
            ipc.send(&mut queue, 1, 0, false),
            Err(SendError::BadThread),
            "already queued"
        );
        assert_eq!(ipc.receive(&mut queue, 1), Err(BadThread));
        assert_eq!(ipc.exit(99, None), None);
        let (outcome, _) = ipc.receive(&mut queue, 2).unwrap();
        assert!(matches!(
            outcome,
            ReceiveOutcome::Received { sender: 1, .. }
        ));
    }

    #[test]
    fn notification_bits_accumulate_and_wake_waiters() {
        let mut ipc = table();
        let mut notification = NotificationState::new();
        assert_eq!(ipc.signal(&mut notification, 0b01), None);
        assert_eq!(ipc.signal(&mut notification, 0b10), None);
        assert_eq!(ipc.wait(&mut notification, 1), Ok(Some(0b11)));
        assert_eq!(notification.poll(), 0);
        assert_eq!(ipc.wait(&mut notification, 1), Ok(None));
        assert_eq!(ipc.wait(&mut notification, 2), Ok(None));
        assert_eq!(ipc.state(1), Some(State::Waiting));
        assert_eq!(ipc.signal(&mut notification, 0b100), Some((1, 0b100)));
        assert_eq!(ipc.state(1), Some(State::Idle));
        assert_eq!(ipc.signal(&mut notification, 0b1000), Some((2, 0b1000)));
        assert_eq!(ipc.signal(&mut notification, 0b1), None);
        assert_eq!(notification.poll(), 1);
        // A waiter that dies leaves the queue.
        assert_eq!(ipc.wait(&mut notification, 3), Ok(None));
        ipc.exit(3, Some(notification.waiters()));
        assert_eq!(ipc.signal(&mut notification, 4), None);
        assert_eq!(notification.poll(), 4);
    }

    #[test]
    fn random_rendezvous_match_a_model() {
        // Senders and receivers arrive in random order on one endpoint; every message is
        // delivered exactly once, in FIFO order per side.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ipc = sized(16);
        let mut queue = EndpointQueue::new();
        let mut blocked_senders = std::collections::VecDeque::new();
        let mut blocked_receivers = std::collections::VecDeque::new();
        let mut delivered = 0;
        for _ in 0..10_000 {
            let idle: Vec<usize> = (0..16)
                .filter(|&t| ipc.state(t) == Some(State::Idle))
                .collect();
            let thread = idle[(random() as usize) % idle.len()];
            // With one idle thread left, it must meet the other side or all would block.
            let send = if idle.len() == 1 {
                !blocked_receivers.is_empty()
            } else {
                random() % 2 == 0
            };
            if send {
                match ipc.send(&mut queue, thread, thread as u64, false).unwrap() {
                    SendOutcome::Queued => {
                        assert!(blocked_receivers.is_empty());
                        blocked_senders.push_back(thread);
                    }
                    SendOutcome::Delivered { receiver } => {
                        assert_eq!(blocked_receivers.pop_front(), Some(receiver));
                        delivered += 1;
                    }
                }
            } else {
                match ipc.receive(&mut queue, thread).unwrap().0 {
                    ReceiveOutcome::Queued => {
                        assert!(blocked_senders.is_empty());
                        blocked_receivers.push_back(thread);
                    }
                    ReceiveOutcome::Received { sender, badge, .. } => {
                        assert_eq!(blocked_senders.pop_front(), Some(sender));
                        assert_eq!(badge, sender as u64);
                        delivered += 1;
                    }
                }
            }
        }
        assert!(delivered > 1000);
    }
}
