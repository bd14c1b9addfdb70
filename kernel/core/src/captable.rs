//! A process's capability table (DESIGN.md §6): a fixed number of slots, each
//! empty or holding one capability — a kernel object reference plus its rights — named
//! from user space by an [`abi::Handle`] (slot index + generation).
//!
//! # Guarantees
//!
//! - A handle works only while its capability is in the slot: deleting bumps the slot's
//!   generation, so a stale handle fails with [`Error::InvalidHandle`] even after the slot
//!   is reused. Generations start at 1 (so [`Handle::NULL`] never names anything) and never
//!   wrap: a slot whose generation is exhausted is retired instead of reused, so a handle
//!   can never come back to life.
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
//! more). Iteration is O(slots). No allocation: the slots are storage the caller hands in
//! (an array, a boxed slice, a borrowed slice), sized once; one [`Slot<T>`] is a `T` plus
//! about 16 bytes.
//!
//! Policy lives with the callers, not here: which right an operation needs, whether a
//! transfer over IPC needs `GRANT`, and what deleting the last reference does.

use abi::{Error, Handle, Rights};
use core::marker::PhantomData;

/// The generation of a slot never used. Not 0, so `Handle::NULL` names nothing.
const FIRST_GENERATION: u32 = 1;

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
        match &slot.state {
            SlotState::Occupied(capability) if slot.generation == handle.generation() => {
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
        }
        self.occupied -= 1;
        Ok(capability)
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
