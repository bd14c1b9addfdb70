//! Exceptions: the VBAR_EL1 table, the one trap frame, and the Rust dispatcher.
//!
//! # Why the entry path is shaped so
//!
//! AArch64 has no interrupt stack table and no hardware frame push: an exception only
//! writes ELR/SPSR/ESR/FAR, masks DAIF and jumps to one of sixteen 128-byte slots of the
//! table at VBAR_EL1 (Arm ARM D1.10.2), indexed by *where* it came from (current EL on
//! SP_EL0, current EL on SP_ELx, lower EL in AArch64, lower EL in AArch32) and *what* it is
//! (synchronous, IRQ, FIQ, SError). Taking the exception selects SP_EL1, so each slot is
//! already on the kernel stack. Every slot does the same three things — reserve a
//! [`TrapFrame`] below the interrupted SP, free two registers, record its own index — and
//! branches to one common path that saves the rest, builds a frame record so a backtrace
//! walks from the handler into the interrupted code, and calls [`dispatch`]. The return path
//! restores from the frame, so the dispatcher changes the interrupted state by editing it
//! (skipping an instruction is `frame.elr += 4`).
//!
//! The slots for exceptions taken at EL1 first check the stack pointer, because there is no
//! IST to fall back on: if the frame would not fit above the running kernel stack's base
//! (bounds kept in the per-CPU block by the context switch), the stack has overflowed into
//! its guard page, and storing there would fault again, forever, or reach the stack below.
//! The check needs registers before it may store anything, so it borrows TPIDRRO_EL0 (EL0
//! always reads 0 there, Keel giving no thread a value of its own, and the return path
//! writes the 0 back) and two per-CPU scratch words; on overflow it moves to the per-CPU
//! overflow stack and builds the frame there, flagged, and the dispatcher reports
//! `kernel stack overflow in thread <name>`.
//!
//! Interrupts stay masked for the whole handler (the CPU set PSTATE.I on entry), so IRQs
//! never nest; a synchronous exception inside a handler nests once and is reported.
//!
//! # The system-call fast path
//!
//! Slot 8 (synchronous, from EL0 in AArch64) first compares ESR_EL1 with exactly the
//! syndrome of `svc #0`; a match takes a shorter path (`keel_el0_syscall` in [`vectors`])
//! that stores only x0–x18, x30, SP_EL0, ELR, SPSR, ESR and the vector, calls the core's
//! handler for the number directly (`KEEL_SYSCALLS[number]`, or `keel_syscall` beyond that
//! table; no [`dispatch`], no cause decode), and on return reloads exactly those. x19–x29
//! are neither stored nor reloaded: the Rust code preserves them (AAPCS64: the functions
//! that use them save and restore them, the context switch keeps x19 and x29 and declares
//! the rest clobbered), so they still hold EL0's values; the frame's slots for them (and
//! FAR and the frame record) are stale, and the frame says so ([`SYSCALL_PARTIAL`]). Whoever writes the whole register set
//! (`write_user_registers`) marks it [`SYSCALL_FULL`], and the exit then restores every
//! register through the common return path. TPIDRRO_EL0 is left alone by the fast exit:
//! it is 0 for every thread, and an EL1 entry that borrowed it restores the 0 on its own
//! return.

pub mod fixup;
mod report;
pub use report::backtrace_here;
mod vectors;

use core::mem::offset_of;
use core::sync::atomic::Ordering;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{VBAR_EL1, Writeable};
use arch_api::{Access, TrapCause};

use crate::{gic, percpu, psci, semihosting, timer, upcall};

pub use report::fatal;
pub use vectors::keel_trap_return;

/// The registers saved on every exception, on the SP_EL1 stack (DESIGN.md §2).
#[repr(C)]
#[derive(Clone, Debug)]
pub struct TrapFrame {
    /// x0–x30 as they were when the exception was taken.
    pub x: [u64; 31],
    /// The EL0 stack pointer (the user SP once user mode exists).
    pub sp_el0: u64,
    /// Where the exception returns to (ELR_EL1); the faulting instruction for aborts.
    pub elr: u64,
    /// The interrupted PSTATE (SPSR_EL1).
    pub spsr: u64,
    /// Exception syndrome (ESR_EL1); meaningful for synchronous exceptions and SError.
    pub esr: u64,
    /// Fault address (FAR_EL1); meaningful for aborts and watchpoints.
    pub far: u64,
    /// Which of the sixteen vector slots was taken: `origin * 4 + kind`.
    pub vector: u64,
    /// For a frame built by the system-call fast path: [`SYSCALL_PARTIAL`] or
    /// [`SYSCALL_FULL`] (see [`vectors`]); other entries leave it alone and ignore it.
    pub syscall_state: u64,
    /// An AAPCS64 frame record `{x29, elr}` that x29 points to while the handler runs.
    pub record: [u64; 2],
}

/// Offsets the assembly uses, checked against the struct.
const FRAME_SIZE: usize = size_of::<TrapFrame>();
const X0: usize = offset_of!(TrapFrame, x);
const SP_EL0: usize = offset_of!(TrapFrame, sp_el0);
const ELR: usize = offset_of!(TrapFrame, elr);
const SPSR: usize = offset_of!(TrapFrame, spsr);
const ESR: usize = offset_of!(TrapFrame, esr);
const FAR: usize = offset_of!(TrapFrame, far);
const VECTOR: usize = offset_of!(TrapFrame, vector);
const SYSCALL_STATE: usize = offset_of!(TrapFrame, syscall_state);
const RECORD: usize = offset_of!(TrapFrame, record);

const _: () = assert!(FRAME_SIZE == 320);
const _: () = assert!(
    FRAME_SIZE.is_multiple_of(16),
    "SP must stay 16-byte aligned"
);
const _: () = assert!(X0 == 0);
const _: () = assert!(SP_EL0 == X0 + 31 * 8);
const _: () = assert!(ELR == 256);
const _: () = assert!(SPSR == ELR + 8, "saved with one stp");
const _: () = assert!(ESR == 272);
const _: () = assert!(FAR == ESR + 8, "saved with one stp");
const _: () = assert!(VECTOR == 288);
const _: () = assert!(SYSCALL_STATE == VECTOR + 8, "stored with one stp");
const _: () = assert!(RECORD == 304);

/// A system-call frame as the fast path built it: x0–x18, x30, SP_EL0, ELR, SPSR, ESR and
/// `vector` are stored; x19–x29 stay live in the CPU (the Rust code preserves them), FAR
/// and the frame record are stale.
pub const SYSCALL_PARTIAL: u64 = 0;
/// A system-call frame whose every register slot is authoritative (written whole by
/// `write_user_registers`): the exit restores all of them.
pub const SYSCALL_FULL: u64 = 1;

/// ESR_EL1 of `svc #0` from AArch64 EL0: EC = SVC64, IL = 1, ISS (the immediate) = 0.
const ESR_SVC0: u64 = (class::SVC64 << 26) | (1 << 25);
const _: () = assert!(ESR_SVC0 == 0x5600_0000 && ESR_SVC0 & 0xffff == 0);

/// Set in `vector` by the EL1 entry when it moved to the overflow stack.
const OVERFLOW: u64 = 0x100;
/// How far below the running stack's base an SP still counts as an overflow of it (the
/// guard page, and frames that jumped past it), rather than another stack altogether.
const OVERFLOW_SPAN: u64 = 64 * 1024;
const _: () = assert!(OVERFLOW_SPAN.is_multiple_of(4096) && OVERFLOW_SPAN / 4096 < 4096);

/// SPSR_EL1 for EL0t (AArch64, SP_EL0) with D, A, I, F all clear.
pub const SPSR_EL0T: u64 = 0;

/// Where the exception came from (the vector table's four groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Current EL while running on SP_EL0: a kernel bug, since the kernel uses SP_EL1.
    CurrentSp0,
    /// Current EL on SP_EL1: the kernel itself.
    CurrentSpx,
    /// EL0 in AArch64.
    Lower64,
    /// EL0 in AArch32 (not supported).
    Lower32,
}

/// What kind of exception it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Synchronous,
    Irq,
    Fiq,
    SError,
}

/// ESR_EL1 exception classes the decoder names (Arm ARM D19.2.37).
pub mod class {
    pub const UNKNOWN: u64 = 0x00;
    pub const SIMD_FP_ACCESS: u64 = 0x07;
    pub const ILLEGAL_STATE: u64 = 0x0e;
    pub const SVC64: u64 = 0x15;
    pub const SYSREG: u64 = 0x18;
    pub const SVE_ACCESS: u64 = 0x19;
    pub const SME_ACCESS: u64 = 0x1d;
    pub const INSTRUCTION_ABORT_LOWER: u64 = 0x20;
    pub const INSTRUCTION_ABORT_SAME: u64 = 0x21;
    pub const PC_ALIGNMENT: u64 = 0x22;
    pub const DATA_ABORT_LOWER: u64 = 0x24;
    pub const DATA_ABORT_SAME: u64 = 0x25;
    pub const SP_ALIGNMENT: u64 = 0x26;
    pub const FP_EXCEPTION64: u64 = 0x2c;
    pub const BREAKPOINT_LOWER: u64 = 0x30;
    pub const BREAKPOINT_SAME: u64 = 0x31;
    pub const BRK64: u64 = 0x3c;
}

/// Data/instruction abort fault status code for an alignment fault.
const FSC_ALIGNMENT: u64 = 0b10_0001;
/// ISS.WnR of a data abort: the access was a write.
const ISS_WNR: u64 = 1 << 6;

impl TrapFrame {
    pub fn origin(&self) -> Origin {
        match (self.vector & 15) / 4 {
            0 => Origin::CurrentSp0,
            1 => Origin::CurrentSpx,
            2 => Origin::Lower64,
            _ => Origin::Lower32,
        }
    }

    pub fn kind(&self) -> Kind {
        match self.vector % 4 {
            0 => Kind::Synchronous,
            1 => Kind::Irq,
            2 => Kind::Fiq,
            _ => Kind::SError,
        }
    }

    /// Record that every register slot now holds what EL0 must get back (after writing
    /// them all), so a system-call exit restores them all.
    pub fn mark_full(&mut self) {
        self.syscall_state = SYSCALL_FULL;
    }

    /// ESR_EL1.EC.
    pub fn exception_class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// ESR_EL1.ISS.
    pub fn syndrome(&self) -> u64 {
        self.esr & 0x1ff_ffff
    }

    /// Whether the interrupted state is EL0 (SPSR_EL1.M[3:2] = 0; AArch32 user modes
    /// included), so a frame made by `new_user` counts too.
    pub fn from_user(&self) -> bool {
        self.spsr & 0b1100 == 0
    }

    /// The portable cause of a synchronous exception. Interrupts are decoded by the GIC
    /// driver, not from the frame; for them (and SError) this is `Other(esr)`, as for
    /// everything from AArch32 EL0 (not supported: the core kills the thread).
    pub fn decode_cause(&self) -> TrapCause {
        if self.kind() != Kind::Synchronous || self.origin() == Origin::Lower32 {
            return TrapCause::Other(self.esr);
        }
        let status = self.syndrome() & 0x3f;
        match self.exception_class() {
            // The ABI's trap is `svc #0` (DESIGN.md §6); another immediate is not a call.
            class::SVC64 if self.syndrome() & 0xffff == 0 => TrapCause::Syscall,
            class::UNKNOWN => TrapCause::Undefined,
            class::BRK64 | class::BREAKPOINT_LOWER | class::BREAKPOINT_SAME => {
                TrapCause::Breakpoint
            }
            class::PC_ALIGNMENT | class::SP_ALIGNMENT => TrapCause::Alignment,
            class::DATA_ABORT_LOWER | class::DATA_ABORT_SAME if status == FSC_ALIGNMENT => {
                TrapCause::Alignment
            }
            class::DATA_ABORT_LOWER | class::DATA_ABORT_SAME => TrapCause::PageFault {
                addr: self.far,
                access: if self.syndrome() & ISS_WNR != 0 {
                    Access::Write
                } else {
                    Access::Read
                },
                from_user: self.from_user(),
            },
            class::INSTRUCTION_ABORT_LOWER | class::INSTRUCTION_ABORT_SAME => {
                TrapCause::PageFault {
                    addr: self.far,
                    access: Access::Execute,
                    from_user: self.from_user(),
                }
            }
            class::SIMD_FP_ACCESS | class::SVE_ACCESS => TrapCause::FpuUnavailable,
            class::FP_EXCEPTION64 => TrapCause::Arithmetic,
            class::SYSREG | class::ILLEGAL_STATE => TrapCause::GeneralProtection,
            _ => TrapCause::Other(self.esr),
        }
    }
}

impl arch_api::TrapFrame for TrapFrame {
    fn new_user(entry: u64, user_stack: u64, argument: u64) -> Self {
        let mut x = [0; 31];
        x[0] = argument;
        Self {
            x,
            sp_el0: user_stack,
            elr: entry,
            spsr: SPSR_EL0T,
            esr: 0,
            far: 0,
            // As if made by a synchronous exception from EL0 in AArch64.
            vector: 8,
            syscall_state: SYSCALL_FULL,
            record: [0; 2],
        }
    }

    fn instruction_pointer(&self) -> u64 {
        self.elr
    }

    fn set_instruction_pointer(&mut self, address: u64) {
        self.elr = address;
    }

    fn frame_pointer(&self) -> u64 {
        self.x[29]
    }

    fn stack_pointer(&self) -> u64 {
        if self.from_user() {
            self.sp_el0
        } else {
            // SP_EL1 when taken: the frame was pushed directly below it.
            core::ptr::from_ref(self) as u64 + FRAME_SIZE as u64
        }
    }

    fn is_from_user(&self) -> bool {
        self.from_user()
    }

    fn syscall_number(&self) -> u64 {
        self.x[8]
    }

    fn syscall_arguments(&self) -> [u64; 6] {
        [
            self.x[0], self.x[1], self.x[2], self.x[3], self.x[4], self.x[5],
        ]
    }

    fn set_syscall_results(&mut self, first: u64, second: u64) {
        self.x[0] = first;
        self.x[1] = second;
    }

    fn cause(&self) -> TrapCause {
        self.decode_cause()
    }

    fn set_ipc_message(&mut self, status: u64, badge: u64, info: u64, words: [u64; 4]) {
        self.x[0] = status;
        self.x[1] = info;
        [self.x[2], self.x[3], self.x[4], self.x[5]] = words;
        self.x[6] = badge;
    }

    /// The info and the four words (x1–x5), read early.
    type IpcEarly = [u64; 5];

    #[inline(always)]
    fn ipc_early(&self) -> [u64; 5] {
        [self.x[1], self.x[2], self.x[3], self.x[4], self.x[5]]
    }

    #[inline(always)]
    fn forward_ipc_message(&mut self, badge: u64, early: [u64; 5], _sender: &Self) {
        self.x[0] = 0;
        [self.x[1], self.x[2], self.x[3], self.x[4], self.x[5]] = early;
        self.x[6] = badge;
    }

    fn set_status(&mut self, status: u64) {
        self.x[0] = status;
    }
}

/// Point VBAR_EL1 at the vector table.
pub fn install_vectors() {
    VBAR_EL1.set(vectors::base());
    barrier::isb(barrier::SY);
}

/// The one Rust entry from the vector table. Returning resumes the state in `frame`.
extern "C" fn dispatch(frame: &mut TrapFrame) {
    if frame.vector & OVERFLOW != 0 {
        report::stack_overflow(frame);
    }
    match (frame.origin(), frame.kind()) {
        (Origin::CurrentSpx | Origin::Lower64 | Origin::Lower32, Kind::Irq) => interrupt(frame),
        (Origin::CurrentSpx, Kind::Synchronous) => kernel_synchronous(frame),
        (Origin::Lower64, Kind::Synchronous) => user_synchronous(frame),
        (Origin::Lower32, Kind::Synchronous) => {
            report::user_exception(frame, "AArch32 EL0 is not supported");
            to_core(frame);
        }
        (Origin::Lower64 | Origin::Lower32, Kind::SError) => {
            // An asynchronous abort caused by EL0 (Keel routes no device to EL0 that could
            // raise one on the kernel's behalf): that thread ends, the kernel goes on.
            report::user_exception(frame, "SError (asynchronous abort) from EL0");
            to_core(frame);
        }
        _ => fatal(frame),
    }
}

/// Hand a trap to the core: an exception from EL0 (`svc #0` never comes here: it takes the
/// system-call fast path to the core's handler for the number).
fn to_core(frame: &mut TrapFrame) {
    // SAFETY: `keel_trap` is the core's safe Rust function of that signature
    // (kernel/src/upcall.rs); the frame is this trap's, on the current kernel stack.
    unsafe { upcall::keel_trap(frame) };
}

/// A synchronous exception from EL0 in AArch64: a fault of that thread (or an `svc` with
/// another immediate than 0, which is no system call).
fn user_synchronous(frame: &mut TrapFrame) {
    match frame.exception_class() {
        class::SVC64 => {}
        // The written SVE/SME policy: CPACR_EL1.ZEN and SMEN stay trapping (their state is
        // not saved on switch), so such an instruction ends the thread instead of running
        // with state another thread could see.
        class::SVE_ACCESS => report::user_exception(frame, "SVE not supported"),
        class::SME_ACCESS => report::user_exception(frame, "SME not supported"),
        _ => {}
    }
    to_core(frame);
}

/// A synchronous exception in the kernel: an expected fault under a fixup entry, an
/// unimplemented firmware call to step over, or a kernel bug.
fn kernel_synchronous(frame: &mut TrapFrame) {
    if let Some(resume) = fixup::resume_address(frame.elr, frame.decode_cause()) {
        frame.elr = resume;
        return;
    }
    if !skip_unimplemented_call(frame) {
        fatal(frame);
    }
}

/// A semihosting or PSCI call that this machine does not implement traps as an undefined
/// instruction (EC 0). Make it return "failed" and step over it, so the console and
/// power-off degrade instead of faulting.
fn skip_unimplemented_call(frame: &mut TrapFrame) -> bool {
    if frame.exception_class() != class::UNKNOWN || !frame.elr.is_multiple_of(4) {
        return false;
    }
    if !report::is_mapped(frame.elr) {
        return false;
    }
    // SAFETY: the address is 4-byte aligned and translates for an EL1 read (just checked);
    // it is the kernel instruction that trapped.
    let instruction = unsafe { (frame.elr as *const u32).read_volatile() };
    frame.x[0] = match instruction {
        semihosting::INSTRUCTION => {
            semihosting::mark_unavailable();
            u64::MAX
        }
        psci::HVC | psci::SMC => psci::NOT_SUPPORTED,
        _ => return false,
    };
    frame.elr += 4;
    true
}

/// An IRQ taken in the kernel: acknowledge, handle, end.
fn interrupt(frame: &TrapFrame) {
    let Some(gic) = gic::get() else {
        fatal(frame);
    };
    let Some(acknowledged) = gic.acknowledge() else {
        // Spurious (1023) or special: nothing to end.
        return;
    };
    if acknowledged.intid < gic::IPI_SGIS {
        // End first: a stop does not come back.
        gic.end(acknowledged);
        if let Some(ipi) = arch_api::Ipi::from_number(u64::from(acknowledged.intid)) {
            crate::smp::handle_ipi(ipi);
        }
    } else if timer::is_timer(acknowledged.intid) {
        timer::rearm();
        // End before the upcall: once the core switches threads from the tick, the GIC's
        // running priority must already be dropped. IRQs stay masked at PSTATE meanwhile.
        gic.end(acknowledged);
        let block = percpu::this();
        if block.id.load(Ordering::Relaxed) != 0 {
            // A secondary's tick is counted in its per-CPU block, then goes to the core
            // like the boot CPU's (the scheduler runs on every CPU).
            block.timer_ticks.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `keel_timer_tick` is the core's safe Rust function of that signature
        // (kernel/src/upcall.rs); called with interrupts masked, as it expects.
        unsafe { upcall::keel_timer_tick() };
    } else {
        // A device line (mask if asked, end, `keel_irq`), or one nobody enabled (disabled
        // and counted, never fatal).
        crate::interrupts::deliver(gic, acknowledged);
    }
}

/// Whether IRQs are unmasked (PSTATE.I clear).
pub fn interrupts_enabled() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effect.
    unsafe {
        core::arch::asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags))
    };
    daif & (1 << 7) == 0
}

/// Halt until an interrupt arrives, then take it.
///
/// WFI runs with IRQs still masked — a pending IRQ wakes the CPU regardless of PSTATE.I
/// (Arm ARM D1.6.2) — and only then opens a one-instruction window, so an IRQ that arrives
/// just before the WFI cannot be taken early and leave the WFI sleeping for another period.
pub fn wait_for_interrupt() {
    // SAFETY: the window lets the IRQ handler run on this stack; the handler restores every
    // register it touches, so the code around this call sees no change.
    unsafe {
        core::arch::asm!(
            "wfi",
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nostack)
        );
    }
}

/// Unmask SError (asynchronous aborts), so one is reported instead of staying pending.
pub fn unmask_serror() {
    // SAFETY: the vectors are installed (callers run this after `install_vectors`).
    unsafe { core::arch::asm!("msr daifclr, #4", options(nomem, nostack)) };
}
