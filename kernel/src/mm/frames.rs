//! The kernel's physical frame allocator: [`kcore::frames::FrameAllocator`] (host-tested
//! bookkeeping) behind a spin lock, fed from the Limine memory map, handing out frames by
//! physical address and touching them through the HHDM.
//!
//! What it manages: every `Usable` entry of the memory map, minus its own storage (carved
//! from usable memory before it exists, [`kcore::bootmem::place_storage`]) and minus what
//! the early frame source already handed out. Its span also covers bootloader-reclaimable
//! memory, which [`super::reclaim_boot_memory`] adds once the kernel has left the boot
//! stack and copied what it keeps out of the Limine responses.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{Lock, level};
use arch_api::FrameSource;
use kcore::frames::{FRAME_SIZE, Frame, FrameAllocator, FrameError, FrameSpan};
use kcore::memory::RegionKind;

use crate::boot;

static ALLOCATOR: Lock<Option<FrameAllocator<'static>>> = Lock::new(level::FRAMES, None);

/// The HHDM offset: physical address `p` is readable at `p + HHDM`.
static HHDM: AtomicU64 = AtomicU64::new(0);

/// Why the allocator could not be built.
#[derive(Debug)]
pub enum InitError {
    Frames(FrameError),
    NoRoomForStorage { bytes: u64 },
    AlreadyInitialized,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Frames(error) => write!(out, "{error:?}"),
            Self::NoRoomForStorage { bytes } => {
                write!(
                    out,
                    "no usable region has {bytes} bytes for the allocator's storage"
                )
            }
            Self::AlreadyInitialized => write!(out, "initialized twice"),
        }
    }
}

impl From<FrameError> for InitError {
    fn from(error: FrameError) -> Self {
        Self::Frames(error)
    }
}

/// Build the allocator. `early_used` is `[start, end)` of the frames the early frame
/// source handed out.
pub fn init(hhdm: u64, early_used: (u64, u64)) -> Result<(), InitError> {
    let mut slot = ALLOCATOR.lock();
    if slot.is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    HHDM.store(hhdm, Ordering::Relaxed);
    let usable = || {
        boot::memory_regions()
            .into_iter()
            .flatten()
            .filter(|region| region.kind == RegionKind::Usable)
            .map(|region| (region.base, region.length))
    };
    let ever_managed = boot::memory_regions()
        .into_iter()
        .flatten()
        .filter(|region| {
            matches!(
                region.kind,
                RegionKind::Usable | RegionKind::BootloaderReclaimable
            )
        });
    let span = FrameSpan::covering(ever_managed.map(|region| (region.base, region.length)))?;
    let bytes = span.storage_frames() * FRAME_SIZE;
    let storage_base = kcore::bootmem::place_storage(usable(), bytes, early_used)
        .ok_or(InitError::NoRoomForStorage { bytes })?;
    // SAFETY: `place_storage` chose whole frames of usable memory that the early frame
    // source has not handed out and nothing else owns yet (no allocator existed); the HHDM
    // maps all usable memory writable (Limine base revision 2), and the allocator reserves
    // these frames below, so this `'static` slice is the only way they are ever reached.
    let storage = unsafe {
        core::slice::from_raw_parts_mut((hhdm + storage_base) as *mut u64, span.storage_words())
    };
    let mut allocator = FrameAllocator::new(storage, span)?;
    for (base, length) in usable() {
        allocator.add_region(base, length)?;
    }
    allocator.reserve(Frame::containing(storage_base), span.storage_frames())?;
    let (early_start, early_end) = early_used;
    if early_end > early_start {
        allocator.reserve(
            Frame::containing(early_start),
            (early_end - early_start) / FRAME_SIZE,
        )?;
    }
    *slot = Some(allocator);
    Ok(())
}

/// The kernel virtual address of physical address `physical` (through the HHDM).
pub fn virtual_address(physical: u64) -> u64 {
    HHDM.load(Ordering::Relaxed) + physical
}

/// One frame, zeroed, by physical address.
pub fn allocate_zeroed() -> Option<u64> {
    let physical = allocate_run(0)?;
    zero(physical, FRAME_SIZE);
    Some(physical)
}

/// `2^order` contiguous frames (naturally aligned, contents undefined), by the physical
/// address of the first.
pub fn allocate_run(order: u32) -> Option<u64> {
    let mut guard = ALLOCATOR.lock();
    let frame = guard.as_mut()?.allocate_run(order).ok()?;
    Some(frame.start_address())
}

/// Give back one frame. A frame the allocator does not consider allocated is refused.
pub fn free(physical: u64) -> Result<(), FrameError> {
    free_run(physical, 0)
}

/// Give back `2^order` frames from `physical`.
pub fn free_run(physical: u64, order: u32) -> Result<(), FrameError> {
    let mut guard = ALLOCATOR.lock();
    let allocator = guard.as_mut().ok_or(FrameError::NotManaged)?;
    allocator.free_run(Frame::containing(physical), order)
}

/// Hand the whole frames of `[base, base + length)` to the allocator as free memory (for
/// reclaimed bootloader memory: it must lie in the span and overlap nothing managed).
/// Returns how many frames were added.
pub fn add_region(base: u64, length: u64) -> Result<u64, FrameError> {
    let mut guard = ALLOCATOR.lock();
    let allocator = guard.as_mut().ok_or(FrameError::NotManaged)?;
    allocator.add_region(base, length)
}

#[cfg(feature = "testing")]
/// What the allocator knows about the frame holding `physical`.
pub fn state(physical: u64) -> kcore::frames::FrameState {
    ALLOCATOR
        .lock()
        .as_ref()
        .map_or(kcore::frames::FrameState::Unmanaged, |allocator| {
            allocator.state(Frame::containing(physical))
        })
}

/// Free frames right now, exactly (0 before [`init`]).
pub fn free_frames() -> u64 {
    ALLOCATOR
        .lock()
        .as_ref()
        .map_or(0, FrameAllocator::free_frames)
}

fn zero(physical: u64, bytes: u64) {
    // SAFETY: the caller just took these frames from the allocator, so nothing else uses
    // them, and the HHDM maps them writable.
    unsafe { core::ptr::write_bytes(virtual_address(physical) as *mut u8, 0, bytes as usize) };
}

/// Fill the frame at `physical` (one the caller owns) with `bytes` at `offset` and zeroes
/// everywhere else, writing each byte once. `offset + bytes.len()` is cut to the frame.
pub fn fill(physical: u64, offset: usize, bytes: &[u8]) {
    let size = FRAME_SIZE as usize;
    let offset = offset.min(size);
    let length = bytes.len().min(size - offset);
    let base = virtual_address(physical) as *mut u8;
    // SAFETY: the frame is the caller's (freshly allocated, not yet shared), the HHDM maps
    // it writable, and the three ranges lie within its `size` bytes without overlap.
    unsafe {
        core::ptr::write_bytes(base, 0, offset);
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(offset), length);
        core::ptr::write_bytes(base.add(offset + length), 0, size - offset - length);
    }
}

/// The start and length of the last [`sync_instructions`] call (test build: the kernel
/// suite checks that the core asks for the right range).
#[cfg(feature = "testing")]
pub static LAST_INSTRUCTION_SYNC: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// `length` bytes from the physical address `physical` were written through the HHDM and
/// will be executed by user code: make instruction fetch see them
/// (`Paging::sync_instructions`).
pub fn sync_instructions(physical: u64, length: u64) {
    use arch_api::Paging;
    let start = virtual_address(physical);
    crate::Cpu::sync_instructions(start, length);
    #[cfg(feature = "testing")]
    {
        LAST_INSTRUCTION_SYNC[0].store(start, Ordering::Relaxed);
        LAST_INSTRUCTION_SYNC[1].store(length, Ordering::Relaxed);
    }
}

/// The allocator as an [`arch_api::FrameSource`] (page tables for the arch crate).
pub struct KernelFrames;

impl FrameSource for KernelFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        allocate_zeroed()
    }

    fn free_frame(&mut self, frame: u64) {
        let _ = free(frame);
    }
}
