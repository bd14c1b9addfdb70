//! `bench`: the user-mode benchmarks, started by the kernel's `bench` scenario
//! from the boot module of the same name (`cargo xtask bench` runs it under QEMU
//! `-icount shift=0`, where the counter [`rt::counter`] reads counts guest instructions).
//!
//! The kernel passes `mode | iterations << 8`. [`RUN`] runs every benchmark: warm-up,
//! then `iterations` samples, each the counter delta around one operation minus the delta
//! of an empty measurement; a sample with a timer tick inside its window is discarded and
//! counted. One line per benchmark:
//! `bench <name> min=… median=… max=… samples=… discarded=… switches=… space_switches=…
//! tlb_flushes=… [kernel=…]` (kernel events per operation, in hundredths; on AArch64 also
//! the mean instructions per operation spent at EL1, from a second PMU counter).
//! With a count of other threads in the argument (`abi::bench::OTHERS_SHIFT`, the `scale`
//! group) it first makes that many threads that block for good (half asleep, half waiting
//! on a notification), waits until each has run, and measures only `ipc_call_reply`,
//! `yield` and `timer_tick`.
//! [`YIELD_PARTNER`] yields forever: the other thread of the `yield` benchmark.
//! [`BALLAST`] sleeps forever: the other processes of the `scale` group.
//! [`SPAWN_EXIT`] exits at once and [`FAULT`] loads from an unmapped page at once: the
//! processes of the kernel-measured `spawn` and `page_fault` benchmarks.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use abi::{BenchCounter, Error, MAP_WRITE, MessageInfo, PAGE_SIZE};
use core::fmt::Write as _;

use rt::println;

const RUN: u64 = 0;
const YIELD_PARTNER: u64 = 1;
const SPAWN_EXIT: u64 = 2;
/// Load from an unmapped page at once (the kernel's `page_fault` benchmark).
const FAULT: u64 = 3;
/// The IPC server of `ipc_call_reply`, `ipc_call_reply_1k` and `cap_transfer`.
const IPC_SERVER: u64 = 4;
/// The other thread of `notify_wake`.
const NOTIFY_PARTNER: u64 = 5;
/// Sleep forever (the `scale` group's other processes).
const BALLAST: u64 = 6;

/// Capabilities the kernel's `bench` scenario pre-installs (kernel/src/testing/mod.rs):
/// the runner holds the endpoint (`WRITE CALL GRANT`), the yield partner's start
/// notification (`SIGNAL`), the two notifications of `notify_wake` (`SIGNAL` on
/// [`PING`], `WAIT` on [`PONG`]) and the cross-CPU server's endpoint; each IPC server the endpoint (`READ WRITE GRANT`) in slot
/// 0; the yield partner its start notification (`WAIT`) in slot 0; the notify partner
/// `WAIT` on [`PING`] in slot 0 and `SIGNAL` on [`PONG`] in slot 1.
mod slots {
    use abi::Handle;
    pub const ENDPOINT: Handle = Handle::new(0, 1);
    pub const YIELD_START: Handle = Handle::new(1, 1);
    pub const PING: Handle = Handle::new(2, 1);
    pub const PONG: Handle = Handle::new(3, 1);
    /// The endpoint of the cross-CPU server (`WRITE CALL`; only with two CPUs or more).
    pub const CROSS: Handle = Handle::new(4, 1);
    /// In each partner's own table.
    pub const FIRST: Handle = Handle::new(0, 1);
    pub const SECOND: Handle = Handle::new(1, 1);
}
/// Where the IPC benchmarks map their IPC buffers.
const IPC_BUFFER: u64 = 0x0000_3000_0000_0000;
/// Words of the long message: 1 KiB.
const LONG_WORDS: usize = 128;
/// Labels the bench IPC server understands.
const SHORT: u32 = 0;
const LONG: u32 = 1;
const CAP: u32 = 2;
/// Answer with the server's CPU index in word 0 (`cpu_current`).
const WHERE: u32 = 3;
/// Round trips per sample of `ipc_call_reply_cross_cpu`: its clock (AArch64 `CNTVCT`)
/// ticks once per 16 instructions, so a sample spans 16 round trips.
const CROSS_BATCH: u64 = 16;
/// Round trips per lock count.
const LOCK_ROUNDS: u64 = 100;
/// Never mapped in a bench process.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// The most samples one benchmark keeps (they live on the 64 KiB user stack).
const MAX_SAMPLES: usize = 2000;
/// Where `map_unmap` maps (free in every bench process).
const SCRATCH: u64 = 0x0000_2000_0000_0000;
/// How long the other threads may take to run once each (a hang guard: ticks).
const OTHERS_PATIENCE_TICKS: u64 = 12_000;
/// The other threads' stacks, one page each (the `scale` group).
const OTHER_STACKS: u64 = 0x0000_4000_0000_0000;
/// Rounds of the `timer_tick` spin: a few million instructions, well under the 10 million
/// between two ticks at 100 Hz under `-icount shift=0`, so a spin holds a tick or none.
const TICK_SPIN: u64 = 1_000_000;
/// Samples of `timer_tick` at most (each costs a few spins).
const TICK_SAMPLES: usize = 30;
/// The most spins `timer_tick` tries for its samples.
const TICK_TRIES: usize = 2_000;

/// The kernel counters reported per operation.
const EVENTS: [BenchCounter; 3] = [
    BenchCounter::Switches,
    BenchCounter::SpaceSwitches,
    BenchCounter::TlbFlushes,
];

rt::entry!(main);

fn main(argument: u64) -> i64 {
    match argument & 0xff {
        RUN => match run_from(argument) {
            Ok(()) => 0,
            Err(error) => {
                println!("bench: a benchmarked call failed: {error:?}");
                1
            }
        },
        YIELD_PARTNER => {
            // Blocked until the runner reaches `yield`, so it stays out of the run queue
            // during the other benchmarks.
            let _ = rt::ipc::wait(slots::FIRST);
            loop {
                let _ = rt::yield_now();
            }
        }
        IPC_SERVER => ipc_server(),
        NOTIFY_PARTNER => loop {
            if rt::ipc::wait(slots::FIRST).is_err() || rt::ipc::signal(slots::SECOND, 1).is_err() {
                return 3;
            }
        },
        SPAWN_EXIT => 0,
        BALLAST => loop {
            let _ = rt::proc::sleep(abi::SLEEP_MAX_TICKS);
        },
        FAULT => i64::from(rt::fault::touch_unmapped(UNMAPPED)),
        _ => 2,
    }
}

/// One benchmark's results, in instructions per operation.
struct Stats {
    min: u64,
    median: u64,
    max: u64,
    samples: usize,
    discarded: usize,
    /// Kernel events per operation, times 100, over the kept samples.
    events: [u64; EVENTS.len()],
    /// Mean kernel-mode instructions per operation, where the counter can split them.
    kernel: Option<u64>,
}

impl Stats {
    /// The statistics of `samples` (at least one; sorted here), with the event and kernel
    /// totals over them turned into per-operation values (`per` operations a sample).
    #[inline(never)]
    fn of(
        samples: &mut [u64],
        discarded: usize,
        events: [u64; EVENTS.len()],
        kernel: Option<u64>,
        per: u64,
    ) -> Stats {
        samples.sort_unstable();
        let kept = samples.len();
        let operations = kept as u64 * per;
        Stats {
            min: samples[0],
            median: samples[kept / 2],
            max: samples[kept - 1],
            samples: kept,
            discarded,
            events: events.map(|total| total * 100 / operations),
            kernel: kernel.map(|total| total / operations),
        }
    }
}

fn counter(which: BenchCounter) -> Result<u64, Error> {
    rt::bench_counter(which)
}

/// Warm up, then take `iterations` samples of `operation`; each sample is the counter delta
/// minus `empty`, divided by `per` (operations per call of `operation`).
fn measure(
    iterations: usize,
    empty: u64,
    per: u64,
    mut operation: impl FnMut() -> Result<(), Error>,
) -> Result<Stats, Error> {
    let iterations = iterations.clamp(1, MAX_SAMPLES);
    for _ in 0..(iterations / 10).max(10) {
        operation()?;
    }
    let mut samples = [0u64; MAX_SAMPLES];
    let mut kept = 0;
    let mut discarded = 0;
    let mut events = [0u64; EVENTS.len()];
    let mut kernel: Option<u64> = None;
    while kept < iterations {
        let mut before = [0u64; EVENTS.len()];
        for (slot, which) in before.iter_mut().zip(EVENTS) {
            *slot = counter(which)?;
        }
        let ticks = counter(BenchCounter::Ticks)?;
        let kernel_start = rt::counter::read_kernel();
        let start = rt::counter::read();
        operation()?;
        let end = rt::counter::read();
        let kernel_end = rt::counter::read_kernel();
        if counter(BenchCounter::Ticks)? != ticks {
            discarded += 1;
            continue;
        }
        for ((total, which), before) in events.iter_mut().zip(EVENTS).zip(before) {
            *total += counter(which)? - before;
        }
        if let (Some(start), Some(end)) = (kernel_start, kernel_end) {
            kernel = Some(kernel.unwrap_or(0) + (end - start));
        }
        samples[kept] = (end - start).saturating_sub(empty) / per;
        kept += 1;
    }
    if profiling() {
        profile_loop(&mut operation, per)?;
    }
    Ok(Stats::of(
        &mut samples[..kept],
        discarded,
        events,
        kernel,
        per,
    ))
}

#[inline(never)]
fn report(name: &str, stats: &Stats) {
    let mut line = rt::print::Line::new();
    let _ = write!(
        line,
        "bench {name} min={} median={} max={} samples={} discarded={}",
        stats.min, stats.median, stats.max, stats.samples, stats.discarded
    );
    for (label, value) in [" switches=", " space_switches=", " tlb_flushes="]
        .into_iter()
        .zip(stats.events)
    {
        let _ = line.write_str(label);
        write_hundredths(&mut line, value);
    }
    if let Some(kernel) = stats.kernel {
        let _ = write!(line, " kernel={kernel}");
    }
    line.flush();
}

/// [`run`] with the iteration count and selector decoded from the argument (in its own
/// function, so `main`'s prologue stays that of the other modes: `page_fault` counts it).
#[inline(never)]
fn run_from(argument: u64) -> Result<(), Error> {
    let others = (argument >> abi::bench::OTHERS_SHIFT) & abi::bench::OTHERS_MAX;
    if others != 0 {
        make_others(others)?;
    }
    let iterations = abi::bench::iterations(argument);
    // The profile mode: the usual few samples, then the profile loop of `iterations`.
    let (iterations, profile_rounds) = if argument & abi::bench::PROFILE != 0 {
        (abi::bench::PROFILE_SAMPLES as u64, iterations)
    } else {
        (iterations, 0)
    };
    run(
        iterations as usize,
        (argument >> abi::bench::CPUS_SHIFT) & 0xff,
        argument >> abi::bench::SELECTOR_SHIFT,
        others != 0,
        profile_rounds,
    )
}

/// How many times [`profile_loop`] runs each benchmark's operation: zero (no loop) unless
/// the argument asked for the profile mode; set after the empty measurement.
static PROFILE_ROUNDS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The profile mode's loop (`abi::bench::PROFILE`): `operation`, `per` operations a call,
/// called [`PROFILE_ROUNDS`] times with no counter read around it, so that a traced boot
/// with twice the rounds executes exactly the extra operations more (`cargo xtask bench
/// --profile`, which counts from this function's first instruction to [`profile_done`]'s).
#[cold]
#[inline(never)]
fn profile_loop(mut operation: impl FnMut() -> Result<(), Error>, per: u64) -> Result<(), Error> {
    let rounds = PROFILE_ROUNDS.load(core::sync::atomic::Ordering::Relaxed);
    for _ in 0..rounds {
        operation()?;
    }
    profile_done(rounds * per);
    Ok(())
}

/// The end of [`profile_loop`] (where `cargo xtask bench --profile` stops counting).
#[inline(never)]
fn profile_done(operations: u64) {
    println!("bench: profile loop of {operations} operations");
}

/// Whether [`profile_loop`] runs after each measurement.
fn profiling() -> bool {
    PROFILE_ROUNDS.load(core::sync::atomic::Ordering::Relaxed) != 0
}

/// Run every benchmark, or only the one selector `only` names (`abi::bench`), on a
/// machine with `cpus` CPUs online; with `scale`, only those of the `scale` group.
fn run(
    iterations: usize,
    cpus: u64,
    only: u64,
    scale: bool,
    profile_rounds: u64,
) -> Result<(), Error> {
    let group = |index: usize| {
        !scale
            || matches!(
                index,
                abi::bench::IPC_CALL_REPLY | abi::bench::YIELD | abi::bench::TIMER_TICK
            )
    };
    let wanted = |index: usize| abi::bench::runs(only, index) && group(index);
    // The empty measurement: two counter reads back to back (constant under icount).
    let empty = measure(iterations, 0, 1, || Ok(()))?;
    println!(
        "bench: empty measurement {} instructions (subtracted from every sample)",
        empty.min
    );
    let empty = empty.min;
    PROFILE_ROUNDS.store(profile_rounds, core::sync::atomic::Ordering::Relaxed);
    // Before the yield partner starts: no other thread is ready, so a tick switches only
    // to the kernel's bench thread, which wakes once a tick to check on this one.
    if wanted(abi::bench::TIMER_TICK) {
        match timer_tick(iterations) {
            Ok(stats) => report("timer_tick", &stats),
            // With several CPUs their ticks can fall into the same spins every time (the
            // instruction clock is theirs together): not measured, the rest goes on.
            Err(Error::NotSupported) if cpus > 1 => {
                println!("bench: timer_tick not measured with {cpus} CPUs");
            }
            Err(error) => return Err(error),
        }
    }
    if wanted(abi::bench::NULL_SYSCALL) {
        report(
            "null_syscall",
            &measure(iterations, empty, 1, || rt::null().map(drop))?,
        );
    }
    ipc_benchmarks(iterations, empty, &wanted)?;
    if wanted(abi::bench::IPC_CALL_REPLY_CROSS_CPU) {
        cross_cpu(iterations, cpus)?;
    }
    rt::ipc::signal(slots::YIELD_START, 1)?;
    // One sample is this thread → partner → this thread: two yields and two switches.
    if wanted(abi::bench::YIELD) {
        report(
            "yield",
            &measure(iterations, empty, 2, || rt::yield_now().map(drop))?,
        );
    }
    if wanted(abi::bench::MAP_UNMAP) {
        report(
            "map_unmap",
            &measure(iterations, empty, 1, || {
                rt::memory_map(SCRATCH, PAGE_SIZE, MAP_WRITE)?;
                rt::memory_unmap(SCRATCH, PAGE_SIZE).map(drop)
            })?,
        );
    }
    Ok(())
}

/// The other threads that have run (the `scale` group).
static OTHERS_RAN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The notification half of them wait on (never signalled).
static OTHERS_HOLD: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// One of the `scale` group's other threads: count itself as run, then block for good
/// (asleep when `index` is even, waiting on a notification when odd).
extern "C" fn other(index: u64) -> ! {
    use core::sync::atomic::Ordering;
    OTHERS_RAN.fetch_add(1, Ordering::AcqRel);
    let hold = abi::Handle::from_raw(OTHERS_HOLD.load(Ordering::Acquire));
    loop {
        if index % 2 == 1 && rt::ipc::wait(hold).is_ok() {
            continue;
        }
        let _ = rt::proc::sleep(abi::SLEEP_MAX_TICKS);
    }
}

/// Make `count` other threads ([`other`]), each on a one-page stack, and wait until every
/// one has run and blocked.
#[inline(never)]
fn make_others(count: u64) -> Result<(), Error> {
    use core::sync::atomic::Ordering;
    let hold = rt::ipc::notification_create()?;
    OTHERS_HOLD.store(hold.raw(), Ordering::Release);
    let mut mapped = 0;
    while mapped < count {
        let pages = (count - mapped).min(abi::MAP_PAGES_MAX);
        rt::memory_map(
            OTHER_STACKS + mapped * PAGE_SIZE,
            pages * PAGE_SIZE,
            MAP_WRITE,
        )?;
        mapped += pages;
    }
    for index in 0..count {
        let top = OTHER_STACKS + (index + 1) * PAGE_SIZE;
        let thread = rt::proc::thread_create(other, top, index, abi::PRIORITY_NORMAL)?;
        rt::ipc::cap_delete(thread)?;
    }
    // They run while this thread sleeps; each blocks for good once it has counted itself.
    let start = counter(BenchCounter::Ticks)?;
    while OTHERS_RAN.load(Ordering::Acquire) < count {
        if counter(BenchCounter::Ticks)? - start > OTHERS_PATIENCE_TICKS {
            println!(
                "bench: only {} of {count} other threads ran",
                OTHERS_RAN.load(Ordering::Acquire)
            );
            return Err(Error::NotSupported);
        }
        rt::proc::sleep(1)?;
    }
    rt::proc::sleep(1)?;
    println!("bench: {count} other threads made, each ran and blocked");
    Ok(())
}

/// `timer_tick`: one timer interrupt as the thread it interrupts sees it (trap entry, the
/// kernel's tick — sleepers due, the time slice — and the return; now and then also the
/// kernel bench thread's wake-up, which the median leaves out). A spin of [`TICK_SPIN`]
/// rounds is measured again and again; a sample is a spin with exactly one tick in it less
/// the fastest spin with none. With more than one CPU the instruction clock also counts
/// what the other CPUs do, so only spins in which no other CPU took a tick count: a sample
/// holds the boot CPU's tick alone (this program runs there), a quiet spin no tick at all.
#[inline(never)]
fn timer_tick(iterations: usize) -> Result<Stats, Error> {
    let wanted = iterations.clamp(1, TICK_SAMPLES);
    let mut samples = [0u64; TICK_SAMPLES];
    let mut kept = 0;
    let mut discarded = 0;
    let mut quiet = u64::MAX;
    let mut events = [0u64; EVENTS.len()];
    for _ in 0..TICK_TRIES {
        if kept == wanted {
            break;
        }
        let mut before = [0u64; EVENTS.len()];
        for (slot, which) in before.iter_mut().zip(EVENTS) {
            *slot = counter(which)?;
        }
        let ticks = counter(BenchCounter::Ticks)?;
        let all_ticks = counter(BenchCounter::TicksAllCpus)?;
        let start = rt::counter::read();
        for round in 0..core::hint::black_box(TICK_SPIN) {
            core::hint::black_box(round);
        }
        let end = rt::counter::read();
        let all = counter(BenchCounter::TicksAllCpus)? - all_ticks;
        match (counter(BenchCounter::Ticks)? - ticks, all) {
            (0, 0) => quiet = quiet.min(end - start),
            (1, 1) => {
                samples[kept] = end - start;
                kept += 1;
                for ((total, which), before) in events.iter_mut().zip(EVENTS).zip(before) {
                    *total += counter(which)? - before;
                }
            }
            _ => discarded += 1,
        }
    }
    if kept == 0 || quiet == u64::MAX {
        println!("bench: timer_tick: no spin with exactly one tick and one with none");
        return Err(Error::NotSupported);
    }
    let samples = &mut samples[..kept];
    for sample in samples.iter_mut() {
        *sample = sample.saturating_sub(quiet);
    }
    Ok(Stats::of(samples, discarded, events, None, 1))
}

fn info(label: u32, words: usize, caps: usize) -> MessageInfo {
    MessageInfo::new(label, words, caps).unwrap_or_default()
}

/// The IPC benchmarks' server: answers each call with a message of the same length;
/// deletes each capability it receives (so `cap_transfer` includes that `cap_delete`).
fn ipc_server() -> i64 {
    let Ok(buffer) = rt::ipc::IpcBuffer::map(IPC_BUFFER) else {
        return 4;
    };
    let Ok(mut request) = rt::ipc::recv(slots::FIRST) else {
        return 5;
    };
    loop {
        let reply = match request.info.label() {
            LONG => info(LONG, request.info.words(), 0),
            CAP => {
                let _ = rt::ipc::cap_delete(buffer.cap(0));
                info(CAP, 0, 0)
            }
            WHERE => {
                request.words[0] = rt::proc::cpu_current();
                info(WHERE, 1, 0)
            }
            _ => info(SHORT, 4, 0),
        };
        request = match rt::ipc::reply_recv(slots::FIRST, reply, request.words) {
            Ok(request) => request,
            Err(_) => return 6,
        };
    }
}

/// `ipc_call_reply` (4 words in registers, the fast path), `ipc_call_reply_1k` (128 words
/// each way through the IPC buffers), `cap_transfer` (a call carrying one capability, the
/// server's `cap_delete` of it, the reply) and `notify_wake` (signal → the waiting thread
/// of another process runs; one sample is a round trip through the partner, halved).
fn ipc_benchmarks(
    iterations: usize,
    empty: u64,
    wanted: &dyn Fn(usize) -> bool,
) -> Result<(), Error> {
    let words = [1, 2, 3, 4];
    if wanted(abi::bench::IPC_CALL_REPLY) {
        report(
            "ipc_call_reply",
            &measure(iterations, empty, 1, || {
                rt::ipc::call(slots::ENDPOINT, info(SHORT, 4, 0), words).map(drop)
            })?,
        );
        // `black_box`: one copy of `lock_counts`, not one specialised per caller (the
        // program's size is part of what `spawn` measures).
        lock_counts(
            "ipc_call_reply",
            core::hint::black_box(&mut || {
                rt::ipc::call(slots::ENDPOINT, info(SHORT, 4, 0), words).map(drop)
            }),
        )?;
    }
    let buffer = rt::ipc::IpcBuffer::map(IPC_BUFFER)?;
    for index in 4..LONG_WORDS {
        buffer.set_word(index, index as u64);
    }
    if wanted(abi::bench::IPC_CALL_REPLY_1K) {
        report(
            "ipc_call_reply_1k",
            &measure(iterations, empty, 1, || {
                rt::ipc::call(slots::ENDPOINT, info(LONG, LONG_WORDS, 0), words).map(drop)
            })?,
        );
    }
    let notification = rt::ipc::notification_create()?;
    if wanted(abi::bench::CAP_TRANSFER) {
        report(
            "cap_transfer",
            &measure(iterations, empty, 1, || {
                buffer.set_cap(0, notification);
                rt::ipc::call(slots::ENDPOINT, info(CAP, 0, 1), words).map(drop)
            })?,
        );
    }
    rt::ipc::cap_delete(notification)?;
    if wanted(abi::bench::NOTIFY_WAKE) {
        report(
            "notify_wake",
            &measure(iterations, empty, 2, || {
                rt::ipc::signal(slots::PING, 1)?;
                rt::ipc::wait(slots::PONG).map(drop)
            })?,
        );
    }
    Ok(())
}

/// `ipc_call_reply_cross_cpu`: `ipc_call_reply` with the server on another CPU (the kernel
/// pins it there; checked with `cpu_current` on both sides). Each call wakes the server's
/// CPU and each reply this one, so the work of both CPUs is counted: the span is read from
/// the instruction clock (`BenchCounter::InstructionClock`), which under single-threaded
/// TCG with `-icount shift=0` advances with every CPU's instructions. One sample is
/// [`CROSS_BATCH`] round trips (the clock read by two `bench_counter` calls, whose own cost
/// — an empty measurement — is subtracted), divided by the batch; a sample with a timer
/// tick on any CPU is discarded.
fn cross_cpu(iterations: usize, cpus: u64) -> Result<(), Error> {
    let name = "ipc_call_reply_cross_cpu";
    if cpus < 2 {
        println!("bench: {name} needs 2 CPUs or more (this run has {cpus}): not measured");
        return Ok(());
    }
    let here = rt::proc::cpu_current();
    let there = rt::ipc::call(slots::CROSS, info(WHERE, 1, 0), [0; 4])?.words[0];
    if here == there {
        println!("bench: {name}: client and server both on cpu {here}");
        return Err(Error::InvalidArgument);
    }
    println!("bench: {name}: client on cpu {here}, server on cpu {there}");
    let words = [1, 2, 3, 4];
    let round_trip = || rt::ipc::call(slots::CROSS, info(SHORT, 4, 0), words).map(drop);
    let empty = measure_clock(iterations, 1, &mut || Ok(()))?.min;
    let stats = measure_clock(iterations, empty, &mut || {
        // An opaque bound: a loop, not 16 inlined copies of the call.
        for _ in 0..core::hint::black_box(CROSS_BATCH) {
            round_trip()?;
        }
        Ok(())
    })?;
    report(name, &stats);
    lock_counts(name, core::hint::black_box(&mut { round_trip }))
}

/// [`measure`] for the cross-CPU benchmark: the instruction clock read around each call of
/// `operation` ([`CROSS_BATCH`] round trips, or none for the empty measurement when
/// `empty` is 1), ticks of every CPU checked. Not generic, so the bench program (whose
/// size `spawn` measures) carries one copy.
#[inline(never)]
fn measure_clock(
    iterations: usize,
    empty: u64,
    operation: &mut dyn FnMut() -> Result<(), Error>,
) -> Result<Stats, Error> {
    let clock = || counter(BenchCounter::InstructionClock);
    let iterations = iterations.clamp(1, MAX_SAMPLES);
    // The empty measurement (`empty` 1) is taken per read pair, not per round trip.
    let per = if empty == 1 { 1 } else { CROSS_BATCH };
    for _ in 0..(iterations / 10).max(10) {
        operation()?;
    }
    let mut samples = [0u64; MAX_SAMPLES];
    let mut kept = 0;
    let mut discarded = 0;
    let mut events = [0u64; EVENTS.len()];
    while kept < iterations {
        let mut before = [0u64; EVENTS.len()];
        for (slot, which) in before.iter_mut().zip(EVENTS) {
            *slot = counter(which)?;
        }
        let ticks = counter(BenchCounter::TicksAllCpus)?;
        let start = clock()?;
        operation()?;
        let end = clock()?;
        if counter(BenchCounter::TicksAllCpus)? != ticks {
            discarded += 1;
            continue;
        }
        for ((total, which), before) in events.iter_mut().zip(EVENTS).zip(before) {
            *total += counter(which)? - before;
        }
        let empty = if empty == 1 { 0 } else { empty };
        samples[kept] = (end - start).saturating_sub(empty) / per;
        kept += 1;
    }
    if empty != 1 && profiling() {
        profile_loop(operation, per)?;
    }
    Ok(Stats::of(
        &mut samples[..kept],
        discarded,
        events,
        None,
        per,
    ))
}

/// In a kernel that counts lock acquisitions (the lock-checking build; the others answer
/// `NotSupported` and this prints nothing), the acquisitions of every lock level per round
/// trip of `operation`, every CPU together, over [`LOCK_ROUNDS`] round trips with no timer
/// tick on any CPU (the best of a few tries):
/// `locks <name>: N shared-lock acquisitions per round trip (scheduler: a, …)`.
#[inline(never)]
fn lock_counts(name: &str, operation: &mut dyn FnMut() -> Result<(), Error>) -> Result<(), Error> {
    let mut before = [0u64; LOCK_LEVELS];
    match read_locks(&mut before) {
        Err(Error::NotSupported) => return Ok(()),
        other => other?,
    }
    let mut after = [0u64; LOCK_LEVELS];
    let mut clean = false;
    for _ in 0..8 {
        let ticks = counter(BenchCounter::TicksAllCpus)?;
        read_locks(&mut before)?;
        for _ in 0..core::hint::black_box(LOCK_ROUNDS) {
            operation()?;
        }
        read_locks(&mut after)?;
        if counter(BenchCounter::TicksAllCpus)? == ticks {
            clean = true;
            break;
        }
    }
    let per_round = |index: usize| (after[index] - before[index]) * 100 / LOCK_ROUNDS;
    let mut line = rt::print::Line::new();
    let _ = line.write_str("locks ");
    let _ = line.write_str(name);
    let _ = line.write_str(": ");
    write_hundredths(&mut line, (0..LOCK_LEVELS).map(per_round).sum());
    let _ = line.write_str(" shared-lock acquisitions per round trip (");
    let mut separator = "";
    for (index, level) in abi::bench::LOCK_LEVELS.iter().enumerate() {
        let count = per_round(index);
        if count != 0 {
            let _ = line.write_str(separator);
            let _ = line.write_str(level);
            let _ = line.write_str(": ");
            write_hundredths(&mut line, count);
            separator = ", ";
        }
    }
    let _ = line.write_str(if clean {
        ")"
    } else {
        "); a timer tick fell in every try"
    });
    line.flush();
    Ok(())
}

/// Lock levels `bench_counter` counts (`abi::bench::LOCK_LEVELS`).
const LOCK_LEVELS: usize = abi::bench::LOCK_LEVELS.len();

/// Read every lock level's acquisitions.
#[inline(never)]
fn read_locks(counts: &mut [u64; LOCK_LEVELS]) -> Result<(), Error> {
    for (index, count) in counts.iter_mut().enumerate() {
        *count = rt::bench_counter_raw(abi::bench::LOCK_COUNTS + index as u64)?;
    }
    Ok(())
}

/// `value` (in hundredths) as `N.NN`.
#[inline(never)]
fn write_hundredths(line: &mut rt::print::Line, value: u64) {
    let _ = write!(line, "{}.{:02}", value / 100, value % 100);
}
