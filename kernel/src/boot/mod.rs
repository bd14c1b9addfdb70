//! Boot: the Limine requests, and the copy of their answers the rest of the kernel uses.
//!
//! Keel asks for base revision 2 and uses only what that revision guarantees and Limine
//! 8.x answers (DESIGN.md §4): the command line comes from the Executable File response,
//! not from the newer Executable Command Line request, and nothing assumes a fixed HHDM
//! base. Every response is optional to the code here: a missing one is reported, not
//! dereferenced.

pub mod early_frames;
pub mod smp;

use core::ffi::CStr;

use kcore::cmdline::Cmdline;
use kcore::memory::{Region, RegionKind, Summary};
use limine::BaseRevision;
use limine::firmware_type::FirmwareType;
use limine::memory_map::EntryType;
use limine::request::{
    BootloaderInfoRequest, DeviceTreeBlobRequest, ExecutableFileRequest, FirmwareTypeRequest,
    HhdmRequest, MemoryMapRequest, ModuleRequest, PagingModeRequest, RequestsEndMarker,
    RequestsStartMarker, RsdpRequest, StackSizeRequest,
};

use crate::{Cpu, println};
use arch_api::Platform;

/// The base revision Keel is written against.
const BASE_REVISION_WANTED: u64 = 2;
/// Boot stack the loader must give us (the protocol's default is 64 KiB; ask explicitly).
const BOOT_STACK_SIZE: u64 = 64 * 1024;

#[used]
#[unsafe(link_section = ".requests_start_marker")]
static REQUESTS_START: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[unsafe(link_section = ".requests")]
static BASE_REVISION: BaseRevision = BaseRevision::with_revision(BASE_REVISION_WANTED);

#[used]
#[unsafe(link_section = ".requests")]
static BOOTLOADER_INFO: BootloaderInfoRequest = BootloaderInfoRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static FIRMWARE_TYPE: FirmwareTypeRequest = FirmwareTypeRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static STACK_SIZE: StackSizeRequest = StackSizeRequest::new().with_size(BOOT_STACK_SIZE);

#[used]
#[unsafe(link_section = ".requests")]
static HHDM: HhdmRequest = HhdmRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MODULES: ModuleRequest = ModuleRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static DEVICE_TREE: DeviceTreeBlobRequest = DeviceTreeBlobRequest::new();

/// 4-level paging, and nothing else (Keel's tables and its walker are 4-level): the
/// protocol's mode limits keep a loader from giving 5-level even on a CPU that has it.
#[used]
#[unsafe(link_section = ".requests")]
static PAGING_MODE: PagingModeRequest = PagingModeRequest::new()
    .with_mode(limine::paging::Mode::FOUR_LEVEL)
    .with_max_mode(limine::paging::Mode::FOUR_LEVEL)
    .with_min_mode(limine::paging::Mode::FOUR_LEVEL);

#[used]
#[unsafe(link_section = ".requests_end_marker")]
static REQUESTS_END: RequestsEndMarker = RequestsEndMarker::new();

/// What the arch crate needs before the console works.
pub struct Early {
    pub hhdm_offset: u64,
    pub memory: Summary,
    pub device_tree: Option<&'static [u8]>,
    pub rsdp: Option<u64>,
}

/// Read the responses needed to bring the console up. `None` when the loader did not
/// accept our base revision or gave no HHDM or memory map: then nothing can be trusted.
pub fn early() -> Option<Early> {
    if !BASE_REVISION.is_supported() {
        return None;
    }
    // A loader that ignored the mode limits left the kernel on tables it cannot walk.
    if PAGING_MODE
        .get_response()
        .is_some_and(|response| response.mode() != limine::paging::Mode::FOUR_LEVEL)
    {
        return None;
    }
    copy_memory_map()?;
    let hhdm_offset = HHDM.get_response()?.offset();
    let memory = Summary::of(memory_regions()?);
    let device_tree = DEVICE_TREE.get_response().and_then(|response| {
        let blob = response.dtb_ptr().cast::<u8>();
        if blob.is_null() {
            return None;
        }
        // SAFETY: the loader gives a pointer to a flattened device tree in memory it keeps
        // mapped (bootloader-reclaimable, which we do not reclaim before we stop using it);
        // its header's big-endian `totalsize` at offset 4 bounds the blob.
        unsafe {
            let header = core::slice::from_raw_parts(blob, 8);
            let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            Some(core::slice::from_raw_parts(blob, size as usize))
        }
    });
    let rsdp = RSDP.get_response().map(|response| {
        // Base revision 2: the address is virtual (in the HHDM); revision 3 makes it physical.
        let address = response.address() as u64;
        if address >= hhdm_offset {
            address - hhdm_offset
        } else {
            address
        }
    });
    Some(Early {
        hhdm_offset,
        memory,
        device_tree,
        rsdp,
    })
}

/// The most memory-map entries kept (Limine reports at most 256).
const MAX_REGIONS: usize = 256;

/// The kernel's copy of the memory map (the response lives in bootloader-reclaimable
/// memory, which the kernel reclaims).
struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    count: usize,
}

static MEMORY_MAP_COPY: spin::Once<MemoryMap> = spin::Once::new();

/// Copy the loader's memory map out of its response (once; `early` does it first thing).
fn copy_memory_map() -> Option<&'static MemoryMap> {
    if let Some(copy) = MEMORY_MAP_COPY.get() {
        return Some(copy);
    }
    let entries = MEMORY_MAP.get_response()?.entries();
    Some(MEMORY_MAP_COPY.call_once(|| {
        let empty = Region {
            base: 0,
            length: 0,
            kind: RegionKind::Reserved,
        };
        let mut map = MemoryMap {
            regions: [empty; MAX_REGIONS],
            count: 0,
        };
        // Entries beyond the limit are dropped: the kernel then simply does not use them.
        for (slot, entry) in map.regions.iter_mut().zip(entries.iter()) {
            *slot = Region {
                base: entry.base,
                length: entry.length,
                kind: region_kind(entry.entry_type),
            };
            map.count += 1;
        }
        map
    }))
}

/// The loader's memory map (the kernel's copy of it), or `None` when it gave none.
pub fn memory_regions() -> Option<impl Iterator<Item = Region>> {
    let map = copy_memory_map()?;
    Some(map.regions[..map.count].iter().copied())
}

fn region_kind(kind: EntryType) -> RegionKind {
    // The crate hides the protocol's number; map its named constants back.
    const KINDS: [(EntryType, RegionKind); 8] = [
        (EntryType::USABLE, RegionKind::Usable),
        (EntryType::RESERVED, RegionKind::Reserved),
        (EntryType::ACPI_RECLAIMABLE, RegionKind::AcpiReclaimable),
        (EntryType::ACPI_NVS, RegionKind::AcpiNvs),
        (EntryType::BAD_MEMORY, RegionKind::BadMemory),
        (
            EntryType::BOOTLOADER_RECLAIMABLE,
            RegionKind::BootloaderReclaimable,
        ),
        (
            EntryType::EXECUTABLE_AND_MODULES,
            RegionKind::ExecutableAndModules,
        ),
        (EntryType::FRAMEBUFFER, RegionKind::Framebuffer),
    ];
    KINDS
        .iter()
        .find(|(code, _)| *code == kind)
        .map_or(RegionKind::Unknown(u64::MAX), |(_, k)| *k)
}

fn firmware_name(kind: FirmwareType) -> &'static str {
    match kind {
        FirmwareType::X86_BIOS => "x86 BIOS",
        FirmwareType::UEFI_32 => "UEFI (32-bit)",
        FirmwareType::UEFI_64 => "UEFI (64-bit)",
        FirmwareType::SBI => "SBI",
        _ => "unknown",
    }
}

/// What the kernel knows about its boot, copied out of (or borrowing from) the responses.
pub struct BootInfo {
    pub base_revision: u64,
    pub bootloader: (&'static str, &'static str),
    pub hhdm_offset: u64,
    pub memory: Summary,
    pub cmdline: Cmdline<'static>,
    pub has_device_tree: bool,
    pub rsdp: Option<u64>,
    /// The firmware type's name, when the loader said.
    pub firmware: Option<&'static str>,
    /// The paging mode the loader gave, in words (`None`: no paging-mode response, which
    /// means the protocol's default, 4-level; any other mode ends the boot in `early`).
    pub paging: Option<&'static str>,
}

/// Copy `text` (in loader memory) to the kernel heap, for the kernel's lifetime.
fn keep(text: &str) -> &'static str {
    alloc::boxed::Box::leak(alloc::string::String::from(text).into_boxed_str())
}

/// One boot module, as the kernel keeps it: its path and command line copied out of the
/// response, its contents left where the loader put them ("executable and modules"
/// memory, never reclaimed).
#[derive(Clone, Copy)]
struct Module {
    path: &'static str,
    cmdline: &'static str,
    contents: &'static [u8],
}

static MODULE_COPIES: spin::Once<alloc::vec::Vec<Module>> = spin::Once::new();

/// Copy the module list out of the Module response (once; heap needed).
fn copy_modules() {
    MODULE_COPIES.call_once(|| {
        let files = MODULES
            .get_response()
            .map_or(&[][..], |response| response.modules());
        files
            .iter()
            .filter_map(|file| {
                let size = usize::try_from(file.size()).ok()?;
                // SAFETY: the loader placed the module at `addr()` (an HHDM address under
                // base revision 2) with `size()` bytes, in memory of type "executable and
                // modules" that the kernel never hands to its frame allocator, so it stays
                // valid and unchanged for the kernel's lifetime.
                let contents = unsafe { core::slice::from_raw_parts(file.addr(), size) };
                Some(Module {
                    path: keep(text(file.path())),
                    cmdline: keep(text(file.string())),
                    contents,
                })
            })
            .collect()
    });
}

/// Copy everything the kernel keeps from the responses (needs the heap). After this, no
/// response is read again, so bootloader-reclaimable memory can be reclaimed.
pub fn collect(early: &Early) -> BootInfo {
    copy_modules();
    let bootloader = BOOTLOADER_INFO
        .get_response()
        .map_or(("(unknown)", "(no Bootloader Info response)"), |info| {
            (keep(info.name()), keep(info.version()))
        });
    let cmdline = EXECUTABLE_FILE.get_response().map_or("", |response| {
        keep(response.file().string().to_str().unwrap_or(""))
    });
    BootInfo {
        base_revision: BASE_REVISION
            .loaded_revision()
            .unwrap_or(BASE_REVISION_WANTED),
        bootloader,
        hhdm_offset: early.hhdm_offset,
        memory: early.memory,
        cmdline: Cmdline::new(cmdline),
        has_device_tree: early.device_tree.is_some(),
        rsdp: early.rsdp,
        firmware: FIRMWARE_TYPE
            .get_response()
            .map(|response| firmware_name(response.firmware_type())),
        // `early` refused any other mode.
        paging: PAGING_MODE.get_response().map(|_| "4-level"),
    }
}

/// The boot modules, as (path, size in bytes, module command line), from the kernel's
/// copy (empty before [`collect`]).
pub fn modules() -> impl Iterator<Item = (&'static str, u64, &'static str)> {
    MODULE_COPIES
        .get()
        .map_or(&[][..], |modules| &modules[..])
        .iter()
        .map(|module| (module.path, module.contents.len() as u64, module.cmdline))
}

/// The contents of the boot module whose command line is `name` (xtask gives each module
/// its program name as command line), as a slice of loader memory.
pub fn module(name: &str) -> Option<&'static [u8]> {
    MODULE_COPIES
        .get()?
        .iter()
        .find(|module| module.cmdline == name)
        .map(|module| module.contents)
}

/// The name (command line) of the boot module whose contents are exactly `bytes`, for
/// naming the processes made from it.
pub fn module_name_of(bytes: &[u8]) -> Option<&'static str> {
    MODULE_COPIES
        .get()?
        .iter()
        .find(|module| {
            module.contents.as_ptr() == bytes.as_ptr() && module.contents.len() == bytes.len()
        })
        .map(|module| module.cmdline)
}

/// Bytes of the kernel image as linked (text, rodata, data and bss).
pub fn kernel_image_bytes() -> u64 {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __kernel_end: u8;
    }
    let start = &raw const __kernel_start as u64;
    let end = &raw const __kernel_end as u64;
    end - start
}

fn text(string: &CStr) -> &str {
    string.to_str().unwrap_or("(not UTF-8)")
}

impl BootInfo {
    /// The banner every boot prints; the boot test asserts on these lines.
    pub fn print_banner(&self) {
        println!("Keel {} {}", env!("CARGO_PKG_VERSION"), Cpu::NAME);
        println!("bootloader: {} {}", self.bootloader.0, self.bootloader.1);
        println!("base revision: {}", self.base_revision);
        if let Some(firmware) = self.firmware {
            println!("firmware: {firmware}");
        }
        println!("hhdm: {:#x}", self.hhdm_offset);
        match self.paging {
            Some(mode) => println!("paging: {mode}"),
            None => println!("paging: 4-level (no paging-mode response: the protocol's default)"),
        }
        println!(
            "memory: {} MiB usable in {} regions ({} KiB bootloader-reclaimable)",
            self.memory.usable_mib(),
            self.memory.regions,
            self.memory.reclaimable_bytes >> 10,
        );
        match smp::reported() {
            Some((count, bsp)) => println!("cpus: {count} (bsp {bsp:#x})"),
            None => println!("cpus: 1 (no MP response)"),
        }
        println!("cmdline: {}", self.cmdline.as_str());
        if self.has_device_tree {
            println!("device tree: yes");
        }
        if let Some(rsdp) = self.rsdp {
            println!("acpi rsdp: {rsdp:#x}");
        }
        println!("modules: {}", modules().count());
        for (path, size, cmdline) in modules() {
            println!("module: {path} ({size} bytes) cmdline \"{cmdline}\"");
        }
    }
}
