//! A process's capability space: a [`CapTable`] of [`Object`]s behind a lock, and the one
//! way to look a capability up.
//!
//! # Lookups
//! [`CapSpace::lookup`] and [`CapSpace::with`] check in one order, on every path (the
//! system calls and the IPC fast path alike): the handle (`InvalidHandle` when it names
//! no live slot), then the object type (`InvalidArgument` when it is another type, whatever
//! the rights), then the rights (`PermissionDenied`).
//!
//! # Locking
//! The table's lock is level `capability table` ([`crate::sync`]). An object dropped
//! under it (a refused insert) frees at most memory and queues deferred work
//! ([`super::pending`]): nothing under it takes a lock of a layer above. A capability holds
//! a reference to its object and leaves its slot only under the table's lock; so an object
//! borrowed with the table locked ([`CapSpace::pin`], the IPC fast paths) cannot be freed
//! by another CPU meanwhile.

use alloc::boxed::Box;
use alloc::sync::Arc;

use abi::{CAP_TABLE_SLOTS, Error, Handle, ObjectType, Rights};
use kcore::captable::{CapTable, Capability, Slot};

use super::budget::OBJECT_BYTES;
use super::{Budget, Charge, Kind, Object};
use crate::stats::Live;
use crate::sync::{Lock, LockGuard, level};

type Table = CapTable<Object, Box<[Slot<Object>]>>;

/// A process's capabilities and the budget the objects it creates are charged to.
pub struct CapSpace {
    table: Lock<Table>,
    /// The process's memory budget.
    budget: Arc<Budget>,
}

impl CapSpace {
    /// An empty table whose process's objects are charged to `budget` (the table itself
    /// is charged with the process record).
    pub fn new(budget: Arc<Budget>) -> Self {
        let slots: Box<[Slot<Object>]> = (0..CAP_TABLE_SLOTS).map(|_| Slot::empty()).collect();
        Self {
            table: Lock::new(level::CAP_TABLE, CapTable::new(slots)),
            budget,
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

    /// Put `object` in the table with `rights`.
    pub fn insert(&self, mut object: Object, rights: Rights) -> Result<Handle, Error> {
        object.restrict(rights);
        // A refused object is dropped under the table lock: it frees memory and queues
        // deferred work at most (see the module docs).
        let handle = self.table.lock().insert(object, rights)?;
        crate::stats::live_add(Live::Capability);
        Ok(handle)
    }

    /// Put a capability derived elsewhere (another table, a message) in the table.
    pub fn insert_capability(&self, capability: Capability<Object>) -> Result<Handle, Error> {
        let rights = capability.rights();
        self.insert(capability.into_object(), rights)
    }

    /// Free slots left (checked before a transfer).
    pub fn free_slots(&self) -> usize {
        self.table.lock().free_slots()
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
    /// (dropping the last endpoint receiver wakes threads).
    pub fn delete(&self, handle: Handle) -> Result<(), Error> {
        let removed = self.table.lock().delete(handle);
        drop(removed?);
        crate::stats::live_sub(Live::Capability);
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

    /// Delete every capability (the process is torn down). References drop outside the
    /// lock, one at a time.
    pub fn clear(&self) {
        loop {
            let next = {
                let mut table = self.table.lock();
                let handle = table.iter().next().map(|(handle, _)| handle);
                handle.and_then(|handle| table.delete(handle).ok())
            };
            match next {
                Some(capability) => {
                    drop(capability);
                    crate::stats::live_sub(Live::Capability);
                }
                None => break,
            }
        }
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
