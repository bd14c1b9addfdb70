//! The scheduler: fixed priorities with round robin inside a priority
//! ([`kcore::runqueue`]), timer-driven time slices, and an idle thread that halts the CPU.
//!
//! # How a switch happens
//! Every switch goes through [`reschedule`]: under the scheduler lock it picks the next
//! thread and updates the bookkeeping, then drops the lock and calls
//! `Threads::switch`. The outgoing thread resumes later inside that same call and frees
//! whatever thread died in the meantime ([`after_switch`]). Preemption is the timer
//! upcall calling [`timer_tick`], which may call [`reschedule`] from inside the interrupt
//! handler: the interrupted thread's trap frame stays on its own kernel stack until it is
//! switched back to.
//!
//! # Interrupts
//! The kernel runs with interrupts masked except inside `Platform::wait_for_interrupt`
//! and in user mode. So a kernel thread is preempted only where it waits for an interrupt,
//! a user thread anywhere, and no lock is ever held by a preempted thread.
//!
//! Sleeping threads wait in a deadline heap ([`kcore::deadlines`]): a tick takes out only
//! the due ones, O(log n) each, and a thread woken early leaves it the same way.
//!
//! Weak spots: one CPU; the thread table is a fixed array of [`MAX_THREADS`].

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::Cpu;
use crate::mm::stacks;
use crate::obj::Process;
use crate::sync::{Lock, LockGuard, level};
use crate::task::thread::{Start, State, Thread};
use arch_api::{Paging, Platform, Threads};
use kcore::deadlines::Deadlines;
use kcore::runqueue::{Priority, QueueLink, RunQueue};

/// Thread slots; slot 0 is never used (id 0 means "no thread" to the arch crate).
pub const MAX_THREADS: usize = 64;
/// Timer ticks a thread runs before an equal-priority thread gets the CPU.
pub const TIME_SLICE_TICKS: u32 = 2;
/// The priority of ordinary kernel and user threads.
pub const NORMAL: Priority = match Priority::new(8) {
    Some(priority) => priority,
    None => Priority::LOWEST,
};

struct Scheduler {
    threads: [Option<Box<Thread>>; MAX_THREADS],
    queue: RunQueue<[QueueLink; MAX_THREADS]>,
    /// Threads blocked in `sleep`, by wake-up tick (the timer tick pops the due ones).
    sleepers: Deadlines<MAX_THREADS>,
    current: usize,
    idle: usize,
    slice_left: u32,
    /// A thread that died and still needs its stack freed.
    dead: Option<usize>,
}

/// Wraps the scheduler so it can live in a static.
struct Shared(Option<Scheduler>);

// SAFETY: the scheduler is only touched under `SCHEDULER`'s lock, with interrupts masked,
// on the one CPU that runs the kernel; the arch types inside (contexts, FPU state, address
// spaces) are plain register images and page-table roots that no other context aliases.
unsafe impl Send for Shared {}

static SCHEDULER: Lock<Shared> = Lock::new(level::SCHEDULER, Shared(None));

impl Scheduler {
    fn thread(&mut self, id: usize) -> Option<&mut Thread> {
        self.threads.get_mut(id)?.as_deref_mut()
    }
}

/// Why the current thread gives up the CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Still ready: back of its priority's queue.
    Yield,
    /// Waits for its wake-up tick.
    Block,
    /// Finished.
    Exit,
}

/// Create the scheduler and its idle thread. Called once, after the heap exists.
pub fn init() {
    if crate::trace::on() {
        AFTER_SWITCH.fetch_or(TRACE_SWITCHES, Ordering::Relaxed);
    }
    let mut shared = SCHEDULER.lock();
    assert!(shared.0.is_none(), "scheduler initialized twice");
    shared.0 = Some(Scheduler {
        threads: core::array::from_fn(|_| None),
        queue: RunQueue::new([QueueLink::UNQUEUED; MAX_THREADS]),
        sleepers: Deadlines::new(),
        current: 0,
        idle: 0,
        slice_left: TIME_SLICE_TICKS,
        dead: None,
    });
    drop(shared);
    let idle = spawn(
        "idle",
        Priority::LOWEST,
        Start::Kernel {
            entry: idle_loop,
            argument: 0,
        },
        None,
        false,
    )
    .expect("no memory for the idle thread");
    with(|scheduler| scheduler.idle = idle);
}

fn with<R>(body: impl FnOnce(&mut Scheduler) -> R) -> R {
    let mut shared = SCHEDULER.lock();
    body(shared.0.as_mut().expect("scheduler not initialized"))
}

/// Why a thread could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    NoThreadSlot,
    NoKernelStack,
    /// The heap cannot hold the thread's record.
    OutOfHeap,
}

/// Create a ready kernel thread running `entry(argument)`.
pub fn spawn_kernel(
    name: &'static str,
    priority: Priority,
    entry: fn(usize),
    argument: usize,
) -> Result<usize, SpawnError> {
    spawn(
        name,
        priority,
        Start::Kernel { entry, argument },
        None,
        true,
    )
}

/// Create a thread; queue it when `ready`.
pub fn spawn(
    name: &'static str,
    priority: Priority,
    start: Start,
    process: Option<Arc<Process>>,
    ready: bool,
) -> Result<usize, SpawnError> {
    // Reserve a slot first, without holding the lock across the stack allocation.
    let id = with(|scheduler| {
        let id = (1..MAX_THREADS).find(|&id| scheduler.threads[id].is_none())?;
        Some(id)
    })
    .ok_or(SpawnError::NoThreadSlot)?;
    crate::mm::heap::reserve(core::mem::size_of::<Thread>()).map_err(|_| SpawnError::OutOfHeap)?;
    let stack = stacks::allocate().map_err(|_| SpawnError::NoKernelStack)?;
    let thread = Box::new(Thread::new(id, name, priority, stack, start, process));
    let placed = with(|scheduler| {
        if scheduler.threads[id].is_some() {
            return false;
        }
        scheduler.threads[id] = Some(thread);
        if ready {
            // why: the id is below MAX_THREADS and not queued, so enqueue cannot fail.
            let _ = scheduler.queue.enqueue(id, priority);
        }
        true
    });
    if !placed {
        stacks::free(stack);
        return Err(SpawnError::NoThreadSlot);
    }
    crate::trace::name(id, name);
    Ok(id)
}

/// Leave the boot stack for good: switch to the highest-priority ready thread.
pub fn start() -> ! {
    let mut boot_context = crate::task::thread::Context::default();
    let mut boot_fpu = Cpu::initial_fpu_state();
    let (to_context, to_fpu, to_stack) = with(|scheduler| {
        let next = scheduler.queue.pick_next().unwrap_or(scheduler.idle);
        scheduler.current = next;
        let thread = scheduler.thread(next).expect("picked thread exists");
        thread.state = State::Running;
        (
            &raw const thread.context,
            &raw const thread.fpu,
            thread.stack,
        )
    });
    let next = current();
    Cpu::set_current_thread(next);
    // SAFETY: interrupts are masked (the kernel runs masked); the context was made by
    // `prepare_context` for the thread whose kernel stack is `to_stack`; the thread is boxed
    // in the table and not freed while it runs; one CPU. The boot context saved into
    // `boot_context` is never resumed.
    unsafe {
        Cpu::switch(
            &mut boot_context,
            &mut boot_fpu,
            &*to_context,
            &*to_fpu,
            to_stack,
        )
    };
    unreachable!("the boot context is never resumed");
}

/// The running thread's id (0 before [`start`]).
pub fn current() -> usize {
    SCHEDULER
        .lock()
        .0
        .as_ref()
        .map_or(0, |scheduler| scheduler.current)
}

/// Switches forced by the timer (a thread's slice ended or a higher priority woke).
static PREEMPTIONS: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "testing")]
/// How many times the timer preempted a thread.
pub fn preemptions() -> u64 {
    PREEMPTIONS.load(Ordering::Relaxed)
}

#[cfg(feature = "testing")]
/// Whether thread `id` exists and has not died.
pub fn is_alive(id: usize) -> bool {
    with(|scheduler| {
        scheduler
            .thread(id)
            .is_some_and(|thread| thread.state != State::Dead)
    })
}

/// The name of thread `id`, for reports.
pub fn name_of(id: usize) -> Option<&'static str> {
    let shared = SCHEDULER.try_lock()?;
    let scheduler = shared.0.as_ref()?;
    Some(scheduler.threads.get(id)?.as_ref()?.name)
}

/// The start of thread `id` (read once, by the thread itself).
pub fn start_of(id: usize) -> Option<Start> {
    with(|scheduler| scheduler.thread(id).map(|thread| thread.start))
}

/// The process of the running thread, if it is a user thread.
pub fn current_process() -> Option<Arc<Process>> {
    with(|scheduler| {
        let current = scheduler.current;
        scheduler.thread(current)?.process.clone()
    })
}

/// Run `body` on the running thread's saved FPU state (`None` before [`start`]).
pub fn with_current_fpu<R>(
    body: impl FnOnce(&mut crate::task::thread::FpuState) -> R,
) -> Option<R> {
    with(|scheduler| {
        let current = scheduler.current;
        scheduler
            .thread(current)
            .map(|thread| body(&mut thread.fpu))
    })
}

/// The kernel stack of the running thread.
pub fn current_stack() -> Option<arch_api::KernelStack> {
    with(|scheduler| {
        let current = scheduler.current;
        scheduler.thread(current).map(|thread| thread.stack)
    })
}

/// Run `body` on the saved user trap frame of thread `id`: a user thread that is not
/// running and is inside the kernel (blocked in a system call), so its frame lies at the
/// top of its kernel stack. For the hostile-resume test: the kernel itself
/// writes a bad instruction pointer there. `None` when `id` is no such thread.
pub fn with_saved_user_frame<R>(
    id: usize,
    body: impl FnOnce(&mut crate::task::thread::TrapFrame) -> R,
) -> Option<R> {
    use arch_api::TrapFrame as _;
    with(|scheduler| {
        if id == scheduler.current {
            return None;
        }
        let thread = scheduler.thread(id)?;
        if thread.process.is_none() || thread.state != State::Blocked {
            return None;
        }
        let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
        // SAFETY: the slot at the top of a thread's kernel stack holds its saved user
        // frame while it is inside the kernel from user mode (the `Threads` contract); the
        // stack is mapped and aligned, and the thread is blocked (not running) while the
        // scheduler lock is held, so nothing else touches the frame meanwhile.
        let frame = unsafe { &mut *frame };
        if !frame.is_from_user() {
            return None;
        }
        Some(body(frame))
    })
}

/// Let equal-priority threads run; returns when this thread is picked again.
pub fn yield_now() {
    reschedule(Reason::Yield);
}

/// Block until something makes this thread ready again (today: the wake-up tick set by
/// [`sleep`]).
pub fn block() {
    reschedule(Reason::Block);
}

/// A thread as `ps` shows it: (name, state, priority, CPU ticks, process).
pub type Description = (&'static str, State, Priority, u64, Option<Arc<Process>>);

/// The CPU the scheduler runs threads on (one CPU).
const THIS_CPU: u32 = 0;

/// What `ps` and `top` show of thread slot `id` beyond [`describe`].
#[derive(Clone, Copy)]
pub struct Activity {
    pub switches: u64,
    pub last_cpu: u32,
}

/// The switches and last CPU of thread slot `id`.
pub fn activity(id: usize) -> Option<Activity> {
    with(|scheduler| {
        let thread = scheduler.thread(id)?;
        Some(Activity {
            switches: thread.switches,
            last_cpu: thread.last_cpu,
        })
    })
}

/// What `ps` shows of thread slot `id`: (name, state, priority, CPU ticks, process).
pub fn describe(id: usize) -> Option<Description> {
    with(|scheduler| {
        let thread = scheduler.thread(id)?;
        Some((
            thread.name,
            thread.state,
            thread.priority,
            thread.cpu_ticks,
            thread.process.clone(),
        ))
    })
}

/// Sleep for at least `ticks` timer ticks.
pub fn sleep(ticks: u64) {
    let until = crate::time::ticks() + ticks;
    with(|scheduler| {
        let current = scheduler.current;
        if let Some(thread) = scheduler.thread(current) {
            thread.wake_at = Some(until);
            scheduler.sleepers.insert(current, until);
        }
    });
    block();
}

fn make_ready(scheduler: &mut Scheduler, id: usize) {
    let Some(thread) = scheduler.thread(id) else {
        return;
    };
    if thread.state != State::Blocked {
        return;
    }
    thread.state = State::Ready;
    let slept = thread.wake_at.take().is_some();
    let priority = thread.priority;
    if slept {
        scheduler.sleepers.remove(id);
    }
    let _ = scheduler.queue.enqueue(id, priority);
}

/// Make blocked thread `id` ready (IPC wake-up). Nothing happens to a thread that is not
/// blocked.
pub fn wake(id: usize) {
    with(|scheduler| make_ready(scheduler, id));
}

/// Like [`wake`], after `write` edited the thread's saved user frame (an IPC result),
/// under one lock. Nothing happens to a thread that is not blocked in a system call.
pub fn wake_with(id: usize, write: impl FnOnce(&mut crate::task::thread::TrapFrame)) {
    with(|scheduler| {
        if let Some(frame) = saved_user_frame(scheduler, id) {
            // SAFETY: see `saved_user_frame`; the lock is held for the whole edit.
            write(unsafe { &mut *frame });
            make_ready(scheduler, id);
        }
    });
}

/// The running thread's id and process, under one lock.
pub fn current_and_process() -> (usize, Option<Arc<Process>>) {
    with(|scheduler| {
        let current = scheduler.current;
        (
            current,
            scheduler
                .thread(current)
                .and_then(|thread| thread.process.clone()),
        )
    })
}

/// The saved user frame of blocked user thread `id` (not the running one), checked to
/// come from user mode. Valid while the scheduler lock is held and the thread stays
/// blocked.
fn saved_user_frame(
    scheduler: &mut Scheduler,
    id: usize,
) -> Option<*mut crate::task::thread::TrapFrame> {
    use arch_api::TrapFrame as _;
    if id == scheduler.current {
        return None;
    }
    let thread = scheduler.thread(id)?;
    if thread.process.is_none() || thread.state != State::Blocked {
        return None;
    }
    let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
    // SAFETY: the slot at the top of a blocked user thread's kernel stack holds its saved
    // user frame (the `Threads` contract); the stack is mapped and aligned, and the thread
    // is not running while the scheduler lock is held, so nothing else touches the frame.
    let from_user = unsafe { (*frame).is_from_user() };
    from_user.then_some(frame)
}

/// The process of thread `id`, if it is a user thread.
pub fn process_of(id: usize) -> Option<Arc<Process>> {
    with(|scheduler| scheduler.thread(id)?.process.clone())
}

/// End the running thread. Its stack is freed by the next thread to run.
pub fn exit_current() -> ! {
    crate::trace::event_here(crate::trace::Kind::Exit, 0, 0);
    reschedule(Reason::Exit);
    unreachable!("a dead thread was resumed");
}

/// The timer upcall's scheduling part (interrupts masked): wake sleepers whose tick has
/// come, and end the running thread's time slice when it is used up or a higher priority
/// became ready.
pub fn timer_tick(now: u64) {
    let preempt = {
        let mut shared = SCHEDULER.lock();
        let Some(scheduler) = shared.0.as_mut() else {
            return;
        };
        if scheduler.current == 0 {
            return;
        }
        while let Some(id) = scheduler.sleepers.pop_due(now) {
            // `make_ready` clears the thread's `wake_at` (the heap entry is gone already).
            make_ready(scheduler, id);
        }
        let current = scheduler.current;
        if let Some(thread) = scheduler.thread(current) {
            thread.cpu_ticks += 1;
        }
        let priority = scheduler
            .thread(current)
            .map_or(Priority::LOWEST, |t| t.priority);
        scheduler.slice_left = scheduler.slice_left.saturating_sub(1);
        let higher = scheduler
            .queue
            .highest_priority()
            .is_some_and(|ready| ready > priority);
        let equal = scheduler
            .queue
            .highest_priority()
            .is_some_and(|ready| ready == priority);
        current == scheduler.idle && !scheduler.queue.is_empty()
            || higher
            || (equal && scheduler.slice_left == 0)
    };
    if preempt {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
        reschedule(Reason::Yield);
    }
}

/// Give the CPU to the next thread (see the module docs).
fn reschedule(reason: Reason) {
    let (from, to) = {
        let mut shared = SCHEDULER.lock();
        let scheduler = shared.0.as_mut().expect("scheduler not initialized");
        let current = scheduler.current;
        let idle = scheduler.idle;
        let Some(priority) = scheduler.thread(current).map(|thread| thread.priority) else {
            return;
        };
        // A yield with no other thread ready at this priority or above keeps the CPU: no
        // queue work, no state change.
        if reason == Reason::Yield
            && current != idle
            && scheduler
                .queue
                .highest_priority()
                .is_none_or(|ready| ready < priority)
        {
            scheduler.slice_left = TIME_SLICE_TICKS;
            return;
        }
        let Some(thread) = scheduler.thread(current) else {
            return;
        };
        match reason {
            Reason::Yield => thread.state = State::Ready,
            Reason::Block => thread.state = State::Blocked,
            Reason::Exit => thread.state = State::Dead,
        }
        if reason == Reason::Yield && current != idle {
            let _ = scheduler.queue.enqueue(current, priority);
        }
        let next = scheduler.queue.pick_next().unwrap_or(idle);
        if next == current {
            if let Some(thread) = scheduler.thread(current) {
                thread.state = State::Running;
            }
            scheduler.slice_left = TIME_SLICE_TICKS;
            return;
        }
        if reason == Reason::Exit {
            scheduler.dead = Some(current);
            AFTER_SWITCH.fetch_or(DEAD_PENDING, Ordering::Relaxed);
        }
        scheduler.slice_left = TIME_SLICE_TICKS;
        scheduler.current = next;
        let from: *mut Thread = scheduler.thread(current).expect("current exists");
        let to: *mut Thread = scheduler.thread(next).expect("picked thread exists");
        (from, to)
    };
    // SAFETY: both threads are boxed in the table; `from` is the running thread (not freed
    // while it runs: a dead thread is freed only by the next one, after this switch) and
    // `to` is not running, so nothing else touches either while the lock is released.
    let (from, to) = unsafe { (&mut *from, &mut *to) };
    to.state = State::Running;
    Cpu::set_current_thread(to.id);
    crate::stats::count_switch();
    to.switches += 1;
    to.last_cpu = THIS_CPU;
    if let Some(space) = to.process.as_ref().map(|process| process.space.lock())
        && let Some(space) = space.as_ref()
    {
        crate::stats::count_space_switch();
        Cpu::activate(space);
    }
    // SAFETY: interrupts are masked (kernel invariant); `to.context` was made by
    // `prepare_context` or saved by an earlier switch, for the thread whose kernel stack
    // is `to.stack`; one CPU.
    unsafe {
        Cpu::switch(
            &mut from.context,
            &mut from.fpu,
            &to.context,
            &to.fpu,
            to.stack,
        )
    };
    after_switch();
}

/// IPC hand-off: let `write` put the message in the saved user frame of the
/// blocked thread `next`, block the running thread and run `next` in its place at once,
/// without the run queue.
/// The address space is switched only when `next` is in another process. Falls back to
/// waking `next` and blocking when `next` is not a blocked user thread (then `write` is
/// not run). Returns when the running thread
/// is woken again.
pub fn switch_to(next: usize, write: impl FnOnce(&mut crate::task::thread::TrapFrame)) {
    let switched = {
        let mut shared = SCHEDULER.lock();
        let scheduler = shared.0.as_mut().expect("scheduler not initialized");
        let current = scheduler.current;
        let frame = saved_user_frame(scheduler, next);
        if let Some(frame) = frame {
            // SAFETY: see `saved_user_frame`; the lock is held for the whole edit.
            write(unsafe { &mut *frame });
        }
        match (frame.is_some(), scheduler.thread(current)) {
            (true, Some(thread)) => {
                thread.state = State::Blocked;
                let from: *mut Thread = thread;
                scheduler.current = next;
                let to: *mut Thread = scheduler.thread(next).expect("checked above");
                Some((from, to))
            }
            _ => None,
        }
    };
    let Some((from, to)) = switched else {
        wake(next);
        block();
        return;
    };
    // SAFETY: as in `reschedule`: both threads are boxed in the table; `from` is the
    // running thread (blocked now, so not freed) and `to` was blocked, not running, so
    // nothing else touches either while the lock is released.
    let (from, to) = unsafe { (&mut *from, &mut *to) };
    to.state = State::Running;
    // SAFETY: `from` is the running thread, `to` a blocked one whose context an earlier
    // switch saved; the scheduler lock is released and interrupts are masked.
    unsafe { switch_between(from, to) };
}

/// Give the CPU from the running thread `from` to the blocked thread `to` (already marked
/// running and made current by the caller): activate `to`'s address space when it differs,
/// switch kernel stacks and FPU state, and, once `from` runs again, reap a dead thread.
/// Shared by the IPC hand-offs ([`switch_to`], [`Handoff`]).
///
/// # Safety
/// Interrupts are masked (kernel invariant) and the scheduler lock is released; `from` is
/// the running thread and `to` a thread of the table that is not running, whose context was
/// saved by an earlier switch for its kernel stack `to.stack`; one CPU.
#[inline(always)]
unsafe fn switch_between(from: &mut Thread, to: &mut Thread) {
    Cpu::set_current_thread(to.id);
    crate::stats::count_switch();
    to.switches += 1;
    to.last_cpu = THIS_CPU;
    let same_space = match (&from.process, &to.process) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    if !same_space
        && let Some(space) = to.process.as_ref().map(|process| process.space.lock())
        && let Some(space) = space.as_ref()
    {
        crate::stats::count_space_switch();
        Cpu::activate(space);
    }
    // SAFETY: the caller's contract: interrupts masked, `to.context` saved by an earlier
    // switch for the thread whose kernel stack is `to.stack`, one CPU.
    unsafe {
        Cpu::switch(
            &mut from.context,
            &mut from.fpu,
            &to.context,
            &to.fpu,
            to.stack,
        )
    };
    after_switch();
}

/// What [`after_switch`] has to do, so it costs one load when there is nothing:
/// [`DEAD_PENDING`] (set under the lock, cleared by the taker; one CPU, interrupts masked)
/// and [`TRACE_SWITCHES`] (set at start-up when the kernel is traced).
static AFTER_SWITCH: AtomicU8 = AtomicU8::new(0);
/// `Scheduler::dead` may hold a thread.
const DEAD_PENDING: u8 = 1;
/// Every switch is recorded in the kernel trace, by the thread that gains the CPU (so the
/// switch path itself carries no trace check).
const TRACE_SWITCHES: u8 = 2;

/// Run by every thread right after it gains the CPU: record the switch when tracing, and
/// free the thread that died before it.
#[inline]
pub fn after_switch() {
    if AFTER_SWITCH.load(Ordering::Relaxed) != 0 {
        after_switch_work();
    }
}

/// The slow part of [`after_switch`].
#[cold]
#[inline(never)]
fn after_switch_work() {
    let work = AFTER_SWITCH.load(Ordering::Relaxed);
    if work & TRACE_SWITCHES != 0 {
        crate::trace::switched_to(Cpu::current_thread());
    }
    if work & DEAD_PENDING != 0 {
        free_dead();
    }
}

/// Free the dead thread's stack and its share of its process.
fn free_dead() {
    AFTER_SWITCH.fetch_and(!DEAD_PENDING, Ordering::Relaxed);
    let dead = with(|scheduler| {
        let id = scheduler.dead.take()?;
        scheduler.sleepers.remove(id);
        scheduler.threads[id].take()
    });
    if let Some(thread) = dead {
        if thread.killed {
            KILLED_THREADS.fetch_sub(1, Ordering::AcqRel);
        }
        stacks::free(thread.stack);
        if let Some(process) = &thread.process {
            process.thread_exited();
            // Tearing a process down activates the kernel-only space; a user thread
            // resuming here needs its own back.
            if let Some(current) = current_process()
                && let Some(space) = current.space.lock().as_ref()
            {
                Cpu::activate(space);
            }
        }
    }
}

/// The idle thread: halt until an interrupt; the timer tick switches away when something
/// became ready.
fn idle_loop(_: usize) {
    loop {
        Cpu::wait_for_interrupt();
        let ready = with(|scheduler| !scheduler.queue.is_empty());
        if ready {
            yield_now();
        }
    }
}

// Thread control for capabilities: a thread capability names `(id, serial)`, so
// a reused slot never answers for a dead thread.

/// The serial of live thread `id` (not dead).
pub fn serial_of(id: usize) -> Option<u64> {
    with(|scheduler| {
        scheduler
            .thread(id)
            .filter(|thread| thread.state != State::Dead && !thread.killed)
            .map(|thread| thread.serial)
    })
}

/// The running thread's priority.
pub fn current_priority() -> Priority {
    with(|scheduler| {
        let current = scheduler.current;
        scheduler
            .thread(current)
            .map_or(Priority::LOWEST, |thread| thread.priority)
    })
}

/// Mark a thread killed and make it runnable if it was blocked, so it reaches a point where
/// it ends (see [`current_killed`]).
fn mark_killed(scheduler: &mut Scheduler, id: usize) {
    if let Some(thread) = scheduler.thread(id)
        && !thread.killed
    {
        thread.killed = true;
        KILLED_THREADS.fetch_add(1, Ordering::AcqRel);
    }
    make_ready(scheduler, id);
}

/// Threads marked killed and not yet freed: while 0, [`current_killed`] (on every system
/// call return) takes no lock.
static KILLED_THREADS: AtomicU64 = AtomicU64::new(0);

/// Kill thread `(id, serial)`: `false` when it no longer exists. The running thread ends
/// on its way back to user mode ([`current_killed`]).
pub fn kill(id: usize, serial: u64) -> bool {
    with(|scheduler| {
        let live = scheduler.thread(id).is_some_and(|thread| {
            thread.serial == serial && thread.state != State::Dead && !thread.killed
        });
        if live {
            mark_killed(scheduler, id);
        }
        live
    })
}

/// Kill every thread of `process`.
pub fn kill_process(process: &Arc<Process>) {
    with(|scheduler| {
        for id in 1..MAX_THREADS {
            let member = scheduler.thread(id).is_some_and(|thread| {
                thread.state != State::Dead
                    && thread
                        .process
                        .as_ref()
                        .is_some_and(|owner| Arc::ptr_eq(owner, process))
            });
            if member {
                mark_killed(scheduler, id);
            }
        }
    });
}

/// Set thread `(id, serial)`'s priority (re-queued if ready). `false` when it no longer
/// exists. A higher-priority ready thread preempts at the next tick at the latest.
pub fn set_priority(id: usize, serial: u64, priority: Priority) -> bool {
    with(|scheduler| {
        let Some(thread) = scheduler.thread(id) else {
            return false;
        };
        if thread.serial != serial || thread.state == State::Dead || thread.killed {
            return false;
        }
        thread.priority = priority;
        if scheduler.queue.contains(id) {
            let _ = scheduler.queue.remove(id);
            let _ = scheduler.queue.enqueue(id, priority);
        }
        true
    })
}

/// If the running user thread was killed, end it now. Called where it is about to return
/// to user mode and holds nothing on its kernel stack: after a system call, after a timer
/// preemption, before a new thread's first entry.
pub fn current_killed() -> bool {
    if KILLED_THREADS.load(Ordering::Acquire) == 0 {
        return false;
    }
    // Also called from the timer upcall, which runs before the scheduler exists (the
    // `boot` scenario): no scheduler, no killed thread.
    SCHEDULER.lock().0.as_mut().is_some_and(|scheduler| {
        let current = scheduler.current;
        scheduler
            .thread(current)
            .is_some_and(|thread| thread.killed && thread.process.is_some())
    })
}

/// One thread slot as the fuzz scenario's checker reads it (test build).
#[cfg(feature = "testing")]
#[derive(Clone, Copy)]
pub struct ThreadSnapshot {
    pub state: State,
    pub killed: bool,
    /// Belongs to a process.
    pub user: bool,
    /// In the run queue.
    pub queued: bool,
    pub current: bool,
    pub idle: bool,
    pub priority: u8,
    pub name: &'static str,
}

/// Every thread slot, under the scheduler lock (`None`: empty).
#[cfg(feature = "testing")]
pub fn snapshot() -> [Option<ThreadSnapshot>; MAX_THREADS] {
    with(|scheduler| {
        let (current, idle) = (scheduler.current, scheduler.idle);
        core::array::from_fn(|id| {
            let queued = scheduler.queue.contains(id);
            scheduler.threads[id]
                .as_deref()
                .map(|thread| ThreadSnapshot {
                    state: thread.state,
                    killed: thread.killed,
                    user: thread.process.is_some(),
                    queued,
                    current: id == current,
                    idle: id == idle,
                    priority: thread.priority.level(),
                    name: thread.name,
                })
        })
    })
}

/// The saved user instruction pointer and system-call number of user thread `id`, when it
/// is not running and is inside the kernel from user mode (blocked, or preempted).
#[cfg(feature = "testing")]
pub fn saved_user_position(id: usize) -> Option<(u64, u64, u64, u64)> {
    use arch_api::TrapFrame as _;
    with(|scheduler| {
        if id == scheduler.current {
            return None;
        }
        let thread = scheduler.thread(id)?;
        if thread.process.is_none() || thread.state == State::Dead {
            return None;
        }
        let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
        // SAFETY: as in `with_saved_user_frame`: the slot at the top of the kernel stack of
        // a thread that is not running holds its user frame once it has entered the
        // kernel from user mode (checked below); it is only read, under the lock.
        let frame = unsafe { &*frame };
        frame.is_from_user().then(|| {
            (
                frame.instruction_pointer(),
                frame.syscall_number(),
                frame.stack_pointer(),
                frame.frame_pointer(),
            )
        })
    })
}

// ---- The IPC hand-off ----
//
// The IPC fast path (`ipc::fast`) holds the scheduler lock from its first lookup to the
// switch: one lock for the running thread, its process, the partner's saved frame and the
// hand-off. It takes it after the IPC lock and before the capability table and endpoint
// queue, as the lock order says (`crate::sync`).

/// The scheduler, locked for an IPC hand-off ([`lock_for_handoff`]).
pub struct Handoff {
    guard: LockGuard<'static, Shared>,
}

/// Lock the scheduler for an IPC hand-off; `None` before [`init`].
#[inline(always)]
pub fn lock_for_handoff() -> Option<Handoff> {
    let guard = SCHEDULER.lock();
    guard.0.as_ref()?;
    Some(Handoff { guard })
}

impl Handoff {
    #[inline(always)]
    fn scheduler(&mut self) -> &mut Scheduler {
        // why: `lock_for_handoff` checked that the scheduler exists.
        match self.guard.0.as_mut() {
            Some(scheduler) => scheduler,
            None => unreachable!(),
        }
    }

    /// The running thread's id.
    #[inline(always)]
    pub fn current(&mut self) -> usize {
        self.scheduler().current
    }

    /// The running thread's process (no reference taken: valid while the lock is held).
    #[inline(always)]
    pub fn current_process(&mut self) -> Option<&Process> {
        let scheduler = self.scheduler();
        let current = scheduler.current;
        scheduler.thread(current)?.process.as_deref()
    }

    /// The saved user frame of blocked user thread `id` (not the running one): the thread
    /// a hand-off may run. Valid while the lock is held and until [`Handoff::switch`].
    #[inline(always)]
    pub fn blocked_frame(&mut self, id: usize) -> Option<*mut crate::task::thread::TrapFrame> {
        saved_user_frame(self.scheduler(), id)
    }

    /// Make blocked thread `id` ready (after its frame was written through
    /// [`Handoff::blocked_frame`]).
    #[inline(always)]
    pub fn make_ready(&mut self, id: usize) {
        make_ready(self.scheduler(), id);
    }

    /// Block the running thread and run `next` (whose frame [`Handoff::blocked_frame`]
    /// returned under this same lock) in its place: no run queue. Counts the running
    /// thread's IPC operation (the IPC fast paths' hand-off). The address space is
    /// activated only when `next` is in another process. Returns when the running thread
    /// is woken again.
    #[inline(always)]
    pub fn switch(mut self, next: usize) {
        let scheduler = self.scheduler();
        let current = scheduler.current;
        let Some(from) = scheduler.thread(current) else {
            return;
        };
        from.state = State::Blocked;
        let from: *mut Thread = from;
        let Some(to) = scheduler.thread(next) else {
            // why: the caller checked `next` under this lock; unblock ourselves again.
            // SAFETY: `from` points into the table, whose lock is still held.
            unsafe { (*from).state = State::Running };
            return;
        };
        to.state = State::Running;
        let to: *mut Thread = to;
        scheduler.current = next;
        drop(self);
        // SAFETY: as in `reschedule`: both threads are boxed in the table; `from` is the
        // running thread (blocked now, so not freed) and `to` was blocked, not running, so
        // nothing else touches either after the lock is released (one CPU, masked).
        let (from, to) = unsafe { (&mut *from, &mut *to) };
        // SAFETY: `from` is the running thread, `to` a blocked one whose context an earlier
        // switch saved; the lock was released above and interrupts are masked.
        unsafe { switch_between(from, to) };
    }
}
