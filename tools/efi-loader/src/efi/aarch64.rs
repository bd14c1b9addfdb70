//! AArch64: exception level, cache maintenance, and the jump into the kernel.
//!
//! Why the handoff is shaped so: the kernel must start at EL1 with the MMU on, using the
//! loader's MAIR, TCR, TTBR1 (higher half) and, under base revision 1 and later, nothing
//! promised in TTBR0.
//!
//! - Firmware at EL1 (QEMU `virt` without virtualization): the translation regime the
//!   loader runs in is the kernel's, so its MAIR/TCR cannot change under the firmware's
//!   live tables. The trampoline turns the MMU off, loads the new registers and turns it
//!   back on, still running at its physical address, which a temporary TTBR0 table
//!   identity-maps; it then jumps through the HHDM, swaps TTBR0 for an empty table and
//!   erets into the kernel. While the MMU is off no memory is touched: everything is in
//!   registers, and the trampoline's own code was cleaned to the point of coherency.
//! - Firmware at EL2 without VHE: EL1's regime is unused, so the loader programs it
//!   completely from EL2 (MMU on), opens the timer, FP and GIC system registers to EL1,
//!   and erets from EL2 straight into the kernel at EL1. EL2 with VHE (E2H = 1) is refused.
//!
//! Before either, the kernel image and the page tables are cleaned and invalidated to the
//! point of coherency and the instruction cache is invalidated, so the kernel's first
//! fetches and the first table walks see what the loader wrote.

use alloc::string::String;
use core::arch::{asm, naked_asm};
use core::mem::offset_of;

use efi_loader::elf::Machine;
use efi_loader::machine::aarch64::{
    CNTHCTL_EL2_EL1_ACCESS, HCR_EL2_E2H, HCR_EL2_EL1_HOST, MAIR, SCTLR, SPSR_EL1T_MASKED, tcr,
};
use efi_loader::paging::{Format, Space};
use efi_loader::protocol::HHDM_OFFSET_AARCH64;

pub const MACHINE: Machine = Machine::Aarch64;
/// The value of Limine's `${ARCH}` macro.
pub const ARCH: &str = "aarch64";
pub const HHDM_OFFSET: u64 = HHDM_OFFSET_AARCH64;
/// Virtual address bits of the paging mode the loader sets up (4-level).
pub const VA_BITS: u32 = 48;
/// The highest paging mode the handoff sets up (Limine 8.2 gives AArch64 kernels 4-level
/// paging only).
pub const SUPPORTED_PAGING_MAX: u64 = efi_loader::protocol::PAGING_MODE_4LEVEL;

/// 5-level (52-bit) paging is not offered on AArch64, as in Limine 8.2.
pub fn cpu_has_5level() -> bool {
    false
}

/// The kernel's root covers the TTBR1 half.
pub const SPACE: Space = Space::Upper;

pub fn page_format() -> Format {
    Format::Aarch64
}

fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack, preserves_flags)) };
    (el >> 2) & 0b11
}

/// Refuse firmware states the loader cannot turn into the protocol's.
pub fn check_firmware_state() -> Result<u64, String> {
    match current_el() {
        1 => Ok(1),
        2 => {
            let hcr: u64;
            // SAFETY: at EL2, reading HCR_EL2 has no side effects.
            unsafe {
                asm!("mrs {}, hcr_el2", out(reg) hcr, options(nomem, nostack, preserves_flags))
            };
            if hcr & HCR_EL2_E2H != 0 {
                Err("the firmware runs at EL2 with VHE (HCR_EL2.E2H = 1); this loader can only drop to EL1 from non-VHE EL2".into())
            } else {
                Ok(2)
            }
        }
        other => Err(alloc::format!(
            "the firmware runs at EL{other}; the loader needs EL1 or EL2"
        )),
    }
}

/// A cheap, varying number (for KASLR when the firmware has no RNG).
pub fn counter() -> u64 {
    let count: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe { asm!("mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack, preserves_flags)) };
    count
}

/// The physical range the EL1 trampoline occupies (identity-mapped while it switches).
pub fn trampoline_code() -> (u64, u64) {
    let start = el1_jump as *const () as u64;
    (start & !0xfff, 2 * 4096)
}

/// Nothing beyond the common plan is prepared before ExitBootServices on AArch64.
#[derive(Clone, Copy, Debug)]
pub struct Extra {
    pub exception_level: u64,
}

/// The translation roots the handoff switches to.
pub struct Roots {
    /// TTBR1: the kernel's higher half.
    pub higher: u64,
    /// TTBR0 while the trampoline switches: identity map of the trampoline.
    pub identity: u64,
    /// TTBR0 at kernel entry: an empty table.
    pub empty: u64,
}

/// Clean and invalidate `[start, start + length)` to the point of coherency.
pub fn clean_to_coherency(start: u64, length: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut address = start & !(line - 1);
    while address < start + length {
        // SAFETY: `dc civac` writes back and invalidates one line of memory the loader
        // owns (or may read); it changes no data.
        unsafe { asm!("dc civac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    // SAFETY: a barrier only orders the maintenance before what follows.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Report a failure after ExitBootServices and stop: the console is gone and the UART's
/// address is the platform's business, so the loader can only park the CPU.
pub fn fatal(_message: &str) -> ! {
    loop {
        // SAFETY: `wfe` waits; nothing else runs.
        unsafe { asm!("msr daifset, #0xf; wfe", options(nomem, nostack)) };
    }
}

/// Register values the trampolines load.
#[repr(C)]
struct Handoff {
    mair: u64,
    tcr: u64,
    sctlr: u64,
    ttbr0_identity: u64,
    ttbr1: u64,
    ttbr0_final: u64,
    hhdm: u64,
    stack_top: u64,
    entry: u64,
}

/// Bring the machine into the protocol's entry state and jump to `entry`. `coherent` are
/// the ranges (kernel image, page tables) to clean first. Never returns.
pub fn enter(
    extra: &Extra,
    roots: &Roots,
    hhdm: u64,
    stack_top: u64,
    entry: u64,
    coherent: &[(u64, u64)],
) -> ! {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack, preserves_flags))
    };
    let handoff = Handoff {
        mair: MAIR,
        tcr: tcr(mmfr0 & 0xf),
        sctlr: SCTLR,
        ttbr0_identity: roots.identity,
        ttbr1: roots.higher,
        ttbr0_final: roots.empty,
        hhdm,
        stack_top,
        entry,
    };
    for &(start, length) in coherent {
        clean_to_coherency(start, length);
    }
    let (code, code_length) = trampoline_code();
    clean_to_coherency(code, code_length);
    // SAFETY: boot services are gone and the tables in `handoff` map the kernel, the stack,
    // the HHDM (which covers the trampolines and their data) and, in the identity root,
    // the EL1 trampoline's pages; the caches were made coherent just above.
    unsafe {
        if extra.exception_level == 2 {
            open_el1_from_el2();
            el2_jump(&handoff)
        } else {
            el1_jump(&handoff)
        }
    }
}

/// Let EL1 use the timer, the counter, FP/SIMD and the GIC CPU interface without traps,
/// and report the real CPU identity to it.
///
/// # Safety
/// Must run at EL2 (non-VHE) with boot services exited.
unsafe fn open_el1_from_el2() {
    // SAFETY: these EL2 registers only configure how EL1 is trapped and virtualised; the
    // values give EL1 the machine as if there were no hypervisor: no traps (CPTR_EL2 at
    // its RES1 pattern 0x33ff, HSTR_EL2 = 0), physical timer access, no counter offset,
    // MIDR/MPIDR passed through, and, when the GIC has a system-register interface,
    // ICC_SRE_EL2.{SRE, Enable} so EL1 may use it.
    unsafe {
        asm!(
            "mrs {tmp}, cnthctl_el2",
            "orr {tmp}, {tmp}, {timer}",
            "msr cnthctl_el2, {tmp}",
            "msr cntvoff_el2, xzr",
            "mov {tmp}, #0x33ff",
            "msr cptr_el2, {tmp}",
            "msr hstr_el2, xzr",
            "mrs {tmp}, midr_el1",
            "msr vpidr_el2, {tmp}",
            "mrs {tmp}, mpidr_el1",
            "msr vmpidr_el2, {tmp}",
            "mrs {tmp}, id_aa64pfr0_el1",
            "ubfx {tmp}, {tmp}, #24, #4",
            "cbz {tmp}, 1f",
            "mrs {tmp}, s3_4_c12_c9_5",      // ICC_SRE_EL2
            "orr {tmp}, {tmp}, #0x1",        // SRE
            "orr {tmp}, {tmp}, #0x8",        // Enable (EL1 may use ICC_SRE_EL1)
            "msr s3_4_c12_c9_5, {tmp}",
            "isb",
            "msr s3_4_c12_c11_0, xzr",       // ICH_HCR_EL2: no virtual interrupts
            "1:",
            "isb",
            tmp = out(reg) _,
            timer = const CNTHCTL_EL2_EL1_ACCESS,
            options(nostack),
        );
    }
}

/// EL2 → EL1: program EL1's translation regime and eret into the kernel.
///
/// # Safety
/// See [`enter`]; must run at non-VHE EL2.
#[unsafe(naked)]
unsafe extern "C" fn el2_jump(handoff: *const Handoff) -> ! {
    naked_asm!(
        "msr daifset, #0xf",
        "ldr x1, [x0, #{mair}]",
        "msr mair_el1, x1",
        "ldr x1, [x0, #{tcr}]",
        "msr tcr_el1, x1",
        "ldr x1, [x0, #{ttbr0_final}]",
        "msr ttbr0_el1, x1",
        "ldr x1, [x0, #{ttbr1}]",
        "msr ttbr1_el1, x1",
        "isb",
        "tlbi vmalle1",                     // nothing stale for EL1&0
        "dsb ish",
        "ic iallu",
        "dsb ish",
        "isb",
        "ldr x1, [x0, #{sctlr}]",
        "msr sctlr_el1, x1",                // EL1 MMU and caches on (takes effect at EL1)
        "mov x1, #{hcr_low}",
        "movk x1, #{hcr_high}, lsl #16",
        "msr hcr_el2, x1",                  // EL1 is AArch64, no traps
        "ldr x1, [x0, #{stack}]",
        "msr sp_el0, x1",                   // EL1t runs on SP_EL0
        "ldr x1, [x0, #{entry}]",
        "msr elr_el2, x1",
        "mov x1, #{spsr}",
        "msr spsr_el2, x1",                 // EL1t, D A I F masked
        "isb",
        "mov x0, xzr", "mov x1, xzr", "mov x2, xzr", "mov x3, xzr",
        "mov x4, xzr", "mov x5, xzr", "mov x6, xzr", "mov x7, xzr",
        "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr",
        "mov x12, xzr", "mov x13, xzr", "mov x14, xzr", "mov x15, xzr",
        "mov x16, xzr", "mov x17, xzr", "mov x18, xzr", "mov x19, xzr",
        "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr",
        "mov x24, xzr", "mov x25, xzr", "mov x26, xzr", "mov x27, xzr",
        "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
        "eret",
        mair = const offset_of!(Handoff, mair),
        tcr = const offset_of!(Handoff, tcr),
        ttbr0_final = const offset_of!(Handoff, ttbr0_final),
        ttbr1 = const offset_of!(Handoff, ttbr1),
        sctlr = const offset_of!(Handoff, sctlr),
        hcr_low = const HCR_EL2_EL1_HOST & 0xffff,
        hcr_high = const (HCR_EL2_EL1_HOST >> 16) & 0xffff,
        stack = const offset_of!(Handoff, stack_top),
        entry = const offset_of!(Handoff, entry),
        spsr = const SPSR_EL1T_MASKED,
    )
}

/// EL1: MMU off, new registers, MMU on, continue through the HHDM, eret into the kernel.
///
/// # Safety
/// See [`enter`]; must run at EL1 with this code identity-mapped in the identity root.
#[unsafe(naked)]
unsafe extern "C" fn el1_jump(handoff: *const Handoff) -> ! {
    naked_asm!(
        "msr daifset, #0xf",
        "ldp x1, x2, [x0, #{mair}]",        // x1 = MAIR, x2 = TCR
        "ldp x3, x4, [x0, #{sctlr}]",       // x3 = SCTLR, x4 = identity TTBR0
        "ldp x5, x6, [x0, #{ttbr1}]",       // x5 = TTBR1, x6 = final TTBR0
        "ldp x7, x8, [x0, #{hhdm}]",        // x7 = HHDM offset, x8 = stack top
        "ldr x9, [x0, #{entry}]",           // x9 = entry
        "mrs x10, sctlr_el1",
        "bic x10, x10, #1",
        "msr sctlr_el1, x10",               // MMU off: from here on, registers only
        "isb",
        "msr mair_el1, x1",
        "msr tcr_el1, x2",
        "msr ttbr0_el1, x4",
        "msr ttbr1_el1, x5",
        "isb",
        "tlbi vmalle1",                     // forget the firmware's translations
        "dsb ish",
        "ic iallu",
        "dsb ish",
        "isb",
        "msr sctlr_el1, x3",                // MMU on with the loader's tables
        "isb",
        "adr x10, 2f",
        "add x10, x10, x7",
        "br x10",                           // continue through the HHDM
        "2:",
        "msr ttbr0_el1, x6",                // the lower half: empty
        "isb",
        "tlbi vmalle1",
        "dsb ish",
        "isb",
        "msr sp_el0, x8",                   // EL1t runs on SP_EL0
        "msr elr_el1, x9",
        "mov x10, #{spsr}",
        "msr spsr_el1, x10",                // EL1t, D A I F masked
        "mov x0, xzr", "mov x1, xzr", "mov x2, xzr", "mov x3, xzr",
        "mov x4, xzr", "mov x5, xzr", "mov x6, xzr", "mov x7, xzr",
        "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr",
        "mov x12, xzr", "mov x13, xzr", "mov x14, xzr", "mov x15, xzr",
        "mov x16, xzr", "mov x17, xzr", "mov x18, xzr", "mov x19, xzr",
        "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr",
        "mov x24, xzr", "mov x25, xzr", "mov x26, xzr", "mov x27, xzr",
        "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
        "eret",
        mair = const offset_of!(Handoff, mair),
        sctlr = const offset_of!(Handoff, sctlr),
        ttbr1 = const offset_of!(Handoff, ttbr1),
        hhdm = const offset_of!(Handoff, hhdm),
        entry = const offset_of!(Handoff, entry),
        spsr = const SPSR_EL1T_MASKED,
    )
}

// The paired loads above rely on this order.
const _: () = {
    assert!(offset_of!(Handoff, tcr) == offset_of!(Handoff, mair) + 8);
    assert!(offset_of!(Handoff, ttbr0_identity) == offset_of!(Handoff, sctlr) + 8);
    assert!(offset_of!(Handoff, ttbr0_final) == offset_of!(Handoff, ttbr1) + 8);
    assert!(offset_of!(Handoff, stack_top) == offset_of!(Handoff, hhdm) + 8);
};

/// What starting the secondary CPUs needs beyond the common plan: how to call PSCI.
#[derive(Clone, Copy, Debug)]
pub struct MpExtra {
    /// `None` when the device tree describes no PSCI: then no CPU is started.
    pub conduit: Option<efi_loader::mp::Conduit>,
}

/// The boot CPU's hardware id as the MP response reports it: MPIDR_EL1's affinity.
pub fn bsp_hardware_id() -> u64 {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack, preserves_flags)) };
    mpidr & efi_loader::mp::MPIDR_AFFINITY_MASK
}

/// What a secondary CPU's start code reads, with the MMU off, from its slot of the
/// plan's blocks (cleaned to the point of coherency before the CPU is started).
#[repr(C)]
struct ApBlock {
    mair: u64,
    tcr: u64,
    sctlr: u64,
    ttbr0_identity: u64,
    ttbr1: u64,
    ttbr0_final: u64,
    hhdm: u64,
    /// Kernel (HHDM) address of the CPU's `limine_mp_info`.
    info: u64,
    /// Set to 1 by the CPU once it runs on the loader's tables in its parking loop.
    booted: u64,
}

/// Bytes of one [`ApBlock`] slot (a cache-line multiple).
pub const MP_BLOCK_BYTES: usize = 128;
const _: () = assert!(size_of::<ApBlock>() <= MP_BLOCK_BYTES);

/// The physical range the secondary CPUs' start code occupies (identity-mapped while they
/// turn their MMU on).
pub fn ap_code() -> (u64, u64) {
    let start = ap_start as *const () as u64;
    (start & !0xfff, 2 * 4096)
}

/// PSCI `CPU_ON` (SMC64 function 0xc400_0003) for `mpidr`, entering `entry` with
/// `context` in x0. Returns the PSCI status (0 = success).
fn psci_cpu_on(conduit: efi_loader::mp::Conduit, mpidr: u64, entry: u64, context: u64) -> i64 {
    const CPU_ON: u64 = 0xc400_0003;
    let status: u64;
    // SAFETY: a PSCI call per the SMC Calling Convention: function id in x0, arguments in
    // x1-x3, result in x0, x4-x17 may be clobbered; the firmware (EL2/EL3) starts the
    // named CPU at `entry`, and changes nothing of this CPU's state beyond those registers.
    unsafe {
        match conduit {
            efi_loader::mp::Conduit::Hvc => asm!(
                "hvc #0",
                inout("x0") CPU_ON => status,
                inout("x1") mpidr => _, inout("x2") entry => _, inout("x3") context => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            ),
            efi_loader::mp::Conduit::Smc => asm!(
                "smc #0",
                inout("x0") CPU_ON => status,
                inout("x1") mpidr => _, inout("x2") entry => _, inout("x3") context => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            ),
        }
    }
    status as i64
}

/// How long a started CPU gets to reach its parking loop.
const AP_START_TIMEOUT_MS: u64 = 1000;

/// Start the secondary CPU `index` of `plan` and wait (bounded) until it parks on its
/// `goto_address`. Runs after ExitBootServices, with `roots` built. Only from EL1: PSCI
/// enters the CPU at the caller's exception level, and the start code runs at EL1.
pub fn start_cpu(
    plan: &super::mp::Plan,
    index: usize,
    exception_level: u64,
    roots: &Roots,
    hhdm: u64,
) -> bool {
    let Some(conduit) = plan.arch.conduit else {
        return false;
    };
    if exception_level != 1 {
        return false;
    }
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack, preserves_flags))
    };
    let block = plan.blocks + (index * MP_BLOCK_BYTES) as u64;
    let value = ApBlock {
        mair: MAIR,
        tcr: tcr(mmfr0 & 0xf),
        sctlr: SCTLR,
        ttbr0_identity: roots.identity,
        ttbr1: roots.higher,
        ttbr0_final: roots.empty,
        hhdm,
        info: super::mp::info_at(plan.infos, index) + hhdm,
        booted: 0,
    };
    // SAFETY: `block` is this CPU's slot of the blocks the plan allocated (loader memory,
    // identity-mapped, `MP_BLOCK_BYTES` each, 8-byte aligned), used by nothing else.
    unsafe { (block as *mut ApBlock).write(value) };
    clean_to_coherency(block, MP_BLOCK_BYTES as u64);
    let (code, length) = ap_code();
    clean_to_coherency(code, length);
    let mpidr = plan.cpus[index].hardware_id;
    if psci_cpu_on(conduit, mpidr, ap_start as *const () as u64, block) != 0 {
        return false;
    }
    let booted = (block + offset_of!(ApBlock, booted) as u64) as *const u64;
    let frequency: u64;
    // SAFETY: reading the counter frequency has no side effects.
    unsafe {
        asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack, preserves_flags))
    };
    let deadline = counter() + frequency.max(1) * AP_START_TIMEOUT_MS / 1000;
    while counter() < deadline {
        // SAFETY: `booted` lies in the block written above; the started CPU stores 1 there
        // (through the HHDM, with its caches on, so coherent with this CPU's view).
        if unsafe { booted.read_volatile() } != 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// A secondary CPU's first instructions, at EL1 with the MMU off, its [`ApBlock`]'s
/// physical address in x0 (PSCI's context id): the boot CPU's MAIR/TCR/SCTLR with the
/// identity root in TTBR0 and the kernel's root in TTBR1, on through the HHDM, TTBR0
/// emptied, `booted` set, then the parking loop on `goto_address`, and into the kernel at
/// EL1t on the CPU's stack with DAIF masked and its info in x0.
///
/// # Safety
/// Only entered by PSCI `CPU_ON` with a block [`start_cpu`] wrote and cleaned.
#[unsafe(naked)]
unsafe extern "C" fn ap_start() -> ! {
    naked_asm!(
        "msr daifset, #0xf",
        "ldp x1, x2, [x0, #{mair}]",        // x1 = MAIR, x2 = TCR
        "ldp x3, x4, [x0, #{sctlr}]",       // x3 = SCTLR, x4 = identity TTBR0
        "ldp x5, x6, [x0, #{ttbr1}]",       // x5 = TTBR1, x6 = final TTBR0
        "ldp x7, x9, [x0, #{hhdm}]",        // x7 = HHDM offset, x9 = info (kernel address)
        "msr mair_el1, x1",
        "msr tcr_el1, x2",
        "msr ttbr0_el1, x4",
        "msr ttbr1_el1, x5",
        "isb",
        "tlbi vmalle1",
        "dsb nsh",
        "ic iallu",
        "dsb nsh",
        "isb",
        "msr sctlr_el1, x3",                // MMU and caches on
        "isb",
        "adr x10, 2f",
        "add x10, x10, x7",
        "br x10",                           // continue through the HHDM
        "2:",
        "msr ttbr0_el1, x6",                // the lower half: empty
        "isb",
        "tlbi vmalle1",
        "dsb nsh",
        "isb",
        "add x10, x0, x7",
        "mov x11, #1",
        "add x10, x10, #{booted}",
        "stlr x11, [x10]",                  // tell the boot CPU we are parked
        "ldr x11, [x9, #{stack}]",
        "msr sp_el0, x11",                  // EL1t runs on SP_EL0
        "add x12, x9, #{goto}",
        "3:",
        "ldar x11, [x12]",
        "cbnz x11, 4f",
        "yield",
        "b 3b",
        "4:",
        "msr elr_el1, x11",
        "mov x11, #{spsr}",
        "msr spsr_el1, x11",                // EL1t, D A I F masked
        "mov x0, x9",
        "mov x1, xzr", "mov x2, xzr", "mov x3, xzr",
        "mov x4, xzr", "mov x5, xzr", "mov x6, xzr", "mov x7, xzr",
        "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr",
        "mov x12, xzr", "mov x13, xzr", "mov x14, xzr", "mov x15, xzr",
        "mov x16, xzr", "mov x17, xzr", "mov x18, xzr", "mov x19, xzr",
        "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr",
        "mov x24, xzr", "mov x25, xzr", "mov x26, xzr", "mov x27, xzr",
        "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
        "eret",
        mair = const offset_of!(ApBlock, mair),
        sctlr = const offset_of!(ApBlock, sctlr),
        ttbr1 = const offset_of!(ApBlock, ttbr1),
        hhdm = const offset_of!(ApBlock, hhdm),
        booted = const offset_of!(ApBlock, booted),
        stack = const efi_loader::mp::STACK_OFFSET_AARCH64,
        goto = const efi_loader::mp::GOTO_OFFSET_AARCH64,
        spsr = const SPSR_EL1T_MASKED,
    )
}

// The paired loads of `ap_start` rely on this order.
const _: () = {
    assert!(offset_of!(ApBlock, tcr) == offset_of!(ApBlock, mair) + 8);
    assert!(offset_of!(ApBlock, ttbr0_identity) == offset_of!(ApBlock, sctlr) + 8);
    assert!(offset_of!(ApBlock, ttbr0_final) == offset_of!(ApBlock, ttbr1) + 8);
    assert!(offset_of!(ApBlock, info) == offset_of!(ApBlock, hhdm) + 8);
};
