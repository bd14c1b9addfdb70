//! Physical memory the loader hands to the kernel: page allocations of the two kinds the
//! final memory map tells apart, a bump arena for responses, and the frame pool the page
//! tables are built from after ExitBootServices.
//!
//! UEFI identity-maps all memory while boot services run (and the firmware's tables stay
//! in place until the handoff switches to ours), so a physical address is also a pointer
//! here. Everything is addressed by physical address; the kernel sees `physical + HHDM`.

use alloc::format;
use alloc::string::String;

use efi_loader::PAGE_SIZE;
use efi_loader::memmap::{EFI_BOOTLOADER_RECLAIMABLE, EFI_EXECUTABLE_AND_MODULES};
use efi_loader::paging::{ENTRIES, Table, TableMemory};
use uefi::boot::{self, AllocateType, MemoryType};

/// Who the final memory map says owns an allocation.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// The kernel image, its file, modules: "executable and modules".
    Kernel,
    /// Responses, page tables, stack, copies of firmware tables: "bootloader-reclaimable".
    Bootloader,
}

impl Owner {
    pub fn memory_type(self) -> MemoryType {
        match self {
            Owner::Kernel => MemoryType::custom(EFI_EXECUTABLE_AND_MODULES),
            Owner::Bootloader => MemoryType::custom(EFI_BOOTLOADER_RECLAIMABLE),
        }
    }
}

/// A run of whole pages, zeroed, that the loader allocated and never frees. Not `Copy`:
/// the one owner is the only way to its bytes (use [`Span`] to pass the address around).
#[derive(Debug)]
pub struct Pages {
    pub physical: u64,
    pub length: u64,
}

/// Where some pages are, without access to them.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub physical: u64,
    pub length: u64,
}

impl Pages {
    /// Allocate at least `bytes` (at least one page), zeroed.
    pub fn allocate(bytes: u64, owner: Owner, what: &str) -> Result<Pages, String> {
        let count = bytes.max(1).div_ceil(PAGE_SIZE);
        let pointer =
            boot::allocate_pages(AllocateType::AnyPages, owner.memory_type(), count as usize)
                .map_err(|error| {
                    format!(
                        "cannot allocate {count} pages for {what}: {:?}",
                        error.status()
                    )
                })?;
        let mut pages = Pages {
            physical: pointer.as_ptr() as u64,
            length: count * PAGE_SIZE,
        };
        pages.bytes_mut().fill(0);
        Ok(pages)
    }

    pub fn span(&self) -> Span {
        Span {
            physical: self.physical,
            length: self.length,
        }
    }

    /// The pages as bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the pages were allocated by `allocate` for the loader alone and are never
        // freed; while boot services run (and until the handoff) memory is identity-mapped,
        // so the physical address points at `length` bytes. `Pages` is not `Clone`, so all
        // access goes through this owner and the borrow rules apply.
        unsafe { core::slice::from_raw_parts(self.physical as *const u8, self.length as usize) }
    }

    /// The pages as bytes, for writing.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.physical as *mut u8, self.length as usize) }
    }
}

/// Bump allocation of response structures in bootloader-reclaimable memory.
pub struct Arena {
    pages: Pages,
    used: u64,
    hhdm: u64,
}

impl Arena {
    pub fn new(bytes: u64, hhdm: u64) -> Result<Arena, String> {
        Ok(Arena {
            pages: Pages::allocate(bytes, Owner::Bootloader, "boot responses")?,
            used: 0,
            hhdm,
        })
    }

    /// The kernel's (HHDM) address of a physical address.
    pub fn virtual_of(&self, physical: u64) -> u64 {
        physical + self.hhdm
    }

    /// Room for `bytes` bytes aligned to `align`; returns the physical address.
    pub fn reserve(&mut self, bytes: u64, align: u64) -> u64 {
        let start = self.used.next_multiple_of(align);
        assert!(
            start + bytes <= self.pages.length,
            "response arena too small ({} + {bytes} > {})",
            start,
            self.pages.length
        );
        self.used = start + bytes;
        self.pages.physical + start
    }

    /// Store `value` and return its physical address.
    pub fn put<T: Copy>(&mut self, value: T) -> u64 {
        let physical = self.reserve(size_of::<T>() as u64, align_of::<T>() as u64);
        // SAFETY: `reserve` returned `size_of::<T>()` suitably aligned bytes inside the
        // arena's pages, which are identity-mapped and owned by the loader.
        unsafe { (physical as *mut T).write(value) };
        physical
    }

    /// Store `bytes` followed by a NUL and return the kernel's address of the string.
    pub fn string(&mut self, text: &str) -> u64 {
        let physical = self.reserve(text.len() as u64 + 1, 1);
        let start = (physical - self.pages.physical) as usize;
        let bytes = &mut self.pages.bytes_mut()[start..start + text.len() + 1];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        bytes[text.len()] = 0;
        self.virtual_of(physical)
    }

    /// Store a copy of `data` (8-byte aligned) and return the kernel's address of it.
    pub fn blob(&mut self, data: &[u8]) -> u64 {
        let physical = self.reserve(data.len() as u64, 8);
        let start = (physical - self.pages.physical) as usize;
        self.pages.bytes_mut()[start..start + data.len()].copy_from_slice(data);
        self.virtual_of(physical)
    }

    /// Write `value` at a physical address the arena handed out earlier.
    pub fn write<T: Copy>(&mut self, physical: u64, value: T) {
        assert!(
            physical >= self.pages.physical
                && physical + size_of::<T>() as u64 <= self.pages.physical + self.used
        );
        // SAFETY: checked just above to lie inside the part of the arena already reserved,
        // identity-mapped memory the loader owns; `T` was reserved there with its alignment.
        unsafe { (physical as *mut T).write(value) };
    }
}

/// Page-table frames, allocated before ExitBootServices and handed out afterwards.
pub struct TablePool {
    pages: Pages,
    next: u64,
}

impl TablePool {
    pub fn new(tables: u64) -> Result<TablePool, String> {
        Ok(TablePool {
            pages: Pages::allocate(tables * PAGE_SIZE, Owner::Bootloader, "page tables")?,
            next: 0,
        })
    }

    #[cfg(target_arch = "aarch64")]
    pub fn span(&self) -> Span {
        self.pages.span()
    }

    fn check(&self, physical: u64) -> *mut Table {
        assert!(
            physical >= self.pages.physical
                && physical < self.pages.physical + self.next
                && physical.is_multiple_of(PAGE_SIZE),
            "{physical:#x} is not a page table of this pool"
        );
        physical as *mut Table
    }
}

impl TableMemory for TablePool {
    fn allocate(&mut self) -> Option<u64> {
        if self.next >= self.pages.length {
            return None;
        }
        let physical = self.pages.physical + self.next;
        self.next += PAGE_SIZE;
        // The pool was zeroed when allocated, and frames are handed out once.
        Some(physical)
    }

    fn table(&self, physical: u64) -> &Table {
        let table = self.check(physical);
        // SAFETY: `check` verified the frame belongs to this pool and was handed out; the
        // pool is identity-mapped, page-aligned, owned by the loader, and only reached
        // through the pool, whose borrow rules this method inherits.
        unsafe { &*table }
    }

    fn table_mut(&mut self, physical: u64) -> &mut Table {
        let table = self.check(physical);
        // SAFETY: as in `table`; `&mut self` makes this the only live view of the frame.
        unsafe { &mut *table }
    }
}

const _: () = assert!(size_of::<Table>() == ENTRIES * 8 && size_of::<Table>() as u64 == PAGE_SIZE);
