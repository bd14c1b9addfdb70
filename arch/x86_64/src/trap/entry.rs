//! The trap entry stubs: 256 small stubs, two common paths, one exit.
//!
//! # Why the entry path is shaped so
//! The CPU pushes SS, RSP, RFLAGS, CS, RIP and — for ten exception vectors only — an error
//! code, then jumps through the IDT. To give the core *one* frame layout, each vector has a
//! 16-byte stub that pushes a zero in place of the missing error code, then its vector
//! number, then jumps to a common path that stores the general-purpose registers below them
//! ([`TrapFrame`](super::frame::TrapFrame)) and calls the one Rust dispatcher with a pointer
//! to the frame. On return the same path restores the registers and `IRETQ`s from whatever
//! the frame then says, so a later context switch or a new thread's first user entry can
//! return through it too ([`TRAP_RETURN`]).
//!
//! Two common paths differ only in how they decide about `SWAPGS` (see `percpu`):
//! - the **normal** path (every vector except the four below) looks at the saved CS: RPL 3
//!   means "came from user mode, GS holds the user's base", so it swaps on entry, and swaps
//!   back on exit iff it returns to RPL 3;
//! - the **paranoid** path (NMI, #MC, #DB, #DF, which run on IST stacks and can interrupt the
//!   instructions between `SYSCALL` and its `SWAPGS`, or between `SWAPGS` and `SYSRET`)
//!   reads `IA32_GS_BASE` itself: a non-negative (lower-half) base is the user's, so it
//!   swaps and remembers that in RBX (callee-saved, so it survives the Rust call), then
//!   swaps back on exit iff it swapped on entry.
//!
//! A paranoid vector that interrupted *user* mode and must go to the core (#DB: single
//! steps, breakpoints) leaves its IST stack: `dispatch_paranoid` copies the frame to the top
//! of the current thread's kernel stack (empty while the thread ran in user mode), and the
//! path continues there like a normal trap from user mode and leaves by the normal exit —
//! so the core sees every user trap frame at the top of the thread's stack, may block or
//! switch inside `keel_trap`, and a second #DB cannot overwrite a suspended one on the IST
//! stack. The entry's `SWAPGS` (GS base was the user's) is matched by the normal exit's.
//!
//! Both paths set RFLAGS to a known value before calling Rust: DF clear (the SysV ABI
//! requires it) and AC clear (otherwise user code could enter with AC set and switch SMAP
//! off for the kernel); an interrupt gate already cleared IF and TF. `IRETQ` restores the
//! interrupted RFLAGS.
//!
//! Weak spot: a nested NMI (an exception inside the NMI handler whose `IRETQ` unmasks NMIs)
//! would reuse the NMI IST stack and corrupt the outer frame; Linux's nested-NMI dance is
//! not implemented. Both halves of both `SWAPGS` decisions run in the tests (user traps,
//! and the NMI storm, which lands NMIs inside the `SYSCALL`/`SYSRET` user-GS windows).

use core::arch::global_asm;

use super::frame::offsets as frame;
use super::{dispatch, vector};

/// Bytes per stub; stub `n` starts at `keel_x86_trap_stubs + n * STUB_SIZE`.
pub const STUB_SIZE: usize = 16;

unsafe extern "C" {
    /// The first of the 256 stubs.
    #[link_name = "keel_x86_trap_stubs"]
    static STUBS: [u8; 256 * STUB_SIZE];
    /// Restores a [`TrapFrame`](super::frame::TrapFrame) at RSP and `IRETQ`s from it
    /// (normal-path exit: `SWAPGS` iff returning to user mode).
    #[link_name = "keel_x86_trap_return"]
    pub static TRAP_RETURN: u8;
}

/// The address of vector `vector`'s entry stub, for its IDT gate.
pub fn stub_address(vector: u8) -> u64 {
    let base = (&raw const STUBS) as u64;
    base + u64::from(vector) * STUB_SIZE as u64
}

global_asm!(
    // ---- 256 stubs, 16 bytes each, padded with int3 ----
    ".pushsection .text.keel_x86_trap_stubs, \"ax\", @progbits",
    ".balign 16",
    ".globl keel_x86_trap_stubs",
    "keel_x86_trap_stubs:",
    ".set keel_vector, 0",
    ".rept 256",
    "0:",
    //   if the CPU pushes no error code for this vector: push 0 in its place
    "    .if keel_vector >= 32",
    "        pushq $0",
    "    .elseif (({error_code_mask} >> keel_vector) & 1) == 0",
    "        pushq $0",
    "    .endif",
    //   push the vector number
    "    pushq $keel_vector",
    //   paranoid vectors decide SWAPGS from the GS base, all others from the saved CS
    "    .if keel_vector >= 32",
    "        jmp keel_x86_trap_normal",
    "    .elseif (({paranoid_mask} >> keel_vector) & 1) == 1",
    "        jmp keel_x86_trap_paranoid",
    "    .else",
    "        jmp keel_x86_trap_normal",
    "    .endif",
    //   pad to 16 bytes (a negative count — a stub over 16 bytes — is an assembly error)
    "    .fill 0b + {stub_size} - ., 1, 0xcc",
    "    .set keel_vector, keel_vector + 1",
    ".endr",
    ".popsection",
    //
    // ---- the general-purpose registers, saved and restored the same way on both paths ----
    ".macro keel_save_gprs",                // frame.<reg> = <reg>, for every GPR but RSP
    "    movq %rax, {rax}(%rsp)",
    "    movq %rbx, {rbx}(%rsp)",
    "    movq %rcx, {rcx}(%rsp)",
    "    movq %rdx, {rdx}(%rsp)",
    "    movq %rsi, {rsi}(%rsp)",
    "    movq %rdi, {rdi}(%rsp)",
    "    movq %rbp, {rbp}(%rsp)",
    "    movq %r8, {r8}(%rsp)",
    "    movq %r9, {r9}(%rsp)",
    "    movq %r10, {r10}(%rsp)",
    "    movq %r11, {r11}(%rsp)",
    "    movq %r12, {r12}(%rsp)",
    "    movq %r13, {r13}(%rsp)",
    "    movq %r14, {r14}(%rsp)",
    "    movq %r15, {r15}(%rsp)",
    ".endm",
    ".macro keel_restore_gprs",             // <reg> = frame.<reg>, in reverse order
    "    movq {r15}(%rsp), %r15",
    "    movq {r14}(%rsp), %r14",
    "    movq {r13}(%rsp), %r13",
    "    movq {r12}(%rsp), %r12",
    "    movq {r11}(%rsp), %r11",
    "    movq {r10}(%rsp), %r10",
    "    movq {r9}(%rsp), %r9",
    "    movq {r8}(%rsp), %r8",
    "    movq {rbp}(%rsp), %rbp",
    "    movq {rdi}(%rsp), %rdi",
    "    movq {rsi}(%rsp), %rsi",
    "    movq {rdx}(%rsp), %rdx",
    "    movq {rcx}(%rsp), %rcx",
    "    movq {rbx}(%rsp), %rbx",
    "    movq {rax}(%rsp), %rax",
    ".endm",
    //
    // ---- the normal path ----
    // The common code lives in another section so the stubs' jumps are never relaxed to a
    // size the `.fill` above did not expect.
    ".pushsection .text.keel_x86_trap_common, \"ax\", @progbits",
    ".balign 16",
    "keel_x86_trap_normal:",
    "    testb $3, {cs_above_vector}(%rsp)",    // saved CS.RPL == 3 (came from user mode)?
    "    jz 1f",
    "    swapgs",                               //   then GS base := this CPU's block
    "1:",
    "    subq ${vector}, %rsp",                 // room for the GPRs below `vector`
    "    keel_save_gprs",                       // frame.rax..r15 = rax..r15
    "    pushq $2",                             // RFLAGS := reserved bit 1 only:
    "    popfq",                                //   DF = AC = TF = NT = IF = 0
    "    movq %rsp, %rdi",                      // dispatch(frame: &mut TrapFrame)
    "    call {dispatch}",
    ".globl keel_x86_trap_return",
    "keel_x86_trap_return:",                    // RSP = &TrapFrame
    "    keel_restore_gprs",                    // rax..r15 = frame.rax..r15
    "    addq ${rip}, %rsp",                    // RSP = &frame.rip (the hardware frame)
    "    testb $3, {cs_above_rip}(%rsp)",       // returning to user mode?
    "    jz 2f",
    "    swapgs",                               //   then GS base := the user's
    "2:",
    "    iretq",
    //
    // ---- the paranoid path (NMI, #MC, #DB, #DF on their IST stacks) ----
    ".balign 16",
    "keel_x86_trap_paranoid:",
    "    subq ${vector}, %rsp",                 // room for the GPRs below `vector`
    "    keel_save_gprs",                       // frame.rax..r15 = rax..r15
    "    pushq $2",                             // RFLAGS := reserved bit 1 only
    "    popfq",
    "    movl ${gs_base_msr}, %ecx",            // edx:eax = IA32_GS_BASE
    "    rdmsr",
    "    xorl %ebx, %ebx",                      // rbx = 0: did not swap
    "    testl %edx, %edx",                     // higher-half base = the kernel's block?
    "    js 3f",                                //   then GS is already right
    "    swapgs",                               // else GS base := this CPU's block
    "    movl $1, %ebx",                        //   and rbx = 1: swap back on exit
    "3:",
    "    movq %rsp, %rdi",                      // rax = dispatch_paranoid(frame)
    "    call {dispatch_paranoid}",
    "    testq %rax, %rax",                     // moved to the thread's kernel stack?
    "    jz 5f",
    "    movq %rax, %rsp",                      //   rsp = the copy at the stack's top
    "    movq %rsp, %rdi",                      //   dispatch(frame) there, like any
    "    call {dispatch}",                      //   trap from user mode,
    "    jmp keel_x86_trap_return",             //   and leave by the normal exit
    "5:",
    "    testl %ebx, %ebx",                     // swapped on entry?
    "    jz 4f",
    "    swapgs",                               //   then restore the interrupted GS base
    "4:",
    "    keel_restore_gprs",                    // rax..r15 = frame.rax..r15
    "    addq ${rip}, %rsp",                    // RSP = &frame.rip
    "    iretq",
    ".popsection",
    ".purgem keel_save_gprs",
    ".purgem keel_restore_gprs",
    error_code_mask = const vector::ERROR_CODE_MASK,
    paranoid_mask = const vector::PARANOID_MASK,
    stub_size = const STUB_SIZE,
    cs_above_vector = const frame::CS - frame::VECTOR,
    cs_above_rip = const frame::CS - frame::RIP,
    gs_base_msr = const GS_BASE_MSR,
    vector = const frame::VECTOR,
    rip = const frame::RIP,
    rax = const frame::RAX,
    rbx = const frame::RBX,
    rcx = const frame::RCX,
    rdx = const frame::RDX,
    rsi = const frame::RSI,
    rdi = const frame::RDI,
    rbp = const frame::RBP,
    r8 = const frame::R8,
    r9 = const frame::R9,
    r10 = const frame::R10,
    r11 = const frame::R11,
    r12 = const frame::R12,
    r13 = const frame::R13,
    r14 = const frame::R14,
    r15 = const frame::R15,
    dispatch = sym dispatch::dispatch,
    dispatch_paranoid = sym dispatch::dispatch_paranoid,
    options(att_syntax),
);

/// `IA32_GS_BASE`.
const GS_BASE_MSR: u32 = 0xC000_0101;
