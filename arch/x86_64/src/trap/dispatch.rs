//! The one Rust function every trap enters: handle the expected interrupts, report the rest.

use super::TrapFrame;
use super::report;
use super::vector;
use crate::{apic, pic, upcall};

/// Called by the entry assembly with a pointer to the frame it built, interrupts masked,
/// GS holding the kernel's per-CPU block, DF and AC clear.
pub(super) extern "C" fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        vector::LAPIC_TIMER => {
            // EOI first: the tick upcall may, with threads, switch away and not come back
            // through here for a while.
            apic::end_of_interrupt();
            // SAFETY: the kernel defines `keel_timer_tick` (kernel/src/upcall.rs) as a plain
            // function callable from interrupt context with interrupts masked.
            unsafe { upcall::keel_timer_tick() };
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
        _ => report::fatal(frame),
    }
}
