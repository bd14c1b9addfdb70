//! What the firmware knows that the kernel asks about: ACPI and SMBIOS tables, the device
//! tree, the time, the framebuffer, entropy.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

#[cfg(target_arch = "x86_64")]
use efi_loader::acpi;
use efi_loader::protocol::{FRAMEBUFFER_RGB, VideoMode};
use efi_loader::{fdt, time};
use uefi::boot;
use uefi::proto::console::gop::{GraphicsOutput, PixelFormat};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::rng::Rng;
use uefi::proto::unsafe_protocol;
use uefi::table::cfg::ConfigTableEntry;
use uefi::{Guid, guid, runtime, system};

use super::memory::{Owner, Pages};

/// The flattened device tree's configuration table (UEFI spec, "Devicetree Tables").
const DEVICE_TREE_GUID: Guid = guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");

/// Physical addresses of firmware tables, from the EFI configuration table.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirmwareTables {
    pub rsdp: Option<u64>,
    pub smbios_32: Option<u64>,
    pub smbios_64: Option<u64>,
    pub device_tree: Option<u64>,
    pub system_table: u64,
}

pub fn firmware_tables() -> FirmwareTables {
    let mut tables = FirmwareTables {
        system_table: uefi::table::system_table_raw().map_or(0, |table| table.as_ptr() as u64),
        ..FirmwareTables::default()
    };
    system::with_config_table(|entries: &[ConfigTableEntry]| {
        let find = |guid: Guid| {
            entries
                .iter()
                .find(|entry| entry.guid == guid)
                .map(|entry| entry.address as u64)
        };
        tables.rsdp =
            find(ConfigTableEntry::ACPI2_GUID).or_else(|| find(ConfigTableEntry::ACPI_GUID));
        tables.smbios_32 = find(ConfigTableEntry::SMBIOS_GUID);
        tables.smbios_64 = find(ConfigTableEntry::SMBIOS3_GUID);
        tables.device_tree = find(DEVICE_TREE_GUID);
    });
    tables
}

/// `length` bytes of firmware memory at `physical`.
///
/// # Safety
/// The range must be memory the firmware described (a table it published), readable
/// through the identity map while boot services run, and not written during the borrow.
unsafe fn firmware_bytes(physical: u64, length: usize) -> &'static [u8] {
    // SAFETY: the caller guarantees a readable, stable range.
    unsafe { core::slice::from_raw_parts(physical as *const u8, length) }
}

/// The ACPI MADT ("APIC"), found through the RSDP's root table.
#[cfg(target_arch = "x86_64")]
pub fn madt(rsdp: u64) -> Option<&'static [u8]> {
    // SAFETY: the RSDP's configuration table entry points at an RSDP (36 bytes in ACPI 2+;
    // ACPI 1 has 20, and `root_table` only reads past 20 when the revision says 2+).
    let rsdp = unsafe { firmware_bytes(rsdp, 36) };
    let (root, wide) = acpi::root_table(rsdp)?;
    // SAFETY: the root table the RSDP points to has a 36-byte header with its length.
    let header = unsafe { firmware_bytes(root, 36) };
    let length = acpi::table_length(header)?;
    // SAFETY: the firmware's table spans `length` bytes.
    let table = unsafe { firmware_bytes(root, length) };
    for address in acpi::root_entries(table, wide) {
        // SAFETY: every root table entry points at a table with a 36-byte header.
        let header = unsafe { firmware_bytes(address, 36) };
        if acpi::signature(header) == Some(b"APIC") {
            let length = acpi::table_length(header).unwrap_or(36);
            // SAFETY: the MADT spans its `length`.
            return Some(unsafe { firmware_bytes(address, length) });
        }
    }
    None
}

/// The MMIO bases of the I/O APICs, from the ACPI MADT.
#[cfg(target_arch = "x86_64")]
pub fn io_apics(rsdp: u64) -> Vec<u64> {
    madt(rsdp).map_or_else(Vec::new, |madt| acpi::io_apics(madt).collect())
}

/// The firmware's flattened device tree at `physical` (its configuration table entry).
#[cfg(target_arch = "aarch64")]
pub fn firmware_device_tree(physical: u64) -> Option<&'static [u8]> {
    // SAFETY: the configuration table entry points at a flattened device tree, whose
    // header starts with magic and total size.
    let header = unsafe { firmware_bytes(physical, 8) };
    let size = fdt::total_size(header).ok()?;
    // SAFETY: the blob spans `totalsize` bytes.
    Some(unsafe { firmware_bytes(physical, size) })
}

/// A copy of the firmware's device tree (or of `override_blob`) in bootloader-reclaimable
/// memory, with its memory nodes removed. Returns (pages, size).
pub fn device_tree(
    firmware_blob: Option<u64>,
    override_blob: Option<&[u8]>,
) -> Result<Option<Pages>, String> {
    let source: &[u8] = match (override_blob, firmware_blob) {
        (Some(blob), _) => blob,
        (None, Some(physical)) => {
            // SAFETY: the configuration table entry points at a flattened device tree,
            // whose header starts with magic and total size.
            let header = unsafe { firmware_bytes(physical, 8) };
            let size = fdt::total_size(header)
                .map_err(|error| format!("firmware device tree: {error}"))?;
            // SAFETY: the blob spans `totalsize` bytes.
            unsafe { firmware_bytes(physical, size) }
        }
        (None, None) => return Ok(None),
    };
    let size = fdt::total_size(source).map_err(|error| format!("device tree: {error}"))?;
    if size > source.len() {
        return Err(format!(
            "device tree: header says {size} bytes, the blob has {}",
            source.len()
        ));
    }
    let mut pages = Pages::allocate(size as u64, Owner::Bootloader, "the device tree")?;
    let copy = &mut pages.bytes_mut()[..size];
    copy.copy_from_slice(&source[..size]);
    fdt::remove_memory_nodes(copy).map_err(|error| format!("device tree: {error}"))?;
    Ok(Some(pages))
}

/// The RTC time as UNIX seconds. The firmware's time zone is ignored: firmware clocks on
/// the machines Keel targets keep UTC.
pub fn boot_time() -> Option<i64> {
    let now = runtime::get_time().ok()?;
    Some(time::unix_time(
        i64::from(now.year()),
        u32::from(now.month()),
        u32::from(now.day()),
        u32::from(now.hour()),
        u32::from(now.minute()),
        u32::from(now.second()),
    ))
}

/// Physical (start, length) of the loader's own executable image, whose loader code and
/// data pages the final memory map reports as bootloader-reclaimable; (0, 0) if the
/// firmware does not say.
pub fn loader_image() -> (u64, u64) {
    let Ok(image) = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()) else {
        return (0, 0);
    };
    let (base, size) = image.info();
    (base as u64, size)
}

/// 64 random bits from the firmware's RNG, if it has one.
pub fn random() -> Option<u64> {
    let handle = boot::get_handle_for_protocol::<Rng>().ok()?;
    let mut rng = boot::open_protocol_exclusive::<Rng>(handle).ok()?;
    let mut bytes = [0u8; 8];
    rng.get_rng(None, &mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The framebuffer GOP describes, with its modes and EDID.
#[derive(Clone, Debug)]
pub struct Framebuffer {
    pub base: u64,
    pub size: u64,
    pub current: VideoMode,
    pub modes: Vec<VideoMode>,
    pub edid: Option<Vec<u8>>,
}

/// EFI_EDID_ACTIVE_PROTOCOL (UEFI spec 12.9): the EDID of the active display.
#[repr(C)]
#[unsafe_protocol("bd8c1056-9f36-44ec-92a8-a6337f817986")]
struct EdidActive {
    size: u32,
    edid: *const u8,
}

/// EFI_EDID_DISCOVERED_PROTOCOL: the EDID the driver read, when none is active.
#[repr(C)]
#[unsafe_protocol("1c0c34f6-d380-41fa-a049-8ad06c1a66aa")]
struct EdidDiscovered {
    size: u32,
    edid: *const u8,
}

fn mask_shape(mask: u32) -> (u8, u8) {
    if mask == 0 {
        (0, 0)
    } else {
        (mask.count_ones() as u8, mask.trailing_zeros() as u8)
    }
}

fn video_mode(info: &uefi::proto::console::gop::ModeInfo) -> Option<VideoMode> {
    let (width, height) = info.resolution();
    let (bpp, red, green, blue) = match info.pixel_format() {
        PixelFormat::Rgb => (32, (8, 0), (8, 8), (8, 16)),
        PixelFormat::Bgr => (32, (8, 16), (8, 8), (8, 0)),
        PixelFormat::Bitmask => {
            let masks = info.pixel_bitmask()?;
            let all = masks.red | masks.green | masks.blue | masks.reserved;
            let bits = (32 - all.leading_zeros()).next_multiple_of(8) as u16;
            (
                bits,
                mask_shape(masks.red),
                mask_shape(masks.green),
                mask_shape(masks.blue),
            )
        }
        PixelFormat::BltOnly => return None,
    };
    Some(VideoMode {
        pitch: (info.stride() as u64) * u64::from(bpp / 8),
        width: width as u64,
        height: height as u64,
        bpp,
        memory_model: FRAMEBUFFER_RGB,
        red_mask_size: red.0,
        red_mask_shift: red.1,
        green_mask_size: green.0,
        green_mask_shift: green.1,
        blue_mask_size: blue.0,
        blue_mask_shift: blue.1,
    })
}

fn edid_of(handle: uefi::Handle) -> Option<Vec<u8>> {
    let image = boot::image_handle();
    let params = || boot::OpenProtocolParams {
        handle,
        agent: image,
        controller: None,
    };
    // SAFETY: the EDID protocols are read-only data the GOP driver keeps installed on
    // its handle; non-exclusive opening disturbs nothing. Their `edid` pointer is valid
    // for `size` bytes (UEFI spec 12.9).
    unsafe {
        if let Ok(active) =
            boot::open_protocol::<EdidActive>(params(), boot::OpenProtocolAttributes::GetProtocol)
            && !active.edid.is_null()
            && active.size > 0
        {
            return Some(core::slice::from_raw_parts(active.edid, active.size as usize).to_vec());
        }
        if let Ok(found) = boot::open_protocol::<EdidDiscovered>(
            params(),
            boot::OpenProtocolAttributes::GetProtocol,
        ) && !found.edid.is_null()
            && found.size > 0
        {
            return Some(core::slice::from_raw_parts(found.edid, found.size as usize).to_vec());
        }
    }
    None
}

/// The GOP framebuffer, if the firmware has a graphics output with a linear framebuffer.
pub fn framebuffer() -> Option<Framebuffer> {
    let handle = boot::get_handle_for_protocol::<GraphicsOutput>().ok()?;
    // SAFETY: opened non-exclusively so the firmware console keeps drawing on it; the
    // loader only queries modes and the framebuffer address and never sets a mode.
    let mut gop = unsafe {
        boot::open_protocol::<GraphicsOutput>(
            boot::OpenProtocolParams {
                handle,
                agent: boot::image_handle(),
                controller: None,
            },
            boot::OpenProtocolAttributes::GetProtocol,
        )
    }
    .ok()?;
    let current = video_mode(&gop.current_mode_info())?;
    let modes = gop
        .modes()
        .filter_map(|mode| video_mode(mode.info()))
        .collect();
    let mut buffer = gop.frame_buffer();
    let (base, size) = (buffer.as_mut_ptr() as u64, buffer.size() as u64);
    if base == 0 || size == 0 {
        return None;
    }
    Some(Framebuffer {
        base,
        size,
        current,
        modes,
        edid: edid_of(handle),
    })
}
