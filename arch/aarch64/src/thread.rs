//! Kernel contexts, the context switch, FP/SIMD state and the way into EL0
//! (`arch_api::Threads`).
//!
//! # Why the switch is shaped so
//!
//! Switching threads is switching kernel stacks: x19, the frame pointer x29, the link
//! register x30 and SP_EL1 go into the outgoing [`Context`], the incoming ones come out of
//! theirs, and `ret` continues wherever the incoming thread last called `switch` — or, the
//! first time, in [`thread_start`], which calls `entry(argument)`. The other callee-saved
//! registers (x20–x28) are not kept there: the one place that calls `switch_stacks`, the
//! inline `bl` in [`switch`], declares them clobbered, so the compiler keeps whatever it
//! needs across the switch on the thread's own stack (usually nothing: a switch is the last
//! thing most of its callers do), and every function on the way saves and restores them as
//! AAPCS64 says. x19 and x29 cannot be declared clobbered (LLVM reserves them: base and
//! frame pointer), so the switch keeps them. User registers are never touched: they are in
//! the trap frame at the top of each thread's stack.
//!
//! What the switch does besides: the user FP/SIMD state (q0–q31, FPCR, FPSR) is saved and
//! loaded as the core's `arch_api::FpuSwitch` says (the kernel is built soft-float and
//! never touches it; a kernel thread has no state of its own), the user TLS register
//! TPIDR_EL0 (EL0-writable, so read back) follows the thread, and the per-CPU block learns
//! the incoming stack's bounds for the overflow check. TPIDRRO_EL0 is the same for every
//! thread (0, which the exception return writes back after the EL1 entry borrowed it:
//! [`crate::trap`]), so the switch leaves it alone.
//!
//! SVE/SME policy: CPACR_EL1.ZEN and SMEN stay at "trap" (their reset value, written
//! explicitly at boot), so their larger register state never needs saving; an EL0 SVE or
//! SME instruction ends that thread with "SVE not supported" ([`crate::trap`]).

use core::arch::naked_asm;
use core::mem::offset_of;
use core::sync::atomic::Ordering;

use arch_api::{FpuSwitch, KernelStack};

use crate::percpu;
use crate::sysreg;
use crate::trap::{TrapFrame, keel_trap_return};

/// CPACR_EL1.FPEN = 0b11: FP/SIMD usable at EL0 and EL1 (the kernel's only uses are the
/// save/restore below). ZEN (bits 17:16) and SMEN (bits 25:24) stay 0: trapped.
const CPACR_FPEN_ALL: u64 = 0b11 << 20;

/// A thread's kernel context while it is not running.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Context {
    /// x19.
    base: u64,
    /// x29.
    frame_pointer: u64,
    /// x30: where `switch` returns to.
    link: u64,
    stack_pointer: u64,
    /// The thread's user TPIDR_EL0.
    tpidr_el0: u64,
}

const BASE: usize = offset_of!(Context, base);
const FRAME_POINTER: usize = offset_of!(Context, frame_pointer);
const LINK: usize = offset_of!(Context, link);
const STACK_POINTER: usize = offset_of!(Context, stack_pointer);
const _: () = assert!(
    BASE == 0 && FRAME_POINTER == 8 && LINK == 16 && STACK_POINTER == 24,
    "`switch_stacks` saves and loads them in pairs"
);

/// A user thread's FP/SIMD registers, saved when it switches away (`arch_api::FpuSwitch`).
#[repr(C, align(16))]
#[derive(Clone, Debug)]
pub struct FpuState {
    q: [u128; 32],
    fpcr: u64,
    fpsr: u64,
}

const Q: usize = offset_of!(FpuState, q);
const FPCR: usize = offset_of!(FpuState, fpcr);
const FPSR: usize = offset_of!(FpuState, fpsr);
const _: () = assert!(
    Q == 0 && FPCR == 512 && FPSR == 520,
    "`fp_store!` and `fp_load!` rely on it"
);

impl FpuState {
    /// All registers zero; FPCR 0 (round to nearest, no traps, IEEE behaviour).
    pub const fn initial() -> Self {
        Self {
            q: [0; 32],
            fpcr: 0,
            fpsr: 0,
        }
    }
}

/// Let EL0 (and the switch) use FP/SIMD; leave SVE and SME trapping. Boot only.
pub fn init_fpu() {
    let cpacr = sysreg::read!("cpacr_el1") & !((0b11 << 16) | (0b11 << 24));
    // Enabling FP/SIMD access changes no memory; SVE/SME stay trapped (the policy above).
    sysreg::write!("cpacr_el1", cpacr | CPACR_FPEN_ALL);
}

/// The first code a new thread runs: `switch` "returns" here with x19 = entry and x29 =
/// argument on a fresh stack.
#[unsafe(naked)]
extern "C" fn thread_start() -> ! {
    naked_asm!(
        "mov    x0, x29",  // argument
        "mov    x29, xzr", // end of the frame-record chain
        "mov    x30, xzr", // entry never returns
        "br     x19",      // entry(argument)
    )
}

/// Lay out a first context: the first switch to it lands in [`thread_start`].
///
/// The initial SP leaves room for one [`TrapFrame`] at the top of the stack, so the thread
/// can build its first user frame there (where `enter_user` expects it) without writing
/// over its own stack frames.
pub fn prepare(stack: KernelStack, entry: extern "C" fn(usize) -> !, argument: usize) -> Context {
    Context {
        base: entry as usize as u64,
        frame_pointer: argument as u64,
        link: thread_start as *const () as u64,
        stack_pointer: stack.user_frame::<TrapFrame>() as u64,
        tpidr_el0: 0,
    }
}

/// Save x19, x29, x30 and SP into `from` (x0), load `to`'s (x1), return into `to`. Only the
/// inline `bl` in [`switch`] calls it, which declares every other register clobbered
/// (module docs): not an `extern "C"` function to call from Rust.
#[unsafe(naked)]
unsafe extern "C" fn switch_stacks() {
    naked_asm!(
        "stp    x19, x29, [x0, #{base}]",   // from.base, from.frame_pointer = x19, x29
        "mov    x9, sp",
        "stp    x30, x9, [x0, #{link}]",    // from.link, from.stack_pointer = lr, sp
        "ldp    x19, x29, [x1, #{base}]",   // x19, x29 = to's
        "ldp    x30, x9, [x1, #{link}]",
        "mov    sp, x9",                    // sp = to.stack_pointer: now on to's stack
        "ret",                              // continue where `to` switched away
        base = const BASE,
        link = const LINK,
    )
}

/// The instructions that store q0–q31, FPCR and FPSR at the `FpuState` register `$base`
/// points to (which they step past the vector registers). Each `st1` moves four q
/// registers (64 bytes, in the layout `str q` would give on this little-endian kernel) and
/// steps the pointer past them, so after eight it points at FPCR. Clobbers x9 and x10.
macro_rules! fp_store {
    ($base:literal) => {
        concat!(
            "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [",
            $base,
            "], #64\n",
            "st1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [",
            $base,
            "], #64\n",
            "mrs x9, fpcr\n",
            "mrs x10, fpsr\n",
            "stp x9, x10, [",
            $base,
            "]\n",
        )
    };
}

/// The instructions that load q0–q31, FPCR and FPSR from the `FpuState` register `$base`
/// points to, as [`fp_store`] stored them. Clobbers x9 and x10.
macro_rules! fp_load {
    ($base:literal) => {
        concat!(
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [",
            $base,
            "], #64\n",
            "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [",
            $base,
            "], #64\n",
            "ldp x9, x10, [",
            $base,
            "]\n",
            "msr fpcr, x9\n",
            "msr fpsr, x10\n",
        )
    };
}

/// Store q0–q31, FPCR, FPSR into `save` (the next thread is a kernel thread).
#[unsafe(naked)]
unsafe extern "C" fn fpu_save(save: *mut FpuState) {
    naked_asm!(
        ".arch_extension fp",
        ".arch_extension simd",
        fp_store!("x0"),
        "ret",
    )
}

/// Load q0–q31, FPCR, FPSR from `load` (the previous thread was a kernel thread).
#[unsafe(naked)]
unsafe extern "C" fn fpu_load(load: *const FpuState) {
    naked_asm!(
        ".arch_extension fp",
        ".arch_extension simd",
        fp_load!("x0"),
        "ret",
    )
}

/// The whole switch (see the module essay).
///
/// # Safety
/// As `arch_api::Threads::switch`.
#[inline(always)]
pub unsafe fn switch(
    from: &mut Context,
    to: &Context,
    fpu: FpuSwitch<'_, FpuState>,
    to_stack: KernelStack,
) {
    // SAFETY: each state is a live, 16-byte aligned `FpuState`; FP/SIMD access is enabled
    // at EL1 (CPACR_EL1.FPEN) and the kernel keeps no value of its own in these registers.
    unsafe {
        match fpu {
            // Two user threads (the IPC hand-off, every switch between user threads): inline,
            // no call. The stores and loads step their base registers.
            FpuSwitch {
                save: Some(save),
                load: Some(load),
            } => core::arch::asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                fp_store!("{save}"),
                fp_load!("{load}"),
                save = inout(reg) core::ptr::from_mut(save) => _,
                load = inout(reg) core::ptr::from_ref(load) => _,
                out("x9") _,
                out("x10") _,
                options(nostack, preserves_flags),
            ),
            FpuSwitch {
                save: Some(save),
                load: None,
            } => fpu_save(save),
            FpuSwitch {
                save: None,
                load: Some(load),
            } => fpu_load(load),
            FpuSwitch {
                save: None,
                load: None,
            } => {}
        }
    }
    let cpu = percpu::this();
    from.tpidr_el0 = sysreg::read!("tpidr_el0");
    // SAFETY: the register matters only at EL0 (the kernel never reads TPIDR_EL0); the ERET
    // to EL0 synchronizes it, so no ISB.
    unsafe {
        core::arch::asm!(
            "msr tpidr_el0, {tls}",
            tls = in(reg) to.tpidr_el0,
            options(nomem, nostack, preserves_flags),
        )
    };
    // From here an EL1 exception checks SP against the incoming stack. Interrupts are
    // masked (the caller's duty) and the code up to the SP switch makes no deep calls, so
    // the only exception possible before it is a fault, which the report handles either way.
    cpu.set_stack(to_stack);
    // SAFETY: `to` holds a context made by `prepare` or saved by this function, for a
    // thread no other CPU runs (the caller's duty); `from` is written before SP moves.
    // `switch_stacks` keeps x19, x29 and SP; every other register the compiler may use is
    // declared clobbered (the C ABI's caller-saved ones, x30 included, and x20–x28), so
    // nothing live here is lost when another thread resumes here with its own values in
    // them. It reads and writes memory (the contexts, and everything the threads do
    // meanwhile): no `nomem`, no `readonly`.
    unsafe {
        core::arch::asm!(
            "bl {switch_stacks}",
            switch_stacks = sym switch_stacks,
            in("x0") core::ptr::from_mut(from),
            in("x1") core::ptr::from_ref(to),
            out("x20") _,
            out("x21") _,
            out("x22") _,
            out("x23") _,
            out("x24") _,
            out("x25") _,
            out("x26") _,
            out("x27") _,
            out("x28") _,
            clobber_abi("C"),
        )
    };
}

/// Point the overflow check (and, on AArch64, nothing else: SP_EL1 *is* the running stack)
/// at `stack`.
pub fn set_kernel_stack(stack: KernelStack) {
    percpu::this().set_stack(stack);
}

/// Return to EL0 through `frame`.
///
/// # Safety
/// As `arch_api::Threads::enter_user`.
pub unsafe fn enter_user(frame: *const TrapFrame) -> ! {
    // SAFETY: the caller passes a valid frame (the contract).
    let spsr = unsafe { (*frame).spsr };
    // Defence in depth: an ERET with any other mode would run user code at EL1 or in
    // AArch32. Frames from `new_user`, from EL0 traps and from `write_user_registers`
    // all pass.
    assert!(
        spsr & 0b1_1111 == 0 && spsr & (0b1111 << 6) == 0,
        "enter_user: frame does not return to EL0t with DAIF clear (spsr {spsr:#x})"
    );
    // SAFETY: interrupts are masked before SP moves, so nothing is taken on the
    // half-restored state; the trap return path restores every register from `frame` (the
    // caller made it with `new_user` or saved it from EL0, at the stack top) and ERETs
    // with SP_EL1 = the top of the kernel stack, so the next exception from EL0 lands
    // there.
    unsafe {
        core::arch::asm!(
            "msr    daifset, #0xf",     // no exception while SP points at the frame
            "mov    sp, {frame}",
            "b      {restore}",
            frame = in(reg) frame,
            restore = sym keel_trap_return,
            options(noreturn),
        )
    }
}

/// Record the running thread (0: none) and the core's word for it.
#[inline(always)]
pub fn set_current_thread(thread: usize, record: usize) {
    let cpu = percpu::this();
    cpu.current_thread.store(thread, Ordering::Relaxed);
    cpu.current_record.store(record, Ordering::Relaxed);
}

#[inline(always)]
pub fn current_thread() -> usize {
    percpu::this().current_thread.load(Ordering::Relaxed)
}

#[inline(always)]
pub fn current_record() -> usize {
    percpu::this().current_record.load(Ordering::Relaxed)
}

/// SPSR_EL1 bits EL0 may choose for itself: NZCV (31:28) and SS (21, software step).
/// Everything else — M (EL0t, AArch64), DAIF, PAN, IL, and the rest — is fixed by the
/// kernel: EL0 never runs with interrupts masked or in AArch32.
const SPSR_USER_BITS: u64 = (0xf << 28) | (1 << 21);
/// FPCR fields Keel lets a thread set: AHP, DN, FZ, RMode, FZ16. The trap enables
/// (IOE…IDE) stay clear (Keel handles no trapped FP exception), as do Stride/Len (AArch32
/// only) and every reserved bit.
const FPCR_USER_BITS: u64 = (1 << 26) | (1 << 25) | (1 << 24) | (0b11 << 22) | (1 << 19);
/// FPSR fields: QC and the cumulative exception flags IDC, IXC, UFC, OFC, DZC, IOC.
const FPSR_USER_BITS: u64 = (1 << 27) | (1 << 7) | 0b1_1111;

/// Validate `registers` (program counter in the user half, stack pointer in it or at its
/// very top, only the flags and FP control/status bits user code may set itself), then
/// write them into `frame` and `fpu`.
pub fn write_user_registers(
    frame: &mut TrapFrame,
    fpu: &mut FpuState,
    registers: &arch_api::UserRegisters,
) -> Result<(), arch_api::InvalidRegisters> {
    use arch_api::{InvalidRegisters, UserRange};
    if !UserRange::is_user_address(registers.instruction_pointer) {
        return Err(InvalidRegisters("PC outside the user half"));
    }
    if !UserRange::is_user_stack_pointer(registers.stack_pointer) {
        return Err(InvalidRegisters("SP outside the user half"));
    }
    if registers.flags & !SPSR_USER_BITS != 0 {
        return Err(InvalidRegisters(
            "SPSR: only NZCV and SS may be set (EL0t, DAIF clear)",
        ));
    }
    if registers.fpu_control & !FPCR_USER_BITS != 0 {
        return Err(InvalidRegisters("FPCR: reserved or trap-enable bits set"));
    }
    if registers.fpu_status & !FPSR_USER_BITS != 0 {
        return Err(InvalidRegisters("FPSR: reserved bits set"));
    }
    frame.x = registers.general;
    frame.elr = registers.instruction_pointer;
    frame.sp_el0 = registers.stack_pointer;
    frame.spsr = crate::trap::SPSR_EL0T | registers.flags;
    frame.mark_full();
    fpu.fpcr = registers.fpu_control;
    fpu.fpsr = registers.fpu_status;
    // The running thread's FP/SIMD registers are live and its `FpuState` is overwritten by
    // the next switch's save: for that thread the new values go into the registers too.
    let running = percpu::this()
        .stack()
        .is_some_and(|stack| core::ptr::eq(frame, stack.user_frame::<TrapFrame>()));
    if running {
        // SAFETY: both values were checked above to set only bits user code may set
        // itself (no trap enables, no reserved bits); the kernel keeps no FP state.
        unsafe {
            core::arch::asm!(
                ".arch_extension fp",
                "msr fpcr, {control}",
                "msr fpsr, {status}",
                control = in(reg) registers.fpu_control,
                status = in(reg) registers.fpu_status,
                options(nomem, nostack, preserves_flags),
            )
        };
    }
    Ok(())
}
