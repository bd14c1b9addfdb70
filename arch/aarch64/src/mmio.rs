//! A shareable handle to a memory-mapped register block.

use core::ops::Deref;

/// A `&'static` reference to a device register block (a `tock-registers` struct) in the
/// device window, shareable between CPUs and interrupt handlers.
pub struct Mmio<T: 'static>(&'static T);

impl<T> Mmio<T> {
    /// # Safety
    /// `address` maps a register block of type `T` with device attributes for the rest of
    /// the kernel's life, and whoever holds the handle is that device's only driver.
    pub unsafe fn new(address: usize) -> Self {
        // SAFETY: the caller guarantees a live, exclusively owned device mapping.
        Self(unsafe { &*(address as *const T) })
    }
}

impl<T> Deref for Mmio<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
    }
}

// SAFETY: every access through the block is one volatile load or store of a device
// register (the `tock-registers` types), which the device serializes itself; the drivers
// that need read-modify-write sequences on shared registers run on the boot CPU with
// interrupts masked. Nothing is cached on the Rust side.
unsafe impl<T> Sync for Mmio<T> {}
// SAFETY: as above; the handle is only an address.
unsafe impl<T> Send for Mmio<T> {}
