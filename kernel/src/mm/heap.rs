//! The kernel heap: a buddy allocator (`buddy_system_allocator::Heap`) over one contiguous
//! run of frames, reached through the HHDM, behind a spin lock. It lets the core use
//! `alloc` (`Box`, `Vec`) for thread and process bookkeeping — never on the system-call
//! fast path.
//!
//! Weak spot: the heap has a fixed size ([`HEAP_BYTES`]); running out is an allocation
//! failure (a kernel panic through `alloc`'s error handler), not growth.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use crate::sync::{Lock, level};
use buddy_system_allocator::Heap;

use super::frames;

/// 4 MiB: order 10 in frames.
const HEAP_ORDER: u32 = 10;
pub const HEAP_BYTES: u64 = (1 << HEAP_ORDER) * kcore::frames::FRAME_SIZE;

struct KernelHeap(Lock<Heap<32>>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Lock::new(level::HEAP, Heap::empty()));

// SAFETY: `alloc` returns blocks the buddy heap hands out (suitably sized and aligned for
// `layout`, never handed out twice while live) and `dealloc` returns them with the same
// layout, as `GlobalAlloc` requires; the lock serializes access.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
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

/// Give the heap its memory. Called once, after the frame allocator exists.
pub fn init() -> Result<(), &'static str> {
    let physical = frames::allocate_run(HEAP_ORDER).ok_or("no contiguous 4 MiB run free")?;
    let start = frames::virtual_address(physical) as usize;
    // SAFETY: the run was just taken from the frame allocator (nobody else owns it), the
    // HHDM maps it writable for the kernel's lifetime, and it is never freed; the heap is
    // empty, so the range is disjoint from anything added before.
    unsafe { HEAP.0.lock().init(start, HEAP_BYTES as usize) };
    Ok(())
}

/// Bytes currently allocated from the heap (for leak checks in the kernel suite).
pub fn allocated_bytes() -> usize {
    HEAP.0.lock().stats_alloc_actual()
}
