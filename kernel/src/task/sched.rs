//! The scheduler: fixed priorities with round robin inside a priority
//! ([`kcore::runqueue`]), one run queue per CPU, timer-driven time slices, and an idle
//! thread per CPU that halts it.
//!
//! # What runs where
//! Every CPU that has joined ([`start`] on the boot CPU, [`start_secondary`] on the others)
//! runs threads from its own run queue. A thread may run on the CPUs of its affinity mask
//! ([`set_affinity`]; user threads start with their creator's, kernel threads with the CPU
//! that created them, the idle threads with their own). The balancer is simple and
//! documented here: a thread that becomes ready goes to the queue of the CPU it last ran
//! on, unless that CPU is busier (more threads queued or running) than the waking CPU and
//! its affinity allows the waking CPU; a CPU whose queue is empty pulls the
//! highest-priority thread it may run from another CPU's queue. Priorities hold per CPU: a
//! woken thread of higher priority than the thread running on its CPU preempts it — at once
//! through a reschedule IPI when that CPU is another one, at the next tick when it is this one.
//!
//! # The one lock, and the switch hand-off
//! All scheduler state — the thread table, every CPU's queue and current thread, the
//! sleepers — is under one lock (`sync::level::SCHEDULER`). A switch picks the next
//! thread under it and keeps holding it through `Cpu::switch`: the outgoing thread hands
//! the lock to the incoming one, which releases it first thing ([`after_switch`]). So no
//! other CPU ever sees a thread that is queued (or blocked) before its context is saved,
//! and a thread's kernel stack is in use on at most one CPU at a time (checked on every
//! switch in the lock-checking build). This is the one lock held across a switch.
//!
//! # FPU/SIMD registers on a switch
//! DESIGN.md §2's rule — a thread in user mode sees its own FP/SIMD state or zeros, never
//! another thread's — with no work that cannot change anything ([`fpu_switch`]). Kernel
//! code never touches the registers, so a kernel thread neither saves nor loads. A switch
//! between two user threads saves one and loads the other. A switch from a user thread to
//! a kernel thread saves it and records it as its CPU's holder (`PerCpu::fpu_holder`,
//! written only by that CPU's own switches, under the scheduler lock) and the CPU in the
//! thread (`Thread::fpu_cpu`); every switch to a user thread clears that thread's
//! `fpu_cpu`. So whenever a kernel thread hands a CPU to a user thread, the holder is the
//! user thread whose state the registers hold (the only way from user code to a kernel
//! thread is that save, and kernel threads leave the registers alone), and a thread whose
//! `fpu_cpu` is this CPU has not run anywhere since that save, so the registers still equal
//! its record: it is not loaded again. A user thread that blocks, lets the idle thread
//! run, and is woken on the same CPU comes back without a load.
//!
//! # Blocking without lost wake-ups
//! A thread that waits for an event marks itself [`State::Blocked`] under the lock of the
//! event's record ([`prepare_block`], taken after that lock: the IPC state, or the sleepers
//! here), then drops that lock and calls [`block`]. A waker that finds it before it has
//! switched away sees it blocked, may write its saved user frame (a waiting thread does not
//! touch it) and makes it ready: when the thread is still running on its CPU that only
//! cancels the block ([`State::Running`] again), and [`block`] then returns at once. A
//! killed user thread never blocks (it ends on its way back to user mode).
//!
//! # A signal's hand-off
//! A thread woken by a `signal` on the fast path, that would join this CPU's queue, is
//! made ready but left out of the queue as the CPU's readied thread (`PerCpu::readied`,
//! at most one; only this CPU's own system calls set it). The `wait` that usually follows
//! (`Handoff::block`) runs it directly when the queue holds nothing of its priority or
//! above, which is when the queue would have given it; otherwise it joins the queue's tail
//! first. Every other decision on this CPU puts it in the queue first: the reschedule
//! (yield, block, exit, preemption), the tick and the reschedule IPI, and a change of
//! affinity that moves it. So it runs no later than it would have from the queue, save
//! that threads queued here between its wake-up and that decision come before it; until
//! then other CPUs do not pull it.
//!
//! # Interrupts
//! The kernel runs with interrupts masked except inside `Platform::wait_for_interrupt`
//! and in user mode. So a kernel thread is preempted only where it waits for an interrupt,
//! a user thread anywhere, and no lock is ever held by a preempted thread. The timer tick
//! and the reschedule IPI may switch from inside the interrupt handler: the interrupted
//! thread's trap frame stays on its own kernel stack until it runs again, on any CPU.
//!
//! Sleeping threads wait in a deadline heap ([`kcore::deadlines`]) that the boot CPU's tick
//! drains: O(log n) for each due thread.
//!
//! # The thread table
//! Thread ids are small integers, reused: the table, the run queues' links (one per thread:
//! a thread is in at most one CPU's queue) and the sleepers' heap are indexed by them and
//! grow together, doubling, when [`spawn`] finds no free id. The bigger storage is
//! allocated with no lock held and swapped in under the scheduler lock (which moves the
//! entries without allocating); the old storage is freed after the lock is released. Free
//! ids wait on a stack (`free_ids`, with room for every id, so freeing never allocates):
//! taking and returning one is O(1). The limit that bites is the memory budget (a user
//! thread's record and kernel stack are charged to its process,
//! `crate::obj::budget`); [`MAX_THREAD_IDS`] bounds the representation only.
//!
//! Weak spots: the one scheduler lock is shared by every CPU (the IPC fast paths take it
//! once per hand-off); an idle CPU looks at most [`STEAL_SCAN`] threads of another joined
//! CPU's queue for one its affinity allows (a CPU that joins first takes the threads it may
//! run from the queues of CPUs that have not, `Scheduler::adopt_waiting`); killing a
//! process scans the thread table.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::Cpu;
use crate::mm::stacks;
use crate::obj::Process;
use crate::sync::{Lock, LockGuard, level};
use crate::task::thread::{FpuState, NO_CPU, Start, State, Thread};
use arch_api::{FpuSwitch, Ipi, IpiTarget, MAX_CPUS, Paging, Platform, SecondaryCpus, Threads};
use kcore::deadlines::{self, Deadlines};
use kcore::runqueue::{Priority, QueueLink, RunQueues};
use kcore::table;

/// Thread ids are below this (id 0 is never used: it means "no thread" to the arch crate).
/// A limit of the representation, not of memory (module docs).
pub use kcore::table::MAX_THREAD_IDS;
/// Thread ids served by the first table (it doubles from there).
const INITIAL_THREAD_IDS: usize = 64;
/// Threads of another CPU's queue an idle CPU looks at for one it may run.
pub const STEAL_SCAN: usize = 32;
/// Timer ticks a thread runs before an equal-priority thread gets the CPU.
pub const TIME_SLICE_TICKS: u32 = 2;
/// The priority of ordinary kernel and user threads.
pub const NORMAL: Priority = match Priority::new(8) {
    Some(priority) => priority,
    None => Priority::LOWEST,
};
/// An affinity mask with every CPU the kernel supports.
pub const ALL_CPUS: u64 = if MAX_CPUS >= 64 {
    u64::MAX
} else {
    (1 << MAX_CPUS) - 1
};

/// No thread ([`PerCpu::fpu_holder`] of a CPU that has loaded no user thread's state).
const NO_THREAD: usize = usize::MAX;

/// What the scheduler keeps for one CPU. Only that CPU picks from its queue's front and
/// changes its `current`; other CPUs add to its queue (wake-ups) and pull from it (an
/// idle CPU), all under the scheduler lock.
struct PerCpu {
    /// The thread running on this CPU (0 until it joins).
    current: usize,
    idle: usize,
    slice_left: u32,
    /// A thread that died here and still needs its stack freed (by the next thread to run
    /// here, once the switch away from it is complete).
    dead: Option<usize>,
    /// The user thread whose saved FPU/SIMD state this CPU's registers held when it last
    /// switched to a kernel thread ([`NO_THREAD`]: none yet; see [`fpu_switch`]).
    fpu_holder: usize,
    /// The thread a `signal` on this CPU made ready and left out of the run queue, for
    /// the `wait` that follows to run directly (0: none; module docs, "A signal's
    /// hand-off"). Always a user thread: only [`Handoff::make_ready`] sets it, for a thread
    /// [`Handoff::blocked_partner`] found blocked with a saved user frame.
    readied: usize,
    /// The record of `readied`, read only while `readied` is not 0 (null until a first
    /// thread is readied; clearing `readied` leaves it): boxed in the table, where it stays
    /// until the thread has run and ended, so it outlives its time here.
    readied_record: *mut Thread,
    /// The thread this CPU switched away from last (its stack is released in
    /// [`after_switch`]; lock-checking build).
    #[cfg(feature = "lockcheck")]
    previous: usize,
}

struct Scheduler {
    /// Indexed by thread id; as long as every other per-thread table here.
    threads: Vec<Option<Box<Thread>>>,
    /// Ids neither in use nor being filled by [`spawn`], lowest on top; room for every id.
    free_ids: Vec<u32>,
    /// Every CPU's run queue (queue `i`: CPU index `i`), over one link per thread.
    queues: RunQueues<MAX_CPUS>,
    /// Bit `i` set when CPU `i`'s queue may hold a thread another CPU may take (its
    /// affinity names another CPU, [`movable`]). Set when such a thread joins the queue
    /// ([`Scheduler::queue_on`]) or a queued thread's affinity grows to name another CPU
    /// ([`set_affinity`]); cleared only by [`Scheduler::stealable`], when it has looked at
    /// every thread of the queue and found none. So a clear bit means none, and an idle CPU
    /// skips that queue without looking.
    maybe_movable: u64,
    /// Threads blocked in `sleep`, by wake-up tick (the boot CPU's tick pops the due ones).
    sleepers: Deadlines,
    cpus: [PerCpu; MAX_CPUS],
    /// The CPUs that have joined (bit `i`: CPU index `i`).
    joined: u64,
    /// The switch counts of the threads freed so far (`Thread::switches`,
    /// `Thread::space_switches`), so [`switch_counts`] counts every switch since boot.
    retired_switches: (u64, u64),
}

/// Wraps the scheduler so it can live in a static.
struct Shared(Option<Scheduler>);

// SAFETY: the scheduler is only touched under `SCHEDULER`'s lock, with interrupts masked;
// the arch types inside (contexts, FPU state, address spaces) are plain register images and
// page-table roots, and a thread's are used by the one CPU that runs it (the switch
// hand-off, module docs).
unsafe impl Send for Shared {}

static SCHEDULER: Lock<Shared> = Lock::new(level::SCHEDULER, Shared(None));

const _: () = assert!(MAX_CPUS.is_power_of_two());

/// This CPU's index, below [`MAX_CPUS`] (the mask only tells the compiler so: indices are
/// below it). The scheduler runs on CPUs whose per-CPU block is set up.
#[inline(always)]
fn this_cpu() -> usize {
    Cpu::running_cpu() as usize & (MAX_CPUS - 1)
}

impl Scheduler {
    #[inline(always)]
    fn thread(&mut self, id: usize) -> Option<&mut Thread> {
        self.threads.get_mut(id)?.as_deref_mut()
    }

    /// [`Scheduler::thread`], to read.
    #[inline(always)]
    fn thread_ref(&self, id: usize) -> Option<&Thread> {
        self.threads.get(id)?.as_deref()
    }

    /// Mark `cpu`'s queue in [`Scheduler::maybe_movable`] when a thread of `affinity`
    /// queued there may be taken by another CPU.
    #[inline(always)]
    fn mark_if_movable(&mut self, cpu: usize, affinity: u64) {
        if movable(affinity, cpu) {
            self.maybe_movable |= 1 << cpu;
        }
    }

    /// Put thread `id` (in no queue; of `priority` and `affinity`) at the tail of `cpu`'s
    /// queue, marking the queue in [`Scheduler::maybe_movable`] when another CPU may take
    /// it.
    #[inline(always)]
    fn queue_on(&mut self, cpu: usize, id: usize, priority: Priority, affinity: u64) {
        self.mark_if_movable(cpu, affinity);
        // why: callers queue a thread that is in no queue, so enqueue cannot fail.
        let _ = self.queues.enqueue(cpu, id, priority);
    }

    /// Whether thread `id` is the running thread of some CPU.
    #[inline(always)]
    fn is_running(&self, id: usize) -> bool {
        self.thread_ref(id).is_some_and(|thread| thread.running)
    }

    /// Threads queued or running (not idle) on `cpu`: the balancer's measure of busy.
    fn load(&self, cpu: usize) -> usize {
        let state = &self.cpus[cpu];
        self.queues.len(cpu) + usize::from(state.current != state.idle && state.current != 0)
    }

    /// The CPU whose queue ready thread `id` joins (module docs: last CPU unless busier).
    fn place(&self, id: usize, waker: usize) -> usize {
        let Some(thread) = self.thread_ref(id) else {
            return waker;
        };
        let usable = thread.affinity & self.joined;
        let allowed = if usable != 0 {
            usable
        } else {
            // No CPU of its mask has joined yet: it waits in the first one's queue.
            thread.affinity
        };
        let last = thread.last_cpu as usize;
        let home = if allowed & (1 << last) != 0 {
            last
        } else {
            allowed.trailing_zeros() as usize
        };
        if home != waker && usable & (1 << waker) != 0 && self.load(waker) < self.load(home) {
            waker
        } else {
            home.min(MAX_CPUS - 1)
        }
    }

    /// Put ready thread `id` in a run queue (module docs); interrupt its CPU when it
    /// should run there now.
    #[inline(always)]
    fn enqueue(&mut self, id: usize) {
        if let Some(thread) = self.thread(id) {
            let (priority, last_cpu, affinity) =
                (thread.priority, thread.last_cpu, thread.affinity);
            self.enqueue_thread(id, priority, last_cpu, affinity);
        }
    }

    /// [`Scheduler::enqueue`] of thread `id`, whose priority, last CPU and affinity the
    /// caller read from its record. The common case inline: back on this CPU, where it
    /// last ran and may run (no other CPU to interrupt).
    #[inline(always)]
    fn enqueue_thread(&mut self, id: usize, priority: Priority, last_cpu: u32, affinity: u64) {
        let this = this_cpu();
        if last_cpu as usize == this && affinity & (1 << this) != 0 {
            self.queue_on(this, id, priority, affinity);
        } else {
            self.enqueue_from(id, this);
        }
    }

    /// [`Scheduler::enqueue`] from CPU `this` when the thread does not simply go back to it
    /// (its callers take that case themselves): placed by the balancer.
    #[inline(never)]
    fn enqueue_from(&mut self, id: usize, this: usize) {
        let cpu = self.place(id, this);
        let Some(thread) = self.thread(id) else {
            return;
        };
        let (priority, affinity) = (thread.priority, thread.affinity);
        thread.last_cpu = cpu as u32;
        self.queue_on(cpu, id, priority, affinity);
        let target = &mut self.cpus[cpu];
        if cpu == this || target.current == 0 {
            return;
        }
        let (current, idle) = (target.current, target.idle);
        let running = self
            .thread(current)
            .map_or(Priority::LOWEST, |thread| thread.priority);
        if current == idle || priority > running {
            Cpu::send_ipi(IpiTarget::Cpu(cpu as u32), Ipi::Reschedule);
        }
    }

    /// The next thread for `cpu`: its own queue first, else the highest-priority thread
    /// it may run from another CPU's queue.
    #[inline(always)]
    fn pick_next(&mut self, cpu: usize) -> Option<usize> {
        if let Some(next) = self.queues.pick_next(cpu) {
            return Some(next);
        }
        self.steal(cpu)
    }

    /// Take the thread [`Scheduler::stealable`] names out of its queue, for `cpu`.
    #[cold]
    #[inline(never)]
    fn steal(&mut self, cpu: usize) -> Option<usize> {
        let (from, id) = self.stealable(cpu)?;
        let _ = self.queues.remove(from, id);
        Some(id)
    }

    /// A thread in another CPU's queue that `cpu` may run: the highest priority first.
    /// Only the queues of CPUs that have joined are looked at (the threads queued on
    /// another's may not run on `cpu`, [`Scheduler::adopt_waiting`]), and of those only the
    /// ones [`Scheduler::maybe_movable`] marks; a look that sees a whole queue and no thread
    /// another CPU may take clears its mark.
    fn stealable(&mut self, cpu: usize) -> Option<(usize, usize)> {
        let mut best: Option<(Priority, usize, usize)> = None;
        let mut others = self.joined & self.maybe_movable & !(1 << cpu);
        while others != 0 {
            let other = others.trailing_zeros() as usize;
            others &= others - 1;
            let (mut seen, mut any_movable) = (0, false);
            let found = self.queues.iter(other).take(STEAL_SCAN).find(|&(id, _)| {
                seen += 1;
                let affinity = self.thread_ref(id).map_or(0, |thread| thread.affinity);
                any_movable |= movable(affinity, other);
                affinity & (1 << cpu) != 0
            });
            if found.is_none() && !any_movable && seen == self.queues.len(other) {
                self.maybe_movable &= !(1 << other);
            }
            if let Some((id, priority)) = found
                && best.is_none_or(|(top, ..)| priority > top)
            {
                best = Some((priority, other, id));
            }
        }
        best.map(|(_, other, id)| (other, id))
    }

    /// `cpu` has just joined: take into its queue every thread that waits in the queue of a
    /// CPU that has not joined and may run on `cpu`. A thread is queued on such a CPU only
    /// when no CPU of its affinity had joined ([`Scheduler::place`]), so after this no
    /// thread a joined CPU may run waits on a CPU that has not joined, and
    /// [`Scheduler::stealable`] need not look there. Runs once per CPU, at its start.
    fn adopt_waiting(&mut self, cpu: usize) {
        let mut waiting = (u64::MAX >> (64 - MAX_CPUS)) & !self.joined;
        while waiting != 0 {
            let other = waiting.trailing_zeros() as usize;
            waiting &= waiting - 1;
            loop {
                let found = self.queues.iter(other).find(|&(id, _)| {
                    self.thread_ref(id)
                        .is_some_and(|thread| thread.affinity & (1 << cpu) != 0)
                });
                let Some((id, priority)) = found else {
                    break;
                };
                let _ = self.queues.remove(other, id);
                let Some(thread) = self.thread(id) else {
                    break;
                };
                thread.last_cpu = cpu as u32;
                let affinity = thread.affinity;
                self.queue_on(cpu, id, priority, affinity);
            }
        }
    }

    /// Whether `cpu` has a thread it could run instead of its idle thread.
    fn has_work(&mut self, cpu: usize) -> bool {
        !self.queues.is_empty(cpu) || self.stealable(cpu).is_some()
    }

    /// The highest priority `cpu` could run next (its own queue, or what it may pull).
    fn best_ready(&mut self, cpu: usize) -> Option<Priority> {
        let own = self.queues.highest_priority(cpu);
        if own.is_some() {
            return own;
        }
        let (other, id) = self.stealable(cpu)?;
        self.queues.queued_priority(other, id)
    }

    /// Put the thread `cpu`'s `signal` left out of the run queue ([`PerCpu::readied`]), if
    /// any, at the tail of its priority in that CPU's queue.
    #[inline(always)]
    fn queue_readied(&mut self, cpu: usize) {
        let id = self.cpus[cpu].readied;
        if id != 0 {
            self.queue_readied_thread(cpu, id);
        }
    }

    #[cold]
    #[inline(never)]
    fn queue_readied_thread(&mut self, cpu: usize, id: usize) {
        self.cpus[cpu].readied = 0;
        if let Some(thread) = self.thread(id) {
            let (priority, affinity) = (thread.priority, thread.affinity);
            self.queue_on(cpu, id, priority, affinity);
        }
    }

    /// The thread `cpu`'s `signal` left out of the run queue, to run next on `cpu` when no
    /// thread of its priority or above is queued there (it would be picked first had it
    /// been queued); otherwise it joins the queue and `None` is returned.
    #[inline(always)]
    fn take_readied(&mut self, cpu: usize) -> Option<(usize, *mut Thread)> {
        let id = self.cpus[cpu].readied;
        if id == 0 {
            return None;
        }
        let record = self.cpus[cpu].readied_record;
        // SAFETY: `readied_record` is thread `id`'s boxed record, set with `readied` under
        // the scheduler lock (held by the caller); a readied thread has not run since, so
        // it has not ended and its record is in the table (`PerCpu::readied_record`).
        let priority = unsafe { (*record).priority };
        if self
            .queues
            .highest_priority(cpu)
            .is_some_and(|ready| ready >= priority)
        {
            self.queue_readied_thread(cpu, id);
            return None;
        }
        self.cpus[cpu].readied = 0;
        self.cpus[cpu].slice_left = TIME_SLICE_TICKS;
        Some((id, record))
    }
}

/// Why the current thread gives up the CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Still ready: back of its priority's queue.
    Yield,
    /// Waits for an event (marked blocked by [`prepare_block`] or [`sleep`]).
    Block,
    /// Finished.
    Exit,
}

/// Create the scheduler and the boot CPU's idle thread. Called once, after the heap
/// exists.
pub fn init() {
    if crate::trace::on() {
        AFTER_SWITCH.fetch_or(TRACE_SWITCHES, Ordering::Relaxed);
    }
    let mut shared = SCHEDULER.lock();
    assert!(shared.0.is_none(), "scheduler initialized twice");
    shared.0 = Some(Scheduler {
        threads: Vec::new(),
        free_ids: Vec::new(),
        queues: RunQueues::new(),
        maybe_movable: 0,
        sleepers: Deadlines::new(),
        cpus: core::array::from_fn(|_| PerCpu {
            current: 0,
            idle: 0,
            slice_left: TIME_SLICE_TICKS,
            dead: None,
            fpu_holder: NO_THREAD,
            readied: 0,
            readied_record: core::ptr::null_mut(),
            #[cfg(feature = "lockcheck")]
            previous: 0,
        }),
        joined: 0,
        retired_switches: (0, 0),
    });
    drop(shared);
    let cpu = this_cpu();
    let idle = spawn_with(
        "idle",
        Priority::LOWEST,
        Start::Kernel {
            entry: idle_loop,
            argument: cpu,
        },
        None,
        false,
        1 << cpu,
    )
    .expect("no memory for the idle thread");
    with(|scheduler| scheduler.cpus[cpu].idle = idle);
    INITIALIZED.store(1, Ordering::Release);
}

/// Set once [`init`] ran: the secondaries may join.
static INITIALIZED: AtomicU8 = AtomicU8::new(0);

/// Whether the scheduler exists (secondary CPUs join once it does).
pub fn initialized() -> bool {
    INITIALIZED.load(Ordering::Acquire) != 0
}

/// Wake every online secondary CPU and wait (boundedly) until each has joined the
/// scheduler, so they all run threads from the first one on. Called on the boot CPU after
/// [`init`], with no lock held.
pub fn gather_secondaries() {
    let online = (1..MAX_CPUS as u32)
        .filter(|&cpu| Cpu::is_online(cpu))
        .fold(0u64, |mask, cpu| mask | (1 << cpu));
    if online == 0 {
        return;
    }
    Cpu::send_ipi(IpiTarget::AllOthers, Ipi::Reschedule);
    for _ in 0..arch_api::IPI_WAIT_POLLS {
        if with(|scheduler| scheduler.joined & online == online) {
            return;
        }
        Cpu::service_ipi_work();
        Cpu::wait_pause();
    }
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

/// Create a ready kernel thread running `entry(argument)` on this CPU.
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

/// Create a thread; queue it when `ready`, else it waits (blocked) for [`start_thread`] or a
/// kill. A user thread may run where its creator may (all
/// CPUs when a kernel thread creates it), a kernel thread on this CPU.
pub fn spawn(
    name: &'static str,
    priority: Priority,
    start: Start,
    process: Option<Arc<Process>>,
    ready: bool,
) -> Result<usize, SpawnError> {
    let affinity = if process.is_some() {
        with(|scheduler| {
            let current = Cpu::current_thread();
            scheduler
                .thread(current)
                .filter(|thread| thread.process.is_some())
                .map_or(ALL_CPUS, |thread| thread.affinity)
        })
    } else {
        1 << this_cpu()
    };
    spawn_with(name, priority, start, process, ready, affinity)
}

fn spawn_with(
    name: &'static str,
    priority: Priority,
    start: Start,
    process: Option<Arc<Process>>,
    ready: bool,
    affinity: u64,
) -> Result<usize, SpawnError> {
    // Take a free id first (no other CPU takes it meanwhile), growing the tables when
    // there is none, without holding the lock across an allocation.
    let id = take_id()?;
    let unreserve = || with(|scheduler| scheduler.free_ids.push(id as u32));
    if crate::task::thread::prepare_events(id).is_err()
        || crate::mm::heap::reserve(core::mem::size_of::<Thread>()).is_err()
    {
        unreserve();
        return Err(SpawnError::OutOfHeap);
    }
    let Ok(stack) = stacks::allocate() else {
        unreserve();
        return Err(SpawnError::NoKernelStack);
    };
    let mut thread = Box::new(Thread::new(id, name, priority, stack, start, process));
    thread.affinity = affinity;
    if !ready {
        thread.state = State::Blocked;
    }
    thread.last_cpu = affinity.trailing_zeros().min(MAX_CPUS as u32 - 1);
    with(|scheduler| {
        scheduler.threads[id] = Some(thread);
        if ready {
            scheduler.enqueue(id);
        }
    });
    crate::trace::name(id, name);
    Ok(id)
}

/// A free thread id, taken: the lowest free one, after growing the tables when none is
/// free.
fn take_id() -> Result<usize, SpawnError> {
    loop {
        let taken = with(|scheduler| match scheduler.free_ids.pop() {
            Some(id) => Ok(id as usize),
            None => Err(scheduler.threads.len()),
        });
        match taken {
            Ok(id) => return Ok(id),
            Err(capacity) => grow(capacity)?,
        }
    }
}

/// The storage of the thread tables for `capacity` ids, allocated with no lock held.
struct Spare {
    threads: Vec<Option<Box<Thread>>>,
    free_ids: Vec<u32>,
    links: Vec<QueueLink>,
    sleepers: deadlines::Spare,
}

/// Grow the thread tables from `capacity` ids (as the caller saw them) to twice as many:
/// allocate with no lock held, then swap in under the lock unless another CPU grew them
/// meanwhile; free the storage left over after the lock is released.
fn grow(capacity: usize) -> Result<(), SpawnError> {
    let bigger = (capacity * 2).clamp(INITIAL_THREAD_IDS, MAX_THREAD_IDS);
    if bigger <= capacity {
        return Err(SpawnError::NoThreadSlot);
    }
    let spare = || -> Result<Spare, alloc::collections::TryReserveError> {
        Ok(Spare {
            threads: table::room(bigger)?,
            free_ids: table::room(bigger)?,
            links: table::room(bigger)?,
            sleepers: deadlines::Spare::room(bigger)?,
        })
    };
    let spare = spare().map_err(|_| SpawnError::OutOfHeap)?;
    let left_over = with(|scheduler| {
        if scheduler.threads.len() != capacity {
            return spare;
        }
        let Spare {
            threads,
            mut free_ids,
            links,
            sleepers,
        } = spare;
        // The new ids go below the free ones (which are taken first), lowest on top; id 0
        // is never handed out. At most `bigger - 1` ids are ever free: no allocation.
        free_ids.clear();
        // why: ids are below MAX_THREAD_IDS, which fits u32.
        free_ids.extend((capacity.max(1)..bigger).rev().map(|id| id as u32));
        free_ids.append(&mut scheduler.free_ids);
        let free_ids = core::mem::replace(&mut scheduler.free_ids, free_ids);
        Spare {
            threads: table::move_into(&mut scheduler.threads, threads, bigger, || None),
            free_ids,
            links: scheduler.queues.grow(links, bigger),
            sleepers: scheduler.sleepers.grow(sleepers, bigger),
        }
    });
    drop(left_over);
    Ok(())
}

/// Grow the thread tables until they serve at least `count` ids (the test build's
/// checker makes room before it takes its baseline).
#[cfg(feature = "testing")]
pub fn reserve_ids(count: usize) -> Result<(), SpawnError> {
    loop {
        let capacity = capacity();
        if capacity >= count.min(MAX_THREAD_IDS) {
            return Ok(());
        }
        grow(capacity)?;
    }
}

/// The bytes of each allocation the thread tables keep (they grow and never shrink), for
/// the invariant checker (test build), which counts them apart from the heap in use.
#[cfg(feature = "testing")]
pub fn table_storage(each: &mut dyn FnMut(usize)) {
    with(|scheduler| {
        each(scheduler.threads.capacity() * core::mem::size_of::<Option<Box<Thread>>>());
        each(scheduler.free_ids.capacity() * core::mem::size_of::<u32>());
        each(scheduler.queues.storage_bytes());
        for bytes in scheduler.sleepers.storage_bytes() {
            each(bytes);
        }
    });
}

/// Thread ids the tables serve now: every live thread's id is below it.
pub fn capacity() -> usize {
    with(|scheduler| scheduler.threads.len())
}

/// Start thread `id`, created not ready by [`spawn`].
pub fn start_thread(id: usize) {
    with(|scheduler| make_ready(scheduler, id));
}

/// Leave the boot stack for good: switch to the highest-priority ready thread of this CPU.
pub fn start() -> ! {
    let mut guard = SCHEDULER.lock();
    let scheduler = guard.0.as_mut().expect("scheduler not initialized");
    let cpu = this_cpu();
    scheduler.joined |= 1 << cpu;
    scheduler.adopt_waiting(cpu);
    let next = scheduler.pick_next(cpu).unwrap_or(scheduler.cpus[cpu].idle);
    enter(guard, next)
}

/// Join the scheduler on a secondary CPU, for good: create its idle thread (running
/// `idle_body(cpu)`, which loops on `Cpu::wait_for_interrupt` and [`idle_step`]) and
/// switch to it. Returns `false` (without joining) when there is no memory for it.
pub fn start_secondary(idle_body: fn(usize)) -> bool {
    let cpu = this_cpu();
    let Ok(idle) = spawn_with(
        "idle",
        Priority::LOWEST,
        Start::Kernel {
            entry: idle_body,
            argument: cpu,
        },
        None,
        false,
        1 << cpu,
    ) else {
        return false;
    };
    let mut guard = SCHEDULER.lock();
    let scheduler = guard.0.as_mut().expect("scheduler not initialized");
    scheduler.cpus[cpu].idle = idle;
    scheduler.joined |= 1 << cpu;
    scheduler.adopt_waiting(cpu);
    enter(guard, idle)
}

/// Leave the boot stack of this CPU for thread `next` (a kernel thread: the first thread
/// or an idle thread), handing it the scheduler lock.
fn enter(mut guard: LockGuard<'static, Shared>, next: usize) -> ! {
    let scheduler = guard.0.as_mut().expect("scheduler not initialized");
    let cpu = this_cpu();
    scheduler.cpus[cpu].current = next;
    #[cfg(feature = "lockcheck")]
    {
        scheduler.cpus[cpu].previous = 0;
    }
    let thread = scheduler.thread(next).expect("picked thread exists");
    thread.state = State::Running;
    thread.running = true;
    thread.last_cpu = cpu as u32;
    #[cfg(feature = "lockcheck")]
    {
        assert!(thread.on_cpu.is_none(), "a kernel stack in use on two CPUs");
        thread.on_cpu = Some(cpu as u32);
    }
    debug_assert!(
        thread.process.is_none(),
        "a CPU enters a kernel thread first"
    );
    let (to_context, to_stack) = (&raw const thread.context, thread.stack);
    let record: *mut Thread = thread;
    Cpu::set_current_thread(next, record as usize);
    let mut boot_context = crate::task::thread::Context::default();
    guard.hand_over();
    // SAFETY: interrupts are masked (the kernel runs masked); the context was made by
    // `prepare_context` for the thread whose kernel stack is `to_stack`; the thread is boxed
    // in the table and not freed while it runs, and the scheduler lock, handed to it, is
    // held until it runs. The boot context saved into `boot_context` is never resumed.
    unsafe {
        Cpu::switch(
            &mut boot_context,
            &*to_context,
            FpuSwitch {
                save: None,
                load: None,
            },
            to_stack,
        )
    };
    unreachable!("the boot context is never resumed");
}

/// The running thread's id (0 before [`start`]).
#[inline(always)]
pub fn current() -> usize {
    Cpu::current_thread()
}

/// The index of the CPU running the caller.
#[inline(always)]
pub fn current_cpu() -> u32 {
    Cpu::cpu_index()
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
    with(|scheduler| scheduler.thread(current())?.process.clone())
}

/// Run `body` on the running thread's saved FPU state (`None` before [`start`]).
pub fn with_current_fpu<R>(
    body: impl FnOnce(&mut crate::task::thread::FpuState) -> R,
) -> Option<R> {
    with(|scheduler| {
        scheduler
            .thread(current())
            .map(|thread| body(&mut thread.fpu))
    })
}

/// The kernel stack of the running thread.
pub fn current_stack() -> Option<arch_api::KernelStack> {
    with(|scheduler| scheduler.thread(current()).map(|thread| thread.stack))
}

/// Run `body` on the saved user trap frame of thread `id`: a user thread that is not
/// running and is inside the kernel (blocked in a system call), so its frame lies at the
/// top of its kernel stack. For the hostile-resume test: the kernel itself
/// writes a bad instruction pointer there. `None` when `id` is no such thread.
/// A blocked thread may still be switching away on its CPU: it does not touch the frame.
pub fn with_saved_user_frame<R>(
    id: usize,
    body: impl FnOnce(&mut crate::task::thread::TrapFrame) -> R,
) -> Option<R> {
    use arch_api::TrapFrame as _;
    with(|scheduler| {
        let thread = scheduler.thread(id)?;
        if thread.process.is_none() || thread.state != State::Blocked {
            return None;
        }
        let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
        // SAFETY: the slot at the top of a thread's kernel stack holds its saved user
        // frame while it is inside the kernel from user mode (the `Threads` contract); the
        // stack is mapped and aligned, and a blocked thread does not touch it (module docs)
        // while the scheduler lock is held, so nothing else touches the frame meanwhile.
        let frame = unsafe { &mut *frame };
        if !frame.is_from_user() {
            return None;
        }
        Some(body(frame))
    })
}

/// Let equal-priority threads run; returns when this thread is picked again.
pub fn yield_now() {
    reschedule(SCHEDULER.lock(), Reason::Yield);
}

/// Mark the running thread blocked, before it drops the lock of the record a waker will
/// find it in (module docs). A killed user thread is not marked (it ends instead). Call
/// [`block`] next, with no lock held.
pub fn prepare_block() {
    with(mark_blocked);
}

fn mark_blocked(scheduler: &mut Scheduler) {
    if let Some(thread) = scheduler.thread(current())
        && !(thread.killed && thread.process.is_some())
    {
        thread.state = State::Blocked;
    }
}

/// Switch away until a waker makes this thread ready, if it is still marked blocked
/// ([`prepare_block`]); at once when it was woken (or killed) meanwhile.
pub fn block() {
    reschedule(SCHEDULER.lock(), Reason::Block);
}

/// A thread as `ps` shows it: (name, state, priority, CPU ticks, process).
pub type Description = (&'static str, State, Priority, u64, Option<Arc<Process>>);

/// What `ps` and `top` show of thread slot `id` beyond [`describe`].
#[derive(Clone, Copy)]
pub struct Activity {
    pub switches: u64,
    pub last_cpu: u32,
}

/// Thread switches since boot, and those of them that activated a process's address space
/// (the `Switches` and `SpaceSwitches` event counters): each switch counts on the thread
/// switched to (no shared counter on the switch path), so this sums every thread's count
/// and those of the threads already freed. It walks the thread table under the scheduler
/// lock: only `bench_counter` (test builds) and `system_info`'s CPU record (which needs
/// the system capability) read it.
pub fn switch_counts() -> (u64, u64) {
    with(|scheduler| {
        scheduler.threads.iter().flatten().fold(
            scheduler.retired_switches,
            |(switches, space_switches), thread| {
                (
                    switches + thread.switches,
                    space_switches + thread.space_switches,
                )
            },
        )
    })
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
    let mut guard = SCHEDULER.lock();
    let scheduler = guard.0.as_mut().expect("scheduler not initialized");
    let id = current();
    if let Some(thread) = scheduler.thread(id)
        && !(thread.killed && thread.process.is_some())
    {
        thread.wake_at = Some(until);
        thread.state = State::Blocked;
        scheduler.sleepers.insert(id, until);
    }
    reschedule(guard, Reason::Block);
}

/// Make blocked thread `id` ready: queue it, or, when it has not switched away yet, cancel
/// its block (module docs). Nothing happens to a thread that is not blocked.
fn make_ready(scheduler: &mut Scheduler, id: usize) {
    let Some(thread) = scheduler.thread(id) else {
        return;
    };
    let record: *mut Thread = thread;
    // SAFETY: `record` is thread `id`'s record, just looked up in the locked table.
    unsafe { make_ready_record(scheduler, id, record) };
}

/// [`make_ready`] of thread `id`, whose record the caller already looked up.
///
/// # Safety
/// `record` is thread `id`'s boxed record in `scheduler`'s table, which the caller has
/// locked; no other reference to it is live.
#[inline(always)]
unsafe fn make_ready_record(scheduler: &mut Scheduler, id: usize, record: *mut Thread) {
    // SAFETY: the caller's contract.
    let thread = unsafe { &mut *record };
    if thread.state != State::Blocked {
        return;
    }
    let running = thread.running;
    let slept = thread.wake_at.take().is_some();
    thread.state = if running {
        State::Running
    } else {
        State::Ready
    };
    if slept {
        scheduler.sleepers.remove(id);
    }
    if !running {
        let (priority, last_cpu, affinity) = (thread.priority, thread.last_cpu, thread.affinity);
        scheduler.enqueue_thread(id, priority, last_cpu, affinity);
    }
}

/// Like [`wake`], after `write` edited the thread's saved user frame (an IPC result),
/// under one lock. Nothing happens to a thread that is not blocked in a system call.
pub fn wake_with(id: usize, write: impl FnOnce(&mut crate::task::thread::TrapFrame)) {
    with(|scheduler| {
        if let Some((frame, _)) = saved_user_frame(scheduler, id) {
            // SAFETY: see `saved_user_frame`; the lock is held for the whole edit.
            write(unsafe { &mut *frame });
            make_ready(scheduler, id);
        }
    });
}

/// The running thread's id and process, under one lock.
pub fn current_and_process() -> (usize, Option<Arc<Process>>) {
    let current = current();
    with(|scheduler| {
        (
            current,
            scheduler
                .thread(current)
                .and_then(|thread| thread.process.clone()),
        )
    })
}

/// The saved user frame of blocked user thread `id`, checked to come from user mode. Valid
/// while the scheduler lock is held and the thread stays blocked. The thread may still be
/// switching away on its CPU (module docs): it does not touch its frame meanwhile.
#[inline(always)]
fn saved_user_frame(
    scheduler: &mut Scheduler,
    id: usize,
) -> Option<(*mut crate::task::thread::TrapFrame, *mut Thread)> {
    use arch_api::TrapFrame as _;
    let thread = scheduler.thread(id)?;
    if thread.process.is_none() || thread.state != State::Blocked {
        return None;
    }
    let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
    // SAFETY: the slot at the top of a blocked user thread's kernel stack holds its saved
    // user frame (the `Threads` contract); the stack is mapped and aligned, and a blocked
    // thread does not touch it while the scheduler lock is held.
    let from_user = unsafe { (*frame).is_from_user() };
    from_user.then_some((frame, thread as *mut Thread))
}

/// The live process with id `pid` (one with a thread in the table): one pass over the
/// table under one lock.
pub fn find_process(pid: u64) -> Option<Arc<Process>> {
    with(|scheduler| {
        scheduler
            .threads
            .iter()
            .flatten()
            .find_map(|thread| thread.process.as_ref().filter(|process| process.id == pid))
            .cloned()
    })
}

/// The process of thread `id`, if it is a user thread.
pub fn process_of(id: usize) -> Option<Arc<Process>> {
    with(|scheduler| scheduler.thread(id)?.process.clone())
}

/// End the running thread. Its stack is freed by the next thread to run on this CPU.
pub fn exit_current() -> ! {
    crate::trace::event_here(crate::trace::Kind::Exit, 0, 0);
    reschedule(SCHEDULER.lock(), Reason::Exit);
    unreachable!("a dead thread was resumed");
}

/// The timer upcall's scheduling part, on every CPU (interrupts masked): on the boot CPU,
/// wake sleepers whose tick has come; on each, end the running thread's time slice when it
/// is used up, a higher priority became ready, or its affinity no longer allows this CPU.
pub fn timer_tick(now: u64) {
    let mut guard = SCHEDULER.lock();
    let Some(scheduler) = guard.0.as_mut() else {
        return;
    };
    let cpu = this_cpu();
    let current = scheduler.cpus[cpu].current;
    if current == 0 {
        return;
    }
    // A thread a `signal` readied here joins the queue: the preemption test sees it and
    // other CPUs may pull it.
    scheduler.queue_readied(cpu);
    if cpu == 0 {
        while let Some(id) = scheduler.sleepers.pop_due(now) {
            // `make_ready` clears the thread's `wake_at` (the heap entry is gone already).
            make_ready(scheduler, id);
        }
    }
    if let Some(thread) = scheduler.thread(current) {
        thread.cpu_ticks += 1;
    }
    let state = &mut scheduler.cpus[cpu];
    state.slice_left = state.slice_left.saturating_sub(1);
    let slice_over = state.slice_left == 0;
    if should_preempt(scheduler, cpu, slice_over) {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
        reschedule(guard, Reason::Yield);
    }
}

/// Whether the running thread of `cpu` should give it up now: the idle thread with work
/// waiting, a higher priority ready, an equal one when the slice is over, or an affinity
/// that no longer allows this CPU.
fn should_preempt(scheduler: &mut Scheduler, cpu: usize, slice_over: bool) -> bool {
    let (current, idle) = (scheduler.cpus[cpu].current, scheduler.cpus[cpu].idle);
    if current == idle {
        return scheduler.has_work(cpu);
    }
    let Some(thread) = scheduler.thread(current) else {
        return false;
    };
    if thread.affinity & (1 << cpu) == 0 {
        return true;
    }
    let priority = thread.priority;
    scheduler
        .best_ready(cpu)
        .is_some_and(|ready| ready > priority || (slice_over && ready == priority))
}

/// The reschedule IPI's work (interrupts masked): another CPU queued a thread here that
/// should run now, or changed the running thread's affinity.
pub fn reschedule_interrupt() {
    let mut guard = SCHEDULER.lock();
    let Some(scheduler) = guard.0.as_mut() else {
        return;
    };
    let cpu = this_cpu();
    if scheduler.cpus[cpu].current == 0 {
        return;
    }
    scheduler.queue_readied(cpu);
    if should_preempt(scheduler, cpu, false) {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
        reschedule(guard, Reason::Yield);
    }
}

/// The scheduler behind `guard`, as a pointer that outlives the borrow (so the guard can
/// be handed over while it is used).
#[inline(always)]
fn scheduler_ptr(guard: &mut LockGuard<'static, Shared>) -> *mut Scheduler {
    guard.0.as_mut().expect("scheduler not initialized")
}

/// Give this CPU to the next thread (see the module docs), taking `guard` over.
fn reschedule(mut guard: LockGuard<'static, Shared>, reason: Reason) {
    let pointer = scheduler_ptr(&mut guard);
    // SAFETY: the scheduler lives in a static and `guard` holds its lock until it is handed
    // over in `switch_locked`, after the last use of this reference.
    let scheduler = unsafe { &mut *pointer };
    let cpu = this_cpu();
    // Every decision below sees a thread a `signal` readied here in the queue.
    scheduler.queue_readied(cpu);
    let current = scheduler.cpus[cpu].current;
    let idle = scheduler.cpus[cpu].idle;
    let Some(thread) = scheduler.thread(current) else {
        return;
    };
    let from: *mut Thread = thread;
    let (priority, affinity) = (thread.priority, thread.affinity);
    let allowed_here = affinity & (1 << cpu) != 0;
    match reason {
        // Woken (or killed) since it was marked: it goes on.
        Reason::Block if thread.state != State::Blocked => return,
        // A yield with no other thread ready at this priority or above keeps the CPU: no
        // queue work, no state change.
        Reason::Yield
            if current != idle
                && allowed_here
                && scheduler
                    .queues
                    .highest_priority(cpu)
                    .is_none_or(|ready| ready < priority) =>
        {
            scheduler.cpus[cpu].slice_left = TIME_SLICE_TICKS;
            return;
        }
        _ => {}
    }
    // SAFETY: `from` is the running thread's record, boxed in the table under the held
    // lock; no other reference to it is live across these writes.
    let thread = unsafe { &mut *from };
    match reason {
        Reason::Yield => thread.state = State::Ready,
        Reason::Block => {}
        Reason::Exit => thread.state = State::Dead,
    }
    if reason == Reason::Yield && current != idle {
        if allowed_here {
            // `enqueue_thread`'s common case, written out: it runs here and may stay, so
            // it goes to the back of this CPU's queue (no other CPU to interrupt).
            scheduler.queue_on(cpu, current, priority, affinity);
        } else {
            scheduler.enqueue_from(current, cpu);
        }
    }
    let (next, to) = pick_for(scheduler, cpu);
    if next == current {
        // SAFETY: as above.
        unsafe { (*from).state = State::Running };
        return;
    }
    if reason == Reason::Exit {
        scheduler.cpus[cpu].dead = Some(current);
        AFTER_SWITCH.fetch_or(DEAD_PENDING, Ordering::Relaxed);
    }
    // SAFETY: `current` runs here, `from` is its record; `next` was just picked from this
    // CPU's queue or is its idle thread (so runs nowhere), not `current`, `to` its record;
    // the lock is held.
    unsafe { switch_locked(guard, scheduler, cpu, current, next, from, to, false, false) };
}

/// Whether a thread of `affinity` queued on `cpu` may be taken by another CPU
/// ([`Scheduler::maybe_movable`]).
#[inline(always)]
fn movable(affinity: u64, cpu: usize) -> bool {
    affinity & !(1 << cpu) != 0
}

/// This CPU's next thread, taken from its queue (its idle thread when none is ready), with
/// a new time slice, and its record.
#[inline(always)]
fn pick_for(scheduler: &mut Scheduler, cpu: usize) -> (usize, *mut Thread) {
    let next = scheduler.pick_next(cpu).unwrap_or(scheduler.cpus[cpu].idle);
    scheduler.cpus[cpu].slice_left = TIME_SLICE_TICKS;
    let Some(to) = scheduler.thread(next) else {
        unreachable!("a picked thread is in the table");
    };
    (next, to)
}

/// Make `next` the running thread of `cpu` in place of `current` (whose state the caller
/// set) and switch to it, handing the scheduler lock over (module docs): activate `next`'s
/// address space (when `check_space`, only if it differs from `current`'s), switch kernel
/// stacks and FPU state ([`fpu_switch`]; `both_user`: the caller knows both are user
/// threads). Returns when `current` runs again, the lock released, with what
/// [`after_switch`] returned.
///
/// # Safety
/// `current` is the running thread of this CPU `cpu` and `next` a thread of the table that
/// is not running anywhere, ready or blocked, whose context was made by `prepare_context`
/// or saved by an earlier switch; `guard` is the scheduler lock; interrupts are masked.
/// `scheduler` is the one `guard` locks; `from` and `to` are the records of `current` and
/// `next` in its table; with `both_user`, both are user threads.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the switch path passes what it looked up"
)]
unsafe fn switch_locked(
    guard: LockGuard<'static, Shared>,
    scheduler: &mut Scheduler,
    cpu: usize,
    current: usize,
    next: usize,
    from: *mut Thread,
    to: *mut Thread,
    check_space: bool,
    both_user: bool,
) -> bool {
    scheduler.cpus[cpu].current = next;
    #[cfg(feature = "lockcheck")]
    {
        scheduler.cpus[cpu].previous = current;
    }
    #[cfg(not(feature = "lockcheck"))]
    let _ = current;
    // The running thread's record (`lock_for_handoff` reads it back).
    Cpu::set_current_thread(next, to as usize);
    // SAFETY: both threads are boxed in the table, which the held lock protects; they are
    // distinct (`next` is not running, `current` is).
    let (from, to) = unsafe { (&mut *from, &mut *to) };
    to.state = State::Running;
    from.running = false;
    to.running = true;
    to.switches += 1;
    to.last_cpu = cpu as u32;
    #[cfg(feature = "lockcheck")]
    {
        assert!(
            to.on_cpu.is_none(),
            "the kernel stack of thread {next} is in use on another CPU"
        );
        to.on_cpu = Some(cpu as u32);
    }
    debug_assert!(!both_user || (from.process.is_some() && to.process.is_some()));
    if both_user {
        // Two user threads (the IPC hand-off): both have a process, so the test is one
        // comparison, and `to` has a space to activate when it differs.
        // SAFETY: with `both_user`, both are user threads (the caller's contract), and a
        // user thread's record names its process from its creation until it is freed.
        let (from_process, to_process) = unsafe {
            (
                from.process.as_ref().unwrap_unchecked(),
                to.process.as_ref().unwrap_unchecked(),
            )
        };
        if !Arc::ptr_eq(from_process, to_process) {
            to.space_switches += 1;
            // SAFETY: `to` is a thread of `to_process` in the table, whose lock is held;
            // `cpu` is this CPU (the caller's contract).
            unsafe { to_process.activate_for_switch(cpu as u32) };
        }
    } else if !(check_space
        && match (&from.process, &to.process) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        })
    {
        match &to.process {
            Some(process) => {
                to.space_switches += 1;
                // SAFETY: `to` is a thread of `process` in the table, whose lock is held;
                // `cpu` is this CPU (the caller's contract).
                unsafe { process.activate_for_switch(cpu as u32) };
            }
            // A kernel thread runs on the kernel-only space, so no CPU keeps a process's
            // tables loaded once none of its threads runs there (they are freed with the
            // process, on any CPU).
            None if from.process.is_some() => crate::obj::process::activate_kernel_only(),
            None => {}
        }
    }
    let fpu = if both_user {
        // Two user threads (the IPC hand-off): save and load, and `to` runs, so no CPU's
        // registers keep a claim to its state.
        to.fpu_cpu = NO_CPU;
        FpuSwitch {
            save: Some(&mut from.fpu),
            load: Some(&to.fpu),
        }
    } else {
        fpu_switch(
            &mut scheduler.cpus[cpu].fpu_holder,
            cpu,
            current,
            next,
            Side {
                user: from.process.is_some(),
                fpu_cpu: &mut from.fpu_cpu,
                fpu: &mut from.fpu,
            },
            Side {
                user: to.process.is_some(),
                fpu_cpu: &mut to.fpu_cpu,
                fpu: &to.fpu,
            },
        )
    };
    guard.hand_over();
    // SAFETY: interrupts are masked (kernel invariant); `to.context` was made by
    // `prepare_context` or saved by an earlier switch, for the thread whose kernel stack
    // is `to.stack`; the scheduler lock, handed to `to`, keeps every other CPU from
    // touching either thread until the switch is complete; `fpu_switch` keeps the FPU
    // rule.
    unsafe { Cpu::switch(&mut from.context, &to.context, fpu, to.stack) };
    after_switch()
}

/// One thread of a switch, as [`fpu_switch`] sees it: borrowed field by field, so the
/// switch keeps its own borrows of the threads' contexts.
struct Side<'a, F> {
    /// It has a process (a user thread).
    user: bool,
    /// Its `Thread::fpu_cpu`.
    fpu_cpu: &'a mut u32,
    /// Its `Thread::fpu`.
    fpu: F,
}

/// What switching from `from` (thread `current`) to `to` (thread `next`) on CPU `cpu` does
/// with the FPU/SIMD registers, with `holder` (the CPU's [`PerCpu::fpu_holder`]) and the
/// threads' `fpu_cpu` kept up to date: DESIGN.md §2's rule with no work that cannot change
/// anything (the module docs say why it holds). Two user threads: save and load, as the
/// rule needs. To a kernel thread: save a user thread's state and record the registers as
/// holding it. From a kernel thread to a user thread: load, unless the registers still
/// hold its saved state.
#[inline(always)]
fn fpu_switch<'a>(
    holder: &mut usize,
    cpu: usize,
    current: usize,
    next: usize,
    from: Side<'_, &'a mut FpuState>,
    to: Side<'_, &'a FpuState>,
) -> FpuSwitch<'a, FpuState> {
    if !to.user {
        if !from.user {
            return FpuSwitch {
                save: None,
                load: None,
            };
        }
        *holder = current;
        *from.fpu_cpu = cpu as u32;
        return FpuSwitch {
            save: Some(from.fpu),
            load: None,
        };
    }
    // It runs now, so the registers stop matching its record: no CPU keeps a claim.
    let last_saved_here = core::mem::replace(to.fpu_cpu, NO_CPU) == cpu as u32;
    if from.user {
        FpuSwitch {
            save: Some(from.fpu),
            load: Some(to.fpu),
        }
    } else if *holder == next && last_saved_here {
        FpuSwitch {
            save: None,
            load: None,
        }
    } else {
        FpuSwitch {
            save: None,
            load: Some(to.fpu),
        }
    }
}

/// IPC hand-off: let `write` put the message in the saved user frame of the blocked thread
/// `next`, and, when the running thread is still marked blocked ([`prepare_block`]), run
/// `next` in its place at once, without the run queue — on this CPU, when `next` may run
/// here and has switched away on its own CPU; else `next` is made ready where it may run
/// and the running thread blocks. The address space is switched only when `next` is in
/// another process. When `next` is not a blocked user thread, `write` is not run. Returns
/// when the running thread is woken again (at once when it was not blocked).
pub fn switch_to(next: usize, write: impl FnOnce(&mut crate::task::thread::TrapFrame)) {
    let mut guard = SCHEDULER.lock();
    let pointer = scheduler_ptr(&mut guard);
    // SAFETY: as in `reschedule`: the lock is held until it is handed over or dropped,
    // after the last use.
    let scheduler = unsafe { &mut *pointer };
    let cpu = this_cpu();
    let current = scheduler.cpus[cpu].current;
    if let Some((frame, _)) = saved_user_frame(scheduler, next) {
        // SAFETY: see `saved_user_frame`; the lock is held for the whole edit.
        write(unsafe { &mut *frame });
        let from: Option<*mut Thread> = scheduler
            .thread(current)
            .filter(|thread| thread.state == State::Blocked)
            .map(|thread| thread as *mut Thread);
        let to: Option<*mut Thread> = scheduler
            .thread(next)
            .filter(|thread| thread.affinity & (1 << cpu) != 0 && !thread.running)
            .map(|thread| thread as *mut Thread);
        if let (Some(from), Some(to)) = (from, to) {
            // SAFETY: `current` runs here, `next` is blocked and not running anywhere, its
            // context saved by the switch that blocked it; `from` and `to` are their
            // records; the lock is held.
            unsafe { switch_locked(guard, scheduler, cpu, current, next, from, to, true, false) };
            return;
        }
        make_ready(scheduler, next);
    }
    reschedule(guard, Reason::Block);
}
/// What [`after_switch`] has to do or tell beyond releasing the lock, so it costs one load
/// when there is nothing: [`TRACE_SWITCHES`] (set at start-up when the kernel is traced),
/// [`DEAD_PENDING`] (some CPU's `dead` holds a thread; set under the scheduler lock when a
/// thread exits, cleared under it by the CPU that reaps the last one) and [`KILLS_PENDING`]
/// (set exactly while [`KILLED_THREADS`] is not 0: both change together, under the
/// scheduler lock).
static AFTER_SWITCH: AtomicU8 = AtomicU8::new(0);
/// A CPU has a dead thread to reap.
const DEAD_PENDING: u8 = 1;
/// Every switch is recorded in the kernel trace, by the thread that gains the CPU (so the
/// switch path itself carries no trace check).
const TRACE_SWITCHES: u8 = 2;
/// Some thread is marked killed and not yet freed.
const KILLS_PENDING: u8 = 4;

/// Run by every thread right after it gains the CPU (after `Cpu::switch` returns, and first
/// thing in a new thread): release the scheduler lock the previous thread handed over,
/// record the switch when tracing, and free the thread that died here before it.
///
/// Returns whether anything was pending. When not, no thread was marked killed and not yet
/// freed when the lock was handed over, so this thread was not killed while it was switched
/// out: a caller about to return to user mode may skip [`current_killed`]. A kill that comes
/// from now on finds the thread running and reaches it by the reschedule IPI ([`kill`]).
#[inline(always)]
pub fn after_switch() -> bool {
    #[cfg(feature = "lockcheck")]
    {
        // SAFETY: the thread this CPU switched away from handed it the scheduler lock
        // (`switch_locked`, `enter`), so the lock is held here and nothing else touches the
        // scheduler until it is released below.
        let shared = unsafe { &mut *SCHEDULER.data_ptr() };
        if let Some(scheduler) = shared.0.as_mut() {
            let previous = scheduler.cpus[this_cpu()].previous;
            if let Some(thread) = scheduler.thread(previous) {
                thread.on_cpu = None;
            }
        }
    }
    // SAFETY: as above: this CPU holds the lock, handed over by the switch, and nothing
    // here uses the scheduler after the release.
    unsafe { SCHEDULER.release_handed_over() };
    // Relaxed: the bits that matter to the caller (`KILLS_PENDING`) change under the
    // scheduler lock, which this CPU held since they last changed (the switch to this
    // thread was made under it), as in `current_killed`.
    if AFTER_SWITCH.load(Ordering::Relaxed) != 0 {
        after_switch_work();
        return true;
    }
    false
}

/// The slow part of [`after_switch`]: record the switch when tracing; free the thread
/// that died on this CPU, if one did.
#[cold]
#[inline(never)]
fn after_switch_work() {
    let work = AFTER_SWITCH.load(Ordering::Relaxed);
    if work & TRACE_SWITCHES != 0 {
        crate::trace::switched_to(Cpu::current_thread());
    }
    if work & DEAD_PENDING == 0 {
        return;
    }
    let cpu = this_cpu();
    let dead = with(|scheduler| {
        let dead = scheduler.cpus[cpu].dead.take();
        if scheduler.cpus.iter().all(|state| state.dead.is_none()) {
            AFTER_SWITCH.fetch_and(!DEAD_PENDING, Ordering::Relaxed);
        }
        dead
    });
    if let Some(dead) = dead {
        free_dead(dead);
    }
}

/// Free dead thread `id`'s stack and its share of its process.
fn free_dead(id: usize) {
    let dead = with(|scheduler| {
        scheduler.sleepers.remove(id);
        let dead = scheduler.threads.get_mut(id)?.take();
        if let Some(thread) = &dead {
            if thread.killed {
                uncount_killed();
            }
            let (switches, space_switches) = &mut scheduler.retired_switches;
            *switches += thread.switches;
            *space_switches += thread.space_switches;
            // The stack has room for every id (`grow`): no allocation.
            scheduler.free_ids.push(id as u32);
        }
        dead
    });
    if let Some(thread) = dead {
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

/// The boot CPU's idle thread: halt until an interrupt; [`idle_step`] after each.
fn idle_loop(_: usize) {
    loop {
        Cpu::wait_for_interrupt();
        idle_step();
    }
}

/// An idle thread's check after an interrupt: give the CPU up when this CPU has a thread
/// to run (its own queue, or one it may pull from another CPU's).
pub fn idle_step() {
    let mut guard = SCHEDULER.lock();
    let Some(scheduler) = guard.0.as_mut() else {
        return;
    };
    if scheduler.has_work(this_cpu()) {
        reschedule(guard, Reason::Yield);
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

/// The running thread's priority, as the ceiling of what it may give: the lowest for a
/// killed thread, whose own priority was raised only to let it end ([`mark_killed`]).
pub fn current_priority() -> Priority {
    with(|scheduler| {
        scheduler
            .thread(current())
            .filter(|thread| !thread.killed)
            .map_or(Priority::LOWEST, |thread| thread.priority)
    })
}

/// Mark a thread killed and make it runnable if it was blocked, so it reaches a point where
/// it ends (see [`current_killed`]).
/// A thread running on another CPU gets a reschedule IPI, so it ends before it runs
/// another user instruction.
///
/// A killed thread takes the highest priority (re-queued at it when it is queued): it runs
/// only its way out of the kernel, and a thread that keeps its CPU at any priority must not
/// hold back the end of another, and with it the release of its process. Its priority
/// cannot be changed afterwards ([`set_priority`] refuses a killed thread).
fn mark_killed(scheduler: &mut Scheduler, id: usize) {
    if let Some(thread) = scheduler.thread(id)
        && !thread.killed
    {
        thread.killed = true;
        thread.priority = Priority::HIGHEST;
        count_killed();
        if let Some(queue) = scheduler.queues.queue_of(id) {
            let _ = scheduler.queues.remove(queue, id);
            scheduler.enqueue(id);
        }
    }
    make_ready(scheduler, id);
    let cpu = scheduler.thread(id).map_or(0, |thread| thread.last_cpu);
    if scheduler.is_running(id) && cpu as usize != this_cpu() {
        Cpu::send_ipi(IpiTarget::Cpu(cpu), Ipi::Reschedule);
    }
}

/// Threads marked killed and not yet freed: while 0, [`current_killed`] (on every system
/// call return) takes no lock. Changed only under the scheduler lock, with
/// [`KILLS_PENDING`].
static KILLED_THREADS: AtomicU64 = AtomicU64::new(0);

/// One more thread marked killed. Under the scheduler lock.
fn count_killed() {
    if KILLED_THREADS.fetch_add(1, Ordering::AcqRel) == 0 {
        AFTER_SWITCH.fetch_or(KILLS_PENDING, Ordering::Relaxed);
    }
}

/// A thread marked killed was freed. Under the scheduler lock.
fn uncount_killed() {
    if KILLED_THREADS.fetch_sub(1, Ordering::AcqRel) == 1 {
        AFTER_SWITCH.fetch_and(!KILLS_PENDING, Ordering::Relaxed);
    }
}

/// Kill thread `(id, serial)`: `false` when it no longer exists. The running thread ends
/// on its way back to user mode ([`current_killed`]); one running on another CPU has left
/// user mode for good when this returns.
pub fn kill(id: usize, serial: u64) -> bool {
    let live = with(|scheduler| {
        let live = scheduler.thread(id).is_some_and(|thread| {
            thread.serial == serial && thread.state != State::Dead && !thread.killed
        });
        if live {
            mark_killed(scheduler, id);
        }
        live
    });
    if live {
        wait_until_stopped(id, serial);
    }
    live
}

/// Wait (boundedly, no lock held between looks) until killed thread `(id, serial)` no
/// longer runs on another CPU: the reschedule IPI took it out of user mode and it ended, or
/// it is in the kernel, which it leaves only by ending.
fn wait_until_stopped(id: usize, serial: u64) {
    let this = this_cpu();
    for _ in 0..arch_api::IPI_WAIT_POLLS {
        let running_elsewhere = with(|scheduler| {
            let running = scheduler.is_running(id);
            scheduler.thread(id).is_some_and(|thread| {
                thread.serial == serial && running && thread.last_cpu as usize != this
            })
        });
        if !running_elsewhere {
            return;
        }
        // The victim may be waiting for this CPU's answer to a TLB request.
        Cpu::service_ipi_work();
        Cpu::wait_pause();
    }
}

/// Kill every thread of `process`.
/// Those running on other CPUs have left user mode for good when this returns.
pub fn kill_process(process: &Arc<Process>) {
    let member = |thread: &Thread| {
        thread.state != State::Dead
            && thread
                .process
                .as_ref()
                .is_some_and(|owner| Arc::ptr_eq(owner, process))
    };
    with(|scheduler| {
        for id in 1..scheduler.threads.len() {
            if scheduler.thread(id).is_some_and(|thread| member(thread)) {
                mark_killed(scheduler, id);
            }
        }
    });
    // Then wait for those running elsewhere, a batch at a time (no allocation).
    const BATCH: usize = 64;
    let mut next = 1;
    loop {
        let mut running = [(0usize, 0u64); BATCH];
        let mut count = 0;
        let end = with(|scheduler| {
            let end = scheduler.threads.len();
            while next < end && count < BATCH {
                let id = next;
                next += 1;
                let serial = scheduler
                    .thread(id)
                    .filter(|thread| thread.running && member(thread))
                    .map(|thread| thread.serial);
                if let Some(serial) = serial {
                    running[count] = (id, serial);
                    count += 1;
                }
            }
            end
        });
        for &(id, serial) in &running[..count] {
            wait_until_stopped(id, serial);
        }
        if next >= end {
            return;
        }
    }
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
        let (cpu, affinity) = (thread.last_cpu as usize, thread.affinity);
        if scheduler.queues.contains(cpu, id) {
            let _ = scheduler.queues.remove(cpu, id);
            scheduler.queue_on(cpu, id, priority, affinity);
        }
        true
    })
}

/// Why [`set_affinity`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityError {
    /// No CPU of the mask is online.
    NoOnlineCpu,
    /// The thread no longer exists.
    Ended,
}

/// Let thread `(id, serial)` run only on the CPUs of `mask` (bit `i`: CPU index `i`;
/// CPUs that do not run threads are dropped from it). A ready thread queued elsewhere moves
/// now; one running elsewhere is interrupted and moves; the running thread moves before
/// this returns.
pub fn set_affinity(id: usize, serial: u64, mask: u64) -> Result<(), AffinityError> {
    let mut guard = SCHEDULER.lock();
    let scheduler = guard.0.as_mut().expect("scheduler not initialized");
    // The CPUs that run threads: online ones that have joined the scheduler.
    let online = mask & scheduler.joined;
    if online == 0 {
        return Err(AffinityError::NoOnlineCpu);
    }
    let this = this_cpu();
    let running = scheduler.is_running(id);
    let Some(thread) = scheduler.thread(id) else {
        return Err(AffinityError::Ended);
    };
    if thread.serial != serial || thread.state == State::Dead || thread.killed {
        return Err(AffinityError::Ended);
    }
    thread.affinity = online;
    let cpu = thread.last_cpu as usize;
    // Queued, its queue is marked when another CPU may now take it.
    if let Some(queue) = scheduler.queues.queue_of(id) {
        scheduler.mark_if_movable(queue, online);
    }
    if online & (1 << cpu) != 0 {
        return Ok(());
    }
    if scheduler.cpus[cpu].readied == id {
        scheduler.queue_readied(cpu);
    }
    if scheduler.queues.contains(cpu, id) {
        let _ = scheduler.queues.remove(cpu, id);
        scheduler.enqueue(id);
    } else if running && cpu != this {
        Cpu::send_ipi(IpiTarget::Cpu(cpu as u32), Ipi::Reschedule);
    } else if running {
        reschedule(guard, Reason::Yield);
    }
    Ok(())
}

/// If the running user thread was killed, end it now. Called where it is about to return
/// to user mode and holds nothing on its kernel stack: after a system call, after a timer
/// preemption, before a new thread's first entry.
pub fn current_killed() -> bool {
    // Relaxed: a kill of this thread is counted under the scheduler lock, before the
    // killer releases it; the thread ran since under that lock (it was switched to, or
    // the killer's reschedule IPI came after it), so the count is seen here. The lock
    // taken below orders the rest.
    if KILLED_THREADS.load(Ordering::Relaxed) == 0 {
        return false;
    }
    // Also called from the timer upcall, which runs before the scheduler exists (the
    // `boot` scenario): no scheduler, no killed thread.
    let current = current();
    SCHEDULER.lock().0.as_mut().is_some_and(|scheduler| {
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

/// Every thread slot, under the scheduler lock (`None`: empty), into `out` (cleared
/// first): `false`, with `out` left empty, when the table has more slots than `out` has
/// room for (no allocation under the lock; see [`capacity`]).
#[cfg(feature = "testing")]
pub fn snapshot(out: &mut Vec<Option<ThreadSnapshot>>) -> bool {
    out.clear();
    with(|scheduler| {
        if scheduler.threads.len() > out.capacity() {
            return false;
        }
        out.extend((0..scheduler.threads.len()).map(|id| {
            let queued = scheduler.queues.queue_of(id).is_some()
                || scheduler.cpus.iter().any(|cpu| cpu.readied == id);
            let current = scheduler.cpus.iter().any(|cpu| cpu.current == id);
            let idle = scheduler.cpus.iter().any(|cpu| cpu.idle == id);
            scheduler.threads[id]
                .as_deref()
                .map(|thread| ThreadSnapshot {
                    state: thread.state,
                    killed: thread.killed,
                    user: thread.process.is_some(),
                    queued,
                    current,
                    idle,
                    priority: thread.priority.level(),
                    name: thread.name,
                })
        }));
        true
    })
}

/// The first CPU whose queue holds a thread another CPU may take while its mark in
/// [`Scheduler::maybe_movable`] is clear (so idle CPUs would not look there), under the
/// scheduler lock; `None` when no mark is missing.
#[cfg(feature = "testing")]
pub fn movable_mark_missing() -> Option<usize> {
    with(|scheduler| {
        (0..MAX_CPUS).find(|&cpu| {
            scheduler.maybe_movable & (1 << cpu) == 0
                && scheduler.queues.iter(cpu).any(|(id, _)| {
                    scheduler
                        .thread_ref(id)
                        .is_some_and(|thread| movable(thread.affinity, cpu))
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
        if scheduler.is_running(id) {
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
// hand-off. It takes it after the IPC lock and before the capability table's, as the lock
// order says (`crate::sync`).

/// The scheduler, locked for an IPC hand-off ([`lock_for_handoff`]).
///
/// It looks each thread up at most once: the running thread's record is the one this CPU's
/// switch to it recorded (`arch_api::Threads::current_record`, no table lookup), the
/// partner's is found in [`Handoff::blocked_partner`]. Records are boxed, so they stay where
/// they are while the lock is held.
pub struct Handoff {
    guard: LockGuard<'static, Shared>,
    /// The scheduler `guard` locks (it exists: see [`lock_for_handoff`]).
    scheduler: *mut Scheduler,
    /// The running thread, read once.
    current: usize,
    /// The running thread's record.
    record: *mut Thread,
}

/// A blocked user thread that a hand-off may run, found by [`Handoff::blocked_partner`] under
/// the lock of that hand-off: its id, its boxed record and its saved user frame. Valid
/// while that lock is held, and until [`Handoff::switch_to_partner`] or
/// [`Handoff::make_ready`] takes it.
#[derive(Clone, Copy)]
pub struct Partner {
    id: usize,
    record: *mut Thread,
    frame: *mut crate::task::thread::TrapFrame,
}

impl Partner {
    /// The thread's id.
    #[inline(always)]
    pub fn id(&self) -> usize {
        self.id
    }

    /// Its saved user frame (the message or the results go there).
    #[inline(always)]
    pub fn frame(&self) -> *mut crate::task::thread::TrapFrame {
        self.frame
    }
}

/// Lock the scheduler for an IPC hand-off.
///
/// # Safety
/// Called during a system call (by its handler, on the calling thread's kernel stack): the
/// running thread is then a user thread that this CPU's scheduler switched to, so this CPU
/// has a current record ([`Handoff::current_process`] relies on it too).
#[inline(always)]
pub unsafe fn lock_for_handoff() -> Handoff {
    let mut guard = SCHEDULER.lock();
    // The running thread's record, as the switch to it recorded it (`switch_locked`,
    // `enter`): boxed in the table, where it stays while the thread runs.
    let record = Cpu::current_record() as *mut Thread;
    debug_assert!(
        !record.is_null(),
        "a system call runs on a thread the scheduler runs"
    );
    let current = current();
    // SAFETY: a CPU has a current record only once the scheduler switched to a thread
    // there (and one is running: the caller's contract), so the scheduler exists (it is
    // made once, by `init`, and never taken down).
    let scheduler: *mut Scheduler = unsafe { guard.0.as_mut().unwrap_unchecked() };
    Handoff {
        guard,
        scheduler,
        current,
        record,
    }
}

impl Handoff {
    #[inline(always)]
    fn scheduler(&mut self) -> &mut Scheduler {
        // SAFETY: `scheduler` points at the scheduler in its static, whose lock `guard`
        // holds for as long as `self` lives; `&mut self` makes this borrow the only one.
        unsafe { &mut *self.scheduler }
    }

    /// The running thread's id.
    #[inline(always)]
    pub fn current(&mut self) -> usize {
        self.current
    }

    /// The running thread's process (no reference taken: valid while the lock is held).
    #[inline(always)]
    pub fn current_process(&mut self) -> &Process {
        // SAFETY: `record` is the running thread's boxed record in the table, which the
        // held lock keeps in place; `&mut self` makes this borrow the only one.
        let process = unsafe { (*self.record).process.as_deref() };
        debug_assert!(process.is_some(), "a system call runs on a user thread");
        // SAFETY: the running thread makes a system call (`lock_for_handoff`'s contract),
        // so it is a user thread, and a user thread's record names its process from its
        // creation until it is freed.
        unsafe { process.unwrap_unchecked() }
    }

    /// Thread `id`, which the IPC state names (queued on an endpoint or a notification, or
    /// in a reply slot), with its saved user frame, when it is blocked: a thread this
    /// hand-off may run.
    ///
    /// Only a system call puts a thread in the IPC state, and a thread leaves it before its
    /// id is freed (`proc::exit_current`), so `id` is a user thread whose kernel stack's top
    /// slot holds the frame of that system call: unlike [`saved_user_frame`], this does not
    /// test for a process or a frame from user mode (debug builds assert both).
    #[inline(always)]
    pub fn blocked_partner(&mut self, id: usize) -> Option<Partner> {
        let thread = self.scheduler().thread(id)?;
        if thread.state != State::Blocked {
            return None;
        }
        debug_assert!(
            thread.process.is_some(),
            "the IPC state names user threads only"
        );
        let frame = thread.stack.user_frame::<crate::task::thread::TrapFrame>();
        debug_assert!(
            {
                use arch_api::TrapFrame as _;
                // SAFETY: as in `saved_user_frame`: the top slot of a blocked user thread's
                // kernel stack, mapped and aligned, not touched by the blocked thread.
                unsafe { (*frame).is_from_user() }
            },
            "a thread in the IPC state blocked in a system call"
        );
        Some(Partner {
            id,
            record: thread,
            frame,
        })
    }

    /// Make `partner` ready (after its frame was written). When it would join this CPU's
    /// queue, and no other thread waits out of the queue here, it is left out of the queue
    /// as this CPU's readied thread ([`PerCpu::readied`], module docs).
    #[inline(always)]
    pub fn make_ready(&mut self, partner: Partner) {
        let Partner { id, record, .. } = partner;
        let cpu = this_cpu();
        let scheduler = self.scheduler();
        // SAFETY: `blocked_partner` found this record for `id` under the lock, still held;
        // no other reference to it is live.
        let thread = unsafe { &mut *record };
        // Blocked: `blocked_partner` checked it under this lock.
        debug_assert!(thread.state == State::Blocked);
        if scheduler.cpus[cpu].readied == 0
            && !thread.running
            && thread.wake_at.is_none()
            && thread.last_cpu as usize == cpu
            && thread.affinity & (1 << cpu) != 0
        {
            thread.state = State::Ready;
            scheduler.cpus[cpu].readied = id;
            scheduler.cpus[cpu].readied_record = record;
            return;
        }
        // SAFETY: as above.
        unsafe { make_ready_record(scheduler, id, record) };
    }

    /// Block the running user thread (queued on its event under a lock taken before this
    /// one and already dropped) and run this CPU's next ready thread, all under the lock
    /// already held: [`prepare_block`] and [`block`] without taking the lock again or
    /// looking the running thread up. A killed thread does not block: this returns at once
    /// (it ends on its way back to user mode). Returns when the thread is woken: `false`
    /// when it cannot have been killed meanwhile ([`after_switch`]), else `true` (the
    /// caller checks, [`current_killed`]).
    #[inline(always)]
    pub fn block(self) -> bool {
        let cpu = this_cpu();
        let current = self.current;
        // SAFETY: as in `Handoff::scheduler`; `self.guard` is handed over or dropped only
        // after the last use of this reference.
        let scheduler = unsafe { &mut *self.scheduler };
        // SAFETY: `record` is the running thread's boxed record (as in `switch`).
        let from = unsafe { &mut *self.record };
        debug_assert!(from.process.is_some(), "a hand-off runs for a system call");
        if from.killed {
            return true;
        }
        from.state = State::Blocked;
        let from: *mut Thread = from;
        // The thread this CPU's `signal` readied runs directly when it is the one the
        // queue would give. The running thread is in no queue, so the pick is another
        // thread (or idle).
        let (next, to) = match scheduler.take_readied(cpu) {
            Some(readied) => readied,
            None => pick_for(scheduler, cpu),
        };
        // SAFETY: `current` runs here, `from` is its record; `next` was just picked from
        // this CPU's queue or is its idle thread (so runs nowhere), `to` its record; the
        // lock is held.
        unsafe {
            switch_locked(
                self.guard, scheduler, cpu, current, next, from, to, true, false,
            )
        }
    }

    /// Block the running thread and run `partner` (found by [`Handoff::blocked_partner`]
    /// under this same lock) in its place: no run queue, when the partner may run on this
    /// CPU and has switched away on its own; else the partner is made ready where it may
    /// run and the running thread blocks ([`handoff_fallback`]). A killed running thread
    /// does not block: the partner is made ready and this returns. The address space is
    /// activated only when the partner is in another process. Returns when the running
    /// thread is woken again. Both threads are user threads: the running one came from a
    /// system call (`current_process` found its process) and the partner has a saved user
    /// frame ([`Handoff::blocked_partner`]). Returns as [`Handoff::block`] does.
    #[inline(always)]
    pub fn switch_to_partner(self, partner: Partner) -> bool {
        let cpu = this_cpu();
        let (current, next) = (self.current, partner.id);
        let (from, to) = (self.record, partner.record);
        // SAFETY: `record` is the running thread's boxed record, `partner.record` the
        // partner's (found by `blocked_partner` under the lock, still held); they are distinct
        // (the partner is blocked, the running thread runs), and no other reference to
        // either is live.
        let (from_thread, to_thread) = unsafe { (&mut *from, &*to) };
        if from_thread.killed || to_thread.affinity & (1 << cpu) == 0 || to_thread.running {
            handoff_fallback(self.guard, self.scheduler, from, next);
            return true;
        }
        from_thread.state = State::Blocked;
        // SAFETY: as in `Handoff::scheduler`; `self.guard` is handed over only after the
        // last use of this reference.
        let scheduler = unsafe { &mut *self.scheduler };
        // SAFETY: `current` runs here; `next` is a blocked thread of the table (checked by
        // `blocked_partner` under this lock) that is not running anywhere, its context saved
        // by the switch that blocked it; `from` and `to` are their records; the lock is
        // held; both are user threads.
        unsafe {
            switch_locked(
                self.guard, scheduler, cpu, current, next, from, to, true, true,
            )
        }
    }
}

/// The hand-off's partner `next` cannot run here now (its affinity, or it is still switching
/// away on another CPU), or the running thread `from` was killed: make `next` ready where it
/// may run and, unless killed, block the running thread ([`Handoff::switch_to_partner`]).
/// Inlined: a hand-off to a thread on another CPU takes this path every time.
#[inline(always)]
fn handoff_fallback(
    guard: LockGuard<'static, Shared>,
    scheduler: *mut Scheduler,
    from: *mut Thread,
    next: usize,
) {
    // SAFETY: `scheduler` is the scheduler `guard` locks, `from` the running thread's boxed
    // record in its table (as in `Handoff`); no other reference to either is live.
    let (scheduler, from) = unsafe { (&mut *scheduler, &mut *from) };
    make_ready(scheduler, next);
    if from.killed {
        return;
    }
    from.state = State::Blocked;
    reschedule(guard, Reason::Block);
}
