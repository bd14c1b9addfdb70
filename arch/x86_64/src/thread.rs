//! Kernel contexts and the switch between them; the way into user mode.
//!
//! Switching threads is switching kernel stacks: `switch_stacks` saves RSP, RBX and RBP of
//! the outgoing thread in its [`Context`] and loads the incoming one's, then `ret`s on the
//! incoming stack. The other callee-saved registers (R12–R15) are not kept there: the one
//! place that calls it, the inline `call` in `Threads::switch`, declares them clobbered,
//! so the compiler keeps whatever it needs across the switch on the thread's own stack
//! (usually nothing: a switch is the last thing most of its callers do), and every
//! function on the way saves and restores them as the SysV ABI says. RBX and RBP cannot be declared
//! clobbered (LLVM reserves them: base and frame pointer), so the switch keeps them.
//! Everything else a thread owns is already somewhere safe: its user registers in the
//! [`TrapFrame`] at the top of its kernel stack (or, for the callee-saved ones during a
//! system call, in the frames of the functions that preserve them), its FPU registers in
//! its [`FpuState`] (saved and loaded here as `arch_api::FpuSwitch` says).
//!
//! A new thread's stack (laid out by `prepare_context`), highest address first:
//!
//! ```text
//! top ─────────────────────────────  KernelStack::top (16-byte aligned)
//!       room for the TrapFrame          176 bytes: where a trap from user mode lands
//! top - 176 ───────────────────────
//!       address of thread_trampoline   `ret` of the first switch pops it
//! top - 184 ─────────────────────── ← Context::rsp
//! ```
//! The first switch `ret`s into the trampoline with RSP = top − 176 (16-byte aligned), which
//! calls `entry(argument)` from RBX/RBP; `entry` then runs below the frame area, so a
//! thread's trap frame and its kernel call stack never overlap.

use core::mem::offset_of;

use arch_api::{
    FpuSwitch, InvalidRegisters, KernelStack, Threads, UserRange, UserRegisterWrite, UserRegisters,
};

use crate::fpu::{self, FpuState};
use crate::percpu;
use crate::trap::TrapFrame;
use crate::trap::frame::offsets::SIZE as FRAME_SIZE;
use crate::trap::frame::rflags;

/// A thread's kernel context while it is not running.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Context {
    rsp: u64,
    rbx: u64,
    rbp: u64,
}

mod offsets {
    use super::{Context, offset_of};
    pub const RSP: usize = offset_of!(Context, rsp);
    pub const RBX: usize = offset_of!(Context, rbx);
    pub const RBP: usize = offset_of!(Context, rbp);
}

// The frame area keeps the trampoline's RSP 16-byte aligned (SysV ABI at its `call`).
const _: () = assert!(FRAME_SIZE.is_multiple_of(16));

/// Save RSP, RBX and RBP into `from` (RDI), load `to`'s (RSI), return on `to`'s stack.
/// Only the inline `call` in `Threads::switch` calls it, which declares every other
/// register clobbered (module docs): not an `extern "C"` function to call from Rust.
///
/// # Safety
/// Interrupts are masked; `to` holds a context made by `prepare_context` or saved here.
#[unsafe(naked)]
unsafe extern "C" fn switch_stacks() {
    core::arch::naked_asm!(
        "mov [rdi + {rsp}], rsp",   // from.rsp = rsp (the return address is at [rsp])
        "mov [rdi + {rbx}], rbx",   // from.rbx = rbx
        "mov [rdi + {rbp}], rbp",   // from.rbp = rbp
        "mov rsp, [rsi + {rsp}]",   // rsp = to.rsp: now on the incoming thread's stack
        "mov rbx, [rsi + {rbx}]",   // rbx = to.rbx
        "mov rbp, [rsi + {rbp}]",   // rbp = to.rbp
        "ret",                      // resume where `to` called switch (or the trampoline)
        rsp = const offsets::RSP,
        rbx = const offsets::RBX,
        rbp = const offsets::RBP,
    );
}

/// Where a new thread's first switch lands: `entry(argument)` with RBX = entry,
/// RBP = argument, RSP 16-byte aligned; RBP is then zeroed (the backtrace ends here).
#[unsafe(naked)]
unsafe extern "C" fn thread_trampoline() -> ! {
    core::arch::naked_asm!(
        "mov rdi, rbp", // first argument = argument
        "xor ebp, ebp", // rbp = 0: end of the frame-pointer chain
        "call rbx",     // entry(argument) never returns
        "ud2",          // …and if it does, stop loudly
    );
}

/// Lay out a new thread's first context on `stack` (see the module docs).
pub fn prepare_context(
    stack: KernelStack,
    entry: extern "C" fn(usize) -> !,
    argument: usize,
) -> Context {
    let frame_bottom = stack.user_frame::<TrapFrame>() as u64;
    let return_slot = frame_bottom - 8;
    assert!(
        stack.top.is_multiple_of(16) && stack.contains(return_slot),
        "kernel stack {stack:?} is misaligned or too small"
    );
    // SAFETY: the core allocated `stack` mapped and writable for `[base, top)` (the
    // `KernelStack` invariant) and gives it to no running thread yet; `return_slot` lies in
    // it and is 8-aligned (checked above).
    unsafe { (return_slot as *mut u64).write(thread_trampoline as *const () as u64) };
    Context {
        rsp: return_slot,
        rbx: entry as usize as u64,
        rbp: argument as u64,
    }
}

unsafe extern "C" {
    #[link_name = "keel_x86_trap_return"]
    fn trap_return() -> !;
}

/// Return to user mode through `frame` (the normal trap exit: registers, `SWAPGS`,
/// `IRETQ`).
///
/// # Safety
/// As `Threads::enter_user`: `frame` is at the top of the current kernel stack and holds a
/// user frame (`new_user` or saved from user mode), the user address space is active.
pub unsafe fn enter_user(frame: *const TrapFrame) -> ! {
    // SAFETY: the trap exit path restores the GPRs from the frame at RSP and `IRETQ`s;
    // with a user CS it executes `SWAPGS` first (GS base discipline). Interrupts stay
    // masked until `IRETQ` loads the frame's RFLAGS.
    unsafe {
        core::arch::asm!(
            "cli",
            "mov rsp, {frame}",
            "jmp {exit}",
            frame = in(reg) frame,
            exit = sym trap_return,
            options(noreturn),
        );
    }
}

#[allow(
    unsafe_code,
    reason = "implements the trait's `unsafe fn`s, whose duties are the callers'"
)]
impl Threads for crate::Cpu {
    type TrapFrame = TrapFrame;
    type Context = Context;
    type FpuState = FpuState;

    fn initial_fpu_state() -> FpuState {
        FpuState::initial()
    }

    fn prepare_context(
        stack: KernelStack,
        entry: extern "C" fn(usize) -> !,
        argument: usize,
    ) -> Context {
        prepare_context(stack, entry, argument)
    }

    #[inline(always)]
    unsafe fn switch(
        from: &mut Context,
        to: &Context,
        fpu: FpuSwitch<'_, FpuState>,
        to_stack: KernelStack,
    ) {
        // The kernel never touches FPU registers, so they hold the last user thread's state
        // until here.
        match fpu {
            FpuSwitch {
                save: Some(save),
                load: Some(load),
            } => fpu::switch(save, load),
            FpuSwitch {
                save: Some(save),
                load: None,
            } => fpu::save(save),
            FpuSwitch {
                save: None,
                load: Some(load),
            } => fpu::restore(load),
            FpuSwitch {
                save: None,
                load: None,
            } => {}
        }
        percpu::set_kernel_stack(to_stack);
        // SAFETY: interrupts are masked and `to` is a prepared or saved context (the
        // caller's duties). `switch_stacks` keeps RSP, RBX and RBP; every other register
        // the compiler may use is declared clobbered (the C ABI's caller-saved ones and
        // R12–R15), so nothing live here is lost when another thread resumes here
        // with its own values in them. It reads and writes memory (the contexts, and
        // everything the threads do meanwhile): no `nomem`, no `readonly`.
        unsafe {
            core::arch::asm!(
                "call {switch_stacks}",
                switch_stacks = sym switch_stacks,
                in("rdi") core::ptr::from_mut(from),
                in("rsi") core::ptr::from_ref(to),
                out("r12") _,
                out("r13") _,
                out("r14") _,
                out("r15") _,
                clobber_abi("C"),
            )
        };
    }

    #[inline]
    fn set_kernel_stack(stack: KernelStack) {
        percpu::set_kernel_stack(stack);
    }

    unsafe fn enter_user(frame: *const TrapFrame) -> ! {
        // SAFETY: the caller's duties are those of `enter_user`.
        unsafe { enter_user(frame) }
    }

    #[inline(always)]
    fn set_current_thread(thread: usize, record: usize) {
        percpu::set_current_thread(thread, record);
    }

    #[inline(always)]
    fn current_thread() -> usize {
        percpu::current_thread()
    }

    #[inline(always)]
    fn current_record() -> usize {
        percpu::current_record()
    }

    #[inline(always)]
    fn running_cpu() -> u32 {
        percpu::running_index()
    }
}

impl UserRegisterWrite for crate::Cpu {
    fn write_user_registers(
        frame: &mut TrapFrame,
        fpu: &mut FpuState,
        registers: &UserRegisters,
    ) -> Result<(), InvalidRegisters> {
        write_user_registers(frame, fpu, registers)
    }
}

/// How many entries of `UserRegisters::general` x86_64 uses: rax rbx rcx rdx rsi rdi rbp
/// r8–r15.
const GENERAL_REGISTERS: usize = 15;

/// Validate and apply a user register image (see `arch_api::UserRegisterWrite`). RIP and
/// RSP must lie in the user half (so they are canonical and a `SYSRET` to them cannot
/// fault in ring 0); RFLAGS may hold only the arithmetic flags, DF, TF and AC (IF and bit
/// 1 are forced on; IOPL, NT, RF, VM, VIF, VIP, ID and reserved bits are refused); MXCSR
/// may set only the bits this CPU's MXCSR_MASK allows (else `FXRSTOR`/`XRSTOR` would #GP
/// in the kernel). The segment selectors are not writable: the frame keeps the user ones.
/// `frame` may be the running thread's own (at the top of the current kernel stack): then
/// `fpu` must be that thread's state, and the new MXCSR goes into the live registers too.
pub fn write_user_registers(
    frame: &mut TrapFrame,
    fpu: &mut FpuState,
    registers: &UserRegisters,
) -> Result<(), InvalidRegisters> {
    if !UserRange::is_user_address(registers.instruction_pointer) {
        return Err(InvalidRegisters("rip outside the user half"));
    }
    // RSP may equal USER_END (an empty stack at the very top).
    if !UserRange::is_user_stack_pointer(registers.stack_pointer) {
        return Err(InvalidRegisters("rsp outside the user half"));
    }
    let forced = rflags::INTERRUPT | rflags::RESERVED_ONE;
    if registers.flags & !(rflags::USER_SETTABLE | forced) != 0 {
        return Err(InvalidRegisters(
            "rflags: only arithmetic flags, DF, TF and AC may be set",
        ));
    }
    if registers.general[GENERAL_REGISTERS..]
        .iter()
        .any(|&word| word != 0)
    {
        return Err(InvalidRegisters("general registers past r15 must be 0"));
    }
    let Ok(mxcsr) = u32::try_from(registers.fpu_control) else {
        return Err(InvalidRegisters("mxcsr: reserved bits set"));
    };
    if mxcsr & !fpu::mxcsr_mask() != 0 {
        return Err(InvalidRegisters("mxcsr: reserved bits set"));
    }
    if registers.fpu_status != 0 {
        return Err(InvalidRegisters(
            "fpu_status is not used on x86_64 and must be 0",
        ));
    }
    if !frame.from_user() {
        return Err(InvalidRegisters("the frame is not a user frame"));
    }
    let [
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        ..,
    ] = registers.general;
    *frame = TrapFrame {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: registers.instruction_pointer,
        rsp: registers.stack_pointer,
        rflags: registers.flags | forced,
        ..*frame
    };
    frame.mark_full();
    // The running thread's FPU registers are live, and its `FpuState` is stale until the
    // next switch saves over it: for that thread, save, change, and load back.
    let running = percpu::current()
        .kernel_stack()
        .is_some_and(|stack| core::ptr::eq(frame, stack.user_frame::<TrapFrame>()));
    if running {
        fpu::save(fpu);
        fpu.set_mxcsr(mxcsr);
        fpu::restore(fpu);
    } else {
        fpu.set_mxcsr(mxcsr);
    }
    Ok(())
}
