//! Kernel memory: the physical frame allocator ([`frames`]), the kernel heap ([`heap`]) and
//! kernel stacks ([`stacks`]), brought up in that order by [`init`] (DESIGN.md §4, issue 7).
//!
//! Locking: every lock here is a spin lock taken with interrupts masked. The kernel runs
//! with interrupts masked everywhere except inside `Platform::wait_for_interrupt` and in
//! user mode, so a lock holder is never preempted on this CPU (one CPU today).

pub mod frames;
pub mod heap;
pub mod kernel_tables;
pub mod stacks;

use crate::boot::Early;

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
