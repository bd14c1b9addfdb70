//! Upcalls: the arch → core calls (DESIGN.md §2), declared here and defined, with unmangled
//! names, in the kernel's `upcall` module. The linker joins the two; a missing definition
//! is a link error, not a null pointer.

unsafe extern "Rust" {
    /// One periodic timer interrupt has been taken (its EOI already sent). Called from the
    /// trap dispatcher with interrupts masked, on the interrupted kernel stack.
    pub fn keel_timer_tick();
}
