//! After ExitBootServices: the final memory map, the page tables, the jump.
//!
//! Nothing here allocates, frees or prints: every buffer was reserved before the exit
//! (sized from the firmware's map then, with room to spare), and failures go to the arch's
//! `fatal`.

use efi_loader::elf::PageRange;
use efi_loader::memmap::{self, Caching, Region};
#[cfg(target_arch = "aarch64")]
use efi_loader::paging::TableMemory;
use efi_loader::paging::{self, Attributes, Overlap, PageTables, Space};
use efi_loader::protocol::{
    EfiMemoryMapResponse, ListResponse, MemoryMapEntry, MemoryType, revision,
};
use efi_loader::{FOUR_GIB, PAGE_SIZE};
use uefi::mem::memory_map::{MemoryMap, MemoryMapOwned};

use super::arch;
use super::memory::{Arena, Pages, Span, TablePool};

/// Buffers for the memory map conversion, reserved before the exit.
#[derive(Clone, Copy)]
pub struct MemoryMapBuffers {
    /// Room for this many input regions; outputs get `scratch_len(capacity)`.
    pub capacity: usize,
    /// `capacity` regions, then `scratch_len(capacity)` words of scratch.
    pub work: u64,
    /// In the arena: the entries and the pointer array the response lists.
    pub entries: u64,
    pub pointers: u64,
    /// Responses to fill (physical addresses), when requested.
    pub response: Option<u64>,
    pub efi_response: Option<u64>,
}

impl MemoryMapBuffers {
    /// Reserve buffers for a map of about `firmware_entries` entries.
    pub fn reserve(
        firmware_entries: usize,
        arena: &mut Arena,
    ) -> Result<MemoryMapBuffers, alloc::string::String> {
        // The map changes between now and the exit by the allocations still to come; two
        // times the entries plus some is far more than that.
        let capacity = 2 * firmware_entries + 64;
        let outputs = memmap::scratch_len(capacity);
        let work = Pages::allocate(
            (capacity * size_of::<Region>() + outputs * 8) as u64,
            super::memory::Owner::Bootloader,
            "memory map conversion",
        )?;
        Ok(MemoryMapBuffers {
            capacity,
            work: work.physical,
            entries: arena.reserve((outputs * size_of::<MemoryMapEntry>()) as u64, 8),
            pointers: arena.reserve(outputs as u64 * 8, 8),
            response: None,
            efi_response: None,
        })
    }

    /// Arena bytes [`reserve`](Self::reserve) takes for `firmware_entries`.
    pub fn arena_bytes(firmware_entries: usize) -> u64 {
        let outputs = memmap::scratch_len(2 * firmware_entries + 64) as u64;
        outputs * (size_of::<MemoryMapEntry>() as u64 + 8) + 16
    }
}

/// Everything the part after ExitBootServices needs; plain data only.
pub struct Prepared<'a> {
    pub arena: Arena,
    pub pool: TablePool,
    pub base_revision: u64,
    pub memory_map: MemoryMapBuffers,
    /// (base, size) of the framebuffer the kernel was told about.
    pub framebuffer: Option<(u64, u64)>,
    pub image: Span,
    pub image_start: u64,
    pub slide: u64,
    pub ranges: &'a [PageRange],
    pub entry: u64,
    pub stack_top: u64,
    pub hhdm: u64,
    /// Physical (start, length) of the loader's own image.
    pub loader_image: (u64, u64),
    pub extra: arch::Extra,
    /// The secondary CPUs to start, when the kernel asked for MP.
    pub mp: Option<super::mp::Plan>,
}

/// An upper bound on the page-table frames the handoff needs.
pub fn table_estimate(ranges: &[PageRange], map: &MemoryMapOwned, framebuffer: Option<u64>) -> u64 {
    let mut tables = 64; // roots, the trampoline's identity map, slack
    for range in ranges {
        tables += paging::tables_needed(range.end - range.start, false);
    }
    tables += paging::tables_needed(FOUR_GIB, true);
    for descriptor in map.entries() {
        let end = descriptor.phys_start + descriptor.page_count * PAGE_SIZE;
        if end > FOUR_GIB {
            tables += paging::tables_needed(end - descriptor.phys_start.max(FOUR_GIB), true);
        }
    }
    // Entries the map may gain before the exit.
    tables += 16 * paging::tables_needed(PAGE_SIZE, true);
    tables += framebuffer.map_or(0, |size| paging::tables_needed(size, true));
    tables as u64
}

/// Convert the final map into the reserved buffers and fill the memory map responses.
/// Returns the Limine entries.
fn memory_map(prepared: &mut Prepared, final_map: &MemoryMapOwned) -> &'static [MemoryMapEntry] {
    let plan = prepared.memory_map;
    let outputs = memmap::scratch_len(plan.capacity);
    // SAFETY: these buffers were allocated before the exit for exactly these sizes
    // (`work` holds `capacity` regions then `outputs` words; the arena reserved `outputs`
    // entries and pointers, 8-byte aligned), are identity-mapped, owned by the loader,
    // and nothing else refers to them.
    let (regions, scratch, entries, pointers) = unsafe {
        let scratch = plan.work + (plan.capacity * size_of::<Region>()) as u64;
        (
            core::slice::from_raw_parts_mut(plan.work as *mut Region, plan.capacity),
            core::slice::from_raw_parts_mut(scratch as *mut u64, outputs),
            core::slice::from_raw_parts_mut(plan.entries as *mut MemoryMapEntry, outputs),
            core::slice::from_raw_parts_mut(plan.pointers as *mut u64, outputs),
        )
    };
    let framebuffer = prepared.framebuffer.map(|(base, length)| Region {
        base,
        length,
        kind: MemoryType::Framebuffer,
    });
    let loader_image = prepared.loader_image;
    let firmware = final_map.entries().map(|descriptor| {
        let descriptor = memmap::EfiDescriptor {
            efi_type: descriptor.ty.0,
            attribute: descriptor.att.bits(),
            base: descriptor.phys_start,
            pages: descriptor.page_count,
        };
        memmap::region_of(&descriptor, loader_image)
    });
    let mut count = 0;
    for region in firmware.chain(framebuffer) {
        let Some(slot) = regions.get_mut(count) else {
            arch::fatal("the final memory map has more entries than reserved for")
        };
        *slot = region;
        count += 1;
    }
    let Ok(entry_count) = memmap::convert(&regions[..count], scratch, entries) else {
        arch::fatal("the memory map conversion ran out of room")
    };
    let entries = &entries[..entry_count];
    for (pointer, entry) in pointers.iter_mut().zip(entries) {
        *pointer = entry as *const MemoryMapEntry as u64 + prepared.hhdm;
    }
    if let Some(response) = plan.response {
        let list = plan.pointers + prepared.hhdm;
        let response_value = ListResponse {
            revision: revision::DEFAULT,
            count: entry_count as u64,
            list,
        };
        prepared.arena.write(response, response_value);
    }
    if let Some(response) = plan.efi_response {
        let meta = final_map.meta();
        let value = EfiMemoryMapResponse {
            revision: revision::DEFAULT,
            memmap: final_map.buffer().as_ptr() as u64 + prepared.hhdm,
            memmap_size: meta.map_size as u64,
            desc_size: meta.desc_size as u64,
            desc_version: u64::from(meta.desc_version),
        };
        prepared.arena.write(response, value);
    }
    entries
}

/// After ExitBootServices: memory map, page tables, handoff.
pub fn after_exit(mut prepared: Prepared, final_map: &MemoryMapOwned) -> ! {
    let entries = memory_map(&mut prepared, final_map);
    let hhdm = prepared.hhdm;
    let pool = &mut prepared.pool;
    #[cfg(target_arch = "x86_64")]
    let format = arch::page_format(arch::features());
    #[cfg(target_arch = "aarch64")]
    let format = arch::page_format();

    // The kernel, segment by segment with its permissions.
    let Ok(mut tables) = PageTables::new(pool, format, arch::SPACE) else {
        arch::fatal("no page-table frames")
    };
    for range in prepared.ranges {
        let attributes = Attributes {
            writable: range.writable,
            executable: range.executable,
            caching: Caching::WriteBack,
        };
        let physical = prepared.image.physical + (range.start - prepared.image_start);
        if physical + (range.end - range.start) > prepared.image.physical + prepared.image.length {
            arch::fatal("a kernel segment lies outside its image block");
        }
        let virtual_address = range.start.wrapping_add(prepared.slide);
        if tables
            .map(
                pool,
                virtual_address,
                physical,
                range.end - range.start,
                attributes,
                Overlap::Refuse,
            )
            .is_err()
        {
            arch::fatal("cannot map the kernel");
        }
    }
    // The HHDM: framebuffers first, so the rest fills around them.
    for range in memmap::hhdm_plan(entries, prepared.base_revision) {
        let attributes = Attributes {
            caching: range.caching,
            ..Attributes::RWX
        };
        let length = range.end - range.start;
        if tables
            .map(
                pool,
                range.start + hhdm,
                range.start,
                length,
                attributes,
                Overlap::KeepExisting,
            )
            .is_err()
        {
            arch::fatal("cannot build the HHDM");
        }
    }
    // The trampoline's pages at their own address, for the switch.
    let (code, code_length) = arch::trampoline_code();
    let mut identity = if arch::SPACE == Space::Canonical {
        tables
    } else {
        let Ok(root) = PageTables::new(pool, format, Space::Lower) else {
            arch::fatal("no page-table frames")
        };
        root
    };
    if identity
        .map(
            pool,
            code,
            code,
            code_length,
            Attributes::RWX,
            Overlap::Refuse,
        )
        .is_err()
    {
        arch::fatal("cannot identity-map the trampoline");
    }
    if prepared.mp.is_some() {
        let (ap_code, ap_length) = arch::ap_code();
        if identity
            .map(
                pool,
                ap_code,
                ap_code,
                ap_length,
                Attributes::RWX,
                Overlap::KeepExisting,
            )
            .is_err()
        {
            arch::fatal("cannot identity-map the secondary CPUs' start code");
        }
    }

    #[cfg(target_arch = "x86_64")]
    {
        let roots = arch::Roots { root: tables.root };
        if let Some(plan) = &prepared.mp {
            super::mp::start_all(plan, &mut prepared.arena, |index| {
                arch::start_cpu(plan, index, &prepared.extra, &roots, hhdm)
            });
        }
        arch::enter(
            &prepared.extra,
            &roots,
            hhdm,
            prepared.stack_top,
            prepared.entry,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        let Some(empty) = pool.allocate() else {
            arch::fatal("no page-table frames")
        };
        let roots = arch::Roots {
            higher: tables.root,
            identity: identity.root,
            empty,
        };
        let tables_pages = pool.span();
        if let Some(plan) = &prepared.mp {
            // The tables are complete: the secondary CPUs walk them from their first
            // translated fetch, with their caches off until then.
            arch::clean_to_coherency(tables_pages.physical, tables_pages.length);
            let level = prepared.extra.exception_level;
            super::mp::start_all(plan, &mut prepared.arena, |index| {
                arch::start_cpu(plan, index, level, &roots, hhdm)
            });
        }
        let coherent = [
            (prepared.image.physical, prepared.image.length),
            (tables_pages.physical, tables_pages.length),
        ];
        arch::enter(
            &prepared.extra,
            &roots,
            hhdm,
            prepared.stack_top,
            prepared.entry,
            &coherent,
        )
    }
}
