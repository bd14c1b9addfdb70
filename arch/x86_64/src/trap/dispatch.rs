//! The one Rust function every trap enters: finish what the arch owns (interrupts, kernel
//! fixups, fatal reports), hand the rest to the core (`keel_trap`).
//!
//! `SYSCALL` never comes here: its entry calls the core's handler for the number directly
//! (`KEEL_SYSCALLS`, [`syscall`]), and its slow exit only checks the return address
//! ([`syscall_slow_return`]).
//!
//! | trap | from user mode | from kernel mode |
//! | --- | --- | --- |
//! | exception (0–31 but NMI, #DF, #MC) | `keel_trap` (a #DB first moves off its IST stack) | fixup table, else fatal report (a #DB on the `SYSCALL` entry's first instruction: ignored) |
//! | any, about to return to a non-canonical RIP/RSP | `keel_trap` again, as the user's #GP | — |
//! | NMI | counted (GS base checked); a stop request halts the CPU | same |
//! | #DF, #MC | fatal report (a #DF on a guard page: the stack-overflow line) | same |
//! | LAPIC timer | EOI, `keel_timer_tick` | same |
//! | reschedule, TLB-shootdown IPI | EOI, [`crate::smp::handle_ipi`] (count; flush and acknowledge) | same |
//! | device line (I/O APIC) | mask if asked, EOI, `keel_irq` ([`crate::ioapic::deliver`]) | same |
//! | any other interrupt vector | counted as unexpected, EOI if in service | same |

use super::frame::rflags;
use super::report;
use super::vector;
use super::{TrapFrame, fixup, syscall};
use crate::{apic, ioapic, percpu, pic, smp, upcall};

/// Called by the entry assembly with a pointer to the frame it built, interrupts masked,
/// GS holding the kernel's per-CPU block, DF and AC clear.
pub(super) extern "C" fn dispatch(frame: &mut TrapFrame) {
    handle(frame);
    if frame.from_user() {
        fault_bad_return_in_user_mode(frame);
    }
}

/// The `SYSCALL` slow exit, just before it leaves through `IRETQ`: a non-canonical RIP or
/// RSP in the (now complete) frame becomes the user's own #GP, as in [`dispatch`].
pub(super) extern "C" fn syscall_slow_return(frame: &mut TrapFrame) {
    fault_bad_return_in_user_mode(frame);
}

/// The paranoid entry path's dispatcher (NMI, #DB, #DF, #MC, on their IST stacks). A #DB
/// from user mode goes to the core, which may block or switch: it must not run on the IST
/// stack. So its frame is copied to the top of the current thread's kernel stack (unused
/// while the thread ran in user mode) and the copy's address returned; the entry then
/// calls [`dispatch`] on it there. Everything else is handled here, on the IST stack, and
/// null returned.
pub(super) extern "C" fn dispatch_paranoid(frame: &mut TrapFrame) -> *mut TrapFrame {
    if frame.from_user() && frame.vector == vector::DEBUG {
        let cpu = percpu::current();
        if let Some(stack) = cpu.kernel_stack() {
            let copy = stack.user_frame::<TrapFrame>();
            // SAFETY: the thread was running in user mode, so nothing lives on its kernel
            // stack; the frame area at its top is mapped, writable and aligned (the
            // `KernelStack` invariant; the stack top is page-aligned and the frame size a
            // multiple of 16).
            unsafe { copy.write(*frame) };
            return copy;
        }
    }
    dispatch(frame);
    core::ptr::null_mut()
}

/// An `IRETQ` (or `SYSRET`) to a non-canonical RIP or RSP would raise #GP in ring 0, with
/// the user's GS base already swapped in. So a frame about to return to such an address
/// is turned into the #GP the user program earned, delivered as a user-mode fault to the
/// core before anything returns — a fault "in user mode", never one in ring 0.
fn fault_bad_return_in_user_mode(frame: &mut TrapFrame) {
    while frame.from_user() && !(is_canonical(frame.rip) && is_canonical(frame.rsp)) {
        frame.vector = vector::GENERAL_PROTECTION;
        frame.error_code = 0;
        to_core(frame);
    }
}

fn is_canonical(address: u64) -> bool {
    ((address << 16) as i64 >> 16) as u64 == address
}

fn handle(frame: &mut TrapFrame) {
    match frame.vector {
        vector::NMI => {
            // The NMI storm test counts the hits inside the system-call path's windows.
            #[cfg(feature = "testing")]
            if !frame.from_user() && syscall::is_user_gs_window(frame.rip) {
                crate::nmi::count_window_hit();
            }
            nmi();
        }
        vector::DOUBLE_FAULT => {
            report::check_stack_overflow(frame);
            report::fatal(frame)
        }
        vector::MACHINE_CHECK => report::fatal(frame),
        exception if exception < vector::FIRST_INTERRUPT => {
            if frame.from_user() {
                to_core(frame);
            } else {
                kernel_exception(frame);
            }
        }
        vector::LAPIC_TIMER => {
            // EOI first: the tick upcall may switch away and not come back through here
            // for a while.
            apic::end_of_interrupt();
            // SAFETY: the kernel defines `keel_timer_tick` (kernel/src/upcall.rs) as a plain
            // function callable from interrupt context with interrupts masked.
            unsafe { upcall::keel_timer_tick() };
        }
        // A secondary's tick: counted in its per-CPU block, then the core's tick (the
        // scheduler runs on every CPU).
        vector::LAPIC_TIMER_SECONDARY => {
            apic::end_of_interrupt();
            percpu::current().count_timer_tick();
            // SAFETY: as for the boot CPU's timer above.
            unsafe { upcall::keel_timer_tick() };
        }
        ipi @ (vector::IPI_RESCHEDULE | vector::IPI_TLB_SHOOTDOWN) => {
            apic::end_of_interrupt();
            smp::handle_ipi(ipi);
        }
        // A spurious APIC interrupt is not in service: no EOI (SDM Vol. 3A §11.9).
        vector::LAPIC_SPURIOUS => {}
        vector::LAPIC_ERROR => {
            let status = apic::read_error_status();
            crate::serial::arch_println!("x86_64: local APIC error, ESR = {status:#x}");
            apic::end_of_interrupt();
        }
        // Spurious 8259 interrupts (the pair is masked, but a glitch can still raise them):
        // IRQ 7 needs no EOI; a spurious IRQ 15 reached the master as a real IRQ 2.
        vector::PIC_SPURIOUS_MASTER if !pic::in_service(7) => {}
        vector::PIC_SPURIOUS_SLAVE if !pic::in_service(15) => pic::end_of_interrupt_master(),
        external if vector::is_external(external) => {
            ioapic::deliver((external - vector::EXTERNAL_BASE) as u32);
        }
        // A vector nothing is assigned to (a stray MSI, an 8259 line that slipped through):
        // counted, never fatal.
        stray if (vector::FIRST_INTERRUPT..=vector::LAST).contains(&stray) => {
            ioapic::count_unexpected_vector(stray);
        }
        _ => report::fatal(frame),
    }
}

fn to_core(frame: &mut TrapFrame) {
    // SAFETY: the kernel defines `keel_trap` (kernel/src/upcall.rs); it is called with
    // interrupts masked, on the current thread's kernel stack, with the frame the entry
    // built — the conditions its declaration states.
    unsafe { upcall::keel_trap(frame) };
}

/// A kernel-mode exception: resume at its fixup if one covers the instruction, else stop.
fn kernel_exception(frame: &mut TrapFrame) {
    // Decode first: `cause` reads CR2, which a later fault would overwrite.
    let cause = frame.cause();
    if frame.vector == vector::DEBUG && frame.rip == syscall::entry_address() {
        // `SYSCALL` executed with TF set: the single-step trap can be delivered on the
        // first instruction of the entry, in ring 0, before `SWAPGS` (the paranoid entry
        // path fixed GS). Nothing to step through in the kernel: resume the entry; the user
        // RFLAGS (with TF) is in R11 and comes back with the return.
        frame.rflags &= !rflags::TRAP;
        return;
    }
    if let Some(resume) = fixup::resume(frame.rip, cause) {
        frame.rip = resume;
        return;
    }
    if frame.vector == vector::PAGE_FAULT {
        report::check_stack_overflow(frame);
    }
    report::fatal(frame)
}

/// An NMI: count it and check that the GS base is this CPU's block (the paranoid entry
/// path swapped it if the NMI interrupted user mode or the `SYSCALL`/`SYSRET` window).
fn nmi() {
    // Read the MSR before touching `%gs`: a wrong base would make `percpu::current` lie.
    let gs_base = x86_64::registers::model_specific::GsBase::read().as_u64();
    match percpu::block_at(gs_base) {
        Some(cpu) => cpu.count_nmi(),
        None => percpu::count_nmi_with_bad_gs(),
    }
    // Another CPU stops the machine (its panic report): halt here, NMIs stay blocked.
    if smp::stop_requested() {
        smp::stop_self();
    }
}
