//! The fatal-exception report: what happened (vector, ESR class by name, fault status),
//! where (ELR, FAR, the whole frame, a frame-pointer backtrace), then power-off with
//! `ExitCode::Fatal`.
//!
//! The report must end even when it faults itself: the first fatal exception gets the full
//! report, a second one (a fault while reporting) one line, a third none — the CPU halts.
//! Memory the report reads on the interrupted code's behalf (frame records) is probed with
//! `AT S1E1R` first, so a corrupt frame pointer ends the backtrace instead of faulting.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU32, Ordering};

use aarch64_cpu::asm::barrier;
use arch_api::{ExitCode, TrapCause, backtrace};

use super::{Kind, Origin, TrapFrame, class};
use crate::console::{Report, report};
use crate::{percpu, power, upcall};

/// Fatal exceptions being reported (any CPU).
static FATAL_DEPTH: AtomicU32 = AtomicU32::new(0);

/// Report a fatal exception and power off.
pub fn fatal(frame: &TrapFrame) -> ! {
    fatal_begin();
    match FATAL_DEPTH.fetch_add(1, Ordering::SeqCst) {
        0 => {
            full_report(frame);
            power::off(ExitCode::Fatal)
        }
        1 => {
            report!(
                "keel: nested exception while reporting a fatal one (vector {}, esr {:#x}, \
                 elr {:#x}, far {:#x}); powering off",
                frame.vector,
                frame.esr,
                frame.elr,
                frame.far
            );
            power::off(ExitCode::Fatal)
        }
        _ => power::halt(),
    }
}

/// Claim the report for this CPU and stop the others (or stop here when another CPU
/// reports already).
fn fatal_begin() {
    // SAFETY: the kernel defines `keel_fatal_begin` (kernel/src/upcall.rs) as a plain
    // function that takes no lock; every exception handler runs with IRQs masked.
    unsafe { upcall::keel_fatal_begin() };
}

fn what(frame: &TrapFrame) -> &'static str {
    match (frame.origin(), frame.kind()) {
        (Origin::CurrentSp0, _) => {
            "kernel bug: exception taken while the kernel ran on SP_EL0 (it must run with SPSel = 1)"
        }
        (Origin::CurrentSpx, Kind::Synchronous) => "synchronous exception in the kernel",
        (Origin::CurrentSpx, Kind::Irq) => "interrupt before the GIC was set up",
        (Origin::CurrentSpx, Kind::Fiq) => "FIQ in the kernel (Keel routes no interrupt to FIQ)",
        (Origin::CurrentSpx, Kind::SError) => "SError (asynchronous abort) in the kernel",
        (Origin::Lower64 | Origin::Lower32, Kind::Fiq) => {
            "FIQ from EL0 (Keel routes no interrupt to FIQ)"
        }
        (Origin::Lower64 | Origin::Lower32, _) => "exception from EL0 the kernel cannot handle",
    }
}

fn vector_name(frame: &TrapFrame) -> &'static str {
    const NAMES: [&str; 16] = [
        "current EL SP0 sync",
        "current EL SP0 IRQ",
        "current EL SP0 FIQ",
        "current EL SP0 SError",
        "current EL SPx sync",
        "current EL SPx IRQ",
        "current EL SPx FIQ",
        "current EL SPx SError",
        "lower EL AArch64 sync",
        "lower EL AArch64 IRQ",
        "lower EL AArch64 FIQ",
        "lower EL AArch64 SError",
        "lower EL AArch32 sync",
        "lower EL AArch32 IRQ",
        "lower EL AArch32 FIQ",
        "lower EL AArch32 SError",
    ];
    NAMES.get(frame.vector as usize).copied().unwrap_or("?")
}

/// The name of the thread running on this CPU, as the core knows it.
pub fn thread_name() -> &'static str {
    match percpu::current().map_or(0, |cpu| cpu.current_thread.load(Ordering::Relaxed)) {
        0 => "(none)",
        // SAFETY: `keel_thread_name` is the core's safe Rust function of that signature
        // (kernel/src/upcall.rs); it takes any value.
        thread => unsafe { upcall::keel_thread_name(thread) },
    }
}

/// A kernel stack overflowed: the EL1 entry moved to the overflow stack and built `frame`
/// there. Report (the first line is the stable one the `stack-overflow` scenario checks)
/// and power off.
pub fn stack_overflow(frame: &TrapFrame) -> ! {
    fatal_begin();
    if FATAL_DEPTH.fetch_add(1, Ordering::SeqCst) != 0 {
        power::off(ExitCode::Fatal);
    }
    report!("\nkernel stack overflow in thread {}", thread_name());
    let cpu = percpu::current();
    let sp = cpu.map_or(0, |cpu| cpu.overflowed_sp.load(Ordering::Relaxed));
    match cpu.and_then(|cpu| cpu.stack()) {
        Some(stack) => report!(
            "  sp {sp:#x}, stack {:#x}..{:#x} (guard page below); {} at elr {:#x}, far {:#x}",
            stack.base,
            stack.top,
            class_name(frame.exception_class()),
            frame.elr,
            frame.far
        ),
        None => report!("  sp {sp:#x}, elr {:#x}", frame.elr),
    }
    backtrace(frame);
    power::off(ExitCode::Fatal)
}

/// One line about an exception from EL0 that ends the thread (the core reports the rest).
pub fn user_exception(frame: &TrapFrame, why: &str) {
    report!(
        "keel: thread {}: {why} (esr {:#x}, elr {:#x})",
        thread_name(),
        frame.esr,
        frame.elr
    );
}

fn full_report(frame: &TrapFrame) {
    let cpu = percpu::current().map_or(u32::MAX, |cpu| cpu.id.load(Ordering::Relaxed));
    report!(
        "\nkeel: FATAL: {} [{}] on cpu {} in thread {}",
        what(frame),
        vector_name(frame),
        cpu,
        thread_name()
    );
    let ec = frame.exception_class();
    if matches!(frame.kind(), Kind::Synchronous | Kind::SError) {
        report!(
            "  esr {:#010x}: class {:#04x} {}, IL {}, ISS {:#09x}",
            frame.esr,
            ec,
            class_name(ec),
            (frame.esr >> 25) & 1,
            frame.syndrome()
        );
    }
    abort_detail(frame);
    report!(
        "  elr {:#018x}  far {:#018x}  spsr {:#010x} ({})",
        frame.elr,
        frame.far,
        frame.spsr,
        mode_name(frame.spsr)
    );
    match frame.decode_cause() {
        _ if frame.kind() != Kind::Synchronous => {}
        TrapCause::PageFault {
            addr,
            access,
            from_user,
        } => {
            report!("  cause: page fault at {addr:#x}, {access:?} access, from user: {from_user}")
        }
        cause => report!("  cause: {cause:?}"),
    }
    let mut out = Report;
    for (index, value) in frame.x.iter().enumerate() {
        let _ = write!(out, "  x{index:<2} {value:#018x}");
        if index % 4 == 3 || index == 30 {
            let _ = writeln!(out);
        }
    }
    let interrupted_sp = core::ptr::from_ref(frame) as u64 + size_of::<TrapFrame>() as u64;
    report!(
        "  sp  {:#018x} (SP_EL1 when taken)  sp_el0 {:#018x}",
        interrupted_sp,
        frame.sp_el0
    );
    backtrace(frame);
}

/// Fault status, access direction and FAR validity of an abort (or SError).
fn abort_detail(frame: &TrapFrame) {
    let ec = frame.exception_class();
    let iss = frame.syndrome();
    let status = iss & 0x3f;
    match (frame.kind(), ec) {
        (Kind::Synchronous, class::DATA_ABORT_LOWER | class::DATA_ABORT_SAME) => report!(
            "  data abort: {}; {} (WnR {}){}{}",
            FaultStatus(status),
            if iss & (1 << 6) != 0 { "write" } else { "read" },
            (iss >> 6) & 1,
            if iss & (1 << 7) != 0 {
                "; during a stage-1 table walk"
            } else {
                ""
            },
            if iss & (1 << 10) != 0 {
                "; FAR not valid"
            } else {
                ""
            },
        ),
        (Kind::Synchronous, class::INSTRUCTION_ABORT_LOWER | class::INSTRUCTION_ABORT_SAME) => {
            report!(
                "  instruction abort: {}{}",
                FaultStatus(status),
                if iss & (1 << 10) != 0 {
                    "; FAR not valid"
                } else {
                    ""
                },
            )
        }
        (Kind::SError, _) if iss & (1 << 24) != 0 => {
            report!("  serror: implementation-defined syndrome")
        }
        (Kind::SError, _) => report!("  serror: {}", FaultStatus(status)),
        _ => {}
    }
}

/// ESR_EL1.EC by name (Arm ARM D19.2.37).
fn class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "trapped WFI/WFE",
        0x03 | 0x04 | 0x05 | 0x06 | 0x0c => "trapped AArch32 coprocessor access",
        0x07 => "trapped SIMD/FP access",
        0x0d => "branch target exception",
        0x0e => "illegal execution state",
        0x11 => "SVC from AArch32",
        0x15 => "SVC from AArch64",
        0x16 => "HVC from AArch64",
        0x17 => "SMC from AArch64",
        0x18 => "trapped MSR/MRS/system instruction",
        0x19 => "trapped SVE access",
        0x1c => "pointer authentication failure",
        0x1d => "trapped SME access",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort from the same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort from the same EL",
        0x26 => "SP alignment fault",
        0x28 => "trapped AArch32 floating-point exception",
        0x2c => "trapped AArch64 floating-point exception",
        0x2f => "SError interrupt",
        0x30 => "breakpoint from a lower EL",
        0x31 => "breakpoint from the same EL",
        0x32 => "software step from a lower EL",
        0x33 => "software step from the same EL",
        0x34 => "watchpoint from a lower EL",
        0x35 => "watchpoint from the same EL",
        0x38 => "BKPT (AArch32)",
        0x3c => "BRK (AArch64)",
        _ => "reserved or unallocated class",
    }
}

/// A data/instruction fault status code (DFSC/IFSC), printed by name.
struct FaultStatus(u64);

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.0;
        let level = status & 3;
        let name = match status {
            0b00_0000..=0b00_0011 => return write!(f, "address size fault, level {level}"),
            0b00_0100..=0b00_0111 => return write!(f, "translation fault, level {level}"),
            0b00_1000..=0b00_1011 => return write!(f, "access flag fault, level {level}"),
            0b00_1100..=0b00_1111 => return write!(f, "permission fault, level {level}"),
            0b01_0000 => "synchronous external abort",
            0b01_0001 => "asynchronous SError",
            0b01_0100..=0b01_0111 => "synchronous external abort on a table walk",
            0b01_1000 => "synchronous parity/ECC error",
            0b10_0001 => "alignment fault",
            0b11_0000 => "TLB conflict abort",
            0b11_0001 => "unsupported atomic hardware update",
            0b11_0100 => "implementation-defined lockdown",
            0b11_0101 => "implementation-defined exclusive-access fault",
            _ => "other fault status",
        };
        write!(f, "{name} ({status:#08b})")
    }
}

/// The interrupted exception level and stack from SPSR.M.
fn mode_name(spsr: u64) -> &'static str {
    if spsr & (1 << 4) != 0 {
        return "AArch32";
    }
    match spsr & 0xf {
        0b0000 => "EL0t",
        0b0100 => "EL1t",
        0b0101 => "EL1h",
        0b1000 => "EL2t",
        0b1001 => "EL2h",
        _ => "?",
    }
}

/// Print the backtrace from the interrupted PC and x29 (AAPCS64 frame records).
fn backtrace(frame: &TrapFrame) {
    // Records lie above the frame, except when the frame was built on the overflow stack.
    let floor = (core::ptr::from_ref(frame) as u64).min(frame.x[29].saturating_sub(1));
    let _ = backtrace::write(&mut Report, frame.elr, frame.x[29], floor, &Mapped);
}

/// Frame records are read only where they translate for an EL1 read (`AT S1E1R`), so a
/// corrupt x29 ends the walk instead of faulting.
struct Mapped;

impl backtrace::StackMemory for Mapped {
    fn read_word(&self, address: u64) -> Option<u64> {
        if !address.is_multiple_of(8) || !is_mapped(address) {
            return None;
        }
        // SAFETY: `address` is 8-aligned and its page translates for an EL1 read right
        // now (checked just now); reading it has no side effect.
        Some(unsafe { (address as *const u64).read_volatile() })
    }
}

/// The caller's backtrace (the `Platform::backtrace` of the panic report), from the live
/// x29.
#[inline(never)]
pub fn backtrace_here(out: &mut dyn core::fmt::Write) -> fmt::Result {
    let own: u64;
    // SAFETY: reads x29; no memory, no side effect.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) own, options(nomem, nostack, preserves_flags));
    }
    // This function's own record is read now, before any call: a tail call at the end
    // reuses this frame's stack.
    // SAFETY: x29 is this function's frame record (the kernel keeps frame pointers): two
    // words on this thread's stack, live until this function returns.
    let (caller_record, return_address) = unsafe {
        let words = own as *const u64;
        (words.read_volatile(), words.add(1).read_volatile())
    };
    backtrace::write(out, return_address, caller_record, own, &Mapped)
}

/// Whether `address` translates for an EL1 read right now (`AT S1E1R`, PAR_EL1.F).
pub fn is_mapped(address: u64) -> bool {
    let par: u64;
    // SAFETY: AT only asks the MMU to translate; it never faults, and PAR_EL1 is ours.
    unsafe {
        core::arch::asm!("at s1e1r, {}", in(reg) address, options(nostack, preserves_flags));
    }
    barrier::isb(barrier::SY);
    // SAFETY: reading PAR_EL1 has no side effect.
    unsafe { core::arch::asm!("mrs {}, par_el1", out(reg) par, options(nomem, nostack)) };
    par & 1 == 0
}
