//! A summary of the boot memory map, for the banner and for sizing early allocations.

/// The kinds of memory-map entry the Limine protocol defines, by its numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    BadMemory,
    BootloaderReclaimable,
    ExecutableAndModules,
    Framebuffer,
    Unknown(u64),
}

impl RegionKind {
    /// Decode the protocol's entry type.
    pub fn from_limine(code: u64) -> Self {
        match code {
            0 => Self::Usable,
            1 => Self::Reserved,
            2 => Self::AcpiReclaimable,
            3 => Self::AcpiNvs,
            4 => Self::BadMemory,
            5 => Self::BootloaderReclaimable,
            6 => Self::ExecutableAndModules,
            7 => Self::Framebuffer,
            other => Self::Unknown(other),
        }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub length: u64,
    pub kind: RegionKind,
}

/// Totals over a memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of entries of any kind.
    pub regions: usize,
    /// Bytes in `Usable` entries.
    pub usable_bytes: u64,
    /// Bytes in `BootloaderReclaimable` entries (usable once boot info is copied out).
    pub reclaimable_bytes: u64,
    /// The largest usable entry, as (base, length).
    pub largest_usable: Option<(u64, u64)>,
    /// One past the highest usable byte.
    pub top_of_usable: u64,
}

impl Summary {
    pub fn of(regions: impl IntoIterator<Item = Region>) -> Self {
        let mut summary = Self::default();
        for region in regions {
            summary.regions += 1;
            match region.kind {
                RegionKind::Usable => {
                    summary.usable_bytes += region.length;
                    summary.top_of_usable = summary
                        .top_of_usable
                        .max(region.base.saturating_add(region.length));
                    if summary
                        .largest_usable
                        .is_none_or(|(_, len)| region.length > len)
                    {
                        summary.largest_usable = Some((region.base, region.length));
                    }
                }
                RegionKind::BootloaderReclaimable => summary.reclaimable_bytes += region.length,
                _ => {}
            }
        }
        summary
    }

    /// Usable memory in whole MiB (rounded down).
    pub fn usable_mib(&self) -> u64 {
        self.usable_bytes >> 20
    }
}

/// Whether the kernel reaches memory of `kind` through its HHDM: RAM it allocates from or
/// reclaims, the loader's responses and boot stack, the kernel image and modules, and the
/// firmware's ACPI tables. Never device memory, reserved or bad memory, or framebuffers.
pub fn in_direct_map(kind: RegionKind) -> bool {
    matches!(
        kind,
        RegionKind::Usable
            | RegionKind::BootloaderReclaimable
            | RegionKind::ExecutableAndModules
            | RegionKind::AcpiReclaimable
            | RegionKind::AcpiNvs
    )
}

/// The physical ranges the kernel's HHDM maps: the entries [`in_direct_map`] selects,
/// widened to whole 4 KiB pages, sorted and merged where they touch or overlap, written to
/// `out` as `(base, length)`. Returns how many were written, or `None` when `out` is too
/// short or a range wraps.
pub fn direct_map(
    regions: impl IntoIterator<Item = Region>,
    out: &mut [(u64, u64)],
) -> Option<usize> {
    const PAGE: u64 = 4096;
    let mut count = 0;
    for region in regions {
        if !in_direct_map(region.kind) || region.length == 0 {
            continue;
        }
        let start = region.base & !(PAGE - 1);
        let end = region
            .base
            .checked_add(region.length)?
            .checked_next_multiple_of(PAGE)?;
        *out.get_mut(count)? = (start, end);
        count += 1;
    }
    let ranges = &mut out[..count];
    ranges.sort_unstable();
    // Merge in place: (start, end) pairs, then turn ends into lengths.
    let mut merged = 0;
    for index in 0..count {
        let (start, end) = ranges[index];
        if merged > 0 && start <= ranges[merged - 1].1 {
            ranges[merged - 1].1 = ranges[merged - 1].1.max(end);
        } else {
            ranges[merged] = (start, end);
            merged += 1;
        }
    }
    for range in &mut ranges[..merged] {
        range.1 -= range.0;
    }
    Some(merged)
}

/// Whether `[base, base + length)` (physical) touches memory of the memory map that is
/// RAM or firmware data — every kind [`in_direct_map`] selects, and kinds this kernel does
/// not know — so it must never be mapped as a device. `true` also when the range wraps.
pub fn overlaps_memory(regions: impl IntoIterator<Item = Region>, base: u64, length: u64) -> bool {
    let Some(end) = base.checked_add(length) else {
        return true;
    };
    regions.into_iter().any(|region| {
        let memory = in_direct_map(region.kind) || matches!(region.kind, RegionKind::Unknown(_));
        let region_end = region.base.saturating_add(region.length);
        memory && region.length > 0 && base < region_end && region.base < end
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, length: u64, kind: u64) -> Region {
        Region {
            base,
            length,
            kind: RegionKind::from_limine(kind),
        }
    }

    #[test]
    fn counts_only_usable_bytes() {
        let map = [
            region(0, 0x9_f000, 0),
            region(0x9_f000, 0x1000, 1),
            region(0x10_0000, 0x700_0000, 0),
            region(0x800_0000, 0x10_0000, 5),
            region(0xfee0_0000, 0x1000, 1),
        ];
        let summary = Summary::of(map);
        assert_eq!(summary.regions, 5);
        assert_eq!(summary.usable_bytes, 0x9_f000 + 0x700_0000);
        assert_eq!(summary.usable_mib(), 112);
        assert_eq!(summary.reclaimable_bytes, 0x10_0000);
        assert_eq!(summary.largest_usable, Some((0x10_0000, 0x700_0000)));
        assert_eq!(summary.top_of_usable, 0x710_0000);
    }

    #[test]
    fn unknown_kinds_are_kept_and_not_counted() {
        assert_eq!(RegionKind::from_limine(99), RegionKind::Unknown(99));
        let summary = Summary::of([region(0, 0x1000, 99)]);
        assert_eq!(summary.usable_bytes, 0);
        assert_eq!(summary.largest_usable, None);
    }

    #[test]
    fn empty_map() {
        assert_eq!(Summary::of([]), Summary::default());
    }

    #[test]
    fn direct_map_merges_pages_and_skips_devices() {
        let region = |base, length, kind| Region { base, length, kind };
        let regions = [
            region(0x10_0000, 0x1000, RegionKind::ExecutableAndModules),
            region(0x1000, 0x9_e000, RegionKind::Usable),
            region(0x9_f000, 0x800, RegionKind::AcpiNvs),
            region(0x9_f800, 0x800, RegionKind::BootloaderReclaimable),
            region(0xa_0000, 0x6_0000, RegionKind::Reserved),
            region(0x10_0800, 0x1000, RegionKind::Usable),
            region(0xfd00_0000, 0x10_0000, RegionKind::Framebuffer),
            region(0x1_0000_0000, 0x4000_0000, RegionKind::Usable),
            region(0x2_0000_0000, 0, RegionKind::Usable),
        ];
        let mut out = [(0, 0); 16];
        let count = direct_map(regions, &mut out).unwrap();
        assert_eq!(
            &out[..count],
            &[
                (0x1000, 0x9_f000),
                (0x10_0000, 0x2000),
                (0x1_0000_0000, 0x4000_0000)
            ]
        );
        let mut short = [(0, 0); 2];
        assert_eq!(direct_map(regions, &mut short), None);
        let wraps = [region(u64::MAX - 0x10, 0x100, RegionKind::Usable)];
        assert_eq!(direct_map(wraps, &mut out), None);
    }

    #[test]
    fn device_ranges_must_miss_memory() {
        let region = |base, length, kind| Region { base, length, kind };
        let regions = [
            region(0x1000, 0x9_e000, RegionKind::Usable),
            region(0x8000_0000, 0x1000_0000, RegionKind::Reserved),
            region(0xe000_0000, 0x1000, RegionKind::AcpiNvs),
            region(0xf000_0000, 0x1000, RegionKind::Unknown(99)),
        ];
        // Reserved (MMIO windows) and holes are fine.
        assert!(!overlaps_memory(regions, 0x8000_0000, 0x1000));
        assert!(!overlaps_memory(regions, 0xa_0000, 0x1000));
        assert!(
            !overlaps_memory(regions, 0x9_f000, 0x1000),
            "ends exactly at RAM's end"
        );
        // RAM, firmware data, unknown kinds, partial overlaps and wrapping ranges are not.
        assert!(overlaps_memory(regions, 0x5000, 0x1000));
        assert!(overlaps_memory(regions, 0x0, 0x2000), "reaches into RAM");
        assert!(overlaps_memory(regions, 0xe000_0000, 0x1000));
        assert!(overlaps_memory(regions, 0xf000_0000, 0x1000));
        assert!(overlaps_memory(regions, u64::MAX - 0xfff, 0x2000));
    }
}
