//! The user heap: the global allocator of every Keel program, a buddy allocator
//! (`buddy_system_allocator::Heap`) over memory the process maps for itself with
//! `memory_map`, grown on demand.
//!
//! The heap lives in [`HEAP_BASE`]`..`[`HEAP_BASE`]` + `[`HEAP_SPAN`]. It starts empty; when
//! an allocation does not fit, the next [`CHUNK`] (or the block the allocation needs, if
//! larger) is mapped above what is mapped already and handed to the buddy allocator. A
//! request the span or the process's memory quota cannot hold returns null (so
//! `Vec::try_reserve` reports it; an infallible allocation reports it through the panic
//! handler). Mapped memory is never returned to the kernel before the process ends.
//!
//! One spin lock serializes callers; while it is contended the waiter yields the CPU.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, Ordering};

use buddy_system_allocator::Heap;

/// Where the heap starts (far from the image at 4 MiB, the stack at the top of the user
/// half, and the addresses the test suite maps).
pub const HEAP_BASE: u64 = 0x0000_4000_0000_0000;
/// How much address space the heap may use.
pub const HEAP_SPAN: u64 = 1 << 30;
/// The least the heap grows by at once.
pub const CHUNK: u64 = 64 * 1024;

/// Blocks of up to 2^31 bytes (more than [`HEAP_SPAN`]).
type Buddy = Heap<32>;

/// What the heap holds, for `mem` and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes mapped for the heap so far.
    pub mapped: u64,
    /// Bytes handed out (rounded up to the buddy blocks).
    pub allocated: u64,
    /// Bytes the callers asked for.
    pub requested: u64,
}

struct State {
    buddy: Buddy,
    /// The first heap address not yet mapped (everything below it that belongs to the heap
    /// was handed to `buddy`; gaps left by alignment stay unmapped).
    next: u64,
    mapped: u64,
}

impl State {
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        // The buddy allocator rounds up to a power of two (and would overflow doing so for
        // absurd sizes): refuse what the span cannot hold before asking it.
        let block =
            (layout.size().max(layout.align()).max(8) as u64).checked_next_power_of_two()?;
        if block > HEAP_SPAN {
            return None;
        }
        if let Ok(pointer) = self.buddy.alloc(layout) {
            return Some(pointer);
        }
        self.grow(block)?;
        self.buddy.alloc(layout).ok()
    }

    /// Map `max(block, CHUNK)` bytes at the next `block`-aligned heap address and give them
    /// to the buddy allocator, which then holds a free block of `block` bytes.
    fn grow(&mut self, block: u64) -> Option<()> {
        let length = block.max(CHUNK);
        let start = self.next.checked_next_multiple_of(block)?;
        let end = start.checked_add(length)?;
        if end > HEAP_BASE + HEAP_SPAN {
            return None;
        }
        crate::memory_map(start, length, abi::MAP_WRITE).ok()?;
        // SAFETY: `[start, end)` was just mapped writable for this process and lies above
        // every range given to `buddy` before (`next` only grows), so it is valid, unused
        // memory that stays mapped for the life of the process.
        unsafe { self.buddy.add_to_heap(start as usize, end as usize) };
        self.next = end;
        self.mapped += length;
        Some(())
    }
}

/// The global allocator (see the module doc).
pub struct Allocator {
    locked: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only reached through `with`, which holds `locked` (an acquire/release
// spin lock) for the whole access, so threads never touch it at the same time.
unsafe impl Sync for Allocator {}

impl Allocator {
    pub const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            state: UnsafeCell::new(State {
                buddy: Buddy::new(),
                next: HEAP_BASE,
                mapped: 0,
            }),
        }
    }

    fn with<T>(&self, body: impl FnOnce(&mut State) -> T) -> T {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // The holder may be preempted: let it run.
            let _ = crate::yield_now();
        }
        // SAFETY: the lock taken above gives this caller the only access to `state` until
        // it is released below; `body` cannot re-enter the allocator (the heap code and
        // `memory_map` do not allocate).
        let result = body(unsafe { &mut *self.state.get() });
        self.locked.store(false, Ordering::Release);
        result
    }

    /// What the heap holds now.
    pub fn stats(&self) -> Stats {
        self.with(|state| Stats {
            mapped: state.mapped,
            allocated: state.buddy.stats_alloc_actual() as u64,
            requested: state.buddy.stats_alloc_user() as u64,
        })
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()` that the buddy allocator hands out once; `dealloc` returns exactly such
// blocks with their layout, as `GlobalAlloc`'s contract requires of its callers.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.with(|state| state.alloc(layout))
            .map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        let Some(pointer) = NonNull::new(pointer) else {
            return;
        };
        // SAFETY: the caller returns a block `alloc` gave out, with its layout.
        self.with(|state| unsafe { state.buddy.dealloc(pointer, layout) });
    }
}

#[global_allocator]
static HEAP: Allocator = Allocator::new();

/// What the program's heap holds now.
pub fn stats() -> Stats {
    HEAP.stats()
}
