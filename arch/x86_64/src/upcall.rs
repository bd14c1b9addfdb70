//! Upcalls: the arch → core calls (DESIGN.md §2), declared here and defined, with unmangled
//! names, in the kernel's `upcall` module. The linker joins the two; a missing definition
//! is a link error, not a null pointer.

use crate::trap::TrapFrame;

unsafe extern "Rust" {
    /// One periodic timer interrupt has been taken (its EOI already sent). Called from the
    /// trap dispatcher with interrupts masked, on the interrupted kernel stack.
    pub fn keel_timer_tick();

    /// A reschedule IPI arrived (its EOI already sent): the core looks at this CPU's run
    /// queue. Called from the trap dispatcher with interrupts masked; may switch threads.
    pub fn keel_reschedule();

    /// A device interrupt on `line` (an I/O APIC GSI), after its end-of-interrupt and, when
    /// the line was enabled with `Delivery::MaskUntilUnmask`, after masking it. Called from
    /// the trap dispatcher with interrupts masked; the core may switch threads inside.
    pub fn keel_irq(line: u32);

    /// A trap the arch crate does not finish itself: an exception from user mode (decode
    /// with `TrapCause`; system calls go to `KEEL_SYSCALLS`, interrupts to `keel_irq` and
    /// `keel_timer_tick`). Called with interrupts masked, on the current
    /// thread's kernel stack, with `frame` at its top. The core may switch threads inside
    /// it, or kill the current thread and never return.
    pub fn keel_trap(frame: &mut TrapFrame);

    /// The name of the thread the core identifies as `thread` (the value given to
    /// `Threads::set_current_thread`), for fatal reports.
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
    /// from the `SYSCALL` entry with the number as the index. Words the core may replace at
    /// any time (each with another handler of the same call), so the entry loads one and
    /// calls it; Rust code here never reads them.
    pub static KEEL_SYSCALLS: [core::sync::atomic::AtomicPtr<()>; arch_api::SYSCALL_TABLE_LEN];
    /// A system call whose number is not below `arch_api::SYSCALL_TABLE_LEN` (the
    /// `SYSCALL` entry's direct call, so the C ABI): decode the number
    /// and arguments from `frame`, run it, write the results into `frame`. Called with
    /// interrupts masked, on the current thread's kernel stack, with `frame` at its top —
    /// a partial frame (`trap::frame::SYSCALL_PARTIAL`: only the argument registers are
    /// stored). The core may switch threads inside, or end the thread and never return.
    pub fn keel_syscall(frame: &mut TrapFrame);
}
