//! Frames for page tables needed before the real frame allocator exists (device mappings
//! made by the arch crate's early init).
//!
//! Takes frames from the top of the largest usable region and never gives them back. The
//! frame allocator must start below [`EarlyFrames::low_water`].

use arch_api::FrameSource;

const FRAME: u64 = 4096;

pub struct EarlyFrames {
    hhdm_offset: u64,
    /// Next frame to hand out is `next - FRAME`; frames in `[floor, next)` are free.
    next: u64,
    floor: u64,
    /// Where handing out started (one past the highest frame).
    top: u64,
}

impl EarlyFrames {
    pub fn new(memory: kcore::memory::Summary, hhdm_offset: u64) -> Self {
        let (base, length) = memory.largest_usable.unwrap_or((0, 0));
        let floor = base.next_multiple_of(FRAME);
        let next = (base + length) & !(FRAME - 1);
        let top = next.max(floor);
        Self {
            hhdm_offset,
            next: top,
            floor,
            top,
        }
    }

    /// The frames handed out so far, as `[start, end)` physical addresses (empty when none
    /// were): the frame allocator keeps them reserved.
    pub fn used(&self) -> (u64, u64) {
        (self.next, self.top)
    }
}

impl FrameSource for EarlyFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        if self.next - self.floor < FRAME {
            return None;
        }
        self.next -= FRAME;
        let virt = (self.hhdm_offset + self.next) as *mut u8;
        // SAFETY: the frame lies in a region the loader reported as usable, so nothing else
        // owns it, and the HHDM maps all usable memory writable (Limine base revision 2).
        unsafe { core::ptr::write_bytes(virt, 0, FRAME as usize) };
        Some(self.next)
    }
}
