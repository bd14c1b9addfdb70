//! Sleeping threads by wake-up tick: a binary min-heap over thread indices with each
//! thread's place in it, so the timer tick finds the due threads in O(log n) each and a
//! thread woken early (or killed) leaves the heap in O(log n), with no scan of the thread
//! table.
//!
//! A thread is in the heap at most once; [`Deadlines::insert`] of a thread that is already
//! there moves it to its new deadline. Among equal deadlines, the order is unspecified.

use alloc::vec::Vec;

/// No place: the thread is not in the heap.
const NONE: u32 = u32::MAX;

/// The sleepers among thread indices `0..capacity`; the table grows with the thread ids
/// ([`Deadlines::grow`]).
#[derive(Debug, Default)]
pub struct Deadlines {
    /// `(deadline, thread)`, a min-heap on the deadline in `heap[..len]` (`heap` is as long
    /// as `place`).
    heap: Vec<(u64, u32)>,
    len: usize,
    /// Each thread's index in `heap`, or [`NONE`].
    place: Vec<u32>,
}

/// The storage of a bigger [`Deadlines`], allocated with no lock held.
pub struct Spare {
    heap: Vec<(u64, u32)>,
    place: Vec<u32>,
}

impl Spare {
    /// Room for `capacity` thread indices, or the allocator's refusal.
    pub fn room(capacity: usize) -> Result<Self, alloc::collections::TryReserveError> {
        Ok(Self {
            heap: crate::table::room(capacity)?,
            place: crate::table::room(capacity)?,
        })
    }
}

impl Deadlines {
    /// The bytes of the two allocations this keeps (heap, places), for leak checks that
    /// count grown tables apart.
    pub fn storage_bytes(&self) -> [usize; 2] {
        [
            self.heap.capacity() * core::mem::size_of::<(u64, u32)>(),
            self.place.capacity() * core::mem::size_of::<u32>(),
        ]
    }

    pub const fn new() -> Self {
        Self {
            heap: Vec::new(),
            len: 0,
            place: Vec::new(),
        }
    }

    /// Thread indices served (`0..capacity`).
    pub fn capacity(&self) -> usize {
        self.place.len()
    }

    /// Serve thread indices `0..capacity` from `spare`'s storage; returns the storage to
    /// free. Nothing changes when the table is that long already or `spare` has too
    /// little room. No allocation.
    pub fn grow(&mut self, spare: Spare, capacity: usize) -> Spare {
        if capacity <= self.capacity()
            || spare.heap.capacity() < capacity
            || spare.place.capacity() < capacity
        {
            return spare;
        }
        Spare {
            heap: crate::table::move_into(&mut self.heap, spare.heap, capacity, || (0, 0)),
            place: crate::table::move_into(&mut self.place, spare.place, capacity, || NONE),
        }
    }

    /// Sleepers in the heap.
    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The deadline of `thread`, if it sleeps.
    pub fn deadline(&self, thread: usize) -> Option<u64> {
        let place = *self.place.get(thread)?;
        (place != NONE).then(|| self.heap[place as usize].0)
    }

    /// The earliest deadline, if any thread sleeps.
    pub fn earliest(&self) -> Option<u64> {
        (self.len > 0).then(|| self.heap[0].0)
    }

    /// Let `thread` sleep until `deadline` (replacing an earlier entry of it). `false` for
    /// a thread index out of range (nothing changes).
    pub fn insert(&mut self, thread: usize, deadline: u64) -> bool {
        if thread >= self.place.len() {
            return false;
        }
        self.remove(thread);
        let at = self.len;
        self.len += 1;
        // why: thread < capacity, a table size far below u32::MAX (`table::MAX_THREAD_IDS`).
        self.heap[at] = (deadline, thread as u32);
        self.place[thread] = at as u32;
        self.up(at);
        true
    }

    /// Take `thread` out (woken early, killed, gone); whether it was in.
    pub fn remove(&mut self, thread: usize) -> bool {
        let Some(&place) = self.place.get(thread) else {
            return false;
        };
        if place == NONE {
            return false;
        }
        let at = place as usize;
        self.place[thread] = NONE;
        self.len -= 1;
        if at != self.len {
            self.heap[at] = self.heap[self.len];
            self.place[self.heap[at].1 as usize] = at as u32;
            // The moved entry may belong above or below its new place.
            self.up(at);
            self.down(self.place[self.heap[at].1 as usize] as usize);
        }
        true
    }

    /// Take out and return a thread whose deadline is at or before `now`, if there is one.
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        if self.len == 0 || self.heap[0].0 > now {
            return None;
        }
        let thread = self.heap[0].1 as usize;
        self.remove(thread);
        Some(thread)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a].1 as usize] = a as u32;
        self.place[self.heap[b].1 as usize] = b as u32;
    }

    fn up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.heap[parent].0 <= self.heap[at].0 {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn down(&mut self, mut at: usize) {
        loop {
            let left = 2 * at + 1;
            if left >= self.len {
                break;
            }
            let right = left + 1;
            let child = if right < self.len && self.heap[right].0 < self.heap[left].0 {
                right
            } else {
                left
            };
            if self.heap[at].0 <= self.heap[child].0 {
                break;
            }
            self.swap(at, child);
            at = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap property and the place map agree with the entries.
    fn check(deadlines: &Deadlines) {
        for at in 0..deadlines.len {
            let (deadline, thread) = deadlines.heap[at];
            assert_eq!(deadlines.place[thread as usize], at as u32);
            if at > 0 {
                assert!(deadlines.heap[(at - 1) / 2].0 <= deadline);
            }
        }
        let placed = deadlines.place.iter().filter(|&&p| p != NONE).count();
        assert_eq!(placed, deadlines.len);
    }

    fn sized(capacity: usize) -> Deadlines {
        let mut deadlines = Deadlines::new();
        let _ = deadlines.grow(Spare::room(capacity).unwrap(), capacity);
        assert_eq!(deadlines.capacity(), capacity);
        deadlines
    }

    #[test]
    fn growing_keeps_the_sleepers() {
        let mut deadlines = sized(2);
        deadlines.insert(1, 30);
        deadlines.insert(0, 10);
        assert!(!deadlines.insert(5, 20));
        let _ = deadlines.grow(Spare::room(8).unwrap(), 8);
        assert!(deadlines.insert(5, 20));
        check(&deadlines);
        let woken: Vec<usize> = core::iter::from_fn(|| deadlines.pop_due(100)).collect();
        assert_eq!(woken, [0, 5, 1]);
    }

    #[test]
    fn due_threads_come_out_in_deadline_order() {
        let mut deadlines = sized(8);
        for (thread, deadline) in [(3, 50), (1, 10), (7, 30), (2, 20), (5, 40)] {
            assert!(deadlines.insert(thread, deadline));
            check(&deadlines);
        }
        assert_eq!(deadlines.earliest(), Some(10));
        assert_eq!(deadlines.pop_due(5), None);
        let mut woken = Vec::new();
        while let Some(thread) = deadlines.pop_due(35) {
            woken.push(thread);
            check(&deadlines);
        }
        assert_eq!(woken, [1, 2, 7]);
        assert_eq!(deadlines.len(), 2);
        assert_eq!(deadlines.deadline(3), Some(50));
        assert_eq!(deadlines.deadline(1), None);
    }

    #[test]
    fn insert_again_moves_and_remove_takes_out() {
        let mut deadlines = sized(4);
        deadlines.insert(0, 100);
        deadlines.insert(1, 200);
        deadlines.insert(0, 300);
        check(&deadlines);
        assert_eq!(deadlines.len(), 2);
        assert_eq!(deadlines.pop_due(250), Some(1));
        assert!(deadlines.remove(0));
        assert!(!deadlines.remove(0));
        assert!(deadlines.is_empty());
        assert!(!deadlines.insert(4, 1), "out of range");
        assert!(!deadlines.remove(9));
    }

    #[test]
    fn random_operations_keep_the_heap_and_match_a_model() {
        const N: usize = 64;
        let mut deadlines = sized(N);
        let mut model: [Option<u64>; N] = [None; N];
        let mut state = 0x1234_5678_9abc_def1_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now = 0;
        for _ in 0..20_000 {
            let thread = (next() % N as u64) as usize;
            match next() % 4 {
                0 | 1 => {
                    let deadline = now + next() % 100;
                    deadlines.insert(thread, deadline);
                    model[thread] = Some(deadline);
                }
                2 => {
                    assert_eq!(deadlines.remove(thread), model[thread].is_some());
                    model[thread] = None;
                }
                _ => {
                    now += next() % 20;
                    while let Some(woken) = deadlines.pop_due(now) {
                        let due = model[woken].take().expect("woken thread was asleep");
                        assert!(due <= now);
                    }
                    assert!(model.iter().flatten().all(|&due| due > now));
                }
            }
            check(&deadlines);
            for (thread, due) in model.iter().enumerate() {
                assert_eq!(deadlines.deadline(thread), *due);
            }
        }
    }
}
