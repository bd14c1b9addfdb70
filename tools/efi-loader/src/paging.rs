//! Four-level page tables for x86_64 and for AArch64 (4 KiB granule, 48-bit addresses),
//! built on an abstract supply of table frames so the host can test them.
//!
//! Both formats index a virtual address the same way (9 bits per level above a 12-bit page
//! offset), so one builder serves both; [`Format`] turns permissions into entry bits.
//! Mappings are supervisor-only. [`PageTables::map`] uses the largest page that fits the
//! alignment of both addresses (1 GiB where the format allows it, 2 MiB, 4 KiB).
//! [`Overlap::KeepExisting`] fills only the holes of an address range, which lets the HHDM
//! map the framebuffer write-combining first and then everything else write-back around it.

use crate::memmap::Caching;

/// Entries per table.
pub const ENTRIES: usize = 512;
/// One page-table page.
pub type Table = [u64; ENTRIES];

/// The frames that hold page tables, addressed by physical address.
pub trait TableMemory {
    /// A fresh, zeroed table; `None` when the supply is exhausted.
    fn allocate(&mut self) -> Option<u64>;
    /// The table at `physical` (one this memory allocated).
    fn table(&self, physical: u64) -> &Table;
    /// The table at `physical`, for writing.
    fn table_mut(&mut self, physical: u64) -> &mut Table;
}

/// The entry format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// x86_64 4-level paging. `no_execute`: EFER.NXE will be on (the CPU has NX), so the
    /// NX bit may be used. `huge_pages`: the CPU has 1 GiB pages.
    X86_64 { no_execute: bool, huge_pages: bool },
    /// AArch64 stage 1, 4 KiB granule, 48-bit, with MAIR attribute 0 = normal write-back
    /// and attribute 1 = the framebuffer type.
    Aarch64,
}

/// Which part of the 64-bit address space one root translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// x86_64: one root for both halves (canonical addresses).
    Canonical,
    /// AArch64 TTBR0: addresses below 2^48.
    Lower,
    /// AArch64 TTBR1: addresses from 0xffff_0000_0000_0000.
    Upper,
}

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub writable: bool,
    pub executable: bool,
    pub caching: Caching,
}

impl Attributes {
    /// Read, write, execute, write-back: the HHDM's and the identity map's permissions.
    pub const RWX: Attributes = Attributes {
        writable: true,
        executable: true,
        caching: Caching::WriteBack,
    };
}

/// What a virtual address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub physical: u64,
    pub attributes: Attributes,
    /// Size of the page that maps it.
    pub page_size: u64,
}

/// How [`PageTables::map`] treats addresses that are already mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// Fail with [`MapError::AlreadyMapped`].
    Refuse,
    /// Leave existing mappings and map only the holes.
    KeepExisting,
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table supply ran out.
    OutOfTables,
    /// `virtual` was already mapped.
    AlreadyMapped { virtual_address: u64 },
    /// An address or length is not page-aligned.
    Misaligned,
    /// The address is outside what this root translates.
    OutOfSpace { virtual_address: u64 },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::OutOfTables => f.write_str("out of page-table frames"),
            MapError::AlreadyMapped { virtual_address } => {
                write!(f, "{virtual_address:#x} is already mapped")
            }
            MapError::Misaligned => f.write_str("mapping not page-aligned"),
            MapError::OutOfSpace { virtual_address } => {
                write!(f, "{virtual_address:#x} is outside this address space")
            }
        }
    }
}

const PAGE: u64 = 4096;

fn level_size(level: usize) -> u64 {
    1 << (12 + 9 * level)
}

fn index(virtual_address: u64, level: usize) -> usize {
    ((virtual_address >> (12 + 9 * level)) & 0x1ff) as usize
}

// x86_64 entry bits (Intel SDM vol. 3A, 4.5).
const X86_PRESENT: u64 = 1 << 0;
const X86_WRITABLE: u64 = 1 << 1;
const X86_WRITE_THROUGH: u64 = 1 << 3;
const X86_ACCESSED: u64 = 1 << 5;
const X86_DIRTY: u64 = 1 << 6;
const X86_HUGE: u64 = 1 << 7;
const X86_PAT_SMALL: u64 = 1 << 7;
const X86_PAT_HUGE: u64 = 1 << 12;
const X86_NO_EXECUTE: u64 = 1 << 63;
const X86_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

// AArch64 stage-1 descriptor bits (Arm ARM D8.3).
const ARM_VALID: u64 = 1 << 0;
const ARM_TABLE_OR_PAGE: u64 = 1 << 1;
const ARM_ATTR_INDEX_SHIFT: u64 = 2;
const ARM_READ_ONLY: u64 = 1 << 7; // AP[2]
const ARM_INNER_SHAREABLE: u64 = 0b11 << 8;
const ARM_ACCESS_FLAG: u64 = 1 << 10;
const ARM_PRIVILEGED_NO_EXECUTE: u64 = 1 << 53;
const ARM_UNPRIVILEGED_NO_EXECUTE: u64 = 1 << 54;
const ARM_ADDRESS: u64 = 0x0000_ffff_ffff_f000;

/// MAIR attribute index of normal write-back memory.
pub const MAIR_INDEX_WRITE_BACK: u64 = 0;
/// MAIR attribute index of the framebuffer's type.
pub const MAIR_INDEX_FRAMEBUFFER: u64 = 1;

impl Format {
    fn leaf_allowed(self, level: usize) -> bool {
        match (self, level) {
            (_, 0 | 1) => true,
            (Format::X86_64 { huge_pages, .. }, 2) => huge_pages,
            (Format::Aarch64, 2) => true,
            _ => false,
        }
    }

    fn table_entry(self, physical: u64) -> u64 {
        match self {
            Format::X86_64 { .. } => physical | X86_PRESENT | X86_WRITABLE | X86_ACCESSED,
            Format::Aarch64 => physical | ARM_VALID | ARM_TABLE_OR_PAGE,
        }
    }

    fn leaf_entry(self, level: usize, physical: u64, attributes: Attributes) -> u64 {
        match self {
            Format::X86_64 { no_execute, .. } => {
                let mut entry = physical | X86_PRESENT | X86_ACCESSED | X86_DIRTY;
                if attributes.writable {
                    entry |= X86_WRITABLE;
                }
                if !attributes.executable && no_execute {
                    entry |= X86_NO_EXECUTE;
                }
                if level > 0 {
                    entry |= X86_HUGE;
                }
                if attributes.caching == Caching::Framebuffer {
                    // PAT entry 5 (write-combining in the layout the protocol fixes):
                    // PAT = 1, PCD = 0, PWT = 1.
                    entry |= X86_WRITE_THROUGH
                        | if level > 0 {
                            X86_PAT_HUGE
                        } else {
                            X86_PAT_SMALL
                        };
                }
                entry
            }
            Format::Aarch64 => {
                let index = match attributes.caching {
                    Caching::WriteBack => MAIR_INDEX_WRITE_BACK,
                    Caching::Framebuffer => MAIR_INDEX_FRAMEBUFFER,
                };
                let mut entry = physical
                    | ARM_VALID
                    | index << ARM_ATTR_INDEX_SHIFT
                    | ARM_INNER_SHAREABLE
                    | ARM_ACCESS_FLAG
                    | ARM_UNPRIVILEGED_NO_EXECUTE;
                if level == 0 {
                    entry |= ARM_TABLE_OR_PAGE;
                }
                if !attributes.writable {
                    entry |= ARM_READ_ONLY;
                }
                if !attributes.executable {
                    entry |= ARM_PRIVILEGED_NO_EXECUTE;
                }
                entry
            }
        }
    }

    fn is_valid(self, entry: u64) -> bool {
        match self {
            Format::X86_64 { .. } => entry & X86_PRESENT != 0,
            Format::Aarch64 => entry & ARM_VALID != 0,
        }
    }

    fn is_leaf(self, entry: u64, level: usize) -> bool {
        match self {
            Format::X86_64 { .. } => level == 0 || entry & X86_HUGE != 0,
            Format::Aarch64 => level == 0 || entry & ARM_TABLE_OR_PAGE == 0,
        }
    }

    fn table_address(self, entry: u64) -> u64 {
        match self {
            Format::X86_64 { .. } => entry & X86_ADDRESS,
            Format::Aarch64 => entry & ARM_ADDRESS,
        }
    }

    fn decode_leaf(self, entry: u64, level: usize) -> (u64, Attributes) {
        let size_mask = level_size(level) - 1;
        match self {
            Format::X86_64 { no_execute, .. } => {
                let pat = if level > 0 {
                    X86_PAT_HUGE
                } else {
                    X86_PAT_SMALL
                };
                let caching = if entry & X86_WRITE_THROUGH != 0 && entry & pat != 0 {
                    Caching::Framebuffer
                } else {
                    Caching::WriteBack
                };
                let attributes = Attributes {
                    writable: entry & X86_WRITABLE != 0,
                    executable: !no_execute || entry & X86_NO_EXECUTE == 0,
                    caching,
                };
                (entry & X86_ADDRESS & !size_mask, attributes)
            }
            Format::Aarch64 => {
                let caching = if (entry >> ARM_ATTR_INDEX_SHIFT) & 0b111 == MAIR_INDEX_FRAMEBUFFER {
                    Caching::Framebuffer
                } else {
                    Caching::WriteBack
                };
                let attributes = Attributes {
                    writable: entry & ARM_READ_ONLY == 0,
                    executable: entry & ARM_PRIVILEGED_NO_EXECUTE == 0,
                    caching,
                };
                (entry & ARM_ADDRESS & !size_mask, attributes)
            }
        }
    }
}

/// One translation root and the format of its entries.
#[derive(Clone, Copy, Debug)]
pub struct PageTables {
    pub root: u64,
    pub format: Format,
    pub space: Space,
}

impl PageTables {
    /// A new, empty root.
    pub fn new(
        memory: &mut impl TableMemory,
        format: Format,
        space: Space,
    ) -> Result<Self, MapError> {
        let root = memory.allocate().ok_or(MapError::OutOfTables)?;
        Ok(PageTables {
            root,
            format,
            space,
        })
    }

    fn check_space(&self, virtual_address: u64, length: u64) -> Result<(), MapError> {
        let last = virtual_address
            .checked_add(length - 1)
            .ok_or(MapError::OutOfSpace { virtual_address })?;
        let inside = |address: u64| match self.space {
            Space::Canonical => {
                let top = address >> 47;
                top == 0 || top == 0x1_ffff
            }
            Space::Lower => address >> 48 == 0,
            Space::Upper => address >> 48 == 0xffff,
        };
        // A range must not cross the canonical hole.
        if inside(virtual_address) && inside(last) && (virtual_address >> 47) == (last >> 47) {
            Ok(())
        } else {
            Err(MapError::OutOfSpace { virtual_address })
        }
    }

    /// Map `length` bytes at `virtual_address` to `physical` with `attributes`.
    pub fn map(
        &mut self,
        memory: &mut impl TableMemory,
        virtual_address: u64,
        physical: u64,
        length: u64,
        attributes: Attributes,
        overlap: Overlap,
    ) -> Result<(), MapError> {
        if length == 0 {
            return Ok(());
        }
        if !(virtual_address | physical | length).is_multiple_of(PAGE) {
            return Err(MapError::Misaligned);
        }
        self.check_space(virtual_address, length)?;
        self.map_in(
            memory,
            self.root,
            3,
            virtual_address,
            physical,
            length,
            attributes,
            overlap,
        )
    }

    #[allow(clippy::too_many_arguments)] // reason: a recursion step carries the whole request
    fn map_in(
        &self,
        memory: &mut impl TableMemory,
        table: u64,
        level: usize,
        mut virtual_address: u64,
        mut physical: u64,
        mut length: u64,
        attributes: Attributes,
        overlap: Overlap,
    ) -> Result<(), MapError> {
        let size = level_size(level);
        while length > 0 {
            let slot = index(virtual_address, level);
            let chunk = length.min(size - (virtual_address & (size - 1)));
            let entry = memory.table(table)[slot];
            let whole = chunk == size && physical & (size - 1) == 0;
            let valid = self.format.is_valid(entry);
            if whole && self.format.leaf_allowed(level) && !valid {
                memory.table_mut(table)[slot] = self.format.leaf_entry(level, physical, attributes);
            } else if valid && self.format.is_leaf(entry, level) {
                if overlap == Overlap::Refuse {
                    return Err(MapError::AlreadyMapped { virtual_address });
                }
            } else {
                let next = if valid {
                    self.format.table_address(entry)
                } else {
                    let next = memory.allocate().ok_or(MapError::OutOfTables)?;
                    memory.table_mut(table)[slot] = self.format.table_entry(next);
                    next
                };
                self.map_in(
                    memory,
                    next,
                    level - 1,
                    virtual_address,
                    physical,
                    chunk,
                    attributes,
                    overlap,
                )?;
            }
            virtual_address = virtual_address.wrapping_add(chunk);
            physical += chunk;
            length -= chunk;
        }
        Ok(())
    }

    /// The translation of `virtual_address`, if mapped.
    pub fn translate(
        &self,
        memory: &impl TableMemory,
        virtual_address: u64,
    ) -> Option<Translation> {
        let mut table = self.root;
        for level in (0..4).rev() {
            let entry = memory.table(table)[index(virtual_address, level)];
            if !self.format.is_valid(entry) {
                return None;
            }
            if self.format.is_leaf(entry, level) {
                if level == 3 {
                    return None;
                }
                let (base, attributes) = self.format.decode_leaf(entry, level);
                let size = level_size(level);
                return Some(Translation {
                    physical: base + (virtual_address & (size - 1)),
                    attributes,
                    page_size: size,
                });
            }
            table = self.format.table_address(entry);
        }
        None
    }

    /// Call `visit(virtual, translation)` for every leaf entry, in address order.
    pub fn for_each_leaf(
        &self,
        memory: &impl TableMemory,
        mut visit: impl FnMut(u64, Translation),
    ) {
        self.walk(memory, self.root, 3, 0, &mut visit);
    }

    fn walk(
        &self,
        memory: &impl TableMemory,
        table: u64,
        level: usize,
        base: u64,
        visit: &mut impl FnMut(u64, Translation),
    ) {
        for slot in 0..ENTRIES {
            let entry = memory.table(table)[slot];
            if !self.format.is_valid(entry) {
                continue;
            }
            let mut address = base | (slot as u64) << (12 + 9 * level);
            if level == 3 {
                address = match self.space {
                    Space::Canonical if slot >= 256 => address | 0xffff_0000_0000_0000,
                    Space::Upper => address | 0xffff_0000_0000_0000,
                    _ => address,
                };
            }
            if self.format.is_leaf(entry, level) {
                if level < 3 {
                    let (physical, attributes) = self.format.decode_leaf(entry, level);
                    visit(
                        address,
                        Translation {
                            physical,
                            attributes,
                            page_size: level_size(level),
                        },
                    );
                }
            } else {
                self.walk(
                    memory,
                    self.format.table_address(entry),
                    level - 1,
                    address,
                    visit,
                );
            }
        }
    }
}

/// An upper bound on the tables needed to map `length` bytes where virtual and physical
/// addresses are `congruent` modulo 1 GiB (then large pages cover the middle).
pub fn tables_needed(length: u64, congruent: bool) -> usize {
    const GIB: u64 = 1 << 30;
    const TWO_MIB: u64 = 2 << 20;
    let page_tables = if congruent {
        2
    } else {
        length.div_ceil(TWO_MIB) + 1
    };
    let directories = length.div_ceil(GIB) + 1;
    let pointer_tables = length.div_ceil(512 * GIB) + 1;
    (page_tables + directories + pointer_tables) as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    /// Tables in host memory; "physical" addresses are 4 KiB steps from 1 MiB.
    #[derive(Default)]
    pub(crate) struct HostTables {
        pub tables: Vec<Box<Table>>,
        pub limit: Option<usize>,
    }

    const BASE: u64 = 0x10_0000;

    impl TableMemory for HostTables {
        fn allocate(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|limit| self.tables.len() >= limit) {
                return None;
            }
            self.tables.push(Box::new([0; ENTRIES]));
            Some(BASE + (self.tables.len() as u64 - 1) * PAGE)
        }
        fn table(&self, physical: u64) -> &Table {
            &self.tables[((physical - BASE) / PAGE) as usize]
        }
        fn table_mut(&mut self, physical: u64) -> &mut Table {
            &mut self.tables[((physical - BASE) / PAGE) as usize]
        }
    }

    const GIB: u64 = 1 << 30;
    const X86: Format = Format::X86_64 {
        no_execute: true,
        huge_pages: false,
    };
    const RO: Attributes = Attributes {
        writable: false,
        executable: false,
        caching: Caching::WriteBack,
    };
    const RX: Attributes = Attributes {
        writable: false,
        executable: true,
        caching: Caching::WriteBack,
    };
    const RW: Attributes = Attributes {
        writable: true,
        executable: false,
        caching: Caching::WriteBack,
    };
    const FB: Attributes = Attributes {
        writable: true,
        executable: true,
        caching: Caching::Framebuffer,
    };

    struct Mapping {
        virtual_address: u64,
        physical: u64,
        length: u64,
        attributes: Attributes,
    }

    /// Check every page of every mapping (and that nothing else is mapped).
    fn check(tables: &PageTables, memory: &HostTables, mappings: &[Mapping]) {
        for mapping in mappings {
            let mut offset = 0;
            while offset < mapping.length {
                let address = mapping.virtual_address + offset;
                let translation = tables
                    .translate(memory, address)
                    .unwrap_or_else(|| panic!("{address:#x} unmapped"));
                assert_eq!(
                    translation.physical,
                    mapping.physical + offset,
                    "frame of {address:#x}"
                );
                assert_eq!(
                    translation.attributes, mapping.attributes,
                    "permissions of {address:#x}"
                );
                // Step through large pages quickly but look at their last byte too.
                let step = translation.page_size - (address & (translation.page_size - 1));
                let last = address + step.min(mapping.length - offset) - 1;
                assert_eq!(
                    tables.translate(memory, last).unwrap().physical,
                    mapping.physical + (last - mapping.virtual_address)
                );
                offset += step;
            }
        }
        tables.for_each_leaf(memory, |address, translation| {
            let owner = mappings
                .iter()
                .find(|m| address >= m.virtual_address && address < m.virtual_address + m.length);
            let owner = owner.unwrap_or_else(|| panic!("stray mapping at {address:#x}"));
            assert!(address + translation.page_size <= owner.virtual_address + owner.length);
            assert_eq!(
                translation.physical,
                owner.physical + (address - owner.virtual_address)
            );
        });
    }

    fn kernel_and_hhdm(format: Format, space: Space, hhdm: u64) {
        let mut memory = HostTables::default();
        let mut tables = PageTables::new(&mut memory, format, space).unwrap();
        let kernel = 0xffff_ffff_8000_0000;
        let mappings = [
            Mapping {
                virtual_address: kernel,
                physical: 0x7f3_1000,
                length: 0x5000,
                attributes: RX,
            },
            Mapping {
                virtual_address: kernel + 0x5000,
                physical: 0x7f3_6000,
                length: 0x2000,
                attributes: RO,
            },
            Mapping {
                virtual_address: kernel + 0x7000,
                physical: 0x7f3_8000,
                length: 0x20_3000,
                attributes: RW,
            },
            Mapping {
                virtual_address: hhdm + 0x8000_0000,
                physical: 0x8000_0000,
                length: 0x30_1000,
                attributes: FB,
            },
            Mapping {
                virtual_address: hhdm,
                physical: 0,
                length: 0x8000_0000,
                attributes: Attributes::RWX,
            },
            Mapping {
                virtual_address: hhdm + 0x8030_1000,
                physical: 0x8030_1000,
                length: 4 * GIB - 0x8030_1000,
                attributes: Attributes::RWX,
            },
            Mapping {
                virtual_address: hhdm + 6 * GIB,
                physical: 6 * GIB,
                length: 0x1234_5000,
                attributes: Attributes::RWX,
            },
        ];
        for mapping in &mappings[..3] {
            tables
                .map(
                    &mut memory,
                    mapping.virtual_address,
                    mapping.physical,
                    mapping.length,
                    mapping.attributes,
                    Overlap::Refuse,
                )
                .unwrap();
        }
        // The HHDM: framebuffer first, then the first 4 GiB around it, then high memory.
        tables
            .map(
                &mut memory,
                hhdm + 0x8000_0000,
                0x8000_0000,
                0x30_1000,
                FB,
                Overlap::KeepExisting,
            )
            .unwrap();
        tables
            .map(
                &mut memory,
                hhdm,
                0,
                4 * GIB,
                Attributes::RWX,
                Overlap::KeepExisting,
            )
            .unwrap();
        tables
            .map(
                &mut memory,
                hhdm + 6 * GIB,
                6 * GIB,
                0x1234_5000,
                Attributes::RWX,
                Overlap::KeepExisting,
            )
            .unwrap();
        check(&tables, &memory, &mappings);
        assert!(tables.translate(&memory, kernel - 0x1000).is_none());
        assert!(tables.translate(&memory, hhdm + 4 * GIB).is_none());
        assert!(tables.translate(&memory, 0x1000).is_none() || space == Space::Upper);
        // Large pages where alignment allows, 4 KiB around the framebuffer's tail.
        assert_eq!(
            tables
                .translate(&memory, hhdm + 0x4000_0000)
                .unwrap()
                .page_size,
            if format == X86 { 2 << 20 } else { GIB }
        );
        assert_eq!(
            tables
                .translate(&memory, hhdm + 0x8030_0000)
                .unwrap()
                .page_size,
            4096
        );
        assert_eq!(
            tables
                .translate(&memory, hhdm + 0x8040_0000)
                .unwrap()
                .page_size,
            2 << 20
        );
        // The estimate is an upper bound.
        let estimate = 1
            + tables_needed(0x5000, false)
            + tables_needed(0x2000, false)
            + tables_needed(0x20_3000, false)
            + tables_needed(0x30_1000, true)
            + tables_needed(4 * GIB, true)
            + tables_needed(0x1234_5000, true);
        assert!(
            memory.tables.len() <= estimate,
            "{} tables, estimate {estimate}",
            memory.tables.len()
        );
    }

    #[test]
    fn x86_64_kernel_and_hhdm() {
        kernel_and_hhdm(X86, Space::Canonical, 0xffff_8000_0000_0000);
    }

    #[test]
    fn x86_64_with_huge_pages() {
        let mut memory = HostTables::default();
        let format = Format::X86_64 {
            no_execute: true,
            huge_pages: true,
        };
        let mut tables = PageTables::new(&mut memory, format, Space::Canonical).unwrap();
        tables
            .map(
                &mut memory,
                0xffff_8000_0000_0000,
                0,
                4 * GIB,
                Attributes::RWX,
                Overlap::Refuse,
            )
            .unwrap();
        assert_eq!(memory.tables.len(), 2);
        let t = tables.translate(&memory, 0xffff_8000_c000_1234).unwrap();
        assert_eq!((t.physical, t.page_size), (0xc000_1234, GIB));
    }

    #[test]
    fn aarch64_kernel_and_hhdm() {
        kernel_and_hhdm(Format::Aarch64, Space::Upper, 0xffff_0000_0000_0000);
    }

    #[test]
    fn x86_64_entry_bits() {
        let mut memory = HostTables::default();
        let mut tables = PageTables::new(&mut memory, X86, Space::Canonical).unwrap();
        tables
            .map(
                &mut memory,
                0x20_0000,
                0x40_0000,
                0x20_0000,
                FB,
                Overlap::Refuse,
            )
            .unwrap();
        tables
            .map(&mut memory, 0x1000, 0x5000, 0x1000, RO, Overlap::Refuse)
            .unwrap();
        let pd = memory.tables[2][1];
        assert_eq!(
            pd & 0xfff,
            X86_PRESENT | X86_WRITABLE | X86_ACCESSED | X86_DIRTY | X86_HUGE | X86_WRITE_THROUGH
        );
        assert_eq!(pd & X86_PAT_HUGE, X86_PAT_HUGE);
        assert_eq!(pd & X86_NO_EXECUTE, 0);
        let pt = memory.tables[3][1];
        assert_eq!(
            pt,
            0x5000 | X86_PRESENT | X86_ACCESSED | X86_DIRTY | X86_NO_EXECUTE
        );
        // Without NX the bit is never set.
        let mut memory = HostTables::default();
        let no_nx = Format::X86_64 {
            no_execute: false,
            huge_pages: false,
        };
        let mut tables = PageTables::new(&mut memory, no_nx, Space::Canonical).unwrap();
        tables
            .map(&mut memory, 0x1000, 0x5000, 0x1000, RO, Overlap::Refuse)
            .unwrap();
        assert_eq!(memory.tables[3][1] & X86_NO_EXECUTE, 0);
        assert!(
            tables
                .translate(&memory, 0x1000)
                .unwrap()
                .attributes
                .executable
        );
    }

    #[test]
    fn aarch64_entry_bits() {
        let mut memory = HostTables::default();
        let mut tables = PageTables::new(&mut memory, Format::Aarch64, Space::Lower).unwrap();
        tables
            .map(
                &mut memory,
                0x4000_0000,
                0x4000_0000,
                GIB,
                Attributes::RWX,
                Overlap::Refuse,
            )
            .unwrap();
        tables
            .map(&mut memory, 0x1000, 0x9000, 0x1000, RO, Overlap::Refuse)
            .unwrap();
        let block = memory.tables[1][1];
        assert_eq!(
            block,
            0x4000_0000
                | 0b01
                | ARM_INNER_SHAREABLE
                | ARM_ACCESS_FLAG
                | ARM_UNPRIVILEGED_NO_EXECUTE
        );
        let page = memory.tables[3][1];
        assert_eq!(
            page,
            0x9000
                | 0b11
                | ARM_READ_ONLY
                | ARM_INNER_SHAREABLE
                | ARM_ACCESS_FLAG
                | ARM_PRIVILEGED_NO_EXECUTE
                | ARM_UNPRIVILEGED_NO_EXECUTE
        );
        assert_eq!(memory.tables[0][0] & 0b11, 0b11, "table descriptor");
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let mut memory = HostTables::default();
        let mut tables = PageTables::new(&mut memory, X86, Space::Canonical).unwrap();
        tables
            .map(&mut memory, 0x20_0000, 0, 0x20_0000, RW, Overlap::Refuse)
            .unwrap();
        assert_eq!(
            tables.map(&mut memory, 0x20_1000, 0x1000, 0x1000, RW, Overlap::Refuse),
            Err(MapError::AlreadyMapped {
                virtual_address: 0x20_1000
            })
        );
        tables
            .map(
                &mut memory,
                0x20_1000,
                0x1000,
                0x1000,
                RW,
                Overlap::KeepExisting,
            )
            .unwrap();
        assert_eq!(
            tables.map(&mut memory, 0x1001, 0, 0x1000, RW, Overlap::Refuse),
            Err(MapError::Misaligned)
        );
        assert!(matches!(
            tables.map(
                &mut memory,
                0x0000_8000_0000_0000,
                0,
                0x1000,
                RW,
                Overlap::Refuse
            ),
            Err(MapError::OutOfSpace { .. })
        ));
        assert!(matches!(
            tables.map(
                &mut memory,
                0x0000_7fff_ffff_f000,
                0,
                0x2000,
                RW,
                Overlap::Refuse
            ),
            Err(MapError::OutOfSpace { .. })
        ));
        let mut lower = PageTables::new(&mut memory, Format::Aarch64, Space::Lower).unwrap();
        assert!(
            lower
                .map(
                    &mut memory,
                    0xffff_0000_0000_0000,
                    0,
                    0x1000,
                    RW,
                    Overlap::Refuse
                )
                .is_err()
        );
        memory.limit = Some(memory.tables.len());
        assert_eq!(
            tables.map(
                &mut memory,
                0x4000_0000_0000,
                0,
                0x1000,
                RW,
                Overlap::Refuse
            ),
            Err(MapError::OutOfTables)
        );
    }
}
