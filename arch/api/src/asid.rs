//! Address-space tags handed out by generation (AArch64 ASIDs; the design of Linux's
//! arm64 ASID allocator, written for Keel): any number of spaces share a bounded set of
//! tags, with no failure when they run out.
//!
//! A space's *context* is its generation (bits 16 and up) and tag (bits 0..16); 0: none
//! yet. [`Generations::activate`] keeps a space's tag while its generation is the current
//! one: the fast path takes no lock, only a compare-and-swap on the CPU's active slot.
//! Otherwise, under the lock, the space gets a tag of the current generation: its old one
//! again if that was reserved at the last rollover or is still free, else a free one; when
//! none is left the generation *rolls over*: a new generation starts with every tag free
//! except those some CPU runs with (each CPU's active context, or, if a concurrent rollover
//! cleared it, the one reserved for that CPU last time), which stay reserved for their
//! spaces, and the caller's `flush_all` drops every tagged TLB entry of every CPU.
//!
//! Reuse rule: a tag goes to a new space only when no CPU runs with it (not reserved) and
//! every TLB entry with it is gone (the rollover's flush, or the owner's destroy, which
//! flushes the tag on every CPU before [`Generations::release`]). Tag 0 is never handed
//! out (the architecture's "no space" tag).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::MAX_CPUS;

const _: () = assert!(MAX_CPUS.is_power_of_two());

/// The tag bits of a context.
pub const TAG_MASK: u64 = 0xffff;
/// One generation, in a context.
pub const GENERATION_ONE: u64 = 1 << 16;

/// Tags taken in the current generation, and those reserved at the last rollover.
#[derive(Debug)]
struct Bitmap {
    /// One bit per tag; tag 0 always taken.
    map: [u64; 1024],
    /// Per CPU: the context it ran with at the last rollover.
    reserved: [u64; MAX_CPUS],
}

impl Bitmap {
    fn is_taken(&self, tag: u64) -> bool {
        self.map[(tag / 64) as usize] & (1 << (tag % 64)) != 0
    }

    fn take(&mut self, tag: u64) {
        self.map[(tag / 64) as usize] |= 1 << (tag % 64);
    }

    fn find_free(&self, limit: u64) -> Option<u64> {
        self.map.iter().enumerate().find_map(|(word, bits)| {
            let bit = u64::from((!bits).trailing_zeros());
            let tag = word as u64 * 64 + bit;
            (bit < 64 && tag <= limit).then_some(tag)
        })
    }
}

/// The tag allocator (see the module docs). The caller masks interrupts around every
/// call that may take the lock ([`Generations::activate`]'s slow path,
/// [`Generations::release`]).
#[derive(Debug)]
pub struct Generations {
    generation: AtomicU64,
    /// Per CPU: the context it runs with; 0 while a rollover has reserved it and the CPU
    /// has not activated a space since.
    active: [AtomicU64; MAX_CPUS],
    rollovers: AtomicU64,
    bitmap: spin::Mutex<Bitmap>,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

impl Generations {
    pub const fn new() -> Self {
        let mut map = [0; 1024];
        map[0] = 1;
        Self {
            generation: AtomicU64::new(GENERATION_ONE),
            active: [const { AtomicU64::new(0) }; MAX_CPUS],
            rollovers: AtomicU64::new(0),
            bitmap: spin::Mutex::new(Bitmap {
                map,
                reserved: [0; MAX_CPUS],
            }),
        }
    }

    /// Generations started since boot.
    pub fn rollovers(&self) -> u64 {
        self.rollovers.load(Ordering::Relaxed)
    }

    /// On CPU `cpu`, activating the space whose context is `context`: the context to run
    /// with (its tag in [`TAG_MASK`]), updated in `context` when the space got a new one.
    /// Tags handed out are at most `limit()` (asked only when a tag is handed out; at
    /// least `2 * MAX_CPUS`, so a rollover always leaves free ones); `flush_all` runs at a
    /// rollover, under the lock.
    /// The check that the tag is still current is inlined on the switch path; handing one
    /// out is not.
    #[inline(always)]
    pub fn activate(
        &self,
        cpu: u32,
        context: &AtomicU64,
        limit: impl FnOnce() -> u64,
        flush_all: impl FnOnce(),
    ) -> u64 {
        // CPU indices are below `MAX_CPUS`, a power of two: the mask only tells the compiler.
        let slot = &self.active[cpu as usize & (MAX_CPUS - 1)];
        let current = context.load(Ordering::Relaxed);
        let running = slot.load(Ordering::Relaxed);
        // A rollover swaps the slot to 0 after it moved the generation on, so the exchange
        // fails if one came between the generation check and here.
        if running != 0
            && current & !TAG_MASK == self.generation.load(Ordering::Acquire)
            && slot
                .compare_exchange(running, current, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return current;
        }
        self.assign(slot, context, limit, flush_all)
    }

    #[cold]
    #[inline(never)]
    fn assign(
        &self,
        slot: &AtomicU64,
        context: &AtomicU64,
        limit: impl FnOnce() -> u64,
        flush_all: impl FnOnce(),
    ) -> u64 {
        let mut bitmap = self.bitmap.lock();
        let mut current = context.load(Ordering::Relaxed);
        if current == 0 || current & !TAG_MASK != self.generation.load(Ordering::Acquire) {
            current = self.new_context(&mut bitmap, current, limit(), flush_all);
            context.store(current, Ordering::Relaxed);
        }
        slot.store(current, Ordering::Release);
        current
    }

    fn new_context(
        &self,
        bitmap: &mut Bitmap,
        old: u64,
        limit: u64,
        flush_all: impl FnOnce(),
    ) -> u64 {
        let limit = limit.clamp(2 * MAX_CPUS as u64, TAG_MASK);
        let generation = self.generation.load(Ordering::Acquire);
        if old != 0 {
            let tag = old & TAG_MASK;
            let new = generation | tag;
            // Reserved at the rollover for a CPU still running this space: keep it.
            let mut reserved = false;
            for slot in &mut bitmap.reserved {
                if *slot == old {
                    *slot = new;
                    reserved = true;
                }
            }
            if reserved {
                return new;
            }
            if tag <= limit && !bitmap.is_taken(tag) {
                bitmap.take(tag);
                return new;
            }
        }
        let tag = match bitmap.find_free(limit) {
            Some(tag) => tag,
            None => {
                self.roll_over(bitmap, flush_all);
                // At most MAX_CPUS tags are reserved, and the limit is above that.
                bitmap.find_free(limit).unwrap_or(limit)
            }
        };
        bitmap.take(tag);
        self.generation.load(Ordering::Acquire) | tag
    }

    fn roll_over(&self, bitmap: &mut Bitmap, flush_all: impl FnOnce()) {
        self.generation.fetch_add(GENERATION_ONE, Ordering::AcqRel);
        bitmap.map = [0; 1024];
        bitmap.map[0] = 1;
        for (cpu, active) in self.active.iter().enumerate() {
            let mut context = active.swap(0, Ordering::AcqRel);
            if context == 0 {
                context = bitmap.reserved[cpu];
            }
            bitmap.reserved[cpu] = context;
            bitmap.take(context & TAG_MASK);
        }
        self.rollovers.fetch_add(1, Ordering::Relaxed);
        flush_all();
    }

    /// A destroyed space's context, once no CPU runs with it and its tag was flushed on
    /// every CPU: its tag is free again if it belongs to the current generation and no CPU
    /// holds it reserved.
    pub fn release(&self, context: u64) {
        let tag = context & TAG_MASK;
        if tag == 0 {
            return;
        }
        let mut bitmap = self.bitmap.lock();
        if context & !TAG_MASK == self.generation.load(Ordering::Acquire)
            && !bitmap.reserved.contains(&context)
        {
            bitmap.map[(tag / 64) as usize] &= !(1 << (tag % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;

    /// A simulated machine: which space each CPU runs, and the tag each space's TLB
    /// entries carry on each CPU since that CPU's last flush.
    struct Machine {
        tags: Generations,
        contexts: Vec<AtomicU64>,
        running: [Option<usize>; 3],
        /// `(cpu, tag)` → the space whose entries the TLB holds under it.
        tlb: BTreeMap<(usize, u64), usize>,
        flushes: u32,
    }

    impl Machine {
        fn new(spaces: usize) -> Self {
            Self {
                tags: Generations::new(),
                contexts: (0..spaces).map(|_| AtomicU64::new(0)).collect(),
                running: [None; 3],
                tlb: BTreeMap::new(),
                flushes: 0,
            }
        }

        /// CPU `cpu` runs `space`: every TLB entry under the tag it gets must be the
        /// space's own (no other space's entries survive under a reused tag).
        fn run(&mut self, cpu: usize, space: usize) {
            let mut flushed = false;
            let context =
                self.tags
                    .activate(cpu as u32, &self.contexts[space], || 16, || flushed = true);
            if flushed {
                self.flushes += 1;
                self.tlb.clear();
            }
            let tag = context & TAG_MASK;
            assert_ne!(tag, 0);
            for other in 0..3 {
                if let Some(owner) = self.tlb.get(&(other, tag)) {
                    assert_eq!(*owner, space, "cpu {other} holds another space's entries");
                }
            }
            self.tlb.insert((cpu, tag), space);
            self.running[cpu] = Some(space);
        }
    }

    #[test]
    fn more_spaces_than_tags_never_share_entries() {
        let mut machine = Machine::new(40);
        for round in 0..20usize {
            for space in 0..40 {
                machine.run((space + round) % 3, (space * 7 + round) % 40);
            }
        }
        assert!(machine.flushes > 0, "40 spaces on 16 tags roll over");
        assert_eq!(u64::from(machine.flushes), machine.tags.rollovers());
    }

    #[test]
    fn a_running_space_keeps_its_tag_across_a_rollover() {
        let tags = Generations::new();
        let spaces: Vec<AtomicU64> = (0..40).map(|_| AtomicU64::new(0)).collect();
        let running = tags.activate(1, &spaces[0], || 16, || {});
        // Cpu 0 goes through every other space until the generation rolls over.
        let mut rolled = false;
        for space in &spaces[1..] {
            let context = tags.activate(0, space, || 16, || rolled = true);
            assert_ne!(
                context & TAG_MASK,
                running & TAG_MASK,
                "a tag cpu 1 runs with was handed to another space"
            );
        }
        assert!(rolled);
        let again = tags.activate(1, &spaces[0], || 16, || {});
        assert_eq!(again & TAG_MASK, running & TAG_MASK);
        assert_ne!(again, running, "same tag, new generation");
    }

    #[test]
    fn a_released_tag_is_reused_and_the_fast_path_keeps_the_context() {
        let tags = Generations::new();
        let first = AtomicU64::new(0);
        let context = tags.activate(0, &first, || 16, || panic!("no rollover"));
        assert_eq!(tags.activate(0, &first, || 16, || {}), context);
        let second = AtomicU64::new(0);
        tags.activate(0, &second, || 16, || {});
        tags.release(context);
        let third = AtomicU64::new(0);
        assert_eq!(
            tags.activate(1, &third, || 16, || {}) & TAG_MASK,
            context & TAG_MASK
        );
    }
}
