//! The kernel heap: a buddy allocator (`buddy_system_allocator::Heap`) over runs of frames,
//! reached through the HHDM, behind a spin lock. It lets the core use `alloc` (`Box`, `Vec`)
//! for thread and process bookkeeping — never on the system-call fast path.
//!
//! # Growth and exhaustion
//! The heap starts with [`HEAP_BYTES`] and grows from the frame allocator: by 1 MiB
//! ([`GROWTH_ORDER`], or the run an allocation needs) when an allocation does not fit, and ahead of need in
//! [`reserve`]. Frames given to the heap stay with it. So an allocation fails only when
//! the frame allocator is out of runs too, and no allocation made for a system call may
//! reach that point: the calls that allocate first [`reserve`] what they will use (at
//! object creation: `obj::Charge`) and report `OutOfMemory`, or grow their collections
//! with `try_reserve`.
//!
//! Weak spot: [`reserve`] counts free bytes, not free blocks; the [`HEADROOM`] it keeps
//! beyond the request is what makes a fragmented heap still hold the few small blocks a
//! system call takes.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{Lock, level};
use buddy_system_allocator::Heap;

use super::frames;

/// 4 MiB: order 10 in frames.
const HEAP_ORDER: u32 = 10;
pub const HEAP_BYTES: u64 = (1 << HEAP_ORDER) * kcore::frames::FRAME_SIZE;
/// The run the heap grows by when the frame allocator has one: 1 MiB (order 8).
const GROWTH_ORDER: u32 = 8;
/// Free bytes [`reserve`] keeps beyond what it is asked for.
pub const HEADROOM: usize = 256 * 1024;

/// Frames the heap holds (its initial run and every growth).
static HEAP_FRAMES: AtomicU64 = AtomicU64::new(0);

struct KernelHeap(Lock<Heap<32>>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Lock::new(level::HEAP, Heap::empty()));

// SAFETY: `alloc` returns blocks the buddy heap hands out (suitably sized and aligned for
// `layout`, never handed out twice while live) and `dealloc` returns them with the same
// layout, as `GlobalAlloc` requires; the lock serializes access.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Ok(block) = self.0.lock().alloc(layout) {
            return block.as_ptr();
        }
        // Out of heap: grow (with the heap lock released: the frame allocator's lock
        // comes first in the lock order) and try once more.
        if !grow(layout.size().max(layout.align())) {
            return core::ptr::null_mut();
        }
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if let Some(pointer) = NonNull::new(pointer) {
            // SAFETY: the caller passes a block this allocator returned for `layout`.
            unsafe { self.0.lock().dealloc(pointer, layout) };
        }
    }
}

/// The frame order of the smallest run holding a block of `bytes`.
fn order_for(bytes: usize) -> u32 {
    let block = (bytes.max(1) as u64).next_power_of_two();
    block
        .div_ceil(kcore::frames::FRAME_SIZE)
        .next_power_of_two()
        .trailing_zeros()
}

/// Give the heap a new run of frames that holds a block of `bytes`: 1 MiB when the
/// frame allocator has such a run, else the smallest that fits. `false` when none is free.
fn grow(bytes: usize) -> bool {
    let needed = order_for(bytes);
    let mut order = needed.max(GROWTH_ORDER);
    loop {
        if let Some(physical) = frames::allocate_run(order) {
            let start = frames::virtual_address(physical) as usize;
            let length = (kcore::frames::FRAME_SIZE << order) as usize;
            // SAFETY: the run was just taken from the frame allocator (nobody else owns
            // it), the HHDM maps it writable for the kernel's lifetime, and it is never
            // freed, so it is disjoint from every range the heap already has.
            unsafe { HEAP.0.lock().add_to_heap(start, start + length) };
            HEAP_FRAMES.fetch_add(1 << order, Ordering::Relaxed);
            return true;
        }
        if order == needed {
            return false;
        }
        order -= 1;
    }
}

/// Make sure `bytes` more (and [`HEADROOM`] beyond them) can be allocated, growing the
/// heap if needed; `Err` when the frame allocator cannot provide them. Called before the
/// allocations of a system call, so that they cannot fail.
pub fn reserve(bytes: usize) -> Result<(), OutOfHeap> {
    let wanted = bytes.saturating_add(HEADROOM);
    loop {
        let free = {
            let heap = HEAP.0.lock();
            heap.stats_total_bytes() - heap.stats_alloc_actual()
        };
        if free >= wanted {
            return Ok(());
        }
        if !grow(wanted - free) {
            return Err(OutOfHeap);
        }
    }
}

/// The heap cannot grow: the frame allocator is out of runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfHeap;

/// Give the heap its memory. Called once, after the frame allocator exists.
pub fn init() -> Result<(), &'static str> {
    let physical = frames::allocate_run(HEAP_ORDER).ok_or("no contiguous 4 MiB run free")?;
    let start = frames::virtual_address(physical) as usize;
    // SAFETY: the run was just taken from the frame allocator (nobody else owns it), the
    // HHDM maps it writable for the kernel's lifetime, and it is never freed; the heap is
    // empty, so the range is disjoint from anything added before.
    unsafe { HEAP.0.lock().init(start, HEAP_BYTES as usize) };
    HEAP_FRAMES.store(1 << HEAP_ORDER, Ordering::Relaxed);
    Ok(())
}

/// Bytes currently allocated from the heap (for leak checks in the kernel suite).
pub fn allocated_bytes() -> usize {
    HEAP.0.lock().stats_alloc_actual()
}

/// Heap bytes a block of `bytes` takes ([`allocated_bytes`] counts these): the buddy
/// allocator's power of two, zero for no block.
#[cfg(feature = "testing")]
pub fn block_bytes(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes.next_power_of_two().max(core::mem::size_of::<usize>())
    }
}

/// Frames the heap holds (they never go back to the frame allocator).
pub fn frames_held() -> u64 {
    HEAP_FRAMES.load(Ordering::Relaxed)
}
