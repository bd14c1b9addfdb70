//! Kernel locks and the one lock order.
//!
//! Every kernel lock is a [`Lock`] with a [`Level`]. Locks are taken in increasing level
//! order: a thread holding a lock of level *n* may take only locks of a level above *n*.
//! The levels follow the layers (DESIGN.md §9): a higher layer's lock is taken first and
//! so has the lower number, and nothing that runs under a lock calls up into a higher
//! layer. The whole order, in one table:
//!
//! | level | lock | layer |
//! | --- | --- | --- |
//! | 10 | `ipc state` (queue links, reply slots, blocked-on records, IPC buffers; through its key, endpoint queues and notification words) | `ipc/` |
//! | 12 | `irq bindings` (interrupt line → notification) | `irq/` |
//! | 14 | `log target` (the notification the kernel log signals) | `syscall/` |
//! | 20 | `scheduler` (thread table, run queue) | `task/` |
//! | 30 | `capability table` (one per process) | `obj/` |
//! | 32 | `pending work` (endpoints and notifications to close, notifications to signal) | `obj/` |
//! | 40 | `process record` (death binding, charge, fault) | `obj/` |
//! | 42 | `address space` (one per process) | `obj/` |
//! | 44 | `process pages` (one per process) | `obj/` |
//! | 46 | `kernel-only space` | `obj/` |
//! | 50 | `kernel stacks` | `mm/` |
//! | 52 | `frames` | `mm/` |
//! | 54 | `kernel tables report` | `mm/` |
//! | 60 | `heap` | `mm/` |
//! | 70 | `console` (the UART writer) | `log` |
//! | 72 | `log ring` | `log` |
//!
//! # Interrupts and SMP
//! A lock is interrupt-safe because of where interrupts are on, not because [`Lock`]
//! masks them: every CPU runs kernel code with interrupts masked except inside
//! `Platform::wait_for_interrupt` (which holds no lock: it is called from idle loops and
//! sleeping waits outside any guard) and in user mode. So while a CPU holds a lock no
//! interrupt handler runs on it, no handler can spin on a lock its own CPU holds, and no
//! lock is held by a preempted thread; another CPU that wants the lock spins until the
//! holder, which cannot be interrupted, releases it. The IPI handlers take no lock at
//! all. The lock-order checker checks this rule on every take: a lock taken with
//! interrupts enabled panics (`lock taken with interrupts enabled`).
//! Masking in [`Lock::lock`] itself would cost every lock (the IPC fast paths included)
//! a flags save and restore for a state the kernel is already in.
//!
//! # Spinning answers TLB requests
//! A CPU that changes an address space's tables (unmap, protect, destroy) sends the other
//! CPUs with that space active a TLB request and waits for their answers, often with locks
//! held (the address-space lock among them). A target runs with interrupts masked, so it
//! cannot take the request's IPI while it spins on one of those locks, and the two would
//! wait for each other forever. So the contended path of [`Lock::lock`] answers this
//! CPU's pending TLB requests between attempts (`SecondaryCpus::service_ipi_work`: one
//! load when there are none, no lock taken), as the sender's own wait does
//! (`arch_api::tlb`, "Requests and deadlock freedom"). The uncontended path is one atomic
//! compare-and-swap, as before.
//!
//! The one lock held across a switch is the scheduler's (`task::sched`): taken by the
//! outgoing thread, handed over with the switch ([`LockGuard::hand_over`]) and released on
//! the same CPU by the incoming thread first thing, so no other CPU sees either thread
//! before the outgoing one's context is saved.
//!
//! # The lock-order checker
//! With the `lockcheck` feature (every QEMU test run turns it on), each CPU keeps the
//! locks it holds in its own record (indexed by the CPU's dense index, read through its
//! per-CPU block; `arch_api::MAX_CPUS` records); taking a lock whose level is at or below
//! the highest level its CPU holds panics and names both locks. Without the feature a
//! [`Lock`] is a plain spin lock. Holding is tracked per CPU, not per thread: a lock taken
//! by one thread and released after a switch by the next one on the same CPU is still one
//! CPU's lock (the switch hand-off).

use core::ops::{Deref, DerefMut};

/// A lock's place in the order: its number and its name for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub rank: u8,
    pub name: &'static str,
}

impl Level {
    const fn new(rank: u8, name: &'static str) -> Self {
        Self { rank, name }
    }
}

/// The levels of every kernel lock (see the table in the module docs).
pub mod level {
    use super::Level;

    pub const IPC: Level = Level::new(10, "ipc state");
    pub const IRQ_BINDINGS: Level = Level::new(12, "irq bindings");
    pub const LOG_TARGET: Level = Level::new(14, "log target");
    pub const SCHEDULER: Level = Level::new(20, "scheduler");
    pub const CAP_TABLE: Level = Level::new(30, "capability table");
    pub const PENDING: Level = Level::new(32, "pending work");
    pub const PROCESS: Level = Level::new(40, "process record");
    pub const ADDRESS_SPACE: Level = Level::new(42, "address space");
    pub const PROCESS_PAGES: Level = Level::new(44, "process pages");
    pub const KERNEL_ONLY: Level = Level::new(46, "kernel-only space");
    pub const STACKS: Level = Level::new(50, "kernel stacks");
    pub const FRAMES: Level = Level::new(52, "frames");
    pub const TABLES_REPORT: Level = Level::new(54, "kernel tables report");
    pub const HEAP: Level = Level::new(60, "heap");
    pub const CONSOLE: Level = Level::new(70, "console");
    pub const LOG_RING: Level = Level::new(72, "log ring");

    /// Two locks for the checker's own test (`test=lock-order`): a lock taken while a
    /// higher one is held must end in the checker's report.
    #[cfg(feature = "testing")]
    pub const TEST_OUTER: Level = Level::new(80, "test outer");
    #[cfg(feature = "testing")]
    pub const TEST_INNER: Level = Level::new(81, "test inner");
    /// The lock the `tlb` scenario holds while it destroys an address space another CPU
    /// spins on it with: below the heap, which destroying a space takes.
    #[cfg(feature = "testing")]
    pub const TEST_TLB: Level = Level::new(56, "test tlb");
}

/// Work that code running under a lock leaves for later: the system-call exit and the
/// timer tick check one word (one load when it is clear) and do the work with no lock held.
/// Each flag is raised by its owner after the work is recorded and cleared by whoever
/// takes it; a raised flag with nothing left to do costs one empty check.
pub mod deferred {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// `obj::pending` holds work (endpoints and notifications to close, death notifications to signal).
    pub const PENDING: u8 = 1 << 0;
    /// Lines went to the kernel log's ring since its reader was last signalled.
    pub const LOG: u8 = 1 << 1;

    static FLAGS: AtomicU8 = AtomicU8::new(0);

    /// Raise `flag` (after the work it stands for is recorded).
    #[inline(always)]
    pub fn raise(flag: u8) {
        FLAGS.fetch_or(flag, Ordering::Release);
    }

    /// Whether any flag is raised (one load).
    #[inline(always)]
    pub fn any() -> bool {
        FLAGS.load(Ordering::Acquire) != 0
    }

    /// Whether `flag` is raised.
    #[inline(always)]
    pub fn is_raised(flag: u8) -> bool {
        FLAGS.load(Ordering::Acquire) & flag != 0
    }

    /// Clear `flag`; whether it was raised.
    #[inline(always)]
    pub fn take(flag: u8) -> bool {
        is_raised(flag) && FLAGS.fetch_and(!flag, Ordering::AcqRel) & flag != 0
    }

    /// Clear `flag` (its owner found nothing left to do).
    #[inline(always)]
    pub fn clear(flag: u8) {
        FLAGS.fetch_and(!flag, Ordering::AcqRel);
    }
}

/// A spin lock with a place in the lock order.
pub struct Lock<T> {
    #[cfg(feature = "lockcheck")]
    level: Level,
    inner: spin::mutex::SpinMutex<T>,
}

/// Proof that a [`Lock`] is held; releases it when dropped.
pub struct LockGuard<'a, T> {
    guard: spin::mutex::SpinMutexGuard<'a, T>,
    #[cfg(feature = "lockcheck")]
    level: Level,
}

impl<T> Lock<T> {
    pub const fn new(level: Level, value: T) -> Self {
        #[cfg(not(feature = "lockcheck"))]
        let _ = level;
        Self {
            #[cfg(feature = "lockcheck")]
            level,
            inner: spin::mutex::SpinMutex::new(value),
        }
    }

    /// Take the lock, spinning while another CPU holds it (and answering this CPU's TLB
    /// requests meanwhile: see the module docs).
    #[inline(always)]
    pub fn lock(&self) -> LockGuard<'_, T> {
        #[cfg(feature = "lockcheck")]
        checker::acquire(self.level);
        let guard = match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        };
        LockGuard {
            guard,
            #[cfg(feature = "lockcheck")]
            level: self.level,
        }
    }

    /// The spin of [`Lock::lock`]: try again until the lock is free, answering TLB
    /// requests between tries.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> spin::mutex::SpinMutexGuard<'_, T> {
        loop {
            <crate::Cpu as arch_api::SecondaryCpus>::service_ipi_work();
            if let Some(guard) = self.inner.try_lock() {
                return guard;
            }
            core::hint::spin_loop();
        }
    }

    /// Take the lock if it is free. Never waits, so it cannot deadlock: the order is
    /// not checked (reports from inside the scheduler use it), but the lock is tracked.
    #[inline(always)]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        let guard = self.inner.try_lock()?;
        #[cfg(feature = "lockcheck")]
        checker::record(self.level);
        Some(LockGuard {
            guard,
            #[cfg(feature = "lockcheck")]
            level: self.level,
        })
    }
}

impl<T> Lock<T> {
    /// The protected value, for the holder of a guard given up with
    /// [`LockGuard::hand_over`] (the scheduler's switch hand-off; the lock-checking build
    /// reads it there).
    #[cfg(feature = "lockcheck")]
    #[inline(always)]
    pub fn data_ptr(&self) -> *mut T {
        self.inner.as_mut_ptr()
    }

    /// Release a lock whose guard was given up with [`LockGuard::hand_over`].
    ///
    /// # Safety
    /// This CPU holds the lock through such a guard, and no reference to the protected
    /// value made from [`Lock::data_ptr`] is used after this call.
    #[inline(always)]
    pub unsafe fn release_handed_over(&self) {
        #[cfg(feature = "lockcheck")]
        checker::release(self.level);
        // SAFETY: the caller's contract: this CPU holds the lock and nothing uses the value.
        unsafe { self.inner.force_unlock() };
    }
}

impl<T> LockGuard<'_, T> {
    /// Give the guard up without releasing the lock: the thread this CPU switches to
    /// releases it ([`Lock::release_handed_over`]). The lock-order record stays with this
    /// CPU until then.
    #[inline(always)]
    pub fn hand_over(self) {
        core::mem::forget(self);
    }
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(feature = "lockcheck")]
impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        checker::release(self.level);
    }
}

/// Acquisitions (`lock` and `try_lock`, every CPU together) of the lock level at `index`
/// of `abi::bench::LOCK_LEVELS` since boot; `None` past the last level. Counted by the
/// lock-order checker only, so the builds without it (the one `cargo xtask bench` times
/// among them) run no counting code.
#[cfg(feature = "lockcheck")]
pub fn acquisitions(index: usize) -> Option<u64> {
    checker::acquisitions(index)
}

#[cfg(feature = "lockcheck")]
mod checker {
    //! The held-lock records, one per CPU. Only the CPU itself touches its record, with
    //! interrupts masked (see the module docs), so plain atomics with relaxed ordering
    //! are enough; they are atomics only so the statics need no `unsafe`.

    use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

    use arch_api::{Platform, SecondaryCpus};

    use super::Level;
    use crate::Cpu;

    /// Locks one CPU may hold at once.
    const DEPTH: usize = 16;
    /// The CPUs the checker keeps records for.
    const CPUS: usize = arch_api::MAX_CPUS;

    struct Held {
        count: AtomicUsize,
        ranks: [AtomicU8; DEPTH],
        names: [AtomicUsize; DEPTH],
    }

    static HELD: [Held; CPUS] = [const {
        Held {
            count: AtomicUsize::new(0),
            ranks: [const { AtomicU8::new(0) }; DEPTH],
            names: [const { AtomicUsize::new(0) }; DEPTH],
        }
    }; CPUS];

    /// Names are kept as indices into this table of every level.
    const LEVELS: &[Level] = &[
        super::level::IPC,
        super::level::IRQ_BINDINGS,
        super::level::LOG_TARGET,
        super::level::SCHEDULER,
        super::level::CAP_TABLE,
        super::level::PENDING,
        super::level::PROCESS,
        super::level::ADDRESS_SPACE,
        super::level::PROCESS_PAGES,
        super::level::KERNEL_ONLY,
        super::level::STACKS,
        super::level::FRAMES,
        super::level::TABLES_REPORT,
        super::level::HEAP,
        super::level::CONSOLE,
        super::level::LOG_RING,
        #[cfg(feature = "testing")]
        super::level::TEST_OUTER,
        #[cfg(feature = "testing")]
        super::level::TEST_INNER,
        #[cfg(feature = "testing")]
        super::level::TEST_TLB,
    ];

    /// Acquisitions per CPU and level (index into [`LEVELS`]); each CPU adds to its own
    /// row only, with interrupts masked.
    static ACQUIRED: [[AtomicU64; LEVELS.len()]; CPUS] =
        [const { [const { AtomicU64::new(0) }; LEVELS.len()] }; CPUS];

    /// Whether the first levels of [`LEVELS`] are, in order, those `abi::bench` names.
    const fn matches_abi() -> bool {
        let names = abi::bench::LOCK_LEVELS;
        if names.len() > LEVELS.len() {
            return false;
        }
        let mut index = 0;
        while index < names.len() {
            let (a, b) = (names[index].as_bytes(), LEVELS[index].name.as_bytes());
            if a.len() != b.len() {
                return false;
            }
            let mut byte = 0;
            while byte < a.len() {
                if a[byte] != b[byte] {
                    return false;
                }
                byte += 1;
            }
            index += 1;
        }
        true
    }
    const _: () = assert!(
        matches_abi(),
        "abi::bench::LOCK_LEVELS must name the checker's levels in order"
    );

    /// Acquisitions of level `index` on every CPU.
    pub fn acquisitions(index: usize) -> Option<u64> {
        (index < abi::bench::LOCK_LEVELS.len()).then(|| {
            ACQUIRED
                .iter()
                .map(|row| row[index].load(Ordering::Relaxed))
                .sum()
        })
    }

    fn index_of(level: Level) -> usize {
        LEVELS
            .iter()
            .position(|known| *known == level)
            .unwrap_or(usize::MAX)
    }

    fn name_of(index: usize) -> &'static str {
        LEVELS
            .get(index)
            .map_or("(unknown lock)", |level| level.name)
    }

    fn this_cpu() -> &'static Held {
        // Only online CPUs run kernel code that locks, and their indices are below CPUS.
        &HELD[(Cpu::cpu_index() as usize).min(CPUS - 1)]
    }

    /// Check that `level` may be taken now, then record it.
    pub fn acquire(level: Level) {
        let held = this_cpu();
        if Cpu::interrupts_enabled() {
            held.count.store(0, Ordering::Relaxed);
            panic!(
                "lock taken with interrupts enabled: \"{}\" (level {})",
                level.name, level.rank
            );
        }
        let count = held.count.load(Ordering::Relaxed).min(DEPTH);
        // The highest level held (the first such lock, for the report).
        let mut highest: Option<usize> = None;
        for slot in 0..count {
            let rank = held.ranks[slot].load(Ordering::Relaxed);
            if highest.is_none_or(|best| rank > held.ranks[best].load(Ordering::Relaxed)) {
                highest = Some(slot);
            }
        }
        if let Some(slot) = highest
            && held.ranks[slot].load(Ordering::Relaxed) >= level.rank
        {
            let holding = name_of(held.names[slot].load(Ordering::Relaxed));
            let holding_rank = held.ranks[slot].load(Ordering::Relaxed);
            // Forget what is held: the panic report takes no lock, but keep the checker
            // from firing again on the way down.
            held.count.store(0, Ordering::Relaxed);
            panic!(
                "lock order violated: taking \"{}\" (level {}) while holding \"{}\" (level {})",
                level.name, level.rank, holding, holding_rank
            );
        }
        record(level);
    }

    /// Record `level` as held without checking the order.
    pub fn record(level: Level) {
        let held = this_cpu();
        let index = index_of(level);
        let cpu = (Cpu::cpu_index() as usize).min(CPUS - 1);
        if let Some(counter) = ACQUIRED[cpu].get(index) {
            counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        let count = held.count.load(Ordering::Relaxed);
        if count < DEPTH {
            held.ranks[count].store(level.rank, Ordering::Relaxed);
            held.names[count].store(index, Ordering::Relaxed);
        }
        held.count.store(count + 1, Ordering::Relaxed);
    }

    /// Forget the most recent record of `level` (guards may drop in any order).
    pub fn release(level: Level) {
        let held = this_cpu();
        let count = held.count.load(Ordering::Relaxed);
        if count == 0 {
            return;
        }
        if count > DEPTH {
            held.count.store(count - 1, Ordering::Relaxed);
            return;
        }
        let index = index_of(level);
        let found = (0..count).rev().find(|&slot| {
            held.ranks[slot].load(Ordering::Relaxed) == level.rank
                && held.names[slot].load(Ordering::Relaxed) == index
        });
        let Some(found) = found else {
            return;
        };
        for slot in found..count - 1 {
            let rank = held.ranks[slot + 1].load(Ordering::Relaxed);
            let name = held.names[slot + 1].load(Ordering::Relaxed);
            held.ranks[slot].store(rank, Ordering::Relaxed);
            held.names[slot].store(name, Ordering::Relaxed);
        }
        held.count.store(count - 1, Ordering::Relaxed);
    }
}
