//! The kernel as loaded: its file, its image in one physically contiguous block, its
//! requests and base revision, and the modules it and its entry ask for.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use efi_loader::config::{BootEntry, Uri};
use efi_loader::elf::{self, Executable};
use efi_loader::protocol::{self, InternalModule, RequestKind};
use efi_loader::requests::{self, BaseRevision, Found, Scan};
use uefi::println;

use super::arch;
use super::files::{Loaded, Volume};
use super::memory::{Owner, Pages};
use super::platform;

/// A loaded kernel, relocated, with its requests found and its base revision settled.
pub struct Kernel {
    /// Path on the boot volume.
    pub path: String,
    /// The file as read (the Executable File response points here).
    pub file: Loaded,
    pub executable: Executable,
    pub slide: u64,
    /// The image block: `executable.image_size()` bytes at this physical address.
    pub image: Pages,
    /// Where the image block is mapped.
    pub virtual_base: u64,
    pub scan: Scan,
    pub base_revision: BaseRevision,
    /// The entry point (the ELF's, or the Entry Point request's).
    pub entry: u64,
    /// The paging mode the kernel gets (`protocol::PAGING_MODE_*`).
    pub paging_mode: u64,
}

/// A module to hand over: where it is and what the kernel is told about it.
pub struct Module {
    pub loaded: Loaded,
    pub path: String,
    pub cmdline: String,
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl Kernel {
    /// Read, check, lay out and relocate the entry's kernel, then read its requests.
    pub fn load(volume: &mut Volume, entry: &BootEntry) -> Result<Kernel, String> {
        let path = &entry.kernel.path;
        let context = |message: &dyn core::fmt::Display| {
            entry.at(entry.kernel_line, format_args!("kernel {path}: {message}"))
        };
        let file = volume
            .read_uri(&entry.kernel, Owner::Kernel, "kernel")
            .map_err(|error| entry.at(entry.kernel_line, error))?;
        let executable = elf::parse(file.bytes(), arch::MACHINE).map_err(|e| context(&e))?;
        let random = (entry.kaslr && executable.relocatable).then(|| {
            platform::random().unwrap_or_else(|| efi_loader::hhdm::scramble(arch::counter()))
        });
        let slide = executable.choose_slide(random);
        let mut image =
            Pages::allocate(executable.image_size(), Owner::Kernel, "the kernel image")?;
        let virtual_base = executable.image_start.wrapping_add(slide);
        let bytes = &mut image.bytes_mut()[..executable.image_size() as usize];
        executable.load(file.bytes(), bytes);
        let relocations = executable
            .relocate(bytes, slide, arch::MACHINE)
            .map_err(|e| context(&e))?;
        let scan = requests::scan(bytes, virtual_base).map_err(|e| context(&e))?;
        for warning in &scan.warnings {
            println!("warning: kernel {path}: {warning}");
        }
        let base_revision = requests::negotiate(scan.base_revision.map(|(_, requested)| requested))
            .map_err(|e| context(&e))?;
        if let Some((offset, _)) = scan.base_revision {
            requests::answer_base_revision(bytes, offset, &base_revision);
        }
        let mut kernel = Kernel {
            path: path.clone(),
            file,
            executable,
            slide,
            image,
            virtual_base,
            scan,
            base_revision,
            entry: 0,
            paging_mode: protocol::PAGING_MODE_4LEVEL,
        };
        kernel.entry = kernel.entry_point().map_err(|e| context(&e))?;
        kernel.paging_mode = kernel.decide_paging_mode().map_err(|e| context(&e))?;
        println!(
            "kernel: {}, {} bytes, image {:#x}..{:#x} at physical {:#x}{}",
            kernel.path,
            kernel.file.size,
            kernel.virtual_base,
            kernel.virtual_base + kernel.executable.image_size(),
            kernel.image.physical,
            if kernel.executable.relocatable {
                format!(" (relocatable: slide {slide:#x}, {relocations} relocations)")
            } else {
                String::new()
            },
        );
        if kernel.base_revision.supported {
            println!("base revision {}", kernel.base_revision.loaded);
        } else {
            println!(
                "warning: the kernel asks for base revision {}, newer than this loader's {}; \
                 it is booted with {} and the tag says so",
                kernel.base_revision.requested,
                kernel.base_revision.loaded,
                kernel.base_revision.loaded
            );
        }
        Ok(kernel)
    }

    fn bytes(&self) -> &[u8] {
        &self.image.bytes()[..self.executable.image_size() as usize]
    }

    /// The request of `kind`, if the kernel made it.
    pub fn request(&self, kind: RequestKind) -> Option<Found> {
        self.scan.find(kind)
    }

    /// The word `at` bytes into a request.
    pub fn request_word(&self, found: Found, at: usize) -> u64 {
        read_u64(self.bytes(), found.offset + at).unwrap_or(0)
    }

    /// Point a request's `response` member at `response` (a kernel address).
    pub fn respond(&mut self, found: Found, response: u64) {
        let at = found.offset + protocol::REQUEST_RESPONSE_OFFSET;
        self.image.bytes_mut()[at..at + 8].copy_from_slice(&response.to_le_bytes());
    }

    /// The word at a kernel virtual address inside the image.
    fn word_at(&self, address: u64) -> Option<u64> {
        let offset = address.checked_sub(self.virtual_base)?;
        read_u64(self.bytes(), usize::try_from(offset).ok()?)
    }

    /// The NUL-terminated string at a kernel virtual address inside the image.
    fn string_at(&self, address: u64) -> Option<&str> {
        let offset = usize::try_from(address.checked_sub(self.virtual_base)?).ok()?;
        let tail = &self.bytes().get(offset..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&tail[..end]).ok()
    }

    /// The paging mode for the kernel's Paging Mode request, within what the loader can
    /// hand over with (see [`arch::SUPPORTED_PAGING_MAX`]).
    fn decide_paging_mode(&self) -> Result<u64, String> {
        let request = self.request(RequestKind::PagingMode).map(|found| {
            let word =
                |index: usize| self.request_word(found, protocol::REQUEST_EXTRA_OFFSET + 8 * index);
            requests::PagingRequest {
                revision: found.revision,
                mode: word(0),
                max_mode: word(1),
                min_mode: word(2),
            }
        });
        if let Some(request) = request
            && request.mode > arch::SUPPORTED_PAGING_MAX
            && arch::cpu_has_5level()
        {
            println!(
                "note: the CPU has 5-level paging, but this loader hands over with 4-level paging only"
            );
        }
        requests::paging_mode(request, arch::SUPPORTED_PAGING_MAX).map_err(|error| error.0)
    }

    /// The entry point: the ELF's, or the one the Entry Point request names.
    fn entry_point(&self) -> Result<u64, String> {
        let Some(found) = self.request(RequestKind::EntryPoint) else {
            return Ok(self.executable.entry.wrapping_add(self.slide));
        };
        let entry = self.request_word(found, protocol::REQUEST_EXTRA_OFFSET);
        let end = self.virtual_base + self.executable.image_size();
        if entry < self.virtual_base || entry >= end {
            return Err(format!(
                "the Entry Point request names {entry:#x}, outside the loaded image"
            ));
        }
        Ok(entry)
    }

    /// Internal modules (asked for by the kernel, revision 1 Module requests) first, then
    /// the entry's `module_path`s.
    pub fn modules(&self, volume: &mut Volume, entry: &BootEntry) -> Result<Vec<Module>, String> {
        let mut modules = Vec::new();
        if let Some(found) = self.request(RequestKind::Module)
            && found.revision >= 1
        {
            let count = self.request_word(found, protocol::REQUEST_EXTRA_OFFSET);
            let list = self.request_word(found, protocol::REQUEST_EXTRA_OFFSET + 8);
            for index in 0..count {
                if let Some(module) = self.internal_module(volume, list, index)? {
                    modules.push(module);
                }
            }
        }
        for module in &entry.modules {
            let loaded = volume
                .read_uri(&module.uri, Owner::Kernel, "module")
                .map_err(|error| entry.at(module.line, error))?;
            modules.push(Module {
                loaded,
                path: module.uri.path.clone(),
                cmdline: module.cmdline.clone(),
            });
        }
        Ok(modules)
    }

    fn internal_module(
        &self,
        volume: &mut Volume,
        list: u64,
        index: u64,
    ) -> Result<Option<Module>, String> {
        let bad = || {
            format!(
                "kernel {}: internal module {index} is not readable in the image",
                self.path
            )
        };
        let record = self.word_at(list + 8 * index).ok_or_else(bad)?;
        let module = InternalModule {
            path: self.word_at(record).ok_or_else(bad)?,
            string: self.word_at(record + 8).ok_or_else(bad)?,
            flags: self.word_at(record + 16).ok_or_else(bad)?,
        };
        let path = self.string_at(module.path).ok_or_else(bad)?;
        if module.flags & protocol::INTERNAL_MODULE_COMPRESSED != 0 {
            return Err(format!(
                "kernel {}: internal module {path} is flagged compressed; this loader cannot decompress modules",
                self.path
            ));
        }
        let cmdline = self.string_at(module.string).ok_or_else(bad)?.to_string();
        let (relative, hash) = match path.rsplit_once('#') {
            Some((relative, hash)) => (relative, Some(hash.to_ascii_lowercase())),
            None => (path, None),
        };
        // Relative to the kernel's directory, as the protocol says, and normalized as
        // Limine reports it.
        let full = efi_loader::path::absolute(relative, efi_loader::path::directory(&self.path));
        let uri = Uri {
            path: full.clone(),
            hash,
        };
        match volume.read_uri(&uri, Owner::Kernel, "internal module") {
            Ok(loaded) => Ok(Some(Module {
                loaded,
                path: full,
                cmdline,
            })),
            Err(error) if module.flags & protocol::INTERNAL_MODULE_REQUIRED != 0 => Err(error),
            Err(error) => {
                println!("note: optional {error}; skipped");
                Ok(None)
            }
        }
    }
}
