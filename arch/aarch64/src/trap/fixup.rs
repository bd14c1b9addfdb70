//! The exception-fixup table: kernel code ranges allowed to fault, and where each resumes.
//!
//! A synchronous exception at EL1 whose ELR lies in one of these ranges is not a kernel bug:
//! the dispatcher records the cause ([`take_recorded`]), sets ELR to the range's resume
//! address and returns. Every range is a small leaf routine in the assembly below, so the
//! resume code only has to set a return value and `ret` (LR and SP are untouched by the
//! faulting instruction).
//!
//! The table is built from the routines' symbols at run time (a handful of entries): no
//! linker-script section, so nothing depends on how the kernel is linked.

use core::arch::global_asm;

use arch_api::TrapCause;
use spin::Mutex;

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

    // The self-test provocations: one faulting instruction each, resuming after it.
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
    /// Execute `brk`, `udf`, or a load from `address`, each under a fixup entry.
    pub fn keel_provoke_brk();
    pub fn keel_provoke_udf();
    pub fn keel_provoke_load(address: u64) -> u64;
    /// Load the word at `address` and store it back, under a fixup entry.
    pub fn keel_provoke_store(address: u64);

    static keel_copy_from_user_end: u8;
    static keel_copy_to_user_end: u8;
    static keel_user_copy_fault: u8;
    static keel_provoke_brk_end: u8;
    static keel_provoke_udf_end: u8;
    static keel_provoke_load_end: u8;
    static keel_provoke_store_end: u8;
}

/// One entry: faults at `start..end` resume at `resume`; `record`: keep the cause for
/// [`take_recorded`] (the self-test probes; the user copies report through their result).
struct Fixup {
    start: u64,
    end: u64,
    resume: u64,
    record: bool,
}

fn table() -> [Fixup; 6] {
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
        Fixup {
            start: keel_provoke_brk as *const () as u64,
            end: (&raw const keel_provoke_brk_end) as u64,
            resume: (&raw const keel_provoke_brk_end) as u64,
            record: true,
        },
        Fixup {
            start: keel_provoke_udf as *const () as u64,
            end: (&raw const keel_provoke_udf_end) as u64,
            resume: (&raw const keel_provoke_udf_end) as u64,
            record: true,
        },
        Fixup {
            start: keel_provoke_load as *const () as u64,
            end: (&raw const keel_provoke_load_end) as u64,
            resume: (&raw const keel_provoke_load_end) as u64,
            record: true,
        },
        Fixup {
            start: keel_provoke_store as *const () as u64,
            end: (&raw const keel_provoke_store_end) as u64,
            resume: (&raw const keel_provoke_store_end) as u64,
            record: true,
        },
    ]
}

/// The cause of the last fixed-up exception (for the self-test).
static RECORDED: Mutex<Option<TrapCause>> = Mutex::new(None);

/// Where a fault at `pc` resumes, if a fixup covers it; records `cause`.
pub fn resume_address(pc: u64, cause: TrapCause) -> Option<u64> {
    let fixup = table()
        .into_iter()
        .find(|fixup| (fixup.start..fixup.end).contains(&pc))?;
    if fixup.record {
        // The dispatcher runs with IRQs masked, and `take_recorded` holds the lock only
        // with IRQs masked and never across a faulting instruction, so it is free here.
        *RECORDED.lock() = Some(cause);
    }
    Some(fixup.resume)
}

/// The cause recorded by the last fixup, cleared.
pub fn take_recorded() -> Option<TrapCause> {
    crate::sysreg::masked(|| RECORDED.lock().take())
}
