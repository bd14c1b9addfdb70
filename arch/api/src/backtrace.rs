//! The frame-pointer backtrace both architectures print in fatal reports and panics.
//!
//! The kernel is built with frame pointers, and on both architectures a frame record is two
//! words, `{caller's record, return address}`, at the address the frame pointer (RBP / x29)
//! holds; records of outer frames lie at higher addresses of the same stack. The
//! architecture supplies only the frame pointer and a way to read a word without faulting
//! ([`StackMemory`]); the walk and its stopping rules are here, host-tested.

use core::fmt::{self, Write};

use crate::KERNEL_IMAGE_BASE;

/// Frames printed at most after the first.
pub const MAX_FRAMES: usize = 32;
/// A record further than this above the first one is not on the same stack.
pub const MAX_SPAN: u64 = 1 << 20;

/// Memory the walk reads frame records from.
pub trait StackMemory {
    /// The 8-aligned word at `address`, if reading it cannot fault (a mapped kernel
    /// address); `None` otherwise. Never faults.
    fn read_word(&self, address: u64) -> Option<u64>;
}

/// Write a backtrace: a header line, `#0` at `pc`, then one `#<n>` line per return address
/// found walking the records from `record`, and one line saying why the walk ended.
///
/// The walk ends at a record that is 0, misaligned, not above `floor` and the record before
/// it, more than [`MAX_SPAN`] above the first record, or unreadable; at a return address of
/// 0 or outside the kernel image (below [`KERNEL_IMAGE_BASE`]); or after [`MAX_FRAMES`].
pub fn write(
    out: &mut dyn Write,
    pc: u64,
    mut record: u64,
    mut floor: u64,
    memory: &impl StackMemory,
) -> fmt::Result {
    writeln!(
        out,
        "backtrace (innermost first; addr2line -e <kernel ELF> resolves them):"
    )?;
    writeln!(out, "  #0  {pc:#018x}")?;
    let first = record;
    for depth in 1..=MAX_FRAMES {
        if record == 0 {
            return writeln!(out, "  (end: frame pointer 0)");
        }
        if !record.is_multiple_of(8) || record <= floor || record - first > MAX_SPAN {
            return writeln!(
                out,
                "  (end: frame pointer {record:#x} is misaligned or out of order)"
            );
        }
        let words = record
            .checked_add(8)
            .and_then(|second| Some((memory.read_word(record)?, memory.read_word(second)?)));
        let Some((previous, return_address)) = words else {
            return writeln!(
                out,
                "  (end: frame pointer {record:#x} is not a readable kernel address)"
            );
        };
        if return_address == 0 {
            return writeln!(out, "  (end of the chain: return address 0)");
        }
        if return_address < KERNEL_IMAGE_BASE {
            return writeln!(
                out,
                "  (end: return address {return_address:#x} outside the kernel)"
            );
        }
        writeln!(out, "  #{depth:<2} {return_address:#018x}")?;
        floor = record;
        record = previous;
    }
    writeln!(out, "  (stopped after {MAX_FRAMES} frames)")
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::BTreeMap;
    use std::string::String;
    use std::vec::Vec;

    use super::*;

    const STACK: u64 = 0xffff_fd00_0000_1000;
    const CODE: u64 = KERNEL_IMAGE_BASE + 0x1000;

    #[derive(Default)]
    struct Fake(BTreeMap<u64, u64>);

    impl Fake {
        /// A record at `at`: `{previous, return address}`.
        fn record(mut self, at: u64, previous: u64, return_address: u64) -> Self {
            self.0.insert(at, previous);
            self.0.insert(at + 8, return_address);
            self
        }
    }

    impl StackMemory for Fake {
        fn read_word(&self, address: u64) -> Option<u64> {
            self.0.get(&address).copied()
        }
    }

    fn walk(memory: &Fake, pc: u64, record: u64, floor: u64) -> Vec<String> {
        let mut out = String::new();
        write(&mut out, pc, record, floor, memory).unwrap();
        out.lines().map(String::from).collect()
    }

    fn frames(lines: &[String]) -> Vec<u64> {
        lines
            .iter()
            .filter_map(|line| line.trim().strip_prefix('#'))
            .map(|rest| {
                let hex = rest.split_whitespace().nth(1).unwrap();
                u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
            })
            .collect()
    }

    #[test]
    fn walks_a_chain_to_its_zero_end() {
        let memory = Fake::default()
            .record(STACK, STACK + 0x40, CODE + 1)
            .record(STACK + 0x40, STACK + 0x100, CODE + 2)
            .record(STACK + 0x100, 0, CODE + 3);
        let lines = walk(&memory, CODE, STACK, 0);
        assert!(lines[0].starts_with("backtrace"));
        assert_eq!(frames(&lines), [CODE, CODE + 1, CODE + 2, CODE + 3]);
        assert_eq!(lines.last().unwrap(), "  (end: frame pointer 0)");
    }

    #[test]
    fn stops_at_a_record_that_does_not_go_up() {
        let memory = Fake::default()
            .record(STACK + 0x40, STACK, CODE + 1)
            .record(STACK, STACK + 0x40, CODE + 2);
        let lines = walk(&memory, CODE, STACK + 0x40, 0);
        assert_eq!(frames(&lines), [CODE, CODE + 1]);
        assert!(lines.last().unwrap().contains("out of order"));
        // The floor applies to the first record too.
        let lines = walk(&memory, CODE, STACK, STACK);
        assert_eq!(frames(&lines), [CODE]);
    }

    #[test]
    fn stops_at_misaligned_unreadable_or_far_records() {
        let memory = Fake::default().record(STACK, STACK + 4, CODE + 1);
        assert!(
            walk(&memory, CODE, STACK, 0)
                .last()
                .unwrap()
                .contains("out of order")
        );
        let memory = Fake::default().record(STACK, STACK + 0x80, CODE + 1);
        let lines = walk(&memory, CODE, STACK, 0);
        assert_eq!(frames(&lines), [CODE, CODE + 1]);
        assert!(lines.last().unwrap().contains("not a readable"));
        let far = STACK + MAX_SPAN + 8;
        let memory = Fake::default()
            .record(STACK, far, CODE + 1)
            .record(far, 0, CODE + 2);
        assert_eq!(frames(&walk(&memory, CODE, STACK, 0)), [CODE, CODE + 1]);
        let mut memory = Fake::default();
        memory.0.insert(u64::MAX - 7, 0);
        assert!(
            walk(&memory, CODE, u64::MAX - 7, 0)
                .last()
                .unwrap()
                .contains("readable")
        );
    }

    #[test]
    fn stops_at_return_addresses_outside_the_kernel() {
        let memory = Fake::default()
            .record(STACK, STACK + 0x40, 0x40_1000)
            .record(STACK + 0x40, 0, CODE);
        let lines = walk(&memory, CODE, STACK, 0);
        assert_eq!(frames(&lines), [CODE]);
        assert!(lines.last().unwrap().contains("outside the kernel"));
        let memory = Fake::default().record(STACK, STACK + 0x40, 0);
        assert!(
            walk(&memory, CODE, STACK, 0)
                .last()
                .unwrap()
                .contains("return address 0")
        );
    }

    #[test]
    fn a_long_chain_ends_at_the_frame_limit() {
        let mut memory = Fake::default();
        for index in 0..100 {
            let at = STACK + index * 16;
            memory = memory.record(at, at + 16, CODE + index);
        }
        let lines = walk(&memory, CODE, STACK, 0);
        assert_eq!(frames(&lines).len(), MAX_FRAMES + 1);
        assert!(lines.last().unwrap().contains("stopped after"));
    }
}
