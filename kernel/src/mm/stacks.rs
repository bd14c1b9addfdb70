//! Kernel stacks (DESIGN.md §2, §5): each [`KERNEL_STACK_SIZE`] bytes mapped in
//! [`KERNEL_STACK_REGION`] directly above an unmapped guard page, so an overflow faults
//! instead of corrupting a neighbour. The region is cut into fixed slots (guard + stack);
//! a freed slot is unmapped, its frames returned, and the slot reused first.
//!
//! The page tables of the region are kept when a stack is freed, so after the first use of
//! a slot, allocating and freeing a stack leaves the free-frame count exactly as it was
//! (the kernel suite checks this).

use alloc::vec::Vec;

use crate::sync::{Lock, level};
use arch_api::{
    KERNEL_STACK_REGION, KERNEL_STACK_SIZE, KernelStack, MapError, PAGE_SIZE, PageFlags, Paging,
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
    /// Freed slots, reused last-in first-out.
    free: Vec<u64>,
}

static SLOT_STATE: Lock<Slots> = Lock::new(
    level::STACKS,
    Slots {
        next_unused: 0,
        free: Vec::new(),
    },
);

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
        match slots.free.pop() {
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
                    &mut KernelFrames,
                );
                if mapped.is_err() {
                    let _ = frames::free(physical);
                }
                mapped
            }
        };
        if let Err(error) = result {
            unmap_pages(stack, page);
            SLOT_STATE.lock().free.push(slot);
            return Err(error);
        }
    }
    Ok(stack)
}

/// Unmap `stack`, return its frames and make its slot available again.
///
/// The caller guarantees nothing runs on `stack` any more (its thread is dead and
/// switched away from).
pub fn free(stack: KernelStack) {
    let offset = stack.base - PAGE_SIZE - KERNEL_STACK_REGION.start;
    unmap_pages(stack, PAGES);
    SLOT_STATE.lock().free.push(offset / SLOT_SIZE);
}

/// Unmap the first `count` pages of `stack` and free their frames.
fn unmap_pages(stack: KernelStack, count: u64) {
    for page in 0..count {
        if let Ok(physical) = Cpu::unmap_kernel(stack.base + page * PAGE_SIZE) {
            let _ = frames::free(physical);
        }
    }
}
