//! The contract between Keel's portable core and an architecture crate.
//!
//! Both `arch/x86_64` and `arch/aarch64` implement [`Platform`] for a zero-sized type
//! exported as `arch::Cpu`; the kernel says `arch::Cpu::console_write(…)` and never names
//! a register, so the compiler checks that both architectures provide the same surface.
//!
//! Calls in the other direction (arch → core: timer ticks, traps) are the *upcalls*: a small
//! named set of `extern "Rust"` functions declared in each arch crate's `upcall` module and
//! defined in the kernel's `upcall` module. There is no function-pointer registry.
//!
//! Weak spot (tracked in issues 5 and 6): the trap frame, kernel stacks and context switch
//! of DESIGN.md §2 are not part of this trait yet; today the contract covers early boot,
//! the console, the timer, idling and power-off.
#![no_std]
#![forbid(unsafe_code)]

/// What the core learned from the boot protocol that an arch crate needs before anything
/// else runs. Built by the kernel's `boot` module from the Limine responses.
#[derive(Clone, Copy, Debug)]
pub struct EarlyInfo<'a> {
    /// Virtual address at which physical address 0 is mapped (the Limine HHDM).
    pub hhdm_offset: u64,
    /// The flattened device tree, if the loader gave one (AArch64 needs it).
    pub device_tree: Option<&'a [u8]>,
    /// The ACPI RSDP's physical address, if the loader gave one.
    pub rsdp: Option<u64>,
}

/// A source of zeroed, 4 KiB-aligned physical frames for early page-table work (device
/// mappings before the real frame allocator exists).
pub trait FrameSource {
    /// A zeroed 4 KiB frame, by physical address, or `None` when memory ran out.
    fn alloc_zeroed_frame(&mut self) -> Option<u64>;
}

/// Why early platform bring-up failed. Each variant carries what the user must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyError {
    /// The device tree is required (AArch64) but the loader gave none.
    NoDeviceTree,
    /// A device the kernel cannot run without is missing or malformed.
    MissingDevice(&'static str),
    /// No frame was left for a page table.
    OutOfMemory,
    /// The machine state the loader handed over is one the kernel cannot run in (wrong
    /// exception level, paging configuration, or a kernel address range already in use).
    Unsupported(&'static str),
}

/// How a fatal stop should be reported to whoever runs the machine (QEMU's exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every test passed (or the user asked for power-off).
    Success = 0,
    /// Some test failed.
    TestFailed = 1,
    /// Kernel panic or fatal trap.
    Fatal = 2,
}

/// Portable cause of a trap, decoded by the arch crate (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapCause {
    Syscall,
    Irq(u32),
    PageFault { addr: u64, access: Access, from_user: bool },
    Breakpoint,
    Undefined,
    Alignment,
    Arithmetic,
    FpuUnavailable,
    GeneralProtection,
    Other(u64),
}

/// The access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// One architecture, as the portable core sees it.
pub trait Platform {
    /// The architecture's name as printed in the banner: `x86_64` or `aarch64`.
    const NAME: &'static str;

    /// Bring up what the kernel needs to talk: the serial console, trap vectors (so a fault
    /// is reported instead of resetting the machine), and the per-CPU block of the boot CPU.
    /// Called once, on the boot CPU, before anything is printed.
    fn early_init(info: &EarlyInfo<'_>, frames: &mut dyn FrameSource) -> Result<(), EarlyError>;

    /// Write bytes to the kernel's serial console, waiting for the device (no allocation,
    /// no lock: callers serialize).
    fn console_write(bytes: &[u8]);

    /// Start the periodic timer interrupt at `hz` ticks per second; each tick calls the
    /// `timer_tick` upcall. Interrupts stay masked until [`Platform::wait_for_interrupt`].
    fn start_timer(hz: u32) -> Result<(), EarlyError>;

    /// Unmask interrupts and halt the CPU until one has been taken.
    fn wait_for_interrupt();

    /// Power the machine off; under QEMU the exit status carries `code`.
    fn power_off(code: ExitCode) -> !;
}
