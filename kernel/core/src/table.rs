//! Per-thread tables that grow: the storage of a bigger table is allocated first, with no
//! lock held, and swapped in afterwards under the table's lock by [`move_into`], which moves
//! the entries over without allocating. The old storage comes back to be freed once the
//! lock is released.
//!
//! Thread ids are dense small integers; a table indexed by them has one entry per id below
//! its length. Tables only grow (an id once served stays valid), so an id found in one of
//! them is valid in every table grown with it.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// The most thread ids any table serves: a limit of the representation (ids travel in 32-bit
/// links and capabilities), far above what memory budgets allow.
pub const MAX_THREAD_IDS: usize = 1 << 20;

/// An empty vector with room for `capacity` entries, or the allocator's refusal.
pub fn room<T>(capacity: usize) -> Result<Vec<T>, TryReserveError> {
    let mut vector = Vec::new();
    vector.try_reserve_exact(capacity)?;
    Ok(vector)
}

/// Make `current` `len` entries long, its entries kept and the new ones `fill()`, in the
/// storage of `spare` when `current` is shorter than `len` and `spare` has room for `len`
/// entries. Returns the storage left over (`current`'s old one, or `spare` untouched when
/// nothing moved), to be dropped once no lock is held. Never allocates.
pub fn move_into<T>(
    current: &mut Vec<T>,
    mut spare: Vec<T>,
    len: usize,
    fill: impl FnMut() -> T,
) -> Vec<T> {
    if current.len() >= len || spare.capacity() < len {
        return spare;
    }
    spare.clear();
    spare.append(current);
    spare.resize_with(len, fill);
    core::mem::swap(current, &mut spare);
    spare
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_place_of_the_spare_and_keeps_entries() {
        let mut current = vec![1, 2, 3];
        let spare = room::<i32>(8).unwrap();
        let spare_pointer = spare.as_ptr();
        let old = move_into(&mut current, spare, 8, || 0);
        assert_eq!(current, [1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(current.as_ptr(), spare_pointer, "no new allocation");
        assert!(old.is_empty() && old.capacity() >= 3);
    }

    #[test]
    fn a_spare_too_small_or_a_table_long_enough_changes_nothing() {
        let mut current = vec![1, 2, 3];
        let spare = move_into(&mut current, room(2).unwrap(), 4, || 0);
        assert_eq!(current, [1, 2, 3]);
        assert!(spare.capacity() >= 2);
        let spare = move_into(&mut current, room(8).unwrap(), 3, || 0);
        assert_eq!(current, [1, 2, 3]);
        assert!(spare.capacity() >= 8);
    }
}
