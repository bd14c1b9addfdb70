//! The `SYSCALL` entry and its `SYSRET`-or-`IRETQ` exit.
//!
//! # Why the entry is shaped so
//! `SYSCALL` switches nothing but CS/SS and RIP: RSP is still the user's, GS base the
//! user's, RCX holds the user RIP and R11 the user RFLAGS, and RFLAGS has been masked by
//! `IA32_FMASK` (IF, DF, TF, AC, NT, IOPL cleared: no interrupt before the stack switch,
//! no single-step in ring 0 on user GS, the SysV DF rule, SMAP enforced). So the entry:
//! `SWAPGS` (GS base := this CPU's block), parks the user RSP in the per-CPU scratch slot,
//! loads the current thread's kernel stack top from the per-CPU block, and pushes a
//! hardware-style frame (SS, RSP, RFLAGS = R11, CS, RIP = RCX), the frame state
//! [`SYSCALL_PARTIAL`] in the error-code slot and the pseudo-vector [`vector::SYSCALL`], so
//! the core sees the one [`TrapFrame`](super::TrapFrame) layout. Then it calls the core's
//! handler for the number directly (`KEEL_SYSCALLS[number]`, or `keel_syscall` for a
//! number beyond that table; no vector demultiplexing, no `TrapCause` decode).
//!
//! # What a system-call frame holds (the fast path)
//! The entry stores only the registers the system-call ABI reads or may write back: the
//! number and the arguments (`rax rdi rsi rdx r10 r8 r9`, which are also the result and
//! message registers). The callee-saved registers (`rbx rbp r12–r15`) are *not* stored: the
//! Rust code the entry calls preserves them (SysV ABI: the functions that use them save and
//! restore them, the context switch keeps RBX and RBP and declares the rest clobbered), so
//! on the way out they still hold the user's values; `rcx` and
//! `r11` are the return RIP and RFLAGS. Such a frame is `PARTIAL`: its `rbx rbp rcx r11
//! r12–r15` slots are stale. The fast exit reloads every caller-saved register (`rax rcx
//! rdx rsi rdi r8–r11`: the kernel leaves no value of its own in any of them) and leaves
//! the callee-saved ones alone. Whoever writes the whole register set into a system-call
//! frame (`write_user_registers`) marks it [`SYSCALL_FULL`] (`TrapFrame::mark_full`); the
//! exit then restores every register from the frame through `IRETQ`. The slow exit
//! completes a partial frame from the live callee-saved registers first, so the `IRETQ`
//! path always restores a complete frame.
//!
//! # Why the exit sometimes uses `IRETQ`
//! `SYSRET` loads RIP from RCX and RFLAGS from R11 and, on Intel CPUs, raises #GP *in ring 0*
//! when RCX is not canonical (Intel SDM Vol. 2B, SYSRET: "If RCX is not canonical … #GP(0)";
//! the fault is delivered after CS is still the kernel's but with the user RSP and, after
//! our `SWAPGS`, the user GS base — a ring-0 exception on a user-controlled stack). A
//! user program can set its own RIP to anything through the register-write call, and the
//! kernel can rewrite a blocked thread's RIP, so the exit takes `SYSRET` only when the frame
//! is partial, RIP lies in the lower (user) half, and RFLAGS holds nothing beyond what user
//! code may set (no TF: a single-step trap is delivered exactly by `IRETQ`; no RF/NT/IOPL).
//! IF is not tested: a partial frame's RFLAGS is the user's at `SYSCALL` (R11), and user code
//! cannot clear IF (IOPL is 0: `CLI` faults, `POPF` leaves IF), and a kernel that cleared it
//! would gain nothing by the `IRETQ` exit, which restores the same RFLAGS. CS and SS need no
//! check: `SYSRET` takes them from `IA32_STAR`, and the entry
//! pushed the user selectors, which no kernel code changes in a frame. Everything else
//! returns through the slow exit: a non-canonical RIP or RSP becomes the user's own #GP
//! (`dispatch::syscall_slow_return`), the rest leaves by the normal trap exit (`IRETQ`),
//! which faults — if at all — in user mode.

use core::arch::global_asm;

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, Msr};

use super::frame::offsets as frame;
use super::frame::{SYSCALL_PARTIAL, rflags};
use super::{dispatch, vector};
use crate::percpu::{offsets as percpu, selector};
use crate::upcall;

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

/// `!SYSRET_FLAGS` as the sign-extended 32-bit immediate of `testq` (every bit from 31 up is
/// set in it, so the 32-bit form means the same 64-bit mask).
const NOT_SYSRET_FLAGS_IMM: i32 = !SYSRET_FLAGS as i64 as i32;
const _: () = assert!(NOT_SYSRET_FLAGS_IMM as i64 as u64 == !SYSRET_FLAGS);

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
    "    pushq ${partial}",                         // frame.error_code = PARTIAL (see above)
    "    pushq ${syscall}",                         // frame.vector = SYSCALL
    "    subq ${vector}, %rsp",                     // room for the GPRs
    "    movq %rax, {rax}(%rsp)",                   // frame.rax = the number
    "    movq %rdi, {rdi}(%rsp)",                   // frame.rdi, rsi, rdx, r10, r8, r9 =
    "    movq %rsi, {rsi}(%rsp)",                   //   the arguments (and the registers a
    "    movq %rdx, {rdx}(%rsp)",                   //   result may be written to)
    "    movq %r10, {r10}(%rsp)",
    "    movq %r8, {r8}(%rsp)",
    "    movq %r9, {r9}(%rsp)",
    "    movq %rsp, %rdi",                          // argument: frame: &mut TrapFrame
    "    cmpq ${table_len}, %rax",                  // rax = the number (the user's, still
    "    jae 2f",                                   //   live); beyond the table: keel_syscall
    "    call *{table}(,%rax,8)",                   // KEEL_SYSCALLS[number](frame)
    "3:",
    //
    // ---- fast exit: SYSRET, for a partial frame SYSCALL could have made ----
    "    movq {rip}(%rsp), %rcx",                   // rcx = frame.rip
    "    movq {error_code}(%rsp), %rax",            // rax = PARTIAL (0) or FULL (bit 63)
    "    orq %rcx, %rax",                           // full, or rip not in the lower half?
    "    shrq $47, %rax",
    "    jnz keel_x86_syscall_slow_exit",           //   then the IRETQ exit
    "    movq {rflags}(%rsp), %r11",                // r11 = frame.rflags
    "    testq ${not_sysret_flags}, %r11",          // any bit SYSRET must not restore?
    "    jnz keel_x86_syscall_slow_exit",
    "    movq {r9}(%rsp), %r9",                     // the caller-saved registers a result
    "    movq {r8}(%rsp), %r8",                     //   or message may be in, all from the
    "    movq {r10}(%rsp), %r10",                   //   frame: no kernel value survives in
    "    movq {rdx}(%rsp), %rdx",                   //   any of rax rcx rdx rsi rdi r8–r11
    "    movq {rsi}(%rsp), %rsi",
    "    movq {rdi}(%rsp), %rdi",
    "    movq {rax}(%rsp), %rax",
    "    movq {rsp_slot}(%rsp), %rsp",              // rsp = user RSP (last memory read)
    "    swapgs",                                   // GS base := the user's
    ".globl keel_x86_syscall_sysret",
    "keel_x86_syscall_sysret:",
    "    sysretq",                                  // rip = rcx, rflags = r11, ring 3
    "2:",
    "    call {keel_syscall}",                      // keel_syscall(frame)
    "    jmp 3b",
    //
    // ---- slow exit: complete the frame, fix a bad return address, IRETQ ----
    "keel_x86_syscall_slow_exit:",
    "    btq $63, {error_code}(%rsp)",              // frame already FULL?
    "    jc 1f",
    "    movq %rbx, {rbx}(%rsp)",                   // no: the callee-saved registers are
    "    movq %rbp, {rbp}(%rsp)",                   //   still the user's (the Rust ABI
    "    movq %r12, {r12}(%rsp)",                   //   preserved them): into the frame
    "    movq %r13, {r13}(%rsp)",
    "    movq %r14, {r14}(%rsp)",
    "    movq %r15, {r15}(%rsp)",
    "    movq {rip}(%rsp), %rcx",                   // rcx, r11 as SYSRET would leave them
    "    movq %rcx, {rcx}(%rsp)",
    "    movq {rflags}(%rsp), %r11",
    "    movq %r11, {r11}(%rsp)",
    "1:",
    "    movq %rsp, %rdi",                          // a non-canonical rip/rsp becomes the
    "    call {bad_return}",                        //   user's own #GP (never returns then)
    "    jmp keel_x86_trap_return",                 // restore everything, SWAPGS, IRETQ
    ".popsection",
    scratch = const percpu::USER_STACK_SCRATCH,
    stack_top = const percpu::KERNEL_STACK_TOP,
    user_data = const selector::USER_DATA,
    user_code = const selector::USER_CODE,
    syscall = const vector::SYSCALL,
    partial = const SYSCALL_PARTIAL,
    not_sysret_flags = const NOT_SYSRET_FLAGS_IMM,
    vector = const frame::VECTOR,
    error_code = const frame::ERROR_CODE,
    rip = const frame::RIP,
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
    keel_syscall = sym upcall::keel_syscall,
    table = sym upcall::KEEL_SYSCALLS,
    table_len = const arch_api::SYSCALL_TABLE_LEN,
    bad_return = sym dispatch::syscall_slow_return,
    options(att_syntax),
);
