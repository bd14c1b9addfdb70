//! The Limine boot protocol's numbers and structures, as the loader writes them.
//!
//! Everything here is transcribed from the protocol text (`PROTOCOL.md` of the Limine
//! project): request identifiers, the base revision tag, the request delimiters, memory
//! map types, and the `#[repr(C)]` layout of every response the loader produces. Layout
//! tests at the bottom pin the sizes and offsets the kernel side (the `limine` crate)
//! reads.

/// The name the loader reports in the Bootloader Info response: the one thing by which a
/// kernel can tell it from real Limine.
pub const LOADER_NAME: &str = "keel-efi-loader";

/// The first two words of every request identifier.
pub const COMMON_MAGIC: [u64; 2] = [0xc7b1_dd30_df4c_8b88, 0x0a82_e883_a194_f07b];

/// The first two words of the base revision tag; the third is the requested revision.
pub const BASE_REVISION_MAGIC: [u64; 2] = [0xf956_2b2d_5c95_a6c8, 0x6a7b_3849_4453_6bdc];

/// Marks the start of the area holding requests.
pub const REQUESTS_START_MARKER: [u64; 4] = [
    0xf6b8_f4b3_9de7_d1ae,
    0xfab9_1a69_40fc_b9cf,
    0x785c_6ed0_15d3_e316,
    0x181e_920a_7852_b9d9,
];

/// Marks the end of the area holding requests.
pub const REQUESTS_END_MARKER: [u64; 2] = [0xadc0_e053_1bb1_0d03, 0x9572_709f_3176_4c62];

/// The highest base revision this loader implements. A kernel asking for more is loaded
/// with this one and told so (the tag's third word is left unchanged).
pub const MAX_BASE_REVISION: u64 = 3;
/// The lowest base revision this loader implements. Revision 0 (no tag at all) is
/// deprecated; the protocol lets a loader that dropped it refuse such kernels.
pub const MIN_BASE_REVISION: u64 = 1;

/// Kernels must be linked (or slid) at or above this address.
pub const KERNEL_MIN_VIRTUAL: u64 = 0xffff_ffff_8000_0000;

/// The protocol's default boot stack size, used when no Stack Size request asks for more.
pub const DEFAULT_STACK_SIZE: u64 = 64 * 1024;

/// Where the higher-half direct map starts with 4-level (48-bit) paging. These are the
/// bases Limine uses when it does not randomise the map; kernels must read the HHDM
/// response and never assume them.
pub const HHDM_OFFSET_X86_64: u64 = 0xffff_8000_0000_0000;
/// See [`HHDM_OFFSET_X86_64`]; on AArch64 the whole TTBR1 half starts here with T1SZ = 16.
pub const HHDM_OFFSET_AARCH64: u64 = 0xffff_0000_0000_0000;

/// The paging mode value both architectures use for 4-level (48-bit) paging.
pub const PAGING_MODE_4LEVEL: u64 = 0;
/// The paging mode value both architectures use for 5-level paging (x86_64 LA57, 57-bit;
/// AArch64 52-bit with FEAT_LPA2).
pub const PAGING_MODE_5LEVEL: u64 = 1;
/// The lowest paging mode value (`LIMINE_PAGING_MODE_MIN`).
pub const PAGING_MODE_MIN: u64 = PAGING_MODE_4LEVEL;

/// `firmware_type` value for 64-bit UEFI.
pub const FIRMWARE_TYPE_UEFI64: u64 = 2;

/// `memory_model` value of an RGB framebuffer.
pub const FRAMEBUFFER_RGB: u8 = 1;

/// Internal module flag: fail the boot when the module cannot be found.
pub const INTERNAL_MODULE_REQUIRED: u64 = 1 << 0;
/// Internal module flag: the file is compressed and the bootloader is to decompress it.
pub const INTERNAL_MODULE_COMPRESSED: u64 = 1 << 1;

/// The requests this loader knows by name. Answered ones are handled by the UEFI glue;
/// the others are recognised only so that the progress output can name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    BootloaderInfo,
    ExecutableCmdline,
    FirmwareType,
    StackSize,
    Hhdm,
    Framebuffer,
    PagingMode,
    Mp,
    RiscvBspHartid,
    MemoryMap,
    EntryPoint,
    ExecutableFile,
    Module,
    Rsdp,
    Smbios,
    EfiSystemTable,
    EfiMemoryMap,
    DateAtBoot,
    ExecutableAddress,
    DeviceTree,
    BootloaderPerformance,
    /// A request with the common magic whose last two words this loader does not know.
    Unknown([u64; 2]),
}

const KNOWN_REQUESTS: [(RequestKind, [u64; 2], &str); 21] = [
    (
        RequestKind::BootloaderInfo,
        [0xf550_38d8_e2a1_202f, 0x2794_26fc_f5f5_9740],
        "Bootloader Info",
    ),
    (
        RequestKind::ExecutableCmdline,
        [0x4b16_1536_e598_651e, 0xb390_ad4a_2f1f_303a],
        "Executable Command Line",
    ),
    (
        RequestKind::FirmwareType,
        [0x8c2f_75d9_0bef_28a8, 0x7045_a468_8eac_00c3],
        "Firmware Type",
    ),
    (
        RequestKind::StackSize,
        [0x224e_f046_0a8e_8926, 0xe1cb_0fc2_5f46_ea3d],
        "Stack Size",
    ),
    (
        RequestKind::Hhdm,
        [0x48dc_f1cb_8ad2_b852, 0x6398_4e95_9a98_244b],
        "HHDM",
    ),
    (
        RequestKind::Framebuffer,
        [0x9d58_27dc_d881_dd75, 0xa314_8604_f6fa_b11b],
        "Framebuffer",
    ),
    (
        RequestKind::PagingMode,
        [0x95c1_a0ed_ab09_44cb, 0xa4e5_cb38_42f7_488a],
        "Paging Mode",
    ),
    (
        RequestKind::Mp,
        [0x95a6_7b81_9a1b_857e, 0xa0b6_1b72_3b6a_73e0],
        "MP",
    ),
    (
        RequestKind::RiscvBspHartid,
        [0x1369_359f_0255_25f9, 0x2ff2_a561_7839_1bb6],
        "RISC-V BSP Hart ID",
    ),
    (
        RequestKind::MemoryMap,
        [0x67cf_3d9d_378a_806f, 0xe304_acdf_c50c_3c62],
        "Memory Map",
    ),
    (
        RequestKind::EntryPoint,
        [0x13d8_6c03_5a1c_d3e1, 0x2b0c_aa89_d8f3_026a],
        "Entry Point",
    ),
    (
        RequestKind::ExecutableFile,
        [0xad97_e90e_83f1_ed67, 0x31eb_5d1c_5ff2_3b69],
        "Executable File",
    ),
    (
        RequestKind::Module,
        [0x3e7e_2797_02be_32af, 0xca1c_4f3b_d128_0cee],
        "Module",
    ),
    (
        RequestKind::Rsdp,
        [0xc5e7_7b6b_397e_7b43, 0x2763_7845_accd_cf3c],
        "RSDP",
    ),
    (
        RequestKind::Smbios,
        [0x9e90_46f1_1e09_5391, 0xaa4a_520f_efbd_e5ee],
        "SMBIOS",
    ),
    (
        RequestKind::EfiSystemTable,
        [0x5ceb_a516_3eaa_f6d6, 0x0a69_8161_0cf6_5fcc],
        "EFI System Table",
    ),
    (
        RequestKind::EfiMemoryMap,
        [0x7df6_2a43_1d68_72d5, 0xa4fc_dfb3_e573_06c8],
        "EFI Memory Map",
    ),
    (
        RequestKind::DateAtBoot,
        [0x5027_46e1_84c0_88aa, 0xfbc5_ec83_e632_7893],
        "Date at Boot",
    ),
    (
        RequestKind::ExecutableAddress,
        [0x71ba_7686_3cc5_5f63, 0xb264_4a48_c516_a487],
        "Executable Address",
    ),
    (
        RequestKind::DeviceTree,
        [0xb40d_db48_fb54_bac7, 0x5450_8149_3f81_ffb7],
        "Device Tree Blob",
    ),
    (
        RequestKind::BootloaderPerformance,
        [0x6b50_ad9b_f36d_13ad, 0xdc4c_7e88_fc75_9e17],
        "Bootloader Performance",
    ),
];

impl RequestKind {
    /// The kind of request whose identifier ends in `tail` (the words after the common magic).
    pub fn from_id_tail(tail: [u64; 2]) -> Self {
        KNOWN_REQUESTS
            .iter()
            .find(|(_, id, _)| *id == tail)
            .map_or(RequestKind::Unknown(tail), |(kind, _, _)| *kind)
    }

    /// The full four-word identifier of the request.
    pub fn id(self) -> [u64; 4] {
        let tail = match self {
            RequestKind::Unknown(tail) => tail,
            known => KNOWN_REQUESTS
                .iter()
                .find(|(kind, _, _)| *kind == known)
                .map(|e| e.1)
                .unwrap_or([0; 2]),
        };
        [COMMON_MAGIC[0], COMMON_MAGIC[1], tail[0], tail[1]]
    }

    /// The protocol's name for the feature.
    pub fn name(self) -> &'static str {
        KNOWN_REQUESTS
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map_or("unknown", |(_, _, name)| name)
    }
}

/// Byte offset of the `revision` word in every request.
pub const REQUEST_REVISION_OFFSET: usize = 32;
/// Byte offset of the `response` pointer in every request.
pub const REQUEST_RESPONSE_OFFSET: usize = 40;
/// Byte offset of the first request-specific member.
pub const REQUEST_EXTRA_OFFSET: usize = 48;

/// Limine memory map entry types (the protocol's `LIMINE_MEMMAP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum MemoryType {
    Usable = 0,
    Reserved = 1,
    AcpiReclaimable = 2,
    AcpiNvs = 3,
    BadMemory = 4,
    BootloaderReclaimable = 5,
    ExecutableAndModules = 6,
    Framebuffer = 7,
}

/// `struct limine_memmap_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryMapEntry {
    pub base: u64,
    pub length: u64,
    pub kind: u64,
}

/// `struct limine_uuid` (the same bytes as an EFI GUID in memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Uuid {
    pub a: u32,
    pub b: u16,
    pub c: u16,
    pub d: [u8; 8],
}

/// `struct limine_file`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct File {
    pub revision: u64,
    pub address: u64,
    pub size: u64,
    pub path: u64,
    pub string: u64,
    pub media_type: u32,
    pub unused: u32,
    pub tftp_ip: u32,
    pub tftp_port: u32,
    pub partition_index: u32,
    pub mbr_disk_id: u32,
    pub gpt_disk_uuid: Uuid,
    pub gpt_part_uuid: Uuid,
    pub part_uuid: Uuid,
}

/// `struct limine_bootloader_info_response`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootloaderInfoResponse {
    pub revision: u64,
    pub name: u64,
    pub version: u64,
}

/// A response made of its revision and one 64-bit value: Firmware Type, HHDM, Paging Mode,
/// RSDP, Date at Boot, Device Tree Blob, Executable Command Line, Executable File (a
/// pointer to its `File`), EFI System Table.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct OneWordResponse {
    pub revision: u64,
    pub value: u64,
}

/// A response made of its revision only: Stack Size, Entry Point.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EmptyResponse {
    pub revision: u64,
}

/// `struct limine_executable_address_response`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ExecutableAddressResponse {
    pub revision: u64,
    pub physical_base: u64,
    pub virtual_base: u64,
}

/// A response holding a counted array of pointers: Memory Map, Module, Framebuffer.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ListResponse {
    pub revision: u64,
    pub count: u64,
    pub list: u64,
}

/// `struct limine_framebuffer` at response revision 1.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Framebuffer {
    pub address: u64,
    pub width: u64,
    pub height: u64,
    pub pitch: u64,
    pub bpp: u16,
    pub memory_model: u8,
    pub red_mask_size: u8,
    pub red_mask_shift: u8,
    pub green_mask_size: u8,
    pub green_mask_shift: u8,
    pub blue_mask_size: u8,
    pub blue_mask_shift: u8,
    pub unused: [u8; 7],
    pub edid_size: u64,
    pub edid: u64,
    pub mode_count: u64,
    pub modes: u64,
}

/// `struct limine_video_mode`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VideoMode {
    pub pitch: u64,
    pub width: u64,
    pub height: u64,
    pub bpp: u16,
    pub memory_model: u8,
    pub red_mask_size: u8,
    pub red_mask_shift: u8,
    pub green_mask_size: u8,
    pub green_mask_shift: u8,
    pub blue_mask_size: u8,
    pub blue_mask_shift: u8,
}

/// `struct limine_efi_memmap_response`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EfiMemoryMapResponse {
    pub revision: u64,
    pub memmap: u64,
    pub memmap_size: u64,
    pub desc_size: u64,
    pub desc_version: u64,
}

/// `struct limine_smbios_response`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct SmbiosResponse {
    pub revision: u64,
    pub entry_32: u64,
    pub entry_64: u64,
}

/// `struct limine_internal_module` (read from the kernel image).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct InternalModule {
    pub path: u64,
    pub string: u64,
    pub flags: u64,
}

/// Response revisions this loader reports. They match what the protocol text defines for
/// the members the loader fills in.
pub mod revision {
    /// Framebuffer responses carry the video mode list (revision 1 members).
    pub const FRAMEBUFFER: u64 = 1;
    /// Module responses are revision 2, as Limine 8.2 answers them (the revision that
    /// knows compressed internal modules; this loader refuses a module flagged so, as it
    /// has no decompressor).
    pub const MODULE: u64 = 2;
    /// Every other response is revision 0.
    pub const DEFAULT: u64 = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_protocol() {
        assert_eq!(size_of::<MemoryMapEntry>(), 24);
        assert_eq!(size_of::<Uuid>(), 16);
        assert_eq!(offset_of!(File, media_type), 40);
        assert_eq!(offset_of!(File, partition_index), 56);
        assert_eq!(offset_of!(File, gpt_disk_uuid), 64);
        assert_eq!(size_of::<File>(), 112);
        assert_eq!(offset_of!(Framebuffer, bpp), 32);
        assert_eq!(offset_of!(Framebuffer, unused), 41);
        assert_eq!(offset_of!(Framebuffer, edid_size), 48);
        assert_eq!(offset_of!(Framebuffer, mode_count), 64);
        assert_eq!(size_of::<Framebuffer>(), 80);
        assert_eq!(offset_of!(VideoMode, bpp), 24);
        assert_eq!(size_of::<VideoMode>(), 40);
        assert_eq!(size_of::<InternalModule>(), 24);
    }

    #[test]
    fn response_revisions_are_limine_8_2s() {
        assert_eq!(revision::MODULE, 2);
        assert_eq!(revision::FRAMEBUFFER, 1);
        assert_eq!(revision::DEFAULT, 0);
    }

    #[test]
    fn request_ids_round_trip() {
        let id = RequestKind::Hhdm.id();
        assert_eq!(&id[..2], &COMMON_MAGIC);
        assert_eq!(RequestKind::from_id_tail([id[2], id[3]]), RequestKind::Hhdm);
        assert_eq!(
            RequestKind::from_id_tail([1, 2]),
            RequestKind::Unknown([1, 2])
        );
        assert_eq!(RequestKind::Module.name(), "Module");
    }
}
