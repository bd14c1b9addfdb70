//! Boot-time placement decisions for the frame allocator: where its own bookkeeping goes,
//! before any allocator exists.
//!
//! The kernel must carve the allocator's storage out of usable memory that nothing else is
//! using yet. The only other user at that point is the early frame source, which takes
//! frames from the top of the largest usable region downward; its range is passed in as
//! `taken` and avoided.

use crate::frames::FRAME_SIZE;

/// The physical address of `bytes` bytes (rounded up to whole frames) of usable memory,
/// frame-aligned, inside one of `usable` (`(base, length)` pairs) and outside `taken`
/// (`[start, end)`, may be empty). The lowest fitting place is chosen. `None` when no
/// region has room.
pub fn place_storage(
    usable: impl IntoIterator<Item = (u64, u64)>,
    bytes: u64,
    taken: (u64, u64),
) -> Option<u64> {
    let needed = bytes.checked_next_multiple_of(FRAME_SIZE)?.max(FRAME_SIZE);
    let (taken_start, taken_end) = taken;
    let mut best: Option<u64> = None;
    for (base, length) in usable {
        let start = base.checked_next_multiple_of(FRAME_SIZE)?;
        let end = base.saturating_add(length) & !(FRAME_SIZE - 1);
        // The free pieces of [start, end) around `taken`.
        let pieces = if taken_start < taken_end && taken_start < end && start < taken_end {
            [
                (start, taken_start.max(start)),
                (taken_end.min(end).next_multiple_of(FRAME_SIZE), end),
            ]
        } else {
            [(start, end), (end, end)]
        };
        for (piece_start, piece_end) in pieces {
            if piece_end > piece_start
                && piece_end - piece_start >= needed
                && best.is_none_or(|b| piece_start < b)
            {
                best = Some(piece_start);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_fitting_region_wins() {
        let usable = [
            (0x10_0000, 0x1000),
            (0x20_0000, 0x10_0000),
            (0x8000, 0x8000),
        ];
        assert_eq!(place_storage(usable, 0x2000, (0, 0)), Some(0x8000));
        assert_eq!(place_storage(usable, 0x9000, (0, 0)), Some(0x20_0000));
        assert_eq!(place_storage(usable, 0x20_0000, (0, 0)), None);
    }

    #[test]
    fn avoids_the_taken_range() {
        // The early frames took the top 64 KiB of the only region.
        let usable = [(0x100_0000, 0x10_0000)];
        let taken = (0x10f_0000, 0x110_0000);
        assert_eq!(place_storage(usable, 0xf_0000, taken), Some(0x100_0000));
        assert_eq!(place_storage(usable, 0xf_1000, taken), None);
        // Taken in the middle: the piece above it counts too.
        let taken = (0x100_0000, 0x101_0000);
        assert_eq!(place_storage(usable, 0x8000, taken), Some(0x101_0000));
    }

    #[test]
    fn rounds_to_frames_and_rejects_partial_frames() {
        assert_eq!(place_storage([(0x1001, 0x1fff)], 1, (0, 0)), Some(0x2000));
        assert_eq!(place_storage([(0x1001, 0x1000)], 1, (0, 0)), None);
        assert_eq!(place_storage([(0x1000, 0x1000)], 0, (0, 0)), Some(0x1000));
        assert_eq!(place_storage([(u64::MAX - 0xfff, 0x1000)], 1, (0, 0)), None);
    }
}
