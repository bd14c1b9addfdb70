//! Raw system-register access for registers `aarch64-cpu` does not name (or names with a
//! field API that would hide what is written).

/// Read a system register by its assembler name (or `S3_…` encoding).
macro_rules! read {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading an EL1-accessible system register has no side effect; the
        // callers name only such registers.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value,
                options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

/// Write a system register by its assembler name, then synchronize the context (ISB), so
/// the next instruction sees the new value.
macro_rules! write {
    ($name:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: each caller states why writing this register keeps the kernel's view of
        // memory and control state intact (see the call sites).
        unsafe {
            core::arch::asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) value,
                options(nostack, preserves_flags))
        };
    }};
}

pub(crate) use {read, write};

/// Run `body` with IRQs masked, restoring the previous mask after: for spin locks that an
/// interrupt handler (or a thread it preempts in favour of) may also take.
pub fn masked<T>(body: impl FnOnce() -> T) -> T {
    let daif = read!("daif");
    // SAFETY: masking IRQs only delays them; the previous state is restored below.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
    let result = body();
    // Restoring DAIF as it was unmasks IRQs only if they were unmasked on entry.
    write!("daif", daif);
    result
}
