//! Kernel memory: the physical frame allocator ([`frames`]), the kernel heap ([`heap`]) and
//! kernel stacks ([`stacks`]), brought up in that order by [`init`] (DESIGN.md §4).
//!
//! Locking: every lock here is a spin lock taken with interrupts masked. The kernel runs
//! with interrupts masked everywhere except inside `Platform::wait_for_interrupt` and in
//! user mode, so a lock holder is never preempted on this CPU (one CPU today).

pub mod frames;
pub mod heap;
pub mod kernel_tables;
pub mod stacks;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kcore::memory::RegionKind;

use crate::boot::{self, Early};

/// Frames reclaimed from bootloader-reclaimable memory (0 until reclaimed).
static RECLAIMED_FRAMES: AtomicU64 = AtomicU64::new(0);
static RECLAIMED: AtomicBool = AtomicBool::new(false);
/// [`reclaim_boot_memory`] has run to its end.
static RECLAIM_SETTLED: AtomicBool = AtomicBool::new(false);

/// Give bootloader-reclaimable memory to the frame allocator (once; later calls do
/// nothing). The caller guarantees the kernel no longer uses any of it: it runs on its own
/// page tables ([`kernel_tables`]), has left the boot stack (a thread started by the
/// scheduler, which never resumes the boot context), and `boot::collect` has copied out
/// everything kept from the Limine responses.
pub fn reclaim_boot_memory() {
    if RECLAIMED.swap(true, Ordering::AcqRel) {
        return;
    }
    if kernel_tables::report().is_some() {
        reclaim_regions();
    }
    RECLAIM_SETTLED.store(true, Ordering::Release);
}

/// Run [`reclaim_boot_memory`] if no CPU has, and wait until it has run to its end on
/// whichever CPU started it, so a count of free frames taken next includes the loader's
/// memory (`init`'s total). The caller runs on a thread, as that function requires.
pub fn settle_boot_memory() {
    use arch_api::SecondaryCpus as _;
    reclaim_boot_memory();
    while !RECLAIM_SETTLED.load(Ordering::Acquire) {
        crate::Cpu::wait_pause();
    }
}

/// Give the loader's reclaimable regions to the frame allocator ([`reclaim_boot_memory`]).
fn reclaim_regions() {
    if !boot::smp::all_arrived() {
        // A secondary CPU that has not arrived may still run on the loader's stack and
        // tables, or arrive later and use them: leave that memory alone.
        crate::println!("mm: bootloader-reclaimable memory kept: a secondary CPU did not arrive");
        return;
    }
    let mut added = 0;
    for region in boot::memory_regions().into_iter().flatten() {
        if region.kind == RegionKind::BootloaderReclaimable {
            match frames::add_region(region.base, region.length) {
                Ok(count) => added += count,
                Err(error) => crate::println!(
                    "mm: bootloader-reclaimable memory at {:#x} not reclaimed: {error:?}",
                    region.base
                ),
            }
        }
    }
    RECLAIMED_FRAMES.store(added, Ordering::Relaxed);
    crate::println!(
        "mm: reclaimed {added} frames ({} KiB) of bootloader-reclaimable memory; {} frames free",
        added * 4,
        frames::free_frames(),
    );
}

/// Free frames: the frame allocator's, and those the free kernel stacks keep mapped for
/// the next stack ([`stacks::cached_frames`]). What `system_info` reports and the leak
/// checks compare.
pub fn free_frames() -> u64 {
    frames::free_frames() + stacks::cached_frames()
}

#[cfg(feature = "testing")]
/// Frames [`reclaim_boot_memory`] added (0 before it ran).
pub fn reclaimed_frames() -> u64 {
    RECLAIMED_FRAMES.load(Ordering::Relaxed)
}

/// Bring up the frame allocator from the boot memory map, then the heap. `early_used` is
/// the range of frames the early frame source handed out (kept reserved forever: the arch
/// crate's page tables live there).
pub fn init(early: &Early, early_used: (u64, u64)) {
    let hhdm = early.hhdm_offset;
    match frames::init(hhdm, early_used) {
        Ok(()) => {}
        Err(error) => panic!("cannot build the frame allocator: {error}"),
    }
    if let Err(error) = kernel_tables::switch(hhdm) {
        panic!("cannot switch to the kernel's own page tables: {error}");
    }
    if let Err(error) = heap::init() {
        panic!("cannot build the kernel heap: {error}");
    }
}

/// The boot-time `mm` self-check line for the banner.
pub fn print_summary() {
    crate::println!(
        "mm: {} MiB free in {} frames, heap {} KiB, kernel image {} KiB",
        frames::free_frames() >> 8,
        frames::free_frames(),
        heap::HEAP_BYTES >> 10,
        crate::boot::kernel_image_bytes() >> 10,
    );
    if let Some(report) = kernel_tables::report() {
        crate::println!(
            "mm: kernel page tables at {:#x} (loader's were at {:#x}): {} table frames, hhdm maps {} MiB",
            report.kernel_root,
            report.loader_root,
            report.table_frames,
            report.direct_map_bytes >> 20,
        );
    }
}
