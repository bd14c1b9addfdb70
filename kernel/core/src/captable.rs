//! A process's capability table (DESIGN.md §6): slots, each empty or holding one
//! capability — a kernel object reference plus its rights — named from user space by an
//! [`abi::Handle`] (slot index + generation). The table grows and shrinks by moving its
//! slots to new storage the caller provides ([`CapTable::grow`], [`CapTable::shrink`]);
//! a slot keeps its index, so handles stay valid across both.
//!
//! # Guarantees
//!
//! - A handle works only while its capability is in the slot: deleting bumps the slot's
//!   generation, so a stale handle fails with [`Error::InvalidHandle`] even after the slot
//!   is reused. Generations start at 1 (so [`Handle::NULL`] never names anything) and never
//!   wrap: a slot whose generation is exhausted is retired instead of reused, so a handle
//!   can never come back to life. A slot dropped by [`CapTable::shrink`] leaves its next
//!   generation behind: a slot added later at that index (or any other) starts above every
//!   generation a dropped slot handed out, so shrinking and growing again revives no
//!   handle either.
//! - Rights never grow: [`CapTable::copy`] and [`Capability::derive`] give the source's
//!   rights intersected with a mask.
//! - [`CapTable::lookup`] checks the rights an operation requires and returns
//!   [`Error::PermissionDenied`] when any is missing.
//! - [`CapTable::delete`] hands the object back, so the caller drops its reference (and
//!   frees the object when that was the last one).
//! - Every failure leaves the table unchanged; nothing panics on any handle or mask.
//!
//! # Cost
//!
//! Insert, lookup, copy and delete are O(1) (a free list threaded through the empty slots;
//! a lookup is one bounds check and one generation compare — the IPC fast path needs no
//! more; insert and delete also count the slot in its band, see
//! [`CapTable::shrink_target`]). Iteration, [`CapTable::grow`] and [`CapTable::shrink`]
//! are O(slots). No allocation: the slots are storage the caller hands in (an array, a
//! boxed slice, a `Vec`, a borrowed slice); one [`Slot<T>`] is a `T` plus about 16 bytes.
//!
//! Policy lives with the callers, not here: which right an operation needs, whether a
//! transfer over IPC needs `GRANT`, and what deleting the last reference does.

use abi::{Error, Handle, Rights};
use core::marker::PhantomData;

/// The generation of a slot never used. Not 0, so `Handle::NULL` names nothing.
const FIRST_GENERATION: u32 = 1;

/// Bands of slot indices, by bit length: band 0 is index 0, band *b* indices
/// `2^(b-1)..2^b` (a handle's slot field is 32 bits).
const BANDS: usize = 33;

/// The band of slot `index`.
const fn band(index: u32) -> usize {
    (u32::BITS - index.leading_zeros()) as usize
}

/// A capability: a reference to a kernel object and what it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability<T> {
    object: T,
    rights: Rights,
}

impl<T> Capability<T> {
    pub const fn new(object: T, rights: Rights) -> Self {
        Self { object, rights }
    }

    pub const fn object(&self) -> &T {
        &self.object
    }

    pub const fn rights(&self) -> Rights {
        self.rights
    }

    /// Gives up the capability, returning the object reference it held.
    pub fn into_object(self) -> T {
        self.object
    }

    /// A copy with `self`'s rights intersected with `mask`: never more rights than `self`.
    /// Use it to move a capability into another process's table (`derive`, then
    /// [`CapTable::insert_capability`] there).
    pub fn derive(&self, mask: Rights) -> Self
    where
        T: Clone,
    {
        Self {
            object: self.object.clone(),
            rights: self.rights.intersection(mask),
        }
    }
}

/// One slot of a table. Callers only create empty ones ([`Slot::EMPTY`],
/// [`Slot::empty`]) to build the storage they hand to [`CapTable::new`].
#[derive(Debug)]
pub struct Slot<T> {
    /// The generation of the capability in the slot, or of the next one put there.
    generation: u32,
    state: SlotState<T>,
}

#[derive(Debug)]
enum SlotState<T> {
    /// Empty; links to the next empty slot.
    Free {
        next: Option<u32>,
    },
    Occupied(Capability<T>),
    /// Its generations are used up: never filled again (see the module doc).
    Retired,
}

impl<T> Slot<T> {
    /// An empty slot, for array storage: `[Slot::EMPTY; 64]`.
    pub const EMPTY: Self = Self::empty();

    pub const fn empty() -> Self {
        Self {
            generation: FIRST_GENERATION,
            state: SlotState::Free { next: None },
        }
    }
}

/// A capability table over caller-provided slots `S` (e.g. `[Slot<T>; N]`,
/// `Box<[Slot<T>]>`, `&mut [Slot<T>]`), holding objects of type `T` — typically a
/// reference-counted handle on a kernel object.
#[derive(Debug)]
pub struct CapTable<T, S> {
    slots: S,
    /// The first empty slot, or `None` when full.
    free_head: Option<u32>,
    occupied: usize,
    retired: usize,
    /// The generation a slot added by [`CapTable::grow`] starts at: above every
    /// generation handed out by a slot [`CapTable::shrink`] dropped.
    fresh_generation: u32,
    /// Occupied and retired slots per band ([`band`]): the extent a shrink must keep.
    used_in_band: [u32; BANDS],
    _objects: PhantomData<T>,
}

impl<T, S> CapTable<T, S>
where
    S: AsRef<[Slot<T>]> + AsMut<[Slot<T>]>,
{
    /// A table whose every slot is empty. Anything in `slots` is dropped. Slots past index
    /// `u32::MAX - 1` are not used (a handle's slot field is 32 bits). O(slots), once.
    pub fn new(mut slots: S) -> Self {
        let storage = slots.as_mut();
        let capacity = usable_slots(storage.len());
        for (index, slot) in storage.iter_mut().take(capacity).enumerate() {
            // why: ascending free list, so a fresh table hands out slots 0, 1, 2, …
            let next = index + 1;
            let next = if next < capacity {
                u32::try_from(next).ok()
            } else {
                None
            };
            *slot = Slot {
                generation: FIRST_GENERATION,
                state: SlotState::Free { next },
            };
        }
        let free_head = if capacity > 0 { Some(0) } else { None };
        Self {
            slots,
            free_head,
            occupied: 0,
            retired: 0,
            fresh_generation: FIRST_GENERATION,
            used_in_band: [0; BANDS],
            _objects: PhantomData,
        }
    }

    /// Slots the table can ever use.
    pub fn capacity(&self) -> usize {
        usable_slots(self.slots.as_ref().len())
    }

    /// Slots holding a capability.
    pub const fn len(&self) -> usize {
        self.occupied
    }

    pub const fn is_empty(&self) -> bool {
        self.occupied == 0
    }

    /// Whether no slot is free: [`insert`](Self::insert) would return `NoSpace`. O(1).
    pub const fn is_full(&self) -> bool {
        self.free_head.is_none()
    }

    /// Empty slots available to [`insert`](Self::insert): check this before a transfer
    /// that must not fail halfway.
    pub fn free_slots(&self) -> usize {
        self.capacity() - self.occupied - self.retired
    }

    /// Puts `object` with `rights` in an empty slot and returns its handle, or
    /// `NoSpace` if every slot is taken (the object is dropped). O(1).
    pub fn insert(&mut self, object: T, rights: Rights) -> Result<Handle, Error> {
        self.insert_capability(Capability::new(object, rights))
    }

    /// Like [`insert`](Self::insert), for a capability derived from another table.
    pub fn insert_capability(&mut self, capability: Capability<T>) -> Result<Handle, Error> {
        let index = self.free_head.ok_or(Error::NoSpace)?;
        let slot = self.slot_mut(index).ok_or(Error::NoSpace)?;
        let SlotState::Free { next } = slot.state else {
            // why: unreachable while the free list links only free slots; refuse rather
            // than overwrite a capability.
            return Err(Error::NoSpace);
        };
        slot.state = SlotState::Occupied(capability);
        let generation = slot.generation;
        self.free_head = next;
        self.occupied += 1;
        self.used_in_band[band(index)] += 1;
        Ok(Handle::new(index, generation))
    }

    /// The capability `handle` names, if it has every right in `required`.
    /// `InvalidHandle` for a handle naming nothing (out of range, empty, stale);
    /// `PermissionDenied` for a missing right. O(1).
    pub fn lookup(&self, handle: Handle, required: Rights) -> Result<&Capability<T>, Error> {
        let slot = self
            .slots
            .as_ref()
            .get(handle.slot() as usize)
            .ok_or(Error::InvalidHandle)?;
        // The generation first: a caller that then tests the object's kind (the IPC fast
        // paths) gets one test of the slot's tag for both "occupied" and "that kind".
        if slot.generation != handle.generation() {
            return Err(Error::InvalidHandle);
        }
        match &slot.state {
            SlotState::Occupied(capability) => {
                if capability.rights.contains(required) {
                    Ok(capability)
                } else {
                    Err(Error::PermissionDenied)
                }
            }
            _ => Err(Error::InvalidHandle),
        }
    }

    /// Copies the capability `handle` names into a new slot of this table, with rights
    /// `source ∩ mask`, and returns the new handle. `InvalidHandle` or `NoSpace` change
    /// nothing. O(1).
    pub fn copy(&mut self, handle: Handle, mask: Rights) -> Result<Handle, Error>
    where
        T: Clone,
    {
        // why: check space before cloning, so a full table does not clone and drop a
        // reference for nothing.
        let derived = self.lookup(handle, Rights::NONE)?.derive(mask);
        if self.free_head.is_none() {
            return Err(Error::NoSpace);
        }
        self.insert_capability(derived)
    }

    /// Removes the capability `handle` names and returns it, so the caller can drop its
    /// object reference. The handle, and every copy of its value, is dead from now on.
    /// O(1).
    pub fn delete(&mut self, handle: Handle) -> Result<Capability<T>, Error> {
        self.lookup(handle, Rights::NONE)?;
        let free_head = self.free_head;
        let slot = self.slot_mut(handle.slot()).ok_or(Error::InvalidHandle)?;
        let retire = slot.generation == u32::MAX;
        let next_state = if retire {
            SlotState::Retired
        } else {
            SlotState::Free { next: free_head }
        };
        let SlotState::Occupied(capability) = core::mem::replace(&mut slot.state, next_state)
        else {
            // why: unreachable, `lookup` just saw it occupied; nothing was changed.
            return Err(Error::InvalidHandle);
        };
        if retire {
            self.retired += 1;
        } else {
            slot.generation += 1;
            self.free_head = Some(handle.slot());
            self.used_in_band[band(handle.slot())] -= 1;
        }
        self.occupied -= 1;
        Ok(capability)
    }

    /// The first capability at slot `from` or after, if any: for emptying a table in one
    /// pass ([`delete`](Self::delete) each one found, then look from its slot on). O(slots
    /// scanned).
    pub fn next_occupied(&self, from: u32) -> Option<Handle> {
        let capacity = self.capacity();
        let slots = self.slots.as_ref().get(from as usize..capacity)?;
        let offset = slots
            .iter()
            .position(|slot| matches!(slot.state, SlotState::Occupied(_)))?;
        let index = u32::try_from(from as usize + offset).ok()?;
        Some(Handle::new(index, slots[offset].generation))
    }

    /// Move every slot to `bigger` (longer than the current storage, its contents
    /// dropped) and return the old storage, emptied; the slots past the old end are new
    /// empty ones. Every handle keeps working. `Err(bigger)`, unchanged, when `bigger` is
    /// not longer. O(slots).
    pub fn grow(&mut self, mut bigger: S) -> Result<S, S> {
        let old_capacity = self.capacity();
        let new_capacity = usable_slots(bigger.as_ref().len());
        if new_capacity <= old_capacity {
            return Err(bigger);
        }
        let storage = bigger.as_mut();
        for (to, from) in storage.iter_mut().zip(self.slots.as_mut().iter_mut()) {
            core::mem::swap(to, from);
        }
        // why: the new slots first, ascending, then what was free before.
        for (index, slot) in storage
            .iter_mut()
            .enumerate()
            .take(new_capacity)
            .skip(old_capacity)
        {
            let next = if index + 1 < new_capacity {
                u32::try_from(index + 1).ok()
            } else {
                self.free_head
            };
            *slot = Slot {
                generation: self.fresh_generation,
                state: SlotState::Free { next },
            };
        }
        self.free_head = u32::try_from(old_capacity).ok();
        Ok(core::mem::replace(&mut self.slots, bigger))
    }

    /// The smallest power-of-two capacity, at least `minimum`, the table could shrink to
    /// and be at most half full with every used slot (occupied or retired) kept — if that
    /// is at most half the current capacity (so a table does not shrink and grow back
    /// at one insert). O(1): the used slots are counted per band of indices.
    #[inline]
    pub fn shrink_target(&self, minimum: usize) -> Option<usize> {
        let used = self.occupied + self.retired;
        // why: the target is at least twice the used slots and at most half the
        // capacity; most tables fail this at once, before the bands are looked at.
        if used.saturating_mul(4) > self.capacity() || minimum > self.capacity() / 2 {
            return None;
        }
        self.shrink_target_by_bands(minimum, used)
    }

    /// [`shrink_target`](Self::shrink_target) past its quick check.
    fn shrink_target_by_bands(&self, minimum: usize, used: usize) -> Option<usize> {
        let extent = self
            .used_in_band
            .iter()
            .rposition(|&used| used > 0)
            .map_or(0, |band| 1usize << band);
        let wanted = minimum
            .max(extent)
            .max(used.saturating_mul(2))
            .checked_next_power_of_two()?;
        (wanted <= self.capacity() / 2).then_some(wanted)
    }

    /// Move the slots to `smaller` (shorter than the current storage, its contents
    /// dropped), dropping those past its end, and return the old storage, emptied. Every
    /// dropped slot must be free: `Err(smaller)`, unchanged, when one past its end is
    /// occupied or retired or when `smaller` is not shorter. Handles naming a dropped slot
    /// stay invalid for good (see the module docs). O(slots).
    pub fn shrink(&mut self, mut smaller: S) -> Result<S, S> {
        let old_capacity = self.capacity();
        let new_capacity = usable_slots(smaller.as_ref().len());
        let kept_all = self
            .used_in_band
            .iter()
            .enumerate()
            .all(|(band, &used)| used == 0 || (1usize << band) <= new_capacity);
        if new_capacity >= old_capacity || !kept_all {
            return Err(smaller);
        }
        let storage = smaller.as_mut();
        let old = self.slots.as_mut();
        for (to, from) in storage.iter_mut().zip(old.iter_mut()).take(new_capacity) {
            core::mem::swap(to, from);
        }
        for slot in old.iter().take(old_capacity).skip(new_capacity) {
            self.fresh_generation = self.fresh_generation.max(slot.generation);
        }
        // why: rebuilt ascending, so the lowest free slot is handed out first.
        let mut head = None;
        for (index, slot) in storage.iter_mut().enumerate().take(new_capacity).rev() {
            if let SlotState::Free { next } = &mut slot.state {
                *next = head;
                head = u32::try_from(index).ok();
            }
        }
        self.free_head = head;
        Ok(core::mem::replace(&mut self.slots, smaller))
    }

    /// Every capability with its handle, in slot order, for listings such as
    /// `caps <pid>`. O(slots).
    pub fn iter(&self) -> impl Iterator<Item = (Handle, &Capability<T>)> {
        let capacity = self.capacity();
        self.slots
            .as_ref()
            .iter()
            .take(capacity)
            .enumerate()
            .filter_map(|(index, slot)| match (&slot.state, u32::try_from(index)) {
                (SlotState::Occupied(capability), Ok(index)) => {
                    Some((Handle::new(index, slot.generation), capability))
                }
                _ => None,
            })
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<T>> {
        self.slots.as_mut().get_mut(index as usize)
    }
}

/// Slots usable out of `length`: indices must fit a handle's 32-bit slot field.
fn usable_slots(length: usize) -> usize {
    length.min(u32::MAX as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A stand-in kernel object: counts live references like the kernel's will.
    type Object = Rc<&'static str>;

    fn table<const N: usize>() -> CapTable<Object, [Slot<Object>; N]> {
        CapTable::new([Slot::EMPTY; N])
    }

    #[test]
    fn insert_and_lookup() {
        let mut table = table::<4>();
        assert!(table.is_empty());
        let endpoint = table
            .insert(Rc::new("endpoint"), Rights::READ | Rights::WRITE)
            .unwrap();
        let memory = table
            .insert(Rc::new("memory"), Rights::MAP | Rights::READ)
            .unwrap();
        assert_ne!(endpoint, memory);
        assert_eq!((endpoint.slot(), endpoint.generation()), (0, 1));
        assert_eq!(table.len(), 2);
        let capability = table.lookup(endpoint, Rights::WRITE).unwrap();
        assert_eq!(**capability.object(), "endpoint");
        assert_eq!(capability.rights(), Rights::READ | Rights::WRITE);
        assert_eq!(
            **table.lookup(memory, Rights::NONE).unwrap().object(),
            "memory"
        );
    }

    #[test]
    fn missing_rights_are_denied() {
        let mut table = table::<2>();
        let handle = table.insert(Rc::new("notification"), Rights::WAIT).unwrap();
        assert_eq!(
            table.lookup(handle, Rights::SIGNAL),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            table.lookup(handle, Rights::WAIT | Rights::SIGNAL),
            Err(Error::PermissionDenied),
            "every required right must be held"
        );
        assert!(table.lookup(handle, Rights::WAIT).is_ok());
    }

    #[test]
    fn bad_handles_are_invalid() {
        let mut table = table::<2>();
        let handle = table.insert(Rc::new("thread"), Rights::ALL).unwrap();
        for bad in [
            Handle::NULL,
            Handle::new(1, 1),                       // an empty slot
            Handle::new(2, 1),                       // past the end
            Handle::new(u32::MAX, 1),                // far past the end
            Handle::new(0, handle.generation() + 1), // a generation not yet issued
            Handle::new(0, 0),
            Handle::from_raw(u64::MAX),
        ] {
            assert_eq!(
                table.lookup(bad, Rights::NONE),
                Err(Error::InvalidHandle),
                "{bad:?}"
            );
            assert_eq!(table.delete(bad), Err(Error::InvalidHandle), "{bad:?}");
            assert_eq!(
                table.copy(bad, Rights::ALL),
                Err(Error::InvalidHandle),
                "{bad:?}"
            );
        }
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn copy_keeps_only_masked_rights() {
        let mut table = table::<4>();
        let object = Rc::new("memory");
        let source = table
            .insert(object.clone(), Rights::READ | Rights::WRITE | Rights::MAP)
            .unwrap();
        let read_only = table.copy(source, Rights::READ | Rights::MAP).unwrap();
        assert_eq!(
            table.lookup(read_only, Rights::NONE).unwrap().rights(),
            Rights::READ | Rights::MAP
        );
        assert_eq!(
            table.lookup(read_only, Rights::WRITE),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            Rc::strong_count(&object),
            3,
            "the copy holds its own reference"
        );
        // The source is untouched.
        assert_eq!(
            table.lookup(source, Rights::NONE).unwrap().rights(),
            Rights::READ | Rights::WRITE | Rights::MAP
        );
    }

    #[test]
    fn copy_never_grows_rights() {
        let mut table = table::<8>();
        let source = table.insert(Rc::new("endpoint"), Rights::CALL).unwrap();
        let widened = table.copy(source, Rights::ALL).unwrap();
        assert_eq!(
            table.lookup(widened, Rights::NONE).unwrap().rights(),
            Rights::CALL
        );
        assert_eq!(
            table.lookup(widened, Rights::GRANT),
            Err(Error::PermissionDenied)
        );
        // A copy of a reduced copy cannot win back what was dropped.
        let reduced = table.copy(source, Rights::NONE).unwrap();
        let regrown = table.copy(reduced, Rights::ALL).unwrap();
        assert_eq!(
            table.lookup(regrown, Rights::NONE).unwrap().rights(),
            Rights::NONE
        );
        // Exhaustively: every source and mask over the defined bits.
        for source_bits in 0..=Rights::ALL.bits() {
            let capability = Capability::new((), Rights::from_bits(source_bits).unwrap());
            for mask_bits in [0, 1, 0x55, 0xaa, 0x100, Rights::ALL.bits(), source_bits] {
                let derived = capability.derive(Rights::from_bits_truncate(mask_bits));
                assert!(capability.rights().contains(derived.rights()));
                assert_eq!(derived.rights().bits(), source_bits & mask_bits);
            }
        }
    }

    #[test]
    fn derive_moves_a_capability_between_tables() {
        let mut sender = table::<2>();
        let mut receiver = table::<2>();
        let handle = sender
            .insert(Rc::new("endpoint"), Rights::WRITE | Rights::GRANT)
            .unwrap();
        let transferred = sender
            .lookup(handle, Rights::GRANT)
            .unwrap()
            .derive(Rights::WRITE);
        let received = receiver.insert_capability(transferred).unwrap();
        assert_eq!(
            receiver.lookup(received, Rights::NONE).unwrap().rights(),
            Rights::WRITE
        );
        assert_eq!(
            receiver.lookup(received, Rights::GRANT),
            Err(Error::PermissionDenied)
        );
    }

    #[test]
    fn stale_handle_fails_after_delete_and_slot_reuse() {
        let mut table = table::<1>();
        let old = table.insert(Rc::new("first"), Rights::ALL).unwrap();
        table.delete(old).unwrap();
        assert_eq!(table.lookup(old, Rights::NONE), Err(Error::InvalidHandle));
        assert_eq!(
            table.delete(old),
            Err(Error::InvalidHandle),
            "no double delete"
        );
        let new = table.insert(Rc::new("second"), Rights::READ).unwrap();
        assert_eq!(new.slot(), old.slot(), "the slot is reused");
        assert_ne!(new.generation(), old.generation());
        assert_eq!(table.lookup(old, Rights::NONE), Err(Error::InvalidHandle));
        assert_eq!(table.copy(old, Rights::ALL), Err(Error::InvalidHandle));
        assert_eq!(table.delete(old), Err(Error::InvalidHandle));
        assert_eq!(
            **table.lookup(new, Rights::READ).unwrap().object(),
            "second"
        );
    }

    #[test]
    fn exhausted_generation_retires_the_slot() {
        let mut table = table::<2>();
        table.slots[0].generation = u32::MAX - 1;
        let first = table.insert(Rc::new("a"), Rights::ALL).unwrap();
        table.delete(first).unwrap();
        let last = table.insert(Rc::new("b"), Rights::ALL).unwrap();
        assert_eq!((last.slot(), last.generation()), (0, u32::MAX));
        table.delete(last).unwrap();
        assert_eq!(table.free_slots(), 1, "slot 0 is retired");
        let other = table.insert(Rc::new("c"), Rights::ALL).unwrap();
        assert_eq!(other.slot(), 1);
        assert_eq!(table.insert(Rc::new("d"), Rights::ALL), Err(Error::NoSpace));
        for handle in [first, last, Handle::new(0, 0), Handle::new(0, 1)] {
            assert_eq!(
                table.lookup(handle, Rights::NONE),
                Err(Error::InvalidHandle)
            );
        }
    }

    #[test]
    fn full_table_refuses_insert_and_copy() {
        let mut table = table::<3>();
        let object = Rc::new("process");
        let handles: Vec<Handle> = (0..3)
            .map(|_| table.insert(object.clone(), Rights::CONTROL).unwrap())
            .collect();
        assert_eq!(table.free_slots(), 0);
        assert_eq!(
            table.insert(object.clone(), Rights::ALL),
            Err(Error::NoSpace)
        );
        assert_eq!(table.copy(handles[0], Rights::ALL), Err(Error::NoSpace));
        assert_eq!(Rc::strong_count(&object), 4, "refusals leaked no reference");
        assert_eq!(table.len(), 3);
        table.delete(handles[1]).unwrap();
        assert!(
            table.copy(handles[0], Rights::ALL).is_ok(),
            "room again after a delete"
        );
    }

    #[test]
    fn delete_returns_the_object_and_frees_it() {
        let mut table = table::<2>();
        let object = Rc::new("region");
        let weak = Rc::downgrade(&object);
        let handle = table.insert(object, Rights::MAP).unwrap();
        let copy = table.copy(handle, Rights::MAP).unwrap();
        let removed = table.delete(handle).unwrap();
        assert_eq!(removed.rights(), Rights::MAP);
        drop(removed.into_object());
        assert!(weak.upgrade().is_some(), "the copy still holds the object");
        drop(table.delete(copy).unwrap());
        assert!(
            weak.upgrade().is_none(),
            "deleting the last capability freed the object"
        );
        assert!(table.is_empty());
        assert_eq!(table.free_slots(), 2);
    }

    #[test]
    fn iteration_lists_live_capabilities_in_slot_order() {
        let mut table = table::<4>();
        let a = table.insert(Rc::new("a"), Rights::READ).unwrap();
        let b = table.insert(Rc::new("b"), Rights::WRITE).unwrap();
        let c = table.insert(Rc::new("c"), Rights::CALL).unwrap();
        table.delete(b).unwrap();
        let listed: Vec<(Handle, &str, Rights)> = table
            .iter()
            .map(|(handle, capability)| (handle, **capability.object(), capability.rights()))
            .collect();
        assert_eq!(listed, [(a, "a", Rights::READ), (c, "c", Rights::CALL)]);
        for (handle, _) in table.iter() {
            assert!(
                table.lookup(handle, Rights::NONE).is_ok(),
                "listed handles work"
            );
        }
    }

    #[test]
    fn works_over_borrowed_and_empty_storage() {
        let mut storage: Vec<Slot<u32>> = (0..5).map(|_| Slot::empty()).collect();
        let mut table = CapTable::new(storage.as_mut_slice());
        assert_eq!(table.capacity(), 5);
        let handle = table.insert(7, Rights::READ).unwrap();
        assert_eq!(*table.lookup(handle, Rights::READ).unwrap().object(), 7);
        let mut nothing: [Slot<u32>; 0] = [];
        let mut empty = CapTable::new(&mut nothing[..]);
        assert_eq!(empty.capacity(), 0);
        assert_eq!(empty.insert(1, Rights::ALL), Err(Error::NoSpace));
        assert_eq!(
            empty.lookup(Handle::new(0, 1), Rights::NONE),
            Err(Error::InvalidHandle)
        );
    }

    fn vec_table(slots: usize) -> CapTable<Object, Vec<Slot<Object>>> {
        CapTable::new((0..slots).map(|_| Slot::empty()).collect())
    }

    fn storage(slots: usize) -> Vec<Slot<Object>> {
        (0..slots).map(|_| Slot::empty()).collect()
    }

    #[test]
    fn growth_keeps_every_handle() {
        let mut table = vec_table(4);
        let handles: Vec<Handle> = (0..4)
            .map(|_| table.insert(Rc::new("a"), Rights::READ).unwrap())
            .collect();
        table.delete(handles[1]).unwrap();
        let reused = table.insert(Rc::new("b"), Rights::WRITE).unwrap();
        assert_eq!(table.insert(Rc::new("c"), Rights::ALL), Err(Error::NoSpace));
        assert!(table.grow(storage(4)).is_err(), "not longer: refused");
        let old = table.grow(storage(8)).unwrap();
        assert_eq!(old.len(), 4);
        assert_eq!(table.capacity(), 8);
        assert_eq!(table.free_slots(), 4);
        for handle in [handles[0], handles[2], handles[3]] {
            assert_eq!(**table.lookup(handle, Rights::READ).unwrap().object(), "a");
        }
        assert_eq!(**table.lookup(reused, Rights::WRITE).unwrap().object(), "b");
        assert_eq!(
            table.lookup(handles[1], Rights::NONE),
            Err(Error::InvalidHandle)
        );
        let fresh: Vec<u32> = (0..4)
            .map(|_| table.insert(Rc::new("d"), Rights::ALL).unwrap().slot())
            .collect();
        assert_eq!(fresh, [4, 5, 6, 7], "the new slots, ascending");
        assert_eq!(table.insert(Rc::new("e"), Rights::ALL), Err(Error::NoSpace));
    }

    #[test]
    fn shrink_keeps_used_slots_and_revives_no_handle() {
        let mut table = vec_table(16);
        let handles: Vec<Handle> = (0..12)
            .map(|_| table.insert(Rc::new("x"), Rights::ALL).unwrap())
            .collect();
        // Slot 9 used three times: generations 1, 2 and 3 handed out.
        let mut nine = handles[9];
        for _ in 0..2 {
            table.delete(nine).unwrap();
            nine = table.insert(Rc::new("again"), Rights::ALL).unwrap();
            assert_eq!(nine.slot(), 9);
        }
        assert_eq!(nine.generation(), 3);
        assert_eq!(table.shrink_target(4), None, "12 of 16 used");
        for handle in &handles[3..9] {
            table.delete(*handle).unwrap();
        }
        // Slots 9..12 still used: the extent is 16.
        assert_eq!(table.shrink_target(4), None);
        for handle in [handles[10], handles[11], nine] {
            table.delete(handle).unwrap();
        }
        // Three left in slots 0..3: a table of 8 would be under half full, 4 not.
        assert_eq!(table.shrink_target(4), Some(8));
        assert!(table.shrink(storage(2)).is_err(), "slot 2 is in use");
        let old = table.shrink(storage(8)).unwrap();
        assert_eq!((old.len(), table.capacity(), table.len()), (16, 8, 3));
        for handle in &handles[..3] {
            assert!(table.lookup(*handle, Rights::ALL).is_ok());
        }
        assert_eq!(table.shrink_target(4), None, "3 of 8: more than a quarter");
        assert_eq!(table.free_slots(), 5);
        let next: Vec<u32> = (0..5)
            .map(|_| table.insert(Rc::new("y"), Rights::ALL).unwrap().slot())
            .collect();
        assert_eq!(next, [3, 4, 5, 6, 7], "the free list rebuilt ascending");
        table.grow(storage(16)).unwrap();
        let regrown: Vec<Handle> = (0..8)
            .map(|_| table.insert(Rc::new("z"), Rights::ALL).unwrap())
            .collect();
        let at_nine = regrown.iter().find(|handle| handle.slot() == 9).unwrap();
        assert!(
            at_nine.generation() > 3,
            "above what the dropped slot handed out"
        );
        for stale in handles[8..].iter().chain([&nine]) {
            assert_eq!(
                table.lookup(*stale, Rights::NONE),
                Err(Error::InvalidHandle)
            );
        }
    }

    #[test]
    fn retired_slots_are_never_dropped() {
        let mut table = vec_table(8);
        table.slots[6].generation = u32::MAX;
        let handles: Vec<Handle> = (0..7)
            .map(|_| table.insert(Rc::new("r"), Rights::ALL).unwrap())
            .collect();
        assert_eq!(handles[6].generation(), u32::MAX);
        for handle in &handles {
            table.delete(*handle).unwrap();
        }
        assert_eq!(table.shrink_target(1), None, "slot 6 is retired: extent 8");
        assert!(table.shrink(storage(4)).is_err());
    }

    #[test]
    fn next_occupied_walks_the_table_once() {
        let mut table = vec_table(8);
        let handles: Vec<Handle> = (0..6)
            .map(|_| table.insert(Rc::new("w"), Rights::ALL).unwrap())
            .collect();
        table.delete(handles[0]).unwrap();
        table.delete(handles[3]).unwrap();
        let mut from = 0;
        let mut seen = Vec::new();
        while let Some(handle) = table.next_occupied(from) {
            table.delete(handle).unwrap();
            seen.push(handle.slot());
            from = handle.slot();
        }
        assert_eq!(seen, [1, 2, 4, 5]);
        assert!(table.is_empty());
        assert_eq!(table.next_occupied(100), None);
        assert_eq!(table.shrink_target(1), Some(1));
    }

    #[test]
    fn growing_and_shrinking_tables_match_a_model() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut table = vec_table(2);
        let mut live: Vec<(Handle, u64)> = Vec::new();
        let mut dead: Vec<Handle> = Vec::new();
        let mut values = 0u64;
        let mut biggest = 0;
        for round in 0..40_000 {
            // Phases of mostly inserts, then mostly deletes, so the table grows and
            // shrinks again and again.
            let inserting = (round / 2_000) % 2 == 0;
            let insert = random() % 4 != 0;
            if insert == inserting || live.is_empty() {
                values += 1;
                let handle = match table.insert(Rc::new("m"), Rights::ALL) {
                    Ok(handle) => handle,
                    Err(Error::NoSpace) => {
                        let capacity = table.capacity();
                        table.grow(storage(capacity * 2)).unwrap();
                        biggest = biggest.max(table.capacity());
                        table.insert(Rc::new("m"), Rights::ALL).unwrap()
                    }
                    Err(error) => panic!("{error:?}"),
                };
                live.push((handle, values));
            } else {
                let (handle, _) = live.swap_remove((random() as usize) % live.len());
                table.delete(handle).unwrap();
                dead.push(handle);
                if let Some(target) = table.shrink_target(2) {
                    assert!(target <= table.capacity() / 2);
                    assert!(table.len() * 2 <= target);
                    table.shrink(storage(target)).unwrap();
                }
            }
            assert_eq!(table.len(), live.len());
            if round % 1_000 == 0 {
                for (handle, _) in &live {
                    assert!(table.lookup(*handle, Rights::ALL).is_ok());
                }
                for handle in &dead {
                    assert_eq!(
                        table.lookup(*handle, Rights::NONE),
                        Err(Error::InvalidHandle)
                    );
                }
            }
        }
        assert!(biggest >= 256, "the phases grew the table ({biggest})");
        for (handle, _) in live.drain(..) {
            table.delete(handle).unwrap();
        }
        if let Some(target) = table.shrink_target(2) {
            table.shrink(storage(target)).unwrap();
        }
        assert_eq!(table.capacity(), 2, "an empty table shrinks to its minimum");
        for handle in &dead {
            assert_eq!(
                table.lookup(*handle, Rights::NONE),
                Err(Error::InvalidHandle)
            );
        }
    }

    #[test]
    fn random_operations_match_a_model() {
        // xorshift64, deterministic; the model is a list of (handle, value, rights).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut table = table::<16>();
        let mut live: Vec<(Handle, &'static str, Rights)> = Vec::new();
        let mut dead: Vec<Handle> = Vec::new();
        const NAMES: [&str; 3] = ["x", "y", "z"];
        for _ in 0..20_000 {
            let rights = Rights::from_bits_truncate(random() as u32);
            match random() % 5 {
                0 | 1 => {
                    let name = NAMES[(random() % 3) as usize];
                    match table.insert(Rc::new(name), rights) {
                        Ok(handle) => live.push((handle, name, rights)),
                        Err(error) => {
                            assert_eq!(error, Error::NoSpace);
                            assert_eq!(live.len(), 16);
                        }
                    }
                }
                2 if !live.is_empty() => {
                    let (handle, name, source) = live[(random() as usize) % live.len()];
                    match table.copy(handle, rights) {
                        Ok(copy) => live.push((copy, name, source & rights)),
                        Err(error) => assert_eq!(error, Error::NoSpace),
                    }
                }
                3 if !live.is_empty() => {
                    let (handle, name, held) = live.swap_remove((random() as usize) % live.len());
                    let removed = table.delete(handle).unwrap();
                    assert_eq!((**removed.object(), removed.rights()), (name, held));
                    dead.push(handle);
                }
                _ => {
                    // Arbitrary raw handles never panic and never reach a wrong slot.
                    let raw = Handle::from_raw(random() & 0x0000_00ff_0000_001f);
                    if let Ok(capability) = table.lookup(raw, Rights::NONE) {
                        let (_, name, held) =
                            live.iter().find(|(handle, ..)| *handle == raw).unwrap();
                        assert_eq!((**capability.object(), capability.rights()), (*name, *held));
                    }
                }
            }
            assert_eq!(table.len(), live.len());
        }
        for (handle, name, rights) in &live {
            let capability = table.lookup(*handle, *rights).unwrap();
            assert_eq!(**capability.object(), *name);
        }
        for handle in dead {
            assert_eq!(
                table.lookup(handle, Rights::NONE),
                Err(Error::InvalidHandle)
            );
        }
    }
}
