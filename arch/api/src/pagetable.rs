//! The portable page-table walker both architectures use: 4 levels, 4 KiB
//! pages, 512 eight-byte entries per table, 48-bit virtual addresses. The architecture
//! supplies two things: how to reach a table's entries in physical memory
//! ([`TableMemory`]: the HHDM in the kernel, a fake memory in the host tests) and how an
//! entry is encoded ([`EntryFormat`]). TLB maintenance stays with the architecture: the
//! walker only reads and writes entries.
//!
//! Levels are numbered from the leaves: level 0 holds 4 KiB pages (x86_64 PT, AArch64 L3),
//! level 1 may hold 2 MiB blocks (PD / L2), level 2 may hold 1 GiB blocks (PDPT / L1), and
//! level 3 is the root (PML4 / L0).
//!
//! Guarantees: every refusal ([`MapError`]) leaves the mapped pages as they were (a refused
//! kernel map may leave a new, empty intermediate table behind, freed with the hierarchy;
//! a refused user map leaves the tables as they were); W+X is refused for every mapping,
//! kernel or user; nothing here panics on any argument.
//!
//! # User hierarchies count their entries
//! Every table descriptor of a user hierarchy (one whose leaves are all user pages, mapped
//! with [`Walker::map`] and removed with [`Walker::unmap_counted`]) records in ten bits the
//! table ignores ([`EntryFormat::count_shift`]) how many entries of the table it points to
//! are present. An unmap that empties a last-level table keeps it linked
//! ([`KeptTable`]: mapping and unmapping one page again and again costs no table) and
//! prunes the one kept before, with every table above it that thereby empties; the pruned
//! tables are handed back ([`Pruned`]) for the caller to free once no translation through
//! them can be cached. So a user hierarchy holds at most one empty table chain, and no
//! unmap scans a table. Kernel hierarchies are not counted.

use core::ops::Range;

use crate::{FrameSource, MapError, PAGE_SIZE, PageFlags};

/// Entries per table.
pub const ENTRIES: usize = 512;
/// The root's level.
pub const ROOT_LEVEL: u8 = 3;
/// Bytes a 2 MiB block maps.
pub const BLOCK_2M: u64 = 1 << 21;

/// Bytes one entry at `level` maps.
pub const fn entry_span(level: u8) -> u64 {
    PAGE_SIZE << (9 * level as u32)
}

/// The index of `virtual_address` in a table at `level`.
pub const fn index(virtual_address: u64, level: u8) -> usize {
    ((virtual_address >> (12 + 9 * level as u32)) & 0x1ff) as usize
}

/// Physical memory holding page tables.
pub trait TableMemory {
    /// Entry `index` of the table at physical address `table`.
    fn read(&self, table: u64, index: usize) -> u64;
    /// Write entry `index` of the table at physical address `table` (the architecture
    /// orders it for the table walker, e.g. cleans it to the point of coherency).
    fn write(&mut self, table: u64, index: usize, value: u64);
    /// A new, zeroed table whose zeroes the walker will see before it is linked, by
    /// physical address; `None` when memory ran out.
    fn allocate_table(&mut self) -> Option<u64>;
    /// Give back a table [`TableMemory::allocate_table`] returned that was never linked.
    fn free_table(&mut self, table: u64);
}

/// How one architecture encodes entries.
pub trait EntryFormat {
    /// Whether `entry` is valid (present).
    fn is_present(&self, entry: u64) -> bool;
    /// Whether the present `entry` at `level` (1..=3) points to a next-level table rather
    /// than mapping a block.
    fn is_table(&self, entry: u64, level: u8) -> bool;
    /// The physical address an entry holds (table or page / block base).
    fn address(&self, entry: u64) -> u64;
    /// A descriptor for the table at `table`, leading to user pages when `user`.
    fn table_entry(&self, table: u64, user: bool) -> u64;
    /// `entry` (an existing table descriptor) changed so user pages below it are reachable
    /// when `user`; unchanged otherwise.
    fn table_entry_for_user(&self, entry: u64, user: bool) -> u64;
    /// A leaf mapping `physical` at `level` (0: a page, 1 or 2: a block) with `flags`.
    /// Called only with `flags` that passed the W^X check.
    fn leaf_entry(&self, physical: u64, flags: PageFlags, level: u8) -> u64;
    /// The permissions a present leaf at `level` grants.
    fn leaf_flags(&self, entry: u64, level: u8) -> PageFlags;
    /// Whether `physical` fits an entry's address field.
    fn address_fits(&self, physical: u64) -> bool;
    /// The lowest of ten bits every table descriptor (levels 1..=3) ignores: a user
    /// hierarchy keeps there the count of present entries of the table the descriptor
    /// points to. [`EntryFormat::table_entry`] leaves them 0,
    /// [`EntryFormat::table_entry_for_user`] and [`EntryFormat::address`] ignore them.
    fn count_shift(&self) -> u32;
}

/// The bits of a table descriptor holding its table's count of present entries.
const COUNT_BITS: u64 = 0x3ff;

/// The last-level table of a user hierarchy that emptied most recently and stays linked
/// (by the 2 MiB-aligned address it covers): kept with the hierarchy, passed to every
/// [`Walker::unmap_counted`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeptTable(Option<u64>);

impl KeptTable {
    /// The 2 MiB region whose table is kept, if one is.
    pub fn region(&self) -> Option<u64> {
        self.0
    }
}

/// Tables [`Walker::unmap_counted`] took out of a hierarchy, deepest first. The caller
/// invalidates the cached translations of [`Pruned::address`] (which drops every cached
/// walk through them) before it frees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// An address the pruned tables covered.
    pub address: u64,
    tables: [u64; ROOT_LEVEL as usize],
    count: usize,
}

impl Pruned {
    /// The tables taken out (none, or a last-level table and the tables above it that
    /// emptied with it).
    pub fn tables(&self) -> &[u64] {
        &self.tables[..self.count]
    }

    fn push(&mut self, table: u64) {
        if let Some(slot) = self.tables.get_mut(self.count) {
            *slot = table;
            self.count += 1;
        }
    }
}

/// What a lookup found for one virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the virtual address translates to (offset included).
    pub physical: u64,
    /// The leaf's permissions.
    pub flags: PageFlags,
    /// The level of the leaf (0: a 4 KiB page, 1: a 2 MiB block, 2: a 1 GiB block).
    pub level: u8,
    /// The raw leaf entry.
    pub entry: u64,
}

/// Whether `address` lies in one of the two 48-bit halves a 4-level walk translates (its
/// top 16 bits all clear or all set): the lower half (TTBR0 / user) or the upper (TTBR1 /
/// kernel). x86_64 is stricter (bit 47 must match too); its callers check their half.
pub const fn is_canonical(address: u64) -> bool {
    let top = address >> 48;
    top == 0 || top == 0xffff
}

/// The architecture's half of [`HhdmTables`]: where the HHDM lies, and how one entry is
/// read and written through it (volatile accesses, plus whatever the table walker needs to
/// see a write: cache cleaning, barriers).
pub trait HhdmAccess {
    /// The virtual address at which physical address 0 is mapped.
    fn offset(&self) -> u64;
    /// The entry at the virtual address `address`. [`HhdmTables`] passes only
    /// `offset() + table + 8 * index` with `index < ENTRIES`, for tables its callers own.
    fn read(&self, address: u64) -> u64;
    /// Write the entry at `address` (as for [`HhdmAccess::read`]), ordered for the walker.
    fn write(&self, address: u64, value: u64);
    /// A new table, zeroed by the frame source, lies at the virtual address `address`: make
    /// its zeroes visible to the walker before it is linked. Default: nothing (a walker
    /// that snoops the data cache sees them already).
    fn publish_table(&self, address: u64) {
        let _ = address;
    }
}

/// Page tables in RAM, reached through the HHDM; new tables come from a [`FrameSource`].
/// The one [`TableMemory`] of both architectures in the kernel, over their [`HhdmAccess`].
pub struct HhdmTables<'a, A: HhdmAccess> {
    access: A,
    /// `access.offset()`, read once: every entry access adds it.
    offset: u64,
    frames: Option<&'a mut dyn FrameSource>,
    allocated: u64,
}

impl<'a, A: HhdmAccess> HhdmTables<'a, A> {
    /// Tables reached through `access`, growing from `frames` when given.
    pub fn new(access: A, frames: Option<&'a mut dyn FrameSource>) -> Self {
        Self {
            offset: access.offset(),
            access,
            frames,
            allocated: 0,
        }
    }

    /// Tables that may grow from `frames`.
    pub fn growing(frames: &'a mut dyn FrameSource) -> Self
    where
        A: Default,
    {
        Self::new(A::default(), Some(frames))
    }

    /// Tables that are only read, changed or shrunk.
    pub fn fixed() -> Self
    where
        A: Default,
    {
        Self::new(A::default(), None)
    }

    /// Tables handed out so far.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    #[inline]
    fn entry_address(&self, table: u64, index: usize) -> u64 {
        let index = (index % ENTRIES) as u64;
        self.offset.wrapping_add(table).wrapping_add(index * 8)
    }
}

impl<A: HhdmAccess> TableMemory for HhdmTables<'_, A> {
    #[inline(always)]
    fn read(&self, table: u64, index: usize) -> u64 {
        self.access.read(self.entry_address(table, index))
    }

    #[inline(always)]
    fn write(&mut self, table: u64, index: usize, value: u64) {
        self.access.write(self.entry_address(table, index), value);
    }

    fn allocate_table(&mut self) -> Option<u64> {
        let frame = self.frames.as_mut()?.alloc_zeroed_frame()?;
        self.access.publish_table(self.offset.wrapping_add(frame));
        self.allocated += 1;
        Some(frame)
    }

    fn free_table(&mut self, table: u64) {
        if let Some(frames) = self.frames.as_mut() {
            frames.free_frame(table);
            self.allocated -= 1;
        }
    }
}

/// One hierarchy: its root, the memory its tables live in and the entry format.
pub struct Walker<'a, M: TableMemory, F: EntryFormat> {
    pub memory: &'a mut M,
    pub format: &'a F,
    pub root: u64,
}

impl<'a, M: TableMemory, F: EntryFormat> Walker<'a, M, F> {
    pub fn new(memory: &'a mut M, format: &'a F, root: u64) -> Self {
        Self {
            memory,
            format,
            root,
        }
    }

    /// Whether the root entry covering `virtual_address` is present.
    pub fn root_entry_present(&self, virtual_address: u64) -> bool {
        let entry = self
            .memory
            .read(self.root, index(virtual_address, ROOT_LEVEL));
        self.format.is_present(entry)
    }

    /// Walk to the table at `level` that covers `virtual_address`, creating missing tables
    /// when `create` (a table created under a root entry is refused unless
    /// `create_root_entries`). `user` marks the path as leading to user pages.
    fn table_at(
        &mut self,
        virtual_address: u64,
        level: u8,
        create: bool,
        create_root_entries: bool,
        user: bool,
    ) -> Result<u64, MapError> {
        let mut table = self.root;
        let mut current = ROOT_LEVEL;
        while current > level {
            let slot = index(virtual_address, current);
            let entry = self.memory.read(table, slot);
            if !self.format.is_present(entry) {
                if !create || (current == ROOT_LEVEL && !create_root_entries) {
                    return Err(if create {
                        MapError::BadAddress
                    } else {
                        MapError::NotMapped
                    });
                }
                let new = self.memory.allocate_table().ok_or(MapError::OutOfMemory)?;
                self.memory
                    .write(table, slot, self.format.table_entry(new, user));
                table = new;
            } else if !self.format.is_table(entry, current) {
                // A block covers the address: it is mapped, but not as pages.
                return Err(MapError::AlreadyMapped);
            } else {
                if create {
                    let widened = self.format.table_entry_for_user(entry, user);
                    if widened != entry {
                        self.memory.write(table, slot, widened);
                    }
                }
                table = self.format.address(entry);
            }
            current -= 1;
        }
        Ok(table)
    }

    /// Map one leaf of `level` (0: 4 KiB page, 1: 2 MiB block) at `virtual_address`.
    /// `create_root_entries`: whether a missing root entry may be created (the kernel half
    /// of x86_64 is shared by copying root entries, so it must not grow later).
    #[inline]
    pub fn map(
        &mut self,
        virtual_address: u64,
        physical: u64,
        flags: PageFlags,
        level: u8,
        create_root_entries: bool,
    ) -> Result<(), MapError> {
        let span = entry_span(level);
        if level > 1
            || !is_canonical(virtual_address)
            || !virtual_address.is_multiple_of(span)
            || !physical.is_multiple_of(span)
            || !self.format.address_fits(physical)
        {
            return Err(MapError::BadAddress);
        }
        if flags.writable && flags.executable {
            return Err(MapError::WriteAndExecute);
        }
        if flags.user {
            if level != 0 {
                return Err(MapError::BadAddress);
            }
            return self.map_counted(virtual_address, physical, flags, create_root_entries);
        }
        let table = self.table_at(
            virtual_address,
            level,
            true,
            create_root_entries,
            flags.user,
        )?;
        let slot = index(virtual_address, level);
        if self.format.is_present(self.memory.read(table, slot)) {
            return Err(MapError::AlreadyMapped);
        }
        let entry = self.format.leaf_entry(physical, flags, level);
        self.memory.write(table, slot, entry);
        Ok(())
    }

    /// Map the user page `virtual_address` (checked by [`Walker::map`]), keeping the counts
    /// of a user hierarchy. The common case (every table there) walks down and writes the
    /// leaf and its table's count; missing tables are [`Walker::map_new_tables`]'s.
    #[inline]
    fn map_counted(
        &mut self,
        virtual_address: u64,
        physical: u64,
        flags: PageFlags,
        create_root_entries: bool,
    ) -> Result<(), MapError> {
        // Where the descriptor of `table` is (unused while `table` is the root).
        let (mut parent, mut parent_slot) = (0, 0);
        let mut table = self.root;
        let mut level = ROOT_LEVEL;
        while level > 0 {
            let slot = index(virtual_address, level);
            let entry = self.memory.read(table, slot);
            if !self.format.is_present(entry) {
                return self.map_new_tables(
                    virtual_address,
                    physical,
                    flags,
                    (table, level),
                    (parent, parent_slot),
                    create_root_entries,
                );
            }
            if !self.format.is_table(entry, level) {
                return Err(MapError::AlreadyMapped);
            }
            let widened = self.format.table_entry_for_user(entry, true);
            if widened != entry {
                self.memory.write(table, slot, widened);
            }
            (parent, parent_slot) = (table, slot);
            table = self.format.address(entry);
            level -= 1;
        }
        let slot = index(virtual_address, 0);
        if self.format.is_present(self.memory.read(table, slot)) {
            return Err(MapError::AlreadyMapped);
        }
        self.memory
            .write(table, slot, self.format.leaf_entry(physical, flags, 0));
        let descriptor = self.memory.read(parent, parent_slot);
        self.memory.write(
            parent,
            parent_slot,
            descriptor + (1 << self.format.count_shift()),
        );
        Ok(())
    }

    /// The rest of [`Walker::map_counted`] when the table of `level - 1` under `table`
    /// (whose descriptor is at `parent`) is missing: every missing table is allocated
    /// before the first is linked, so a refusal changes nothing.
    #[cold]
    #[inline(never)]
    fn map_new_tables(
        &mut self,
        virtual_address: u64,
        physical: u64,
        flags: PageFlags,
        (table, level): (u64, u8),
        (parent, parent_slot): (u64, usize),
        create_root_entries: bool,
    ) -> Result<(), MapError> {
        let one = 1u64 << self.format.count_shift();
        if level == ROOT_LEVEL && !create_root_entries {
            return Err(MapError::BadAddress);
        }
        // The tables of levels `level - 1` down to 0.
        let missing = usize::from(level);
        let mut fresh = [0u64; ROOT_LEVEL as usize];
        for index in 0..missing {
            let Some(new) = self.memory.allocate_table() else {
                for &table in &fresh[..index] {
                    self.memory.free_table(table);
                }
                return Err(MapError::OutOfMemory);
            };
            fresh[index] = new;
        }
        // `table` gains an entry; its count is in its parent's descriptor (the root's is
        // not kept).
        if level < ROOT_LEVEL {
            let descriptor = self.memory.read(parent, parent_slot);
            self.memory.write(parent, parent_slot, descriptor + one);
        }
        // Each new table holds exactly one entry: the next new table, or the leaf.
        let mut current = table;
        for (depth, &new) in fresh[..missing].iter().enumerate() {
            let at = level - depth as u8;
            self.memory.write(
                current,
                index(virtual_address, at),
                self.format.table_entry(new, true) + one,
            );
            current = new;
        }
        self.memory.write(
            current,
            index(virtual_address, 0),
            self.format.leaf_entry(physical, flags, 0),
        );
        Ok(())
    }

    /// Remove the user page at `virtual_address` from a user hierarchy (one mapped through
    /// [`Walker::map`] with user flags); returns the frame it mapped. When its last-level
    /// table empties, that table is kept (`kept`) and the one kept before is pruned if it
    /// is still empty, with every table above it that empties in turn (not the root):
    /// they are unlinked and listed in `pruned`, for the caller to free after invalidating
    /// the translations of `pruned.address`.
    #[inline]
    pub fn unmap_counted(
        &mut self,
        virtual_address: u64,
        kept: &mut KeptTable,
        pruned: &mut Pruned,
    ) -> Result<u64, MapError> {
        if !virtual_address.is_multiple_of(PAGE_SIZE) || !is_canonical(virtual_address) {
            return Err(MapError::BadAddress);
        }
        let one = 1u64 << self.format.count_shift();
        let mut table = self.root;
        let mut level = ROOT_LEVEL;
        // The descriptor of the last-level table: where it is and its value.
        let mut parent = (0u64, 0usize, 0u64);
        while level > 0 {
            let slot = index(virtual_address, level);
            let entry = self.memory.read(table, slot);
            if !self.format.is_present(entry) {
                return Err(MapError::NotMapped);
            }
            if !self.format.is_table(entry, level) {
                return Err(MapError::AlreadyMapped);
            }
            parent = (table, slot, entry);
            table = self.format.address(entry);
            level -= 1;
        }
        let slot = index(virtual_address, 0);
        let entry = self.memory.read(table, slot);
        if !self.format.is_present(entry) {
            return Err(MapError::NotMapped);
        }
        self.memory.write(table, slot, 0);
        let (parent_table, parent_slot, descriptor) = parent;
        let count_mask = COUNT_BITS << self.format.count_shift();
        // A table without a count (never counted) is never pruned.
        if descriptor & count_mask != 0 {
            let descriptor = descriptor - one;
            self.memory.write(parent_table, parent_slot, descriptor);
            if descriptor & count_mask == 0 {
                let region = virtual_address & !(BLOCK_2M - 1);
                if kept.0 != Some(region)
                    && let Some(previous) = kept.0.replace(region)
                {
                    self.prune(previous, pruned);
                }
            }
        }
        Ok(self.format.address(entry))
    }

    /// Unlink the last-level table covering `address` if its count says it is empty, then
    /// each table above it (below the root) that this empties; list them in `pruned`.
    #[cold]
    fn prune(&mut self, address: u64, pruned: &mut Pruned) {
        let one = 1u64 << self.format.count_shift();
        let count_mask = COUNT_BITS << self.format.count_shift();
        // path[level]: the table at `level`, the slot of `address` in it, that entry.
        let mut path = [(0u64, 0usize, 0u64); ROOT_LEVEL as usize + 1];
        let mut table = self.root;
        let mut level = ROOT_LEVEL;
        while level > 0 {
            let slot = index(address, level);
            let entry = self.memory.read(table, slot);
            if !self.format.is_present(entry) || !self.format.is_table(entry, level) {
                return;
            }
            path[usize::from(level)] = (table, slot, entry);
            table = self.format.address(entry);
            level -= 1;
        }
        pruned.address = address;
        for level in 1..=usize::from(ROOT_LEVEL) {
            let (table, slot, descriptor) = path[level];
            if descriptor & count_mask != 0 {
                break;
            }
            self.memory.write(table, slot, 0);
            pruned.push(self.format.address(descriptor));
            if level == usize::from(ROOT_LEVEL) {
                break;
            }
            // `table` lost an entry; its count is in the descriptor one level up.
            let (above, above_slot, above_descriptor) = path[level + 1];
            if above_descriptor & count_mask == 0 {
                break;
            }
            let lowered = above_descriptor - one;
            self.memory.write(above, above_slot, lowered);
            path[level + 1].2 = lowered;
        }
    }

    /// Map `[physical, physical + length)` at `virtual_address` (both page-aligned), with
    /// 2 MiB blocks wherever both addresses are 2 MiB-aligned and `blocks` allows it.
    /// Stops at the first refusal (pages mapped before it stay mapped).
    pub fn map_range(
        &mut self,
        virtual_address: u64,
        physical: u64,
        length: u64,
        flags: PageFlags,
        blocks: bool,
    ) -> Result<(), MapError> {
        let mut offset = 0;
        while offset < length {
            let (virt, phys) = (virtual_address + offset, physical + offset);
            let level = if blocks
                && virt.is_multiple_of(BLOCK_2M)
                && phys.is_multiple_of(BLOCK_2M)
                && length - offset >= BLOCK_2M
            {
                1
            } else {
                0
            };
            self.map(virt, phys, flags, level, true)?;
            if level == 1 || flags.user {
                offset += entry_span(level);
                continue;
            }
            // The pages up to the next 2 MiB boundary share the leaf table the first one
            // went into (`map` checked the arguments and made the tables): fill it directly.
            let table = self.table_at(virt, 0, false, false, false)?;
            let chunk = (BLOCK_2M - (virt & (BLOCK_2M - 1))).min(length - offset);
            let mut done = PAGE_SIZE;
            while done < chunk {
                let (virt, phys) = (virt + done, phys + done);
                if !self.format.address_fits(phys) {
                    return Err(MapError::BadAddress);
                }
                let slot = index(virt, 0);
                if self.format.is_present(self.memory.read(table, slot)) {
                    return Err(MapError::AlreadyMapped);
                }
                let entry = self.format.leaf_entry(phys, flags, 0);
                self.memory.write(table, slot, entry);
                done += PAGE_SIZE;
            }
            offset += done;
        }
        Ok(())
    }

    /// Remove the 4 KiB page at `virtual_address`; returns the frame it mapped.
    #[inline]
    pub fn unmap(&mut self, virtual_address: u64) -> Result<u64, MapError> {
        if !virtual_address.is_multiple_of(PAGE_SIZE) || !is_canonical(virtual_address) {
            return Err(MapError::BadAddress);
        }
        let table = self.table_at(virtual_address, 0, false, false, false)?;
        let slot = index(virtual_address, 0);
        let entry = self.memory.read(table, slot);
        if !self.format.is_present(entry) {
            return Err(MapError::NotMapped);
        }
        self.memory.write(table, slot, 0);
        Ok(self.format.address(entry))
    }

    /// Change the permissions of the mapped 4 KiB page at `virtual_address` (its frame
    /// stays). W+X is refused.
    pub fn protect(&mut self, virtual_address: u64, flags: PageFlags) -> Result<(), MapError> {
        if !virtual_address.is_multiple_of(PAGE_SIZE) || !is_canonical(virtual_address) {
            return Err(MapError::BadAddress);
        }
        if flags.writable && flags.executable {
            return Err(MapError::WriteAndExecute);
        }
        let table = self.table_at(virtual_address, 0, false, false, false)?;
        let slot = index(virtual_address, 0);
        let entry = self.memory.read(table, slot);
        if !self.format.is_present(entry) {
            return Err(MapError::NotMapped);
        }
        let value = self.format.leaf_entry(self.format.address(entry), flags, 0);
        self.memory.write(table, slot, value);
        Ok(())
    }

    /// What `virtual_address` translates to, blocks included.
    pub fn lookup(&self, virtual_address: u64) -> Option<Translation> {
        if !is_canonical(virtual_address) {
            return None;
        }
        let mut table = self.root;
        let mut level = ROOT_LEVEL;
        loop {
            let entry = self.memory.read(table, index(virtual_address, level));
            if !self.format.is_present(entry) {
                return None;
            }
            if level == 0 || !self.format.is_table(entry, level) {
                if level == ROOT_LEVEL {
                    return None;
                }
                let span = entry_span(level);
                let base = self.format.address(entry) & !(span - 1);
                return Some(Translation {
                    physical: base + (virtual_address & (span - 1)),
                    flags: self.format.leaf_flags(entry, level),
                    level,
                    entry,
                });
            }
            table = self.format.address(entry);
            level -= 1;
        }
    }

    /// Copy every present 4 KiB leaf of `source` (another hierarchy in the same memory)
    /// within `range` into this hierarchy, entry values unchanged; creates the tables it
    /// needs. Refuses a block in `source` (only page-mapped regions are copied) and a page
    /// already present here. Returns the number of pages copied.
    pub fn copy_pages_from(&mut self, source: u64, range: Range<u64>) -> Result<u64, MapError> {
        let mut copied = 0;
        let mut address = range.start & !(PAGE_SIZE - 1);
        while address < range.end {
            let leaves = match self.leaf_table(source, address) {
                Ok(table) => table,
                // A whole absent subtree: skip it.
                Err(Some(span)) => {
                    address = match (address & !(span - 1)).checked_add(span) {
                        Some(next) => next,
                        None => break,
                    };
                    continue;
                }
                Err(None) => return Err(MapError::AlreadyMapped),
            };
            // Every slot of this leaf table inside the range, read directly; the
            // destination table is found (or made) once, at the first present entry.
            let chunk_end = (address & !(BLOCK_2M - 1))
                .checked_add(BLOCK_2M)
                .map_or(range.end, |end| end.min(range.end));
            let mut destination = None;
            while address < chunk_end {
                let entry = self.memory.read(leaves, index(address, 0));
                if self.format.is_present(entry) {
                    let table = match destination {
                        Some(table) => table,
                        None => *destination.insert(self.table_at(address, 0, true, true, false)?),
                    };
                    let slot = index(address, 0);
                    if self.format.is_present(self.memory.read(table, slot)) {
                        return Err(MapError::AlreadyMapped);
                    }
                    self.memory.write(table, slot, entry);
                    copied += 1;
                }
                address = match address.checked_add(PAGE_SIZE) {
                    Some(next) => next,
                    None => return Ok(copied),
                };
            }
        }
        Ok(copied)
    }

    /// The leaf (4 KiB page) table covering `address` in hierarchy `root`; or the span of
    /// the largest absent entry on the way down (`Err(Some(span))`), or `Err(None)` when a
    /// block maps it.
    fn leaf_table(&self, root: u64, address: u64) -> Result<u64, Option<u64>> {
        let mut table = root;
        let mut level = ROOT_LEVEL;
        while level > 0 {
            let entry = self.memory.read(table, index(address, level));
            if !self.format.is_present(entry) {
                return Err(Some(entry_span(level)));
            }
            if !self.format.is_table(entry, level) {
                return Err(None);
            }
            table = self.format.address(entry);
            level -= 1;
        }
        Ok(table)
    }

    /// Hand every table below the root entries `slots` to `free`, deepest first; the
    /// root itself too when `and_root`. Leaves (pages, blocks) are not touched.
    pub fn free_tables(&mut self, slots: Range<usize>, and_root: bool, free: &mut dyn FnMut(u64)) {
        for slot in slots {
            let entry = self.memory.read(self.root, slot);
            if self.format.is_present(entry) && self.format.is_table(entry, ROOT_LEVEL) {
                self.free_below(self.format.address(entry), ROOT_LEVEL - 1, free);
            }
        }
        if and_root {
            free(self.root);
        }
    }

    fn free_below(&mut self, table: u64, level: u8, free: &mut dyn FnMut(u64)) {
        if level > 0 {
            for slot in 0..ENTRIES {
                let entry = self.memory.read(table, slot);
                if self.format.is_present(entry) && self.format.is_table(entry, level) {
                    self.free_below(self.format.address(entry), level - 1, free);
                }
            }
        }
        free(table);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;

    /// Physical memory made of tables only, with a frame budget.
    pub(crate) struct FakeMemory {
        tables: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
        budget: usize,
    }

    impl FakeMemory {
        pub(crate) fn new(budget: usize) -> (Self, u64) {
            let mut memory = Self {
                tables: BTreeMap::new(),
                next: 0x10_0000,
                budget: budget + 1,
            };
            let root = memory.allocate_table().unwrap();
            (memory, root)
        }

        /// The same memory with only `budget` more frames.
        pub(crate) fn with_budget_of(mut self, budget: usize) -> Self {
            self.budget = budget;
            self
        }
    }

    impl TableMemory for FakeMemory {
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[index] = value;
        }
        fn allocate_table(&mut self) -> Option<u64> {
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            let frame = self.next;
            self.next += PAGE_SIZE;
            self.tables.insert(frame, [0; ENTRIES]);
            Some(frame)
        }
        fn free_table(&mut self, table: u64) {
            assert!(self.tables.remove(&table).is_some(), "freed twice");
            self.budget += 1;
        }
    }

    /// An x86_64-like encoding: P, W, U, PS, NX; tables get U when user.
    pub(crate) struct Format;

    const P: u64 = 1;
    const W: u64 = 2;
    const U: u64 = 4;
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;
    const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

    impl EntryFormat for Format {
        fn is_present(&self, entry: u64) -> bool {
            entry & P != 0
        }
        fn is_table(&self, entry: u64, level: u8) -> bool {
            level == ROOT_LEVEL || entry & PS == 0
        }
        fn address(&self, entry: u64) -> u64 {
            entry & ADDRESS
        }
        fn table_entry(&self, table: u64, user: bool) -> u64 {
            table | P | W | if user { U } else { 0 }
        }
        fn table_entry_for_user(&self, entry: u64, user: bool) -> u64 {
            if user { entry | U } else { entry }
        }
        fn leaf_entry(&self, physical: u64, flags: PageFlags, level: u8) -> u64 {
            let mut entry = physical | P;
            if flags.writable {
                entry |= W;
            }
            if flags.user {
                entry |= U;
            }
            if !flags.executable {
                entry |= NX;
            }
            if level > 0 {
                entry |= PS;
            }
            entry
        }
        fn leaf_flags(&self, entry: u64, _: u8) -> PageFlags {
            PageFlags {
                writable: entry & W != 0,
                executable: entry & NX == 0,
                user: entry & U != 0,
                device: false,
            }
        }
        fn address_fits(&self, physical: u64) -> bool {
            physical & !ADDRESS == 0
        }
        fn count_shift(&self) -> u32 {
            52
        }
    }

    const DATA: PageFlags = PageFlags {
        writable: true,
        executable: false,
        user: true,
        device: false,
    };
    const CODE: PageFlags = PageFlags {
        writable: false,
        executable: true,
        user: true,
        device: false,
    };

    #[test]
    fn map_lookup_unmap() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        walker.map(0x40_0000, 0x7000, DATA, 0, true).unwrap();
        walker.map(0x40_1000, 0x9000, CODE, 0, true).unwrap();
        let found = walker.lookup(0x40_0123).unwrap();
        assert_eq!(found.physical, 0x7123);
        assert_eq!(found.flags, DATA);
        assert_eq!(found.level, 0);
        assert_eq!(walker.lookup(0x40_1fff).unwrap().physical, 0x9fff);
        assert_eq!(walker.lookup(0x40_1000).unwrap().flags, CODE);
        assert_eq!(walker.lookup(0x40_2000), None);
        assert_eq!(walker.unmap(0x40_0000), Ok(0x7000));
        assert_eq!(walker.lookup(0x40_0000), None);
        assert_eq!(walker.unmap(0x40_0000), Err(MapError::NotMapped));
        assert_eq!(walker.unmap(0x7f00_0000_0000), Err(MapError::NotMapped));
        // Intermediate tables lead to user pages.
        let pml4 = walker.memory.read(root, index(0x40_0000, 3));
        assert_ne!(pml4 & U, 0);
    }

    #[test]
    fn refusals_change_nothing() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        let write_execute = PageFlags {
            executable: true,
            ..DATA
        };
        assert_eq!(
            walker.map(0x40_0000, 0x7000, write_execute, 0, true),
            Err(MapError::WriteAndExecute)
        );
        assert_eq!(walker.lookup(0x40_0000), None);
        assert_eq!(
            walker.map(0x40_0800, 0x7000, DATA, 0, true),
            Err(MapError::BadAddress)
        );
        assert_eq!(
            walker.map(0x40_0000, 0x7800, DATA, 0, true),
            Err(MapError::BadAddress)
        );
        assert_eq!(
            walker.map(0x0001_0000_0000_0000, 0x7000, DATA, 0, true),
            Err(MapError::BadAddress),
            "outside both halves"
        );
        assert_eq!(
            walker.map(0x40_0000, 1 << 60, DATA, 0, true),
            Err(MapError::BadAddress),
            "physical address too wide"
        );
        walker.map(0x40_0000, 0x7000, DATA, 0, true).unwrap();
        assert_eq!(
            walker.map(0x40_0000, 0x8000, DATA, 0, true),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(walker.lookup(0x40_0000).unwrap().physical, 0x7000);
        assert_eq!(
            walker.protect(0x40_0000, write_execute),
            Err(MapError::WriteAndExecute)
        );
        assert_eq!(walker.lookup(0x40_0000).unwrap().flags, DATA);
    }

    #[test]
    fn root_entries_only_when_allowed() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        let kernel = PageFlags {
            user: false,
            ..DATA
        };
        assert_eq!(
            walker.map(0xffff_fd00_0000_0000, 0x7000, kernel, 0, false),
            Err(MapError::BadAddress)
        );
        assert!(!walker.root_entry_present(0xffff_fd00_0000_0000));
        walker
            .map(0xffff_fd00_0000_0000, 0x7000, kernel, 0, true)
            .unwrap();
        walker
            .map(0xffff_fd00_0000_1000, 0x8000, kernel, 0, false)
            .unwrap();
        let pml4 = walker.memory.read(root, index(0xffff_fd00_0000_0000, 3));
        assert_eq!(pml4 & U, 0, "kernel tables never get the user bit");
    }

    #[test]
    fn protect_changes_permissions_only() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        walker.map(0x40_0000, 0x7000, DATA, 0, true).unwrap();
        walker.protect(0x40_0000, CODE).unwrap();
        let found = walker.lookup(0x40_0000).unwrap();
        assert_eq!((found.physical, found.flags), (0x7000, CODE));
        assert_eq!(walker.protect(0x40_1000, CODE), Err(MapError::NotMapped));
        assert_eq!(walker.protect(0x40_0001, CODE), Err(MapError::BadAddress));
    }

    /// Where the range tests map kernel pages, and with what.
    const HHDM_BASE: u64 = 0xffff_8000_0000_0000;
    const KERNEL_DATA: PageFlags = PageFlags {
        user: false,
        ..DATA
    };

    #[test]
    fn blocks_map_and_look_up() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        let (hhdm, kernel_data) = (HHDM_BASE, KERNEL_DATA);
        // 1 MiB of pages, then one 2 MiB block, then 4 KiB pages again.
        walker
            .map_range(
                hhdm + 0x10_0000,
                0x10_0000,
                0x10_0000 + BLOCK_2M + 0x3000,
                kernel_data,
                true,
            )
            .unwrap();
        let block = walker.lookup(hhdm + 0x20_0000 + 0x1234).unwrap();
        assert_eq!((block.level, block.physical), (1, 0x20_1234));
        let page = walker.lookup(hhdm + 0x1f_f000).unwrap();
        assert_eq!((page.level, page.physical), (0, 0x1f_f000));
        let after = walker.lookup(hhdm + 0x40_2000).unwrap();
        assert_eq!((after.level, after.physical), (0, 0x40_2000));
        assert_eq!(walker.lookup(hhdm + 0x40_3000), None);
        // A page inside a block can be neither mapped nor unmapped.
        assert_eq!(
            walker.map(hhdm + 0x30_0000, 0, kernel_data, 0, true),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(walker.unmap(hhdm + 0x30_0000), Err(MapError::AlreadyMapped));
    }

    #[test]
    fn page_ranges_fill_each_leaf_table_and_stop_at_a_mapped_page() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut walker = Walker::new(&mut memory, &Format, root);
        let (hhdm, kernel_data) = (HHDM_BASE, KERNEL_DATA);
        // Pages only (physical not 2 MiB-aligned), across two 2 MiB boundaries, ending in a
        // partial page.
        let (virt, phys, length) = (hhdm + 0x1f_e000, 0x3f_f000, 2 * BLOCK_2M + 0x2800);
        walker
            .map_range(virt, phys, length, kernel_data, true)
            .unwrap();
        let mut offset = 0;
        while offset < length {
            let found = walker.lookup(virt + offset).unwrap();
            assert_eq!((found.level, found.physical), (0, phys + offset));
            offset += PAGE_SIZE;
        }
        assert_eq!(walker.lookup(virt + offset), None);
        // A range running into a mapped page stops there, with the pages before it mapped.
        walker
            .map(hhdm + 0x80_3000, 0x9000, kernel_data, 0, true)
            .unwrap();
        assert_eq!(
            walker.map_range(hhdm + 0x80_0000, 0x1000, 0x5000, kernel_data, true),
            Err(MapError::AlreadyMapped)
        );
        let before = walker.lookup(hhdm + 0x80_2000).unwrap();
        assert_eq!(before.physical, 0x3000);
        assert_eq!(walker.lookup(hhdm + 0x80_3000).unwrap().physical, 0x9000);
        assert_eq!(walker.lookup(hhdm + 0x80_4000), None);
    }

    #[test]
    fn exhaustion_is_out_of_memory() {
        // Root exists; a first user page needs three more tables.
        let (mut memory, root) = FakeMemory::new(2);
        let mut walker = Walker::new(&mut memory, &Format, root);
        assert_eq!(
            walker.map(0x40_0000, 0x7000, DATA, 0, true),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(walker.lookup(0x40_0000), None);
    }

    #[test]
    fn copy_and_free_every_table() {
        let (mut memory, source) = FakeMemory::new(64);
        let target = memory.allocate_table().unwrap();
        let kernel = PageFlags {
            user: false,
            ..DATA
        };
        let base = 0xffff_fe00_0000_0000;
        {
            let mut walker = Walker::new(&mut memory, &Format, source);
            for page in [0, 1, 2, 600, 512 * 512 + 7] {
                walker
                    .map(
                        base + page * PAGE_SIZE,
                        0x1000 * (page + 1),
                        kernel,
                        0,
                        true,
                    )
                    .unwrap();
            }
            // Outside the copied range.
            walker.map(0x40_0000, 0x7000, DATA, 0, true).unwrap();
        }
        let mut walker = Walker::new(&mut memory, &Format, target);
        let copied = walker
            .copy_pages_from(source, base..base + (2 << 30))
            .unwrap();
        assert_eq!(copied, 5);
        for page in [0, 1, 2, 600, 512 * 512 + 7] {
            let found = walker.lookup(base + page * PAGE_SIZE).unwrap();
            assert_eq!(found.physical, 0x1000 * (page + 1));
        }
        assert_eq!(walker.lookup(0x40_0000), None);
        // Free the target's tables: root, PDPT, 2 PDs... every table once.
        let mut freed = Vec::new();
        walker.free_tables(0..ENTRIES, true, &mut |table| freed.push(table));
        let mut unique = freed.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), freed.len(), "a table freed twice");
        // Root + PDPT + PD + 3 PTs (pages 0..2 and 600 in two PTs; 512*512+7 in another PD).
        assert_eq!(freed.len(), 1 + 1 + 2 + 3);
        assert_eq!(*freed.last().unwrap(), target);
    }

    /// Unmap through the counted path and free what it pruned, as the architectures do.
    fn unmap_and_free(
        memory: &mut FakeMemory,
        root: u64,
        address: u64,
        kept: &mut KeptTable,
    ) -> Result<u64, MapError> {
        let mut pruned = Pruned::default();
        let frame = Walker::new(memory, &Format, root).unmap_counted(address, kept, &mut pruned);
        for &table in pruned.tables() {
            // Pruned tables hold nothing.
            assert!(memory.tables[&table].iter().all(|&entry| entry == 0));
            memory.free_table(table);
        }
        frame
    }

    #[test]
    fn emptied_user_tables_are_reclaimed() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut kept = KeptTable::default();
        // Root only.
        assert_eq!(memory.tables.len(), 1);
        // 2 MiB apart: each page needs its own last-level table; 1 GiB apart every 512.
        for step in 0..3000u64 {
            let address = 0x1000_0000_0000 + step * BLOCK_2M;
            Walker::new(&mut memory, &Format, root)
                .map(address, 0x7000, DATA, 0, true)
                .unwrap();
            assert_eq!(
                unmap_and_free(&mut memory, root, address, &mut kept),
                Ok(0x7000)
            );
            // The root and at most one kept chain (PDPT, PD, PT).
            assert!(memory.tables.len() <= 4, "{} tables", memory.tables.len());
            assert_eq!(kept.region(), Some(address));
        }
        // Unmapping the same page again and again keeps its tables (after the first time,
        // which prunes the chain kept before).
        for round in 0..3 {
            let address = 0x1000_0000_0000;
            Walker::new(&mut memory, &Format, root)
                .map(address, 0x8000, DATA, 0, true)
                .unwrap();
            let before = memory.tables.len();
            unmap_and_free(&mut memory, root, address, &mut kept).unwrap();
            if round > 0 {
                assert_eq!(memory.tables.len(), before);
            }
        }
        // A table holding another page is never pruned.
        let (neighbour, other) = (0x1000_0000_1000, 0x2000_0000_0000);
        let mut walker = Walker::new(&mut memory, &Format, root);
        walker.map(neighbour, 0x9000, DATA, 0, true).unwrap();
        walker.map(0x1000_0000_0000, 0xa000, DATA, 0, true).unwrap();
        walker.map(other, 0xb000, DATA, 0, true).unwrap();
        unmap_and_free(&mut memory, root, 0x1000_0000_0000, &mut kept).unwrap();
        unmap_and_free(&mut memory, root, other, &mut kept).unwrap();
        assert_eq!(
            Walker::new(&mut memory, &Format, root)
                .lookup(neighbour)
                .map(|found| found.physical),
            Some(0x9000)
        );
        unmap_and_free(&mut memory, root, neighbour, &mut kept).unwrap();
        // Unmapping `other` kept its table (the neighbour's was not empty); unmapping the
        // neighbour kept the neighbour's and pruned other's chain: root + one chain.
        assert_eq!(memory.tables.len(), 4);
        assert_eq!(kept.region(), Some(0x1000_0000_0000));
        // Descriptors count exactly: unmap of an unmapped page changes nothing.
        assert_eq!(
            unmap_and_free(&mut memory, root, neighbour, &mut kept),
            Err(MapError::NotMapped)
        );
    }

    #[test]
    fn refused_user_map_leaves_no_table() {
        // Root exists; a first user page needs three more tables, only two are left.
        let (memory, root) = FakeMemory::new(2);
        let mut memory = memory.with_budget_of(2);
        assert_eq!(
            Walker::new(&mut memory, &Format, root).map(0x40_0000, 0x7000, DATA, 0, true),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(memory.tables.len(), 1);
        assert_eq!(memory.budget, 2);
        assert!(memory.tables[&root].iter().all(|&entry| entry == 0));
        // User blocks are refused.
        assert_eq!(
            Walker::new(&mut memory, &Format, root).map(0x40_0000, 0, DATA, 1, true),
            Err(MapError::BadAddress)
        );
    }

    #[test]
    fn counts_survive_widening_and_protect() {
        let (mut memory, root) = FakeMemory::new(16);
        let mut kept = KeptTable::default();
        let mut walker = Walker::new(&mut memory, &Format, root);
        for page in 0..512 {
            walker
                .map(0x40_0000 + page * PAGE_SIZE, 0x7000, DATA, 0, true)
                .unwrap();
        }
        walker.protect(0x40_0000, CODE).unwrap();
        let pd = Format.address(memory.read(root, 0));
        let pd = Format.address(memory.read(pd, 0));
        assert_eq!(memory.read(pd, 2) >> 52 & COUNT_BITS, 512);
        for page in 0..512 {
            unmap_and_free(&mut memory, root, 0x40_0000 + page * PAGE_SIZE, &mut kept).unwrap();
        }
        assert_eq!(memory.read(pd, 2) >> 52 & COUNT_BITS, 0);
        assert_eq!(kept.region(), Some(0x40_0000));
    }

    /// An HHDM over a sparse fake RAM, logging what was published.
    #[derive(Default)]
    struct FakeHhdm {
        words: std::cell::RefCell<BTreeMap<u64, u64>>,
        published: std::cell::RefCell<Vec<u64>>,
    }

    const OFFSET: u64 = 0xffff_8000_0000_0000;

    impl HhdmAccess for &FakeHhdm {
        fn offset(&self) -> u64 {
            OFFSET
        }
        fn read(&self, address: u64) -> u64 {
            self.words.borrow().get(&address).copied().unwrap_or(0)
        }
        fn write(&self, address: u64, value: u64) {
            self.words.borrow_mut().insert(address, value);
        }
        fn publish_table(&self, address: u64) {
            self.published.borrow_mut().push(address);
        }
    }

    struct Frames(u64, usize);

    impl FrameSource for Frames {
        fn alloc_zeroed_frame(&mut self) -> Option<u64> {
            self.1 = self.1.checked_sub(1)?;
            self.0 += PAGE_SIZE;
            Some(self.0)
        }
    }

    #[test]
    fn hhdm_tables_address_entries_through_the_offset() {
        let hhdm = FakeHhdm::default();
        let mut frames = Frames(0x20_0000, 8);
        let mut memory = HhdmTables::new(&hhdm, Some(&mut frames));
        let root = memory.allocate_table().unwrap();
        assert_eq!(root, 0x20_1000);
        let mut walker = Walker::new(&mut memory, &Format, root);
        walker.map(0x40_0000, 0x7000, DATA, 0, true).unwrap();
        assert_eq!(walker.lookup(0x40_0000).unwrap().physical, 0x7000);
        // Root + PDPT + PD + PT, each published at its HHDM address.
        assert_eq!(memory.allocated(), 4);
        assert_eq!(
            *hhdm.published.borrow(),
            [0x20_1000, 0x20_2000, 0x20_3000, 0x20_4000].map(|frame| OFFSET + frame)
        );
        // The root's entry for 0x40_0000 (index 0) is at the root's HHDM address.
        assert_ne!(hhdm.words.borrow()[&(OFFSET + root)] & P, 0);
        // Indices are reduced to one table.
        memory.write(root, ENTRIES + 3, 42);
        assert_eq!(memory.read(root, 3), 42);
        // Fixed tables never grow.
        let mut fixed = HhdmTables::new(&hhdm, None);
        assert_eq!(fixed.allocate_table(), None);
        assert_eq!(fixed.read(root, 3), 42);
    }
}
