//! Upcalls into the portable core (DESIGN.md §2). Defined, unmangled, in the kernel's
//! `upcall` module; the linker joins the two.

unsafe extern "Rust" {
    /// One timer period has passed. Called from the IRQ handler with interrupts masked.
    pub fn keel_timer_tick();
}
