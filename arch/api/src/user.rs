//! User virtual addresses (DESIGN.md §5): the user half is `[USER_START, USER_END)`, so
//! `0x1000 ..= 0x7fff_ffff_ffff`; page 0 is never part of it.
//!
//! [`UserRange`] is the one place that checks a user range: a value exists only if its
//! start, length and end were checked (no wrap, nothing below [`USER_START`], nothing at or
//! above [`USER_END`]), so code holding one needs no further bounds check.

use core::iter::FusedIterator;

use crate::{PAGE_SIZE, USER_END, USER_START};

/// A non-empty range of user virtual addresses `[start, end)` lying wholly in the user
/// half: `USER_START <= start < end <= USER_END`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserRange {
    start: u64,
    end: u64,
}

impl UserRange {
    /// The whole user half, `[USER_START, USER_END)`.
    pub const ALL: UserRange = UserRange {
        start: USER_START,
        end: USER_END,
    };

    /// `length` bytes from `start`; `None` when empty, when `start + length` wraps, or when
    /// any byte lies outside the user half.
    pub const fn new(start: u64, length: u64) -> Option<Self> {
        match start.checked_add(length) {
            Some(end) => Self::from_bounds(start, end),
            None => None,
        }
    }

    /// `[start, end)`; `None` when empty or not wholly in the user half.
    pub const fn from_bounds(start: u64, end: u64) -> Option<Self> {
        if start < USER_START || end > USER_END || start >= end {
            return None;
        }
        Some(Self { start, end })
    }

    /// `length` bytes from `start`, both page multiples (whole pages only).
    pub const fn aligned(start: u64, length: u64) -> Option<Self> {
        if !is_page_aligned(start) || !is_page_aligned(length) {
            return None;
        }
        Self::new(start, length)
    }

    /// `count` whole pages from the page-aligned `start`.
    pub const fn pages(start: u64, count: u64) -> Option<Self> {
        match count.checked_mul(PAGE_SIZE) {
            Some(length) => Self::aligned(start, length),
            None => None,
        }
    }

    /// The one page at the page-aligned `address`.
    pub const fn page(address: u64) -> Option<Self> {
        Self::aligned(address, PAGE_SIZE)
    }

    /// Whether `address` is a user address (lies in [`UserRange::ALL`]).
    pub const fn is_user_address(address: u64) -> bool {
        Self::ALL.contains(address)
    }

    /// Whether `address` may be a user stack pointer: a user address, or [`USER_END`]
    /// itself (an empty stack at the very top of the user half).
    pub const fn is_user_stack_pointer(address: u64) -> bool {
        USER_START <= address && address <= USER_END
    }

    /// The first address.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// One past the last address (at most [`USER_END`]).
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// The last address (`end - 1`).
    pub const fn last(&self) -> u64 {
        self.end - 1
    }

    /// The length in bytes (never 0).
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Always `false`: a `UserRange` is never empty (here for the `len` convention).
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Whether `address` lies in the range.
    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// Whether `other` lies wholly in this range.
    pub const fn contains_range(&self, other: &UserRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether start and end are page multiples.
    pub const fn is_page_aligned(&self) -> bool {
        is_page_aligned(self.start) && is_page_aligned(self.end)
    }

    /// The smallest page-aligned range covering this one (still in the user half, whose
    /// bounds are page multiples).
    pub const fn to_pages(&self) -> Self {
        Self {
            start: self.start & !(PAGE_SIZE - 1),
            end: self.end.next_multiple_of(PAGE_SIZE),
        }
    }

    /// How many pages the range touches.
    pub const fn page_count(&self) -> u64 {
        let pages = self.to_pages();
        (pages.end - pages.start) / PAGE_SIZE
    }

    /// The base address of every page the range touches, lowest first.
    pub const fn iter_pages(&self) -> Pages {
        let pages = self.to_pages();
        Pages {
            next: pages.start,
            end: pages.end,
        }
    }
}

impl IntoIterator for UserRange {
    type Item = u64;
    type IntoIter = Pages;

    /// The pages the range touches (see [`UserRange::iter_pages`]).
    fn into_iter(self) -> Pages {
        self.iter_pages()
    }
}

/// The page base addresses of a [`UserRange`], lowest first.
#[derive(Clone, Debug)]
pub struct Pages {
    next: u64,
    end: u64,
}

impl Iterator for Pages {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let page = self.next;
        // Never wraps: `end <= USER_END`.
        self.next += PAGE_SIZE;
        Some(page)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.end.saturating_sub(self.next) / PAGE_SIZE) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Pages {}
impl FusedIterator for Pages {}

const fn is_page_aligned(value: u64) -> bool {
    value.is_multiple_of(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    const TOP_PAGE: u64 = USER_END - PAGE_SIZE;

    #[test]
    fn the_user_half_is_page_one_up_to_the_lower_half_top() {
        assert_eq!(UserRange::ALL.start(), 0x1000);
        assert_eq!(UserRange::ALL.last(), 0x7fff_ffff_ffff);
        assert!(UserRange::is_user_address(0x1000));
        assert!(UserRange::is_user_address(0x7fff_ffff_ffff));
        assert!(!UserRange::is_user_address(0xfff));
        assert!(!UserRange::is_user_address(USER_END));
        assert!(!UserRange::is_user_address(u64::MAX));
    }

    #[test]
    fn zero_length_is_refused() {
        assert_eq!(UserRange::new(0x4000, 0), None);
        assert_eq!(UserRange::from_bounds(0x4000, 0x4000), None);
        assert_eq!(UserRange::aligned(0x4000, 0), None);
        assert_eq!(UserRange::pages(0x4000, 0), None);
    }

    #[test]
    fn page_zero_is_refused() {
        assert_eq!(UserRange::new(0, 1), None);
        assert_eq!(UserRange::new(0xfff, 2), None);
        assert_eq!(UserRange::page(0), None);
        assert_eq!(UserRange::from_bounds(0, 0x2000), None);
        assert!(UserRange::new(0x1000, 1).is_some());
    }

    #[test]
    fn wrapping_is_refused() {
        assert_eq!(UserRange::new(0x1000, u64::MAX), None);
        assert_eq!(UserRange::new(u64::MAX, 1), None);
        assert_eq!(UserRange::new(TOP_PAGE, u64::MAX - TOP_PAGE + 1), None);
        assert_eq!(UserRange::pages(0x1000, u64::MAX / PAGE_SIZE + 1), None);
        assert_eq!(UserRange::from_bounds(0x3000, 0x2000), None);
    }

    #[test]
    fn end_at_user_end_is_allowed_past_it_is_not() {
        let top = UserRange::new(TOP_PAGE, PAGE_SIZE).unwrap();
        assert_eq!(top.end(), USER_END);
        assert_eq!(top.last(), USER_END - 1);
        assert_eq!(UserRange::new(TOP_PAGE, PAGE_SIZE + 1), None);
        assert_eq!(UserRange::new(USER_END - 1, 2), None);
        assert_eq!(UserRange::new(USER_END, 1), None);
        assert_eq!(UserRange::page(USER_END), None);
        assert_eq!(UserRange::from_bounds(0x1000, USER_END + 1), None);
        assert_eq!(UserRange::new(0xffff_8000_0000_0000, 8), None);
    }

    #[test]
    fn unaligned_ranges_and_their_pages() {
        let range = UserRange::new(0x1ff8, 16).unwrap();
        assert_eq!(
            (range.start(), range.end(), range.len()),
            (0x1ff8, 0x2008, 16)
        );
        assert!(!range.is_page_aligned());
        assert_eq!(UserRange::aligned(0x1ff8, PAGE_SIZE), None);
        assert_eq!(UserRange::aligned(0x2000, 8), None);
        assert_eq!(UserRange::page(0x2001), None);
        assert_eq!(range.to_pages(), UserRange::pages(0x1000, 2).unwrap());
        assert_eq!(range.page_count(), 2);
        assert_eq!(range.iter_pages().collect::<Vec<_>>(), [0x1000, 0x2000]);
    }

    #[test]
    fn page_constructors() {
        let pages = UserRange::pages(0x40_0000, 3).unwrap();
        assert!(pages.is_page_aligned());
        assert_eq!(pages.len(), 3 * PAGE_SIZE);
        assert_eq!(pages.iter_pages().len(), 3);
        assert_eq!(
            pages.into_iter().collect::<Vec<_>>(),
            [0x40_0000, 0x40_1000, 0x40_2000]
        );
        assert_eq!(UserRange::page(0x40_0000).unwrap().page_count(), 1);
        assert_eq!(UserRange::pages(0x40_0001, 1), None);
        assert_eq!(UserRange::pages(TOP_PAGE, 2), None);
        let top = UserRange::page(TOP_PAGE).unwrap();
        assert_eq!(top.iter_pages().collect::<Vec<_>>(), [TOP_PAGE]);
    }

    #[test]
    fn the_last_byte_alone_iterates_one_page() {
        let range = UserRange::new(USER_END - 1, 1).unwrap();
        assert_eq!(range.iter_pages().collect::<Vec<_>>(), [TOP_PAGE]);
        assert!(UserRange::ALL.contains_range(&range));
        assert_eq!(
            UserRange::ALL.page_count(),
            (USER_END - USER_START) / PAGE_SIZE
        );
    }

    #[test]
    fn containment() {
        let range = UserRange::new(0x2000, 0x100).unwrap();
        assert!(range.contains(0x2000) && range.contains(0x20ff));
        assert!(!range.contains(0x1fff) && !range.contains(0x2100));
        assert!(range.contains_range(&UserRange::new(0x2010, 0x10).unwrap()));
        assert!(!range.contains_range(&UserRange::new(0x20f0, 0x20).unwrap()));
        assert!(!range.is_empty());
    }

    #[test]
    fn stack_pointers_may_sit_at_the_very_top() {
        assert!(UserRange::is_user_stack_pointer(USER_END));
        assert!(UserRange::is_user_stack_pointer(USER_START));
        assert!(!UserRange::is_user_stack_pointer(USER_END + 1));
        assert!(!UserRange::is_user_stack_pointer(0));
    }
}
