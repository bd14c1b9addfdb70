//! The exception-fixup table: kernel code ranges allowed to fault, and where each resumes.
//!
//! A synchronous exception at EL1 whose ELR lies in one of these ranges is not a kernel bug:
//! the dispatcher sets ELR to the range's resume address and returns ([`resume_address`],
//! over the portable [`arch_api::fixup`]), recording the cause for the probe that provoked
//! it. Every range is a small leaf routine in the assembly below, so the resume code only
//! has to set a return value and `ret` (LR and SP are untouched by the faulting
//! instruction). Users: the user copies and, in the test build, the self-test probes.
//!
//! The table is built from the routines' symbols at run time (a handful of entries): no
//! linker-script section, so nothing depends on how the kernel is linked.

use core::arch::global_asm;

use arch_api::TrapCause;
use arch_api::fixup::{self, Fixup, RecordedCause};

global_asm!(
    r#"
    .section .text.keel_fixup, "ax"
    .balign 4

    // keel_copy_from_user(destination x0, source x1 (user), length x2) -> x0: 0 or 1
    .global keel_copy_from_user
keel_copy_from_user:
1:  cmp     x2, #8                      // while length >= 8:
    b.lo    2f
    ldtr    x3, [x1]                    //   x3 = *source, with EL0's permissions
    str     x3, [x0], #8                //   *destination++ = x3
    add     x1, x1, #8
    sub     x2, x2, #8
    b       1b
2:  cbz     x2, 3f                      // while length > 0:
    ldtrb   w3, [x1]                    //   one byte, with EL0's permissions
    strb    w3, [x0], #1
    add     x1, x1, #1
    sub     x2, x2, #1
    b       2b
3:  mov     x0, #0                      // success
    ret
    .global keel_copy_from_user_end
keel_copy_from_user_end:

    // keel_copy_to_user(destination x0 (user), source x1, length x2) -> x0: 0 or 1
    .global keel_copy_to_user
keel_copy_to_user:
1:  cmp     x2, #8
    b.lo    2f
    ldr     x3, [x1], #8                // x3 = *source++
    sttr    x3, [x0]                    // *destination = x3, with EL0's permissions
    add     x0, x0, #8
    sub     x2, x2, #8
    b       1b
2:  cbz     x2, 3f
    ldrb    w3, [x1], #1
    sttrb   w3, [x0]
    add     x0, x0, #1
    sub     x2, x2, #1
    b       2b
3:  mov     x0, #0
    ret
    .global keel_copy_to_user_end
keel_copy_to_user_end:

    .global keel_user_copy_fault
keel_user_copy_fault:                   // resume point of both copies
    mov     x0, #1                      // failure
    ret

    .text
"#
);

unsafe extern "C" {
    /// Copy `length` bytes from user `source` to kernel `destination`; 0 on success, 1 when
    /// a user access faulted.
    ///
    /// # Safety
    /// `destination` is valid for `length` bytes of writes.
    pub fn keel_copy_from_user(destination: *mut u8, source: u64, length: usize) -> u64;
    /// Copy `length` bytes from kernel `source` to user `destination`; 0 or 1 as above.
    ///
    /// # Safety
    /// `source` is valid for `length` bytes of reads.
    pub fn keel_copy_to_user(destination: u64, source: *const u8, length: usize) -> u64;

    static keel_copy_from_user_end: u8;
    static keel_copy_to_user_end: u8;
    static keel_user_copy_fault: u8;
}

/// The user copies' entries: they report through their result, nothing is recorded.
fn copy_fixups() -> [Fixup; 2] {
    let copy_fault = (&raw const keel_user_copy_fault) as u64;
    [
        Fixup {
            start: keel_copy_from_user as *const () as u64,
            end: (&raw const keel_copy_from_user_end) as u64,
            resume: copy_fault,
            record: false,
        },
        Fixup {
            start: keel_copy_to_user as *const () as u64,
            end: (&raw const keel_copy_to_user_end) as u64,
            resume: copy_fault,
            record: false,
        },
    ]
}

/// The cause of the last exception a recording fixup recovered from.
static RECORDED: RecordedCause = RecordedCause::new();

/// Where a fault with `cause` at `pc` resumes, if a fixup covers it (recording `cause` for
/// a probe's entry).
pub fn resume_address(pc: u64, cause: TrapCause) -> Option<u64> {
    let table = copy_fixups().into_iter();
    #[cfg(feature = "testing")]
    let table = table.chain(probes::fixups());
    fixup::resume(table, pc, cause, &RECORDED)
}

/// The self-test probes: one faulting instruction each, resuming after it, under a
/// recording fixup entry.
#[cfg(feature = "testing")]
pub mod probes {
    use core::arch::global_asm;

    use arch_api::TrapCause;
    use arch_api::fixup::Fixup;

    global_asm!(
        r#"
    .section .text.keel_fixup, "ax"
    .balign 4

    .global keel_provoke_brk
keel_provoke_brk:
    brk     #0x4b
    .global keel_provoke_brk_end
keel_provoke_brk_end:
    ret

    .global keel_provoke_udf
keel_provoke_udf:
    udf     #0
    .global keel_provoke_udf_end
keel_provoke_udf_end:
    ret

    // keel_provoke_load(address x0): a load from a reserved, never-mapped kernel address
    .global keel_provoke_load
keel_provoke_load:
    ldr     x0, [x0]
    .global keel_provoke_load_end
keel_provoke_load_end:
    ret

    // keel_provoke_store(address x0): store back the word just loaded from a kernel address
    .global keel_provoke_store
keel_provoke_store:
    ldr     x1, [x0]
    str     x1, [x0]
    .global keel_provoke_store_end
keel_provoke_store_end:
    ret
    .text
"#
    );

    unsafe extern "C" {
        /// Execute `brk`, `udf`, or a load from `address`, each under a fixup entry.
        pub fn keel_provoke_brk();
        pub fn keel_provoke_udf();
        pub fn keel_provoke_load(address: u64) -> u64;
        /// Load the word at `address` and store it back, under a fixup entry.
        pub fn keel_provoke_store(address: u64);

        static keel_provoke_brk_end: u8;
        static keel_provoke_udf_end: u8;
        static keel_provoke_load_end: u8;
        static keel_provoke_store_end: u8;
    }

    /// The probes' entries, each resuming at its `ret` and recording the cause.
    pub(super) fn fixups() -> [Fixup; 4] {
        let entry = |start: u64, end: u64| Fixup {
            start,
            end,
            resume: end,
            record: true,
        };
        [
            entry(
                keel_provoke_brk as *const () as u64,
                (&raw const keel_provoke_brk_end) as u64,
            ),
            entry(
                keel_provoke_udf as *const () as u64,
                (&raw const keel_provoke_udf_end) as u64,
            ),
            entry(
                keel_provoke_load as *const () as u64,
                (&raw const keel_provoke_load_end) as u64,
            ),
            entry(
                keel_provoke_store as *const () as u64,
                (&raw const keel_provoke_store_end) as u64,
            ),
        ]
    }

    /// Run `probe` and return the cause its fixup recorded.
    pub fn under(probe: impl FnOnce()) -> Option<TrapCause> {
        crate::sysreg::masked(|| super::RECORDED.under(probe))
    }
}
