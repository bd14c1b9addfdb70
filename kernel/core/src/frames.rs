//! The physical frame allocator: pure bookkeeping over physical frame numbers (4 KiB
//! frames). It never reads or writes the frames themselves, so it is host-tested here and
//! the kernel owns every memory access (DESIGN.md §1).
//!
//! # Design
//!
//! A buddy allocator's usual free lists are intrusive (the links live in the free frames),
//! which needs memory access. Instead the allocator keeps all of its state in one
//! `&mut [u64]` the caller hands in — the kernel carves it from usable memory before the
//! allocator exists, sized by [`FrameSpan::storage_words`] — laid out as:
//!
//! - a **free bitmap**, one bit per frame of the span (set = free);
//! - a **managed bitmap**, one bit per frame (set = handed to the allocator by
//!   [`FrameAllocator::add_region`]); it is what tells a double free from a free of a frame
//!   the allocator never owned;
//! - a **buddy tree**: a complete binary tree (heap order, one byte per node, eight nodes
//!   per word) whose leaves are the 64-frame bitmap words. Each node holds one plus the
//!   order of the largest free, naturally aligned run of frames in its subtree (0: none
//!   free). A node whose two halves are both entirely free is itself entirely free.
//!
//! The span is a power-of-two number of frames starting at a frame aligned to
//! 2^[`MAX_ORDER`] frames (1 GiB), so a run the tree hands out is naturally aligned in
//! *physical* frame numbers, not only relative to the span.
//!
//! # Guarantees
//!
//! - [`allocate_run`](FrameAllocator::allocate_run) of order `k` returns `2^k` contiguous
//!   frames whose first frame number is a multiple of `2^k` (page tables: `k = 0`; a 16 KiB
//!   kernel stack plus its guard: `k = 2`), preferring the lowest address.
//! - [`free_frames`](FrameAllocator::free_frames) is exact at all times.
//! - Every failure — exhaustion, double free, freeing or reserving a frame never handed to
//!   the allocator, misaligned runs, overlapping regions — returns a [`FrameError`] and
//!   leaves the state exactly as it was: each operation checks everything, then mutates.
//! - Because the state is bits rather than remembered block sizes, a run may be freed as a
//!   whole or frame by frame, and neighbouring free frames coalesce by themselves.
//! - No panics on any argument, no `unsafe`, no global allocator.
//!
//! # Cost
//!
//! - Time: allocate and free of order `k` cost O(log n + 2^k / 64) for a span of `n`
//!   frames — a walk down the tree, then one walk back up; for `k <= 6` the bitmap part is
//!   one word. `add_region` and `reserve` cost O(length / 64 + log n).
//! - Space: 2 bits per frame plus about 2 bytes per 64 frames, over the span (lowest usable
//!   frame rounded down to 1 GiB, size rounded up to a power of two): 18 bytes per 256 KiB,
//!   i.e. 576 KiB of metadata (0.007 %) for an 8 GiB span.
//!
//! # Weak spots
//!
//! - Memory maps with huge holes pay for the holes (2.25 bits per frame of span); maps
//!   wider than 2^[`MAX_SPAN_ORDER`] frames are refused.
//! - The tree always prefers the lowest free run, which is simple but does not try to
//!   keep large runs intact (no best fit).

/// Bytes in a frame.
pub const FRAME_SIZE: u64 = 1 << FRAME_SHIFT;
const FRAME_SHIFT: u32 = 12;

/// The largest run order the allocator hands out: 2^18 frames = 1 GiB, the largest page
/// either architecture maps. The span's first frame is aligned to this.
pub const MAX_ORDER: u32 = 18;

/// The widest span accepted: 2^40 frames = 4 PiB, beyond any 52-bit physical address.
pub const MAX_SPAN_ORDER: u32 = 40;

/// log2 of the frames per bitmap word: the leaves of the tree are whole words.
const WORD_ORDER: u32 = 6;
const FRAMES_PER_WORD: u64 = 1 << WORD_ORDER;

/// Tree nodes are bytes packed into the storage words.
const NODES_PER_WORD: usize = 8;

/// For each order `k <= 6`, the bits at which a naturally aligned run of `2^k` frames can
/// start within a 64-frame word (every `2^k`-th bit).
const ALIGNED_STARTS: [u64; 7] = [
    u64::MAX,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
    0x0000_0000_0000_0001,
];

/// A physical frame, by number (physical address / 4 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(u64);

impl Frame {
    pub const fn from_number(number: u64) -> Self {
        Self(number)
    }

    /// The frame holding the byte at `address`.
    pub const fn containing(address: u64) -> Self {
        Self(address >> FRAME_SHIFT)
    }

    pub const fn number(self) -> u64 {
        self.0
    }

    /// The physical address of the frame's first byte. Frames the allocator hands out
    /// always have one (their numbers are below 2^52); for a number built by hand above
    /// that, the high bits are lost.
    pub const fn start_address(self) -> u64 {
        self.0 << FRAME_SHIFT
    }
}

/// Why a frame-allocator operation was refused. The allocator's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The regions given to [`FrameSpan::covering`] hold no whole frame.
    NoUsableMemory,
    /// The regions span more than 2^[`MAX_SPAN_ORDER`] frames.
    SpanTooLarge,
    /// The storage slice is shorter than [`FrameSpan::storage_words`].
    StorageTooSmall { needed: usize },
    /// A region passed to [`FrameAllocator::add_region`] reaches outside the span.
    OutsideSpan,
    /// A region passed to [`FrameAllocator::add_region`] overlaps frames already added.
    AlreadyManaged,
    /// The requested order is above [`FrameAllocator::max_order`].
    OrderTooLarge,
    /// No free, naturally aligned run of the requested size exists.
    Exhausted,
    /// The first frame of a run is not a multiple of the run's size.
    Misaligned,
    /// A frame of the run was never handed to the allocator (a hole in the memory map,
    /// outside the span, or part of a region never added).
    NotManaged,
    /// A frame of the run is already free.
    DoubleFree,
    /// A frame [`FrameAllocator::reserve`] was asked to take is not free.
    NotFree,
}

/// What the allocator knows about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameState {
    /// Never handed to the allocator.
    Unmanaged,
    Free,
    Allocated,
}

/// The frames an allocator can ever manage: `2^order` frames from `base`, where `base` is
/// a multiple of 2^[`MAX_ORDER`]. Computed from the memory map before the allocator
/// exists, so the kernel knows how much storage to carve out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    base: u64,
    order: u32,
}

impl FrameSpan {
    /// The smallest span covering every whole frame of `regions`, each `(base, length)` in
    /// bytes. Partial frames at region edges are trimmed (they cannot be handed out).
    /// Include every region that will *ever* be added — bootloader-reclaimable memory too —
    /// because the span cannot grow later.
    pub fn covering(regions: impl IntoIterator<Item = (u64, u64)>) -> Result<Self, FrameError> {
        let mut lowest = u64::MAX;
        let mut end = 0;
        for (base, length) in regions {
            if let Some((first, region_end)) = whole_frames(base, length) {
                lowest = lowest.min(first);
                end = end.max(region_end);
            }
        }
        if lowest >= end {
            return Err(FrameError::NoUsableMemory);
        }
        let base = lowest & !((1 << MAX_ORDER) - 1);
        // why: end <= 2^52 (a frame number of a u64 address), so the power of two exists.
        let frames = (end - base)
            .checked_next_power_of_two()
            .ok_or(FrameError::SpanTooLarge)?;
        let order = frames.trailing_zeros().max(WORD_ORDER);
        if order > MAX_SPAN_ORDER {
            return Err(FrameError::SpanTooLarge);
        }
        Ok(Self { base, order })
    }

    /// The first frame of the span.
    pub const fn first_frame(&self) -> Frame {
        Frame(self.base)
    }

    /// Frames in the span (a power of two).
    pub const fn frames(&self) -> u64 {
        1 << self.order
    }

    /// Whether `frame` lies in the span.
    pub const fn contains(&self, frame: Frame) -> bool {
        frame.0 >= self.base && frame.0 - self.base < self.frames()
    }

    /// The length of the `&mut [u64]` the allocator needs for this span.
    pub const fn storage_words(&self) -> usize {
        let words = self.words();
        2 * words + tree_words(words)
    }

    /// Whole frames needed to hold [`storage_words`](Self::storage_words) words, for the
    /// kernel carving the storage out of usable memory.
    pub const fn storage_frames(&self) -> u64 {
        (self.storage_words() as u64 * 8).div_ceil(FRAME_SIZE)
    }

    /// Bitmap words (and tree leaves) in the span.
    const fn words(&self) -> usize {
        // why: order <= MAX_SPAN_ORDER, so this is at most 2^34 and fits a 64-bit usize.
        1 << (self.order - WORD_ORDER)
    }
}

/// Words holding the tree's nodes: indices 1 .. 2 * leaves (index 0 unused).
const fn tree_words(leaves: usize) -> usize {
    (2 * leaves).div_ceil(NODES_PER_WORD)
}

/// The whole frames of a byte range, as `[first, end)` frame numbers, or `None` if it holds
/// none. A range running past the top of the address space is cut there.
fn whole_frames(base: u64, length: u64) -> Option<(u64, u64)> {
    let first = base.div_ceil(FRAME_SIZE);
    let end = base.saturating_add(length) / FRAME_SIZE;
    (first < end).then_some((first, end))
}

/// The physical frame allocator. See the module documentation.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    span: FrameSpan,
    /// One bit per frame, set = free.
    free: &'a mut [u64],
    /// One bit per frame, set = handed to the allocator.
    managed: &'a mut [u64],
    /// The buddy tree, one byte per node; see [`node`](Self::node).
    tree: &'a mut [u64],
    free_frames: u64,
    managed_frames: u64,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator for `span` that manages no frame yet; hand it memory with
    /// [`add_region`](Self::add_region). `storage` needs at least
    /// [`FrameSpan::storage_words`] words; its contents are overwritten (the extra words
    /// are left alone). Costs O(storage words) once.
    pub fn new(storage: &'a mut [u64], span: FrameSpan) -> Result<Self, FrameError> {
        let needed = span.storage_words();
        let Some(storage) = storage.get_mut(..needed) else {
            return Err(FrameError::StorageTooSmall { needed });
        };
        storage.fill(0);
        let words = span.words();
        let (free, rest) = storage.split_at_mut(words);
        let (managed, tree) = rest.split_at_mut(words);
        Ok(Self {
            span,
            free,
            managed,
            tree,
            free_frames: 0,
            managed_frames: 0,
        })
    }

    /// An allocator managing exactly the whole frames of `regions` (`(base, length)` in
    /// bytes), its span covering just them. For a span that must also cover memory added
    /// later, use [`FrameSpan::covering`], [`new`](Self::new) and
    /// [`add_region`](Self::add_region).
    pub fn from_regions<I>(storage: &'a mut [u64], regions: I) -> Result<Self, FrameError>
    where
        I: IntoIterator<Item = (u64, u64)> + Clone,
    {
        let mut allocator = Self::new(storage, FrameSpan::covering(regions.clone())?)?;
        for (base, length) in regions {
            allocator.add_region(base, length)?;
        }
        Ok(allocator)
    }

    /// Hands the whole frames of `[base, base + length)` (bytes) to the allocator as free
    /// memory and returns how many were added. A region with no whole frame adds nothing.
    /// Refused, changing nothing, if the region reaches outside the span or overlaps
    /// frames already added.
    pub fn add_region(&mut self, base: u64, length: u64) -> Result<u64, FrameError> {
        let Some((first, end)) = whole_frames(base, length) else {
            return Ok(0);
        };
        if !self.span.contains(Frame(first)) || !self.span.contains(Frame(end - 1)) {
            return Err(FrameError::OutsideSpan);
        }
        let (offset, count) = (first - self.span.base, end - first);
        for (word, mask) in word_masks(offset, count) {
            if self.managed[word] & mask != 0 {
                return Err(FrameError::AlreadyManaged);
            }
        }
        for (word, mask) in word_masks(offset, count) {
            self.managed[word] |= mask;
            self.free[word] |= mask;
        }
        self.managed_frames += count;
        self.free_frames += count;
        self.refresh(offset, count);
        Ok(count)
    }

    /// Marks `count` free frames from `first` as allocated without handing them out: the
    /// frames holding this allocator's storage, frames taken before it existed. Refused,
    /// changing nothing, if any of them is not managed or not free.
    pub fn reserve(&mut self, first: Frame, count: u64) -> Result<(), FrameError> {
        if count == 0 {
            return Ok(());
        }
        let offset = self.offset_of_run(first, count)?;
        for (word, mask) in word_masks(offset, count) {
            if self.managed[word] & mask != mask {
                return Err(FrameError::NotManaged);
            }
            if self.free[word] & mask != mask {
                return Err(FrameError::NotFree);
            }
        }
        for (word, mask) in word_masks(offset, count) {
            self.free[word] &= !mask;
        }
        self.free_frames -= count;
        self.refresh(offset, count);
        Ok(())
    }

    /// One free frame, the lowest one. O(log n).
    pub fn allocate(&mut self) -> Result<Frame, FrameError> {
        self.allocate_run(0)
    }

    /// `2^order` contiguous free frames whose first frame number is a multiple of
    /// `2^order`; returns the first. The lowest such run is taken. O(log n + 2^order / 64).
    pub fn allocate_run(&mut self, order: u32) -> Result<Frame, FrameError> {
        if order > self.max_order() {
            return Err(FrameError::OrderTooLarge);
        }
        // why: order <= MAX_ORDER (18), so it fits a node byte with room to spare.
        let wanted = order as u8 + 1;
        if self.node(1) < wanted {
            return Err(FrameError::Exhausted);
        }
        // Walk down, taking the left child whenever it can satisfy the request, until the
        // node is exactly the run's size or is a bitmap word.
        let mut node = 1;
        let mut level = self.span.order;
        while level > order && level > WORD_ORDER {
            node *= 2;
            level -= 1;
            if self.node(node) < wanted {
                node += 1;
            }
        }
        let first_word = (node << (level - WORD_ORDER)) - self.span.words();
        let offset = if order >= WORD_ORDER {
            // The node's value is `order + 1` at its own level: every word under it is free.
            let words = 1 << (order - WORD_ORDER);
            self.free[first_word..first_word + words].fill(0);
            first_word as u64 * FRAMES_PER_WORD
        } else {
            let runs = aligned_runs(self.free[first_word], order);
            if runs == 0 {
                // why: unreachable while the tree matches the bitmap; refuse rather than
                // hand out a frame that is not free.
                return Err(FrameError::Exhausted);
            }
            let bit = runs.trailing_zeros();
            self.free[first_word] &= !(run_mask(order) << bit);
            first_word as u64 * FRAMES_PER_WORD + u64::from(bit)
        };
        let count = 1 << order;
        self.free_frames -= count;
        self.refresh(offset, count);
        Ok(Frame(self.span.base + offset))
    }

    /// Returns one allocated frame. O(log n).
    pub fn free(&mut self, frame: Frame) -> Result<(), FrameError> {
        self.free_run(frame, 0)
    }

    /// Returns `2^order` allocated frames from `first`, which must be a multiple of
    /// `2^order`. The frames need not have been allocated as one run. Refused, changing
    /// nothing, if any frame is free already (double free) or was never managed.
    /// O(log n + 2^order / 64).
    pub fn free_run(&mut self, first: Frame, order: u32) -> Result<(), FrameError> {
        if order > self.max_order() {
            return Err(FrameError::OrderTooLarge);
        }
        let count = 1 << order;
        let offset = self.offset_of_run(first, count)?;
        if offset % count != 0 {
            return Err(FrameError::Misaligned);
        }
        for (word, mask) in word_masks(offset, count) {
            if self.managed[word] & mask != mask {
                return Err(FrameError::NotManaged);
            }
            if self.free[word] & mask != 0 {
                return Err(FrameError::DoubleFree);
            }
        }
        for (word, mask) in word_masks(offset, count) {
            self.free[word] |= mask;
        }
        self.free_frames += count;
        self.refresh(offset, count);
        Ok(())
    }

    /// Free frames right now, exactly.
    pub const fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// Frames handed to the allocator (free or allocated).
    pub const fn managed_frames(&self) -> u64 {
        self.managed_frames
    }

    pub const fn span(&self) -> FrameSpan {
        self.span
    }

    /// The largest order [`allocate_run`](Self::allocate_run) accepts: [`MAX_ORDER`], or
    /// less for a span smaller than that.
    pub const fn max_order(&self) -> u32 {
        if self.span.order < MAX_ORDER {
            self.span.order
        } else {
            MAX_ORDER
        }
    }

    /// The order of the largest run an allocation could get now (`None`: nothing free).
    pub fn largest_free_order(&self) -> Option<u32> {
        self.node(1)
            .checked_sub(1)
            .map(|order| u32::from(order).min(self.max_order()))
    }

    /// What the allocator knows about `frame`. O(1).
    pub fn state(&self, frame: Frame) -> FrameState {
        if !self.span.contains(frame) {
            return FrameState::Unmanaged;
        }
        let offset = frame.0 - self.span.base;
        let (word, bit) = (
            (offset / FRAMES_PER_WORD) as usize,
            offset % FRAMES_PER_WORD,
        );
        if self.managed[word] >> bit & 1 == 0 {
            FrameState::Unmanaged
        } else if self.free[word] >> bit & 1 == 1 {
            FrameState::Free
        } else {
            FrameState::Allocated
        }
    }

    /// The offset in the span of a run of `count >= 1` frames from `first`, or
    /// `NotManaged` if any of it lies outside the span.
    fn offset_of_run(&self, first: Frame, count: u64) -> Result<u64, FrameError> {
        let last = first
            .0
            .checked_add(count - 1)
            .ok_or(FrameError::NotManaged)?;
        if !self.span.contains(first) || !self.span.contains(Frame(last)) {
            return Err(FrameError::NotManaged);
        }
        Ok(first.0 - self.span.base)
    }

    /// Tree node `index` (1 = root; children of `i` are `2i` and `2i + 1`; the leaf for
    /// bitmap word `w` is `words + w`): one plus the order of the largest free, naturally
    /// aligned run below it, or 0 if nothing below it is free.
    fn node(&self, index: usize) -> u8 {
        let word = self.tree[index / NODES_PER_WORD];
        // why: truncation picks the node's byte out of its word.
        (word >> (index % NODES_PER_WORD * 8)) as u8
    }

    fn set_node(&mut self, index: usize, value: u8) {
        let shift = index % NODES_PER_WORD * 8;
        let word = &mut self.tree[index / NODES_PER_WORD];
        *word = (*word & !(0xff << shift)) | (u64::from(value) << shift);
    }

    /// Recomputes the tree above the bitmap words holding frames `[offset, offset+count)`:
    /// their leaves, then each level's (halving) range of ancestors up to the root.
    /// O(count / 64 + log n).
    fn refresh(&mut self, offset: u64, count: u64) {
        let words = self.span.words();
        let first_word = (offset / FRAMES_PER_WORD) as usize;
        let last_word = ((offset + count - 1) / FRAMES_PER_WORD) as usize;
        for word in first_word..=last_word {
            self.set_node(words + word, word_value(self.free[word]));
        }
        let (mut low, mut high) = (words + first_word, words + last_word);
        // why: a node's value is "one plus its order" when its whole subtree is free.
        let mut child_full = WORD_ORDER as u8 + 1;
        while low > 1 {
            low /= 2;
            high /= 2;
            for node in low..=high {
                let (left, right) = (self.node(2 * node), self.node(2 * node + 1));
                let value = if left == child_full && right == child_full {
                    child_full + 1
                } else {
                    left.max(right)
                };
                self.set_node(node, value);
            }
            child_full += 1;
        }
    }
}

/// The word-sized pieces of the frame range `[offset, offset + count)`, as (word index,
/// mask of the range's bits in that word). `count >= 1`.
fn word_masks(offset: u64, count: u64) -> impl Iterator<Item = (usize, u64)> {
    let end = offset + count;
    let first_word = offset / FRAMES_PER_WORD;
    let last_word = (end - 1) / FRAMES_PER_WORD;
    (first_word..=last_word).map(move |word| {
        let word_start = word * FRAMES_PER_WORD;
        let low = offset.max(word_start) - word_start;
        let high = end.min(word_start + FRAMES_PER_WORD) - word_start;
        // why: bits [low, high) with high <= 64; shifting u64::MAX avoids `1 << 64`.
        let mask = (u64::MAX >> (FRAMES_PER_WORD - (high - low))) << low;
        (word as usize, mask)
    })
}

/// `2^order` low bits set (`order < 6`).
const fn run_mask(order: u32) -> u64 {
    (1 << (1 << order)) - 1
}

/// The bits of `word` at which a free, naturally aligned run of `2^order` frames starts.
/// After `j` folding steps bit `i` says bits `i .. i + 2^j` are all set.
fn aligned_runs(word: u64, order: u32) -> u64 {
    let mut runs = word;
    for step in 0..order {
        runs &= runs >> (1 << step);
    }
    runs & ALIGNED_STARTS[order as usize]
}

/// A leaf's tree value: one plus the largest order of a free aligned run in the word.
fn word_value(word: u64) -> u8 {
    (0..=WORD_ORDER)
        .rev()
        .find(|&order| aligned_runs(word, order) != 0)
        .map_or(0, |order| order as u8 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Builds an allocator over `regions` with freshly allocated storage.
    fn with_allocator<R>(
        regions: &[(u64, u64)],
        test: impl FnOnce(&mut FrameAllocator<'_>) -> R,
    ) -> R {
        let span = FrameSpan::covering(regions.iter().copied()).unwrap();
        let mut storage = vec![0; span.storage_words()];
        let mut allocator =
            FrameAllocator::from_regions(&mut storage, regions.iter().copied()).unwrap();
        let result = test(&mut allocator);
        allocator.check_invariants();
        result
    }

    impl FrameAllocator<'_> {
        /// Recomputes everything derived from the bitmaps and compares.
        fn check_invariants(&self) {
            let free: u64 = self
                .free
                .iter()
                .map(|word| u64::from(word.count_ones()))
                .sum();
            let managed: u64 = self
                .managed
                .iter()
                .map(|word| u64::from(word.count_ones()))
                .sum();
            assert_eq!(free, self.free_frames, "free count drifted");
            assert_eq!(managed, self.managed_frames, "managed count drifted");
            for (free, managed) in self.free.iter().zip(self.managed.iter()) {
                assert_eq!(free & !managed, 0, "an unmanaged frame is free");
            }
            let words = self.span.words();
            for word in 0..words {
                assert_eq!(self.node(words + word), word_value(self.free[word]));
            }
            let mut level = WORD_ORDER + 1;
            let mut first = words / 2;
            while first >= 1 {
                for node in first..2 * first {
                    let (left, right) = (self.node(2 * node), self.node(2 * node + 1));
                    let full = level as u8;
                    let expected = if left == full && right == full {
                        full + 1
                    } else {
                        left.max(right)
                    };
                    assert_eq!(self.node(node), expected, "node {node} stale");
                }
                first /= 2;
                level += 1;
            }
        }
    }

    /// xorshift64*: deterministic, no external crate.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    #[test]
    fn span_trims_edges_and_aligns_base() {
        // 0x1800 .. 0x5800 holds whole frames 2, 3, 4.
        let span = FrameSpan::covering([(0x1800, 0x4000)]).unwrap();
        assert_eq!(span.first_frame(), Frame(0));
        assert_eq!(span.frames(), 64, "at least one bitmap word");
        let span = FrameSpan::covering([(0x4000_0000, 256 * MIB), (0x5000_0000, 4096)]).unwrap();
        assert_eq!(span.first_frame(), Frame::containing(0x4000_0000));
        assert_eq!(
            span.frames(),
            128 * 1024,
            "256 MiB + 1 frame rounds up to 512 MiB"
        );
        assert!(span.contains(Frame::containing(0x4000_0000)));
        assert!(!span.contains(Frame::containing(0x3fff_f000)));
        assert!(!span.contains(Frame::containing(0x6000_0000)));
    }

    #[test]
    fn span_rejects_empty_and_absurd_maps() {
        assert_eq!(FrameSpan::covering([]), Err(FrameError::NoUsableMemory));
        assert_eq!(
            FrameSpan::covering([(0x1001, 0xfff)]),
            Err(FrameError::NoUsableMemory)
        );
        assert_eq!(
            FrameSpan::covering([(0x1000, 0)]),
            Err(FrameError::NoUsableMemory)
        );
        // A region to the top of the address space: 2^52 frames exceed 2^40.
        assert_eq!(
            FrameSpan::covering([(0, u64::MAX)]),
            Err(FrameError::SpanTooLarge)
        );
        assert_eq!(
            FrameSpan::covering([(0, 4096), (u64::MAX - 0x2000, 0x2000)]),
            Err(FrameError::SpanTooLarge)
        );
    }

    #[test]
    fn storage_size_is_as_documented() {
        let span = FrameSpan::covering([(0, 8 << 30)]).unwrap();
        assert_eq!(span.storage_words() * 8, 576 * 1024);
        assert_eq!(span.storage_frames(), 144);
        let tiny = FrameSpan::covering([(0, 4096)]).unwrap();
        assert_eq!(tiny.storage_words(), 3);
        let mut short = vec![0; span.storage_words() - 1];
        assert_eq!(
            FrameAllocator::new(&mut short, span).unwrap_err(),
            FrameError::StorageTooSmall {
                needed: span.storage_words()
            }
        );
    }

    #[test]
    fn allocates_every_frame_once_then_exhausts() {
        // Frames 1..=99, not a whole number of words, with a hole below.
        with_allocator(&[(0x1000, 99 * 4096)], |allocator| {
            assert_eq!(allocator.free_frames(), 99);
            assert_eq!(allocator.state(Frame(0)), FrameState::Unmanaged);
            let mut seen = Vec::new();
            for expected in 1..=99 {
                let frame = allocator.allocate().unwrap();
                assert_eq!(frame, Frame(expected), "lowest frame first");
                assert_eq!(allocator.state(frame), FrameState::Allocated);
                seen.push(frame);
            }
            assert_eq!(allocator.free_frames(), 0);
            assert_eq!(allocator.allocate(), Err(FrameError::Exhausted));
            assert_eq!(allocator.allocate_run(2), Err(FrameError::Exhausted));
            assert_eq!(allocator.largest_free_order(), None);
            allocator.check_invariants();
            for frame in seen {
                allocator.free(frame).unwrap();
            }
            assert_eq!(allocator.free_frames(), 99);
        });
    }

    #[test]
    fn runs_are_naturally_aligned_in_physical_frame_numbers() {
        // Memory starting off any power-of-two boundary, above 1 GiB like AArch64 `virt`.
        let base = 0x4000_0000 + 3 * 4096;
        with_allocator(&[(base, 64 * MIB)], |allocator| {
            for order in [0, 1, 2, 3, 5, 6, 7, 9, 12] {
                let first = allocator.allocate_run(order).unwrap();
                assert_eq!(first.number() % (1 << order), 0, "order {order} misaligned");
                for index in 0..1 << order {
                    let frame = Frame(first.number() + index);
                    assert_eq!(allocator.state(frame), FrameState::Allocated);
                }
            }
            allocator.check_invariants();
        });
    }

    #[test]
    fn kernel_stack_runs_do_not_overlap() {
        with_allocator(&[(0, 4 * MIB)], |allocator| {
            let start = allocator.free_frames();
            let mut stacks = Vec::new();
            while let Ok(first) = allocator.allocate_run(2) {
                stacks.push(first.number());
            }
            assert_eq!(stacks.len() as u64, start / 4);
            stacks.sort_unstable();
            assert!(stacks.windows(2).all(|pair| pair[1] - pair[0] >= 4));
            assert_eq!(allocator.free_frames(), 0);
            for first in stacks {
                allocator.free_run(Frame(first), 2).unwrap();
            }
            assert_eq!(allocator.free_frames(), start);
            assert_eq!(
                allocator.largest_free_order(),
                Some(10),
                "coalesced back to 4 MiB"
            );
        });
    }

    #[test]
    fn freed_frames_coalesce_into_large_runs() {
        with_allocator(&[(0, 2 * MIB)], |allocator| {
            let frames: Vec<Frame> = (0..512).map(|_| allocator.allocate().unwrap()).collect();
            assert_eq!(allocator.allocate_run(9), Err(FrameError::Exhausted));
            // Free in an order that never frees two buddies in a row.
            for frame in frames
                .iter()
                .step_by(2)
                .chain(frames.iter().skip(1).step_by(2))
            {
                allocator.free(*frame).unwrap();
            }
            assert_eq!(
                allocator.allocate_run(9),
                Ok(Frame(0)),
                "one 2 MiB run again"
            );
            // A run may also be given back frame by frame.
            for number in 0..512 {
                allocator.free(Frame(number)).unwrap();
            }
            assert_eq!(allocator.free_frames(), 512);
        });
    }

    #[test]
    fn fragmentation_blocks_large_runs_but_not_small_ones() {
        with_allocator(&[(0, MIB)], |allocator| {
            // Keep every fourth frame: 192 frames free, yet no aligned run of 4.
            let all: Vec<Frame> = (0..256).map(|_| allocator.allocate().unwrap()).collect();
            for frame in all.iter().filter(|frame| frame.number() % 4 != 0) {
                allocator.free(*frame).unwrap();
            }
            assert_eq!(allocator.free_frames(), 192);
            assert_eq!(allocator.allocate_run(2), Err(FrameError::Exhausted));
            assert_eq!(allocator.largest_free_order(), Some(1));
            let pair = allocator.allocate_run(1).unwrap();
            assert_eq!(pair, Frame(2));
        });
    }

    #[test]
    fn double_free_is_refused_and_changes_nothing() {
        with_allocator(&[(0, MIB)], |allocator| {
            let frame = allocator.allocate().unwrap();
            let run = allocator.allocate_run(3).unwrap();
            allocator.free(frame).unwrap();
            let before = allocator.free_frames();
            assert_eq!(allocator.free(frame), Err(FrameError::DoubleFree));
            assert_eq!(allocator.free_frames(), before);
            // A run with one frame already free is refused as a whole.
            allocator.free(Frame(run.number() + 5)).unwrap();
            let before = allocator.free_frames();
            assert_eq!(allocator.free_run(run, 3), Err(FrameError::DoubleFree));
            assert_eq!(allocator.free_frames(), before);
            assert_eq!(
                allocator.state(run),
                FrameState::Allocated,
                "nothing was freed"
            );
            allocator.check_invariants();
            // Never-allocated frames are free: freeing them is a double free too.
            assert_eq!(allocator.free(Frame(200)), Err(FrameError::DoubleFree));
        });
    }

    #[test]
    fn freeing_unmanaged_frames_is_refused() {
        // Two regions with a hole between frames 16 and 32, span of 64 frames.
        with_allocator(&[(0, 16 * 4096), (32 * 4096, 16 * 4096)], |allocator| {
            let before = allocator.free_frames();
            assert_eq!(
                allocator.free(Frame(20)),
                Err(FrameError::NotManaged),
                "hole"
            );
            assert_eq!(
                allocator.free(Frame(50)),
                Err(FrameError::NotManaged),
                "past the end"
            );
            assert_eq!(
                allocator.free(Frame(1 << 30)),
                Err(FrameError::NotManaged),
                "off span"
            );
            assert_eq!(allocator.free(Frame(u64::MAX)), Err(FrameError::NotManaged));
            assert_eq!(
                allocator.free_run(Frame(u64::MAX - 3), 2),
                Err(FrameError::NotManaged)
            );
            assert_eq!(
                allocator.free_run(Frame(0), 19),
                Err(FrameError::OrderTooLarge)
            );
            // A run straddling managed and unmanaged frames.
            for _ in 0..16 {
                allocator.allocate().unwrap();
            }
            assert_eq!(allocator.free_run(Frame(0), 5), Err(FrameError::NotManaged));
            assert_eq!(allocator.free_frames(), before - 16);
            assert_eq!(allocator.free_run(Frame(0), 4), Ok(()));
        });
    }

    #[test]
    fn misaligned_and_oversized_requests_are_refused() {
        with_allocator(&[(0, MIB)], |allocator| {
            assert_eq!(allocator.max_order(), 8);
            assert_eq!(allocator.allocate_run(9), Err(FrameError::OrderTooLarge));
            assert_eq!(
                allocator.allocate_run(u32::MAX),
                Err(FrameError::OrderTooLarge)
            );
            let run = allocator.allocate_run(2).unwrap();
            assert_eq!(
                allocator.free_run(Frame(run.number() + 1), 1),
                Err(FrameError::Misaligned)
            );
            assert_eq!(allocator.free_run(run, 2), Ok(()));
        });
        let regions = [(0, 8u64 << 30)];
        let span = FrameSpan::covering(regions).unwrap();
        let mut storage = vec![0; span.storage_words()];
        let allocator = FrameAllocator::new(&mut storage, span).unwrap();
        assert_eq!(allocator.max_order(), MAX_ORDER, "capped at 1 GiB runs");
    }

    #[test]
    fn regions_are_added_later_and_overlaps_refused() {
        // Span computed from usable + bootloader-reclaimable; reclaimable added later.
        let usable = (0x10_0000, 8 * MIB);
        let reclaimable = (0x90_0000, MIB + 0x800);
        let span = FrameSpan::covering([usable, reclaimable]).unwrap();
        let mut storage = vec![u64::MAX; span.storage_words() + 5];
        let mut allocator = FrameAllocator::new(&mut storage, span).unwrap();
        assert_eq!(allocator.free_frames(), 0);
        assert_eq!(allocator.allocate(), Err(FrameError::Exhausted));
        assert_eq!(allocator.add_region(usable.0, usable.1), Ok(2048));
        assert_eq!(
            allocator.add_region(reclaimable.0, reclaimable.1),
            Ok(256),
            "trimmed"
        );
        assert_eq!(allocator.free_frames(), 2304);
        assert_eq!(allocator.managed_frames(), 2304);
        assert_eq!(
            allocator.add_region(0x20_0000, 4096),
            Err(FrameError::AlreadyManaged)
        );
        assert_eq!(
            allocator.add_region(0x4000_0000, 4096),
            Err(FrameError::OutsideSpan)
        );
        assert_eq!(
            allocator.add_region(0xff_f000, u64::MAX),
            Err(FrameError::OutsideSpan)
        );
        assert_eq!(allocator.add_region(0x5000, 0x800), Ok(0), "no whole frame");
        assert_eq!(allocator.free_frames(), 2304, "refusals changed nothing");
        allocator.check_invariants();
    }

    #[test]
    fn reserve_takes_free_frames_only() {
        with_allocator(&[(0, MIB)], |allocator| {
            // The allocator's own storage and early boot frames, say.
            allocator.reserve(Frame(10), 70).unwrap();
            assert_eq!(allocator.free_frames(), 256 - 70);
            assert_eq!(allocator.state(Frame(79)), FrameState::Allocated);
            assert_eq!(allocator.state(Frame(80)), FrameState::Free);
            assert_eq!(allocator.reserve(Frame(79), 2), Err(FrameError::NotFree));
            assert_eq!(
                allocator.reserve(Frame(250), 10),
                Err(FrameError::NotManaged)
            );
            assert_eq!(
                allocator.reserve(Frame(u64::MAX), 2),
                Err(FrameError::NotManaged)
            );
            assert_eq!(allocator.reserve(Frame(0), 0), Ok(()));
            assert_eq!(allocator.free_frames(), 256 - 70);
            assert_eq!(
                allocator.allocate_run(4),
                Ok(Frame(80)),
                "allocation skips them"
            );
            // Reserved frames can be freed like allocated ones.
            allocator.free_run(Frame(16), 4).unwrap();
            assert_eq!(allocator.free_frames(), 256 - 70 - 16 + 16);
        });
    }

    #[test]
    fn memory_above_four_gib_is_used() {
        // A q35-like map with 4 GiB: low memory, then the rest above 4 GiB.
        let regions = [
            (0x1000, 0x9_e000),
            (0x10_0000, 2047 * MIB),
            (4 << 30, 2 << 30),
        ];
        with_allocator(&regions, |allocator| {
            let start = allocator.free_frames();
            assert_eq!(start, 0x9e + 2047 * 256 + 2 * 256 * 1024);
            allocator.reserve(Frame(1), 0x9e).unwrap();
            allocator.reserve(Frame(0x100), 2047 * 256).unwrap();
            let high = allocator.allocate_run(MAX_ORDER).unwrap();
            assert_eq!(high.start_address(), 4 << 30);
            let next = allocator.allocate().unwrap();
            assert_eq!(next.start_address(), 5 << 30);
        });
    }

    #[test]
    fn random_workload_returns_exactly_to_the_start() {
        let regions = [
            (0x3000, 3 * MIB + 0x123),
            (4 * MIB, 2 * MIB),
            (16 * MIB, MIB),
        ];
        with_allocator(&regions, |allocator| {
            let start = allocator.free_frames();
            let mut random = Random(0x9e37_79b9_7f4a_7c15);
            let mut held: Vec<(Frame, u32)> = Vec::new();
            // An independent model: which frames the test believes it holds.
            let mut model = vec![false; allocator.span().frames() as usize];
            let mut exhaustions = 0;
            for step in 0..20_000 {
                if held.is_empty() || random.below(100) < 55 {
                    let order = [0, 0, 0, 1, 2, 2, 3, 5, 7][random.below(9) as usize];
                    match allocator.allocate_run(order) {
                        Ok(first) => {
                            assert_eq!(first.number() % (1 << order), 0);
                            for index in first.number()..first.number() + (1 << order) {
                                assert!(!model[index as usize], "frame {index} handed out twice");
                                model[index as usize] = true;
                            }
                            held.push((first, order));
                        }
                        Err(error) => {
                            assert_eq!(error, FrameError::Exhausted);
                            exhaustions += 1;
                        }
                    }
                } else {
                    let (first, order) = held.swap_remove(random.below(held.len() as u64) as usize);
                    allocator.free_run(first, order).unwrap();
                    assert_eq!(
                        allocator.free_run(first, order),
                        Err(FrameError::DoubleFree)
                    );
                    for index in first.number()..first.number() + (1 << order) {
                        model[index as usize] = false;
                    }
                }
                let held_frames: u64 = held.iter().map(|(_, order)| 1u64 << order).sum();
                assert_eq!(allocator.free_frames(), start - held_frames, "step {step}");
                if step % 1000 == 0 {
                    allocator.check_invariants();
                }
            }
            for (first, order) in held.drain(..) {
                allocator.free_run(first, order).unwrap();
            }
            assert_eq!(allocator.free_frames(), start);
            assert!(
                model.iter().any(|&held| held),
                "the workload did hold frames"
            );
            assert!(exhaustions > 0, "the workload did reach exhaustion");
            // Fully coalesced: the one aligned 2 MiB region is a run again.
            assert_eq!(allocator.allocate_run(9), Ok(Frame::containing(4 * MIB)));
        });
    }

    #[test]
    fn arbitrary_arguments_never_panic_or_corrupt() {
        let regions = [(0x1000, 300 * 4096), (2 * MIB + 0x800, 2 * MIB)];
        with_allocator(&regions, |allocator| {
            let mut random = Random(7);
            let start = allocator.free_frames();
            let interesting = [0, 1, 63, 64, 65, 255, 256, 767, 768, 1023, 1024, u64::MAX];
            for _ in 0..20_000 {
                let frame = match random.below(3) {
                    0 => Frame(interesting[random.below(interesting.len() as u64) as usize]),
                    1 => Frame(random.below(1100)),
                    _ => Frame(random.next()),
                };
                let order = [0, 1, 2, 6, 7, 18, 19, u32::MAX][random.below(8) as usize];
                let before = allocator.free_frames();
                let result = match random.below(5) {
                    0 => allocator.free_run(frame, order).map(|()| 1u64 << order),
                    1 => allocator.free(frame).map(|()| 1),
                    2 => allocator.reserve(frame, random.below(200)).map(|()| 0),
                    3 => allocator.allocate_run(order.min(9)).map(|_| 0),
                    _ => allocator
                        .add_region(random.next(), random.below(1 << 20))
                        .map(|_| 0),
                };
                if result.is_err() {
                    assert_eq!(
                        allocator.free_frames(),
                        before,
                        "a refusal changed the count"
                    );
                }
            }
            allocator.check_invariants();
            assert!(allocator.free_frames() <= start);
        });
    }

    #[test]
    fn word_helpers() {
        assert_eq!(word_value(0), 0);
        assert_eq!(word_value(u64::MAX), 7);
        assert_eq!(
            word_value(0b0110),
            1,
            "bits 1 and 2 are not an aligned pair"
        );
        assert_eq!(word_value(0b1100), 2);
        assert_eq!(word_value(0xffff_ffff_0000_0000), 6);
        assert_eq!(
            aligned_runs(0b1111_0110, 1),
            0b0101_0000,
            "pairs at 4 and 6"
        );
        let masks: Vec<_> = word_masks(60, 70).collect();
        assert_eq!(masks, [(0, 0xf000_0000_0000_0000), (1, u64::MAX), (2, 0x3)]);
        assert_eq!(word_masks(0, 64).collect::<Vec<_>>(), [(0, u64::MAX)]);
        assert_eq!(run_mask(5), 0xffff_ffff);
    }
}
