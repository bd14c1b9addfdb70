//! The VBAR_EL1 table and the common save/restore path (see the parent module's essay).

use core::arch::global_asm;

use super::{
    ELR, ESR, ESR_SVC0, FRAME_SIZE, OVERFLOW, OVERFLOW_SPAN, RECORD, SP_EL0, SYSCALL_STATE, VECTOR,
    X0, dispatch,
};
use crate::percpu;

global_asm!(
    r#"
    .section .text.keel_vectors, "ax"
    .balign 2048                        // VBAR_EL1 ignores bits [10:0]
    .global keel_vectors
keel_vectors:
    .irp slot, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128                         // one 32-instruction slot per vector
    .if \slot < 8                       // taken at EL1: check SP before storing anything
    msr     tpidrro_el0, x0             // borrow TPIDRRO_EL0 (EL0's value is always 0)
    mrs     x0, tpidr_el1               // x0 = per-CPU block (always mapped)
    stp     x1, x2, [x0, #{scratch}]    // percpu.scratch = x1, x2
    mov     x1, sp
    sub     x1, x1, #{frame_size}       // x1 = where the frame would start
    ldr     x2, [x0, #{stack_base}]     // x2 = the running stack's lowest usable address
    sub     x2, x2, x1                  // x2 = base - frame start (wraps when it fits)
    sub     x2, x2, #1
    cmp     x2, #{overflow_pages}, lsl #12
    b.lo    9f                          // 0 < base - frame start <= span: overflowed
    ldp     x1, x2, [x0, #{scratch}]    // x1, x2 back
    mrs     x0, tpidrro_el0             // x0 back
    .endif
    sub     sp, sp, #{frame_size}       // sp -= sizeof(TrapFrame): the frame lives below the interrupted SP
    stp     x0, x1, [sp, #{x0}]         // frame.x[0..2] = x0, x1 (now free as scratch)
    .if \slot == 8                      // synchronous from EL0 (AArch64): `svc #0`?
    mrs     x0, esr_el1
    movz    x1, #({esr_svc0} >> 16), lsl #16
    cmp     x0, x1                      // exactly EC = SVC64, IL = 1, immediate 0?
    b.eq    keel_el0_syscall            //   then the system-call fast path
    .endif
    mov     x0, #\slot                  // x0 = which slot was taken
    b       keel_trap_common            // same path for all sixteen
    .if \slot < 8
9:  mov     x1, #\slot
    b       keel_stack_overflow         // x0 = per-CPU block, x1 = slot
    .endif
    .endr

    // The EL1 entry found SP below the running kernel stack (in its guard page, or a frame
    // that no longer fits): storing there would fault again, endlessly, or write over the
    // stack below. Move to this CPU's overflow stack and build the frame there.
    // In: x0 = per-CPU block, x1 = slot; the interrupted x0 in TPIDRRO_EL0, x1/x2 in scratch.
keel_stack_overflow:
    mov     x2, sp
    str     x2, [x0, #{overflowed_sp}]      // percpu.overflowed_sp = sp (for the report)
    ldr     x2, [x0, #{overflow_top}]
    mov     sp, x2                          // sp = top of the overflow stack
    sub     sp, sp, #{frame_size}
    mrs     x2, tpidrro_el0
    str     x2, [sp, #{x0}]                 // frame.x[0] = interrupted x0
    ldr     x2, [x0, #{scratch}]
    str     x2, [sp, #{x0} + 8]             // frame.x[1] = interrupted x1
    orr     x1, x1, #{overflow_flag}        // vector = slot | OVERFLOW
    ldr     x2, [x0, #{scratch} + 8]        // x2 = interrupted x2
    mov     x0, x1
    b       keel_trap_common

    // The system-call fast path (`svc #0` from EL0; the module essay of `trap` and
    // `SYSCALL_PARTIAL`): store only what the call reads or may write back — x0–x18 (the
    // number, arguments, results and message registers, and every other register the
    // Rust code may clobber), x30, SP_EL0, ELR, SPSR, ESR and the vector — and call the
    // core's handler for the number directly (`KEEL_SYSCALLS[number]`, or `keel_syscall`
    // beyond the table). x19–x29 stay in the CPU: the Rust code preserves them (AAPCS64),
    // so on the way out they still hold EL0's values. No frame record:
    // a backtrace from inside ends at EL0's x29, which the walker refuses.
    // In: x0 = ESR_EL1, x0/x1 stored; sp = the frame (at the top of the thread's stack).
keel_el0_syscall:
    stp     x2, x3, [sp, #{x0} + 2 * 8]     // frame.x[2..18] = x2..x17
    stp     x4, x5, [sp, #{x0} + 4 * 8]
    stp     x6, x7, [sp, #{x0} + 6 * 8]
    stp     x8, x9, [sp, #{x0} + 8 * 8]
    stp     x10, x11, [sp, #{x0} + 10 * 8]
    stp     x12, x13, [sp, #{x0} + 12 * 8]
    stp     x14, x15, [sp, #{x0} + 14 * 8]
    stp     x16, x17, [sp, #{x0} + 16 * 8]
    str     x18, [sp, #{x0} + 18 * 8]       // frame.x[18]
    str     x30, [sp, #{x0} + 30 * 8]       // frame.x[30] = EL0's lr
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #{elr}]            // frame.elr, frame.spsr
    mrs     x4, sp_el0
    str     x4, [sp, #{sp_el0}]             // frame.sp_el0 = EL0's SP
    str     x0, [sp, #{esr}]                // frame.esr
    mov     x5, #8
    stp     x5, xzr, [sp, #{vector}]        // frame.vector = 8, syscall_state = PARTIAL
    mov     x0, sp                          // argument: &mut TrapFrame
    cmp     x8, #{table_len}                // x8 = the number (EL0's, still live)
    b.hs    2f                              //   beyond the table: keel_syscall
    adrp    x9, {table}
    add     x9, x9, :lo12:{table}
    ldr     x9, [x9, x8, lsl #3]
    blr     x9                              // KEEL_SYSCALLS[number](frame)
3:  ldr     x9, [sp, #{syscall_state}]
    cbnz    x9, 1f                          // written whole: the full restore below
    ldp     x2, x3, [sp, #{elr}]            // the core may have edited elr (and a nested
    msr     elr_el1, x2                     //   exception or a switch changed the
    msr     spsr_el1, x3                    //   registers meanwhile)
    ldr     x4, [sp, #{sp_el0}]
    msr     sp_el0, x4                      // SP_EL0 = frame.sp_el0 (a switch changed it)
    ldp     x2, x3, [sp, #{x0} + 2 * 8]     // x2..x18, x30 = frame's: no kernel value
    ldp     x4, x5, [sp, #{x0} + 4 * 8]     //   survives in a register the Rust code
    ldp     x6, x7, [sp, #{x0} + 6 * 8]     //   may have used
    ldp     x8, x9, [sp, #{x0} + 8 * 8]
    ldp     x10, x11, [sp, #{x0} + 10 * 8]
    ldp     x12, x13, [sp, #{x0} + 12 * 8]
    ldp     x14, x15, [sp, #{x0} + 14 * 8]
    ldp     x16, x17, [sp, #{x0} + 16 * 8]
    ldr     x18, [sp, #{x0} + 18 * 8]
    ldr     x30, [sp, #{x0} + 30 * 8]
    ldp     x0, x1, [sp, #{x0}]             // x0, x1 = the results
    add     sp, sp, #{frame_size}           // SP_EL1 = the stack top again
    eret                                    // TPIDRRO_EL0 is already EL0's (0)
1:  b       keel_trap_return                // every register from the frame
2:  bl      {keel_syscall}                  // keel_syscall(frame)
    b       3b

keel_trap_common:
    stp     x2, x3, [sp, #{x0} + 2 * 8]     // frame.x[2..4]
    stp     x4, x5, [sp, #{x0} + 4 * 8]     // frame.x[4..6]
    stp     x6, x7, [sp, #{x0} + 6 * 8]     // ...
    stp     x8, x9, [sp, #{x0} + 8 * 8]
    stp     x10, x11, [sp, #{x0} + 10 * 8]
    stp     x12, x13, [sp, #{x0} + 12 * 8]
    stp     x14, x15, [sp, #{x0} + 14 * 8]
    stp     x16, x17, [sp, #{x0} + 16 * 8]
    stp     x18, x19, [sp, #{x0} + 18 * 8]
    stp     x20, x21, [sp, #{x0} + 20 * 8]
    stp     x22, x23, [sp, #{x0} + 22 * 8]
    stp     x24, x25, [sp, #{x0} + 24 * 8]
    stp     x26, x27, [sp, #{x0} + 26 * 8]
    stp     x28, x29, [sp, #{x0} + 28 * 8]  // frame.x[28..30]
    str     x30, [sp, #{x0} + 30 * 8]       // frame.x[30] = lr
    mrs     x1, sp_el0
    str     x1, [sp, #{sp_el0}]             // frame.sp_el0 = SP_EL0 (the user SP, later)
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #{elr}]            // frame.elr, frame.spsr
    mrs     x4, esr_el1
    mrs     x5, far_el1
    stp     x4, x5, [sp, #{esr}]            // frame.esr, frame.far
    str     x0, [sp, #{vector}]             // frame.vector = slot
    stp     x29, x2, [sp, #{record}]        // frame.record = (interrupted fp, interrupted pc)
    add     x29, sp, #{record}              // fp = &frame.record: backtraces cross the trap
    mov     x0, sp                          // argument: &mut TrapFrame
    bl      {dispatch}                      // dispatch(frame)
    .global keel_trap_return
keel_trap_return:                           // also entered by enter_user, sp = frame
    msr     tpidrro_el0, xzr                // TPIDRRO_EL0 = EL0's value, 0 (the EL1 entry borrows it)
    ldp     x2, x3, [sp, #{elr}]            // the dispatcher may have edited elr/spsr
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldr     x1, [sp, #{sp_el0}]
    msr     sp_el0, x1                      // SP_EL0 = frame.sp_el0
    ldp     x2, x3, [sp, #{x0} + 2 * 8]     // x2..x30 = frame.x[2..31]
    ldp     x4, x5, [sp, #{x0} + 4 * 8]
    ldp     x6, x7, [sp, #{x0} + 6 * 8]
    ldp     x8, x9, [sp, #{x0} + 8 * 8]
    ldp     x10, x11, [sp, #{x0} + 10 * 8]
    ldp     x12, x13, [sp, #{x0} + 12 * 8]
    ldp     x14, x15, [sp, #{x0} + 14 * 8]
    ldp     x16, x17, [sp, #{x0} + 16 * 8]
    ldp     x18, x19, [sp, #{x0} + 18 * 8]
    ldp     x20, x21, [sp, #{x0} + 20 * 8]
    ldp     x22, x23, [sp, #{x0} + 22 * 8]
    ldp     x24, x25, [sp, #{x0} + 24 * 8]
    ldp     x26, x27, [sp, #{x0} + 26 * 8]
    ldp     x28, x29, [sp, #{x0} + 28 * 8]
    ldr     x30, [sp, #{x0} + 30 * 8]
    ldp     x0, x1, [sp, #{x0}]             // x0, x1 last: they were the scratch registers
    add     sp, sp, #{frame_size}           // pop the frame: SP_EL1 is back where it was
    eret                                    // resume at ELR_EL1 with SPSR_EL1
    .text
"#,
    frame_size = const FRAME_SIZE,
    x0 = const X0,
    sp_el0 = const SP_EL0,
    elr = const ELR,
    esr = const ESR,
    vector = const VECTOR,
    record = const RECORD,
    dispatch = sym dispatch,
    keel_syscall = sym crate::upcall::keel_syscall,
    table = sym crate::upcall::KEEL_SYSCALLS,
    table_len = const arch_api::SYSCALL_TABLE_LEN,
    esr_svc0 = const ESR_SVC0,
    syscall_state = const SYSCALL_STATE,
    scratch = const percpu::SCRATCH,
    stack_base = const percpu::STACK_BASE,
    overflow_top = const percpu::OVERFLOW_TOP,
    overflowed_sp = const percpu::OVERFLOWED_SP,
    overflow_pages = const OVERFLOW_SPAN / 4096,
    overflow_flag = const OVERFLOW,
);

unsafe extern "C" {
    /// The table above (only its address is used).
    static keel_vectors: [u32; 512];
}

unsafe extern "C" {
    /// The second half of the common path: restore the frame at SP and ERET. Entered by
    /// `Threads::enter_user` with SP pointing at a prepared frame (only its address is used
    /// here).
    pub static keel_trap_return: [u32; 0];
}

/// The table's address, for VBAR_EL1.
pub fn base() -> u64 {
    (&raw const keel_vectors) as u64
}

// The fast path stores `xzr` as the frame's `syscall_state`.
const _: () = assert!(super::SYSCALL_PARTIAL == 0);
