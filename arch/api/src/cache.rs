//! Cache-maintenance arithmetic: which lines an operation by address must touch. The
//! instructions themselves are the architecture's (`Paging::sync_instructions`); the line
//! ranges and the AArch64 cache-type register's fields are decoded here, host-tested.

use core::ops::Range;

/// The line addresses covering `[start, start + length)` for lines of `line` bytes (a
/// power of two): from the line holding `start` to the end of the line holding the last
/// byte. Empty when `length` is 0; a range reaching the top of the address space stops
/// at the last line.
pub const fn line_span(start: u64, length: u64, line: u64) -> Range<u64> {
    if length == 0 || line == 0 || !line.is_power_of_two() {
        return 0..0;
    }
    let first = start & !(line - 1);
    let last_byte = match start.checked_add(length - 1) {
        Some(last) => last,
        None => u64::MAX,
    };
    let last_line = last_byte & !(line - 1);
    let end = match last_line.checked_add(line) {
        Some(end) => end,
        // The last line: the range ends at its start plus one line, which wraps; stop
        // one short of the wrap (a line start is never u64::MAX).
        None => u64::MAX,
    };
    first..end
}

/// What AArch64's CTR_EL0 says about keeping instruction fetch coherent with data writes
/// (Arm ARM D17.2.34).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheType {
    /// The smallest data-cache line, in bytes (`4 << DminLine`).
    pub data_line: u64,
    /// The smallest instruction-cache line, in bytes (`4 << IminLine`).
    pub instruction_line: u64,
    /// IDC: cleaning the data cache to the point of unification is not needed.
    pub data_clean_not_needed: bool,
    /// DIC: invalidating the instruction cache to the point of unification is not needed.
    pub instruction_invalidate_not_needed: bool,
    /// L1Ip is PIPT: invalidating one virtual alias invalidates every alias. Otherwise the
    /// whole instruction cache is invalidated.
    pub instruction_cache_pipt: bool,
}

impl CacheType {
    pub const fn from_ctr(ctr: u64) -> Self {
        Self {
            data_line: 4 << ((ctr >> 16) & 0xf),
            instruction_line: 4 << (ctr & 0xf),
            data_clean_not_needed: (ctr >> 28) & 1 != 0,
            instruction_invalidate_not_needed: (ctr >> 29) & 1 != 0,
            instruction_cache_pipt: (ctr >> 14) & 0b11 == 0b11,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_every_byte_and_no_more() {
        assert_eq!(line_span(0x1000, 0x1000, 64), 0x1000..0x2000);
        assert_eq!(line_span(0x1010, 1, 64), 0x1000..0x1040);
        assert_eq!(line_span(0x103f, 2, 64), 0x1000..0x1080);
        assert_eq!(line_span(0x1040, 64, 64), 0x1040..0x1080);
        assert_eq!(line_span(0x1000, 0, 64), 0..0);
        assert_eq!(line_span(u64::MAX - 10, 5, 64), !63..u64::MAX);
        assert_eq!(line_span(u64::MAX - 10, 100, 64), !63..u64::MAX);
        assert_eq!(line_span(0x1000, 16, 0), 0..0);
        assert_eq!(line_span(0x1000, 16, 48), 0..0);
        // One 4 KiB page through the HHDM, 64-byte lines: 64 lines.
        let hhdm_page = 0xffff_8000_0123_4000;
        assert_eq!(line_span(hhdm_page, 4096, 64).step_by(64).count(), 64);
    }

    #[test]
    fn cache_type_fields() {
        // Cortex-A72 as QEMU models it: 64-byte lines, PIPT, neither IDC nor DIC.
        let a72 = CacheType::from_ctr(0x8444_c004);
        assert_eq!(a72.data_line, 64);
        assert_eq!(a72.instruction_line, 64);
        assert!(a72.instruction_cache_pipt);
        assert!(!a72.data_clean_not_needed && !a72.instruction_invalidate_not_needed);
        let coherent = CacheType::from_ctr(0x8444_c004 | 3 << 28);
        assert!(coherent.data_clean_not_needed && coherent.instruction_invalidate_not_needed);
        let vipt = CacheType::from_ctr(0x8444_8003);
        assert!(!vipt.instruction_cache_pipt);
        assert_eq!(vipt.instruction_line, 32);
    }
}
