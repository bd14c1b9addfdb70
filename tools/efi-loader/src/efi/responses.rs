//! Writing the responses into bootloader-reclaimable memory and pointing the kernel's
//! requests at them. Every pointer a response holds is a kernel (HHDM) address, except
//! the ones base revision 3 makes physical (RSDP, SMBIOS, EFI system table).
//!
//! The Memory Map and EFI Memory Map responses are reserved here and filled after
//! ExitBootServices, when the final map exists.

use alloc::vec::Vec;

use efi_loader::protocol::{
    self, BootloaderInfoResponse, EfiMemoryMapResponse, EmptyResponse, ExecutableAddressResponse,
    File, ListResponse, OneWordResponse, RequestKind, SmbiosResponse, Uuid, revision,
};

use super::files::VolumeIdentity;
use super::kernel::{Kernel, Module};
use super::memory::{Arena, Span};
use super::platform::{FirmwareTables, Framebuffer};

/// What the responses report, gathered before they are written.
pub struct Facts<'a> {
    pub cmdline: &'a str,
    pub modules: &'a [Module],
    pub volume: VolumeIdentity,
    pub firmware: FirmwareTables,
    pub device_tree: Option<Span>,
    pub framebuffer: Option<&'a Framebuffer>,
    pub boot_time: Option<i64>,
    pub hhdm: u64,
}

/// What was answered, and the responses still to fill after ExitBootServices (their
/// physical addresses).
pub struct Answered {
    pub names: Vec<&'static str>,
    pub memory_map: Option<u64>,
    pub efi_memory_map: Option<u64>,
}

/// Bytes the arena needs for `facts` (beyond the memory map, which the caller adds).
pub fn arena_size(kernel: &Kernel, facts: &Facts) -> u64 {
    let mut size = 16 * 1024 + (kernel.path.len() + facts.cmdline.len()) as u64;
    for module in facts.modules {
        size += 256 + (module.path.len() + module.cmdline.len()) as u64;
    }
    if let Some(framebuffer) = facts.framebuffer {
        size += 512 + 64 * framebuffer.modes.len() as u64;
        size += framebuffer
            .edid
            .as_ref()
            .map_or(0, |edid| edid.len() as u64);
    }
    size
}

struct Writer<'a> {
    kernel: &'a mut Kernel,
    arena: &'a mut Arena,
    names: Vec<&'static str>,
}

impl Writer<'_> {
    fn wanted(&self, kind: RequestKind) -> bool {
        self.kernel.request(kind).is_some()
    }

    /// Store `response` and point the request of `kind` at it; returns its physical address.
    fn answer<T: Copy>(&mut self, kind: RequestKind, response: T) -> u64 {
        let physical = self.arena.put(response);
        if let Some(found) = self.kernel.request(kind) {
            self.kernel.respond(found, self.arena.virtual_of(physical));
            self.names.push(kind.name());
        }
        physical
    }

    fn one_word(&mut self, kind: RequestKind, value: u64) {
        if self.wanted(kind) {
            self.answer(
                kind,
                OneWordResponse {
                    revision: revision::DEFAULT,
                    value,
                },
            );
        }
    }

    /// A `struct limine_file` for `size` bytes at `physical`; returns its kernel address.
    fn file(
        &mut self,
        physical: u64,
        size: u64,
        path: &str,
        string: u64,
        volume: VolumeIdentity,
    ) -> u64 {
        let record = File {
            revision: 0,
            address: self.arena.virtual_of(physical),
            size,
            path: self.arena.string(path),
            string,
            media_type: 0, // generic
            unused: 0,
            tftp_ip: 0,
            tftp_port: 0,
            partition_index: volume.partition_index,
            mbr_disk_id: volume.mbr_disk_id,
            gpt_disk_uuid: volume.gpt_disk_uuid,
            gpt_part_uuid: volume.gpt_part_uuid,
            part_uuid: Uuid::default(),
        };
        let physical = self.arena.put(record);
        self.arena.virtual_of(physical)
    }

    /// An array of kernel addresses, returned as a kernel address.
    fn pointers(&mut self, values: &[u64]) -> u64 {
        let array = self.arena.reserve(8 * values.len() as u64, 8);
        for (index, value) in values.iter().enumerate() {
            self.arena.write(array + 8 * index as u64, *value);
        }
        self.arena.virtual_of(array)
    }
}

/// Write every response the loader gives and point the requests at them.
pub fn answer_all(kernel: &mut Kernel, arena: &mut Arena, facts: &Facts) -> Answered {
    let hhdm = facts.hhdm;
    let revision_3 = kernel.base_revision.loaded == 3;
    let physical_on_3 = |address: u64| if revision_3 { address } else { address + hhdm };
    let executable = (
        kernel.file.pages.physical,
        kernel.file.size,
        kernel.path.clone(),
    );
    let image = (kernel.image.physical, kernel.virtual_base);
    let mut writer = Writer {
        kernel,
        arena,
        names: Vec::new(),
    };
    let rev = revision::DEFAULT;

    if writer.wanted(RequestKind::BootloaderInfo) {
        let name = writer.arena.string(protocol::LOADER_NAME);
        let version = writer.arena.string(env!("CARGO_PKG_VERSION"));
        writer.answer(
            RequestKind::BootloaderInfo,
            BootloaderInfoResponse {
                revision: rev,
                name,
                version,
            },
        );
    }
    writer.one_word(RequestKind::FirmwareType, protocol::FIRMWARE_TYPE_UEFI64);
    if writer.wanted(RequestKind::StackSize) {
        writer.answer(RequestKind::StackSize, EmptyResponse { revision: rev });
    }
    writer.one_word(RequestKind::Hhdm, hhdm);
    let paging_mode = writer.kernel.paging_mode;
    writer.one_word(RequestKind::PagingMode, paging_mode);
    if writer.wanted(RequestKind::EntryPoint) {
        writer.answer(RequestKind::EntryPoint, EmptyResponse { revision: rev });
    }

    // The executable's string and the command line response share one string.
    let cmdline = writer.arena.string(facts.cmdline);
    if writer.wanted(RequestKind::ExecutableFile) {
        let (physical, size, path) = &executable;
        let file = writer.file(*physical, *size, path, cmdline, facts.volume);
        writer.one_word(RequestKind::ExecutableFile, file);
    }
    writer.one_word(RequestKind::ExecutableCmdline, cmdline);
    if writer.wanted(RequestKind::Module) && !facts.modules.is_empty() {
        let mut files = Vec::with_capacity(facts.modules.len());
        for module in facts.modules {
            let string = writer.arena.string(&module.cmdline);
            let loaded = &module.loaded;
            let file = writer.file(
                loaded.pages.physical,
                loaded.size,
                &module.path,
                string,
                facts.volume,
            );
            files.push(file);
        }
        let list = writer.pointers(&files);
        let count = files.len() as u64;
        writer.answer(
            RequestKind::Module,
            ListResponse {
                revision: revision::MODULE,
                count,
                list,
            },
        );
    }

    let firmware = facts.firmware;
    if let Some(rsdp) = firmware.rsdp {
        writer.one_word(RequestKind::Rsdp, physical_on_3(rsdp));
    }
    if (firmware.smbios_32.is_some() || firmware.smbios_64.is_some())
        && writer.wanted(RequestKind::Smbios)
    {
        let response = SmbiosResponse {
            revision: rev,
            entry_32: firmware.smbios_32.map_or(0, physical_on_3),
            entry_64: firmware.smbios_64.map_or(0, physical_on_3),
        };
        writer.answer(RequestKind::Smbios, response);
    }
    if firmware.system_table != 0 {
        writer.one_word(
            RequestKind::EfiSystemTable,
            physical_on_3(firmware.system_table),
        );
    }
    if let Some(timestamp) = facts.boot_time {
        writer.one_word(RequestKind::DateAtBoot, timestamp as u64);
    }
    if writer.wanted(RequestKind::ExecutableAddress) {
        let response = ExecutableAddressResponse {
            revision: rev,
            physical_base: image.0,
            virtual_base: image.1,
        };
        writer.answer(RequestKind::ExecutableAddress, response);
    }
    if let Some(pages) = facts.device_tree {
        writer.one_word(RequestKind::DeviceTree, pages.physical + hhdm);
    }
    if let Some(framebuffer) = facts.framebuffer
        && writer.wanted(RequestKind::Framebuffer)
    {
        let mut modes = Vec::with_capacity(framebuffer.modes.len());
        for mode in &framebuffer.modes {
            let physical = writer.arena.put(*mode);
            modes.push(writer.arena.virtual_of(physical));
        }
        let modes = writer.pointers(&modes);
        let (edid_size, edid) = match &framebuffer.edid {
            Some(edid) => (edid.len() as u64, writer.arena.blob(edid)),
            None => (0, 0),
        };
        let mode = framebuffer.current;
        let record = writer.arena.put(protocol::Framebuffer {
            address: framebuffer.base + hhdm,
            width: mode.width,
            height: mode.height,
            pitch: mode.pitch,
            bpp: mode.bpp,
            memory_model: mode.memory_model,
            red_mask_size: mode.red_mask_size,
            red_mask_shift: mode.red_mask_shift,
            green_mask_size: mode.green_mask_size,
            green_mask_shift: mode.green_mask_shift,
            blue_mask_size: mode.blue_mask_size,
            blue_mask_shift: mode.blue_mask_shift,
            unused: [0; 7],
            edid_size,
            edid,
            mode_count: framebuffer.modes.len() as u64,
            modes,
        });
        let record = writer.arena.virtual_of(record);
        let list = writer.pointers(&[record]);
        writer.answer(
            RequestKind::Framebuffer,
            ListResponse {
                revision: revision::FRAMEBUFFER,
                count: 1,
                list,
            },
        );
    }
    let memory_map = writer.wanted(RequestKind::MemoryMap).then(|| {
        writer.answer(
            RequestKind::MemoryMap,
            ListResponse {
                revision: rev,
                count: 0,
                list: 0,
            },
        )
    });
    let efi_memory_map = writer.wanted(RequestKind::EfiMemoryMap).then(|| {
        let empty = EfiMemoryMapResponse {
            revision: rev,
            memmap: 0,
            memmap_size: 0,
            desc_size: 0,
            desc_version: 0,
        };
        writer.answer(RequestKind::EfiMemoryMap, empty)
    });
    Answered {
        names: writer.names,
        memory_map,
        efi_memory_map,
    }
}
