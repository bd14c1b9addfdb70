//! The fatal-trap report: what happened, where, the whole frame, and a backtrace.
//!
//! Written straight to the UART without the core's console lock (the interrupted code may
//! hold it), then the machine powers off with `ExitCode::Fatal`. A trap taken while a report
//! is being written prints one short line and powers off at once.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use arch_api::{ExitCode, backtrace};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};

use super::TrapFrame;
use super::frame::page_fault;
use super::vector;
use crate::serial::Writer;
use crate::{paging, percpu, power, upcall};

/// The start of the higher half, where every kernel stack lives.
const HIGHER_HALF: u64 = 0xFFFF_8000_0000_0000;

static REPORTING: AtomicBool = AtomicBool::new(false);

/// Report an unexpected trap and power off.
pub fn fatal(frame: &TrapFrame) -> ! {
    // Read CR2 before anything else can fault and overwrite it.
    let fault_address = Cr2::read_raw();
    fatal_begin();
    if REPORTING.swap(true, Ordering::Relaxed) {
        let _ = writeln!(
            Writer,
            "\nKERNEL FATAL TRAP while reporting one: {} (vector {}) at rip {:#018x}",
            vector::name(frame.vector),
            frame.vector,
            frame.rip,
        );
        power::power_off(ExitCode::Fatal);
    }
    let _ = write_report(&mut Writer, frame, fault_address);
    power::power_off(ExitCode::Fatal)
}

/// Claim the report for this CPU and stop the others (or stop here when another CPU
/// reports already).
fn fatal_begin() {
    // SAFETY: the kernel defines `keel_fatal_begin` (kernel/src/upcall.rs) as a plain
    // function that takes no lock; interrupts are masked in every trap handler.
    unsafe { upcall::keel_fatal_begin() };
}

/// The core's name for `thread` (0: "none").
fn thread_name(thread: usize) -> &'static str {
    if thread == 0 {
        return "none";
    }
    // SAFETY: the kernel defines `keel_thread_name` (kernel/src/upcall.rs) as a plain
    // function that only reads the thread's name; it takes no lock a trap could hold.
    unsafe { upcall::keel_thread_name(thread) }
}

/// If the trap is a kernel-stack overflow — the fault address (CR2) or the interrupted
/// stack pointer lies in the guard page of the current thread's kernel stack — print the
/// report line `kernel stack overflow in thread <name>` and details, and power off with
/// `ExitCode::Fatal`. Returns otherwise.
pub fn check_stack_overflow(frame: &TrapFrame) {
    let fault_address = Cr2::read_raw();
    let Some(cpu) = percpu::try_current() else {
        return;
    };
    let Some(stack) = cpu.kernel_stack() else {
        return;
    };
    if !(stack.guard_contains(fault_address) || stack.guard_contains(frame.rsp)) {
        return;
    }
    fatal_begin();
    if REPORTING.swap(true, Ordering::Relaxed) {
        power::power_off(ExitCode::Fatal);
    }
    let name = thread_name(cpu.current_thread());
    let _ = writeln!(Writer, "\nkernel stack overflow in thread {name}");
    let _ = writeln!(
        Writer,
        "({} at rip {:#018x}; cr2 {fault_address:#018x}, rsp {:#018x}; stack {:#x}..{:#x}, guard page below)",
        vector::name(frame.vector),
        frame.rip,
        frame.rsp,
        stack.base,
        stack.top,
    );
    let _ = writeln!(Writer, "keel: fatal trap; powering off (exit code 2)");
    power::power_off(ExitCode::Fatal)
}

fn write_report(out: &mut impl Write, frame: &TrapFrame, fault_address: u64) -> fmt::Result {
    let mode = if frame.from_user() { "user" } else { "kernel" };
    writeln!(out)?;
    writeln!(
        out,
        "KERNEL FATAL TRAP: {} (vector {}) in {mode} mode at rip {:#018x}",
        vector::name(frame.vector),
        frame.vector,
        frame.rip,
    )?;
    if let Some(cpu) = percpu::try_current() {
        let thread = cpu.current_thread();
        if thread == 0 {
            writeln!(out, "cpu {}, thread: none", cpu.cpu_id())?;
        } else {
            writeln!(out, "cpu {}, thread {}", cpu.cpu_id(), thread_name(thread))?;
        }
    } else if percpu::ready() {
        let gs_base = x86_64::registers::model_specific::GsBase::read().as_u64();
        writeln!(
            out,
            "gs base {gs_base:#x} is no per-CPU block (the user's GS in ring 0?)"
        )?;
    }
    writeln!(out, "cause: {:?}", frame.cause())?;
    if vector::has_error_code(frame.vector) {
        write!(out, "error code {:#x}: ", frame.error_code)?;
        describe_error_code(out, frame.vector, frame.error_code)?;
        writeln!(out)?;
    }
    if frame.vector == vector::PAGE_FAULT {
        let mapping = paging::describe(fault_address);
        writeln!(out, "fault address (cr2) {fault_address:#018x}: {mapping}")?;
    }
    if frame.vector == vector::DOUBLE_FAULT {
        writeln!(
            out,
            "(a double fault's saved rip is undefined; a kernel stack overflow looks like this)"
        )?;
    }
    write_frame(out, frame)?;
    writeln!(
        out,
        "cr0 {:#x}  cr3 {:#x}  cr4 {:#x}",
        Cr0::read_raw(),
        Cr3::read_raw().0.start_address().as_u64(),
        Cr4::read_raw()
    )?;
    write_backtrace(out, frame.rip, frame.rbp)?;
    writeln!(out, "keel: fatal trap; powering off (exit code 2)")
}

fn describe_error_code(out: &mut impl Write, vector: u64, code: u64) -> fmt::Result {
    match vector {
        vector::PAGE_FAULT => {
            let present = if code & page_fault::PRESENT != 0 {
                "protection violation"
            } else {
                "page not present"
            };
            let access = if code & page_fault::INSTRUCTION_FETCH != 0 {
                "instruction fetch"
            } else if code & page_fault::WRITE != 0 {
                "write"
            } else {
                "read"
            };
            let privilege = if code & page_fault::USER != 0 {
                "user"
            } else {
                "supervisor"
            };
            write!(out, "{present}, {access}, {privilege}")?;
            for (bit, name) in [
                (
                    page_fault::RESERVED_BIT,
                    "reserved bit set in a paging entry",
                ),
                (page_fault::PROTECTION_KEY, "protection key"),
                (page_fault::SHADOW_STACK, "shadow stack"),
                (page_fault::SGX, "SGX"),
            ] {
                if code & bit != 0 {
                    write!(out, ", {name}")?;
                }
            }
            Ok(())
        }
        vector::INVALID_TSS
        | vector::SEGMENT_NOT_PRESENT
        | vector::STACK_SEGMENT
        | vector::GENERAL_PROTECTION
        | vector::DOUBLE_FAULT
        | vector::ALIGNMENT_CHECK => {
            // Selector error code (SDM Vol. 3A §6.13): EXT, IDT, TI, index.
            if code == 0 {
                return write!(out, "no selector involved");
            }
            let index = code >> 3;
            if code & 0b10 != 0 {
                write!(out, "IDT vector {index}")?;
            } else if code & 0b100 != 0 {
                write!(out, "LDT selector {:#x}", code & !0b111)?;
            } else {
                write!(out, "GDT selector {:#x}", code & !0b111)?;
            }
            if code & 1 != 0 {
                write!(out, ", raised by an external event")?;
            }
            Ok(())
        }
        vector::CONTROL_PROTECTION => {
            let kind = match code & 0x7FFF {
                1 => "near ret",
                2 => "far ret or iret",
                3 => "missing endbranch",
                4 => "rstorssp",
                5 => "setssbsy",
                _ => "unknown cause",
            };
            write!(out, "{kind}")?;
            if code & (1 << 15) != 0 {
                write!(out, " (in an enclave)")?;
            }
            Ok(())
        }
        _ => write!(out, "(no decoding)"),
    }
}

fn write_frame(out: &mut impl Write, frame: &TrapFrame) -> fmt::Result {
    writeln!(
        out,
        "rip {:#018x}  cs {:#06x}  rflags {:#010x}  rsp {:#018x}  ss {:#06x}",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    )?;
    let registers = [
        ("rax", frame.rax),
        ("rbx", frame.rbx),
        ("rcx", frame.rcx),
        ("rdx", frame.rdx),
        ("rsi", frame.rsi),
        ("rdi", frame.rdi),
        ("rbp", frame.rbp),
        ("r8 ", frame.r8),
        ("r9 ", frame.r9),
        ("r10", frame.r10),
        ("r11", frame.r11),
        ("r12", frame.r12),
        ("r13", frame.r13),
        ("r14", frame.r14),
        ("r15", frame.r15),
    ];
    for row in registers.chunks(4) {
        for (index, (name, value)) in row.iter().enumerate() {
            let separator = if index == 0 { "" } else { "  " };
            write!(out, "{separator}{name} {value:#018x}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Frame records are read only where the active tables map them readable, and only in
/// the higher half (every kernel stack lies there): a corrupt RBP ends the walk instead
/// of faulting.
struct KernelStacks;

impl backtrace::StackMemory for KernelStacks {
    fn read_word(&self, address: u64) -> Option<u64> {
        if !address.is_multiple_of(8) || address < HIGHER_HALF || !paging::is_readable(address, 8) {
            return None;
        }
        // SAFETY: `address` is 8-aligned, in the higher half, and mapped readable in the
        // active tables (checked just now); reading it has no side effect.
        Some(unsafe { (address as *const u64).read_volatile() })
    }
}

/// Write the backtrace from `rip` and the RBP chain (the kernel is built with
/// `-C force-frame-pointers=yes`): [`arch_api::backtrace::write`].
fn write_backtrace(out: &mut dyn Write, rip: u64, rbp: u64) -> fmt::Result {
    backtrace::write(out, rip, rbp, 0, &KernelStacks)
}

/// The caller's backtrace (the `Platform::backtrace` of the panic report), from the live
/// RBP.
#[inline(never)]
pub fn backtrace_here(out: &mut dyn Write) -> fmt::Result {
    let own: u64;
    // SAFETY: reads RBP; no memory, no side effect.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) own, options(nomem, nostack, preserves_flags));
    }
    // This function's own frame is read now, before any call: a tail call at the end
    // reuses its stack.
    // SAFETY: RBP points at this function's saved-RBP/return-address pair (the kernel is
    // built with frame pointers), live until this function returns.
    let (caller_rbp, return_address) = unsafe {
        let words = own as *const u64;
        (words.read_volatile(), words.add(1).read_volatile())
    };
    backtrace::write(out, return_address, caller_rbp, own, &KernelStacks)
}
