//! CPU features: what CPUID reports, and the CR0/CR4/EFER hardening Keel turns on.
//!
//! Keel enables, when CPUID reports them: NX (EFER.NXE), WP (CR0, always present on x86_64),
//! SMEP and SMAP (CR4; the kernel touches no user memory outside `copy_from_user` /
//! `copy_to_user`, which `stac`/`clac` around their one copying instruction), and UMIP
//! (CR4: `sgdt`/`sidt`/`sldt`/`smsw`/`str` fault in user mode). FSGSBASE stays disabled: user code must not be able to change its
//! GS base behind the kernel's back, because the paranoid trap entries decide whether to
//! `SWAPGS` from the GS base's sign (see `trap::entry`).

use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU32, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// One hardening feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Feature {
    NoExecute = 1 << 0,
    WriteProtect = 1 << 1,
    Smep = 1 << 2,
    Smap = 1 << 3,
    Umip = 1 << 4,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Self::NoExecute,
        Self::WriteProtect,
        Self::Smep,
        Self::Smap,
        Self::Umip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NoExecute => "nx",
            Self::WriteProtect => "wp",
            Self::Smep => "smep",
            Self::Smap => "smap",
            Self::Umip => "umip",
        }
    }
}

/// Bit set of [`Feature`]s turned on by [`harden`].
static ENABLED: AtomicU32 = AtomicU32::new(0);

/// Whether `feature` was turned on.
pub fn enabled(feature: Feature) -> bool {
    ENABLED.load(Ordering::Relaxed) & feature as u32 != 0
}

/// What CPUID says this CPU can do (only the bits Keel looks at).
#[derive(Clone, Copy, Debug)]
pub struct Cpuid {
    pub no_execute: bool,
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    /// MAXPHYADDR: physical address width in bits.
    pub physical_address_bits: u8,
    /// Process-context identifiers (CR4.PCIDE).
    pub pcid: bool,
    /// Global pages (CR4.PGE).
    pub global_pages: bool,
    /// XSAVE/XRSTOR and XCR0.
    pub xsave: bool,
    /// XSAVEOPT.
    pub xsaveopt: bool,
    /// AVX (and its state component in XCR0).
    pub avx: bool,
}

impl Cpuid {
    pub fn read() -> Self {
        let max_basic = __cpuid(0).eax;
        let max_extended = __cpuid(0x8000_0000).eax;
        let (mut smep, mut smap, mut umip) = (false, false, false);
        if max_basic >= 7 {
            let leaf7 = __cpuid_count(7, 0);
            smep = leaf7.ebx & (1 << 7) != 0;
            smap = leaf7.ebx & (1 << 20) != 0;
            umip = leaf7.ecx & (1 << 2) != 0;
        }
        let leaf1 = __cpuid(1);
        let pcid = leaf1.ecx & (1 << 17) != 0;
        let global_pages = leaf1.edx & (1 << 13) != 0;
        let xsave = leaf1.ecx & (1 << 26) != 0;
        let mut avx = false;
        let mut xsaveopt = false;
        if xsave && max_basic >= 0xD {
            // Leaf 0xD sub-leaf 0 EAX: the state components XCR0 may enable; bit 2 = AVX.
            avx = leaf1.ecx & (1 << 28) != 0 && __cpuid_count(0xD, 0).eax & (1 << 2) != 0;
            xsaveopt = __cpuid_count(0xD, 1).eax & 1 != 0;
        }
        let no_execute = max_extended >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 20) != 0;
        // Leaf 0x8000_0008 EAX[7:0]; the SDM's fallback without it is 36 bits.
        let physical_address_bits = if max_extended >= 0x8000_0008 {
            __cpuid(0x8000_0008).eax as u8
        } else {
            36
        };
        Self {
            no_execute,
            smep,
            smap,
            umip,
            physical_address_bits,
            pcid,
            global_pages,
            xsave,
            xsaveopt,
            avx,
        }
    }
}

/// Turn on NX, WP and UMIP where present. SMEP and SMAP come separately
/// ([`harden_supervisor_access`]) because they need the loader's page tables checked first.
pub fn harden(cpuid: &Cpuid) {
    let mut enabled = 0;
    if cpuid.no_execute {
        // SAFETY: setting EFER.NXE only makes the NX bit in page-table entries meaningful
        // (where it was reserved before); the loader's tables cannot rely on it being clear.
        unsafe { Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE)) };
        enabled |= Feature::NoExecute as u32;
    }
    // SAFETY: WP makes ring 0 honour read-only pages; the kernel writes only its own data
    // segment, its stacks and memory mapped writable (the HHDM), never its read-only segments.
    unsafe { Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT)) };
    enabled |= Feature::WriteProtect as u32;
    if cpuid.umip {
        // SAFETY: UMIP only affects instructions executed at CPL 3.
        unsafe { Cr4::update(|flags| flags.insert(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION)) };
        enabled |= Feature::Umip as u32;
    }
    ENABLED.fetch_or(enabled, Ordering::Relaxed);
}

/// Turn on SMEP and SMAP where present. The caller has checked that nothing the kernel
/// runs or touches is mapped user-accessible (a loader that sets U/S everywhere would
/// otherwise make the next instruction fetch fault).
pub fn harden_supervisor_access(cpuid: &Cpuid) {
    let mut enabled = 0;
    let mut flags = Cr4Flags::empty();
    if cpuid.smep {
        flags |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
        enabled |= Feature::Smep as u32;
    }
    if cpuid.smap {
        flags |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
        enabled |= Feature::Smap as u32;
    }
    // SAFETY: CPUID reports both features, and the caller checked that the kernel's code,
    // data, stack and page tables are supervisor pages, so neither check fires on the kernel.
    unsafe { Cr4::update(|current| current.insert(flags)) };
    ENABLED.fetch_or(enabled, Ordering::Relaxed);
}
