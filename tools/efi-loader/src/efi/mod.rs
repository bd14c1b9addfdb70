//! The loader's run, in the order things happen:
//!
//! 1. find and parse `limine.conf` on the boot volume, pick the entry (`console.rs`);
//! 2. load the kernel ELF into one physically contiguous block, relocate it if it is
//!    position-independent, find its requests, settle the base revision (`kernel.rs`);
//! 3. load the modules, gather what the firmware knows (`platform.rs`), write every
//!    response into bootloader-reclaimable memory and point the requests at them
//!    (`responses.rs`);
//! 4. reserve everything the rest needs (memory map buffers, page-table frames, the
//!    stack), exit boot services;
//! 5. with no allocation and no console left: convert the final memory map, build the
//!    page tables, and hand over (`handoff.rs`, then `x86_64.rs` / `aarch64.rs`).
//!
//! Every failure before step 5 is a message naming what failed (for the configuration,
//! file and line); after it, there is only the arch's `fatal`.

mod console;
mod files;
mod handoff;
mod kernel;
mod memory;
mod mp;
mod platform;
mod responses;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use alloc::format;
use alloc::string::{String, ToString};
use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use efi_loader::config;
use efi_loader::protocol::{self, RequestKind};
use efi_loader::{FOUR_GIB, PAGE_SIZE};
use uefi::boot;
use uefi::mem::memory_map::MemoryMap;
use uefi::println;

use files::Volume;
use handoff::{MemoryMapBuffers, Prepared};
use kernel::Kernel;
use memory::{Arena, Owner, Pages, TablePool};
use responses::Facts;

pub use arch::fatal;

/// Cleared just before ExitBootServices: from then on the console and the allocator are gone.
static BOOT_SERVICES: AtomicBool = AtomicBool::new(true);

/// Whether boot services (console, allocator) may still be used.
pub fn boot_services_active() -> bool {
    BOOT_SERVICES.load(Ordering::Relaxed)
}

/// Run the loader. Returns only on failure, with the message to show.
pub fn run() -> String {
    match boot_kernel() {
        Ok(never) => match never {},
        Err(message) => message,
    }
}

fn boot_kernel() -> Result<Infallible, String> {
    let version = env!("CARGO_PKG_VERSION");
    println!("{} {version} ({})", protocol::LOADER_NAME, arch::ARCH);
    // Like Limine: no firmware watchdog while the menu waits or the kernel boots.
    let _ = boot::set_watchdog_timer(0, 0x10000, None);
    #[cfg(target_arch = "aarch64")]
    let exception_level = arch::check_firmware_state()?;
    #[cfg(target_arch = "x86_64")]
    arch::check_firmware_state()?;

    let loader_image = platform::loader_image();

    // 1. Configuration.
    let mut volume = Volume::open()?;
    let (config_path, text) = volume.config()?;
    let config = config::parse(&config_path, &text, arch::ARCH).map_err(|e| e.to_string())?;
    println!("config: {config_path} ({} entries)", config.entries.len());
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    let number = console::choose_entry(&config);
    let entry = config.entry(number).map_err(|e| e.to_string())?;
    println!(
        "entry {number}: {} ({config_path}:{})",
        entry.name, entry.line
    );

    // 2. The kernel.
    let mut kernel = Kernel::load(&mut volume, &entry)?;

    // 3. Modules, firmware facts, responses.
    let modules = kernel.modules(&mut volume, &entry)?;
    for module in &modules {
        let physical = module.loaded.pages.physical;
        println!(
            "module: {} ({} bytes) at physical {physical:#x}",
            module.path, module.loaded.size
        );
    }
    let firmware = platform::firmware_tables();
    let device_tree = match kernel.request(RequestKind::DeviceTree) {
        Some(_) => {
            let override_file = match &entry.dtb_path {
                Some((uri, line)) => Some(
                    volume
                        .read_uri(uri, Owner::Bootloader, "device tree")
                        .map_err(|error| entry.at(*line, error))?,
                ),
                None => None,
            };
            let override_blob = override_file.as_ref().map(|file| file.bytes());
            platform::device_tree(firmware.device_tree, override_blob)?
        }
        None => None,
    };
    let framebuffer = kernel
        .request(RequestKind::Framebuffer)
        .and_then(|_| platform::framebuffer());
    if let Some(framebuffer) = &framebuffer {
        let mode = framebuffer.current;
        println!(
            "framebuffer: {}x{}, {} bpp, at {:#x}",
            mode.width, mode.height, mode.bpp, framebuffer.base
        );
    }
    let boot_time = kernel
        .request(RequestKind::DateAtBoot)
        .and_then(|_| platform::boot_time());
    let random_hhdm = entry
        .randomise_hhdm_base
        .then(|| platform::random().unwrap_or_else(|| efi_loader::hhdm::scramble(arch::counter())));
    let hhdm = efi_loader::hhdm::base(arch::HHDM_OFFSET, arch::VA_BITS, random_hhdm);
    println!(
        "hhdm base: {hhdm:#x} ({})",
        if random_hhdm.is_some() {
            "randomised"
        } else {
            "fixed by randomise_hhdm_base: no"
        }
    );
    let facts = Facts {
        cmdline: &entry.cmdline,
        modules: &modules,
        volume: volume.identity,
        firmware,
        device_tree: device_tree.as_ref().map(Pages::span),
        framebuffer: framebuffer.as_ref(),
        boot_time,
        hhdm,
    };

    // 4. Everything the part after the exit needs.
    let requested_stack = kernel.request(RequestKind::StackSize).map_or(0, |found| {
        kernel.request_word(found, protocol::REQUEST_EXTRA_OFFSET)
    });
    let stack_size = requested_stack
        .max(protocol::DEFAULT_STACK_SIZE)
        .next_multiple_of(PAGE_SIZE);
    let stack = Pages::allocate(stack_size, Owner::Bootloader, "the kernel stack")?;
    let firmware_map = boot::memory_map(boot::MemoryType::LOADER_DATA)
        .map_err(|error| format!("cannot read the firmware memory map: {:?}", error.status()))?;
    let highest = firmware_map
        .entries()
        .map(|d| d.phys_start + d.page_count * PAGE_SIZE)
        .max()
        .unwrap_or(0);
    if hhdm
        .checked_add(highest.max(FOUR_GIB))
        .is_none_or(|end| end > kernel.virtual_base)
    {
        return Err(format!(
            "the HHDM at {hhdm:#x} would reach the kernel at {:#x}",
            kernel.virtual_base
        ));
    }
    let mp_cpus = kernel.request(RequestKind::Mp).map(|_| mp_cpus(&firmware));
    let arena_size = responses::arena_size(&kernel, &facts)
        + MemoryMapBuffers::arena_bytes(firmware_map.len())
        + mp_cpus
            .as_ref()
            .map_or(0, |(cpus, _, _)| mp::arena_bytes(cpus.len()));
    let mut arena = Arena::new(arena_size, hhdm)?;
    let mut memory_map = MemoryMapBuffers::reserve(firmware_map.len(), &mut arena)?;
    let ranges = kernel.executable.page_ranges();
    let framebuffer_size = framebuffer.as_ref().map(|f| f.size);
    let pool = TablePool::new(handoff::table_estimate(
        &ranges,
        &firmware_map,
        framebuffer_size,
    ))?;
    drop(firmware_map);

    let mut answered = responses::answer_all(&mut kernel, &mut arena, &facts);
    let mp_plan = match (mp_cpus, kernel.request(RequestKind::Mp)) {
        (Some((cpus, bsp, extra)), Some(found)) => {
            println!(
                "mp: {} CPUs described, boot CPU {bsp:#x}; the others start after the exit",
                cpus.len()
            );
            let (plan, response) = mp::prepare(cpus, bsp, extra, &mut arena, stack_size)?;
            kernel.respond(found, arena.virtual_of(response));
            answered.names.push(RequestKind::Mp.name());
            Some(plan)
        }
        _ => None,
    };
    memory_map.response = answered.memory_map;
    memory_map.efi_response = answered.efi_memory_map;
    #[cfg(target_arch = "x86_64")]
    let extra = {
        let io_apics = firmware.rsdp.map(platform::io_apics).unwrap_or_default();
        arch::prepare(&mut arena, &io_apics, arch::features())
    };
    #[cfg(target_arch = "aarch64")]
    let extra = arch::Extra { exception_level };

    for found in &kernel.scan.requests {
        let answered = answered.names.contains(&found.kind.name());
        if answered && !matches!(found.kind, RequestKind::Unknown(_)) {
            continue;
        }
        let (name, why) = match found.kind {
            RequestKind::Unknown([a, b]) => (
                format!("unknown ({a:#x}, {b:#x})"),
                "not in the protocol this loader knows",
            ),
            RequestKind::RiscvBspHartid | RequestKind::BootloaderPerformance => {
                (found.kind.name().to_string(), "not implemented")
            }
            known => (known.name().to_string(), "nothing to report"),
        };
        println!("note: {name} request not answered ({why})");
    }
    println!("answered: {}", answered.names.join(", "));
    #[cfg(target_arch = "aarch64")]
    if exception_level == 2 {
        println!("firmware runs at EL2: the kernel is entered at EL1");
    }
    println!(
        "hhdm {hhdm:#x}, stack {} KiB, entry {:#x}; exiting boot services",
        stack_size / 1024,
        kernel.entry
    );

    let prepared = Prepared {
        arena,
        pool,
        base_revision: kernel.base_revision.loaded,
        memory_map,
        framebuffer: framebuffer.as_ref().map(|f| (f.base, f.size)),
        image: kernel.image.span(),
        image_start: kernel.executable.image_start,
        slide: kernel.slide,
        ranges: &ranges,
        entry: kernel.entry,
        stack_top: stack.physical + stack.length + hhdm,
        hhdm,
        loader_image,
        extra,
        mp: mp_plan,
    };
    // Protocols opened through the uefi crate close themselves on drop, which needs boot
    // services: close the volume now. Heap values stay alive (this function does not
    // return once the exit is done), so nothing is freed after it.
    drop(volume);
    BOOT_SERVICES.store(false, Ordering::Relaxed);
    // SAFETY: no protocol stays open (the volume is closed; the others were scoped to the
    // functions that used them), the console is not used past this point, and nothing
    // allocates or frees afterwards: the rest works in memory reserved above.
    let final_map = unsafe { boot::exit_boot_services(Some(Owner::Bootloader.memory_type())) };
    handoff::after_exit(prepared, &final_map)
}

/// The CPUs the firmware describes (at most `mp::MAX_CPUS`, the boot CPU first if the
/// firmware left it out), the boot CPU's hardware id, and how to start the others.
fn mp_cpus(
    firmware: &platform::FirmwareTables,
) -> (alloc::vec::Vec<efi_loader::mp::Cpu>, u64, arch::MpExtra) {
    #[cfg(target_arch = "aarch64")]
    let (mut cpus, extra) = {
        let blob = firmware
            .device_tree
            .and_then(platform::firmware_device_tree);
        let cpus = blob.map(efi_loader::mp::dt_cpus).unwrap_or_default();
        let conduit = blob.and_then(efi_loader::mp::psci_conduit);
        (cpus, arch::MpExtra { conduit })
    };
    #[cfg(target_arch = "x86_64")]
    let (mut cpus, extra) = {
        let cpus = firmware
            .rsdp
            .and_then(platform::madt)
            .map(efi_loader::mp::madt_cpus)
            .unwrap_or_default();
        (cpus, arch::MpExtra::allocate())
    };
    let bsp = arch::bsp_hardware_id();
    cpus.truncate(mp::MAX_CPUS);
    if !cpus.iter().any(|cpu| cpu.hardware_id == bsp) {
        cpus.insert(
            0,
            efi_loader::mp::Cpu {
                processor_id: 0,
                hardware_id: bsp,
            },
        );
        cpus.truncate(mp::MAX_CPUS);
    }
    (cpus, bsp, extra)
}

/// How long an error stays on screen before the firmware gets control back.
pub const ERROR_PAUSE: Duration = Duration::from_secs(5);
