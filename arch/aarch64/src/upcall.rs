//! Upcalls into the portable core (DESIGN.md §2). Defined, unmangled, in the kernel's
//! `upcall` module; the linker joins the two (a missing definition is a link error).

unsafe extern "Rust" {
    /// One timer period has passed. Called from the IRQ handler with interrupts masked.
    pub fn keel_timer_tick();
    /// A reschedule IPI arrived (its SGI ended): the core looks at this CPU's run queue.
    /// Interrupts masked; the core may switch threads inside.
    pub fn keel_reschedule();
    /// A device interrupt on `line` (a GIC SPI's INTID), after its end-of-interrupt and, when
    /// the line was enabled with `Delivery::MaskUntilUnmask`, after disabling it at the
    /// distributor. Interrupts masked; the core may switch threads inside.
    pub fn keel_irq(line: u32);
    /// A trap the arch does not finish itself: every exception from EL0 other than the
    /// system call `svc #0`, which goes to `KEEL_SYSCALLS` (decode with `frame.cause()`).
    /// Interrupts masked, on the current thread's kernel stack; the core may switch threads inside, or end the thread and never return.
    pub fn keel_trap(frame: &mut crate::TrapFrame);
    /// The name of the core's thread `thread` (as given to `set_current_thread`), for
    /// reports.
    pub fn keel_thread_name(thread: usize) -> &'static str;

    /// A fatal report (a kernel fault, a kernel-stack overflow) is about to start on this
    /// CPU. Returns once every other CPU has been stopped, when this CPU is the first to
    /// report a panic or a fatal trap (or already is the reporter: a fault inside its own
    /// report); never returns when another CPU reports already (this CPU stops). Called with
    /// interrupts masked; takes no lock.
    pub fn keel_fatal_begin();
}

unsafe extern "C" {
    /// The core's system-call handlers, one per number below `arch_api::SYSCALL_TABLE_LEN`:
    /// the address of a C-ABI `fn(&mut TrapFrame)`, called as `keel_syscall` is, straight
    /// from the vector table's fast path with the number as the index. Words the core may
    /// replace at any time (each with another handler of the same call), so the entry loads
    /// one and calls it; Rust code here never reads them.
    pub static KEEL_SYSCALLS: [core::sync::atomic::AtomicPtr<()>; arch_api::SYSCALL_TABLE_LEN];
    /// A system call (`svc #0`) whose number is not below `arch_api::SYSCALL_TABLE_LEN`,
    /// called straight from the vector table's fast path (so the C ABI): decode the number
    /// and arguments from `frame`, run it, write the results into `frame`. Interrupts
    /// masked, on the current thread's kernel stack, `frame` at its top — a partial frame
    /// (`trap::SYSCALL_PARTIAL`). The core may switch threads inside, or end the thread and
    /// never return.
    pub fn keel_syscall(frame: &mut crate::TrapFrame);
}
