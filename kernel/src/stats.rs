//! Event counters: counters on the paths benchmarks measure, read by
//! user programs through `bench_counter`, and the boot-to-user span.
//!
//! The counters are plain per-event adds (load, add, store, not an atomic
//! read-modify-write), always compiled in (a few instructions on the unmap path): with
//! several CPUs counting at once an event may go uncounted, which the benchmarks (one CPU
//! counting) never see. The switch counters are not here: each switch counts on the
//! thread it switches to, under the scheduler lock (`task::sched::switch_counts`), so
//! the switch path touches no shared counter. The system call that reads them,
//! `bench_counter`, is in the test build only.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::BenchCounter;
use arch_api::Bench as _;

use crate::Cpu;

static TLB_FLUSHES: AtomicU64 = AtomicU64::new(0);
/// `Bench::instruction_clock` at kernel entry, and at the first entry into user mode.
static KERNEL_ENTRY: AtomicU64 = AtomicU64::new(0);
static FIRST_USER: AtomicU64 = AtomicU64::new(0);
/// The spawn and fault benchmarks: armed (`u64::MAX`), then `Bench::instruction_counter`
/// at the next first entry into user mode / the next user fault the core handles.
static SPAWN_ENTRY: AtomicU64 = AtomicU64::new(0);
static FAULT_ENTRY: AtomicU64 = AtomicU64::new(0);

/// One more event. A plain load and store, not an atomic read-modify-write (module docs).
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A page was unmapped from a user space (one TLB invalidation).
pub fn count_tlb_flush() {
    bump(&TLB_FLUSHES);
}

/// The value of counter `which`, if this module keeps it: the switch counters are the
/// scheduler's (module docs), which the system-call layer reads instead
/// (`syscall::event_counter`).
pub fn counter(which: BenchCounter) -> Option<u64> {
    Some(match which {
        BenchCounter::Switches | BenchCounter::SpaceSwitches => return None,
        BenchCounter::Ticks => crate::time::ticks(),
        BenchCounter::TlbFlushes => TLB_FLUSHES.load(Ordering::Relaxed),
        BenchCounter::SinceKernelEntry => {
            Cpu::instruction_clock().saturating_sub(KERNEL_ENTRY.load(Ordering::Relaxed))
        }
        BenchCounter::InstructionClock => Cpu::instruction_clock(),
        BenchCounter::TicksAllCpus => (0..arch_api::MAX_CPUS as u32)
            .filter_map(crate::time::cpu_ticks)
            .sum(),
    })
}

/// Called first thing in `kmain`.
pub fn mark_kernel_entry() {
    KERNEL_ENTRY.store(Cpu::instruction_clock(), Ordering::Relaxed);
}

/// Called just before a thread enters user mode for the first time; only the first call
/// since boot counts.
pub fn mark_user_entry() {
    if FIRST_USER.load(Ordering::Relaxed) == 0 {
        FIRST_USER.store(Cpu::instruction_clock(), Ordering::Relaxed);
    }
    if SPAWN_ENTRY.load(Ordering::Relaxed) == u64::MAX {
        SPAWN_ENTRY.store(Cpu::instruction_counter(), Ordering::Relaxed);
    }
}

/// Called first thing when the core handles a user fault (`process::kill_current`).
/// Out of line and cold, so it does not change how the trap path around it is compiled.
#[cold]
#[inline(never)]
pub fn mark_fault() {
    if FAULT_ENTRY.load(Ordering::Relaxed) == u64::MAX {
        FAULT_ENTRY.store(Cpu::instruction_counter(), Ordering::Relaxed);
    }
}

#[cfg(feature = "testing")]
/// Arm the spawn and fault marks and return the counter now.
pub fn arm_marks() -> u64 {
    SPAWN_ENTRY.store(u64::MAX, Ordering::Relaxed);
    FAULT_ENTRY.store(u64::MAX, Ordering::Relaxed);
    Cpu::instruction_counter()
}

#[cfg(feature = "testing")]
fn take(mark: &AtomicU64) -> Option<u64> {
    match mark.swap(0, Ordering::Relaxed) {
        0 | u64::MAX => None,
        at => Some(at),
    }
}

#[cfg(feature = "testing")]
/// The counter at the first user entry since [`arm_marks`], if there was one.
pub fn spawn_mark() -> Option<u64> {
    take(&SPAWN_ENTRY)
}

#[cfg(feature = "testing")]
/// The counter at the first user fault since [`arm_marks`], if there was one.
pub fn fault_mark() -> Option<u64> {
    take(&FAULT_ENTRY)
}

#[cfg(feature = "testing")]
/// Instructions from kernel entry to the first entry into user mode, if both happened.
pub fn boot_to_user() -> Option<u64> {
    let first = FIRST_USER.load(Ordering::Relaxed);
    let entry = KERNEL_ENTRY.load(Ordering::Relaxed);
    (first != 0 && entry != 0).then(|| first.saturating_sub(entry))
}

/// Kernel objects alive now, by kind: what the fuzz scenario's checker compares with its
/// baseline (`testing::kcheck`). Counted where the objects are made and dropped (not on
/// any fast path: creation, capability insertion and deletion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    Endpoint = 0,
    Notification = 1,
    Process = 2,
    MemoryRegion = 3,
    /// Capabilities held in capability tables.
    Capability = 4,
}

#[cfg(feature = "testing")]
impl Live {
    pub const ALL: [Live; 5] = [
        Live::Endpoint,
        Live::Notification,
        Live::Process,
        Live::MemoryRegion,
        Live::Capability,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Live::Endpoint => "endpoints",
            Live::Notification => "notifications",
            Live::Process => "processes",
            Live::MemoryRegion => "memory regions",
            Live::Capability => "capabilities",
        }
    }
}

static LIVE: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// One more live object of `kind`.
pub fn live_add(kind: Live) {
    LIVE[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// One live object of `kind` fewer.
pub fn live_sub(kind: Live) {
    LIVE[kind as usize].fetch_sub(1, Ordering::Relaxed);
}

/// Live objects of `kind`.
#[cfg(feature = "testing")]
pub fn live(kind: Live) -> u64 {
    LIVE[kind as usize].load(Ordering::Relaxed)
}
