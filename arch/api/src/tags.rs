//! Address-space tags (x86_64 PCIDs, AArch64 ASIDs): the TLB keeps entries of several
//! spaces apart by tag, so two live spaces must never carry the same one, or one would
//! run on the other's cached translations.
//!
//! [`TagAllocator`] hands out each tag of `first..=last` to at most one live space and
//! takes it back when the space is destroyed. The TLB may still hold entries of the freed
//! tag, so the arch flushes a tag on the first activation of the space that gets it next.
//! When every tag is taken the caller falls back to a tag it flushes on every activation.

/// A bitmap of `WORDS * 64` tags, of which `first..=last` are handed out.
#[derive(Debug)]
pub struct TagAllocator<const WORDS: usize> {
    used: [u64; WORDS],
    first: u16,
    last: u16,
    /// Where the next search starts (round robin keeps a freed tag unused for as long as
    /// possible, so its stale entries age out of the TLB first).
    next: u16,
}

impl<const WORDS: usize> TagAllocator<WORDS> {
    /// Tags `first..=last`, all free. `last` must lie below `WORDS * 64`.
    pub const fn new(first: u16, last: u16) -> Self {
        assert!((last as usize) < WORDS * 64 && first <= last);
        Self {
            used: [0; WORDS],
            first,
            last,
            next: first,
        }
    }

    fn is_used(&self, tag: u16) -> bool {
        self.used[tag as usize / 64] & (1 << (tag % 64)) != 0
    }

    /// A tag no live space holds, or `None` when all are taken.
    pub fn allocate(&mut self) -> Option<u16> {
        let span = self.last - self.first + 1;
        for offset in 0..span {
            let tag = self.first + (self.next - self.first + offset) % span;
            if !self.is_used(tag) {
                self.used[tag as usize / 64] |= 1 << (tag % 64);
                self.next = if tag == self.last {
                    self.first
                } else {
                    tag + 1
                };
                return Some(tag);
            }
        }
        None
    }

    /// Give `tag` back (its space was destroyed). Tags outside the range are ignored.
    pub fn free(&mut self, tag: u16) {
        if (self.first..=self.last).contains(&tag) {
            self.used[tag as usize / 64] &= !(1 << (tag % 64));
        }
    }

    /// Tags held by live spaces.
    pub fn in_use(&self) -> usize {
        self.used
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    #[test]
    fn a_live_tag_is_never_handed_out_again() {
        let mut tags = TagAllocator::<64>::new(1, 4094);
        let kept = tags.allocate().unwrap();
        // Far more than the tag space, each space destroyed before the next: the kept one
        // never comes back while it is live.
        for _ in 0..10_000 {
            let tag = tags.allocate().unwrap();
            assert_ne!(tag, kept);
            assert!((1..=4094).contains(&tag));
            tags.free(tag);
        }
        assert_eq!(tags.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_reported_and_a_free_makes_room() {
        let mut tags = TagAllocator::<1>::new(1, 6);
        let all: Vec<u16> = (0..6).map(|_| tags.allocate().unwrap()).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6], "each tag once");
        assert_eq!(tags.allocate(), None);
        tags.free(4);
        assert_eq!(tags.allocate(), Some(4));
        tags.free(0); // outside the range: ignored
        tags.free(63);
        assert_eq!(tags.in_use(), 6);
    }

    #[test]
    fn a_freed_tag_waits_its_turn() {
        let mut tags = TagAllocator::<1>::new(1, 8);
        let first = tags.allocate().unwrap();
        tags.free(first);
        // Round robin: the other tags come first.
        let next: Vec<u16> = (0..7).map(|_| tags.allocate().unwrap()).collect();
        assert!(!next.contains(&first));
        assert_eq!(tags.allocate(), Some(first));
    }
}
