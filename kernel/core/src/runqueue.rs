//! Scheduler run queues: fixed priorities, round robin inside a priority.
//!
//! One [`RunQueue`] per CPU holds the threads ready to run there, identified by an index
//! (the kernel's thread-table slot). There are [`PRIORITY_LEVELS`] priorities; a higher
//! number runs first. Each priority is a doubly linked FIFO; the links live in an array the
//! caller provides, one [`QueueLink`] per thread index, so the queue needs no allocation
//! and can unlink a thread from the middle when it blocks.
//!
//! # Scheduling discipline
//!
//! The running thread is *not* in the queue: [`RunQueue::pick_next`] removes the thread it
//! returns. When its time slice ends, or it yields, the scheduler puts it back with
//! [`RunQueue::enqueue`], behind every other ready thread of its priority — that is the
//! round robin, and why a thread that spins forever cannot starve an equal-priority one.
//! A thread preempted by a higher priority before its slice ended goes back with
//! [`RunQueue::enqueue_front`], so it resumes first among its peers.
//!
//! # Guarantees and cost
//!
//! - Every operation is O(1): the non-empty priorities are bits of one `u32`, so the
//!   highest is a count-leading-zeros away; enqueue, remove and pick touch at most three
//!   links. No loop depends on the number of threads.
//! - A thread is in the queue at most once; enqueuing a queued thread, removing an
//!   unqueued one or naming a thread beyond the link array is an error that changes
//!   nothing. Nothing panics on any thread index.
//! - Storage: 12 bytes per thread index (the caller's links) plus under 300 bytes per queue.
//!
//! [`RunQueues`] holds the queues of every CPU over one shared link table (a thread is in
//! at most one queue at a time), which grows with the thread ids.

use alloc::vec::Vec;

use crate::table::MAX_THREAD_IDS;

/// Number of priorities: `0` (lowest, e.g. the idle thread) to `31` (highest).
pub const PRIORITY_LEVELS: usize = 32;

/// Marks "no thread" in a link.
const NONE: u32 = u32::MAX;

/// A scheduling priority, `0..PRIORITY_LEVELS`; higher runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub const LOWEST: Self = Self(0);
    pub const HIGHEST: Self = Self(PRIORITY_LEVELS as u8 - 1);

    /// The priority `level`, or `None` if it is not below [`PRIORITY_LEVELS`].
    #[inline]
    pub const fn new(level: u8) -> Option<Self> {
        if (level as usize) < PRIORITY_LEVELS {
            Some(Self(level))
        } else {
            None
        }
    }

    #[inline]
    pub const fn level(self) -> u8 {
        self.0
    }

    /// The index of its FIFO. Masked (a priority is below [`PRIORITY_LEVELS`], a power of
    /// two, so nothing changes) so that indexing the FIFOs needs no bounds check.
    #[inline]
    const fn index(self) -> usize {
        self.0 as usize & (PRIORITY_LEVELS - 1)
    }
}

/// Why a run-queue operation was refused. The queue is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The thread index is beyond the link storage.
    NoSuchThread,
    /// The thread is already in the queue.
    AlreadyQueued,
    /// The thread is not in the queue.
    NotQueued,
}

/// One thread's place in a queue. Callers only create unqueued ones
/// ([`QueueLink::UNQUEUED`]) to build the storage they hand to [`RunQueue::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLink {
    previous: u32,
    next: u32,
    /// The priority it is queued at; meaningful only while `queued`.
    priority: Priority,
    queued: bool,
    /// The queue it is in ([`RunQueues`]); meaningful only while `queued`.
    queue: u8,
}

impl QueueLink {
    pub const UNQUEUED: Self = Self {
        previous: NONE,
        next: NONE,
        priority: Priority::LOWEST,
        queued: false,
        queue: 0,
    };
}

/// The heads of one queue's priority FIFOs; the links are the caller's.
#[derive(Clone, Debug)]
struct Heads {
    heads: [u32; PRIORITY_LEVELS],
    tails: [u32; PRIORITY_LEVELS],
    /// Bit `p` is set iff priority `p` has a queued thread.
    ready_priorities: u32,
    length: usize,
}

impl Heads {
    const EMPTY: Self = Self {
        heads: [NONE; PRIORITY_LEVELS],
        tails: [NONE; PRIORITY_LEVELS],
        ready_priorities: 0,
        length: 0,
    };

    #[inline]
    fn highest_priority(&self) -> Option<Priority> {
        highest_bit(self.ready_priorities).map(Priority)
    }

    #[inline]
    fn peek_next(&self) -> Option<usize> {
        let priority = self.highest_priority()?;
        Some(self.heads[priority.index()] as usize)
    }

    /// Link `thread` into this queue (tagged `tag`) at the tail of `priority`, or at its
    /// head when `front`.
    #[inline]
    fn enqueue(
        &mut self,
        links: &mut [QueueLink],
        tag: u8,
        thread: usize,
        priority: Priority,
        front: bool,
    ) -> Result<(), QueueError> {
        let index = unqueued_index(links, thread)?;
        let level = priority.index();
        let link = if front {
            QueueLink {
                previous: NONE,
                next: self.heads[level],
                priority,
                queued: true,
                queue: tag,
            }
        } else {
            QueueLink {
                previous: self.tails[level],
                next: NONE,
                priority,
                queued: true,
                queue: tag,
            }
        };
        links[thread] = link;
        if front {
            match link_mut(links, link.next) {
                Some(next) => next.previous = index,
                None => self.tails[level] = index,
            }
            self.heads[level] = index;
        } else {
            match link_mut(links, link.previous) {
                Some(previous) => previous.next = index,
                None => self.heads[level] = index,
            }
            self.tails[level] = index;
        }
        self.ready_priorities |= 1 << level;
        self.length += 1;
        Ok(())
    }

    /// Unlink and return the first thread of the highest non-empty priority: the head's
    /// unlinking written out (it has no predecessor), as the switch path runs it.
    #[inline]
    fn pop_head(&mut self, links: &mut [QueueLink]) -> Option<usize> {
        let level = usize::from(highest_bit(self.ready_priorities)?);
        let head = *self.heads.get(level)?;
        let link = links.get_mut(head as usize)?;
        let next = link.next;
        // An unqueued link's other fields are never read: `enqueue` writes them all.
        link.queued = false;
        match link_mut(links, next) {
            Some(following) => following.previous = NONE,
            None => {
                self.tails[level] = NONE;
                self.ready_priorities &= !(1 << level);
            }
        }
        self.heads[level] = next;
        self.length -= 1;
        Some(head as usize)
    }

    /// Unlink queued `thread`, which the caller checked is in this queue.
    #[inline]
    fn unlink(&mut self, links: &mut [QueueLink], thread: usize) -> Priority {
        let link = links[thread];
        let priority = link.priority;
        match link_mut(links, link.previous) {
            Some(previous) => previous.next = link.next,
            None => self.heads[priority.index()] = link.next,
        }
        match link_mut(links, link.next) {
            Some(next) => next.previous = link.previous,
            None => self.tails[priority.index()] = link.previous,
        }
        links[thread] = QueueLink::UNQUEUED;
        if self.heads[priority.index()] == NONE {
            self.ready_priorities &= !(1 << priority.index());
        }
        self.length -= 1;
        priority
    }

    #[inline]
    fn iter<'a>(&'a self, links: &'a [QueueLink]) -> impl Iterator<Item = (usize, Priority)> + 'a {
        let mut priorities = self.ready_priorities;
        let mut cursor = NONE;
        core::iter::from_fn(move || {
            while cursor == NONE {
                let priority = highest_bit(priorities)?;
                priorities &= !(1 << priority);
                cursor = self.heads[usize::from(priority)];
            }
            let thread = cursor as usize;
            let link = links.get(thread)?;
            cursor = link.next;
            Some((thread, link.priority))
        })
    }
}

/// The 32-bit link value for `thread`, if it exists and is not queued. Every link table
/// handed to [`Heads`] is at most [`MAX_THREAD_IDS`] long ([`usable`], [`RunQueues::grow`]),
/// so an index into it fits 32 bits and is never [`NONE`].
#[inline]
fn unqueued_index(links: &[QueueLink], thread: usize) -> Result<u32, QueueError> {
    let link = links.get(thread).ok_or(QueueError::NoSuchThread)?;
    if link.queued {
        return Err(QueueError::AlreadyQueued);
    }
    // why: thread < links.len() <= MAX_THREAD_IDS < u32::MAX.
    Ok(thread as u32)
}

/// The link at `index`; `None` for [`NONE`], which is past every link table.
#[inline]
fn link_mut(links: &mut [QueueLink], index: u32) -> Option<&mut QueueLink> {
    links.get_mut(index as usize)
}

/// The part of a caller's link storage a [`RunQueue`] uses: the first [`MAX_THREAD_IDS`].
#[inline]
fn usable(links: &mut [QueueLink]) -> &mut [QueueLink] {
    let len = links.len().min(MAX_THREAD_IDS);
    &mut links[..len]
}

/// The ready threads of one CPU, over caller-provided links `S` (e.g.
/// `[QueueLink; N]`, `&mut [QueueLink]`), indexed by thread index.
#[derive(Debug)]
pub struct RunQueue<S> {
    links: S,
    heads: Heads,
}

impl<S> RunQueue<S>
where
    S: AsRef<[QueueLink]> + AsMut<[QueueLink]>,
{
    /// An empty queue; every link in `links` is reset. Thread indices at or past
    /// [`MAX_THREAD_IDS`] are refused (links are 32-bit). O(threads), once.
    #[inline]
    pub fn new(mut links: S) -> Self {
        links.as_mut().fill(QueueLink::UNQUEUED);
        Self {
            links,
            heads: Heads::EMPTY,
        }
    }

    /// Queued threads.
    #[inline]
    pub const fn len(&self) -> usize {
        self.heads.length
    }

    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.heads.length == 0
    }

    /// Whether `thread` is queued.
    #[inline]
    pub fn contains(&self, thread: usize) -> bool {
        self.queued_priority(thread).is_some()
    }

    /// The priority `thread` is queued at, or `None` if it is not queued.
    #[inline]
    pub fn queued_priority(&self, thread: usize) -> Option<Priority> {
        let link = self.links.as_ref().get(thread)?;
        link.queued.then_some(link.priority)
    }

    /// The highest priority with a ready thread: the scheduler compares it with the
    /// running thread's to decide whether to preempt. O(1).
    #[inline]
    pub fn highest_priority(&self) -> Option<Priority> {
        self.heads.highest_priority()
    }

    /// The thread [`pick_next`](Self::pick_next) would return, left in the queue. O(1).
    #[inline]
    pub fn peek_next(&self) -> Option<usize> {
        self.heads.peek_next()
    }

    /// Removes and returns the first thread of the highest non-empty priority. O(1).
    #[inline]
    pub fn pick_next(&mut self) -> Option<usize> {
        self.heads.pop_head(usable(self.links.as_mut()))
    }

    /// Puts `thread` at the tail of `priority`: a newly ready thread, or the running one
    /// after its time slice or a yield (round robin). O(1).
    #[inline]
    pub fn enqueue(&mut self, thread: usize, priority: Priority) -> Result<(), QueueError> {
        self.heads
            .enqueue(usable(self.links.as_mut()), 0, thread, priority, false)
    }

    /// Puts `thread` at the head of `priority`: a thread preempted before its slice ended
    /// resumes before its peers. O(1).
    #[inline]
    pub fn enqueue_front(&mut self, thread: usize, priority: Priority) -> Result<(), QueueError> {
        self.heads
            .enqueue(usable(self.links.as_mut()), 0, thread, priority, true)
    }

    /// Unlinks `thread` wherever it is in its priority's queue (it blocked, or is being
    /// killed or moved to another CPU) and returns the priority it was queued at. O(1).
    #[inline]
    pub fn remove(&mut self, thread: usize) -> Result<Priority, QueueError> {
        let link = *self
            .links
            .as_ref()
            .get(thread)
            .ok_or(QueueError::NoSuchThread)?;
        if !link.queued {
            return Err(QueueError::NotQueued);
        }
        Ok(self.heads.unlink(usable(self.links.as_mut()), thread))
    }

    /// The queued threads in the order they would be picked (highest priority first,
    /// queue order within one), for listings and checks. O(queued threads).
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (usize, Priority)> + '_ {
        self.heads.iter(self.links.as_ref())
    }
}

/// The run queues of `Q` CPUs over one link per thread (a thread is in at most one queue
/// at a time; its link names which), in a table that grows with the thread ids
/// ([`RunQueues::grow`]). Queue `queue` of each method is a CPU index below `Q`; the
/// operations are those of [`RunQueue`], with the same costs and the same refusals, and a
/// thread queued in another queue counts as not queued in this one.
#[derive(Debug)]
pub struct RunQueues<const Q: usize> {
    links: Vec<QueueLink>,
    queues: [Heads; Q],
}

impl<const Q: usize> Default for RunQueues<Q> {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl<const Q: usize> RunQueues<Q> {
    /// The bytes of the one allocation this keeps (the links), for leak checks that count
    /// grown tables apart.
    pub fn storage_bytes(&self) -> usize {
        self.links.capacity() * core::mem::size_of::<QueueLink>()
    }

    /// Empty queues serving no thread id yet ([`RunQueues::grow`]).
    #[inline]
    pub const fn new() -> Self {
        const { assert!(Q <= 256, "queue tags are one byte") };
        Self {
            links: Vec::new(),
            queues: [Heads::EMPTY; Q],
        }
    }

    /// Thread ids served (`0..capacity`).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.links.len()
    }

    /// Serve thread ids `0..capacity` from `spare`'s storage (allocated beforehand with
    /// room for them, [`crate::table::room`]); returns the storage to free. Nothing changes
    /// when the table is that long already, `capacity` is above [`MAX_THREAD_IDS`] or `spare`
    /// has too little room. No allocation.
    #[inline]
    pub fn grow(&mut self, spare: Vec<QueueLink>, capacity: usize) -> Vec<QueueLink> {
        if capacity > MAX_THREAD_IDS {
            return spare;
        }
        crate::table::move_into(&mut self.links, spare, capacity, || QueueLink::UNQUEUED)
    }

    /// Threads queued on `queue`.
    #[inline(always)]
    pub fn len(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, |heads| heads.length)
    }

    #[inline(always)]
    pub fn is_empty(&self, queue: usize) -> bool {
        self.len(queue) == 0
    }

    /// Whether `thread` is queued on `queue`.
    #[inline]
    pub fn contains(&self, queue: usize, thread: usize) -> bool {
        self.queued_priority(queue, thread).is_some()
    }

    /// The queue `thread` is on, if any.
    #[inline]
    pub fn queue_of(&self, thread: usize) -> Option<usize> {
        let link = self.links.get(thread)?;
        link.queued.then_some(usize::from(link.queue))
    }

    /// The priority `thread` is queued at on `queue`, or `None`.
    #[inline]
    pub fn queued_priority(&self, queue: usize, thread: usize) -> Option<Priority> {
        let link = self.links.get(thread)?;
        (link.queued && usize::from(link.queue) == queue).then_some(link.priority)
    }

    /// The highest priority with a ready thread on `queue`. O(1).
    #[inline(always)]
    pub fn highest_priority(&self, queue: usize) -> Option<Priority> {
        self.queues.get(queue)?.highest_priority()
    }

    /// The thread [`pick_next`](Self::pick_next) would return from `queue`. O(1).
    #[inline]
    pub fn peek_next(&self, queue: usize) -> Option<usize> {
        self.queues.get(queue)?.peek_next()
    }

    /// Removes and returns the first thread of `queue`'s highest non-empty priority. O(1).
    #[inline]
    pub fn pick_next(&mut self, queue: usize) -> Option<usize> {
        self.queues.get_mut(queue)?.pop_head(&mut self.links)
    }

    /// Puts `thread` at the tail of `priority` on `queue`. O(1).
    #[inline]
    pub fn enqueue(
        &mut self,
        queue: usize,
        thread: usize,
        priority: Priority,
    ) -> Result<(), QueueError> {
        // `Heads::enqueue` at the tail written out, as the switch paths run it.
        let heads = self.queues.get_mut(queue).ok_or(QueueError::NoSuchThread)?;
        let link = self.links.get_mut(thread).ok_or(QueueError::NoSuchThread)?;
        if link.queued {
            return Err(QueueError::AlreadyQueued);
        }
        // why: thread < links.len() <= MAX_THREAD_IDS < u32::MAX (`grow`); queue < Q <= 256.
        let index = thread as u32;
        let level = priority.index();
        let tail = heads.tails[level];
        *link = QueueLink {
            previous: tail,
            next: NONE,
            priority,
            queued: true,
            queue: queue as u8,
        };
        match self.links.get_mut(tail as usize) {
            Some(previous) => previous.next = index,
            None => heads.heads[level] = index,
        }
        heads.tails[level] = index;
        heads.ready_priorities |= 1 << level;
        heads.length += 1;
        Ok(())
    }

    /// Puts `thread` at the head of `priority` on `queue`. O(1).
    #[inline]
    pub fn enqueue_front(
        &mut self,
        queue: usize,
        thread: usize,
        priority: Priority,
    ) -> Result<(), QueueError> {
        self.link(queue, thread, priority, true)
    }

    #[inline]
    fn link(
        &mut self,
        queue: usize,
        thread: usize,
        priority: Priority,
        front: bool,
    ) -> Result<(), QueueError> {
        let heads = self.queues.get_mut(queue).ok_or(QueueError::NoSuchThread)?;
        // why: queue < Q <= 256 (checked in `new`).
        heads.enqueue(&mut self.links, queue as u8, thread, priority, front)
    }

    /// Unlinks `thread` from `queue` and returns the priority it was queued at. O(1).
    #[inline]
    pub fn remove(&mut self, queue: usize, thread: usize) -> Result<Priority, QueueError> {
        let link = *self.links.get(thread).ok_or(QueueError::NoSuchThread)?;
        if !link.queued || usize::from(link.queue) != queue {
            return Err(QueueError::NotQueued);
        }
        let heads = self.queues.get_mut(queue).ok_or(QueueError::NotQueued)?;
        Ok(heads.unlink(&mut self.links, thread))
    }

    /// `queue`'s threads in pick order. O(queued threads).
    #[inline]
    pub fn iter(&self, queue: usize) -> impl Iterator<Item = (usize, Priority)> + '_ {
        self.queues
            .get(queue)
            .into_iter()
            .flat_map(|heads| heads.iter(&self.links))
    }
}

/// The highest set bit of `bits`, if any.
#[inline]
fn highest_bit(bits: u32) -> Option<u8> {
    // why: u32::BITS - 1 - leading_zeros is at most 31 and fits a u8.
    (bits != 0).then(|| (u32::BITS - 1 - bits.leading_zeros()) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priority(level: u8) -> Priority {
        Priority::new(level).unwrap()
    }

    fn queue<const N: usize>() -> RunQueue<[QueueLink; N]> {
        RunQueue::new([QueueLink::UNQUEUED; N])
    }

    /// Drains the queue in pick order.
    fn drain<S: AsRef<[QueueLink]> + AsMut<[QueueLink]>>(queue: &mut RunQueue<S>) -> Vec<usize> {
        core::iter::from_fn(|| queue.pick_next()).collect()
    }

    #[test]
    fn link_size_is_as_documented() {
        assert_eq!(core::mem::size_of::<QueueLink>(), 12);
        assert!(core::mem::size_of::<RunQueue<&mut [QueueLink]>>() < 300);
    }

    #[test]
    fn priorities_are_validated() {
        assert_eq!(Priority::new(0), Some(Priority::LOWEST));
        assert_eq!(Priority::new(31), Some(Priority::HIGHEST));
        assert_eq!(Priority::new(32), None);
        assert_eq!(Priority::new(u8::MAX), None);
        assert!(Priority::HIGHEST > Priority::LOWEST);
    }

    #[test]
    fn higher_priority_runs_first() {
        let mut queue = queue::<8>();
        queue.enqueue(0, priority(1)).unwrap();
        queue.enqueue(1, priority(31)).unwrap();
        queue.enqueue(2, priority(0)).unwrap();
        queue.enqueue(3, priority(16)).unwrap();
        queue.enqueue(4, priority(16)).unwrap();
        assert_eq!(queue.highest_priority(), Some(priority(31)));
        assert_eq!(queue.peek_next(), Some(1));
        assert_eq!(queue.len(), 5);
        assert_eq!(drain(&mut queue), [1, 3, 4, 0, 2]);
        assert!(queue.is_empty());
        assert_eq!(queue.highest_priority(), None);
        assert_eq!(queue.pick_next(), None);
    }

    #[test]
    fn round_robin_within_a_priority() {
        let mut queue = queue::<4>();
        for thread in 0..3 {
            queue.enqueue(thread, priority(5)).unwrap();
        }
        let mut order = Vec::new();
        for _ in 0..9 {
            // The running thread's slice ends: it goes behind its peers.
            let running = queue.pick_next().unwrap();
            order.push(running);
            queue.enqueue(running, priority(5)).unwrap();
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_spinning_thread_never_starves_its_peers() {
        // Four threads at one priority that never block: each always requeues itself the
        // moment its slice ends. Every one must keep getting picked, each within four
        // slices of its last turn.
        let mut queue = queue::<5>();
        for thread in 0..4 {
            queue.enqueue(thread, priority(10)).unwrap();
        }
        queue.enqueue(4, priority(3)).unwrap(); // lower priority: never runs while they spin
        let mut picks = [0u32; 5];
        let mut longest_wait = [0u32; 5];
        let mut last_pick = [0u32; 5];
        for slice in 1..=10_000 {
            let running = queue.pick_next().unwrap();
            picks[running] += 1;
            longest_wait[running] = longest_wait[running].max(slice - last_pick[running]);
            last_pick[running] = slice;
            queue.enqueue(running, priority(10)).unwrap();
        }
        assert_eq!(picks, [2500, 2500, 2500, 2500, 0]);
        assert!(
            longest_wait[..4].iter().all(|&wait| wait <= 4),
            "{longest_wait:?}"
        );
    }

    #[test]
    fn preempted_thread_resumes_first() {
        let mut queue = queue::<4>();
        queue.enqueue(0, priority(2)).unwrap();
        queue.enqueue(1, priority(2)).unwrap();
        let running = queue.pick_next().unwrap();
        assert_eq!(running, 0);
        // A higher-priority thread wakes; the scheduler preempts 0 mid-slice.
        queue.enqueue(2, priority(9)).unwrap();
        queue.enqueue_front(running, priority(2)).unwrap();
        assert_eq!(drain(&mut queue), [2, 0, 1]);
        queue.enqueue_front(3, priority(4)).unwrap();
        assert_eq!(drain(&mut queue), [3], "front of an empty level");
    }

    #[test]
    fn removal_from_head_middle_tail_and_only() {
        let mut queue = queue::<6>();
        for thread in 0..5 {
            queue.enqueue(thread, priority(7)).unwrap();
        }
        queue.enqueue(5, priority(1)).unwrap();
        assert_eq!(queue.remove(2), Ok(priority(7)), "middle");
        assert_eq!(queue.remove(0), Ok(priority(7)), "head");
        assert_eq!(queue.remove(4), Ok(priority(7)), "tail");
        assert_eq!(queue.len(), 3);
        assert!(!queue.contains(2));
        assert_eq!(queue.queued_priority(3), Some(priority(7)));
        assert_eq!(
            queue.iter().collect::<Vec<_>>(),
            [(1, priority(7)), (3, priority(7)), (5, priority(1))]
        );
        assert_eq!(queue.remove(5), Ok(priority(1)), "only thread of its level");
        assert_eq!(queue.highest_priority(), Some(priority(7)));
        queue.remove(1).unwrap();
        queue.remove(3).unwrap();
        assert_eq!(
            queue.highest_priority(),
            None,
            "bitmap cleared with the last thread"
        );
        // A removed thread can come back, at another priority.
        queue.enqueue(2, priority(30)).unwrap();
        queue.enqueue(0, priority(30)).unwrap();
        assert_eq!(drain(&mut queue), [2, 0]);
    }

    #[test]
    fn misuse_is_refused_and_changes_nothing() {
        let mut queue = queue::<3>();
        queue.enqueue(1, priority(4)).unwrap();
        assert_eq!(
            queue.enqueue(1, priority(4)),
            Err(QueueError::AlreadyQueued)
        );
        assert_eq!(
            queue.enqueue(1, priority(9)),
            Err(QueueError::AlreadyQueued)
        );
        assert_eq!(
            queue.enqueue_front(1, priority(4)),
            Err(QueueError::AlreadyQueued)
        );
        assert_eq!(queue.enqueue(3, priority(4)), Err(QueueError::NoSuchThread));
        assert_eq!(
            queue.enqueue(usize::MAX, priority(4)),
            Err(QueueError::NoSuchThread)
        );
        assert_eq!(queue.remove(0), Err(QueueError::NotQueued));
        assert_eq!(queue.remove(usize::MAX), Err(QueueError::NoSuchThread));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.queued_priority(usize::MAX), None);
        assert_eq!(drain(&mut queue), [1]);
    }

    #[test]
    fn works_over_borrowed_storage() {
        let mut links = vec![
            QueueLink {
                queued: true,
                ..QueueLink::UNQUEUED
            };
            100
        ];
        let mut queue = RunQueue::new(links.as_mut_slice());
        assert!(queue.is_empty(), "stale links are reset");
        queue.enqueue(99, priority(0)).unwrap();
        queue.enqueue(42, priority(0)).unwrap();
        assert_eq!(drain(&mut queue), [99, 42]);
    }

    #[test]
    fn shared_links_serve_several_queues_and_grow() {
        let mut queues = RunQueues::<3>::new();
        assert_eq!(
            queues.enqueue(0, 1, priority(4)),
            Err(QueueError::NoSuchThread)
        );
        let spare = queues.grow(crate::table::room(4).unwrap(), 4);
        assert!(spare.is_empty());
        queues.enqueue(0, 1, priority(4)).unwrap();
        queues.enqueue(2, 2, priority(9)).unwrap();
        queues.enqueue(2, 3, priority(9)).unwrap();
        assert_eq!(
            queues.enqueue(1, 1, priority(4)),
            Err(QueueError::AlreadyQueued)
        );
        assert_eq!(
            queues.remove(1, 2),
            Err(QueueError::NotQueued),
            "queued elsewhere"
        );
        assert!(queues.contains(2, 2) && !queues.contains(0, 2));
        assert_eq!(queues.queue_of(3), Some(2));
        assert_eq!((queues.len(0), queues.len(1), queues.len(2)), (1, 0, 2));
        // Growing keeps every queued thread where it was.
        let _ = queues.grow(crate::table::room(64).unwrap(), 64);
        assert_eq!(queues.capacity(), 64);
        queues.enqueue_front(2, 63, priority(9)).unwrap();
        assert_eq!(
            queues.iter(2).map(|(thread, _)| thread).collect::<Vec<_>>(),
            [63, 2, 3]
        );
        assert_eq!(queues.pick_next(0), Some(1));
        assert_eq!(queues.pick_next(0), None);
        assert_eq!(queues.pick_next(2), Some(63));
        assert_eq!(queues.remove(2, 3), Ok(priority(9)));
        assert_eq!(queues.highest_priority(2), Some(priority(9)));
        assert_eq!(queues.pick_next(2), Some(2));
        assert!(queues.is_empty(2));
        assert_eq!(
            queues.enqueue(3, 1, priority(4)),
            Err(QueueError::NoSuchThread)
        );
    }

    #[test]
    fn random_operations_match_a_model() {
        // A model of per-priority FIFOs as vectors; xorshift64 drives the operations.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const THREADS: usize = 24;
        let mut queue = queue::<THREADS>();
        let mut model: Vec<Vec<usize>> = vec![Vec::new(); PRIORITY_LEVELS];
        for _ in 0..50_000 {
            let thread = (random() % (THREADS as u64 + 2)) as usize; // sometimes out of range
            let level = priority((random() % 6) as u8 * 6);
            let queued_in_model = model.iter().any(|fifo| fifo.contains(&thread));
            match random() % 4 {
                0 => {
                    let result = queue.enqueue(thread, level);
                    if thread >= THREADS {
                        assert_eq!(result, Err(QueueError::NoSuchThread));
                    } else if queued_in_model {
                        assert_eq!(result, Err(QueueError::AlreadyQueued));
                    } else {
                        assert_eq!(result, Ok(()));
                        model[level.index()].push(thread);
                    }
                }
                1 => {
                    let result = queue.enqueue_front(thread, level);
                    if thread < THREADS && !queued_in_model {
                        assert_eq!(result, Ok(()));
                        model[level.index()].insert(0, thread);
                    } else {
                        assert!(result.is_err());
                    }
                }
                2 => {
                    let result = queue.remove(thread);
                    match model
                        .iter_mut()
                        .enumerate()
                        .find(|(_, fifo)| fifo.contains(&thread))
                    {
                        Some((level, fifo)) => {
                            fifo.retain(|&queued| queued != thread);
                            assert_eq!(result, Ok(priority(level as u8)));
                        }
                        None => assert!(result.is_err()),
                    }
                }
                _ => {
                    let expected = model
                        .iter_mut()
                        .rev()
                        .find(|fifo| !fifo.is_empty())
                        .map(|fifo| fifo.remove(0));
                    assert_eq!(queue.pick_next(), expected);
                }
            }
            let expected: Vec<usize> = model.iter().rev().flatten().copied().collect();
            let actual: Vec<usize> = queue.iter().map(|(thread, _)| thread).collect();
            assert_eq!(actual, expected);
            assert_eq!(queue.len(), expected.len());
        }
    }
}
