//! Building the kernel's own page tables (DESIGN.md §4), the portable half of
//! [`KernelTables::switch_to_kernel_tables`](crate::KernelTables::switch_to_kernel_tables).
//!
//! Built once, after the frame allocator exists, from what the kernel knows rather than
//! from the loader's layout:
//! - the regions Keel maps page by page in the kernel half before the switch (kernel
//!   stacks, the device window) copied entry by entry, their root entries created even
//!   where empty (so hierarchies that copy the kernel half's root entries share them);
//! - the image section by section (text RX, rodata R+NX, data and bss RW+NX), physical
//!   addresses read from the loader's tables (the protocol only guarantees that the image
//!   is contiguous);
//! - the HHDM over the physical ranges the core passes (RW+NX, normal memory, 2 MiB blocks
//!   where aligned).
//!
//! Then it checks that the running code and stack are mapped to the same frames as in the
//! loader's tables. The switch itself (CR3 / TTBR1 write, TLB maintenance) is the
//! architecture's.

use core::ops::Range;

use crate::pagetable::{self, EntryFormat, ROOT_LEVEL, TableMemory, Walker};
use crate::{EarlyError, KernelLayout, KernelTablesReport, MapError, PAGE_SIZE, PageFlags};

/// Build the kernel's hierarchy in `memory` (which also holds the loader's, `loader_root`)
/// and return what it took; nothing is switched. `own_regions` are Keel's page-mapped
/// kernel regions to copy; `must_match` are addresses (the running code, the boot stack)
/// that must translate to the same frames in both hierarchies.
pub fn build<M: TableMemory, F: EntryFormat>(
    memory: &mut M,
    format: &F,
    loader_root: u64,
    layout: &KernelLayout,
    direct_map: &[(u64, u64)],
    own_regions: &[Range<u64>],
    must_match: &[u64],
) -> Result<KernelTablesReport, EarlyError> {
    let fail = EarlyError::Unsupported;
    let mut counting = Counting {
        memory,
        allocated: 0,
    };
    let new_root = counting.allocate_table().ok_or(EarlyError::OutOfMemory)?;
    let mut tables = Walker::new(&mut counting, format, new_root);

    for region in own_regions.iter().filter(|region| !region.is_empty()) {
        let slots = pagetable::index(region.start, ROOT_LEVEL)
            ..=pagetable::index(region.end - 1, ROOT_LEVEL);
        for slot in slots {
            if !format.is_present(tables.memory.read(new_root, slot)) {
                let table = tables
                    .memory
                    .allocate_table()
                    .ok_or(EarlyError::OutOfMemory)?;
                tables
                    .memory
                    .write(new_root, slot, format.table_entry(table, false));
            }
        }
        tables
            .copy_pages_from(loader_root, region.clone())
            .map_err(|_| fail("cannot copy the kernel's own mappings into its new tables"))?;
    }

    let text = PageFlags {
        executable: true,
        ..PageFlags::default()
    };
    let data = PageFlags {
        writable: true,
        ..PageFlags::default()
    };
    for (range, flags) in [
        (layout.text.clone(), text),
        (layout.rodata.clone(), PageFlags::default()),
        (layout.data.clone(), data),
    ] {
        let mut page = range.start & !(PAGE_SIZE - 1);
        while page < range.end {
            let physical = Walker::new(&mut *tables.memory, format, loader_root)
                .lookup(page)
                .ok_or(fail(
                    "a page of the kernel image is not mapped by the loader",
                ))?
                .physical;
            tables
                .map(page, physical, flags, 0, true)
                .map_err(|error| match error {
                    MapError::OutOfMemory => EarlyError::OutOfMemory,
                    _ => fail("cannot map the kernel image"),
                })?;
            page = page
                .checked_add(PAGE_SIZE)
                .ok_or(fail("the kernel image wraps around"))?;
        }
    }

    let mut direct_map_bytes = 0u64;
    for &(base, length) in direct_map {
        let virtual_address = layout
            .hhdm_offset
            .checked_add(base)
            .ok_or(fail("the HHDM wraps around"))?;
        tables
            .map_range(virtual_address, base, length, data, true)
            .map_err(|error| match error {
                MapError::OutOfMemory => EarlyError::OutOfMemory,
                MapError::AlreadyMapped => fail("the HHDM overlaps another kernel mapping"),
                _ => fail("the HHDM's addresses are not mappable"),
            })?;
        direct_map_bytes = direct_map_bytes.saturating_add(length);
    }

    for &address in must_match {
        let old = Walker::new(&mut *tables.memory, format, loader_root).lookup(address);
        let new = tables.lookup(address);
        if old.is_none() || old.map(|t| t.physical) != new.map(|t| t.physical) {
            return Err(fail(
                "the running code or boot stack would not be mapped by the kernel's tables",
            ));
        }
    }

    Ok(KernelTablesReport {
        loader_root,
        kernel_root: new_root,
        table_frames: counting.allocated,
        direct_map_bytes,
    })
}

/// A table memory that counts the tables it hands out.
struct Counting<'m, M: TableMemory> {
    memory: &'m mut M,
    allocated: u64,
}

impl<M: TableMemory> TableMemory for Counting<'_, M> {
    fn read(&self, table: u64, index: usize) -> u64 {
        self.memory.read(table, index)
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        self.memory.write(table, index, value);
    }

    fn allocate_table(&mut self) -> Option<u64> {
        let table = self.memory.allocate_table()?;
        self.allocated += 1;
        Some(table)
    }

    fn free_table(&mut self, table: u64) {
        self.memory.free_table(table);
        self.allocated -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagetable::tests::{FakeMemory, Format};
    use crate::{KERNEL_IMAGE_BASE, KERNEL_STACK_REGION};

    const HHDM: u64 = 0xffff_8000_0000_0000;
    const IMAGE_PHYSICAL: u64 = 0x20_0000;
    const STACK_PAGE: u64 = KERNEL_STACK_REGION.start + 0x1000;

    fn kernel(writable: bool, executable: bool) -> PageFlags {
        PageFlags {
            writable,
            executable,
            ..PageFlags::default()
        }
    }

    fn layout() -> KernelLayout {
        KernelLayout {
            text: KERNEL_IMAGE_BASE..KERNEL_IMAGE_BASE + 0x2000,
            rodata: KERNEL_IMAGE_BASE + 0x2000..KERNEL_IMAGE_BASE + 0x3000,
            data: KERNEL_IMAGE_BASE + 0x3000..KERNEL_IMAGE_BASE + 0x4800,
            hhdm_offset: HHDM,
        }
    }

    /// The loader's tables: the image (5 pages, all RWX as a sloppy loader might), one
    /// kernel-stack page, and the first 4 MiB of the HHDM in pages.
    fn loader() -> (FakeMemory, u64) {
        let (mut memory, root) = FakeMemory::new(64);
        let mut walker = Walker::new(&mut memory, &Format, root);
        for page in 0..5 {
            walker
                .map(
                    KERNEL_IMAGE_BASE + page * PAGE_SIZE,
                    IMAGE_PHYSICAL + page * PAGE_SIZE,
                    kernel(true, false),
                    0,
                    true,
                )
                .unwrap();
        }
        walker
            .map(STACK_PAGE, 0x9000, kernel(true, false), 0, true)
            .unwrap();
        walker
            .map_range(HHDM, 0, 4 << 20, kernel(true, false), true)
            .unwrap();
        (memory, root)
    }

    #[test]
    fn builds_the_image_by_section_the_hhdm_and_copies_own_pages() {
        let (mut memory, loader_root) = loader();
        let device_window = 0xffff_fe00_0000_0000..0xffff_fe00_4000_0000;
        let report = build(
            &mut memory,
            &Format,
            loader_root,
            &layout(),
            &[(0, 4 << 20)],
            &[KERNEL_STACK_REGION, device_window.clone()],
            &[KERNEL_IMAGE_BASE + 0x10, STACK_PAGE + 8],
        )
        .unwrap();
        assert_eq!(report.loader_root, loader_root);
        assert_ne!(report.kernel_root, loader_root);
        assert_eq!(report.direct_map_bytes, 4 << 20);
        assert!(report.table_frames >= 4);
        let walker = Walker::new(&mut memory, &Format, report.kernel_root);
        let flags = |address| walker.lookup(address).unwrap().flags;
        assert_eq!(flags(KERNEL_IMAGE_BASE + 0x1000), kernel(false, true));
        assert_eq!(flags(KERNEL_IMAGE_BASE + 0x2000), kernel(false, false));
        assert_eq!(flags(KERNEL_IMAGE_BASE + 0x4000), kernel(true, false));
        assert_eq!(
            walker.lookup(KERNEL_IMAGE_BASE + 0x4123).unwrap().physical,
            IMAGE_PHYSICAL + 0x4123
        );
        assert_eq!(walker.lookup(KERNEL_IMAGE_BASE + 0x5000), None);
        let hhdm = walker.lookup(HHDM + 0x20_0010).unwrap();
        assert_eq!((hhdm.physical, hhdm.level), (0x20_0010, 1));
        assert_eq!(walker.lookup(STACK_PAGE).unwrap().physical, 0x9000);
        // The empty device window got its root entry all the same.
        assert!(walker.root_entry_present(device_window.start));
        assert_eq!(walker.lookup(device_window.start), None);
        assert_eq!(report.table_frames, count_tables(&walker));
    }

    /// Tables of a hierarchy, root included.
    fn count_tables(walker: &Walker<'_, FakeMemory, Format>) -> u64 {
        fn below(memory: &FakeMemory, table: u64, level: u8) -> u64 {
            let mut count = 1;
            if level == 0 {
                return count;
            }
            for slot in 0..pagetable::ENTRIES {
                let entry = memory.read(table, slot);
                if Format.is_present(entry) && Format.is_table(entry, level) {
                    count += below(memory, Format.address(entry), level - 1);
                }
            }
            count
        }
        below(&*walker.memory, walker.root, ROOT_LEVEL)
    }

    #[test]
    fn refuses_an_image_page_the_loader_did_not_map() {
        let (mut memory, loader_root) = loader();
        let mut layout = layout();
        layout.data.end = KERNEL_IMAGE_BASE + 0x6000;
        let result = build(&mut memory, &Format, loader_root, &layout, &[], &[], &[]);
        assert_eq!(
            result,
            Err(EarlyError::Unsupported(
                "a page of the kernel image is not mapped by the loader"
            ))
        );
    }

    #[test]
    fn refuses_when_the_running_code_would_move_or_vanish() {
        let (mut memory, loader_root) = loader();
        // The stack page is not in the copied regions: it would vanish.
        let result = build(
            &mut memory,
            &Format,
            loader_root,
            &layout(),
            &[],
            &[],
            &[STACK_PAGE],
        );
        assert!(
            matches!(result, Err(EarlyError::Unsupported(why)) if why.contains("running code"))
        );
        // An address neither maps is refused too (it cannot be running code).
        let result = build(
            &mut memory,
            &Format,
            loader_root,
            &layout(),
            &[],
            &[],
            &[0xffff_ffff_f000_0000],
        );
        assert!(result.is_err());
    }

    #[test]
    fn refuses_an_hhdm_that_overlaps_the_image_or_wraps() {
        let (mut memory, loader_root) = loader();
        let mut layout = layout();
        layout.hhdm_offset = KERNEL_IMAGE_BASE - 0x20_0000;
        let result = build(
            &mut memory,
            &Format,
            loader_root,
            &layout,
            &[(0, 4 << 20)],
            &[],
            &[],
        );
        assert_eq!(
            result,
            Err(EarlyError::Unsupported(
                "the HHDM overlaps another kernel mapping"
            ))
        );
        layout.hhdm_offset = u64::MAX - 0xfff;
        let result = build(
            &mut memory,
            &Format,
            loader_root,
            &layout,
            &[(0x2000, 0x1000)],
            &[],
            &[],
        );
        assert_eq!(
            result,
            Err(EarlyError::Unsupported("the HHDM wraps around"))
        );
    }

    #[test]
    fn running_out_of_frames_is_out_of_memory() {
        let (memory, loader_root) = loader();
        let mut memory = FakeMemory::with_budget_of(memory, 2);
        let result = build(&mut memory, &Format, loader_root, &layout(), &[], &[], &[]);
        assert_eq!(result, Err(EarlyError::OutOfMemory));
    }
}
