//! FPU/SSE/AVX state: enabled at boot, saved into a user thread's own [`FpuState`] (never on
//! the kernel stack) when it switches away and restored when it comes back, unless the
//! registers still hold it (`arch_api::FpuSwitch`, DESIGN.md §2).
//!
//! The kernel itself is built soft-float (`x86_64-unknown-none`) and never touches these
//! registers, so the only state in them is the current thread's user state; switching
//! saves it and loads the next thread's before the kernel stacks are swapped.
//!
//! With XSAVE (CPUID), XCR0 enables x87, SSE and — when present — AVX, nothing else; the
//! save area's size for exactly those features (CPUID leaf 0xD) must fit [`AREA_SIZE`]
//! (checked at boot). XSAVEOPT is used when present. Without XSAVE, FXSAVE/FXRSTOR.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arch_api::EarlyError;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

use crate::features::Cpuid;

/// Bytes in every thread's save area: legacy region (512) + XSAVE header (64) + AVX (256)
/// = 832 for the features Keel enables, rounded up.
pub const AREA_SIZE: usize = 1024;

/// XCR0 state components (Intel SDM Vol. 1, §13.1).
pub mod xcr0 {
    pub const X87: u64 = 1 << 0;
    pub const SSE: u64 = 1 << 1;
    pub const AVX: u64 = 1 << 2;
}

/// Offsets in the legacy (FXSAVE) region.
mod legacy {
    /// x87 control word.
    pub const FCW: usize = 0;
    /// MXCSR.
    pub const MXCSR: usize = 24;
}
/// Offset of the XSAVE header's XSTATE_BV.
const XSTATE_BV: usize = 512;

/// Power-up x87 control word: all exceptions masked, 64-bit precision, round to nearest.
const DEFAULT_FCW: u16 = 0x037F;
/// Default MXCSR: all SIMD exceptions masked, round to nearest.
pub const DEFAULT_MXCSR: u32 = 0x1F80;

/// One thread's FPU/SIMD registers in XSAVE (standard form) or FXSAVE layout.
#[derive(Clone)]
#[repr(C, align(64))]
pub struct FpuState {
    area: [u8; AREA_SIZE],
}

impl core::fmt::Debug for FpuState {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(out, "FpuState {{ .. }}")
    }
}

impl FpuState {
    /// The state a new thread starts with: x87 and SSE control words at their defaults,
    /// every register clear (XSTATE_BV = 0: all components in their initial state).
    pub fn initial() -> Self {
        let mut state = Self {
            area: [0; AREA_SIZE],
        };
        state.area[legacy::FCW..legacy::FCW + 2].copy_from_slice(&DEFAULT_FCW.to_le_bytes());
        state.area[legacy::MXCSR..legacy::MXCSR + 4].copy_from_slice(&DEFAULT_MXCSR.to_le_bytes());
        state.area[XSTATE_BV..XSTATE_BV + 8].fill(0);
        state
    }

    /// Set the saved MXCSR (the caller checked it against [`mxcsr_mask`]).
    pub fn set_mxcsr(&mut self, mxcsr: u32) {
        self.area[legacy::MXCSR..legacy::MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    }

    /// The saved MXCSR.
    pub fn mxcsr(&self) -> u32 {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&self.area[legacy::MXCSR..legacy::MXCSR + 4]);
        u32::from_le_bytes(bytes)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Fxsave = 0,
    Xsave = 1,
    XsaveOpt = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Fxsave as u8);
/// The XCR0 value Keel set (0 without XSAVE).
static XCR0: AtomicU64 = AtomicU64::new(0);
/// The save-area size CPUID reports for XCR0 (512 for FXSAVE).
static SIZE: AtomicU64 = AtomicU64::new(512);
/// MXCSR bits the CPU supports (MXCSR_MASK), for validating user-written state.
static MXCSR_MASK: AtomicU64 = AtomicU64::new(0xFFBF);

#[inline(always)]
fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        2 => Mode::XsaveOpt,
        1 => Mode::Xsave,
        _ => Mode::Fxsave,
    }
}

/// The XSAVE features enabled in XCR0 (0 when FXSAVE is used).
pub fn enabled_features() -> u64 {
    XCR0.load(Ordering::Relaxed)
}

/// The MXCSR bits this CPU accepts (writing any other raises #GP on restore).
pub fn mxcsr_mask() -> u32 {
    MXCSR_MASK.load(Ordering::Relaxed) as u32
}

/// A one-line summary for the boot log.
pub fn describe() -> impl core::fmt::Display {
    struct Summary;
    impl core::fmt::Display for Summary {
        fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let name = match mode() {
                Mode::Fxsave => "fxsave",
                Mode::Xsave => "xsave",
                Mode::XsaveOpt => "xsaveopt",
            };
            write!(
                out,
                "{name}, xcr0 {:#x}, {} bytes per thread",
                enabled_features(),
                SIZE.load(Ordering::Relaxed)
            )
        }
    }
    Summary
}

/// Enable the FPU, SSE and (with XSAVE) AVX on this CPU and choose the save instruction.
pub fn init(cpuid: &Cpuid) -> Result<(), EarlyError> {
    // SAFETY: EM = 0 and TS = 0 make x87/SSE instructions execute instead of trapping
    // (no lazy switching); MP and NE select native error reporting. The kernel itself
    // never executes FPU instructions outside this module.
    unsafe {
        Cr0::update(|flags| {
            flags.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            flags.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
        });
    }
    let mut cr4 = Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
    if cpuid.xsave {
        cr4 |= Cr4Flags::OSXSAVE;
    }
    // SAFETY: OSFXSR/OSXMMEXCPT declare that the kernel saves SSE state (it does, here)
    // and handles #XM; OSXSAVE only when CPUID reports XSAVE.
    unsafe { Cr4::update(|flags| flags.insert(cr4)) };
    if cpuid.xsave {
        let mut features = xcr0::X87 | xcr0::SSE;
        if cpuid.avx {
            features |= xcr0::AVX;
        }
        // SAFETY: CR4.OSXSAVE is set; every bit written is supported (leaf 0xD), and
        // x87 is set as XCR0 requires.
        unsafe {
            core::arch::asm!(
                "xsetbv",
                in("ecx") 0,
                in("eax") features as u32,
                in("edx") (features >> 32) as u32,
                options(nomem, nostack),
            );
        }
        // Leaf 0xD sub-leaf 0 EBX: the area size for the features XCR0 enables now.
        let size = core::arch::x86_64::__cpuid_count(0xD, 0).ebx as usize;
        if size > AREA_SIZE {
            return Err(EarlyError::Unsupported(
                "the XSAVE area for x87+SSE+AVX is larger than the kernel's FpuState",
            ));
        }
        XCR0.store(features, Ordering::Relaxed);
        SIZE.store(size as u64, Ordering::Relaxed);
        let mode = if cpuid.xsaveopt {
            Mode::XsaveOpt
        } else {
            Mode::Xsave
        };
        MODE.store(mode as u8, Ordering::Relaxed);
    }
    // Learn MXCSR_MASK (offset 28 of an FXSAVE image; 0 there means the default 0xFFBF).
    let mut probe = FpuState::initial();
    // SAFETY: FXSAVE is always available on x86_64 with CR4.OSFXSR set; the area is
    // 64-byte aligned and 512 bytes or more.
    unsafe {
        core::arch::asm!("fxsave64 [{}]", in(reg) probe.area.as_mut_ptr(), options(nostack));
    }
    let mask = u32::from_le_bytes([
        probe.area[28],
        probe.area[29],
        probe.area[30],
        probe.area[31],
    ]);
    if mask != 0 {
        MXCSR_MASK.store(u64::from(mask), Ordering::Relaxed);
    }
    // Start from a clean state, so nothing the firmware left leaks into the first thread.
    restore(&FpuState::initial());
    Ok(())
}

/// Save this CPU's FPU registers into `state`.
#[inline(always)]
pub fn save(state: &mut FpuState) {
    let area = state.area.as_mut_ptr();
    // RFBM (EDX:EAX) = all ones: save every component XCR0 enables.
    let (low, high) = (u32::MAX, u32::MAX);
    match mode() {
        // SAFETY: the area is 64-byte aligned (the type's alignment) and at least the
        // save size CPUID gave for XCR0 (checked at boot); OSXSAVE is on in this mode.
        Mode::XsaveOpt => unsafe {
            core::arch::asm!(
                "xsaveopt64 [{area}]",
                area = in(reg) area,
                in("eax") low,
                in("edx") high,
                options(nostack),
            );
        },
        // SAFETY: as for XSAVEOPT.
        Mode::Xsave => unsafe {
            core::arch::asm!(
                "xsave64 [{area}]",
                area = in(reg) area,
                in("eax") low,
                in("edx") high,
                options(nostack),
            );
        },
        // SAFETY: the area is 16-byte aligned and at least 512 bytes; CR4.OSFXSR is on.
        Mode::Fxsave => unsafe {
            core::arch::asm!("fxsave64 [{area}]", area = in(reg) area, options(nostack));
        },
    }
}

/// Load this CPU's FPU registers from `state`.
#[inline(always)]
pub fn restore(state: &FpuState) {
    let area = state.area.as_ptr();
    let (low, high) = (u32::MAX, u32::MAX);
    match mode() {
        // SAFETY: the area is aligned and sized as in `save`, and was produced by
        // `FpuState::initial`, a `save` on this machine, or a checked write (MXCSR within
        // MXCSR_MASK, header in standard form naming only XCR0 components), so XRSTOR
        // accepts it.
        Mode::XsaveOpt | Mode::Xsave => unsafe {
            core::arch::asm!(
                "xrstor64 [{area}]",
                area = in(reg) area,
                in("eax") low,
                in("edx") high,
                options(nostack, readonly),
            );
        },
        // SAFETY: as above, for FXRSTOR (whose only faulting field is MXCSR).
        Mode::Fxsave => unsafe {
            core::arch::asm!("fxrstor64 [{area}]", area = in(reg) area, options(nostack, readonly));
        },
    }
}

/// Save this CPU's FPU registers into `save`, then load them from `load`: a switch between
/// two user threads (DESIGN.md §2), with the save instruction chosen once.
#[inline(always)]
pub fn switch(save: &mut FpuState, load: &FpuState) {
    let save = save.area.as_mut_ptr();
    let load = load.area.as_ptr();
    // FXSAVE first: one test of the mode byte on CPUs without XSAVE (QEMU's default).
    if MODE.load(Ordering::Relaxed) == Mode::Fxsave as u8 {
        // SAFETY: both areas are 16-byte aligned and at least 512 bytes; CR4.OSFXSR is on;
        // `load` holds a valid FXSAVE image (its MXCSR checked against MXCSR_MASK).
        unsafe {
            core::arch::asm!(
                "fxsave64 [{save}]",
                "fxrstor64 [{load}]",
                save = in(reg) save,
                load = in(reg) load,
                options(nostack),
            );
        }
        return;
    }
    let (low, high) = (u32::MAX, u32::MAX);
    if mode() == Mode::XsaveOpt {
        // SAFETY: as in `save` and `restore`: both areas are 64-byte aligned, sized for
        // XCR0's components (checked at boot), and `load` holds a valid image; OSXSAVE is
        // on in this mode.
        unsafe {
            core::arch::asm!(
                "xsaveopt64 [{save}]",
                "xrstor64 [{load}]",
                save = in(reg) save,
                load = in(reg) load,
                in("eax") low,
                in("edx") high,
                options(nostack),
            );
        }
    } else {
        // SAFETY: as for XSAVEOPT.
        unsafe {
            core::arch::asm!(
                "xsave64 [{save}]",
                "xrstor64 [{load}]",
                save = in(reg) save,
                load = in(reg) load,
                in("eax") low,
                in("edx") high,
                options(nostack),
            );
        }
    }
}
