//! The `SYSCALL` entry and its `SYSRET`-or-`IRETQ` exit.
//!
//! # Why the entry is shaped so
//! `SYSCALL` switches nothing but CS/SS and RIP: RSP is still the user's, GS base the
//! user's, RCX holds the user RIP and R11 the user RFLAGS, and RFLAGS has been masked by
//! `IA32_FMASK` (IF, DF, TF, AC, NT, IOPL cleared: no interrupt before the stack switch,
//! no single-step in ring 0 on user GS, the SysV DF rule, SMAP enforced). So the entry:
//! `SWAPGS` (GS base := this CPU's block), parks the user RSP in the per-CPU scratch slot,
//! loads the current thread's kernel stack top from the per-CPU block, and pushes a
//! hardware-style frame (SS, RSP, RFLAGS = R11, CS, RIP = RCX), a zero error code and the
//! pseudo-vector [`vector::SYSCALL`] — then the same GPR block as every interrupt, so the
//! core sees one [`TrapFrame`](super::TrapFrame) layout.
//!
//! # Why the exit sometimes uses `IRETQ`
//! `SYSRET` loads RIP from RCX and RFLAGS from R11 and, on Intel CPUs, raises #GP *in ring 0*
//! when RCX is not canonical (Intel SDM Vol. 2B, SYSRET: "If RCX is not canonical … #GP(0)";
//! the fault is delivered after CS is still the kernel's but with the user RSP and, after
//! our `SWAPGS`, the user GS base — a ring-0 exception on a user-controlled stack). A
//! user program can set its own RIP to anything through the register-write call, so the
//! exit takes `SYSRET` only when the frame still looks like one `SYSCALL` made: RIP in the
//! lower (user) half, CS/SS the user selectors, RFLAGS containing IF and nothing beyond
//! what user code may set (no TF: a single-step trap is delivered exactly by `IRETQ`;
//! no RF/NT/IOPL). Everything else returns through the normal trap exit (`IRETQ`), which
//! faults — if at all — in user mode.

use core::arch::global_asm;

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, Msr};

use super::frame::offsets as frame;
use super::frame::rflags;
use super::{dispatch, vector};
use crate::percpu::{offsets as percpu, selector};

/// `IA32_STAR`, `IA32_FMASK`.
const STAR_MSR: u32 = 0xC000_0081;
const FMASK_MSR: u32 = 0xC000_0084;

/// The RFLAGS bits `SYSCALL` clears.
pub const SYSCALL_MASK: u64 = rflags::INTERRUPT
    | rflags::DIRECTION
    | rflags::TRAP
    | rflags::ALIGNMENT_CHECK
    | rflags::NESTED_TASK
    | rflags::IOPL;

/// RFLAGS bits a `SYSRET` may restore (anything else: `IRETQ`).
const SYSRET_FLAGS: u64 =
    (rflags::USER_SETTABLE & !rflags::TRAP) | rflags::INTERRUPT | rflags::RESERVED_ONE;

unsafe extern "C" {
    #[link_name = "keel_x86_syscall_entry"]
    fn syscall_entry();
    /// The exit's `SYSRETQ` (a label, never called).
    #[link_name = "keel_x86_syscall_sysret"]
    fn sysret();
}

/// Whether `rip` is one of the two ring-0 instructions of the system-call path that run
/// with the user's GS base: the entry's first (`SWAPGS` not yet executed) and the final
/// `SYSRETQ` (`SWAPGS` already executed). The NMI storm counts hits there.
pub fn is_user_gs_window(rip: u64) -> bool {
    rip == entry_address() || rip == sysret as *const () as u64
}

/// The entry's address (`IA32_LSTAR`).
pub fn entry_address() -> u64 {
    syscall_entry as *const () as u64
}

/// Point `SYSCALL` at the entry on this CPU (STAR, LSTAR, FMASK, EFER.SCE).
///
/// # Safety
/// The GDT holds the selectors `percpu::selector` names, and the per-CPU block's kernel
/// stack slot holds a valid stack before user code runs.
pub unsafe fn init() {
    let star = (u64::from(selector::SYSRET_BASE) << 48) | (u64::from(selector::KERNEL_CODE) << 32);
    // SAFETY: the MSRs exist on every x86_64 CPU; the values follow the GDT layout (caller's
    // duty) and the entry below.
    unsafe {
        Msr::new(STAR_MSR).write(star);
        Msr::new(FMASK_MSR).write(SYSCALL_MASK);
        Efer::update(|flags| flags.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
    }
    LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
}

global_asm!(
    ".pushsection .text.keel_x86_syscall, \"ax\", @progbits",
    ".balign 16",
    ".globl keel_x86_syscall_entry",
    "keel_x86_syscall_entry:",
    "    swapgs",                                   // GS base := this CPU's block
    "    movq %rsp, %gs:{scratch}",                 // park the user RSP
    "    movq %gs:{stack_top}, %rsp",               // rsp = current thread's kernel stack top
    "    pushq ${user_data}",                       // frame.ss
    "    pushq %gs:{scratch}",                      // frame.rsp = user RSP
    "    pushq %r11",                               // frame.rflags = user RFLAGS
    "    pushq ${user_code}",                       // frame.cs
    "    pushq %rcx",                               // frame.rip = user RIP
    "    pushq $0",                                 // frame.error_code
    "    pushq ${syscall}",                         // frame.vector = SYSCALL
    "    subq ${vector}, %rsp",                     // room for the GPRs
    "    movq %rax, {rax}(%rsp)",                   // frame.rax = rax (the number)
    "    movq %rbx, {rbx}(%rsp)",                   // …
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
    "    xorl %ebp, %ebp",                          // end the backtrace at the entry
    "    movq %rsp, %rdi",                          // dispatch(frame: &mut TrapFrame)
    "    call {dispatch}",
    //
    // ---- exit: SYSRET only for a frame SYSCALL could have made, else IRETQ ----
    "    movq {rip}(%rsp), %rcx",                   // rcx = frame.rip
    "    movq %rcx, %rax",
    "    shrq $47, %rax",                           // rip in the lower half (canonical user)?
    "    jnz keel_x86_trap_return",                 //   no: IRETQ
    "    cmpq ${user_code}, {cs}(%rsp)",            // cs = user code?
    "    jne keel_x86_trap_return",
    "    cmpq ${user_data}, {ss}(%rsp)",            // ss = user data?
    "    jne keel_x86_trap_return",
    "    movq {rflags}(%rsp), %r11",                // r11 = frame.rflags
    "    movq ${not_sysret_flags}, %rax",
    "    testq %rax, %r11",                         // any bit SYSRET must not restore?
    "    jnz keel_x86_trap_return",
    "    btq $9, %r11",                             // IF set?
    "    jnc keel_x86_trap_return",
    "    movq {r15}(%rsp), %r15",                   // r15 = frame.r15
    "    movq {r14}(%rsp), %r14",                   // …
    "    movq {r13}(%rsp), %r13",
    "    movq {r12}(%rsp), %r12",
    "    movq {r10}(%rsp), %r10",
    "    movq {r9}(%rsp), %r9",
    "    movq {r8}(%rsp), %r8",
    "    movq {rbp}(%rsp), %rbp",
    "    movq {rdi}(%rsp), %rdi",
    "    movq {rsi}(%rsp), %rsi",
    "    movq {rdx}(%rsp), %rdx",
    "    movq {rbx}(%rsp), %rbx",
    "    movq {rax}(%rsp), %rax",
    "    movq {rsp_slot}(%rsp), %rsp",              // rsp = user RSP (last memory read)
    "    swapgs",                                   // GS base := the user's
    ".globl keel_x86_syscall_sysret",
    "keel_x86_syscall_sysret:",
    "    sysretq",                                  // rip = rcx, rflags = r11, ring 3
    ".popsection",
    scratch = const percpu::USER_STACK_SCRATCH,
    stack_top = const percpu::KERNEL_STACK_TOP,
    user_data = const selector::USER_DATA,
    user_code = const selector::USER_CODE,
    syscall = const vector::SYSCALL,
    not_sysret_flags = const !SYSRET_FLAGS,
    vector = const frame::VECTOR,
    rip = const frame::RIP,
    cs = const frame::CS,
    ss = const frame::SS,
    rflags = const frame::RFLAGS,
    rsp_slot = const frame::RSP,
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
    options(att_syntax),
);
