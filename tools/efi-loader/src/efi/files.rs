//! Files on the volume the loader was started from (Limine's `boot():`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use efi_loader::blake2b;
use efi_loader::config::Uri;
use efi_loader::protocol::Uuid;
use uefi::boot::{self, ScopedProtocol};
use uefi::proto::device_path::DevicePath;
use uefi::proto::device_path::media::PartitionSignature;
use uefi::proto::device_path::{DeviceSubType, DeviceType};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::block::BlockIO;
use uefi::proto::media::file::{Directory, File, FileAttribute, FileInfo, FileMode};
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::{CString16, Handle, Status};

use super::memory::{Owner, Pages};

/// Where `limine.conf` may be, in the order Limine looks.
pub const CONFIG_PATHS: [&str; 5] = [
    "/limine.conf",
    "/limine/limine.conf",
    "/boot/limine.conf",
    "/boot/limine/limine.conf",
    "/EFI/BOOT/limine.conf",
];

/// The partition facts a `struct limine_file` reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct VolumeIdentity {
    pub partition_index: u32,
    pub mbr_disk_id: u32,
    pub gpt_disk_uuid: Uuid,
    pub gpt_part_uuid: Uuid,
}

/// The boot volume.
pub struct Volume {
    root: Directory,
    _file_system: ScopedProtocol<SimpleFileSystem>,
    pub identity: VolumeIdentity,
}

/// A file read into whole pages.
#[derive(Debug)]
pub struct Loaded {
    pub pages: Pages,
    pub size: u64,
}

impl Loaded {
    pub fn bytes(&self) -> &[u8] {
        &self.pages.bytes()[..self.size as usize]
    }
}

fn guid_to_uuid(guid: uefi::Guid) -> Uuid {
    let bytes = guid.to_bytes();
    Uuid {
        a: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        b: u16::from_le_bytes([bytes[4], bytes[5]]),
        c: u16::from_le_bytes([bytes[6], bytes[7]]),
        d: [
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ],
    }
}

impl Volume {
    /// Open the file system of the device the loader's image came from.
    pub fn open() -> Result<Volume, String> {
        let image = boot::image_handle();
        let mut file_system = boot::get_image_file_system(image).map_err(|error| {
            format!("cannot open the loader's own volume: {:?}", error.status())
        })?;
        let root = file_system.open_volume().map_err(|error| {
            format!(
                "cannot open the root directory of the boot volume: {:?}",
                error.status()
            )
        })?;
        let identity = identify(image).unwrap_or_default();
        Ok(Volume {
            root,
            _file_system: file_system,
            identity,
        })
    }

    /// Read `path` (with `/` separators) into pages owned by `owner`. `None` when the file
    /// does not exist.
    pub fn read(&mut self, path: &str, owner: Owner) -> Result<Option<Loaded>, String> {
        let efi_path = CString16::try_from(path.replace('/', "\\").as_str())
            .map_err(|_| format!("{path}: the path cannot be expressed in UCS-2"))?;
        let handle = match self
            .root
            .open(&efi_path, FileMode::Read, FileAttribute::empty())
        {
            Ok(handle) => handle,
            Err(error) if error.status() == Status::NOT_FOUND => return Ok(None),
            Err(error) => return Err(format!("{path}: cannot open: {:?}", error.status())),
        };
        let mut file = handle
            .into_regular_file()
            .ok_or_else(|| format!("{path}: is a directory"))?;
        let info = file
            .get_boxed_info::<FileInfo>()
            .map_err(|error| format!("{path}: cannot read its size: {:?}", error.status()))?;
        let size = info.file_size();
        let mut pages = Pages::allocate(size, owner, path)?;
        let buffer = &mut pages.bytes_mut()[..size as usize];
        let mut done = 0;
        while done < buffer.len() {
            let read = file.read(&mut buffer[done..]).map_err(|error| {
                format!(
                    "{path}: read failed after {done} bytes: {:?}",
                    error.status()
                )
            })?;
            if read == 0 {
                return Err(format!("{path}: file ended after {done} of {size} bytes"));
            }
            done += read;
        }
        Ok(Some(Loaded { pages, size }))
    }

    /// Read the file a configuration URI names; a missing file or a hash mismatch is an
    /// error naming `what` and the configuration line.
    pub fn read_uri(&mut self, uri: &Uri, owner: Owner, what: &str) -> Result<Loaded, String> {
        let loaded = self
            .read(&uri.path, owner)?
            .ok_or_else(|| format!("{what} {} not found on the boot volume", uri.path))?;
        if let Some(hash) = &uri.hash
            && !blake2b::matches_hex(loaded.bytes(), hash)
        {
            return Err(format!(
                "{what} {}: BLAKE2b hash does not match the one in the configuration",
                uri.path
            ));
        }
        Ok(loaded)
    }

    /// Find and read `limine.conf`: (path, contents).
    pub fn config(&mut self) -> Result<(String, String), String> {
        for path in CONFIG_PATHS {
            if let Some(file) = self.read(path, Owner::Bootloader)? {
                let text = core::str::from_utf8(file.bytes()).map_err(|error| {
                    format!("{path}: not UTF-8 text (byte {})", error.valid_up_to())
                })?;
                return Ok((path.to_string(), text.to_string()));
            }
        }
        Err(format!(
            "limine.conf not found on the boot volume (looked in {})",
            CONFIG_PATHS.join(", ")
        ))
    }
}

/// Partition number and disk identifiers of the loader's volume, from its device path
/// (and, for GPT, the disk's header).
fn identify(image: Handle) -> Option<VolumeIdentity> {
    let loaded = boot::open_protocol_exclusive::<LoadedImage>(image).ok()?;
    let device = loaded.device()?;
    // SAFETY: the device path protocol is only read, and the firmware keeps it installed
    // on the boot device while the loader runs; opening it non-exclusively disturbs no
    // driver (exclusive opening would disconnect the file system's drivers).
    let path = unsafe {
        boot::open_protocol::<DevicePath>(
            boot::OpenProtocolParams {
                handle: device,
                agent: image,
                controller: None,
            },
            boot::OpenProtocolAttributes::GetProtocol,
        )
    }
    .ok()?;
    let mut identity = VolumeIdentity::default();
    let mut disk_path_length = 0;
    let mut offset = 0;
    for node in path.node_iter() {
        if node.device_type() == DeviceType::MEDIA
            && node.sub_type() == DeviceSubType::MEDIA_HARD_DRIVE
        {
            let Ok(uefi::proto::device_path::DevicePathNodeEnum::MediaHardDrive(drive)) =
                node.as_enum()
            else {
                break;
            };
            identity.partition_index = drive.partition_number();
            match drive.partition_signature() {
                PartitionSignature::Mbr(signature) => {
                    identity.mbr_disk_id = u32::from_le_bytes(signature)
                }
                PartitionSignature::Guid(guid) => identity.gpt_part_uuid = guid_to_uuid(guid),
                _ => {}
            }
            disk_path_length = offset;
            break;
        }
        offset += node.length() as usize;
    }
    if identity.gpt_part_uuid != Uuid::default() {
        identity.gpt_disk_uuid =
            gpt_disk_uuid(&path.as_bytes()[..disk_path_length]).unwrap_or_default();
    }
    Some(identity)
}

/// The disk GUID from the GPT header of the whole disk whose device path is `disk_path`.
fn gpt_disk_uuid(disk_path: &[u8]) -> Option<Uuid> {
    let handles = boot::find_handles::<BlockIO>().ok()?;
    let image = boot::image_handle();
    for handle in handles {
        // SAFETY: read-only, non-exclusive use of a protocol the firmware keeps installed.
        let Ok(path) = (unsafe {
            boot::open_protocol::<DevicePath>(
                boot::OpenProtocolParams {
                    handle,
                    agent: image,
                    controller: None,
                },
                boot::OpenProtocolAttributes::GetProtocol,
            )
        }) else {
            continue;
        };
        let bytes = path.as_bytes();
        // The disk's path is ours up to the partition node, then the end node (4 bytes).
        if bytes.len() != disk_path.len() + 4 || &bytes[..disk_path.len()] != disk_path {
            continue;
        }
        // SAFETY: as above; reading blocks does not change the device.
        let mut block = unsafe {
            boot::open_protocol::<BlockIO>(
                boot::OpenProtocolParams {
                    handle,
                    agent: image,
                    controller: None,
                },
                boot::OpenProtocolAttributes::GetProtocol,
            )
        }
        .ok()?;
        let media = block.media();
        let (block_size, media_id) = (media.block_size() as usize, media.media_id());
        if block_size < 512 || media.is_logical_partition() {
            return None;
        }
        let mut header: Vec<u8> = alloc::vec![0; block_size];
        block.read_blocks(media_id, 1, &mut header).ok()?;
        if &header[..8] != b"EFI PART" {
            return None;
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&header[56..72]);
        return Some(guid_to_uuid(uefi::Guid::from_bytes(guid)));
    }
    None
}
