//! Where the higher-half direct map starts.
//!
//! Limine starts the HHDM at the bottom of the higher half of the paging mode
//! (`0xffff_8000_0000_0000` for x86_64 4-level paging, `0xff00_0000_0000_0000` for 5-level,
//! `0xffff_0000_0000_0000` for the AArch64 TTBR1 half) and, when it randomises the map,
//! adds a random multiple of 1 GiB below an eighth of the virtual address space (a quarter
//! of the higher half). The randomisation is on unless `limine.conf` says
//! `randomise_hhdm_base: no` (or `kaslr: no`, which it defaults to); the fixed base gives
//! reproducible runs.

/// The HHDM's alignment when randomised.
pub const STEP: u64 = 1 << 30;

/// The HHDM base for a higher half starting at `higher_half` in a `va_bits`-bit address
/// space: `higher_half` itself without `random`, else `higher_half` plus `random` reduced
/// to a multiple of [`STEP`] below `2^(va_bits - 3)`.
pub fn base(higher_half: u64, va_bits: u32, random: Option<u64>) -> u64 {
    match random {
        None => higher_half,
        Some(random) => {
            let window = (1u64 << (va_bits - 3)) - 1;
            higher_half + (random & !(STEP - 1) & window)
        }
    }
}

/// Spread a time counter's entropy over all 64 bits (the SplitMix64 finaliser), for when
/// the firmware has no RNG: a counter read early in boot changes only in its low bits
/// (AArch64's generic timer ticks at tens of MHz), which the 1 GiB alignment above drops.
pub fn scramble(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_counter_values_give_different_bases() {
        let bases: alloc::vec::Vec<u64> = (1_000_000..1_000_016)
            .map(|counter| base(HHDM_OFFSET_X86_64, 48, Some(scramble(counter))))
            .collect();
        for (i, a) in bases.iter().enumerate() {
            assert_eq!(
                bases.iter().filter(|b| *b == a).count(),
                1,
                "base {i} repeats"
            );
        }
    }
    use crate::protocol::{HHDM_OFFSET_AARCH64, HHDM_OFFSET_X86_64};

    #[test]
    fn fixed_without_randomness() {
        assert_eq!(base(HHDM_OFFSET_X86_64, 48, None), HHDM_OFFSET_X86_64);
        assert_eq!(base(HHDM_OFFSET_AARCH64, 48, None), HHDM_OFFSET_AARCH64);
    }

    #[test]
    fn random_bases_are_gib_aligned_and_stay_in_the_window() {
        for random in [0, 1, STEP - 1, STEP, 0x1234_5678_9abc_def0, u64::MAX] {
            let x86 = base(HHDM_OFFSET_X86_64, 48, Some(random));
            assert_eq!(x86 % STEP, 0);
            assert!((HHDM_OFFSET_X86_64..HHDM_OFFSET_X86_64 + (1 << 45)).contains(&x86));
            let five = base(0xff00_0000_0000_0000, 57, Some(random));
            assert!((0xff00_0000_0000_0000..0xff40_0000_0000_0000).contains(&five));
            let arm = base(HHDM_OFFSET_AARCH64, 48, Some(random));
            assert!((HHDM_OFFSET_AARCH64..HHDM_OFFSET_AARCH64 + (1 << 45)).contains(&arm));
        }
        assert_eq!(
            base(HHDM_OFFSET_X86_64, 48, Some(u64::MAX)),
            0xffff_9fff_c000_0000
        );
        assert_ne!(
            base(HHDM_OFFSET_X86_64, 48, Some(3 * STEP)),
            base(HHDM_OFFSET_X86_64, 48, Some(5 * STEP))
        );
    }
}
