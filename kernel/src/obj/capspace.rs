//! A process's capability space: a [`CapTable`] of [`Object`]s behind a lock, and the one
//! way to look a capability up.
//!
//! # Lookups
//! [`CapSpace::lookup`] and [`CapSpace::with`] check in one order, on every path (the
//! system calls and the IPC fast path alike): the handle (`InvalidHandle` when it names
//! no live slot), then the object type (`InvalidArgument` when it is another type, whatever
//! the rights), then the rights (`PermissionDenied`).
//!
//! # Growth
//! The table starts with [`abi::CAP_TABLE_INITIAL_SLOTS`] slots, one contiguous block, so
//! a lookup stays one bounds check and one index. An insert that finds it full doubles it
//! (up to [`abi::CAP_TABLE_MAX_SLOTS`], then `NoSpace`): the new block is charged to the
//! process's budget at [`SLOT_BYTES`] a slot beyond the first ones (which the process
//! record's charge covers) and allocated with no lock held, then the slots move into it
//! under the table's lock; a budget or heap that cannot pay is `OutOfMemory` and changes
//! nothing. A delete that leaves at most a quarter of the table used halves it (as often as
//! that holds: `CapTable::shrink_target`) and refunds the difference; teardown frees the
//! emptied block. A slot keeps its index through both, so handles stay valid, and a
//! dropped slot's generations are never handed out again.
//!
//! # Receipts
//! A capability changes only by leaving its slot ([`CapSpace::delete`], [`CapSpace::clear`]):
//! growing and shrinking move slots with their handles, no operation edits a capability in
//! place, and a dropped slot's generations are never handed out again. The table counts
//! the receive capabilities (endpoint capabilities with `READ`) that left it (`removals`,
//! raised under its lock), and [`CapSpace::receiver`] returns that count with the endpoint
//! as a [`Receipt`]. While the count is unchanged, no receive capability has left the table,
//! so the handle still names the same one: [`CapSpace::still_names`] checks that with no lock
//! and no lookup (the `reply_recv` fast path). The check is one load: a removal it does not
//! see is ordered after it, as if the table's lock had been taken before the removal's.
//! Deleting a capability of another kind changes no receipt.
//!
//! # Locking
//! The table's lock is level `capability table` ([`crate::sync`]). An object dropped
//! under it (a refused insert) frees at most memory and queues deferred work
//! ([`super::pending`]): nothing under it takes a lock of a layer above. A capability holds
//! a reference to its object and leaves its slot only under the table's lock; so an object
//! borrowed with the table locked ([`CapSpace::pin`], the IPC fast paths) cannot be freed
//! by another CPU meanwhile. A block being grown into or shrunk into is allocated, and the
//! block left behind freed, with the lock released.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{CAP_TABLE_INITIAL_SLOTS, CAP_TABLE_MAX_SLOTS, Error, Handle, ObjectType, Rights};
use kcore::captable::{CapTable, Capability, Slot};

use super::budget::OBJECT_BYTES;
use super::{Budget, Charge, Endpoint, Kind, Object};
use crate::stats::Live;
use crate::sync::{Lock, LockGuard, level};

type Table = CapTable<Object, Vec<Slot<Object>>>;

/// Budget bytes one slot beyond the first [`CAP_TABLE_INITIAL_SLOTS`] takes.
pub const SLOT_BYTES: u64 = abi::CAP_SLOT_BUDGET_BYTES;
// A table of a power-of-two count of slots is a heap block of at most that many
// `SLOT_BYTES`, so the charge covers the block.
const _: () = assert!(
    core::mem::size_of::<Slot<Object>>() as u64 <= SLOT_BYTES
        && SLOT_BYTES.is_power_of_two()
        && CAP_TABLE_INITIAL_SLOTS.is_power_of_two()
        && CAP_TABLE_MAX_SLOTS.is_power_of_two()
);

/// Budget bytes a table of `capacity` slots is charged beyond the process record's.
fn charged_for(capacity: usize) -> u64 {
    capacity.saturating_sub(CAP_TABLE_INITIAL_SLOTS) as u64 * SLOT_BYTES
}

/// A block of `slots` empty slots, or `OutOfMemory` when the heap cannot hold it.
fn block(slots: usize) -> Result<Vec<Slot<Object>>, Error> {
    let bytes = slots.saturating_mul(core::mem::size_of::<Slot<Object>>());
    crate::mm::heap::reserve(bytes).map_err(|_| Error::OutOfMemory)?;
    let mut block = Vec::new();
    block
        .try_reserve_exact(slots)
        .map_err(|_| Error::OutOfMemory)?;
    // Within the capacity just reserved: no further allocation.
    block.extend((0..slots).map(|_| Slot::empty()));
    Ok(block)
}

/// A process's capabilities and the budget the objects it creates are charged to.
pub struct CapSpace {
    table: Lock<Table>,
    /// The process's memory budget.
    budget: Arc<Budget>,
    /// Bytes charged to `budget` for the table beyond its first slots
    /// ([`charged_for`] of its capacity), refunded when the table shrinks or is dropped.
    grown: AtomicU64,
    /// Receive capabilities that left the table so far (module docs, "Receipts"): raised
    /// under the table's lock each time one does.
    removals: AtomicU64,
}

/// What [`CapSpace::receiver`] found, as proof for a later [`CapSpace::still_names`]: the
/// handle and the table's count of removed receive capabilities at the lookup (module
/// docs, "Receipts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    handle: u64,
    removals: u64,
}

impl Receipt {
    /// A receipt no handle matches: no handle has slot `u32::MAX` (a table has at most
    /// [`CAP_TABLE_MAX_SLOTS`] slots), and no table counts `u64::MAX` removals.
    pub const NONE: Receipt = Receipt {
        handle: u64::MAX,
        removals: u64::MAX,
    };
}
const _: () = assert!(CAP_TABLE_MAX_SLOTS < u32::MAX as usize);

impl CapSpace {
    /// An empty table of [`CAP_TABLE_INITIAL_SLOTS`] slots whose process's objects are
    /// charged to `budget` (the first slots are charged with the process record, its
    /// growth to `budget`).
    pub fn new(budget: Arc<Budget>) -> Self {
        let slots: Vec<Slot<Object>> = (0..CAP_TABLE_INITIAL_SLOTS)
            .map(|_| Slot::empty())
            .collect();
        Self {
            table: Lock::new(level::CAP_TABLE, CapTable::new(slots)),
            budget,
            grown: AtomicU64::new(0),
            removals: AtomicU64::new(0),
        }
    }

    /// A charge for one new endpoint or notification created by this process.
    pub fn charge(&self) -> Result<Charge, Error> {
        Charge::take(&self.budget, OBJECT_BYTES)
    }

    /// The process's memory budget.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Put `object` in the table with `rights`, growing the table when it is full
    /// (module docs): `OutOfMemory` or `NoSpace`, with `object` dropped, when it cannot.
    pub fn insert(&self, mut object: Object, rights: Rights) -> Result<Handle, Error> {
        object.restrict(rights);
        loop {
            let mut table = self.table.lock();
            if !table.is_full() {
                // A refused object would be dropped under the table lock: it frees memory
                // and queues deferred work at most (see the module docs).
                let handle = table.insert(object, rights)?;
                drop(table);
                crate::stats::live_add(Live::Capability);
                return Ok(handle);
            }
            let capacity = table.capacity();
            drop(table);
            // On an error `object` drops here, with no lock held.
            self.grow(capacity)?;
        }
    }

    /// Make sure `wanted` slots are free, growing the table as needed: for a call that
    /// checks before it makes something it would have to undo. `OutOfMemory` or
    /// `NoSpace` as [`CapSpace::insert`].
    pub fn reserve(&self, wanted: usize) -> Result<(), Error> {
        loop {
            let (free, capacity) = {
                let table = self.table.lock();
                (table.free_slots(), table.capacity())
            };
            if free >= wanted {
                return Ok(());
            }
            self.grow(capacity)?;
        }
    }

    /// Double a table of `capacity` slots (module docs). Nothing changes when another
    /// CPU resized it meanwhile (the caller looks again). Out of line: inserts and
    /// transfers stay small.
    #[cold]
    #[inline(never)]
    fn grow(&self, capacity: usize) -> Result<(), Error> {
        if capacity >= CAP_TABLE_MAX_SLOTS {
            return Err(Error::NoSpace);
        }
        let target = capacity
            .saturating_mul(2)
            .clamp(CAP_TABLE_INITIAL_SLOTS, CAP_TABLE_MAX_SLOTS);
        let bytes = charged_for(target) - charged_for(capacity);
        self.budget.charge(bytes)?;
        let bigger = match block(target) {
            Ok(bigger) => bigger,
            Err(error) => {
                self.budget.refund(bytes);
                return Err(error);
            }
        };
        let outcome = {
            let mut table = self.table.lock();
            if table.capacity() == capacity {
                table.grow(bigger)
            } else {
                Err(bigger)
            }
        };
        match outcome {
            Ok(_emptied) => {
                self.grown.fetch_add(bytes, Ordering::AcqRel);
            }
            Err(_unused) => self.budget.refund(bytes),
        }
        Ok(())
    }

    /// Halve the table as often as it is at most a quarter used, down to its first size
    /// (module docs), if the heap has the smaller block; otherwise it stays as it is. Out
    /// of line, as [`CapSpace::grow`].
    #[cold]
    #[inline(never)]
    fn shrink(&self) {
        let Some((capacity, target)) = ({
            let table = self.table.lock();
            let capacity = table.capacity();
            table
                .shrink_target(CAP_TABLE_INITIAL_SLOTS)
                .map(|target| (capacity, target))
        }) else {
            return;
        };
        let Ok(smaller) = block(target) else {
            return;
        };
        let outcome = {
            let mut table = self.table.lock();
            let still = table.capacity() == capacity
                && table
                    .shrink_target(CAP_TABLE_INITIAL_SLOTS)
                    .is_some_and(|now| now <= target);
            if still {
                table.shrink(smaller)
            } else {
                Err(smaller)
            }
        };
        if let Ok(_emptied) = outcome {
            let bytes = charged_for(capacity) - charged_for(target);
            self.grown.fetch_sub(bytes, Ordering::AcqRel);
            self.budget.refund(bytes);
        }
    }

    /// Slots the table has now (`mem`, tests).
    pub fn capacity(&self) -> usize {
        self.table.lock().capacity()
    }

    /// Capabilities it holds.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// Put a capability derived elsewhere (another table, a message) in the table.
    pub fn insert_capability(&self, capability: Capability<Object>) -> Result<Handle, Error> {
        let rights = capability.rights();
        self.insert(capability.into_object(), rights)
    }

    /// A copy of the capability `handle` names, if it holds `required`.
    pub fn get(&self, handle: Handle, required: Rights) -> Result<Capability<Object>, Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, required)?;
        Ok(capability.derive(Rights::ALL))
    }

    /// Run `body` on the object `handle` names, as a `K`, if the capability holds
    /// `required` (no reference taken; checks in the order of the module docs). `body`
    /// must not take this table's lock.
    #[inline(always)]
    pub fn with<K: Kind, R>(
        &self,
        handle: Handle,
        required: Rights,
        body: impl FnOnce(&K::Target) -> R,
    ) -> Result<R, Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, Rights::NONE)?;
        let target = K::cast(capability.object()).ok_or(Error::InvalidArgument)?;
        if !capability.rights().contains(required) {
            return Err(Error::PermissionDenied);
        }
        Ok(body(target))
    }

    /// The endpoint the receive capability `raw` names (an endpoint capability with `READ`;
    /// checks as [`CapSpace::with`]), a new reference, with the lookup's [`Receipt`].
    pub fn receiver(&self, raw: u64) -> Result<(Arc<Endpoint>, Receipt), Error> {
        self.with::<super::kind::Endpoint, _>(Handle::from_raw(raw), Rights::READ, |target| {
            // Under the lock, so no removal is in flight: the count is the table's as
            // looked up.
            let removals = self.removals.load(Ordering::Relaxed);
            (
                target.endpoint.clone(),
                Receipt {
                    handle: raw,
                    removals,
                },
            )
        })
    }

    /// Whether `handle` still names the capability the lookup that gave `receipt` found:
    /// it is that lookup's handle and no receive capability has left the table since
    /// (module docs, "Receipts"). No lock: one load.
    #[inline(always)]
    pub fn still_names(&self, receipt: Receipt, handle: u64) -> bool {
        receipt.handle == handle && self.removals.load(Ordering::Acquire) == receipt.removals
    }

    /// `capability` left the table: count it when it is a receive capability (module docs,
    /// "Receipts"). Called with the table's lock held (`_table`), before it is released.
    #[inline(always)]
    fn count_removal(&self, _table: &mut LockGuard<'_, Table>, capability: &Capability<Object>) {
        if matches!(capability.object(), Object::Endpoint(_))
            && capability.rights().contains(Rights::READ)
        {
            self.removals.fetch_add(1, Ordering::Release);
        }
    }

    /// The object `handle` names, as a `K`, borrowed with the table locked (no reference
    /// taken): it stays alive, whatever other CPUs do, until the [`Pinned`] is dropped.
    /// Checks as [`CapSpace::with`]. Nothing may take this table's lock meanwhile.
    #[inline(always)]
    pub fn pin<K: Kind>(
        &self,
        handle: Handle,
        required: Rights,
    ) -> Result<Pinned<'_, K::Target>, Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, Rights::NONE)?;
        let target: *const K::Target =
            K::cast(capability.object()).ok_or(Error::InvalidArgument)?;
        if !capability.rights().contains(required) {
            return Err(Error::PermissionDenied);
        }
        Ok(Pinned {
            _table: table,
            target,
        })
    }

    /// The object `handle` names, as a `K` (a new reference), if the capability holds
    /// `required`.
    pub fn lookup<K: Kind>(&self, handle: Handle, required: Rights) -> Result<K::Target, Error> {
        self.with::<K, _>(handle, required, Clone::clone)
    }

    /// [`CapSpace::lookup`] of a handle as it came in a register.
    #[inline(always)]
    pub fn find<K: Kind>(&self, raw: u64, required: Rights) -> Result<K::Target, Error> {
        self.lookup::<K>(Handle::from_raw(raw), required)
    }

    /// [`CapSpace::lookup`], also returning the capability's rights.
    pub fn lookup_rights<K: Kind>(
        &self,
        handle: Handle,
        required: Rights,
    ) -> Result<(K::Target, Rights), Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, Rights::NONE)?;
        let target = K::cast(capability.object()).ok_or(Error::InvalidArgument)?;
        if !capability.rights().contains(required) {
            return Err(Error::PermissionDenied);
        }
        Ok((target.clone(), capability.rights()))
    }

    /// Whether `handle` names a capability, of any type, that holds `required`.
    pub fn check(&self, handle: Handle, required: Rights) -> Result<(), Error> {
        self.table.lock().lookup(handle, required).map(|_| ())
    }

    /// `cap_copy`: the same object with rights `source & mask`.
    pub fn copy(&self, handle: Handle, mask: Rights) -> Result<Handle, Error> {
        let derived = self.get(handle, Rights::NONE)?.derive(mask);
        self.insert_capability(derived)
    }

    /// `cap_mint`: a badged copy of an unbadged endpoint capability.
    pub fn mint(&self, handle: Handle, badge: u64, mask: Rights) -> Result<Handle, Error> {
        let source = self.get(handle, Rights::NONE)?;
        let rights = source.rights().intersection(mask);
        let Object::Endpoint(endpoint) = source.into_object() else {
            return Err(Error::InvalidArgument);
        };
        if endpoint.badge != 0 || badge == 0 {
            return Err(Error::InvalidArgument);
        }
        let mut badged = endpoint.clone();
        badged.badge = badge;
        // `endpoint` (the lookup's reference) drops here, outside the table lock.
        drop(endpoint);
        self.insert(Object::Endpoint(badged), rights)
    }

    /// `cap_delete`. The object reference is dropped after the table lock is released
    /// (dropping the last endpoint receiver wakes threads); then the table shrinks if
    /// it may.
    pub fn delete(&self, handle: Handle) -> Result<(), Error> {
        let (removed, shrink) = {
            let mut table = self.table.lock();
            let removed = table.delete(handle);
            if let Ok(capability) = &removed {
                self.count_removal(&mut table, capability);
            }
            // why: a table at its first size cannot shrink; the check stays off the
            // common path.
            let shrink = table.capacity() > CAP_TABLE_INITIAL_SLOTS
                && table.shrink_target(CAP_TABLE_INITIAL_SLOTS).is_some();
            (removed, shrink)
        };
        drop(removed?);
        crate::stats::live_sub(Live::Capability);
        if shrink {
            self.shrink();
        }
        Ok(())
    }

    /// `cap_identify`: the object type and the rights.
    pub fn identify(&self, handle: Handle) -> Result<(ObjectType, Rights), Error> {
        let table = self.table.lock();
        let capability = table.lookup(handle, Rights::NONE)?;
        Ok((capability.object().object_type(), capability.rights()))
    }

    /// Up to `out.len()` of the capabilities, as (slot, object type, rights), in slot order.
    pub fn list(&self, out: &mut [(u32, ObjectType, Rights)]) -> usize {
        let table = self.table.lock();
        let mut count = 0;
        for ((handle, capability), place) in table.iter().zip(out.iter_mut()) {
            *place = (
                handle.slot(),
                capability.object().object_type(),
                capability.rights(),
            );
            count += 1;
        }
        count
    }

    /// Delete every capability (the process is torn down), then free the table's block
    /// (no allocation: it moves to no storage at all) and refund its growth. References
    /// drop outside the lock, one at a time, in one pass over the slots (and another if
    /// something was put behind it meanwhile). An insert after this grows the table
    /// again.
    pub fn clear(&self) {
        let mut from = 0;
        loop {
            let next = {
                let mut table = self.table.lock();
                match table.next_occupied(from) {
                    Some(handle) => {
                        from = handle.slot();
                        let removed = table.delete(handle).ok();
                        if let Some(capability) = &removed {
                            self.count_removal(&mut table, capability);
                        }
                        removed
                    }
                    None if table.is_empty() => None,
                    None => {
                        from = 0;
                        continue;
                    }
                }
            };
            match next {
                Some(capability) => {
                    drop(capability);
                    crate::stats::live_sub(Live::Capability);
                }
                None => break,
            }
        }
        let emptied = {
            let mut table = self.table.lock();
            let capacity = table.capacity();
            table.shrink(Vec::new()).ok().map(|block| (capacity, block))
        };
        if let Some((capacity, _block)) = emptied {
            let bytes = charged_for(capacity);
            self.grown.fetch_sub(bytes, Ordering::AcqRel);
            self.budget.refund(bytes);
        }
    }
}

impl Drop for CapSpace {
    fn drop(&mut self) {
        self.budget.refund(*self.grown.get_mut());
    }
}

/// An object borrowed from a locked capability table ([`CapSpace::pin`]).
pub struct Pinned<'a, T> {
    _table: LockGuard<'a, Table>,
    target: *const T,
}

impl<T> core::ops::Deref for Pinned<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: `target` points into a capability slot of the table whose lock this
        // holds, so the slot is neither changed nor freed while the `Pinned` lives.
        unsafe { &*self.target }
    }
}
