//! Exception fixups: kernel instructions that are *allowed* to fault, and where to resume.
//!
//! A fixup entry ([`arch_api::fixup::Fixup`]) pairs the instruction pointer a trap reports
//! (for a fault: the faulting instruction; for a trap such as `int3`: the next one) with a
//! resume address. When a kernel-mode exception arrives at an address in the table, the
//! dispatcher resumes there instead of reporting a fatal trap ([`resume`]), and records the
//! decoded cause for the probe that provoked it. Users: the user-copy routine
//! (`copy_user_*`: a fault means "bad user address", the routine returns the bytes left)
//! and, in the test build, the [`SelfTest`](arch_api::SelfTest) probes.
//!
//! The table is made of label pairs, each label defined by the assembly below; nothing is
//! registered at run time.

use core::arch::global_asm;

use arch_api::TrapCause;
use arch_api::fixup::{self, Fixup, RecordedCause};

unsafe extern "C" {
    /// `rep movsb` of `length` bytes; returns the bytes *not* copied (0 = success).
    fn keel_x86_copy_user_plain(destination: *mut u8, source: *const u8, length: usize) -> usize;
    /// The same between `stac` and `clac` (only when SMAP is on: `stac` is #UD without it).
    fn keel_x86_copy_user_smap(destination: *mut u8, source: *const u8, length: usize) -> usize;

    // Labels inside them (never called).
    fn keel_x86_fixup_copy_plain_at();
    fn keel_x86_fixup_copy_plain_resume();
    fn keel_x86_fixup_copy_smap_at();
    fn keel_x86_fixup_copy_smap_resume();
}

/// The user copies' entries (they report through their result: nothing recorded).
fn copy_fixups() -> [Fixup; 2] {
    [
        Fixup::at(
            keel_x86_fixup_copy_plain_at as *const () as u64,
            keel_x86_fixup_copy_plain_resume as *const () as u64,
            false,
        ),
        Fixup::at(
            keel_x86_fixup_copy_smap_at as *const () as u64,
            keel_x86_fixup_copy_smap_resume as *const () as u64,
            false,
        ),
    ]
}

global_asm!(
    ".pushsection .text.keel_x86_fixups, \"ax\", @progbits",
    // User copies: (rdi = destination, rsi = source, rdx = length) -> rax = bytes left.
    ".globl keel_x86_copy_user_plain",
    "keel_x86_copy_user_plain:",
    "    movq %rdx, %rcx", // rcx = bytes to copy
    ".globl keel_x86_fixup_copy_plain_at",
    "keel_x86_fixup_copy_plain_at:",
    "    rep movsb", // copy; a fault leaves rcx = bytes left
    ".globl keel_x86_fixup_copy_plain_resume",
    "keel_x86_fixup_copy_plain_resume:",
    "    movq %rcx, %rax", // return bytes left (0: all copied)
    "    ret",
    //
    ".globl keel_x86_copy_user_smap",
    "keel_x86_copy_user_smap:",
    "    movq %rdx, %rcx", // rcx = bytes to copy
    "    stac",            // AC = 1: user pages reachable (SMAP)
    ".globl keel_x86_fixup_copy_smap_at",
    "keel_x86_fixup_copy_smap_at:",
    "    rep movsb", // copy; a fault leaves rcx = bytes left
    ".globl keel_x86_fixup_copy_smap_resume",
    "keel_x86_fixup_copy_smap_resume:",
    "    clac",            // AC = 0: SMAP enforced again
    "    movq %rcx, %rax", // return bytes left
    "    ret",
    ".popsection",
    options(att_syntax),
);

/// The cause of the last trap a recording fixup recovered from.
static RECORDED: RecordedCause = RecordedCause::new();

/// The resume address for a kernel-mode trap with `cause` reported at `rip`, if a fixup
/// covers it (recording `cause` for a probe's entry).
pub fn resume(rip: u64, cause: TrapCause) -> Option<u64> {
    let table = copy_fixups().into_iter();
    #[cfg(feature = "testing")]
    let table = table.chain(probes::fixups());
    fixup::resume(table, rip, cause, &RECORDED)
}

/// Copy `length` bytes from `source` to `destination`, either of which may be a user
/// address that faults. Returns the number of bytes *not* copied (0: success).
///
/// # Safety
/// The caller checked that every user address in both ranges lies in the user half (so
/// a fault can only be a page fault on user memory) and that every kernel address is
/// valid for the access.
pub unsafe fn copy_user(destination: *mut u8, source: *const u8, length: usize) -> usize {
    if crate::features::enabled(crate::features::Feature::Smap) {
        // SAFETY: SMAP is on, so `stac`/`clac` exist; the ranges are the caller's duty.
        unsafe { keel_x86_copy_user_smap(destination, source, length) }
    } else {
        // SAFETY: the ranges are the caller's duty.
        unsafe { keel_x86_copy_user_plain(destination, source, length) }
    }
}

/// The self-test probes: one faulting instruction each, under a recording fixup entry.
#[cfg(feature = "testing")]
mod probes {
    use core::arch::global_asm;

    use arch_api::fixup::Fixup;
    use arch_api::{TrapCause, UserRange};

    use super::RECORDED;

    unsafe extern "C" {
        // The probes, callable from Rust (SysV ABI, clobber only caller-saved registers).
        /// `int3`.
        fn keel_x86_provoke_breakpoint();
        /// `ud2`.
        fn keel_x86_provoke_undefined();
        /// `div` by zero.
        fn keel_x86_provoke_divide_error();
        /// A load from `address`; returns the value (garbage after a fault).
        fn keel_x86_provoke_load(address: u64) -> u64;
        /// Load the word at `address` and store it back (a write probe that changes nothing).
        fn keel_x86_provoke_store(address: u64);

        // Labels inside them (never called).
        fn keel_x86_fixup_breakpoint_at();
        fn keel_x86_fixup_breakpoint_resume();
        fn keel_x86_fixup_undefined_at();
        fn keel_x86_fixup_undefined_resume();
        fn keel_x86_fixup_divide_at();
        fn keel_x86_fixup_divide_resume();
        fn keel_x86_fixup_load_at();
        fn keel_x86_fixup_load_resume();
        fn keel_x86_fixup_store_at();
        fn keel_x86_fixup_store_resume();
    }

    /// The probes' entries, each recording the cause.
    pub(super) fn fixups() -> [Fixup; 5] {
        let entry = |at: unsafe extern "C" fn(), resume: unsafe extern "C" fn()| {
            Fixup::at(at as *const () as u64, resume as *const () as u64, true)
        };
        [
            entry(
                keel_x86_fixup_breakpoint_at,
                keel_x86_fixup_breakpoint_resume,
            ),
            entry(keel_x86_fixup_undefined_at, keel_x86_fixup_undefined_resume),
            entry(keel_x86_fixup_divide_at, keel_x86_fixup_divide_resume),
            entry(keel_x86_fixup_load_at, keel_x86_fixup_load_resume),
            entry(keel_x86_fixup_store_at, keel_x86_fixup_store_resume),
        ]
    }

    global_asm!(
        ".pushsection .text.keel_x86_fixups, \"ax\", @progbits",
        ".globl keel_x86_provoke_breakpoint",
        "keel_x86_provoke_breakpoint:",
        "    int3", // #BP is a trap: the saved RIP is the next line
        ".globl keel_x86_fixup_breakpoint_at",
        "keel_x86_fixup_breakpoint_at:",
        ".globl keel_x86_fixup_breakpoint_resume",
        "keel_x86_fixup_breakpoint_resume:",
        "    ret",
        //
        ".globl keel_x86_provoke_undefined",
        "keel_x86_provoke_undefined:",
        ".globl keel_x86_fixup_undefined_at",
        "keel_x86_fixup_undefined_at:",
        "    ud2", // #UD, a fault: the saved RIP is this line
        ".globl keel_x86_fixup_undefined_resume",
        "keel_x86_fixup_undefined_resume:",
        "    ret",
        //
        ".globl keel_x86_provoke_divide_error",
        "keel_x86_provoke_divide_error:",
        "    xorl %ecx, %ecx", // divisor = 0
        "    movl $1, %eax",   // edx:eax = 1
        "    xorl %edx, %edx",
        ".globl keel_x86_fixup_divide_at",
        "keel_x86_fixup_divide_at:",
        "    divl %ecx", // #DE
        ".globl keel_x86_fixup_divide_resume",
        "keel_x86_fixup_divide_resume:",
        "    ret",
        //
        ".globl keel_x86_provoke_load",
        "keel_x86_provoke_load:",
        ".globl keel_x86_fixup_load_at",
        "keel_x86_fixup_load_at:",
        "    movq (%rdi), %rax", // rax = *address (#PF if unmapped)
        ".globl keel_x86_fixup_load_resume",
        "keel_x86_fixup_load_resume:",
        "    ret",
        //
        ".globl keel_x86_provoke_store",
        "keel_x86_provoke_store:",
        "    movq (%rdi), %rax", // rax = *address
        ".globl keel_x86_fixup_store_at",
        "keel_x86_fixup_store_at:",
        "    movq %rax, (%rdi)", // *address = rax (#PF if read-only)
        ".globl keel_x86_fixup_store_resume",
        "keel_x86_fixup_store_resume:",
        "    ret",
        ".popsection",
        options(att_syntax),
    );

    /// A kernel address that is never mapped: in a higher-half PML4 slot Keel leaves empty
    /// (between the HHDM and the kernel-stack region; `provoke` checks it is unmapped).
    pub const UNMAPPED_TEST_ADDRESS: u64 = 0xFFFF_FC80_0000_0000;

    impl arch_api::SelfTest for crate::Cpu {
        fn provoke(trap: arch_api::ProvokedTrap) -> Option<TrapCause> {
            use arch_api::ProvokedTrap;
            match trap {
                ProvokedTrap::Breakpoint => RECORDED.under(|| {
                    // SAFETY: a leaf routine of the assembly above (SysV ABI, no memory
                    // touched) whose `int3` has a fixup entry, so the trap resumes it.
                    unsafe { keel_x86_provoke_breakpoint() }
                }),
                ProvokedTrap::Undefined => RECORDED.under(|| {
                    // SAFETY: as above, for its `ud2`.
                    unsafe { keel_x86_provoke_undefined() }
                }),
                ProvokedTrap::DivideError => RECORDED.under(|| {
                    // SAFETY: as above, for its `div` by zero.
                    unsafe { keel_x86_provoke_divide_error() }
                }),
                ProvokedTrap::KernelPageFault => {
                    if crate::paging::translate(UNMAPPED_TEST_ADDRESS).is_some() {
                        return None;
                    }
                    RECORDED.under(|| {
                        // SAFETY: as above, for its load; the address is not mapped
                        // (checked just now), so the load faults and reads nothing.
                        unsafe { keel_x86_provoke_load(UNMAPPED_TEST_ADDRESS) };
                    })
                }
            }
        }

        fn provoke_user_access(address: u64) -> Option<TrapCause> {
            if !UserRange::is_user_address(address) {
                return None;
            }
            RECORDED.under(|| {
                // SAFETY: the load probe is fixup-covered and reads one word at a user-half
                // address (checked above): it faults (SMAP, or not mapped) or reads user
                // memory, never kernel state.
                unsafe { keel_x86_provoke_load(address) };
            })
        }

        fn user_access_protected() -> bool {
            crate::features::enabled(crate::features::Feature::Smap)
        }

        fn nmi_storm(run: bool) -> bool {
            crate::nmi::storm(run)
        }

        fn nmi_counts() -> (u64, u64) {
            crate::nmi::counts()
        }

        fn provoke_kernel_write(address: u64) -> Option<TrapCause> {
            if address < 0xffff_8000_0000_0000 || crate::paging::translate(address).is_none() {
                return None;
            }
            RECORDED.under(|| {
                // SAFETY: a mapped kernel address (checked); the probe writes back the
                // value it just read, so a store that goes through changes nothing, and a
                // fault resumes after the store through its fixup entry. Interrupts are
                // masked, so nothing can change the word between the load and the store.
                unsafe { keel_x86_provoke_store(address) };
            })
        }

        fn force_space_tags(on: bool) -> bool {
            crate::space::force_tags(on);
            true
        }

        fn space_tag(space: &crate::space::AddressSpace) -> Option<u32> {
            Some(u32::from(space.tag()))
        }
    }
}
