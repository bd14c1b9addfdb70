//! Records of the other object types: memory regions, threads by id, interrupt lines and
//! device ranges. Plain data; the system calls that use them check and act.

use alloc::sync::Arc;

/// What a thread capability names: a thread id and the serial of the thread that had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadRef {
    pub id: usize,
    pub serial: u64,
}

/// An I/O-port capability: ports `first..first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub count: u16,
}

/// An MMIO capability: physical `[base, base + length)`, both page multiples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRange {
    pub base: u64,
    pub length: u64,
}

/// Interrupt lines a capability can name.
pub const MAX_IRQ_LINES: usize = 1024;

/// An interrupt-line capability: the line number (below [`MAX_IRQ_LINES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqLine {
    pub line: u32,
}

impl IrqLine {
    pub fn new(line: u32) -> Option<Self> {
        ((line as usize) < MAX_IRQ_LINES).then_some(Self { line })
    }
}

/// Physical memory `[base, base + length)`, e.g. a boot module.
pub struct MemoryRegion {
    pub base: u64,
    pub length: u64,
}

impl MemoryRegion {
    #[cfg(feature = "testing")]
    /// The first `length` bytes of the boot module `name` (at most its length).
    pub fn boot_module_prefix(name: &str, length: u64) -> Option<Arc<Self>> {
        let whole = Self::boot_module(name)?;
        Some(Self::counted(whole.base, whole.length.min(length)))
    }

    /// The bytes of the region, through the kernel's direct map. Only boot-module regions
    /// exist, and the loader's memory they name is never reused by the kernel.
    pub fn bytes(&self) -> &[u8] {
        let address = crate::mm::frames::virtual_address(self.base);
        // SAFETY: a `MemoryRegion` is made only from a boot module (`boot_module*`): memory
        // the loader filled, mapped by the HHDM and never freed or written by the kernel,
        // `length` bytes long.
        unsafe { core::slice::from_raw_parts(address as *const u8, self.length as usize) }
    }

    /// The boot module named `name` (the loader's memory, never reused by the kernel).
    pub fn boot_module(name: &str) -> Option<Arc<Self>> {
        let bytes = crate::boot::module(name)?;
        Some(Self::counted(
            (bytes.as_ptr() as u64).wrapping_sub(crate::mm::frames::virtual_address(0)),
            bytes.len() as u64,
        ))
    }

    /// A region, counted among the live objects (`stats::Live`).
    fn counted(base: u64, length: u64) -> Arc<Self> {
        crate::stats::live_add(crate::stats::Live::MemoryRegion);
        Arc::new(Self { base, length })
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        crate::stats::live_sub(crate::stats::Live::MemoryRegion);
    }
}
