//! The kernel trace: a ring of fixed-size records of what the kernel did — thread
//! switches, IPC, notifications, interrupts, faults, system calls, spawns and deaths —
//! printed over serial at power-off and turned into a Perfetto timeline by
//! `cargo xtask trace-x86` / `trace-aarch64`.
//!
//! Off unless the kernel command line says `trace=on` ([`enable`], called by `kmain`).
//! A disabled trace point costs one relaxed load of [`ENABLED`] and a branch: the check
//! ([`on`]) is inlined, the record is written by a `#[cold]`, out-of-line function.
//!
//! # Per CPU
//! The rings are per CPU: an array indexed by the CPU's dense index, each ring written only
//! by its own CPU with interrupts masked (the kernel's invariant), so a write needs no lock
//! and no atomic read-modify-write. [`enable`] allocates them (zeroed, from the heap) before
//! it turns tracing on; they are never freed. Each record carries its CPU; [`drain`] prints the rings
//! one after the other (the timeline tool orders records by time).
//!
//! A ring keeps the newest [`RECORDS`] records: an older one is overwritten and counted
//! as dropped.
//!
//! # Line format
//! [`drain`] prints, straight to the UART (no lock: it runs at power-off, maybe after a
//! panic):
//!
//! ```text
//! trace: begin cpus=1 records=<n> dropped=<n> clock_hz=<hz or 0>
//! trace: <time> <cpu> <kind> <thread> <a> <b>        (all hexadecimal, no 0x)
//! trace: end
//! ```
//!
//! `time` is `Bench::instruction_clock` (x86_64: the TSC; AArch64: nanoseconds);
//! `clock_hz` is its rate measured against the timer tick while the trace ran (0 when no
//! tick passed). The kinds and their arguments are [`Kind`]'s.

use core::cell::UnsafeCell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use arch_api::{Bench as _, ExitCode, Platform as _, Threads as _};

use crate::Cpu;

/// Records per CPU ring (a power of two): 32 bytes each, 256 KiB per CPU, allocated from
/// the kernel heap by [`enable`] (a kernel that does not trace pays nothing for them).
pub const RECORDS: usize = 8192;

/// CPUs with a ring, indexed by the CPU's dense index.
const CPUS: usize = arch_api::MAX_CPUS;

/// What a record says, with its `thread`, `a` and `b` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// `thread` handed the CPU to thread `a` (recorded as `a` starts to run).
    Switch = 1,
    /// Thread `thread` was created; `a`, `b`: the first 16 bytes of its name (little endian,
    /// zero padded).
    Name = 2,
    /// `thread` sends (or calls) on endpoint `a` with badge `b`.
    Send = 3,
    /// `thread` receives on endpoint `a` the message of thread `b`.
    Receive = 4,
    /// `thread` replies to thread `a` (the caller).
    Reply = 5,
    /// `thread` signals notification `a` with bits `b`.
    Signal = 6,
    /// Thread `thread` woken from `wait` on notification `a` with word `b`.
    Wake = 7,
    /// An interrupt entered while `thread` ran: line `a` (`u32::MAX`: the timer).
    IrqEnter = 8,
    /// The interrupt of line `a` handled.
    IrqExit = 9,
    /// A fault of user thread `thread` at instruction `a`; `b`: the faulting address of a
    /// page fault, else 0.
    Fault = 10,
    /// System call `a` entered by `thread` (not `null`/`yield` nor the IPC fast paths,
    /// which have their own records); `b`: its first argument.
    SyscallEnter = 11,
    /// The system call `thread` last entered returns status `a` (not recorded for the IPC
    /// calls, whose results the partner writes, nor a register write).
    SyscallExit = 12,
    /// Thread `thread` started in process `a`.
    Spawn = 13,
    /// Thread `thread` ended.
    Exit = 14,
}

/// The line number of the timer in [`Kind::IrqEnter`] records.
pub const TIMER_LINE: u64 = u32::MAX as u64;

#[derive(Clone, Copy)]
#[repr(C)]
struct Record {
    time: u64,
    kind: u16,
    cpu: u16,
    thread: u32,
    a: u64,
    b: u64,
}

/// One CPU's ring: the records and how many were ever written. All zeros is an empty
/// ring (how [`enable`] allocates it).
struct Ring {
    records: UnsafeCell<[Record; RECORDS]>,
    written: AtomicU64,
}

/// Each CPU's ring once [`enable`] has allocated it; null before (and if the heap could
/// not hold it). Written only by `enable`, before tracing is on.
static RINGS: [AtomicPtr<Ring>; CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; CPUS];

/// CPU `cpu`'s ring, if it has one.
fn ring(cpu: usize) -> Option<&'static Ring> {
    let ring = RINGS.get(cpu)?.load(Ordering::Acquire);
    // SAFETY: a non-null entry points to a ring `enable` allocated, zeroed (a valid empty
    // ring) and never frees; it is written only by its own CPU with interrupts masked (see
    // the module docs) and read by `drain` on that CPU at power-off, so no two accesses
    // overlap.
    unsafe { ring.as_ref() }
}

/// Whether tracing is on (`trace=on`).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The clock and the tick count when tracing started, to measure the clock's rate.
static START_CLOCK: AtomicU64 = AtomicU64::new(0);
static START_TICKS: AtomicU64 = AtomicU64::new(0);

/// Whether per-thread events are counted where counting costs a hot path something
/// ([`instrumented`]): tracing is on, or someone reads the per-thread event counts
/// (`top`). The IPC fast paths are chosen by the system-call table instead
/// (`syscall::instrument_fast_paths` sets this and puts their instrumented builds in).
static INSTRUMENTED: AtomicBool = AtomicBool::new(false);

/// Turn tracing on (from `kmain`, when the command line says `trace=on`): allocate the
/// rings first; without the memory for them tracing stays off, with a note.
pub fn enable() {
    let layout = core::alloc::Layout::new::<Ring>();
    for slot in &RINGS {
        if !slot.load(Ordering::Relaxed).is_null() {
            continue;
        }
        // SAFETY: `layout` has a non-zero size; all zeros is a valid `Ring` (no records
        // written, every record zero).
        let ring = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<Ring>();
        if ring.is_null() {
            crate::println!("trace: no memory for the trace rings; tracing stays off");
            return;
        }
        slot.store(ring, Ordering::Release);
    }
    START_CLOCK.store(Cpu::instruction_clock(), Ordering::Relaxed);
    START_TICKS.store(crate::time::ticks(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    INSTRUMENTED.store(true, Ordering::Relaxed);
}

/// From now on the hot paths count per-thread events (the first reader of the counts turns
/// this on, through `syscall::instrument_fast_paths`; the counts of the slow paths are
/// always kept).
pub fn count_fast_paths() {
    INSTRUMENTED.store(true, Ordering::Relaxed);
}

/// Whether per-thread events are counted on the hot paths (`thread::count`): one relaxed
/// load.
#[inline(always)]
pub fn instrumented() -> bool {
    INSTRUMENTED.load(Ordering::Relaxed)
}

/// Whether tracing is on: one relaxed load. Trace points whose arguments cost something
/// check this first.
#[inline(always)]
pub fn on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The index of this CPU's ring.
#[inline(always)]
fn cpu() -> usize {
    use arch_api::SecondaryCpus as _;
    (Cpu::cpu_index() as usize).min(CPUS - 1)
}

/// Record one event (when tracing is on).
#[inline(always)]
pub fn event(kind: Kind, thread: usize, a: u64, b: u64) {
    if on() {
        write(kind, thread, a, b);
    }
}

/// Record one event of the running thread (when tracing is on).
#[inline(always)]
pub fn event_here(kind: Kind, a: u64, b: u64) {
    if on() {
        write_here(kind, a, b);
    }
}

#[cold]
#[inline(never)]
fn write_here(kind: Kind, a: u64, b: u64) {
    write(kind, Cpu::current_thread(), a, b);
}

#[cold]
#[inline(never)]
fn write(kind: Kind, thread: usize, a: u64, b: u64) {
    let cpu = cpu();
    let Some(ring) = ring(cpu) else {
        return;
    };
    let written = ring.written.load(Ordering::Relaxed);
    let record = Record {
        time: Cpu::instruction_clock(),
        kind: kind as u16,
        // why: CPU ids and thread ids are small (`CPUS`, the thread table).
        cpu: cpu as u16,
        thread: thread as u32,
        a,
        b,
    };
    // why: RECORDS is a power of two; the index is below it.
    let slot = (written as usize) & (RECORDS - 1);
    // SAFETY: only this CPU writes its ring, with interrupts masked, so nothing else
    // touches the slot (see the `Sync` impl); the index is in bounds.
    unsafe { (*ring.records.get())[slot] = record };
    ring.written.store(written + 1, Ordering::Relaxed);
}

/// The thread that last gained each CPU (0: the boot context).
static LAST: [AtomicU64; CPUS] = [const { AtomicU64::new(0) }; CPUS];

/// Thread `to` has just gained this CPU (called by `to` itself, right after the switch, so
/// the switch path carries no trace check): a [`Kind::Switch`] record from the thread
/// that had it.
pub fn switched_to(to: usize) {
    if on() {
        let from = LAST[cpu()].swap(to as u64, Ordering::Relaxed);
        // why: thread ids fit a `usize` (they came from one).
        write(Kind::Switch, from as usize, to as u64, 0);
    }
}

/// Thread `thread` was created with `name`.
#[inline(always)]
pub fn name(thread: usize, name: &str) {
    if on() {
        write_name(thread, name);
    }
}

#[cold]
#[inline(never)]
fn write_name(thread: usize, name: &str) {
    let mut bytes = [0u8; 16];
    let length = name.len().min(16);
    bytes[..length].copy_from_slice(&name.as_bytes()[..length]);
    let [first, second] = [0, 8].map(|at| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    });
    write(Kind::Name, thread, first, second);
}

/// Print the rings over serial in the line format of the module docs (nothing when
/// tracing is off), and stop tracing.
pub fn drain() {
    if !ENABLED.swap(false, Ordering::Relaxed) {
        return;
    }
    let mut out = crate::log::Serial;
    let ticks = crate::time::ticks().saturating_sub(START_TICKS.load(Ordering::Relaxed));
    let clock = Cpu::instruction_clock().saturating_sub(START_CLOCK.load(Ordering::Relaxed));
    let clock_hz = match ticks {
        0 => 0,
        ticks => u128::from(clock) * u128::from(crate::time::TIMER_HZ) / u128::from(ticks),
    };
    let rings = || (0..CPUS).filter_map(ring);
    let total: u64 = rings()
        .map(|ring| ring.written.load(Ordering::Relaxed).min(RECORDS as u64))
        .sum();
    let dropped: u64 = rings()
        .map(|ring| {
            ring.written
                .load(Ordering::Relaxed)
                .saturating_sub(RECORDS as u64)
        })
        .sum();
    let _ = writeln!(
        out,
        "trace: begin cpus={CPUS} records={total} dropped={dropped} clock_hz={clock_hz}"
    );
    for ring in rings() {
        let written = ring.written.load(Ordering::Relaxed);
        let first = written.saturating_sub(RECORDS as u64);
        for index in first..written {
            // SAFETY: tracing is off (swapped above) and this runs on the ring's CPU with
            // interrupts masked, so nothing writes the ring while it is read.
            let record = unsafe { (*ring.records.get())[(index as usize) & (RECORDS - 1)] };
            let _ = writeln!(
                out,
                "trace: {:x} {:x} {:x} {:x} {:x} {:x}",
                record.time, record.cpu, record.kind, record.thread, record.a, record.b
            );
        }
    }
    let _ = writeln!(out, "trace: end");
}

/// Print the trace (if on), then power off with `code`: every power-off after boot goes
/// through here.
pub fn power_off(code: ExitCode) -> ! {
    drain();
    Cpu::power_off(code)
}
