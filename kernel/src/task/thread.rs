//! Threads: what the scheduler switches between (DESIGN.md §2). A thread owns a kernel
//! stack, the kernel context saved when it is switched away from, and its FPU state; a
//! user thread also belongs to a [`Process`].

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use arch_api::{KernelStack, Threads};
use kcore::runqueue::Priority;

use crate::Cpu;
use crate::obj::Process;

pub type Context = <Cpu as Threads>::Context;
pub type FpuState = <Cpu as Threads>::FpuState;
pub type TrapFrame = <Cpu as Threads>::TrapFrame;

/// A thread's place in the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In the run queue (or the idle thread, waiting to be picked).
    Ready,
    Running,
    /// Waiting for its wake-up tick.
    Blocked,
    /// Finished; its stack is freed once the scheduler has switched away from it.
    Dead,
}

/// What a thread runs when it first starts.
#[derive(Clone, Copy)]
pub enum Start {
    /// A kernel thread: `entry(argument)`, then exit.
    Kernel { entry: fn(usize), argument: usize },
    /// A user thread: enter user mode at `entry` on `stack` with `argument`.
    User {
        entry: u64,
        stack: u64,
        argument: u64,
    },
}

/// No CPU (`Thread::fpu_cpu` of a thread whose state no CPU's registers hold).
pub const NO_CPU: u32 = u32::MAX;

pub struct Thread {
    pub name: &'static str,
    pub priority: Priority,
    pub state: State,
    pub stack: KernelStack,
    pub context: Context,
    pub fpu: FpuState,
    pub start: Start,
    /// The process of a user thread.
    pub process: Option<Arc<Process>>,
    /// The tick at which a sleeping thread becomes ready again.
    pub wake_at: Option<u64>,
    /// Unique over the kernel's life (ids are reused): what a thread capability names.
    pub serial: u64,
    /// Killed (`thread_kill`, `process_kill`): ends before it runs user code again.
    pub killed: bool,
    /// Timer ticks taken while it was running (`ps`).
    pub cpu_ticks: u64,
    /// Times the scheduler switched to it (`top`; their sum over all threads is the
    /// `Switches` event counter, `sched::switch_counts`).
    pub switches: u64,
    /// Times a switch to it activated its process's address space (summed likewise).
    pub space_switches: u64,
    /// The CPU it runs on, last ran on, or is queued on (`ps`).
    pub last_cpu: u32,
    /// The CPUs it may run on (bit `i`: CPU index `i`).
    pub affinity: u64,
    /// The CPU it last saved its FPU/SIMD state on, switching to a kernel thread there
    /// ([`NO_CPU`] once it runs again, and at first): with that CPU's FPU holder naming
    /// this thread, those registers still equal [`Thread::fpu`] (`sched`'s module docs).
    pub fpu_cpu: u32,
    /// The running thread of some CPU (set and cleared under the scheduler lock by the
    /// switch; while the lock is held across a switch, the outgoing thread already reads as
    /// not running: nobody can look before its context is saved).
    pub running: bool,
    /// The CPU whose switch code is using its kernel stack: set when a CPU switches to it,
    /// cleared once the next thread on that CPU runs (lock-checking build).
    #[cfg(feature = "lockcheck")]
    pub on_cpu: Option<u32>,
}

/// What the IPC and trap paths count per thread ([`count`]).
#[derive(Clone, Copy)]
pub enum Event {
    /// An IPC operation (send, call, receive, reply, reply-and-receive); the fast paths
    /// count in their instrumented variant only (`trace::instrumented`).
    Ipc = 0,
    /// A notification operation: signal or wait.
    Notification = 1,
    /// A page fault taken in user mode.
    PageFault = 2,
}

/// The events of each thread slot, beside the records in the scheduler's table: counted
/// by the running thread's id, which the counting paths hold already, with no lock (only
/// the thread itself counts, and it runs on one CPU at a time); zeroed when a thread takes
/// the slot.
///
/// The slots come in chunks of [`EVENT_CHUNK`], allocated by [`prepare_events`] (from
/// `spawn`, with no lock held) the first time an id of the chunk is handed out and never
/// freed, so a slot's address never changes and a lookup is two loads with no lock.
/// Four words a slot (one unused), so a slot's address is a shift away from its id.
type EventSlot = [AtomicU64; 4];
const EVENT_CHUNK: usize = 1024;
const EVENT_CHUNKS: usize = super::sched::MAX_THREAD_IDS.div_ceil(EVENT_CHUNK);
static EVENTS: [AtomicPtr<EventSlot>; EVENT_CHUNKS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; EVENT_CHUNKS];

/// The event slot of thread id `id`, once its chunk exists.
#[inline(always)]
fn event_slot(id: usize) -> Option<&'static EventSlot> {
    let chunk = EVENTS.get(id / EVENT_CHUNK)?.load(Ordering::Acquire);
    if chunk.is_null() {
        return None;
    }
    // SAFETY: a non-null chunk pointer comes from `prepare_events`: a leaked allocation of
    // EVENT_CHUNK slots, never freed, so the slot `id % EVENT_CHUNK` of it is valid for
    // 'static; the slots are atomics, shared freely.
    Some(unsafe { &*chunk.add(id % EVENT_CHUNK) })
}

/// The bytes of each event chunk made so far (they are never freed), for the invariant
/// checker (test build), which counts them apart from the heap in use.
#[cfg(feature = "testing")]
pub fn event_storage(each: &mut dyn FnMut(usize)) {
    for chunk in &EVENTS {
        if !chunk.load(Ordering::Acquire).is_null() {
            each(EVENT_CHUNK * core::mem::size_of::<EventSlot>());
        }
    }
}

/// Make sure thread id `id` has an event slot (allocating its chunk once, with no lock
/// held): `Err` when the heap cannot hold the chunk.
pub fn prepare_events(id: usize) -> Result<(), ()> {
    let Some(pointer) = EVENTS.get(id / EVENT_CHUNK) else {
        return Err(());
    };
    if !pointer.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    let mut chunk: Vec<EventSlot> = Vec::new();
    chunk.try_reserve_exact(EVENT_CHUNK).map_err(|_| ())?;
    chunk.resize_with(EVENT_CHUNK, || [const { AtomicU64::new(0) }; 4]);
    let chunk = Box::into_raw(chunk.into_boxed_slice()).cast::<EventSlot>();
    if pointer
        .compare_exchange(
            core::ptr::null_mut(),
            chunk,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Another CPU installed the chunk first.
        // SAFETY: `chunk` came from `Box::into_raw` of a boxed slice of EVENT_CHUNK slots
        // just above and was never shared.
        drop(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(chunk, EVENT_CHUNK)) });
    }
    Ok(())
}

/// One more `event` of thread `id` (the running thread): a plain load, add and store,
/// once someone reads the counts or tracing is on (`trace::instrumented`); until then one
/// load and a branch.
#[inline(always)]
pub fn count(id: usize, event: Event) {
    if crate::trace::instrumented() {
        count_event(id, event);
    }
}

/// [`count`] once the counts are kept: out of line, so the check above is all the
/// uninstrumented paths carry.
#[cold]
#[inline(never)]
fn count_event(id: usize, event: Event) {
    if let Some(slot) = event_slot(id) {
        let counter = &slot[event as usize];
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// The events of thread slot `id` so far: IPC, notification and page-fault counts.
pub fn events(id: usize) -> [u64; 3] {
    event_slot(id).map_or([0; 3], |slot| {
        [0, 1, 2].map(|event| slot[event].load(Ordering::Relaxed))
    })
}

/// The next thread serial.
static NEXT_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

impl Thread {
    /// A new thread for slot `id` (whose event counts start again from zero).
    pub fn new(
        id: usize,
        name: &'static str,
        priority: Priority,
        stack: KernelStack,
        start: Start,
        process: Option<Arc<Process>>,
    ) -> Self {
        if let Some(slot) = event_slot(id) {
            for counter in slot {
                counter.store(0, Ordering::Relaxed);
            }
        }
        Self {
            name,
            priority,
            state: State::Ready,
            stack,
            context: Cpu::prepare_context(stack, thread_start, id),
            fpu: Cpu::initial_fpu_state(),
            start,
            process,
            wake_at: None,
            serial: NEXT_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            killed: false,
            cpu_ticks: 0,
            switches: 0,
            space_switches: 0,
            last_cpu: 0,
            affinity: super::sched::ALL_CPUS,
            fpu_cpu: NO_CPU,
            running: false,
            #[cfg(feature = "lockcheck")]
            on_cpu: None,
        }
    }
}

/// Where every thread begins, on its own kernel stack, with interrupts masked.
extern "C" fn thread_start(id: usize) -> ! {
    super::sched::after_switch();
    // The boot CPU's first thread has left the boot stack for good (the boot context never
    // resumes): the loader's memory, that stack included, can go. Not on another CPU: a
    // secondary's first thread may run while the boot CPU is still on that stack.
    if super::sched::current_cpu() == 0 {
        crate::mm::reclaim_boot_memory();
    }
    // Killed before it ever ran: it holds no IPC state yet.
    if super::sched::current_killed() {
        super::sched::exit_current();
    }
    match super::sched::start_of(id) {
        Some(Start::Kernel { entry, argument }) => {
            entry(argument);
            super::sched::exit_current()
        }
        Some(Start::User {
            entry,
            stack,
            argument,
        }) => enter_user(entry, stack, argument),
        None => super::sched::exit_current(),
    }
}

/// The first entry of a user thread into user mode (on its own kernel stack; its address
/// space is already active).
fn enter_user(entry: u64, stack: u64, argument: u64) -> ! {
    let kernel_stack = super::sched::current_stack().expect("a user thread has a kernel stack");
    let frame = kernel_stack.user_frame::<TrapFrame>();
    // SAFETY: the frame slot is the top of this thread's own kernel stack, which is mapped,
    // suitably aligned (the stack top is page-aligned and the frame size a multiple of 16)
    // and not used by anything above this function's own frame, which lies lower.
    unsafe {
        frame.write(<TrapFrame as arch_api::TrapFrame>::new_user(
            entry, stack, argument,
        ))
    };
    crate::stats::mark_user_entry();
    // SAFETY: the frame lies at the top of the current thread's kernel stack, was made by
    // `new_user`, and the scheduler activated the thread's address space before switching
    // to it.
    unsafe { Cpu::enter_user(frame) }
}
