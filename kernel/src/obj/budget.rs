//! Memory budgets (DESIGN.md §10): every byte the kernel allocates on a process's behalf
//! is charged to the budget its creator gave it, out of the creator's own.
//!
//! A [`Budget`] is a limit in bytes and what is used of it. A process spawns a child by
//! carving the child's budget out of its own ([`Budget::carve`]): the whole limit of the
//! child counts as used in the parent until the child's budget is freed, which happens
//! when the last thing charged to it (the child's process record, an object it made that
//! another process still holds) is gone; then the parent gets the limit back, whatever the
//! child still used. So a process can exhaust only its own budget, and what it gave away
//! returns in one piece.
//!
//! The root budget (the frames free when the first process starts, less what the kernel
//! keeps for itself, [`root_bytes`]) goes to `init`, which hands each server an explicit
//! share; the processes the kernel starts itself under a test scenario each get a root
//! budget of their own.
//!
//! What is charged, and where it is refunded:
//!
//! | what | bytes | charged | refunded |
//! | --- | --- | --- | --- |
//! | a process record and its capability table's first slots | [`PROCESS_BYTES`] | `Process::new`, to the child's budget | the record is freed |
//! | a capability table's growth | [`SLOT_BYTES`] a slot | `CapSpace::insert` / `reserve` when the table is full | the table halves, the process is torn down |
//! | an endpoint or notification | [`OBJECT_BYTES`] | `Charge::take`, to its maker | the object is freed |
//! | a thread record and kernel stack | [`THREAD_BYTES`] | `Process::add_thread` | `Process::thread_exited` |
//! | a user page or page table | `PAGE_SIZE` | the process's page list | unmap, teardown |
//!
//! Budgets are atomics, taken with no lock: a charge that would pass the limit changes
//! nothing and is `OutOfMemory`.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::Error;
use arch_api::{KERNEL_STACK_SIZE, PAGE_SIZE};

use super::capspace::SLOT_BYTES;

/// Bytes charged for one endpoint or notification: its record with the reference counts
/// around it, rounded up.
pub const OBJECT_BYTES: u64 = abi::OBJECT_BUDGET_BYTES;
const _: () = assert!(
    core::mem::size_of::<super::Endpoint>() + 16 <= OBJECT_BYTES as usize
        && core::mem::size_of::<super::Notification>() + 16 <= OBJECT_BYTES as usize
);

/// Bytes charged for a process record, its budget record and the first
/// [`abi::CAP_TABLE_INITIAL_SLOTS`] slots of its capability table.
pub const PROCESS_BYTES: u64 = {
    let record = core::mem::size_of::<super::Process>() + core::mem::size_of::<Budget>() + 32;
    let table = abi::CAP_TABLE_INITIAL_SLOTS as u64 * SLOT_BYTES;
    // Rounded up to a 64-byte line.
    (record as u64 + table + 63) & !63
};

/// Bytes of a thread record (the scheduler's `Thread`, FPU state included) the charge
/// covers; the system-call layer checks the record fits.
pub const THREAD_RECORD_BYTES: u64 = 4096;

/// Bytes charged for one thread: its record and its kernel stack.
pub const THREAD_BYTES: u64 = THREAD_RECORD_BYTES + KERNEL_STACK_SIZE;

/// A limit in bytes and what is charged against it.
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    /// The budget this one was carved from: `limit` of it is used while this one lives.
    parent: Option<Arc<Budget>>,
}

impl Budget {
    /// A budget carved from no other (the root budget, or one the kernel gives a process
    /// it starts itself).
    pub fn root(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            parent: None,
        })
    }

    /// A budget of `limit` bytes out of `parent`'s: `OutOfMemory` when `parent` has not
    /// that much left (or the heap cannot hold the record).
    pub fn carve(parent: &Arc<Budget>, limit: u64) -> Result<Arc<Self>, Error> {
        crate::mm::heap::reserve(core::mem::size_of::<Self>() + 32)
            .map_err(|_| Error::OutOfMemory)?;
        parent.charge(limit)?;
        Ok(Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            parent: Some(parent.clone()),
        }))
    }

    /// Count `bytes` more as used, or `OutOfMemory` (and nothing changes) when that would
    /// pass the limit.
    #[inline]
    pub fn charge(&self, bytes: u64) -> Result<(), Error> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(drop)
            .map_err(|_| Error::OutOfMemory)
    }

    /// Give back `bytes` charged earlier.
    #[inline]
    pub fn refund(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "budget refund beyond its charges");
    }

    /// [`Budget::charge`] of `pages` pages.
    #[inline]
    pub fn charge_pages(&self, pages: usize) -> Result<(), Error> {
        self.charge((pages as u64).saturating_mul(PAGE_SIZE))
    }

    /// [`Budget::refund`] of `pages` pages.
    #[inline]
    pub fn refund_pages(&self, pages: usize) {
        self.refund(pages as u64 * PAGE_SIZE);
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now (shares given to children included).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        if let Some(parent) = &self.parent {
            parent.refund(self.limit);
        }
    }
}

/// Frames the kernel keeps for itself out of those free when the first process starts:
/// a sixteenth, at least 2 MiB (its heap's growth for its own records, kernel stacks'
/// tables, fragmentation).
const KERNEL_KEEPS_MIN: u64 = (2 << 20) / PAGE_SIZE;

/// The root budget for `free_frames` free frames: all of them less what the kernel keeps.
pub fn root_bytes(free_frames: u64) -> u64 {
    let kept = (free_frames / 16).max(KERNEL_KEEPS_MIN);
    free_frames.saturating_sub(kept) * PAGE_SIZE
}
