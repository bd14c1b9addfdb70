//! Traps: the IDT, the entry stubs, the one [`TrapFrame`], and the dispatcher.
//!
//! Every vector enters through an assembly stub ([`entry`]) that builds a [`TrapFrame`] and
//! calls `dispatch::dispatch`, whose table says what the arch finishes itself (interrupts,
//! NMIs, kernel faults covered by a [`fixup`]), what goes to the core (`keel_trap`: user
//! exceptions) and what ends in the fatal report of [`report`]. `SYSCALL` enters through
//! [`syscall`], which builds the same frame and calls the core's `keel_syscall` directly.

pub mod dispatch;
pub mod entry;
pub mod fixup;
pub mod frame;
pub mod idt;
pub mod report;
pub mod syscall;

pub use frame::TrapFrame;

/// Vector numbers: the architectural exceptions (Intel SDM Vol. 3A, Table 6-1) and the
/// interrupt vectors Keel assigns.
pub mod vector {
    pub const DIVIDE_ERROR: u64 = 0;
    pub const DEBUG: u64 = 1;
    pub const NMI: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const INVALID_OPCODE: u64 = 6;
    pub const DEVICE_NOT_AVAILABLE: u64 = 7;
    pub const DOUBLE_FAULT: u64 = 8;
    pub const INVALID_TSS: u64 = 10;
    pub const SEGMENT_NOT_PRESENT: u64 = 11;
    pub const STACK_SEGMENT: u64 = 12;
    pub const GENERAL_PROTECTION: u64 = 13;
    pub const PAGE_FAULT: u64 = 14;
    pub const X87_FLOATING_POINT: u64 = 16;
    pub const ALIGNMENT_CHECK: u64 = 17;
    pub const MACHINE_CHECK: u64 = 18;
    pub const SIMD_FLOATING_POINT: u64 = 19;
    pub const CONTROL_PROTECTION: u64 = 21;
    pub const VMM_COMMUNICATION: u64 = 29;
    pub const SECURITY: u64 = 30;

    /// The first vector that is not an exception.
    pub const FIRST_INTERRUPT: u64 = 32;
    /// The legacy 8259 pair, remapped here (and fully masked): IRQ 0–15.
    pub const PIC_BASE: u64 = 0x20;
    /// The master 8259's spurious vector (IRQ 7) and the slave's (IRQ 15).
    pub const PIC_SPURIOUS_MASTER: u64 = PIC_BASE + 7;
    pub const PIC_SPURIOUS_SLAVE: u64 = PIC_BASE + 15;
    /// The local APIC timer.
    pub const LAPIC_TIMER: u64 = 0x30;
    /// A secondary CPU's local APIC timer: a vector of its own, so the boot CPU's tick
    /// path stays as it is and a secondary's tick is only counted in its per-CPU block.
    pub const LAPIC_TIMER_SECONDARY: u64 = 0x31;
    /// Device interrupts: line (I/O APIC GSI) n on vector `EXTERNAL_BASE + n`.
    pub const EXTERNAL_BASE: u64 = 0x40;
    /// How many lines have a vector (0x40..0xE0).
    pub const EXTERNAL_LINES: u32 = 0xA0;
    /// A vector assigned to nothing, for the "unrouted interrupt" self-test.
    #[cfg(feature = "testing")]
    pub const UNASSIGNED_TEST: u64 = 0xEF;
    /// Whether `vector` is a device line's.
    pub const fn is_external(vector: u64) -> bool {
        vector >= EXTERNAL_BASE && vector < EXTERNAL_BASE + EXTERNAL_LINES as u64
    }
    /// The reschedule IPI (`arch_api::Ipi::Reschedule`).
    pub const IPI_RESCHEDULE: u64 = 0xF0;
    /// The TLB-shootdown IPI (`arch_api::Ipi::TlbShootdown`); stop is an NMI.
    pub const IPI_TLB_SHOOTDOWN: u64 = 0xF1;
    /// The local APIC's internal error interrupt.
    pub const LAPIC_ERROR: u64 = 0xFE;
    /// The local APIC's spurious vector (its low four bits must be 1s on old APICs).
    pub const LAPIC_SPURIOUS: u64 = 0xFF;
    /// The last hardware vector.
    pub const LAST: u64 = 255;
    /// Not a vector: the `SYSCALL` entry stores this in `TrapFrame::vector`.
    pub const SYSCALL: u64 = 256;

    const fn mask(vectors: &[u64]) -> u64 {
        let mut mask = 0;
        let mut index = 0;
        while index < vectors.len() {
            mask |= 1 << vectors[index];
            index += 1;
        }
        mask
    }

    /// Exceptions for which the CPU pushes an error code (bit n = vector n).
    pub const ERROR_CODE_MASK: u64 = mask(&[
        DOUBLE_FAULT,
        INVALID_TSS,
        SEGMENT_NOT_PRESENT,
        STACK_SEGMENT,
        GENERAL_PROTECTION,
        PAGE_FAULT,
        ALIGNMENT_CHECK,
        CONTROL_PROTECTION,
        VMM_COMMUNICATION,
        SECURITY,
    ]);

    /// Vectors that run on an IST stack and take the paranoid entry path.
    pub const PARANOID_MASK: u64 = mask(&[DEBUG, NMI, DOUBLE_FAULT, MACHINE_CHECK]);

    /// Whether the CPU pushes an error code for `vector`.
    pub const fn has_error_code(vector: u64) -> bool {
        vector < 32 && ERROR_CODE_MASK & (1 << vector) != 0
    }

    /// Whether `vector` runs on an IST stack through the paranoid entry path.
    pub const fn is_paranoid(vector: u64) -> bool {
        vector < 32 && PARANOID_MASK & (1 << vector) != 0
    }

    /// The name of an exception vector, or a generic name for interrupts.
    pub fn name(vector: u64) -> &'static str {
        const EXCEPTIONS: [&str; 32] = [
            "#DE divide error",
            "#DB debug",
            "NMI",
            "#BP breakpoint",
            "#OF overflow",
            "#BR bound range exceeded",
            "#UD invalid opcode",
            "#NM device not available",
            "#DF double fault",
            "coprocessor segment overrun",
            "#TS invalid TSS",
            "#NP segment not present",
            "#SS stack-segment fault",
            "#GP general protection",
            "#PF page fault",
            "reserved exception 15",
            "#MF x87 floating-point error",
            "#AC alignment check",
            "#MC machine check",
            "#XM SIMD floating-point exception",
            "#VE virtualization exception",
            "#CP control-protection exception",
            "reserved exception 22",
            "reserved exception 23",
            "reserved exception 24",
            "reserved exception 25",
            "reserved exception 26",
            "reserved exception 27",
            "#HV hypervisor injection",
            "#VC VMM communication",
            "#SX security exception",
            "reserved exception 31",
        ];
        match vector {
            0..32 => EXCEPTIONS[vector as usize],
            PIC_BASE..=PIC_SPURIOUS_SLAVE => "legacy 8259 interrupt",
            LAPIC_TIMER => "local APIC timer",
            LAPIC_TIMER_SECONDARY => "secondary CPU's local APIC timer",
            vector if is_external(vector) => "device interrupt",
            IPI_RESCHEDULE => "reschedule IPI",
            IPI_TLB_SHOOTDOWN => "TLB-shootdown IPI",
            LAPIC_ERROR => "local APIC error",
            LAPIC_SPURIOUS => "local APIC spurious",
            SYSCALL => "system call",
            _ => "unexpected interrupt",
        }
    }
}
