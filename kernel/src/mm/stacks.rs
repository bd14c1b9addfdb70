//! Kernel stacks (DESIGN.md §2, §5): each [`KERNEL_STACK_SIZE`] bytes mapped in
//! [`KERNEL_STACK_REGION`] directly above an unmapped guard page, so an overflow faults
//! instead of corrupting a neighbour. The region is cut into fixed slots (guard + stack).
//!
//! # Why a freed stack stays mapped
//! A slot's pages, once mapped, keep their frames for good: a freed stack goes to a list
//! of mapped free slots and is zeroed when it is handed out again. Kernel mappings are
//! global TLB entries that any CPU may hold (every CPU runs threads, and wakers on other
//! CPUs write a blocked thread's saved frame at its stack top); if a slot were unmapped and
//! mapped again to other frames, a CPU holding the old translation would read and write a
//! freed frame. Keeping the translation fixed needs no TLB shootdown at all. The frames of
//! the free slots count as free ([`cached_frames`], added in `mm::free_frames`).
//!
//! The page tables of the region are kept too, so after the first use of a slot,
//! allocating and freeing a stack leaves the free-frame count exactly as it was (the kernel
//! suite checks this).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{Lock, level};
use arch_api::{
    FrameSource, KERNEL_STACK_REGION, KERNEL_STACK_SIZE, KernelStack, MapError, PAGE_SIZE,
    PageFlags, Paging,
};

use super::frames::{self, KernelFrames};
use crate::Cpu;

/// One slot: the guard page, then the stack.
const SLOT_SIZE: u64 = PAGE_SIZE + KERNEL_STACK_SIZE;
const SLOTS: u64 = (KERNEL_STACK_REGION.end - KERNEL_STACK_REGION.start) / SLOT_SIZE;
const PAGES: u64 = KERNEL_STACK_SIZE / PAGE_SIZE;

struct Slots {
    /// Slots never used yet start here.
    next_unused: u64,
    /// Freed slots, still mapped, reused last-in first-out.
    free: Vec<u64>,
    /// Slots whose mapping failed part way: unmapped (only their own CPU ever saw them
    /// mapped), mapped afresh when reused.
    unmapped: Vec<u64>,
}

static SLOT_STATE: Lock<Slots> = Lock::new(
    level::STACKS,
    Slots {
        next_unused: 0,
        free: Vec::new(),
        unmapped: Vec::new(),
    },
);

/// Frames held by the mapped free slots.
static CACHED_FRAMES: AtomicU64 = AtomicU64::new(0);
/// Page-table frames the region's mappings took (kept with the slots: module docs).
static TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// The kernel's frames, counted as the region's page tables take and give back.
struct TableFrames;

impl FrameSource for TableFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        let frame = KernelFrames.alloc_zeroed_frame()?;
        TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        Some(frame)
    }

    fn free_frame(&mut self, frame: u64) {
        TABLE_FRAMES.fetch_sub(1, Ordering::Relaxed);
        KernelFrames.free_frame(frame);
    }
}

/// Page-table frames the region's mappings hold (they are kept: module docs), for the
/// invariant checker (test build), which counts them apart.
#[cfg(feature = "testing")]
pub fn table_frames() -> u64 {
    TABLE_FRAMES.load(Ordering::Relaxed)
}

/// Frames the free stacks hold (free memory kept mapped for the next stack).
pub fn cached_frames() -> u64 {
    CACHED_FRAMES.load(Ordering::Relaxed)
}

fn stack_of(slot: u64) -> KernelStack {
    let base = KERNEL_STACK_REGION.start + slot * SLOT_SIZE + PAGE_SIZE;
    KernelStack {
        base,
        top: base + KERNEL_STACK_SIZE,
    }
}

/// A new kernel stack, zeroed, mapped read/write and not executable.
pub fn allocate() -> Result<KernelStack, MapError> {
    let slot = {
        let mut slots = SLOT_STATE.lock();
        if let Some(slot) = slots.free.pop() {
            CACHED_FRAMES.fetch_sub(PAGES, Ordering::Relaxed);
            drop(slots);
            let stack = stack_of(slot);
            // SAFETY: the slot's pages stay mapped read/write to the same frames (module
            // docs), and nothing uses a free stack.
            unsafe { core::ptr::write_bytes(stack.base as *mut u8, 0, KERNEL_STACK_SIZE as usize) };
            return Ok(stack);
        }
        match slots.unmapped.pop() {
            Some(slot) => slot,
            None if slots.next_unused < SLOTS => {
                // Every slot in use may come back: room to list them all, so `free`
                // never allocates.
                let additional = slots.next_unused as usize + 1 - slots.free.len();
                slots
                    .free
                    .try_reserve(additional)
                    .map_err(|_| MapError::OutOfMemory)?;
                slots.next_unused += 1;
                slots.next_unused - 1
            }
            None => return Err(MapError::OutOfMemory),
        }
    };
    let stack = stack_of(slot);
    let flags = PageFlags {
        writable: true,
        ..PageFlags::default()
    };
    for page in 0..PAGES {
        let result = match frames::allocate_zeroed() {
            None => Err(MapError::OutOfMemory),
            Some(physical) => {
                let mapped = Cpu::map_kernel(
                    stack.base + page * PAGE_SIZE,
                    physical,
                    flags,
                    &mut TableFrames,
                );
                if mapped.is_err() {
                    let _ = frames::free(physical);
                }
                mapped
            }
        };
        if let Err(error) = result {
            unmap_pages(stack, page);
            SLOT_STATE.lock().unmapped.push(slot);
            return Err(error);
        }
    }
    Ok(stack)
}

/// Make `stack`'s slot available again, its pages still mapped (module docs).
///
/// The caller guarantees nothing runs on `stack` any more (its thread is dead and
/// switched away from).
pub fn free(stack: KernelStack) {
    let offset = stack.base - PAGE_SIZE - KERNEL_STACK_REGION.start;
    SLOT_STATE.lock().free.push(offset / SLOT_SIZE);
    CACHED_FRAMES.fetch_add(PAGES, Ordering::Relaxed);
}

/// The bytes of each allocation the slot lists keep (room for every slot used so far), for
/// the invariant checker (test build), which counts them apart from the heap in use.
#[cfg(feature = "testing")]
pub fn list_storage(each: &mut dyn FnMut(usize)) {
    let slots = SLOT_STATE.lock();
    each(slots.free.capacity() * core::mem::size_of::<u64>());
    each(slots.unmapped.capacity() * core::mem::size_of::<u64>());
}

/// Unmap the first `count` pages of `stack` and free their frames.
fn unmap_pages(stack: KernelStack, count: u64) {
    for page in 0..count {
        if let Ok(physical) = Cpu::unmap_kernel(stack.base + page * PAGE_SIZE) {
            let _ = frames::free(physical);
        }
    }
}
