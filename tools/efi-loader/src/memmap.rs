//! The Limine memory map, built from the firmware's final UEFI memory map, and the part of
//! it the higher-half direct map covers.
//!
//! The protocol promises: entries sorted by base; usable and bootloader-reclaimable entries
//! 4 KiB-aligned and overlapping nothing; the first page never usable (base revisions up to
//! 2; this loader keeps it so at 3 too, which revision 3 allows, and does not offer it as
//! bootloader-reclaimable either, since reclaimable memory becomes usable). This loader makes every
//! entry non-overlapping: where the firmware's regions (or the framebuffer) overlap, the
//! stronger type wins ([`strength`]), and adjacent entries of one type are merged.
//!
//! This runs after ExitBootServices, so it allocates nothing: the caller passes the buffers.

use crate::protocol::{MemoryMapEntry, MemoryType};
use crate::{FOUR_GIB, PAGE_SIZE, align_down, align_up};

/// UEFI memory type the loader allocates the kernel and its modules with (the OS-defined
/// range starts at 0x8000_0000), so that the final map tells them from its own data.
pub const EFI_EXECUTABLE_AND_MODULES: u32 = 0x8000_4b4c;
/// UEFI memory type of everything else the loader hands over (responses, page tables,
/// the stack, copies of firmware tables, the final memory map): bootloader-reclaimable.
/// Distinct from `EfiLoaderData`, which the final map reports as reserved, as Limine does.
pub const EFI_BOOTLOADER_RECLAIMABLE: u32 = 0x8000_4b4d;

/// A region of physical memory and its Limine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub length: u64,
    pub kind: MemoryType,
}

/// UEFI memory types (UEFI 2.10, 7.2 "EFI_MEMORY_TYPE").
pub mod efi_type {
    pub const RESERVED: u32 = 0;
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const RUNTIME_SERVICES_CODE: u32 = 5;
    pub const RUNTIME_SERVICES_DATA: u32 = 6;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNUSABLE: u32 = 8;
    pub const ACPI_RECLAIM: u32 = 9;
    pub const ACPI_NVS: u32 = 10;
    pub const MMIO: u32 = 11;
    pub const MMIO_PORT_SPACE: u32 = 12;
    pub const PAL_CODE: u32 = 13;
    pub const PERSISTENT: u32 = 14;
    pub const UNACCEPTED: u32 = 15;
}

/// One descriptor of the firmware's final memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EfiDescriptor {
    pub efi_type: u32,
    /// `EFI_MEMORY_*` attribute bits; they do not change the Limine type (Limine 8
    /// decides by the type alone).
    pub attribute: u64,
    pub base: u64,
    pub pages: u64,
}

/// The Limine type Limine 8.2 gives memory the final UEFI map describes as `efi_type`,
/// plus the loader's own two types. Limine's rules (`common/mm/pmm.s2.c`):
///
/// - conventional memory and boot services code and data are usable once boot services
///   have exited;
/// - ACPI reclaim and ACPI NVS memory keep their ACPI types;
/// - loader code and data that are not the bootloader's own (another image's, or pool
///   memory the firmware handed out) are reserved, as are unusable memory (Limine does
///   not report it as bad), runtime services, MMIO, PAL code, persistent, unaccepted and
///   unknown memory.
pub fn from_efi(efi_type: u32) -> MemoryType {
    match efi_type {
        efi_type::CONVENTIONAL | efi_type::BOOT_SERVICES_CODE | efi_type::BOOT_SERVICES_DATA => {
            MemoryType::Usable
        }
        efi_type::ACPI_RECLAIM => MemoryType::AcpiReclaimable,
        efi_type::ACPI_NVS => MemoryType::AcpiNvs,
        EFI_EXECUTABLE_AND_MODULES => MemoryType::ExecutableAndModules,
        EFI_BOOTLOADER_RECLAIMABLE => MemoryType::BootloaderReclaimable,
        _ => MemoryType::Reserved,
    }
}

/// The region a descriptor of the final map becomes. `loader_image` is the physical range
/// of the loader's own executable image: its loader code and data pages are
/// bootloader-reclaimable (Limine reports its own image so), not reserved.
pub fn region_of(descriptor: &EfiDescriptor, loader_image: (u64, u64)) -> Region {
    let length = descriptor.pages.saturating_mul(PAGE_SIZE);
    let (image_start, image_length) = loader_image;
    let inside_image = descriptor.base >= image_start
        && descriptor.base.saturating_add(length) <= image_start.saturating_add(image_length);
    let kind = match descriptor.efi_type {
        efi_type::LOADER_CODE | efi_type::LOADER_DATA if inside_image && length > 0 => {
            MemoryType::BootloaderReclaimable
        }
        other => from_efi(other),
    };
    Region {
        base: descriptor.base,
        length,
        kind,
    }
}

/// Which type wins where regions overlap (higher wins). Framebuffer beats usable and
/// reserved (the protocol trims those around it); bad memory beats everything.
pub fn strength(kind: MemoryType) -> u8 {
    match kind {
        MemoryType::Usable => 0,
        MemoryType::BootloaderReclaimable => 1,
        MemoryType::AcpiReclaimable => 2,
        MemoryType::AcpiNvs => 3,
        MemoryType::ExecutableAndModules => 4,
        MemoryType::Reserved => 5,
        MemoryType::Framebuffer => 6,
        MemoryType::BadMemory => 7,
    }
}

fn type_of(code: u64) -> MemoryType {
    match code {
        0 => MemoryType::Usable,
        1 => MemoryType::Reserved,
        2 => MemoryType::AcpiReclaimable,
        3 => MemoryType::AcpiNvs,
        4 => MemoryType::BadMemory,
        5 => MemoryType::BootloaderReclaimable,
        6 => MemoryType::ExecutableAndModules,
        _ => MemoryType::Framebuffer,
    }
}

/// The conversion ran out of room in a caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Buffer sizes [`convert`] needs for `regions` input regions.
pub fn scratch_len(regions: usize) -> usize {
    2 * regions + 1
}

/// Build the Limine memory map from `regions` (in any order, possibly overlapping) into
/// `out`, using `scratch` (at least [`scratch_len`] long). Returns the entry count.
/// `out` needs at most [`scratch_len`] entries too.
pub fn convert(
    regions: &[Region],
    scratch: &mut [u64],
    out: &mut [MemoryMapEntry],
) -> Result<usize, BufferTooSmall> {
    // 1. Every place where the answer may change: region edges, and the end of page 0.
    let mut count = 0;
    let mut push = |value: u64, scratch: &mut [u64]| -> Result<(), BufferTooSmall> {
        *scratch.get_mut(count).ok_or(BufferTooSmall)? = value;
        count += 1;
        Ok(())
    };
    push(PAGE_SIZE, scratch)?;
    for region in regions.iter().filter(|region| region.length > 0) {
        push(region.base, scratch)?;
        push(region.base.saturating_add(region.length), scratch)?;
    }
    let edges = &mut scratch[..count];
    edges.sort_unstable();
    let mut unique = 0;
    for index in 0..edges.len() {
        if unique == 0 || edges[unique - 1] != edges[index] {
            edges[unique] = edges[index];
            unique += 1;
        }
    }
    let edges = &edges[..unique];

    // 2. Between two edges the type is constant: the strongest region covering it.
    let mut written = 0;
    for pair in edges.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        let winner = regions
            .iter()
            .filter(|region| {
                region.length > 0
                    && region.base <= start
                    && region.base.saturating_add(region.length) >= end
            })
            .map(|region| region.kind)
            .max_by_key(|&kind| strength(kind));
        let Some(kind) = winner else { continue };
        if matches!(kind, MemoryType::Usable | MemoryType::BootloaderReclaimable)
            && end <= PAGE_SIZE
        {
            // The first page is never usable, nor reclaimable (which the kernel would
            // later treat as usable): physical address 0 stays out of every allocator.
            continue;
        }
        if written > 0 {
            let last = &mut out[written - 1];
            if last.kind == kind as u64 && last.base + last.length == start {
                last.length = end - last.base;
                continue;
            }
        }
        *out.get_mut(written).ok_or(BufferTooSmall)? = MemoryMapEntry {
            base: start,
            length: end - start,
            kind: kind as u64,
        };
        written += 1;
    }

    // 3. Usable and bootloader-reclaimable entries shrink to whole pages.
    let mut kept = 0;
    for index in 0..written {
        let mut entry = out[index];
        let kind = type_of(entry.kind);
        if matches!(kind, MemoryType::Usable | MemoryType::BootloaderReclaimable) {
            let start = align_up(entry.base, PAGE_SIZE).unwrap_or(u64::MAX);
            let end = align_down(entry.base + entry.length, PAGE_SIZE);
            if end <= start {
                continue;
            }
            entry.base = start;
            entry.length = end - start;
        }
        out[kept] = entry;
        kept += 1;
    }
    Ok(kept)
}

/// How the HHDM maps a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Normal write-back memory.
    WriteBack,
    /// The framebuffer's write-combining type.
    Framebuffer,
}

/// A physical range the HHDM maps (page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HhdmRange {
    pub start: u64,
    pub end: u64,
    pub caching: Caching,
}

/// Whether the HHDM maps an entry of `kind` (beyond the first 4 GiB, which base revisions
/// 1 and 2 map whole).
pub fn hhdm_maps(kind: MemoryType, base_revision: u64) -> bool {
    if base_revision >= 3 {
        matches!(
            kind,
            MemoryType::Usable
                | MemoryType::BootloaderReclaimable
                | MemoryType::ExecutableAndModules
                | MemoryType::Framebuffer
        )
    } else {
        !matches!(kind, MemoryType::Reserved | MemoryType::BadMemory)
    }
}

/// The ranges the HHDM maps, in the order to map them: framebuffers first (a mapper that
/// fills only holes then keeps their caching), then, for revisions below 3, the first
/// 4 GiB, then every entry the revision includes. Ranges are widened to whole pages.
pub fn hhdm_plan(
    entries: &[MemoryMapEntry],
    base_revision: u64,
) -> impl Iterator<Item = HhdmRange> + '_ {
    let page_range = |entry: &MemoryMapEntry, caching| HhdmRange {
        start: align_down(entry.base, PAGE_SIZE),
        end: align_up(entry.base.saturating_add(entry.length), PAGE_SIZE)
            .unwrap_or(align_down(u64::MAX, PAGE_SIZE)),
        caching,
    };
    let framebuffers = entries
        .iter()
        .filter(|entry| entry.kind == MemoryType::Framebuffer as u64)
        .map(move |entry| page_range(entry, Caching::Framebuffer));
    let low = (base_revision < 3).then_some(HhdmRange {
        start: 0,
        end: FOUR_GIB,
        caching: Caching::WriteBack,
    });
    let rest = entries
        .iter()
        .filter(move |entry| {
            entry.kind != MemoryType::Framebuffer as u64
                && hhdm_maps(type_of(entry.kind), base_revision)
        })
        .map(move |entry| page_range(entry, Caching::WriteBack))
        .filter(move |range| base_revision >= 3 || range.end > FOUR_GIB)
        .map(move |range| {
            if base_revision < 3 {
                HhdmRange {
                    start: range.start.max(FOUR_GIB),
                    ..range
                }
            } else {
                range
            }
        });
    framebuffers
        .chain(low)
        .chain(rest)
        .filter(|range| range.end > range.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryType::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn region(base: u64, length: u64, kind: MemoryType) -> Region {
        Region { base, length, kind }
    }

    fn run(regions: &[Region]) -> Vec<(u64, u64, MemoryType)> {
        let mut scratch = vec![0u64; scratch_len(regions.len())];
        let mut out = vec![
            MemoryMapEntry {
                base: 0,
                length: 0,
                kind: 0
            };
            scratch_len(regions.len())
        ];
        let count = convert(regions, &mut scratch, &mut out).unwrap();
        let entries: Vec<_> = out[..count]
            .iter()
            .map(|e| (e.base, e.base + e.length, type_of(e.kind)))
            .collect();
        check_invariants(&entries);
        entries
    }

    fn check_invariants(entries: &[(u64, u64, MemoryType)]) {
        for pair in entries.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "sorted and non-overlapping: {pair:x?}"
            );
            assert!(
                !(pair[0].1 == pair[1].0 && pair[0].2 == pair[1].2),
                "adjacent same-type entries merged: {pair:x?}"
            );
        }
        for &(start, end, kind) in entries {
            assert!(end > start);
            if matches!(kind, Usable | BootloaderReclaimable) {
                assert_eq!(
                    (start % PAGE_SIZE, end % PAGE_SIZE),
                    (0, 0),
                    "{kind:?} {start:#x}..{end:#x} page-aligned"
                );
            }
            if matches!(kind, Usable | BootloaderReclaimable) {
                assert!(start >= PAGE_SIZE, "page 0 never usable or reclaimable");
            }
        }
    }

    /// Limine 8.2's type for every UEFI type, the loader's own two, OEM and OS ranges.
    const EXPECTED: [(u32, MemoryType); 22] = [
        (efi_type::RESERVED, Reserved),
        (efi_type::LOADER_CODE, Reserved),
        (efi_type::LOADER_DATA, Reserved),
        (efi_type::BOOT_SERVICES_CODE, Usable),
        (efi_type::BOOT_SERVICES_DATA, Usable),
        (efi_type::RUNTIME_SERVICES_CODE, Reserved),
        (efi_type::RUNTIME_SERVICES_DATA, Reserved),
        (efi_type::CONVENTIONAL, Usable),
        (efi_type::UNUSABLE, Reserved),
        (efi_type::ACPI_RECLAIM, AcpiReclaimable),
        (efi_type::ACPI_NVS, AcpiNvs),
        (efi_type::MMIO, Reserved),
        (efi_type::MMIO_PORT_SPACE, Reserved),
        (efi_type::PAL_CODE, Reserved),
        (efi_type::PERSISTENT, Reserved),
        (efi_type::UNACCEPTED, Reserved),
        (16, Reserved),
        (0x7000_0000, Reserved),
        (0x7fff_ffff, Reserved),
        (EFI_EXECUTABLE_AND_MODULES, ExecutableAndModules),
        (EFI_BOOTLOADER_RECLAIMABLE, BootloaderReclaimable),
        (0x8000_0000, Reserved),
    ];

    /// The `EFI_MEMORY_*` attribute bits UEFI 2.10 defines.
    const ATTRIBUTES: [u64; 16] = [
        0x1,                   // UC
        0x2,                   // WC
        0x4,                   // WT
        0x8,                   // WB
        0x10,                  // UCE
        0x1000,                // WP
        0x2000,                // RP
        0x4000,                // XP
        0x8000,                // NV
        0x1_0000,              // MORE_RELIABLE
        0x2_0000,              // RO
        0x4_0000,              // SP
        0x8_0000,              // CPU_CRYPTO
        0x4000_0000_0000_0000, // ISA_VALID
        0x8000_0000_0000_0000, // RUNTIME
        0x0fff_f000_0000_0000, // ISA_MASK
    ];

    #[test]
    fn every_efi_type_and_attribute_combination_gets_limines_type() {
        let outside = (0x100_0000, 0x10_0000);
        for (efi, limine) in EXPECTED {
            assert_eq!(from_efi(efi), limine, "EFI type {efi:#x}");
            for combination in 0u32..1 << ATTRIBUTES.len() {
                let attribute = ATTRIBUTES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| combination & (1 << bit) != 0)
                    .fold(0, |all, (_, value)| all | value);
                let descriptor = EfiDescriptor {
                    efi_type: efi,
                    attribute,
                    base: 0x7ffe_0000,
                    pages: 1,
                };
                assert_eq!(
                    region_of(&descriptor, outside),
                    region(0x7ffe_0000, PAGE_SIZE, limine),
                    "EFI type {efi:#x}, attributes {attribute:#x}"
                );
            }
        }
        for code in 0..8 {
            assert_eq!(type_of(code) as u64, code);
        }
    }

    #[test]
    fn firmware_loader_data_is_reserved_but_the_loaders_own_image_is_reclaimable() {
        // QEMU `virt` + AAVMF: one-page loader data allocations below the loader's image,
        // which Limine reports as reserved, must not become usable or reclaimable.
        let image = (0x7ffe_8000, 0x4_0000);
        for page in 0..8 {
            for efi in [efi_type::LOADER_CODE, efi_type::LOADER_DATA] {
                let firmware = EfiDescriptor {
                    efi_type: efi,
                    attribute: 0xf | 0x4000,
                    base: 0x7ffe_0000 + page * PAGE_SIZE,
                    pages: 1,
                };
                assert_eq!(region_of(&firmware, image).kind, Reserved);
            }
        }
        for efi in [efi_type::LOADER_CODE, efi_type::LOADER_DATA] {
            let own = EfiDescriptor {
                efi_type: efi,
                attribute: 0xf,
                base: 0x7ffe_9000,
                pages: 4,
            };
            assert_eq!(region_of(&own, image).kind, BootloaderReclaimable);
            let straddling = EfiDescriptor {
                base: 0x7ffe_7000,
                ..own
            };
            assert_eq!(region_of(&straddling, image).kind, Reserved);
        }
        // Other types inside the image range keep their own type.
        let inside = EfiDescriptor {
            efi_type: efi_type::RUNTIME_SERVICES_DATA,
            attribute: 0,
            base: 0x7ffe_8000,
            pages: 1,
        };
        assert_eq!(region_of(&inside, image).kind, Reserved);
    }

    #[test]
    fn sorts_unsorted_input_and_merges_neighbours() {
        let entries = run(&[
            region(0x10_0000, 0x10_0000, Usable),
            region(0x0, 0xa_0000, Usable),
            region(0x20_0000, 0x1000, Usable),
            region(0xe_0000, 0x2_0000, Reserved),
            region(0x30_0000, 0x4000, BootloaderReclaimable),
            region(0x30_4000, 0x4000, BootloaderReclaimable),
        ]);
        assert_eq!(
            entries,
            [
                (0x1000, 0xa_0000, Usable),
                (0xe_0000, 0x10_0000, Reserved),
                (0x10_0000, 0x20_1000, Usable),
                (0x30_0000, 0x30_8000, BootloaderReclaimable),
            ]
        );
    }

    #[test]
    fn overlaps_resolve_to_the_stronger_type() {
        let entries = run(&[
            region(0x1000, 0xf000, Usable),
            region(0x4000, 0x2000, Reserved),
            region(0x5000, 0x4000, AcpiNvs),
            region(0x8000, 0x1000, BadMemory),
            region(0x0c00_0000, 0x100_0000, Usable),
            region(0x0c40_0000, 0x10_0000, ExecutableAndModules),
        ]);
        assert_eq!(
            entries,
            [
                (0x1000, 0x4000, Usable),
                (0x4000, 0x6000, Reserved),
                (0x6000, 0x8000, AcpiNvs),
                (0x8000, 0x9000, BadMemory),
                (0x9000, 0x1_0000, Usable),
                (0x0c00_0000, 0x0c40_0000, Usable),
                (0x0c40_0000, 0x0c50_0000, ExecutableAndModules),
                (0x0c50_0000, 0x0d00_0000, Usable),
            ]
        );
    }

    #[test]
    fn usable_memory_shrinks_to_whole_pages_around_unaligned_entries() {
        let entries = run(&[
            region(0x1_0000, 0x1_0000, Usable),
            region(0x1_4010, 0x20, AcpiReclaimable),
            region(0x2_0000, 0x800, Usable),
        ]);
        assert_eq!(
            entries,
            [
                (0x1_0000, 0x1_4000, Usable),
                (0x1_4010, 0x1_4030, AcpiReclaimable),
                (0x1_5000, 0x2_0000, Usable)
            ]
        );
    }

    #[test]
    fn framebuffer_trims_usable_and_reserved_memory() {
        let entries = run(&[
            region(0x8000_0000, 0x100_0000, Reserved),
            region(0x8000_0000, 0x30_0000, Framebuffer),
            region(0x7000_0000, 0x1000_0000, Usable),
        ]);
        assert_eq!(
            entries,
            [
                (0x7000_0000, 0x8000_0000, Usable),
                (0x8000_0000, 0x8030_0000, Framebuffer),
                (0x8030_0000, 0x8100_0000, Reserved),
            ]
        );
    }

    #[test]
    fn page_zero_is_never_usable_and_empty_regions_vanish() {
        assert_eq!(
            run(&[region(0, 0x1000, Usable), region(0x5000, 0, Reserved)]),
            []
        );
        assert_eq!(
            run(&[region(0, 0x3000, Usable)]),
            [(0x1000, 0x3000, Usable)]
        );
        assert_eq!(run(&[region(0, 0x1000, Reserved)]), [(0, 0x1000, Reserved)]);
        assert_eq!(
            run(&[region(0, 0x2000, BootloaderReclaimable)]),
            [(0x1000, 0x2000, BootloaderReclaimable)]
        );
        assert_eq!(run(&[]), []);
    }

    #[test]
    fn reports_a_short_buffer() {
        let regions = [
            region(0x1000, 0x1000, Usable),
            region(0x3000, 0x1000, Reserved),
        ];
        let mut scratch = [0u64; 2];
        let mut out = [MemoryMapEntry {
            base: 0,
            length: 0,
            kind: 0,
        }; 5];
        assert_eq!(
            convert(&regions, &mut scratch, &mut out),
            Err(BufferTooSmall)
        );
        let mut scratch = [0u64; 5];
        let mut out = [MemoryMapEntry {
            base: 0,
            length: 0,
            kind: 0,
        }; 1];
        assert_eq!(
            convert(&regions, &mut scratch, &mut out),
            Err(BufferTooSmall)
        );
    }

    fn entry(base: u64, length: u64, kind: MemoryType) -> MemoryMapEntry {
        MemoryMapEntry {
            base,
            length,
            kind: kind as u64,
        }
    }

    #[test]
    fn hhdm_covers_what_each_revision_says() {
        let entries = [
            entry(0x1000, 0x9_f000, Usable),
            entry(0x8000_0000, 0x30_0100, Framebuffer),
            entry(0xfec0_0000, 0x1000, Reserved),
            entry(0x1_0000_0000, 0x4000_0000, Usable),
            entry(0x2_0000_0000, 0x1000, Reserved),
            entry(0x3_0000_0000, 0x800, AcpiNvs),
            entry(0x4_0000_0000, 0x1000, BadMemory),
        ];
        let revision2: Vec<_> = hhdm_plan(&entries, 2).collect();
        assert_eq!(
            revision2,
            [
                HhdmRange {
                    start: 0x8000_0000,
                    end: 0x8030_1000,
                    caching: Caching::Framebuffer
                },
                HhdmRange {
                    start: 0,
                    end: FOUR_GIB,
                    caching: Caching::WriteBack
                },
                HhdmRange {
                    start: 0x1_0000_0000,
                    end: 0x1_4000_0000,
                    caching: Caching::WriteBack
                },
                HhdmRange {
                    start: 0x3_0000_0000,
                    end: 0x3_0000_1000,
                    caching: Caching::WriteBack
                },
            ]
        );
        let revision3: Vec<_> = hhdm_plan(&entries, 3).collect();
        assert_eq!(
            revision3,
            [
                HhdmRange {
                    start: 0x8000_0000,
                    end: 0x8030_1000,
                    caching: Caching::Framebuffer
                },
                HhdmRange {
                    start: 0x1000,
                    end: 0xa_0000,
                    caching: Caching::WriteBack
                },
                HhdmRange {
                    start: 0x1_0000_0000,
                    end: 0x1_4000_0000,
                    caching: Caching::WriteBack
                },
            ]
        );
        // An entry straddling 4 GiB: revision 2 maps only its part above.
        let straddle = [entry(0xf000_0000, 0x2000_0000, AcpiReclaimable)];
        let plan: Vec<_> = hhdm_plan(&straddle, 1).collect();
        assert_eq!(
            plan[1],
            HhdmRange {
                start: FOUR_GIB,
                end: 0x1_1000_0000,
                caching: Caching::WriteBack
            }
        );
    }
}
